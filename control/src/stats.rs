//! Answers stats-socket requests from the running director's state.

use std::sync::atomic::Ordering;

use dataplane::DropReason;
use director_proto::{BackendStats, Reply, Request, ServiceStats, Stats, WorkerStats};

use crate::config::format_mac;
use crate::run::Shared;

/// Serves one request.
pub fn answer(shared: &Shared, request: &Request) -> Reply {
    match request {
        Request::Stats => Reply::Stats(collect(shared)),
    }
}

fn collect(shared: &Shared) -> Stats {
    let table = match shared.table.lock() {
        Ok(table) => std::sync::Arc::clone(&table),
        Err(poisoned) => std::sync::Arc::clone(&poisoned.into_inner()),
    };
    let services = table
        .services
        .iter()
        .map(|service| ServiceStats {
            name: service.name.clone(),
            vip: service.key.vip.to_string(),
            port: service.key.port,
            protocol: service.key.protocol.name().to_owned(),
            scheduler: service.scheduler.algorithm().to_string(),
            forwarding: service.forwarding.name().to_owned(),
            backends: service
                .backends
                .iter()
                .map(|backend| {
                    let mut stats = BackendStats {
                        address: backend.address.to_string(),
                        port: service.key.port,
                        weight: backend.weight,
                        mac: backend.mac.map(format_mac),
                        ..BackendStats::default()
                    };
                    for block in &table.backend_counters {
                        if let Some(counters) = block.get(backend.counter_slot) {
                            stats.connections_total +=
                                counters.connections_total.load(Ordering::Relaxed);
                            stats.packets_in += counters.packets_in.load(Ordering::Relaxed);
                            stats.bytes_in += counters.bytes_in.load(Ordering::Relaxed);
                        }
                    }
                    stats
                })
                .collect(),
        })
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
            let kernel = &counters.kernel;
            let others = [
                ("connections_created", load(&counters.connections_created)),
                ("connections_expired", load(&counters.connections_expired)),
                ("connections_evicted", load(&counters.connections_evicted)),
                ("connections_active", load(&counters.connections_active)),
                ("conn_table_full", load(&counters.conn_table_full)),
                ("fill_ring_starved", load(&counters.fill_ring_starved)),
                ("tx_wakeups", load(&counters.tx_wakeups)),
                ("bad_descriptors", load(&counters.bad_descriptors)),
                ("xsk_rx_dropped", load(&kernel.rx_dropped)),
                ("xsk_rx_invalid_descs", load(&kernel.rx_invalid_descs)),
                ("xsk_tx_invalid_descs", load(&kernel.tx_invalid_descs)),
                ("xsk_rx_ring_full", load(&kernel.rx_ring_full)),
                ("xsk_rx_fill_ring_empty", load(&kernel.rx_fill_ring_empty)),
                ("xsk_tx_ring_empty", load(&kernel.tx_ring_empty)),
            ];
            WorkerStats {
                worker: worker.index,
                interface: worker.interface.clone(),
                queue: worker.queue,
                rx_packets: load(&counters.rx_packets),
                rx_bytes: load(&counters.rx_bytes),
                tx_packets: load(&counters.tx_packets),
                tx_bytes: load(&counters.tx_bytes),
                drops,
                counters: others
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), *value))
                    .collect(),
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
    }
}
