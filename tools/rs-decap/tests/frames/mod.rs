//! IPv6 frames for the decapsulator's tests, which the dataplane's `FrameBuilder` (IPv4 only)
//! does not build: outer IPv6 headers (RFC 8200) carrying IPv6 or IPv4, and UDP over IPv6 with
//! its pseudo-header checksum (RFC 8200 8.1), so the kernel accepts what the namespace test
//! delivers. Test support: allocates and panics freely. Checksums come from the dataplane's
//! `wire::checksum` (RFC 1071), not a copy.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code, reason = "shared by two test crates, each using part of it")]

use std::net::{Ipv6Addr, SocketAddrV6};

use dataplane::testing::{DIRECTOR_MAC, ROUTER_MAC};
use dataplane::wire::checksum;

/// Ethernet types.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethernet types.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// IPv6 next header / IPv4 protocol numbers (IANA).
pub mod next_header {
    /// Hop-by-hop options (RFC 8200 4.3).
    pub const HOP_BY_HOP: u8 = 0;
    /// IPv4 (encapsulated: 4in6, 4in4).
    pub const IPV4: u8 = 4;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 (encapsulated: 6in6).
    pub const IPV6: u8 = 41;
    /// Routing header (RFC 8200 4.4).
    pub const ROUTING: u8 = 43;
    /// Fragment header (RFC 8200 4.5).
    pub const FRAGMENT: u8 = 44;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// Destination options (RFC 8200 4.6).
    pub const DESTINATION_OPTIONS: u8 = 60;
}

/// The fixed IPv6 header's length.
pub const IPV6_HEADER_LEN: usize = 40;

/// Flow label every header built here carries (the director may set one on outer headers from
/// the flow hash): the decapsulator must ignore it, and keep the inner one.
const FLOW_LABEL: u32 = 0x5_4321;

/// An Ethernet frame from `ROUTER_MAC` to `DIRECTOR_MAC` (`FrameBuilder`'s defaults, so the
/// two builders' frames compare) carrying `l3`, unpadded.
pub fn ethernet(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + l3.len());
    frame.extend_from_slice(&DIRECTOR_MAC);
    frame.extend_from_slice(&ROUTER_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(l3);
    frame
}

/// An IPv6 packet: a 40-byte header (traffic class 0, a flow label, hop limit 64) and
/// `payload`, whose length the header states.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let payload_len = u16::try_from(payload.len()).expect("no jumbograms here");
    let mut packet = Vec::with_capacity(IPV6_HEADER_LEN + payload.len());
    packet.extend_from_slice(&((6 << 28) | FLOW_LABEL).to_be_bytes());
    packet.extend_from_slice(&payload_len.to_be_bytes());
    packet.push(next_header);
    packet.push(64);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(payload);
    packet
}

/// `packet` (an IPv6 packet) with its payload length field set to `len`.
pub fn with_payload_len(mut packet: Vec<u8>, len: u16) -> Vec<u8> {
    packet[4..6].copy_from_slice(&len.to_be_bytes());
    packet
}

/// `packet` with the version nibble set to `version`.
pub fn with_version(mut packet: Vec<u8>, version: u8) -> Vec<u8> {
    packet[0] = (version << 4) | (packet[0] & 0x0f);
    packet
}

/// An IPv6 UDP datagram from `src` to `dst` carrying `payload`, with a valid checksum.
pub fn udp6(src: SocketAddrV6, dst: SocketAddrV6, payload: &[u8]) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).expect("a small datagram");
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);

    // RFC 8200 8.1: source, destination, upper-layer length (32 bits), 3 zero bytes, next header.
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, next_header::UDP]);
    let sum = !checksum::combine(&[checksum::data(&pseudo), checksum::data(&udp)]);
    // RFC 768, and mandatory over IPv6 (RFC 8200 8.1): a computed 0 is sent as 0xFFFF.
    let sum = if sum == 0 { 0xffff } else { sum };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());

    ipv6(*src.ip(), *dst.ip(), next_header::UDP, &udp)
}
