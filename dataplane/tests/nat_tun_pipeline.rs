//! Golden-packet tests for NAT and TUN through `Pipeline::process`: frames in UMEM-like chunks
//! with headroom, the verdict (start, length, egress) and the exact bytes sent, built with the
//! readable `testing::FrameBuilder` (whose checksums are computed from scratch). A NAT flow is a
//! conversation, so its golden table runs in order through one pipeline: client frames in, the
//! real server's replies found through the reply index and sent out, ICMP errors both ways.
//! Then behaviour across packets: persistence and gauges, rescheduling, state from replies.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::conntrack::{ConnState, FlowKey};
use dataplane::persistence::Template;
use dataplane::testing::{
    self, backend, backend_mac, icmp_error, service, FrameBuilder, CLIENT_SIDE_ADDR, DIRECTOR_MAC,
    ROUTER_MAC, SERVER_SIDE_MAC, UMEM_HEADROOM,
};
use dataplane::wire::icmp::{message, unreachable};
use dataplane::{
    DropReason, Egress, Forwarding, PersistenceTable, Pipeline, Protocol, ServiceTable, Verdict,
    WorkerCounters,
};
use scheduler::Algorithm;

const WORKER: usize = 0;
const CLIENT: &str = "198.51.100.7:40000";
const ROUTER: &str = "203.0.113.1:0";
const NAT_VIP: &str = "192.0.2.60:80";
const NAT_RS: &str = "10.0.1.1:8080";
const DNS_VIP: &str = "192.0.2.60:53";
const DNS_RS: &str = "10.0.1.2:53";
const TUN_VIP: &str = "192.0.2.70:80";
const TUN_RS: &str = "10.0.0.3:80";
const DR_VIP: &str = "192.0.2.10:80";
const SLOTS: usize = 8;
/// Slots of the golden table's backends.
const NAT_SLOT: usize = 0;
const DNS_SLOT: usize = 1;
const TUN_SLOT: usize = 2;
const DR_SLOT: usize = 4;
const GROUP_SLOT: usize = 5;

/// The golden table (with [`testing::interfaces`] at MTU 1500):
/// - NAT tcp 192.0.2.60:80 -> 10.0.1.1:8080 (port mapping), slot 0
/// - NAT udp 192.0.2.60:53 -> 10.0.1.2:53 (no mapping), slot 1
/// - TUN tcp 192.0.2.70:80 -> 10.0.0.3, slot 2
/// - NAT tcp 192.0.2.61:80 -> 10.0.1.4 with an unresolved MAC, slot 3
/// - DR  tcp 192.0.2.10:80 -> 10.0.0.5, slot 4
/// - NAT tcp 192.0.2.62:80 and :443, persistent (/24, 300 s), -> 10.0.1.6, slot 5
fn golden_table(blocks: &[Arc<[dataplane::counters::BackendCounters]>]) -> ServiceTable {
    testing::table(
        1,
        vec![
            nat(
                NAT_VIP,
                Protocol::Tcp,
                vec![testing::with_port(
                    backend("10.0.1.1", Some(backend_mac(1)), 1, NAT_SLOT),
                    8080,
                )],
            ),
            nat(
                DNS_VIP,
                Protocol::Udp,
                vec![backend("10.0.1.2", Some(backend_mac(2)), 1, DNS_SLOT)],
            ),
            testing::with_forwarding(
                service(
                    TUN_VIP,
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    vec![backend("10.0.0.3", Some(backend_mac(3)), 1, TUN_SLOT)],
                ),
                Forwarding::Tunnel,
            ),
            nat(
                "192.0.2.61:80",
                Protocol::Tcp,
                vec![backend("10.0.1.4", None, 1, 3)],
            ),
            service(
                DR_VIP,
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![backend("10.0.0.5", Some(backend_mac(5)), 1, DR_SLOT)],
            ),
            testing::with_persistence(
                testing::with_forwarding(
                    testing::service_with_ports(
                        "192.0.2.62",
                        &[80, 443],
                        Protocol::Tcp,
                        Algorithm::Maglev,
                        vec![backend("10.0.1.6", Some(backend_mac(6)), 1, GROUP_SLOT)],
                    ),
                    Forwarding::Nat,
                ),
                300,
                "255.255.255.0",
                1,
            ),
        ],
        blocks.to_vec(),
    )
    .with_persistence(Arc::new(PersistenceTable::new(64)))
    .with_interfaces(testing::interfaces(1500))
}

fn nat(
    vip_port: &str,
    protocol: Protocol,
    backends: Vec<dataplane::Backend>,
) -> dataplane::Service {
    testing::with_forwarding(
        service(vip_port, protocol, Algorithm::Maglev, backends),
        Forwarding::Nat,
    )
}

/// Arriving on the client side.
fn from_client(frame: FrameBuilder) -> FrameBuilder {
    frame.eth_src(ROUTER_MAC).eth_dst(DIRECTOR_MAC)
}

/// Arriving on the server side from real server `n`.
fn from_server(frame: FrameBuilder, n: u8) -> FrameBuilder {
    frame.eth_src(backend_mac(n)).eth_dst(SERVER_SIDE_MAC)
}

/// Leaving the server side toward real server `n`.
fn to_server(frame: FrameBuilder, n: u8) -> FrameBuilder {
    frame.eth_src(SERVER_SIDE_MAC).eth_dst(backend_mac(n))
}

/// Leaving the client side toward the router.
fn to_client(frame: FrameBuilder) -> FrameBuilder {
    frame.eth_src(DIRECTOR_MAC).eth_dst(ROUTER_MAC)
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

struct Step {
    description: &'static str,
    input: Vec<u8>,
    verdict: Verdict,
    /// For `Tx`, the frame sent; for drops, the input (untouched).
    output: Vec<u8>,
}

/// A frame sent from where it was received, rewritten to `output`.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the golden table passes builders inline"
)]
fn sent(
    description: &'static str,
    input: FrameBuilder,
    output: FrameBuilder,
    egress: Egress,
) -> Step {
    let output = output.build();
    Step {
        description,
        input: input.build(),
        verdict: Verdict::Tx {
            start: UMEM_HEADROOM,
            len: output.len(),
            egress,
        },
        output,
    }
}

/// A frame encapsulated: it starts 20 bytes earlier.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the golden table passes builders inline"
)]
fn tunnel_step(description: &'static str, input: FrameBuilder, output: Vec<u8>) -> Step {
    Step {
        description,
        input: input.build(),
        verdict: Verdict::Tx {
            start: UMEM_HEADROOM - 20,
            len: output.len(),
            egress: Egress::Ingress,
        },
        output,
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the golden table passes builders inline"
)]
fn refused(description: &'static str, input: FrameBuilder, reason: DropReason) -> Step {
    let input = input.build();
    Step {
        description,
        output: input.clone(),
        input,
        verdict: Verdict::Drop(reason),
    }
}

// One step per line (or two) reads as a table.
#[rustfmt::skip]
fn conversation() -> Vec<Step> {
    use DropReason::*;
    let (peer, ingress) = (Egress::Peer, Egress::Ingress);
    let tcp = |src: &str, dst: &str, ttl: u8| FrameBuilder::tcp().src(src).dst(dst).ttl(ttl);
    let udp = |src: &str, dst: &str, ttl: u8| FrameBuilder::udp().src(src).dst(dst).ttl(ttl).payload(b"\x12\x34\x01\x00");
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let page = [0x5a; 300];

    // ICMP quotes, as the erring packet travelled.
    let q_query_rs = udp(CLIENT, DNS_RS, 63).build_ipv4();
    let q_query_vip = udp(CLIENT, DNS_VIP, 63).build_ipv4();
    let big = |src: &str| tcp(src, CLIENT, 63).ack().psh().payload(&[0x5a; 1460]).build_ipv4();
    let (q_big_vip, q_big_rs) = (big(NAT_VIP), big(NAT_RS));
    let q_unknown = udp("198.51.100.99:999", DNS_RS, 63).build_ipv4();
    let q_tun = tcp(TUN_VIP, CLIENT, 64).ack().payload(&[1; 1400]).build_ipv4();
    let q_dr = tcp(DR_VIP, CLIENT, 64).ack().payload(&[1; 1400]).build_ipv4();
    let frag = |dst: &str, quote: &[u8]| icmp_error(ROUTER, dst, message::DEST_UNREACHABLE, unreachable::FRAG_NEEDED, 1400, quote);
    let port = |src: &str, dst: &str, quote: &[u8]| icmp_error(src, dst, message::DEST_UNREACHABLE, unreachable::PORT, 0, quote);

    let tun_syn = tcp(CLIENT, TUN_VIP, 64).syn();
    let tun_get = tcp(CLIENT, TUN_VIP, 64).ack().payload(get);
    let tun_big = tcp(CLIENT, TUN_VIP, 64).ack().tos(0x10).payload(&[9; 1460]);
    let icmp_tun = frag(TUN_VIP, &q_tun[..28]);
    let icmp_dr = frag(DR_VIP, &q_dr[..28]);

    vec![
        // NAT, TCP with port mapping: client -> VIP:80 becomes client -> RS:8080 and back.
        sent("NAT in: SYN to VIP:80 goes to RS:8080 out of the server side",
            from_client(tcp(CLIENT, NAT_VIP, 64).syn()), to_server(tcp(CLIENT, NAT_RS, 63).syn(), 1), peer),
        sent("NAT out: the SYN-ACK from RS:8080, found by the reply index, leaves as VIP:80",
            from_server(tcp(NAT_RS, CLIENT, 64).syn().ack(), 1), to_client(tcp(NAT_VIP, CLIENT, 63).syn().ack()), peer),
        sent("NAT in: the request",
            from_client(tcp(CLIENT, NAT_VIP, 60).ack().psh().payload(get)), to_server(tcp(CLIENT, NAT_RS, 59).ack().psh().payload(get), 1), peer),
        sent("NAT out: the response",
            from_server(tcp(NAT_RS, CLIENT, 64).ack().psh().payload(&page), 1), to_client(tcp(NAT_VIP, CLIENT, 63).ack().psh().payload(&page)), peer),
        sent("ICMP in: fragmentation needed about a response goes to RS:8080",
            from_client(frag(NAT_VIP, &q_big_vip[..40])), to_server(frag(NAT_RS, &q_big_rs[..40]).ttl(63), 1), peer),
        // NAT, UDP without port mapping, and an ICMP error from the real server.
        sent("NAT in: UDP query, port 0 on the backend keeps the service port",
            from_client(udp(CLIENT, DNS_VIP, 64)), to_server(udp(CLIENT, DNS_RS, 63), 2), peer),
        sent("ICMP out: port unreachable from the real server about the query",
            from_server(port(DNS_RS, CLIENT, &q_query_rs), 2), to_client(port(DNS_VIP, CLIENT, &q_query_vip).ttl(63)), peer),
        sent("NAT out: a UDP answer",
            from_server(udp(DNS_RS, CLIENT, 64), 2), to_client(udp(DNS_VIP, CLIENT, 63)), peer),
        // NAT refusals.
        refused("NAT out: a reply of no known connection (another client port)",
            from_server(tcp(NAT_RS, "198.51.100.7:40001", 64).ack(), 1), NoService),
        refused("NAT out: from the right server but the unmapped port",
            from_server(tcp("10.0.1.1:80", CLIENT, 64).ack(), 1), NoService),
        refused("ICMP: an error quoting no known flow",
            from_server(port(DNS_RS, "198.51.100.99:0", &q_unknown), 2), IcmpNoConnection),
        refused("ICMP: echo request to a NAT VIP",
            from_client(FrameBuilder::icmp().src(CLIENT).dst(NAT_VIP)), UnsupportedProtocol),
        refused("NAT in: TTL 1", from_client(tcp(CLIENT, NAT_VIP, 1).ack()), TtlExpired),
        refused("NAT out: TTL 1", from_server(tcp(NAT_RS, CLIENT, 1).ack(), 1), TtlExpired),
        refused("NAT in: backend MAC unresolved", from_client(tcp(CLIENT, "192.0.2.61:80", 64).syn()), NeighbourUnresolved),
        // TUN: encapsulated in front of the frame, out of the interface it came in on.
        tunnel_step("TUN: SYN encapsulated to the RS from the client side's address, ident 0",
            from_client(tun_syn.clone()), tunnelled(&tun_syn, TUN_RS, 3, 0)),
        tunnel_step("TUN: the request, outer ident 1",
            from_client(tun_get.clone()), tunnelled(&tun_get, TUN_RS, 3, 1)),
        sent("TUN: 1500 bytes with DF: fragmentation needed (MTU 1480) back to the client",
            from_client(tun_big.clone()),
            to_client(icmp_error(TUN_VIP, CLIENT, message::DEST_UNREACHABLE, unreachable::FRAG_NEEDED, 1480, &tun_big.build_ipv4()[..28])
                .tos(0xc0 | 0x10).ident(0).dont_fragment(false).ttl(64)),
            ingress),
        refused("TUN: 1500 bytes without DF", from_client(tcp(CLIENT, TUN_VIP, 64).ack().dont_fragment(false).payload(&[9; 1460])), TooBig),
        tunnel_step("ICMP in: fragmentation needed about a TUN reply is tunnelled to its RS (ident 2)",
            from_client(icmp_error(ROUTER, TUN_VIP, message::DEST_UNREACHABLE, unreachable::FRAG_NEEDED, 1400, &q_tun[..28])),
            tunnelled(&icmp_tun, TUN_RS, 3, 2)),
        // DR: an error about a reply goes to the real server as DR frames do.
        sent("DR: SYN", from_client(tcp(CLIENT, DR_VIP, 64).syn()), tcp(CLIENT, DR_VIP, 64).syn().eth_src(DIRECTOR_MAC).eth_dst(backend_mac(5)), ingress),
        sent("ICMP in: fragmentation needed about a DR reply is re-addressed to its RS",
            from_client(icmp_dr.clone()), icmp_dr.eth_src(DIRECTOR_MAC).eth_dst(backend_mac(5)), ingress),
    ]
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn drops(counters: &WorkerCounters) -> Vec<(DropReason, u64)> {
    DropReason::ALL
        .iter()
        .map(|&reason| (reason, counters.drops(reason)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

#[test]
fn nat_tun_conversation() {
    use DropReason::*;
    let blocks = testing::counter_blocks(1, SLOTS);
    let table = golden_table(&blocks);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 64);
    let now = Instant::now();
    let mut failures = Vec::new();
    for step in conversation() {
        let (verdict, frame) = testing::run(&mut pipeline, &step.input, &table, now, &counters);
        let mut problems = Vec::new();
        if verdict != step.verdict {
            problems.push(format!(
                "verdict: expected {:?}, got {verdict:?}",
                step.verdict
            ));
        }
        if let Some(diff) = testing::diff(&step.output, &frame) {
            problems.push(format!("output frame:\n{diff}"));
        }
        if !problems.is_empty() {
            failures.push(format!("--- {}\n{}", step.description, problems.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} step(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Every refusal counted once under its reason.
    assert_eq!(
        drops(&counters),
        vec![
            (UnsupportedProtocol, 1),
            (NoService, 2),
            (NeighbourUnresolved, 1),
            (TtlExpired, 2),
            (TooBig, 1),
            (IcmpNoConnection, 1),
        ]
    );
    assert_eq!(load(&counters.icmp_frag_needed_sent), 1);

    // Per backend: (new flows, frames in, frames out).
    let stats = |slot: usize| {
        let stats = &table.backend_counters[WORKER][slot];
        (
            load(&stats.connections_total),
            load(&stats.packets_in),
            load(&stats.packets_out),
        )
    };
    assert_eq!(
        stats(NAT_SLOT),
        (1, 3, 2),
        "SYN, request, ICMP in; SYN-ACK, response out"
    );
    assert_eq!(stats(DNS_SLOT), (1, 1, 2), "query; ICMP and answer out");
    assert_eq!(
        stats(TUN_SLOT),
        (1, 3, 0),
        "SYN, request, ICMP; the frag-needed is not counted"
    );
    assert_eq!(stats(DR_SLOT), (1, 2, 0));
    let bytes_out = load(&table.backend_counters[WORKER][NAT_SLOT].bytes_out);
    assert_eq!(
        bytes_out,
        60 + 14 + 20 + 20 + 300,
        "received lengths of the two replies"
    );

    // The NAT flow is established by the client's ACK and findable both ways.
    let key = FlowKey {
        src_addr: Ipv4Addr::new(198, 51, 100, 7).into(),
        dst_addr: Ipv4Addr::new(192, 0, 2, 60).into(),
        src_port: 40000,
        dst_port: 80,
        protocol: Protocol::Tcp,
    };
    let entry = pipeline.connections().get(&key).unwrap();
    assert_eq!(entry.state, ConnState::TcpEstablished);
    assert_eq!(
        (entry.backend, entry.backend_port, entry.nat),
        (IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)), 8080, true)
    );
    let reply = entry.reply_key(&key);
    assert_eq!(pipeline.connections().get_reply(&reply).unwrap().0, &key);
    // Two NAT flows (TCP, UDP) have replies; TUN and DR ones do not.
    assert_eq!(pipeline.connections().reply_len(), 2);
    assert_eq!(pipeline.connections().len(), 4);
    testing::assert_gauges_match(pipeline.connections(), &table, WORKER);
}

#[test]
fn tun_output_uses_the_headroom_exactly() {
    // The golden TUN frame checked in its chunk: written only in the 20 bytes before the
    // received frame and over it, the outer header spelled out byte by byte.
    let blocks = testing::counter_blocks(1, SLOTS);
    let table = golden_table(&blocks);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let input = from_client(FrameBuilder::tcp().src(CLIENT).dst(TUN_VIP).syn()).build();
    let mut chunk = testing::in_chunk(&input);
    let verdict = pipeline.process(
        &mut chunk,
        UMEM_HEADROOM,
        input.len(),
        &table,
        Instant::now(),
        &counters,
    );
    assert_eq!(
        verdict,
        Verdict::Tx {
            start: UMEM_HEADROOM - 20,
            len: 14 + 20 + 40,
            egress: Egress::Ingress
        }
    );
    let start = UMEM_HEADROOM - 20;
    assert!(
        chunk[..start].iter().all(|&byte| byte == 0xee),
        "wrote before the new start"
    );
    assert!(
        chunk[start + 74..]
            .iter()
            .all(|&byte| byte == 0xee || byte == 0),
        "wrote past the frame"
    );
    #[rustfmt::skip]
    let mut expected: Vec<u8> = vec![
        0x02, 0x00, 0x00, 0x00, 0x01, 0x03, // eth dst: RS 3
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // eth src: client side (ingress)
        0x08, 0x00,
        0x45, 0x00, 0x00, 0x3c, // outer: IHL 5, TOS 0, total 60
        0x00, 0x00, 0x40, 0x00, // ident 0, DF as the inner
        0x40, 0x04, 0x00, 0x00, // TTL 64, IP-in-IP, checksum below
        192, 0, 2, 1, 10, 0, 0, 3, // client side's address -> RS
    ];
    let sum = !dataplane::wire::checksum::data(&expected[14..34]);
    expected[24..26].copy_from_slice(&sum.to_be_bytes());
    // The inner packet exactly as received (padding dropped).
    expected.extend_from_slice(&input[14..54]);
    testing::assert_frame_eq(&expected, &chunk[start..start + 74], "TUN SYN");
}

#[test]
fn tun_without_headroom_is_refused_untouched() {
    let blocks = testing::counter_blocks(1, SLOTS);
    let table = golden_table(&blocks);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let input = from_client(FrameBuilder::tcp().src(CLIENT).dst(TUN_VIP).syn()).build();
    for headroom in [0, 19] {
        let mut chunk = vec![0xee; headroom + input.len()];
        chunk[headroom..].copy_from_slice(&input);
        let before = chunk.clone();
        let verdict = pipeline.process(
            &mut chunk,
            headroom,
            input.len(),
            &table,
            Instant::now(),
            &counters,
        );
        assert_eq!(verdict, Verdict::Drop(DropReason::NoHeadroom));
        assert_eq!(chunk, before);
    }
    assert!(
        pipeline.connections().is_empty(),
        "a dropped frame created an entry"
    );
    // And a frame said to lie outside its buffer.
    let mut chunk = vec![0; 64];
    for (start, len) in [(10, 60), (usize::MAX, 2)] {
        assert_eq!(
            pipeline.process(&mut chunk, start, len, &table, Instant::now(), &counters),
            Verdict::Drop(DropReason::Truncated)
        );
    }
}

#[test]
fn nat_and_tun_need_the_interfaces() {
    let blocks = testing::counter_blocks(1, SLOTS);
    let mut table = golden_table(&blocks);
    table.interfaces = None;
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let now = Instant::now();
    for vip in [NAT_VIP, TUN_VIP] {
        let frame = from_client(FrameBuilder::tcp().src(CLIENT).dst(vip).syn()).build();
        let (verdict, _) = testing::run(&mut pipeline, &frame, &table, now, &counters);
        assert_eq!(
            verdict,
            Verdict::Drop(DropReason::UnsupportedForwarding),
            "{vip}"
        );
    }
    // DR does not need them.
    let frame = from_client(FrameBuilder::tcp().src(CLIENT).dst(DR_VIP).syn()).build();
    let (verdict, _) = testing::run(&mut pipeline, &frame, &table, now, &counters);
    assert!(matches!(
        verdict,
        Verdict::Tx {
            egress: Egress::Ingress,
            ..
        }
    ));
    assert_eq!(pipeline.connections().len(), 1);
}

#[test]
fn nat_reply_needs_the_client_side_next_hop() {
    let blocks = testing::counter_blocks(1, SLOTS);
    let mut interfaces = testing::interfaces(1500);
    interfaces.client.next_hop_mac = None;
    let table = golden_table(&blocks).with_interfaces(interfaces);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let now = Instant::now();
    let syn = from_client(FrameBuilder::tcp().src(CLIENT).dst(NAT_VIP).syn()).build();
    assert!(matches!(
        testing::run(&mut pipeline, &syn, &table, now, &counters).0,
        Verdict::Tx {
            egress: Egress::Peer,
            ..
        }
    ));
    let reply = from_server(FrameBuilder::tcp().src(NAT_RS).dst(CLIENT).syn().ack(), 1).build();
    assert_eq!(
        testing::run(&mut pipeline, &reply, &table, now, &counters).0,
        Verdict::Drop(DropReason::NeighbourUnresolved)
    );
    assert_eq!(
        load(&table.backend_counters[WORKER][NAT_SLOT].packets_out),
        0
    );
}

#[test]
fn nat_tun_cases_cover_their_drop_reasons() {
    // With `golden_cases_cover_every_pipeline_drop_reason` in pipeline_fixtures.rs, every reason
    // the pipeline can return has a golden case; these are the NAT/TUN ones.
    let mut covered: Vec<DropReason> = conversation()
        .iter()
        .filter_map(|step| match step.verdict {
            Verdict::Drop(reason) => Some(reason),
            Verdict::Tx { .. } => None,
        })
        .collect();
    // In the tests above.
    covered.extend([DropReason::NoHeadroom, DropReason::UnsupportedForwarding]);
    for reason in [
        DropReason::TtlExpired,
        DropReason::TooBig,
        DropReason::NoHeadroom,
        DropReason::UnsupportedForwarding,
        DropReason::IcmpNoConnection,
    ] {
        assert!(covered.contains(&reason), "no NAT/TUN case for {reason:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviour across packets.

fn nat_key(src_port: u16) -> FlowKey {
    FlowKey {
        src_addr: Ipv4Addr::new(198, 51, 100, 7).into(),
        dst_addr: Ipv4Addr::new(192, 0, 2, 60).into(),
        src_port,
        dst_port: 80,
        protocol: Protocol::Tcp,
    }
}

/// Sends `frame`, panicking unless it is transmitted; returns the verdict and the frame sent.
#[track_caller]
fn send(
    pipeline: &mut Pipeline,
    frame: &FrameBuilder,
    table: &ServiceTable,
    now: Instant,
    counters: &WorkerCounters,
) -> (Verdict, Vec<u8>) {
    let (verdict, bytes) = testing::run(pipeline, &frame.build(), table, now, counters);
    assert!(
        matches!(verdict, Verdict::Tx { .. }),
        "{verdict:?}, drops so far: {:?}",
        drops(counters)
    );
    (verdict, bytes)
}

#[test]
fn server_replies_move_nat_state_and_gauges() {
    let blocks = testing::counter_blocks(1, SLOTS);
    let table = golden_table(&blocks);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let start = Instant::now();
    let client = |port: u16| {
        from_client(
            FrameBuilder::tcp()
                .src(&format!("198.51.100.7:{port}"))
                .dst(NAT_VIP),
        )
    };
    let server = |port: u16| {
        from_server(
            FrameBuilder::tcp()
                .src(NAT_RS)
                .dst(&format!("198.51.100.7:{port}")),
            1,
        )
    };
    let gauges = || {
        let stats = &table.backend_counters[WORKER][NAT_SLOT];
        (
            load(&stats.active_connections),
            load(&stats.inactive_connections),
        )
    };
    let state =
        |pipeline: &Pipeline, port| pipeline.connections().get(&nat_key(port)).unwrap().state;

    send(&mut pipeline, &client(1000).syn(), &table, start, &counters);
    // The server's SYN-ACK does not establish the flow; the client's ACK does.
    send(
        &mut pipeline,
        &server(1000).syn().ack(),
        &table,
        start,
        &counters,
    );
    assert_eq!(state(&pipeline, 1000), ConnState::TcpSyn);
    assert_eq!(gauges(), (0, 1));
    send(&mut pipeline, &client(1000).ack(), &table, start, &counters);
    assert_eq!(
        (state(&pipeline, 1000), gauges()),
        (ConnState::TcpEstablished, (1, 0))
    );
    // The server closes: FIN, then the server resets another flow.
    send(
        &mut pipeline,
        &server(1000).fin().ack(),
        &table,
        start,
        &counters,
    );
    assert_eq!(
        (state(&pipeline, 1000), gauges()),
        (ConnState::TcpFinWait, (0, 1))
    );
    send(&mut pipeline, &client(1001).syn(), &table, start, &counters);
    send(&mut pipeline, &server(1001).rst(), &table, start, &counters);
    assert_eq!(
        (state(&pipeline, 1001), gauges()),
        (ConnState::TcpClose, (0, 2))
    );
    testing::assert_gauges_match(pipeline.connections(), &table, WORKER);

    // Replies keep an idle flow alive: 100 s of replies only, past the 60 s SYN timeout.
    send(&mut pipeline, &client(1002).syn(), &table, start, &counters);
    for second in (10..=100).step_by(10) {
        send(
            &mut pipeline,
            &server(1002).syn().ack(),
            &table,
            start + Duration::from_secs(second),
            &counters,
        );
    }
    pipeline.housekeeping(&table, start + Duration::from_secs(150), &counters);
    assert!(
        pipeline.connections().get(&nat_key(1002)).is_some(),
        "replies did not refresh"
    );
    // Expired with its entry, the reply tuple is gone too.
    pipeline.housekeeping(&table, start + Duration::from_secs(1000), &counters);
    assert!(pipeline.connections().is_empty());
    assert_eq!(pipeline.connections().reply_len(), 0);
    let (verdict, _) = testing::run(
        &mut pipeline,
        &server(1002).ack().build(),
        &table,
        start + Duration::from_secs(1000),
        &counters,
    );
    assert_eq!(verdict, Verdict::Drop(DropReason::NoService));
    testing::assert_gauges_match(pipeline.connections(), &table, WORKER);
}

/// A NAT service on NAT_VIP over 10.0.1.n:8080 (slot n) with `algorithm`.
fn nat_servers(
    generation: u64,
    algorithm: Algorithm,
    numbers: &[u8],
    blocks: &[Arc<[dataplane::counters::BackendCounters]>],
) -> ServiceTable {
    let servers = numbers
        .iter()
        .map(|&n| {
            testing::with_port(
                backend(
                    &format!("10.0.1.{n}"),
                    Some(backend_mac(n)),
                    1,
                    usize::from(n),
                ),
                8080,
            )
        })
        .collect();
    testing::table(
        generation,
        vec![testing::with_forwarding(
            service(NAT_VIP, Protocol::Tcp, algorithm, servers),
            Forwarding::Nat,
        )],
        blocks.to_vec(),
    )
    .with_interfaces(testing::interfaces(1500))
}

/// A segment from NAT real server 10.0.1.n:8080 to [`CLIENT`].
fn nat_reply_from(n: u8) -> FrameBuilder {
    from_server(
        FrameBuilder::tcp()
            .src(&format!("10.0.1.{n}:8080"))
            .dst(CLIENT),
        n,
    )
}

/// After [`CLIENT`]'s flow moved from real server `old` to `new`: only `new`'s replies are
/// translated for the client (the reply index moved with the entry), and the gauges add up.
#[track_caller]
fn assert_replies_moved(
    pipeline: &mut Pipeline,
    table: &ServiceTable,
    (old, new): (u8, u8),
    now: Instant,
    counters: &WorkerCounters,
) {
    let (verdict, _) = testing::run(
        pipeline,
        &nat_reply_from(old).ack().build(),
        table,
        now,
        counters,
    );
    assert_eq!(
        verdict,
        Verdict::Drop(DropReason::NoService),
        "the old server's replies"
    );
    let (_, out) = send(pipeline, &nat_reply_from(new).ack(), table, now, counters);
    assert_eq!(&out[26..30], &[192, 0, 2, 60], "sent as the VIP");
    assert_eq!(pipeline.connections().reply_len(), 1);
    testing::assert_gauges_match(pipeline.connections(), table, WORKER);
}

#[test]
fn rescheduled_nat_flow_takes_its_replies_along() {
    let blocks = testing::counter_blocks(1, 4);
    let table =
        |generation, numbers: &[u8]| nat_servers(generation, Algorithm::Maglev, numbers, &blocks);
    let (first, second) = (table(1, &[1, 2]), table(2, &[3]));
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let now = Instant::now();
    let syn = from_client(FrameBuilder::tcp().src(CLIENT).dst(NAT_VIP).syn());
    let (_, sent) = send(&mut pipeline, &syn, &first, now, &counters);
    let n = sent[5];
    assert!(n == 1 || n == 2);
    send(
        &mut pipeline,
        &nat_reply_from(n).ack(),
        &first,
        now,
        &counters,
    );

    // Its server left: the next client frame reschedules it onto 10.0.1.3, replies follow.
    let ack = from_client(FrameBuilder::tcp().src(CLIENT).dst(NAT_VIP).ack());
    let (_, sent) = send(&mut pipeline, &ack, &second, now, &counters);
    assert_eq!(sent[5], 3);
    assert_replies_moved(&mut pipeline, &second, (n, 3), now, &counters);
}

/// A client reusing a closed NAT connection's source port gets a new server, and the reply
/// index moves with it: the new server's replies reach the client, the old one's do not.
#[test]
fn reopened_nat_flow_takes_its_replies_along() {
    let blocks = testing::counter_blocks(1, 4);
    let table = nat_servers(1, Algorithm::RoundRobin, &[1, 2], &blocks);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let now = Instant::now();
    let client = || from_client(FrameBuilder::tcp().src(CLIENT).dst(NAT_VIP));
    let (_, sent) = send(&mut pipeline, &client().syn(), &table, now, &counters);
    assert_eq!(sent[5], 1);
    send(
        &mut pipeline,
        &nat_reply_from(1).syn().ack(),
        &table,
        now,
        &counters,
    );
    send(&mut pipeline, &client().ack(), &table, now, &counters);
    send(
        &mut pipeline,
        &nat_reply_from(1).fin().ack(),
        &table,
        now,
        &counters,
    );
    send(&mut pipeline, &client().fin().ack(), &table, now, &counters);

    let (_, sent) = send(&mut pipeline, &client().syn(), &table, now, &counters);
    assert_eq!(sent[5], 2, "the reused port is scheduled afresh");
    assert_eq!(load(&counters.connections_reopened), 1);
    assert_replies_moved(&mut pipeline, &table, (1, 2), now, &counters);
}

/// A persistent TUN service group on 192.0.2.70:{80,443} (10.0.0.1-4, slots 0-3, group 1) and
/// a persistent NAT one on 192.0.2.62:{80,443} (10.0.1.5-6, slots 4-5, group 2), both /24.
fn persistent_nat_and_tun() -> ServiceTable {
    let blocks = testing::counter_blocks(1, 6);
    let tun_servers = (1..=4)
        .map(|n| {
            backend(
                &format!("10.0.0.{n}"),
                Some(backend_mac(n)),
                1,
                usize::from(n) - 1,
            )
        })
        .collect::<Vec<_>>();
    let nat_servers = (5..=6)
        .map(|n| {
            backend(
                &format!("10.0.1.{n}"),
                Some(backend_mac(n)),
                1,
                usize::from(n) - 1,
            )
        })
        .collect::<Vec<_>>();
    testing::table(
        1,
        vec![
            testing::with_persistence(
                testing::with_forwarding(
                    testing::service_with_ports(
                        "192.0.2.70",
                        &[80, 443],
                        Protocol::Tcp,
                        Algorithm::Maglev,
                        tun_servers,
                    ),
                    Forwarding::Tunnel,
                ),
                300,
                "255.255.255.0",
                1,
            ),
            testing::with_persistence(
                testing::with_forwarding(
                    testing::service_with_ports(
                        "192.0.2.62",
                        &[80, 443],
                        Protocol::Tcp,
                        Algorithm::Maglev,
                        nat_servers,
                    ),
                    Forwarding::Nat,
                ),
                300,
                "255.255.255.0",
                2,
            ),
        ],
        blocks,
    )
    .with_persistence(Arc::new(PersistenceTable::new(1024)))
    .with_interfaces(testing::interfaces(1500))
}

#[test]
fn persistence_holds_for_nat_and_tun() {
    let table = persistent_nat_and_tun();
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 1024);
    let now = Instant::now();

    for client in 1..=20u8 {
        // Many source ports, both ports of each group: one real server per client and group.
        let mut tun_servers = Vec::new();
        let mut nat_servers = Vec::new();
        for src_port in 0..8u16 {
            let src = format!("198.51.{client}.{}:{}", src_port + 1, 20000 + src_port);
            let service_port = if src_port % 2 == 0 { 80 } else { 443 };
            let frame = from_client(
                FrameBuilder::tcp()
                    .src(&src)
                    .dst(&format!("192.0.2.70:{service_port}"))
                    .syn(),
            );
            let (verdict, out) = send(&mut pipeline, &frame, &table, now, &counters);
            assert!(matches!(
                verdict,
                Verdict::Tx {
                    egress: Egress::Ingress,
                    ..
                }
            ));
            tun_servers.push(out[5]);
            let frame = from_client(
                FrameBuilder::tcp()
                    .src(&src)
                    .dst(&format!("192.0.2.62:{service_port}"))
                    .syn(),
            );
            let (verdict, out) = send(&mut pipeline, &frame, &table, now, &counters);
            assert!(matches!(
                verdict,
                Verdict::Tx {
                    egress: Egress::Peer,
                    ..
                }
            ));
            nat_servers.push(out[5]);
            // The NAT server answers; its reply goes back as the VIP.
            let reply = from_server(
                FrameBuilder::tcp()
                    .src(&format!("10.0.1.{}:{service_port}", out[5]))
                    .dst(&src)
                    .syn()
                    .ack(),
                out[5],
            );
            send(&mut pipeline, &reply, &table, now, &counters);
        }
        tun_servers.dedup();
        nat_servers.dedup();
        assert_eq!(
            tun_servers.len(),
            1,
            "TUN client {client} spread over {tun_servers:?}"
        );
        assert_eq!(
            nat_servers.len(),
            1,
            "NAT client {client} spread over {nat_servers:?}"
        );
        let client_net = u32::from(Ipv4Addr::new(198, 51, client, 0));
        assert_eq!(
            table
                .persistence
                .lookup(1, IpAddr::V4(Ipv4Addr::from(client_net)), now),
            Template::Live {
                counter_slot: usize::from(tun_servers[0]) - 1
            }
        );
        assert_eq!(
            table
                .persistence
                .lookup(2, IpAddr::V4(Ipv4Addr::from(client_net)), now),
            Template::Live {
                counter_slot: usize::from(nat_servers[0]) - 1
            }
        );
    }
    assert_eq!(load(&counters.persistence_table_full), 0);
    assert_eq!(load(&counters.persistence_inserts), 40);
    assert_eq!(load(&counters.persistence_hits), 40 * 7);
    testing::assert_gauges_match(pipeline.connections(), &table, WORKER);
    let block = &table.backend_counters[WORKER];
    let total: u64 = block
        .iter()
        .map(|stats| load(&stats.connections_total))
        .sum();
    assert_eq!(total, 320, "every flow counted once as new");
    let out: u64 = block.iter().map(|stats| load(&stats.packets_out)).sum();
    assert_eq!(out, 160, "NAT replies counted on their servers");
}
