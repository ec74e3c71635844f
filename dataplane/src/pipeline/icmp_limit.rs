//! The per-source rate limit of the ICMP errors the director sends itself: the
//! fragmentation-needed and packet-too-big answers of LVS-TUN ([`crate::rewrite::tun`]'s "Too
//! big"). Without it, a stream of big DF-set packets from spoofed sources turns the director
//! into a reflector at the rate it forwards.
//!
//! Linux's defaults, and its algorithm (`inet_peer_xrlim_allow()`, `net/ipv4/inetpeer.c`): per
//! destination of the error (the client), a token bucket earning one error per
//! `icmp_ratelimit` = 1000 ms (`icmpv6.ratelimit` is the same for IPv6) and holding at most
//! `XRLIM_BURST_FACTOR` = 6, full for a source not seen before; plus, for all destinations
//! together, `icmp_msgs_per_sec` = 1000 with a burst of `icmp_msgs_burst` = 50
//! (`icmp_global_allow()`). An error goes out only if both buckets have a token.
//!
//! Where Linux keeps a bucket per peer in its inetpeer tree, each worker keeps a fixed array of
//! [`SLOTS`] buckets indexed by a seeded hash of the client's address: no allocation, lock or
//! lookup structure per frame, 16 KiB per worker. Two clients whose addresses share a slot share
//! a bucket (their errors are limited together); the seed is random per worker, so a sender
//! cannot pick addresses that starve a given client's slot.
//!
//! What this module must not do: allocate after [`IcmpErrorLimit::new`], or look at frames.

use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use crate::conntrack::FlowAddr;

/// Per-source buckets per worker (a power of two).
pub const SLOTS: usize = 1024;
/// Linux's `icmp_ratelimit`: one error per destination per 1000 ms...
const PER_SOURCE_COST_MS: u64 = 1000;
/// ... and at most `XRLIM_BURST_FACTOR` = 6 in a row.
pub const PER_SOURCE_BURST: u64 = 6;
/// Linux's `icmp_msgs_per_sec` = 1000 for all destinations: one per millisecond...
const GLOBAL_COST_MS: u64 = 1;
/// ... with a burst of `icmp_msgs_burst` = 50.
pub const GLOBAL_BURST: u64 = 50;

/// A token bucket whose credit is counted in milliseconds earned.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    credit_ms: u64,
    /// When the credit was last brought up to date, in milliseconds since the epoch.
    updated_ms: u64,
}

impl Bucket {
    const fn full(cap_ms: u64) -> Self {
        Bucket {
            credit_ms: cap_ms,
            updated_ms: 0,
        }
    }

    /// Adds what was earned since the last update, up to `cap_ms`.
    #[inline]
    fn refill(&mut self, now_ms: u64, cap_ms: u64) {
        let earned = now_ms.saturating_sub(self.updated_ms);
        self.credit_ms = self.credit_ms.saturating_add(earned).min(cap_ms);
        self.updated_ms = self.updated_ms.max(now_ms);
    }
}

/// One worker's rate limit of the ICMP errors it generates. See the module docs.
#[derive(Debug)]
pub struct IcmpErrorLimit {
    buckets: Box<[Bucket]>,
    global: Bucket,
    seed: u64,
    epoch: Instant,
}

impl Default for IcmpErrorLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl IcmpErrorLimit {
    /// Every bucket full, times counted from now. All its memory is allocated here.
    pub fn new() -> Self {
        IcmpErrorLimit {
            buckets: vec![Bucket::full(PER_SOURCE_BURST * PER_SOURCE_COST_MS); SLOTS]
                .into_boxed_slice(),
            global: Bucket::full(GLOBAL_BURST * GLOBAL_COST_MS),
            // Odd, so the multiplication below loses no bit.
            seed: RandomState::new().hash_one(0x1c3f_u64) | 1,
            epoch: Instant::now(),
        }
    }

    /// Whether an error may be sent to `client` at `now`, taking a token from its bucket and
    /// the global one if so. Instants before the limiter's creation count as its creation.
    #[inline]
    pub fn allow(&mut self, client: FlowAddr, now: Instant) -> bool {
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let bits = client.bits();
        let folded = (bits as u64) ^ ((bits >> 64) as u64);
        // Fibonacci hashing of the seeded address: the top bits index the array.
        let slot = ((folded ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> (64 - SLOTS.trailing_zeros())) as usize;
        let Some(bucket) = self.buckets.get_mut(slot) else {
            return false;
        };
        bucket.refill(now_ms, PER_SOURCE_BURST * PER_SOURCE_COST_MS);
        self.global.refill(now_ms, GLOBAL_BURST * GLOBAL_COST_MS);
        if bucket.credit_ms < PER_SOURCE_COST_MS || self.global.credit_ms < GLOBAL_COST_MS {
            return false;
        }
        bucket.credit_ms -= PER_SOURCE_COST_MS;
        self.global.credit_ms -= GLOBAL_COST_MS;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn allowed(limit: &mut IcmpErrorLimit, client: &str, now: Instant, tries: usize) -> usize {
        let client: FlowAddr = client.parse().unwrap();
        (0..tries).filter(|_| limit.allow(client, now)).count()
    }

    #[test]
    fn a_burst_of_six_then_one_a_second_per_source() {
        let mut limit = IcmpErrorLimit::new();
        let start = limit.epoch;
        assert_eq!(allowed(&mut limit, "198.51.100.7", start, 100), 6);
        // Other sources are unaffected, of either family.
        assert_eq!(allowed(&mut limit, "198.51.100.8", start, 100), 6);
        assert_eq!(allowed(&mut limit, "2001:db8::7", start, 100), 6);
        // Half a second earns nothing whole; a second earns one; a minute refills the burst,
        // no more.
        let half = start + Duration::from_millis(500);
        assert_eq!(allowed(&mut limit, "198.51.100.7", half, 100), 0);
        let second = start + Duration::from_millis(1000);
        assert_eq!(allowed(&mut limit, "198.51.100.7", second, 100), 1);
        let minute = start + Duration::from_secs(61);
        assert_eq!(allowed(&mut limit, "198.51.100.7", minute, 100), 6);
    }

    #[test]
    fn all_sources_together_get_at_most_the_global_burst() {
        let mut limit = IcmpErrorLimit::new();
        let start = limit.epoch;
        let sent: usize = (0..200u32)
            .map(|n| {
                let client = FlowAddr::v4(std::net::Ipv4Addr::from(0xc633_6400 | n));
                usize::from(limit.allow(client, start))
            })
            .sum();
        assert_eq!(sent as u64, GLOBAL_BURST);
        // 10 ms later: 10 more for the whole director.
        let later = start + Duration::from_millis(10);
        let sent: usize = (1000..1200u32)
            .map(|n| {
                let client = FlowAddr::v4(std::net::Ipv4Addr::from(0xcb00_7100 | n));
                usize::from(limit.allow(client, later))
            })
            .sum();
        assert_eq!(sent, 10);
    }
}
