//! State sync over a real link (needs root): two network namespaces joined by a veth, one
//! director's side in each. Director A's pipelines forward flows and export records; A's
//! `SyncSender` multicasts them to 224.0.0.81:8848 on the veth; B's `SyncReceiver` fills B's
//! workers' import queues; B's pipelines import them. Then two `SyncDaemon`s with unicast peers
//! swap roles, as VRRP would make them, and sync flows the other way. A third test runs IPv4
//! and IPv6 services side by side, so datagrams mix 24- and 64-byte records.
//!
//! Layout: namespaces `dsync-<pid>-<n>-a` (veth `sa`, 198.51.100.1/24 and 198.51.100.3/24) and
//! `dsync-<pid>-<n>-b` (veth `sb`, 198.51.100.2/24). The multicast group is used only on that
//! veth. Both namespaces are deleted by a Drop guard, also when a test fails. Every wait is
//! bounded.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use control::ha::sync::{
    encode_datagram, Role, Routing, SyncConfig, SyncCounters, SyncDaemon, SyncReceiver, SyncSender,
    DEFAULT_PORT,
};
use dataplane::conntrack::{ConnState, FlowKey};
use dataplane::sync::{SyncQueues, DEFAULT_REFRESH};
use dataplane::testing::{
    self, backend, backend_mac, service, FrameBuilder, Ipv6FrameBuilder, DIRECTOR_MAC,
};
use dataplane::{Pipeline, Protocol, ServiceTable, WorkerCounters};
use scheduler::Algorithm;
use std::sync::Arc;

use common::{End, Namespace, VethPair};

const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const WORKERS: usize = 2;

/// Director A's namespace `dsync-<pid>-<n>-a` and B's `dsync-<pid>-<n>-b`, joined by the veth
/// `sa`/`sb`.
fn lab() -> VethPair {
    VethPair::new(
        "dsync",
        &End {
            suffix: "-a",
            link: "sa",
            addresses: &["198.51.100.1/24", "198.51.100.3/24"],
        },
        &End {
            suffix: "-b",
            link: "sb",
            addresses: &["198.51.100.2/24"],
        },
    )
}

/// Waits (every 5 ms, at most 3 s) until `done` holds.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// The same DR service on both directors, real servers listed in another order: Maglev, so
/// nothing here depends on sync; the test checks the entries sync created.
fn table(order: &[u8]) -> ServiceTable {
    testing::table(
        1,
        vec![service(
            "192.0.2.10:80",
            Protocol::Tcp,
            Algorithm::RoundRobin,
            order
                .iter()
                .enumerate()
                .map(|(slot, &n)| backend(&format!("192.0.2.{n}"), Some(backend_mac(n)), 1, slot))
                .collect(),
        )],
        testing::counter_blocks(WORKERS, order.len()),
    )
}

/// `table(order)`'s IPv4 service and its IPv6 twin `[2001:db8::10]:80` on `2001:db8::<n>`.
fn dual_table(order: &[u8]) -> ServiceTable {
    let backends = |prefix: &str, first_slot: usize| {
        order
            .iter()
            .enumerate()
            .map(|(slot, &n)| {
                backend(
                    &format!("{prefix}{n}"),
                    Some(backend_mac(n)),
                    1,
                    first_slot + slot,
                )
            })
            .collect()
    };
    testing::table(
        1,
        vec![
            service(
                "192.0.2.10:80",
                Protocol::Tcp,
                Algorithm::RoundRobin,
                backends("192.0.2.", 0),
            ),
            service(
                "[2001:db8::10]:80",
                Protocol::Tcp,
                Algorithm::RoundRobin,
                backends("2001:db8::", order.len()),
            ),
        ],
        testing::counter_blocks(WORKERS, 2 * order.len()),
    )
}

/// One director's workers: a pipeline per worker on shared sync queues.
struct Workers {
    pipelines: Vec<Pipeline>,
    queues: SyncQueues,
    table: ServiceTable,
    counters: WorkerCounters,
}

impl Workers {
    fn new(order: &[u8]) -> Self {
        let queues = SyncQueues::new(WORKERS, 4096);
        let pipelines = (0..WORKERS)
            .map(|index| {
                Pipeline::new(index, DIRECTOR_MAC, 1024).with_sync(queues.worker(
                    index,
                    true,
                    true,
                    DEFAULT_REFRESH,
                ))
            })
            .collect();
        Workers {
            pipelines,
            queues,
            table: table(order),
            counters: WorkerCounters::default(),
        }
    }

    /// `flows` handshakes from distinct client ports, spread over the workers as RSS would.
    fn handshakes(&mut self, flows: std::ops::Range<u16>) {
        for port in flows {
            let client = format!("203.0.113.7:{port}");
            let worker = usize::from(port) % WORKERS;
            for frame in [
                FrameBuilder::tcp().src(&client).dst("192.0.2.10:80").syn(),
                FrameBuilder::tcp().src(&client).dst("192.0.2.10:80").ack(),
            ] {
                testing::run(
                    &mut self.pipelines[worker],
                    &frame.build(),
                    &self.table,
                    Instant::now(),
                    &self.counters,
                );
            }
        }
    }

    /// `flows` IPv6 handshakes from distinct client ports of 2001:db8:1::7.
    fn handshakes6(&mut self, flows: std::ops::Range<u16>) {
        for port in flows {
            let client = format!("[2001:db8:1::7]:{port}");
            let worker = usize::from(port) % WORKERS;
            for frame in [
                Ipv6FrameBuilder::tcp()
                    .src(&client)
                    .dst("[2001:db8::10]:80")
                    .syn(),
                Ipv6FrameBuilder::tcp()
                    .src(&client)
                    .dst("[2001:db8::10]:80")
                    .ack(),
            ] {
                testing::run(
                    &mut self.pipelines[worker],
                    &frame.build(),
                    &self.table,
                    Instant::now(),
                    &self.counters,
                );
            }
        }
    }

    /// The backend of the IPv6 flow from client port `port`, on `worker`.
    fn backend_of6(&self, worker: usize, port: u16) -> Option<(std::net::IpAddr, ConnState)> {
        let key = FlowKey {
            src_addr: "2001:db8:1::7".parse().unwrap(),
            dst_addr: "2001:db8::10".parse().unwrap(),
            src_port: port,
            dst_port: 80,
            protocol: Protocol::Tcp,
        };
        self.pipelines[worker]
            .connections()
            .get(&key)
            .map(|connection| (connection.backend, connection.state))
    }

    /// Lets every worker apply its import queue.
    fn import(&mut self) {
        for pipeline in &mut self.pipelines {
            while pipeline.imports_pending() {
                pipeline.drain_imports(&self.table, Instant::now(), &self.counters);
            }
        }
    }

    /// The backend of the flow from client port `port`, on `worker`.
    fn backend_of(&self, worker: usize, port: u16) -> Option<(std::net::IpAddr, ConnState)> {
        let key = FlowKey {
            src_addr: Ipv4Addr::new(203, 0, 113, 7).into(),
            dst_addr: Ipv4Addr::new(192, 0, 2, 10).into(),
            src_port: port,
            dst_port: 80,
            protocol: Protocol::Tcp,
        };
        self.pipelines[worker]
            .connections()
            .get(&key)
            .map(|connection| (connection.backend, connection.state))
    }
}

#[test]
fn multicast_sender_to_receiver_into_worker_queues() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let config = |interface: &str| SyncConfig {
        interface: interface.to_owned(),
        sync_id: 42,
        peers: None,
        port: DEFAULT_PORT,
        key: None,
    };
    let mut a = Workers::new(&[11, 12, 13]);
    let mut b = Workers::new(&[13, 12, 11]);
    let counters_a = Arc::new(SyncCounters::default());
    let counters_b = Arc::new(SyncCounters::default());
    let mut sender = sender(&lab.a, config("sa"), &a.queues, &counters_a);
    let mut receiver = receiver(&lab.b, config("sb"), &b.queues, &counters_b);

    // 200 flows, 400 records (created, established): several datagrams at MTU 1500.
    a.handshakes(1000..1200);
    assert_eq!(
        a.counters.sync_records_exported.load(Ordering::Relaxed),
        400
    );
    let per = sender.records_per_datagram();
    assert_eq!(per, 60, "(1500 - 20 - 8 - 16) / 24");
    assert_eq!(sender.poll(Role::Master, Instant::now()), 400);
    sender.flush();
    let mut queued = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while queued < 400 && Instant::now() < deadline {
        queued += receiver.poll(|| Role::Backup);
    }
    assert_eq!(queued, 400);
    let (of_a, of_b) = (counters_a.snapshot(), counters_b.snapshot());
    assert_eq!(of_a.datagrams_sent, 400_u64.div_ceil(60));
    assert_eq!((of_a.records_sent, of_a.send_errors), (400, 0));
    assert_eq!(of_b.records_received, 400);
    assert_eq!(of_b.datagrams_received, of_a.datagrams_sent);
    assert_eq!(
        (
            of_b.datagrams_lost,
            of_b.datagrams_malformed,
            of_b.records_dropped
        ),
        (0, 0, 0)
    );

    // Broadcast: each of B's workers holds every flow, established on A's server.
    b.import();
    for worker in 0..WORKERS {
        assert_eq!(b.pipelines[worker].connections().len(), 200);
        testing::assert_gauges_match(b.pipelines[worker].connections(), &b.table, worker);
    }
    for port in 1000..1200 {
        let at_a = a.backend_of(usize::from(port) % WORKERS, port).unwrap();
        assert_eq!(at_a.1, ConnState::TcpEstablished);
        for worker in 0..WORKERS {
            assert_eq!(b.backend_of(worker, port), Some(at_a), "port {port}");
        }
    }
    // No echo: B exported nothing while importing.
    assert_eq!(b.counters.sync_records_exported.load(Ordering::Relaxed), 0);
}

#[test]
fn ipv6_and_ipv4_entries_share_datagrams_between_pipelines() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let config = |interface: &str| SyncConfig {
        interface: interface.to_owned(),
        sync_id: 43,
        peers: None,
        port: DEFAULT_PORT,
        key: None,
    };
    let mut a = Workers::new(&[11, 12, 13]);
    let mut b = Workers::new(&[13, 12, 11]);
    a.table = dual_table(&[11, 12, 13]);
    b.table = dual_table(&[13, 12, 11]);
    let counters_a = Arc::new(SyncCounters::default());
    let counters_b = Arc::new(SyncCounters::default());
    let mut sender = sender(&lab.a, config("sa"), &a.queues, &counters_a);
    let mut receiver = receiver(&lab.b, config("sb"), &b.queues, &counters_b);

    // 100 IPv6 flows and 50 IPv4 ones: 200 64-byte and 100 24-byte records. At MTU 1500 a
    // datagram holds 22 of the former or 60 of the latter, so counting records would overflow.
    a.handshakes6(5000..5100);
    a.handshakes(6000..6050);
    assert_eq!(
        a.counters.sync_records_exported.load(Ordering::Relaxed),
        300
    );
    assert_eq!(sender.max_datagram_len(), 1500 - 20 - 8);
    assert_eq!(sender.poll(Role::Master, Instant::now()), 300);
    sender.flush();
    let mut queued = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while queued < 300 && Instant::now() < deadline {
        queued += receiver.poll(|| Role::Backup);
    }
    assert_eq!(queued, 300);
    let (of_a, of_b) = (counters_a.snapshot(), counters_b.snapshot());
    assert_eq!(of_a.send_errors, 0, "no datagram over the MTU");
    assert!(of_a.datagrams_sent >= 200 / 22, "{of_a:?}");
    assert_eq!(of_b.datagrams_received, of_a.datagrams_sent);
    assert_eq!(
        (
            of_b.datagrams_malformed,
            of_b.records_malformed,
            of_b.records_dropped
        ),
        (0, 0, 0)
    );

    b.import();
    for worker in 0..WORKERS {
        assert_eq!(b.pipelines[worker].connections().len(), 150);
        testing::assert_gauges_match(b.pipelines[worker].connections(), &b.table, worker);
    }
    for port in 5000..5100 {
        let at_a = a.backend_of6(usize::from(port) % WORKERS, port).unwrap();
        assert!(at_a.0.is_ipv6());
        assert_eq!(at_a.1, ConnState::TcpEstablished);
        for worker in 0..WORKERS {
            assert_eq!(b.backend_of6(worker, port), Some(at_a), "port {port}");
        }
    }
    for port in 6000..6050 {
        let at_a = a.backend_of(usize::from(port) % WORKERS, port).unwrap();
        for worker in 0..WORKERS {
            assert_eq!(b.backend_of(worker, port), Some(at_a), "port {port}");
        }
    }
}

#[test]
fn daemons_swap_roles_over_unicast_and_filter_strangers() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let config = |interface: &str, peer: Ipv4Addr| SyncConfig {
        interface: interface.to_owned(),
        sync_id: 7,
        peers: Some(vec![peer]),
        port: DEFAULT_PORT,
        key: None,
    };
    let mut a = Workers::new(&[11, 12, 13]);
    let mut b = Workers::new(&[13, 12, 11]);
    let (config_a, config_b) = (config("sa", B), config("sb", A));
    // The daemons take the workers' queues; threads in the lab's namespaces open their sockets.
    let daemon_a = start(&lab.a, config_a, &a.queues, Role::Master);
    let daemon_b = start(&lab.b, config_b, &b.queues, Role::Backup);

    // A is master: its flows reach B.
    a.handshakes(2000..2050);
    assert!(eventually(|| daemon_b
        .counters()
        .snapshot()
        .records_received
        == 100));
    b.import();
    assert_eq!(b.pipelines[0].connections().len(), 50);

    // A stranger on the link, and another cluster's sync id, are ignored.
    lab.a.enter(|| {
        let socket = UdpSocket::bind(SocketAddrV4::new(STRANGER, 0)).unwrap();
        let mut bytes = Vec::new();
        encode_datagram(7, 0, &[], &mut bytes);
        socket
            .send_to(&bytes, SocketAddrV4::new(B, DEFAULT_PORT))
            .unwrap();
        let other = UdpSocket::bind(SocketAddrV4::new(A, 0)).unwrap();
        encode_datagram(8, 0, &[], &mut bytes);
        other
            .send_to(&bytes, SocketAddrV4::new(B, DEFAULT_PORT))
            .unwrap();
    });
    assert!(eventually(|| daemon_b
        .counters()
        .snapshot()
        .datagrams_foreign
        == 2));

    // Failover: B becomes master, A backup. B's new flows reach A; A's leftovers are not sent.
    daemon_b.set_role(Role::Master);
    daemon_a.set_role(Role::Backup);
    let sent_by_a = daemon_a.counters().snapshot().records_sent;
    b.handshakes(3000..3010);
    assert!(eventually(|| daemon_a
        .counters()
        .snapshot()
        .records_received
        == 20));
    a.import();
    for port in 3000..3010 {
        let at_b = b.backend_of(usize::from(port) % WORKERS, port).unwrap();
        for worker in 0..WORKERS {
            assert_eq!(a.backend_of(worker, port), Some(at_b), "port {port}");
        }
    }
    a.handshakes(4000..4005);
    assert!(eventually(|| daemon_a
        .counters()
        .snapshot()
        .records_discarded
        == 10));
    assert_eq!(daemon_a.counters().snapshot().records_sent, sent_by_a);
    assert_eq!(daemon_b.counters().snapshot().datagrams_lost, 0);
    daemon_a.stop();
    daemon_b.stop();
}

/// A sender in `namespace` of `queues`' exports.
fn sender(
    namespace: &Namespace,
    config: SyncConfig,
    queues: &SyncQueues,
    counters: &Arc<SyncCounters>,
) -> SyncSender {
    let exports = queues.exports().to_vec();
    let counters = Arc::clone(counters);
    namespace.enter(move || SyncSender::new(&config, exports, counters).unwrap())
}

/// A receiver in `namespace` into `queues`' imports, every record to every worker.
fn receiver(
    namespace: &Namespace,
    config: SyncConfig,
    queues: &SyncQueues,
    counters: &Arc<SyncCounters>,
) -> SyncReceiver {
    let imports = queues.imports().to_vec();
    let counters = Arc::clone(counters);
    namespace
        .enter(move || SyncReceiver::new(&config, imports, Routing::Broadcast, counters).unwrap())
}

/// A daemon in `namespace` on `queues` (as `SyncDaemon::start` takes them from `SyncQueues`).
fn start(namespace: &Namespace, config: SyncConfig, queues: &SyncQueues, role: Role) -> SyncDaemon {
    let exports = queues.exports().to_vec();
    let imports = queues.imports().to_vec();
    namespace.enter(move || {
        SyncDaemon::with_queues(&config, exports, imports, Routing::Broadcast, role).unwrap()
    })
}
