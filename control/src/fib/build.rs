//! The model into an immutable [`Fib`]: for each main-table prefix, IPv4 or IPv6, its
//! lowest-metric route,
//! restricted to the interfaces the director serves; next hops given neighbour slots through
//! [`NeighbourSlots`]; routes through the same next hops shared; and, as `dataplane::fib`'s
//! `Route::OnLink` asks, a host route for each on-link destination control was asked to pin
//! (the director pins its on-link TUN real servers) and for each gateway the
//! routes use, so that its lookup gives its own neighbour slot instead of `OnLinkUnresolved`.
//! Other neighbours the kernel knows get no slot: every slot is kept fresh once a second, and
//! that would keep every ARP entry on the segment alive.
//!
//! Both families go through the same steps into one builder (`FibBuilder::add` picks the
//! prefix table); a host route is a /32 or a /128. An IPv6 gateway is usually link-local
//! (`fe80::1`, learnt from router advertisements): it gets a slot keyed by its interface like
//! any other, but no host route, since the parser leaves out the `fe80::/64` prefixes.
//!
//! What it must not do: talk to the kernel or write the neighbour array (the mirror publishes
//! the slots it acquires here, and releases the ones no build references any more).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use dataplane::fib::{Fib, FibBuilder, NeighbourSlots, NextHop, Route, RouteId};

use super::model::Model;
use super::parse::{NexthopObject, Path, RouteAction};

/// What one build found, for the counters and the rate-limited log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildCounts {
    /// Prefixes in the snapshot.
    pub prefixes: u64,
    /// IPv6 prefixes in the snapshot (of `prefixes`).
    pub prefixes_v6: u64,
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
    pub referenced: HashSet<(u32, IpAddr)>,
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
    pinned: &BTreeSet<(u32, IpAddr)>,
    slots: &mut NeighbourSlots,
) -> Built {
    let mut builder = FibBuilder::new();
    let mut counts = BuildCounts::default();
    let mut referenced = HashSet::new();
    let mut shared: HashMap<Vec<(IpAddr, u32, u32)>, RouteId> = HashMap::new();
    let mut refused: HashMap<&'static str, RouteId> = HashMap::new();
    // (network, prefix length, the on-link interface if it is a connected prefix), for the
    // pinned host routes' longest-match check.
    let mut prefixes: Vec<(IpAddr, u8, Option<u32>)> = Vec::new();
    let mut previous: Option<(IpAddr, u8)> = None;

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
                    match slots.acquire(path.ifindex, gateway) {
                        Ok(neighbour) => {
                            referenced.insert((path.ifindex, gateway));
                            key.push((gateway, path.ifindex, path.weight));
                            next_hops.push(NextHop {
                                address: gateway,
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
        // Lengths are at most 32 or 128 (the parser refuses others), so this cannot fail.
        let _ = builder.add(destination, u32::from(prefix_len), route);
    }

    // Gateways are neighbours this snapshot resolves anyway: give them host routes as well.
    let mut on_link: BTreeSet<(u32, IpAddr)> = referenced.iter().copied().collect();
    on_link.extend(pinned.iter().copied());
    for (ifindex, address) in on_link {
        // A pinned destination keeps its slot even while no route reaches it.
        let Ok(neighbour) = slots.acquire(ifindex, address) else {
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
                address,
                neighbour,
                ifindex,
                weight: 1,
            }]),
        );
        let host = if address.is_ipv4() { 32 } else { 128 };
        let _ = builder.add(address, host, route);
    }
    let fib = builder.build();
    counts.routes = fib.route_count() as u64;
    counts.prefixes = (fib.prefix_count_v4() + fib.prefix_count_v6()) as u64;
    counts.prefixes_v6 = fib.prefix_count_v6() as u64;
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

/// `address` with the bits past `prefix_len` cleared.
fn network(address: IpAddr, prefix_len: u8) -> IpAddr {
    match address {
        IpAddr::V4(address) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((address.to_bits() & mask).into())
        }
        IpAddr::V6(address) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((address.to_bits() & mask).into())
        }
    }
}

/// The interface of the connected prefix that is `address`'s longest match, if that match is
/// a connected prefix. A linear scan: run only for pinned destinations, once per build.
fn on_link_interface(prefixes: &[(IpAddr, u8, Option<u32>)], address: IpAddr) -> Option<u32> {
    prefixes
        .iter()
        .filter(|&&(net, len, _)| network(address, len) == net)
        .max_by_key(|&&(_, len, _)| len)
        .and_then(|&(_, _, on_link)| on_link)
}
