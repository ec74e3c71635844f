//! Test support: a readable frame builder, service-table helpers and a field-level frame diff.
//!
//! Shared by unit tests, `tests/`, benches and fuzz seeds so they all speak the same fixtures.
//! Not part of the data plane: it allocates and panics on bad input (it is for tests). Hidden
//! from the docs; nothing in the hot path uses it.
//!
//! ```
//! use dataplane::testing::FrameBuilder;
//! let syn = FrameBuilder::tcp().src("192.0.2.2:40000").dst("192.0.2.10:80").syn().build();
//! assert_eq!(syn.len(), 60); // padded to the Ethernet minimum
//! ```

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::conntrack::ConnTable;
use crate::counters::{backend_counter_block, BackendCounters};
use crate::pipeline::{Pipeline, Verdict};
use crate::service::{
    Backend, Forwarding, Interface, Interfaces, Persistence, Protocol, Service, ServiceKey,
    ServiceTable, Timeouts,
};
use crate::wire::{
    ethernet, ipv4, tcp, udp, EtherType, EthernetFrame, IcmpQuote, Ipv4Packet, MacAddr, TcpFlags,
    TcpSegment, UdpDatagram,
};
use crate::WorkerCounters;

/// The director's interface MAC in fixtures.
pub const DIRECTOR_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x0a];
/// The upstream router's MAC: the source of client frames in fixtures.
pub const ROUTER_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];

/// The director's server-side interface MAC in fixtures (NAT: frames to real servers leave
/// from it).
pub const SERVER_SIDE_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x0b];
/// The director's client-side address in fixtures (the outer source of tunnelled frames).
pub const CLIENT_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The director's server-side address in fixtures (the NAT real servers' gateway).
pub const SERVER_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
/// Headroom in front of received frames in fixtures, as AF_XDP leaves it (at least 256).
pub const UMEM_HEADROOM: usize = 256;
/// Size of a fixture UMEM chunk.
pub const CHUNK_SIZE: usize = 4096;

/// The fixture interfaces: client side [`DIRECTOR_MAC`], [`CLIENT_SIDE_ADDR`], next hop
/// [`ROUTER_MAC`]; server side [`SERVER_SIDE_MAC`], [`SERVER_SIDE_ADDR`]; MTU `mtu` on both.
pub fn interfaces(mtu: u16) -> Interfaces {
    Interfaces {
        client: Interface {
            mac: DIRECTOR_MAC,
            address: CLIENT_SIDE_ADDR,
            mtu,
            next_hop_mac: Some(ROUTER_MAC),
        },
        server: Interface {
            mac: SERVER_SIDE_MAC,
            address: SERVER_SIDE_ADDR,
            mtu,
            next_hop_mac: None,
        },
    }
}

/// `frame` at [`UMEM_HEADROOM`] in a [`CHUNK_SIZE`]-byte chunk filled with `0xee`.
pub fn in_chunk(frame: &[u8]) -> Vec<u8> {
    let mut chunk = vec![0xee; CHUNK_SIZE.max(UMEM_HEADROOM + frame.len())];
    chunk[UMEM_HEADROOM..UMEM_HEADROOM + frame.len()].copy_from_slice(frame);
    chunk
}

/// An ICMP error from `src` to `dst` (addresses as `"a.b.c.d:0"`) of `msg_type`/`code`, with
/// `rest` as the header's last four bytes (e.g. the next-hop MTU), quoting `quote`.
pub fn icmp_error(
    src: &str,
    dst: &str,
    msg_type: u8,
    code: u8,
    rest: u32,
    quote: &[u8],
) -> FrameBuilder {
    FrameBuilder::icmp()
        .src(src)
        .dst(dst)
        .icmp_header(msg_type, code, rest)
        .payload(quote)
}

/// Runs `frame` through `pipeline` as a worker does: in a UMEM-like chunk ([`in_chunk`]).
/// Returns the verdict and the frame to transmit, or for a drop the frame where it was, having
/// checked that the drop left the chunk untouched.
#[track_caller]
pub fn run(
    pipeline: &mut Pipeline,
    frame: &[u8],
    table: &ServiceTable,
    now: std::time::Instant,
    counters: &WorkerCounters,
) -> (Verdict, Vec<u8>) {
    let before = in_chunk(frame);
    let mut chunk = before.clone();
    let verdict = pipeline.process(&mut chunk, UMEM_HEADROOM, frame.len(), table, now, counters);
    match verdict {
        Verdict::Tx { start, len, .. } => (verdict, chunk[start..start + len].to_vec()),
        Verdict::Drop(reason) => {
            assert!(
                chunk == before,
                "dropped ({reason:?}) but changed the chunk"
            );
            (verdict, frame.to_vec())
        }
    }
}

/// The MAC fixtures give real server `n` (`02:00:00:00:01:nn`).
pub const fn backend_mac(n: u8) -> MacAddr {
    [0x02, 0, 0, 0, 0x01, n]
}

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

/// A real server for fixtures: `"10.0.0.n"`, its MAC (`None`: unresolved), weight and slot.
pub fn backend(address: &str, mac: Option<MacAddr>, weight: u32, counter_slot: usize) -> Backend {
    Backend {
        address: address
            .parse()
            .unwrap_or_else(|_| panic!("not an IPv4 address: {address:?}")),
        mac,
        weight,
        counter_slot,
        port: 0,
    }
}

/// A service on `"vip:port"` with a real scheduler over `backends` (candidate key: the address).
pub fn service(
    vip_port: &str,
    protocol: Protocol,
    algorithm: scheduler::Algorithm,
    backends: Vec<Backend>,
) -> Service {
    let addr: SocketAddrV4 = vip_port
        .parse()
        .unwrap_or_else(|_| panic!("not an IPv4 socket address: {vip_port:?}"));
    let candidates: Vec<scheduler::Candidate> = backends
        .iter()
        .map(|backend| scheduler::Candidate {
            key: u64::from(u32::from(backend.address)),
            weight: backend.weight,
        })
        .collect();
    let scheduler =
        scheduler::Scheduler::new(algorithm, &candidates, scheduler::DEFAULT_MAGLEV_TABLE_SIZE)
            .unwrap();
    Service {
        name: format!("{}-{vip_port}", protocol.name()),
        key: ServiceKey {
            vip: *addr.ip(),
            port: addr.port(),
            protocol,
        },
        ports: vec![addr.port()],
        persistence: None,
        forwarding: Forwarding::DirectRouting,
        scheduler,
        backends,
    }
}

/// `service` forwarding by `forwarding` (NAT or TUN; [`service`] makes DR ones).
pub fn with_forwarding(mut service: Service, forwarding: Forwarding) -> Service {
    service.forwarding = forwarding;
    service
}

/// `backend` with a NAT port mapping to `port`.
pub fn with_port(mut backend: Backend, port: u16) -> Backend {
    backend.port = port;
    backend
}

/// [`service`] answering on several ports of `vip` (a service group, as an LVS firewall-mark
/// service), the first being `key.port`.
pub fn service_with_ports(
    vip: &str,
    ports: &[u16],
    protocol: Protocol,
    algorithm: scheduler::Algorithm,
    backends: Vec<Backend>,
) -> Service {
    let (&first, _) = ports
        .split_first()
        .unwrap_or_else(|| panic!("a service needs a port"));
    let mut service = service(&format!("{vip}:{first}"), protocol, algorithm, backends);
    service.ports = ports.to_vec();
    service
}

/// `service` with persistence: `timeout_secs`, clients masked with `netmask` (`"a.b.c.d"`), in
/// persistence group `group`.
pub fn with_persistence(
    mut service: Service,
    timeout_secs: u64,
    netmask: &str,
    group: u32,
) -> Service {
    let netmask: Ipv4Addr = netmask
        .parse()
        .unwrap_or_else(|_| panic!("not an IPv4 netmask: {netmask:?}"));
    service.persistence = Some(Persistence {
        timeout: Duration::from_secs(timeout_secs),
        netmask: u32::from(netmask),
        group,
    });
    service
}

/// Panics unless every backend gauge of `worker` in `table` equals a recount of `connections`:
/// active = TCP established or UDP entries, inactive = other TCP entries, per counter slot.
#[track_caller]
pub fn assert_gauges_match(connections: &ConnTable, table: &ServiceTable, worker: usize) {
    let block = &table.backend_counters[worker];
    let mut recount = vec![(0u64, 0u64); block.len()];
    for (key, connection) in connections.iter() {
        let counts = recount
            .get_mut(connection.counter_slot as usize)
            .unwrap_or_else(|| {
                panic!(
                    "{key:?} counted in slot {} beyond the block",
                    connection.counter_slot
                )
            });
        if connection.state.is_active() {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    let gauges: Vec<(u64, u64)> = block
        .iter()
        .map(|counters| {
            (
                counters.active_connections.load(Ordering::Relaxed),
                counters.inactive_connections.load(Ordering::Relaxed),
            )
        })
        .collect();
    assert_eq!(
        gauges, recount,
        "(active, inactive) gauges per slot differ from a recount of the connection table"
    );
}

/// One counter block per worker, with `slots` backend slots each, to share across generations.
pub fn counter_blocks(workers: usize, slots: usize) -> Vec<Arc<[BackendCounters]>> {
    (0..workers).map(|_| backend_counter_block(slots)).collect()
}

/// A service table with default timeouts.
pub fn table(
    generation: u64,
    services: Vec<Service>,
    counters: Vec<Arc<[BackendCounters]>>,
) -> ServiceTable {
    ServiceTable::new(generation, services, Timeouts::default(), counters)
}

/// A named byte range of a frame.
struct FieldSpan {
    name: String,
    start: usize,
    end: usize,
}

/// The header fields of `frame` (untagged Ethernet, IPv4, TCP/UDP, ICMP with its quote, IP-in-IP
/// with its inner packet), as far as it parses.
fn fields(frame: &[u8]) -> Vec<FieldSpan> {
    let mut spans = Vec::new();
    for (name, start, end) in [("eth.dst", 0, 6), ("eth.src", 6, 12), ("eth.type", 12, 14)] {
        spans.push(FieldSpan {
            name: name.to_owned(),
            start,
            end,
        });
    }
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return spans;
    };
    if eth.ethertype() != EtherType::IPV4 {
        spans.push(FieldSpan {
            name: "eth.payload".to_owned(),
            start: ethernet::HEADER_LEN,
            end: usize::MAX,
        });
        return spans;
    }
    let end = ipv4_fields(&mut spans, "", frame, ethernet::HEADER_LEN, false);
    spans.push(FieldSpan {
        name: "eth.padding".to_owned(),
        start: end,
        end: usize::MAX,
    });
    spans
}

/// The header fields of a transport (or ICMP) header: (name, start, end) from its start.
fn l4_fields(protocol: u8) -> &'static [(&'static str, usize, usize)] {
    match protocol {
        ipv4::protocol::TCP => &[
            ("tcp.src_port", 0, 2),
            ("tcp.dst_port", 2, 4),
            ("tcp.seq", 4, 8),
            ("tcp.ack", 8, 12),
            ("tcp.offset_flags", 12, 14),
            ("tcp.window", 14, 16),
            ("tcp.checksum", 16, 18),
            ("tcp.urgent", 18, 20),
        ],
        ipv4::protocol::UDP => &[
            ("udp.src_port", 0, 2),
            ("udp.dst_port", 2, 4),
            ("udp.len", 4, 6),
            ("udp.checksum", 6, 8),
        ],
        ipv4::protocol::ICMP => &[
            ("icmp.type", 0, 1),
            ("icmp.code", 1, 2),
            ("icmp.checksum", 2, 4),
            ("icmp.rest", 4, 8),
        ],
        _ => &[],
    }
}

/// Adds the fields of the IPv4 packet at `frame[at..]`, names prefixed with `prefix`; returns
/// where the packet ends. `quoted`: an ICMP quote (its total length describes the original).
fn ipv4_fields(
    spans: &mut Vec<FieldSpan>,
    prefix: &str,
    frame: &[u8],
    at: usize,
    quoted: bool,
) -> usize {
    let mut push = |name: &str, start: usize, end: usize| {
        spans.push(FieldSpan {
            name: format!("{prefix}{name}"),
            start,
            end,
        });
    };
    for (name, start, end) in [
        ("ipv4.version_ihl", 0, 1),
        ("ipv4.tos", 1, 2),
        ("ipv4.total_len", 2, 4),
        ("ipv4.ident", 4, 6),
        ("ipv4.flags_frag", 6, 8),
        ("ipv4.ttl", 8, 9),
        ("ipv4.protocol", 9, 10),
        ("ipv4.checksum", 10, 12),
        ("ipv4.src", 12, 16),
        ("ipv4.dst", 16, 20),
    ] {
        push(name, at + start, at + end);
    }
    let bytes = frame.get(at..).unwrap_or(&[]);
    let parsed = if quoted {
        IcmpQuote::new_checked(bytes)
            .ok()
            .map(|quote| (quote.header_len(), bytes.len(), quote.protocol()))
    } else {
        Ipv4Packet::new_checked(bytes).ok().map(|ip| {
            (
                usize::from(ip.header_len()),
                usize::from(ip.total_len()),
                ip.protocol(),
            )
        })
    };
    let Some((header_len, total_len, protocol)) = parsed else {
        push("ipv4.rest", at + ipv4::HEADER_LEN, usize::MAX);
        return frame.len();
    };
    let l4_at = at + header_len;
    let packet_end = at + total_len;
    push("ipv4.options", at + ipv4::HEADER_LEN, l4_at);
    let mut end = l4_at;
    for &(name, start, stop) in l4_fields(protocol) {
        let stop = (l4_at + stop).min(packet_end);
        push(name, l4_at + start, stop);
        end = stop;
    }
    let within = &frame[..packet_end.min(frame.len())];
    match protocol {
        ipv4::protocol::ICMP if !quoted && packet_end.saturating_sub(end) >= ipv4::HEADER_LEN => {
            ipv4_fields(spans, &format!("{prefix}icmp.quote."), within, end, true);
        }
        ipv4::protocol::IPIP if !quoted => {
            ipv4_fields(spans, &format!("{prefix}inner."), within, l4_at, false);
        }
        _ => spans.push(FieldSpan {
            name: format!("{prefix}payload"),
            start: end,
            end: packet_end,
        }),
    }
    packet_end
}

/// `None` if the frames are equal, else one line per differing header field (laid out by
/// `expected`), e.g. `eth.dst [0..6]: expected 02 00 00 00 01 01, got 02 00 00 00 01 02`.
pub fn diff(expected: &[u8], actual: &[u8]) -> Option<String> {
    if expected == actual {
        return None;
    }
    let hex = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    if expected.len() != actual.len() {
        let _ = writeln!(
            out,
            "length: expected {}, got {}",
            expected.len(),
            actual.len()
        );
    }
    let longest = expected.len().max(actual.len());
    for field in fields(expected) {
        let end = field.end.min(longest);
        if field.start >= end {
            continue;
        }
        let want = expected
            .get(field.start..end.min(expected.len()))
            .unwrap_or(&[]);
        let got = actual
            .get(field.start..end.min(actual.len()))
            .unwrap_or(&[]);
        if want != got {
            let _ = writeln!(
                out,
                "{} [{}..{}]: expected {}, got {}",
                &field.name,
                field.start,
                end,
                hex(want),
                hex(got)
            );
        }
    }
    Some(out)
}

/// Panics with a field-level diff unless the frames are equal.
#[track_caller]
pub fn assert_frame_eq(expected: &[u8], actual: &[u8], description: &str) {
    if let Some(diff) = diff(expected, actual) {
        panic!("{description}: frames differ\n{diff}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_round_trips_through_views() {
        let frame = FrameBuilder::tcp()
            .src("192.0.2.7:1234")
            .dst("192.0.2.10:443")
            .syn()
            .payload(b"hi")
            .build();
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.src_addr(), ROUTER_MAC);
        assert_eq!(eth.dst_addr(), DIRECTOR_MAC);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), 42);
        assert_eq!(ip.src_addr(), Ipv4Addr::new(192, 0, 2, 7));
        let tcp = TcpSegment::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (1234, 443));
        assert!(tcp.syn() && !tcp.ack());
        assert_eq!(tcp.payload(), b"hi");
        assert!(tcp.verify_checksum(ip.src_addr(), ip.dst_addr()));

        let frame = FrameBuilder::udp()
            .dst("192.0.2.53:53")
            .payload(&[7; 100])
            .build();
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        let udp = UdpDatagram::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.len(), 108);
        assert!(udp.verify_checksum(ip.src_addr(), ip.dst_addr()));
    }

    #[test]
    fn malformed_knobs() {
        assert_eq!(FrameBuilder::tcp().truncate(13).build().len(), 13);
        let tagged = FrameBuilder::tcp().vlan(100).build();
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x00, 0x64]);
        let options = FrameBuilder::tcp().ihl(6).build();
        let ip = Ipv4Packet::new_checked(&options[14..]).unwrap();
        assert_eq!(ip.options(), &[1, 1, 1, 0]);
        assert!(ip.verify_checksum());
        let short_l4 = FrameBuilder::tcp().l4_len(10).unpadded().build();
        assert_eq!(short_l4.len(), 14 + 20 + 10);
        assert_eq!(
            Ipv4Packet::new_checked(&short_l4[14..])
                .unwrap()
                .payload()
                .len(),
            10
        );
    }

    #[test]
    fn diff_names_fields() {
        let a = FrameBuilder::tcp().syn().build();
        let b = FrameBuilder::tcp()
            .syn()
            .eth_dst(backend_mac(1))
            .dst("192.0.2.11:80")
            .build();
        let diff = diff(&a, &b).unwrap();
        assert!(diff.contains("eth.dst [0..6]"), "{diff}");
        assert!(diff.contains("ipv4.dst [30..34]"), "{diff}");
        assert!(diff.contains("tcp.checksum"), "{diff}");
        assert!(!diff.contains("eth.src"), "{diff}");
        assert!(super::diff(&a, &a).is_none());
    }
}
