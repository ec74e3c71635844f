//! `director run`: bring the data plane up, serve, and take everything down again.
//!
//! Start-up order matters: sockets exist before the classifier sends them frames, services are
//! put in the classifier's map only once workers are polling, and the VIPs go up last-but-one so
//! clients are never drawn to a director that cannot forward. Shutdown runs it backwards: the
//! services leave the map (frames fall back to the kernel), workers stop and drain, the bpf_link
//! goes (the program detaches), and the VIPs this process added are removed.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use dataplane::counters::{backend_counter_block, BackendCounters};
use dataplane::xdp::XdpClassifier;
use dataplane::xsk::{Xsk, XskConfig};
use dataplane::{worker, Backend, Pipeline, Service, ServiceKey, ServiceTable, WorkerCounters};
use tracing::{info, warn};

use crate::config::{Config, ServiceConfig};
use crate::netlink::{self, AddressChange, Netlink};
use crate::signals::Signal;
use crate::stats;
use crate::stats_server::StatsServer;

/// How often control re-reads the neighbour table for real-server MACs.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);
/// How long start-up waits for real-server MACs before serving anyway (unresolved servers get
/// frames only once they resolve; the drops are counted as neighbour_unresolved).
const INITIAL_RESOLUTION_WAIT: Duration = Duration::from_secs(3);

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
    /// The validated configuration being served.
    pub config: Config,
    /// The table the workers were last sent.
    pub table: Mutex<Arc<ServiceTable>>,
    /// Interfaces with their classifiers.
    pub interfaces: Vec<Interface>,
    /// Workers.
    pub workers: Vec<WorkerHandle>,
}

/// Runs the director until SIGINT/SIGTERM. `signals` comes from [`crate::signals::install`].
pub fn run(config: Config, config_path: &Path, signals: &Receiver<Signal>) -> anyhow::Result<()> {
    let mut director = Director::start(config, signals)?;
    if director.stop_requested {
        director.stop();
        return Ok(());
    }
    info!(
        config = %config_path.display(),
        services = director.shared.config.services.len(),
        workers = director.shared.workers.len(),
        "director running"
    );
    loop {
        match signals.recv_timeout(NEIGHBOUR_REFRESH) {
            Ok(Signal::Reload) => {
                warn!("SIGHUP: live reconfiguration is not implemented yet; keeping the running configuration");
            }
            Err(RecvTimeoutError::Timeout) => director.refresh_neighbours(),
            Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    director.stop();
    Ok(())
}

/// A running director: what start-up built, kept for serving and for undoing it all.
struct Director {
    shared: Arc<Shared>,
    netlink: Netlink,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Xsk>>,
    stats_server: Option<StatsServer>,
    /// Where the VIPs and real servers live (the first configured interface).
    home_ifindex: u32,
    /// VIPs this process added (and so removes); ones already present are left alone.
    added_vips: Vec<Ipv4Addr>,
    macs: HashMap<Ipv4Addr, [u8; 6]>,
    counter_blocks: Vec<Arc<[BackendCounters]>>,
    generation: u64,
    /// Tables the workers replaced, to be freed by control.
    retired_tables: Receiver<Arc<ServiceTable>>,
    /// A stop signal arrived during start-up.
    stop_requested: bool,
}

impl Director {
    fn start(config: Config, signals: &Receiver<Signal>) -> anyhow::Result<Self> {
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
        let backend_slots: usize = config
            .services
            .iter()
            .map(|service| service.backends.len())
            .sum();
        let counter_blocks: Vec<Arc<[BackendCounters]>> = (0..queues.len())
            .map(|_| backend_counter_block(backend_slots))
            .collect();

        // Resolve real-server MACs before serving, so the first connections are not dropped.
        let (macs, stop_requested) = resolve_at_start(
            &mut netlink,
            home_ifindex,
            &config,
            INITIAL_RESOLUTION_WAIT,
            signals,
        );
        let generation = 1;
        let table = Arc::new(build_table(generation, &config, &macs, &counter_blocks)?);

        let stop = Arc::new(AtomicBool::new(false));
        let (retire, retired_tables) = crossbeam_channel::bounded(64);
        let (workers, threads) =
            start_workers(&config, &interfaces, &queues, &table, &stop, &retire)?;
        let shared = Arc::new(Shared {
            started: Instant::now(),
            config,
            table: Mutex::new(table),
            interfaces,
            workers,
        });
        let mut director = Director {
            shared,
            netlink,
            stop,
            threads,
            stats_server: None,
            home_ifindex,
            added_vips: Vec::new(),
            macs,
            counter_blocks,
            generation,
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
        let socket = self.shared.config.director.stats_socket.clone();
        let shared = Arc::clone(&self.shared);
        let server = StatsServer::start(
            &socket,
            Arc::new(move |request| stats::answer(&shared, &request)),
        )
        .with_context(|| format!("stats socket {}", socket.display()))?;
        self.stats_server = Some(server);
        for service in &self.shared.config.services {
            for interface in &self.shared.interfaces {
                interface
                    .classifier
                    .set_service(&service_key(service), true)
                    .with_context(|| format!("service {}", service.name))?;
            }
        }
        self.added_vips = add_vips(
            &mut self.netlink,
            &self.shared.config,
            &self.shared.interfaces[0],
        );
        Ok(())
    }

    /// Re-reads real-server MACs (soliciting missing ones) and publishes a new table if any
    /// changed.
    fn refresh_neighbours(&mut self) {
        let config = &self.shared.config;
        // Replaced tables come back from the workers to be freed here, off the hot path.
        while self.retired_tables.try_recv().is_ok() {}
        let (fresh, missing) = lookup_backends(&mut self.netlink, self.home_ifindex, config);
        solicit(&mut self.netlink, self.home_ifindex, &missing);
        if fresh == self.macs {
            return;
        }
        self.macs = fresh;
        self.generation += 1;
        match build_table(self.generation, config, &self.macs, &self.counter_blocks) {
            Ok(table) => publish(&self.shared, Arc::new(table)),
            Err(error) => warn!(%error, "could not rebuild the service table"),
        }
    }

    /// Undoes start-up in reverse: frames go back to the kernel, workers drain and stop, the
    /// classifiers detach, and the VIPs this process added are removed.
    fn stop(mut self) {
        info!("stopping");
        let started = Instant::now();
        drop(self.stats_server.take());
        for service in &self.shared.config.services {
            for interface in &self.shared.interfaces {
                if let Err(error) = interface.classifier.remove_service(&service_key(service)) {
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
        for vip in self.added_vips {
            match self.netlink.remove_address(self.home_ifindex, vip, 32) {
                Ok(()) => info!(%vip, "VIP removed"),
                Err(error) => warn!(%vip, %error, "could not remove VIP"),
            }
        }
        info!(elapsed_ms = started.elapsed().as_millis(), "stopped");
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
        let xsk = Xsk::open(interface.ifindex, queue, XskConfig::default())
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

/// Adds every service VIP to `interface`; returns the ones this call added.
fn add_vips(netlink: &mut Netlink, config: &Config, interface: &Interface) -> Vec<Ipv4Addr> {
    let mut vips: Vec<Ipv4Addr> = config.services.iter().map(|service| service.vip).collect();
    vips.sort_unstable();
    vips.dedup();
    let mut added = Vec::new();
    for vip in vips {
        match netlink.add_address(interface.ifindex, vip, 32) {
            Ok(AddressChange::Added) => {
                info!(%vip, interface = %interface.name, "VIP added");
                added.push(vip);
            }
            Ok(AddressChange::AlreadyPresent) => {
                info!(%vip, interface = %interface.name, "VIP already present");
            }
            Err(error) => warn!(%vip, %error, "could not add VIP"),
        }
    }
    added
}

/// Sends a new table to every worker (they pick it up between batches).
fn publish(shared: &Shared, table: Arc<ServiceTable>) {
    for worker in &shared.workers {
        // A full channel means the worker has newer tables queued; it will get this one after.
        if worker
            .tables
            .send_timeout(Arc::clone(&table), Duration::from_millis(100))
            .is_err()
        {
            warn!(
                worker = worker.index,
                "worker did not take the new service table"
            );
        }
    }
    if let Ok(mut current) = shared.table.lock() {
        *current = table;
    }
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

fn service_key(service: &ServiceConfig) -> ServiceKey {
    ServiceKey {
        vip: service.vip,
        port: service.port,
        protocol: service.protocol,
    }
}

/// Stable identity of a real server for Maglev: the same server hashes the same everywhere.
fn backend_key(address: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(address)) << 16) | u64::from(port)
}

/// MACs of every backend that has one: static ones from the config, the rest from the neighbour
/// table; and the addresses still unresolved.
fn lookup_backends(
    netlink: &mut Netlink,
    ifindex: u32,
    config: &Config,
) -> (HashMap<Ipv4Addr, [u8; 6]>, Vec<Ipv4Addr>) {
    let mut macs = HashMap::new();
    let mut missing = Vec::new();
    for backend in config.services.iter().flat_map(|service| &service.backends) {
        if let Some(mac) = backend.mac {
            macs.insert(backend.address, mac);
            continue;
        }
        match netlink.neighbour_mac(ifindex, backend.address) {
            Ok(Some(mac)) => {
                macs.insert(backend.address, mac);
            }
            Ok(None) => missing.push(backend.address),
            Err(error) => {
                warn!(address = %backend.address, %error, "neighbour lookup failed");
                missing.push(backend.address);
            }
        }
    }
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

/// Start-up's resolution: solicits missing MACs and waits up to `wait` for them, unless a stop
/// signal arrives first (then the second value is true).
fn resolve_at_start(
    netlink: &mut Netlink,
    ifindex: u32,
    config: &Config,
    wait: Duration,
    signals: &Receiver<Signal>,
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
        match signals.recv_timeout(Duration::from_millis(50)) {
            Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return (macs, true),
            Ok(Signal::Reload) | Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Builds the data plane's view of the configuration.
pub fn build_table(
    generation: u64,
    config: &Config,
    macs: &HashMap<Ipv4Addr, [u8; 6], impl std::hash::BuildHasher>,
    counter_blocks: &[Arc<[BackendCounters]>],
) -> anyhow::Result<ServiceTable> {
    let mut services = Vec::with_capacity(config.services.len());
    let mut slot = 0;
    for service in &config.services {
        let candidates: Vec<scheduler::Candidate> = service
            .backends
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
        let backends = service
            .backends
            .iter()
            .map(|backend| {
                let entry = Backend {
                    address: backend.address,
                    mac: macs.get(&backend.address).copied(),
                    weight: backend.weight,
                    counter_slot: slot,
                };
                slot += 1;
                entry
            })
            .collect();
        services.push(Service {
            name: service.name.clone(),
            key: service_key(service),
            ports: vec![service.port],
            persistence: None,
            forwarding: service.forwarding,
            scheduler,
            backends,
        });
    }
    Ok(ServiceTable::new(
        generation,
        services,
        config.director.timeouts,
        counter_blocks.to_vec(),
    ))
}
