//! What the sync daemon is told: the `[ha]` settings ([`SyncConfig`]), which way it runs
//! ([`Role`]), which worker imports a record ([`Routing`]), and why it could not start
//! ([`SyncError`]). Types only: no sockets, no threads.

use std::io;
use std::net::Ipv4Addr;

use dataplane::conntrack::FlowKey;

use crate::config::SyncKey;
use crate::netlink::NetlinkError;

/// The IPVS sync multicast group (`IP_VS_SYNC_GROUP`).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The IPVS sync port (`IP_VS_SYNC_PORT`).
pub const DEFAULT_PORT: u16 = 8848;

/// What control configures, from the `[ha]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// The interface sync traffic is sent and received on (`SO_BINDTODEVICE`; the multicast
    /// group is joined there). Its MTU sizes the datagrams.
    pub interface: String,
    /// This cluster's id: datagrams with another are ignored (IPVS `syncid`).
    pub sync_id: u8,
    /// Unicast peers to send to and accept from, instead of the multicast group.
    pub peers: Option<Vec<Ipv4Addr>>,
    /// The UDP port, sending and receiving ([`DEFAULT_PORT`]).
    pub port: u16,
    /// The pair's shared secret: datagrams are signed and only authenticated ones applied
    /// (`auth`). `None` sends and accepts unauthenticated datagrams, as IPVS.
    pub key: Option<SyncKey>,
}

/// Which way this director's sync runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Sends its workers' exports; ignores what it receives.
    Master,
    /// Applies what it receives; discards its own exports.
    Backup,
}

impl Role {
    /// Name as logs and stats show it.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }

    pub(super) const fn from_u8(value: u8) -> Role {
        if value == Role::Master as u8 {
            Role::Master
        } else {
            Role::Backup
        }
    }
}

/// Which worker's import queue gets a connection record.
#[derive(Clone, Copy, Debug, Default)]
pub enum Routing {
    /// Every worker's (see the module docs).
    #[default]
    Broadcast,
    /// The worker `route(key, workers)` names (taken modulo the number of workers): a function
    /// that computes the NIC's RSS queue for the flow.
    Hash(fn(&FlowKey, usize) -> usize),
}

/// Why the sync daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The configured interface could not be looked up.
    #[error("sync interface {interface:?}: {source}")]
    Interface {
        /// The `[ha]` interface.
        interface: String,
        /// What netlink said.
        #[source]
        source: NetlinkError,
    },
    /// A socket operation failed.
    #[error("sync socket on {interface:?}: {operation}: {source}")]
    Socket {
        /// The `[ha]` interface.
        interface: String,
        /// What was being done, e.g. "join 224.0.0.81".
        operation: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A thread could not be started.
    #[error("starting the sync {name} thread: {source}")]
    Thread {
        /// "sender" or "receiver".
        name: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// `map_err` helper naming the interface and the operation.
pub(super) fn socket_error<'a>(
    interface: &'a str,
    operation: &'a str,
) -> impl FnOnce(io::Error) -> SyncError + 'a {
    move |source| SyncError::Socket {
        interface: interface.to_owned(),
        operation: operation.to_owned(),
        source,
    }
}
