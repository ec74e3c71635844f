//! Answers stats-socket requests from the running director's state: the workers' counters
//! summed per backend and service, health and check counters from the health checker's board,
//! and the rates [`crate::rates`] keeps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use std::net::{IpAddr, Ipv4Addr};

use dataplane::{DropReason, Forwarding, NatReply, Service, ServiceTable};
use director_proto::{
    BackendStats, HaStats, Health, NextHopStats, Reply, Request, RoutingStats, ServiceStats, Stats,
    SyncStats, WorkerStats,
};

use crate::config::format_mac;
use crate::director::state::{HaView, Shared};
use crate::health::BackendHealth;
use crate::table::{BackendId, PoolView};

/// Serves one request.
pub fn answer(shared: &Shared, request: &Request) -> Reply {
    match request {
        Request::Stats => Reply::Stats(snapshot(shared)),
        _ => Reply::Error {
            message: "this request changes state and goes through the director's main loop"
                .to_owned(),
        },
    }
}

/// Everything a stats reply carries, rates and routing included. (Not the once-a-second
/// sample for the rates: routing asks the mirror's thread, which the main loop must not wait
/// on.)
pub fn snapshot(shared: &Shared) -> Stats {
    let mut stats = collect(shared);
    shared.rates.fill(&mut stats);
    stats.routing = routing_stats(shared).map(Box::new);
    stats
}

/// The routing mirror's summary and the next hops of the TUN real servers and of the NAT
/// client side's default route, asked of the mirror's thread (each request bounded).
fn routing_stats(shared: &Shared) -> Option<RoutingStats> {
    let fib = shared.fib.as_ref()?;
    let table = match shared.table.lock() {
        Ok(table) => std::sync::Arc::clone(&table),
        Err(poisoned) => std::sync::Arc::clone(&poisoned.into_inner()),
    };
    let summary = fib.summary().ok()?;
    let counters = match serde_json::to_value(summary.counters) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_u64()?)))
            .collect(),
        _ => std::collections::BTreeMap::new(),
    };
    let nat_reply = table
        .routing
        .as_ref()
        .map_or(NatReply::default(), |routing| routing.nat_reply);
    let mut wanted: Vec<(String, IpAddr)> = Vec::new();
    // Under last-hop, replies follow each client's frames: no route of the client side's to
    // show (and its absence is no fault).
    if nat_reply == NatReply::Route
        && table
            .services
            .iter()
            .any(|service| service.forwarding == Forwarding::Nat)
    {
        wanted.push(("nat client side".to_owned(), Ipv4Addr::UNSPECIFIED.into()));
    }
    for service in &table.services {
        if service.forwarding == Forwarding::Tunnel {
            for backend in &service.backends {
                let role = format!("tun {} {}", service.name, backend.address);
                wanted.push((role, backend.address));
            }
        }
    }
    let next_hops = wanted
        .into_iter()
        .filter_map(|(role, destination)| {
            let found = fib.next_hop(destination).ok()?;
            Some(NextHopStats {
                role,
                destination: found.destination,
                via: found.via,
                mac: found.mac,
                state: found.state,
            })
        })
        .collect();
    Some(RoutingStats {
        nat_reply: nat_reply.name().to_owned(),
        last_update_age_ms: summary.last_update_age_ms,
        memory_bytes: summary.memory_bytes,
        counters,
        next_hops,
    })
}

/// Records a counter sample for the rates; the main loop calls it once a second.
pub fn sample_rates(shared: &Shared) {
    shared
        .rates
        .record(&collect(shared), std::time::Instant::now());
}

/// The counters as they are now (rates all zero).
pub fn collect(shared: &Shared) -> Stats {
    let table = match shared.table.lock() {
        Ok(table) => std::sync::Arc::clone(&table),
        Err(poisoned) => std::sync::Arc::clone(&poisoned.into_inner()),
    };
    let pool = match shared.pool.lock() {
        Ok(pool) => pool.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let health = shared.health.snapshot();
    let services = table
        .services
        .iter()
        .map(|service| service_stats(&table, service, &pool, &health))
        .collect();

    let workers = shared
        .workers
        .iter()
        .map(|worker| {
            let counters = &worker.counters;
            let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
            let drops = DropReason::ALL
                .iter()
                .map(|reason| (reason.name().to_owned(), counters.drops(*reason)))
                .collect();
            let mut others = std::collections::BTreeMap::new();
            counters.for_each_named(|name, counter| {
                others.insert(name.to_owned(), load(counter));
            });
            WorkerStats {
                worker: worker.index,
                interface: worker.interface.clone(),
                queue: worker.queue,
                rx_packets: load(&counters.rx_packets),
                rx_bytes: load(&counters.rx_bytes),
                tx_packets: load(&counters.tx_packets),
                tx_bytes: load(&counters.tx_bytes),
                drops,
                counters: others,
                ..WorkerStats::default()
            }
        })
        .collect();

    let mut xdp = std::collections::BTreeMap::new();
    for interface in &shared.interfaces {
        if let Ok(counters) = interface.classifier.counters() {
            for (name, value) in counters {
                *xdp.entry(name.to_owned()).or_insert(0) += value;
            }
        }
    }

    Stats {
        uptime_seconds: shared.started.elapsed().as_secs_f64(),
        services,
        workers,
        xdp,
        ha: shared.ha.get().map(|view| Box::new(ha_stats(view))),
        routing: None,
    }
}

/// VRRP's status and the sync daemon's counters.
fn ha_stats(view: &HaView) -> HaStats {
    let status = view.vrrp.get();
    let serving = view.serving.load(Ordering::Relaxed);
    HaStats {
        // With IPv4 and IPv6 VIPs, the state control follows (both routers'); the rest is the
        // IPv4 router's.
        state: view.vrrp.combined_state().name().to_owned(),
        serving,
        vrid: status.vrid,
        priority: status.priority,
        master_address: status.master_address.map(|address| address.to_string()),
        master_priority: status.master_priority,
        adverts_sent: status.counters.adverts_sent,
        adverts_received: status.counters.adverts_received,
        transitions: status.counters.transitions,
        became_master: status.counters.became_master,
        adverts_invalid: status.counters.invalid(),
        gratuitous_arps_sent: status.counters.gratuitous_arps_sent,
        takeover_latency_us: view.takeover_latency.last_us.load(Ordering::Relaxed),
        takeover_latency_max_us: view.takeover_latency.max_us.load(Ordering::Relaxed),
        sync: view.sync.as_ref().map(|counters| {
            let counters = counters.snapshot();
            SyncStats {
                role: if serving { "master" } else { "backup" }.to_owned(),
                datagrams_sent: counters.datagrams_sent,
                records_sent: counters.records_sent,
                datagrams_received: counters.datagrams_received,
                records_received: counters.records_received,
                datagrams_malformed: counters.datagrams_malformed,
                datagrams_lost: counters.datagrams_lost,
                records_dropped: counters.records_dropped,
                send_errors: counters.send_errors,
                authenticated: counters.authenticated,
                auth_missing: counters.auth_missing,
                auth_bad_tag: counters.auth_bad_tag,
                auth_replayed: counters.auth_replayed,
                auth_unexpected: counters.auth_unexpected,
            }
        }),
    }
}

/// One service with its backends, counters summed over workers, health from the checker's
/// board; backends out of the pool (disabled or down) are listed after the others.
fn service_stats(
    table: &ServiceTable,
    service: &Service,
    pool: &PoolView,
    health: &HashMap<BackendId, BackendHealth>,
) -> ServiceStats {
    let backend_stats = |address: IpAddr, counter_slot: usize| {
        let id = (service.name.clone(), address);
        let mut stats = BackendStats {
            address: address.to_string(),
            port: service.key.port,
            health: Health::Up,
            fallback: pool.fallbacks.contains(&id),
            ..BackendStats::default()
        };
        for counters in table
            .backend_counters
            .iter()
            .filter_map(|block| block.get(counter_slot))
        {
            let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            stats.connections_total += load(&counters.connections_total);
            stats.packets_in += load(&counters.packets_in);
            stats.bytes_in += load(&counters.bytes_in);
            stats.packets_out += load(&counters.packets_out);
            stats.bytes_out += load(&counters.bytes_out);
            stats.active_connections += load(&counters.active_connections);
            stats.inactive_connections += load(&counters.inactive_connections);
        }
        if let Some(checked) = health.get(&id) {
            stats.health = checked.health;
            stats.checks_passed = checked.checks_passed;
            stats.checks_failed = checked.checks_failed;
            stats.health_transitions = checked.transitions;
            stats.last_check_failure.clone_from(&checked.last_failure);
        }
        stats
    };
    let in_pool = service.backends.iter().map(|backend| BackendStats {
        weight: backend.weight,
        mac: backend.mac.map(format_mac),
        ..backend_stats(backend.address, backend.counter_slot)
    });
    let out_of_pool = pool
        .out
        .iter()
        .filter(|out| out.id.0 == service.name)
        .map(|out| BackendStats {
            disabled: out.disabled,
            // Out of the pool means no new flows, whatever the checks say.
            health: Health::Down,
            mac: out.mac.map(format_mac),
            ..backend_stats(out.id.1, out.counter_slot)
        });
    ServiceStats {
        name: service.name.clone(),
        vip: service.key.vip.to_string(),
        family: if service.key.vip.is_ipv6() {
            "ipv6"
        } else {
            "ipv4"
        }
        .to_owned(),
        port: service.key.port,
        ports: service.ports.clone(),
        persistence_seconds: service
            .persistence
            .map(|persistence| persistence.timeout.as_secs()),
        protocol: service.key.protocol.name().to_owned(),
        scheduler: service.scheduler.algorithm().to_string(),
        forwarding: service.forwarding.name().to_owned(),
        backends: in_pool.chain(out_of_pool).collect(),
        ..ServiceStats::default()
    }
}
