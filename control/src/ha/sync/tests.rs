//! The sync daemon's tests: a sender and a receiver on the loopback interface in this process
//! (batching, filtering, routing, full queues, role switches). The datagram format's own tests
//! are beside it in `dataplane::sync::wire`.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::conntrack::FlowKey;
use dataplane::sync::{SyncQueues, SyncRecord};
use dataplane::testing::{sync_connection as record, sync_template as template};

use super::*;
use crate::netlink;

/// A sender and a receiver on the loopback interface, unicast, in this process: no root.
fn loopback(
    sync_id: u8,
    port: u16,
    workers: usize,
    routing: Routing,
) -> (SyncSender, SyncReceiver, SyncQueues, Arc<SyncCounters>) {
    let queues = SyncQueues::new(workers, 4096);
    let counters = Arc::new(SyncCounters::default());
    let receiver_config = SyncConfig {
        interface: "lo".to_owned(),
        sync_id,
        peers: Some(vec![Ipv4Addr::LOCALHOST]),
        port,
        key: None,
    };
    let receiver = SyncReceiver::new(
        &receiver_config,
        queues.imports().to_vec(),
        routing,
        Arc::clone(&counters),
    )
    .unwrap();
    let port = receiver.local_addr().unwrap().port();
    let sender = SyncSender::new(
        &SyncConfig {
            port,
            ..receiver_config
        },
        queues.exports().to_vec(),
        Arc::clone(&counters),
    )
    .unwrap();
    (sender, receiver, queues, counters)
}

/// Receives until `want` records were queued or 2 s pass.
fn receive(receiver: &mut SyncReceiver, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut queued = 0;
    while queued < want && Instant::now() < deadline {
        queued += receiver.poll(|| Role::Backup);
    }
    queued
}

#[test]
fn batches_by_mtu_and_flushes_partial_datagrams() {
    let Ok(mtu) = netlink::interface_mtu("lo") else {
        return;
    };
    // Port 0: the kernel picks one for the receiver.
    let (mut sender, mut receiver, queues, counters) = loopback(5, 0, 2, Routing::Broadcast);
    let per = sender.records_per_datagram();
    assert_eq!(per, records_per_datagram(usize::from(mtu)));
    // One and a half datagrams' worth, from two workers.
    let total = per + per / 2;
    for n in 0..total {
        queues.exports()[n % 2].push(record(n as u16)).unwrap();
    }
    let start = Instant::now();
    assert_eq!(sender.poll(Role::Master, start), total);
    assert_eq!(counters.snapshot().datagrams_sent, 1, "only the full one");
    // Not yet old enough; then old enough.
    sender.poll(Role::Master, start + FLUSH_INTERVAL / 2);
    assert_eq!(counters.snapshot().datagrams_sent, 1);
    sender.poll(Role::Master, start + FLUSH_INTERVAL);
    assert_eq!(counters.snapshot().datagrams_sent, 2);
    assert_eq!(receive(&mut receiver, total), total);
    let stats = counters.snapshot();
    assert_eq!(stats.records_sent, total as u64);
    assert_eq!(stats.records_received, total as u64);
    assert_eq!(stats.datagrams_received, 2);
    assert_eq!(stats.datagrams_lost, 0);
    // Broadcast: every worker got every record, in order.
    for queue in queues.imports() {
        let got: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        let mut want: Vec<_> = (0..total).map(|n| record(n as u16)).collect::<Vec<_>>();
        // The sender drains worker 0's queue, then worker 1's.
        want.sort_by_key(|record| match record {
            SyncRecord::Connection(c) => ((c.key.src_port - 40000) % 2, c.key.src_port),
            SyncRecord::Template(_) => (2, 0),
        });
        assert_eq!(got, want);
    }
}

/// An IPv6 NAT connection, client port 40000 + `n`.
fn ipv6_record(n: u16) -> SyncRecord {
    SyncRecord::Connection(dataplane::sync::ConnectionRecord {
        key: FlowKey {
            src_addr: "2001:db8:1::7".parse().unwrap(),
            dst_addr: "2001:db8::10".parse().unwrap(),
            src_port: 40_000 + n,
            dst_port: 80,
            protocol: dataplane::service::Protocol::Tcp,
        },
        backend: "[2001:db8::11]:8080".parse().unwrap(),
        forwarding: dataplane::service::Forwarding::Nat,
        state: dataplane::conntrack::ConnState::TcpEstablished,
    })
}

#[test]
fn batches_mixed_families_by_bytes() {
    if netlink::interface_mtu("lo").is_err() {
        return;
    }
    let (mut sender, mut receiver, queues, counters) = loopback(6, 0, 1, Routing::Broadcast);
    // As many 64-byte records as fill a datagram, then three 24-byte ones that do not fit.
    let wide = (sender.max_datagram_len() - HEADER_LEN) / dataplane::sync::RECORD6_LEN;
    let mut want: Vec<_> = (0..wide).map(|n| ipv6_record(n as u16)).collect();
    want.extend((0..3).map(record));
    for &record in &want {
        queues.exports()[0].push(record).unwrap();
    }
    let start = Instant::now();
    assert_eq!(sender.poll(Role::Master, start), want.len());
    assert_eq!(
        counters.snapshot().datagrams_sent,
        1,
        "the full one, at once"
    );
    sender.poll(Role::Master, start + FLUSH_INTERVAL);
    assert_eq!(counters.snapshot().datagrams_sent, 2);
    assert_eq!(receive(&mut receiver, want.len()), want.len());
    let got: Vec<_> = std::iter::from_fn(|| queues.imports()[0].pop()).collect();
    assert_eq!(got, want);
    let stats = counters.snapshot();
    assert_eq!((stats.datagrams_malformed, stats.records_malformed), (0, 0));
}

#[test]
fn sync_id_role_and_peers_filter() {
    let (mut sender, mut receiver, queues, counters) = loopback(1, 0, 1, Routing::Broadcast);
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let stranger: SocketAddr = "192.0.2.99:9".parse().unwrap();
    let mut bytes = Vec::new();
    encode_datagram(2, 0, &[record(1)], &mut bytes);
    assert_eq!(receiver.handle(&bytes, from, Role::Backup), 0);
    assert_eq!(counters.snapshot().datagrams_foreign, 1, "another cluster");
    encode_datagram(1, 1, &[record(1), template()], &mut bytes);
    assert_eq!(receiver.handle(&bytes, stranger, Role::Backup), 0);
    assert_eq!(counters.snapshot().datagrams_foreign, 2, "not a peer");
    assert_eq!(receiver.handle(&bytes, from, Role::Master), 0);
    assert_eq!(counters.snapshot().datagrams_ignored, 1, "a master ignores");
    assert_eq!(receiver.handle(&bytes[..20], from, Role::Backup), 0);
    assert_eq!(counters.snapshot().datagrams_malformed, 1);
    assert!(queues.imports()[0].is_empty());
    encode_datagram(1, 4, &[record(1), template()], &mut bytes);
    assert_eq!(receiver.handle(&bytes, from, Role::Backup), 2);
    assert_eq!(counters.snapshot().datagrams_lost, 2, "datagrams 2 and 3");
    assert_eq!(queues.imports()[0].len(), 2);

    // A backup drains its own exports without sending them.
    queues.exports()[0].push(record(5)).unwrap();
    assert_eq!(sender.poll(Role::Backup, Instant::now()), 1);
    sender.flush();
    let stats = counters.snapshot();
    assert_eq!((stats.records_discarded, stats.datagrams_sent), (1, 0));
}

#[test]
fn hash_routing_picks_one_worker_and_templates_go_to_the_first() {
    fn by_port(key: &FlowKey, _workers: usize) -> usize {
        usize::from(key.src_port)
    }
    let (_, mut receiver, queues, counters) = loopback(1, 0, 3, Routing::Hash(by_port));
    let mut bytes = Vec::new();
    let records: Vec<_> = (0..6).map(record).chain([template()]).collect();
    encode_datagram(1, 0, &records, &mut bytes);
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(receiver.handle(&bytes, from, Role::Backup), 7);
    let lens: Vec<_> = queues.imports().iter().map(|queue| queue.len()).collect();
    // Ports 40000..40005 mod 3: 40000 % 3 = 1.
    assert_eq!(lens, vec![2 + 1, 2, 2]);
    assert_eq!(counters.snapshot().records_dropped, 0);
}

#[test]
fn a_full_import_queue_drops_and_counts() {
    let queues = SyncQueues::new(2, 1);
    let counters = Arc::new(SyncCounters::default());
    let mut receiver = SyncReceiver::new(
        &SyncConfig {
            interface: "lo".to_owned(),
            sync_id: 0,
            peers: Some(vec![Ipv4Addr::LOCALHOST]),
            port: 0,
            key: None,
        },
        queues.imports().to_vec(),
        Routing::Broadcast,
        Arc::clone(&counters),
    )
    .unwrap();
    let mut bytes = Vec::new();
    encode_datagram(0, 0, &[record(1), record(2)], &mut bytes);
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(receiver.handle(&bytes, from, Role::Backup), 2);
    // Each worker took the first; each refused the second.
    assert_eq!(counters.snapshot().records_dropped, 2);
}

/// Waits (at most 2 s) until `done` holds.
fn eventually(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    done()
}

#[test]
fn daemon_switches_roles_at_run_time() {
    // A free port (the daemon sends to its peers on the port it listens on).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let queues = SyncQueues::new(1, 64);
    // Its only peer is itself: as master it receives what it sends, and ignores it.
    let daemon = SyncDaemon::start(
        &SyncConfig {
            interface: "lo".to_owned(),
            sync_id: 9,
            peers: Some(vec![Ipv4Addr::LOCALHOST]),
            port,
            key: None,
        },
        &queues,
        Routing::Broadcast,
        Role::Backup,
    )
    .unwrap();
    let stats = || daemon.counters().snapshot();

    // Backup: its own exports are discarded, a peer's records reach the worker.
    queues.exports()[0].push(record(1)).unwrap();
    assert!(eventually(|| stats().records_discarded == 1));
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bytes = Vec::new();
    encode_datagram(9, 0, &[record(2)], &mut bytes);
    peer.send_to(&bytes, ("127.0.0.1", port)).unwrap();
    assert!(eventually(|| queues.imports()[0].len() == 1));
    assert_eq!(queues.imports()[0].pop(), Some(record(2)));

    // Master: exports leave (and come back to itself, ignored).
    daemon.set_role(Role::Master);
    assert_eq!(daemon.role(), Role::Master);
    queues.exports()[0].push(record(3)).unwrap();
    assert!(eventually(|| stats().records_sent == 1));
    assert!(
        eventually(|| stats().datagrams_ignored == 1),
        "{:?}",
        stats()
    );
    assert!(queues.imports()[0].is_empty());
    assert_eq!(stats().send_errors, 0);
    daemon.stop();
}
