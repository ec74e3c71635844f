//! State sync between two directors, through the real pipeline: director A forwards a flow and
//! exports what it learnt; the records go through their 24-byte wire form into director B's
//! import queue; B, which never saw the flow's first frames and whose own scheduler would pick
//! another real server, forwards the rest of the flow (NAT replies included) where A did. Then:
//! which frames export what (create, state changes, refresh, templates; not drops, not imports),
//! imports that cannot be resolved, and, for DR and TUN with Maglev, flows that survive without
//! any sync because both directors compute the same table. An IPv6 persistent service's
//! connection and /64 template cross in their 64-byte form the same way.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::conntrack::{ConnState, FlowKey};
use dataplane::persistence::Template;
use dataplane::sync::{
    ConnectionRecord, SyncQueue, SyncQueues, SyncRecord, TemplateRecord, MAX_RECORD_LEN,
};
use dataplane::testing::{
    self, backend, backend_mac, service, FrameBuilder, Ipv6FrameBuilder, DIRECTOR_MAC, ROUTER_MAC,
    SERVER_SIDE_MAC,
};
use dataplane::{
    Backend, Egress, Forwarding, Persistence, PersistenceTable, Pipeline, Protocol, ServiceKey,
    ServiceTable, Verdict, WorkerCounters,
};
use scheduler::Algorithm;

const CLIENT: &str = "198.51.100.7:40000";
const NAT_VIP: &str = "192.0.2.60:80";
const NAT_RS: &str = "10.0.1.1:8080";
const GROUP_VIP: &str = "192.0.2.62";
const REFRESH: Duration = Duration::from_secs(60);

/// A NAT real server `10.0.1.n:8080` with MAC `backend_mac(n)`.
fn nat_backend(n: u8, slot: usize) -> Backend {
    testing::with_port(
        backend(&format!("10.0.1.{n}"), Some(backend_mac(n)), 1, slot),
        8080,
    )
}

/// A DR real server `192.0.2.n` with MAC `backend_mac(n)`.
fn dr_backend(n: u8, slot: usize) -> Backend {
    backend(&format!("192.0.2.{n}"), Some(backend_mac(n)), 1, slot)
}

/// A director's table: rr over its real servers in the order given, so that two directors
/// listing them in different orders schedule a first flow differently.
/// - NAT tcp 192.0.2.60:80 -> 10.0.1.n:8080 (`nat`, (n, slot) pairs);
/// - DR tcp 192.0.2.62:80 and :443, persistent (/24, 300 s) in persistence group `group`,
///   -> 192.0.2.n (`group_servers`);
/// - DR udp 192.0.2.53:53 -> 192.0.2.5, slot 9; DR tcp 192.0.2.20:80 -> 192.0.2.6 (MAC
///   unresolved), slot 10.
fn director_table(nat: &[(u8, usize)], group_servers: &[(u8, usize)], group: u32) -> ServiceTable {
    testing::table(
        1,
        vec![
            testing::with_forwarding(
                service(
                    NAT_VIP,
                    Protocol::Tcp,
                    Algorithm::RoundRobin,
                    nat.iter().map(|&(n, slot)| nat_backend(n, slot)).collect(),
                ),
                Forwarding::Nat,
            ),
            testing::with_persistence(
                testing::service_with_ports(
                    GROUP_VIP,
                    &[80, 443],
                    Protocol::Tcp,
                    Algorithm::RoundRobin,
                    group_servers
                        .iter()
                        .map(|&(n, slot)| dr_backend(n, slot))
                        .collect(),
                ),
                300,
                "255.255.255.0",
                group,
            ),
            service(
                "192.0.2.53:53",
                Protocol::Udp,
                Algorithm::RoundRobin,
                vec![dr_backend(5, 9)],
            ),
            service(
                "192.0.2.20:80",
                Protocol::Tcp,
                Algorithm::RoundRobin,
                vec![backend("192.0.2.6", None, 1, 10)],
            ),
        ],
        testing::counter_blocks(1, 12),
    )
    .with_persistence(Arc::new(PersistenceTable::new(64)))
    .with_interfaces(testing::interfaces(1500))
}

/// Director A lists 10.0.1.1..3 (slots 0..2) and 192.0.2.21, .22 (slots 3, 4), group 1.
fn table_a() -> ServiceTable {
    director_table(&[(1, 0), (2, 1), (3, 2)], &[(21, 3), (22, 4)], 1)
}

/// Director B lists them the other way round, on other slots and another group number: only
/// addresses and ports mean the same on both directors.
fn table_b() -> ServiceTable {
    director_table(&[(3, 0), (2, 1), (1, 2)], &[(22, 3), (21, 4)], 7)
}

/// One director: a pipeline with sync queues, its table and counters.
struct Director {
    pipeline: Pipeline,
    table: ServiceTable,
    counters: WorkerCounters,
    queues: SyncQueues,
}

impl Director {
    fn new(table: ServiceTable, capacity: usize) -> Self {
        let queues = SyncQueues::new(1, capacity);
        let pipeline =
            Pipeline::new(0, DIRECTOR_MAC, 64).with_sync(queues.worker(0, true, true, REFRESH));
        Director {
            pipeline,
            table,
            counters: WorkerCounters::default(),
            queues,
        }
    }

    /// Runs `frame` through the pipeline at `now`.
    #[track_caller]
    fn run(&mut self, frame: &FrameBuilder, now: Instant) -> (Verdict, Vec<u8>) {
        testing::run(
            &mut self.pipeline,
            &frame.build(),
            &self.table,
            now,
            &self.counters,
        )
    }

    /// Everything exported so far.
    fn exported(&self) -> Vec<SyncRecord> {
        std::iter::from_fn(|| self.queues.exports()[0].pop()).collect()
    }

    /// Applies everything in the import queue.
    fn import_all(&mut self, now: Instant) {
        while self.pipeline.imports_pending() {
            self.pipeline
                .drain_imports(&self.table, now, &self.counters);
        }
    }
}

/// Moves every record from `from` to `to` through the wire form, as the sync daemon does;
/// returns them.
fn transfer(from: &SyncQueue, to: &SyncQueue) -> Vec<SyncRecord> {
    let mut records = Vec::new();
    while let Some(record) = from.pop() {
        let mut bytes = [0; MAX_RECORD_LEN];
        let length = record.encode(&mut bytes);
        let decoded = SyncRecord::decode(&bytes[..length]).unwrap();
        assert_eq!(decoded, record);
        to.push(decoded).unwrap();
        records.push(record);
    }
    records
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn tcp(src: &str, dst: &str) -> FrameBuilder {
    FrameBuilder::tcp().src(src).dst(dst)
}

fn from_client(frame: FrameBuilder) -> FrameBuilder {
    frame.eth_src(ROUTER_MAC).eth_dst(DIRECTOR_MAC)
}

fn from_server(frame: FrameBuilder, n: u8) -> FrameBuilder {
    frame.eth_src(backend_mac(n)).eth_dst(SERVER_SIDE_MAC)
}

fn to_server(frame: FrameBuilder, n: u8) -> FrameBuilder {
    frame.eth_src(SERVER_SIDE_MAC).eth_dst(backend_mac(n))
}

fn to_client(frame: FrameBuilder) -> FrameBuilder {
    frame.eth_src(DIRECTOR_MAC).eth_dst(ROUTER_MAC)
}

#[track_caller]
fn expect_sent(got: &(Verdict, Vec<u8>), expected: &FrameBuilder, egress: Egress, what: &str) {
    let expected = expected.build();
    assert!(
        matches!(got.0, Verdict::Tx { egress: e, .. } if e == egress),
        "{what}: {:?}",
        got.0
    );
    testing::assert_frame_eq(&expected, &got.1, what);
}

fn key(client: &str, vip: &str, protocol: Protocol) -> FlowKey {
    let (client, vip): (std::net::SocketAddr, std::net::SocketAddr) =
        (client.parse().unwrap(), vip.parse().unwrap());
    FlowKey {
        src_addr: client.ip().into(),
        dst_addr: vip.ip().into(),
        src_port: client.port(),
        dst_port: vip.port(),
        protocol,
    }
}

fn connection_record(
    client: &str,
    vip: &str,
    protocol: Protocol,
    backend: &str,
    forwarding: Forwarding,
    state: ConnState,
) -> SyncRecord {
    SyncRecord::Connection(ConnectionRecord {
        key: key(client, vip, protocol),
        backend: backend.parse().unwrap(),
        forwarding,
        state,
    })
}

#[test]
fn nat_flow_survives_failover_to_a_director_that_never_saw_its_syn() {
    let now = Instant::now();
    let mut a = Director::new(table_a(), 64);
    let mut b = Director::new(table_b(), 64);
    let get = b"GET / HTTP/1.1\r\n\r\n";
    let page = [0x5a; 300];

    // A: the handshake. rr on A picks its first server, 10.0.1.1.
    let syn = from_client(tcp(CLIENT, NAT_VIP).syn());
    let sent = a.run(&syn, now);
    expect_sent(
        &sent,
        &to_server(tcp(CLIENT, NAT_RS).syn().ttl(63), 1),
        Egress::Peer,
        "A: SYN",
    );
    let synack = from_server(tcp(NAT_RS, CLIENT).syn().ack(), 1);
    a.run(&synack, now);
    let ack = from_client(tcp(CLIENT, NAT_VIP).ack());
    a.run(&ack, now);

    // What A exported: the entry when created and when established, nothing for the SYN-ACK.
    let records = transfer(&a.queues.exports()[0], &b.queues.imports()[0]);
    let nat = |state| {
        connection_record(
            CLIENT,
            NAT_VIP,
            Protocol::Tcp,
            NAT_RS,
            Forwarding::Nat,
            state,
        )
    };
    assert_eq!(
        records,
        vec![nat(ConnState::TcpSyn), nat(ConnState::TcpEstablished)]
    );

    // B imports them: one established entry on 10.0.1.1 (B's slot 2), with its reply index.
    b.import_all(now);
    assert_eq!(load(&b.counters.sync_records_imported), 2);
    let entry = b
        .pipeline
        .connections()
        .get(&key(CLIENT, NAT_VIP, Protocol::Tcp))
        .unwrap();
    assert_eq!(
        (
            entry.backend,
            entry.backend_port,
            entry.state,
            entry.counter_slot,
            entry.nat
        ),
        (
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)),
            8080,
            ConnState::TcpEstablished,
            2,
            true
        )
    );
    testing::assert_gauges_match(b.pipeline.connections(), &b.table, 0);
    assert_eq!(load(&b.table.backend_counters[0][2].active_connections), 1);

    // Failover: the real server's next reply reaches B, which translates it back to VIP:80...
    let reply = from_server(tcp(NAT_RS, CLIENT).ack().psh().payload(&page), 1);
    expect_sent(
        &b.run(&reply, now + Duration::from_secs(1)),
        &to_client(tcp(NAT_VIP, CLIENT).ack().psh().payload(&page).ttl(63)),
        Egress::Peer,
        "B: the real server's reply",
    );
    // ...and the client's next segment goes to 10.0.1.1:8080, where A sent the flow.
    let request = from_client(tcp(CLIENT, NAT_VIP).ack().psh().payload(get));
    expect_sent(
        &b.run(&request, now + Duration::from_secs(1)),
        &to_server(tcp(CLIENT, NAT_RS).ack().psh().payload(get).ttl(63), 1),
        Egress::Peer,
        "B: the client's next segment",
    );
    // Imported entries are not exported again (nothing changed since).
    assert!(b.exported().is_empty(), "B echoed records");
    assert_eq!(load(&b.counters.sync_records_exported), 0);

    // Without the sync, B's scheduler would have sent the same segment elsewhere (10.0.1.3).
    let mut alone = Director::new(table_b(), 64);
    let (verdict, frame) = alone.run(&request, now);
    assert!(matches!(verdict, Verdict::Tx { .. }));
    assert_eq!(&frame[..6], &backend_mac(3), "B alone picks another server");
}

#[test]
fn persistence_template_survives_failover() {
    let now = Instant::now();
    let mut a = Director::new(table_a(), 64);
    let mut b = Director::new(table_b(), 64);
    let vip80 = format!("{GROUP_VIP}:80");
    let vip443 = format!("{GROUP_VIP}:443");

    // A pins the client's /24 to 192.0.2.21 (its rr's first).
    let (_, frame) = a.run(&from_client(tcp(CLIENT, &vip80).syn()), now);
    assert_eq!(&frame[..6], &backend_mac(21));
    let records = transfer(&a.queues.exports()[0], &b.queues.imports()[0]);
    assert_eq!(
        records,
        vec![
            connection_record(
                CLIENT,
                &vip80,
                Protocol::Tcp,
                "192.0.2.21:80",
                Forwarding::DirectRouting,
                ConnState::TcpSyn
            ),
            SyncRecord::Template(TemplateRecord {
                service: ServiceKey {
                    vip: GROUP_VIP.parse().unwrap(),
                    port: 80,
                    protocol: Protocol::Tcp,
                },
                client: Ipv4Addr::new(198, 51, 100, 0).into(),
                backend: "192.0.2.21:80".parse().unwrap(),
            }),
        ]
    );
    b.import_all(now);
    // Under B's own group (7) and B's slot for 192.0.2.21 (4).
    assert_eq!(
        b.table
            .persistence
            .lookup(7, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), now),
        Template::Live { counter_slot: 4 }
    );

    // On B, a new connection from a neighbour of that client, to the group's other port, goes
    // to 192.0.2.21 too, though B's rr would have picked 192.0.2.22.
    let neighbour = "198.51.100.9:41000";
    let (verdict, frame) = b.run(&from_client(tcp(neighbour, &vip443).syn()), now);
    assert!(matches!(
        verdict,
        Verdict::Tx {
            egress: Egress::Ingress,
            ..
        }
    ));
    assert_eq!(&frame[..6], &backend_mac(21));
    assert_eq!(load(&b.counters.persistence_hits), 1);
    let mut alone = Director::new(table_b(), 64);
    let (_, frame) = alone.run(&from_client(tcp(neighbour, &vip443).syn()), now);
    assert_eq!(
        &frame[..6],
        &backend_mac(22),
        "B alone picks another server"
    );
}

/// A DR service on [2001:db8::62] ports 80 and 443, persistent per client /64 in group
/// `group`, rr over `2001:db8::n` in the order given (slot = position).
fn ipv6_persistent_table(servers: &[u8], group: u32) -> ServiceTable {
    // The fixture writes "{vip}:{port}": an IPv6 VIP goes in with its brackets.
    let mut service = testing::service_with_ports(
        "[2001:db8::62]",
        &[80, 443],
        Protocol::Tcp,
        Algorithm::RoundRobin,
        servers
            .iter()
            .enumerate()
            .map(|(slot, &n)| backend(&format!("2001:db8::{n:x}"), Some(backend_mac(n)), 1, slot))
            .collect(),
    );
    service.persistence = Some(Persistence {
        timeout: Duration::from_secs(300),
        netmask: u32::MAX,
        netmask6: !0 << 64,
        group,
    });
    testing::table(1, vec![service], testing::counter_blocks(1, servers.len()))
        .with_persistence(Arc::new(PersistenceTable::new(64)))
        .with_interfaces(testing::interfaces(1500))
}

#[test]
fn ipv6_persistence_template_survives_failover() {
    let now = Instant::now();
    let mut a = Director::new(ipv6_persistent_table(&[0x21, 0x22], 1), 64);
    let mut b = Director::new(ipv6_persistent_table(&[0x22, 0x21], 7), 64);
    let syn = |client: &str, port: u16| {
        Ipv6FrameBuilder::tcp()
            .src(client)
            .dst(&format!("[2001:db8::62]:{port}"))
            .syn()
    };

    let (verdict, frame) = testing::run(
        &mut a.pipeline,
        &syn("[2001:db8:1::7]:40000", 80).build(),
        &a.table,
        now,
        &a.counters,
    );
    assert!(matches!(verdict, Verdict::Tx { .. }), "{verdict:?}");
    assert_eq!(&frame[..6], &backend_mac(0x21));
    let records = transfer(&a.queues.exports()[0], &b.queues.imports()[0]);
    assert_eq!(
        records,
        vec![
            connection_record(
                "[2001:db8:1::7]:40000",
                "[2001:db8::62]:80",
                Protocol::Tcp,
                "[2001:db8::21]:80",
                Forwarding::DirectRouting,
                ConnState::TcpSyn
            ),
            SyncRecord::Template(TemplateRecord {
                service: ServiceKey {
                    vip: "2001:db8::62".parse().unwrap(),
                    port: 80,
                    protocol: Protocol::Tcp,
                },
                client: "2001:db8:1::".parse().unwrap(),
                backend: "[2001:db8::21]:80".parse().unwrap(),
            }),
        ]
    );
    for record in &records {
        assert_eq!(record.wire_len(), dataplane::sync::RECORD6_LEN);
    }
    b.import_all(now);
    assert_eq!(load(&b.counters.sync_records_unknown), 0);
    // Under B's own group (7) and B's slot for 2001:db8::21 (1).
    assert_eq!(
        b.table
            .persistence
            .lookup(7, "2001:db8:1::".parse().unwrap(), now),
        Template::Live { counter_slot: 1 }
    );
    // B sends a neighbour in the same /64, on the other port, to 2001:db8::21 as A would,
    // though its own rr would start with 2001:db8::22; and the synced flow goes on there.
    let (_, frame) = testing::run(
        &mut b.pipeline,
        &syn("[2001:db8:1::9]:41000", 443).build(),
        &b.table,
        now,
        &b.counters,
    );
    assert_eq!(&frame[..6], &backend_mac(0x21));
    assert_eq!(load(&b.counters.persistence_hits), 1);
    let ack = Ipv6FrameBuilder::tcp()
        .src("[2001:db8:1::7]:40000")
        .dst("[2001:db8::62]:80")
        .ack();
    let (_, frame) = testing::run(&mut b.pipeline, &ack.build(), &b.table, now, &b.counters);
    assert_eq!(&frame[..6], &backend_mac(0x21));
}

#[test]
fn exports_follow_creation_state_changes_and_refresh_only() {
    let start = Instant::now();
    let at = |seconds: u64| start + Duration::from_secs(seconds);
    let mut a = Director::new(table_a(), 64);
    let vip = "192.0.2.62:80";
    let dr = |state| {
        connection_record(
            CLIENT,
            vip,
            Protocol::Tcp,
            "192.0.2.21:80",
            Forwarding::DirectRouting,
            state,
        )
    };
    let connections = |records: Vec<SyncRecord>| {
        records
            .into_iter()
            .filter(|record| matches!(record, SyncRecord::Connection(_)))
            .collect::<Vec<_>>()
    };
    let flow = |frame: FrameBuilder| from_client(frame);

    a.run(&flow(tcp(CLIENT, vip).syn()), at(0));
    assert_eq!(
        connections(a.exported()),
        vec![dr(ConnState::TcpSyn)],
        "created"
    );
    a.run(&flow(tcp(CLIENT, vip).syn()), at(0));
    assert!(
        a.exported().is_empty(),
        "a retransmitted SYN changes nothing"
    );
    a.run(&flow(tcp(CLIENT, vip).ack()), at(1));
    assert_eq!(
        connections(a.exported()),
        vec![dr(ConnState::TcpEstablished)]
    );
    for second in 2..60 {
        a.run(&flow(tcp(CLIENT, vip).ack().payload(b"x")), at(second));
    }
    assert!(a.exported().is_empty(), "no record per packet");
    a.run(&flow(tcp(CLIENT, vip).ack()), at(61));
    let refreshed = a.exported();
    assert_eq!(
        connections(refreshed.clone()),
        vec![dr(ConnState::TcpEstablished)],
        "refresh"
    );
    assert!(
        matches!(refreshed[1], SyncRecord::Template(_)),
        "the template follows its connection"
    );
    a.run(&flow(tcp(CLIENT, vip).fin().ack()), at(62));
    assert_eq!(connections(a.exported()), vec![dr(ConnState::TcpFinWait)]);
    a.run(&flow(tcp(CLIENT, vip).rst()), at(62));
    assert_eq!(connections(a.exported()), vec![dr(ConnState::TcpClose)]);

    // UDP: on creation and refresh.
    let udp = || {
        flow(
            FrameBuilder::udp()
                .src(CLIENT)
                .dst("192.0.2.53:53")
                .payload(b"q"),
        )
    };
    let dns = connection_record(
        CLIENT,
        "192.0.2.53:53",
        Protocol::Udp,
        "192.0.2.5:53",
        Forwarding::DirectRouting,
        ConnState::Udp,
    );
    a.run(&udp(), at(100));
    a.run(&udp(), at(130));
    assert_eq!(a.exported(), vec![dns]);
    a.run(&udp(), at(160));
    assert_eq!(a.exported(), vec![dns]);

    // Nothing for frames that create no entry: a drop, a RST without an entry.
    let (verdict, _) = a.run(&flow(tcp(CLIENT, "192.0.2.20:80").syn()), at(200));
    assert!(matches!(verdict, Verdict::Drop(_)));
    a.run(&flow(tcp("198.51.100.8:1", vip).rst()), at(200));
    assert!(a.exported().is_empty());
    assert_eq!(load(&a.counters.sync_records_dropped), 0);
    // Five connection records of a persistent service, each with its template, and two UDP ones.
    assert_eq!(load(&a.counters.sync_records_exported), 12);
}

#[test]
fn a_full_export_queue_drops_and_counts_and_no_sync_costs_nothing() {
    let now = Instant::now();
    let vip = "192.0.2.62:80";
    // A full queue drops and counts; forwarding goes on.
    let mut small = Director::new(table_a(), 1);
    small.run(&from_client(tcp(CLIENT, NAT_VIP).syn()), now);
    let (verdict, _) = small.run(&from_client(tcp("198.51.100.8:2", NAT_VIP).syn()), now);
    assert!(matches!(verdict, Verdict::Tx { .. }));
    assert_eq!(load(&small.counters.sync_records_exported), 1);
    assert_eq!(load(&small.counters.sync_records_dropped), 1);

    // Without sync: no queue, nothing counted.
    let mut plain = Pipeline::new(0, DIRECTOR_MAC, 64);
    let table = table_a();
    let counters = WorkerCounters::default();
    testing::run(
        &mut plain,
        &from_client(tcp(CLIENT, vip).syn()).build(),
        &table,
        now,
        &counters,
    );
    assert!(!plain.imports_pending());
    assert_eq!(load(&counters.sync_records_exported), 0);
}

#[test]
fn imports_resolve_by_address_and_port_and_move_gauges() {
    let now = Instant::now();
    let mut b = Director::new(table_b(), 64);
    let import = |b: &mut Director, record: SyncRecord| {
        b.pipeline.import(&record, &b.table, now, &b.counters)
    };
    let nat = |backend: &str, state| {
        connection_record(
            CLIENT,
            NAT_VIP,
            Protocol::Tcp,
            backend,
            Forwarding::Nat,
            state,
        )
    };

    // Unknown: no such service, real server, port or forwarding method; a template for a
    // service without persistence.
    let unknown = [
        connection_record(
            CLIENT,
            "192.0.2.99:80",
            Protocol::Tcp,
            NAT_RS,
            Forwarding::Nat,
            ConnState::TcpSyn,
        ),
        nat("10.0.1.9:8080", ConnState::TcpSyn),
        nat("10.0.1.1:80", ConnState::TcpSyn),
        connection_record(
            CLIENT,
            NAT_VIP,
            Protocol::Tcp,
            NAT_RS,
            Forwarding::Tunnel,
            ConnState::TcpSyn,
        ),
        SyncRecord::Template(TemplateRecord {
            service: ServiceKey {
                vip: Ipv4Addr::new(192, 0, 2, 60).into(),
                port: 80,
                protocol: Protocol::Tcp,
            },
            client: Ipv4Addr::new(198, 51, 100, 0).into(),
            backend: NAT_RS.parse().unwrap(),
        }),
    ];
    for record in unknown {
        assert!(!import(&mut b, record), "{record:?}");
    }
    assert_eq!(load(&b.counters.sync_records_unknown), 5);
    assert!(b.pipeline.connections().is_empty());

    // Established, then a late SYN record: stays established.
    assert!(import(&mut b, nat(NAT_RS, ConnState::TcpEstablished)));
    assert!(import(&mut b, nat(NAT_RS, ConnState::TcpSyn)));
    let flow = key(CLIENT, NAT_VIP, Protocol::Tcp);
    assert_eq!(
        b.pipeline.connections().get(&flow).unwrap().state,
        ConnState::TcpEstablished
    );
    testing::assert_gauges_match(b.pipeline.connections(), &b.table, 0);
    // The master moved the flow to 10.0.1.2: rebound, gauge and reply index follow.
    assert!(import(
        &mut b,
        nat("10.0.1.2:8080", ConnState::TcpEstablished)
    ));
    let entry = b.pipeline.connections().get(&flow).unwrap();
    assert_eq!(
        (entry.backend, entry.counter_slot),
        (IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2)), 1)
    );
    testing::assert_gauges_match(b.pipeline.connections(), &b.table, 0);
    let reply = FlowKey {
        src_addr: Ipv4Addr::new(10, 0, 1, 2).into(),
        dst_addr: flow.src_addr,
        src_port: 8080,
        dst_port: flow.src_port,
        protocol: Protocol::Tcp,
    };
    assert_eq!(b.pipeline.connections().get_reply(&reply).unwrap().0, &flow);
    // Closing, then expired by housekeeping: the gauges come back to zero.
    assert!(import(&mut b, nat("10.0.1.2:8080", ConnState::TcpClose)));
    b.pipeline
        .housekeeping(&b.table, now + Duration::from_secs(60), &b.counters);
    assert!(b.pipeline.connections().is_empty());
    testing::assert_gauges_match(b.pipeline.connections(), &b.table, 0);
    assert_eq!(load(&b.counters.sync_records_imported), 4);
    assert!(b.exported().is_empty(), "imports are never exported");
}

/// Five DR real servers, 192.0.2.31..35, listed in `order` with slots in that order.
fn maglev_table(order: &[u8]) -> ServiceTable {
    let backends = || {
        order
            .iter()
            .enumerate()
            .map(|(slot, &n)| dr_backend(n, slot))
            .collect::<Vec<_>>()
    };
    testing::table(
        1,
        vec![
            service(
                "192.0.2.10:80",
                Protocol::Tcp,
                Algorithm::Maglev,
                backends(),
            ),
            testing::with_forwarding(
                service(
                    "192.0.2.70:80",
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    backends(),
                ),
                Forwarding::Tunnel,
            ),
        ],
        testing::counter_blocks(1, order.len()),
    )
    .with_interfaces(testing::interfaces(1500))
}

#[test]
fn maglev_directors_agree_without_sync_for_dr_and_tun() {
    let a = maglev_table(&[31, 32, 33, 34, 35]);
    let b = maglev_table(&[35, 33, 31, 34, 32]);
    let address = |table: &ServiceTable, vip: &str, key: &FlowKey| {
        let (_, service) = table
            .lookup(&ServiceKey {
                vip: vip.parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
            })
            .unwrap();
        let flow = scheduler::Flow {
            hash: key.flow_hash(),
            src_addr: key.src_addr.fold32(),
            dst_addr: key.dst_addr.fold32(),
        };
        let index = service.scheduler.pick(&flow, &scheduler::NoLoads).unwrap();
        service.backends[index].address
    };

    // Two tables built independently from the same servers map every flow alike.
    let clients: Vec<String> = (0..2000u32)
        .map(|n| format!("203.0.113.{}:{}", n % 250 + 1, 1024 + n * 7))
        .collect();
    let mut spread = std::collections::HashSet::new();
    for client in &clients {
        for vip in ["192.0.2.10", "192.0.2.70"] {
            let flow = key(client, &format!("{vip}:80"), Protocol::Tcp);
            let chosen = address(&a, vip, &flow);
            assert_eq!(chosen, address(&b, vip, &flow), "{client} -> {vip}");
            spread.insert(chosen);
        }
    }
    assert_eq!(spread.len(), 5, "the sample reaches every server");

    // Through the pipelines: A sees each flow's SYN; B, with no entry and no sync, gets a
    // mid-flow ACK and sends it where A sent the SYN.
    let counters = WorkerCounters::default();
    let mut pipeline_a = Pipeline::new(0, DIRECTOR_MAC, 4096);
    let mut pipeline_b = Pipeline::new(0, DIRECTOR_MAC, 4096);
    let now = Instant::now();
    for client in clients.iter().take(500) {
        // DR: the real server's MAC.
        let (_, first) = testing::run(
            &mut pipeline_a,
            &tcp(client, "192.0.2.10:80").syn().build(),
            &a,
            now,
            &counters,
        );
        let (verdict, later) = testing::run(
            &mut pipeline_b,
            &tcp(client, "192.0.2.10:80").ack().payload(b"x").build(),
            &b,
            now,
            &counters,
        );
        assert!(matches!(verdict, Verdict::Tx { .. }));
        assert_eq!(first[..6], later[..6], "DR {client}");
        // TUN: the outer header's destination and MAC.
        let (_, first) = testing::run(
            &mut pipeline_a,
            &tcp(client, "192.0.2.70:80").syn().build(),
            &a,
            now,
            &counters,
        );
        let (verdict, later) = testing::run(
            &mut pipeline_b,
            &tcp(client, "192.0.2.70:80").ack().payload(b"x").build(),
            &b,
            now,
            &counters,
        );
        assert!(matches!(verdict, Verdict::Tx { .. }));
        assert_eq!(first[..6], later[..6], "TUN {client}: MAC");
        assert_eq!(
            first[30..34],
            later[30..34],
            "TUN {client}: outer destination"
        );
    }
    // B's pickups are provisional (SYN state) until their next ACK confirms them.
    assert!(pipeline_b
        .connections()
        .iter()
        .all(|(_, connection)| connection.state == ConnState::TcpSyn));
}
