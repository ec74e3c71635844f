//! Following VRRP (`[ha]`): joining the group at start-up, and on each [`HaEvent`] taking over
//! the VIPs as master (add them, steer their frames to the workers, announce them) or giving
//! them up as backup, with state sync switching role alongside.
//!
//! HA transitions have their own path: the loop handles the waiting events
//! ([`Director::follow_pending_ha_events`]) before it takes anything else, and the one long
//! wait of a reload (up to a second for real-server MACs) is interrupted to follow an event.
//! So a takeover or a give-up waits for the step already in progress, never for queued
//! commands, reloads or rebuilds. Those steps' waits are bounded: a table publish is normally
//! milliseconds, at most a second per worker that does not take the table plus a second for
//! all of them to adopt it. It must not decide who is master: the VRRP
//! thread does, on its own timers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use crossbeam_channel::{Receiver, RecvError, TryRecvError};
use dataplane::sync::SyncQueues;
use tracing::{error, info, warn};

use super::state::HaView;
use super::Director;
use crate::config::HaConfig;
use crate::ha::sync::{Role, Routing, SyncConfig, SyncDaemon};
use crate::ha::vrrp::{HaEvent, Vrrp};

/// VRRP and state sync of a director with `[ha]`.
pub(super) struct Ha {
    pub(super) vrrp: Vrrp,
    pub(super) sync: Option<SyncDaemon>,
    serving: Arc<AtomicBool>,
}

impl Director {
    /// Joins the VRRP group (as a backup: the services stay steered to the kernel and the VIPs
    /// stay off until [`HaEvent::BecameMaster`]) and starts state sync if configured.
    pub(super) fn start_ha(
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
                    key: config.sync_key.clone(),
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
        self.ha_events = vrrp.events().clone();
        self.ha = Some(Ha {
            vrrp,
            sync,
            serving,
        });
        Ok(())
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

    /// Handles the HA events already waiting (as many as were queued on entry, and one more
    /// try that also notices the VRRP thread's end: a flapping peer cannot keep the loop here).
    /// The loop calls it before anything else, and a reload when an event interrupts its wait
    /// for MACs.
    pub(super) fn follow_pending_ha_events(&mut self) {
        for _ in 0..=self.ha_events.len() {
            match self.ha_events.try_recv() {
                Ok(event) => self.follow_ha_event(Ok(event)),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.follow_ha_event(Err(RecvError));
                    return;
                }
            }
        }
    }

    /// Handles one received HA event, or the VRRP thread's end (`Err`).
    pub(super) fn follow_ha_event(&mut self, event: Result<HaEvent, RecvError>) {
        if let Ok(event) = event {
            self.ha_event(event);
        } else {
            // The VRRP thread died: nothing advertises for us any more, so hold nothing.
            error!("the VRRP thread stopped: giving up the VIPs");
            self.ha_event(HaEvent::Fault);
            self.ha_events = crossbeam_channel::never();
        }
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
}

/// Whether an HA event (or the VRRP thread's end) is waiting on `events`, waiting up to `pause`
/// for one without taking it: what a reload's wait for MACs checks, to stop waiting when VRRP
/// has news.
pub(super) fn ha_event_waiting(events: &Receiver<HaEvent>, pause: Duration) -> bool {
    let mut select = crossbeam_channel::Select::new();
    select.recv(events);
    select.ready_timeout(pause).is_ok()
}
