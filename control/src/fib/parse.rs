//! rtnetlink messages (dump replies and notifications alike) into the [`Event`]s the model
//! applies: IPv4 and IPv6 routes of the main table (gateways, `RTA_MULTIPATH`, `RTA_NH_ID`, and
//! the blackhole/unreachable/prohibit types), nexthop objects and groups, IPv4 (ARP) and IPv6
//! (NDP, RFC 4861) neighbours with their NUD state, addresses of both families, and links.
//!
//! IPv6 brings noise the FIB has no use for, left out as [`Parsed::Ignored`]: the link-local
//! `fe80::/64` route every interface gets (link-local destinations are never a VIP's client or
//! real server; a link-local *gateway*, the usual next hop of an RA-learnt default route, is
//! kept), multicast destinations, cached clones (`RTM_F_CLONED`: PMTU exceptions and
//! redirects), and the local table's entries (as for IPv4, only the main table is read).
//!
//! Pure bytes, through the netlink client's bounds-checked attribute walker. What it must not
//! do: panic on any bytes (a message it cannot read is [`Parsed::Unreadable`], and the mirror
//! counts it), or keep anything the FIB does not use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
const AF_INET6: u8 = 10;
const RT_TABLE_MAIN: u32 = 254;
// Route attributes and types.
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTA_NH_ID: u16 = 30;
const RTN_UNICAST: u8 = 1;
const RTN_BLACKHOLE: u8 = 6;
const RTN_UNREACHABLE: u8 = 7;
const RTN_PROHIBIT: u8 = 8;
/// `rtnh_flags`/`rtm_flags` bits for a next hop the kernel does not use.
const RTNH_F_DEAD: u32 = 1;
const RTNH_F_LINKDOWN: u32 = 16;
/// `rtm_flags` bit of a cached clone (an IPv6 PMTU exception or redirect), not a table route.
const RTM_F_CLONED: u32 = 0x200;
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
    /// The gateway (of the route's family, or an IPv6 gateway for an IPv4 route: RFC 5549);
    /// `None` for a directly connected (on-link) prefix.
    pub gateway: Option<IpAddr>,
    /// Egress interface.
    pub ifindex: u32,
    /// Share in a multipath route (`rtnh_hops + 1`), at least 1.
    pub weight: u32,
}

/// An IPv4 or IPv6 route of the main table. Identity: destination, length and metric (`tos`
/// routes are skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination prefix (host bits as the kernel gives them).
    pub destination: IpAddr,
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

/// An IPv4 (ARP) or IPv6 (NDP) neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourEntry {
    /// Interface.
    pub ifindex: u32,
    /// Its address.
    pub address: IpAddr,
    /// `NUD_*` bits.
    pub state: u16,
    /// Link-layer address, when the kernel has one.
    pub lladdr: Option<[u8; 6]>,
}

/// One parsed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A main-table route of either family.
    Route(Change, RouteEntry),
    /// A nexthop object, by id.
    Nexthop(Change, u32, NexthopObject),
    /// An IPv4 or IPv6 neighbour.
    Neighbour(Change, NeighbourEntry),
    /// An address `address/prefix_len` on `ifindex`.
    Address(Change, u32, IpAddr, u8),
    /// A link and whether it is administratively up.
    Link(Change, u32, bool),
}

/// What one message is to the mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Something the model keeps.
    Event(Event),
    /// Well-formed, but nothing the FIB uses: another family (a bridge's forwarding entries
    /// arrive as neighbours) or table, a `tos` route, a local, broadcast or multicast route,
    /// IPv6 link-local noise, a message type not followed.
    Ignored,
    /// Too short, or missing what its kind must carry (counted as `unreadable`).
    Unreadable,
}

impl Parsed {
    /// The event, if any: what the dumps apply (they count nothing).
    pub fn event(self) -> Option<Event> {
        match self {
            Parsed::Event(event) => Some(event),
            Parsed::Ignored | Parsed::Unreadable => None,
        }
    }
}

/// Why a parser gave up on a message.
enum Skip {
    Ignored,
    Unreadable,
}

/// A read that must succeed for the message to be readable.
fn need<T>(value: Option<T>) -> Result<T, Skip> {
    value.ok_or(Skip::Unreadable)
}

/// What the message of type `kind` is to the mirror; see [`Parsed`].
pub fn parse(kind: u16, payload: &[u8]) -> Parsed {
    let change = |new| {
        if kind == new {
            Change::New
        } else {
            Change::Delete
        }
    };
    let event = match kind {
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
            parse_link(payload).map(|(index, up)| Event::Link(change(RTM_NEWLINK), index, up))
        }
        _ => Err(Skip::Ignored),
    };
    match event {
        Ok(event) => Parsed::Event(event),
        Err(Skip::Ignored) => Parsed::Ignored,
        Err(Skip::Unreadable) => Parsed::Unreadable,
    }
}

/// `struct ifinfomsg` (16 bytes: family, padding, type, index, flags, change): the index and
/// whether the link is administratively up.
fn parse_link(payload: &[u8]) -> Result<(u32, bool), Skip> {
    let index = need(read_u32(payload, 4))?;
    let flags = need(read_u32(payload, 8))?;
    Ok((index, flags & IFF_UP != 0))
}

/// The address family byte of a message header: IPv4 or IPv6, else the message is ignored.
fn family(byte: u8) -> Result<u8, Skip> {
    match byte {
        AF_INET | AF_INET6 => Ok(byte),
        _ => Err(Skip::Ignored),
    }
}

/// An address attribute of family `family`.
fn address_of(family: u8, data: &[u8]) -> Option<IpAddr> {
    if family == AF_INET6 {
        <[u8; 16]>::try_from(data)
            .ok()
            .map(|octets| IpAddr::V6(Ipv6Addr::from(octets)))
    } else {
        <[u8; 4]>::try_from(data)
            .ok()
            .map(|octets| IpAddr::V4(Ipv4Addr::from(octets)))
    }
}

/// An address attribute of either family, told apart by its length (a nexthop object's or an
/// IPv4 route's gateway may be IPv6).
fn any_address(data: &[u8]) -> Option<IpAddr> {
    address_of(if data.len() == 16 { AF_INET6 } else { AF_INET }, data)
}

/// `RTA_VIA`: a gateway of another family than the route's (`struct rtvia`: family u16, then
/// the address), as `ip route add 192.0.2.0/24 via inet6 fe80::1` gives.
fn via(data: &[u8]) -> Option<IpAddr> {
    let family = u8::try_from(read_u16(data, 0)?).ok()?;
    address_of(family, data.get(2..)?)
}

/// Whether an IPv6 destination is link-local (`fe80::/10`) or multicast (`ff00::/8`): routes the
/// kernel keeps for every interface, never a way to a client or real server.
fn ipv6_noise(destination: IpAddr) -> bool {
    match destination {
        IpAddr::V6(address) => address.is_unicast_link_local() || address.is_multicast(),
        IpAddr::V4(_) => false,
    }
}

/// `struct rtmsg` (12 bytes: family, dst_len, src_len, tos, table, protocol, scope, type,
/// flags) and its attributes.
fn parse_route(payload: &[u8]) -> Result<RouteEntry, Skip> {
    let header = need(payload.get(..12))?;
    let (prefix_len, tos, kind) = (header[1], header[3], header[7]);
    let family = family(header[0])?;
    let (unspecified, width) = if family == AF_INET6 {
        (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128)
    } else {
        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 32)
    };
    if prefix_len > width {
        return Err(Skip::Unreadable);
    }
    let flags = need(read_u32(header, 8))?;
    if tos != 0 || flags & RTM_F_CLONED != 0 {
        return Err(Skip::Ignored);
    }
    let mut table = u32::from(header[4]);
    let (mut destination, mut oif, mut gateway, mut metric) = (unspecified, None, None, 0);
    let (mut multipath, mut object) = (None, None);
    for (attribute, data) in Attributes::new(&payload[12..]) {
        match attribute {
            RTA_DST => destination = need(address_of(family, data))?,
            RTA_OIF => oif = read_u32(data, 0),
            RTA_GATEWAY => gateway = address_of(family, data),
            RTA_VIA => gateway = via(data),
            RTA_PRIORITY => metric = read_u32(data, 0).unwrap_or(0),
            RTA_TABLE => table = read_u32(data, 0).unwrap_or(table),
            RTA_MULTIPATH => multipath = Some(parse_multipath(family, data)),
            RTA_NH_ID => object = read_u32(data, 0),
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN || ipv6_noise(destination) {
        return Err(Skip::Ignored);
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
        _ => return Err(Skip::Ignored),
    };
    Ok(RouteEntry {
        destination,
        prefix_len,
        metric,
        action,
    })
}

/// `RTA_MULTIPATH`: `struct rtnexthop` (len u16, flags u8, hops u8, ifindex i32) each followed
/// by its own attributes; dead and link-down legs are left out.
fn parse_multipath(family: u8, mut data: &[u8]) -> Vec<Path> {
    let mut paths = Vec::new();
    while let Some(length) = read_u16(data, 0) {
        let length = usize::from(length);
        if length < 8 || length > data.len() {
            break;
        }
        let (flags, hops) = (data[2], data[3]);
        let ifindex = read_u32(data, 4).unwrap_or(0);
        let gateway =
            Attributes::new(&data[8..length]).find_map(|(attribute, value)| match attribute {
                RTA_GATEWAY => address_of(family, value),
                RTA_VIA => via(value),
                _ => None,
            });
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
fn parse_nexthop(payload: &[u8]) -> Result<(u32, NexthopObject), Skip> {
    let header = need(payload.get(..8))?;
    let flags = need(read_u32(header, 4))?;
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
            NHA_GATEWAY => gateway = any_address(data),
            _ => {}
        }
    }
    let id = need(id)?;
    let object = if let Some(members) = group {
        NexthopObject::Group(members)
    } else if blackhole {
        NexthopObject::Blackhole
    } else if !matches!(header[0], AF_INET | AF_INET6) && gateway.is_none() && oif.is_none() {
        return Err(Skip::Ignored);
    } else if flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN) != 0 {
        NexthopObject::Group(Vec::new())
    } else {
        NexthopObject::Single(Path {
            gateway,
            ifindex: need(oif)?,
            weight: 1,
        })
    };
    Ok((id, object))
}

/// `struct ndmsg` (12 bytes: family, padding, ifindex, state, flags, type) and its attributes.
fn parse_neighbour(payload: &[u8]) -> Result<NeighbourEntry, Skip> {
    let header = need(payload.get(..12))?;
    let family = family(header[0])?;
    let ifindex = need(read_u32(header, 4))?;
    let state = need(read_u16(header, 8))?;
    let (mut destination, mut lladdr) = (None, None);
    for (attribute, data) in Attributes::new(&payload[12..]) {
        match attribute {
            NDA_DST => destination = address_of(family, data),
            NDA_LLADDR => lladdr = <[u8; 6]>::try_from(data).ok(),
            _ => {}
        }
    }
    Ok(NeighbourEntry {
        ifindex,
        address: need(destination)?,
        state,
        lladdr,
    })
}

/// `struct ifaddrmsg` (8 bytes: family, prefixlen, flags, scope, index) and its attributes.
fn parse_address(payload: &[u8]) -> Result<(u32, IpAddr, u8), Skip> {
    let header = need(payload.get(..8))?;
    let family = family(header[0])?;
    let (mut local, mut address) = (None, None);
    for (attribute, data) in Attributes::new(&payload[8..]) {
        match attribute {
            IFA_LOCAL => local = address_of(family, data),
            IFA_ADDRESS => address = address_of(family, data),
            _ => {}
        }
    }
    Ok((
        need(read_u32(header, 4))?,
        need(local.or(address))?,
        header[1],
    ))
}

/// Each dump request: (request type, its fixed header, what it is for an error message,
/// the type of its replies). IPv6 has its own route, address and neighbour dumps: a kernel
/// booted without IPv6 refuses them, and the mirror then follows IPv4 alone.
pub(super) fn dump_requests() -> [(u16, Vec<u8>, &'static str, u16); 8] {
    let header = |length: usize, family: u8| {
        let mut header = vec![0u8; length];
        header[0] = family;
        header
    };
    [
        (RTM_GETLINK, vec![0u8; 16], "dump links", RTM_NEWLINK),
        (
            RTM_GETADDR,
            header(8, AF_INET),
            "dump IPv4 addresses",
            RTM_NEWADDR,
        ),
        (
            RTM_GETADDR,
            header(8, AF_INET6),
            "dump IPv6 addresses",
            RTM_NEWADDR,
        ),
        (
            RTM_GETNEXTHOP,
            vec![0u8; 8],
            "dump nexthop objects",
            RTM_NEWNEXTHOP,
        ),
        (
            RTM_GETROUTE,
            header(12, AF_INET),
            "dump IPv4 routes",
            RTM_NEWROUTE,
        ),
        (
            RTM_GETROUTE,
            header(12, AF_INET6),
            "dump IPv6 routes",
            RTM_NEWROUTE,
        ),
        (
            RTM_GETNEIGH,
            header(12, AF_INET),
            "dump IPv4 neighbours",
            RTM_NEWNEIGH,
        ),
        (
            RTM_GETNEIGH,
            header(12, AF_INET6),
            "dump IPv6 neighbours",
            RTM_NEWNEIGH,
        ),
    ]
}

/// Whether a dump request is one a kernel without IPv6 (or nexthop objects) may refuse.
pub(super) fn optional_dump(request: u16, header: &[u8]) -> bool {
    request == RTM_GETNEXTHOP || header.first() == Some(&AF_INET6)
}
