//! What the XDP classifiers send to the workers rather than the kernel: the services on the
//! client side (added and removed here; switched on or off as VRRP says by the HA actions
//! thread, [`super::ha_actions`], under the lock of [`Steering`]), the NAT real servers'
//! replies on the server side, and the director's own server-side addresses, whose frames stay
//! with the kernel. Reconciles the classifiers' maps with the configuration in force.
//!
//! Maps only: it must not build or publish tables (the workers must know a service before its
//! frames arrive, which the callers order) or touch addresses.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};

use dataplane::ServiceKey;
use tracing::{info, warn};

use super::Director;
use crate::table::{classifier_keys, nat_backend_keys};

/// The services listed in the client side's classifier map, behind the lock both writers of
/// their steering take (who owns what: [`super::ha_actions`]). Held only for map writes.
#[derive(Debug, Default)]
pub(super) struct Steering(Mutex<HashSet<ServiceKey>>);

impl Steering {
    /// The listed services, locked.
    pub(super) fn lock(&self) -> MutexGuard<'_, HashSet<ServiceKey>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Director {
    /// Removes from the classifiers' maps what the configuration no longer has (services on
    /// the client side, NAT real servers on the server side), so their frames go back to the
    /// kernel. Returns what failed (those keys stay).
    pub(super) fn withdraw_services(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let wanted = classifier_keys(&self.config);
        let client = &self.shared.interfaces[0].classifier;
        self.steering.lock().retain(|key| {
            if wanted.contains(key) {
                return true;
            }
            match client.remove_service(key) {
                Ok(()) => false,
                Err(error) => {
                    problems.push(format!(
                        "removing {} from the classifier: {error}",
                        SocketAddr::new(key.vip, key.port)
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
    pub(super) fn announce_services(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let client = &self.shared.interfaces[0].classifier;
        // Under the lock the HA actions thread switches steering with: `serving` is read there.
        let mut listed = self.steering.lock();
        for key in classifier_keys(&self.config) {
            if listed.contains(&key) {
                continue;
            }
            match client.set_service(&key, self.serving()) {
                Ok(()) => {
                    listed.insert(key);
                }
                Err(error) => problems.push(format!(
                    "adding {} to the classifier: {error}",
                    SocketAddr::new(key.vip, key.port)
                )),
            }
        }
        drop(listed);
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
                        "adding NAT real server {} to the classifier: {error}",
                        SocketAddr::new(key.address, key.port)
                    )),
                }
            }
        }
        problems
    }

    /// Tells the server side's classifier the director's addresses there (IPv4 and IPv6,
    /// link-local included: a real server's NDP and health-check answers to it are the
    /// kernel's) as they are now (an address added later is picked up within a second).
    /// Without a server side (no NAT) no frame from a real server is steered, so there is
    /// nothing to tell.
    pub(super) fn sync_local_addresses(&mut self) {
        let Some(server) = self.shared.interfaces.get(1) else {
            return;
        };
        let listed = self.netlink.addresses(server.ifindex).and_then(|v4| {
            let v6 = self.netlink.addresses_v6(server.ifindex)?;
            Ok(v4
                .into_iter()
                .map(|(address, _)| IpAddr::V4(address))
                .chain(v6.into_iter().map(|(address, _)| IpAddr::V6(address)))
                .collect::<HashSet<IpAddr>>())
        });
        let wanted = match listed {
            Ok(wanted) => wanted,
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
}
