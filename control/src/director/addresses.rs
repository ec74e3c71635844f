//! The addresses the director holds on its interfaces: the VIPs on the client side (IPv4 as a
//! /32, IPv6 as a /128 added without duplicate address detection, so it answers at once; the
//! kernel answers ARP and NDP for them) and, under `[ha]` with NAT, the real servers' gateways
//! (`ha.server_address`, `ha.server_address6`) on the server side. Added while serving, removed
//! otherwise, retried on every tick; removed at shutdown.
//!
//! Every address the director adds carries its mark (`IFA_PROTO` =
//! [`crate::netlink::DIRECTOR_ADDRESS_PROTOCOL`]), so a run tells what a killed run left from
//! what the operator configured. At start-up, with or without `[ha]`, [`remove_leftover_addresses`] removes every
//! marked address on the served interfaces at once, VIPs no longer in the file included: a
//! leftover VIP would draw clients to a host whose kernel resets their connections until this
//! run serves, so it is dropped, and added again (marked) when this run serves it, like any
//! VIP. An address without the mark that equals a VIP or a gateway is the operator's: never
//! removed, logged once. Only addresses this run added, or a leftover it could not remove, are
//! ever removed later.
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
                    note_operators(&mut leftovers.operators, address, &interface.name, config);
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

/// Records `address` as the operator's, logging it the first time.
fn note_operators(
    operators: &mut BTreeSet<IpAddr>,
    address: IpAddr,
    interface: &str,
    config: &Config,
) {
    if !operators.insert(address) {
        return;
    }
    if config.ha.is_some() {
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
    /// longer has.
    pub(super) fn sync_vips(&mut self) {
        let wanted: BTreeSet<IpAddr> = if self.serving() {
            self.vips().into_iter().collect()
        } else {
            BTreeSet::new()
        };
        let interface = &self.shared.interfaces[0];
        for &vip in &wanted {
            if self.added_vips.contains(&vip) {
                continue;
            }
            match self
                .netlink
                .add_address(interface.ifindex, vip, host_prefix(vip))
            {
                Ok(AddressChange::Added) => {
                    info!(%vip, interface = %interface.name, "VIP added");
                    self.added_vips.insert(vip);
                    self.operator_addresses.remove(&vip);
                }
                // Leftovers were removed at start-up: what is there now is the operator's.
                Ok(AddressChange::AlreadyPresent) => note_operators(
                    &mut self.operator_addresses,
                    vip,
                    &interface.name,
                    &self.config,
                ),
                Err(error) => warn!(%vip, %error, "could not add VIP"),
            }
        }
        let unwanted: Vec<IpAddr> = self.added_vips.difference(&wanted).copied().collect();
        for vip in unwanted {
            match self
                .netlink
                .remove_address(self.home_ifindex, vip, host_prefix(vip))
            {
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

    /// Holds the NAT real servers' gateways (`ha.server_address`, `ha.server_address6`) on
    /// the server side while serving, announcing each with gratuitous ARP or an unsolicited
    /// neighbour advertisement when it arrives, so their replies follow a failover; gives them
    /// up otherwise.
    fn sync_server_address(&mut self) {
        let wanted: BTreeSet<(IpAddr, u8)> = match &self.config.ha {
            Some(ha) if self.serving() => server_addresses(ha).into_iter().collect(),
            _ => BTreeSet::new(),
        };
        if wanted == self.added_server_addresses {
            return;
        }
        let Some(server) = self.shared.interfaces.get(1) else {
            return;
        };
        let unwanted: Vec<(IpAddr, u8)> = self
            .added_server_addresses
            .difference(&wanted)
            .copied()
            .collect();
        for (address, prefix) in unwanted {
            match self.netlink.remove_address(server.ifindex, address, prefix) {
                Ok(()) => {
                    info!(%address, interface = %server.name, "NAT gateway address removed");
                    self.added_server_addresses.remove(&(address, prefix));
                }
                Err(error) => warn!(%address, %error, "could not remove the NAT gateway address"),
            }
        }
        for &(address, prefix) in wanted.difference(&self.added_server_addresses.clone()) {
            match self.netlink.add_address(server.ifindex, address, prefix) {
                Ok(AddressChange::AlreadyPresent) => note_operators(
                    &mut self.operator_addresses,
                    address,
                    &server.name,
                    &self.config,
                ),
                Ok(AddressChange::Added) => {
                    info!(%address, interface = %server.name, "NAT gateway address added");
                    self.added_server_addresses.insert((address, prefix));
                    self.operator_addresses.remove(&address);
                    if let Err(error) =
                        crate::ha::vrrp::announce_addresses(&server.name, &[address])
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
            (self.sides.server, &mut self.added_server_addresses),
        );
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
fn server_addresses(config: &HaConfig) -> Vec<(IpAddr, u8)> {
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
