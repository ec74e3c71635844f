//! Frame rewrites, one module per forwarding method ([`crate::service::Forwarding`]).
//!
//! - [`dr`] (LVS direct routing): re-address the Ethernet frame, in place, same length.
//! - [`nat`] (LVS masquerading): destination VIP:port -> real server address:port on the way in,
//!   source back to VIP:port on the way out, in place, same length, IPv4 or IPv6; [`icmp`]
//!   translates the ICMP errors about those flows the same way, as IPVS does, and hands ICMPv6
//!   errors to [`icmpv6`].
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
pub mod icmpv6;
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

/// Parse once: what classification's [`crate::parse::Parsed`] view hands the rewrites matches
/// what they would find by parsing the frame themselves.
#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::counters::DropReason;
    use crate::parse::{classify, Parsed, Transport};
    use crate::testing::{icmp_error, in_chunk, FrameBuilder, DIRECTOR_MAC, UMEM_HEADROOM};
    use crate::wire::icmp::{message, unreachable};

    const LINK: Link = Link {
        src_mac: DIRECTOR_MAC,
        dst_mac: [2, 0, 0, 0, 1, 1],
    };

    #[test]
    fn an_icmp_error_is_parsed_with_its_quote() {
        let quote = FrameBuilder::udp()
            .src("192.0.2.10:53")
            .dst("203.0.113.7:40000")
            .build_ipv4();
        let frame = icmp_error(
            "198.51.100.1:0",
            "192.0.2.10:0",
            message::DEST_UNREACHABLE,
            unreachable::PORT,
            0,
            &quote,
        )
        .build();
        let parsed = classify(&frame).unwrap();
        assert_eq!(
            parsed.transport(),
            Transport::IcmpError(icmp::quoted_flow(&frame).unwrap())
        );
    }

    /// The rewrites the pipeline calls with a `Parsed` give what the raw-frame ones give, bytes
    /// and reasons, on frames classification accepts.
    #[test]
    fn parsed_rewrites_equal_raw_ones() {
        type Raw = fn(&mut [u8], SocketAddrV4, Link) -> Result<(), DropReason>;
        type WithParsed =
            fn(&mut [u8], &Parsed, std::net::SocketAddr, Link) -> Result<(), DropReason>;
        let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 8080);
        let quote = FrameBuilder::udp()
            .src("203.0.113.7:40000")
            .dst("10.0.0.1:8080")
            .build_ipv4();
        let port_unreachable = |ttl| {
            icmp_error(
                "10.0.0.1:0",
                "203.0.113.7:0",
                message::DEST_UNREACHABLE,
                unreachable::PORT,
                0,
                &quote,
            )
            .ttl(ttl)
            .build()
        };
        let cases: [(Vec<u8>, Raw, WithParsed); 8] = [
            (
                FrameBuilder::tcp().syn().build(),
                nat::rewrite_inbound,
                nat::rewrite_inbound_parsed,
            ),
            (
                FrameBuilder::udp().udp_checksum(0).build(),
                nat::rewrite_inbound,
                nat::rewrite_inbound_parsed,
            ),
            (
                FrameBuilder::tcp().ack().ttl(1).build(),
                nat::rewrite_outbound,
                nat::rewrite_outbound_parsed,
            ),
            (
                FrameBuilder::udp().build(),
                nat::rewrite_outbound,
                nat::rewrite_outbound_parsed,
            ),
            (
                port_unreachable(64),
                icmp::translate_outbound,
                icmp::translate_outbound_parsed,
            ),
            (
                port_unreachable(1),
                icmp::translate_inbound,
                icmp::translate_inbound_parsed,
            ),
            (
                port_unreachable(64),
                nat::rewrite_inbound,
                nat::rewrite_inbound_parsed,
            ),
            (
                FrameBuilder::tcp().build(),
                icmp::translate_inbound,
                icmp::translate_inbound_parsed,
            ),
        ];
        for (n, (frame, raw, with_parsed)) in cases.into_iter().enumerate() {
            let parsed = classify(&frame).unwrap();
            let (mut by_raw, mut by_parsed) = (frame.clone(), frame.clone());
            assert_eq!(
                raw(&mut by_raw, to, LINK),
                with_parsed(&mut by_parsed, &parsed, to.into(), LINK),
                "case {n}"
            );
            assert_eq!(by_raw, by_parsed, "case {n}");
        }

        let egress = tun::TunnelEgress {
            link: LINK,
            src_addr: Ipv4Addr::new(192, 0, 2, 1),
            mtu: 1500,
        };
        for frame in [
            FrameBuilder::tcp().syn().build(),
            FrameBuilder::udp().dont_fragment(false).build(),
        ] {
            let parsed = classify(&frame).unwrap();
            let (mut by_raw, mut by_parsed) = (in_chunk(&frame), in_chunk(&frame));
            let (start, len) = (UMEM_HEADROOM, frame.len());
            let backend = *to.ip();
            assert_eq!(
                tun::encapsulate(&mut by_raw, start, len, backend, &egress, 7),
                tun::encapsulate_parsed(
                    &mut by_parsed,
                    start,
                    len,
                    &parsed,
                    backend,
                    &egress,
                    7,
                    || true
                )
            );
            assert_eq!(by_raw, by_parsed);
        }
    }
}
