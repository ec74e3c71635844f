//! The link-layer addresses the data plane needs, read from the kernel's tables: each real
//! server's MAC, fallback servers' included (on the client-side interface for DR and TUN, on
//! the server side for NAT) and,
//! when a service uses NAT, the MAC of the client side's default gateways (IPv4 and, with an
//! IPv6 NAT service, IPv6), where NAT replies go.
//!
//! Control reads them once a second and at start-up and reload; an address the kernel does not
//! know yet is solicited (the kernel ARPs for it) and the frames that need it are dropped and
//! counted as `neighbour_unresolved` until it resolves. Nothing here runs on a worker.
//!
//! Both families go through the kernel: ARP for IPv4 real servers, the IPv6 neighbour table
//! (NDP, RFC 4861) for IPv6 ones, read from one dump of every family and solicited with the same
//! request ([`resolve`] does one address of either family, bounded in time). Missing addresses
//! are `IpAddr`s.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use dataplane::Forwarding;
use tracing::warn;

use crate::config::Config;
use crate::netlink::{Netlink, NetlinkError};

/// The interfaces neighbours live on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sides {
    /// The client side (VIPs, DR and TUN real servers, the NAT gateway).
    pub client: u32,
    /// The server side (NAT real servers), if the director has one.
    pub server: Option<u32>,
    /// TUN real servers' next hops come from the routing table mirror (`director/routing.rs`),
    /// which finds and keeps their MACs, routed or on-link: not resolved here.
    pub tun_by_route: bool,
}

impl Sides {
    /// Where the real servers of a service with this forwarding method are.
    fn of(self, forwarding: Forwarding) -> u32 {
        match (forwarding, self.server) {
            (Forwarding::Nat, Some(server)) => server,
            _ => self.client,
        }
    }
}

/// What is resolved now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Neighbours {
    /// The MAC of every real server that has one (configured or from the neighbour table).
    pub backends: HashMap<IpAddr, [u8; 6]>,
    /// The client side's default gateway and its MAC once resolved; `None` when no service
    /// uses NAT or there is no default route out of the client side.
    pub gateway: Option<(Ipv4Addr, Option<[u8; 6]>)>,
    /// The client side's IPv6 default gateway (often link-local) and its MAC once resolved;
    /// `None` when no NAT service has an IPv6 VIP or there is no IPv6 default route.
    pub gateway6: Option<(Ipv6Addr, Option<[u8; 6]>)>,
}

impl Neighbours {
    /// The NAT replies' next hop, if resolved: the IPv4 default gateway's MAC, else (an
    /// IPv6-only client side) the IPv6 one's.
    pub fn gateway_mac(&self) -> Option<[u8; 6]> {
        self.gateway
            .and_then(|(_, mac)| mac)
            .or_else(|| self.gateway6_mac())
    }

    /// The IPv6 default gateway's MAC, if resolved.
    pub fn gateway6_mac(&self) -> Option<[u8; 6]> {
        self.gateway6.and_then(|(_, mac)| mac)
    }
}

/// Reads what is resolved now; returns it and the (interface, address) pairs still missing.
pub fn lookup(
    netlink: &mut Netlink,
    sides: Sides,
    config: &Config,
) -> (Neighbours, Vec<(u32, IpAddr)>) {
    let dump = |netlink: &mut Netlink, ifindex: u32| {
        netlink.neighbours(ifindex).unwrap_or_else(|error| {
            warn!(%error, ifindex, "neighbour table dump failed");
            HashMap::new()
        })
    };
    let client_table = dump(netlink, sides.client);
    let server_table = sides.server.map(|server| dump(netlink, server));
    let mut found = Neighbours::default();
    let mut missing = Vec::new();
    for service in &config.services {
        if sides.tun_by_route && service.forwarding == Forwarding::Tunnel {
            continue;
        }
        let ifindex = sides.of(service.forwarding);
        let known = match &server_table {
            Some(table) if Some(ifindex) == sides.server => table,
            _ => &client_table,
        };
        // The fallback too: it must be ready the moment the last real server goes down.
        for backend in service.backends.iter().chain(&service.fallback) {
            let address = backend.address;
            match backend.mac.or_else(|| known.get(&address).copied()) {
                Some(mac) => {
                    found.backends.insert(backend.address, mac);
                }
                None => missing.push((ifindex, address)),
            }
        }
    }
    if config.uses(Forwarding::Nat) {
        match netlink.default_gateway(sides.client) {
            Ok(Some(gateway)) => {
                let mac = client_table.get(&IpAddr::V4(gateway)).copied();
                if mac.is_none() {
                    missing.push((sides.client, IpAddr::V4(gateway)));
                }
                found.gateway = Some((gateway, mac));
            }
            Ok(None) => {}
            Err(error) => warn!(%error, "could not read the default route"),
        }
    }
    let nat6 = config
        .services
        .iter()
        .any(|service| service.forwarding == Forwarding::Nat && service.vip.is_ipv6());
    if nat6 {
        match netlink.default_gateway_v6(sides.client) {
            Ok(Some(gateway)) => {
                let mac = client_table.get(&IpAddr::V6(gateway)).copied();
                if mac.is_none() {
                    missing.push((sides.client, IpAddr::V6(gateway)));
                }
                found.gateway6 = Some((gateway, mac));
            }
            Ok(None) => {}
            Err(error) => warn!(%error, "could not read the IPv6 default route"),
        }
    }
    missing.sort_unstable();
    missing.dedup();
    (found, missing)
}

/// Asks the kernel to ARP for each IPv4 address and send a neighbour solicitation for each IPv6
/// one.
pub fn solicit(netlink: &mut Netlink, missing: &[(u32, IpAddr)]) {
    for &(ifindex, address) in missing {
        if let Err(error) = netlink.solicit_neighbour(ifindex, address) {
            warn!(%address, %error, "could not solicit neighbour");
        }
    }
}

/// Solicits what is missing and waits up to `wait` for it. `interrupted(pause)` does the
/// waiting between two lookups: it waits up to `pause` and returns true to end the wait early
/// (a stop signal at start-up, an HA event during a reload); then the second value is true.
pub fn resolve_waiting(
    netlink: &mut Netlink,
    sides: Sides,
    config: &Config,
    wait: Duration,
    mut interrupted: impl FnMut(Duration) -> bool,
) -> (Neighbours, bool) {
    let deadline = Instant::now() + wait;
    let mut solicited = false;
    loop {
        let (found, missing) = lookup(netlink, sides, config);
        if missing.is_empty() {
            return (found, false);
        }
        if !solicited {
            solicit(netlink, &missing);
            solicited = true;
        }
        if Instant::now() >= deadline {
            let addresses: Vec<IpAddr> = missing.iter().map(|&(_, address)| address).collect();
            warn!(
                missing = ?addresses,
                "neighbours without a MAC address yet; frames to them are dropped until they resolve"
            );
            return (found, false);
        }
        if interrupted(Duration::from_millis(20)) {
            return (found, true);
        }
    }
}

/// Pause between two looks at the neighbour table while [`resolve`] waits.
const RESOLVE_POLL: Duration = Duration::from_millis(20);

/// The MAC of `address` (IPv4 or IPv6) on interface `ifindex`: looked up in the kernel's
/// neighbour table; if missing, solicited once and looked up again every 20 ms until it resolves
/// or `wait` has passed (then `None`: the kernel keeps trying, a later lookup may find it).
pub fn resolve(
    netlink: &mut Netlink,
    ifindex: u32,
    address: IpAddr,
    wait: Duration,
) -> Result<Option<[u8; 6]>, NetlinkError> {
    let deadline = Instant::now() + wait;
    let mut solicited = false;
    loop {
        if let Some(mac) = netlink.neighbour_mac(ifindex, address)? {
            return Ok(Some(mac));
        }
        if !solicited {
            netlink.solicit_neighbour(ifindex, address)?;
            solicited = true;
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(RESOLVE_POLL.min(deadline - now));
    }
}
