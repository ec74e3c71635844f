//! Zero-copy wire-format views (contract stub).
