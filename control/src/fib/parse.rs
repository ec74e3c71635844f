//! rtnetlink messages (dump replies and notifications alike) into the [`Event`]s the model
//! applies: IPv4 routes of the main table (gateways, `RTA_MULTIPATH`, `RTA_NH_ID`, and the
//! blackhole/unreachable/prohibit types), nexthop objects and groups, IPv4 neighbours with their
//! NUD state, IPv4 addresses and links.
//!
//! Pure bytes, through the netlink client's bounds-checked attribute walker. What it must not
//! do: panic on any bytes (a message it cannot read is `None`, and the mirror counts it), or keep
//! anything the FIB does not use.

use std::net::Ipv4Addr;

use crate::netlink::message::{read_u16, read_u32, Attributes};

// Message types from <linux/rtnetlink.h>.
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
pub(super) const RTM_GETNEXTHOP: u16 = 106;

const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u32 = 254;
// Route attributes and types.
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_NH_ID: u16 = 30;
const RTN_UNICAST: u8 = 1;
const RTN_BLACKHOLE: u8 = 6;
const RTN_UNREACHABLE: u8 = 7;
const RTN_PROHIBIT: u8 = 8;
/// `rtnh_flags`/`rtm_flags` bits for a next hop the kernel does not use.
const RTNH_F_DEAD: u32 = 1;
const RTNH_F_LINKDOWN: u32 = 16;
// Nexthop object attributes (<linux/nexthop.h>).
const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
// Neighbour and address attributes.
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFF_UP: u32 = 1;

/// A message's effect: an object added or changed, or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// `RTM_NEW*`.
    New,
    /// `RTM_DEL*`.
    Delete,
}

/// What a route does with a matching destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAction {
    /// Through these next hops (one, or several for `RTA_MULTIPATH`).
    Paths(Vec<Path>),
    /// Through a nexthop object (`RTA_NH_ID`), resolved against the model's objects at build.
    Object(u32),
    /// `blackhole`.
    Blackhole,
    /// `unreachable`.
    Unreachable,
    /// `prohibit`.
    Prohibit,
}

/// One next hop of a route or nexthop object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    /// The gateway; `None` for a directly connected (on-link) prefix.
    pub gateway: Option<Ipv4Addr>,
    /// Egress interface.
    pub ifindex: u32,
    /// Share in a multipath route (`rtnh_hops + 1`), at least 1.
    pub weight: u32,
}

/// An IPv4 route of the main table. Identity: destination, length and metric (`tos` routes are
/// skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination prefix (host bits as the kernel gives them).
    pub destination: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// `RTA_PRIORITY` (the metric); the lowest of several routes to one prefix wins.
    pub metric: u32,
    /// What it does.
    pub action: RouteAction,
}

/// A nexthop object (`ip nexthop`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NexthopObject {
    /// A single next hop.
    Single(Path),
    /// A group of other objects' ids with weights.
    Group(Vec<(u32, u32)>),
    /// `ip nexthop add id N blackhole`.
    Blackhole,
}

/// An IPv4 neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourEntry {
    /// Interface.
    pub ifindex: u32,
    /// Its address.
    pub address: Ipv4Addr,
    /// `NUD_*` bits.
    pub state: u16,
    /// Link-layer address, when the kernel has one.
    pub lladdr: Option<[u8; 6]>,
}

/// One parsed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A main-table IPv4 route.
    Route(Change, RouteEntry),
    /// A nexthop object, by id.
    Nexthop(Change, u32, NexthopObject),
    /// An IPv4 neighbour.
    Neighbour(Change, NeighbourEntry),
    /// An IPv4 address `address/prefix_len` on `ifindex`.
    Address(Change, u32, Ipv4Addr, u8),
    /// A link and whether it is administratively up.
    Link(Change, u32, bool),
}

/// The event in a message of type `kind`; `None` for one the FIB ignores (another family or
/// table, a `tos` route, a local or broadcast route) or cannot read.
pub fn parse(kind: u16, payload: &[u8]) -> Option<Event> {
    let change = |new| {
        if kind == new {
            Change::New
        } else {
            Change::Delete
        }
    };
    match kind {
        RTM_NEWROUTE | RTM_DELROUTE => {
            parse_route(payload).map(|r| Event::Route(change(RTM_NEWROUTE), r))
        }
        RTM_NEWNEXTHOP | RTM_DELNEXTHOP => {
            parse_nexthop(payload).map(|(id, o)| Event::Nexthop(change(RTM_NEWNEXTHOP), id, o))
        }
        RTM_NEWNEIGH | RTM_DELNEIGH => {
            parse_neighbour(payload).map(|n| Event::Neighbour(change(RTM_NEWNEIGH), n))
        }
        RTM_NEWADDR | RTM_DELADDR => parse_address(payload)
            .map(|(index, address, len)| Event::Address(change(RTM_NEWADDR), index, address, len)),
        RTM_NEWLINK | RTM_DELLINK => {
            let index = read_u32(payload, 4)?;
            let flags = read_u32(payload, 8)?;
            Some(Event::Link(change(RTM_NEWLINK), index, flags & IFF_UP != 0))
        }
        _ => None,
    }
}

fn ipv4(data: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from)
}

/// `struct rtmsg` (12 bytes: family, dst_len, src_len, tos, table, protocol, scope, type,
/// flags) and its attributes.
fn parse_route(payload: &[u8]) -> Option<RouteEntry> {
    let header = payload.get(..12)?;
    let (family, prefix_len, tos, kind) = (header[0], header[1], header[3], header[7]);
    if family != AF_INET || tos != 0 || prefix_len > 32 {
        return None;
    }
    let flags = read_u32(header, 8)?;
    let mut table = u32::from(header[4]);
    let (mut destination, mut oif, mut gateway, mut metric) =
        (Ipv4Addr::UNSPECIFIED, None, None, 0);
    let (mut multipath, mut object) = (None, None);
    for (attribute, data) in Attributes::new(&payload[12..]) {
        match attribute {
            RTA_DST => destination = ipv4(data)?,
            RTA_OIF => oif = read_u32(data, 0),
            RTA_GATEWAY => gateway = ipv4(data),
            RTA_PRIORITY => metric = read_u32(data, 0).unwrap_or(0),
            RTA_TABLE => table = read_u32(data, 0).unwrap_or(table),
            RTA_MULTIPATH => multipath = Some(parse_multipath(data)),
            RTA_NH_ID => object = read_u32(data, 0),
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN {
        return None;
    }
    let action = match kind {
        RTN_BLACKHOLE => RouteAction::Blackhole,
        RTN_UNREACHABLE => RouteAction::Unreachable,
        RTN_PROHIBIT => RouteAction::Prohibit,
        RTN_UNICAST => match (object, multipath, oif) {
            (Some(id), _, _) => RouteAction::Object(id),
            (None, Some(paths), _) => RouteAction::Paths(paths),
            (None, None, Some(ifindex)) if flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN) == 0 => {
                RouteAction::Paths(vec![Path {
                    gateway,
                    ifindex,
                    weight: 1,
                }])
            }
            (None, None, _) => RouteAction::Paths(Vec::new()),
        },
        _ => return None,
    };
    Some(RouteEntry {
        destination,
        prefix_len,
        metric,
        action,
    })
}

/// `RTA_MULTIPATH`: `struct rtnexthop` (len u16, flags u8, hops u8, ifindex i32) each followed
/// by its own attributes; dead and link-down legs are left out.
fn parse_multipath(mut data: &[u8]) -> Vec<Path> {
    let mut paths = Vec::new();
    while let Some(length) = read_u16(data, 0) {
        let length = usize::from(length);
        if length < 8 || length > data.len() {
            break;
        }
        let (flags, hops) = (data[2], data[3]);
        let ifindex = read_u32(data, 4).unwrap_or(0);
        let gateway = Attributes::new(&data[8..length])
            .find(|&(attribute, _)| attribute == RTA_GATEWAY)
            .and_then(|(_, value)| ipv4(value));
        if u32::from(flags) & (RTNH_F_DEAD | RTNH_F_LINKDOWN) == 0 {
            paths.push(Path {
                gateway,
                ifindex,
                weight: u32::from(hops) + 1,
            });
        }
        data = &data[((length + 3) & !3).min(data.len())..];
    }
    paths
}

/// `struct nhmsg` (8 bytes: family, scope, protocol, reserved, flags) and its attributes.
fn parse_nexthop(payload: &[u8]) -> Option<(u32, NexthopObject)> {
    let header = payload.get(..8)?;
    let flags = read_u32(header, 4)?;
    let (mut id, mut group, mut blackhole, mut oif, mut gateway) = (None, None, false, None, None);
    for (attribute, data) in Attributes::new(&payload[8..]) {
        match attribute {
            NHA_ID => id = read_u32(data, 0),
            // `struct nexthop_grp`: id u32, weight u8 (the weight minus one), weight_high u8
            // (its high bits since Linux 6.12, zero before), reserved u16.
            NHA_GROUP => {
                group = Some(
                    data.chunks_exact(8)
                        .filter_map(|member| {
                            let weight = u32::from(u16::from_le_bytes([member[4], member[5]]));
                            Some((read_u32(member, 0)?, weight + 1))
                        })
                        .collect::<Vec<_>>(),
                );
            }
            NHA_BLACKHOLE => blackhole = true,
            NHA_OIF => oif = read_u32(data, 0),
            NHA_GATEWAY => gateway = ipv4(data),
            _ => {}
        }
    }
    let id = id?;
    let object = if let Some(members) = group {
        NexthopObject::Group(members)
    } else if blackhole {
        NexthopObject::Blackhole
    } else if header[0] != AF_INET && gateway.is_none() && oif.is_none() {
        return None;
    } else if flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN) != 0 {
        NexthopObject::Group(Vec::new())
    } else {
        NexthopObject::Single(Path {
            gateway,
            ifindex: oif?,
            weight: 1,
        })
    };
    Some((id, object))
}

/// `struct ndmsg` (12 bytes: family, padding, ifindex, state, flags, type) and its attributes.
fn parse_neighbour(payload: &[u8]) -> Option<NeighbourEntry> {
    let header = payload.get(..12)?;
    if header[0] != AF_INET {
        return None;
    }
    let mut entry = NeighbourEntry {
        ifindex: read_u32(header, 4)?,
        address: Ipv4Addr::UNSPECIFIED,
        state: read_u16(header, 8)?,
        lladdr: None,
    };
    let mut destination = None;
    for (attribute, data) in Attributes::new(&payload[12..]) {
        match attribute {
            NDA_DST => destination = ipv4(data),
            NDA_LLADDR => entry.lladdr = <[u8; 6]>::try_from(data).ok(),
            _ => {}
        }
    }
    entry.address = destination?;
    Some(entry)
}

/// `struct ifaddrmsg` (8 bytes: family, prefixlen, flags, scope, index) and its attributes.
fn parse_address(payload: &[u8]) -> Option<(u32, Ipv4Addr, u8)> {
    let header = payload.get(..8)?;
    if header[0] != AF_INET {
        return None;
    }
    let (mut local, mut address) = (None, None);
    for (attribute, data) in Attributes::new(&payload[8..]) {
        match attribute {
            IFA_LOCAL => local = ipv4(data),
            IFA_ADDRESS => address = ipv4(data),
            _ => {}
        }
    }
    Some((read_u32(header, 4)?, local.or(address)?, header[1]))
}

/// Each dump request: (request type, its fixed header, what it is for an error message,
/// the type of its replies).
pub(super) fn dump_requests() -> [(u16, Vec<u8>, &'static str, u16); 5] {
    let mut route = vec![0u8; 12];
    route[0] = AF_INET;
    let mut address = vec![0u8; 8];
    address[0] = AF_INET;
    let mut neighbour = vec![0u8; 12];
    neighbour[0] = AF_INET;
    [
        (RTM_GETLINK, vec![0u8; 16], "dump links", RTM_NEWLINK),
        (RTM_GETADDR, address, "dump IPv4 addresses", RTM_NEWADDR),
        (
            RTM_GETNEXTHOP,
            vec![0u8; 8],
            "dump nexthop objects",
            RTM_NEWNEXTHOP,
        ),
        (RTM_GETROUTE, route, "dump IPv4 routes", RTM_NEWROUTE),
        (
            RTM_GETNEIGH,
            neighbour,
            "dump IPv4 neighbours",
            RTM_NEWNEIGH,
        ),
    ]
}
