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
//! every check (lengths, TTL, MTU) comes before the first write. The NAT/TUN functions take raw
//! frames and re-check the headers they touch (a few compares, cheaper than trusting a caller),
//! so random bytes never make them panic (`tests/nat_tun_fixtures.rs`).
//!
//! What this layer must not do: choose a backend, look up connections, allocate, or count: the
//! caller counts the returned reason.

pub mod dr;
pub mod icmp;
pub mod nat;
pub mod tun;

use crate::counters::DropReason;
use crate::wire::{self, ethernet, EtherType, EthernetFrame, Ipv4Packet, MacAddr};

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

/// Checks that `frame` is untagged Ethernet carrying a whole IPv4 packet (options allowed) and
/// returns that packet's view. Maps errors as the pipeline does.
#[inline]
fn ipv4_of(frame: &[u8]) -> Result<Ipv4Packet<&[u8]>, DropReason> {
    let ethernet = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Truncated)?;
    let ethertype = ethernet.ethertype();
    if ethertype.is_vlan_tag() {
        return Err(DropReason::VlanTagged);
    }
    if ethertype != EtherType::IPV4 {
        return Err(DropReason::NotIpv4);
    }
    Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..]).map_err(|error| match error {
        wire::Error::Truncated => DropReason::Truncated,
        wire::Error::Malformed => DropReason::BadIhl,
    })
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
