//! The addresses the director holds on its interfaces: the VIPs on the client side (IPv4 as a
//! /32, IPv6 as a /128 added without duplicate address detection, so it answers at once; the
//! kernel answers ARP and NDP for them) and, under `[ha]` with NAT, the real servers' gateways
//! (`ha.server_address`, `ha.server_address6`) on the server side. Added while serving, removed
//! otherwise, retried on every tick; removed at shutdown. Only addresses this process added
//! (or, under `[ha]`, an earlier run left) are ever removed.
//!
//! One owner changes them at a time: the main loop without `[ha]`; under `[ha]` the HA thread
//! ([`super::ha_actions`]) from the moment VRRP starts until shutdown takes them back to
//! release them. Both use [`sync_vips`] and [`sync_gateways`].
//!
//! It changes addresses only: steering frames is [`super::steering`]'s, deciding whether to
//! serve is VRRP's ([`super::failover`]).

use std::collections::BTreeSet;
use std::net::IpAddr;

use tracing::{info, warn};

use super::state::Interface;
use super::Director;
use crate::config::HaConfig;
use crate::netlink::{AddressChange, Netlink};

impl Director {
    /// Takes charge of VIPs and the NAT gateway address an earlier run left on the interfaces
    /// (killed before it could remove them): under `[ha]` they are VRRP's, so a backup must
    /// give them up rather than answer ARP for them.
    pub(super) fn adopt_leftover_addresses(&mut self, config: &HaConfig, vips: &[IpAddr]) {
        for (address, _) in all_addresses(&mut self.netlink, self.home_ifindex) {
            if vips.contains(&address) {
                warn!(vip = %address, "a VIP left by an earlier run: removing it until master");
                self.added_vips.insert(address);
            }
        }
        let Some(ifindex) = self.sides.server else {
            return;
        };
        let present = all_addresses(&mut self.netlink, ifindex);
        for (address, prefix) in server_addresses(config) {
            if present.iter().any(|(candidate, _)| *candidate == address) {
                warn!(%address, "the NAT gateway address left by an earlier run: removing it until master");
                self.added_server_addresses.insert((address, prefix));
            }
        }
    }

    /// Every service's VIP, once each, IPv4 first.
    pub(super) fn vips(&self) -> Vec<IpAddr> {
        let vips: BTreeSet<IpAddr> = self
            .config
            .services
            .iter()
            .map(|service| service.vip)
            .collect();
        vips.into_iter().collect()
    }

    /// Adds the VIPs the configuration has and removes those this process added that it no
    /// longer has. Under `[ha]` the HA thread holds the addresses ([`super::ha_actions`]):
    /// it gets the new lists instead, and this changes nothing itself.
    pub(super) fn sync_vips(&mut self) {
        if let Some(ha) = &self.ha {
            ha.actions.publish(self.ha_plan(&ha.vrrp));
            return;
        }
        let wanted: BTreeSet<IpAddr> = if self.serving() {
            self.vips().into_iter().collect()
        } else {
            BTreeSet::new()
        };
        let client = &self.shared.interfaces[0];
        let adopt_present = self.config.ha.is_some();
        sync_vips(
            &mut self.netlink,
            client,
            &mut self.added_vips,
            &wanted,
            adopt_present,
        );
        let wanted: BTreeSet<(IpAddr, u8)> = match &self.config.ha {
            Some(ha) if self.serving() => server_addresses(ha).into_iter().collect(),
            _ => BTreeSet::new(),
        };
        sync_gateways(
            &mut self.netlink,
            self.shared.interfaces.get(1),
            &mut self.added_server_addresses,
            &wanted,
        );
    }

    /// Removes the VIPs and the NAT gateway address this process holds.
    pub(super) fn release_addresses(&mut self) {
        release_addresses(
            &mut self.netlink,
            (self.home_ifindex, &mut self.added_vips),
            (self.sides.server, &mut self.added_server_addresses),
        );
    }
}

/// Adds the `wanted` VIPs that `held` lacks on `client` and removes those `held` has that are
/// not wanted, keeping `held` to what is on the interface (a failed change stays to be retried
/// by the next call). `adopt_present`: a wanted VIP already there (left by an earlier run) is
/// taken charge of, as under `[ha]`, where the VIPs are VRRP's.
pub(super) fn sync_vips(
    netlink: &mut Netlink,
    client: &Interface,
    held: &mut BTreeSet<IpAddr>,
    wanted: &BTreeSet<IpAddr>,
    adopt_present: bool,
) {
    for &vip in wanted {
        if held.contains(&vip) {
            continue;
        }
        match netlink.add_address(client.ifindex, vip, host_prefix(vip)) {
            Ok(AddressChange::Added) => {
                info!(%vip, interface = %client.name, "VIP added");
                held.insert(vip);
            }
            Ok(AddressChange::AlreadyPresent) => {
                info!(%vip, interface = %client.name, "VIP already present");
                if adopt_present {
                    held.insert(vip);
                }
            }
            Err(error) => warn!(%vip, %error, "could not add VIP"),
        }
    }
    let unwanted: Vec<IpAddr> = held.difference(wanted).copied().collect();
    for vip in unwanted {
        match netlink.remove_address(client.ifindex, vip, host_prefix(vip)) {
            Ok(()) => {
                info!(%vip, "VIP removed");
                held.remove(&vip);
            }
            // Kept, so the next pass (a tick, an event) tries again.
            Err(error) => warn!(%vip, %error, "could not remove VIP"),
        }
    }
}

/// Holds the NAT real servers' gateways (`ha.server_address`, `ha.server_address6`) that are
/// `wanted` on the server side (if there is one), announcing each with gratuitous ARP or an
/// unsolicited neighbour advertisement when it arrives, so their replies follow a failover;
/// gives up the others `held` has.
pub(super) fn sync_gateways(
    netlink: &mut Netlink,
    server: Option<&Interface>,
    held: &mut BTreeSet<(IpAddr, u8)>,
    wanted: &BTreeSet<(IpAddr, u8)>,
) {
    if wanted == held {
        return;
    }
    let Some(server) = server else {
        return;
    };
    let unwanted: Vec<(IpAddr, u8)> = held.difference(wanted).copied().collect();
    for (address, prefix) in unwanted {
        match netlink.remove_address(server.ifindex, address, prefix) {
            Ok(()) => {
                info!(%address, interface = %server.name, "NAT gateway address removed");
                held.remove(&(address, prefix));
            }
            Err(error) => warn!(%address, %error, "could not remove the NAT gateway address"),
        }
    }
    for &(address, prefix) in wanted.difference(&held.clone()) {
        match netlink.add_address(server.ifindex, address, prefix) {
            Ok(_) => {
                info!(%address, interface = %server.name, "NAT gateway address added");
                held.insert((address, prefix));
                if let Err(error) = crate::ha::vrrp::announce_addresses(&server.name, &[address]) {
                    warn!(%error, "could not announce the NAT gateway address");
                }
            }
            Err(error) => warn!(%address, %error, "could not add the NAT gateway address"),
        }
    }
}

/// The prefix length a VIP is held with: the address alone.
fn host_prefix(address: IpAddr) -> u8 {
    if address.is_ipv4() {
        32
    } else {
        128
    }
}

/// The NAT gateway addresses `[ha]` configures, IPv4 then IPv6.
pub(super) fn server_addresses(config: &HaConfig) -> Vec<(IpAddr, u8)> {
    let v4 = config
        .server_address
        .map(|(address, prefix)| (IpAddr::V4(address), prefix));
    let v6 = config
        .server_address6
        .map(|(address, prefix)| (IpAddr::V6(address), prefix));
    v4.into_iter().chain(v6).collect()
}

/// Both families' addresses on `ifindex`; a family that cannot be read is left out (adopting
/// leftovers is best effort, as it always was).
fn all_addresses(netlink: &mut Netlink, ifindex: u32) -> Vec<(IpAddr, u8)> {
    let v4 = netlink.addresses(ifindex).unwrap_or_default();
    let v6 = netlink.addresses_v6(ifindex).unwrap_or_default();
    v4.into_iter()
        .map(|(address, prefix)| (IpAddr::V4(address), prefix))
        .chain(
            v6.into_iter()
                .map(|(address, prefix)| (IpAddr::V6(address), prefix)),
        )
        .collect()
}

/// Removes the VIPs (on the client side) and the NAT gateway address (on the server side) a
/// director holds, forgetting them.
pub(super) fn release_addresses(
    netlink: &mut Netlink,
    (client, vips): (u32, &mut BTreeSet<IpAddr>),
    (server, gateways): (Option<u32>, &mut BTreeSet<(IpAddr, u8)>),
) {
    for vip in std::mem::take(vips) {
        match netlink.remove_address(client, vip, host_prefix(vip)) {
            Ok(()) => info!(%vip, "VIP removed"),
            Err(error) => warn!(%vip, %error, "could not remove VIP"),
        }
    }
    let gateways = std::mem::take(gateways);
    let Some(ifindex) = server else {
        return;
    };
    for (address, prefix) in gateways {
        if let Err(error) = netlink.remove_address(ifindex, address, prefix) {
            warn!(%address, %error, "could not remove the NAT gateway address");
        }
    }
}
