//! The addresses the director holds on its interfaces: the VIPs on the client side (IPv4 as a
//! /32, IPv6 as a /128 added without duplicate address detection, so it answers at once; the
//! kernel answers ARP and NDP for them) and, under `[ha]` with NAT, the real servers' gateways
//! (`ha.server_address`, `ha.server_address6`) on the server side. Added while serving, removed
//! otherwise, retried on every tick; removed at shutdown.
//!
//! Every address the director adds carries its mark (`IFA_PROTO` =
//! [`crate::netlink::DIRECTOR_ADDRESS_PROTOCOL`]), so a run tells what a killed run left from
//! what the operator configured. At start-up, with or without `[ha]`,
//! [`remove_leftover_addresses`] removes every marked address on the served interfaces at once, VIPs no longer in the file included: a
//! leftover VIP would draw clients to a host whose kernel resets their connections until this
//! run serves, so it is dropped, and added again (marked) when this run serves it, like any
//! VIP. An address without the mark that equals a VIP or a gateway is the operator's: never
//! removed, logged once. Only addresses this run added, or a leftover it could not remove, are
//! ever removed later.
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
use crate::config::{Config, HaConfig};
use crate::netlink::{AddressChange, Netlink};

/// What [`remove_leftover_addresses`] leaves the run in charge of.
#[derive(Debug, Default)]
pub(super) struct Leftovers {
    /// Marked VIPs it could not remove: held as if this run had added them, so they are
    /// removed later (when not wanted, at the latest at a clean stop).
    pub(super) vips: BTreeSet<IpAddr>,
    /// Marked NAT gateway addresses it could not remove, likewise.
    pub(super) server_addresses: BTreeSet<(IpAddr, u8)>,
    /// VIPs and gateway addresses already there without the mark: the operator's, logged once.
    pub(super) operators: BTreeSet<IpAddr>,
}

/// Removes every address carrying the director's mark from the served interfaces (the first
/// is the client side, the second the NAT server side): what a killed run left, including VIPs
/// the configuration no longer has. Lists the unmarked ones that equal a VIP or gateway as the
/// operator's. Best effort: an interface whose addresses cannot be listed is skipped, logged.
pub(super) fn remove_leftover_addresses(
    netlink: &mut Netlink,
    interfaces: &[Interface],
    config: &Config,
) -> Leftovers {
    let vips: BTreeSet<IpAddr> = config.services.iter().map(|service| service.vip).collect();
    let gateways = config.ha.as_ref().map(server_addresses).unwrap_or_default();
    let mut leftovers = Leftovers::default();
    for (side, interface) in interfaces.iter().enumerate() {
        let listed = match netlink.listed_addresses(interface.ifindex) {
            Ok(listed) => listed,
            Err(error) => {
                warn!(
                    interface = %interface.name,
                    %error,
                    "could not list addresses: what a killed run left there stays"
                );
                continue;
            }
        };
        for listed in listed {
            let address = listed.address;
            let held = (address, listed.prefix_len);
            let is_vip = side == 0 && vips.contains(&address);
            let is_gateway = side == 1 && gateways.iter().any(|&(gateway, _)| gateway == address);
            if !listed.is_directors() {
                if is_vip || is_gateway {
                    note_operators(
                        &mut leftovers.operators,
                        address,
                        &interface.name,
                        config.ha.is_some(),
                    );
                }
                continue;
            }
            match netlink.remove_address(interface.ifindex, address, listed.prefix_len) {
                Ok(()) => warn!(
                    %address,
                    interface = %interface.name,
                    "removed an address a killed director left (it carries the director's mark); \
                     this run adds back what it serves"
                ),
                Err(error) => {
                    warn!(%address, %error, "could not remove an address a killed director left");
                    if is_vip {
                        leftovers.vips.insert(address);
                    } else if is_gateway {
                        leftovers.server_addresses.insert(held);
                    }
                }
            }
        }
    }
    leftovers
}

/// Records `address` as the operator's, logging it the first time (`ha`: under `[ha]`, where
/// it answers for the VIP even as backup).
fn note_operators(operators: &mut BTreeSet<IpAddr>, address: IpAddr, interface: &str, ha: bool) {
    if !operators.insert(address) {
        return;
    }
    if ha {
        warn!(
            %address,
            interface,
            "already on the interface without the director's mark: the operator's, never \
             removed, so this host answers for it even as VRRP backup"
        );
    } else {
        info!(
            %address,
            interface,
            "already on the interface without the director's mark: the operator's, left there \
             at stop"
        );
    }
}

impl Director {
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
        let ha = self.config.ha.is_some();
        sync_vips(
            &mut self.netlink,
            client,
            (&mut self.added_vips, &mut self.operator_addresses),
            &wanted,
            ha,
        );
        let wanted: BTreeSet<(IpAddr, u8)> = match &self.config.ha {
            Some(ha) if self.serving() => server_addresses(ha).into_iter().collect(),
            _ => BTreeSet::new(),
        };
        sync_gateways(
            &mut self.netlink,
            self.shared.interfaces.get(1),
            (
                &mut self.added_server_addresses,
                &mut self.operator_addresses,
            ),
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
/// by the next call). A wanted VIP already there is the operator's (start-up removed what a
/// killed run left): never taken charge of, noted in `operators` and logged once (`ha`: under
/// `[ha]`).
pub(super) fn sync_vips(
    netlink: &mut Netlink,
    client: &Interface,
    (held, operators): (&mut BTreeSet<IpAddr>, &mut BTreeSet<IpAddr>),
    wanted: &BTreeSet<IpAddr>,
    ha: bool,
) {
    for &vip in wanted {
        if held.contains(&vip) {
            continue;
        }
        match netlink.add_address(client.ifindex, vip, host_prefix(vip)) {
            Ok(AddressChange::Added) => {
                info!(%vip, interface = %client.name, "VIP added");
                held.insert(vip);
                operators.remove(&vip);
            }
            Ok(AddressChange::AlreadyPresent) => note_operators(operators, vip, &client.name, ha),
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
    (held, operators): (&mut BTreeSet<(IpAddr, u8)>, &mut BTreeSet<IpAddr>),
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
            // Only `[ha]` has gateway addresses.
            Ok(AddressChange::AlreadyPresent) => {
                note_operators(operators, address, &server.name, true);
            }
            Ok(AddressChange::Added) => {
                info!(%address, interface = %server.name, "NAT gateway address added");
                held.insert((address, prefix));
                operators.remove(&address);
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
