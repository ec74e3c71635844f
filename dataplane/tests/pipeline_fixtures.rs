//! Golden-packet tests for `Pipeline::process`, Katran style: a table of
//! `{description, input, expected verdict, expected output bytes}` built with the readable
//! `testing::FrameBuilder`, run through a real `ServiceTable` with real schedulers. A mismatch
//! prints which header fields differ. Then behaviour across packets: stickiness across table
//! generations, rescheduling, connection states and timeouts, a full table.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::conntrack::{ConnState, FlowKey};
use dataplane::counters::BackendCounters;
use dataplane::persistence::Template;
use dataplane::testing::{
    self, backend, backend_mac, service, FrameBuilder, Ipv6FrameBuilder, DIRECTOR_MAC,
};
use dataplane::wire::EtherType;
use dataplane::{
    DropReason, Egress, PersistenceTable, Pipeline, Protocol, ServiceTable, Verdict, WorkerCounters,
};
use scheduler::Algorithm;

const WORKER: usize = 0;

/// Services of the golden table:
/// - tcp 192.0.2.10:80 -> 10.0.0.1 (slot 0)
/// - udp 192.0.2.53:53 -> 10.0.0.2 (slot 1)
/// - tcp 192.0.2.20:80 -> 10.0.0.3 with an unresolved MAC (slot 2)
/// - tcp 192.0.2.30:80 -> 10.0.0.4 and 10.0.0.5, both weight 0 (slots 3, 4)
/// - tcp 192.0.2.40:80 and :443, a persistent service group (/24, 300 s) -> 10.0.0.6 (slot 5)
fn golden_table() -> ServiceTable {
    testing::table(
        1,
        vec![
            service(
                "192.0.2.10:80",
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![backend("10.0.0.1", Some(backend_mac(1)), 1, 0)],
            ),
            service(
                "192.0.2.53:53",
                Protocol::Udp,
                Algorithm::Maglev,
                vec![backend("10.0.0.2", Some(backend_mac(2)), 1, 1)],
            ),
            service(
                "192.0.2.20:80",
                Protocol::Tcp,
                Algorithm::RoundRobin,
                vec![backend("10.0.0.3", None, 1, 2)],
            ),
            service(
                "192.0.2.30:80",
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![
                    backend("10.0.0.4", Some(backend_mac(4)), 0, 3),
                    backend("10.0.0.5", Some(backend_mac(5)), 0, 4),
                ],
            ),
            testing::with_persistence(
                testing::service_with_ports(
                    "192.0.2.40",
                    &[80, 443],
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    vec![backend("10.0.0.6", Some(backend_mac(6)), 1, 5)],
                ),
                300,
                "255.255.255.0",
                1,
            ),
        ],
        testing::counter_blocks(1, GOLDEN_SLOTS),
    )
    .with_persistence(Arc::new(PersistenceTable::new(64)))
}

const GOLDEN_SLOTS: usize = 6;
/// The persistent service group's backend slot.
const PERSISTENT_SLOT: usize = 5;

struct Case {
    description: &'static str,
    input: Vec<u8>,
    verdict: Verdict,
    /// For `Tx`, the rewritten frame; for drops, the input (a drop must not touch the frame).
    output: Vec<u8>,
    /// Backend counter slot that must see the frame (`Tx` only) and whether it is a new flow.
    slot: Option<(usize, bool)>,
}

/// A frame the pipeline sends to `mac`: the same frame re-addressed from the director.
fn to_backend(frame: FrameBuilder, mac: [u8; 6]) -> Vec<u8> {
    frame.eth_src(DIRECTOR_MAC).eth_dst(mac).build()
}

fn tx(
    description: &'static str,
    frame: FrameBuilder,
    mac: [u8; 6],
    slot: usize,
    new_flow: bool,
) -> Case {
    let input = frame.build();
    let output = to_backend(frame, mac);
    Case {
        description,
        input,
        verdict: tx_in_place(output.len(), Egress::Ingress),
        output,
        slot: Some((slot, new_flow)),
    }
}

/// The verdict for a frame sent from where it was received ([`testing::run`] puts it at
/// [`testing::UMEM_HEADROOM`]), `len` bytes long.
fn tx_in_place(len: usize, egress: Egress) -> Verdict {
    Verdict::Tx {
        start: testing::UMEM_HEADROOM,
        len,
        egress,
    }
}

fn dropped(description: &'static str, frame: &FrameBuilder, reason: DropReason) -> Case {
    let input = frame.build();
    Case {
        description,
        output: input.clone(),
        input,
        verdict: Verdict::Drop(reason),
        slot: None,
    }
}

// One case per line reads as a table; rustfmt would spread each over seven.
#[rustfmt::skip]
fn golden_cases() -> Vec<Case> {
    use DropReason::*;
    let web = || FrameBuilder::tcp().src("192.0.2.2:40000").dst("192.0.2.10:80");
    let dns = || FrameBuilder::udp().src("198.51.100.7:5353").dst("192.0.2.53:53");
    let (web_mac, dns_mac) = (backend_mac(1), backend_mac(2));
    let group = |port: u16| FrameBuilder::tcp().src("198.51.100.9:41000").dst(&format!("192.0.2.40:{port}"));
    let mut cases = vec![
        tx("TCP SYN: DR rewrites the MACs and nothing else", web().syn(), web_mac, 0, true),
        tx("TCP SYN carrying 64 bytes of data", web().syn().payload(&[0xab; 64]), web_mac, 0, true),
        tx("mid-flow TCP ACK without an entry is still scheduled", web().ack().psh().payload(b"GET /"), web_mac, 0, true),
        tx("TCP FIN without an entry", web().fin().ack(), web_mac, 0, true),
        tx("TCP RST without an entry is forwarded, no new flow", web().rst(), web_mac, 0, false),
        tx("UDP query", dns().payload(b"\x12\x34\x01\x00"), dns_mac, 1, true),
        tx("UDP with checksum 0 (none) passes untouched", dns().udp_checksum(0).payload(&[1; 30]), dns_mac, 1, true),
        tx("Ethernet padding after the IP packet is kept", web().syn().payload(&[1]), web_mac, 0, true),
        tx("persistent service group, first port: rewritten as any DR frame", group(80).syn(), backend_mac(6), 5, true),
        tx("persistent service group, second port", group(443).syn(), backend_mac(6), 5, true),
        tx("persistent service, RST without an entry: forwarded, no new flow", group(443).rst(), backend_mac(6), 5, false),
        dropped("runt: 13 bytes of Ethernet", &web().syn().truncate(13), Truncated),
        dropped("Ethernet header only", &web().syn().truncate(14), Truncated),
        dropped("IPv4 fixed header cut at 19 bytes", &web().syn().truncate(14 + 19), Truncated),
        dropped("IPv4 total length longer than the frame", &web().syn().total_len(200), Truncated),
        dropped("IPv4 total length shorter than its header", &web().syn().total_len(19), Truncated),
        dropped("frame cut inside the TCP header", &web().syn().truncate(14 + 20 + 10), Truncated),
        dropped("TCP header cut, IPv4 consistent", &web().syn().l4_len(19).unpadded(), Truncated),
        dropped("TCP data offset below 5", &web().syn().tcp_header_len(16), Truncated),
        dropped("TCP data offset beyond the segment", &web().syn().tcp_header_len(60), Truncated),
        dropped("UDP header cut, IPv4 consistent", &dns().l4_len(7).unpadded(), Truncated),
        dropped("ARP request", &FrameBuilder::arp(), NotIp),
        dropped("IPv4 header under the IPv6 EtherType", &web().syn().ethertype(EtherType::IPV6), IpVersionMismatch),
        dropped("another EtherType (0x88B5)", &web().syn().ethertype(EtherType(0x88b5)), NotIp),
        dropped("802.1Q tagged", &web().syn().vlan(100), VlanTagged),
        dropped("802.1ad tagged", &web().syn().qinq(7), VlanTagged),
        dropped("IHL 4", &web().syn().ihl(4), BadIhl),
        dropped("IP version 6 in an IPv4 EtherType", &web().syn().version(6), IpVersionMismatch),
        dropped("IP version 5 in an IPv4 EtherType", &web().syn().version(5), BadIhl),
        dropped("IHL 6 with options", &web().syn().ihl(6), Ipv4Options),
        dropped("IHL 15 with 40 bytes of options", &web().syn().ihl(15), Ipv4Options),
        dropped("first fragment (MF set)", &web().syn().more_fragments(), Fragment),
        dropped("later fragment (offset 1480)", &web().syn().fragment_offset(1480), Fragment),
        dropped("ICMP echo to the VIP", &FrameBuilder::icmp().dst("192.0.2.10:0"), UnsupportedProtocol),
        dropped("GRE (protocol 47)", &web().syn().protocol(47), UnsupportedProtocol),
        dropped("TCP to a port with no service", &web().syn().dst("192.0.2.10:81"), NoService),
        dropped("UDP to a TCP-only VIP:port", &FrameBuilder::udp().dst("192.0.2.10:80"), NoService),
        dropped("TCP to an unknown address", &web().syn().dst("192.0.2.99:80"), NoService),
        dropped("backend MAC unresolved", &web().syn().dst("192.0.2.20:80"), NeighbourUnresolved),
        dropped("every backend has weight 0", &web().syn().dst("192.0.2.30:80"), NoBackend),
    ];
    cases.extend(ipv6_drops());
    cases
}

/// The IPv6 drops (the IPv6 rewrites' golden cases are `ipv6_pipeline.rs`'s).
#[rustfmt::skip]
fn ipv6_drops() -> Vec<Case> {
    use DropReason::*;
    let syn = || Ipv6FrameBuilder::tcp().src("[2001:db8::2]:40000").dst("[2001:db8::10]:80").syn();
    let mut chain = syn();
    for _ in 0..=dataplane::parse::IPV6_MAX_EXTENSION_HEADERS {
        chain = chain.destination_options(0);
    }
    let quote = syn().build_ipv6();
    let dropped6 = |description, input: Vec<u8>, reason| Case {
        description, output: input.clone(), input, verdict: Verdict::Drop(reason), slot: None,
    };
    vec![
        dropped6("IPv6 extension header past the payload", syn().hop_by_hop(3).payload_len(16).build(), Ipv6ExtensionTruncated),
        dropped6("IPv6 extension chain past the walk's bound", chain.build(), Ipv6ExtensionChain),
        dropped6("IPv6 jumbogram", syn().hop_by_hop(0).payload_len(0).build(), Ipv6Jumbogram),
        dropped6("IPv6 payload length beyond the frame", syn().payload_len(1000).build(), Ipv6PayloadLength),
        dropped6("IPv6 header under the IPv4 EtherType", syn().ethertype(EtherType::IPV4).build(), IpVersionMismatch),
        dropped6("ICMPv6 packet too big quoting 44 bytes",
            Ipv6FrameBuilder::icmp6().dst("[2001:db8::10]:0").icmp6_header(2, 0, 1280).payload(&quote[..44]).build(),
            IcmpQuoteTruncated),
        dropped6("IPv6 first fragment", syn().fragment(0, true).build(), Fragment),
        dropped6("IPv6 from an IPv4-mapped source",
            Ipv6FrameBuilder::tcp().src("[::ffff:198.51.100.7]:40000").dst("[2001:db8::10]:80").syn().build(),
            Ipv6MappedAddress),
        dropped6("IPv6 to an IPv4-mapped destination",
            Ipv6FrameBuilder::tcp().src("[2001:db8::2]:40000").dst("[::ffff:192.0.2.10]:80").syn().build(),
            Ipv6MappedAddress),
        dropped6("ICMPv6 error quoting an IPv4-mapped address",
            Ipv6FrameBuilder::icmp6().dst("[2001:db8::10]:0").icmp6_header(2, 0, 1280)
                .payload(&Ipv6FrameBuilder::tcp().src("[2001:db8::10]:80").dst("[::ffff:198.51.100.7]:40000").build_ipv6())
                .build(),
            Ipv6MappedAddress),
        dropped6("ICMPv6 echo request to the VIP", Ipv6FrameBuilder::icmp6().dst("[2001:db8::10]:0").build(), UnsupportedProtocol),
    ]
}

fn drops(counters: &WorkerCounters) -> Vec<(DropReason, u64)> {
    DropReason::ALL
        .iter()
        .map(|&reason| (reason, counters.drops(reason)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

fn backend_stats(table: &ServiceTable, slot: usize) -> (u64, u64, u64) {
    let stats: &BackendCounters = &table.backend_counters[WORKER][slot];
    (
        stats.connections_total.load(Ordering::Relaxed),
        stats.packets_in.load(Ordering::Relaxed),
        stats.bytes_in.load(Ordering::Relaxed),
    )
}

#[test]
fn golden_packets() {
    let mut failures = Vec::new();
    for case in golden_cases() {
        // Each case starts from scratch so its counters are its own.
        let table = golden_table();
        let counters = WorkerCounters::default();
        let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
        let (verdict, frame) = testing::run(
            &mut pipeline,
            &case.input,
            &table,
            Instant::now(),
            &counters,
        );

        let mut problems = Vec::new();
        if verdict != case.verdict {
            problems.push(format!(
                "verdict: expected {:?}, got {verdict:?}",
                case.verdict
            ));
        }
        if let Some(diff) = testing::diff(&case.output, &frame) {
            problems.push(format!("output frame:\n{diff}"));
        }
        let expected_drops = match case.verdict {
            Verdict::Drop(reason) => vec![(reason, 1)],
            Verdict::Tx { .. } => vec![],
        };
        if drops(&counters) != expected_drops {
            problems.push(format!(
                "drop counters: expected {expected_drops:?}, got {:?}",
                drops(&counters)
            ));
        }
        for slot in 0..GOLDEN_SLOTS {
            let expected = match case.slot {
                Some((s, new_flow)) if s == slot => {
                    (u64::from(new_flow), 1, case.input.len() as u64)
                }
                _ => (0, 0, 0),
            };
            let got = backend_stats(&table, slot);
            if got != expected {
                problems.push(format!("backend slot {slot} (connections, packets, bytes): expected {expected:?}, got {got:?}"));
            }
        }
        // Persistent cases: a tracked flow leaves its client's template, an untracked one none.
        if let Some((PERSISTENT_SLOT, new_flow)) = case.slot {
            let client = u32::from(Ipv4Addr::new(198, 51, 100, 0));
            let expected = if new_flow {
                Template::Live {
                    counter_slot: PERSISTENT_SLOT,
                }
            } else {
                Template::Absent
            };
            let got =
                table
                    .persistence
                    .lookup(1, IpAddr::V4(Ipv4Addr::from(client)), Instant::now());
            if got != expected {
                problems.push(format!("template: expected {expected:?}, got {got:?}"));
            }
            let inserts = counters.persistence_inserts.load(Ordering::Relaxed);
            if inserts != u64::from(new_flow) {
                problems.push(format!("persistence_inserts: {inserts}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("--- {}\n{}", case.description, problems.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn golden_cases_cover_every_pipeline_drop_reason() {
    let covered: Vec<DropReason> = golden_cases()
        .iter()
        .filter_map(|case| match case.verdict {
            Verdict::Drop(reason) => Some(reason),
            Verdict::Tx { .. } => None,
        })
        .collect();
    // TX ring full is the worker's to count, never the pipeline's. The NAT/TUN reasons have
    // their pipeline cases in `nat_tun_pipeline.rs` (`nat_tun_cases_cover_their_drop_reasons`),
    // the route ones in `next_hop.rs` (`next_hop_cases_cover_the_route_drop_reasons`).
    let not_pipeline = [
        DropReason::TxRingFull,
        DropReason::TtlExpired,
        DropReason::TooBig,
        DropReason::NoHeadroom,
        DropReason::UnsupportedForwarding,
        DropReason::IcmpNoConnection,
        DropReason::NoRoute,
        DropReason::RouteBlackhole,
        DropReason::RouteUnreachable,
        DropReason::RouteProhibit,
        DropReason::RouteNotServed,
        DropReason::RouteOnlinkUnresolved,
        // Issue 16's floods and thresholds: `tests/floods.rs`.
        DropReason::ConnTableFullSyn,
        DropReason::AllServersOverloaded,
        DropReason::IcmpErrorsRateLimited,
    ];
    for reason in DropReason::ALL {
        if !not_pipeline.contains(&reason) {
            assert!(covered.contains(&reason), "no golden case for {reason:?}");
        }
    }
}

#[test]
fn dr_output_is_exact() {
    // The one golden frame spelled out byte by byte, so the builder cannot hide a mistake.
    let table = golden_table();
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let input = FrameBuilder::tcp()
        .src("192.0.2.2:40000")
        .dst("192.0.2.10:80")
        .syn()
        .build();
    let (verdict, frame) = testing::run(&mut pipeline, &input, &table, Instant::now(), &counters);
    assert_eq!(verdict, tx_in_place(60, Egress::Ingress));
    assert_eq!(
        &frame[0..6],
        &[0x02, 0, 0, 0, 0x01, 0x01],
        "eth.dst = backend 10.0.0.1"
    );
    assert_eq!(
        &frame[6..12],
        &[0x02, 0, 0, 0, 0, 0x0a],
        "eth.src = director"
    );
    assert_eq!(&frame[12..], &input[12..], "nothing after the MACs changes");
    assert_eq!(&frame[26..34], &[192, 0, 2, 2, 192, 0, 2, 10]);
    assert_eq!(frame.len(), 60);
}

// ---------------------------------------------------------------------------------------------
// Behaviour across packets.

fn web_key(src_port: u16) -> FlowKey {
    FlowKey {
        src_addr: Ipv4Addr::new(192, 0, 2, 2).into(),
        dst_addr: Ipv4Addr::new(192, 0, 2, 10).into(),
        src_port,
        dst_port: 80,
        protocol: Protocol::Tcp,
    }
}

fn web(src_port: u16) -> FrameBuilder {
    FrameBuilder::tcp()
        .src(&format!("192.0.2.2:{src_port}"))
        .dst("192.0.2.10:80")
}

/// Sends `frame` and returns the backend MAC it went to, panicking on a drop.
#[track_caller]
fn send(
    pipeline: &mut Pipeline,
    frame: &FrameBuilder,
    table: &ServiceTable,
    now: Instant,
    counters: &WorkerCounters,
) -> [u8; 6] {
    let (verdict, bytes) = testing::run(pipeline, &frame.build(), table, now, counters);
    assert!(
        matches!(verdict, Verdict::Tx { .. }),
        "drops so far: {:?}",
        drops(counters)
    );
    bytes[..6].try_into().unwrap()
}

/// Real servers 10.0.0.1..=n, slot = n - 1, so counters line up across generations.
fn servers(numbers: &[u8]) -> Vec<dataplane::Backend> {
    numbers
        .iter()
        .map(|&n| {
            backend(
                &format!("10.0.0.{n}"),
                Some(backend_mac(n)),
                1,
                usize::from(n) - 1,
            )
        })
        .collect()
}

fn web_table(
    generation: u64,
    algorithm: Algorithm,
    numbers: &[u8],
    blocks: &[std::sync::Arc<[BackendCounters]>],
) -> ServiceTable {
    testing::table(
        generation,
        vec![service(
            "192.0.2.10:80",
            Protocol::Tcp,
            algorithm,
            servers(numbers),
        )],
        blocks.to_vec(),
    )
}

#[test]
fn flows_stick_across_generations() {
    let blocks = testing::counter_blocks(1, 8);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 1024);
    let now = Instant::now();

    let first = web_table(1, Algorithm::Maglev, &[1, 2, 3, 4], &blocks);
    let ports: Vec<u16> = (40000..40300).collect();
    let chosen: Vec<[u8; 6]> = ports
        .iter()
        .map(|&port| send(&mut pipeline, &web(port).syn(), &first, now, &counters))
        .collect();

    // Generation 2: the same servers listed in another order, plus a new one.
    let second = web_table(2, Algorithm::Maglev, &[5, 4, 3, 2, 1], &blocks);
    for (&port, &mac) in ports.iter().zip(&chosen) {
        assert_eq!(
            send(&mut pipeline, &web(port).ack(), &second, now, &counters),
            mac,
            "flow from port {port} moved"
        );
        let entry = pipeline.connections().get(&web_key(port)).unwrap();
        assert_eq!(entry.generation, 2);
        assert_eq!(
            second.services[0].backends[entry.backend_index as usize].address,
            entry.backend
        );
        assert_eq!(entry.state, ConnState::TcpEstablished);
    }

    // Without their entries, some of these flows would now go elsewhere (to 10.0.0.5 at least),
    // so the stickiness above is the connection table's doing.
    let mut fresh = Pipeline::new(WORKER, DIRECTOR_MAC, 1024);
    let moved = ports
        .iter()
        .zip(&chosen)
        .filter(|&(&port, &mac)| send(&mut fresh, &web(port).ack(), &second, now, &counters) != mac)
        .count();
    assert!(moved > 0, "the new generation should remap some flows");
    assert_eq!(drops(&counters), vec![]);
}

#[test]
fn flow_on_a_removed_backend_is_rescheduled() {
    let blocks = testing::counter_blocks(1, 8);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let now = Instant::now();

    let first = web_table(1, Algorithm::RoundRobin, &[1, 2], &blocks);
    let mac = send(&mut pipeline, &web(40000).syn(), &first, now, &counters);
    let removed: u8 = mac[5];
    let remaining: u8 = 3 - removed;

    let second = web_table(2, Algorithm::RoundRobin, &[remaining], &blocks);
    assert_eq!(
        send(&mut pipeline, &web(40000).ack(), &second, now, &counters),
        backend_mac(remaining)
    );
    let entry = pipeline.connections().get(&web_key(40000)).unwrap();
    assert_eq!(entry.backend, Ipv4Addr::new(10, 0, 0, remaining));
    assert_eq!(entry.generation, 2);
    // A new flow for the remaining server, and it stays there.
    assert_eq!(backend_stats(&second, usize::from(remaining) - 1).0, 1);
    assert_eq!(
        send(&mut pipeline, &web(40000).ack(), &second, now, &counters),
        backend_mac(remaining)
    );
    assert_eq!(
        backend_stats(&second, usize::from(remaining) - 1),
        (1, 2, 120)
    );
}

/// A client that reuses a closed connection's source port opens a new connection: scheduled
/// afresh (here onto a server the reload added), not sent to the old connection's server.
#[test]
fn syn_on_a_closing_entry_is_a_new_connection() {
    let blocks = testing::counter_blocks(1, 8);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let now = Instant::now();
    let first = web_table(1, Algorithm::RoundRobin, &[1, 2], &blocks);
    // Port 1 closes with a FIN, port 2 with a RST, port 3 stays open.
    for (port, close) in [
        (1, Some(web(1).fin().ack())),
        (2, Some(web(2).rst())),
        (3, None),
    ] {
        send(&mut pipeline, &web(port).syn(), &first, now, &counters);
        send(&mut pipeline, &web(port).ack(), &first, now, &counters);
        if let Some(close) = close {
            send(&mut pipeline, &close, &first, now, &counters);
        }
    }
    let backend_of =
        |pipeline: &Pipeline, port| pipeline.connections().get(&web_key(port)).unwrap().backend;
    assert_eq!(backend_of(&pipeline, 1), Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(backend_of(&pipeline, 2), Ipv4Addr::new(10, 0, 0, 2));

    // The reload adds 10.0.0.3; round robin's cursor starts over in the new table.
    let second = web_table(2, Algorithm::RoundRobin, &[3, 1, 2], &blocks);
    let new_flows = |slot: usize| backend_stats(&second, slot).0;
    assert_eq!(
        send(&mut pipeline, &web(1).syn(), &second, now, &counters),
        backend_mac(3),
        "reused port after a FIN"
    );
    assert_eq!(
        send(&mut pipeline, &web(2).syn(), &second, now, &counters),
        backend_mac(1),
        "reused port after a RST"
    );
    assert_eq!(load(&counters.connections_reopened), 2);
    assert_eq!(
        (new_flows(2), new_flows(0)),
        (1, 3),
        "ports 1 and 3, then 2"
    );
    for port in [1, 2] {
        let entry = pipeline.connections().get(&web_key(port)).unwrap();
        assert_eq!((entry.state, entry.generation), (ConnState::TcpSyn, 2));
    }
    // Their retransmitted SYNs, and a SYN inside the open flow, keep the server they have.
    assert_eq!(
        send(&mut pipeline, &web(1).syn(), &second, now, &counters),
        backend_mac(3)
    );
    assert_eq!(
        send(&mut pipeline, &web(3).syn(), &second, now, &counters),
        backend_mac(1)
    );
    assert_eq!(
        pipeline.connections().get(&web_key(3)).unwrap().state,
        ConnState::TcpEstablished
    );
    assert_eq!(load(&counters.connections_reopened), 2);
    assert_eq!(load(&counters.connections_created), 3, "rebound, not added");
    testing::assert_gauges_match(pipeline.connections(), &second, WORKER);
    assert_eq!(drops(&counters), vec![]);
}

#[test]
fn drained_backend_keeps_its_flows() {
    let blocks = testing::counter_blocks(1, 8);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let now = Instant::now();
    let first = web_table(1, Algorithm::RoundRobin, &[1, 2], &blocks);
    let mac = send(&mut pipeline, &web(40000).syn(), &first, now, &counters);

    let mut backends = servers(&[1, 2]);
    for backend in &mut backends {
        if backend.mac == Some(mac) {
            backend.weight = 0;
        }
    }
    let drained = testing::table(
        2,
        vec![service(
            "192.0.2.10:80",
            Protocol::Tcp,
            Algorithm::RoundRobin,
            backends,
        )],
        blocks.clone(),
    );
    assert_eq!(
        send(&mut pipeline, &web(40000).ack(), &drained, now, &counters),
        mac
    );
    for port in 40001..40010 {
        assert_ne!(
            send(&mut pipeline, &web(port).syn(), &drained, now, &counters),
            mac,
            "new flows avoid weight 0"
        );
    }
}

#[test]
fn unresolved_backend_does_not_pin_the_flow() {
    let blocks = testing::counter_blocks(1, 8);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let table = testing::table(
        1,
        vec![service(
            "192.0.2.10:80",
            Protocol::Tcp,
            Algorithm::RoundRobin,
            vec![backend("10.0.0.1", None, 1, 0)],
        )],
        blocks,
    );
    let (verdict, _) = testing::run(
        &mut pipeline,
        &web(40000).syn().build(),
        &table,
        Instant::now(),
        &counters,
    );
    assert_eq!(verdict, Verdict::Drop(DropReason::NeighbourUnresolved));
    assert!(pipeline.connections().is_empty());
    assert_eq!(backend_stats(&table, 0), (0, 0, 0));
}

#[test]
fn udp_flows_are_tracked_and_stick() {
    let blocks = testing::counter_blocks(1, 8);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let now = Instant::now();
    let table = testing::table(
        1,
        vec![service(
            "192.0.2.53:53",
            Protocol::Udp,
            Algorithm::RoundRobin,
            servers(&[1, 2, 3]),
        )],
        blocks,
    );
    let query = || {
        FrameBuilder::udp()
            .src("198.51.100.7:5353")
            .dst("192.0.2.53:53")
    };
    let mac = send(&mut pipeline, &query(), &table, now, &counters);
    for _ in 0..5 {
        assert_eq!(send(&mut pipeline, &query(), &table, now, &counters), mac);
    }
    let key = FlowKey {
        src_addr: Ipv4Addr::new(198, 51, 100, 7).into(),
        dst_addr: Ipv4Addr::new(192, 0, 2, 53).into(),
        src_port: 5353,
        dst_port: 53,
        protocol: Protocol::Udp,
    };
    assert_eq!(
        pipeline.connections().get(&key).unwrap().state,
        ConnState::Udp
    );
    assert_eq!(counters.connections_created.load(Ordering::Relaxed), 1);
}

#[test]
fn rst_without_entry_creates_none() {
    let blocks = testing::counter_blocks(1, 8);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let table = web_table(1, Algorithm::Maglev, &[1, 2], &blocks);
    send(
        &mut pipeline,
        &web(40000).rst(),
        &table,
        Instant::now(),
        &counters,
    );
    assert!(pipeline.connections().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Connection states and timeouts (IPVS defaults: SYN 60 s, established 900 s, FIN 120 s,
// close 10 s, UDP 300 s). An entry expires when idle for more than its timeout in whole seconds.

struct Clock {
    start: Instant,
}

impl Clock {
    fn at(&self, seconds: u64) -> Instant {
        self.start + Duration::from_secs(seconds)
    }
}

fn setup(max_connections: usize) -> (Pipeline, ServiceTable, WorkerCounters, Clock) {
    let pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, max_connections);
    // After the pipeline, so no instant precedes its epoch.
    let clock = Clock {
        start: Instant::now(),
    };
    let blocks = testing::counter_blocks(1, 8);
    let table = testing::table(
        1,
        vec![
            service(
                "192.0.2.10:80",
                Protocol::Tcp,
                Algorithm::RoundRobin,
                servers(&[1, 2, 3]),
            ),
            service(
                "192.0.2.53:53",
                Protocol::Udp,
                Algorithm::RoundRobin,
                servers(&[1, 2, 3]),
            ),
        ],
        blocks,
    );
    (pipeline, table, WorkerCounters::default(), clock)
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Sends `frame` at `t0`, then checks the entry's state and that it survives housekeeping at
/// `t0 + timeout` and is gone at `t0 + timeout + 2`.
#[track_caller]
fn check_timeout(setup_frames: &[FrameBuilder], key: FlowKey, state: ConnState, timeout: u64) {
    let (mut pipeline, table, counters, clock) = setup(16);
    for frame in setup_frames {
        send(&mut pipeline, frame, &table, clock.at(0), &counters);
    }
    assert_eq!(
        pipeline.connections().get(&key).map(|entry| entry.state),
        Some(state)
    );
    pipeline.housekeeping(&table, clock.at(timeout), &counters);
    assert!(
        pipeline.connections().get(&key).is_some(),
        "{state:?} expired before {timeout} s"
    );
    assert_eq!(load(&counters.connections_active), 1);
    pipeline.housekeeping(&table, clock.at(timeout + 2), &counters);
    assert!(
        pipeline.connections().get(&key).is_none(),
        "{state:?} outlived {timeout} s"
    );
    assert_eq!(load(&counters.connections_expired), 1);
    assert_eq!(load(&counters.connections_active), 0);
}

#[test]
fn timeout_per_state() {
    check_timeout(&[web(1).syn()], web_key(1), ConnState::TcpSyn, 60);
    check_timeout(&[web(1).ack()], web_key(1), ConnState::TcpSyn, 60); // provisional pickup
    check_timeout(
        &[web(1).syn(), web(1).ack()],
        web_key(1),
        ConnState::TcpEstablished,
        900,
    );
    check_timeout(
        &[web(1).ack(), web(1).ack()],
        web_key(1),
        ConnState::TcpEstablished,
        900,
    );
    check_timeout(
        &[web(1).syn(), web(1).ack(), web(1).fin().ack()],
        web_key(1),
        ConnState::TcpFinWait,
        120,
    );
    check_timeout(
        &[web(1).syn(), web(1).ack(), web(1).rst()],
        web_key(1),
        ConnState::TcpClose,
        10,
    );
    let udp_key = FlowKey {
        dst_addr: Ipv4Addr::new(192, 0, 2, 53).into(),
        dst_port: 53,
        protocol: Protocol::Udp,
        ..web_key(1)
    };
    check_timeout(
        &[FrameBuilder::udp().src("192.0.2.2:1").dst("192.0.2.53:53")],
        udp_key,
        ConnState::Udp,
        300,
    );
}

#[test]
fn traffic_keeps_an_entry_alive() {
    let (mut pipeline, table, counters, clock) = setup(16);
    send(&mut pipeline, &web(1).syn(), &table, clock.at(0), &counters);
    send(&mut pipeline, &web(1).ack(), &table, clock.at(1), &counters);
    for minute in 1..=30 {
        send(
            &mut pipeline,
            &web(1).ack(),
            &table,
            clock.at(minute * 60),
            &counters,
        );
        pipeline.housekeeping(&table, clock.at(minute * 60 + 30), &counters);
    }
    assert!(pipeline.connections().get(&web_key(1)).is_some());
    assert_eq!(load(&counters.connections_expired), 0);
}

#[test]
fn expired_entry_found_before_housekeeping_is_a_new_flow() {
    let (mut pipeline, table, counters, clock) = setup(16);
    let first = send(&mut pipeline, &web(1).syn(), &table, clock.at(0), &counters);
    // Round robin: the next new flow would go to the next server.
    let second = send(
        &mut pipeline,
        &web(1).syn(),
        &table,
        clock.at(62),
        &counters,
    );
    assert_ne!(first, second, "rescheduled after its SYN entry expired");
    assert_eq!(load(&counters.connections_expired), 1);
    assert_eq!(load(&counters.connections_created), 2);
}

#[test]
fn full_table_refuses_syns_and_keeps_established_flows() {
    let (mut pipeline, table, counters, clock) = setup(4);
    for port in 1..=4 {
        send(
            &mut pipeline,
            &web(port).syn(),
            &table,
            clock.at(0),
            &counters,
        );
        send(
            &mut pipeline,
            &web(port).ack(),
            &table,
            clock.at(1),
            &counters,
        );
    }
    assert_eq!(pipeline.connections().len(), 4);

    // A SYN flood: the table is full of established flows with time left, which a SYN may
    // not evict (issue 16): every SYN is refused, counted, and no flow is lost.
    for port in 100..300 {
        let frame = web(port).syn().build();
        let (verdict, _) = testing::run(&mut pipeline, &frame, &table, clock.at(2), &counters);
        assert_eq!(verdict, Verdict::Drop(DropReason::ConnTableFullSyn));
    }
    assert_eq!(pipeline.connections().len(), 4);
    for port in 1..=4 {
        assert_eq!(
            pipeline.connections().get(&web_key(port)).unwrap().state,
            ConnState::TcpEstablished
        );
    }
    assert!(pipeline.connections().get(&web_key(299)).is_none());
    assert_eq!(load(&counters.connections_evicted), 0);
    assert_eq!(drops(&counters), vec![(DropReason::ConnTableFullSyn, 200)]);
    // A UDP flow or a FIN-first one still takes the place nearest its deadline, forwarded.
    send(
        &mut pipeline,
        &web(400).fin(),
        &table,
        clock.at(3),
        &counters,
    );
    assert_eq!(load(&counters.connections_evicted), 1);
    assert!(pipeline.connections().get(&web_key(1)).is_none());
}

#[test]
fn full_table_reclaims_expired_entries_first() {
    let (pipeline, table, counters, clock) = setup(4);
    // No embryonic quota short of the table: the SYNs fill it.
    let mut pipeline = pipeline.with_embryonic_limit(4);
    for port in 1..=4 {
        send(
            &mut pipeline,
            &web(port).syn(),
            &table,
            clock.at(0),
            &counters,
        );
    }
    send(
        &mut pipeline,
        &web(9).syn(),
        &table,
        clock.at(100),
        &counters,
    );
    assert_eq!(load(&counters.connections_expired), 1);
    assert_eq!(load(&counters.connections_evicted), 0);
    assert!(
        pipeline.connections().get(&web_key(1)).is_none(),
        "the oldest goes first"
    );
}

#[test]
fn zero_capacity_table_forwards_without_state() {
    let (mut pipeline, table, counters, clock) = setup(0);
    for port in 1..=3 {
        send(
            &mut pipeline,
            &web(port).syn(),
            &table,
            clock.at(0),
            &counters,
        );
    }
    assert_eq!(load(&counters.conn_table_full), 3);
    assert!(pipeline.connections().is_empty());
}

#[test]
fn housekeeping_publishes_active_gauge() {
    let (mut pipeline, table, counters, clock) = setup(64);
    for port in 1..=10 {
        send(
            &mut pipeline,
            &web(port).syn(),
            &table,
            clock.at(0),
            &counters,
        );
    }
    pipeline.housekeeping(&table, clock.at(1), &counters);
    assert_eq!(load(&counters.connections_active), 10);
    assert_eq!(load(&counters.connections_created), 10);
}

// ---------------------------------------------------------------------------------------------
// Active/inactive gauges: always equal to a recount of the connection table.

fn gauges(table: &ServiceTable, slot: usize) -> (u64, u64) {
    let stats = &table.backend_counters[WORKER][slot];
    (
        load(&stats.active_connections),
        load(&stats.inactive_connections),
    )
}

#[test]
fn gauges_match_a_recount_through_states_expiry_eviction_and_rebind() {
    let (mut pipeline, table, counters, clock) = setup(8);
    let check = |pipeline: &Pipeline, table: &ServiceTable| {
        testing::assert_gauges_match(pipeline.connections(), table, WORKER);
    };
    // Round robin over 10.0.0.1..3 (slots 0..2): ports 1, 2, 3 land on slots 0, 1, 2.
    for port in 1..=3 {
        send(
            &mut pipeline,
            &web(port).syn(),
            &table,
            clock.at(0),
            &counters,
        );
    }
    check(&pipeline, &table);
    assert_eq!(
        [gauges(&table, 0), gauges(&table, 1), gauges(&table, 2)],
        [(0, 1), (0, 1), (0, 1)]
    );
    // Established: active; FIN: inactive again; RST on established: inactive.
    send(&mut pipeline, &web(1).ack(), &table, clock.at(1), &counters);
    send(&mut pipeline, &web(2).ack(), &table, clock.at(1), &counters);
    send(&mut pipeline, &web(3).ack(), &table, clock.at(1), &counters);
    check(&pipeline, &table);
    assert_eq!(gauges(&table, 0), (1, 0));
    send(
        &mut pipeline,
        &web(2).fin().ack(),
        &table,
        clock.at(2),
        &counters,
    );
    send(&mut pipeline, &web(3).rst(), &table, clock.at(2), &counters);
    check(&pipeline, &table);
    assert_eq!(
        [gauges(&table, 0), gauges(&table, 1), gauges(&table, 2)],
        [(1, 0), (0, 1), (0, 1)]
    );
    // UDP counts active (next round-robin pick of the UDP service: slot 0).
    let udp = FrameBuilder::udp()
        .src("192.0.2.2:5000")
        .dst("192.0.2.53:53");
    send(&mut pipeline, &udp, &table, clock.at(2), &counters);
    check(&pipeline, &table);
    assert_eq!(gauges(&table, 0), (2, 0));
    // Expiry: the RST entry (10 s) goes first, then FIN-wait (120 s).
    pipeline.housekeeping(&table, clock.at(14), &counters);
    check(&pipeline, &table);
    assert_eq!(gauges(&table, 2), (0, 0));
    pipeline.housekeeping(&table, clock.at(125), &counters);
    check(&pipeline, &table);
    assert_eq!(gauges(&table, 1), (0, 0));
    // Eviction: a SYN flood into a full table (8 entries).
    for port in 100..120 {
        send(
            &mut pipeline,
            &web(port).syn(),
            &table,
            clock.at(126),
            &counters,
        );
        check(&pipeline, &table);
    }
    assert!(load(&counters.connections_evicted) > 0);
    // Rebind: a new generation without 10.0.0.1 moves its flows (established ones included).
    let blocks = table.backend_counters.clone();
    let second = testing::table(
        2,
        vec![service(
            "192.0.2.10:80",
            Protocol::Tcp,
            Algorithm::RoundRobin,
            servers(&[2, 3]),
        )],
        blocks,
    );
    let on_first: Vec<u16> = pipeline
        .connections()
        .iter()
        .filter(|(key, entry)| key.dst_port == 80 && entry.counter_slot == 0)
        .map(|(key, _)| key.src_port)
        .collect();
    assert!(!on_first.is_empty());
    for port in on_first {
        send(
            &mut pipeline,
            &web(port).ack(),
            &second,
            clock.at(127),
            &counters,
        );
        check(&pipeline, &second);
    }
    let tcp_on_first = pipeline
        .connections()
        .iter()
        .filter(|(key, entry)| key.protocol == Protocol::Tcp && entry.counter_slot == 0)
        .count();
    assert_eq!(tcp_on_first, 0);
    // Everything expires: every gauge back to zero, none underflowed.
    pipeline.housekeeping(&second, clock.at(100_000), &counters);
    assert!(pipeline.connections().is_empty());
    for slot in 0..8 {
        assert_eq!(gauges(&second, slot), (0, 0), "slot {slot}");
    }
}

// ---------------------------------------------------------------------------------------------
// Persistence (IPVS -p/-M): templates shared by workers and by the ports of a service group.

const GROUP: u32 = 7;

/// A persistent service group on 192.0.2.40 ports 80 and 443 over 10.0.0.n (slot n - 1).
fn persistent_table(
    generation: u64,
    algorithm: Algorithm,
    numbers: &[u8],
    timeout_secs: u64,
    netmask: &str,
    blocks: &[Arc<[BackendCounters]>],
    templates: &Arc<PersistenceTable>,
) -> ServiceTable {
    persistent_table_of(
        generation,
        algorithm,
        servers(numbers),
        timeout_secs,
        netmask,
        blocks,
        templates,
    )
}

fn persistent_table_of(
    generation: u64,
    algorithm: Algorithm,
    backends: Vec<dataplane::Backend>,
    timeout_secs: u64,
    netmask: &str,
    blocks: &[Arc<[BackendCounters]>],
    templates: &Arc<PersistenceTable>,
) -> ServiceTable {
    testing::table(
        generation,
        vec![testing::with_persistence(
            testing::service_with_ports(
                "192.0.2.40",
                &[80, 443],
                Protocol::Tcp,
                algorithm,
                backends,
            ),
            timeout_secs,
            netmask,
            GROUP,
        )],
        blocks.to_vec(),
    )
    .with_persistence(Arc::clone(templates))
}

fn client(addr: &str, port: u16, service_port: u16) -> FrameBuilder {
    FrameBuilder::tcp()
        .src(&format!("{addr}:{port}"))
        .dst(&format!("192.0.2.40:{service_port}"))
}

#[test]
fn persistent_client_is_pinned_across_source_ports_group_ports_and_workers() {
    let blocks = testing::counter_blocks(2, 8);
    let templates = Arc::new(PersistenceTable::new(1024));
    // Maglev hashes the 5-tuple: without persistence these would spread over all four.
    let table = persistent_table(
        1,
        Algorithm::Maglev,
        &[1, 2, 3, 4],
        300,
        "255.255.255.255",
        &blocks,
        &templates,
    );
    let (counters0, counters1) = (WorkerCounters::default(), WorkerCounters::default());
    let mut worker0 = Pipeline::new(0, DIRECTOR_MAC, 1024);
    let mut worker1 = Pipeline::new(1, DIRECTOR_MAC, 1024);
    let now = Instant::now();

    let first = send(
        &mut worker0,
        &client("198.51.100.7", 30000, 80).syn(),
        &table,
        now,
        &counters0,
    );
    for port in 30001..30100 {
        let service_port = if port % 2 == 0 { 80 } else { 443 };
        let (pipeline, counters) = if port % 3 == 0 {
            (&mut worker1, &counters1)
        } else {
            (&mut worker0, &counters0)
        };
        let frame = client("198.51.100.7", port, service_port).syn();
        assert_eq!(
            send(pipeline, &frame, &table, now, counters),
            first,
            "port {port}"
        );
    }
    let hits = load(&counters0.persistence_hits) + load(&counters1.persistence_hits);
    let inserts = load(&counters0.persistence_inserts) + load(&counters1.persistence_inserts);
    assert_eq!((hits, inserts), (99, 1));
    assert_eq!(load(&counters0.persistence_table_full), 0);
    // A new flow each, counted on the backend.
    let slot = usize::from(first[5]) - 1;
    let total: u64 = (0..2)
        .map(|worker| load(&table.backend_counters[worker][slot].connections_total))
        .sum();
    assert_eq!(total, 100);
    // Without persistence the same flows do spread: the pinning above is the template's doing.
    let plain = testing::table(
        1,
        vec![testing::service_with_ports(
            "192.0.2.40",
            &[80, 443],
            Protocol::Tcp,
            Algorithm::Maglev,
            servers(&[1, 2, 3, 4]),
        )],
        testing::counter_blocks(1, 8),
    );
    let mut fresh = Pipeline::new(0, DIRECTOR_MAC, 1024);
    let spread: std::collections::HashSet<[u8; 6]> = (30000..30100)
        .map(|port| {
            send(
                &mut fresh,
                &client("198.51.100.7", port, 80).syn(),
                &plain,
                now,
                &counters0,
            )
        })
        .collect();
    assert!(spread.len() > 1);
}

/// A reused source port is a new connection, and a new connection of a persistent client asks
/// its template first: round robin would move it, the template keeps it.
#[test]
fn reopened_flow_of_a_persistent_client_follows_its_template() {
    let blocks = testing::counter_blocks(1, 8);
    let templates = Arc::new(PersistenceTable::new(64));
    let table = persistent_table(
        1,
        Algorithm::RoundRobin,
        &[1, 2, 3],
        300,
        "255.255.255.255",
        &blocks,
        &templates,
    );
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 16);
    let now = Instant::now();
    let flow = || client("198.51.100.7", 30000, 80);
    let first = send(&mut pipeline, &flow().syn(), &table, now, &counters);
    send(&mut pipeline, &flow().fin().ack(), &table, now, &counters);
    assert_eq!(
        send(&mut pipeline, &flow().syn(), &table, now, &counters),
        first
    );
    assert_eq!(load(&counters.connections_reopened), 1);
    assert_eq!(load(&counters.persistence_hits), 1);
    testing::assert_gauges_match(pipeline.connections(), &table, WORKER);
}

#[test]
fn persistent_clients_spread_and_a_netmask_groups_them() {
    let blocks = testing::counter_blocks(1, 8);
    let now = Instant::now();
    let counters = WorkerCounters::default();

    // /32: two hundred clients spread over the servers.
    let templates = Arc::new(PersistenceTable::new(4096));
    let table = persistent_table(
        1,
        Algorithm::Maglev,
        &[1, 2, 3, 4],
        300,
        "255.255.255.255",
        &blocks,
        &templates,
    );
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 4096);
    let used: std::collections::HashSet<[u8; 6]> = (0..200u16)
        .map(|n| {
            let addr = format!("198.51.{}.{}", 100 + n / 100, n % 100 + 1);
            send(
                &mut pipeline,
                &client(&addr, 40000, 443).syn(),
                &table,
                now,
                &counters,
            )
        })
        .collect();
    assert_eq!(used.len(), 4, "clients should use every server");

    // /24: every client of a /24 goes where its first one went; other /24s spread.
    let templates = Arc::new(PersistenceTable::new(4096));
    let table = persistent_table(
        1,
        Algorithm::Maglev,
        &[1, 2, 3, 4],
        300,
        "255.255.255.0",
        &blocks,
        &templates,
    );
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 4096);
    let mut per_network = Vec::new();
    for network in 0..40u16 {
        let pinned = send(
            &mut pipeline,
            &client(&format!("203.0.{network}.1"), 40000, 80).syn(),
            &table,
            now,
            &counters,
        );
        for host in 2..30u16 {
            let addr = format!("203.0.{network}.{host}");
            let frame = client(&addr, 40000 + host, if host % 2 == 0 { 80 } else { 443 }).syn();
            assert_eq!(
                send(&mut pipeline, &frame, &table, now, &counters),
                pinned,
                "{addr}"
            );
        }
        per_network.push(pinned);
    }
    per_network.sort_unstable();
    per_network.dedup();
    assert!(per_network.len() > 1, "different /24s should spread");
}

#[test]
fn persistence_expires_after_timeout_and_traffic_keeps_it() {
    let templates = Arc::new(PersistenceTable::new(64));
    let blocks = testing::counter_blocks(1, 8);
    // Round robin: a client that is rescheduled lands on the next server.
    let table = persistent_table(
        1,
        Algorithm::RoundRobin,
        &[1, 2],
        10,
        "255.255.255.255",
        &blocks,
        &templates,
    );
    let (mut pipeline, counters) = (
        Pipeline::new(WORKER, DIRECTOR_MAC, 64),
        WorkerCounters::default(),
    );
    let clock = Clock {
        start: Instant::now(),
    };

    let first = send(
        &mut pipeline,
        &client("198.51.100.7", 1, 80).syn(),
        &table,
        clock.at(0),
        &counters,
    );
    assert_eq!(
        send(
            &mut pipeline,
            &client("198.51.100.7", 2, 80).syn(),
            &table,
            clock.at(10),
            &counters
        ),
        first,
        "live at the timeout"
    );
    // Idle for more than 10 s since the last packet (at 10): expired at 22.
    let second = send(
        &mut pipeline,
        &client("198.51.100.7", 3, 80).syn(),
        &table,
        clock.at(22),
        &counters,
    );
    assert_ne!(first, second, "rescheduled after the template expired");

    // Packets of an existing connection keep the template alive past its timeout.
    for seconds in (30..100).step_by(5) {
        send(
            &mut pipeline,
            &client("198.51.100.7", 3, 80).ack(),
            &table,
            clock.at(seconds),
            &counters,
        );
    }
    assert_eq!(
        send(
            &mut pipeline,
            &client("198.51.100.7", 4, 443).syn(),
            &table,
            clock.at(100),
            &counters
        ),
        second
    );
    assert_eq!(
        templates.lookup(
            GROUP,
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            clock.at(100)
        ),
        Template::Live {
            counter_slot: usize::from(second[5]) - 1
        }
    );
}

#[test]
fn persistent_client_follows_a_drained_backend() {
    let templates = Arc::new(PersistenceTable::new(64));
    let blocks = testing::counter_blocks(1, 8);
    let now = Instant::now();
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 64);
    let table = persistent_table(
        1,
        Algorithm::RoundRobin,
        &[1, 2],
        300,
        "255.255.255.255",
        &blocks,
        &templates,
    );
    let pinned = send(
        &mut pipeline,
        &client("198.51.100.7", 1, 80).syn(),
        &table,
        now,
        &counters,
    );

    let mut backends = servers(&[1, 2]);
    for backend in &mut backends {
        if backend.mac == Some(pinned) {
            backend.weight = 0;
        }
    }
    let drained = persistent_table_of(
        2,
        Algorithm::RoundRobin,
        backends,
        300,
        "255.255.255.255",
        &blocks,
        &templates,
    );
    // IPVS's default (expire_quiescent_template = 0): the persistent client stays.
    for port in 2..10 {
        assert_eq!(
            send(
                &mut pipeline,
                &client("198.51.100.7", port, 443).syn(),
                &drained,
                now,
                &counters
            ),
            pinned
        );
    }
    // New clients avoid it.
    for n in 1..10 {
        assert_ne!(
            send(
                &mut pipeline,
                &client(&format!("198.51.100.{}", 100 + n), 1, 80).syn(),
                &drained,
                now,
                &counters
            ),
            pinned
        );
    }
}

#[test]
fn removed_backend_reschedules_the_client_and_replaces_its_template() {
    let templates = Arc::new(PersistenceTable::new(64));
    let blocks = testing::counter_blocks(1, 8);
    let now = Instant::now();
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 64);
    let table = persistent_table(
        1,
        Algorithm::RoundRobin,
        &[1, 2],
        300,
        "255.255.255.255",
        &blocks,
        &templates,
    );
    let removed = send(
        &mut pipeline,
        &client("198.51.100.7", 1, 80).syn(),
        &table,
        now,
        &counters,
    )[5];
    let remaining = 3 - removed;
    let key = u32::from(Ipv4Addr::new(198, 51, 100, 7));
    assert_eq!(
        templates.lookup(GROUP, IpAddr::V4(Ipv4Addr::from(key)), now),
        Template::Live {
            counter_slot: usize::from(removed) - 1
        }
    );

    let second = persistent_table(
        2,
        Algorithm::RoundRobin,
        &[remaining],
        300,
        "255.255.255.255",
        &blocks,
        &templates,
    );
    // The existing connection moves (its backend is gone), and so does a new one.
    assert_eq!(
        send(
            &mut pipeline,
            &client("198.51.100.7", 1, 80).ack(),
            &second,
            now,
            &counters
        ),
        backend_mac(remaining)
    );
    assert_eq!(
        send(
            &mut pipeline,
            &client("198.51.100.7", 2, 443).syn(),
            &second,
            now,
            &counters
        ),
        backend_mac(remaining)
    );
    assert_eq!(
        templates.lookup(GROUP, IpAddr::V4(Ipv4Addr::from(key)), now),
        Template::Live {
            counter_slot: usize::from(remaining) - 1
        }
    );
    assert_eq!(load(&counters.persistence_inserts), 2);
    assert_eq!(load(&counters.persistence_hits), 1);
    testing::assert_gauges_match(pipeline.connections(), &second, WORKER);
    assert_eq!(gauges(&second, usize::from(removed) - 1), (0, 0));
}

#[test]
fn full_persistence_table_is_counted_and_still_forwards() {
    // Eight slots, eight clients: every neighbourhood is full of live templates.
    let templates = Arc::new(PersistenceTable::new(dataplane::persistence::PROBE));
    let blocks = testing::counter_blocks(1, 8);
    let now = Instant::now();
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(WORKER, DIRECTOR_MAC, 64);
    let table = persistent_table(
        1,
        Algorithm::RoundRobin,
        &[1, 2, 3],
        300,
        "255.255.255.255",
        &blocks,
        &templates,
    );
    for n in 1..=8 {
        send(
            &mut pipeline,
            &client(&format!("198.51.100.{n}"), 1, 80).syn(),
            &table,
            now,
            &counters,
        );
    }
    assert_eq!(load(&counters.persistence_table_full), 0);
    send(
        &mut pipeline,
        &client("198.51.100.9", 1, 80).syn(),
        &table,
        now,
        &counters,
    );
    assert_eq!(load(&counters.persistence_table_full), 1);
    assert_eq!(load(&counters.persistence_inserts), 8);
    assert_eq!(drops(&counters), vec![]);
    // The unpinned client's flow is still tracked like any other.
    assert_eq!(pipeline.connections().len(), 9);
}
