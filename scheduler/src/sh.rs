//! Source hashing (IPVS `sh`, `ip_vs_sh.c`) and destination hashing (IPVS `dh`, `ip_vs_dh.c`).
//!
//! IPVS fills a 256-bucket table with the servers in list order, each repeated `weight` times
//! (`ip_vs_sh_reassign()`), hashes the client address into it (`ip_vs_sh_hashkey()`, Fibonacci
//! hashing with `hash_32`), and with the `sh-fallback` flag walks on to the next buckets when the
//! bucket's server has weight 0. `dh` does the same with the destination address. So one address
//! always reaches the same server while the server set is unchanged, and addresses spread over the
//! servers in proportion to the bucket counts.
//!
//! What we do the same: a table of server indices built once, weights as bucket counts (after
//! dividing by their gcd), drained servers keep buckets (as weight-0 servers keep one in IPVS), and
//! a flow whose bucket belongs to a drained server goes to the owner of the next bucket that is not
//! drained.
//!
//! Where we differ, and why:
//! - The table has `max(256, next_power_of_two(16 * sum))` buckets, capped at
//!   [`MAX_BUCKETS`] (512 KiB), not 256: with 256 buckets IPVS gives no bucket at all to servers
//!   past the 256th weight unit, and rounds shares coarsely. Bucket counts are apportioned by
//!   largest remainder, so every server with weight > 0 gets at least one bucket and shares are
//!   within one bucket of the weights.
//! - Each server's buckets are spread evenly around the table (with a per-bucket jitter hashed
//!   from the server key) instead of in one run, so a drained server's addresses fall over to many
//!   different neighbours, roughly in proportion to their weights, rather than all to the next
//!   server in the list. Because a drained server keeps its buckets, draining one moves only its
//!   own clients; the live servers' shares then exceed their weights' by the drained share, spread
//!   approximately (not exactly) by weight.
//! - The fallback is resolved when the table is built (each drained bucket already names its
//!   replacement), so `pick` is one hash and one load; it is always on, where IPVS makes `sh`'s
//!   optional and `dh` has none. `dh` also honours weights, which IPVS's `dh` ignores.
//! - Addresses are hashed with the crate's `mix64` rather than `hash_32`, for an even spread over
//!   the larger table.

use crate::hash::{addr_hash, mix64};
use crate::weights::units;
use crate::Candidate;

/// Largest table: 2^18 two-byte entries.
pub(crate) const MAX_BUCKETS: usize = 1 << 18;
/// Smallest table, IPVS's `IP_VS_SH_TAB_SIZE`.
const MIN_BUCKETS: usize = 256;
/// Buckets per weight unit we aim for, so that rounding moves shares by at most ~6%.
const BUCKETS_PER_UNIT: u64 = 16;

/// A built address-hash table, shared by `sh` and `dh`.
#[derive(Debug)]
pub(crate) struct AddressHash {
    /// A power-of-two number of server indices, each with weight > 0; empty when every weight is
    /// 0.
    table: Box<[u16]>,
}

impl AddressHash {
    /// Builds the table in `O(T log T)` for `T` buckets. The caller has checked
    /// `n <= MAX_SERVERS`.
    pub(crate) fn new(servers: &[Candidate]) -> Self {
        if servers.iter().all(|server| server.weight == 0) {
            return Self {
                table: Box::new([]),
            };
        }
        let weights: Vec<u32> = servers.iter().map(|server| server.weight).collect();
        // Half the cap, so that even after `units` rounds small weights up there is a bucket for
        // every unit (the rounding adds at most `MAX_SERVERS = MAX_BUCKETS / 4`).
        let mut units = units(&weights, (MAX_BUCKETS / 2) as u64);
        // Drained servers keep one bucket, as in IPVS, resolved to a neighbour below.
        for unit in &mut units {
            *unit = (*unit).max(1);
        }
        let total: u64 = units.iter().sum();
        let size = (total.saturating_mul(BUCKETS_PER_UNIT) as usize)
            .next_power_of_two()
            .clamp(MIN_BUCKETS, MAX_BUCKETS);
        let counts = apportion(&units, size as u64);

        // Spread each server's buckets evenly: its k-th of c buckets sits at fraction
        // (k + jitter) / c of the table, with a per-bucket jitter in [0, 1) hashed from the
        // server's key; sorting all buckets by that fraction interleaves the servers, and the
        // jitter varies which server follows which, so a drained server's buckets fall over to
        // many different neighbours.
        let mut buckets: Vec<(u64, u64, u16)> = Vec::with_capacity(size);
        for ((index, &count), server) in counts.iter().enumerate().zip(servers) {
            for k in 0..count {
                let jitter = mix64(server.key ^ mix64(k)) >> 32;
                buckets.push(((k << 32) | jitter, count, index as u16));
            }
        }
        // Numerators are below 2^50 and counts at most 2^18: the products fit in u128.
        buckets.sort_unstable_by(|a, b| {
            (u128::from(a.0) * u128::from(b.1))
                .cmp(&(u128::from(b.0) * u128::from(a.1)))
                .then(a.2.cmp(&b.2))
        });
        let owners: Vec<u16> = buckets.iter().map(|&(_, _, index)| index).collect();

        // Resolve the fallback: a drained bucket takes the owner of the next live bucket,
        // wrapping around. Walking backwards from a live bucket fills every run in one pass.
        let live = |index: u16| servers[usize::from(index)].weight > 0;
        let start = owners.iter().rposition(|&index| live(index)).unwrap_or(0);
        let mut table = owners.clone();
        let mut next_live = owners[start];
        for offset in 0..size {
            let bucket = (start + size - offset) % size;
            if live(owners[bucket]) {
                next_live = owners[bucket];
            } else {
                table[bucket] = next_live;
            }
        }
        Self {
            table: table.into_boxed_slice(),
        }
    }

    /// The server for this address, or `None` when every server is drained.
    #[inline]
    pub(crate) fn pick(&self, addr: u32) -> Option<usize> {
        let mask = self.table.len().checked_sub(1)?;
        self.table
            .get(addr_hash(addr) as usize & mask)
            .map(|&index| usize::from(index))
    }

    /// The first server `under` accepts in the [`crate::FALLBACK_PROBES`] buckets after the
    /// address's, as `ip_vs_sh_get_fallback()` walks the buckets after an unavailable server's.
    #[inline]
    pub(crate) fn fallback(&self, addr: u32, under: impl Fn(usize) -> bool) -> Option<usize> {
        let mask = self.table.len().checked_sub(1)?;
        let bucket = addr_hash(addr) as usize & mask;
        (1..=crate::FALLBACK_PROBES.min(self.table.len()))
            .filter_map(|probe| self.table.get((bucket + probe) & mask))
            .map(|&index| usize::from(index))
            .find(|&server| under(server))
    }

    #[cfg(test)]
    pub(crate) fn table(&self) -> &[u16] {
        &self.table
    }
}

/// Splits `size` buckets in proportion to `units` by largest remainder: each server gets
/// `floor(size * unit / total)` plus one for the largest remainders until `size` is reached.
/// Requires `size >= sum(units)`, so every server with a unit gets at least one bucket.
fn apportion(units: &[u64], size: u64) -> Vec<u64> {
    let total: u64 = units.iter().sum();
    let mut counts = Vec::with_capacity(units.len());
    let mut remainders = Vec::with_capacity(units.len());
    for (index, &unit) in units.iter().enumerate() {
        let product = u128::from(size) * u128::from(unit);
        counts.push((product / u128::from(total)) as u64);
        remainders.push((product % u128::from(total), index));
    }
    let spare = size - counts.iter().sum::<u64>();
    remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, index) in remainders.iter().take(spare as usize) {
        counts[index] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(weights: &[u32]) -> AddressHash {
        let servers: Vec<Candidate> = weights
            .iter()
            .map(|&weight| Candidate { key: 0, weight })
            .collect();
        AddressHash::new(&servers)
    }

    fn counts(table: &[u16], servers: usize) -> Vec<usize> {
        let mut counts = vec![0; servers];
        for &index in table {
            counts[usize::from(index)] += 1;
        }
        counts
    }

    #[test]
    fn apportion_is_exact_and_fair() {
        assert_eq!(apportion(&[3, 1], 256), vec![192, 64]);
        assert_eq!(apportion(&[1, 1, 1], 256), vec![86, 85, 85]);
        assert_eq!(apportion(&[5, 3, 2], 256).iter().sum::<u64>(), 256);
    }

    #[test]
    fn buckets_follow_weights() {
        let table = build(&[3, 1]);
        assert_eq!(table.table().len(), 256);
        assert_eq!(counts(table.table(), 2), vec![192, 64]);
        // Interleaved, not in runs: the light server appears in every eighth of the table.
        for eighth in table.table().chunks(32) {
            assert!(eighth.contains(&1), "an eighth without the light server");
        }
    }

    #[test]
    fn drained_buckets_go_to_the_next_live_bucket() {
        let table = build(&[1, 0, 1, 0]);
        let table = table.table();
        assert!(table.iter().all(|&index| index == 0 || index == 2));
        // 4 servers * 16 buckets/unit = 64, raised to the minimum of 256: 64 each; drained
        // servers' 128 buckets split between the two live ones.
        let counts = counts(table, 4);
        assert_eq!(counts[0] + counts[2], 256);
        assert!(counts[0].abs_diff(counts[2]) < 40, "{counts:?}");
        assert!(build(&[0, 0]).table().is_empty());
    }

    #[test]
    fn every_weighted_server_gets_a_bucket() {
        let mut weights = vec![1; 5000];
        weights[0] = u32::MAX;
        let table = build(&weights);
        assert!(table.table().len() <= MAX_BUCKETS);
        let counts = counts(table.table(), weights.len());
        assert!(counts.iter().all(|&count| count >= 1));
    }
}
