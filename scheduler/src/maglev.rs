//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, section 3.4).
//!
//! Each server derives a permutation of the `M` table slots from its key: `offset = h1(key) % M`,
//! `skip = h2(key) % (M - 1) + 1`, `permutation[j] = (offset + j * skip) % M`. Because `M` is prime
//! every `skip` is coprime with it, so the permutation visits every slot exactly once. Servers then
//! take turns claiming their next preferred free slot until the table is full. A flow maps to
//! `table[flow_hash % M]`.
//!
//! The result is near-perfect balance (each server gets `M / N` slots, give or take one turn) and
//! small disruption: removing a server mostly reassigns only that server's slots, because everyone
//! else still walks the same permutation. Keys, not slice positions, drive the permutations, and
//! servers take turns in key order, so the table depends only on the set of `(key, weight)` pairs:
//! every director builds the same table.
//!
//! ## Weights
//!
//! We use the cumulative-credit variant of Katran's `MaglevHashV2`: every round each server earns
//! `weight` credit and claims one slot whenever its credit reaches the largest weight in the set
//! (then pays that much back). So the heaviest server claims one slot per round, exactly as in the
//! paper, and a server of half that weight claims one every other round. With equal weights this is
//! the paper's algorithm unchanged. We prefer it to "take `weight` slots per turn" (Katran's v1),
//! which lets a heavy server grab long runs of its permutation at once, so a weight change or a
//! removal moves more slots; one claim per turn keeps the paper's interleaving and its low
//! disruption.

use crate::hash::{key_hash, OFFSET_SEED, SKIP_SEED};
use crate::Candidate;

/// A built Maglev lookup table; each entry is an index into the caller's server slice.
#[derive(Debug)]
pub(crate) struct Maglev {
    /// `M` entries, or none when no server has weight > 0. `u16` halves the cache footprint
    /// (128 KiB at the default `M`) compared with `u32`; `MAX_SERVERS` keeps indices in range.
    table: Box<[u16]>,
}

/// One eligible server's state while the table is being populated.
struct Claimant {
    index: u16,
    key: u64,
    weight: u64,
    /// Next slot in this server's permutation that it has not looked at yet.
    position: u64,
    skip: u64,
    credit: u64,
}

impl Maglev {
    /// Populates the table. The caller has checked that `table_size` is prime, that there are at
    /// most `MAX_SERVERS` servers and at most `table_size` of them.
    ///
    /// Cost: the paper's `O(M log M)` expected slot probes, plus `O(M * N)` credit updates in the
    /// worst case of one very heavy server among many light ones. 1000 servers at `M = 65537`
    /// build in a few milliseconds in release.
    pub(crate) fn new(servers: &[Candidate], table_size: u32) -> Self {
        let size = u64::from(table_size);
        let mut claimants: Vec<Claimant> = servers
            .iter()
            .enumerate()
            .filter(|(_, server)| server.weight > 0)
            .map(|(index, server)| Claimant {
                index: index as u16,
                key: server.key,
                weight: u64::from(server.weight),
                position: key_hash(server.key, OFFSET_SEED) % size,
                skip: key_hash(server.key, SKIP_SEED) % (size - 1) + 1,
                credit: 0,
            })
            .collect();
        if claimants.is_empty() {
            return Self {
                table: Box::new([]),
            };
        }
        // Turn order decides contested slots, so fix it by key, not by slice position. Equal keys
        // share a permutation; the slice index breaks the tie so the build stays deterministic.
        claimants.sort_unstable_by_key(|claimant| (claimant.key, claimant.index));
        let max_weight = claimants
            .iter()
            .map(|claimant| claimant.weight)
            .max()
            .unwrap_or(1);

        let slots = table_size as usize;
        let mut table = vec![0_u16; slots];
        let mut taken = vec![false; slots];
        let mut filled = 0;
        loop {
            for claimant in &mut claimants {
                claimant.credit += claimant.weight;
                // `weight <= max_weight` and `credit < max_weight` before the add, so a server
                // claims at most one slot per round.
                if claimant.credit < max_weight {
                    continue;
                }
                claimant.credit -= max_weight;
                // Terminates: the permutation covers all `M` slots and at least one is free.
                while taken[claimant.position as usize] {
                    claimant.advance(size);
                }
                let slot = claimant.position as usize;
                table[slot] = claimant.index;
                taken[slot] = true;
                claimant.advance(size);
                filled += 1;
                if filled == slots {
                    return Self {
                        table: table.into_boxed_slice(),
                    };
                }
            }
        }
    }

    /// `table[flow_hash % M]`, or `None` for an empty table. No allocation, no panic path.
    #[inline]
    pub(crate) fn pick(&self, flow_hash: u64) -> Option<usize> {
        let slot = flow_hash.checked_rem(self.table.len() as u64)?;
        self.table
            .get(slot as usize)
            .map(|&index| usize::from(index))
    }

    /// The first server `under` accepts in the [`crate::FALLBACK_PROBES`] slots after the
    /// flow's: consecutive slots belong to servers in the table's proportions, so the flows of
    /// an overloaded server spread over the others by weight.
    #[inline]
    pub(crate) fn fallback(&self, flow_hash: u64, under: impl Fn(usize) -> bool) -> Option<usize> {
        let size = self.table.len();
        let slot = flow_hash.checked_rem(size as u64)? as usize;
        (1..=crate::FALLBACK_PROBES.min(size))
            .filter_map(|probe| self.table.get((slot + probe) % size))
            .map(|&index| usize::from(index))
            .find(|&server| under(server))
    }

    /// The lookup table, one server index per slot.
    pub(crate) fn table(&self) -> &[u16] {
        &self.table
    }
}

impl Claimant {
    /// Moves to the next slot of the permutation: `position = (position + skip) % M`.
    #[inline]
    fn advance(&mut self, size: u64) {
        self.position += self.skip;
        if self.position >= size {
            self.position -= size;
        }
    }
}

/// Whether `n` is prime, by trial division with 6k ± 1 candidates: at most ~22,000 divisions for
/// any `u32`, run once per table build.
pub(crate) const fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = n as u64;
    let mut divisor = 5_u64;
    while divisor * divisor <= n {
        if n.is_multiple_of(divisor) || n.is_multiple_of(divisor + 2) {
            return false;
        }
        divisor += 6;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_prime_matches_a_sieve() {
        const LIMIT: usize = 10_000;
        let mut composite = vec![false; LIMIT];
        for i in 2..LIMIT {
            if !composite[i] {
                for multiple in (i * i..LIMIT).step_by(i) {
                    composite[multiple] = true;
                }
            }
        }
        for (n, &is_composite) in composite.iter().enumerate() {
            assert_eq!(is_prime(n as u32), n >= 2 && !is_composite, "is_prime({n})");
        }
    }

    #[test]
    fn is_prime_known_large_values() {
        for prime in [65_537, 655_373, 4_294_967_291] {
            assert!(is_prime(prime), "{prime} is prime");
        }
        // 65_536 = 2^16, 65_535 = 3 * 5 * 17 * 257, 4_294_967_295 = 2^32 - 1, 4_294_836_225 = 65_535^2.
        for composite in [65_536, 65_535, u32::MAX, 4_294_836_225] {
            assert!(!is_prime(composite), "{composite} is composite");
        }
    }

    #[test]
    fn every_slot_is_filled_with_an_eligible_server() {
        let servers: Vec<Candidate> = (0..7)
            .map(|i| Candidate {
                key: i * 1_000_003,
                weight: (i % 3) as u32,
            })
            .collect();
        let maglev = Maglev::new(&servers, 1009);
        assert_eq!(maglev.table().len(), 1009);
        for &index in maglev.table() {
            assert!(
                servers[usize::from(index)].weight > 0,
                "slot owned by drained server {index}"
            );
        }
    }
}
