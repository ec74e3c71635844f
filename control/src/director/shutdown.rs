//! Shutdown: start-up undone in reverse. VRRP resigns and the addresses go first under `[ha]`,
//! then the services leave the classifiers' maps (frames fall back to the kernel), the workers
//! stop and drain, state sync stops, the addresses this process added (and those a killed run
//! left that start-up could not remove) are removed and the classifiers detach. Addresses the
//! operator configured are never removed.
//!
//! It must cope with a half start (it also undoes a failed [`Director::start`]) and must not
//! fail: whatever cannot be undone is logged and left.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::addresses::release_addresses;
use super::Director;

impl Director {
    /// Undoes start-up in reverse: frames go back to the kernel, workers drain and stop, the
    /// classifiers detach, and the VIPs this process added are removed.
    pub(super) fn stop(mut self) {
        info!("stopping");
        let started = Instant::now();
        // A master resigns first (priority 0), so a backup takes over within its skew time,
        // and gives up the VIPs at once (the kernel must not answer for them, let alone reset
        // their connections); the workers keep forwarding what clients still send here until
        // the new master's gratuitous ARPs move them, bounded by one advertisement interval.
        let ha = self.ha.take().map(|ha| {
            // The HA actions thread first, so that VRRP's last events change nothing; the
            // addresses it holds come back here to be released.
            let held = ha.actions.stop();
            self.added_vips.extend(held.vips);
            self.added_server_addresses.extend(held.gateways);
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
        for key in self.steering.lock().iter() {
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
        // The HA actions thread, which shared it, is gone: this is the last reference.
        if let Some(Some(sync)) = ha.map(|sync| sync.and_then(Arc::into_inner)) {
            sync.stop();
        }
        release_addresses(
            &mut self.netlink,
            (self.home_ifindex, &mut self.added_vips),
            (self.sides.server, &mut self.added_server_addresses),
        );
        // The last reference detaches the classifiers (their bpf_links close); should anything
        // still hold one, process exit closes them a moment later.
        drop(self.shared);
        info!(elapsed_ms = started.elapsed().as_millis(), "stopped");
    }
}
