//! The connection table's key: a flow's 5-tuple as the client sent it ([`FlowKey`]), compared
//! and hashed as two packed words, and the seeded hash the table indexes it by.
//!
//! What this module must not do: know about entries, states or the table's layout.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use hashbrown::DefaultHashBuilder;

use crate::service::Protocol;

/// A flow as the client sent it: source, VIP, ports, protocol.
#[derive(Clone, Copy, Debug, Eq)]
pub struct FlowKey {
    /// Client address.
    pub src_addr: Ipv4Addr,
    /// Virtual IP address.
    pub dst_addr: Ipv4Addr,
    /// Client port.
    pub src_port: u16,
    /// Service port.
    pub dst_port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// Compared as the two words of [`FlowKey::packed`]: two comparisons instead of five, on the
/// connection table's lookup of every frame.
impl PartialEq for FlowKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.packed() == other.packed()
    }
}

/// Hashed as [`FlowKey::packed`], consistent with `PartialEq`.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.packed().hash(state);
    }
}

impl FlowKey {
    /// The key in two words: the addresses, and the ports and protocol number. Equal keys, and
    /// only they, have equal words.
    #[inline]
    pub const fn packed(&self) -> (u64, u64) {
        (
            ((self.src_addr.to_bits() as u64) << 32) | self.dst_addr.to_bits() as u64,
            ((self.src_port as u64) << 24)
                | ((self.dst_port as u64) << 8)
                | self.protocol.number() as u64,
        )
    }

    /// The scheduler's hash of this flow.
    #[inline]
    pub fn flow_hash(&self) -> u64 {
        scheduler::flow_hash(
            u32::from(self.src_addr),
            u32::from(self.dst_addr),
            self.src_port,
            self.dst_port,
            self.protocol.number(),
        )
    }
}

/// The connection table's hash of a [`FlowKey`]: the key packed into two words and mixed by two
/// folded multiplications (a 64 x 64 -> 128-bit product with its halves XORed), the core of
/// foldhash, with per-table random seeds so that clients cannot aim their flows at one probe
/// run. One multiplication less than hashing the five fields one by one through `Hasher`, and
/// no `Hash` plumbing per packet.
#[derive(Clone, Copy, Debug)]
pub(super) struct FlowHasher {
    seeds: [u64; 3],
}

/// The high and low halves of `a * b`, XORed.
#[inline]
const fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = (a as u128) * (b as u128);
    (product as u64) ^ ((product >> 64) as u64)
}

impl FlowHasher {
    pub(super) fn random() -> Self {
        let random = DefaultHashBuilder::default();
        FlowHasher {
            // Odd, so that no seed zeroes a product by itself.
            seeds: [0u64, 1, 2].map(|n| random.hash_one(n) | 1),
        }
    }

    #[inline]
    pub(super) fn hash(&self, key: &FlowKey) -> u64 {
        let (addresses, rest) = key.packed();
        let mixed = folded_multiply(addresses ^ self.seeds[0], rest ^ self.seeds[1]);
        folded_multiply(mixed, self.seeds[2])
    }
}
