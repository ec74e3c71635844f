//! Start-up, in the order it must happen: the limits checked (`crate::limits`: maps, counter
//! slots, memory), CPUs planned, classifiers attached, addresses a killed run left removed,
//! interface facts read, real-server MACs resolved, the first table built, the health checker
//! and the workers started, then [`Director::go_live`]: the stats socket, the classifiers
//! pointed at the workers, VRRP, and the VIPs last.
//!
//! Run once. It must not hold state of its own: everything it builds goes into [`Director`],
//! and a failure after the workers run is undone by [`Director::stop`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use dataplane::sync::SyncQueues;
use dataplane::xdp::XdpClassifier;
use dataplane::{Forwarding, Interfaces};
use tracing::{info, warn};

use super::addresses::remove_leftover_addresses;
use super::commands::answer;
use super::cpus::CpuPlan;
use super::publish::set_gateway;
use super::routing;
use super::state::{Command, Interface, Shared};
use super::workers::{start_workers, worker_queues, SYNC_QUEUE_RECORDS};
use super::Director;
use crate::config::Config;
use crate::connected;
use crate::health::{self, HealthChecker};
use crate::limits::{self, Available, Capacities, Facts};
use crate::metrics::MetricsServer;
use crate::neighbours::{self, Sides};
use crate::netlink::{self, Netlink};
use crate::rates::RateTracker;
use crate::signals::Signal;
use crate::stats;
use crate::stats_server::{SocketAccess, StatsServer};
use crate::table::{BuiltTable, ReuseGate, TableBuilder};

/// How long start-up waits for real-server MACs before serving anyway (unresolved servers get
/// frames only once they resolve; the drops are counted as neighbour_unresolved).
const INITIAL_RESOLUTION_WAIT: Duration = Duration::from_secs(3);

impl Director {
    #[expect(
        clippy::too_many_lines,
        reason = "start-up, step by step in the order it must happen"
    )]
    pub(super) fn start(
        config: Config,
        config_path: &Path,
        signals: &Receiver<Signal>,
        commands: Sender<Command>,
    ) -> anyhow::Result<Self> {
        // Before anything changes (CPU masks, XDP programs, tables, sockets): a configuration
        // that does not fit is refused here, naming the limit, rather than ending in a full map
        // or the OOM killer. (A workers count that does not match the RX queues is refused
        // below, by worker_queues.)
        let facts = Facts {
            workers: limits::workers_here(&config).0,
            available: Available::read(),
            running: false,
        };
        let estimate = limits::check(&config, &facts, &Capacities::DIRECTOR)
            .with_context(|| format!("configuration {}", config_path.display()))?;
        let available = facts.available.map_or_else(
            || "available memory unknown".to_owned(),
            |it| it.to_string(),
        );
        info!("memory: {estimate}, {available}");
        let cpus = CpuPlan::apply(&config.director)?;
        let mut netlink = Netlink::open().context("opening a netlink socket")?;
        // Before anything is attached: an off-link DR server is a configuration error.
        connected::check_on_link(&mut netlink, &config)
            .with_context(|| format!("configuration {}", config_path.display()))?;
        let interfaces = attach_classifiers(&config)?;
        // Once the classifiers are attached (no other director serves these interfaces), and
        // before the interfaces' own addresses are read.
        let leftovers = remove_leftover_addresses(&mut netlink, &interfaces, &config);
        let home_ifindex = interfaces[0].ifindex;
        let mut sides = Sides {
            client: home_ifindex,
            server: interfaces.get(1).map(|server| server.ifindex),
            tun_by_route: false,
        };
        let queues = worker_queues(&config, &interfaces)?;
        let mut builder = TableBuilder::new(queues as usize);
        builder.interfaces = required_interface_facts(&mut netlink, &interfaces, &config)?;
        // Next hops for NAT replies and TUN from the kernel's routing table, kept current.
        let (fib, routing) = routing::start(&config, home_ifindex)?.unzip();
        builder.routing = routing;
        sides.tun_by_route = fib.is_some();
        if config.uses(Forwarding::Nat) {
            warn_if_kernel_forwards();
        }

        // Resolve real-server MACs before serving, so the first connections are not dropped.
        let (resolved, stop_requested) = neighbours::resolve_waiting(
            &mut netlink,
            sides,
            &config,
            INITIAL_RESOLUTION_WAIT,
            |pause| {
                matches!(
                    signals.recv_timeout(pause),
                    Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected)
                )
            },
        );
        if config.uses(Forwarding::Nat) && resolved.gateway.is_none() && fib.is_none() {
            warn!(
                interface = %interfaces[0].name,
                "no default route out of the client side: NAT replies are dropped \
                 (neighbour_unresolved) until there is one"
            );
        }
        set_gateway(&mut builder, &resolved);
        let first = ReuseGate {
            adopted_generation: 0,
            hold: Duration::ZERO,
            now: Instant::now(),
        };
        let BuiltTable { table, pool } = builder.build(
            &config,
            &HashMap::new(),
            &HashSet::new(),
            &resolved.backends,
            first,
        )?;
        let table = Arc::new(table);

        // Every server starts up; checks only take servers out. Started before the workers
        // so that a failure here leaves nothing running (dropping it stops it).
        let health = HealthChecker::start(health::targets(&config))
            .context("starting the health checker")?;
        let stop = Arc::new(AtomicBool::new(false));
        // Room for every table each worker can hold (its current one and 4 queued): a full
        // channel only delays adoption until control drains it.
        let (retire, retired_tables) = crossbeam_channel::bounded(64.max(5 * queues as usize));
        // With state sync every worker exports and imports connection entries.
        let sync_queues = config
            .ha
            .as_ref()
            .filter(|ha| ha.sync)
            .map(|_| SyncQueues::new(queues as usize, SYNC_QUEUE_RECORDS));
        let (workers, threads) = start_workers(
            &config,
            &cpus,
            &interfaces,
            queues,
            &table,
            &stop,
            &retire,
            sync_queues.as_ref(),
        )?;
        let shared = Arc::new(Shared {
            started: Instant::now(),
            table: Mutex::new(table),
            pool: Mutex::new(pool),
            health: health.board(),
            interfaces,
            workers,
            rates: RateTracker::new(),
            ha: OnceLock::new(),
            fib,
        });
        let mut director = Director {
            shared,
            config,
            config_path: config_path.to_owned(),
            overrides: HashMap::new(),
            down: HashSet::new(),
            health,
            builder,
            netlink,
            stop,
            threads,
            stats_server: None,
            metrics_server: None,
            commands,
            home_ifindex,
            sides,
            added_vips: leftovers.vips,
            added_server_addresses: leftovers.server_addresses,
            operator_addresses: leftovers.operators,
            steering: Arc::default(),
            nat_keys: HashSet::new(),
            local_addresses: HashSet::new(),
            neighbours: resolved,
            retired_tables,
            stop_requested,
            ha: None,
            pinned: BTreeSet::new(),
        };
        director.pin_tun_servers();
        // From here on a failure must undo what is running: stop() copes with a half start.
        if let Err(error) = director.go_live(sync_queues.as_ref()) {
            director.stop();
            return Err(error);
        }
        Ok(director)
    }

    /// Opens the stats socket, then points the classifiers at the workers, then brings the VIPs
    /// up. The socket comes first so that a second director started by mistake with the same
    /// socket fails before it touches traffic or addresses.
    fn go_live(&mut self, sync_queues: Option<&SyncQueues>) -> anyhow::Result<()> {
        let socket = self.config.director.stats_socket.clone();
        let shared = Arc::clone(&self.shared);
        let commands = self.commands.clone();
        let access = SocketAccess {
            mode: self.config.director.stats_socket_mode,
            owner: self.config.director.stats_socket_owner.clone(),
            group: self.config.director.stats_socket_group.clone(),
        };
        let server = StatsServer::start_with(
            &socket,
            &access,
            Arc::new(move |request, _peer| answer(&shared, &commands, request)),
        )
        .with_context(|| format!("stats socket {}", socket.display()))?;
        self.stats_server = Some(server);
        if let Some(address) = self.config.director.metrics {
            let shared = Arc::clone(&self.shared);
            let metrics = MetricsServer::start(address, Arc::new(move || stats::snapshot(&shared)))
                .with_context(|| format!("[director] metrics = \"{address}\": cannot listen"))?;
            self.metrics_server = Some(metrics);
        }
        // Before NAT real servers are steered, so their answers to health checks never are.
        self.sync_local_addresses();
        let problems = self.announce_services();
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        if let Some(config) = self.config.ha.clone() {
            self.start_ha(&config, sync_queues)?;
        }
        self.sync_vips();
        Ok(())
    }
}

fn attach_classifiers(config: &Config) -> anyhow::Result<Vec<Interface>> {
    let mut interfaces = Vec::new();
    for name in &config.director.interfaces {
        let ifindex =
            netlink::interface_index(name).with_context(|| format!("interface {name}"))?;
        let mac = netlink::interface_mac(name)
            .with_context(|| format!("MAC address of interface {name}"))?;
        let classifier =
            XdpClassifier::attach(ifindex).with_context(|| format!("interface {name}"))?;
        info!(interface = %name, ifindex, "XDP classifier attached");
        interfaces.push(Interface {
            name: name.clone(),
            ifindex,
            mac,
            classifier,
        });
    }
    Ok(interfaces)
}

/// The data plane does all of NAT's forwarding; the kernel forwarding too would route what
/// the classifier passes (a real server's own traffic, say) behind the director's back.
fn warn_if_kernel_forwards() {
    for (family, sysctl) in [
        ("IPv4", "/proc/sys/net/ipv4/conf/all/forwarding"),
        ("IPv6", "/proc/sys/net/ipv6/conf/all/forwarding"),
    ] {
        match std::fs::read_to_string(sysctl) {
            Ok(value) if value.trim() == "0" => {}
            Ok(value) => warn!(
                sysctl,
                value = value.trim(),
                "the kernel forwards {family} too; NAT needs no kernel forwarding, and with it on \
                 the real servers' traffic the director does not translate is routed unchanged"
            ),
            Err(error) => warn!(sysctl, %error, "could not read"),
        }
    }
}

/// [`interface_facts`], which TUN and NAT cannot do without.
fn required_interface_facts(
    netlink: &mut Netlink,
    interfaces: &[Interface],
    config: &Config,
) -> anyhow::Result<Option<Interfaces>> {
    let facts = interface_facts(netlink, interfaces, config);
    if facts.is_none() {
        if let Some(method) = config.needs_own_addresses() {
            bail!(
                "interface {}: no IPv4 or global IPv6 address (forwarding = {:?} needs the \
                 director's own address on each interface it uses); give it an address on its \
                 subnet",
                interfaces
                    .last()
                    .map_or("?", |interface| interface.name.as_str()),
                method.name()
            );
        }
    }
    Ok(facts)
}

/// What the rewrites need to know about the director's interfaces: MAC, MTU and own addresses
/// (the tunnel's outer source: the first address with a real prefix, not a VIP; for IPv6 a
/// global-scope one, never link-local) of the client side, and of the server side if there is
/// one (else the client side's again). An interface with IPv6 only gets `0.0.0.0` as its IPv4
/// address (no IPv4 service can use it), one with neither fails. The client side's NAT next
/// hop is filled in from the neighbour table later ([`set_gateway`]).
fn interface_facts(
    netlink: &mut Netlink,
    interfaces: &[Interface],
    config: &Config,
) -> Option<Interfaces> {
    let vips: HashSet<IpAddr> = config.services.iter().map(|service| service.vip).collect();
    let mut facts = |interface: &Interface| -> Option<dataplane::Interface> {
        let addresses = netlink
            .addresses(interface.ifindex)
            .map_err(|error| warn!(%error, interface = %interface.name, "could not list addresses"))
            .ok()?;
        let address = own_address(&addresses, 32, |address| {
            !vips.contains(&IpAddr::V4(address))
        });
        let addresses6 = netlink
            .addresses_v6(interface.ifindex)
            .map_err(
                |error| warn!(%error, interface = %interface.name, "could not list IPv6 addresses"),
            )
            .ok()?;
        let address6 = own_address6(&addresses6, &vips);
        let address = match (address, address6) {
            (Some(address), _) => address,
            (None, Some(_)) => Ipv4Addr::UNSPECIFIED,
            (None, None) => return None,
        };
        let mtu = netlink::interface_mtu(&interface.name)
            .map_err(|error| warn!(%error, interface = %interface.name, "could not read the MTU"))
            .ok()?;
        info!(interface = %interface.name, %address, ?address6, mtu, "interface facts");
        Some(dataplane::Interface {
            mac: interface.mac,
            address,
            address6,
            mtu,
            next_hop_mac: None,
        })
    };
    let client = facts(interfaces.first()?)?;
    let server = match interfaces.get(1) {
        Some(server) => facts(server)?,
        None => client,
    };
    Some(Interfaces { client, server })
}

/// The first address `usable` accepts that has a real prefix (shorter than `host_length`, so
/// not a VIP-like host address), else the first `usable` one at all.
fn own_address<A: Copy>(
    addresses: &[(A, u8)],
    host_length: u8,
    usable: impl Fn(A) -> bool,
) -> Option<A> {
    addresses
        .iter()
        .find(|&&(address, prefix)| prefix < host_length && usable(address))
        .or_else(|| addresses.iter().find(|&&(address, _)| usable(address)))
        .map(|&(address, _)| address)
}

/// The interface's own global IPv6 address (IPv6 LVS-TUN's outer source): not link-local,
/// loopback or a VIP, one with a real prefix first.
fn own_address6(addresses: &[(Ipv6Addr, u8)], vips: &HashSet<IpAddr>) -> Option<Ipv6Addr> {
    own_address(addresses, 128, |address: Ipv6Addr| {
        !vips.contains(&IpAddr::V6(address))
            && !address.is_unicast_link_local()
            && !address.is_loopback()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(addresses: &[(&str, u8)]) -> Vec<(Ipv6Addr, u8)> {
        addresses
            .iter()
            .map(|&(address, prefix)| (address.parse().unwrap(), prefix))
            .collect()
    }

    #[test]
    fn the_own_ipv6_address_is_global_not_a_vip_and_prefers_a_real_prefix() {
        let vips: HashSet<IpAddr> = HashSet::from(["2001:db8::10".parse().unwrap()]);
        let listed = parsed(&[
            ("fe80::1", 64),
            ("2001:db8::10", 128),
            ("2001:db8::7", 128),
            ("2001:db8::1", 64),
        ]);
        assert_eq!(
            own_address6(&listed, &vips),
            Some("2001:db8::1".parse().unwrap())
        );
        // Only host addresses left: the first that is not a VIP.
        let hosts = parsed(&[("fe80::1", 64), ("2001:db8::10", 128), ("2001:db8::7", 128)]);
        assert_eq!(
            own_address6(&hosts, &vips),
            Some("2001:db8::7".parse().unwrap())
        );
        // Link-local and VIPs only: none (IPv6 tunnels are then dropped and counted).
        let none = parsed(&[("fe80::1", 64), ("2001:db8::10", 128)]);
        assert_eq!(own_address6(&none, &vips), None);
    }
}
