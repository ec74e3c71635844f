//! Round robin (IPVS `rr`): new flows go to the servers with weight > 0 in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Candidate;

/// The servers eligible for new flows and a cursor shared by every worker thread.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    /// Indices (into the caller's server slice) of the servers with weight > 0, in slice order.
    eligible: Box<[u32]>,
    /// Count of picks so far. Relaxed is enough: the cursor orders nothing else, and two workers
    /// racing only need distinct values, which `fetch_add` guarantees.
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub(crate) fn new(servers: &[Candidate]) -> Self {
        let eligible = servers
            .iter()
            .enumerate()
            .filter(|(_, server)| server.weight > 0)
            // Fits: `Scheduler::new` rejects more than `MAX_SERVERS` servers.
            .map(|(index, _)| index as u32)
            .collect();
        Self {
            eligible,
            cursor: AtomicUsize::new(0),
        }
    }

    #[inline]
    pub(crate) fn pick(&self) -> Option<usize> {
        if self.eligible.is_empty() {
            return None;
        }
        // Wrapping at usize::MAX skews one turn in 2^64 (2^32 on 32-bit targets): harmless.
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed) % self.eligible.len();
        self.eligible.get(turn).map(|&index| index as usize)
    }
}
