//! The addresses the director holds on its interfaces: the VIPs on the client side and, under
//! `[ha]` with NAT, the real servers' gateway (`ha.server_address`) on the server side. Added
//! while serving, removed otherwise, retried on every tick; removed at shutdown. Only addresses
//! this process added (or, under `[ha]`, an earlier run left) are ever removed.
//!
//! It changes addresses only: steering frames is [`super::steering`]'s, deciding whether to
//! serve is VRRP's ([`super::failover`]).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use tracing::{info, warn};

use super::Director;
use crate::config::HaConfig;
use crate::netlink::{AddressChange, Netlink};

impl Director {
    /// Takes charge of VIPs and the NAT gateway address an earlier run left on the interfaces
    /// (killed before it could remove them): under `[ha]` they are VRRP's, so a backup must
    /// give them up rather than answer ARP for them.
    pub(super) fn adopt_leftover_addresses(&mut self, config: &HaConfig, vips: &[Ipv4Addr]) {
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

    /// Every service's VIP, once each.
    pub(super) fn vips(&self) -> Vec<Ipv4Addr> {
        let vips: BTreeSet<Ipv4Addr> = self
            .config
            .services
            .iter()
            .map(|service| service.vip)
            .collect();
        vips.into_iter().collect()
    }

    /// Adds the VIPs the configuration has and removes those this process added that it no
    /// longer has.
    pub(super) fn sync_vips(&mut self) {
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
                        crate::ha::vrrp::announce_addresses(&server.name, &[address.into()])
                    {
                        warn!(%error, "could not announce the NAT gateway address");
                    }
                }
                Err(error) => warn!(%address, %error, "could not add the NAT gateway address"),
            }
        }
    }

    /// Removes the VIPs and the NAT gateway address this process holds.
    pub(super) fn release_addresses(&mut self) {
        release_addresses(
            &mut self.netlink,
            (self.home_ifindex, &mut self.added_vips),
            (self.sides.server, &mut self.added_server_address),
        );
    }
}

/// Removes the VIPs (on the client side) and the NAT gateway address (on the server side) a
/// director holds, forgetting them.
pub(super) fn release_addresses(
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
