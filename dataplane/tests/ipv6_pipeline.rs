//! Golden-packet tests for the IPv6 rewrites through `Pipeline::process`: DR, NAT both ways with
//! port mapping (extension headers kept, UDP checksum 0 passed on), ICMPv6 errors translated both
//! ways (destination unreachable, packet too big, time exceeded, a quote too short to hold the
//! transport checksum), persistence by IPv6 prefix, and every malformed IPv6 input with its
//! `DropReason`.
//!
//! Expected frames are built from scratch by `testing::Ipv6FrameBuilder`, whose checksums are
//! full recomputations over the pseudo header; the pipeline updates them incrementally. Every
//! sent frame's checksums are also verified on their own (`assert_checksums`).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use dataplane::counters::BackendCounters;
use dataplane::persistence::Template;
use dataplane::testing::{
    self, backend, backend_mac, service, FrameBuilder, Ipv6FrameBuilder, DIRECTOR_MAC, ROUTER_MAC,
    SERVER_SIDE_MAC, UMEM_HEADROOM,
};
use dataplane::wire::checksum;
use dataplane::wire::icmpv6::message;
use dataplane::wire::{EtherType, MacAddr};
use dataplane::{
    DropReason, Egress, Forwarding, PersistenceTable, Pipeline, Protocol, ServiceTable, Verdict,
    WorkerCounters,
};
use scheduler::Algorithm;

const WORKER: usize = 0;
const CLIENT: &str = "[2001:db8:c::7]:40000";
const ROUTER: &str = "[2001:db8:ff::1]:0";
const NAT_VIP: &str = "[2001:db8::60]:80";
const NAT_RS: &str = "[2001:db8:a::1]:8080";
const DNS_VIP: &str = "[2001:db8::60]:53";
const DNS_RS: &str = "[2001:db8:a::2]:53";
const DR_VIP: &str = "[2001:db8::10]:80";
const STICKY_VIP: &str = "[2001:db8::20]:80";
const SLOTS: usize = 8;
const NAT_SLOT: usize = 0;
const DNS_SLOT: usize = 1;
const DR_SLOT: usize = 2;

/// The table (with [`testing::interfaces`] at MTU 1500):
/// - NAT tcp [2001:db8::60]:80 -> [2001:db8:a::1]:8080 (port mapping), slot 0
/// - NAT udp [2001:db8::60]:53 -> [2001:db8:a::2]:53, slot 1
/// - DR  tcp [2001:db8::10]:80 -> 2001:db8::11, slot 2
/// - DR  tcp [2001:db8::20]:80 -> 2001:db8::21 or ::22, persistent by /64, slots 3 and 4
fn table(blocks: &[Arc<[BackendCounters]>], persistence: Arc<PersistenceTable>) -> ServiceTable {
    let nat = |vip, protocol, backends| {
        testing::with_forwarding(
            service(vip, protocol, Algorithm::Maglev, backends),
            Forwarding::Nat,
        )
    };
    let mut sticky = testing::with_persistence(
        service(
            STICKY_VIP,
            Protocol::Tcp,
            Algorithm::RoundRobin,
            vec![
                backend("2001:db8::21", Some(backend_mac(0x21)), 1, 3),
                backend("2001:db8::22", Some(backend_mac(0x22)), 1, 4),
            ],
        ),
        300,
        "255.255.255.255",
        1,
    );
    if let Some(persistence) = sticky.persistence.as_mut() {
        persistence.netmask6 = u128::MAX << 64;
    }
    testing::table(
        1,
        vec![
            nat(
                NAT_VIP,
                Protocol::Tcp,
                vec![testing::with_port(
                    backend("2001:db8:a::1", Some(backend_mac(1)), 1, NAT_SLOT),
                    8080,
                )],
            ),
            nat(
                DNS_VIP,
                Protocol::Udp,
                vec![backend("2001:db8:a::2", Some(backend_mac(2)), 1, DNS_SLOT)],
            ),
            service(
                DR_VIP,
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![backend("2001:db8::11", Some(backend_mac(0x11)), 1, DR_SLOT)],
            ),
            sticky,
        ],
        blocks.to_vec(),
    )
    .with_persistence(persistence)
    .with_interfaces(testing::interfaces(1500))
}

/// `frame` built, with its Ethernet addresses set (the IPv6 builder sends from the router).
fn with_macs(frame: &Ipv6FrameBuilder, dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut bytes = frame.clone().eth_dst(dst).build();
    bytes[6..12].copy_from_slice(&src);
    bytes
}

/// Arriving on the client side from the router.
fn from_client(frame: &Ipv6FrameBuilder) -> Vec<u8> {
    with_macs(frame, DIRECTOR_MAC, ROUTER_MAC)
}

/// Arriving on the server side from real server `n`.
fn from_server(frame: &Ipv6FrameBuilder, n: u8) -> Vec<u8> {
    with_macs(frame, SERVER_SIDE_MAC, backend_mac(n))
}

/// Leaving the server side toward real server `n`.
fn to_server(frame: &Ipv6FrameBuilder, n: u8) -> Vec<u8> {
    with_macs(frame, backend_mac(n), SERVER_SIDE_MAC)
}

/// Leaving the client side toward the router.
fn to_client(frame: &Ipv6FrameBuilder) -> Vec<u8> {
    with_macs(frame, ROUTER_MAC, DIRECTOR_MAC)
}

/// An ICMPv6 error from `src` to `dst` (`"[addr]:0"`) of `msg_type`/`code` with `rest` (the MTU
/// of packet too big), quoting `quote`.
fn icmp6_error(
    src: &str,
    dst: &str,
    msg_type: u8,
    code: u8,
    rest: u32,
    quote: &[u8],
) -> Ipv6FrameBuilder {
    Ipv6FrameBuilder::icmp6()
        .src(src)
        .dst(dst)
        .icmp6_header(msg_type, code, rest)
        .payload(quote)
}

struct Step {
    description: &'static str,
    input: Vec<u8>,
    verdict: Verdict,
    output: Vec<u8>,
}

fn sent(description: &'static str, input: Vec<u8>, output: Vec<u8>, egress: Egress) -> Step {
    Step {
        description,
        input,
        verdict: Verdict::Tx {
            start: UMEM_HEADROOM,
            len: output.len(),
            egress,
        },
        output,
    }
}

fn refused(description: &'static str, input: Vec<u8>, reason: DropReason) -> Step {
    Step {
        description,
        output: input.clone(),
        input,
        verdict: Verdict::Drop(reason),
    }
}

/// Sets a frame's UDP checksum (the upper layer right after the fixed header) to 0.
fn udp_checksum_zero(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14 + 40 + 6..14 + 40 + 8].copy_from_slice(&[0, 0]);
    frame
}

/// Verifies, independently of the builder, the upper-layer checksum of a sent IPv6 frame
/// without extension headers, and for an ICMPv6 error the quoted TCP/UDP checksum when the
/// quote holds the whole quoted packet.
#[track_caller]
fn assert_checksums(frame: &[u8], description: &str) {
    if u16::from_be_bytes([frame[12], frame[13]]) != 0x86dd {
        return;
    }
    let ip = &frame[14..];
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let next = ip[6];
    if !matches!(next, 6 | 17 | 58) {
        return;
    }
    let upper = &ip[40..40 + payload_len];
    let (src, dst) = (address(&ip[8..24]), address(&ip[24..40]));
    let sum = |src, dst, next, upper: &[u8]| {
        checksum::combine(&[
            checksum::pseudo_header6(src, dst, next, u32::try_from(upper.len()).unwrap()),
            checksum::data(upper),
        ])
    };
    if next == 17 && upper[6..8] == [0, 0] {
        return; // "no checksum": passed on as it came (see rewrite::nat's docs).
    }
    assert_eq!(
        sum(src, dst, next, upper),
        0xffff,
        "{description}: checksum"
    );
    if next == 58 && upper[0] < 128 {
        let quote = &upper[8..];
        let quoted_len = 40 + usize::from(u16::from_be_bytes([quote[4], quote[5]]));
        if quote.len() >= quoted_len && matches!(quote[6], 6 | 17) {
            let (qsrc, qdst) = (address(&quote[8..24]), address(&quote[24..40]));
            assert_eq!(
                sum(qsrc, qdst, quote[6], &quote[40..quoted_len]),
                0xffff,
                "{description}: quoted checksum"
            );
        }
    }
}

fn address(bytes: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap())
}

// One step per line (or a few) reads as a table.
#[rustfmt::skip]
fn conversation() -> Vec<Step> {
    let syn = Ipv6FrameBuilder::tcp().src(CLIENT).dst(NAT_VIP).syn();
    let syn_to_rs = Ipv6FrameBuilder::tcp().src(CLIENT).dst(NAT_RS).syn().hop_limit(63);
    let syn_ack = Ipv6FrameBuilder::tcp().src(NAT_RS).dst(CLIENT).syn().ack().payload(b"hello");
    let syn_ack_out = Ipv6FrameBuilder::tcp().src(NAT_VIP).dst(CLIENT).syn().ack().payload(b"hello").hop_limit(63);
    let dns = Ipv6FrameBuilder::udp().src(CLIENT).dst(DNS_VIP).payload(b"query");
    let dns_to_rs = Ipv6FrameBuilder::udp().src(CLIENT).dst(DNS_RS).payload(b"query").hop_limit(63);
    let dns_reply = Ipv6FrameBuilder::udp().src(DNS_RS).dst(CLIENT).payload(b"answer!");
    let dns_reply_out = Ipv6FrameBuilder::udp().src(DNS_VIP).dst(CLIENT).payload(b"answer!").hop_limit(63);
    let dr_syn = Ipv6FrameBuilder::tcp().src(CLIENT).dst(DR_VIP).syn();

    // Errors about a client's packet, from the server side: outbound.
    let quoted_syn_at_rs = syn_to_rs.clone().payload(b"data").build_ipv6();
    let quoted_syn_at_vip = syn.clone().hop_limit(63).payload(b"data").build_ipv6();
    let quoted_dns_at_rs = dns_to_rs.build_ipv6();
    let quoted_dns_at_vip = dns.clone().hop_limit(63).build_ipv6();
    // Errors about a reply, from the client side: inbound.
    let big_reply = Ipv6FrameBuilder::tcp().src(NAT_VIP).dst(CLIENT).ack().payload(&[0x5a; 1400]);
    let big_reply_at_rs = Ipv6FrameBuilder::tcp().src(NAT_RS).dst(CLIENT).ack().payload(&[0x5a; 1400]);
    // RFC 4443 2.4(c): as much as fits in the minimum MTU; here 1232 bytes of the quote.
    let quoted_reply = big_reply.build_ipv6()[..1232].to_vec();
    let quoted_reply_at_rs = big_reply_at_rs.build_ipv6()[..1232].to_vec();
    let short_quote = syn_ack_out.build_ipv6()[..48].to_vec();
    let short_quote_at_rs = syn_ack.clone().hop_limit(63).build_ipv6()[..48].to_vec();
    let dr_reply = Ipv6FrameBuilder::tcp().src(DR_VIP).dst(CLIENT).ack().payload(&[1; 100]).build_ipv6();

    vec![
        sent("DR: a SYN goes to the real server's MAC, nothing else changes",
            from_client(&dr_syn), with_macs(&dr_syn, backend_mac(0x11), DIRECTOR_MAC), Egress::Ingress),
        sent("NAT in: VIP:80 -> RS:8080, hop limit 63, checksum over the new pseudo header",
            from_client(&syn), to_server(&syn_to_rs, 1), Egress::Peer),
        sent("NAT out: RS:8080 -> VIP:80 toward the router",
            from_server(&syn_ack, 1), to_client(&syn_ack_out), Egress::Peer),
        sent("NAT in with extension headers (hop-by-hop, destination options): kept as they are",
            from_client(&syn.clone().ack().hop_by_hop(0).destination_options(1).payload(b"GET /")),
            to_server(&syn_to_rs.clone().ack().hop_by_hop(0).destination_options(1).payload(b"GET /"), 1),
            Egress::Peer),
        sent("NAT in, UDP without port mapping",
            from_client(&dns), to_server(&dns_to_rs, 2), Egress::Peer),
        sent("NAT out, UDP",
            from_server(&dns_reply, 2), to_client(&dns_reply_out), Egress::Peer),
        sent("NAT in, UDP checksum 0 (invalid over IPv6) passed on as 0 for the receiver to drop",
            udp_checksum_zero(from_client(&dns)), udp_checksum_zero(to_server(&dns_to_rs, 2)), Egress::Peer),
        sent("ICMPv6 out: port unreachable from the RS about a client's TCP segment",
            from_server(&icmp6_error(&NAT_RS.replace("8080", "0"), CLIENT, message::DEST_UNREACHABLE, 4, 0, &quoted_syn_at_rs), 1),
            to_client(&icmp6_error(&NAT_VIP.replace("80", "0"), CLIENT, message::DEST_UNREACHABLE, 4, 0, &quoted_syn_at_vip).hop_limit(63)),
            Egress::Peer),
        sent("ICMPv6 out: port unreachable about a client's UDP datagram (quoted UDP checksum)",
            from_server(&icmp6_error("[2001:db8:a::2]:0", CLIENT, message::DEST_UNREACHABLE, 4, 0, &quoted_dns_at_rs), 2),
            to_client(&icmp6_error("[2001:db8::60]:0", CLIENT, message::DEST_UNREACHABLE, 4, 0, &quoted_dns_at_vip).hop_limit(63)),
            Egress::Peer),
        sent("ICMPv6 in: packet too big about a NAT reply reaches the real server, MTU kept",
            from_client(&icmp6_error(ROUTER, "[2001:db8::60]:0", message::PACKET_TOO_BIG, 0, 1280, &quoted_reply)),
            to_server(&icmp6_error(ROUTER, "[2001:db8:a::1]:0", message::PACKET_TOO_BIG, 0, 1280, &quoted_reply_at_rs).hop_limit(63), 1),
            Egress::Peer),
        sent("ICMPv6 in: time exceeded quoting 48 bytes (no transport checksum to fix)",
            from_client(&icmp6_error(ROUTER, "[2001:db8::60]:0", message::TIME_EXCEEDED, 0, 0, &short_quote)),
            to_server(&icmp6_error(ROUTER, "[2001:db8:a::1]:0", message::TIME_EXCEEDED, 0, 0, &short_quote_at_rs).hop_limit(63), 1),
            Egress::Peer),
        sent("ICMPv6 in: packet too big about a DR reply goes to the DR real server unchanged",
            from_client(&icmp6_error(ROUTER, "[2001:db8::10]:0", message::PACKET_TOO_BIG, 0, 1400, &dr_reply)),
            with_macs(&icmp6_error(ROUTER, "[2001:db8::10]:0", message::PACKET_TOO_BIG, 0, 1400, &dr_reply), backend_mac(0x11), DIRECTOR_MAC),
            Egress::Ingress),
        refused("NAT in with hop limit 1",
            from_client(&syn.clone().hop_limit(1)), DropReason::TtlExpired),
        refused("NAT out with hop limit 1",
            from_server(&syn_ack.clone().hop_limit(1), 1), DropReason::TtlExpired),
        refused("ICMPv6 in with hop limit 1",
            from_client(&icmp6_error(ROUTER, "[2001:db8::60]:0", message::PACKET_TOO_BIG, 0, 1280, &quoted_reply).hop_limit(1)),
            DropReason::TtlExpired),
        refused("ICMPv6 about no flow",
            from_client(&icmp6_error(ROUTER, "[2001:db8::60]:0", message::PACKET_TOO_BIG, 0, 1280,
                &Ipv6FrameBuilder::tcp().src(NAT_VIP).dst("[2001:db8:c::99]:1").build_ipv6())),
            DropReason::IcmpNoConnection),
        refused("a reply of no flow", from_server(&Ipv6FrameBuilder::tcp().src(NAT_RS).dst("[2001:db8:c::99]:1"), 1),
            DropReason::NoService),
    ]
}

fn new_pipeline() -> (Pipeline, ServiceTable, WorkerCounters) {
    let blocks = testing::counter_blocks(1, SLOTS);
    (
        Pipeline::new(WORKER, DIRECTOR_MAC, 1024),
        table(&blocks, Arc::new(PersistenceTable::new(64))),
        WorkerCounters::default(),
    )
}

#[test]
fn ipv6_conversation_golden() {
    let (mut pipeline, table, counters) = new_pipeline();
    let now = Instant::now();
    let steps = conversation();
    let frames = steps.len() as u64;
    for step in steps {
        let (verdict, output) = testing::run(&mut pipeline, &step.input, &table, now, &counters);
        assert_eq!(verdict, step.verdict, "{}", step.description);
        testing::assert_frame_eq(&step.output, &output, step.description);
        if matches!(verdict, Verdict::Tx { .. }) {
            assert_checksums(&output, step.description);
        }
    }
    // Per backend: 3 client frames + 2 ICMP errors forwarded to the NAT RS, its 1 reply + 1
    // error back.
    let block = &table.backend_counters[WORKER];
    let load = |slot: usize, counter: fn(&BackendCounters) -> &std::sync::atomic::AtomicU64| {
        counter(&block[slot]).load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(load(NAT_SLOT, |c| &c.packets_in), 4);
    assert_eq!(load(NAT_SLOT, |c| &c.packets_out), 2);
    assert_eq!(load(DNS_SLOT, |c| &c.packets_in), 2);
    assert_eq!(load(DNS_SLOT, |c| &c.packets_out), 2);
    assert_eq!(load(DR_SLOT, |c| &c.packets_in), 2);
    assert_eq!(counters.drops(DropReason::TtlExpired), 3);
    // Every step parsed as IPv6, dropped or not.
    assert_eq!(
        counters.ipv6_rx.load(std::sync::atomic::Ordering::Relaxed),
        frames
    );
}

/// Clients of one /64 stay on one real server (persistence_prefix6 = 64); a client of another
/// /64 gets its own template.
#[test]
fn ipv6_persistence_by_prefix() {
    let persistence = Arc::new(PersistenceTable::new(64));
    let table = table(&testing::counter_blocks(1, SLOTS), Arc::clone(&persistence));
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 1024);
    let counters = WorkerCounters::default();
    let now = Instant::now();
    let mut first = None;
    for host in 1..=16u16 {
        let client = format!("[2001:db8:c:1::{host:x}]:{}", 40000 + host);
        let frame = from_client(&Ipv6FrameBuilder::tcp().src(&client).dst(STICKY_VIP).syn());
        let (verdict, output) = testing::run(&mut pipeline, &frame, &table, now, &counters);
        assert!(
            matches!(
                verdict,
                Verdict::Tx {
                    egress: Egress::Ingress,
                    ..
                }
            ),
            "{verdict:?}"
        );
        let mac: MacAddr = output[0..6].try_into().unwrap();
        assert_eq!(
            *first.get_or_insert(mac),
            mac,
            "client {client} left its /64's server"
        );
    }
    let live = |client: &str| {
        matches!(
            persistence.lookup(1, IpAddr::V6(client.parse().unwrap()), now),
            Template::Live { .. }
        )
    };
    assert!(live("2001:db8:c:1::"), "no template for 2001:db8:c:1::/64");
    assert!(
        !live("2001:db8:c:1::1"),
        "a template for an unmasked client"
    );
}

/// Every malformed IPv6 input gets its named reason through `Pipeline::process`, untouched.
#[test]
#[rustfmt::skip]
fn ipv6_bad_input_is_named() {
    let (mut pipeline, table, counters) = new_pipeline();
    let now = Instant::now();
    let syn = Ipv6FrameBuilder::tcp().src(CLIENT).dst(NAT_VIP).syn();
    let mut chain = syn.clone();
    for _ in 0..7 {
        chain = chain.destination_options(0);
    }
    let quote = Ipv6FrameBuilder::tcp().src(NAT_VIP).dst(CLIENT).build_ipv6();
    let cases = [
        ("extension header past the payload length",
            syn.clone().hop_by_hop(3).payload_len(16).build(), DropReason::Ipv6ExtensionTruncated),
        ("a longer extension chain than the walk's bound", chain.build(), DropReason::Ipv6ExtensionChain),
        ("a jumbogram", syn.clone().hop_by_hop(0).payload_len(0).build(), DropReason::Ipv6Jumbogram),
        ("payload length beyond the frame", syn.clone().payload_len(1000).build(), DropReason::Ipv6PayloadLength),
        ("an ICMPv6 error quoting a truncated packet",
            icmp6_error(ROUTER, "[2001:db8::60]:0", message::PACKET_TOO_BIG, 0, 1280, &quote[..44]).build(),
            DropReason::IcmpQuoteTruncated),
        ("IPv6 under the IPv4 EtherType", syn.clone().ethertype(EtherType::IPV4).build(), DropReason::IpVersionMismatch),
        ("IPv4 under the IPv6 EtherType", FrameBuilder::tcp().syn().ethertype(EtherType::IPV6).build(),
            DropReason::IpVersionMismatch),
        ("version 4 in an IPv6 frame", syn.clone().version(4).build(), DropReason::IpVersionMismatch),
        ("a fragment", syn.clone().fragment(0, true).build(), DropReason::Fragment),
        ("a TCP header cut by the payload length", syn.clone().payload_len(10).build(), DropReason::Truncated),
    ];
    for (description, frame, reason) in cases {
        let before = counters.drops(reason);
        let (verdict, _) = testing::run(&mut pipeline, &frame, &table, now, &counters);
        assert_eq!(verdict, Verdict::Drop(reason), "{description}");
        assert_eq!(counters.drops(reason), before + 1, "{description}: counted");
    }
}

/// A NAT service's backend of the other family (configuration refuses it) is a named drop.
#[test]
fn nat_across_families_is_refused() {
    let blocks = testing::counter_blocks(1, SLOTS);
    let table = testing::table(
        1,
        vec![testing::with_forwarding(
            service(
                NAT_VIP,
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![backend("10.0.1.1", Some(backend_mac(1)), 1, 0)],
            ),
            Forwarding::Nat,
        )],
        blocks.clone(),
    )
    .with_interfaces(testing::interfaces(1500));
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 64);
    let counters = WorkerCounters::default();
    let frame = from_client(&Ipv6FrameBuilder::tcp().src(CLIENT).dst(NAT_VIP).syn());
    let (verdict, _) = testing::run(&mut pipeline, &frame, &table, Instant::now(), &counters);
    assert_eq!(verdict, Verdict::Drop(DropReason::UnsupportedForwarding));
}
