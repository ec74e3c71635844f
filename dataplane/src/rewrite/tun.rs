//! IP-in-IP tunnelling (LVS-TUN): the director wraps the client's packet in an outer header
//! addressed to the real server, which strips it and answers the client directly from the VIP.
//! An IPv4 real server gets IPv4-in-IPv4 (RFC 2003, protocol 4); an IPv6 one gets IPv6-in-IPv6
//! (RFC 2473, next header 41) for an IPv6 service, or IPv4-in-IPv6 (next header 4) for an IPv4
//! service, as IPVS and Katran allow mixed families in TUN only. An IPv6 service with an IPv4
//! real server is refused by configuration; should it reach here it is
//! [`DropReason::UnsupportedForwarding`].
//!
//! # Headroom
//!
//! Encapsulation grows the frame at the front by the outer header, [`HEADROOM`] (20) bytes for
//! IPv4 and [`HEADROOM6`] (40) for IPv6, without moving the packet: the inner packet stays where
//! it was received, the outer header is written over the old Ethernet header and the bytes
//! before it, and the new Ethernet header goes in front of that. So [`encapsulate`] and
//! [`encapsulate6`] take the whole buffer (an AF_XDP UMEM frame) and the received frame's
//! position in it, and return the new position.
//!
//! What the AF_XDP worker must provide: a UMEM configured with at least [`HEADROOM6`] bytes of
//! frame headroom (`xdp_umem_reg.headroom`, or the kernel's own `XDP_PACKET_HEADROOM` of 256;
//! RX descriptors' `addr` point past it), and a TX descriptor built from the returned start
//! (chunk base + start) and length. Less headroom is counted as [`DropReason::NoHeadroom`],
//! never written out of bounds.
//!
//! # Too big
//!
//! When the outer packet (outer header + the inner packet) would exceed the egress MTU:
//! - IPv4 inner, DF set: the frame is turned, in place, into an ICMP destination unreachable /
//!   fragmentation needed (type 3 code 4) from the VIP to the client, carrying next-hop MTU =
//!   egress MTU - the outer header and the inner header plus 8 bytes
//!   ([`Encapsulated::FragNeeded`]): the client's path MTU discovery then sends smaller packets,
//!   as with IPVS (`ip_vs_tunnel_xmit` sends the same ICMP through `icmp_send`). The worker
//!   sends it back out of the interface the frame came in on.
//! - IPv4 inner, DF clear: [`DropReason::TooBig`], counted. IPVS fragments the outer packet
//!   instead; that takes a second frame, which this one-frame-in, one-frame-out rewrite does not
//!   have. Such packets are rare (every modern TCP stack sets DF; it takes a non-PMTUD UDP sender
//!   at full MTU), and the counter makes them visible rather than silent.
//! - IPv6 inner: IPv6 is never fragmented in flight (RFC 8200 section 5), so the client always
//!   gets an ICMPv6 packet too big (type 2 code 0, RFC 4443 section 3.2) from the VIP
//!   ([`Encapsulated::PacketTooBig`]), carrying MTU = egress MTU - 40 but never below 1280 (the
//!   IPv6 minimum link MTU), and as much of the packet as fits in a 1280-byte ICMPv6 packet
//!   (RFC 4443 section 2.4(c)); traffic class and flow label 0 and hop limit 64, as Linux's
//!   `icmp6_send` sends it. A packet already no bigger than the MTU that message would carry
//!   cannot be helped by it (a tunnel over a link below 1320 bytes): [`DropReason::TooBig`],
//!   where RFC 2473 section 7.1 would fragment the outer packet.
//! - An ICMP error that the pipeline forwards to a real server is never answered with another
//!   (RFC 1122 3.2.2, RFC 4443 2.4(e)): too big, it is [`DropReason::TooBig`]. (The raw IPv4
//!   [`encapsulate`] does not classify and answers any packet with DF set.)
//! - The pipeline's variants ask a `may_answer` callback before they write an answer: the
//!   per-source rate limit of the errors the director sends (`pipeline/icmp_limit.rs`); a frame
//!   it refuses is [`DropReason::IcmpErrorsRateLimited`], untouched.
//!
//! # Outer header
//!
//! IPv4: version 4, IHL 5, TOS copied from the inner packet (RFC 2003 3.1), total length = 20 +
//! inner total length, identification as the caller passes it (0 is fine with DF set, RFC 6864;
//! a per-worker counter otherwise), DF copied from the inner packet, TTL 64, protocol 4, source =
//! the director's address on the egress interface, destination = the real server; full
//! checksum.
//!
//! IPv6 (RFC 2473 section 3): no extension headers (no tunnel encapsulation limit option: the
//! real servers' decapsulator, `rs-decap`, takes the inner packet right after the fixed
//! header); traffic class copied from the inner packet (its IPv4 TOS for 4in6); flow label as
//! the caller passes it ([`flow_label`] of the flow's hash, so routers' ECMP, which hashes the
//! outer header, keeps a flow on one path, RFC 6438); payload length = the inner packet's
//! length; next header 41 or 4; hop limit 64; source = the director's IPv6 address on the egress
//! interface; destination = the real server.
//!
//! The inner packet is not changed at all (its TTL or hop limit included, as IPVS leaves it).
//! Ethernet padding of the received frame is not carried over.
//!
//! # Real-server side
//!
//! [`decapsulate`] is the Rust reference for the `rs-decap` XDP program's IPv4-in-IPv4 path: it
//! strips an outer IPv4 protocol-4 header addressed to the local address, leaving the Ethernet
//! header in front of the inner packet (the XDP program does the same with
//! `bpf_xdp_adjust_head`).
//!
//! What this module must not do: choose a backend or a next hop, count (the caller counts what it
//! returns), or write anything before every check passed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{ipv4_of, Link};
use crate::counters::DropReason;
use crate::parse::{self, Family, Parsed, Transport};
use crate::wire::icmp::{self, message, unreachable};
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::{
    checksum, ethernet, ipv4, ipv6, EtherType, Icmpv4Packet, Ipv4Packet, Ipv6Packet,
};

/// Bytes an IPv4 outer header grows the frame by (4in4).
pub const HEADROOM: usize = ipv4::HEADER_LEN;

/// Bytes an IPv6 outer header grows the frame by (6in6, 4in6): the most encapsulation needs,
/// which the worker must leave in front of every received frame (UMEM headroom).
pub const HEADROOM6: usize = ipv6::HEADER_LEN;

/// TTL of the outer IPv4 header (Linux's default `ip_default_ttl`).
pub const OUTER_TTL: u8 = 64;

/// Hop limit of the outer IPv6 header (Linux's default `hop_limit`).
pub const OUTER_HOP_LIMIT: u8 = 64;

/// TTL of generated ICMP errors.
pub const ICMP_TTL: u8 = 64;

/// Hop limit of generated ICMPv6 errors.
pub const ICMP6_HOP_LIMIT: u8 = 64;

/// The most bytes of the offending packet an ICMPv6 packet too big quotes: what fits in the
/// minimum IPv6 MTU after its IPv6 and ICMPv6 headers (RFC 4443 section 2.4(c)).
pub const ICMP6_MAX_QUOTE: usize = ipv6::MIN_MTU as usize - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;

/// Type of service of a generated ICMP error: the offending packet's TOS bits with precedence
/// "internetwork control", as Linux's `icmp_send` sets it.
const fn icmp_tos(inner_tos: u8) -> u8 {
    (inner_tos & 0x1e) | 0xc0
}

/// Bytes the outer header toward `backend` adds: [`HEADROOM`] for IPv4, [`HEADROOM6`] for IPv6.
#[inline]
pub const fn outer_header_len(backend: IpAddr) -> usize {
    match backend {
        IpAddr::V4(_) => HEADROOM,
        IpAddr::V6(_) => HEADROOM6,
    }
}

/// The outer IPv6 flow label of a flow whose hash is `flow_hash`: its 64 bits folded into 20,
/// never 0 (0 means "not labelled", RFC 6437 section 3). Packets of one flow share it, so
/// routers that hash the flow label with the outer addresses (RFC 6438) keep them on one path.
#[inline]
pub const fn flow_label(flow_hash: u64) -> u32 {
    let folded = flow_hash ^ (flow_hash >> 20) ^ (flow_hash >> 40) ^ (flow_hash >> 60);
    let label = (folded & 0x000f_ffff) as u32;
    if label == 0 {
        1
    } else {
        label
    }
}

/// How a tunnelled frame leaves the director: `A` is the outer header's address type,
/// [`Ipv4Addr`] (the default) or [`Ipv6Addr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TunnelEgress<A = Ipv4Addr> {
    /// Egress interface MAC and next hop (real server or gateway) MAC.
    pub link: Link,
    /// The director's address on the egress interface: the outer source.
    pub src_addr: A,
    /// The egress interface's MTU (IP bytes, Ethernet header excluded).
    pub mtu: u16,
}

/// What [`encapsulate`] or [`encapsulate6`] made of a frame. Positions are within the buffer
/// passed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encapsulated {
    /// The IP-in-IP frame, at `buffer[start..start + len]`: send it out of the egress interface.
    Tunnelled {
        /// Offset of its first byte (the received start - the outer header's length).
        start: usize,
        /// Its length.
        len: usize,
    },
    /// Too big, IPv4 with DF set: the frame is now an ICMP fragmentation-needed to the client,
    /// at `buffer[start..start + len]` (start unchanged): send it out of the interface the frame
    /// came in on.
    FragNeeded {
        /// Offset of its first byte (the received start).
        start: usize,
        /// Its length.
        len: usize,
    },
    /// Too big, IPv6: the frame is now an ICMPv6 packet too big to the client, at
    /// `buffer[start..start + len]` (start unchanged): send it out of the interface the frame
    /// came in on.
    PacketTooBig {
        /// Offset of its first byte (the received start).
        start: usize,
        /// Its length.
        len: usize,
    },
}

/// Encapsulates the frame at `buffer[start..start + len]` in IPv4 for `backend` (see the module
/// docs), with outer identification `ident`.
///
/// Checks before writing anything: untagged Ethernet IPv4 with a valid header (options and
/// fragments are carried as they are); then the MTU ([`DropReason::TooBig`] or an ICMP reply);
/// then the headroom ([`DropReason::NoHeadroom`]). A `start`/`len` outside the buffer is
/// [`DropReason::Truncated`].
pub fn encapsulate(
    buffer: &mut [u8],
    start: usize,
    len: usize,
    backend: Ipv4Addr,
    egress: &TunnelEgress,
    ident: u16,
) -> Result<Encapsulated, DropReason> {
    let end = start.checked_add(len).ok_or(DropReason::Truncated)?;
    let frame = buffer.get(start..end).ok_or(DropReason::Truncated)?;
    let inner = ipv4_of(frame)?;
    let inner = Inner {
        family: Family::Ipv4,
        len: usize::from(inner.total_len()),
        tos: inner.tos(),
        dont_frag: inner.dont_frag(),
        answerable: true,
    };
    encapsulate_in_ipv4(buffer, start, inner, backend, egress, ident, || true)
}

/// Encapsulates the frame at `buffer[start..start + len]` in IPv6 for `backend` (6in6 for an
/// IPv6 packet, 4in6 for an IPv4 one; see the module docs), with outer flow label `flow_label`.
///
/// Checks before writing anything: the frame classifies as the pipeline's do
/// ([`parse::classify`]: TCP, UDP or an ICMP error about them, each check's own reason); then
/// the MTU ([`DropReason::TooBig`] or an ICMP reply); then the headroom
/// ([`DropReason::NoHeadroom`]). A `start`/`len` outside the buffer is [`DropReason::Truncated`].
pub fn encapsulate6(
    buffer: &mut [u8],
    start: usize,
    len: usize,
    backend: Ipv6Addr,
    egress: &TunnelEgress<Ipv6Addr>,
    flow_label: u32,
) -> Result<Encapsulated, DropReason> {
    let end = start.checked_add(len).ok_or(DropReason::Truncated)?;
    let frame = buffer.get(start..end).ok_or(DropReason::Truncated)?;
    let parsed = parse::classify(frame)?;
    encapsulate6_parsed(
        buffer,
        start,
        len,
        &parsed,
        backend,
        egress,
        flow_label,
        || true,
    )
}

/// [`encapsulate`] of a frame classification parsed into `parsed`: the inner header is not
/// checked again, only the family, the MTU and the headroom. An IPv6 frame cannot go to an IPv4
/// real server: [`DropReason::UnsupportedForwarding`]. `may_answer` is asked, only when the
/// frame would be answered with an ICMP error, whether it may be (the pipeline's per-source
/// rate limit); if not, [`DropReason::IcmpErrorsRateLimited`] and the frame is untouched.
#[expect(
    clippy::too_many_arguments,
    reason = "encapsulate's arguments and the rate limit's question"
)]
#[inline]
pub(crate) fn encapsulate_parsed(
    buffer: &mut [u8],
    start: usize,
    len: usize,
    parsed: &Parsed,
    backend: Ipv4Addr,
    egress: &TunnelEgress,
    ident: u16,
    may_answer: impl FnOnce() -> bool,
) -> Result<Encapsulated, DropReason> {
    if parsed.family() != Family::Ipv4 {
        return Err(DropReason::UnsupportedForwarding);
    }
    let inner = Inner::of(buffer, start, len, parsed)?;
    encapsulate_in_ipv4(buffer, start, inner, backend, egress, ident, may_answer)
}

/// [`encapsulate6`] of a frame classification parsed into `parsed`: the inner header is not
/// checked again, only the MTU and the headroom. `may_answer` as for [`encapsulate_parsed`].
#[expect(
    clippy::too_many_arguments,
    reason = "encapsulate6's arguments and the rate limit's question"
)]
#[inline]
pub(crate) fn encapsulate6_parsed(
    buffer: &mut [u8],
    start: usize,
    len: usize,
    parsed: &Parsed,
    backend: Ipv6Addr,
    egress: &TunnelEgress<Ipv6Addr>,
    flow_label: u32,
    may_answer: impl FnOnce() -> bool,
) -> Result<Encapsulated, DropReason> {
    let inner = Inner::of(buffer, start, len, parsed)?;
    encapsulate_in_ipv6(
        buffer, start, inner, backend, egress, flow_label, may_answer,
    )
}

/// What encapsulation needs of the inner packet's header.
#[derive(Clone, Copy)]
struct Inner {
    /// IPv4 or IPv6: the outer header's protocol / next header, and which too-big answer.
    family: Family,
    /// Total length (IPv6: 40 + payload length).
    len: usize,
    /// Type of service or traffic class, copied to the outer header.
    tos: u8,
    /// IPv4's don't fragment, copied to an outer IPv4 header; true for IPv6, which is never
    /// fragmented in flight.
    dont_frag: bool,
    /// Whether a too-big answer may be sent: not about an ICMP error (RFC 1122 3.2.2, RFC 4443
    /// 2.4(e): an error never answers an error).
    answerable: bool,
}

impl Inner {
    /// The inner packet of the frame at `buffer[start..start + len]` that `parsed` describes.
    #[inline]
    fn of(buffer: &[u8], start: usize, len: usize, parsed: &Parsed) -> Result<Self, DropReason> {
        let end = start.checked_add(len).ok_or(DropReason::Truncated)?;
        let frame = buffer.get(start..end).ok_or(DropReason::Truncated)?;
        let (tos, dont_frag) = match parsed.family() {
            Family::Ipv4 => {
                let ip = parsed.ipv4(frame).ok_or(DropReason::Truncated)?;
                (ip.tos(), ip.dont_frag())
            }
            Family::Ipv6 => {
                let ip = parsed.ipv6(frame).ok_or(DropReason::Truncated)?;
                (ip.traffic_class(), true)
            }
        };
        Ok(Inner {
            family: parsed.family(),
            len: parsed.l3_len(),
            tos,
            dont_frag,
            answerable: matches!(parsed.transport(), Transport::Flow(_)),
        })
    }
}

/// Encapsulates the checked IPv4 frame at `buffer[start..]` whose inner packet is `inner` in an
/// outer IPv4 header.
#[inline]
fn encapsulate_in_ipv4(
    buffer: &mut [u8],
    start: usize,
    inner: Inner,
    backend: Ipv4Addr,
    egress: &TunnelEgress,
    ident: u16,
    may_answer: impl FnOnce() -> bool,
) -> Result<Encapsulated, DropReason> {
    if HEADROOM + inner.len > usize::from(egress.mtu) {
        return too_big(buffer, start, inner, egress.mtu, HEADROOM, may_answer);
    }
    if start < HEADROOM {
        return Err(DropReason::NoHeadroom);
    }

    let new_start = start - HEADROOM;
    let new_len = ethernet::HEADER_LEN + HEADROOM + inner.len;
    let outer_at = new_start + ethernet::HEADER_LEN;
    let headers = &mut buffer[new_start..outer_at + ipv4::HEADER_LEN];
    egress.link.apply(headers);
    headers[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());

    let mut outer = Ipv4Packet::new_unchecked(&mut headers[ethernet::HEADER_LEN..]);
    outer.set_version_and_header_len(4, ipv4::HEADER_LEN as u8);
    outer.set_tos(inner.tos);
    // Fits: it is at most the MTU, a u16.
    outer.set_total_len((HEADROOM + inner.len) as u16);
    outer.set_ident(ident);
    outer.set_fragment(inner.dont_frag, false, 0);
    outer.set_ttl(OUTER_TTL);
    outer.set_protocol(ipv4::protocol::IPIP);
    outer.set_src_addr(egress.src_addr);
    outer.set_dst_addr(backend);
    outer.fill_checksum();
    Ok(Encapsulated::Tunnelled {
        start: new_start,
        len: new_len,
    })
}

/// Encapsulates the checked frame at `buffer[start..]` whose inner packet (IPv4 or IPv6) is
/// `inner` in an outer IPv6 header (RFC 2473).
#[inline]
fn encapsulate_in_ipv6(
    buffer: &mut [u8],
    start: usize,
    inner: Inner,
    backend: Ipv6Addr,
    egress: &TunnelEgress<Ipv6Addr>,
    flow_label: u32,
    may_answer: impl FnOnce() -> bool,
) -> Result<Encapsulated, DropReason> {
    if HEADROOM6 + inner.len > usize::from(egress.mtu) {
        return too_big(buffer, start, inner, egress.mtu, HEADROOM6, may_answer);
    }
    if start < HEADROOM6 {
        return Err(DropReason::NoHeadroom);
    }

    let new_start = start - HEADROOM6;
    let new_len = ethernet::HEADER_LEN + HEADROOM6 + inner.len;
    let outer_at = new_start + ethernet::HEADER_LEN;
    let headers = &mut buffer[new_start..outer_at + ipv6::HEADER_LEN];
    egress.link.apply(headers);
    headers[12..14].copy_from_slice(&EtherType::IPV6.0.to_be_bytes());

    let mut outer = Ipv6Packet::new_unchecked(&mut headers[ethernet::HEADER_LEN..]);
    outer.set_version_class_flow(inner.tos, flow_label);
    // Fits: the inner packet is at most the MTU - 40, a u16.
    outer.set_payload_len(inner.len as u16);
    outer.set_next_header(match inner.family {
        Family::Ipv4 => ipv6::next_header::IPV4,
        Family::Ipv6 => ipv6::next_header::IPV6,
    });
    outer.set_hop_limit(OUTER_HOP_LIMIT);
    outer.set_src_addr(egress.src_addr);
    outer.set_dst_addr(backend);
    Ok(Encapsulated::Tunnelled {
        start: new_start,
        len: new_len,
    })
}

/// The answer to a checked frame at `buffer[start..]` too big for an egress `mtu` once an
/// `outer_len`-byte header is added (see the module docs' "Too big").
#[cold]
fn too_big(
    buffer: &mut [u8],
    start: usize,
    inner: Inner,
    mtu: u16,
    outer_len: usize,
    may_answer: impl FnOnce() -> bool,
) -> Result<Encapsulated, DropReason> {
    if !inner.answerable {
        return Err(DropReason::TooBig);
    }
    // The outer header is at most 40 bytes.
    let path_mtu = mtu.saturating_sub(outer_len as u16);
    let answered = match inner.family {
        Family::Ipv4 => inner.dont_frag,
        // Telling the client to send what it already sends would only repeat on every packet.
        Family::Ipv6 => inner.len > usize::from(path_mtu.max(ipv6::MIN_MTU)),
    };
    if !answered {
        return Err(DropReason::TooBig);
    }
    if !may_answer() {
        return Err(DropReason::IcmpErrorsRateLimited);
    }
    match inner.family {
        Family::Ipv4 => frag_needed(buffer, start, path_mtu),
        Family::Ipv6 => packet_too_big(buffer, start, inner.len, path_mtu),
    }
}

/// Turns the (checked, untagged IPv4) frame at `buffer[start..]` into an ICMP
/// fragmentation-needed from its destination to its source, in place, carrying `next_hop_mtu`.
fn frag_needed(
    buffer: &mut [u8],
    start: usize,
    next_hop_mtu: u16,
) -> Result<Encapsulated, DropReason> {
    let ip_at = start + ethernet::HEADER_LEN;
    let (client_mac, our_mac, client, vip, tos, quote_len) = {
        let frame = &buffer[start..];
        let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        let quote_len = (usize::from(ip.header_len()) + icmp::QUOTED_PAYLOAD_LEN)
            .min(usize::from(ip.total_len()));
        let (client_mac, our_mac) = macs(frame);
        (
            client_mac,
            our_mac,
            ip.src_addr(),
            ip.dst_addr(),
            ip.tos(),
            quote_len,
        )
    };
    let icmp_at = ip_at + ipv4::HEADER_LEN;
    let quote_at = icmp_at + icmp::HEADER_LEN;
    let end = quote_at + quote_len;
    // Only a tiny packet against a tiny MTU in a buffer without tailroom gets here.
    if end > buffer.len() {
        return Err(DropReason::TooBig);
    }
    buffer.copy_within(ip_at..ip_at + quote_len, quote_at);

    Link {
        src_mac: our_mac,
        dst_mac: client_mac,
    }
    .apply(&mut buffer[start..]);
    let mut icmp = Icmpv4Packet::new_unchecked(&mut buffer[icmp_at..end]);
    icmp.set_msg_type(message::DEST_UNREACHABLE);
    icmp.set_code(unreachable::FRAG_NEEDED);
    icmp.set_next_hop_mtu(next_hop_mtu);
    icmp.fill_checksum();

    let mut ip = Ipv4Packet::new_unchecked(&mut buffer[ip_at..icmp_at]);
    ip.set_version_and_header_len(4, ipv4::HEADER_LEN as u8);
    ip.set_tos(icmp_tos(tos));
    ip.set_total_len((end - ip_at) as u16);
    ip.set_ident(0);
    ip.set_fragment(false, false, 0);
    ip.set_ttl(ICMP_TTL);
    ip.set_protocol(ipv4::protocol::ICMP);
    ip.set_src_addr(vip);
    ip.set_dst_addr(client);
    ip.fill_checksum();
    Ok(Encapsulated::FragNeeded {
        start,
        len: end - start,
    })
}

/// Turns the (checked, untagged IPv6) frame at `buffer[start..]`, whose packet is `packet_len`
/// bytes long, into an ICMPv6 packet too big from its destination to its source, in place,
/// carrying `path_mtu` raised to the IPv6 minimum (see the module docs).
fn packet_too_big(
    buffer: &mut [u8],
    start: usize,
    packet_len: usize,
    path_mtu: u16,
) -> Result<Encapsulated, DropReason> {
    let mtu = path_mtu.max(ipv6::MIN_MTU);
    // Telling the client to send what it already sends would only repeat on every packet.
    if packet_len <= usize::from(mtu) {
        return Err(DropReason::TooBig);
    }
    let ip_at = start + ethernet::HEADER_LEN;
    let icmp_at = ip_at + ipv6::HEADER_LEN;
    let quote_at = icmp_at + icmpv6::HEADER_LEN;
    let quote_len = packet_len.min(ICMP6_MAX_QUOTE);
    let end = quote_at + quote_len;
    if end > buffer.len() {
        return Err(DropReason::TooBig);
    }
    let (client_mac, our_mac, client, vip) = {
        let frame = &buffer[start..];
        let ip = Ipv6Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        let (client_mac, our_mac) = macs(frame);
        (client_mac, our_mac, ip.src_addr(), ip.dst_addr())
    };
    buffer.copy_within(ip_at..ip_at + quote_len, quote_at);

    Link {
        src_mac: our_mac,
        dst_mac: client_mac,
    }
    .apply(&mut buffer[start..]);
    // Fits: at most 1240.
    let icmp_len = (end - icmp_at) as u16;
    let mut icmp = Icmpv6Packet::new_unchecked(&mut buffer[icmp_at..end]);
    icmp.set_msg_type(icmpv6::message::PACKET_TOO_BIG);
    icmp.set_code(0);
    icmp.set_mtu(u32::from(mtu));
    icmp.set_checksum(0);
    let sum = checksum::combine(&[
        checksum::pseudo_header6(vip, client, ipv6::next_header::ICMPV6, u32::from(icmp_len)),
        checksum::data(&buffer[icmp_at..end]),
    ]);
    Icmpv6Packet::new_unchecked(&mut buffer[icmp_at..end]).set_checksum(!sum);

    let mut ip = Ipv6Packet::new_unchecked(&mut buffer[ip_at..icmp_at]);
    ip.set_version_class_flow(0, 0);
    ip.set_payload_len(icmp_len);
    ip.set_next_header(ipv6::next_header::ICMPV6);
    ip.set_hop_limit(ICMP6_HOP_LIMIT);
    ip.set_src_addr(vip);
    ip.set_dst_addr(client);
    Ok(Encapsulated::PacketTooBig {
        start,
        len: end - start,
    })
}

/// A frame's (source, destination) MACs: an answer goes from the second to the first.
#[inline]
fn macs(frame: &[u8]) -> ([u8; 6], [u8; 6]) {
    let mut source = [0; 6];
    let mut destination = [0; 6];
    source.copy_from_slice(&frame[6..12]);
    destination.copy_from_slice(&frame[0..6]);
    (source, destination)
}

/// What [`decapsulate`] made of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decapsulated {
    /// The inner packet behind the original Ethernet header, at `buffer[start..start + len]`:
    /// deliver it locally (XDP_PASS after `bpf_xdp_adjust_head`).
    Inner {
        /// Offset of its first byte (the received start + the outer header length).
        start: usize,
        /// Its length (Ethernet header and inner total length; padding dropped).
        len: usize,
    },
    /// Not IP-in-IP addressed to this host (or not parseable as IPv4 at all): leave it to the
    /// kernel, untouched.
    NotForUs,
}

/// Strips the outer header of an IP-in-IP frame addressed to `local`, at
/// `buffer[start..start + len]`, moving the Ethernet header forward onto the inner packet.
///
/// Ours but unusable, the frame untouched: an outer fragment ([`DropReason::Fragment`]: the
/// kernel could reassemble it but, without the ipip module, not deliver it), an inner packet
/// that is not a whole IPv4 packet ([`DropReason::Truncated`], [`DropReason::BadIhl`]).
pub fn decapsulate(
    buffer: &mut [u8],
    start: usize,
    len: usize,
    local: Ipv4Addr,
) -> Result<Decapsulated, DropReason> {
    let end = start.checked_add(len).ok_or(DropReason::Truncated)?;
    let Some(frame) = buffer.get(start..end) else {
        return Err(DropReason::Truncated);
    };
    let Ok(outer) = ipv4_of(frame) else {
        return Ok(Decapsulated::NotForUs);
    };
    if outer.protocol() != ipv4::protocol::IPIP || outer.dst_addr() != local {
        return Ok(Decapsulated::NotForUs);
    }
    if outer.is_fragment() {
        return Err(DropReason::Fragment);
    }
    let outer_len = usize::from(outer.header_len());
    let inner = Ipv4Packet::new_checked(outer.payload()).map_err(|error| match error {
        crate::wire::Error::Truncated => DropReason::Truncated,
        crate::wire::Error::Malformed => DropReason::BadIhl,
    })?;
    let inner_len = usize::from(inner.total_len());

    let new_start = start + outer_len;
    buffer.copy_within(start..start + ethernet::HEADER_LEN, new_start);
    Ok(Decapsulated::Inner {
        start: new_start,
        len: ethernet::HEADER_LEN + inner_len,
    })
}
