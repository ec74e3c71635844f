//! The mirror's copy of the kernel's tables, as the last dump and the notifications since left
//! them: links, addresses, main-table routes, nexthop objects and neighbours, IPv4 and IPv6
//! side by side (keys are `IpAddr`; `BTreeMap` orders every IPv4 route before the IPv6 ones).
//!
//! What it must not do: talk to the kernel or decide anything about forwarding (the builder
//! does); it only applies [`Event`]s.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::parse::{Change, Event, NeighbourEntry, NexthopObject, RouteAction};

/// Neighbour states whose link-layer address is usable (REACHABLE, STALE, DELAY, PROBE,
/// NOARP, PERMANENT).
pub const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
/// States in which the kernel holds a MAC it has not confirmed lately (STALE, DELAY, PROBE).
pub const NUD_UNCONFIRMED: u16 = 0x04 | 0x08 | 0x10;
/// `NUD_FAILED`.
pub const NUD_FAILED: u16 = 0x20;

/// A route's identity in the main table: destination, prefix length, metric.
pub type RouteKey = (IpAddr, u8, u32);

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Interface index -> administratively up.
    pub links: HashMap<u32, bool>,
    /// Interface index -> its addresses and prefix lengths.
    pub addresses: HashMap<u32, Vec<(IpAddr, u8)>>,
    /// Main-table routes, ordered so that builds are deterministic.
    pub routes: BTreeMap<RouteKey, RouteAction>,
    /// Nexthop objects by id.
    pub nexthops: BTreeMap<u32, NexthopObject>,
    /// Neighbours by (interface, address).
    pub neighbours: HashMap<(u32, IpAddr), NeighbourEntry>,
}

/// Which part of the model an event changed: routes (rebuild the FIB) or a neighbour (write
/// its slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touched {
    /// Links, addresses, routes or nexthop objects.
    Routes,
    /// The neighbour at (interface, address).
    Neighbour(u32, IpAddr),
}

impl Model {
    /// Applies one event.
    pub fn apply(&mut self, event: Event) -> Touched {
        match event {
            Event::Route(change, route) => {
                let key = (route.destination, route.prefix_len, route.metric);
                match change {
                    Change::New => {
                        self.routes.insert(key, route.action);
                    }
                    Change::Delete => self.delete_route(key, &route.action),
                }
                Touched::Routes
            }
            Event::Nexthop(change, id, object) => {
                match change {
                    Change::New => {
                        self.nexthops.insert(id, object);
                    }
                    Change::Delete => {
                        // The kernel removes the routes through a deleted object without a
                        // notification for each.
                        self.nexthops.remove(&id);
                        self.routes
                            .retain(|_, action| *action != RouteAction::Object(id));
                    }
                }
                Touched::Routes
            }
            Event::Neighbour(change, entry) => {
                let key = (entry.ifindex, entry.address);
                match change {
                    Change::New => self.neighbours.insert(key, entry),
                    Change::Delete => self.neighbours.remove(&key),
                };
                Touched::Neighbour(entry.ifindex, entry.address)
            }
            Event::Address(change, ifindex, address, prefix_len) => {
                let list = self.addresses.entry(ifindex).or_default();
                list.retain(|&(a, _)| a != address);
                if change == Change::New {
                    list.push((address, prefix_len));
                }
                Touched::Routes
            }
            Event::Link(change, ifindex, up) => {
                match change {
                    Change::New => self.links.insert(ifindex, up),
                    Change::Delete => {
                        self.addresses.remove(&ifindex);
                        self.links.remove(&ifindex)
                    }
                };
                Touched::Routes
            }
        }
    }

    /// Removes a route, or for IPv6 one leg of it: Linux keeps an IPv6 multipath route as
    /// sibling routes, and `ip -6 route del PREFIX via GW` deletes one sibling with a
    /// notification naming only that leg (an IPv4 multipath route is one object, deleted whole).
    fn delete_route(&mut self, key: RouteKey, action: &RouteAction) {
        if let (IpAddr::V6(_), RouteAction::Paths(deleted)) = (key.0, action) {
            if let ([leg], Some(RouteAction::Paths(legs))) =
                (deleted.as_slice(), self.routes.get_mut(&key))
            {
                legs.retain(|path| (path.gateway, path.ifindex) != (leg.gateway, leg.ifindex));
                if !legs.is_empty() {
                    return;
                }
            }
        }
        self.routes.remove(&key);
    }

    /// Whether interface `ifindex` is known and up (an interface not yet seen counts as up, so
    /// a route is not lost to the order of a dump).
    pub fn link_up(&self, ifindex: u32) -> bool {
        self.links.get(&ifindex).copied().unwrap_or(true)
    }
}
