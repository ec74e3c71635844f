//! IP-in-IP tunnelling (LVS-TUN, RFC 2003): the director wraps the client's packet in an outer
//! IPv4 header (protocol 4) addressed to the real server, which strips it and answers the client
//! directly from the VIP.
//!
//! # Headroom
//!
//! Encapsulation grows the frame by [`HEADROOM`] (20) bytes, at the front, without moving the
//! packet: the inner IPv4 packet stays where it was received, the outer header is written over
//! the old Ethernet header and the 6 bytes before it, and the new Ethernet header goes into the
//! 20 bytes before the old frame. So [`encapsulate`] takes the whole buffer (an AF_XDP UMEM
//! frame) and the received frame's position in it, and returns the new position.
//!
//! What the AF_XDP worker must provide: a UMEM configured with at least [`HEADROOM`] bytes of
//! frame headroom (`xdp_umem_reg.headroom`; the kernel then writes received frames that far into
//! each chunk, and RX descriptors' `addr` point past it), and a TX descriptor built from the
//! returned start (chunk base + start) and length. Less headroom is counted as
//! [`DropReason::NoHeadroom`], never written out of bounds.
//!
//! # Too big
//!
//! When the outer packet (20 + the inner total length) would exceed the egress MTU:
//! - inner DF set: the frame is turned, in place, into an ICMP destination unreachable /
//!   fragmentation needed (type 3 code 4) from the VIP to the client, carrying next-hop MTU =
//!   egress MTU - 20 and the inner header plus 8 bytes ([`Encapsulated::FragNeeded`]): the
//!   client's path MTU discovery then sends smaller packets, as with IPVS (`ip_vs_tunnel_xmit`
//!   sends the same ICMP through `icmp_send`). The worker sends it back out of the interface the
//!   frame came in on.
//! - inner DF clear: [`DropReason::TooBig`], counted. IPVS fragments the outer packet instead;
//!   that takes a second frame, which this one-frame-in, one-frame-out rewrite does not have.
//!   Such packets are rare (every modern TCP stack sets DF; it takes a non-PMTUD UDP sender at
//!   full MTU), and the counter makes them visible rather than silent.
//!
//! # Outer header
//!
//! Version 4, IHL 5, TOS copied from the inner packet (RFC 2003 3.1), total length = 20 + inner
//! total length, identification as the caller passes it (0 is fine with DF set, RFC 6864; a
//! per-worker counter otherwise), DF copied from the inner packet, TTL 64, protocol 4, source =
//! the director's address on the egress interface, destination = the real server; full
//! checksum. The inner packet is not changed at all (its TTL included, as IPVS leaves it).
//! Ethernet padding of the received frame is not carried over.
//!
//! # Real-server side
//!
//! [`decapsulate`] is the Rust reference for the `rs-decap` XDP program: it strips an outer
//! IPv4 protocol-4 header addressed to the local address, leaving the Ethernet header in front
//! of the inner packet (the XDP program does the same with `bpf_xdp_adjust_head`).

use std::net::{IpAddr, Ipv4Addr};

use super::{ipv4_of, Link};
use crate::counters::DropReason;
use crate::parse::Parsed;
use crate::wire::icmp::{self, message, unreachable};
use crate::wire::{ethernet, ipv4, EtherType, Icmpv4Packet, Ipv4Packet};

/// Bytes the frame grows by when encapsulated, which the worker must leave in front of every
/// received frame (UMEM headroom).
pub const HEADROOM: usize = ipv4::HEADER_LEN;

/// TTL of the outer header (Linux's default `ip_default_ttl`).
pub const OUTER_TTL: u8 = 64;

/// TTL of generated ICMP errors.
pub const ICMP_TTL: u8 = 64;

/// Type of service of a generated ICMP error: the offending packet's TOS bits with precedence
/// "internetwork control", as Linux's `icmp_send` sets it.
const fn icmp_tos(inner_tos: u8) -> u8 {
    (inner_tos & 0x1e) | 0xc0
}

/// How a tunnelled frame leaves the director.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TunnelEgress {
    /// Egress interface MAC and next hop (real server or gateway) MAC.
    pub link: Link,
    /// The director's address on the egress interface: the outer source.
    pub src_addr: Ipv4Addr,
    /// The egress interface's MTU (IP bytes, Ethernet header excluded).
    pub mtu: u16,
}

/// What [`encapsulate`] made of a frame. Positions are within the buffer passed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encapsulated {
    /// The IP-in-IP frame, at `buffer[start..start + len]`: send it out of the egress interface.
    Tunnelled {
        /// Offset of its first byte (the received start - [`HEADROOM`]).
        start: usize,
        /// Its length.
        len: usize,
    },
    /// Too big with DF set: the frame is now an ICMP fragmentation-needed to the client, at
    /// `buffer[start..start + len]` (start unchanged): send it out of the interface the frame
    /// came in on.
    FragNeeded {
        /// Offset of its first byte (the received start).
        start: usize,
        /// Its length.
        len: usize,
    },
}

/// Encapsulates the frame at `buffer[start..start + len]` for `backend` (see the module docs),
/// with outer identification `ident`.
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
        len: usize::from(inner.total_len()),
        tos: inner.tos(),
        dont_frag: inner.dont_frag(),
    };
    encapsulate_inner(buffer, start, inner, backend, egress, ident)
}

/// [`encapsulate`] of a frame classification parsed into `parsed`: the inner header is not
/// checked again, only the MTU and the headroom.
#[inline]
pub(crate) fn encapsulate_parsed(
    buffer: &mut [u8],
    start: usize,
    len: usize,
    parsed: &Parsed,
    backend: IpAddr,
    egress: &TunnelEgress,
    ident: u16,
) -> Result<Encapsulated, DropReason> {
    // integrator: tun6
    let IpAddr::V4(backend) = backend else {
        return Err(DropReason::FamilyUnsupported);
    };
    if parsed.family() != crate::parse::Family::Ipv4 {
        return Err(DropReason::FamilyUnsupported);
    }
    let end = start.checked_add(len).ok_or(DropReason::Truncated)?;
    let frame = buffer.get(start..end).ok_or(DropReason::Truncated)?;
    let ip = parsed.ipv4(frame).ok_or(DropReason::Truncated)?;
    let inner = Inner {
        len: parsed.l3_len(),
        tos: ip.tos(),
        dont_frag: ip.dont_frag(),
    };
    encapsulate_inner(buffer, start, inner, backend, egress, ident)
}

/// What encapsulation needs of the inner packet's header.
#[derive(Clone, Copy)]
struct Inner {
    /// Total length.
    len: usize,
    /// Type of service, copied to the outer header.
    tos: u8,
    /// Don't fragment, copied to the outer header.
    dont_frag: bool,
}

/// Encapsulates the checked frame at `buffer[start..]` whose inner packet is `inner`.
#[inline]
fn encapsulate_inner(
    buffer: &mut [u8],
    start: usize,
    inner: Inner,
    backend: Ipv4Addr,
    egress: &TunnelEgress,
    ident: u16,
) -> Result<Encapsulated, DropReason> {
    let Inner {
        len: inner_len,
        tos,
        dont_frag,
    } = inner;
    if HEADROOM + inner_len > usize::from(egress.mtu) {
        if !dont_frag {
            return Err(DropReason::TooBig);
        }
        return frag_needed(buffer, start, egress.mtu);
    }
    if start < HEADROOM {
        return Err(DropReason::NoHeadroom);
    }

    let new_start = start - HEADROOM;
    let new_len = ethernet::HEADER_LEN + HEADROOM + inner_len;
    let outer_at = new_start + ethernet::HEADER_LEN;
    let headers = &mut buffer[new_start..outer_at + ipv4::HEADER_LEN];
    egress.link.apply(headers);
    headers[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());

    let mut outer = Ipv4Packet::new_unchecked(&mut headers[ethernet::HEADER_LEN..]);
    outer.set_version_and_header_len(4, ipv4::HEADER_LEN as u8);
    outer.set_tos(tos);
    // Fits: it is at most the MTU, a u16.
    outer.set_total_len((HEADROOM + inner_len) as u16);
    outer.set_ident(ident);
    outer.set_fragment(dont_frag, false, 0);
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

/// Turns the (checked, untagged IPv4) frame at `buffer[start..]` into an ICMP
/// fragmentation-needed from its destination to its source, in place.
fn frag_needed(buffer: &mut [u8], start: usize, mtu: u16) -> Result<Encapsulated, DropReason> {
    let ip_at = start + ethernet::HEADER_LEN;
    let (client_mac, our_mac, client, vip, tos, quote_len) = {
        let frame = &buffer[start..];
        let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        let quote_len = (usize::from(ip.header_len()) + icmp::QUOTED_PAYLOAD_LEN)
            .min(usize::from(ip.total_len()));
        let mut client_mac = [0; 6];
        let mut our_mac = [0; 6];
        client_mac.copy_from_slice(&frame[6..12]);
        our_mac.copy_from_slice(&frame[0..6]);
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
    icmp.set_next_hop_mtu(mtu.saturating_sub(HEADROOM as u16));
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
