//! ICMP errors about NATed flows, translated as IPVS does (`ip_vs_nat_icmp`). ICMPv6 errors
//! take the same two directions in [`super::icmpv6`] (the pipeline's `_parsed` entry points
//! here choose by the parsed family).
//!
//! An ICMP error quotes the datagram that caused it, which travelled the other way; both the
//! outer header and the quote must be translated or the receiver cannot match the error to its
//! socket. Two directions:
//!
//! - **Outbound** ([`translate_outbound`]), from the server side to the client: the real server
//!   (or a router behind the director) reports a client packet it could not deliver, e.g. a UDP
//!   port unreachable. Outer RS -> client; quote client:cport -> RS:rsport. Becomes outer
//!   VIP -> client; quote client:cport -> VIP:port.
//! - **Inbound** ([`translate_inbound`]), from the client side to the real server: a router on
//!   the client's path reports a reply it could not forward, typically fragmentation needed
//!   (path MTU discovery for the server's large responses), or the client's port unreachable.
//!   Outer X -> VIP; quote VIP:port -> client:cport. Becomes outer X -> RS; quote
//!   RS:rsport -> client:cport.
//!
//! Changed: the outer address and TTL (decremented: the director forwards as a router) and the
//! outer header checksum; the quoted address and port; the quoted IPv4 header checksum; the
//! quoted TCP/UDP checksum when the quote reaches it (UDP always; TCP when 18 bytes are quoted,
//! which Linux and RFC 1812 routers do; a quoted UDP checksum 0 stays 0); the ICMP checksum,
//! which covers all of the above. All incrementally (RFC 1624): every changed word sits at an
//! even offset of the ICMP message, and the result equals a full recomputation (tested).
//! The next-hop MTU of a fragmentation-needed is passed on unchanged, as IPVS does.
//!
//! The caller finds the connection first by the quoted flow (the pipeline has it from
//! [`crate::parse::classify`]; [`quoted_flow`] reads it from a raw frame). Translated: destination
//! unreachable and time exceeded quoting unfragmented-header TCP or UDP; other ICMP is
//! [`DropReason::UnsupportedProtocol`], a quote too short for a header and 8 bytes
//! [`DropReason::Truncated`] (or [`DropReason::BadIhl`]).

use std::net::{SocketAddr, SocketAddrV4};

use super::icmpv6;
use super::{ipv4_of, ttl_update, Link};
use crate::counters::DropReason;
pub use crate::parse::QuotedFlow;
use crate::parse::{icmp_error, Family, Parsed, Transport};
use crate::service::Protocol;
use crate::wire::checksum::{udp_update16, udp_update32, update16, update32};
use crate::wire::{self, ethernet, ipv4, IcmpQuote, Icmpv4Packet, Ipv4Packet};

/// Where the parts of a checked ICMP error frame are.
#[derive(Clone, Copy)]
struct Located {
    /// Offset of the outer IPv4 header in the frame.
    l3_at: usize,
    /// IPv4 header length of the outer packet.
    outer_header_len: usize,
    /// Outer total length.
    outer_total_len: usize,
    /// The quoted flow.
    quoted: QuotedFlow,
}

impl Located {
    /// What classification learned; only an ICMP error is this module's to translate.
    #[inline]
    fn of(parsed: &Parsed) -> Result<Self, DropReason> {
        match parsed.transport() {
            Transport::IcmpError(quoted) => Ok(Located {
                l3_at: parsed.l3_at(),
                outer_header_len: parsed.l3_header_len(),
                outer_total_len: parsed.l3_len(),
                quoted,
            }),
            Transport::Flow(_) => Err(DropReason::UnsupportedProtocol),
        }
    }
}

/// Checks a raw frame is an ICMP error we translate (see the module docs), without writing.
fn locate(frame: &[u8]) -> Result<Located, DropReason> {
    let ip = ipv4_of(frame)?;
    if ip.is_fragment() {
        return Err(DropReason::Fragment);
    }
    if ip.protocol() != ipv4::protocol::ICMP {
        return Err(DropReason::UnsupportedProtocol);
    }
    let quoted = icmp_error(&ip)?;
    Ok(Located {
        l3_at: ethernet::HEADER_LEN,
        outer_header_len: usize::from(ip.header_len()),
        outer_total_len: usize::from(ip.total_len()),
        quoted,
    })
}

/// The quoted 5-tuple of an ICMP error frame (untagged Ethernet, IPv4, ICMP destination
/// unreachable or time exceeded quoting TCP or UDP), to look its connection up by.
pub fn quoted_flow(frame: &[u8]) -> Result<QuotedFlow, DropReason> {
    Ok(locate(frame)?.quoted)
}

/// Which end of the outer packet, and the opposite end of the quote, a translation changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Outer source and quoted destination -> VIP:port.
    Outbound,
    /// Outer destination and quoted source -> RS:rsport.
    Inbound,
}

/// Server side -> client: outer source becomes `vip`'s address, the quoted destination becomes
/// `vip` (address and port); sent over `link` (client-side interface MAC, router MAC).
///
/// Checks before writing anything: an ICMP error we translate (module docs), outer TTL > 1.
pub fn translate_outbound(
    frame: &mut [u8],
    vip: SocketAddrV4,
    link: Link,
) -> Result<(), DropReason> {
    let located = locate(frame)?;
    translate(frame, located, Direction::Outbound, vip, link)
}

/// Client side -> real server: outer destination becomes `backend`'s address, the quoted source
/// becomes `backend` (address and port); sent over `link` (server-side interface MAC, real
/// server or gateway MAC). Same checks as [`translate_outbound`].
pub fn translate_inbound(
    frame: &mut [u8],
    backend: SocketAddrV4,
    link: Link,
) -> Result<(), DropReason> {
    let located = locate(frame)?;
    translate(frame, located, Direction::Inbound, backend, link)
}

/// [`translate_outbound`] of a frame classification parsed as an ICMP error into `parsed`: only
/// the TTL is left to check. An ICMPv6 error goes to [`super::icmpv6`]; `vip` of the other
/// family than the frame is [`DropReason::UnsupportedForwarding`].
#[inline]
pub(crate) fn translate_outbound_parsed(
    frame: &mut [u8],
    parsed: &Parsed,
    vip: SocketAddr,
    link: Link,
) -> Result<(), DropReason> {
    match (parsed.family(), vip) {
        (Family::Ipv4, SocketAddr::V4(vip)) => {
            translate(frame, Located::of(parsed)?, Direction::Outbound, vip, link)
        }
        (Family::Ipv6, SocketAddr::V6(vip)) => {
            icmpv6::translate(frame, parsed, icmpv6::Direction::Outbound, vip, link)
        }
        _ => Err(DropReason::UnsupportedForwarding),
    }
}

/// [`translate_inbound`] of a frame classification parsed as an ICMP error into `parsed`.
#[inline]
pub(crate) fn translate_inbound_parsed(
    frame: &mut [u8],
    parsed: &Parsed,
    backend: SocketAddr,
    link: Link,
) -> Result<(), DropReason> {
    match (parsed.family(), backend) {
        (Family::Ipv4, SocketAddr::V4(backend)) => translate(
            frame,
            Located::of(parsed)?,
            Direction::Inbound,
            backend,
            link,
        ),
        (Family::Ipv6, SocketAddr::V6(backend)) => {
            icmpv6::translate(frame, parsed, icmpv6::Direction::Inbound, backend, link)
        }
        _ => Err(DropReason::UnsupportedForwarding),
    }
}

/// Checks the outer TTL (> 1), then translates the located frame.
fn translate(
    frame: &mut [u8],
    located: Located,
    direction: Direction,
    to: SocketAddrV4,
    link: Link,
) -> Result<(), DropReason> {
    let packet = frame
        .get_mut(located.l3_at..located.l3_at + located.outer_total_len)
        .ok_or(DropReason::Truncated)?;
    if Ipv4Packet::new_unchecked(&*packet).ttl() <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let (outer, message) = packet.split_at_mut(located.outer_header_len);
    let new_addr = *to.ip();

    // Outer header: one address and the TTL.
    let mut ip = Ipv4Packet::new_unchecked(outer);
    let old_outer = match direction {
        Direction::Outbound => ip.src_addr(),
        Direction::Inbound => ip.dst_addr(),
    };
    let ttl = ip.ttl();
    let sum = ttl_update(ip.checksum(), ip.protocol(), ttl, ttl - 1);
    ip.set_ttl(ttl - 1);
    ip.set_checksum(update32(sum, u32::from(old_outer), u32::from(new_addr)));
    match direction {
        Direction::Outbound => ip.set_src_addr(new_addr),
        Direction::Inbound => ip.set_dst_addr(new_addr),
    }

    // The quote, tracking every changed word for the ICMP checksum.
    let (icmp_header, quoted) = message.split_at_mut(wire::icmp::HEADER_LEN);
    let mut icmp_sum = Icmpv4Packet::new_unchecked(&*icmp_header).checksum();
    let mut quote = IcmpQuote::new_unchecked(quoted);

    let (old_addr, old_port) = match direction {
        Direction::Outbound => (quote.dst_addr(), quote.dst_port()),
        Direction::Inbound => (quote.src_addr(), quote.src_port()),
    };
    let (old, new) = (u32::from(old_addr), u32::from(new_addr));
    match direction {
        Direction::Outbound => {
            quote.set_dst_addr(new_addr);
            quote.set_dst_port(to.port());
        }
        Direction::Inbound => {
            quote.set_src_addr(new_addr);
            quote.set_src_port(to.port());
        }
    }
    icmp_sum = update32(icmp_sum, old, new);
    icmp_sum = update16(icmp_sum, old_port, to.port());

    let old_header_sum = quote.header_checksum();
    let new_header_sum = update32(old_header_sum, old, new);
    quote.set_header_checksum(new_header_sum);
    icmp_sum = update16(icmp_sum, old_header_sum, new_header_sum);

    if let Some(old_l4_sum) = quote.l4_checksum() {
        let new_l4_sum = match located.quoted.protocol {
            Protocol::Tcp => update16(update32(old_l4_sum, old, new), old_port, to.port()),
            Protocol::Udp => udp_update16(udp_update32(old_l4_sum, old, new), old_port, to.port()),
        };
        quote.set_l4_checksum(new_l4_sum);
        icmp_sum = update16(icmp_sum, old_l4_sum, new_l4_sum);
    }
    Icmpv4Packet::new_unchecked(icmp_header).set_checksum(icmp_sum);

    link.apply(frame);
    Ok(())
}
