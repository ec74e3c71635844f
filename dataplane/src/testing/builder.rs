//! [`FrameBuilder`]: one Ethernet frame from a few readable calls, valid unless told otherwise.
//!
//! Test support only: it allocates and panics on bad input.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use super::{DIRECTOR_MAC, ROUTER_MAC};
use crate::wire::{
    ipv4, tcp, udp, EtherType, Ipv4Packet, MacAddr, TcpFlags, TcpSegment, UdpDatagram,
};

/// What the frame carries above Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
    Icmp,
    Ipip,
    Arp,
}

/// Builds one Ethernet frame, valid unless told otherwise, with correct checksums.
///
/// Every knob that makes a malformed frame is a method: [`FrameBuilder::vlan`],
/// [`FrameBuilder::version`], [`FrameBuilder::ihl`], [`FrameBuilder::more_fragments`],
/// [`FrameBuilder::fragment_offset`], [`FrameBuilder::total_len`], [`FrameBuilder::l4_len`],
/// [`FrameBuilder::truncate`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build`"]
pub struct FrameBuilder {
    kind: Kind,
    eth_src: MacAddr,
    eth_dst: MacAddr,
    vlan: Option<(EtherType, u16)>,
    ethertype: Option<EtherType>,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    version: u8,
    ihl: u8,
    tos: u8,
    ident: u16,
    dont_fragment: bool,
    more_fragments: bool,
    fragment_offset: u16,
    ttl: u8,
    protocol: Option<u8>,
    total_len: Option<u16>,
    tcp_flags: TcpFlags,
    seq: u32,
    ack_number: u32,
    tcp_header_len: u8,
    udp_checksum: Option<u16>,
    payload: Vec<u8>,
    icmp_header: Option<[u8; 8]>,
    l4_len: Option<usize>,
    truncate: Option<usize>,
    pad: bool,
}

impl FrameBuilder {
    fn new(kind: Kind) -> Self {
        FrameBuilder {
            kind,
            eth_src: ROUTER_MAC,
            eth_dst: DIRECTOR_MAC,
            vlan: None,
            ethertype: None,
            src: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 40000),
            dst: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 80),
            version: 4,
            ihl: 5,
            tos: 0,
            ident: 0x1234,
            dont_fragment: true,
            more_fragments: false,
            fragment_offset: 0,
            ttl: 64,
            protocol: None,
            total_len: None,
            tcp_flags: TcpFlags::default(),
            seq: 1_000_000,
            ack_number: 0,
            tcp_header_len: 20,
            udp_checksum: None,
            payload: Vec::new(),
            icmp_header: None,
            l4_len: None,
            truncate: None,
            pad: true,
        }
    }

    /// A TCP segment (no flags until set), from 192.0.2.2:40000 to 192.0.2.10:80.
    pub fn tcp() -> Self {
        Self::new(Kind::Tcp)
    }

    /// A UDP datagram, from 192.0.2.2:40000 to 192.0.2.10:80.
    pub fn udp() -> Self {
        Self::new(Kind::Udp)
    }

    /// An ICMP echo request to 192.0.2.10.
    pub fn icmp() -> Self {
        Self::new(Kind::Icmp)
    }

    /// An IP-in-IP packet (protocol 4) from 192.0.2.2 to 192.0.2.10 carrying
    /// [`FrameBuilder::payload`], which should be an inner IPv4 packet
    /// ([`FrameBuilder::build_ipv4`]).
    pub fn ipip() -> Self {
        Self::new(Kind::Ipip)
    }

    /// An ARP request ("who has 192.0.2.10") from 192.0.2.2.
    pub fn arp() -> Self {
        Self::new(Kind::Arp)
    }

    /// Source address and port, as `"a.b.c.d:port"`.
    pub fn src(mut self, addr: &str) -> Self {
        self.src = addr
            .parse()
            .unwrap_or_else(|_| panic!("not an IPv4 socket address: {addr:?}"));
        self
    }

    /// Destination address and port, as `"a.b.c.d:port"`.
    pub fn dst(mut self, addr: &str) -> Self {
        self.dst = addr
            .parse()
            .unwrap_or_else(|_| panic!("not an IPv4 socket address: {addr:?}"));
        self
    }

    /// Source MAC.
    pub fn eth_src(mut self, mac: MacAddr) -> Self {
        self.eth_src = mac;
        self
    }

    /// Destination MAC.
    pub fn eth_dst(mut self, mac: MacAddr) -> Self {
        self.eth_dst = mac;
        self
    }

    /// Inserts an 802.1Q tag with this VLAN id.
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlan = Some((EtherType::VLAN, id));
        self
    }

    /// Inserts an 802.1ad (QinQ) service tag with this VLAN id.
    pub fn qinq(mut self, id: u16) -> Self {
        self.vlan = Some((EtherType::QINQ, id));
        self
    }

    /// Overrides the EtherType (of the innermost header).
    pub fn ethertype(mut self, ethertype: EtherType) -> Self {
        self.ethertype = Some(ethertype);
        self
    }

    /// Overrides the IP version nibble.
    pub fn version(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    /// Sets IHL (header length in 32-bit words). Above 5 the extra words are filled with
    /// options (NOPs and an end-of-list); below 5 the field lies and the header stays 20 bytes.
    pub fn ihl(mut self, ihl: u8) -> Self {
        self.ihl = ihl;
        self
    }

    /// IPv4 identification.
    pub fn ident(mut self, ident: u16) -> Self {
        self.ident = ident;
        self
    }

    /// Sets or clears Don't Fragment (set by default).
    pub fn dont_fragment(mut self, dont_fragment: bool) -> Self {
        self.dont_fragment = dont_fragment;
        self
    }

    /// For [`FrameBuilder::icmp`]: type, code and the 4 "rest of header" bytes (big-endian),
    /// instead of an echo request. [`FrameBuilder::payload`] then holds what follows, e.g. the
    /// quote of an error (`build_ipv4()` of the offending packet, cut to its header + 8 bytes).
    pub fn icmp_header(mut self, msg_type: u8, code: u8, rest: u32) -> Self {
        let [a, b, c, d] = rest.to_be_bytes();
        self.icmp_header = Some([msg_type, code, 0, 0, a, b, c, d]);
        self
    }

    /// Type of service byte.
    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }

    /// Time to live.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets More Fragments (and clears Don't Fragment).
    pub fn more_fragments(mut self) -> Self {
        self.more_fragments = true;
        self.dont_fragment = false;
        self
    }

    /// Sets the fragment offset in bytes (a multiple of 8; clears Don't Fragment).
    pub fn fragment_offset(mut self, offset: u16) -> Self {
        self.fragment_offset = offset;
        self.dont_fragment = false;
        self
    }

    /// Overrides the IP protocol number.
    pub fn protocol(mut self, protocol: u8) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Overrides the IP total length field (the bytes stay as built).
    pub fn total_len(mut self, total_len: u16) -> Self {
        self.total_len = Some(total_len);
        self
    }

    /// Adds TCP flags.
    pub fn flags(mut self, flags: TcpFlags) -> Self {
        self.tcp_flags = self.tcp_flags | flags;
        self
    }

    /// Adds SYN.
    pub fn syn(self) -> Self {
        self.flags(TcpFlags::SYN)
    }

    /// Adds ACK.
    pub fn ack(self) -> Self {
        self.flags(TcpFlags::ACK)
    }

    /// Adds FIN.
    pub fn fin(self) -> Self {
        self.flags(TcpFlags::FIN)
    }

    /// Adds RST.
    pub fn rst(self) -> Self {
        self.flags(TcpFlags::RST)
    }

    /// Adds PSH.
    pub fn psh(self) -> Self {
        self.flags(TcpFlags::PSH)
    }

    /// TCP sequence number.
    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    /// Overrides the TCP data offset (header length in bytes; the header stays 20 bytes).
    pub fn tcp_header_len(mut self, header_len: u8) -> Self {
        self.tcp_header_len = header_len;
        self
    }

    /// Overrides the UDP checksum (0: "no checksum").
    pub fn udp_checksum(mut self, checksum: u16) -> Self {
        self.udp_checksum = Some(checksum);
        self
    }

    /// Transport payload.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// Cuts the transport header and payload to `len` bytes and sets the IP total length to
    /// match, so the IPv4 layer is intact and the TCP/UDP header is what is short.
    pub fn l4_len(mut self, len: usize) -> Self {
        self.l4_len = Some(len);
        self
    }

    /// Cuts the finished frame to `len` bytes, header fields unchanged (no padding).
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self.pad = false;
        self
    }

    /// Does not pad the frame to the 60-byte Ethernet minimum.
    pub fn unpadded(mut self) -> Self {
        self.pad = false;
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(128);
        frame.extend_from_slice(&self.eth_dst);
        frame.extend_from_slice(&self.eth_src);
        if let Some((tpid, id)) = self.vlan {
            frame.extend_from_slice(&tpid.0.to_be_bytes());
            frame.extend_from_slice(&(id & 0x0fff).to_be_bytes());
        }
        let default_type = if self.kind == Kind::Arp {
            EtherType::ARP
        } else {
            EtherType::IPV4
        };
        frame.extend_from_slice(&self.ethertype.unwrap_or(default_type).0.to_be_bytes());
        match self.kind {
            Kind::Arp => frame.extend_from_slice(&self.arp_body()),
            _ => frame.extend_from_slice(&self.ipv4()),
        }
        if let Some(len) = self.truncate {
            frame.truncate(len);
        }
        if self.pad && frame.len() < 60 {
            frame.resize(60, 0);
        }
        frame
    }

    fn arp_body(&self) -> Vec<u8> {
        let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
        arp.extend_from_slice(&self.eth_src);
        arp.extend_from_slice(&self.src.ip().octets());
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&self.dst.ip().octets());
        arp
    }

    fn transport(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        match self.kind {
            Kind::Tcp => {
                let mut bytes = vec![0; tcp::HEADER_LEN + self.payload.len()];
                let mut segment = TcpSegment::new_unchecked(&mut bytes[..]);
                segment.set_src_port(self.src.port());
                segment.set_dst_port(self.dst.port());
                segment.set_seq_number(self.seq);
                segment.set_ack_number(self.ack_number);
                segment.set_header_len(self.tcp_header_len);
                segment.set_flags(self.tcp_flags);
                segment.set_window_len(64240);
                // After the fixed header whatever the data offset says (it may be overridden).
                segment.as_mut()[tcp::HEADER_LEN..].copy_from_slice(&self.payload);
                segment.fill_checksum(src, dst);
                bytes
            }
            Kind::Udp => {
                let mut bytes = vec![0; udp::HEADER_LEN + self.payload.len()];
                let len = bytes.len() as u16;
                let mut datagram = UdpDatagram::new_unchecked(&mut bytes[..]);
                datagram.set_src_port(self.src.port());
                datagram.set_dst_port(self.dst.port());
                datagram.set_len(len);
                datagram.payload_mut().copy_from_slice(&self.payload);
                datagram.fill_checksum(src, dst);
                if let Some(checksum) = self.udp_checksum {
                    datagram.set_checksum(checksum);
                }
                bytes
            }
            Kind::Icmp => {
                let mut bytes = self.icmp_header.map_or_else(
                    || vec![8, 0, 0, 0, 0x12, 0x34, 0, 1],
                    |header| header.to_vec(),
                );
                bytes.extend_from_slice(&self.payload);
                let checksum = !crate::wire::checksum::data(&bytes);
                bytes[2..4].copy_from_slice(&checksum.to_be_bytes());
                bytes
            }
            Kind::Ipip => self.payload.clone(),
            Kind::Arp => Vec::new(),
        }
    }

    /// The IPv4 packet alone, without Ethernet header or padding (as an ICMP error quotes it,
    /// or as IP-in-IP carries it).
    pub fn build_ipv4(&self) -> Vec<u8> {
        self.ipv4()
    }

    fn ipv4(&self) -> Vec<u8> {
        let (src, dst) = (*self.src.ip(), *self.dst.ip());
        let mut transport = self.transport(src, dst);
        if let Some(len) = self.l4_len {
            transport.truncate(len);
        }
        let header_len = usize::from(self.ihl.max(5)) * 4;
        let mut bytes = vec![0; header_len + transport.len()];
        let total_len = self.total_len.unwrap_or(bytes.len() as u16);
        let protocol = self.protocol.unwrap_or(match self.kind {
            Kind::Tcp => ipv4::protocol::TCP,
            Kind::Udp => ipv4::protocol::UDP,
            Kind::Icmp | Kind::Arp => ipv4::protocol::ICMP,
            Kind::Ipip => ipv4::protocol::IPIP,
        });
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_version_and_header_len(self.version, self.ihl.saturating_mul(4));
        packet.set_tos(self.tos);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.set_fragment(
            self.dont_fragment,
            self.more_fragments,
            self.fragment_offset,
        );
        packet.set_ttl(self.ttl);
        packet.set_protocol(protocol);
        packet.set_src_addr(src);
        packet.set_dst_addr(dst);
        // Options: NOPs then end-of-list.
        let options = &mut bytes[ipv4::HEADER_LEN..header_len];
        options.fill(1);
        if let Some(last) = options.last_mut() {
            *last = 0;
        }
        bytes[header_len..].copy_from_slice(&transport);
        // The checksum covers the header as IHL says, within what was built.
        let checksummed = (usize::from(self.ihl) * 4).clamp(0, header_len);
        let checksum = !crate::wire::checksum::data(&bytes[..checksummed]);
        Ipv4Packet::new_unchecked(&mut bytes[..]).set_checksum(checksum);
        bytes
    }
}

/// IPv6 next-header numbers the [`Ipv6FrameBuilder`] writes (RFC 8200 4, RFC 4443).
mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DESTINATION_OPTIONS: u8 = 60;
}

/// What an [`Ipv6FrameBuilder`] frame carries after its extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upper {
    Tcp,
    Udp,
    Icmpv6,
    /// Next header 59: nothing (RFC 8200 4.7).
    Nothing,
}

/// [`FrameBuilder`] for IPv6 (RFC 8200): one Ethernet frame with a 40-byte IPv6 header, any
/// extension headers, and TCP, UDP or ICMPv6 with correct checksums (over the IPv6 pseudo
/// header), valid unless told otherwise.
///
/// Addresses are `"[2001:db8::1]:80"`. The knobs that make malformed frames:
/// [`Ipv6FrameBuilder::version`], [`Ipv6FrameBuilder::ethertype`],
/// [`Ipv6FrameBuilder::payload_len`], [`Ipv6FrameBuilder::truncate`], and extension headers in
/// any number and order.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build`"]
pub struct Ipv6FrameBuilder {
    upper: Upper,
    eth_src: MacAddr,
    eth_dst: MacAddr,
    ethertype: Option<EtherType>,
    src: SocketAddrV6,
    dst: SocketAddrV6,
    version: u8,
    hop_limit: u8,
    /// Each extension header as (its next-header number, its bytes with the next-header byte
    /// left 0: `build` chains them).
    extensions: Vec<(u8, Vec<u8>)>,
    payload_len: Option<u16>,
    upper_number: Option<u8>,
    tcp_flags: TcpFlags,
    payload: Vec<u8>,
    icmp_header: Option<[u8; 8]>,
    truncate: Option<usize>,
    pad: bool,
}

impl Ipv6FrameBuilder {
    fn new(upper: Upper) -> Self {
        Ipv6FrameBuilder {
            upper,
            eth_src: ROUTER_MAC,
            eth_dst: DIRECTOR_MAC,
            ethertype: None,
            src: SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 40000, 0, 0),
            dst: SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10), 80, 0, 0),
            version: 6,
            hop_limit: 64,
            extensions: Vec::new(),
            payload_len: None,
            upper_number: None,
            tcp_flags: TcpFlags::default(),
            payload: Vec::new(),
            icmp_header: None,
            truncate: None,
            pad: true,
        }
    }

    /// A TCP segment (no flags until set), from [2001:db8::2]:40000 to [2001:db8::10]:80.
    pub fn tcp() -> Self {
        Self::new(Upper::Tcp)
    }

    /// A UDP datagram, from [2001:db8::2]:40000 to [2001:db8::10]:80.
    pub fn udp() -> Self {
        Self::new(Upper::Udp)
    }

    /// An ICMPv6 echo request to 2001:db8::10 ([`Ipv6FrameBuilder::icmp6_header`] for others).
    pub fn icmp6() -> Self {
        Self::new(Upper::Icmpv6)
    }

    /// Nothing after the extension headers (next header 59).
    pub fn no_next_header() -> Self {
        Self::new(Upper::Nothing)
    }

    /// Source address and port, as `"[2001:db8::1]:port"`.
    pub fn src(mut self, addr: &str) -> Self {
        self.src = addr
            .parse()
            .unwrap_or_else(|_| panic!("not an IPv6 socket address: {addr:?}"));
        self
    }

    /// Destination address and port, as `"[2001:db8::1]:port"`.
    pub fn dst(mut self, addr: &str) -> Self {
        self.dst = addr
            .parse()
            .unwrap_or_else(|_| panic!("not an IPv6 socket address: {addr:?}"));
        self
    }

    /// Destination MAC.
    pub fn eth_dst(mut self, mac: MacAddr) -> Self {
        self.eth_dst = mac;
        self
    }

    /// Overrides the EtherType (0x86DD by default).
    pub fn ethertype(mut self, ethertype: EtherType) -> Self {
        self.ethertype = Some(ethertype);
        self
    }

    /// Overrides the IP version nibble.
    pub fn version(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    /// Hop limit.
    pub fn hop_limit(mut self, hop_limit: u8) -> Self {
        self.hop_limit = hop_limit;
        self
    }

    /// Overrides the payload length field (the bytes stay as built).
    pub fn payload_len(mut self, payload_len: u16) -> Self {
        self.payload_len = Some(payload_len);
        self
    }

    /// Overrides the next-header number naming the upper layer (e.g. 50, ESP, over a UDP
    /// body); the bytes stay as built.
    pub fn next_header(mut self, number: u8) -> Self {
        self.upper_number = Some(number);
        self
    }

    /// Appends an options header (`kind`: hop-by-hop or destination options) of `units` 8-octet
    /// units beyond the first 8, filled with PadN options.
    fn options_header(mut self, kind: u8, units: u8) -> Self {
        let mut bytes = vec![0; (usize::from(units) + 1) * 8];
        bytes[1] = units;
        // PadN (RFC 8200 4.2) over the 6 bytes after the first two, then each further 8.
        bytes[2] = 1;
        bytes[3] = 4;
        for group in bytes[8..].chunks_exact_mut(8) {
            group[0] = 1;
            group[1] = 6;
        }
        self.extensions.push((kind, bytes));
        self
    }

    /// Appends a hop-by-hop options header of `units` 8-octet units beyond the first 8.
    pub fn hop_by_hop(self, units: u8) -> Self {
        self.options_header(next_header::HOP_BY_HOP, units)
    }

    /// Appends a destination options header of `units` 8-octet units beyond the first 8.
    pub fn destination_options(self, units: u8) -> Self {
        self.options_header(next_header::DESTINATION_OPTIONS, units)
    }

    /// Appends an 8-byte routing header (an experimental type, 253, with no segments left).
    pub fn routing(mut self) -> Self {
        self.extensions
            .push((next_header::ROUTING, vec![0, 0, 253, 0, 0, 0, 0, 0]));
        self
    }

    /// Appends a fragment header (RFC 8200 4.5): `offset` in bytes (a multiple of 8), `more`
    /// fragments.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        let [a, b] = (offset | u16::from(more)).to_be_bytes();
        self.extensions.push((
            next_header::FRAGMENT,
            vec![0, 0, a, b, 0x12, 0x34, 0x56, 0x78],
        ));
        self
    }

    /// For [`Ipv6FrameBuilder::icmp6`]: type, code and the 4 bytes after the checksum
    /// (big-endian: the MTU of packet too big), instead of an echo request.
    /// [`Ipv6FrameBuilder::payload`] then holds what follows, e.g. an error's quote.
    pub fn icmp6_header(mut self, msg_type: u8, code: u8, rest: u32) -> Self {
        let [a, b, c, d] = rest.to_be_bytes();
        self.icmp_header = Some([msg_type, code, 0, 0, a, b, c, d]);
        self
    }

    /// Adds TCP flags.
    pub fn flags(mut self, flags: TcpFlags) -> Self {
        self.tcp_flags = self.tcp_flags | flags;
        self
    }

    /// Adds SYN.
    pub fn syn(self) -> Self {
        self.flags(TcpFlags::SYN)
    }

    /// Adds ACK.
    pub fn ack(self) -> Self {
        self.flags(TcpFlags::ACK)
    }

    /// Upper-layer payload.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// Cuts the finished frame to `len` bytes, header fields unchanged (no padding).
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self.pad = false;
        self
    }

    /// Does not pad the frame to the 60-byte Ethernet minimum.
    pub fn unpadded(mut self) -> Self {
        self.pad = false;
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(128);
        frame.extend_from_slice(&self.eth_dst);
        frame.extend_from_slice(&self.eth_src);
        frame.extend_from_slice(&self.ethertype.unwrap_or(EtherType::IPV6).0.to_be_bytes());
        frame.extend_from_slice(&self.build_ipv6());
        if let Some(len) = self.truncate {
            frame.truncate(len);
        }
        if self.pad && frame.len() < 60 {
            frame.resize(60, 0);
        }
        frame
    }

    /// The IPv6 packet alone, without Ethernet header or padding (as an ICMPv6 error quotes it).
    pub fn build_ipv6(&self) -> Vec<u8> {
        let (upper_number, upper) = self.upper_layer();
        let mut next = self.upper_number.unwrap_or(upper_number);
        let mut extensions = Vec::new();
        // Chain from the last header back: each names the one after it.
        for (kind, bytes) in self.extensions.iter().rev() {
            let mut bytes = bytes.clone();
            bytes[0] = next;
            next = *kind;
            extensions.splice(0..0, bytes);
        }
        let payload_len = extensions.len() + upper.len();
        let mut packet = Vec::with_capacity(40 + payload_len);
        packet.extend_from_slice(&(u32::from(self.version) << 28).to_be_bytes());
        packet.extend_from_slice(
            &self
                .payload_len
                .unwrap_or(u16::try_from(payload_len).expect("no jumbograms"))
                .to_be_bytes(),
        );
        packet.extend_from_slice(&[next, self.hop_limit]);
        packet.extend_from_slice(&self.src.ip().octets());
        packet.extend_from_slice(&self.dst.ip().octets());
        packet.extend_from_slice(&extensions);
        packet.extend_from_slice(&upper);
        packet
    }

    /// The upper layer's next-header number and bytes, checksummed.
    fn upper_layer(&self) -> (u8, Vec<u8>) {
        let (number, mut bytes, checksum_at) = match self.upper {
            Upper::Tcp => {
                let mut bytes = vec![0; tcp::HEADER_LEN + self.payload.len()];
                let mut segment = TcpSegment::new_unchecked(&mut bytes[..]);
                segment.set_src_port(self.src.port());
                segment.set_dst_port(self.dst.port());
                segment.set_seq_number(1_000_000);
                segment.set_header_len(20);
                segment.set_flags(self.tcp_flags);
                segment.set_window_len(64240);
                bytes[tcp::HEADER_LEN..].copy_from_slice(&self.payload);
                (next_header::TCP, bytes, 16)
            }
            Upper::Udp => {
                let mut bytes = vec![0; udp::HEADER_LEN + self.payload.len()];
                let len = u16::try_from(bytes.len()).expect("a UDP length");
                bytes[0..2].copy_from_slice(&self.src.port().to_be_bytes());
                bytes[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
                bytes[4..6].copy_from_slice(&len.to_be_bytes());
                bytes[udp::HEADER_LEN..].copy_from_slice(&self.payload);
                (next_header::UDP, bytes, 6)
            }
            Upper::Icmpv6 => {
                let mut bytes = self
                    .icmp_header
                    .map_or_else(|| vec![128, 0, 0, 0, 0x12, 0x34, 0, 1], |h| h.to_vec());
                bytes.extend_from_slice(&self.payload);
                (next_header::ICMPV6, bytes, 2)
            }
            Upper::Nothing => return (next_header::NO_NEXT_HEADER, self.payload.clone()),
        };
        // The pseudo header (RFC 8200 8.1): addresses, upper-layer length, next header.
        let mut pseudo = Vec::with_capacity(40);
        pseudo.extend_from_slice(&self.src.ip().octets());
        pseudo.extend_from_slice(&self.dst.ip().octets());
        pseudo.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(0).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, number]);
        let sum = crate::wire::checksum::combine(&[
            crate::wire::checksum::data(&pseudo),
            crate::wire::checksum::data(&bytes),
        ]);
        // A computed 0 goes out as 0xFFFF (UDP's "no checksum" is not allowed over IPv6).
        let checksum = match !sum {
            0 => 0xffff,
            checksum => checksum,
        };
        bytes[checksum_at..checksum_at + 2].copy_from_slice(&checksum.to_be_bytes());
        (number, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::Ipv6FrameBuilder;
    use crate::wire::checksum;

    /// The sum over the pseudo header and the upper layer of a built frame: 0xFFFF when the
    /// checksum in it is right.
    fn verify(packet: &[u8], upper_at: usize, number: u8) -> u16 {
        let upper = &packet[upper_at..];
        let mut pseudo = packet[8..40].to_vec();
        pseudo.extend_from_slice(&u32::try_from(upper.len()).unwrap().to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, number]);
        checksum::combine(&[checksum::data(&pseudo), checksum::data(upper)])
    }

    #[test]
    fn ipv6_frames_chain_their_headers_and_checksum_right() {
        let packet = Ipv6FrameBuilder::tcp()
            .src("[2001:db8::7]:1234")
            .dst("[2001:db8::10]:443")
            .syn()
            .hop_by_hop(0)
            .routing()
            .payload(b"hi")
            .build_ipv6();
        assert_eq!(packet[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([packet[4], packet[5]]), 8 + 8 + 20 + 2);
        // Fixed header -> hop-by-hop -> routing -> TCP.
        assert_eq!((packet[6], packet[40], packet[48]), (0, 43, 6));
        assert_eq!(&packet[56..60], &[0x04, 0xd2, 0x01, 0xbb]);
        assert_eq!(verify(&packet, 56, 6), 0xffff);

        let udp = Ipv6FrameBuilder::udp().payload(&[7; 9]).build_ipv6();
        assert_eq!(verify(&udp, 40, 17), 0xffff);
        let echo = Ipv6FrameBuilder::icmp6().build_ipv6();
        assert_eq!((echo[6], echo[40]), (58, 128));
        assert_eq!(verify(&echo, 40, 58), 0xffff);

        let frame = Ipv6FrameBuilder::udp().fragment(1448, true).build();
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(&frame[14 + 40..14 + 44], &[17, 0, 0x05, 0xa9]);
    }
}
