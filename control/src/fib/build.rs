//! The model into an immutable [`Fib`]: for each main-table prefix its lowest-metric route,
//! restricted to the interfaces the director serves; next hops given neighbour slots through
//! [`NeighbourSlots`]; routes through the same next hops shared; and, as `dataplane::fib`'s
//! `Route::OnLink` asks, a host route for each on-link destination control was asked to pin
//! (the director pins its on-link TUN real servers) and for each gateway the
//! routes use, so that its lookup gives its own neighbour slot instead of `OnLinkUnresolved`.
//! Other neighbours the kernel knows get no slot: every slot is kept fresh once a second, and
//! that would keep every ARP entry on the segment alive.
//!
//! What it must not do: talk to the kernel or write the neighbour array (the mirror publishes
//! the slots it acquires here, and releases the ones no build references any more).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use dataplane::fib::{Fib, FibBuilder, NeighbourSlots, NextHop, Route, RouteId};

use super::model::Model;
use super::parse::{NexthopObject, Path, RouteAction};

/// What one build found, for the counters and the rate-limited log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildCounts {
    /// Prefixes in the snapshot.
    pub prefixes: u64,
    /// Distinct routes (shared next-hop sets and refusal kinds).
    pub routes: u64,
    /// Prefixes whose every next hop leaves by an interface the director does not serve.
    pub not_served: u64,
    /// Multipath legs left out because they leave by an unserved interface.
    pub legs_not_served: u64,
    /// `blackhole` prefixes.
    pub blackhole: u64,
    /// `unreachable` prefixes.
    pub unreachable: u64,
    /// `prohibit` prefixes.
    pub prohibit: u64,
    /// Routes naming a nexthop object the model does not hold (left out).
    pub missing_nexthop_object: u64,
    /// Next hops left out because every neighbour slot is taken.
    pub slots_full: u64,
}

/// A built snapshot and the neighbours it references.
#[derive(Debug)]
pub struct Built {
    /// The snapshot.
    pub fib: Fib,
    /// Every (interface, address) whose slot the snapshot's routes name.
    pub referenced: HashSet<(u32, Ipv4Addr)>,
    /// What it found.
    pub counts: BuildCounts,
}

/// What a prefix resolved to before it becomes a [`Route`].
enum Resolved {
    Gateways(Vec<Path>),
    OnLink(u32),
    Refused(Route),
}

/// Builds a snapshot from `model`: see the module docs. `served` holds the interfaces the
/// director serves; `pinned` the on-link destinations to give host routes.
pub fn build(
    model: &Model,
    served: &HashSet<u32>,
    pinned: &BTreeSet<(u32, Ipv4Addr)>,
    slots: &mut NeighbourSlots,
) -> Built {
    let mut builder = FibBuilder::new();
    let mut counts = BuildCounts::default();
    let mut referenced = HashSet::new();
    let mut shared: HashMap<Vec<(Ipv4Addr, u32, u32)>, RouteId> = HashMap::new();
    let mut refused: HashMap<&'static str, RouteId> = HashMap::new();
    // (network, prefix length, the on-link interface if it is a connected prefix), for the
    // pinned host routes' longest-match check.
    let mut prefixes: Vec<(u32, u8, Option<u32>)> = Vec::new();
    let mut previous: Option<(Ipv4Addr, u8)> = None;

    // Keys are ordered by (destination, length, metric): the first of a prefix wins.
    for (&(destination, prefix_len, _), action) in &model.routes {
        if previous == Some((destination, prefix_len)) {
            continue;
        }
        // A route that resolves to nothing (every path down) leaves the prefix to the next
        // metric's route, as the kernel's lookup would.
        let Some(resolved) = resolve(model, served, action, &mut counts) else {
            continue;
        };
        previous = Some((destination, prefix_len));
        let route = match resolved {
            Resolved::Refused(route) => {
                let (name, counter) = match route {
                    Route::Blackhole => ("blackhole", &mut counts.blackhole),
                    Route::Unreachable => ("unreachable", &mut counts.unreachable),
                    Route::Prohibit => ("prohibit", &mut counts.prohibit),
                    _ => ("not served", &mut counts.not_served),
                };
                *counter += 1;
                prefixes.push((network(destination, prefix_len), prefix_len, None));
                *refused
                    .entry(name)
                    .or_insert_with(|| add_route(&mut builder, &route))
            }
            Resolved::OnLink(ifindex) => {
                prefixes.push((network(destination, prefix_len), prefix_len, Some(ifindex)));
                *refused
                    .entry("on-link")
                    .or_insert_with(|| add_route(&mut builder, &Route::OnLink))
            }
            Resolved::Gateways(paths) => {
                let mut next_hops = Vec::new();
                let mut key = Vec::new();
                for path in paths {
                    let Some(gateway) = path.gateway else {
                        continue;
                    };
                    match slots.acquire(path.ifindex, IpAddr::V4(gateway)) {
                        Ok(neighbour) => {
                            referenced.insert((path.ifindex, gateway));
                            key.push((gateway, path.ifindex, path.weight));
                            next_hops.push(NextHop {
                                address: IpAddr::V4(gateway),
                                neighbour,
                                ifindex: path.ifindex,
                                weight: path.weight,
                            });
                        }
                        Err(_) => counts.slots_full += 1,
                    }
                }
                if next_hops.is_empty() {
                    continue;
                }
                prefixes.push((network(destination, prefix_len), prefix_len, None));
                key.sort_unstable();
                *shared
                    .entry(key)
                    .or_insert_with(|| add_route(&mut builder, &Route::Forward(next_hops)))
            }
        };
        counts.prefixes += 1;
        // Lengths are at most 32 (the parser refuses others), so this cannot fail.
        let _ = builder.add_v4(destination, u32::from(prefix_len), route);
    }

    // Gateways are neighbours this snapshot resolves anyway: give them host routes as well.
    let mut on_link: BTreeSet<(u32, Ipv4Addr)> = referenced.iter().copied().collect();
    on_link.extend(pinned.iter().copied());
    for (ifindex, address) in on_link {
        // A pinned destination keeps its slot even while no route reaches it.
        let Ok(neighbour) = slots.acquire(ifindex, IpAddr::V4(address)) else {
            counts.slots_full += 1;
            continue;
        };
        referenced.insert((ifindex, address));
        if on_link_interface(&prefixes, address) != Some(ifindex) || !served.contains(&ifindex) {
            continue;
        }
        let route = add_route(
            &mut builder,
            &Route::Forward(vec![NextHop {
                address: IpAddr::V4(address),
                neighbour,
                ifindex,
                weight: 1,
            }]),
        );
        counts.prefixes += 1;
        let _ = builder.add_v4(address, 32, route);
    }
    let fib = builder.build();
    counts.routes = fib.route_count() as u64;
    Built {
        fib,
        referenced,
        counts,
    }
}

fn add_route(builder: &mut FibBuilder, route: &Route) -> RouteId {
    // Next hops here always have weights of at least 1 and at most MAX_GROUP_NEXT_HOPS
    // members (a kernel route has fewer), so the builder cannot refuse them.
    builder.add_route(route).unwrap_or_else(|_| {
        builder
            .add_route(&Route::Unreachable)
            .expect("refusals always build")
    })
}

/// The next hops a route action leads to, on served and up interfaces; `None` to leave the
/// prefix out (no usable next hop, or a nexthop object not seen yet).
fn resolve(
    model: &Model,
    served: &HashSet<u32>,
    action: &RouteAction,
    counts: &mut BuildCounts,
) -> Option<Resolved> {
    let paths = match action {
        RouteAction::Blackhole => return Some(Resolved::Refused(Route::Blackhole)),
        RouteAction::Unreachable => return Some(Resolved::Refused(Route::Unreachable)),
        RouteAction::Prohibit => return Some(Resolved::Refused(Route::Prohibit)),
        RouteAction::Paths(paths) => paths.clone(),
        RouteAction::Object(id) => match model.nexthops.get(id) {
            None => {
                counts.missing_nexthop_object += 1;
                return None;
            }
            Some(NexthopObject::Blackhole) => return Some(Resolved::Refused(Route::Blackhole)),
            Some(NexthopObject::Single(path)) => vec![*path],
            Some(NexthopObject::Group(members)) => members
                .iter()
                .filter_map(|&(member, weight)| match model.nexthops.get(&member) {
                    Some(NexthopObject::Single(path)) => Some(Path { weight, ..*path }),
                    _ => None,
                })
                .collect(),
        },
    };
    let up: Vec<Path> = paths
        .into_iter()
        .filter(|path| model.link_up(path.ifindex))
        .collect();
    if up.is_empty() {
        return None;
    }
    let (mine, theirs): (Vec<Path>, Vec<Path>) = up
        .into_iter()
        .partition(|path| served.contains(&path.ifindex));
    if mine.is_empty() {
        return Some(Resolved::Refused(Route::NotServed));
    }
    counts.legs_not_served += theirs.len() as u64;
    if mine.iter().any(|path| path.gateway.is_some()) {
        Some(Resolved::Gateways(mine))
    } else {
        Some(Resolved::OnLink(mine[0].ifindex))
    }
}

fn network(address: Ipv4Addr, prefix_len: u8) -> u32 {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    address.to_bits() & mask
}

/// The interface of the connected prefix that is `address`'s longest match, if that match is
/// a connected prefix. A linear scan: run only for pinned destinations, once per build.
fn on_link_interface(prefixes: &[(u32, u8, Option<u32>)], address: Ipv4Addr) -> Option<u32> {
    prefixes
        .iter()
        .filter(|&&(net, len, _)| network(address, len) == net)
        .max_by_key(|&&(_, len, _)| len)
        .and_then(|&(_, _, on_link)| on_link)
}
