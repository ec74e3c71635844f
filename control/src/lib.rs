//! Control (contract stub).
