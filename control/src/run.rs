//! `director run`: bring the data plane up, serve, and take everything down again.
//!
//! Start-up order matters: sockets exist before the classifier sends them frames, services are
//! put in the classifier's map only once workers are polling, and the VIPs go up last-but-one so
//! clients are never drawn to a director that cannot forward. Shutdown runs it backwards: the
//! services leave the map (frames fall back to the kernel), workers stop and drain, the bpf_link
//! goes (the program detaches), and the VIPs this process added are removed.
//!
//! Health checks run on their own thread ([`crate::health`]), started before the workers; the
//! main loop receives their verdicts and rebuilds the table, as it does for run-time changes
//! and neighbour updates.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use crossbeam_channel::{Receiver, Sender};
use dataplane::affinity;
use dataplane::sync::{SyncQueues, DEFAULT_REFRESH};
use dataplane::xdp::{NatBackendKey, XdpClassifier};
use dataplane::xsk::{Xsk, XskConfig, XskError};
use dataplane::{
    worker, Forwarding, Interfaces, Pipeline, ServiceKey, ServiceTable, WorkerCounters,
};
use director_proto::{Reply, Request};
use tracing::{error, info, warn};

use crate::config::{Config, DirectorConfig, HaConfig, MAX_WEIGHT};
use crate::ha::sync::{Role, Routing, SyncConfig, SyncCounters, SyncDaemon};
use crate::ha::vrrp::{HaEvent, Vrrp, VrrpStatusSource};
use crate::health::{self, Health, HealthBoard, HealthChecker, Transition};
use crate::metrics::MetricsServer;
use crate::neighbours::{self, Neighbours, Sides};
use crate::netlink::{self, AddressChange, Netlink};
use crate::rates::RateTracker;
use crate::signals::Signal;
use crate::stats;
use crate::stats_server::{SocketAccess, StatsServer};
use crate::table::{
    classifier_keys, nat_backend_keys, BackendId, BuiltTable, Override, PoolView, ReuseGate,
    TableBuilder,
};

/// How often control re-reads the neighbour table for real-server MACs.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);
/// How long start-up waits for real-server MACs before serving anyway (unresolved servers get
/// frames only once they resolve; the drops are counted as neighbour_unresolved).
const INITIAL_RESOLUTION_WAIT: Duration = Duration::from_secs(3);
/// How long a reload waits for new real servers' MACs.
const RELOAD_RESOLUTION_WAIT: Duration = Duration::from_secs(1);
/// How long control waits for every worker to adopt a new table.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long start-up retries an AF_XDP queue the kernel still holds for an exited process.
const QUEUE_BUSY_WAIT: Duration = Duration::from_secs(5);
/// How long a control-socket request waits for the main loop.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(8);

/// One interface the director serves.
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// Its MAC address (the source MAC of forwarded frames).
    pub mac: [u8; 6],
    /// The classifier attached to it.
    pub classifier: XdpClassifier,
}

/// A running worker as control sees it.
pub struct WorkerHandle {
    /// Index.
    pub index: usize,
    /// Interface name.
    pub interface: String,
    /// RX queue.
    pub queue: u32,
    /// Its counters.
    pub counters: Arc<WorkerCounters>,
    tables: Sender<Arc<ServiceTable>>,
}

/// What the stats socket reads.
pub struct Shared {
    /// Process start.
    pub started: Instant,
    /// The table the workers were last sent.
    pub table: Mutex<Arc<ServiceTable>>,
    /// What that table leaves out (disabled and down servers, to show them anyway) and which
    /// of its servers are fallbacks.
    pub pool: Mutex<PoolView>,
    /// Health and check counters of the checked servers.
    pub health: Arc<HealthBoard>,
    /// Interfaces with their classifiers.
    pub interfaces: Vec<Interface>,
    /// Workers.
    pub workers: Vec<WorkerHandle>,
    /// Counter samples for the replies' rates, taken once a second by the main loop.
    pub rates: RateTracker,
    /// VRRP and sync state, with `[ha]` (set once VRRP runs).
    pub ha: OnceLock<HaView>,
}

/// What the stats socket reads of VRRP and state sync.
pub struct HaView {
    /// The router's status.
    pub vrrp: VrrpStatusSource,
    /// Whether this director holds the VIPs now.
    pub serving: Arc<AtomicBool>,
    /// The sync daemon's counters, with `ha.sync`.
    pub sync: Option<Arc<SyncCounters>>,
}

/// VRRP and state sync of a director with `[ha]`.
struct Ha {
    vrrp: Vrrp,
    sync: Option<SyncDaemon>,
    serving: Arc<AtomicBool>,
}

/// Records exported or imported per worker queue: a burst of new flows between two sync
/// sends (50 ms) fits.
const SYNC_QUEUE_RECORDS: usize = 1 << 16;

/// A mutating request from the control socket, with where its answer goes. The main loop
/// executes these one at a time, so reloads and run-time changes never interleave.
pub struct Command {
    /// What to do.
    pub request: Request,
    /// Where to send the outcome.
    pub reply: Sender<Reply>,
}

/// Runs the director until SIGINT/SIGTERM. `signals` comes from [`crate::signals::install`].
pub fn run(config: Config, config_path: &Path, signals: &Receiver<Signal>) -> anyhow::Result<()> {
    let (command_sender, commands) = crossbeam_channel::bounded(16);
    let mut director = Director::start(config, config_path, signals, command_sender)?;
    if director.stop_requested {
        director.stop();
        return Ok(());
    }
    info!(
        config = %config_path.display(),
        services = director.config.services.len(),
        workers = director.shared.workers.len(),
        "director running"
    );
    // A first sample now, so traffic in the first second shows in the rates; without it the
    // first tick's sample would be the baseline and absorb that traffic.
    stats::sample_rates(&director.shared);
    let ticker = crossbeam_channel::tick(NEIGHBOUR_REFRESH);
    let mut transitions = director.health.transitions().clone();
    let mut ha_events = director
        .ha
        .as_ref()
        .map_or_else(crossbeam_channel::never, |ha| ha.vrrp.events().clone());
    loop {
        crossbeam_channel::select! {
            recv(signals) -> signal => match signal {
                Ok(Signal::Reload) => match director.reload() {
                    Ok(message) => info!("SIGHUP: {message}"),
                    Err(error) => error!("SIGHUP: reload rejected, the running configuration stays: {error:#}"),
                },
                Ok(Signal::Stop) | Err(_) => break,
            },
            recv(commands) -> command => {
                if let Ok(Command { request, reply }) = command {
                    let _ = reply.send(director.execute(request));
                }
            },
            recv(ticker) -> _ => {
                stats::sample_rates(&director.shared);
                director.refresh_neighbours();
                director.sync_local_addresses();
                // Retries whatever address change failed before.
                director.sync_vips();
            },
            recv(transitions) -> transition => {
                if let Ok(transition) = transition {
                    director.health_changed(transition, &transitions);
                } else {
                    error!("the health checker stopped: health states stay as they are");
                    transitions = crossbeam_channel::never();
                }
            },
            recv(ha_events) -> event => {
                if let Ok(event) = event {
                    director.ha_event(event);
                } else {
                    // The VRRP thread died: nothing advertises for us any more, so hold nothing.
                    error!("the VRRP thread stopped: giving up the VIPs");
                    director.ha_event(HaEvent::Fault);
                    ha_events = crossbeam_channel::never();
                }
            },
        }
    }
    director.stop();
    Ok(())
}

/// A running director: what start-up built, kept for serving, reconfiguring and undoing it all.
struct Director {
    shared: Arc<Shared>,
    /// The configuration in force (the file as last loaded; run-time changes are in `overrides`).
    config: Config,
    config_path: PathBuf,
    overrides: HashMap<BackendId, Override>,
    /// Servers their health checks hold down.
    down: HashSet<BackendId>,
    /// The health-checker thread.
    health: HealthChecker,
    builder: TableBuilder,
    netlink: Netlink,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Xsk>>,
    stats_server: Option<StatsServer>,
    /// The Prometheus `/metrics` listener, if `[director] metrics` is set.
    metrics_server: Option<MetricsServer>,
    commands: Sender<Command>,
    /// Where the VIPs and DR/TUN real servers live (the first configured interface).
    home_ifindex: u32,
    /// The client side and, with NAT, the server side.
    sides: Sides,
    /// VIPs this process added (and so removes); ones already present are left alone.
    added_vips: BTreeSet<Ipv4Addr>,
    /// The NAT gateway address (`ha.server_address`) while this process holds it.
    added_server_address: Option<(Ipv4Addr, u8)>,
    /// What the client side's classifier currently sends to the workers.
    classifier_keys: HashSet<ServiceKey>,
    /// The NAT real servers (address, port, protocol) whose replies the server side's
    /// classifier currently sends to the workers.
    nat_keys: HashSet<NatBackendKey>,
    /// The director's own server-side addresses the server side's classifier knows: frames
    /// from NAT real servers to them (answers to health checks) go to the kernel.
    local_addresses: HashSet<Ipv4Addr>,
    neighbours: Neighbours,
    /// Tables the workers replaced, to be freed by control.
    retired_tables: Receiver<Arc<ServiceTable>>,
    /// A stop signal arrived during start-up.
    stop_requested: bool,
    /// VRRP and state sync, with `[ha]`.
    ha: Option<Ha>,
}

impl Director {
    #[expect(
        clippy::too_many_lines,
        reason = "start-up, step by step in the order it must happen"
    )]
    fn start(
        config: Config,
        config_path: &Path,
        signals: &Receiver<Signal>,
        commands: Sender<Command>,
    ) -> anyhow::Result<Self> {
        let cpus = CpuPlan::apply(&config.director)?;
        let mut netlink = Netlink::open().context("opening a netlink socket")?;
        let interfaces = attach_classifiers(&config)?;
        let home_ifindex = interfaces[0].ifindex;
        let sides = Sides {
            client: home_ifindex,
            server: interfaces.get(1).map(|server| server.ifindex),
        };
        let queues = worker_queues(&config, &interfaces)?;
        let mut builder = TableBuilder::new(queues as usize);
        builder.interfaces = required_interface_facts(&mut netlink, &interfaces, &config)?;
        if config.uses(Forwarding::Nat) {
            warn_if_kernel_forwards();
        }

        // Resolve real-server MACs before serving, so the first connections are not dropped.
        let (resolved, stop_requested) = neighbours::resolve_waiting(
            &mut netlink,
            sides,
            &config,
            INITIAL_RESOLUTION_WAIT,
            Some(signals),
        );
        if config.uses(Forwarding::Nat) && resolved.gateway.is_none() {
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
        let (retire, retired_tables) = crossbeam_channel::bounded(64);
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
            added_vips: BTreeSet::new(),
            added_server_address: None,
            classifier_keys: HashSet::new(),
            nat_keys: HashSet::new(),
            local_addresses: HashSet::new(),
            neighbours: resolved,
            retired_tables,
            stop_requested,
            ha: None,
        };
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

    /// Joins the VRRP group (as a backup: the services stay steered to the kernel and the VIPs
    /// stay off until [`HaEvent::BecameMaster`]) and starts state sync if configured.
    fn start_ha(
        &mut self,
        config: &HaConfig,
        sync_queues: Option<&SyncQueues>,
    ) -> anyhow::Result<()> {
        let vips = self.vips();
        self.adopt_leftover_addresses(config, &vips);
        // Every interface the director serves must have its link, the NAT server side too.
        let links: Vec<String> = self
            .shared
            .interfaces
            .iter()
            .map(|interface| interface.name.clone())
            .collect();
        let vrrp = Vrrp::start_watching(config, &self.shared.interfaces[0].name, &vips, &links)
            .context("starting VRRP ([ha])")?;
        info!(summary = %config.summary(), "VRRP started");
        let sync = match sync_queues {
            Some(queues) => {
                let settings = SyncConfig {
                    interface: config.interface.clone(),
                    sync_id: config.sync_id,
                    peers: (!config.unicast_peers.is_empty()).then(|| config.unicast_peers.clone()),
                    port: config.sync_port,
                };
                Some(
                    SyncDaemon::start(&settings, queues, Routing::Broadcast, Role::Backup)
                        .context("starting connection sync (ha.sync)")?,
                )
            }
            None => None,
        };
        let serving = Arc::new(AtomicBool::new(false));
        let _ = self.shared.ha.set(HaView {
            vrrp: vrrp.status_source(),
            serving: Arc::clone(&serving),
            sync: sync.as_ref().map(|daemon| Arc::clone(daemon.counters())),
        });
        self.ha = Some(Ha {
            vrrp,
            sync,
            serving,
        });
        Ok(())
    }

    /// Takes charge of VIPs and the NAT gateway address an earlier run left on the interfaces
    /// (killed before it could remove them): under `[ha]` they are VRRP's, so a backup must
    /// give them up rather than answer ARP for them.
    fn adopt_leftover_addresses(&mut self, config: &HaConfig, vips: &[Ipv4Addr]) {
        if let Ok(present) = self.netlink.addresses(self.home_ifindex) {
            for (address, _) in present {
                if vips.contains(&address) {
                    warn!(vip = %address, "a VIP left by an earlier run: removing it until master");
                    self.added_vips.insert(address);
                }
            }
        }
        if let (Some((address, prefix)), Some(ifindex)) = (config.server_address, self.sides.server)
        {
            if let Ok(present) = self.netlink.addresses(ifindex) {
                if present.iter().any(|(candidate, _)| *candidate == address) {
                    warn!(%address, "the NAT gateway address left by an earlier run: removing it until master");
                    self.added_server_address = Some((address, prefix));
                }
            }
        }
    }

    /// Whether this director forwards for the VIPs now: always alone; as VRRP master only,
    /// with `[ha]`.
    fn serving(&self) -> bool {
        match &self.ha {
            Some(ha) => ha.serving.load(Ordering::Relaxed),
            // Before VRRP runs (and after it stopped) a director with [ha] serves nothing.
            None => self.config.ha.is_none(),
        }
    }

    /// Every service's VIP, once each.
    fn vips(&self) -> Vec<Ipv4Addr> {
        let vips: BTreeSet<Ipv4Addr> = self
            .config
            .services
            .iter()
            .map(|service| service.vip)
            .collect();
        vips.into_iter().collect()
    }

    /// Follows VRRP: a master adds the VIPs, steers their frames to the workers and announces
    /// them with gratuitous ARP; a backup (or a router whose link failed) steers them back to
    /// the kernel and removes the VIPs. State sync sends as master and applies as backup.
    fn ha_event(&mut self, event: HaEvent) {
        let Some(ha) = &self.ha else {
            return;
        };
        match event {
            HaEvent::BecameMaster => {
                info!("VRRP: master: taking over the VIPs");
                ha.serving.store(true, Ordering::Relaxed);
                if let Some(sync) = &ha.sync {
                    sync.set_role(Role::Master);
                }
                self.sync_vips();
                self.steer_services(true);
                if let Some(ha) = &self.ha {
                    if let Err(error) = ha.vrrp.announce_vips() {
                        warn!(%error, "could not announce the VIPs");
                    }
                }
            }
            HaEvent::BecameBackup | HaEvent::Fault => {
                let fault = matches!(event, HaEvent::Fault);
                info!(fault, "VRRP: backup: giving up the VIPs");
                ha.serving.store(false, Ordering::Relaxed);
                if let Some(sync) = &ha.sync {
                    sync.set_role(Role::Backup);
                }
                // The VIPs go first: frames still arriving are forwarded by the workers rather
                // than reset by a kernel holding the VIP with nothing behind it.
                self.sync_vips();
                self.steer_services(false);
            }
            HaEvent::PeerSeen { address, priority } => {
                info!(%address, priority, "VRRP: router heard");
            }
        }
    }

    /// Turns the classifier's steering of every announced service on or off (the entries
    /// stay, so a backup keeps its map ready for a takeover).
    fn steer_services(&self, on: bool) {
        let client = &self.shared.interfaces[0].classifier;
        for key in &self.classifier_keys {
            if let Err(error) = client.set_service(key, on) {
                warn!(%error, vip = %key.vip, port = key.port, "could not change a service's steering");
            }
        }
    }

    /// Removes from the classifiers' maps what the configuration no longer has (services on
    /// the client side, NAT real servers on the server side), so their frames go back to the
    /// kernel. Returns what failed (those keys stay).
    fn withdraw_services(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let wanted = classifier_keys(&self.config);
        let client = &self.shared.interfaces[0].classifier;
        self.classifier_keys.retain(|key| {
            if wanted.contains(key) {
                return true;
            }
            match client.remove_service(key) {
                Ok(()) => false,
                Err(error) => {
                    problems.push(format!(
                        "removing {}:{} from the classifier: {error}",
                        key.vip, key.port
                    ));
                    true
                }
            }
        });
        if let Some(server) = self.shared.interfaces.get(1) {
            let wanted = nat_backend_keys(&self.config);
            self.nat_keys.retain(|key| {
                if wanted.contains(key) {
                    return true;
                }
                match server.classifier.remove_nat_backend(key) {
                    Ok(()) => false,
                    Err(error) => {
                        problems.push(format!(
                            "removing NAT real server {}:{} from the classifier: {error}",
                            key.address, key.port
                        ));
                        true
                    }
                }
            });
        }
        problems
    }

    /// Adds to the classifiers' maps what the configuration has (services on the client side,
    /// NAT real servers on the server side), so their frames go to the workers. Returns what
    /// failed (those keys stay with the kernel).
    fn announce_services(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let client = &self.shared.interfaces[0].classifier;
        for key in classifier_keys(&self.config) {
            if self.classifier_keys.contains(&key) {
                continue;
            }
            match client.set_service(&key, self.serving()) {
                Ok(()) => {
                    self.classifier_keys.insert(key);
                }
                Err(error) => problems.push(format!(
                    "adding {}:{} to the classifier: {error}",
                    key.vip, key.port
                )),
            }
        }
        if let Some(server) = self.shared.interfaces.get(1) {
            for key in nat_backend_keys(&self.config) {
                if self.nat_keys.contains(&key) {
                    continue;
                }
                match server.classifier.set_nat_backend(&key, true) {
                    Ok(()) => {
                        self.nat_keys.insert(key);
                    }
                    Err(error) => problems.push(format!(
                        "adding NAT real server {}:{} to the classifier: {error}",
                        key.address, key.port
                    )),
                }
            }
        }
        problems
    }

    /// Tells the server side's classifier the director's addresses there as they are now (an
    /// address added later is picked up within a second). Without a server side (no NAT) no
    /// frame from a real server is steered, so there is nothing to tell.
    fn sync_local_addresses(&mut self) {
        let Some(server) = self.shared.interfaces.get(1) else {
            return;
        };
        let wanted: HashSet<Ipv4Addr> = match self.netlink.addresses(server.ifindex) {
            Ok(addresses) => addresses.into_iter().map(|(address, _)| address).collect(),
            Err(error) => {
                warn!(%error, interface = %server.name, "could not list the server side's addresses");
                return;
            }
        };
        // What the map holds afterwards: failures are retried on the next call.
        let mut known = HashSet::new();
        for &address in &wanted {
            if self.local_addresses.contains(&address) {
                known.insert(address);
                continue;
            }
            match server.classifier.set_local_address(address) {
                Ok(()) => {
                    info!(%address, interface = %server.name, "own address: frames to it stay with the kernel");
                    known.insert(address);
                }
                Err(error) => {
                    warn!(%address, %error, "could not add an own address to the classifier");
                }
            }
        }
        for &address in self.local_addresses.difference(&wanted) {
            if let Err(error) = server.classifier.remove_local_address(address) {
                warn!(%address, %error, "could not remove an own address from the classifier");
                known.insert(address);
            }
        }
        self.local_addresses = known;
    }

    /// What decides whether a retired counter slot may be reused now.
    fn reuse_gate(&self, next: &Config) -> ReuseGate {
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

    /// Adds the VIPs the configuration has and removes those this process added that it no
    /// longer has.
    fn sync_vips(&mut self) {
        let wanted: BTreeSet<Ipv4Addr> = if self.serving() {
            self.vips().into_iter().collect()
        } else {
            BTreeSet::new()
        };
        let interface = &self.shared.interfaces[0];
        for &vip in &wanted {
            if self.added_vips.contains(&vip) {
                continue;
            }
            match self.netlink.add_address(interface.ifindex, vip, 32) {
                Ok(AddressChange::Added) => {
                    info!(%vip, interface = %interface.name, "VIP added");
                    self.added_vips.insert(vip);
                }
                Ok(AddressChange::AlreadyPresent) => {
                    info!(%vip, interface = %interface.name, "VIP already present");
                    // Under [ha] the VIPs are VRRP's: one left by an earlier run is ours to
                    // give up when we are not master.
                    if self.config.ha.is_some() {
                        self.added_vips.insert(vip);
                    }
                }
                Err(error) => warn!(%vip, %error, "could not add VIP"),
            }
        }
        let unwanted: Vec<Ipv4Addr> = self.added_vips.difference(&wanted).copied().collect();
        for vip in unwanted {
            match self.netlink.remove_address(self.home_ifindex, vip, 32) {
                Ok(()) => {
                    info!(%vip, "VIP removed");
                    self.added_vips.remove(&vip);
                }
                // Kept, so the next pass (a tick, an event) tries again.
                Err(error) => warn!(%vip, %error, "could not remove VIP"),
            }
        }
        self.sync_server_address();
    }

    /// Holds the NAT real servers' gateway (`ha.server_address`) on the server side while
    /// serving, announcing it with gratuitous ARP when it arrives, so their replies follow a
    /// failover; gives it up otherwise.
    fn sync_server_address(&mut self) {
        let wanted = self
            .config
            .ha
            .as_ref()
            .and_then(|ha| ha.server_address)
            .filter(|_| self.serving());
        if wanted == self.added_server_address {
            return;
        }
        let Some(server) = self.shared.interfaces.get(1) else {
            return;
        };
        if let Some((address, prefix)) = self.added_server_address {
            match self.netlink.remove_address(server.ifindex, address, prefix) {
                Ok(()) => {
                    info!(%address, interface = %server.name, "NAT gateway address removed");
                    self.added_server_address = None;
                }
                Err(error) => {
                    warn!(%address, %error, "could not remove the NAT gateway address");
                    return;
                }
            }
        }
        if let Some((address, prefix)) = wanted {
            match self.netlink.add_address(server.ifindex, address, prefix) {
                Ok(_) => {
                    info!(%address, interface = %server.name, "NAT gateway address added");
                    self.added_server_address = Some((address, prefix));
                    if let Err(error) =
                        crate::ha::vrrp::announce_addresses(&server.name, &[address])
                    {
                        warn!(%error, "could not announce the NAT gateway address");
                    }
                }
                Err(error) => warn!(%address, %error, "could not add the NAT gateway address"),
            }
        }
    }

    /// Executes a mutating request from the control socket.
    fn execute(&mut self, request: Request) -> Reply {
        let outcome = match request {
            Request::Stats => return stats::answer(&self.shared, &Request::Stats),
            Request::Reload => self.reload(),
            Request::SetWeight {
                service,
                backend,
                weight,
            } => self.change_backend(
                &service,
                &backend,
                |change| change.weight = Some(weight),
                weight,
            ),
            Request::Drain { service, backend } => {
                self.change_backend(&service, &backend, |change| change.weight = Some(0), 0)
            }
            Request::Disable { service, backend } => {
                self.change_backend(&service, &backend, |change| change.disabled = true, 0)
            }
            Request::Enable { service, backend } => {
                self.change_backend(&service, &backend, |change| change.disabled = false, 0)
            }
        };
        match outcome {
            Ok(message) => {
                info!("{message}");
                Reply::Ok { message }
            }
            Err(error) => {
                let message = format!("{error:#}");
                warn!("control request refused: {message}");
                Reply::Error { message }
            }
        }
    }

    /// Applies a run-time change to one backend and publishes the resulting table.
    fn change_backend(
        &mut self,
        service: &str,
        backend: &str,
        change: impl FnOnce(&mut Override),
        weight: u32,
    ) -> anyhow::Result<String> {
        if weight > MAX_WEIGHT {
            bail!("weight {weight}: expected 0..={MAX_WEIGHT}");
        }
        let Some(configured) = self
            .config
            .services
            .iter()
            .find(|candidate| candidate.name == service)
        else {
            let names: Vec<&str> = self
                .config
                .services
                .iter()
                .map(|service| service.name.as_str())
                .collect();
            bail!("no service {service:?}; services: {}", names.join(", "));
        };
        let address: Ipv4Addr = backend
            .parse()
            .map_err(|_| anyhow::anyhow!("backend {backend:?}: expected an IPv4 address"))?;
        if !configured
            .backends
            .iter()
            .any(|candidate| candidate.address == address)
        {
            bail!("service {service:?} has no backend {address}");
        }
        let id = (service.to_owned(), address);
        let mut next = self.overrides.get(&id).copied().unwrap_or_default();
        change(&mut next);
        let mut overrides = self.overrides.clone();
        overrides.insert(id.clone(), next);
        let gate = self.reuse_gate(&self.config);
        let built = self.builder.build(
            &self.config,
            &overrides,
            &self.down,
            &self.neighbours.backends,
            gate,
        )?;
        self.overrides = overrides;
        self.publish(built);
        let state = match next {
            Override { disabled: true, .. } => "disabled".to_owned(),
            Override {
                weight: Some(weight),
                ..
            } => format!("weight {weight}"),
            Override { weight: None, .. } => "enabled".to_owned(),
        };
        Ok(format!(
            "service {service}: backend {address}: {state} (until the next reload)"
        ))
    }

    /// Re-reads the configuration file and applies it without a restart. Nothing changes unless
    /// the whole new configuration is valid and its table builds.
    fn reload(&mut self) -> anyhow::Result<String> {
        let path = self.config_path.display().to_string();
        let config =
            Config::load(&self.config_path).with_context(|| format!("configuration {path}"))?;
        unchangeable(&self.config, &config).with_context(|| format!("configuration {path}"))?;
        if self.builder.interfaces.is_none() {
            if let Some(method) = config.needs_own_addresses() {
                bail!(
                    "configuration {path}: forwarding = {:?} needs an IPv4 address on the \
                     director's interfaces, and they had none at start; restart once they have",
                    method.name()
                );
            }
        }
        // New real servers need their MACs before they get flows, or the first ones would be
        // dropped; wait a moment for them (a reload is not latency-critical).
        let (resolved, _) = neighbours::resolve_waiting(
            &mut self.netlink,
            self.sides,
            &config,
            RELOAD_RESOLUTION_WAIT,
            None,
        );
        let gate = self.reuse_gate(&config);
        // A server that stays checked stays down until its checks pass: a reload must not put
        // a failing server back in the pool.
        let down: HashSet<BackendId> = self
            .down
            .iter()
            .filter(|id| checked(&config, id))
            .cloned()
            .collect();
        // All or nothing: if the table does not build, nothing has changed.
        let mut builder_interfaces = self.builder.interfaces;
        set_gateway(&mut self.builder, &resolved);
        let built =
            match self
                .builder
                .build(&config, &HashMap::new(), &down, &resolved.backends, gate)
            {
                Ok(built) => built,
                Err(error) => {
                    std::mem::swap(&mut self.builder.interfaces, &mut builder_interfaces);
                    return Err(error);
                }
            };
        let generation = built.table.generation;
        self.config = config;
        self.neighbours = resolved;
        self.overrides.clear();
        self.down = down;
        // Servers that stay keep their health and counters; new ones start up.
        self.health.update(health::targets(&self.config));
        // Removed services go back to the kernel first; the workers learn new services before
        // the classifier sends them their frames.
        let mut problems = self.withdraw_services();
        self.publish(built);
        problems.extend(self.announce_services());
        self.sync_vips();
        let vips = self.vips();
        if let (Some(ha), Some(config)) = (&mut self.ha, &self.config.ha) {
            // Same router (unchangeable() made sure): state and timers stay, no takeover.
            if let Err(error) = ha.vrrp.update(config, &vips) {
                problems.push(format!("VRRP: {error}"));
            }
        }
        let backends: usize = self
            .config
            .services
            .iter()
            .map(|service| service.backends.len())
            .sum();
        let mut message = format!(
            "reloaded {path}: {} service(s), {backends} backend(s), table generation {generation}",
            self.config.services.len()
        );
        if !problems.is_empty() {
            let _ = write!(message, "; applied with errors: {}", problems.join("; "));
        }
        Ok(message)
    }

    /// Re-reads real-server MACs (soliciting missing ones) and publishes a new table if any
    /// changed.
    fn refresh_neighbours(&mut self) {
        // Replaced tables come back from the workers to be freed here, off the hot path.
        while self.retired_tables.try_recv().is_ok() {}
        let (fresh, missing) = neighbours::lookup(&mut self.netlink, self.sides, &self.config);
        neighbours::solicit(&mut self.netlink, &missing);
        if fresh == self.neighbours {
            return;
        }
        if fresh.gateway != self.neighbours.gateway {
            info!(gateway = ?fresh.gateway, "client side's next hop for NAT replies changed");
        }
        self.neighbours = fresh;
        set_gateway(&mut self.builder, &self.neighbours);
        self.rebuild();
    }

    /// Applies health changes: `first`, and any others already waiting, in one rebuild.
    fn health_changed(&mut self, first: Transition, transitions: &Receiver<Transition>) {
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

    /// Builds a table from the state in force and publishes it.
    fn rebuild(&mut self) {
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

    /// Sends a table to every worker and waits (bounded) until all of them use it.
    fn publish(&self, built: BuiltTable) {
        let BuiltTable { table, pool } = built;
        let table = Arc::new(table);
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
        }
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

    /// Undoes start-up in reverse: frames go back to the kernel, workers drain and stop, the
    /// classifiers detach, and the VIPs this process added are removed.
    fn stop(mut self) {
        info!("stopping");
        let started = Instant::now();
        // A master resigns first (priority 0), so a backup takes over within its skew time,
        // and gives up the VIPs at once (the kernel must not answer for them, let alone reset
        // their connections); the workers keep forwarding what clients still send here until
        // the new master's gratuitous ARPs move them, bounded by one advertisement interval.
        let ha = self.ha.take().map(|ha| {
            let status = ha.vrrp.shutdown();
            info!(state = status.state.name(), "VRRP stopped");
            ha.sync
        });
        if let Some(config) = self.config.ha.clone() {
            self.release_addresses();
            std::thread::sleep(config.advert_interval.min(Duration::from_secs(1)));
        }
        // No more verdicts; exec checks still running are killed and reaped.
        drop(self.health);
        drop(self.stats_server.take());
        drop(self.metrics_server.take());
        for key in &self.classifier_keys {
            if let Err(error) = self.shared.interfaces[0].classifier.remove_service(key) {
                warn!(%error, "could not remove service from the classifier");
            }
        }
        if let Some(server) = self.shared.interfaces.get(1) {
            for key in &self.nat_keys {
                if let Err(error) = server.classifier.remove_nat_backend(key) {
                    warn!(%error, "could not remove a NAT real server from the classifier");
                }
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        for (index, thread) in self.threads.drain(..).enumerate() {
            if thread.join().is_err() {
                warn!(worker = index, "worker panicked");
            }
        }
        if let Some(Some(sync)) = ha {
            sync.stop();
        }
        release_addresses(
            &mut self.netlink,
            (self.home_ifindex, &mut self.added_vips),
            (self.sides.server, &mut self.added_server_address),
        );
        // The last reference detaches the classifiers (their bpf_links close); should anything
        // still hold one, process exit closes them a moment later.
        drop(self.shared);
        info!(elapsed_ms = started.elapsed().as_millis(), "stopped");
    }

    /// Removes the VIPs and the NAT gateway address this process holds.
    fn release_addresses(&mut self) {
        release_addresses(
            &mut self.netlink,
            (self.home_ifindex, &mut self.added_vips),
            (self.sides.server, &mut self.added_server_address),
        );
    }
}

/// How often a live connection is synced again: IPVS-like 60 s, but at most half the shortest
/// idle timeout or persistence timeout at start, so a backup's copies never expire while the
/// master's entries live.
fn sync_refresh(config: &Config) -> Duration {
    let timeouts = &config.director.timeouts;
    config
        .services
        .iter()
        .filter_map(|service| service.persistence)
        .chain([timeouts.tcp_established, timeouts.udp])
        .map(|timeout| timeout / 2)
        .fold(DEFAULT_REFRESH, Duration::min)
        .max(Duration::from_secs(1))
}

/// Removes the VIPs (on the client side) and the NAT gateway address (on the server side) a
/// director holds, forgetting them.
fn release_addresses(
    netlink: &mut Netlink,
    (client, vips): (u32, &mut BTreeSet<Ipv4Addr>),
    (server, gateway): (Option<u32>, &mut Option<(Ipv4Addr, u8)>),
) {
    for vip in std::mem::take(vips) {
        match netlink.remove_address(client, vip, 32) {
            Ok(()) => info!(%vip, "VIP removed"),
            Err(error) => warn!(%vip, %error, "could not remove VIP"),
        }
    }
    if let (Some((address, prefix)), Some(ifindex)) = (gateway.take(), server) {
        if let Err(error) = netlink.remove_address(ifindex, address, prefix) {
            warn!(%address, %error, "could not remove the NAT gateway address");
        }
    }
}

/// The stats socket's handler: stats are read directly; anything that changes state goes to
/// the main loop, which answers when done.
fn answer(shared: &Shared, commands: &Sender<Command>, request: Request) -> Reply {
    if !request.is_mutating() {
        return stats::answer(shared, &request);
    }
    let (reply, answered) = crossbeam_channel::bounded(1);
    if commands
        .send_timeout(Command { request, reply }, COMMAND_TIMEOUT)
        .is_err()
    {
        return Reply::Error {
            message: "the director is busy or stopping; try again".to_owned(),
        };
    }
    answered
        .recv_timeout(COMMAND_TIMEOUT)
        .unwrap_or_else(|_| Reply::Error {
            message: "the director did not answer in time".to_owned(),
        })
}

/// Whether `config` health-checks server `id`.
fn checked(config: &Config, id: &BackendId) -> bool {
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
fn set_gateway(builder: &mut TableBuilder, resolved: &Neighbours) {
    if let Some(interfaces) = &mut builder.interfaces {
        interfaces.client.next_hop_mac = resolved.gateway_mac();
    }
}

/// The data plane does all of NAT's forwarding; the kernel forwarding too would route what
/// the classifier passes (a real server's own traffic, say) behind the director's back.
fn warn_if_kernel_forwards() {
    const SYSCTL: &str = "/proc/sys/net/ipv4/conf/all/forwarding";
    match std::fs::read_to_string(SYSCTL) {
        Ok(value) if value.trim() == "0" => {}
        Ok(value) => warn!(
            sysctl = SYSCTL,
            value = value.trim(),
            "the kernel forwards IPv4 too; NAT needs no kernel forwarding, and with it on the \
             real servers' traffic the director does not translate is routed unchanged"
        ),
        Err(error) => warn!(sysctl = SYSCTL, %error, "could not read"),
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
                "interface {}: no IPv4 address (forwarding = {:?} needs the director's own \
                 address on each interface it uses); give it an address on its subnet",
                interfaces
                    .last()
                    .map_or("?", |interface| interface.name.as_str()),
                method.name()
            );
        }
    }
    Ok(facts)
}

/// What the rewrites need to know about the director's interfaces: MAC, MTU and own address
/// (the tunnel's outer source: the first address with a real prefix, not a /32 VIP) of the
/// client side, and of the server side if there is one (else the client side's again). The
/// client side's NAT next hop is filled in from the neighbour table later ([`set_gateway`]).
fn interface_facts(
    netlink: &mut Netlink,
    interfaces: &[Interface],
    config: &Config,
) -> Option<Interfaces> {
    let vips: HashSet<Ipv4Addr> = config.services.iter().map(|service| service.vip).collect();
    let mut facts = |interface: &Interface| -> Option<dataplane::Interface> {
        let addresses = netlink
            .addresses(interface.ifindex)
            .map_err(|error| warn!(%error, interface = %interface.name, "could not list addresses"))
            .ok()?;
        let address = addresses
            .iter()
            .find(|(address, prefix)| *prefix < 32 && !vips.contains(address))
            .or_else(|| {
                addresses
                    .iter()
                    .find(|(address, _)| !vips.contains(address))
            })
            .map(|(address, _)| *address)?;
        let mtu = netlink::interface_mtu(&interface.name)
            .map_err(|error| warn!(%error, interface = %interface.name, "could not read the MTU"))
            .ok()?;
        info!(interface = %interface.name, %address, mtu, "interface facts");
        Some(dataplane::Interface {
            mac: interface.mac,
            address,
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

/// Refuses a reload that changes what only a restart can change.
fn unchangeable(running: &Config, new: &Config) -> anyhow::Result<()> {
    let (old, next) = (&running.director, &new.director);
    let fixed = [
        ("director.interfaces", old.interfaces != next.interfaces),
        ("director.workers", old.workers != next.workers),
        (
            "director.stats_socket",
            old.stats_socket != next.stats_socket,
        ),
        (
            "director.stats_socket_mode",
            old.stats_socket_mode != next.stats_socket_mode,
        ),
        (
            "director.stats_socket_group",
            old.stats_socket_group != next.stats_socket_group,
        ),
        (
            "director.stats_socket_owner",
            old.stats_socket_owner != next.stats_socket_owner,
        ),
        ("director.metrics", old.metrics != next.metrics),
        ("director.poll", old.poll != next.poll),
        ("director.worker_cpus", old.worker_cpus != next.worker_cpus),
        (
            "director.max_connections",
            old.max_connections != next.max_connections,
        ),
    ];
    // The VRRP router and the sync cluster a director is in: changing them is leaving one
    // group for another, which a restart does cleanly (priority and timing may change).
    let ha_identity = |ha: &Option<HaConfig>| {
        ha.as_ref().map(|ha| {
            (
                ha.interface.clone(),
                ha.vrid,
                ha.unicast_peers.clone(),
                ha.sync,
                ha.sync_id,
                ha.sync_port,
            )
        })
    };
    if ha_identity(&running.ha) != ha_identity(&new.ha) {
        bail!(
            "[ha] cannot add, remove or change interface, vrid, unicast_peers or the sync keys \
             on reload (that is joining another group); restart the director to change them"
        );
    }
    for (key, changed) in fixed {
        if changed {
            bail!("{key} cannot change on reload (it sizes what is already running); restart the director to change it");
        }
    }
    Ok(())
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

/// Opens the AF_XDP socket(s) of one worker: on queue `queue` of the client side and, with a
/// server side, on the same queue there, both on one UMEM. The kernel releases a queue a moment
/// after the process that held it exits, so a director restarted at once may find it busy:
/// retry that, briefly.
fn open_sockets(interfaces: &[Interface], queue: u32) -> Result<Xsk, XskError> {
    let deadline = Instant::now() + QUEUE_BUSY_WAIT;
    loop {
        let opened = match interfaces {
            [client, server] => Xsk::open_pair(
                (client.ifindex, queue),
                (server.ifindex, queue),
                XskConfig::for_ports(2),
            ),
            _ => Xsk::open(interfaces[0].ifindex, queue, XskConfig::default()),
        };
        match opened {
            Err(XskError::Setup { errno, .. })
                if errno == libc::EBUSY && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Where the workers and the rest of the process run (`[director] worker_cpus`).
struct CpuPlan {
    /// Worker `i` runs on `workers[i % len]`; empty if the affinity mask could not be read
    /// (the workers are then left where the scheduler puts them).
    workers: Vec<usize>,
}

impl CpuPlan {
    /// Checks `worker_cpus` against the CPUs this process may run on and, when some are left
    /// over, confines every thread of the process (the signal waiter, already running) and
    /// every thread spawned from now on (the whole control side) to those: a busy-polling
    /// worker then has its CPU to itself, as DPDK keeps its main lcore off the forwarding
    /// lcores. Without `worker_cpus` the workers take the allowed CPUs in turn and nothing is
    /// confined. Called first in start-up, before the workers are spawned.
    fn apply(director: &DirectorConfig) -> anyhow::Result<Self> {
        let Some(allowed) = affinity::allowed_cpus() else {
            if director.worker_cpus.is_empty() {
                warn!("cannot read the process's CPU affinity: workers are not pinned");
                return Ok(CpuPlan {
                    workers: Vec::new(),
                });
            }
            bail!("director.worker_cpus: cannot read the CPUs this process may run on");
        };
        if director.worker_cpus.is_empty() {
            return Ok(CpuPlan { workers: allowed });
        }
        for (index, cpu) in director.worker_cpus.iter().enumerate() {
            if !allowed.contains(cpu) {
                bail!(
                    "director.worker_cpus[{index}] = {cpu}: this process may not run on CPU \
                     {cpu} (it may run on {})",
                    cpu_list(&allowed)
                );
            }
        }
        let control: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|cpu| !director.worker_cpus.contains(cpu))
            .collect();
        if control.is_empty() {
            info!(
                cpus = %cpu_list(&allowed),
                "every CPU this process may use runs a worker: control threads share them"
            );
        } else {
            affinity::restrict_every_thread(&control).with_context(|| {
                format!("confining control threads to CPUs {}", cpu_list(&control))
            })?;
            info!(
                workers = %cpu_list(&director.worker_cpus),
                control = %cpu_list(&control),
                "CPUs"
            );
        }
        Ok(CpuPlan {
            workers: director.worker_cpus.clone(),
        })
    }

    fn worker_cpu(&self, index: usize) -> Option<usize> {
        if self.workers.is_empty() {
            return None;
        }
        self.workers.get(index % self.workers.len()).copied()
    }
}

/// CPU numbers as a comma-separated list.
fn cpu_list(cpus: &[usize]) -> String {
    let names: Vec<String> = cpus.iter().map(usize::to_string).collect();
    names.join(",")
}

/// Opens each worker's sockets, registers them with the classifiers and starts its pinned
/// thread. Worker `q` serves queue `q` of every interface, so a NAT flow's replies (arriving on
/// the server side) reach the worker that holds its connection entry.
#[expect(
    clippy::too_many_arguments,
    reason = "everything a worker is started with, passed once at start-up"
)]
fn start_workers(
    config: &Config,
    cpus: &CpuPlan,
    interfaces: &[Interface],
    queues: u32,
    table: &Arc<ServiceTable>,
    stop: &Arc<AtomicBool>,
    retire: &Sender<Arc<ServiceTable>>,
    sync: Option<&SyncQueues>,
) -> anyhow::Result<(Vec<WorkerHandle>, Vec<JoinHandle<Xsk>>)> {
    let names: Vec<&str> = interfaces
        .iter()
        .map(|interface| interface.name.as_str())
        .collect();
    let name = names.join("+");
    let mut workers = Vec::new();
    let mut threads = Vec::new();
    for queue in 0..queues {
        let index = queue as usize;
        let xsk = open_sockets(interfaces, queue)
            .with_context(|| format!("AF_XDP socket(s) on {name} queue {queue}"))?;
        for (port, interface) in interfaces.iter().enumerate() {
            interface
                .classifier
                .register_socket(queue, xsk.fd(port))
                .with_context(|| {
                    format!("registering the socket of {} queue {queue}", interface.name)
                })?;
        }
        let counters = Arc::new(WorkerCounters::default());
        let (sender, receiver) = crossbeam_channel::bounded(4);
        let context = worker::WorkerContext {
            index,
            pipeline: match sync {
                Some(queues) => {
                    Pipeline::new(index, interfaces[0].mac, config.director.max_connections)
                        .with_sync(queues.worker(index, true, true, sync_refresh(config)))
                }
                None => Pipeline::new(index, interfaces[0].mac, config.director.max_connections),
            },
            counters: Arc::clone(&counters),
            tables: receiver,
            initial_table: Arc::clone(table),
            retired_tables: retire.clone(),
            stop: Arc::clone(stop),
            poll: config.director.poll,
        };
        let cpu = cpus.worker_cpu(index);
        let thread = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if !affinity::pin_current_thread(cpu) {
                        warn!(worker = index, cpu, "could not pin worker to its CPU");
                    }
                }
                worker::run(xsk, context)
            })
            .context("spawning a worker thread")?;
        info!(worker = index, interface = %name, queue, cpu, "worker started");
        workers.push(WorkerHandle {
            index,
            interface: name.clone(),
            queue,
            counters,
            tables: sender,
        });
        threads.push(thread);
    }
    Ok((workers, threads))
}

/// How many workers (one per RX queue of the client side; the server side must have as many).
fn worker_queues(config: &Config, interfaces: &[Interface]) -> anyhow::Result<u32> {
    let mut counts = Vec::new();
    for interface in interfaces {
        let available = netlink::interface_rx_queues(&interface.name)
            .with_context(|| format!("RX queues of interface {}", interface.name))?
            .max(1);
        counts.push((interface, available));
    }
    let (client, queues) = counts[0];
    // Every queue needs its own worker: the classifier passes frames arriving on a queue
    // without a socket to the kernel, and the kernel, holding the VIP, would refuse them.
    if let Some(workers) = config.director.workers {
        if u32::try_from(workers) != Ok(queues) {
            bail!(
                "[director] workers = {workers}: interface {} has {queues} RX queue(s) and each \
                 needs exactly one worker; set workers = {queues} (or leave it out), or change \
                 the queues with `ethtool -L {} combined N`",
                client.name,
                client.name
            );
        }
    }
    if let Some(&(server, server_queues)) = counts.get(1) {
        if server_queues != queues {
            bail!(
                "interface {} has {server_queues} RX queue(s) and {} has {queues}: a worker \
                 serves the same queue on both sides, so give them as many with `ethtool -L`",
                server.name,
                client.name
            );
        }
        // The connection table is per worker, and the NIC hashes a reply (real server ->
        // client) to a queue without knowing which worker forwarded its request.
        if queues > 1 {
            bail!(
                "forwarding = \"nat\" runs one worker for now: {} has {queues} RX queues, and a \
                 real server's reply could reach another worker than the one holding its \
                 connection; use `ethtool -L {} combined 1` and the same on {}",
                client.name,
                client.name,
                server.name
            );
        }
    }
    Ok(queues)
}
