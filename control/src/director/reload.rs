//! Reload (SIGHUP or the `reload` request): re-read the configuration file and apply it without
//! a restart, all or nothing. Refuses what only a restart can change ([`unchangeable`]) and what
//! does not fit the classifier's maps, the counter slots or memory ([`crate::limits`]); waits
//! briefly for new real servers' MACs; then withdraws removed services, publishes the new
//! table, announces new services, and updates the VIPs and VRRP.
//!
//! It must not leave anything half-changed when the new configuration is refused, and must not
//! hold up an HA transition (see [`super::failover`]).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tracing::info;

use super::publish::{checked, set_gateway};
use super::Director;
use crate::config::{Config, HaConfig};
use crate::connected;
use crate::health;
use crate::limits::{self, Available, Capacities, Facts};
use crate::neighbours;
use crate::table::BackendId;

/// How long a reload waits for new real servers' MACs.
const RELOAD_RESOLUTION_WAIT: Duration = Duration::from_secs(1);

impl Director {
    /// Re-reads the configuration file and applies it without a restart. Nothing changes unless
    /// the whole new configuration is valid and its table builds.
    pub(super) fn reload(&mut self) -> anyhow::Result<String> {
        let path = self.config_path.display().to_string();
        let config =
            Config::load(&self.config_path).with_context(|| format!("configuration {path}"))?;
        unchangeable(&self.config, &config).with_context(|| format!("configuration {path}"))?;
        // Every limit before the first change: a map that fills up half way through the
        // steering below would leave the reload half applied.
        let facts = Facts {
            workers: self.shared.workers.len(),
            available: Available::read(),
            running: true,
        };
        limits::check(&config, &facts, &Capacities::DIRECTOR)
            .with_context(|| format!("configuration {path}"))?;
        connected::check_on_link(&mut self.netlink, &config)
            .with_context(|| format!("configuration {path}"))?;
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
        // dropped; wait a moment for them (a reload is not latency-critical; HA transitions,
        // which are, go on meanwhile on their own thread: see super::ha_actions).
        info!(
            wait_ms = RELOAD_RESOLUTION_WAIT.as_millis(),
            "reload: resolving new real servers' MACs"
        );
        let (resolved, _) = neighbours::resolve_waiting(
            &mut self.netlink,
            self.sides,
            &config,
            RELOAD_RESOLUTION_WAIT,
            |pause| {
                std::thread::sleep(pause);
                false
            },
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
        // TUN real servers added on-link get host routes in the mirror; removed ones let go.
        self.pin_tun_servers();
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
        let vips = self.vips();
        if let (Some(ha), Some(config)) = (&mut self.ha, &self.config.ha) {
            // Same router (unchangeable() made sure): state and timers stay, no takeover.
            if let Err(error) = ha.vrrp.update(config, &vips) {
                problems.push(format!("VRRP: {error}"));
            }
            // A new sync key applies at once (both directors need it: see the README).
            if let Some(sync) = &ha.sync {
                sync.set_key(config.sync_key.clone());
            }
        }
        // After VRRP's update: under [ha] the HA actions thread gets the routers running now.
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
}

/// Refuses a reload that changes what only a restart can change.
fn unchangeable(running: &Config, new: &Config) -> anyhow::Result<()> {
    let (old, next) = (&running.director, &new.director);
    // Not here, so free to change: director.timeouts and director.nat_reply (per new connection).
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
        (
            "director.embryonic_share",
            old.embryonic_limit != next.embryonic_limit,
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
            "[ha] cannot add, remove or change interface, vrid, unicast_peers, sync, sync_id \
             or sync_port on reload (that is joining another group); restart the director to change them"
        );
    }
    for (key, changed) in fixed {
        if changed {
            bail!("{key} cannot change on reload (it sizes what is already running); restart the director to change it");
        }
    }
    Ok(())
}
