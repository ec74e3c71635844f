//! The connection table's key: a flow's 5-tuple as the client sent it ([`FlowKey`]), of either
//! address family, its addresses as [`FlowAddr`] (two aligned words, IPv4 in its mapped form),
//! and the seeded hash the table indexes it by (two multiplications for either family).
//!
//! What this module must not do: know about entries, states or the table's layout.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::DefaultHashBuilder;

use crate::service::Protocol;

/// An address of either family as a flow key holds it: 128 bits in two aligned words, IPv4 as
/// its IPv4-mapped IPv6 address (RFC 4291 2.5.5.2). The parser refuses IPv4-mapped addresses
/// in IPv6 headers (RFC 4942 2.2 advises dropping them on the wire), so the mapped form is
/// IPv4's alone and the family is read off the address.
///
/// Why not `IpAddr`: an `IpAddr` is a tag byte and 16 unaligned bytes, so every comparison and
/// hash of a key branched on two tags and compared byte arrays; an IPv4 frame paid about 60
/// instructions for IPv6's existence (benches/README.md). Two words compare and hash as they
/// are, and an IPv4 address is one test away from its 32 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowAddr {
    high: u64,
    low: u64,
}

/// The high 32 bits of an IPv4-mapped address's low word.
const MAPPED_MARK: u64 = 0xffff;

impl FlowAddr {
    /// An IPv4 address.
    #[inline]
    pub const fn v4(address: Ipv4Addr) -> Self {
        FlowAddr {
            high: 0,
            low: (MAPPED_MARK << 32) | address.to_bits() as u64,
        }
    }

    /// An IPv6 address (an IPv4-mapped one reads back as IPv4).
    #[inline]
    pub const fn v6(address: Ipv6Addr) -> Self {
        let bits = address.to_bits();
        FlowAddr {
            high: (bits >> 64) as u64,
            low: bits as u64,
        }
    }

    /// An address of either family.
    #[inline]
    pub const fn new(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self::v4(v4),
            IpAddr::V6(v6) => Self::v6(v6),
        }
    }

    /// Whether it is an IPv4 address.
    #[inline]
    pub const fn is_ipv4(self) -> bool {
        self.high == 0 && self.low >> 32 == MAPPED_MARK
    }

    /// The address as `std` writes it.
    #[inline]
    pub const fn ip(self) -> IpAddr {
        if self.is_ipv4() {
            IpAddr::V4(Ipv4Addr::from_bits(self.low as u32))
        } else {
            IpAddr::V6(self.to_ipv6())
        }
    }

    /// The 128 bits (IPv4 in its mapped form, so that no IPv4 address shares bits with an
    /// IPv6 one).
    #[inline]
    pub const fn bits(self) -> u128 {
        ((self.high as u128) << 64) | self.low as u128
    }

    /// The address as IPv6 (IPv4 in its mapped form).
    #[inline]
    pub const fn to_ipv6(self) -> Ipv6Addr {
        Ipv6Addr::from_bits(self.bits())
    }

    /// The address in 32 bits: IPv4 as it is, IPv6 with its four 32-bit words XORed (and the
    /// mapped form's mark, so that IPv4 comes out as it is without a branch). What the
    /// schedulers and the service index hash; an IPv4 flow keeps the key it had before IPv6.
    #[inline]
    pub const fn fold32(self) -> u32 {
        let folded = self.high ^ self.low;
        (folded as u32) ^ ((folded >> 32) as u32) ^ (MAPPED_MARK as u32)
    }
}

impl From<IpAddr> for FlowAddr {
    #[inline]
    fn from(address: IpAddr) -> Self {
        Self::new(address)
    }
}

impl From<Ipv4Addr> for FlowAddr {
    #[inline]
    fn from(address: Ipv4Addr) -> Self {
        Self::v4(address)
    }
}

impl From<Ipv6Addr> for FlowAddr {
    #[inline]
    fn from(address: Ipv6Addr) -> Self {
        Self::v6(address)
    }
}

impl From<FlowAddr> for IpAddr {
    #[inline]
    fn from(address: FlowAddr) -> Self {
        address.ip()
    }
}

impl PartialEq<IpAddr> for FlowAddr {
    #[inline]
    fn eq(&self, other: &IpAddr) -> bool {
        *self == Self::new(*other)
    }
}

impl PartialEq<FlowAddr> for IpAddr {
    #[inline]
    fn eq(&self, other: &FlowAddr) -> bool {
        FlowAddr::new(*self) == *other
    }
}

impl std::str::FromStr for FlowAddr {
    type Err = std::net::AddrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<IpAddr>().map(Self::new)
    }
}

impl std::fmt::Debug for FlowAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.ip(), f)
    }
}

impl std::fmt::Display for FlowAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.ip(), f)
    }
}

/// A flow as the client sent it: source, VIP, ports, protocol. Both addresses are of one
/// family (the parser never makes another key; a mixed one is merely never found).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client address.
    pub src_addr: FlowAddr,
    /// Virtual IP address.
    pub dst_addr: FlowAddr,
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
            self.src_addr.fold32(),
            self.dst_addr.fold32(),
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

    /// Two multiplications for either family, no branch: the addresses' low words (IPv4's
    /// whole addresses, in their mapped form) are folded into one word that keeps both, the
    /// high words (zero for IPv4) into another, mixed in after the first product. For one VIP
    /// and port the fold is one-to-one in the client's address and port; two flows to
    /// different VIPs may fold alike, which costs a probe, never a wrong match (the table
    /// compares whole keys).
    #[inline]
    pub(super) fn hash(&self, key: &FlowKey) -> u64 {
        let (src, dst) = (key.src_addr, key.dst_addr);
        let low = src.low.rotate_left(32) ^ dst.low;
        let high = src.high ^ dst.high.rotate_left(32);
        let mixed = folded_multiply(
            low ^ self.seeds[0],
            key.ports_and_protocol() ^ self.seeds[1],
        );
        folded_multiply(mixed ^ high, self.seeds[2])
    }
}
