//! Following VRRP (`[ha]`): joining the group at start-up and handing VRRP's transitions to the
//! HA actions thread ([`super::ha_actions`]), which takes over the VIPs as master (adds them,
//! steers their frames to the workers, announces them) or gives them up as backup, with state
//! sync switching role alongside.
//!
//! HA transitions have their own path: the VRRP threads' events go straight to that thread,
//! never through the main loop, so no reload, control command or wait for MACs or workers can
//! hold a takeover up. The main loop only tells that thread what to hold ([`HaPlan`]) after
//! each reload. It must not decide who is master: the VRRP thread does, on its own timers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use dataplane::sync::SyncQueues;
use tracing::info;

use super::addresses::server_addresses;
use super::ha_actions::{Context, HaActions, HaPlan, HeldAddresses};
use super::state::{HaView, TakeoverLatency};
use super::Director;
use crate::config::HaConfig;
use crate::ha::sync::{Role, Routing, SyncConfig, SyncDaemon};
use crate::ha::vrrp::Vrrp;

/// VRRP and state sync of a director with `[ha]`, and the thread that follows VRRP.
pub(super) struct Ha {
    pub(super) vrrp: Vrrp,
    pub(super) sync: Option<Arc<SyncDaemon>>,
    pub(super) actions: HaActions,
    serving: Arc<AtomicBool>,
}

impl Director {
    /// Joins the VRRP group (as a backup: the services stay steered to the kernel and the VIPs
    /// stay off until [`crate::ha::vrrp::HaEvent::BecameMaster`]), starts state sync if
    /// configured, and the HA actions thread, which from now on holds the addresses.
    pub(super) fn start_ha(
        &mut self,
        config: &HaConfig,
        sync_queues: Option<&SyncQueues>,
    ) -> anyhow::Result<()> {
        let vips = self.vips();
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
                    key: config.sync_key.clone(),
                };
                Some(Arc::new(
                    SyncDaemon::start(&settings, queues, Routing::Broadcast, Role::Backup)
                        .context("starting connection sync (ha.sync)")?,
                ))
            }
            None => None,
        };
        let serving = Arc::new(AtomicBool::new(false));
        let latency = Arc::new(TakeoverLatency::default());
        let _ = self.shared.ha.set(HaView {
            vrrp: vrrp.status_source(),
            serving: Arc::clone(&serving),
            sync: sync.as_ref().map(|daemon| Arc::clone(daemon.counters())),
            takeover_latency: Arc::clone(&latency),
        });
        // What this run holds (leftovers start-up could not remove) is the thread's from now on.
        let mut held = HeldAddresses {
            vips: std::mem::take(&mut self.added_vips),
            gateways: std::mem::take(&mut self.added_server_addresses),
            operators: self.operator_addresses.clone(),
        };
        let context = Context {
            shared: Arc::clone(&self.shared),
            steering: Arc::clone(&self.steering),
            serving: Arc::clone(&serving),
            sync: sync.clone(),
            status: vrrp.status_source(),
            latency,
        };
        let plan = self.ha_plan(&vrrp);
        let actions = match HaActions::start(context, vrrp.events().clone(), plan, &mut held) {
            Ok(actions) => actions,
            Err(error) => {
                // Not started: the addresses stay the main loop's, for stop() to release.
                self.added_vips.extend(held.vips);
                self.added_server_addresses.extend(held.gateways);
                return Err(error.context("starting the HA actions thread"));
            }
        };
        self.ha = Some(Ha {
            vrrp,
            sync,
            actions,
            serving,
        });
        Ok(())
    }

    /// What the HA actions thread holds while master, from the configuration in force.
    pub(super) fn ha_plan(&self, vrrp: &Vrrp) -> HaPlan {
        HaPlan {
            vips: self.vips().into_iter().collect(),
            gateways: self
                .config
                .ha
                .as_ref()
                .map(|ha| server_addresses(ha).into_iter().collect())
                .unwrap_or_default(),
            announcer: vrrp.announcer(),
        }
    }

    /// Whether this director forwards for the VIPs now: always alone; as VRRP master only,
    /// with `[ha]`.
    pub(super) fn serving(&self) -> bool {
        match &self.ha {
            Some(ha) => ha.serving.load(Ordering::Relaxed),
            // Before VRRP runs (and after it stopped) a director with [ha] serves nothing.
            None => self.config.ha.is_none(),
        }
    }
}
