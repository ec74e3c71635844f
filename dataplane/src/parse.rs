//! Parse once: a received frame's headers, validated a single time, kept as a [`Parsed`] view
//! that classification hands to every later stage (connection lookup and the rewrites).
//!
//! [`classify`] runs the header checks of the pipeline's classification (steps 2 and 3 in
//! [`crate::pipeline`]'s docs) in their documented order and names the first failure as a
//! [`DropReason`]. What it learns (the address family, where the network and transport headers
//! are and how long the packet is, the flow's addresses, ports and protocol, the TCP flags, and
//! for an ICMP error the flow it quotes) is kept, so no later stage reads a header again to find
//! it out: the rewrites check only what classification does not (TTL, MTU, headroom).
//!
//! [`Parsed`]'s fields are private and set only here, so its lengths always satisfy what the
//! checks established (a header of at least 20 bytes inside the packet, a whole TCP/UDP header
//! or ICMP quote after it). It must be used with the frame it was parsed from; the rewrites still
//! reach that frame through bounds-checked slices of its lengths.
//!
//! What this module must not do: read header bytes other than through the [`crate::wire`] views,
//! write to the frame, or decide anything but whether and how a frame parses.

use std::net::IpAddr;

use crate::conntrack::{FlowAddr, FlowKey};
use crate::counters::DropReason;
use crate::service::Protocol;
use crate::wire::{
    self, ethernet, ipv4, ipv6, EtherType, EthernetFrame, IcmpQuote, Icmpv4Packet, Icmpv6Packet,
    Ipv4Packet, Ipv6Packet, Ipv6Quote, TcpFlags, TcpSegment, UdpDatagram,
};

/// The most IPv6 extension headers (hop-by-hop, routing, destination options) the walk reads
/// before the transport header; a longer chain is [`DropReason::Ipv6ExtensionChain`]. The XDP
/// classifier walks to the same bound (`DIRECTOR_MAX_IPV6_EXT_HEADERS` in `director.h`, checked
/// equal to this by `dataplane/tests/golden.rs`). RFC 8200 section 4.1 recommends an order in
/// which each appears at most once (destination options twice), so a legitimate chain before
/// TCP/UDP has at most four; six leaves room.
pub const IPV6_MAX_EXTENSION_HEADERS: usize = 6;

/// The network layer's address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (EtherType 0x0800).
    Ipv4,
    /// IPv6 (EtherType 0x86DD).
    Ipv6,
}

impl Family {
    /// The family of `address`.
    #[inline]
    pub const fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// Lower-case name, as counters and logs show it.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// A TCP/UDP frame's flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Addresses, ports and protocol, as the frame travels.
    pub key: FlowKey,
    /// TCP control bits; empty for UDP.
    pub flags: TcpFlags,
}

/// The 5-tuple of the datagram an ICMP error quotes, as that datagram travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuotedFlow {
    /// Quoted source address.
    pub src_addr: FlowAddr,
    /// Quoted destination address.
    pub dst_addr: FlowAddr,
    /// Quoted source port.
    pub src_port: u16,
    /// Quoted destination port.
    pub dst_port: u16,
    /// Quoted protocol.
    pub protocol: Protocol,
}

impl QuotedFlow {
    /// The flow the other way round: the direction the ICMP error itself travels. For an
    /// inbound error (quote VIP:port -> client) this is the client -> VIP key the connection
    /// table is indexed by; for an outbound one (quote client -> RS:rsport) it is the real
    /// server's reply tuple RS:rsport -> client.
    pub const fn reversed(self) -> FlowKey {
        FlowKey {
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
        }
    }
}

/// What the transport layer of a classified frame is (a view [`Parsed::transport`] builds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP or UDP with a whole header.
    Flow(Flow),
    /// An ICMP error (ICMPv4 destination unreachable or time exceeded; ICMPv6 destination
    /// unreachable, packet too big or time exceeded) quoting a TCP or UDP header and ports.
    IcmpError(QuotedFlow),
}

/// A frame [`classify`] accepted: what it learned, so no later stage parses again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
///
/// Its layout is fixed, with no enum inside: every frame stores one, and a [`Transport`] held
/// by value (a flow or an ICMP error's quote, each with its own layout) cost an IPv4 frame
/// some 25 piecewise stores more. The 5-tuple of either kind sits in `flow.key`.
pub struct Parsed {
    /// TCP/UDP: the frame's flow. An ICMP error: the quoted datagram's 5-tuple as it
    /// travelled, in the key's fields (flags empty).
    flow: Flow,
    /// Whether this is an ICMP error (see `flow`).
    icmp_error: bool,
    family: Family,
    /// Network header length: IPv4 at least 20 (at most 60); IPv6 40 and every extension
    /// header walked over (at most six of 2048 bytes), so the transport header starts right
    /// after it. Within `l3_len`.
    l3_header_len: u16,
    /// Network packet length (IPv4 total length; IPv6 40 + payload length, up to 65575),
    /// within the frame from [`Parsed::l3_at`].
    l3_len: u32,
}

impl Parsed {
    /// The network layer's address family.
    #[inline]
    pub const fn family(&self) -> Family {
        self.family
    }

    /// Offset of the network (IP) header in the frame.
    #[inline]
    pub const fn l3_at(&self) -> usize {
        // Untagged Ethernet only.
        ethernet::HEADER_LEN
    }

    /// Length of the network header (for IPv6 with its extension headers).
    #[inline]
    pub const fn l3_header_len(&self) -> usize {
        self.l3_header_len as usize
    }

    /// Length of the network packet (header and payload; Ethernet padding excluded).
    #[inline]
    pub const fn l3_len(&self) -> usize {
        self.l3_len as usize
    }

    /// Offset of the transport (TCP, UDP or ICMP) header in the frame.
    #[inline]
    pub const fn l4_at(&self) -> usize {
        self.l3_at() + self.l3_header_len()
    }

    /// The transport layer: a flow, or an ICMP error and the flow it quotes.
    #[inline]
    pub const fn transport(&self) -> Transport {
        if self.icmp_error {
            Transport::IcmpError(self.quoted())
        } else {
            Transport::Flow(self.flow)
        }
    }

    /// The TCP/UDP flow, borrowed (the per-frame path); `None` for an ICMP error.
    #[inline]
    pub const fn flow(&self) -> Option<&Flow> {
        if self.icmp_error {
            None
        } else {
            Some(&self.flow)
        }
    }

    /// The flow an ICMP error quotes (meaningful only for one: see [`Parsed::flow`]).
    #[inline]
    pub const fn quoted(&self) -> QuotedFlow {
        let key = &self.flow.key;
        QuotedFlow {
            src_addr: key.src_addr,
            dst_addr: key.dst_addr,
            src_port: key.src_port,
            dst_port: key.dst_port,
            protocol: key.protocol,
        }
    }

    /// A parsed frame of `family` whose network header is `l3_header_len` bytes of an
    /// `l3_len`-byte packet (both bounded by the frame, so the narrowing is exact).
    #[inline(always)]
    fn new(family: Family, l3_header_len: usize, l3_len: usize, transport: Transport) -> Self {
        let (flow, icmp_error) = match transport {
            Transport::Flow(flow) => (flow, false),
            Transport::IcmpError(quoted) => (
                Flow {
                    key: FlowKey {
                        src_addr: quoted.src_addr,
                        dst_addr: quoted.dst_addr,
                        src_port: quoted.src_port,
                        dst_port: quoted.dst_port,
                        protocol: quoted.protocol,
                    },
                    flags: TcpFlags::default(),
                },
                true,
            ),
        };
        Parsed {
            flow,
            icmp_error,
            family,
            l3_header_len: l3_header_len as u16,
            l3_len: l3_len as u32,
        }
    }

    /// The IPv4 header view of `frame` (the frame this was parsed from), without checking it
    /// again: its fixed fields are in bounds; `None` if the frame is too short, which only
    /// another frame can be, or if this is not IPv4.
    #[inline]
    pub fn ipv4<'a>(&self, frame: &'a [u8]) -> Option<Ipv4Packet<&'a [u8]>> {
        if self.family != Family::Ipv4 {
            return None;
        }
        frame
            .get(self.l3_at()..self.l3_at() + self.l3_len())
            .map(Ipv4Packet::new_unchecked)
    }

    /// The IPv6 header view of `frame`, as [`Parsed::ipv4`] for IPv4.
    #[inline]
    pub fn ipv6<'a>(&self, frame: &'a [u8]) -> Option<Ipv6Packet<&'a [u8]>> {
        if self.family != Family::Ipv6 {
            return None;
        }
        frame
            .get(self.l3_at()..self.l3_at() + self.l3_len())
            .map(Ipv6Packet::new_unchecked)
    }
}

/// Parses the headers the pipeline needs, or names why the frame cannot be served.
#[inline]
pub fn classify(frame: &[u8]) -> Result<Parsed, DropReason> {
    match ethertype_of(frame)? {
        EtherType::IPV4 => classify_ipv4(frame),
        EtherType::IPV6 => classify_ipv6(frame),
        _ => Err(DropReason::NotIp),
    }
}

#[inline]
fn classify_ipv4(frame: &[u8]) -> Result<Parsed, DropReason> {
    let ip = ipv4_packet(frame)?;
    let l3_header_len = usize::from(ip.header_len());
    if l3_header_len > ipv4::HEADER_LEN {
        return Err(DropReason::Ipv4Options);
    }
    if ip.is_fragment() {
        return Err(DropReason::Fragment);
    }
    let transport = if ip.protocol() == ipv4::protocol::ICMP {
        Transport::IcmpError(icmp_error(&ip)?)
    } else {
        Transport::Flow(flow(
            ip.protocol(),
            FlowAddr::v4(ip.src_addr()),
            FlowAddr::v4(ip.dst_addr()),
            ip.payload(),
        )?)
    };
    Ok(Parsed::new(
        Family::Ipv4,
        l3_header_len,
        usize::from(ip.total_len()),
        transport,
    ))
}

#[inline]
fn classify_ipv6(frame: &[u8]) -> Result<Parsed, DropReason> {
    let ip = ipv6_packet(frame)?;
    let (protocol, l3_header_len) = walk_extension_headers(&ip)?;
    let l3_len = ipv6::HEADER_LEN + usize::from(ip.payload_len());
    // The walk stayed inside the payload, so this is in bounds.
    let l4 = ip
        .payload()
        .get(l3_header_len - ipv6::HEADER_LEN..)
        .unwrap_or_default();
    let transport = if protocol == ipv6::next_header::ICMPV6 {
        Transport::IcmpError(icmpv6_error(l4)?)
    } else {
        let (src, dst) = (FlowAddr::v6(ip.src_addr()), FlowAddr::v6(ip.dst_addr()));
        if src.is_ipv4() || dst.is_ipv4() {
            return Err(DropReason::Ipv6MappedAddress);
        }
        Transport::Flow(flow(protocol, src, dst, l4)?)
    };
    Ok(Parsed::new(Family::Ipv6, l3_header_len, l3_len, transport))
}

/// Walks a checked IPv6 packet's extension headers (at most [`IPV6_MAX_EXTENSION_HEADERS`])
/// to the upper-layer protocol, returning it and the length of the fixed header plus the
/// chain. A fragment header ends the walk as [`DropReason::Fragment`] (no ports in later
/// fragments; Katran passes them too), a jumbogram (payload length 0 with hop-by-hop options,
/// RFC 2675) as [`DropReason::Ipv6Jumbogram`].
#[inline]
pub(crate) fn walk_extension_headers(ip: &Ipv6Packet<&[u8]>) -> Result<(u8, usize), DropReason> {
    let mut next = ip.next_header();
    if next == ipv6::next_header::HOP_BY_HOP && ip.payload_len() == 0 {
        return Err(DropReason::Ipv6Jumbogram);
    }
    let payload = ip.payload();
    let mut at = 0;
    for _ in 0..IPV6_MAX_EXTENSION_HEADERS {
        if !ipv6::is_walkable_extension(next) {
            break;
        }
        let rest = payload.get(at..).unwrap_or_default();
        let (following, len) =
            ipv6::extension_header(rest).map_err(|_| DropReason::Ipv6ExtensionTruncated)?;
        next = following;
        at += len;
    }
    if ipv6::is_walkable_extension(next) {
        return Err(DropReason::Ipv6ExtensionChain);
    }
    if next == ipv6::next_header::FRAGMENT {
        return Err(DropReason::Fragment);
    }
    Ok((next, ipv6::HEADER_LEN + at))
}

/// The flow key of a TCP/UDP frame, for the worker's look-ahead ([`crate::Pipeline::prefetch`]):
/// only as much parsing as finding the key takes (no ICMP quote, no option or fragment
/// verdicts, no IPv6 extension headers). A hint, never a verdict: [`classify`] still decides,
/// once, when the frame is processed.
#[inline]
pub fn flow_key_hint(frame: &[u8]) -> Option<FlowKey> {
    match ethertype_of(frame).ok()? {
        EtherType::IPV4 => {
            let ip = ipv4_packet(frame).ok()?;
            if ip.is_fragment() || ip.protocol() == ipv4::protocol::ICMP {
                return None;
            }
            let (src, dst) = (FlowAddr::v4(ip.src_addr()), FlowAddr::v4(ip.dst_addr()));
            flow(ip.protocol(), src, dst, ip.payload())
                .ok()
                .map(|flow| flow.key)
        }
        EtherType::IPV6 => {
            let ip = ipv6_packet(frame).ok()?;
            let (src, dst) = (FlowAddr::v6(ip.src_addr()), FlowAddr::v6(ip.dst_addr()));
            flow(ip.next_header(), src, dst, ip.payload())
                .ok()
                .map(|flow| flow.key)
        }
        _ => None,
    }
}

/// The TCP/UDP flow of a packet whose upper-layer `protocol` starts at `l4`. Always inlined:
/// out of line (LLVM's choice flips with unrelated code in the crate) it cost an IPv4 frame
/// about 55 instructions, its result moved through memory.
#[inline(always)]
fn flow(
    protocol: u8,
    src_addr: FlowAddr,
    dst_addr: FlowAddr,
    l4: &[u8],
) -> Result<Flow, DropReason> {
    let protocol = Protocol::from_number(protocol).ok_or(DropReason::UnsupportedProtocol)?;
    // A TCP data offset below 5 claims a header shorter than TCP's: truncated as well.
    let (src_port, dst_port, flags) = match protocol {
        Protocol::Tcp => {
            let tcp = TcpSegment::new_checked(l4).map_err(|_| DropReason::Truncated)?;
            (tcp.src_port(), tcp.dst_port(), tcp.flags())
        }
        Protocol::Udp => {
            let udp = UdpDatagram::new_checked(l4).map_err(|_| DropReason::Truncated)?;
            (udp.src_port(), udp.dst_port(), TcpFlags::default())
        }
    };
    Ok(Flow {
        key: FlowKey {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            protocol,
        },
        flags,
    })
}

/// The flow an ICMP message (a checked, unfragmented IPv4 packet of protocol ICMP) quotes, if it
/// is an error we translate: destination unreachable or time exceeded quoting TCP or UDP (other
/// ICMP -> `UnsupportedProtocol`, a short message or quote -> `Truncated`, a quote whose IPv4
/// header is malformed -> `BadIhl`).
#[inline]
pub(crate) fn icmp_error(ip: &Ipv4Packet<&[u8]>) -> Result<QuotedFlow, DropReason> {
    let icmp = Icmpv4Packet::new_checked(ip.payload()).map_err(|_| DropReason::Truncated)?;
    if !icmp.is_error() {
        return Err(DropReason::UnsupportedProtocol);
    }
    let quote = IcmpQuote::new_checked(icmp.data()).map_err(|error| match error {
        wire::Error::Truncated => DropReason::Truncated,
        wire::Error::Malformed => DropReason::BadIhl,
    })?;
    let protocol =
        Protocol::from_number(quote.protocol()).ok_or(DropReason::UnsupportedProtocol)?;
    Ok(QuotedFlow {
        src_addr: FlowAddr::v4(quote.src_addr()),
        dst_addr: FlowAddr::v4(quote.dst_addr()),
        src_port: quote.src_port(),
        dst_port: quote.dst_port(),
        protocol,
    })
}

/// The flow an ICMPv6 message (starting at `icmp`) quotes, if it is an error we translate
/// (destination unreachable, packet too big, time exceeded) quoting a TCP or UDP packet without
/// extension headers. Informational messages (neighbour discovery, echo) and other errors are
/// `UnsupportedProtocol`: the kernel's (the XDP classifier passes them); a short message or
/// quote is `IcmpQuoteTruncated`, a quote that is not IPv6 `IpVersionMismatch`.
#[inline]
pub(crate) fn icmpv6_error(icmp: &[u8]) -> Result<QuotedFlow, DropReason> {
    let icmp = Icmpv6Packet::new_checked(icmp).map_err(|_| DropReason::Truncated)?;
    if !icmp.is_translated_error() {
        return Err(DropReason::UnsupportedProtocol);
    }
    let quote = Ipv6Quote::new_checked(icmp.data()).map_err(|error| match error {
        wire::Error::Truncated => DropReason::IcmpQuoteTruncated,
        wire::Error::Malformed => DropReason::IpVersionMismatch,
    })?;
    let protocol =
        Protocol::from_number(quote.next_header()).ok_or(DropReason::UnsupportedProtocol)?;
    let (src_addr, dst_addr) = (
        FlowAddr::v6(quote.src_addr()),
        FlowAddr::v6(quote.dst_addr()),
    );
    if src_addr.is_ipv4() || dst_addr.is_ipv4() {
        return Err(DropReason::Ipv6MappedAddress);
    }
    Ok(QuotedFlow {
        src_addr,
        dst_addr,
        src_port: quote.src_port(),
        dst_port: quote.dst_port(),
        protocol,
    })
}

/// The frame's EtherType, untagged Ethernet only.
#[inline]
fn ethertype_of(frame: &[u8]) -> Result<EtherType, DropReason> {
    let ethernet = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Truncated)?;
    let ethertype = ethernet.ethertype();
    if ethertype.is_vlan_tag() {
        return Err(DropReason::VlanTagged);
    }
    Ok(ethertype)
}

/// The IP version nibble of the packet after the Ethernet header, if there is a byte of it.
#[inline]
fn ip_version(frame: &[u8]) -> Option<u8> {
    frame.get(ethernet::HEADER_LEN).map(|byte| byte >> 4)
}

/// Checks that `frame` is untagged Ethernet carrying a whole IPv4 packet (options allowed) and
/// returns that packet's view, naming the first failure as the pipeline counts it.
#[inline]
pub(crate) fn ipv4_of(frame: &[u8]) -> Result<Ipv4Packet<&[u8]>, DropReason> {
    match ethertype_of(frame)? {
        EtherType::IPV4 => ipv4_packet(frame),
        _ => Err(DropReason::NotIp),
    }
}

/// The IPv4 packet of a frame whose EtherType says IPv4.
#[inline]
fn ipv4_packet(frame: &[u8]) -> Result<Ipv4Packet<&[u8]>, DropReason> {
    if ip_version(frame) == Some(6) {
        return Err(DropReason::IpVersionMismatch);
    }
    Ipv4Packet::new_checked(&frame[ethernet::HEADER_LEN..]).map_err(|error| match error {
        wire::Error::Truncated => DropReason::Truncated,
        wire::Error::Malformed => DropReason::BadIhl,
    })
}

/// The IPv6 packet of a frame whose EtherType says IPv6: a version other than 6 is
/// `IpVersionMismatch`, a payload length beyond the frame `Ipv6PayloadLength`.
#[inline]
fn ipv6_packet(frame: &[u8]) -> Result<Ipv6Packet<&[u8]>, DropReason> {
    Ipv6Packet::new_checked(&frame[ethernet::HEADER_LEN..]).map_err(|error| match error {
        wire::Error::Truncated if frame.len() >= ethernet::HEADER_LEN + ipv6::HEADER_LEN => {
            DropReason::Ipv6PayloadLength
        }
        wire::Error::Truncated => DropReason::Truncated,
        wire::Error::Malformed => DropReason::IpVersionMismatch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FrameBuilder;

    #[test]
    fn a_flow_is_parsed_with_its_offsets() {
        let frame = FrameBuilder::tcp()
            .src("203.0.113.7:40000")
            .dst("192.0.2.10:80")
            .syn()
            .payload(&[1, 2, 3])
            .build();
        let parsed = classify(&frame).unwrap();
        assert_eq!(parsed.family(), Family::Ipv4);
        assert_eq!(parsed.l3_at(), ethernet::HEADER_LEN);
        assert_eq!(parsed.l3_header_len(), ipv4::HEADER_LEN);
        assert_eq!(parsed.l3_len(), 20 + 20 + 3);
        assert_eq!(parsed.l4_at(), ethernet::HEADER_LEN + ipv4::HEADER_LEN);
        assert_eq!(
            parsed.transport(),
            Transport::Flow(Flow {
                key: FlowKey {
                    src_addr: "203.0.113.7".parse().unwrap(),
                    dst_addr: "192.0.2.10".parse().unwrap(),
                    src_port: 40000,
                    dst_port: 80,
                    protocol: Protocol::Tcp,
                },
                flags: TcpFlags::SYN,
            })
        );
    }
}
