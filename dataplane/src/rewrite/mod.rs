//! Frame rewrites, one module per forwarding method ([`crate::service::Forwarding`]).
//!
//! - [`dr`] (LVS direct routing): re-address the Ethernet frame, in place, same length.
//! - [`nat`] (LVS masquerading): destination VIP:port -> real server address:port on the way in,
//!   source back to VIP:port on the way out, in place, same length; [`icmp`] translates the ICMP
//!   errors about those flows the same way, as IPVS does.
//! - [`tun`] (LVS-TUN, IP-in-IP): prepend an outer IPv4 header into the frame's headroom, or
//!   answer the client with an ICMP fragmentation-needed when the result would not fit the
//!   egress MTU; and the real server's side, decapsulation.
//!
//! Checksums are updated with [`crate::wire::checksum`]'s RFC 1624 incremental forms (O(1),
//! bit-for-bit what a full recomputation gives), except for headers this layer writes from
//! scratch (the tunnel's outer header, a generated ICMP message).
//!
//! A rewrite either succeeds or names a [`crate::DropReason`] having left the frame untouched:
//! every check (lengths, TTL, MTU) comes before the first write. The public NAT/ICMP/TUN
//! functions take raw frames and check the headers they touch, so random bytes never make them
//! panic (`tests/nat_tun_fixtures.rs`); the pipeline calls their `_parsed` forms with the
//! [`crate::parse::Parsed`] view classification made, which check only what classification did
//! not (TTL, MTU, headroom): a frame is parsed once.
//!
//! What this layer must not do: choose a backend, look up connections, allocate, or count: the
//! caller counts the returned reason.

pub mod dr;
pub mod icmp;
pub mod nat;
pub mod tun;

use crate::parse::ipv4_of;
use crate::wire::{self, MacAddr};

/// The Ethernet addresses a rewritten frame leaves with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    /// The egress interface's MAC.
    pub src_mac: MacAddr,
    /// The next hop's MAC on that interface: the real server's own when it is on the link, the
    /// gateway's otherwise; on the client side, the router's.
    pub dst_mac: MacAddr,
}

impl Link {
    /// Writes both addresses into `frame`'s Ethernet header (at least 12 bytes long).
    #[inline]
    fn apply(self, frame: &mut [u8]) {
        frame[0..6].copy_from_slice(&self.dst_mac);
        frame[6..12].copy_from_slice(&self.src_mac);
    }
}

/// The checksum after the TTL of an IPv4 header changes: TTL and protocol share a 16-bit word.
#[inline]
const fn ttl_update(checksum: u16, protocol: u8, old_ttl: u8, new_ttl: u8) -> u16 {
    wire::checksum::update16(
        checksum,
        u16::from_be_bytes([old_ttl, protocol]),
        u16::from_be_bytes([new_ttl, protocol]),
    )
}
