//! One golden table for both halves of the data path: each row is a frame with what the XDP
//! classifier must do with it (steer it to the AF_XDP socket, or pass it to the kernel, and the
//! counter that says why) and what `Pipeline::process` must do with it (the verdict, and the
//! exact bytes sent). The same rows drive the pipeline (always) and the classifier through
//! BPF_PROG_TEST_RUN (as root; skipped with a message otherwise), so the two cannot drift apart:
//! a frame the classifier steers is one the pipeline handles, and one it passes is one the
//! pipeline would drop for the same reason. A mismatch names the header fields that differ, or
//! the action and counters.
//!
//! The rows run in order through one pipeline: the NAT reply and the ICMP errors find the
//! connections the rows before them opened. The classifier keeps no flow state.
//! `classifier.rs`, `pipeline_fixtures.rs` and `nat_tun_pipeline.rs` keep their own, larger
//! tables for each half.

use std::collections::BTreeMap;
use std::time::Instant;

use dataplane::rewrite::tun;
use dataplane::testing::{
    self, backend, backend_mac, icmp_error, service, FrameBuilder, Ipv6FrameBuilder,
    CLIENT_SIDE_ADDR, CLIENT_SIDE_ADDR6, DIRECTOR_MAC, ROUTER_MAC, SERVER_SIDE_MAC, UMEM_HEADROOM,
};
use dataplane::wire::icmp::{message, unreachable};
use dataplane::wire::{icmpv6, EtherType, MacAddr};
use dataplane::xdp::{NatBackendKey, XdpClassifier};
use dataplane::xsk::{Xsk, XskConfig, CLIENT as CLIENT_PORT};
use dataplane::{
    DropReason, Egress, Forwarding, Pipeline, Protocol, ServiceTable, Verdict, WorkerCounters,
};
use scheduler::Algorithm;

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const CLIENT: &str = "198.51.100.7:40000";
const ROUTER: &str = "203.0.113.1:0";
const DR_VIP: &str = "192.0.2.10:80";
const NAT_VIP: &str = "192.0.2.60:80";
const NAT_RS: &str = "10.0.1.1:8080";
const TUN_VIP: &str = "192.0.2.70:80";
const TUN_RS: &str = "10.0.0.3:80";
const CLIENT6: &str = "[2001:db8:c::7]:40000";
const DR_VIP6: &str = "[2001:db8::10]:80";
const NAT_VIP6: &str = "[2001:db8::60]:80";
const NAT_RS6: &str = "[2001:db8:a::1]:8080";
const TUN6_VIP: &str = "[2001:db8::70]:80";
const TUN6_RS: &str = "2001:db8:0:a::3";
const TUN4IN6_VIP: &str = "192.0.2.71:80";
const TUN4IN6_RS: &str = "2001:db8:0:a::4";

/// The services (with [`testing::interfaces`] at MTU 1500):
/// - DR  tcp 192.0.2.10:80 -> 10.0.0.5 (real server 5)
/// - NAT tcp 192.0.2.60:80 -> 10.0.1.1:8080 (real server 1)
/// - TUN tcp 192.0.2.70:80 -> 10.0.0.3 (real server 3)
/// - DR  tcp [2001:db8::10]:80 -> 2001:db8::5 (real server 5)
/// - NAT tcp [2001:db8::60]:80 -> [2001:db8:a::1]:8080 (real server 1)
/// - TUN tcp [2001:db8::70]:80 -> 2001:db8:0:a::3 (real server 3, IPv6-in-IPv6)
/// - TUN tcp 192.0.2.71:80 -> 2001:db8:0:a::4 (real server 4, IPv4-in-IPv6)
fn golden_table() -> ServiceTable {
    testing::table(
        1,
        vec![
            service(
                DR_VIP,
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![backend("10.0.0.5", Some(backend_mac(5)), 1, 0)],
            ),
            testing::with_forwarding(
                service(
                    NAT_VIP,
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    vec![testing::with_port(
                        backend("10.0.1.1", Some(backend_mac(1)), 1, 1),
                        8080,
                    )],
                ),
                Forwarding::Nat,
            ),
            testing::with_forwarding(
                service(
                    TUN_VIP,
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    vec![backend("10.0.0.3", Some(backend_mac(3)), 1, 2)],
                ),
                Forwarding::Tunnel,
            ),
            service(
                DR_VIP6,
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![backend("2001:db8::5", Some(backend_mac(5)), 1, 3)],
            ),
            testing::with_forwarding(
                service(
                    NAT_VIP6,
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    vec![testing::with_port(
                        backend("2001:db8:a::1", Some(backend_mac(1)), 1, 4),
                        8080,
                    )],
                ),
                Forwarding::Nat,
            ),
            testing::with_forwarding(
                service(
                    TUN6_VIP,
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    vec![backend(TUN6_RS, Some(backend_mac(3)), 1, 5)],
                ),
                Forwarding::Tunnel,
            ),
            testing::with_forwarding(
                service(
                    TUN4IN6_VIP,
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    vec![backend(TUN4IN6_RS, Some(backend_mac(4)), 1, 6)],
                ),
                Forwarding::Tunnel,
            ),
        ],
        testing::counter_blocks(1, 7),
    )
    .with_interfaces(testing::interfaces(1500))
}

/// What the XDP classifier does with a row's frame, and the one counter it bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Xdp {
    /// Redirected to the AF_XDP socket on the receiving queue.
    Redirect(&'static str),
    /// Passed to the kernel.
    Pass(&'static str),
}

impl Xdp {
    fn action(self) -> u32 {
        match self {
            Xdp::Redirect(_) => XDP_REDIRECT,
            Xdp::Pass(_) => XDP_PASS,
        }
    }

    fn counter(self) -> &'static str {
        match self {
            Xdp::Redirect(counter) | Xdp::Pass(counter) => counter,
        }
    }
}

struct Row {
    description: &'static str,
    input: Vec<u8>,
    xdp: Xdp,
    /// The pipeline's verdict.
    verdict: Verdict,
    /// For `Tx`, the frame sent; for drops, the input (a drop must not touch the frame).
    output: Vec<u8>,
}

/// A frame the classifier steers and the pipeline sends as `output`, from `start` in its chunk.
fn sent(
    description: &'static str,
    input: &FrameBuilder,
    xdp_counter: &'static str,
    output: Vec<u8>,
    start: usize,
    egress: Egress,
) -> Row {
    Row {
        description,
        input: input.build(),
        xdp: Xdp::Redirect(xdp_counter),
        verdict: Verdict::Tx {
            start,
            len: output.len(),
            egress,
        },
        output,
    }
}

/// A frame the pipeline drops untouched, whatever the classifier does with it.
fn dropped(description: &'static str, input: &FrameBuilder, xdp: Xdp, reason: DropReason) -> Row {
    let input = input.build();
    Row {
        description,
        output: input.clone(),
        input,
        xdp,
        verdict: Verdict::Drop(reason),
    }
}

/// Arriving on the client side.
fn from_client(frame: FrameBuilder) -> FrameBuilder {
    frame.eth_src(ROUTER_MAC).eth_dst(DIRECTOR_MAC)
}

/// Arriving on the server side from real server `n`.
fn from_server(frame: FrameBuilder, n: u8) -> FrameBuilder {
    frame.eth_src(backend_mac(n)).eth_dst(SERVER_SIDE_MAC)
}

/// The IP-in-IP frame the director sends for `inner` to real server `n` at `rs`.
fn tunnelled(inner: &FrameBuilder, rs: &str, n: u8, ident: u16) -> Vec<u8> {
    FrameBuilder::ipip()
        .src(&format!("{CLIENT_SIDE_ADDR}:0"))
        .dst(rs)
        .eth_src(DIRECTOR_MAC)
        .eth_dst(backend_mac(n))
        .ident(ident)
        .ttl(64)
        .payload(&inner.build_ipv4())
        .build()
}

// One row per line (or two) reads as a table.
#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use DropReason::*;
    let (peer, ingress) = (Egress::Peer, Egress::Ingress);
    let tcp = |src: &str, dst: &str, ttl: u8| FrameBuilder::tcp().src(src).dst(dst).ttl(ttl);
    let dr_syn = tcp(CLIENT, DR_VIP, 64).syn();
    let tun_syn = tcp(CLIENT, TUN_VIP, 64).syn();
    // Fragmentation needed from a router on the client's path, about a reply from the DR VIP.
    let q_dr = tcp(DR_VIP, CLIENT, 64).ack().payload(&[1; 1400]).build_ipv4();
    let icmp_dr = icmp_error(ROUTER, DR_VIP, message::DEST_UNREACHABLE, unreachable::FRAG_NEEDED, 1400, &q_dr[..28]);
    let mut rows = vec![
        sent("DR: SYN re-addressed to its real server",
            &from_client(dr_syn.clone()), "redirected", dr_syn.eth_src(DIRECTOR_MAC).eth_dst(backend_mac(5)).build(), UMEM_HEADROOM, ingress),
        sent("NAT in: SYN to VIP:80 goes to RS:8080 out of the server side",
            &from_client(tcp(CLIENT, NAT_VIP, 64).syn()), "redirected",
            tcp(CLIENT, NAT_RS, 63).syn().eth_src(SERVER_SIDE_MAC).eth_dst(backend_mac(1)).build(), UMEM_HEADROOM, peer),
        sent("NAT reply: the SYN-ACK from RS:8080 leaves as VIP:80",
            &from_server(tcp(NAT_RS, CLIENT, 64).syn().ack(), 1), "nat_reply",
            tcp(NAT_VIP, CLIENT, 63).syn().ack().eth_src(DIRECTOR_MAC).eth_dst(ROUTER_MAC).build(), UMEM_HEADROOM, peer),
        sent("TUN: SYN encapsulated to the RS from the client side's address",
            &from_client(tun_syn.clone()), "redirected", tunnelled(&tun_syn, TUN_RS, 3, 0), UMEM_HEADROOM - 20, ingress),
        sent("ICMP error: fragmentation needed about a DR reply is re-addressed to its RS",
            &from_client(icmp_dr.clone()), "icmp_redirected", icmp_dr.eth_src(DIRECTOR_MAC).eth_dst(backend_mac(5)).build(), UMEM_HEADROOM, ingress),
        dropped("NAT reply of no known connection: steered by source, dropped by the pipeline",
            &from_server(tcp(NAT_RS, "198.51.100.7:40001", 64).ack(), 1), Xdp::Redirect("nat_reply"), NoService),
        dropped("ARP request", &FrameBuilder::arp(), Xdp::Pass("not_ip"), NotIp),
        dropped("IPv4 header under the IPv6 EtherType", &from_client(dr_syn_like()).ethertype(EtherType::IPV6), Xdp::Pass("ipv6_bad_version"), IpVersionMismatch),
        dropped("802.1Q tagged", &from_client(dr_syn_like()).vlan(100), Xdp::Pass("vlan"), VlanTagged),
        dropped("IPv4 options", &from_client(dr_syn_like()).ihl(6), Xdp::Pass("ip_options"), Ipv4Options),
        dropped("first fragment (MF set)", &from_client(dr_syn_like()).more_fragments(), Xdp::Pass("fragment"), Fragment),
        dropped("later fragment (offset 1480)", &from_client(dr_syn_like()).fragment_offset(1480), Xdp::Pass("fragment"), Fragment),
        dropped("no service: the VIP, another port", &from_client(tcp(CLIENT, "192.0.2.10:81", 64).syn()), Xdp::Pass("no_service"), NoService),
        dropped("no service: another address", &from_client(tcp(CLIENT, "192.0.2.99:80", 64).syn()), Xdp::Pass("no_service"), NoService),
        dropped("ICMP echo request to the VIP", &from_client(FrameBuilder::icmp().src(CLIENT).dst("192.0.2.10:0")), Xdp::Pass("icmp_not_error"), UnsupportedProtocol),
        dropped("IPv4 header cut at 19 bytes", &from_client(dr_syn_like()).truncate(14 + 19), Xdp::Pass("truncated"), Truncated),
    ];
    rows.extend(ipv6_rows());
    rows.extend(tunnel6_rows());
    rows
}

/// A frame built by the IPv6 builder, with its Ethernet addresses set.
fn macs6(frame: &Ipv6FrameBuilder, dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut bytes = frame.clone().eth_dst(dst).build();
    bytes[6..12].copy_from_slice(&src);
    bytes
}

/// [`sent`] and [`dropped`] for IPv6 frames (already built).
fn row6(
    description: &'static str,
    input: Vec<u8>,
    xdp: Xdp,
    verdict: Verdict,
    output: Option<Vec<u8>>,
) -> Row {
    Row {
        description,
        output: output.unwrap_or_else(|| input.clone()),
        input,
        xdp,
        verdict,
    }
}

/// The IPv6 rows: DR, NAT both ways, packet too big about a NAT reply, two malformed headers.
#[rustfmt::skip]
fn ipv6_rows() -> Vec<Row> {
    let tx = |len: usize, egress| Verdict::Tx { start: UMEM_HEADROOM, len, egress };
    let tcp = |src: &str, dst: &str, hop_limit: u8| Ipv6FrameBuilder::tcp().src(src).dst(dst).hop_limit(hop_limit);
    let dr_syn = tcp(CLIENT6, DR_VIP6, 64).syn();
    let dr_out = macs6(&dr_syn, backend_mac(5), DIRECTOR_MAC);
    let nat_out = macs6(&tcp(CLIENT6, NAT_RS6, 63).syn(), backend_mac(1), SERVER_SIDE_MAC);
    let reply_out = macs6(&tcp(NAT_VIP6, CLIENT6, 63).syn().ack(), ROUTER_MAC, DIRECTOR_MAC);
    let too_big = |vip: &str, quote: &[u8]| Ipv6FrameBuilder::icmp6().src("[2001:db8:ff::1]:0").dst(vip)
        .icmp6_header(icmpv6::message::PACKET_TOO_BIG, 0, 1280).payload(quote);
    let quote = tcp(NAT_VIP6, CLIENT6, 64).ack().payload(&[1; 200]).build_ipv6();
    let quote_at_rs = tcp(NAT_RS6, CLIENT6, 64).ack().payload(&[1; 200]).build_ipv6();
    let too_big_out = macs6(&too_big("[2001:db8:a::1]:0", &quote_at_rs).hop_limit(63), backend_mac(1), SERVER_SIDE_MAC);
    let mut chain = dr_syn.clone();
    for _ in 0..7 {
        chain = chain.destination_options(0);
    }
    vec![
        row6("IPv6 DR: SYN re-addressed to its real server",
            macs6(&dr_syn, DIRECTOR_MAC, ROUTER_MAC), Xdp::Redirect("redirected"), tx(dr_out.len(), Egress::Ingress), Some(dr_out)),
        row6("IPv6 NAT in: SYN to [VIP]:80 goes to [RS]:8080, hop limit 63",
            macs6(&tcp(CLIENT6, NAT_VIP6, 64).syn(), DIRECTOR_MAC, ROUTER_MAC), Xdp::Redirect("redirected"), tx(nat_out.len(), Egress::Peer), Some(nat_out)),
        row6("IPv6 NAT reply: the SYN-ACK from [RS]:8080 leaves as [VIP]:80",
            macs6(&tcp(NAT_RS6, CLIENT6, 64).syn().ack(), SERVER_SIDE_MAC, backend_mac(1)), Xdp::Redirect("nat_reply"), tx(reply_out.len(), Egress::Peer), Some(reply_out)),
        row6("ICMPv6 packet too big about a NAT reply goes to the RS, translated",
            macs6(&too_big("[2001:db8::60]:0", &quote), DIRECTOR_MAC, ROUTER_MAC), Xdp::Redirect("icmp_redirected"), tx(too_big_out.len(), Egress::Peer), Some(too_big_out)),
        row6("IPv6 extension chain past the walk's bound",
            macs6(&chain, DIRECTOR_MAC, ROUTER_MAC), Xdp::Pass("ipv6_ext_too_long"), Verdict::Drop(DropReason::Ipv6ExtensionChain), None),
        row6("IPv6 header under the IPv4 EtherType",
            macs6(&dr_syn.clone().ethertype(EtherType::IPV4), DIRECTOR_MAC, ROUTER_MAC), Xdp::Pass("bad_ihl"), Verdict::Drop(DropReason::IpVersionMismatch), None),
    ]
}

/// The IPv6 tunnel rows (RFC 2473), from the client side's IPv6 address: an IPv6 SYN in IPv6
/// (6in6) and an IPv4 SYN in IPv6 (4in6); a 1500-byte packet of each, which cannot take the
/// 40 more bytes at MTU 1500, answered to the client with the path MTU 1460 (ICMPv6 packet too
/// big; ICMP fragmentation needed, DF set) or, IPv4 with DF clear, dropped as `TooBig`.
#[rustfmt::skip]
fn tunnel6_rows() -> Vec<Row> {
    let redirected = Xdp::Redirect("redirected");
    let from_router = |frame: Ipv6FrameBuilder| macs6(&frame, DIRECTOR_MAC, ROUTER_MAC);
    let tcp6 = || Ipv6FrameBuilder::tcp().src(CLIENT6).dst(TUN6_VIP);
    // AF11 (DSCP 10): the 4in6 outer header copies it, a generated ICMP error keeps its TOS bits.
    let tcp4 = || from_client(FrameBuilder::tcp().src(CLIENT).dst(TUN4IN6_VIP).tos(0x28));
    let tun6_syn = from_router(tcp6().syn());
    let tun6_big = from_router(tcp6().ack().payload(&[7; 1440]));
    let tun4_syn = tcp4().syn().build();
    let tun4_big = tcp4().ack().payload(&[7; 1460]).build();
    let tun4_big_may_fragment = tcp4().ack().payload(&[7; 1460]).dont_fragment(false).build();
    let tx = |start: usize, output: &[u8]| Verdict::Tx { start, len: output.len(), egress: Egress::Ingress };
    let encapsulated = |input: Vec<u8>, rs: &str, n: u8| {
        let output = tunnelled6(&input, rs, n);
        (tx(UMEM_HEADROOM - 40, &output), output, input)
    };
    let answered = |input: Vec<u8>, output: Vec<u8>| (tx(UMEM_HEADROOM, &output), output, input);
    let row = |description, (verdict, output, input)| Row { description, input, xdp: redirected, verdict, output };
    vec![
        row("TUN 6in6: SYN encapsulated in IPv6 to the RS", encapsulated(tun6_syn, TUN6_RS, 3)),
        row("TUN 6in6: 1500 bytes answered with packet too big, MTU 1460",
            answered(tun6_big.clone(), packet_too_big(&tun6_big, 1460))),
        row("TUN 4in6: IPv4 SYN encapsulated in IPv6 to the IPv6 RS", encapsulated(tun4_syn, TUN4IN6_RS, 4)),
        row("TUN 4in6: 1500 bytes with DF answered with fragmentation needed, MTU 1460",
            answered(tun4_big.clone(), frag_needed(&tun4_big, 1460))),
        row("TUN 4in6: 1500 bytes without DF dropped as too big (no second frame to fragment into)",
            (Verdict::Drop(DropReason::TooBig), tun4_big_may_fragment.clone(), tun4_big_may_fragment)),
    ]
}

/// The frame the director sends for the IPv4 or IPv6 frame `inner` (Ethernet padding left
/// behind) to real server `n` at IPv6 address `rs`, with an RFC 2473 outer header spelled out
/// here: traffic class the inner TOS or traffic class, the flow label of the flow's hash,
/// payload length the inner packet's, next header 4 (IPv4) or 41 (IPv6), hop limit 64, from
/// the client side's IPv6 address.
fn tunnelled6(inner: &[u8], rs: &str, n: u8) -> Vec<u8> {
    let (next_header, traffic_class, packet_len) = match &inner[12..14] {
        [0x08, 0x00] => (
            4,
            inner[15],
            usize::from(u16::from_be_bytes([inner[16], inner[17]])),
        ),
        [0x86, 0xdd] => (
            41,
            (inner[14] << 4) | (inner[15] >> 4),
            40 + usize::from(u16::from_be_bytes([inner[18], inner[19]])),
        ),
        other => panic!("not IP: EtherType {other:02x?}"),
    };
    let packet = &inner[14..14 + packet_len];
    let parsed = dataplane::parse::classify(inner).unwrap();
    let label = tun::flow_label(parsed.flow().expect("a TCP flow").key.flow_hash());
    let mut frame = Vec::new();
    frame.extend_from_slice(&backend_mac(n));
    frame.extend_from_slice(&DIRECTOR_MAC);
    frame.extend_from_slice(&[0x86, 0xdd]);
    frame.extend_from_slice(&((6 << 28) | (u32::from(traffic_class) << 20) | label).to_be_bytes());
    frame.extend_from_slice(&u16::try_from(packet.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&[next_header, 64]);
    frame.extend_from_slice(&CLIENT_SIDE_ADDR6.octets());
    frame.extend_from_slice(&rs.parse::<std::net::Ipv6Addr>().unwrap().octets());
    frame.extend_from_slice(packet);
    frame
}

/// The ICMPv6 packet too big (RFC 4443 3.2) the director answers the IPv6 frame `big` with:
/// from its destination to its source, back to the router it came from, quoting 1232 bytes.
fn packet_too_big(big: &[u8], mtu: u32) -> Vec<u8> {
    let (src, dst) = (&big[22..38], &big[38..54]);
    let text = |octets: &[u8]| {
        let octets: [u8; 16] = octets.try_into().unwrap();
        format!("[{}]:0", std::net::Ipv6Addr::from(octets))
    };
    let frame = Ipv6FrameBuilder::icmp6()
        .src(&text(dst))
        .dst(&text(src))
        .icmp6_header(icmpv6::message::PACKET_TOO_BIG, 0, mtu)
        .payload(&big[14..14 + 1232]);
    macs6(&frame, ROUTER_MAC, DIRECTOR_MAC)
}

/// The ICMP fragmentation needed (RFC 792 type 3 code 4, next-hop MTU as RFC 1191) the
/// director answers the IPv4 frame `big` (DF set, no options) with, spelled out: from its
/// destination to its source, back to the router it came from; TOS the offending packet's TOS
/// bits with precedence internetwork control and TTL 64 (as Linux's `icmp_send`),
/// identification 0, no DF; quoting its IP header and 8 bytes (RFC 792).
fn frag_needed(big: &[u8], mtu: u16) -> Vec<u8> {
    let quote = &big[14..14 + 28];
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quote);
    let sum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let total_len = u16::try_from(20 + icmp.len()).unwrap();
    let mut ip = vec![0x45, (big[15] & 0x1e) | 0xc0];
    ip.extend_from_slice(&total_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&big[30..34]);
    ip.extend_from_slice(&big[26..30]);
    let sum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = big[6..12].to_vec();
    frame.extend_from_slice(&DIRECTOR_MAC);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&icmp);
    frame
}

/// The RFC 1071 checksum of `bytes` (even length), written out here rather than taken from the
/// crate's `wire::checksum`, so the expected ICMP error does not lean on the code it checks.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap()
}

/// A DR SYN, for the rows that break it one way.
fn dr_syn_like() -> FrameBuilder {
    FrameBuilder::tcp().src(CLIENT).dst(DR_VIP).syn()
}

/// The pipeline half: every row in order through one pipeline.
#[test]
fn golden_rows_through_the_pipeline() {
    let table = golden_table();
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 64);
    let now = Instant::now();
    let mut failures = Vec::new();
    for row in rows() {
        let (verdict, frame) = testing::run(&mut pipeline, &row.input, &table, now, &counters);
        let mut problems = Vec::new();
        if verdict != row.verdict {
            problems.push(format!(
                "verdict: expected {:?}, got {verdict:?}",
                row.verdict
            ));
        }
        if let Some(diff) = testing::diff(&row.output, &frame) {
            problems.push(format!("output frame:\n{diff}"));
        }
        if !problems.is_empty() {
            failures.push(format!("--- {}\n{}", row.description, problems.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} row(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The classifier half: the same rows through BPF_PROG_TEST_RUN, with an AF_XDP socket on queue
/// 0 so steered frames are redirected, in a private network namespace.
#[test]
fn golden_rows_through_the_xdp_classifier() {
    if !dataplane::testing::require_root() {
        return;
    }
    // A private network namespace for this thread alone, so binding to its loopback disturbs
    // nobody; it goes away with the thread and the socket.
    std::thread::spawn(|| {
        // SAFETY: unshare affects only the calling thread, which is ours.
        let result = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(result, 0, "unshare: {}", std::io::Error::last_os_error());
        // A fresh namespace has only its loopback, always index 1.
        let config = XskConfig {
            frame_size: 4096,
            frame_count: 64,
            ring_size: 32,
        };
        let xsk = Xsk::open(1, 0, config).unwrap();
        let classifier = classifier_for(&golden_table());
        classifier.register_socket(0, xsk.fd(CLIENT_PORT)).unwrap();

        let mut failures = Vec::new();
        for row in rows() {
            let before = xdp_counters(&classifier);
            let action = classifier.test_run(&row.input).unwrap();
            let after = xdp_counters(&classifier);
            let moved: Vec<(&str, u64)> = after
                .iter()
                .filter(|(name, value)| before[*name] != **value)
                .map(|(name, value)| (*name, value - before[name]))
                .collect();
            let mut problems = Vec::new();
            if action != row.xdp.action() {
                problems.push(format!(
                    "action: expected {} ({:?}), got {action}",
                    row.xdp.action(),
                    row.xdp
                ));
            }
            if moved != [(row.xdp.counter(), 1)] {
                problems.push(format!(
                    "counters: expected [{:?}] +1, moved {moved:?}",
                    row.xdp.counter()
                ));
            }
            if !problems.is_empty() {
                failures.push(format!("--- {}\n{}", row.description, problems.join("\n")));
            }
        }
        assert!(
            failures.is_empty(),
            "{} row(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        drop(classifier);
        drop(xsk);
    })
    .join()
    .unwrap();
}

/// A loaded (not attached) classifier that steers what `table` serves, as control sets it up:
/// every service key, and for NAT services every real server's (address, port) by source.
fn classifier_for(table: &ServiceTable) -> XdpClassifier {
    let classifier = XdpClassifier::load().unwrap();
    for service in &table.services {
        for key in service.keys() {
            classifier.set_service(&key, true).unwrap();
        }
        if service.forwarding == Forwarding::Nat {
            for backend in &service.backends {
                let port = if backend.port == 0 {
                    service.key.port
                } else {
                    backend.port
                };
                let key = NatBackendKey {
                    address: backend.address,
                    port,
                    protocol: service.key.protocol,
                };
                classifier.set_nat_backend(&key, true).unwrap();
            }
        }
    }
    classifier
}

fn xdp_counters(classifier: &XdpClassifier) -> BTreeMap<&'static str, u64> {
    classifier.counters().unwrap().into_iter().collect()
}

#[test]
fn the_classifier_and_the_parser_walk_ipv6_extension_headers_to_one_bound() {
    assert_eq!(
        dataplane::xdp::abi::MAX_IPV6_EXT_HEADERS,
        dataplane::parse::IPV6_MAX_EXTENSION_HEADERS
    );
}
