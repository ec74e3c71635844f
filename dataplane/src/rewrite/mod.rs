//! Frame rewrites, one module per forwarding method ([`crate::service::Forwarding`]).
//!
//! A rewrite turns a classified client frame into the frame that reaches the real server, in
//! place and without changing its length. Today: [`dr`] (LVS direct routing). NAT and tunnelling
//! will add `nat.rs` and `tun.rs`; they change addresses and ports and must update checksums
//! with [`crate::wire::checksum`]'s RFC 1624 incremental forms.
//!
//! What this layer must not do: parse or validate (the pipeline hands it checked views), choose a
//! backend, or fail: by the time a rewrite runs the frame is going out.

pub mod dr;
