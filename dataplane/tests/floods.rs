//! Issue 16's floods, through the whole pipeline with crafted frames: a SYN flood of spoofed
//! sources against a full table (no established flow lost, the SYNs refused and counted), a
//! real client's handshake during a flood of embryonic entries, real servers' connection
//! thresholds with their hysteresis, and the rate limit of the director's own ICMP errors.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dataplane::service::Thresholds;
use dataplane::testing::{
    self, backend, backend_mac, counter_blocks, run, service, table, FrameBuilder, DIRECTOR_MAC,
};
use dataplane::{
    DropReason, Forwarding, Pipeline, Protocol, ServiceTable, Verdict, WorkerCounters,
};
use scheduler::Algorithm;

const VIP: &str = "192.0.2.10:80";

/// A DR service over two real servers, n = 1 and 2, with `thresholds` on the first.
fn two_servers(algorithm: Algorithm, thresholds: Thresholds) -> ServiceTable {
    let mut first = backend("10.0.0.1", Some(backend_mac(1)), 1, 0);
    first.thresholds = thresholds;
    let second = backend("10.0.0.2", Some(backend_mac(2)), 1, 1);
    table(
        1,
        vec![service(VIP, Protocol::Tcp, algorithm, vec![first, second])],
        counter_blocks(1, 2),
    )
}

/// A client of TEST-NET-3 (real ones) or TEST-NET-2 (spoofed ones): 254 addresses, a port
/// each for every 254 `n`.
fn client(net: [u8; 3], n: u32) -> String {
    format!(
        "{}.{}.{}.{}:{}",
        net[0],
        net[1],
        net[2],
        n % 254 + 1,
        1024 + n / 254
    )
}

fn real(n: u32) -> String {
    client([203, 0, 113], n)
}

fn spoofed(n: u32) -> String {
    client([198, 51, 100], n)
}

fn syn(src: &str) -> Vec<u8> {
    FrameBuilder::tcp().src(src).dst(VIP).syn().build()
}

fn ack(src: &str) -> Vec<u8> {
    FrameBuilder::tcp().src(src).dst(VIP).ack().build()
}

fn rst(src: &str) -> Vec<u8> {
    FrameBuilder::tcp().src(src).dst(VIP).rst().build()
}

/// The real server (1 or 2) a forwarded DR frame went to, or the drop.
fn sent_to((verdict, frame): (Verdict, Vec<u8>)) -> Result<u8, DropReason> {
    match verdict {
        Verdict::Tx { .. } => {
            let mac = &frame[0..6];
            Ok((1..=2)
                .find(|&n| mac == backend_mac(n))
                .expect("a backend's MAC"))
        }
        Verdict::Drop(reason) => Err(reason),
    }
}

#[test]
fn a_syn_flood_into_a_full_table_loses_no_established_flow() {
    let table = two_servers(Algorithm::RoundRobin, Thresholds::default());
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 64);
    let start = Instant::now();
    let mut servers = Vec::new();
    for n in 0..64 {
        let first = sent_to(run(&mut pipeline, &syn(&real(n)), &table, start, &counters));
        let then = sent_to(run(&mut pipeline, &ack(&real(n)), &table, start, &counters));
        assert_eq!(first, then);
        servers.push(first.unwrap());
    }
    // Five minutes of spoofed SYNs from random sources: each refused, none evicting.
    let flood = 20_000;
    for n in 0..flood {
        let now = start + Duration::from_millis(u64::from(n) * 15);
        let verdict = run(&mut pipeline, &syn(&spoofed(n)), &table, now, &counters);
        assert_eq!(verdict.0, Verdict::Drop(DropReason::ConnTableFullSyn));
    }
    assert_eq!(
        counters.drops(DropReason::ConnTableFullSyn),
        u64::from(flood)
    );
    assert_eq!(counters.connections_evicted.load(Ordering::Relaxed), 0);
    // Every established flow keeps its server (rr would send a lost one to the next in turn).
    let later = start + Duration::from_secs(300);
    for (n, &server) in (0..64).zip(&servers) {
        let verdict = run(&mut pipeline, &ack(&real(n)), &table, later, &counters);
        assert_eq!(sent_to(verdict), Ok(server), "flow {n} moved");
    }
    assert_eq!(pipeline.connections().len(), 64);
    testing::assert_gauges_match(pipeline.connections(), &table, 0);
}

#[test]
fn a_real_handshake_completes_during_a_flood_of_embryonic_entries() {
    let table = two_servers(Algorithm::RoundRobin, Thresholds::default());
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 256).with_embryonic_limit(64);
    let now = Instant::now();
    for n in 0..100 {
        run(&mut pipeline, &syn(&real(n)), &table, now, &counters);
        run(&mut pipeline, &ack(&real(n)), &table, now, &counters);
    }
    let mut flood = 0;
    let mut flood_some = |pipeline: &mut Pipeline, count: u32| {
        for _ in 0..count {
            let verdict = run(pipeline, &syn(&spoofed(flood)), &table, now, &counters);
            assert!(
                matches!(verdict.0, Verdict::Tx { .. }),
                "a flood SYN refused"
            );
            flood += 1;
        }
    };
    flood_some(&mut pipeline, 5000);
    assert_eq!(pipeline.connections().embryonic(), 64);
    assert_eq!(
        pipeline.connections().len(),
        164,
        "the flood keeps to its quota"
    );
    // The client's SYN gets in (replacing the oldest spoofed one), more flood follows within
    // its round trip, and its ACK goes where its SYN went.
    let client = real(5000);
    let first = sent_to(run(&mut pipeline, &syn(&client), &table, now, &counters));
    flood_some(&mut pipeline, 63);
    let then = sent_to(run(&mut pipeline, &ack(&client), &table, now, &counters));
    assert_eq!(first, then);
    flood_some(&mut pipeline, 5000);
    assert!(counters.conn_embryonic_quota.load(Ordering::Relaxed) >= 10_000 - 64);
    assert_eq!(counters.drops(DropReason::ConnTableFullSyn), 0);
    // Nobody established was lost: 100 flows and the client's.
    let established = pipeline
        .connections()
        .iter()
        .filter(|(_, connection)| connection.state.is_active())
        .count();
    assert_eq!(established, 101);
    testing::assert_gauges_match(pipeline.connections(), &table, 0);
}

#[test]
fn a_server_at_its_upper_threshold_gets_nothing_until_below_its_lower() {
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::WeightedLeastConnection,
        Algorithm::Maglev,
        Algorithm::SourceHashing,
    ] {
        let table = two_servers(algorithm, Thresholds { max: 4, min: 2 });
        let counters = WorkerCounters::default();
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 1024);
        let start = Instant::now();
        let mut next = 0u32;
        // Opens `count` connections; the clients whose connection went to server 1.
        let mut open = |pipeline: &mut Pipeline, now: Instant, count: usize| {
            let mut on_first = Vec::new();
            for _ in 0..count {
                let src = real(next);
                next += 1;
                let server = sent_to(run(pipeline, &syn(&src), &table, now, &counters)).unwrap();
                run(pipeline, &ack(&src), &table, now, &counters);
                if server == 1 {
                    on_first.push(src);
                }
            }
            on_first
        };
        let on_first = open(&mut pipeline, start, 200);
        assert_eq!(
            on_first.len(),
            4,
            "{algorithm}: server 1 past its upper threshold"
        );
        // Down to 2 (closed entries count until they expire): still over, nothing new.
        run(&mut pipeline, &rst(&on_first[0]), &table, start, &counters);
        run(&mut pipeline, &rst(&on_first[1]), &table, start, &counters);
        let later = start + Duration::from_secs(12);
        pipeline.housekeeping(&table, later, &counters);
        assert!(
            open(&mut pipeline, later, 100).is_empty(),
            "{algorithm}: at 2"
        );
        // Below 2: it gets new connections again, up to 4.
        run(&mut pipeline, &rst(&on_first[2]), &table, later, &counters);
        let after = later + Duration::from_secs(12);
        pipeline.housekeeping(&table, after, &counters);
        let again = open(&mut pipeline, after, 200);
        assert_eq!(again.len(), 3, "{algorithm}: from 1 back up to 4");
        testing::assert_gauges_match(pipeline.connections(), &table, 0);
    }
}

#[test]
fn with_every_server_over_its_threshold_new_flows_are_refused_and_counted() {
    let limited = Thresholds { max: 2, min: 0 };
    let mut first = backend("10.0.0.1", Some(backend_mac(1)), 1, 0);
    let mut second = backend("10.0.0.2", Some(backend_mac(2)), 1, 1);
    first.thresholds = limited;
    second.thresholds = limited;
    let table = table(
        1,
        vec![service(
            VIP,
            Protocol::Tcp,
            Algorithm::Maglev,
            vec![first, second],
        )],
        counter_blocks(1, 2),
    );
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 1024);
    let now = Instant::now();
    let sent: Vec<_> = (0..10)
        .map(|n| sent_to(run(&mut pipeline, &syn(&real(n)), &table, now, &counters)))
        .collect();
    assert_eq!(sent.iter().filter(|result| result.is_ok()).count(), 4);
    assert_eq!(counters.drops(DropReason::AllServersOverloaded), 6);
    // A tracked flow still reaches its server.
    let tracked = (0..10).find(|&n| sent[n as usize].is_ok()).unwrap();
    assert_eq!(
        sent_to(run(
            &mut pipeline,
            &ack(&real(tracked)),
            &table,
            now,
            &counters
        )),
        sent[tracked as usize]
    );
}

#[test]
fn the_directors_icmp_errors_are_rate_limited_per_client() {
    let tun = testing::with_forwarding(
        service(
            VIP,
            Protocol::Tcp,
            Algorithm::Maglev,
            vec![backend("10.0.0.3", Some(backend_mac(3)), 1, 0)],
        ),
        Forwarding::Tunnel,
    );
    let table =
        table(1, vec![tun], counter_blocks(1, 1)).with_interfaces(testing::interfaces(1500));
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 1024);
    let start = Instant::now();
    // Full-size segments with DF set: 20 bytes too big to tunnel.
    let big = |src: &str| {
        FrameBuilder::tcp()
            .src(src)
            .dst(VIP)
            .ack()
            .payload(&[0; 1460])
            .build()
    };
    let answered = |pipeline: &mut Pipeline, src: &str, now: Instant, count: usize| {
        (0..count)
            .filter(|_| {
                let (verdict, _) = run(pipeline, &big(src), &table, now, &counters);
                match verdict {
                    Verdict::Tx { .. } => true,
                    Verdict::Drop(DropReason::IcmpErrorsRateLimited) => false,
                    other @ Verdict::Drop(_) => panic!("{other:?}"),
                }
            })
            .count()
    };
    assert_eq!(answered(&mut pipeline, "203.0.113.7:40000", start, 40), 6);
    assert_eq!(counters.drops(DropReason::IcmpErrorsRateLimited), 34);
    // Another client is unaffected; the first earns one a second.
    assert_eq!(answered(&mut pipeline, "203.0.113.8:40000", start, 40), 6);
    let second = start + Duration::from_secs(1);
    assert_eq!(answered(&mut pipeline, "203.0.113.7:40001", second, 40), 1);
    assert_eq!(
        counters.icmp_frag_needed_sent.load(Ordering::Relaxed),
        6 + 6 + 1
    );
}
