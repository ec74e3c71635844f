//! The sync daemon: connection state exchanged between directors over UDP, so established flows
//! and persistence survive a failover, as the IPVS sync daemon (`ip_vs_sync.c`) does for
//! keepalived pairs.
//!
//! The data plane exports and imports records through per-worker queues
//! ([`dataplane::sync`]); this module moves them between directors:
//! - [`SyncSender`] (the master's side) drains every worker's export queue on a control thread,
//!   batches the records into datagrams no larger than the interface's MTU allows (counted
//!   in bytes: 24 for an IPv4 entry, 64 for one with an IPv6 address), and sends them
//!   to the multicast group 224.0.0.81:8848 with TTL 1 (IPVS's group and port) or to a list of
//!   unicast peers, out of the configured interface. A partly filled datagram leaves after at
//!   most [`FLUSH_INTERVAL`] (IPVS waits up to 2 s; a shorter wait narrows the window in which a
//!   failover loses new flows).
//! - [`SyncReceiver`] (a backup's side) validates each datagram (magic, version, length, record
//!   count; anything else is counted and dropped, never trusted), filters it by sync id (IPVS's
//!   `syncid`, so several director pairs can share a link) and, with unicast peers, by source,
//!   then pushes each valid record to the import queue of the worker that would see the flow
//!   ([`Routing`]).
//! - [`SyncDaemon`] runs one of each on its own thread and switches roles (and, on a reload,
//!   keys) at run time.
//! - `auth` authenticates sync when `[ha] sync_key` is set: an HMAC-SHA256 tag and a sequence
//!   number on every datagram, refused when missing, wrong or replayed (RFC 4303's 64-entry
//!   window), each reason counted. Without a key the bytes are the unauthenticated format's,
//!   unchanged.
//! - `config` holds what it is told ([`SyncConfig`], [`Role`], [`Routing`]) and `counters`
//!   what it counts ([`SyncCounters`]).
//! - The datagram and record format is [`dataplane::sync::wire`], the only place sync's bytes
//!   are written or read (re-exported here).
//!
//! # Roles
//!
//! Both sockets stay open whatever the role; [`SyncDaemon::set_role`] (control calls it on VRRP
//! transitions) is one atomic store, with no socket churn and nothing to restart. A
//! [`Role::Master`] sends its workers' exports and ignores what it receives (counted as
//! `datagrams_ignored`), so two directors that briefly both think they are master do not rebind
//! each other's live flows. A [`Role::Backup`] applies what it receives and discards its own
//! exports (it forwards nothing, so there are few). IPVS instead runs separate master and backup
//! daemons; keepalived starts and stops them on transitions (`lvs_sync_daemon`).
//!
//! After a failover the new master serves the imported entries; an imported entry is exported
//! again only when its state changes or after the refresh period, so the old master, back as a
//! backup, relearns the long-lived flows within one refresh period. Like IPVS there is no bulk
//! transfer of the whole table.
//!
//! # Which worker imports a record
//!
//! A flow's entry is useful only on the worker the NIC's RSS will give the flow's frames. That
//! hash is the NIC's, not ours: [`Routing::Broadcast`] (the default) gives every connection
//! record to every worker, which is correct whatever the NIC does but makes every worker hold
//! every synced flow (memory, and the least-connection gauges count each flow once per worker,
//! uniformly); [`Routing::Hash`] lets control route by a function that reproduces the NIC's
//! RSS (same NIC, key and indirection table on both directors, the limit IPVS has too for its
//! per-CPU tables). With one RX queue (the lab) both give everything to worker 0. Templates go
//! to worker 0 only: the template table is shared by all workers.
//!
//! What this module must not do: block a worker (queues are lock-free and bounded on both
//! sides; a full import queue drops the record and counts it), or panic on any datagram.

mod auth;
#[cfg(test)]
mod auth_tests;
mod config;
mod counters;
mod daemon;
mod receiver;
mod sender;
#[cfg(test)]
mod tests;

pub use auth::{
    is_keyed, AuthError, KeyCell, ReplayWindow, Signer, Verifier, KEYED, MAX_SENDERS,
    REPLAY_WINDOW, SEQUENCE_LEN, TAG_LEN, TRAILER_LEN,
};
pub use config::{Role, Routing, SyncConfig, SyncError, DEFAULT_PORT, GROUP};
pub use counters::{SyncCounters, SyncStats};
pub use daemon::{SyncDaemon, POLL_INTERVAL};
pub use dataplane::sync::wire::{
    datagram_len, encode_datagram, records_per_datagram, Datagram, DatagramError, HEADER_LEN,
    MAGIC, MAX_DATAGRAM_LEN, MAX_RECORDS, VERSION, VERSION_MIXED,
};
pub use receiver::SyncReceiver;
pub use sender::{SyncSender, FLUSH_INTERVAL};
