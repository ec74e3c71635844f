//! Masquerading (LVS-NAT): the director is the real servers' router and rewrites both ways.
//!
//! - Inbound, client -> VIP:port becomes client -> RS:rsport ([`rewrite_inbound`]): destination
//!   address and port change, so do the IPv4 header checksum and the TCP/UDP checksum (its
//!   pseudo header covers the address). `rsport` may differ from the service port (VIP:80 ->
//!   RS:8080), or equal it.
//! - Outbound, RS:rsport -> client becomes VIP:port -> client ([`rewrite_outbound`]).
//!
//! Either way the director forwards as a router: TTL (IPv6: hop limit) is decremented (a packet
//! arriving with it <= 1 is [`DropReason::TtlExpired`], no ICMP time exceeded is generated), and
//! the Ethernet header is re-addressed from the egress interface to the next hop ([`Link`]). The
//! frame keeps its length; Ethernet padding after the IP packet is kept as is.
//!
//! IPv6 (RFC 8200) is NATed the same way, both sides IPv6: no header checksum, the hop limit
//! outside any checksum, extension headers (walked by classification) left as they are; the
//! TCP/UDP checksum follows the 128-bit address in its pseudo header
//! ([`crate::wire::checksum::update128`]) and the port. NAT never maps between families: a
//! backend of the other family is [`DropReason::UnsupportedForwarding`] (configuration refuses
//! such a service).
//!
//! Every checksum is updated incrementally (RFC 1624 eqn. 3), so the cost does not depend on the
//! payload; a UDP checksum of 0 ("none") stays 0. A checksum that was wrong on arrival stays
//! wrong by the same amount, as a router's would: end-to-end detection still works. Over IPv6 a
//! UDP checksum of 0 is invalid (RFC 8200 8.1); it too is passed on unchanged, for the real
//! server or client to discard as RFC 8200 says the receiver does: a router does not verify
//! checksums, and dropping here would only hide the fault from the hosts' own counters.
//!
//! Only unfragmented TCP and UDP are rewritten (a fragment has no ports to map):
//! [`DropReason::Fragment`], [`DropReason::UnsupportedProtocol`] otherwise. ICMP errors about a
//! NATed flow go through [`super::icmp`] instead.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{ipv4_of, ttl_update, Link};
use crate::counters::DropReason;
use crate::parse::{Family, Parsed, Transport};
use crate::service::Protocol;
use crate::wire::checksum::{
    udp_update128, udp_update16, udp_update32, update128, update16, update32,
};
use crate::wire::{ethernet, Ipv4Packet, Ipv6Packet, TcpSegment, UdpDatagram};

/// Which end of the packet a rewrite changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Source,
    Destination,
}

/// Client -> VIP:port becomes client -> `backend` (the real server's address and port), sent
/// over `link` (the server-side interface's MAC, the real server's or gateway's MAC).
///
/// Checks before writing anything: untagged Ethernet IPv4 (options allowed), not a fragment,
/// TCP or UDP with a whole header, TTL > 1.
pub fn rewrite_inbound(
    frame: &mut [u8],
    backend: SocketAddrV4,
    link: Link,
) -> Result<(), DropReason> {
    let checked = check(frame)?;
    translate(frame, checked, End::Destination, backend, link)
}

/// RS:rsport -> client becomes `vip` (the service's VIP and port) -> client, sent over `link`
/// (the client-side interface's MAC, the router's MAC). Same checks as [`rewrite_inbound`].
pub fn rewrite_outbound(frame: &mut [u8], vip: SocketAddrV4, link: Link) -> Result<(), DropReason> {
    let checked = check(frame)?;
    translate(frame, checked, End::Source, vip, link)
}

/// [`rewrite_inbound`] of a frame classification parsed as TCP/UDP into `parsed`: only the TTL
/// is left to check.
#[inline]
pub(crate) fn rewrite_inbound_parsed(
    frame: &mut [u8],
    parsed: &Parsed,
    backend: SocketAddr,
    link: Link,
) -> Result<(), DropReason> {
    let checked = Checked::of(parsed)?;
    match (parsed.family(), backend) {
        (Family::Ipv4, SocketAddr::V4(backend)) => {
            translate(frame, checked, End::Destination, backend, link)
        }
        (Family::Ipv6, SocketAddr::V6(backend)) => {
            translate6(frame, checked, End::Destination, backend, link)
        }
        _ => Err(DropReason::UnsupportedForwarding),
    }
}

/// [`rewrite_outbound`] of a frame classification parsed as TCP/UDP into `parsed`.
#[inline]
pub(crate) fn rewrite_outbound_parsed(
    frame: &mut [u8],
    parsed: &Parsed,
    vip: SocketAddr,
    link: Link,
) -> Result<(), DropReason> {
    let checked = Checked::of(parsed)?;
    match (parsed.family(), vip) {
        (Family::Ipv4, SocketAddr::V4(vip)) => translate(frame, checked, End::Source, vip, link),
        (Family::Ipv6, SocketAddr::V6(vip)) => translate6(frame, checked, End::Source, vip, link),
        _ => Err(DropReason::UnsupportedForwarding),
    }
}

/// Where the headers of a frame checked for a NAT rewrite are.
#[derive(Clone, Copy)]
struct Checked {
    protocol: Protocol,
    /// Offset of the IP header in the frame.
    l3_at: usize,
    /// Its length: IPv4 at least 20, IPv6 40 and its extension headers; at most `total_len`.
    header_len: usize,
    /// The IP packet's length (IPv6: 40 + payload length), the transport header (whole)
    /// included.
    total_len: usize,
}

impl Checked {
    /// What classification learned; an ICMP error is not NAT's to rewrite.
    #[inline]
    fn of(parsed: &Parsed) -> Result<Self, DropReason> {
        match parsed.transport() {
            Transport::Flow(flow) => Ok(Checked {
                protocol: flow.key.protocol,
                l3_at: parsed.l3_at(),
                header_len: parsed.l3_header_len(),
                total_len: parsed.l3_len(),
            }),
            Transport::IcmpError(_) => Err(DropReason::UnsupportedProtocol),
        }
    }
}

/// Validates a raw frame for a NAT rewrite, without writing (the TTL is [`translate`]'s).
#[inline]
fn check(frame: &[u8]) -> Result<Checked, DropReason> {
    let ip = ipv4_of(frame)?;
    if ip.is_fragment() {
        return Err(DropReason::Fragment);
    }
    let protocol = Protocol::from_number(ip.protocol()).ok_or(DropReason::UnsupportedProtocol)?;
    match protocol {
        Protocol::Tcp => TcpSegment::new_checked(ip.payload())
            .map(|_| ())
            .map_err(|_| DropReason::Truncated)?,
        Protocol::Udp => UdpDatagram::new_checked(ip.payload())
            .map(|_| ())
            .map_err(|_| DropReason::Truncated)?,
    }
    Ok(Checked {
        protocol,
        l3_at: ethernet::HEADER_LEN,
        header_len: usize::from(ip.header_len()),
        total_len: usize::from(ip.total_len()),
    })
}

/// Checks the TTL (> 1), then rewrites the checked frame.
#[inline]
fn translate(
    frame: &mut [u8],
    checked: Checked,
    end: End,
    to: SocketAddrV4,
    link: Link,
) -> Result<(), DropReason> {
    let packet = frame
        .get_mut(checked.l3_at..checked.l3_at + checked.total_len)
        .ok_or(DropReason::Truncated)?;
    let (header, transport) = packet.split_at_mut(checked.header_len);

    let mut ip = Ipv4Packet::new_unchecked(header);
    let ttl = ip.ttl();
    if ttl <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let old_addr = match end {
        End::Source => ip.src_addr(),
        End::Destination => ip.dst_addr(),
    };
    let new_addr = *to.ip();
    let mut sum = ttl_update(ip.checksum(), ip.protocol(), ttl, ttl - 1);
    sum = update32(sum, u32::from(old_addr), u32::from(new_addr));
    ip.set_ttl(ttl - 1);
    match end {
        End::Source => ip.set_src_addr(new_addr),
        End::Destination => ip.set_dst_addr(new_addr),
    }
    ip.set_checksum(sum);

    rewrite_transport(
        checked.protocol,
        transport,
        end,
        Ipv4Change(u32::from(old_addr), u32::from(new_addr)),
        to.port(),
    );
    link.apply(frame);
    Ok(())
}

/// [`translate`] for IPv6: checks the hop limit (> 1), then rewrites the checked frame.
#[inline]
fn translate6(
    frame: &mut [u8],
    checked: Checked,
    end: End,
    to: SocketAddrV6,
    link: Link,
) -> Result<(), DropReason> {
    let packet = frame
        .get_mut(checked.l3_at..checked.l3_at + checked.total_len)
        .ok_or(DropReason::Truncated)?;
    // `header_len` covers the extension headers too; the fixed header is their first 40 bytes.
    let (header, transport) = packet.split_at_mut(checked.header_len);

    let mut ip = Ipv6Packet::new_unchecked(header);
    let hop_limit = ip.hop_limit();
    if hop_limit <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let new_addr = *to.ip();
    let old_addr = match end {
        End::Source => ip.src_addr(),
        End::Destination => ip.dst_addr(),
    };
    ip.set_hop_limit(hop_limit - 1);
    match end {
        End::Source => ip.set_src_addr(new_addr),
        End::Destination => ip.set_dst_addr(new_addr),
    }

    rewrite_transport(
        checked.protocol,
        transport,
        end,
        Ipv6Change(old_addr.into(), new_addr.into()),
        to.port(),
    );
    link.apply(frame);
    Ok(())
}

/// An address change in a TCP/UDP pseudo header, old -> new: what the transport checksum
/// follows. A trait, not an enum, so each family's rewrite compiles to its own straight code.
trait AddressChange: Copy {
    /// A TCP checksum after the change.
    fn update(self, checksum: u16) -> u16;
    /// A UDP checksum after the change: 0 stays 0.
    fn udp_update(self, checksum: u16) -> u16;
}

/// IPv4 (RFC 793 / 768 pseudo header).
#[derive(Clone, Copy)]
struct Ipv4Change(u32, u32);

impl AddressChange for Ipv4Change {
    #[inline(always)]
    fn update(self, checksum: u16) -> u16 {
        update32(checksum, self.0, self.1)
    }

    #[inline(always)]
    fn udp_update(self, checksum: u16) -> u16 {
        udp_update32(checksum, self.0, self.1)
    }
}

/// IPv6 (RFC 8200 8.1 pseudo header), addresses as 128-bit numbers.
#[derive(Clone, Copy)]
struct Ipv6Change(u128, u128);

impl AddressChange for Ipv6Change {
    #[inline(always)]
    fn update(self, checksum: u16) -> u16 {
        update128(checksum, self.0, self.1)
    }

    #[inline(always)]
    fn udp_update(self, checksum: u16) -> u16 {
        udp_update128(checksum, self.0, self.1)
    }
}

/// Rewrites one port of a checked TCP/UDP header to `to_port` and updates its checksum for that
/// and for the pseudo header's address `change`.
#[inline]
fn rewrite_transport(
    protocol: Protocol,
    transport: &mut [u8],
    end: End,
    change: impl AddressChange,
    to_port: u16,
) {
    match protocol {
        Protocol::Tcp => {
            let mut tcp = TcpSegment::new_unchecked(transport);
            let old_port = match end {
                End::Source => tcp.src_port(),
                End::Destination => tcp.dst_port(),
            };
            let sum = update16(change.update(tcp.checksum()), old_port, to_port);
            match end {
                End::Source => tcp.set_src_port(to_port),
                End::Destination => tcp.set_dst_port(to_port),
            }
            tcp.set_checksum(sum);
        }
        Protocol::Udp => {
            let mut udp = UdpDatagram::new_unchecked(transport);
            let old_port = match end {
                End::Source => udp.src_port(),
                End::Destination => udp.dst_port(),
            };
            let sum = udp_update16(change.udp_update(udp.checksum()), old_port, to_port);
            match end {
                End::Source => udp.set_src_port(to_port),
                End::Destination => udp.set_dst_port(to_port),
            }
            udp.set_checksum(sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::parse::classify;
    use crate::testing::{FrameBuilder, Ipv6FrameBuilder, DIRECTOR_MAC};

    const LINK: Link = Link {
        src_mac: DIRECTOR_MAC,
        dst_mac: [2, 0, 0, 0, 1, 1],
    };

    #[test]
    fn ttl_one_is_untouched() {
        let input = FrameBuilder::tcp().syn().ttl(1).build();
        let mut frame = input.clone();
        let backend = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 8080);
        assert_eq!(
            rewrite_inbound(&mut frame, backend, LINK),
            Err(DropReason::TtlExpired)
        );
        assert_eq!(frame, input);
        let mut frame = FrameBuilder::tcp().syn().ttl(2).build();
        assert_eq!(rewrite_inbound(&mut frame, backend, LINK), Ok(()));
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        let backend = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 8080);
        for (frame, reason) in [
            (
                FrameBuilder::tcp().more_fragments().build(),
                DropReason::Fragment,
            ),
            (
                FrameBuilder::icmp().build(),
                DropReason::UnsupportedProtocol,
            ),
            (
                FrameBuilder::udp().l4_len(7).unpadded().build(),
                DropReason::Truncated,
            ),
            (FrameBuilder::tcp().vlan(3).build(), DropReason::VlanTagged),
            (FrameBuilder::arp().build(), DropReason::NotIp),
        ] {
            let mut copy = frame.clone();
            assert_eq!(rewrite_inbound(&mut copy, backend, LINK), Err(reason));
            assert_eq!(copy, frame);
        }
    }

    fn socket(address: u128, port: u16) -> String {
        format!("[{}]:{port}", std::net::Ipv6Addr::from(address))
    }

    proptest::proptest! {
        /// NATed both ways, an IPv6 TCP or UDP packet (extension headers or not) has the checksum
        /// a full recomputation gives, and its hop limit one less.
        #[test]
        fn ipv6_nat_equals_full_recomputation(
            addresses in proptest::prelude::any::<[u128; 3]>(),
            ports in proptest::prelude::any::<[u16; 3]>(),
            udp in proptest::prelude::any::<bool>(),
            options in proptest::prelude::any::<bool>(),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            inbound in proptest::prelude::any::<bool>(),
        ) {
            let [src, dst, to] = addresses;
            let mut builder = if udp { Ipv6FrameBuilder::udp() } else { Ipv6FrameBuilder::tcp() }
                .src(&socket(src, ports[0]))
                .dst(&socket(dst, ports[1]))
                .payload(&payload);
            if options {
                builder = builder.destination_options(1);
            }
            let frame = builder.build();
            let parsed = classify(&frame).unwrap();
            let mut translated = frame.clone();
            let to = SocketAddr::new(std::net::Ipv6Addr::from(to).into(), ports[2]);
            let result = if inbound {
                rewrite_inbound_parsed(&mut translated, &parsed, to, LINK)
            } else {
                rewrite_outbound_parsed(&mut translated, &parsed, to, LINK)
            };
            proptest::prop_assert_eq!(result, Ok(()));
            // The builder's frame rebuilt with the new end: byte for byte the rewrite.
            let (new_src, new_dst) = if inbound {
                (socket(src, ports[0]), to.to_string())
            } else {
                (to.to_string(), socket(dst, ports[1]))
            };
            let mut expected = if udp { Ipv6FrameBuilder::udp() } else { Ipv6FrameBuilder::tcp() }
                .src(&new_src)
                .dst(&new_dst)
                .payload(&payload)
                .hop_limit(63)
                .eth_dst(LINK.dst_mac);
            if options {
                expected = expected.destination_options(1);
            }
            let mut expected = expected.build();
            expected[6..12].copy_from_slice(&LINK.src_mac);
            proptest::prop_assert_eq!(translated, expected);
        }
    }
}
