//! Next hops from the routing view ([`crate::service::Routing`]): the MAC a NAT reply or a TUN
//! packet goes to, from the next hop its connection entry remembers ([`ConnNextHop`]) or, when
//! that is unknown or gone, from one route lookup whose result the caller stores back.
//!
//! What this module must not do: touch the connection table or frames (callers store what it
//! returns), or run without a [`Routing`] (the table's absence keeps the old behaviour, decided
//! by the callers).

use std::net::IpAddr;

use crate::conntrack::ConnNextHop;
use crate::counters::DropReason;
use crate::fib::{Neighbour, NeighbourId, NoRouteKind};
use crate::service::Routing;
use crate::wire::MacAddr;

/// The drop reason counting a lookup that found no next hop of `kind` (same names).
#[inline]
pub(super) const fn no_route_drop(kind: NoRouteKind) -> DropReason {
    match kind {
        NoRouteKind::NoMatch => DropReason::NoRoute,
        NoRouteKind::Blackhole => DropReason::RouteBlackhole,
        NoRouteKind::Unreachable => DropReason::RouteUnreachable,
        NoRouteKind::Prohibit => DropReason::RouteProhibit,
        NoRouteKind::NotServed => DropReason::RouteNotServed,
        NoRouteKind::OnLinkUnresolved => DropReason::RouteOnlinkUnresolved,
    }
}

/// The neighbour the route to `address` gives (ECMP: `flow_hash` picks, stably), if it leaves
/// by the client side.
#[inline]
pub(super) fn route(
    routing: &Routing,
    address: IpAddr,
    flow_hash: u64,
) -> Result<NeighbourId, DropReason> {
    let next_hop = routing
        .fib
        .lookup(address, flow_hash)
        .map_err(|no_route| no_route_drop(no_route.kind))?;
    if next_hop.ifindex != routing.client_ifindex {
        return Err(DropReason::RouteNotServed);
    }
    Ok(next_hop.neighbour)
}

/// The MAC to send to, and the next hop to remember: `remembered` if it still names a
/// neighbour and was found in this FIB snapshot, else the route to `address` looked up again
/// (an unknown next hop, one from an older snapshot, or a neighbour slot released since:
/// [`Neighbour::Gone`]). An unresolved or failed neighbour is
/// `NeighbourUnresolved`.
///
/// Out of line: inlined into the per-frame path it cost established DR 11 instructions a frame
/// and a routeless NAT reply 73 (callgrind, register pressure in the one big inlined function),
/// for a call that costs the FIB paths about ten.
#[inline(never)]
pub(super) fn resolve(
    routing: &Routing,
    remembered: ConnNextHop,
    address: IpAddr,
    flow_hash: impl FnOnce() -> u64,
) -> Result<(ConnNextHop, MacAddr), DropReason> {
    let id = match remembered {
        ConnNextHop::LastHop(mac) => return Ok((remembered, mac)),
        ConnNextHop::Neighbour { id, epoch } if epoch == routing.epoch => {
            match routing.neighbours.get(id) {
                Neighbour::Resolved(mac) => return Ok((remembered, mac)),
                Neighbour::Unresolved | Neighbour::Failed => {
                    return Err(DropReason::NeighbourUnresolved)
                }
                Neighbour::Gone => route(routing, address, flow_hash())?,
            }
        }
        // Unknown, or found in an older snapshot: the routes may have moved since.
        ConnNextHop::Neighbour { .. } | ConnNextHop::Unknown => {
            route(routing, address, flow_hash())?
        }
    };
    let found = ConnNextHop::Neighbour {
        id,
        epoch: routing.epoch,
    };
    match routing.neighbours.get(id) {
        Neighbour::Resolved(mac) => Ok((found, mac)),
        // Gone right after a lookup: a snapshot older than the slot's release, not yet replaced.
        Neighbour::Unresolved | Neighbour::Failed | Neighbour::Gone => {
            Err(DropReason::NeighbourUnresolved)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_no_route_kind_counts_under_its_own_name() {
        for kind in NoRouteKind::ALL {
            assert_eq!(no_route_drop(kind).name(), kind.name());
        }
    }
}
