//! Frame templates: IPv4 UDP, TCP SYN and TCP ACK frames for N flows, with correct checksums.
//!
//! A [`FrameSpec`] names everything about the traffic: the kind, the frame size, the MACs, the
//! destination, and the flows. Flow `i` comes from source address number `i % hosts` of
//! [`FrameSpec::src_net`] (the network and broadcast addresses skipped) and source port
//! `src_port + i / hosts`, so that flows spread over both the addresses (for source-hashing
//! schedulers) and the ports.
//!
//! [`FrameSpec::frame`] builds the whole frame of one flow from scratch with the data plane's
//! wire views (checksums computed over every byte). The generator needs only flow 0's frame, the
//! template, and per flow the fields that differ ([`FrameSpec::flow_fields`]: source address,
//! source port and both checksums, derived incrementally, RFC 1624), which its XDP program
//! writes into each frame. The tests hold the two derivations to each other.
//!
//! Frames are untagged Ethernet, IPv4 without options (DF set, TTL 64, ident 0), and UDP or
//! TCP without options; the payload is zeros, the first [`abi::STAMP_LEN`] bytes of it reserved
//! for the latency stamp.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use dataplane::wire::checksum;
use dataplane::wire::ipv4::protocol;
use dataplane::wire::{
    EtherType, EthernetFrame, Ipv4Packet, MacAddr, TcpFlags, TcpSegment, UdpDatagram,
};

use crate::abi::{self, FlowAbi};

/// Smallest frame: the headers the generator writes and the stamp (62 bytes, no FCS).
pub const MIN_FRAME: usize = abi::HEADER_COPY + abi::STAMP_LEN;
/// Largest frame: a 1500-byte IPv4 packet in Ethernet (veth drops anything above its MTU).
pub const MAX_FRAME: usize = 1514;
/// Most flows one run can cycle through.
pub const MAX_FLOWS: u32 = 1 << 20;

/// TCP sequence number of the SYN; the ACK carries the next one.
const SYN_SEQ: u32 = 1_000_000;
/// TCP acknowledgment number of the ACK (the server's ISN + 1, as if it had answered).
const ACK_NUMBER: u32 = 2_000_001;
/// The window Linux advertises in a SYN on Ethernet (as the data plane's fixtures do).
const TCP_WINDOW: u16 = 64_240;
const TTL: u8 = 64;
const ETHERNET_HEADER: usize = 14;

/// What each frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// A UDP datagram.
    Udp,
    /// A TCP SYN: a new connection for a load balancer.
    TcpSyn,
    /// A TCP ACK: a segment of an established connection.
    TcpAck,
}

impl FrameKind {
    /// Whether the frame is TCP.
    pub fn is_tcp(self) -> bool {
        !matches!(self, FrameKind::Udp)
    }

    /// Offset of the L4 checksum in the frame.
    pub fn l4_check_offset(self) -> usize {
        if self.is_tcp() {
            abi::OFF_TCP_CHECK
        } else {
            abi::OFF_UDP_CHECK
        }
    }

    /// Offset of the L4 payload (and the stamp) in the frame.
    pub fn payload_offset(self) -> usize {
        if self.is_tcp() {
            abi::OFF_TCP_PAYLOAD
        } else {
            abi::OFF_UDP_PAYLOAD
        }
    }
}

/// An IPv4 network the source addresses come from, `a.b.c.d/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl Ipv4Net {
    /// How many source addresses it gives: all but the network and broadcast addresses up to
    /// /30, both of a /31, the one of a /32.
    pub fn hosts(self) -> u32 {
        match self.prefix {
            32 => 1,
            31 => 2,
            prefix => (1u32 << (32 - u32::from(prefix))) - 2,
        }
    }

    /// Source address number `index` (modulo [`Ipv4Net::hosts`]).
    pub fn host(self, index: u32) -> Ipv4Addr {
        let first = u32::from(self.network) + u32::from(self.prefix <= 30);
        Ipv4Addr::from(first + index % self.hosts())
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = text.split_once('/').unwrap_or((text, "32"));
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{text:?}: not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|&prefix| prefix <= 32)
            .ok_or_else(|| format!("{text:?}: prefix length must be 0..=32"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            return Err(format!(
                "{text:?}: host bits are set (the network is {}/{prefix})",
                Ipv4Addr::from(u32::from(addr) & mask)
            ));
        }
        Ok(Ipv4Net {
            network: addr,
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Why a [`FrameSpec`] cannot be built.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame size is out of range.
    #[error("frame size {0} bytes: must be {MIN_FRAME}..={MAX_FRAME} (Ethernet without FCS; the headers and the 8-byte stamp must fit)")]
    Size(usize),
    /// The flow count is out of range.
    #[error("{0} flows: must be 1..={MAX_FLOWS}")]
    Flows(u32),
    /// The flows need more source ports than there are above `src_port`.
    #[error("{flows} flows over {hosts} source addresses need ports {src_port}..={last}, beyond 65535: use a larger source network or a lower first port")]
    Ports {
        /// Flows asked for.
        flows: u32,
        /// Source addresses available.
        hosts: u32,
        /// The first source port.
        src_port: u16,
        /// The last port the flows would need.
        last: u64,
    },
}

/// The traffic to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// What each frame carries.
    pub kind: FrameKind,
    /// Frame length in bytes (Ethernet header included, FCS excluded).
    pub size: usize,
    /// Ethernet source.
    pub src_mac: MacAddr,
    /// Ethernet destination (the director's interface, or the sink's).
    pub dst_mac: MacAddr,
    /// Where the flows' source addresses come from.
    pub src_net: Ipv4Net,
    /// The first source port.
    pub src_port: u16,
    /// The destination (a VIP and port).
    pub dst: SocketAddrV4,
    /// Distinct flows, sent in turn.
    pub flows: u32,
}

impl FrameSpec {
    /// Checks the sizes and that every flow has a source port.
    pub fn validate(&self) -> Result<(), FrameError> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&self.size) {
            return Err(FrameError::Size(self.size));
        }
        if !(1..=MAX_FLOWS).contains(&self.flows) {
            return Err(FrameError::Flows(self.flows));
        }
        let hosts = self.src_net.hosts();
        let last = u64::from(self.src_port) + u64::from((self.flows - 1) / hosts);
        if last > u64::from(u16::MAX) {
            return Err(FrameError::Ports {
                flows: self.flows,
                hosts,
                src_port: self.src_port,
                last,
            });
        }
        Ok(())
    }

    /// Flow `flow`'s source address and port. Call [`FrameSpec::validate`] first: the port
    /// wraps past 65535.
    pub fn flow_source(&self, flow: u32) -> SocketAddrV4 {
        let hosts = self.src_net.hosts();
        let port = u32::from(self.src_port) + flow / hosts;
        SocketAddrV4::new(self.src_net.host(flow), port as u16)
    }

    /// The whole frame of flow `flow`, every checksum computed from scratch, the stamp area
    /// zero. Call [`FrameSpec::validate`] first: an out-of-range size panics.
    pub fn frame(&self, flow: u32) -> Vec<u8> {
        let source = self.flow_source(flow);
        let mut frame = vec![0; self.size];
        let mut ethernet = EthernetFrame::new_unchecked(&mut frame[..]);
        ethernet.set_dst_addr(self.dst_mac);
        ethernet.set_src_addr(self.src_mac);
        ethernet.set_ethertype(EtherType::IPV4);

        let ip_len = (self.size - ETHERNET_HEADER) as u16;
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETHERNET_HEADER..]);
        ip.set_version_and_header_len(4, 20);
        ip.set_tos(0);
        ip.set_total_len(ip_len);
        ip.set_ident(0);
        ip.set_fragment(true, false, 0);
        ip.set_ttl(TTL);
        ip.set_protocol(if self.kind.is_tcp() {
            protocol::TCP
        } else {
            protocol::UDP
        });
        ip.set_src_addr(*source.ip());
        ip.set_dst_addr(*self.dst.ip());
        ip.fill_checksum();

        let l4 = &mut frame[abi::OFF_L4..];
        match self.kind {
            FrameKind::Udp => {
                let mut udp = UdpDatagram::new_unchecked(l4);
                udp.set_src_port(source.port());
                udp.set_dst_port(self.dst.port());
                udp.set_len(ip_len - 20);
                udp.fill_checksum(*source.ip(), *self.dst.ip());
            }
            FrameKind::TcpSyn | FrameKind::TcpAck => {
                let mut tcp = TcpSegment::new_unchecked(l4);
                tcp.set_src_port(source.port());
                tcp.set_dst_port(self.dst.port());
                tcp.set_header_len(20);
                if self.kind == FrameKind::TcpSyn {
                    tcp.set_seq_number(SYN_SEQ);
                    tcp.set_ack_number(0);
                    tcp.set_flags(TcpFlags::SYN);
                } else {
                    tcp.set_seq_number(SYN_SEQ + 1);
                    tcp.set_ack_number(ACK_NUMBER);
                    tcp.set_flags(TcpFlags::ACK);
                }
                tcp.set_window_len(TCP_WINDOW);
                tcp.set_urgent_at(0);
                tcp.fill_checksum(*source.ip(), *self.dst.ip());
            }
        }
        frame
    }

    /// The frame the generator starts from: flow 0's.
    pub fn template(&self) -> Vec<u8> {
        self.frame(0)
    }

    /// Flow `flow`'s fields for the generator, derived from `template` (flow 0's frame) by
    /// incremental checksum updates (RFC 1624), as [`FrameSpec::frame`]`(flow)` has them.
    pub fn flow_fields(&self, template: &[u8], flow: u32) -> FlowAbi {
        let source = self.flow_source(flow);
        let read16 = |offset: usize| u16::from_be_bytes([template[offset], template[offset + 1]]);
        let old_addr = u32::from_be_bytes([
            template[abi::OFF_IP_SADDR],
            template[abi::OFF_IP_SADDR + 1],
            template[abi::OFF_IP_SADDR + 2],
            template[abi::OFF_IP_SADDR + 3],
        ]);
        let new_addr = u32::from(*source.ip());
        let old_port = read16(abi::OFF_L4);
        let new_port = source.port();
        let ip_check = checksum::update32(read16(abi::OFF_IP_CHECK), old_addr, new_addr);
        let l4_template = read16(self.kind.l4_check_offset());
        let l4_check = if self.kind.is_tcp() {
            let check = checksum::update32(l4_template, old_addr, new_addr);
            checksum::update16(check, old_port, new_port)
        } else {
            let check = checksum::udp_update32(l4_template, old_addr, new_addr);
            checksum::udp_update16(check, old_port, new_port)
        };
        FlowAbi {
            saddr: source.ip().octets(),
            sport: new_port.to_be_bytes(),
            ip_check: ip_check.to_be_bytes(),
            l4_check: l4_check.to_be_bytes(),
            pad: [0; 2],
        }
    }

    /// Every flow's fields, in flow order.
    pub fn flow_table(&self, template: &[u8]) -> Vec<FlowAbi> {
        (0..self.flows)
            .map(|flow| self.flow_fields(template, flow))
            .collect()
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<MacAddr, String> {
    let mut mac = [0; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .ok_or_else(|| format!("{text:?}: a MAC address has six bytes"))?;
        if part.is_empty() || part.len() > 2 {
            return Err(format!("{text:?}: not a MAC address"));
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| format!("{text:?}: not a MAC address"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{text:?}: a MAC address has six bytes"));
    }
    Ok(mac)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: MacAddr) -> String {
    let parts: Vec<String> = mac.iter().map(|byte| format!("{byte:02x}")).collect();
    parts.join(":")
}
