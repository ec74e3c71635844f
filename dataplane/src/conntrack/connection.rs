//! What an entry of the connection table remembers about its flow ([`Connection`], with its
//! [`ConnNextHop`]) and what a rebind changes ([`Binding`]): plain values the pipeline reads and
//! the table stores.
//!
//! What this module must not do: know the table's layout or decide states.

use std::net::IpAddr;

use super::key::{FlowAddr, FlowKey};
use super::state::ConnState;
use crate::fib::NeighbourId;
use crate::wire::MacAddr;

/// What an entry remembers about its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The real server's address: what survives a service-table change.
    pub backend: IpAddr,
    /// The real server's port: the service port, or the backend's own for NAT port mapping.
    pub backend_port: u16,
    /// Forwarded by NAT: the real server's replies come back through the director, so the
    /// entry is also found by its reply tuple ([`Connection::reply_key`]).
    pub nat: bool,
    /// Index of the backend in its service's `backends` under `generation`.
    pub backend_index: u32,
    /// Service-table generation `backend_index` is valid for.
    pub generation: u64,
    /// The backend's [`crate::Backend::counter_slot`]: whose gauge this entry is counted in.
    pub counter_slot: u32,
    /// Where the flow is in its life.
    pub state: ConnState,
    /// Where frames of the flow toward its far side go next (NAT: replies to the client; TUN:
    /// the tunnel to the real server), found once and kept; see [`ConnNextHop`].
    pub next_hop: ConnNextHop,
}

/// The next hop an entry remembers (issue 14), read only when the service table has a
/// [`crate::service::Routing`]: without one, NAT replies go to the client side's
/// [`crate::service::Interface::next_hop_mac`] and TUN to the backend's MAC, as before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnNextHop {
    /// Not known yet: DR, an entry made without routing, or one imported by state sync (whose
    /// neighbour ids are another director's): the next frame that needs it looks the route up.
    #[default]
    Unknown,
    /// NAT, auto last hop: the MAC the client's frames arrive from (the client on-link, or the
    /// router that forwarded them).
    LastHop(MacAddr),
    /// A route lookup's neighbour, in the FIB snapshot `epoch` ([`crate::service::Routing`]):
    /// each frame reads its MAC from the neighbour array, so a MAC change reaches the flow
    /// without touching the entry; a newer snapshot makes the next frame look the route up
    /// again.
    Neighbour {
        /// The neighbour's slot.
        id: NeighbourId,
        /// The snapshot the lookup was made in.
        epoch: u16,
    },
}

impl Connection {
    /// The 5-tuple of the real server's replies to the client of `key`: RS:rsport -> client.
    #[inline]
    pub const fn reply_key(&self, key: &FlowKey) -> FlowKey {
        FlowKey {
            src_addr: FlowAddr::new(self.backend),
            dst_addr: key.src_addr,
            src_port: self.backend_port,
            dst_port: key.src_port,
            protocol: key.protocol,
        }
    }
}

/// Where an entry sends its flow: what [`super::ConnTable::rebind`] sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The real server's address.
    pub backend: IpAddr,
    /// The real server's port.
    pub backend_port: u16,
    /// Index of the backend in its service's `backends` under `generation`.
    pub backend_index: usize,
    /// The backend's [`crate::Backend::counter_slot`].
    pub counter_slot: usize,
    /// Service-table generation `backend_index` is valid for.
    pub generation: u64,
    /// Forwarded by NAT (indexed by its reply tuple too).
    pub nat: bool,
}
