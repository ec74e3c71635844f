//! Frame rewrites per forwarding method (contract stub).
