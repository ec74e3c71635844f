//! The hot path must not allocate: a counting global allocator watches thousands of fixture
//! frames (new flows, existing flows, every drop, a full table churning, expiry, a table swap,
//! a persistent service group with its shared template table filling up and expiring; NAT both
//! ways through the reply index, ICMP errors translated both ways, TUN encapsulation and
//! fragmentation-needed answers) go through `Pipeline::process` and `housekeeping` after
//! warm-up, with state sync on (every record exported is moved to a second pipeline, a backup,
//! which imports it), and asserts zero allocations; then again with next hops from a FIB
//! (NAT replies by auto last hop and by route, TUN through an ECMP route). IPv6 too: DR with
//! extension headers, NAT both ways, ICMPv6 errors both ways and every IPv6 drop.
//!
//! Only allocations made by the test's own thread while counting is on are counted, so the
//! harness's threads cannot disturb the result.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloc_count::{allocations_during, CountingAllocator};
use dataplane::fib::{FibBuilder, Neighbour, NeighbourId, Neighbours, NextHop, Route};
use dataplane::sync::SyncQueues;
use dataplane::testing::{
    self, backend, backend_mac, service, FrameBuilder, Ipv6FrameBuilder, CHUNK_SIZE, DIRECTOR_MAC,
    SERVER_SIDE_MAC, UMEM_HEADROOM,
};
use dataplane::wire::icmp::{message, unreachable};
use dataplane::wire::{icmpv6, EtherType};
use dataplane::{
    Forwarding, NatReply, PersistenceTable, Pipeline, Protocol, Routing, ServiceTable, Verdict,
    WorkerCounters,
};
use scheduler::Algorithm;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn table(
    generation: u64,
    web_servers: &[u8],
    blocks: &[std::sync::Arc<[dataplane::counters::BackendCounters]>],
    templates: &Arc<PersistenceTable>,
) -> ServiceTable {
    // Counter slot n (+ offset, so services have their own slots).
    let servers_at = |numbers: &[u8], offset: usize| {
        numbers
            .iter()
            .map(|&n| {
                backend(
                    &format!("10.0.0.{n}"),
                    Some(backend_mac(n)),
                    1,
                    usize::from(n) + offset,
                )
            })
            .collect::<Vec<_>>()
    };
    let servers = |numbers: &[u8]| servers_at(numbers, 0);
    testing::table(
        generation,
        vec![
            service(
                "192.0.2.10:80",
                Protocol::Tcp,
                Algorithm::Maglev,
                servers(web_servers),
            ),
            service(
                "192.0.2.11:80",
                Protocol::Tcp,
                Algorithm::RoundRobin,
                servers(&[1, 2, 3]),
            ),
            service(
                "192.0.2.53:53",
                Protocol::Udp,
                Algorithm::Maglev,
                servers(&[4, 5]),
            ),
            service(
                "192.0.2.20:80",
                Protocol::Tcp,
                Algorithm::RoundRobin,
                vec![backend("10.0.0.9", None, 1, 9)],
            ),
            service(
                "192.0.2.30:80",
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![backend("10.0.0.10", Some(backend_mac(10)), 0, 10)],
            ),
            testing::with_persistence(
                testing::service_with_ports(
                    "192.0.2.12",
                    &[80, 443],
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    servers_at(web_servers, 10),
                ),
                600,
                "255.255.255.0",
                3,
            ),
            // NAT with port mapping onto 10.0.1.n:8080, slots 20..; TUN onto 10.0.0.n, 30...
            testing::with_forwarding(
                service(
                    "192.0.2.60:80",
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    web_servers
                        .iter()
                        .map(|&n| {
                            testing::with_port(
                                backend(
                                    &format!("10.0.1.{n}"),
                                    Some(backend_mac(n)),
                                    1,
                                    usize::from(n) + 20,
                                ),
                                8080,
                            )
                        })
                        .collect(),
                ),
                Forwarding::Nat,
            ),
            testing::with_forwarding(
                service(
                    "192.0.2.70:53",
                    Protocol::Udp,
                    Algorithm::Maglev,
                    servers_at(web_servers, 30),
                ),
                Forwarding::Tunnel,
            ),
        ]
        .into_iter()
        .chain(ipv6_services(web_servers))
        .collect(),
        blocks.to_vec(),
    )
    .with_persistence(Arc::clone(templates))
    .with_interfaces(testing::interfaces(1500))
}

/// The IPv6 services: DR onto 2001:db8::n (slots 40..), NAT onto [2001:db8:a::n]:8080 (50..).
fn ipv6_services(web_servers: &[u8]) -> Vec<dataplane::Service> {
    vec![
        testing::with_persistence(
            service(
                "[2001:db8::10]:80",
                Protocol::Tcp,
                Algorithm::Maglev,
                web_servers
                    .iter()
                    .map(|&n| {
                        backend(
                            &format!("2001:db8::{n}"),
                            Some(backend_mac(n)),
                            1,
                            usize::from(n) + 40,
                        )
                    })
                    .collect(),
            ),
            600,
            "255.255.255.255",
            6,
        ),
        testing::with_forwarding(
            service(
                "[2001:db8::60]:80",
                Protocol::Tcp,
                Algorithm::Maglev,
                web_servers
                    .iter()
                    .map(|&n| {
                        testing::with_port(
                            backend(
                                &format!("2001:db8:a::{n}"),
                                Some(backend_mac(n)),
                                1,
                                usize::from(n) + 50,
                            ),
                            8080,
                        )
                    })
                    .collect(),
            ),
            Forwarding::Nat,
        ),
    ]
}

/// NAT and TUN traffic: client frames, the real servers' replies (every server answers, so the
/// ones of flows on other servers are unknown connections), ICMP errors both ways, too-big
/// tunnel frames with and without DF.
fn nat_tun_fixtures(frames: &mut Vec<Vec<u8>>) {
    for port in 0..600u16 {
        let client = format!("198.51.100.{}:{}", port % 100, 30000 + port);
        let to_vip = || FrameBuilder::tcp().src(&client).dst("192.0.2.60:80");
        frames.push(to_vip().syn().build());
        frames.push(to_vip().ack().payload(b"GET /").build());
        let server = format!("10.0.1.{}:8080", port % 6 + 1);
        let reply = || {
            FrameBuilder::tcp()
                .src(&server)
                .dst(&client)
                .eth_src(backend_mac(1))
                .eth_dst(SERVER_SIDE_MAC)
        };
        frames.push(reply().syn().ack().build());
        frames.push(reply().ack().payload(&[0x42; 200]).build());
        if port % 9 == 0 {
            frames.push(reply().fin().ack().build());
        }
        if port % 5 == 0 {
            // Port unreachable from the server about the client's packet.
            let quote = FrameBuilder::tcp().src(&client).dst(&server).build_ipv4();
            frames.push(
                FrameBuilder::icmp()
                    .src(&server)
                    .dst(&client)
                    .icmp_header(message::DEST_UNREACHABLE, unreachable::PORT, 0)
                    .payload(&quote[..28])
                    .build(),
            );
            // Fragmentation needed from a router about a reply.
            let quote = FrameBuilder::tcp()
                .src("192.0.2.60:80")
                .dst(&client)
                .build_ipv4();
            frames.push(
                FrameBuilder::icmp()
                    .src("203.0.113.1:0")
                    .dst("192.0.2.60:0")
                    .icmp_header(message::DEST_UNREACHABLE, unreachable::FRAG_NEEDED, 1400)
                    .payload(&quote[..40])
                    .build(),
            );
        }
        let tunnelled = || FrameBuilder::udp().src(&client).dst("192.0.2.70:53");
        frames.push(tunnelled().payload(&[1; 100]).build());
        if port % 7 == 0 {
            frames.push(tunnelled().payload(&[2; 1472]).build());
            frames.push(tunnelled().dont_fragment(false).payload(&[3; 1472]).build());
        }
    }
}

/// IPv6 traffic: DR (persistent by address) and NAT both ways with extension headers, ICMPv6
/// errors both ways (port unreachable, packet too big), and the IPv6 drops.
fn ipv6_fixtures(frames: &mut Vec<Vec<u8>>) {
    for port in 0..400u16 {
        let client = format!("[2001:db8:c:{:x}::7]:{}", port % 50, 30000 + port);
        frames.push(
            Ipv6FrameBuilder::tcp()
                .src(&client)
                .dst("[2001:db8::10]:80")
                .destination_options(0)
                .syn()
                .build(),
        );
        let to_vip = || {
            Ipv6FrameBuilder::tcp()
                .src(&client)
                .dst("[2001:db8::60]:80")
        };
        frames.push(to_vip().syn().build());
        frames.push(to_vip().hop_by_hop(0).ack().payload(b"GET /").build());
        let server = format!("[2001:db8:a::{}]:8080", port % 6 + 1);
        let reply = || {
            Ipv6FrameBuilder::tcp()
                .src(&server)
                .dst(&client)
                .eth_dst(SERVER_SIDE_MAC)
        };
        frames.push(reply().syn().ack().build());
        frames.push(reply().ack().payload(&[0x42; 200]).build());
        if port % 5 == 0 {
            let quote = to_vip().dst(&server).build_ipv6();
            frames.push(
                Ipv6FrameBuilder::icmp6()
                    .src(&server)
                    .dst(&client)
                    .icmp6_header(icmpv6::message::DEST_UNREACHABLE, 4, 0)
                    .payload(&quote)
                    .build(),
            );
            let quote = reply()
                .src("[2001:db8::60]:80")
                .payload(&[0x42; 1300])
                .build_ipv6();
            frames.push(
                Ipv6FrameBuilder::icmp6()
                    .src("[2001:db8:ff::1]:0")
                    .dst("[2001:db8::60]:0")
                    .icmp6_header(icmpv6::message::PACKET_TOO_BIG, 0, 1280)
                    .payload(&quote[..1232])
                    .build(),
            );
        }
    }
    let web = || Ipv6FrameBuilder::tcp().dst("[2001:db8::10]:80").syn();
    let mut chain = web();
    for _ in 0..7 {
        chain = chain.destination_options(0);
    }
    frames.extend([
        chain.build(),
        web().hop_by_hop(3).payload_len(16).build(),
        web().hop_by_hop(0).payload_len(0).build(),
        web().payload_len(1000).build(),
        web().ethertype(EtherType::IPV4).build(),
        FrameBuilder::tcp().syn().ethertype(EtherType::IPV6).build(),
        web().fragment(0, true).build(),
        web().dst("[2001:db8::60]:80").hop_limit(1).build(),
        Ipv6FrameBuilder::icmp6().dst("[2001:db8::10]:0").build(),
        Ipv6FrameBuilder::icmp6()
            .dst("[2001:db8::60]:0")
            .icmp6_header(icmpv6::message::PACKET_TOO_BIG, 0, 1280)
            .payload(&web().build_ipv6()[..44])
            .build(),
    ]);
}

/// Fixture frames: many new flows on two schedulers, their follow-up segments, UDP, and every
/// kind of drop.
fn fixtures() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for port in 0..1500u16 {
        let src = format!("198.51.100.{}:{}", port % 200, 10000 + port);
        let vip = if port % 3 == 0 {
            "192.0.2.11:80"
        } else {
            "192.0.2.10:80"
        };
        frames.push(FrameBuilder::tcp().src(&src).dst(vip).syn().build());
        frames.push(
            FrameBuilder::tcp()
                .src(&src)
                .dst(vip)
                .ack()
                .payload(b"GET / HTTP/1.1\r\n\r\n")
                .build(),
        );
        if port % 5 == 0 {
            frames.push(FrameBuilder::tcp().src(&src).dst(vip).fin().ack().build());
        }
        if port % 7 == 0 {
            frames.push(FrameBuilder::tcp().src(&src).dst(vip).rst().build());
        }
        // Persistent service group: clients of 25 /24s (fewer slots than that below), both ports.
        let client = format!("203.0.{}.{}:{}", port % 25, port % 7 + 1, 20000 + port);
        let group_port = if port % 2 == 0 { 80 } else { 443 };
        let group = || {
            FrameBuilder::tcp()
                .src(&client)
                .dst(&format!("192.0.2.12:{group_port}"))
        };
        frames.push(group().syn().build());
        frames.push(group().ack().payload(b"hello").build());
        if port % 4 == 0 {
            frames.push(
                FrameBuilder::udp()
                    .src(&src)
                    .dst("192.0.2.53:53")
                    .payload(&[0; 40])
                    .build(),
            );
        }
    }
    let web = || FrameBuilder::tcp().dst("192.0.2.10:80").syn();
    frames.extend([
        web().truncate(13).build(),
        web().truncate(30).build(),
        web().total_len(300).build(),
        web().l4_len(12).unpadded().build(),
        FrameBuilder::arp().build(),
        web().vlan(10).build(),
        web().ihl(4).build(),
        web().ihl(7).build(),
        web().more_fragments().build(),
        web().fragment_offset(64).build(),
        FrameBuilder::icmp().dst("192.0.2.10:0").build(),
        web().dst("192.0.2.10:8080").build(),
        web().dst("192.0.2.20:80").build(),
        web().dst("192.0.2.30:80").build(),
        web().dst("192.0.2.60:80").ttl(1).build(),
    ]);
    nat_tun_fixtures(&mut frames);
    ipv6_fixtures(&mut frames);
    frames
}

#[test]
fn pipeline_does_not_allocate_per_frame() {
    assert_no_allocations_per_frame(None);
}

/// The same with next hops from a FIB (issue 14): the first table's NAT replies by auto last
/// hop, the second's by route; clients via a gateway, TUN real servers via an ECMP route.
#[test]
fn pipeline_does_not_allocate_per_frame_with_routing() {
    let neighbours = Arc::new(Neighbours::with_capacity(4));
    for slot in 0..3 {
        let id = NeighbourId::new(slot, 0);
        neighbours.publish(id, Neighbour::Resolved([2, 0xaa, 0, 0, 0, slot as u8]));
    }
    let mut fib = FibBuilder::new();
    let via = |slot: u32| NextHop {
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 250 + slot as u8)),
        neighbour: NeighbourId::new(slot, 0),
        ifindex: 1,
        weight: 1,
    };
    let clients = fib.add_route(&Route::Forward(vec![via(0)])).unwrap();
    let servers = fib
        .add_route(&Route::Forward(vec![via(1), via(2)]))
        .unwrap();
    fib.add_v4(Ipv4Addr::new(198, 51, 100, 0), 24, clients)
        .unwrap();
    fib.add_v4(Ipv4Addr::new(10, 0, 0, 0), 24, servers).unwrap();
    let routing = |nat_reply| Routing {
        fib: Arc::new(fib.clone().build()),
        neighbours: Arc::clone(&neighbours),
        client_ifindex: 1,
        nat_reply,
        epoch: 0,
    };
    assert_no_allocations_per_frame(Some([routing(NatReply::LastHop), routing(NatReply::Route)]));
}

/// Runs the fixtures through a master and a backup pipeline (with `routing` in the first and
/// second tables, if given) and panics unless they took their paths without allocating.
fn assert_no_allocations_per_frame(routing: Option<[Routing; 2]>) {
    // The counter works: one allocation is seen as one.
    assert_eq!(
        allocations_during(|| drop(std::hint::black_box(vec![1u8; 16]))),
        1
    );

    // Worker 0 is the master's, worker 1 the backup's.
    let blocks = testing::counter_blocks(2, 60);
    // Fewer slots than client networks, so it fills up and expired templates are reused.
    let templates = Arc::new(PersistenceTable::new(16));
    let mut first = table(1, &[1, 2, 3, 4], &blocks, &templates);
    let mut second = table(2, &[5, 4, 3, 2, 1, 6], &blocks, &templates);
    if let Some([one, two]) = routing {
        first = first.with_routing(one);
        second = second.with_routing(two);
    }
    let frames = fixtures();
    let counters = WorkerCounters::default();
    // Far fewer entries than flows, so the table is full and churning most of the time.
    // State sync: the master exports, the backup (which exports too, and must not echo) imports
    // what the test moves over after every frame.
    let queues = SyncQueues::new(2, 4096);
    // Room for every flow of a round (a SYN may not evict an established flow, issue 16), and
    // an embryonic quota so small that SYNs replace each other: the table still churns.
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 16384)
        .with_embryonic_limit(8)
        .with_sync(queues.worker(0, true, false, Duration::from_secs(1)));
    let mut backup = Pipeline::new(1, DIRECTOR_MAC, 16384)
        .with_embryonic_limit(8)
        .with_sync(queues.worker(1, true, true, Duration::from_secs(1)));
    let backup_counters = WorkerCounters::default();
    let start = Instant::now();
    let mut chunk = vec![0u8; CHUNK_SIZE];

    let mut run = |pipeline: &mut Pipeline,
                   backup: &mut Pipeline,
                   table: &ServiceTable,
                   second: u64|
     -> (u64, u64) {
        let now = start + Duration::from_secs(second);
        let (mut sent, mut dropped) = (0, 0);
        for frame in &frames {
            chunk[UMEM_HEADROOM..UMEM_HEADROOM + frame.len()].copy_from_slice(frame);
            match pipeline.process(
                &mut chunk,
                UMEM_HEADROOM,
                frame.len(),
                table,
                now,
                &counters,
            ) {
                Verdict::Tx { .. } => sent += 1,
                Verdict::Drop(_) => dropped += 1,
            }
            // The sync daemon's part, inline: the master's records to the backup's queue.
            while let Some(record) = queues.exports()[0].pop() {
                let _ = queues.imports()[1].push(record);
            }
            while backup.imports_pending() {
                backup.drain_imports(table, now, &backup_counters);
            }
        }
        pipeline.housekeeping(table, now, &counters);
        backup.housekeeping(table, now, &backup_counters);
        (sent, dropped)
    };

    // Warm-up: anything lazily initialised on first use happens here.
    run(&mut pipeline, &mut backup, &first, 0);

    let mut totals = (0, 0);
    let allocations = allocations_during(|| {
        for round in 1..=20 {
            // Alternate generations (rebinding entries) and let time pass so even established entries
            // expire (900 s).
            let table = if round % 2 == 0 { &first } else { &second };
            let (sent, dropped) = run(&mut pipeline, &mut backup, table, round * 1000);
            totals.0 += sent;
            totals.1 += dropped;
        }
    });
    assert!(
        totals.0 > 50_000 && totals.1 > 200,
        "fixtures exercised too little: {totals:?}"
    );
    assert_paths_taken(&counters, &first);
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        load(&counters.sync_records_exported) > 10_000,
        "too few records exported"
    );
    assert!(
        load(&backup_counters.sync_records_imported) > 10_000,
        "too few records imported"
    );
    assert_eq!(
        load(&backup_counters.sync_records_exported),
        0,
        "the backup echoed records"
    );
    assert_eq!(allocations, 0, "the pipeline allocated {allocations} times");
    // The churn (eviction, expiry, rebinding across generations) kept the gauges exact.
    testing::assert_gauges_match(pipeline.connections(), &first, 0);
    testing::assert_gauges_match(backup.connections(), &first, 1);
}

/// Panics unless the fixtures took the paths they are there for (a table full and churning,
/// templates followed and reused, every NAT and TUN exit), so zero allocations means something.
fn assert_paths_taken(counters: &WorkerCounters, table: &ServiceTable) {
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        load(&counters.connections_evicted) > 0,
        "the table never filled"
    );
    assert!(load(&counters.connections_expired) > 0, "nothing expired");
    assert!(
        load(&counters.persistence_hits) > 0,
        "no template was followed"
    );
    assert!(
        load(&counters.persistence_inserts) > 16,
        "templates were never reused"
    );
    assert!(
        load(&counters.persistence_table_full) > 0,
        "the template table never filled"
    );
    assert!(
        load(&counters.icmp_frag_needed_sent) > 0,
        "no fragmentation-needed was sent"
    );
    for reason in [
        dataplane::DropReason::TooBig,
        dataplane::DropReason::IcmpNoConnection,
        dataplane::DropReason::TtlExpired,
        dataplane::DropReason::Ipv6ExtensionChain,
        dataplane::DropReason::Ipv6ExtensionTruncated,
        dataplane::DropReason::Ipv6Jumbogram,
        dataplane::DropReason::Ipv6PayloadLength,
        dataplane::DropReason::IpVersionMismatch,
        dataplane::DropReason::IcmpQuoteTruncated,
    ] {
        assert!(counters.drops(reason) > 0, "never dropped as {reason:?}");
    }
    let replies: u64 = table.backend_counters[0]
        .iter()
        .map(|stats| load(&stats.packets_out))
        .sum();
    assert!(replies > 1000, "too few NAT replies went out: {replies}");
    let (ipv6_in, ipv6_out) =
        table.backend_counters[0][40..]
            .iter()
            .fold((0, 0), |(into, out), stats| {
                (
                    into + load(&stats.packets_in),
                    out + load(&stats.packets_out),
                )
            });
    assert!(
        ipv6_in > 1000 && ipv6_out > 500,
        "too little IPv6 went through: {ipv6_in} in, {ipv6_out} out"
    );
}
