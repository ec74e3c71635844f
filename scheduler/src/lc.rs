//! Least connection (IPVS `lc`, `ip_vs_lc.c`) and weighted least connection (IPVS `wlc`,
//! `ip_vs_wlc.c`).
//!
//! Both rank servers by IPVS's `ip_vs_dest_conn_overhead()` (`include/net/ip_vs.h`):
//! `active * 256 + inactive`, so an established connection costs 256 times a connection that is
//! closing or not yet established. `lc` picks the smallest overhead and ignores weights apart from
//! skipping drained servers; `wlc` picks the smallest `overhead / weight`, compared by
//! cross-multiplication exactly as `ip_vs_wlc.c` does: a later server replaces the current least
//! when `least_overhead * weight > overhead * least_weight`. Ties keep the first server in slice
//! order. Both are `O(n)` scans, as in IPVS; the products are computed in `u128` so they cannot
//! overflow whatever the counts.

use crate::Loads;

/// IPVS's `ip_vs_dest_conn_overhead()`: `active * 256 + inactive`, saturating.
#[inline]
pub(crate) fn overhead<L: Loads + ?Sized>(loads: &L, server: usize) -> u64 {
    let (active, inactive) = loads.counts(server);
    active.saturating_mul(256).saturating_add(inactive)
}

/// `a / a_weight > b / b_weight`, without division: `a * b_weight > b * a_weight`.
#[inline]
pub(crate) fn costlier(a: u64, a_weight: u32, b: u64, b_weight: u32) -> bool {
    u128::from(a) * u128::from(b_weight) > u128::from(b) * u128::from(a_weight)
}

/// `lc`: the server with weight > 0 and the fewest connections (by overhead).
#[inline]
pub(crate) fn least_connection<L: Loads + ?Sized>(weights: &[u32], loads: &L) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for (server, _) in weights
        .iter()
        .enumerate()
        .filter(|&(server, &w)| w > 0 && !loads.over_threshold(server))
    {
        let load = overhead(loads, server);
        if least.is_none_or(|(_, least_load)| load < least_load) {
            least = Some((server, load));
        }
    }
    least.map(|(server, _)| server)
}

/// `wlc`: the server with weight > 0 and the smallest `overhead / weight`.
#[inline]
pub(crate) fn weighted_least_connection<L: Loads + ?Sized>(
    weights: &[u32],
    loads: &L,
) -> Option<usize> {
    least_loaded(weights.iter().copied().enumerate(), loads)
}

/// Of `candidates` (server, weight), the one with weight > 0, not over its threshold, and the
/// least overhead / weight; ties go to the first, as in IPVS.
pub(crate) fn least_loaded<L: Loads + ?Sized>(
    candidates: impl Iterator<Item = (usize, u32)>,
    loads: &L,
) -> Option<usize> {
    let mut least: Option<(usize, u64, u32)> = None;
    for (server, weight) in
        candidates.filter(|&(server, weight)| weight > 0 && !loads.over_threshold(server))
    {
        let load = overhead(loads, server);
        match least {
            Some((_, least_load, least_weight))
                if !costlier(least_load, least_weight, load, weight) => {}
            _ => least = Some((server, load, weight)),
        }
    }
    least.map(|(server, _, _)| server)
}
