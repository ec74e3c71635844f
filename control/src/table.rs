//! Building the data plane's [`ServiceTable`] from the configuration, run-time overrides and
//! the neighbour table, keeping backend identities stable across rebuilds.
//!
//! Every real server of every service gets a *counter slot*: its index in each worker's counter
//! block. Workers keep their connection gauges and the persistence table refers to servers by
//! slot, so a slot must mean the same server for as long as anything refers to it. The
//! [`SlotAllocator`] therefore keys slots by (service name, address), keeps them across reloads,
//! and reuses a slot only once its server has left the configuration and every worker's
//! active and inactive gauges for it have fallen to zero.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use dataplane::counters::{backend_counter_block, BackendCounters};
use dataplane::persistence::PersistenceTable;
use dataplane::service::Persistence;
use dataplane::{Backend, Service, ServiceKey, ServiceTable};

use crate::config::{Config, ServiceConfig};

/// Counter slots per worker: the most real servers (over all services) that can be configured
/// at once, plus those still draining after a reload removed them. 64 bytes each per worker.
pub const BACKEND_SLOTS: usize = 16_384;

/// Identity of a real server for counters, persistence and overrides.
pub type BackendId = (String, Ipv4Addr);

/// Changes made at run time through the control socket; a reload discards them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Override {
    /// Weight replacing the configured one.
    pub weight: Option<u32>,
    /// Out of the pool: not in the table at all, so its flows are rescheduled.
    pub disabled: bool,
}

/// Hands out counter slots and persistence groups that stay put across rebuilds.
pub struct SlotAllocator {
    slots: HashMap<BackendId, usize>,
    free: Vec<usize>,
    /// Slots of servers no longer configured, freed once their gauges are zero.
    draining: Vec<usize>,
    groups: HashMap<String, u32>,
    next_group: u32,
}

impl SlotAllocator {
    fn new() -> Self {
        SlotAllocator {
            slots: HashMap::new(),
            free: (0..BACKEND_SLOTS).rev().collect(),
            draining: Vec::new(),
            groups: HashMap::new(),
            next_group: 1,
        }
    }

    /// Frees draining slots whose gauges are zero everywhere, resetting their counters.
    fn reclaim(&mut self, blocks: &[Arc<[BackendCounters]>]) {
        let gauges_zero = |slot: usize| {
            blocks
                .iter()
                .filter_map(|block| block.get(slot))
                .all(|counters| {
                    counters.active_connections.load(Ordering::Relaxed) == 0
                        && counters.inactive_connections.load(Ordering::Relaxed) == 0
                })
        };
        let (reusable, still): (Vec<usize>, Vec<usize>) =
            self.draining.iter().partition(|&&slot| gauges_zero(slot));
        for &slot in &reusable {
            // Nothing refers to the slot any more, so no worker writes it: control may reset.
            for counters in blocks.iter().filter_map(|block| block.get(slot)) {
                counters.connections_total.store(0, Ordering::Relaxed);
                counters.packets_in.store(0, Ordering::Relaxed);
                counters.bytes_in.store(0, Ordering::Relaxed);
            }
        }
        self.free.extend(reusable);
        self.draining = still;
    }

    /// Slots for exactly the servers in `config`; servers that left start draining.
    fn assign(&mut self, config: &Config) -> anyhow::Result<()> {
        let wanted: HashSet<BackendId> = config
            .services
            .iter()
            .flat_map(|service| {
                service
                    .backends
                    .iter()
                    .map(|backend| (service.name.clone(), backend.address))
            })
            .collect();
        let gone: Vec<BackendId> = self
            .slots
            .keys()
            .filter(|id| !wanted.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(slot) = self.slots.remove(&id) {
                self.draining.push(slot);
            }
        }
        for id in wanted {
            if self.slots.contains_key(&id) {
                continue;
            }
            let Some(slot) = self.free.pop() else {
                bail!(
                    "more than {BACKEND_SLOTS} real servers configured or still draining \
                     connections from before a reload"
                );
            };
            self.slots.insert(id, slot);
        }
        Ok(())
    }

    fn group(&mut self, service: &str) -> u32 {
        if let Some(&group) = self.groups.get(service) {
            return group;
        }
        let group = self.next_group;
        self.next_group += 1;
        self.groups.insert(service.to_owned(), group);
        group
    }
}

/// Client templates the shared persistence table holds (16 bytes each, 4 MiB in all).
pub const PERSISTENCE_ENTRIES: usize = 1 << 18;

/// Everything that must outlive one table: counter blocks, slots, the persistence table.
pub struct TableBuilder {
    /// One counter block per worker, `BACKEND_SLOTS` long, shared by every table.
    pub counter_blocks: Vec<Arc<[BackendCounters]>>,
    persistence: Arc<PersistenceTable>,
    slots: SlotAllocator,
    generation: u64,
}

impl TableBuilder {
    /// Allocates counters for `workers` workers.
    pub fn new(workers: usize) -> Self {
        TableBuilder {
            counter_blocks: (0..workers)
                .map(|_| backend_counter_block(BACKEND_SLOTS))
                .collect(),
            persistence: Arc::new(PersistenceTable::new(PERSISTENCE_ENTRIES)),
            slots: SlotAllocator::new(),
            generation: 0,
        }
    }

    /// Builds the next table: `config` as modified by `overrides`, with the MACs known so far.
    pub fn build(
        &mut self,
        config: &Config,
        overrides: &HashMap<BackendId, Override>,
        macs: &HashMap<Ipv4Addr, [u8; 6]>,
    ) -> anyhow::Result<ServiceTable> {
        self.slots.reclaim(&self.counter_blocks);
        self.slots.assign(config)?;
        let mut services = Vec::with_capacity(config.services.len());
        for service in &config.services {
            services.push(self.service(service, overrides, macs)?);
        }
        self.generation += 1;
        Ok(ServiceTable::new(
            self.generation,
            services,
            config.director.timeouts,
            self.counter_blocks.clone(),
        )
        .with_persistence(Arc::clone(&self.persistence)))
    }

    fn service(
        &mut self,
        service: &ServiceConfig,
        overrides: &HashMap<BackendId, Override>,
        macs: &HashMap<Ipv4Addr, [u8; 6]>,
    ) -> anyhow::Result<Service> {
        let mut backends = Vec::with_capacity(service.backends.len());
        for backend in &service.backends {
            let id = (service.name.clone(), backend.address);
            let change = overrides.get(&id).copied().unwrap_or_default();
            if change.disabled {
                continue;
            }
            backends.push(Backend {
                address: backend.address,
                mac: backend.mac.or_else(|| macs.get(&backend.address).copied()),
                weight: change.weight.unwrap_or(backend.weight),
                counter_slot: self.slots.slots[&id],
            });
        }
        let candidates: Vec<scheduler::Candidate> = backends
            .iter()
            .map(|backend| scheduler::Candidate {
                key: backend_key(backend.address, service.port),
                weight: backend.weight,
            })
            .collect();
        let scheduler =
            scheduler::Scheduler::new(service.scheduler, &candidates, service.maglev_table_size)
                .with_context(|| {
                    format!(
                        "service {}: building the {} scheduler",
                        service.name, service.scheduler
                    )
                })?;
        let persistence = service.persistence.map(|timeout| Persistence {
            timeout,
            netmask: u32::from(service.persistence_netmask),
            group: self.slots.group(&service.name),
        });
        Ok(Service {
            name: service.name.clone(),
            key: service_key(service),
            ports: service.ports.clone(),
            persistence,
            forwarding: service.forwarding,
            scheduler,
            backends,
        })
    }
}

/// The (VIP, first port, protocol) of a service.
pub fn service_key(service: &ServiceConfig) -> ServiceKey {
    ServiceKey {
        vip: service.vip,
        port: service.port,
        protocol: service.protocol,
    }
}

/// Every (VIP, port, protocol) of every service, for the classifier's map.
pub fn classifier_keys(config: &Config) -> HashSet<ServiceKey> {
    config
        .services
        .iter()
        .flat_map(|service| {
            service.ports.iter().map(|&port| ServiceKey {
                port,
                ..service_key(service)
            })
        })
        .collect()
}

/// Stable identity of a real server for Maglev: the same server hashes the same everywhere.
fn backend_key(address: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(address)) << 16) | u64::from(port)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn config(text_backends: &[&str]) -> Config {
        let mut text = String::from(
            "[director]\ninterfaces = [\"eth0\"]\n[[service]]\nname = \"web\"\nvip = \"192.0.2.10\"\n\
             port = 80\nprotocol = \"tcp\"\nscheduler = \"wlc\"\nforwarding = \"dr\"\n",
        );
        for address in text_backends {
            let _ = write!(text, "[[service.backend]]\naddress = \"{address}\"\n");
        }
        Config::parse(&text).unwrap()
    }

    fn slots(table: &ServiceTable) -> HashMap<Ipv4Addr, usize> {
        table.services[0]
            .backends
            .iter()
            .map(|backend| (backend.address, backend.counter_slot))
            .collect()
    }

    #[test]
    fn slots_survive_reloads_and_are_reused_only_when_drained() {
        let mut builder = TableBuilder::new(2);
        let none = HashMap::new();
        let macs = HashMap::new();
        let first = builder
            .build(&config(&["192.0.2.11", "192.0.2.12"]), &none, &macs)
            .unwrap();
        let before = slots(&first);

        // A reload that adds .13 keeps .11 and .12 where they were.
        let second = builder
            .build(
                &config(&["192.0.2.13", "192.0.2.12", "192.0.2.11"]),
                &none,
                &macs,
            )
            .unwrap();
        let after = slots(&second);
        for (address, slot) in &before {
            assert_eq!(after[address], *slot, "{address} moved");
        }
        assert_eq!(second.generation, first.generation + 1);

        // .11 leaves while a worker still has a connection to it: its slot is not reused.
        let busy = after[&"192.0.2.11".parse().unwrap()];
        builder.counter_blocks[1][busy]
            .active_connections
            .store(1, Ordering::Relaxed);
        builder.counter_blocks[1][busy]
            .packets_in
            .store(7, Ordering::Relaxed);
        builder
            .build(&config(&["192.0.2.12", "192.0.2.13"]), &none, &macs)
            .unwrap();
        let fourth = builder
            .build(
                &config(&["192.0.2.12", "192.0.2.13", "192.0.2.14"]),
                &none,
                &macs,
            )
            .unwrap();
        assert_ne!(slots(&fourth)[&"192.0.2.14".parse().unwrap()], busy);

        // Once the connection is gone the slot is reclaimed, with its counters reset.
        builder.counter_blocks[1][busy]
            .active_connections
            .store(0, Ordering::Relaxed);
        builder
            .build(&config(&["192.0.2.12"]), &none, &macs)
            .unwrap();
        assert_eq!(
            builder.counter_blocks[1][busy]
                .packets_in
                .load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn overrides_change_weight_and_remove_disabled_servers() {
        let mut builder = TableBuilder::new(1);
        let macs = HashMap::new();
        let mut overrides = HashMap::new();
        overrides.insert(
            ("web".to_owned(), "192.0.2.11".parse().unwrap()),
            Override {
                weight: Some(0),
                disabled: false,
            },
        );
        overrides.insert(
            ("web".to_owned(), "192.0.2.12".parse().unwrap()),
            Override {
                weight: None,
                disabled: true,
            },
        );
        let table = builder
            .build(
                &config(&["192.0.2.11", "192.0.2.12", "192.0.2.13"]),
                &overrides,
                &macs,
            )
            .unwrap();
        let backends = &table.services[0].backends;
        let weights: Vec<(String, u32)> = backends
            .iter()
            .map(|backend| (backend.address.to_string(), backend.weight))
            .collect();
        assert_eq!(
            weights,
            [("192.0.2.11".to_owned(), 0), ("192.0.2.13".to_owned(), 1)]
        );
    }
}
