//! Lab (contract stub).
