//! Service tables for the workers: rebuilt from the state in force (configuration, run-time
//! overrides, servers health checks hold down, real-server MACs) whenever a piece of it
//! changes, and published: sent to every worker, waiting (bounded) until each adopted it.
//! Health verdicts and the once-a-second neighbour refresh feed it here.
//!
//! Never blocks a worker: workers swap tables themselves and hand the old ones back to be
//! freed here. It must not touch the classifiers' maps or addresses.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tracing::{info, warn};

use super::Director;
use crate::config::Config;
use crate::health::{Health, Transition};
use crate::neighbours::{self, Neighbours};
use crate::table::{BackendId, BuiltTable, ReuseGate, TableBuilder};

/// How long control waits for every worker to adopt a new table.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

impl Director {
    /// Re-reads real-server MACs (soliciting missing ones) and publishes a new table if any
    /// changed.
    pub(super) fn refresh_neighbours(&mut self) {
        self.free_retired_tables();
        let (fresh, missing) = neighbours::lookup(&mut self.netlink, self.sides, &self.config);
        neighbours::solicit(&mut self.netlink, &missing);
        if fresh == self.neighbours {
            return;
        }
        if fresh.gateway != self.neighbours.gateway || fresh.gateway6 != self.neighbours.gateway6 {
            info!(
                gateway = ?fresh.gateway,
                gateway6 = ?fresh.gateway6,
                "client side's next hop for NAT replies changed"
            );
        }
        self.neighbours = fresh;
        set_gateway(&mut self.builder, &self.neighbours);
        self.rebuild();
    }

    /// Applies health changes: `first`, and any others already waiting, in one rebuild.
    pub(super) fn health_changed(&mut self, first: Transition, transitions: &Receiver<Transition>) {
        let mut changed = false;
        for Transition {
            id,
            from,
            to,
            reason,
        } in std::iter::once(first).chain(transitions.try_iter())
        {
            // A server a reload stopped checking may still have a verdict on the way.
            if !checked(&self.config, &id) {
                continue;
            }
            let (service, backend) = (&id.0, id.1);
            let (from, to_name) = (from.name(), to.name());
            match to {
                Health::Down => warn!(
                    %service, %backend, from, to = to_name, %reason,
                    "health check: service {service} backend {backend}: {from} -> {to_name} ({reason})"
                ),
                Health::Up => info!(
                    %service, %backend, from, to = to_name, %reason,
                    "health check: service {service} backend {backend}: {from} -> {to_name} ({reason})"
                ),
            }
            changed |= match to {
                Health::Down => self.down.insert(id),
                Health::Up => self.down.remove(&id),
            };
        }
        if changed {
            self.rebuild();
        }
    }

    /// Drops the tables the workers replaced: here, off their hot loops, the last reference
    /// to a table frees its Maglev lookup tables.
    fn free_retired_tables(&self) {
        while self.retired_tables.try_recv().is_ok() {}
    }

    /// Builds a table from the state in force and publishes it.
    pub(super) fn rebuild(&mut self) {
        let gate = self.reuse_gate(&self.config);
        match self.builder.build(
            &self.config,
            &self.overrides,
            &self.down,
            &self.neighbours.backends,
            gate,
        ) {
            Ok(built) => self.publish(built),
            Err(error) => warn!(%error, "could not rebuild the service table"),
        }
    }

    /// What decides whether a retired counter slot may be reused now.
    pub(super) fn reuse_gate(&self, next: &Config) -> ReuseGate {
        let hold = self
            .config
            .services
            .iter()
            .chain(&next.services)
            .filter_map(|service| service.persistence)
            .max()
            .unwrap_or(Duration::ZERO);
        let adopted_generation = self
            .shared
            .workers
            .iter()
            .map(|worker| worker.counters.table_generation.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        ReuseGate {
            adopted_generation,
            hold,
            now: Instant::now(),
        }
    }

    /// Sends a table to every worker and waits (bounded) until all of them use it.
    pub(super) fn publish(&self, built: BuiltTable) {
        let BuiltTable { table, pool } = built;
        let table = Arc::new(table);
        // Room for the tables this one replaces: a worker whose retired tables find the
        // channel full keeps its table until control drains it (see `worker::adopt_newest`).
        self.free_retired_tables();
        for worker in &self.shared.workers {
            // A full channel means the worker is behind; it will take this one after the others.
            if worker
                .tables
                .send_timeout(Arc::clone(&table), PUBLISH_TIMEOUT)
                .is_err()
            {
                warn!(
                    worker = worker.index,
                    "worker did not take the new service table"
                );
            }
        }
        let deadline = Instant::now() + PUBLISH_TIMEOUT;
        while self.shared.workers.iter().any(|worker| {
            worker.counters.table_generation.load(Ordering::Acquire) < table.generation
        }) {
            if Instant::now() >= deadline {
                warn!(
                    generation = table.generation,
                    "not every worker adopted the new service table in time"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            self.free_retired_tables();
        }
        self.free_retired_tables();
        if let Ok(mut current) = self.shared.table.lock() {
            *current = table;
        }
        if let Ok(mut current) = self.shared.pool.lock() {
            for (service, fallback) in pool.fallbacks.difference(&current.fallbacks) {
                warn!(
                    %service, %fallback,
                    "service {service}: no real server left in the pool; fallback {fallback} takes new flows"
                );
            }
            for (service, fallback) in current.fallbacks.difference(&pool.fallbacks) {
                info!(
                    %service, %fallback,
                    "service {service}: real servers are back; fallback {fallback} takes no new flows"
                );
            }
            *current = pool;
        }
    }
}

/// Whether `config` health-checks server `id`.
pub(super) fn checked(config: &Config, id: &BackendId) -> bool {
    config.services.iter().any(|service| {
        service.name == id.0
            && service.health_check.is_some()
            && service
                .backends
                .iter()
                .any(|backend| backend.address == id.1)
    })
}

/// Gives the client side's facts the NAT replies' next hop as last resolved.
pub(super) fn set_gateway(builder: &mut TableBuilder, resolved: &Neighbours) {
    if let Some(interfaces) = &mut builder.interfaces {
        interfaces.client.next_hop_mac = resolved.gateway_mac();
    }
}
