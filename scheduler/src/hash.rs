//! Fixed-seed 64-bit hashing for flows and server keys.
//!
//! Every director in a Maglev group must compute the same hash for the same flow, on any machine
//! and across restarts and upgrades, or a flow would land on different servers depending on which
//! director ECMP sent it to (Maglev paper, section 3.4). So the seeds are constants, the inputs are
//! host-order integers (never raw bytes, which would make the result depend on endianness), and
//! `tests::flow_hash_is_pinned` freezes the output: changing it is a breaking change for mixed-version
//! clusters.

/// Seed folded into every flow hash. An arbitrary odd constant (the first 64 bits of pi's fraction).
const FLOW_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// Seeds for the two independent hashes Maglev derives from a server key (offset and skip).
pub(crate) const OFFSET_SEED: u64 = 0x1319_8a2e_0370_7344;
pub(crate) const SKIP_SEED: u64 = 0xa409_3822_299f_31d0;

/// Seed for hashing a single address (`sh`, `dh`, and the `lblc`/`lblcr` state slots).
const ADDR_SEED: u64 = 0xbe54_66cf_34e9_0c6c;

/// MurmurHash3's 64-bit finaliser (`fmix64`): a bijection on `u64` in which every input bit
/// affects every output bit with probability close to 1/2.
#[inline]
pub(crate) const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Hashes a server key with a seed; distinct seeds give hashes that behave as independent.
#[inline]
pub(crate) const fn key_hash(key: u64, seed: u64) -> u64 {
    // Mixing twice keeps `key ^ seed` from leaking structure between the two seeded hashes when
    // keys are small consecutive integers.
    mix64(mix64(key ^ seed).wrapping_add(seed))
}

/// Deterministic 64-bit hash of one IPv4 address (host order), for the address-keyed
/// schedulers. Like [`flow_hash`] it is the same on every machine, so two directors running `sh`
/// send a client to the same server.
#[inline]
pub(crate) const fn addr_hash(addr: u32) -> u64 {
    mix64(addr as u64 ^ ADDR_SEED)
}

/// Deterministic 64-bit hash of a flow's 5-tuple.
///
/// Addresses and ports are host-order integers (as read with `from_be_bytes`), `protocol` is the
/// IP protocol number. The result is the same on every machine and run, so two directors running
/// Maglev send a flow to the same server; every output bit depends on every input bit.
///
/// The 5-tuple is packed losslessly into two words and each is absorbed through a bijective mixer,
/// so changing any single field always changes the hash.
#[inline]
pub const fn flow_hash(
    src_addr: u32,
    dst_addr: u32,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
) -> u64 {
    let addresses = ((src_addr as u64) << 32) | dst_addr as u64;
    let ports_and_protocol = ((src_port as u64) << 24) | ((dst_port as u64) << 8) | protocol as u64;
    mix64(mix64(addresses ^ FLOW_SEED) ^ ports_and_protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUPLE: (u32, u32, u16, u16, u8) = (0x0a00_0001, 0xc0a8_0101, 40_000, 80, 6);

    fn tuple_hash(t: (u32, u32, u16, u16, u8)) -> u64 {
        flow_hash(t.0, t.1, t.2, t.3, t.4)
    }

    #[test]
    fn flow_hash_is_deterministic() {
        assert_eq!(tuple_hash(TUPLE), tuple_hash(TUPLE));
    }

    /// Directors of different versions must agree; this value may only change with a release note.
    #[test]
    fn flow_hash_is_pinned() {
        assert_eq!(tuple_hash(TUPLE), PINNED_FLOW_HASH);
        assert_eq!(flow_hash(0, 0, 0, 0, 0), PINNED_ZERO_FLOW_HASH);
    }
    // Cross-checked against an independent Python transcription of `flow_hash`.
    const PINNED_FLOW_HASH: u64 = 0xdd70_c159_3032_1fa8;
    const PINNED_ZERO_FLOW_HASH: u64 = 0xf590_4f05_c982_8dd6;

    #[test]
    fn flow_hash_changes_with_every_field() {
        let base = tuple_hash(TUPLE);
        let (src, dst, sport, dport, proto) = TUPLE;
        let variants = [
            ("src_addr", (src + 1, dst, sport, dport, proto)),
            ("dst_addr", (src, dst + 1, sport, dport, proto)),
            ("src_port", (src, dst, sport + 1, dport, proto)),
            ("dst_port", (src, dst, sport, dport + 1, proto)),
            ("protocol", (src, dst, sport, dport, 17)),
            // Swapping direction is a different flow (the reply path is not hashed here).
            ("swapped", (dst, src, dport, sport, proto)),
        ];
        for (field, tuple) in variants {
            assert_ne!(
                tuple_hash(tuple),
                base,
                "changing {field} did not change the hash"
            );
        }
    }

    /// Consecutive source ports (what a busy client produces) must still set every output bit
    /// about half the time, or `hash % M` would favour some Maglev slots.
    #[test]
    fn flow_hash_bits_are_balanced() {
        const SAMPLES: u32 = 1 << 16;
        let mut ones = [0_u32; 64];
        for i in 0..SAMPLES {
            let h = flow_hash(0x0a00_0000 | (i >> 16), 0xc0a8_0101, i as u16, 443, 6);
            for (bit, count) in ones.iter_mut().enumerate() {
                *count += ((h >> bit) & 1) as u32;
            }
        }
        for (bit, &count) in ones.iter().enumerate() {
            let share = f64::from(count) / f64::from(SAMPLES);
            assert!(
                (0.48..=0.52).contains(&share),
                "bit {bit} set in {share:.3} of hashes"
            );
        }
    }

    /// Flipping any single input bit flips each output bit about half the time (avalanche).
    #[test]
    fn flow_hash_avalanches() {
        let mut worst = 0.0_f64;
        // 32 + 32 + 16 + 16 + 8 input bits.
        for bit in 0..104_u32 {
            let mut flipped_total = 0_u32;
            let trials = 256_u32;
            for i in 0..trials {
                let (src, dst, sport, dport, proto) =
                    (i.wrapping_mul(0x9e37_79b9), !i, i as u16, 80_u16, 6_u8);
                let a = flow_hash(src, dst, sport, dport, proto);
                let b = match bit {
                    0..=31 => flow_hash(src ^ (1 << bit), dst, sport, dport, proto),
                    32..=63 => flow_hash(src, dst ^ (1 << (bit - 32)), sport, dport, proto),
                    64..=79 => flow_hash(src, dst, sport ^ (1 << (bit - 64)), dport, proto),
                    80..=95 => flow_hash(src, dst, sport, dport ^ (1 << (bit - 80)), proto),
                    _ => flow_hash(src, dst, sport, dport, proto ^ (1 << (bit - 96))),
                };
                flipped_total += (a ^ b).count_ones();
            }
            let mean = f64::from(flipped_total) / f64::from(trials * 64);
            worst = worst.max((mean - 0.5).abs());
        }
        println!("flow_hash avalanche: worst mean deviation from 0.5 = {worst:.4}");
        assert!(worst < 0.03, "avalanche deviation {worst}");
    }

    #[test]
    fn key_hash_seeds_are_independent() {
        // Same key, two seeds: the Maglev offset and skip must not be correlated.
        let same_low_bits = (0..10_000_u64)
            .filter(|&k| key_hash(k, OFFSET_SEED) & 0xff == key_hash(k, SKIP_SEED) & 0xff)
            .count();
        // Expected 10_000 / 256 ~= 39.
        assert!(
            same_low_bits < 80,
            "{same_low_bits} keys with equal low bytes"
        );
    }
}
