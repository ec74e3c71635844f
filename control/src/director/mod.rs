//! `director run`: bring the data plane up, serve, and take everything down again.
//!
//! Start-up order matters: sockets exist before the classifier sends them frames, services are
//! put in the classifier's map only once workers are polling, and the VIPs go up last-but-one so
//! clients are never drawn to a director that cannot forward. Shutdown runs it backwards: the
//! services leave the map (frames fall back to the kernel), workers stop and drain, the bpf_link
//! goes (the program detaches), and the VIPs this process added are removed. Addresses a killed
//! run left carry the director's mark and are removed at the next start-up (`addresses`).
//!
//! Health checks run on their own thread ([`crate::health`]), started before the workers; the
//! main loop receives their verdicts and rebuilds the table, as it does for run-time changes
//! and neighbour updates.
//!
//! This module holds the [`Director`] and its event loop, which only dispatches; each concern
//! has its own file, in the order a newcomer follows the data path:
//!
//! - `cpus`: which CPUs the workers and the control threads run on.
//! - `startup`: attaching the classifiers, interface facts, the first table, going live.
//! - `workers`: how many workers, their AF_XDP sockets and threads.
//! - `steering`: what the classifiers send to the workers (services, NAT real servers, own
//!   addresses).
//! - `addresses`: the VIPs and the NAT gateway address the director holds.
//! - `failover`: joining VRRP; `ha_actions`: the thread that follows its transitions, off
//!   this loop, so that nothing the loop waits for holds a takeover up.
//! - `routing`: the routing table mirror whose snapshots every table carries (NAT replies, TUN
//!   next hops).
//! - `publish`: rebuilding tables from health, neighbours and overrides and handing them to
//!   the workers.
//! - `reload` and `commands`: what SIGHUP and the control socket change.
//! - `shutdown`: everything undone in reverse.
//! - [`state`]: what the stats socket reads ([`Shared`]); a leaf that imports none of these.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use dataplane::xdp::NatBackendKey;
use dataplane::xsk::Xsk;
use dataplane::ServiceTable;
use tracing::{error, info};

use crate::config::Config;
use crate::health::HealthChecker;
use crate::metrics::MetricsServer;
use crate::neighbours::{Neighbours, Sides};
use crate::netlink::Netlink;
use crate::signals::Signal;
use crate::stats;
use crate::stats_server::StatsServer;
use crate::table::{BackendId, Override, TableBuilder};

mod addresses;
mod commands;
mod cpus;
mod failover;
mod ha_actions;
mod publish;
mod reload;
mod routing;
mod shutdown;
mod startup;
pub mod state;
mod steering;
mod workers;

use failover::Ha;
use state::{Command, Shared};
use steering::Steering;

/// How often control re-reads the neighbour table for real-server MACs.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);

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
    let mut routes = director
        .shared
        .fib
        .as_ref()
        .map_or_else(crossbeam_channel::never, |fib| fib.snapshots().clone());
    loop {
        // VRRP's transitions are not here: the HA actions thread follows them.
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
                // Retries whatever address change failed before (under [ha], the HA actions
                // thread retries on its own).
                if director.ha.is_none() {
                    director.sync_vips();
                }
            },
            recv(transitions) -> transition => {
                if let Ok(transition) = transition {
                    director.health_changed(transition, &transitions);
                } else {
                    error!("the health checker stopped: health states stay as they are");
                    transitions = crossbeam_channel::never();
                }
            },
            recv(routes) -> fib => {
                if let Ok(fib) = fib {
                    director.routes_changed(fib);
                } else {
                    error!("the routing table mirror stopped: next hops stay as they are");
                    routes = crossbeam_channel::never();
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
    /// VIPs this process added (and so removes), or a killed run left and start-up could not
    /// remove; ones already present without the director's mark are left alone. Under `[ha]`
    /// the HA actions thread holds them from VRRP's start until shutdown.
    added_vips: BTreeSet<IpAddr>,
    /// The NAT gateway addresses (`ha.server_address`, `ha.server_address6`) this process
    /// holds (under `[ha]`, as `added_vips`).
    added_server_addresses: BTreeSet<(IpAddr, u8)>,
    /// VIPs and gateway addresses found on the interface without the director's mark: the
    /// operator's, never removed (remembered so they are logged once).
    operator_addresses: BTreeSet<IpAddr>,
    /// What the client side's classifier currently sends to the workers, behind the lock the
    /// HA actions thread switches their steering under.
    steering: Arc<Steering>,
    /// The NAT real servers (address, port, protocol) whose replies the server side's
    /// classifier currently sends to the workers.
    nat_keys: HashSet<NatBackendKey>,
    /// The director's own server-side addresses the server side's classifier knows: frames
    /// from NAT real servers to them (answers to health checks) go to the kernel.
    local_addresses: HashSet<IpAddr>,
    neighbours: Neighbours,
    /// Tables the workers replaced, to be freed by control.
    retired_tables: Receiver<Arc<ServiceTable>>,
    /// A stop signal arrived during start-up.
    stop_requested: bool,
    /// VRRP, state sync and the HA actions thread, with `[ha]`.
    ha: Option<Ha>,
    /// The on-link TUN real servers pinned in the routing mirror.
    pinned: BTreeSet<IpAddr>,
}
