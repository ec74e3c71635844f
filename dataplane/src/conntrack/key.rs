//! The connection table's key: a flow's 5-tuple as the client sent it ([`FlowKey`]), of either
//! address family, and the seeded hash the table indexes it by (an IPv4 key packed into two
//! words, an IPv6 key into five).
//!
//! What this module must not do: know about entries, states or the table's layout.

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::DefaultHashBuilder;

use crate::service::Protocol;

/// A flow as the client sent it: source, VIP, ports, protocol. Both addresses are of one
/// family (the parser never makes another key; a mixed one is merely never found).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client address.
    pub src_addr: IpAddr,
    /// Virtual IP address.
    pub dst_addr: IpAddr,
    /// Client port.
    pub src_port: u16,
    /// Service port.
    pub dst_port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

impl FlowKey {
    /// Ports and protocol number in one word.
    #[inline]
    const fn ports_and_protocol(&self) -> u64 {
        ((self.src_port as u64) << 24)
            | ((self.dst_port as u64) << 8)
            | self.protocol.number() as u64
    }

    /// The scheduler's hash of this flow. An IPv6 address enters it folded to 32 bits (its
    /// four words XORed): the scheduler's hash spreads flows, it does not identify them.
    #[inline]
    pub fn flow_hash(&self) -> u64 {
        scheduler::flow_hash(
            fold32(self.src_addr),
            fold32(self.dst_addr),
            self.src_port,
            self.dst_port,
            self.protocol.number(),
        )
    }
}

/// An address in 32 bits: IPv4 as it is, IPv6 with its four words XORed.
#[inline]
pub const fn fold32(address: IpAddr) -> u32 {
    match address {
        IpAddr::V4(v4) => v4.to_bits(),
        IpAddr::V6(v6) => {
            let bits = v6.to_bits();
            (bits as u32) ^ ((bits >> 32) as u32) ^ ((bits >> 64) as u32) ^ ((bits >> 96) as u32)
        }
    }
}

/// An address in 128 bits (IPv4 as its IPv4-mapped IPv6 address, RFC 4291 2.5.5.2), so that
/// no IPv4 address shares bits with an IPv6 one.
#[inline]
pub const fn bits128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => 0xffff_0000_0000 | v4.to_bits() as u128,
        IpAddr::V6(v6) => v6.to_bits(),
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

    /// An IPv4 key costs what it did before IPv6: its addresses in one word, its ports and
    /// protocol in another, two multiplications. An IPv6 key folds its four address words in
    /// with one multiplication each first.
    #[inline]
    pub(super) fn hash(&self, key: &FlowKey) -> u64 {
        let rest = key.ports_and_protocol();
        let addresses = match (key.src_addr, key.dst_addr) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                (u64::from(src.to_bits()) << 32) | u64::from(dst.to_bits())
            }
            (src, dst) => {
                let (src, dst) = (bits128(src), bits128(dst));
                let high = folded_multiply(
                    (src >> 64) as u64 ^ self.seeds[0],
                    src as u64 ^ self.seeds[2],
                );
                folded_multiply((dst >> 64) as u64 ^ high, dst as u64 ^ self.seeds[1])
            }
        };
        let mixed = folded_multiply(addresses ^ self.seeds[0], rest ^ self.seeds[1]);
        folded_multiply(mixed, self.seeds[2])
    }
}
