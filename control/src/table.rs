//! Building the data plane's [`ServiceTable`] from the configuration, run-time overrides, the
//! health checks' verdicts and the neighbour table, keeping backend identities stable across
//! rebuilds.
//!
//! Who is in a service's pool: every configured real server, except those disabled at run time
//! and those health checks hold down (with `on_failure = "remove"`; with `"inhibit"` they stay
//! at weight 0, so their flows continue). When no configured server is left that is both enabled
//! and up, the service's `fallback` (sorry server) joins the pool.
//!
//! Every real server of every service gets a *counter slot*: its index in each worker's counter
//! block. Workers keep their connection gauges and the persistence table refers to servers by
//! slot, so a slot must mean the same server for as long as anything refers to it. The
//! [`SlotAllocator`] therefore keys slots by (service name, address), keeps them across reloads,
//! and reuses a slot only once its server has left the configuration and every worker's
//! active and inactive gauges for it have fallen to zero.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dataplane::counters::{backend_counter_block, BackendCounters};
use dataplane::persistence::PersistenceTable;
use dataplane::service::{Interfaces, Persistence};
use dataplane::xdp::NatBackendKey;
use dataplane::{Backend, Forwarding, Routing, Service, ServiceKey, ServiceTable};

use crate::config::{BackendConfig, Config, OnFailure, ServiceConfig};

/// Counter slots per worker: the most real servers (over all services) that can be configured
/// at once, plus those still draining after a reload removed them. 64 bytes each per worker.
pub const BACKEND_SLOTS: usize = 16_384;

/// Identity of a real server for counters, persistence and overrides.
pub type BackendId = (String, IpAddr);

/// Changes made at run time through the control socket; a reload discards them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Override {
    /// Weight replacing the configured one.
    pub weight: Option<u32>,
    /// Out of the pool: not in the table at all, so its flows are rescheduled.
    pub disabled: bool,
}

/// A table and what the stats show besides it.
pub struct BuiltTable {
    /// The table for the workers.
    pub table: ServiceTable,
    /// Configured servers left out of it, and sorry servers put in it.
    pub pool: PoolView,
}

/// What a table does not say about the configuration's real servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolView {
    /// Configured real servers not in the table, in configuration order.
    pub out: Vec<OutOfPool>,
    /// The fallback servers in the table now (their services have no server left).
    pub fallbacks: HashSet<BackendId>,
}

/// A configured real server left out of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutOfPool {
    /// Which.
    pub id: BackendId,
    /// Its counter slot, which it keeps while out (its counters stay readable).
    pub counter_slot: usize,
    /// Its MAC as far as known.
    pub mac: Option<[u8; 6]>,
    /// Disabled at run time (else its health check holds it down).
    pub disabled: bool,
}

/// A slot whose server left the configuration, waiting until nothing can refer to it.
#[derive(Clone, Copy, Debug)]
struct Retired {
    slot: usize,
    /// The first table generation without the server: every worker must have adopted it.
    generation: u64,
    /// When it left: persistence templates may name it for the longest timeout after that.
    at: Instant,
}

/// Hands out counter slots and persistence groups that stay put across rebuilds.
#[derive(Clone)]
pub struct SlotAllocator {
    slots: HashMap<BackendId, usize>,
    free: Vec<usize>,
    /// Slots of servers no longer configured; a server that comes back gets its slot back.
    retired: HashMap<BackendId, Retired>,
    groups: HashMap<String, u32>,
    next_group: u32,
}

/// What decides that a retired slot can be reused.
#[derive(Clone, Copy, Debug)]
pub struct ReuseGate {
    /// The oldest table generation any worker still uses.
    pub adopted_generation: u64,
    /// The longest persistence timeout configured (templates may name a slot that long).
    pub hold: Duration,
    /// Now.
    pub now: Instant,
}

impl SlotAllocator {
    fn new() -> Self {
        SlotAllocator {
            slots: HashMap::new(),
            free: (0..BACKEND_SLOTS).rev().collect(),
            retired: HashMap::new(),
            groups: HashMap::new(),
            next_group: 1,
        }
    }

    /// Frees retired slots nothing can refer to any more: every worker has a table without the
    /// server, its gauges are zero everywhere (no connection entry names it), and persistence
    /// templates naming it have had time to expire. Their counters are reset for the next owner.
    fn reclaim(&mut self, blocks: &[Arc<[BackendCounters]>], gate: ReuseGate) {
        let gauges_zero = |slot: usize| {
            blocks
                .iter()
                .filter_map(|block| block.get(slot))
                .all(|counters| {
                    counters.active_connections.load(Ordering::Relaxed) == 0
                        && counters.inactive_connections.load(Ordering::Relaxed) == 0
                })
        };
        let reusable: Vec<BackendId> = self
            .retired
            .iter()
            .filter(|(_, retired)| {
                gate.adopted_generation >= retired.generation
                    && gate.now.saturating_duration_since(retired.at) >= gate.hold
                    && gauges_zero(retired.slot)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in reusable {
            let Some(retired) = self.retired.remove(&id) else {
                continue;
            };
            for counters in blocks.iter().filter_map(|block| block.get(retired.slot)) {
                counters.connections_total.store(0, Ordering::Relaxed);
                counters.packets_in.store(0, Ordering::Relaxed);
                counters.bytes_in.store(0, Ordering::Relaxed);
                counters.packets_out.store(0, Ordering::Relaxed);
                counters.bytes_out.store(0, Ordering::Relaxed);
            }
            self.free.push(retired.slot);
        }
    }

    /// Slots for exactly the servers in `config` (tables from `generation` on); servers that
    /// left are retired, servers that return get their old slot.
    fn assign(&mut self, config: &Config, generation: u64, now: Instant) -> anyhow::Result<()> {
        let wanted: HashSet<BackendId> = config
            .services
            .iter()
            .flat_map(|service| {
                service
                    .backends
                    .iter()
                    .chain(&service.fallback)
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
                let retired = Retired {
                    slot,
                    generation,
                    at: now,
                };
                self.retired.insert(id, retired);
            }
        }
        for id in wanted {
            if self.slots.contains_key(&id) {
                continue;
            }
            let slot = match self.retired.remove(&id) {
                Some(retired) => retired.slot,
                None => self.free.pop().ok_or_else(|| {
                    anyhow::anyhow!(
                        "more than {BACKEND_SLOTS} real servers configured or still referred to \
                         from before a reload"
                    )
                })?,
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
    /// The director's interface facts for the rewrites that need them (TUN's outer source and
    /// MTU); `None` leaves tunnelled services unable to forward (counted).
    pub interfaces: Option<Interfaces>,
    /// The routing view (FIB snapshot, neighbour array, NAT reply mode) every table carries
    /// from the FIB mirror; `None` until it runs (then NAT replies go to the client side's
    /// default gateway and TUN to the real servers' own MACs, as without it).
    pub routing: Option<Routing>,
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
            interfaces: None,
            routing: None,
            slots: SlotAllocator::new(),
            generation: 0,
        }
    }

    /// Builds the next table: `config` as modified by `overrides`, without (or, inhibited, at
    /// weight 0) the servers in `down`, with the MACs known so far. All or nothing: on an error
    /// the slots and generation stay as they were.
    pub fn build(
        &mut self,
        config: &Config,
        overrides: &HashMap<BackendId, Override>,
        down: &HashSet<BackendId>,
        macs: &HashMap<IpAddr, [u8; 6]>,
        gate: ReuseGate,
    ) -> anyhow::Result<BuiltTable> {
        let committed = self.slots.clone();
        let result = self.build_uncommitted(config, overrides, down, macs, gate);
        if result.is_err() {
            self.slots = committed;
        }
        result
    }

    fn build_uncommitted(
        &mut self,
        config: &Config,
        overrides: &HashMap<BackendId, Override>,
        down: &HashSet<BackendId>,
        macs: &HashMap<IpAddr, [u8; 6]>,
        gate: ReuseGate,
    ) -> anyhow::Result<BuiltTable> {
        let generation = self.generation + 1;
        self.slots.reclaim(&self.counter_blocks, gate);
        self.slots.assign(config, generation, gate.now)?;
        let mut services = Vec::with_capacity(config.services.len());
        let mut pool = PoolView::default();
        for service in &config.services {
            services.push(self.service(service, overrides, down, macs, &mut pool)?);
        }
        self.generation = generation;
        let table = ServiceTable::new(
            generation,
            services,
            config.director.timeouts,
            self.counter_blocks.clone(),
        )
        .with_persistence(Arc::clone(&self.persistence));
        let table = match self.interfaces {
            Some(interfaces) => table.with_interfaces(interfaces),
            None => table,
        };
        let table = match &self.routing {
            Some(routing) => table.with_routing(Routing {
                nat_reply: config.director.nat_reply,
                ..routing.clone()
            }),
            None => table,
        };
        Ok(BuiltTable { table, pool })
    }

    fn service(
        &mut self,
        service: &ServiceConfig,
        overrides: &HashMap<BackendId, Override>,
        down: &HashSet<BackendId>,
        macs: &HashMap<IpAddr, [u8; 6]>,
        pool: &mut PoolView,
    ) -> anyhow::Result<Service> {
        let inhibit = service
            .health_check
            .as_ref()
            .is_some_and(|check| check.on_failure == OnFailure::Inhibit);
        // With the routing mirror, a TUN real server's MAC is only ever a configured one (an
        // override of the route's next hop); the route finds the rest.
        let routed = service.forwarding == Forwarding::Tunnel && self.routing.is_some();
        let mac_of = |backend: &BackendConfig| {
            backend.mac.or_else(|| {
                (!routed)
                    .then(|| macs.get(&backend.address).copied())
                    .flatten()
            })
        };
        let entry = |backend: &BackendConfig, weight: u32, counter_slot: usize| Backend {
            address: backend.address,
            mac: mac_of(backend),
            weight,
            counter_slot,
            // 0: the port the client connected to (the config refuses a port unless NAT).
            port: backend.port.unwrap_or(0),
            thresholds: backend.thresholds,
        };
        let mut backends = Vec::with_capacity(service.backends.len() + 1);
        // Whether any configured server may take new flows (enabled and up).
        let mut serving = false;
        for backend in &service.backends {
            let id = (service.name.clone(), backend.address);
            let change = overrides.get(&id).copied().unwrap_or_default();
            let counter_slot = self.slots.slots[&id];
            let is_down = down.contains(&id);
            if change.disabled || (is_down && !inhibit) {
                pool.out.push(OutOfPool {
                    id,
                    counter_slot,
                    mac: mac_of(backend),
                    disabled: change.disabled,
                });
                continue;
            }
            serving |= !is_down;
            let weight = if is_down {
                0
            } else {
                change.weight.unwrap_or(backend.weight)
            };
            backends.push(entry(backend, weight, counter_slot));
        }
        if let (false, Some(fallback)) = (serving, &service.fallback) {
            let id = (service.name.clone(), fallback.address);
            backends.push(entry(fallback, fallback.weight, self.slots.slots[&id]));
            pool.fallbacks.insert(id);
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
            netmask6: prefix_mask6(service.persistence_prefix6),
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

/// Every (real server address, port it listens on, protocol) of every NAT service, fallback
/// servers included, for the server side's classifier: frames from these are replies to
/// translate back to the VIPs.
pub fn nat_backend_keys(config: &Config) -> HashSet<NatBackendKey> {
    config
        .services
        .iter()
        .filter(|service| service.forwarding == Forwarding::Nat)
        .flat_map(|service| {
            service
                .backends
                .iter()
                .chain(&service.fallback)
                .flat_map(move |backend| {
                    service.ports.iter().map(move |&port| NatBackendKey {
                        address: backend.address,
                        port: backend.port.unwrap_or(port),
                        protocol: service.protocol,
                    })
                })
        })
        .collect()
}

/// The IPv6 netmask of a prefix length: `prefix` leading ones (0 gives all zeros).
fn prefix_mask6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

/// Stable identity of a real server for Maglev: the same server hashes the same everywhere
/// (an IPv4 one as it did before IPv6).
fn backend_key(address: IpAddr, port: u16) -> u64 {
    dataplane::scheduler_key(address).rotate_left(16) ^ u64::from(port)
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

    fn slots(table: &ServiceTable) -> HashMap<IpAddr, usize> {
        table.services[0]
            .backends
            .iter()
            .map(|backend| (backend.address, backend.counter_slot))
            .collect()
    }

    /// A gate that lets every retired slot through except for gauges.
    fn open_gate() -> ReuseGate {
        ReuseGate {
            adopted_generation: u64::MAX,
            hold: Duration::ZERO,
            now: Instant::now(),
        }
    }

    fn address(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn slots_survive_reloads_and_are_reused_only_when_nothing_refers_to_them() {
        let mut builder = TableBuilder::new(2);
        let none = HashMap::new();
        let macs = HashMap::new();
        let build = |builder: &mut TableBuilder, backends: &[&str], gate: ReuseGate| {
            builder
                .build(&config(backends), &none, &HashSet::new(), &macs, gate)
                .unwrap()
                .table
        };
        let first = build(&mut builder, &["192.0.2.11", "192.0.2.12"], open_gate());
        let before = slots(&first);

        // A reload that adds .13 keeps .11 and .12 where they were.
        let second = build(
            &mut builder,
            &["192.0.2.13", "192.0.2.12", "192.0.2.11"],
            open_gate(),
        );
        let after = slots(&second);
        for (address, slot) in &before {
            assert_eq!(after[address], *slot, "{address} moved");
        }
        assert_eq!(second.generation, first.generation + 1);

        // .11 leaves while a worker still has a connection to it: its slot is not reused.
        let busy = after[&address("192.0.2.11")];
        let counters = &builder.counter_blocks[1][busy];
        counters.active_connections.store(1, Ordering::Relaxed);
        counters.packets_in.store(7, Ordering::Relaxed);
        build(&mut builder, &["192.0.2.12", "192.0.2.13"], open_gate());
        let fourth = build(
            &mut builder,
            &["192.0.2.12", "192.0.2.13", "192.0.2.14"],
            open_gate(),
        );
        assert_ne!(slots(&fourth)[&address("192.0.2.14")], busy);

        // A worker still on an old table, or persistence templates that may still name the
        // slot, also keep it.
        builder.counter_blocks[1][busy]
            .active_connections
            .store(0, Ordering::Relaxed);
        let behind = ReuseGate {
            adopted_generation: fourth.generation - 2,
            ..open_gate()
        };
        build(&mut builder, &["192.0.2.12"], behind);
        let held = ReuseGate {
            hold: Duration::from_secs(300),
            ..open_gate()
        };
        build(&mut builder, &["192.0.2.12"], held);
        assert_eq!(
            builder.counter_blocks[1][busy]
                .packets_in
                .load(Ordering::Relaxed),
            7,
            "reclaimed too early"
        );

        // Once nothing refers to it the slot is reclaimed, with its counters reset.
        build(&mut builder, &["192.0.2.12"], open_gate());
        assert_eq!(
            builder.counter_blocks[1][busy]
                .packets_in
                .load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn a_returning_server_gets_its_slot_back() {
        let mut builder = TableBuilder::new(1);
        let (none, macs) = (HashMap::new(), HashMap::new());
        let both = config(&["192.0.2.11", "192.0.2.12"]);
        let nobody = HashSet::new();
        let first = builder
            .build(&both, &none, &nobody, &macs, open_gate())
            .unwrap()
            .table;
        let slot = slots(&first)[&address("192.0.2.11")];
        builder.counter_blocks[0][slot]
            .active_connections
            .store(3, Ordering::Relaxed);
        builder
            .build(&config(&["192.0.2.12"]), &none, &nobody, &macs, open_gate())
            .unwrap();
        let back = builder
            .build(&both, &none, &nobody, &macs, open_gate())
            .unwrap()
            .table;
        assert_eq!(slots(&back)[&address("192.0.2.11")], slot);
    }

    #[test]
    fn a_failed_build_changes_nothing() {
        let mut builder = TableBuilder::new(1);
        let (none, macs) = (HashMap::new(), HashMap::new());
        let nobody = HashSet::new();
        let first = builder
            .build(&config(&["192.0.2.11"]), &none, &nobody, &macs, open_gate())
            .unwrap()
            .table;
        // Maglev needs a table at least as large as the server set: 2 servers in 1 slot fail.
        let mut broken = config(&["192.0.2.12", "192.0.2.13"]);
        broken.services[0].scheduler = scheduler::Algorithm::Maglev;
        broken.services[0].maglev_table_size = 1;
        assert!(builder
            .build(&broken, &none, &nobody, &macs, open_gate())
            .is_err());
        let next = builder
            .build(&config(&["192.0.2.11"]), &none, &nobody, &macs, open_gate())
            .unwrap()
            .table;
        assert_eq!(next.generation, first.generation + 1);
        assert_eq!(slots(&next), slots(&first), "the failed build moved slots");
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
                &HashSet::new(),
                &macs,
                open_gate(),
            )
            .unwrap()
            .table;
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

    /// `config(backends)` with a health check (`on_failure`) and a fallback server.
    fn checked(backends: &[&str], on_failure: OnFailure) -> Config {
        let mut config = config(backends);
        let service = &mut config.services[0];
        service.health_check = Some(crate::config::HealthCheckConfig {
            kind: crate::config::CheckKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            port: None,
            on_failure,
        });
        service.fallback = Some(BackendConfig {
            address: address("192.0.2.50"),
            weight: 1,
            mac: None,
            port: None,
            thresholds: dataplane::Thresholds::default(),
        });
        config
    }

    fn web(addresses: &[&str]) -> HashSet<BackendId> {
        addresses
            .iter()
            .map(|text| ("web".to_owned(), address(text)))
            .collect()
    }

    /// (address, weight) of the table's one service.
    fn pool(table: &ServiceTable) -> Vec<(String, u32)> {
        table.services[0]
            .backends
            .iter()
            .map(|backend| (backend.address.to_string(), backend.weight))
            .collect()
    }

    fn owned(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
        pairs
            .iter()
            .map(|&(address, weight)| (address.to_owned(), weight))
            .collect()
    }

    #[test]
    fn down_servers_leave_the_pool_and_the_fallback_joins_when_none_is_left() {
        let mut builder = TableBuilder::new(1);
        let (none, macs) = (HashMap::new(), HashMap::new());
        let config = checked(&["192.0.2.11", "192.0.2.12"], OnFailure::Remove);
        let mut build = |down: &HashSet<BackendId>| {
            builder
                .build(&config, &none, down, &macs, open_gate())
                .unwrap()
        };
        let all_up = build(&HashSet::new());
        assert_eq!(
            pool(&all_up.table),
            owned(&[("192.0.2.11", 1), ("192.0.2.12", 1)])
        );
        assert_eq!(all_up.pool, PoolView::default());
        let slot_12 = slots(&all_up.table)[&address("192.0.2.12")];

        let one_down = build(&web(&["192.0.2.12"]));
        assert_eq!(pool(&one_down.table), owned(&[("192.0.2.11", 1)]));
        assert_eq!(
            one_down.pool.out,
            [OutOfPool {
                id: ("web".to_owned(), address("192.0.2.12")),
                counter_slot: slot_12,
                mac: None,
                disabled: false,
            }]
        );
        assert!(one_down.pool.fallbacks.is_empty());

        let all_down = build(&web(&["192.0.2.11", "192.0.2.12"]));
        assert_eq!(pool(&all_down.table), owned(&[("192.0.2.50", 1)]));
        assert_eq!(all_down.pool.fallbacks, web(&["192.0.2.50"]));
        let fallback_slot = slots(&all_down.table)[&address("192.0.2.50")];
        assert!(
            ![slot_12, slots(&all_up.table)[&address("192.0.2.11")]].contains(&fallback_slot),
            "the fallback shares a counter slot"
        );

        let back = build(&web(&["192.0.2.11"]));
        assert_eq!(pool(&back.table), owned(&[("192.0.2.12", 1)]));
        assert!(back.pool.fallbacks.is_empty());
        assert_eq!(slots(&back.table)[&address("192.0.2.12")], slot_12);
    }

    #[test]
    fn inhibited_servers_stay_at_weight_0_beside_the_fallback() {
        let mut builder = TableBuilder::new(1);
        let macs = HashMap::new();
        let config = checked(&["192.0.2.11", "192.0.2.12"], OnFailure::Inhibit);
        let mut overrides = HashMap::new();
        overrides.insert(
            ("web".to_owned(), address("192.0.2.11")),
            Override {
                weight: Some(5),
                disabled: false,
            },
        );
        let one_down = builder
            .build(
                &config,
                &overrides,
                &web(&["192.0.2.11"]),
                &macs,
                open_gate(),
            )
            .unwrap();
        // Down beats a run-time weight: inhibited means no new flows.
        assert_eq!(
            pool(&one_down.table),
            owned(&[("192.0.2.11", 0), ("192.0.2.12", 1)])
        );
        assert!(one_down.pool.out.is_empty());
        let all_down = builder
            .build(
                &config,
                &overrides,
                &web(&["192.0.2.11", "192.0.2.12"]),
                &macs,
                open_gate(),
            )
            .unwrap();
        // Existing flows keep their servers; new ones go to the fallback.
        assert_eq!(
            pool(&all_down.table),
            owned(&[("192.0.2.11", 0), ("192.0.2.12", 0), ("192.0.2.50", 1)])
        );
    }

    #[test]
    fn disabled_servers_count_as_out_for_the_fallback() {
        let mut builder = TableBuilder::new(1);
        let mut macs = HashMap::new();
        macs.insert(address("192.0.2.11"), [2, 0, 0, 0, 0, 0x11]);
        macs.insert(address("192.0.2.50"), [2, 0, 0, 0, 0, 0x50]);
        let config = checked(&["192.0.2.11", "192.0.2.12"], OnFailure::Remove);
        let mut overrides = HashMap::new();
        overrides.insert(
            ("web".to_owned(), address("192.0.2.11")),
            Override {
                weight: None,
                disabled: true,
            },
        );
        let built = builder
            .build(
                &config,
                &overrides,
                &web(&["192.0.2.12"]),
                &macs,
                open_gate(),
            )
            .unwrap();
        assert_eq!(pool(&built.table), owned(&[("192.0.2.50", 1)]));
        assert_eq!(
            built.table.services[0].backends[0].mac,
            Some([2, 0, 0, 0, 0, 0x50])
        );
        let out: Vec<(IpAddr, bool, Option<[u8; 6]>)> = built
            .pool
            .out
            .iter()
            .map(|out| (out.id.1, out.disabled, out.mac))
            .collect();
        assert_eq!(
            out,
            [
                (address("192.0.2.11"), true, Some([2, 0, 0, 0, 0, 0x11])),
                (address("192.0.2.12"), false, None)
            ]
        );
        // A weight of 0 is the operator's choice, not an outage: no fallback.
        let mut drained = checked(&["192.0.2.11"], OnFailure::Remove);
        drained.services[0].backends[0].weight = 0;
        let built = builder
            .build(
                &drained,
                &HashMap::new(),
                &HashSet::new(),
                &macs,
                open_gate(),
            )
            .unwrap();
        assert_eq!(pool(&built.table), owned(&[("192.0.2.11", 0)]));
    }

    #[test]
    fn nat_fallbacks_have_their_replies_steered() {
        let mut config = checked(&["192.0.2.11"], OnFailure::Remove);
        config.services[0].forwarding = Forwarding::Nat;
        if let Some(fallback) = &mut config.services[0].fallback {
            fallback.port = Some(8080);
        }
        let keys = nat_backend_keys(&config);
        assert!(keys.contains(&NatBackendKey {
            address: address("192.0.2.50"),
            port: 8080,
            protocol: dataplane::Protocol::Tcp,
        }));
        assert!(keys.contains(&NatBackendKey {
            address: address("192.0.2.11"),
            port: 80,
            protocol: dataplane::Protocol::Tcp,
        }));
    }

    #[test]
    fn ipv6_services_build_beside_ipv4_ones() {
        let text = "[director]\ninterfaces = [\"eth0\", \"eth1\"]\n\
            [[service]]\nname = \"web\"\nvip = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\n\
            scheduler = \"maglev\"\nforwarding = \"tun\"\n\
            [[service.backend]]\naddress = \"2001:db8:5::11\"\n\
            [[service]]\nname = \"web6\"\nvip = \"2001:db8::10\"\nports = [80, 443]\n\
            protocol = \"tcp\"\nscheduler = \"wlc\"\nforwarding = \"nat\"\n\
            persistence = \"300s\"\npersistence_prefix6 = 56\n\
            [[service.backend]]\naddress = \"2001:db8:2::11\"\n\
            [[service.backend]]\naddress = \"2001:db8:2::12\"\n";
        let config = Config::parse(text).unwrap();
        let mac = [2, 0, 0, 0, 0, 0x11];
        let macs = HashMap::from([(address("2001:db8:2::11"), mac)]);
        let built = TableBuilder::new(1)
            .build(
                &config,
                &HashMap::new(),
                &HashSet::new(),
                &macs,
                open_gate(),
            )
            .unwrap();
        let key = ServiceKey {
            vip: address("2001:db8::10"),
            port: 80,
            protocol: dataplane::Protocol::Tcp,
        };
        let (_, web6) = built.table.lookup(&key).unwrap();
        let backends: Vec<(IpAddr, Option<[u8; 6]>)> = web6
            .backends
            .iter()
            .map(|backend| (backend.address, backend.mac))
            .collect();
        assert_eq!(
            backends,
            [
                (address("2001:db8:2::11"), Some(mac)),
                (address("2001:db8:2::12"), None)
            ]
        );
        let persistence = web6.persistence.unwrap();
        assert_eq!(persistence.netmask6, u128::MAX << 72, "a /56 mask");
        assert_eq!(persistence.netmask, u32::MAX);
        // The IPv4 service tunnels to its IPv6 real server (4in6).
        let (_, web) = built
            .table
            .lookup(&ServiceKey {
                vip: address("192.0.2.10"),
                ..key
            })
            .unwrap();
        assert_eq!(web.backends[0].address, address("2001:db8:5::11"));
        // The classifier learns both ports of the IPv6 VIP, and the NAT real servers' replies.
        let keys = classifier_keys(&config);
        assert!(keys.contains(&ServiceKey { port: 443, ..key }));
        assert_eq!(keys.len(), 3);
        let nat = nat_backend_keys(&config);
        assert!(nat.contains(&NatBackendKey {
            address: address("2001:db8:2::12"),
            port: 443,
            protocol: dataplane::Protocol::Tcp,
        }));
        assert_eq!(nat.len(), 4);
    }

    #[test]
    fn ipv6_prefix_masks() {
        assert_eq!(prefix_mask6(128), u128::MAX);
        assert_eq!(prefix_mask6(64), u128::MAX << 64);
        assert_eq!(prefix_mask6(1), 1 << 127);
        assert_eq!(prefix_mask6(0), 0);
    }
}
