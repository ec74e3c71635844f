//! Per-worker connection table (contract stub).
