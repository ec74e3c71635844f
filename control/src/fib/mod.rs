//! The FIB mirror: control's copy of the kernel's IPv4 and IPv6 routing tables, addresses, links
//! and neighbours (ARP and NDP), kept current from rtnetlink notifications, published to the workers as immutable
//! [`dataplane::fib::Fib`] snapshots and one shared [`dataplane::fib::Neighbours`] array.
//!
//! - `parse`: rtnetlink messages (dump replies and notifications) into events.
//! - `model`: the tables those events maintain.
//! - `build`: the model into a snapshot, restricted to the served interfaces, with host routes
//!   for pinned on-link destinations.
//! - `mirror`: [`FibMirror`], which owns the sockets, coalesces bursts of changes into at most
//!   one rebuild per [`MIN_REBUILD_INTERVAL`], writes neighbour changes to their slots at once
//!   and keeps the neighbours in use fresh.
//! - `task`: [`FibTask`], the mirror on its own thread, sending snapshots over a crossbeam
//!   channel (what the director's `select!` loop takes).
//! - `counters`: [`FibCounters`] and the serialisable [`FibSummary`] / [`NextHopSummary`].
//! - `log`: one log line per kind of bad input per ten seconds.
//!
//! Protocol code: the messages are parsed by hand over the netlink client's bounds-checked
//! attribute walker (`crate::netlink`), not with `netlink-packet-route`. The house rule
//! prefers a well-kept crate, but control already speaks rtnetlink by hand (requests,
//! sequence matching, dumps), and the mirror reads a dozen fixed headers and attributes; the
//! crate would bring a second, differently shaped netlink stack (and its own buffer and error
//! types) for that, beside the one every other request uses. The parser is pure and tested on
//! crafted bytes.
//!
//! IPv6 (issue 15) is the same path with `IpAddr` keys: the parser reads `AF_INET6` routes
//! (leaving out link-local and multicast noise), addresses and neighbours; the monitor follows
//! the `RTNLGRP_IPV6_IFADDR` and `RTNLGRP_IPV6_ROUTE` groups (neighbours of both families share
//! `RTNLGRP_NEIGH`); the builder adds IPv6 prefixes to the snapshot's IPv6 table and /128 host
//! routes; neighbour slots, confirmation and solicitation (`NTF_USE`, which makes the kernel send
//! the RFC 4861 neighbour solicitation) are family-neutral.
//!
//! What it must not do: touch frames, or make a worker wait: the workers only ever load a
//! published snapshot and the neighbour array's atomic words.

mod build;
mod counters;
mod log;
mod mirror;
mod model;
mod parse;
mod task;
#[cfg(test)]
mod tests;

pub use counters::{FibCounters, FibSummary, NextHopSummary};
pub use mirror::{FibMirror, MIN_REBUILD_INTERVAL, NEIGHBOUR_REFRESH_INTERVAL};
pub use task::{FibTask, FibTaskError, REQUEST_TIMEOUT};
