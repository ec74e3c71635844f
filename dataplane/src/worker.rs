//! The per-queue worker loop.
