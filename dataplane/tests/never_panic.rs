//! No frame makes the pipeline panic: random bytes, and random truncations and byte mutations of
//! valid fixture frames (DR, NAT both ways, ICMP errors both ways, TUN), go through
//! `Pipeline::process` at a random place in a UMEM-like chunk (headroom from none to plenty).
//! The checks: it returns; a transmitted frame lies within the chunk and kept its length unless
//! tunnelled (20 bytes longer) or answered (an ICMP error no longer than the input); a dropped
//! frame left the chunk untouched. With state sync on, the same holds, and random records and
//! mutated real ones imported between the frames keep the gauges exact; and with next hops from
//! a FIB. IPv6 alike: DR and NAT services and mutated IPv6 seeds (extension headers, ICMPv6
//! errors both ways), and random bytes behind a valid IPv6 fixed header.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::fib::{FibBuilder, Neighbour, NeighbourId, Neighbours, NextHop, Route};
use dataplane::sync::{SyncQueues, SyncRecord, MAX_RECORD_LEN};
use dataplane::testing::{
    self, backend, backend_mac, service, FrameBuilder, Ipv6FrameBuilder, DIRECTOR_MAC,
    SERVER_SIDE_MAC,
};
use dataplane::wire::icmp::{message, unreachable};
use dataplane::wire::icmpv6;
use dataplane::{
    Egress, Forwarding, NatReply, PersistenceTable, Pipeline, Protocol, Routing, ServiceTable,
    Verdict, WorkerCounters,
};
use proptest::prelude::*;
use scheduler::Algorithm;

fn table() -> ServiceTable {
    testing::table(
        1,
        vec![
            service(
                "192.0.2.10:80",
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![
                    backend("10.0.0.1", Some(backend_mac(1)), 1, 0),
                    backend("10.0.0.2", Some(backend_mac(2)), 1, 1),
                ],
            ),
            service(
                "192.0.2.53:53",
                Protocol::Udp,
                Algorithm::RoundRobin,
                vec![backend("10.0.0.3", Some(backend_mac(3)), 1, 2)],
            ),
            service(
                "192.0.2.20:80",
                Protocol::Tcp,
                Algorithm::RoundRobin,
                vec![backend("10.0.0.4", None, 1, 3)],
            ),
            testing::with_persistence(
                testing::service_with_ports(
                    "192.0.2.40",
                    &[80, 443],
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    vec![
                        backend("10.0.0.5", Some(backend_mac(5)), 1, 4),
                        backend("10.0.0.6", Some(backend_mac(6)), 0, 5),
                        backend("10.0.0.7", None, 1, 6),
                    ],
                ),
                300,
                "255.255.255.0",
                1,
            ),
            testing::with_forwarding(
                service(
                    "192.0.2.60:80",
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    vec![
                        testing::with_port(backend("10.0.1.1", Some(backend_mac(8)), 1, 7), 8080),
                        backend("10.0.1.2", Some(backend_mac(9)), 1, 8),
                    ],
                ),
                Forwarding::Nat,
            ),
            testing::with_forwarding(
                service(
                    "192.0.2.60:53",
                    Protocol::Udp,
                    Algorithm::RoundRobin,
                    vec![testing::with_port(
                        backend("10.0.1.3", Some(backend_mac(10)), 1, 9),
                        5353,
                    )],
                ),
                Forwarding::Nat,
            ),
            testing::with_persistence(
                testing::with_forwarding(
                    service(
                        "192.0.2.70:80",
                        Protocol::Tcp,
                        Algorithm::Maglev,
                        vec![
                            backend("10.0.0.11", Some(backend_mac(11)), 1, 10),
                            backend("10.0.0.12", None, 1, 11),
                        ],
                    ),
                    Forwarding::Tunnel,
                ),
                300,
                "255.255.255.255",
                2,
            ),
        ]
        .into_iter()
        .chain(ipv6_services())
        .collect(),
        testing::counter_blocks(1, 16),
    )
    // Small, so random frames fill it and hit the full path.
    .with_persistence(Arc::new(PersistenceTable::new(8)))
    // A small MTU, so mutated lengths reach the too-big paths.
    .with_interfaces(testing::interfaces(576))
}

/// The IPv6 services of [`table`]: DR (slots 12, 13; one unresolved), NAT tcp with port
/// mapping (14), NAT udp (15).
fn ipv6_services() -> Vec<dataplane::Service> {
    vec![
        service(
            "[2001:db8::10]:80",
            Protocol::Tcp,
            Algorithm::Maglev,
            vec![
                backend("2001:db8::11", Some(backend_mac(12)), 1, 12),
                backend("2001:db8::12", None, 1, 13),
            ],
        ),
        testing::with_forwarding(
            service(
                "[2001:db8::60]:80",
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![testing::with_port(
                    backend("2001:db8:a::1", Some(backend_mac(14)), 1, 14),
                    8080,
                )],
            ),
            Forwarding::Nat,
        ),
        testing::with_forwarding(
            service(
                "[2001:db8::60]:53",
                Protocol::Udp,
                Algorithm::RoundRobin,
                vec![backend("2001:db8:a::2", Some(backend_mac(15)), 1, 15)],
            ),
            Forwarding::Nat,
        ),
    ]
}

/// [`table`] with next hops from a FIB: a default route through two gateways (one unresolved),
/// a blackhole, a route out of another interface; NAT replies by route in `route` mode, else by
/// auto last hop.
fn routed_table(route: bool) -> ServiceTable {
    let neighbours = Neighbours::with_capacity(2);
    neighbours.publish(
        NeighbourId::new(0, 0),
        Neighbour::Resolved([2, 0xaa, 0, 0, 0, 1]),
    );
    neighbours.publish(NeighbourId::new(1, 0), Neighbour::Unresolved);
    let via = |slot: u32, ifindex| NextHop {
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 250 + slot as u8)),
        neighbour: NeighbourId::new(slot, 0),
        ifindex,
        weight: 1,
    };
    let mut fib = FibBuilder::new();
    let mut add = |prefix: [u8; 4], len, route: &Route| {
        let id = fib.add_route(route).unwrap();
        fib.add_v4(Ipv4Addr::from(prefix), len, id).unwrap();
    };
    add([0, 0, 0, 0], 0, &Route::Forward(vec![via(0, 1), via(1, 1)]));
    add([10, 0, 0, 0], 24, &Route::Blackhole);
    add([198, 51, 100, 0], 25, &Route::Forward(vec![via(0, 7)]));
    table().with_routing(Routing {
        fib: Arc::new(fib.build()),
        neighbours: Arc::new(neighbours),
        client_ifindex: 1,
        nat_reply: if route {
            NatReply::Route
        } else {
            NatReply::LastHop
        },
        epoch: 0,
    })
}

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        FrameBuilder::tcp().dst("192.0.2.10:80").syn().build(),
        FrameBuilder::tcp()
            .dst("192.0.2.10:80")
            .ack()
            .payload(&[0x55; 100])
            .build(),
        FrameBuilder::tcp().dst("192.0.2.20:80").syn().build(),
        FrameBuilder::udp()
            .dst("192.0.2.53:53")
            .payload(&[1, 2, 3])
            .build(),
        FrameBuilder::tcp().dst("192.0.2.10:80").ihl(6).build(),
        FrameBuilder::icmp().dst("192.0.2.10:0").build(),
        FrameBuilder::tcp().dst("192.0.2.40:80").syn().build(),
        FrameBuilder::tcp().dst("192.0.2.40:443").ack().build(),
        FrameBuilder::udp().dst("192.0.2.40:443").build(),
        // NAT: in, replies out (the client is the builder's default 192.0.2.2:40000), ICMP.
        FrameBuilder::tcp().dst("192.0.2.60:80").syn().build(),
        FrameBuilder::udp()
            .dst("192.0.2.60:53")
            .payload(b"q")
            .build(),
        FrameBuilder::tcp()
            .src("10.0.1.1:8080")
            .dst("192.0.2.2:40000")
            .eth_dst(SERVER_SIDE_MAC)
            .syn()
            .ack()
            .build(),
        FrameBuilder::tcp()
            .src("10.0.1.2:80")
            .dst("192.0.2.2:40000")
            .rst()
            .build(),
        FrameBuilder::udp()
            .src("10.0.1.3:5353")
            .dst("192.0.2.2:40000")
            .payload(b"a")
            .build(),
        icmp_error(
            "10.0.1.1:0",
            "192.0.2.2:0",
            unreachable::PORT,
            &FrameBuilder::tcp().dst("10.0.1.1:8080").build_ipv4(),
        ),
        icmp_error(
            "203.0.113.1:0",
            "192.0.2.60:0",
            unreachable::FRAG_NEEDED,
            &FrameBuilder::udp()
                .src("192.0.2.60:53")
                .dst("192.0.2.2:40000")
                .build_ipv4(),
        ),
        // TUN, small and too big for MTU 576 with and without DF, and an error about a reply.
        FrameBuilder::tcp().dst("192.0.2.70:80").syn().build(),
        FrameBuilder::tcp()
            .dst("192.0.2.70:80")
            .ack()
            .payload(&[7; 600])
            .build(),
        FrameBuilder::tcp()
            .dst("192.0.2.70:80")
            .dont_fragment(false)
            .ack()
            .payload(&[7; 600])
            .build(),
        icmp_error(
            "203.0.113.1:0",
            "192.0.2.70:0",
            unreachable::FRAG_NEEDED,
            &FrameBuilder::tcp()
                .src("192.0.2.70:80")
                .dst("192.0.2.2:40000")
                .build_ipv4(),
        ),
    ];
    seeds.extend(ipv6_seeds());
    seeds
}

/// IPv6 seeds: DR, NAT both ways (the client is the builder's default [2001:db8::2]:40000),
/// extension headers, a fragment, ICMPv6 errors both ways.
fn ipv6_seeds() -> Vec<Vec<u8>> {
    vec![
        Ipv6FrameBuilder::tcp()
            .dst("[2001:db8::10]:80")
            .syn()
            .build(),
        Ipv6FrameBuilder::tcp()
            .dst("[2001:db8::10]:80")
            .hop_by_hop(0)
            .routing()
            .destination_options(1)
            .ack()
            .build(),
        Ipv6FrameBuilder::tcp()
            .dst("[2001:db8::60]:80")
            .syn()
            .build(),
        Ipv6FrameBuilder::tcp()
            .dst("[2001:db8::60]:80")
            .destination_options(0)
            .ack()
            .payload(&[3; 40])
            .build(),
        Ipv6FrameBuilder::udp()
            .dst("[2001:db8::60]:53")
            .payload(b"q")
            .build(),
        Ipv6FrameBuilder::tcp()
            .src("[2001:db8:a::1]:8080")
            .dst("[2001:db8::2]:40000")
            .eth_dst(SERVER_SIDE_MAC)
            .syn()
            .ack()
            .build(),
        Ipv6FrameBuilder::udp()
            .src("[2001:db8:a::2]:53")
            .dst("[2001:db8::2]:40000")
            .payload(b"a")
            .build(),
        Ipv6FrameBuilder::tcp()
            .dst("[2001:db8::60]:80")
            .fragment(0, true)
            .build(),
        icmp6_error(
            "[2001:db8:a::1]:0",
            "[2001:db8::2]:0",
            icmpv6::message::DEST_UNREACHABLE,
            &Ipv6FrameBuilder::tcp()
                .dst("[2001:db8:a::1]:8080")
                .build_ipv6(),
        ),
        icmp6_error(
            "[2001:db8:ff::1]:0",
            "[2001:db8::60]:0",
            icmpv6::message::PACKET_TOO_BIG,
            &Ipv6FrameBuilder::udp()
                .src("[2001:db8::60]:53")
                .dst("[2001:db8::2]:40000")
                .payload(&[9; 30])
                .build_ipv6(),
        ),
        icmp6_error(
            "[2001:db8:ff::1]:0",
            "[2001:db8::10]:0",
            icmpv6::message::TIME_EXCEEDED,
            &Ipv6FrameBuilder::tcp()
                .src("[2001:db8::10]:80")
                .dst("[2001:db8::2]:40000")
                .build_ipv6()[..48],
        ),
    ]
}

/// An ICMPv6 error of `msg_type` (code 0, MTU 1280 for packet too big) quoting `quote`.
fn icmp6_error(src: &str, dst: &str, msg_type: u8, quote: &[u8]) -> Vec<u8> {
    Ipv6FrameBuilder::icmp6()
        .src(src)
        .dst(dst)
        .icmp6_header(msg_type, 0, 1280)
        .payload(quote)
        .build()
}

/// Random bytes behind an Ethernet header and a valid-looking IPv6 fixed header whose payload
/// length and next header are random too: reaches the extension-header walk and the ICMPv6
/// quote checks far more often than random bytes do.
fn random_ipv6() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u16>(),
        prop_oneof![
            Just(0u8),
            Just(6),
            Just(17),
            Just(43),
            Just(44),
            Just(58),
            Just(60),
            any::<u8>()
        ],
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..160),
    )
        .prop_map(|(payload_len, next, hop_limit, body)| {
            let mut frame = Ipv6FrameBuilder::tcp()
                .dst("[2001:db8::60]:80")
                .unpadded()
                .build();
            frame.truncate(14 + 40);
            let payload_len = payload_len % 200;
            frame[18..20].copy_from_slice(&payload_len.to_be_bytes());
            frame[20] = next;
            frame[21] = hop_limit;
            frame.extend_from_slice(&body);
            frame
        })
}

/// An ICMP destination unreachable from `src` to `dst` quoting `quote` (all of it).
fn icmp_error(src: &str, dst: &str, code: u8, quote: &[u8]) -> Vec<u8> {
    FrameBuilder::icmp()
        .src(src)
        .dst(dst)
        .icmp_header(message::DEST_UNREACHABLE, code, 0)
        .payload(quote)
        .build()
}

/// A seed frame, truncated and with some bytes overwritten (header bytes more often: the first
/// 120, which reach an ICMPv6 error's quoted addresses).
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        any::<usize>(),
        proptest::collection::vec((0usize..120, any::<u8>()), 0..6),
    )
        .prop_map(move |(which, cut, edits)| {
            let mut frame = seeds[which].clone();
            for (at, byte) in edits {
                if let Some(slot) = frame.get_mut(at) {
                    *slot = byte;
                }
            }
            frame.truncate(cut % (frame.len() + 1));
            frame
        })
}

fn run(
    pipeline: &mut Pipeline,
    table: &ServiceTable,
    counters: &WorkerCounters,
    frame: &[u8],
    headroom: usize,
) -> Result<(), TestCaseError> {
    let len = frame.len();
    let mut chunk = vec![0xee; headroom + len + 16];
    chunk[headroom..headroom + len].copy_from_slice(frame);
    let before = chunk.clone();
    match pipeline.process(&mut chunk, headroom, len, table, Instant::now(), counters) {
        Verdict::Tx {
            start,
            len: sent,
            egress,
        } => {
            prop_assert!(start + sent <= chunk.len());
            let tunnelled = start + 20 == headroom && sent <= len + 20;
            let in_place = start == headroom && sent == len;
            let answered = start == headroom && sent <= len && egress == Egress::Ingress;
            prop_assert!(
                tunnelled || in_place || answered,
                "sent {}..+{} ({:?}) for a frame at {}..+{}",
                start,
                sent,
                egress,
                headroom,
                len
            );
        }
        Verdict::Drop(reason) => prop_assert!(chunk == before, "{:?} changed the chunk", reason),
    }
    Ok(())
}

/// The records a syncing pipeline exports for the seed frames, in their wire form.
fn exported_seeds() -> Vec<[u8; MAX_RECORD_LEN]> {
    let (table, counters) = (table(), WorkerCounters::default());
    let queues = SyncQueues::new(1, 1024);
    let mut pipeline =
        Pipeline::new(0, DIRECTOR_MAC, 64).with_sync(queues.worker(0, true, false, Duration::ZERO));
    for frame in seeds() {
        testing::run(&mut pipeline, &frame, &table, Instant::now(), &counters);
    }
    let records: Vec<_> = std::iter::from_fn(|| queues.exports()[0].pop())
        .map(|record| {
            let mut bytes = [0; MAX_RECORD_LEN];
            record.encode(&mut bytes);
            bytes
        })
        .collect();
    assert!(records.len() > 5, "the seeds exported too little");
    records
}

/// Either random bytes, or an exported record with some bytes overwritten.
fn record_bytes() -> impl Strategy<Value = [u8; MAX_RECORD_LEN]> {
    let seeds = exported_seeds();
    prop_oneof![
        any::<[u8; MAX_RECORD_LEN]>(),
        (
            0..seeds.len(),
            proptest::collection::vec((0..MAX_RECORD_LEN, any::<u8>()), 0..4)
        )
            .prop_map(move |(which, edits)| {
                let mut bytes = seeds[which];
                for (at, byte) in edits {
                    bytes[at] = byte;
                }
                bytes
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes(frame in proptest::collection::vec(any::<u8>(), 0..200), headroom in 0usize..300) {
        let (table, counters) = (table(), WorkerCounters::default());
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 8);
        run(&mut pipeline, &table, &counters, &frame, headroom)?;
    }

    #[test]
    fn random_ipv6_frames(
        frames in proptest::collection::vec((random_ipv6(), 0usize..300), 1..8),
    ) {
        let (table, counters) = (table(), WorkerCounters::default());
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 4);
        for (frame, headroom) in frames {
            run(&mut pipeline, &table, &counters, &frame, headroom)?;
        }
        testing::assert_gauges_match(pipeline.connections(), &table, 0);
    }

    #[test]
    fn mutated_valid_frames(
        frames in proptest::collection::vec((mutated(), 0usize..300), 1..16),
    ) {
        // Several frames through one small pipeline, so entries are hit, rebound and evicted.
        let (table, counters) = (table(), WorkerCounters::default());
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 4);
        for (frame, headroom) in frames {
            run(&mut pipeline, &table, &counters, &frame, headroom)?;
        }
        pipeline.housekeeping(&table, Instant::now(), &counters);
        testing::assert_gauges_match(pipeline.connections(), &table, 0);
    }

    #[test]
    fn mutated_valid_frames_with_routing(
        route in any::<bool>(),
        frames in proptest::collection::vec((mutated(), 0usize..300), 1..16),
    ) {
        let (table, counters) = (routed_table(route), WorkerCounters::default());
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 4);
        for (frame, headroom) in frames {
            run(&mut pipeline, &table, &counters, &frame, headroom)?;
        }
        pipeline.housekeeping(&table, Instant::now(), &counters);
        testing::assert_gauges_match(pipeline.connections(), &table, 0);
    }

    #[test]
    fn imports_between_frames(
        steps in proptest::collection::vec(
            prop_oneof![
                (mutated(), 0usize..300).prop_map(Ok),
                record_bytes().prop_map(Err),
            ],
            1..24,
        ),
    ) {
        // A small pipeline exporting into a small queue (so it fills) and importing records:
        // entries are created, rebound and evicted by both.
        let (table, counters) = (table(), WorkerCounters::default());
        let queues = SyncQueues::new(1, 4);
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 4)
            .with_sync(queues.worker(0, true, true, Duration::ZERO));
        for step in steps {
            match step {
                Ok((frame, headroom)) => run(&mut pipeline, &table, &counters, &frame, headroom)?,
                Err(bytes) => {
                    if let Ok(record) = SyncRecord::decode(&bytes) {
                        let _ = queues.imports()[0].push(record);
                    }
                    pipeline.drain_imports(&table, Instant::now(), &counters);
                }
            }
        }
        pipeline.housekeeping(&table, Instant::now(), &counters);
        testing::assert_gauges_match(pipeline.connections(), &table, 0);
    }
}
