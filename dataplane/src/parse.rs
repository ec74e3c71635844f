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

use std::net::Ipv4Addr;

use crate::conntrack::FlowKey;
use crate::counters::DropReason;
use crate::service::Protocol;
use crate::wire::{
    self, ethernet, ipv4, EtherType, EthernetFrame, IcmpQuote, Icmpv4Packet, Ipv4Packet, TcpFlags,
    TcpSegment, UdpDatagram,
};

/// The network layer's address family. Only IPv4 is parsed today; IPv6 gets a variant here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (EtherType 0x0800).
    Ipv4,
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
    pub src_addr: Ipv4Addr,
    /// Quoted destination address.
    pub dst_addr: Ipv4Addr,
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

/// What the transport layer of a classified frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP or UDP with a whole header.
    Flow(Flow),
    /// An ICMP error (destination unreachable, time exceeded) quoting a TCP or UDP datagram's
    /// header and ports.
    IcmpError(QuotedFlow),
}

/// A frame [`classify`] accepted: what it learned, so no later stage parses again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    family: Family,
    /// Offset of the network header in the frame.
    l3_at: usize,
    /// Network header length (at least 20, within `l3_len`).
    l3_header_len: usize,
    /// Network packet length (IPv4 total length), within the frame from `l3_at`.
    l3_len: usize,
    transport: Transport,
}

impl Parsed {
    /// The network layer's address family.
    #[inline]
    pub const fn family(&self) -> Family {
        self.family
    }

    /// Offset of the network (IPv4) header in the frame.
    #[inline]
    pub const fn l3_at(&self) -> usize {
        self.l3_at
    }

    /// Length of the network header.
    #[inline]
    pub const fn l3_header_len(&self) -> usize {
        self.l3_header_len
    }

    /// Length of the network packet (header and payload; Ethernet padding excluded).
    #[inline]
    pub const fn l3_len(&self) -> usize {
        self.l3_len
    }

    /// Offset of the transport (TCP, UDP or ICMP) header in the frame.
    #[inline]
    pub const fn l4_at(&self) -> usize {
        self.l3_at + self.l3_header_len
    }

    /// The transport layer: a flow, or an ICMP error and the flow it quotes.
    #[inline]
    pub const fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The IPv4 header view of `frame` (the frame this was parsed from), without checking it
    /// again: its fixed fields are in bounds; `None` if the frame is too short, which only
    /// another frame can be.
    #[inline]
    pub fn ipv4<'a>(&self, frame: &'a [u8]) -> Option<Ipv4Packet<&'a [u8]>> {
        frame
            .get(self.l3_at..self.l3_at + self.l3_len)
            .map(Ipv4Packet::new_unchecked)
    }
}

/// Parses the headers the pipeline needs, or names why the frame cannot be served.
#[inline]
pub fn classify(frame: &[u8]) -> Result<Parsed, DropReason> {
    let ip = ipv4_of(frame)?;
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
        Transport::Flow(flow(&ip)?)
    };
    Ok(Parsed {
        family: Family::Ipv4,
        l3_at: ethernet::HEADER_LEN,
        l3_header_len,
        l3_len: usize::from(ip.total_len()),
        transport,
    })
}

/// The flow key of a TCP/UDP frame, for the worker's look-ahead ([`crate::Pipeline::prefetch`]):
/// only as much parsing as finding the key takes (no ICMP quote, no option or fragment
/// verdicts). A hint, never a verdict: [`classify`] still decides, once, when the frame is
/// processed.
#[inline]
pub fn flow_key_hint(frame: &[u8]) -> Option<FlowKey> {
    let ip = ipv4_of(frame).ok()?;
    if ip.is_fragment() || ip.protocol() == ipv4::protocol::ICMP {
        return None;
    }
    flow(&ip).ok().map(|flow| flow.key)
}

/// The TCP/UDP flow of a checked IPv4 packet.
#[inline]
fn flow(ip: &Ipv4Packet<&[u8]>) -> Result<Flow, DropReason> {
    let protocol = Protocol::from_number(ip.protocol()).ok_or(DropReason::UnsupportedProtocol)?;
    // A TCP data offset below 5 claims a header shorter than TCP's: truncated as well.
    let (src_port, dst_port, flags) = match protocol {
        Protocol::Tcp => {
            let tcp = TcpSegment::new_checked(ip.payload()).map_err(|_| DropReason::Truncated)?;
            (tcp.src_port(), tcp.dst_port(), tcp.flags())
        }
        Protocol::Udp => {
            let udp = UdpDatagram::new_checked(ip.payload()).map_err(|_| DropReason::Truncated)?;
            (udp.src_port(), udp.dst_port(), TcpFlags::default())
        }
    };
    Ok(Flow {
        key: FlowKey {
            src_addr: ip.src_addr(),
            dst_addr: ip.dst_addr(),
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
        src_addr: quote.src_addr(),
        dst_addr: quote.dst_addr(),
        src_port: quote.src_port(),
        dst_port: quote.dst_port(),
        protocol,
    })
}

/// Checks that `frame` is untagged Ethernet carrying a whole IPv4 packet (options allowed) and
/// returns that packet's view, naming the first failure as the pipeline counts it.
#[inline]
pub(crate) fn ipv4_of(frame: &[u8]) -> Result<Ipv4Packet<&[u8]>, DropReason> {
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
            *parsed.transport(),
            Transport::Flow(Flow {
                key: FlowKey {
                    src_addr: Ipv4Addr::new(203, 0, 113, 7),
                    dst_addr: Ipv4Addr::new(192, 0, 2, 10),
                    src_port: 40000,
                    dst_port: 80,
                    protocol: Protocol::Tcp,
                },
                flags: TcpFlags::SYN,
            })
        );
    }
}
