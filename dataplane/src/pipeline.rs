//! The per-frame pipeline: parse -> connection lookup or schedule -> rewrite -> verdict.
//! (contract stub: the helper owning the pure packet code replaces this body)

use std::time::Instant;

use crate::counters::{DropReason, WorkerCounters};
use crate::service::ServiceTable;

/// What to do with a frame after the pipeline ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame, same length, out of the interface it arrived on.
    Tx,
    /// Drop it; the reason has been counted.
    Drop(DropReason),
}

/// One worker's pipeline state: its connection table and identity.
pub struct Pipeline {
    _private: (),
}

impl Pipeline {
    /// A pipeline for worker `worker` on an interface whose MAC is `interface_mac`, with a
    /// connection table of at most `max_connections` entries (allocated here, never grown).
    pub fn new(worker: usize, interface_mac: [u8; 6], max_connections: usize) -> Self {
        let _ = (worker, interface_mac, max_connections);
        Pipeline { _private: () }
    }

    /// Runs one frame through the pipeline, rewriting it in place.
    pub fn process(&mut self, frame: &mut [u8], table: &ServiceTable, now: Instant, counters: &WorkerCounters) -> Verdict {
        let _ = (frame, table, now, counters);
        Verdict::Drop(DropReason::NoService)
    }

    /// Expires idle connections; called by the worker about once a second, not per packet.
    pub fn housekeeping(&mut self, table: &ServiceTable, now: Instant, counters: &WorkerCounters) {
        let _ = (table, now, counters);
    }
}
