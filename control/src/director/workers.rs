//! The workers as start-up creates them: how many (one per RX queue, [`worker_queues`]), their
//! AF_XDP sockets registered with the classifiers, their pipelines (with state sync if
//! configured) and their pinned threads ([`start_workers`]).
//!
//! Start-up only: it must not talk to running workers (new tables reach them through
//! `publish`, the stop flag is set by `shutdown`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use crossbeam_channel::Sender;
use dataplane::affinity;
use dataplane::sync::{SyncQueues, DEFAULT_REFRESH};
use dataplane::xsk::{Xsk, XskConfig, XskError};
use dataplane::{worker, Pipeline, ServiceTable, WorkerCounters};
use tracing::{info, warn};

use super::cpus::CpuPlan;
use super::state::{Interface, WorkerHandle};
use crate::config::Config;
use crate::netlink;

/// How long start-up retries an AF_XDP queue the kernel still holds for an exited process.
const QUEUE_BUSY_WAIT: Duration = Duration::from_secs(5);

/// Records exported or imported per worker queue: a burst of new flows between two sync
/// sends (50 ms) fits.
pub(super) const SYNC_QUEUE_RECORDS: usize = 1 << 16;

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

/// Opens each worker's sockets, registers them with the classifiers and starts its pinned
/// thread. Worker `q` serves queue `q` of every interface, so a NAT flow's replies (arriving on
/// the server side) reach the worker that holds its connection entry.
#[expect(
    clippy::too_many_arguments,
    reason = "everything a worker is started with, passed once at start-up"
)]
pub(super) fn start_workers(
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
            pipeline: {
                let pipeline =
                    Pipeline::new(index, interfaces[0].mac, config.director.max_connections)
                        .with_embryonic_limit(config.director.embryonic_limit);
                match sync {
                    Some(queues) => {
                        pipeline.with_sync(queues.worker(index, true, true, sync_refresh(config)))
                    }
                    None => pipeline,
                }
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
pub(super) fn worker_queues(config: &Config, interfaces: &[Interface]) -> anyhow::Result<u32> {
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
