//! Service, backend and table helpers for fixtures, and the check that the backend gauges match
//! the connection table.
//!
//! Test support only: it allocates and panics on bad input.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::conntrack::{ConnState, ConnTable, FlowKey};
use crate::counters::{backend_counter_block, BackendCounters};
use crate::service::{
    Backend, Forwarding, Persistence, Protocol, Service, ServiceKey, ServiceTable, Timeouts,
};
use crate::sync::{ConnectionRecord, SyncRecord, TemplateRecord};
use crate::wire::MacAddr;

/// A real server for fixtures: `"10.0.0.n"`, its MAC (`None`: unresolved), weight and slot.
pub fn backend(address: &str, mac: Option<MacAddr>, weight: u32, counter_slot: usize) -> Backend {
    Backend {
        address: address
            .parse()
            .unwrap_or_else(|_| panic!("not an IP address: {address:?}")),
        mac,
        weight,
        counter_slot,
        port: 0,
        thresholds: crate::service::Thresholds::default(),
    }
}

/// A service on `"vip:port"` with a real scheduler over `backends` (candidate key: the address).
pub fn service(
    vip_port: &str,
    protocol: Protocol,
    algorithm: scheduler::Algorithm,
    backends: Vec<Backend>,
) -> Service {
    let addr: SocketAddr = vip_port
        .parse()
        .unwrap_or_else(|_| panic!("not a socket address: {vip_port:?}"));
    let candidates: Vec<scheduler::Candidate> = backends
        .iter()
        .map(|backend| scheduler::Candidate {
            key: crate::service::scheduler_key(backend.address),
            weight: backend.weight,
        })
        .collect();
    let scheduler =
        scheduler::Scheduler::new(algorithm, &candidates, scheduler::DEFAULT_MAGLEV_TABLE_SIZE)
            .unwrap();
    Service {
        name: format!("{}-{vip_port}", protocol.name()),
        key: ServiceKey {
            vip: addr.ip(),
            port: addr.port(),
            protocol,
        },
        ports: vec![addr.port()],
        persistence: None,
        forwarding: Forwarding::DirectRouting,
        scheduler,
        backends,
    }
}

/// `service` forwarding by `forwarding` (NAT or TUN; [`service`] makes DR ones).
pub fn with_forwarding(mut service: Service, forwarding: Forwarding) -> Service {
    service.forwarding = forwarding;
    service
}

/// `backend` with a NAT port mapping to `port`.
pub fn with_port(mut backend: Backend, port: u16) -> Backend {
    backend.port = port;
    backend
}

/// [`service`] answering on several ports of `vip` (a service group, as an LVS firewall-mark
/// service), the first being `key.port`.
pub fn service_with_ports(
    vip: &str,
    ports: &[u16],
    protocol: Protocol,
    algorithm: scheduler::Algorithm,
    backends: Vec<Backend>,
) -> Service {
    let (&first, _) = ports
        .split_first()
        .unwrap_or_else(|| panic!("a service needs a port"));
    let mut service = service(&format!("{vip}:{first}"), protocol, algorithm, backends);
    service.ports = ports.to_vec();
    service
}

/// `service` with persistence: `timeout_secs`, clients masked with `netmask` (`"a.b.c.d"`), in
/// persistence group `group`.
pub fn with_persistence(
    mut service: Service,
    timeout_secs: u64,
    netmask: &str,
    group: u32,
) -> Service {
    let netmask: Ipv4Addr = netmask
        .parse()
        .unwrap_or_else(|_| panic!("not an IPv4 netmask: {netmask:?}"));
    service.persistence = Some(Persistence {
        timeout: Duration::from_secs(timeout_secs),
        netmask: u32::from(netmask),
        netmask6: u128::MAX,
        group,
    });
    service
}

/// Panics unless every backend gauge of `worker` in `table` equals a recount of `connections`:
/// active = TCP established or UDP entries, inactive = other TCP entries, per counter slot.
#[track_caller]
pub fn assert_gauges_match(connections: &ConnTable, table: &ServiceTable, worker: usize) {
    let block = &table.backend_counters[worker];
    let mut recount = vec![(0u64, 0u64); block.len()];
    for (key, connection) in connections.iter() {
        let counts = recount
            .get_mut(connection.counter_slot as usize)
            .unwrap_or_else(|| {
                panic!(
                    "{key:?} counted in slot {} beyond the block",
                    connection.counter_slot
                )
            });
        if connection.state.is_active() {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    let gauges: Vec<(u64, u64)> = block
        .iter()
        .map(|counters| {
            (
                counters.active_connections.load(Ordering::Relaxed),
                counters.inactive_connections.load(Ordering::Relaxed),
            )
        })
        .collect();
    assert_eq!(
        gauges, recount,
        "(active, inactive) gauges per slot differ from a recount of the connection table"
    );
}

/// One counter block per worker, with `slots` backend slots each, to share across generations.
pub fn counter_blocks(workers: usize, slots: usize) -> Vec<Arc<[BackendCounters]>> {
    (0..workers).map(|_| backend_counter_block(slots)).collect()
}

/// A service table with default timeouts.
pub fn table(
    generation: u64,
    services: Vec<Service>,
    counters: Vec<Arc<[BackendCounters]>>,
) -> ServiceTable {
    ServiceTable::new(generation, services, Timeouts::default(), counters)
}

/// A state-sync record of an established DR connection from client port `40000 + n` to
/// 192.0.2.10:80, on 192.0.2.11: the sync format's and the sync daemon's tests both use it.
pub fn sync_connection(n: u16) -> SyncRecord {
    SyncRecord::Connection(ConnectionRecord {
        key: FlowKey {
            src_addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)).into(),
            dst_addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)).into(),
            src_port: 40000 + n,
            dst_port: 80,
            protocol: Protocol::Tcp,
        },
        backend: SocketAddr::from(([192, 0, 2, 11], 80)),
        forwarding: Forwarding::DirectRouting,
        state: ConnState::TcpEstablished,
    })
}

/// A state-sync persistence template: client network 198.51.100.0 of 192.0.2.10:443 on
/// 192.0.2.12.
pub fn sync_template() -> SyncRecord {
    SyncRecord::Template(TemplateRecord {
        service: ServiceKey {
            vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            port: 443,
            protocol: Protocol::Tcp,
        },
        client: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)),
        backend: SocketAddr::from(([192, 0, 2, 12], 443)),
    })
}
