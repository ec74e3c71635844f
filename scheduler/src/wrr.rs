//! Weighted round robin (IPVS `wrr`, `net/netfilter/ipvs/ip_vs_wrr.c`).
//!
//! IPVS walks the server list with a current weight `cw` that starts at the largest weight and
//! drops by the gcd of the weights `di` after every pass, wrapping back to the largest weight at
//! zero; each pass yields the servers whose weight is at least `cw`, in list order. For weights
//! 4:3:2 that is the interleaved sequence `A A B A B C A B C`, whose period is
//! `sum(weight) / gcd`.
//!
//! IPVS keeps `cw` and its list position under `svc->sched_lock`. We precompute one period of
//! the same sequence in [`WeightedRoundRobin::new`] and index it with an atomic counter
//! (`fetch_add % len`), so every worker advances one shared sequence without a lock and the
//! picks over any window of `len` consecutive counter values follow the weights exactly.
//!
//! Bound: the period has `sum(weight / gcd)` entries of 2 bytes. Weights whose gcd-divided sum
//! exceeds [`MAX_SEQUENCE`] are scaled down proportionally first (see `weights::units`), so the
//! table never exceeds about 2.1 MiB (2^20 + `MAX_SERVERS` entries); realistic weight sets give a
//! few hundred bytes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::weights::units;
use crate::Candidate;

/// Longest sequence built from exact weights: 2^20 entries (2 MiB).
pub(crate) const MAX_SEQUENCE: u64 = 1 << 20;

#[derive(Debug)]
pub(crate) struct WeightedRoundRobin {
    /// One period of IPVS's sequence, as server indices; empty when every weight is 0.
    sequence: Box<[u16]>,
    /// Picks so far; relaxed for the same reason as in `rr`: only distinct values matter.
    cursor: AtomicUsize,
}

impl WeightedRoundRobin {
    /// Builds the sequence in `O(len + n log n)`. The caller has checked `n <= MAX_SERVERS`.
    pub(crate) fn new(servers: &[Candidate]) -> Self {
        let weights: Vec<u32> = servers.iter().map(|server| server.weight).collect();
        Self {
            sequence: sequence(&units(&weights, MAX_SEQUENCE)).into_boxed_slice(),
            cursor: AtomicUsize::new(0),
        }
    }

    #[inline]
    pub(crate) fn pick(&self) -> Option<usize> {
        if self.sequence.is_empty() {
            return None;
        }
        // Wrapping at usize::MAX skews one period in 2^64 picks: harmless.
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed) % self.sequence.len();
        self.sequence.get(turn).map(|&index| usize::from(index))
    }

    /// The precomputed period, for tests.
    #[cfg(test)]
    pub(crate) fn period(&self) -> &[u16] {
        &self.sequence
    }
}

/// IPVS's sequence for gcd-divided weights: for `cw` from the largest unit down to 1, every
/// server with `units >= cw` in index order.
fn sequence(units: &[u64]) -> Vec<u16> {
    // Servers by decreasing weight join the pass set as `cw` drops to their weight.
    let mut by_weight: Vec<(u64, u16)> = units
        .iter()
        .enumerate()
        .filter(|(_, &unit)| unit > 0)
        .map(|(index, &unit)| (unit, index as u16))
        .collect();
    by_weight.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let length: u64 = units.iter().sum();
    let mut sequence = Vec::with_capacity(length as usize);
    let mut pass: BTreeSet<u16> = BTreeSet::new();
    let mut joining = by_weight.iter().peekable();
    let max_unit = by_weight.first().map_or(0, |&(unit, _)| unit);
    for current in (1..=max_unit).rev() {
        while let Some(&(_, index)) = joining.next_if(|&&(unit, _)| unit >= current) {
            pass.insert(index);
        }
        sequence.extend(pass.iter().copied());
    }
    sequence
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(weights: &[u32]) -> WeightedRoundRobin {
        let servers: Vec<Candidate> = weights
            .iter()
            .map(|&weight| Candidate { key: 0, weight })
            .collect();
        WeightedRoundRobin::new(&servers)
    }

    /// The example from the LVS documentation: weights A=4, B=3, C=2 give `AABABCABC`.
    #[test]
    fn matches_the_ipvs_sequence() {
        assert_eq!(build(&[4, 3, 2]).period(), &[0, 0, 1, 0, 1, 2, 0, 1, 2]);
        // gcd 100 divides out; drained servers are skipped.
        assert_eq!(build(&[0, 300, 100]).period(), &[1, 1, 1, 2]);
        assert_eq!(build(&[2, 2]).period(), &[0, 1]);
        assert!(build(&[0, 0]).period().is_empty());
    }

    #[test]
    fn huge_weights_are_bounded() {
        let wrr = build(&[u32::MAX, u32::MAX - 1, 1]);
        let period = wrr.period();
        assert!(period.len() as u64 <= MAX_SEQUENCE + 3);
        let light = period.iter().filter(|&&index| index == 2).count();
        assert_eq!(light, 1, "the lightest server keeps one turn per period");
    }
}
