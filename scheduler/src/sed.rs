//! Shortest expected delay (IPVS `sed`, `ip_vs_sed.c`) and never queue (IPVS `nq`, `ip_vs_nq.c`).
//!
//! Both estimate the delay a new connection would see on a server as `(active + 1) / weight`:
//! the connections it would queue behind, itself included, over the server's capacity. Inactive
//! connections do not count, unlike `lc`/`wlc`. `sed` picks the smallest estimate, compared by
//! cross-multiplication with ties to the first server as in `ip_vs_sed.c`. `nq` first sends the
//! flow to an idle server (no active connection) if there is one, even a light one that `sed`
//! would pass over, and otherwise behaves as `sed` (`ip_vs_nq.c` returns the first idle server it
//! meets in list order).

use crate::lc::costlier;
use crate::Loads;

/// IPVS's `ip_vs_sed_dest_overhead()` / `ip_vs_nq_dest_overhead()`: `active + 1`.
#[inline]
fn expected_delay<L: Loads + ?Sized>(loads: &L, server: usize) -> (u64, u64) {
    let active = loads.active(server);
    (active, active.saturating_add(1))
}

/// `sed` when `never_queue` is false, `nq` when it is true.
#[inline]
pub(crate) fn shortest_expected_delay<L: Loads + ?Sized>(
    weights: &[u32],
    loads: &L,
    never_queue: bool,
) -> Option<usize> {
    let mut least: Option<(usize, u64, u32)> = None;
    for (server, &weight) in weights
        .iter()
        .enumerate()
        .filter(|&(server, &w)| w > 0 && !loads.over_threshold(server))
    {
        let (active, delay) = expected_delay(loads, server);
        if never_queue && active == 0 {
            return Some(server);
        }
        match least {
            Some((_, least_delay, least_weight))
                if !costlier(least_delay, least_weight, delay, weight) => {}
            _ => least = Some((server, delay, weight)),
        }
    }
    least.map(|(server, _, _)| server)
}
