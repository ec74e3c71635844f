//! `director run`: bring the data plane up, serve, and take everything down again.
//!
//! Start-up order matters: sockets exist before the classifier sends them frames, services are
//! put in the classifier's map only once workers are polling, and the VIPs go up last-but-one so
//! clients are never drawn to a director that cannot forward. Shutdown runs it backwards: the
//! services leave the map (frames fall back to the kernel), workers stop and drain, the bpf_link
//! goes (the program detaches), and the VIPs this process added are removed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use dataplane::xdp::XdpClassifier;
use dataplane::xsk::{Xsk, XskConfig, XskError};
use dataplane::{
    worker, Forwarding, Interfaces, Pipeline, ServiceKey, ServiceTable, WorkerCounters,
};
use director_proto::{Reply, Request};
use tracing::{error, info, warn};

use crate::config::{Config, MAX_WEIGHT};
use crate::metrics::MetricsServer;
use crate::netlink::{self, AddressChange, Netlink};
use crate::rates::RateTracker;
use crate::signals::Signal;
use crate::stats;
use crate::stats_server::{SocketAccess, StatsServer};
use crate::table::{classifier_keys, BackendId, Override, ReuseGate, TableBuilder};

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
    /// Backends taken out of the pool at run time (not in the table), to show them anyway.
    pub disabled: Mutex<Vec<BackendId>>,
    /// Interfaces with their classifiers.
    pub interfaces: Vec<Interface>,
    /// Workers.
    pub workers: Vec<WorkerHandle>,
    /// Counter samples for the replies' rates, taken once a second by the main loop.
    pub rates: RateTracker,
}

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
    builder: TableBuilder,
    netlink: Netlink,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Xsk>>,
    stats_server: Option<StatsServer>,
    /// The Prometheus `/metrics` listener, if `[director] metrics` is set.
    metrics_server: Option<MetricsServer>,
    commands: Sender<Command>,
    /// Where the VIPs and real servers live (the first configured interface).
    home_ifindex: u32,
    /// VIPs this process added (and so removes); ones already present are left alone.
    added_vips: BTreeSet<Ipv4Addr>,
    /// What the classifiers currently send to the workers.
    classifier_keys: HashSet<ServiceKey>,
    macs: HashMap<Ipv4Addr, [u8; 6]>,
    /// Tables the workers replaced, to be freed by control.
    retired_tables: Receiver<Arc<ServiceTable>>,
    /// A stop signal arrived during start-up.
    stop_requested: bool,
}

impl Director {
    fn start(
        config: Config,
        config_path: &Path,
        signals: &Receiver<Signal>,
        commands: Sender<Command>,
    ) -> anyhow::Result<Self> {
        if let [first, second, ..] = config.director.interfaces.as_slice() {
            bail!(
                "[director] interfaces = [{first:?}, {second:?}, ...]: direct routing serves one \
                 interface for now (real-server MACs are resolved and frames sent there); \
                 list one"
            );
        }
        let mut netlink = Netlink::open().context("opening a netlink socket")?;
        let interfaces = attach_classifiers(&config)?;
        let home_ifindex = interfaces[0].ifindex;
        let queues = worker_queues(&config, &interfaces)?;
        let mut builder = TableBuilder::new(queues.len());
        builder.interfaces = interface_facts(&mut netlink, &interfaces[0], &config);
        if builder.interfaces.is_none() && uses_tunnels(&config) {
            bail!(
                "interface {}: no IPv4 address to use as the tunnel source for forwarding = \"tun\"; \
                 give the interface an address on its subnet",
                interfaces[0].name
            );
        }

        // Resolve real-server MACs before serving, so the first connections are not dropped.
        let (macs, stop_requested) = resolve_at_start(
            &mut netlink,
            home_ifindex,
            &config,
            INITIAL_RESOLUTION_WAIT,
            signals,
        );
        let first = ReuseGate {
            adopted_generation: 0,
            hold: Duration::ZERO,
            now: Instant::now(),
        };
        let table = Arc::new(builder.build(&config, &HashMap::new(), &macs, first)?);

        let stop = Arc::new(AtomicBool::new(false));
        let (retire, retired_tables) = crossbeam_channel::bounded(64);
        let (workers, threads) =
            start_workers(&config, &interfaces, &queues, &table, &stop, &retire)?;
        let shared = Arc::new(Shared {
            started: Instant::now(),
            table: Mutex::new(table),
            disabled: Mutex::new(Vec::new()),
            interfaces,
            workers,
            rates: RateTracker::new(),
        });
        let mut director = Director {
            shared,
            config,
            config_path: config_path.to_owned(),
            overrides: HashMap::new(),
            builder,
            netlink,
            stop,
            threads,
            stats_server: None,
            metrics_server: None,
            commands,
            home_ifindex,
            added_vips: BTreeSet::new(),
            classifier_keys: HashSet::new(),
            macs,
            retired_tables,
            stop_requested,
        };
        // From here on a failure must undo what is running: stop() copes with a half start.
        if let Err(error) = director.go_live() {
            director.stop();
            return Err(error);
        }
        Ok(director)
    }

    /// Opens the stats socket, then points the classifiers at the workers, then brings the VIPs
    /// up. The socket comes first so that a second director started by mistake with the same
    /// socket fails before it touches traffic or addresses.
    fn go_live(&mut self) -> anyhow::Result<()> {
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
        let problems = self.announce_services();
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        self.sync_vips();
        Ok(())
    }

    /// Removes from the classifiers' maps the (VIP, port, protocol)s the configuration no longer
    /// has, so their frames go back to the kernel. Returns what failed (those keys stay).
    fn withdraw_services(&mut self) -> Vec<String> {
        let wanted = classifier_keys(&self.config);
        let stale: Vec<ServiceKey> = self.classifier_keys.difference(&wanted).copied().collect();
        let mut problems = Vec::new();
        for key in stale {
            let failed: Vec<String> = self
                .shared
                .interfaces
                .iter()
                .filter_map(|interface| interface.classifier.remove_service(&key).err())
                .map(|error| {
                    format!(
                        "removing {}:{} from the classifier: {error}",
                        key.vip, key.port
                    )
                })
                .collect();
            if failed.is_empty() {
                self.classifier_keys.remove(&key);
            }
            problems.extend(failed);
        }
        problems
    }

    /// Adds to the classifiers' maps the (VIP, port, protocol)s the configuration has, so their
    /// frames go to the workers. Returns what failed (those keys stay with the kernel).
    fn announce_services(&mut self) -> Vec<String> {
        let wanted = classifier_keys(&self.config);
        let fresh: Vec<ServiceKey> = wanted.difference(&self.classifier_keys).copied().collect();
        let mut problems = Vec::new();
        for key in fresh {
            let failed: Vec<String> = self
                .shared
                .interfaces
                .iter()
                .filter_map(|interface| interface.classifier.set_service(&key, true).err())
                .map(|error| format!("adding {}:{} to the classifier: {error}", key.vip, key.port))
                .collect();
            if failed.is_empty() {
                self.classifier_keys.insert(key);
            }
            problems.extend(failed);
        }
        problems
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
        let wanted: BTreeSet<Ipv4Addr> = self
            .config
            .services
            .iter()
            .map(|service| service.vip)
            .collect();
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
                }
                Err(error) => warn!(%vip, %error, "could not add VIP"),
            }
        }
        let unwanted: Vec<Ipv4Addr> = self.added_vips.difference(&wanted).copied().collect();
        for vip in unwanted {
            match self.netlink.remove_address(self.home_ifindex, vip, 32) {
                Ok(()) => info!(%vip, "VIP removed"),
                Err(error) => warn!(%vip, %error, "could not remove VIP"),
            }
            self.added_vips.remove(&vip);
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
        let table = self
            .builder
            .build(&self.config, &overrides, &self.macs, gate)?;
        self.overrides = overrides;
        self.publish(table);
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
        if self.builder.interfaces.is_none() && uses_tunnels(&config) {
            bail!(
                "configuration {path}: forwarding = \"tun\" needs an IPv4 address on the \
                 interface for the tunnel source, and it had none at start; restart once it has"
            );
        }
        // New real servers need their MACs before they get flows, or the first ones would be
        // dropped; wait a moment for them (a reload is not latency-critical).
        let macs = resolve_with_wait(
            &mut self.netlink,
            self.home_ifindex,
            &config,
            RELOAD_RESOLUTION_WAIT,
        );
        let gate = self.reuse_gate(&config);
        // All or nothing: if the table does not build, nothing has changed.
        let table = self.builder.build(&config, &HashMap::new(), &macs, gate)?;
        let generation = table.generation;
        self.config = config;
        self.macs = macs;
        self.overrides.clear();
        // Removed services go back to the kernel first; the workers learn new services before
        // the classifier sends them their frames.
        let mut problems = self.withdraw_services();
        self.publish(table);
        problems.extend(self.announce_services());
        self.sync_vips();
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
        let (fresh, missing) = lookup_backends(&mut self.netlink, self.home_ifindex, &self.config);
        solicit(&mut self.netlink, self.home_ifindex, &missing);
        if fresh == self.macs {
            return;
        }
        self.macs = fresh;
        let gate = self.reuse_gate(&self.config);
        match self
            .builder
            .build(&self.config, &self.overrides, &self.macs, gate)
        {
            Ok(table) => self.publish(table),
            Err(error) => warn!(%error, "could not rebuild the service table"),
        }
    }

    /// Sends a table to every worker and waits (bounded) until all of them use it.
    fn publish(&self, table: ServiceTable) {
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
        let disabled = self
            .overrides
            .iter()
            .filter(|(_, change)| change.disabled)
            .map(|(id, _)| id.clone())
            .collect();
        if let Ok(mut current) = self.shared.table.lock() {
            *current = table;
        }
        if let Ok(mut current) = self.shared.disabled.lock() {
            *current = disabled;
        }
    }

    /// Undoes start-up in reverse: frames go back to the kernel, workers drain and stop, the
    /// classifiers detach, and the VIPs this process added are removed.
    fn stop(mut self) {
        info!("stopping");
        let started = Instant::now();
        drop(self.stats_server.take());
        drop(self.metrics_server.take());
        for key in &self.classifier_keys {
            for interface in &self.shared.interfaces {
                if let Err(error) = interface.classifier.remove_service(key) {
                    warn!(%error, "could not remove service from the classifier");
                }
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        for (index, thread) in self.threads.drain(..).enumerate() {
            if thread.join().is_err() {
                warn!(worker = index, "worker panicked");
            }
        }
        // The last reference detaches the classifiers (their bpf_links close); should anything
        // still hold one, process exit closes them a moment later.
        drop(self.shared);
        for vip in std::mem::take(&mut self.added_vips) {
            match self.netlink.remove_address(self.home_ifindex, vip, 32) {
                Ok(()) => info!(%vip, "VIP removed"),
                Err(error) => warn!(%vip, %error, "could not remove VIP"),
            }
        }
        info!(elapsed_ms = started.elapsed().as_millis(), "stopped");
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

/// Whether any service forwards through IP-in-IP tunnels.
fn uses_tunnels(config: &Config) -> bool {
    config
        .services
        .iter()
        .any(|service| service.forwarding == Forwarding::Tunnel)
}

/// What the rewrites need to know about the director's interface: its MAC, MTU and its own
/// address (the tunnel's outer source: the first address with a real prefix, not a /32 VIP).
fn interface_facts(
    netlink: &mut Netlink,
    interface: &Interface,
    config: &Config,
) -> Option<Interfaces> {
    let vips: HashSet<Ipv4Addr> = config.services.iter().map(|service| service.vip).collect();
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
    let facts = dataplane::Interface {
        mac: interface.mac,
        address,
        mtu,
        next_hop_mac: None,
    };
    info!(interface = %interface.name, %address, mtu, "interface facts for tunnels");
    Some(Interfaces {
        client: facts,
        server: facts,
    })
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
        (
            "director.max_connections",
            old.max_connections != next.max_connections,
        ),
    ];
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

/// Opens the AF_XDP socket of one queue. The kernel releases a queue a moment after the
/// process that held it exits, so a director restarted at once may find it busy: retry that,
/// briefly.
fn open_socket(ifindex: u32, queue: u32) -> Result<Xsk, XskError> {
    let deadline = Instant::now() + QUEUE_BUSY_WAIT;
    loop {
        match Xsk::open(ifindex, queue, XskConfig::default()) {
            Err(XskError::Setup { errno, .. })
                if errno == libc::EBUSY && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Opens a socket per queue, registers it with the classifier and starts its pinned worker.
fn start_workers(
    config: &Config,
    interfaces: &[Interface],
    queues: &[(usize, u32)],
    table: &Arc<ServiceTable>,
    stop: &Arc<AtomicBool>,
    retire: &Sender<Arc<ServiceTable>>,
) -> anyhow::Result<(Vec<WorkerHandle>, Vec<JoinHandle<Xsk>>)> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut workers = Vec::new();
    let mut threads = Vec::new();
    for (index, &(interface_index, queue)) in queues.iter().enumerate() {
        let interface = &interfaces[interface_index];
        let xsk = open_socket(interface.ifindex, queue)
            .with_context(|| format!("AF_XDP socket on {} queue {queue}", interface.name))?;
        interface
            .classifier
            .register_socket(queue, xsk.fd())
            .with_context(|| {
                format!("registering the socket of {} queue {queue}", interface.name)
            })?;
        let counters = Arc::new(WorkerCounters::default());
        let (sender, receiver) = crossbeam_channel::bounded(4);
        let context = worker::WorkerContext {
            index,
            pipeline: Pipeline::new(index, interface.mac, config.director.max_connections),
            counters: Arc::clone(&counters),
            tables: receiver,
            initial_table: Arc::clone(table),
            retired_tables: retire.clone(),
            stop: Arc::clone(stop),
        };
        let core = index % cores;
        let thread = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                if !worker::pin_to_core(core) {
                    warn!(worker = index, core, "could not pin worker to its core");
                }
                worker::run(xsk, context)
            })
            .context("spawning a worker thread")?;
        info!(worker = index, interface = %interface.name, queue, core, "worker started");
        workers.push(WorkerHandle {
            index,
            interface: interface.name.clone(),
            queue,
            counters,
            tables: sender,
        });
        threads.push(thread);
    }
    Ok((workers, threads))
}

/// (interface position, queue) for each worker.
fn worker_queues(config: &Config, interfaces: &[Interface]) -> anyhow::Result<Vec<(usize, u32)>> {
    let mut queues = Vec::new();
    for (position, interface) in interfaces.iter().enumerate() {
        let available = netlink::interface_rx_queues(&interface.name)
            .with_context(|| format!("RX queues of interface {}", interface.name))?
            .max(1);
        // Every queue needs its own worker: the classifier passes frames arriving on a queue
        // without a socket to the kernel, and the kernel, holding the VIP, would refuse them.
        let count = match config.director.workers {
            // `workers` counts threads for all interfaces together.
            Some(workers) => u32::try_from(workers.div_ceil(interfaces.len())).unwrap_or(u32::MAX),
            None => available,
        };
        if count != available {
            bail!(
                "[director] workers = {}: interface {} has {available} RX queue(s) and each needs \
                 exactly one worker; set workers = {available} (or leave it out), or change the \
                 queues with `ethtool -L {} combined N`",
                config.director.workers.unwrap_or_default(),
                interface.name,
                interface.name
            );
        }
        queues.extend((0..count).map(|queue| (position, queue)));
    }
    Ok(queues)
}

/// MACs of every backend that has one: static ones from the config, the rest from the neighbour
/// table; and the addresses still unresolved.
fn lookup_backends(
    netlink: &mut Netlink,
    ifindex: u32,
    config: &Config,
) -> (HashMap<Ipv4Addr, [u8; 6]>, Vec<Ipv4Addr>) {
    let neighbours = netlink.neighbours(ifindex).unwrap_or_else(|error| {
        warn!(%error, "neighbour table dump failed");
        HashMap::new()
    });
    let mut macs = HashMap::new();
    let mut missing = Vec::new();
    for backend in config.services.iter().flat_map(|service| &service.backends) {
        match backend
            .mac
            .or_else(|| neighbours.get(&backend.address).copied())
        {
            Some(mac) => {
                macs.insert(backend.address, mac);
            }
            None => missing.push(backend.address),
        }
    }
    missing.sort_unstable();
    missing.dedup();
    (macs, missing)
}

/// Asks the kernel to ARP for each address.
fn solicit(netlink: &mut Netlink, ifindex: u32, addresses: &[Ipv4Addr]) {
    for address in addresses {
        if let Err(error) = netlink.solicit_neighbour(ifindex, *address) {
            warn!(%address, %error, "could not solicit neighbour");
        }
    }
}

/// Solicits missing MACs and waits up to `wait` for them, unless a stop signal arrives first
/// (then the second value is true).
fn resolve_waiting(
    netlink: &mut Netlink,
    ifindex: u32,
    config: &Config,
    wait: Duration,
    signals: Option<&Receiver<Signal>>,
) -> (HashMap<Ipv4Addr, [u8; 6]>, bool) {
    let deadline = Instant::now() + wait;
    let mut solicited = false;
    loop {
        let (macs, missing) = lookup_backends(netlink, ifindex, config);
        if missing.is_empty() {
            return (macs, false);
        }
        if !solicited {
            solicit(netlink, ifindex, &missing);
            solicited = true;
        }
        if Instant::now() >= deadline {
            warn!(
                ?missing,
                "real servers without a MAC address yet; their flows are dropped until they resolve"
            );
            return (macs, false);
        }
        let pause = Duration::from_millis(20);
        match signals.map(|signals| signals.recv_timeout(pause)) {
            Some(Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected)) => return (macs, true),
            Some(Ok(Signal::Reload) | Err(RecvTimeoutError::Timeout)) => {}
            None => std::thread::sleep(pause),
        }
    }
}

/// Start-up's resolution, cut short by a stop signal.
fn resolve_at_start(
    netlink: &mut Netlink,
    ifindex: u32,
    config: &Config,
    wait: Duration,
    signals: &Receiver<Signal>,
) -> (HashMap<Ipv4Addr, [u8; 6]>, bool) {
    resolve_waiting(netlink, ifindex, config, wait, Some(signals))
}

/// A reload's resolution.
fn resolve_with_wait(
    netlink: &mut Netlink,
    ifindex: u32,
    config: &Config,
    wait: Duration,
) -> HashMap<Ipv4Addr, [u8; 6]> {
    resolve_waiting(netlink, ifindex, config, wait, None).0
}
