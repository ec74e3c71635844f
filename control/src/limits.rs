//! What a configuration needs of the director and the machine, checked against what they have
//! before anything changes: at start-up, on every reload and in `director check`, with one
//! function ([`check`]), so the three refuse the same files with the same words.
//!
//! The limits: the classifier's maps (`services` and `services6`, `nat_backends` and
//! `nat_backends6`: hash maps of a fixed size, whose update fails once full), the counter slots
//! real servers take, with `[ha]` the VIPs of a family one VRRP advertisement carries, and
//! memory. The memory estimate adds up what start-up allocates (a
//! connection table per worker, a UMEM per worker socket, the shared persistence table, the
//! per-worker backend counters) and what each table holds (the Maglev lookup tables), each
//! from the sizes of the real types; it is compared with `MemAvailable` of /proc/meminfo and
//! the headroom of the director's memory cgroup (`memory.max` less `memory.current` at each
//! level; cgroup v1's `memory.limit_in_bytes` less `memory.usage_in_bytes`),
//! whichever is less.
//!
//! [`check`] is pure: the machine's facts ([`Facts`], [`Available`]) are read by the callers,
//! with [`Available::read`] for memory and [`workers_here`] for the workers. It must not change anything or hold state; on reload the
//! memory already allocated is not counted again (only a new table's Maglev tables are new).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use dataplane::conntrack::ConnTable;
use dataplane::counters::BackendCounters;
use dataplane::persistence::PersistenceTable;
use dataplane::xdp::abi::{MAX_NAT_BACKENDS, MAX_SERVICES};
use dataplane::xsk::XskConfig;
use scheduler::{Algorithm, Scheduler};

use crate::config::Config;
use crate::ha::vrrp::wire::MAX_ADDRESSES;
use crate::netlink::{interface_rx_queues, NetlinkError};
use crate::table::{classifier_keys, nat_backend_keys, BACKEND_SLOTS, PERSISTENCE_ENTRIES};

/// The sizes the configuration must fit in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// Entries of the classifier's `services` map, and of `services6`: (VIP, port, protocol)
    /// of each family.
    pub services: usize,
    /// Entries of the server side classifier's `nat_backends` map, and of `nat_backends6`:
    /// (real server, port, protocol) of each family's NAT services.
    pub nat_backends: usize,
    /// Counter slots: real servers (per service, fallbacks included).
    pub backend_slots: usize,
    /// VIPs of each family one VRRP advertisement carries (with `[ha]`).
    pub vrrp_addresses: usize,
}

impl Capacities {
    /// This build's: the classifier's map sizes (`dataplane/bpf/director.h`, checked against
    /// the loaded maps' `max_entries` when the classifier is loaded) and the counter slots.
    pub const DIRECTOR: Capacities = Capacities {
        services: MAX_SERVICES as usize,
        nat_backends: MAX_NAT_BACKENDS as usize,
        backend_slots: BACKEND_SLOTS,
        vrrp_addresses: MAX_ADDRESSES,
    };
}

/// What the running director (or the machine, for `director check`) is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Worker threads, each with its connection table and socket.
    pub workers: usize,
    /// Memory free for the director, if known.
    pub available: Option<Available>,
    /// Whether the director already runs: its connection tables, sockets, persistence table
    /// and counters are allocated, and only a new table's Maglev tables need memory.
    pub running: bool,
}

/// Memory the director may still use, and which figure said so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Available {
    /// Bytes.
    pub bytes: u64,
    /// `MemAvailable` or the cgroup's limit less its usage.
    pub source: MemorySource,
}

/// Where [`Available`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemorySource {
    /// /proc/meminfo `MemAvailable`.
    MemAvailable,
    /// The cgroup's `memory.max` less its `memory.current` (the tightest level).
    Cgroup,
}

impl fmt::Display for Available {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            MemorySource::MemAvailable => "MemAvailable",
            MemorySource::Cgroup => "cgroup memory limit",
        };
        write!(f, "{} available ({source})", bytes(self.bytes))
    }
}

impl Available {
    /// Reads /proc/meminfo and the process's cgroup (v2); `None` if neither can be read.
    pub fn read() -> Option<Available> {
        let meminfo = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_available(&text))
            .map(|bytes| Available {
                bytes,
                source: MemorySource::MemAvailable,
            });
        let cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| cgroups_headroom(&text))
            .map(|bytes| Available {
                bytes,
                source: MemorySource::Cgroup,
            });
        match (meminfo, cgroup) {
            (Some(meminfo), Some(cgroup)) if cgroup.bytes < meminfo.bytes => Some(cgroup),
            (Some(meminfo), _) => Some(meminfo),
            (None, cgroup) => cgroup,
        }
    }
}

/// The workers `config` gets on this machine: `director.workers`, else one per RX queue of the
/// client side's interface; 1, with the reason, if that cannot be read (no such interface).
pub fn workers_here(config: &Config) -> (usize, Option<NetlinkError>) {
    match config.director.workers {
        Some(workers) => (workers, None),
        None => match interface_rx_queues(&config.director.interfaces[0]) {
            Ok(queues) => (usize::try_from(queues.max(1)).unwrap_or(1), None),
            Err(error) => (1, Some(error)),
        },
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// A cgroup hierarchy's memory files: where it is mounted and what its limit and usage are
/// called.
struct Hierarchy {
    mount: &'static str,
    limit: &'static str,
    usage: &'static str,
}

/// cgroup v2, unified: `memory.max` ("max" without a limit) and `memory.current`.
const CGROUP_V2: Hierarchy = Hierarchy {
    mount: "/sys/fs/cgroup",
    limit: "memory.max",
    usage: "memory.current",
};

/// cgroup v1's memory controller (an unlimited group shows a huge limit).
const CGROUP_V1: Hierarchy = Hierarchy {
    mount: "/sys/fs/cgroup/memory",
    limit: "memory.limit_in_bytes",
    usage: "memory.usage_in_bytes",
};

/// The least headroom (limit - usage) of the process's memory cgroup, v2 or v1 (read from
/// /proc/self/cgroup as `self_cgroup`), from its group up to the root; `None` without a limit.
fn cgroups_headroom(self_cgroup: &str) -> Option<u64> {
    let v2 = self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .and_then(|path| cgroup_headroom(Path::new(CGROUP_V2.mount), path, &CGROUP_V2));
    let v1 = self_cgroup
        .lines()
        .find_map(|line| {
            let (controllers, path) = line.split_once(':')?.1.split_once(':')?;
            controllers
                .split(',')
                .any(|controller| controller == "memory")
                .then_some(path)
        })
        .and_then(|path| cgroup_headroom(Path::new(CGROUP_V1.mount), path, &CGROUP_V1));
    match (v2, v1) {
        (Some(v2), Some(v1)) => Some(v2.min(v1)),
        (v2, v1) => v2.or(v1),
    }
}

/// The least headroom from the group at `path` under `root` up to `root`.
fn cgroup_headroom(root: &Path, path: &str, hierarchy: &Hierarchy) -> Option<u64> {
    let mut directory: PathBuf = root.join(path.trim().trim_start_matches('/'));
    let mut least: Option<u64> = None;
    loop {
        let read = |name: &str| -> Option<u64> {
            std::fs::read_to_string(directory.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        // v2's "max" (no limit) does not parse.
        if let Some(limit) = read(hierarchy.limit) {
            let headroom = limit.saturating_sub(read(hierarchy.usage).unwrap_or(0));
            least = Some(least.map_or(headroom, |least| least.min(headroom)));
        }
        if directory == root || !directory.pop() || !directory.starts_with(root) {
            return least;
        }
    }
}

/// What a configuration needs, part by part (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Workers counted.
    pub workers: usize,
    /// `director.max_connections`.
    pub max_connections: usize,
    /// One worker's connection table.
    pub connection_table: u64,
    /// One worker's UMEM (its sockets share it).
    pub umem: u64,
    /// The persistence table, shared.
    pub persistence: u64,
    /// One worker's backend counter block.
    pub counters: u64,
    /// Maglev services.
    pub maglev_services: usize,
    /// Their lookup tables, together.
    pub maglev: u64,
}

impl Estimate {
    /// What `config` needs with `workers` workers.
    pub fn of(config: &Config, workers: usize) -> Estimate {
        let max_connections = config.director.max_connections;
        let ports = u32::try_from(config.director.interfaces.len()).unwrap_or(u32::MAX);
        let umem = XskConfig::for_ports(ports);
        let maglev_slot = element_size(Scheduler::maglev_table);
        let maglev: Vec<u64> = config
            .services
            .iter()
            .filter(|service| service.scheduler == Algorithm::Maglev)
            .map(|service| u64::from(service.maglev_table_size) * maglev_slot)
            .collect();
        Estimate {
            workers,
            max_connections,
            connection_table: to_u64(ConnTable::memory_for(max_connections)),
            umem: u64::from(umem.frame_count) * u64::from(umem.frame_size),
            persistence: to_u64(PersistenceTable::memory_for(PERSISTENCE_ENTRIES)),
            counters: to_u64(BACKEND_SLOTS * size_of::<BackendCounters>()),
            maglev_services: maglev.len(),
            maglev: maglev.iter().sum(),
        }
    }

    /// Every connection table.
    pub fn connection_tables(&self) -> u64 {
        self.connection_table.saturating_mul(to_u64(self.workers))
    }

    /// Everything start-up allocates, and the first table.
    pub fn total(&self) -> u64 {
        let per_worker = self.umem.saturating_add(self.counters);
        self.connection_tables()
            .saturating_add(per_worker.saturating_mul(to_u64(self.workers)))
            .saturating_add(self.persistence)
            .saturating_add(self.maglev)
    }
}

impl fmt::Display for Estimate {
    /// `~1.2 GiB needed (connection tables 1.0 GiB = 2 workers x 4194304 x 128 B, ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_entry = self
            .connection_table
            .checked_div(to_u64(self.max_connections))
            .unwrap_or(0);
        write!(
            f,
            "~{} needed (connection tables {} = {} worker(s) x {} entries x ~{per_entry} B, \
             UMEM {} = {} x {}, backend counters {}, persistence table {}",
            bytes(self.total()),
            bytes(self.connection_tables()),
            self.workers,
            self.max_connections,
            bytes(self.umem.saturating_mul(to_u64(self.workers))),
            self.workers,
            bytes(self.umem),
            bytes(self.counters.saturating_mul(to_u64(self.workers))),
            bytes(self.persistence),
        )?;
        if self.maglev_services > 0 {
            write!(
                f,
                ", Maglev tables {} for {} service(s)",
                bytes(self.maglev),
                self.maglev_services
            )?;
        }
        write!(f, ")")
    }
}

/// A limit the configuration exceeds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// More services of a family than the classifier's map holds.
    #[error(
        "services: {count} {family} services (VIP, port, protocol) exceed the classifier's \
         {capacity} (map {map})"
    )]
    Services {
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// The map.
        map: &'static str,
        /// Distinct keys the configuration has.
        count: usize,
        /// The map's size.
        capacity: usize,
    },
    /// More NAT real servers of a family than the server side classifier's map holds.
    #[error(
        "NAT real servers: {count} {family} (address, port, protocol) exceed the server side \
         classifier's {capacity} (map {map})"
    )]
    NatBackends {
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// The map.
        map: &'static str,
        /// Distinct keys the configuration has.
        count: usize,
        /// The map's size.
        capacity: usize,
    },
    /// More real servers than counter slots.
    #[error(
        "real servers: {count} (service, address) pairs, fallbacks included, exceed the \
         {capacity} counter slots"
    )]
    BackendSlots {
        /// Real servers configured.
        count: usize,
        /// Counter slots.
        capacity: usize,
    },
    /// With `[ha]`, more VIPs of a family than a VRRP advertisement carries.
    #[error(
        "[ha]: {count} {family} VIPs exceed the {capacity} one VRRP advertisement carries (its \
         address count is one byte)"
    )]
    VrrpAddresses {
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// Distinct VIPs of the family.
        count: usize,
        /// Addresses per advertisement.
        capacity: usize,
    },
    /// Start-up would need more memory than there is.
    #[error(
        "director.max_connections = {max_connections}: memory {estimate}, {available}; lower \
         max_connections (or the number of workers)"
    )]
    Memory {
        /// `director.max_connections`.
        max_connections: usize,
        /// What is needed.
        estimate: Estimate,
        /// What there is.
        available: Available,
    },
    /// A reload's new Maglev tables would need more memory than there is.
    #[error(
        "maglev_table_size: the new Maglev tables need {needed} for {services} service(s), \
         {available}"
    )]
    ReloadMemory {
        /// Bytes of the new table's Maglev tables.
        needed: Bytes,
        /// Maglev services.
        services: usize,
        /// What there is.
        available: Available,
    },
}

/// Every limit `config` exceeds, in the order of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded(pub Vec<LimitError>);

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Exceeded {}

/// Checks `config` against `capacities` and, where `facts` knows the memory available, the
/// memory estimate. Returns the estimate, or every limit exceeded.
///
/// # Errors
///
/// [`Exceeded`], naming each limit, the count and the capacity.
pub fn check(
    config: &Config,
    facts: &Facts,
    capacities: &Capacities,
) -> Result<Estimate, Exceeded> {
    let mut exceeded = Vec::new();
    let services = classifier_keys(config);
    let nat_backends = nat_backend_keys(config);
    for (family, v4, map) in [("IPv4", true, "services"), ("IPv6", false, "services6")] {
        let count = services
            .iter()
            .filter(|key| key.vip.is_ipv4() == v4)
            .count();
        if count > capacities.services {
            exceeded.push(LimitError::Services {
                family,
                map,
                count,
                capacity: capacities.services,
            });
        }
    }
    for (family, v4, map) in [
        ("IPv4", true, "nat_backends"),
        ("IPv6", false, "nat_backends6"),
    ] {
        let count = nat_backends
            .iter()
            .filter(|key| key.address.is_ipv4() == v4)
            .count();
        if count > capacities.nat_backends {
            exceeded.push(LimitError::NatBackends {
                family,
                map,
                count,
                capacity: capacities.nat_backends,
            });
        }
    }
    let real_servers: HashSet<(&str, IpAddr)> = config
        .services
        .iter()
        .flat_map(|service| {
            service
                .backends
                .iter()
                .chain(&service.fallback)
                .map(|backend| (service.name.as_str(), backend.address))
        })
        .collect();
    if real_servers.len() > capacities.backend_slots {
        exceeded.push(LimitError::BackendSlots {
            count: real_servers.len(),
            capacity: capacities.backend_slots,
        });
    }
    if config.ha.is_some() {
        let vips: HashSet<IpAddr> = config.services.iter().map(|service| service.vip).collect();
        for (family, v4) in [("IPv4", true), ("IPv6", false)] {
            let count = vips.iter().filter(|vip| vip.is_ipv4() == v4).count();
            if count > capacities.vrrp_addresses {
                exceeded.push(LimitError::VrrpAddresses {
                    family,
                    count,
                    capacity: capacities.vrrp_addresses,
                });
            }
        }
    }
    let estimate = Estimate::of(config, facts.workers);
    if let Some(available) = facts.available {
        if facts.running {
            if estimate.maglev > available.bytes {
                exceeded.push(LimitError::ReloadMemory {
                    needed: Bytes(estimate.maglev),
                    services: estimate.maglev_services,
                    available,
                });
            }
        } else if estimate.total() > available.bytes {
            exceeded.push(LimitError::Memory {
                max_connections: config.director.max_connections,
                estimate,
                available,
            });
        }
    }
    if exceeded.is_empty() {
        Ok(estimate)
    } else {
        Err(Exceeded(exceeded))
    }
}

/// A byte count, shown in binary units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bytes(self.0))
    }
}

/// `1.2 GiB`, `32.0 MiB`, `512 B`.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "a figure for people, one decimal shown"
    )]
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The size of the elements of the slice a getter returns: the Maglev table's slot type,
/// read from [`Scheduler::maglev_table`]'s signature rather than written down here.
fn element_size<T>(_getter: for<'a> fn(&'a Scheduler) -> Option<&'a [T]>) -> u64 {
    to_u64(size_of::<T>())
}

fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    /// A small limit of each kind, so a test can stand at, under and over it.
    const SMALL: Capacities = Capacities {
        services: 4,
        nat_backends: 4,
        backend_slots: 4,
        vrrp_addresses: 4,
    };

    const NO_MEMORY_FACTS: Facts = Facts {
        workers: 1,
        available: None,
        running: false,
    };

    /// A `[[service]]` table: `ports` on `vip`, one real server per address in `servers`.
    fn service(
        name: &str,
        vip: &str,
        ports: &[u16],
        forwarding: &str,
        servers: &[String],
    ) -> String {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut text = format!(
            "[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nports = [{}]\nprotocol = \"tcp\"\n\
             scheduler = \"rr\"\nforwarding = \"{forwarding}\"\n",
            ports.join(", ")
        );
        for server in servers {
            let _ = write!(text, "[[service.backend]]\naddress = \"{server}\"\n");
        }
        text
    }

    fn parse(interfaces: &str, services: &[String]) -> Config {
        let text = format!(
            "[director]\ninterfaces = {interfaces}\n{}",
            services.concat()
        );
        Config::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
    }

    fn servers(prefix: &str, count: usize) -> Vec<String> {
        (1..=count).map(|n| format!("{prefix}{n}")).collect()
    }

    fn ports(count: usize) -> Vec<u16> {
        (1..=u16::try_from(count).unwrap()).collect()
    }

    /// The one limit `config` exceeds against [`SMALL`], if any.
    fn exceeded(config: &Config) -> Option<String> {
        exceeded_with(config, &SMALL)
    }

    fn exceeded_with(config: &Config, capacities: &Capacities) -> Option<String> {
        match check(config, &NO_MEMORY_FACTS, capacities) {
            Ok(_) => None,
            Err(Exceeded(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                Some(errors[0].to_string())
            }
        }
    }

    #[test]
    fn ipv4_services_fit_the_classifier_up_to_its_size() {
        let dr = |count| {
            parse(
                "[\"eth0\"]",
                &[service(
                    "web",
                    "192.0.2.10",
                    &ports(count),
                    "dr",
                    &servers("192.0.2.", 1),
                )],
            )
        };
        assert_eq!(exceeded(&dr(3)), None);
        assert_eq!(exceeded(&dr(4)), None);
        assert_eq!(
            exceeded(&dr(5)).unwrap(),
            "services: 5 IPv4 services (VIP, port, protocol) exceed the classifier's 4 (map services)"
        );
    }

    #[test]
    fn each_family_has_its_own_services_map() {
        let both = |v6_ports| {
            parse(
                "[\"eth0\"]",
                &[
                    service(
                        "web",
                        "192.0.2.10",
                        &ports(4),
                        "dr",
                        &servers("192.0.2.", 1),
                    ),
                    service(
                        "web6",
                        "2001:db8::10",
                        &ports(v6_ports),
                        "dr",
                        &servers("2001:db8::", 1),
                    ),
                ],
            )
        };
        assert_eq!(exceeded(&both(3)), None);
        assert_eq!(
            exceeded(&both(4)),
            None,
            "4 of each family fit two maps of 4"
        );
        let message = exceeded(&both(5)).unwrap();
        assert!(
            message.starts_with("services: 5 IPv6 services"),
            "{message}"
        );
        assert!(message.ends_with("(map services6)"), "{message}");
    }

    #[test]
    fn nat_real_servers_fit_the_server_side_map_up_to_its_size() {
        let nat = |count| {
            parse(
                "[\"eth0\", \"eth1\"]",
                &[service(
                    "app",
                    "192.0.2.10",
                    &[80],
                    "nat",
                    &servers("198.51.100.", count),
                )],
            )
        };
        // Only the NAT map is small: each real server also takes a counter slot.
        let capacities = Capacities {
            backend_slots: 100,
            ..SMALL
        };
        assert_eq!(exceeded_with(&nat(3), &capacities), None);
        assert_eq!(exceeded_with(&nat(4), &capacities), None);
        assert_eq!(
            exceeded_with(&nat(5), &capacities).unwrap(),
            "NAT real servers: 5 IPv4 (address, port, protocol) exceed the server side \
             classifier's 4 (map nat_backends)"
        );
    }

    #[test]
    fn ipv6_nat_real_servers_have_their_own_map() {
        let dual = |v6_servers| {
            parse(
                "[\"eth0\", \"eth1\"]",
                &[
                    service(
                        "app",
                        "192.0.2.10",
                        &[80],
                        "nat",
                        &servers("198.51.100.", 4),
                    ),
                    service(
                        "app6",
                        "2001:db8::10",
                        &[80],
                        "nat",
                        &servers("2001:db8:1::", v6_servers),
                    ),
                ],
            )
        };
        let capacities = Capacities {
            backend_slots: 100,
            ..SMALL
        };
        assert_eq!(exceeded_with(&dual(4), &capacities), None);
        let message = exceeded_with(&dual(5), &capacities).unwrap();
        assert!(message.starts_with("NAT real servers: 5 IPv6"), "{message}");
        assert!(message.ends_with("(map nat_backends6)"), "{message}");
    }

    #[test]
    fn real_servers_fit_the_counter_slots_up_to_their_number() {
        // Two services with the same real servers take a slot each per service.
        let dr = |per_service| {
            parse(
                "[\"eth0\"]",
                &[
                    service(
                        "a",
                        "192.0.2.10",
                        &[80],
                        "dr",
                        &servers("192.0.2.", per_service),
                    ),
                    service("b", "192.0.2.20", &[80], "dr", &servers("192.0.2.", 2)),
                ],
            )
        };
        assert_eq!(exceeded(&dr(1)), None);
        assert_eq!(exceeded(&dr(2)), None);
        assert_eq!(
            exceeded(&dr(3)).unwrap(),
            "real servers: 5 (service, address) pairs, fallbacks included, exceed the 4 counter \
             slots"
        );
    }

    #[test]
    fn with_ha_the_vips_fit_one_vrrp_advertisement() {
        let vips = |count: usize, ha: bool| {
            let services: Vec<String> = (1..=count)
                .map(|n| {
                    service(
                        &format!("s{n}"),
                        &format!("192.0.2.{}", 100 + n),
                        &[80],
                        "dr",
                        &servers("192.0.2.", 1),
                    )
                })
                .collect();
            let ha = if ha {
                "[ha]\ninterface = \"eth0\"\nvrid = 51\n"
            } else {
                ""
            };
            let text = format!(
                "[director]\ninterfaces = [\"eth0\"]\n{ha}{}",
                services.concat()
            );
            Config::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
        };
        // Each service takes a counter slot and a classifier entry too: only VRRP is small here.
        let capacities = Capacities {
            services: 100,
            backend_slots: 100,
            ..SMALL
        };
        assert_eq!(exceeded_with(&vips(3, true), &capacities), None);
        assert_eq!(exceeded_with(&vips(4, true), &capacities), None);
        assert_eq!(
            exceeded_with(&vips(5, true), &capacities).unwrap(),
            "[ha]: 5 IPv4 VIPs exceed the 4 one VRRP advertisement carries (its address count \
             is one byte)"
        );
        assert_eq!(
            exceeded_with(&vips(5, false), &capacities),
            None,
            "no VRRP, no limit"
        );
    }

    #[test]
    fn every_limit_exceeded_is_named() {
        let config = parse(
            "[\"eth0\", \"eth1\"]",
            &[service(
                "app",
                "192.0.2.10",
                &ports(5),
                "nat",
                &servers("198.51.100.", 5),
            )],
        );
        let Err(Exceeded(errors)) = check(&config, &NO_MEMORY_FACTS, &SMALL) else {
            panic!("accepted");
        };
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    fn with_connections(max_connections: usize) -> Config {
        let text = format!(
            "[director]\ninterfaces = [\"eth0\"]\nmax_connections = {max_connections}\n{}",
            service("web", "192.0.2.10", &[80], "dr", &servers("192.0.2.", 2))
                .replace("\"rr\"", "\"maglev\"")
        );
        Config::parse(&text).unwrap()
    }

    #[test]
    fn the_estimate_scales_with_workers_and_max_connections() {
        let small = Estimate::of(&with_connections(1 << 16), 1);
        let more_workers = Estimate::of(&with_connections(1 << 16), 4);
        let more_connections = Estimate::of(&with_connections(1 << 18), 1);
        assert_eq!(
            more_workers.connection_tables(),
            4 * small.connection_tables()
        );
        assert_eq!(
            more_connections.connection_tables(),
            4 * small.connection_tables()
        );
        assert!(more_workers.total() > small.total() + 3 * small.umem);
        // At least the entries themselves: a connection entry is two cache lines at most.
        assert!(small.connection_table >= (1 << 16) * 64);
        assert_eq!(
            small.maglev,
            u64::from(scheduler::DEFAULT_MAGLEV_TABLE_SIZE) * 2,
            "one Maglev service of the default size, u16 slots"
        );
        assert_eq!(
            small.persistence,
            to_u64(PersistenceTable::memory_for(PERSISTENCE_ENTRIES))
        );
    }

    #[test]
    fn start_up_memory_is_refused_past_what_is_available_naming_max_connections() {
        let config = with_connections(1 << 20);
        let needed = Estimate::of(&config, 2).total();
        let facts = |bytes| Facts {
            workers: 2,
            available: Some(Available {
                bytes,
                source: MemorySource::MemAvailable,
            }),
            running: false,
        };
        assert!(check(&config, &facts(needed + 1), &Capacities::DIRECTOR).is_ok());
        assert!(check(&config, &facts(needed), &Capacities::DIRECTOR).is_ok());
        let message = check(&config, &facts(needed - 1), &Capacities::DIRECTOR)
            .unwrap_err()
            .to_string();
        for part in [
            "director.max_connections = 1048576",
            "connection tables",
            "2 worker(s) x 1048576 entries",
            "available (MemAvailable)",
        ] {
            assert!(
                message.contains(part),
                "{message:?} does not mention {part:?}"
            );
        }
    }

    #[test]
    fn a_reload_counts_only_its_new_maglev_tables() {
        let config = with_connections(1 << 20);
        let estimate = Estimate::of(&config, 2);
        let running = |bytes| Facts {
            workers: 2,
            available: Some(Available {
                bytes,
                source: MemorySource::Cgroup,
            }),
            running: true,
        };
        assert!(estimate.total() > estimate.maglev * 2);
        assert!(check(&config, &running(estimate.maglev), &Capacities::DIRECTOR).is_ok());
        let message = check(
            &config,
            &running(estimate.maglev - 1),
            &Capacities::DIRECTOR,
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.starts_with("maglev_table_size: the new Maglev tables need"),
            "{message}"
        );
    }

    #[test]
    fn reads_mem_available() {
        let meminfo =
            "MemTotal:       16384000 kB\nMemFree:         1000 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(mem_available(meminfo), Some(2048 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn the_tightest_cgroup_level_wins() {
        let root = std::env::temp_dir().join(format!("director-limits-{}", std::process::id()));
        let leaf = root.join("system.slice/director.service");
        std::fs::create_dir_all(&leaf).unwrap();
        let write =
            |dir: &Path, name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write(&leaf, "memory.max", "max\n");
        write(&leaf, "memory.current", "100\n");
        write(&root.join("system.slice"), "memory.max", "5000\n");
        write(&root.join("system.slice"), "memory.current", "1000\n");
        let path = "/system.slice/director.service";
        let headroom = cgroup_headroom(&root, path, &CGROUP_V2);
        write(&root.join("system.slice"), "memory.max", "max\n");
        let unlimited = cgroup_headroom(&root, path, &CGROUP_V2);
        // cgroup v1 names its files differently.
        write(&leaf, "memory.limit_in_bytes", "3000\n");
        write(&leaf, "memory.usage_in_bytes", "500\n");
        let v1 = cgroup_headroom(&root, path, &CGROUP_V1);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(headroom, Some(4000));
        assert_eq!(unlimited, None);
        assert_eq!(v1, Some(2500));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(32 << 20), "32.0 MiB");
        assert_eq!(bytes(1_288_490_189), "1.2 GiB");
    }
}
