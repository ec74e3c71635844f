//! A small synchronous rtnetlink client over a raw `NETLINK_ROUTE` socket, plus the interface
//! queries control needs at start-up (index, MAC, RX queue count).
//!
//! Control uses it to learn real servers' MAC addresses from the kernel's neighbour table (and to
//! make the kernel ARP for them), and to put VIPs on interfaces. It is deliberately tiny: one
//! request at a time, replies matched by sequence number, attributes parsed with bounds-checked
//! `from_ne_bytes` reads, never pointer casts.
//!
//! - `socket`: the `NETLINK_ROUTE` socket, request plumbing and [`NetlinkError`].
//! - `message`: the netlink message format, pure bytes.
//! - `link`: interface facts (index, MTU, MAC, RX queues) by `if_nametoindex`, ioctls and sysfs.
//! - `address`, `neighbour`, `route`: the requests on each rtnetlink table.
//! - `monitor`: the notification socket and the raw table dumps the FIB mirror (`crate::fib`)
//!   reads; `message`'s attribute walker is shared with the mirror's parser.
//!
//! Its unsafe code (the socket, ioctl and `if_nametoindex` calls) is in `socket` and `link`.
//! Each block says why it is sound.

mod address;
mod link;
pub(crate) mod message;
mod monitor;
mod neighbour;
mod route;
mod socket;
#[cfg(test)]
mod tests;

pub use address::{AddressChange, ListedAddress, DIRECTOR_ADDRESS_PROTOCOL};
pub use link::{interface_index, interface_mac, interface_mtu, interface_rx_queues};
pub use monitor::{Drained, NetlinkMonitor};
pub use socket::{Netlink, NetlinkError};
