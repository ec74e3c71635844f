//! A backup's side of state sync: receives datagrams, authenticates them when it has a key
//! (`auth`), validates and filters them (sync id, unicast peers, role), and pushes each valid
//! record to the import queue of the worker that should have it ([`Routing`]).
//!
//! What it must not do: block a worker (a full import queue drops the record and counts it),
//! trust any datagram before [`Datagram::parse`] has checked it, or, with a key, read one whose
//! tag did not check out.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use dataplane::sync::wire::{Datagram, DatagramError, HEADER_LEN, MAGIC};
use dataplane::sync::{SyncQueue, SyncRecord};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tracing::warn;

use super::auth::{is_keyed, AuthError, KeyCell, Verifier};
use super::config::{socket_error, Role, Routing, SyncConfig, SyncError, GROUP};
use super::counters::{add, SyncCounters};
use crate::netlink;

/// How long the receiver thread waits for a datagram before it checks for a stop.
const RECEIVE_TIMEOUT: Duration = Duration::from_millis(100);

/// A backup's side: receives datagrams and queues their records for the workers.
pub struct SyncReceiver {
    socket: UdpSocket,
    imports: Vec<Arc<SyncQueue>>,
    routing: Routing,
    sync_id: u8,
    peers: Option<Vec<Ipv4Addr>>,
    buffer: Vec<u8>,
    counters: Arc<SyncCounters>,
    /// The last datagram's sender and sequence, to count gaps.
    last: Option<(SocketAddr, u32)>,
    /// The key, which a reload may change, and the generation of it `verifier` was made from.
    keys: Arc<KeyCell>,
    key_generation: u64,
    /// With a key: checks each datagram's trailer and its sender's replay window.
    verifier: Option<Verifier>,
    /// An authenticated datagram without its trailer, for [`Datagram::parse`].
    plain: Vec<u8>,
}

impl SyncReceiver {
    /// A receiver on `config.interface` and `config.port` (joined to the multicast group unless
    /// `config.peers` is set), feeding `imports` (one queue per worker) by `routing`.
    pub fn new(
        config: &SyncConfig,
        imports: Vec<Arc<SyncQueue>>,
        routing: Routing,
        counters: Arc<SyncCounters>,
    ) -> Result<Self, SyncError> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(socket_error(&config.interface, "create a UDP socket"))?;
        socket
            .set_reuse_address(true)
            .map_err(socket_error(&config.interface, "set SO_REUSEADDR"))?;
        socket
            .bind_device(Some(config.interface.as_bytes()))
            .map_err(socket_error(&config.interface, "bind to the interface"))?;
        socket
            .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.port).into())
            .map_err(socket_error(
                &config.interface,
                &format!("bind port {}", config.port),
            ))?;
        if config.peers.is_none() {
            let index = netlink::interface_index(&config.interface).map_err(|source| {
                SyncError::Interface {
                    interface: config.interface.clone(),
                    source,
                }
            })?;
            socket
                .join_multicast_v4_n(&GROUP, &InterfaceIndexOrAddress::Index(index))
                .map_err(socket_error(&config.interface, &format!("join {GROUP}")))?;
        }
        socket
            .set_read_timeout(Some(RECEIVE_TIMEOUT))
            .map_err(socket_error(&config.interface, "set the receive timeout"))?;
        Ok(SyncReceiver {
            socket: socket.into(),
            imports,
            routing,
            sync_id: config.sync_id,
            peers: config.peers.clone(),
            buffer: vec![0; 1 << 16],
            counters,
            last: None,
            keys: Arc::new(KeyCell::new(config.key.clone())),
            key_generation: u64::MAX,
            verifier: None,
            plain: Vec::new(),
        })
    }

    /// Takes its key from `keys` from now on (the daemon's, which a reload changes).
    pub(super) fn share_keys(&mut self, keys: Arc<KeyCell>) {
        self.keys = keys;
        self.key_generation = u64::MAX;
    }

    /// Follows a key change: a new key keeps the senders' replay windows.
    fn refresh_key(&mut self) {
        let generation = self.keys.generation();
        if generation == self.key_generation {
            return;
        }
        self.key_generation = generation;
        match (self.keys.get(), &mut self.verifier) {
            (None, verifier) => *verifier = None,
            (Some(key), Some(verifier)) => verifier.rekey(&key),
            (Some(key), verifier) => *verifier = Some(Verifier::new(&key)),
        }
    }

    /// The local address the receiver listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits (at most 100 ms) for one datagram and handles it in the role `role()` gives once
    /// it arrived; returns the records queued.
    pub fn poll(&mut self, role: impl FnOnce() -> Role) -> usize {
        let (length, from) = match self.socket.recv_from(&mut self.buffer) {
            Ok(received) => received,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                return 0;
            }
            Err(error) => {
                warn!(%error, "receiving state sync failed");
                std::thread::sleep(RECEIVE_TIMEOUT);
                return 0;
            }
        };
        // Move the buffer out to lend it to `handle`, which needs `self` too.
        let buffer = std::mem::take(&mut self.buffer);
        let queued = self.handle(&buffer[..length], from, role());
        self.buffer = buffer;
        queued
    }

    /// Handles one datagram from `from`: authenticated (with a key), validated, filtered by
    /// sync id and peers, and as backup its records queued for the workers. Returns the records
    /// queued.
    pub fn handle(&mut self, bytes: &[u8], from: SocketAddr, role: Role) -> usize {
        if let Some(peers) = &self.peers {
            let known = match from {
                SocketAddr::V4(from) => peers.contains(from.ip()),
                SocketAddr::V6(_) => false,
            };
            if !known {
                add(&self.counters.datagrams_foreign, 1);
                return 0;
            }
        }
        self.refresh_key();
        let Some(verifier) = &mut self.verifier else {
            if is_keyed(bytes) {
                // A keyed sender and a receiver without the key: a configuration mismatch.
                add(&self.counters.auth_unexpected, 1);
                return 0;
            }
            return self.import(bytes, from, role);
        };
        // Another cluster's datagram is ignored before its tag is checked, so pairs with
        // their own keys can share a link without counting each other as forgeries. The sync
        // id read here is not trusted: a forged one only gets its datagram ignored.
        if bytes.len() >= HEADER_LEN && bytes[..MAGIC.len()] == MAGIC && bytes[5] != self.sync_id {
            add(&self.counters.datagrams_foreign, 1);
            return 0;
        }
        let mut plain = std::mem::take(&mut self.plain);
        let queued = match verifier.verify(bytes, from, &mut plain) {
            Ok(()) => self.import(&plain, from, role),
            Err(error) => {
                let counter = match error {
                    AuthError::Missing => &self.counters.auth_missing,
                    AuthError::BadTag => &self.counters.auth_bad_tag,
                    AuthError::Replayed => &self.counters.auth_replayed,
                };
                add(counter, 1);
                0
            }
        };
        self.plain = plain;
        queued
    }

    /// The rest of [`SyncReceiver::handle`], for a datagram authenticated or received without
    /// a key: parsed, counted and as backup queued.
    fn import(&mut self, bytes: &[u8], from: SocketAddr, role: Role) -> usize {
        let datagram = match Datagram::parse(bytes, self.sync_id) {
            Ok(datagram) => datagram,
            Err(DatagramError::ForeignSyncId(_)) => {
                add(&self.counters.datagrams_foreign, 1);
                return 0;
            }
            Err(_) => {
                add(&self.counters.datagrams_malformed, 1);
                return 0;
            }
        };
        add(&self.counters.datagrams_received, 1);
        if let Some((source, sequence)) = self.last {
            let gap = datagram.sequence.wrapping_sub(sequence).wrapping_sub(1);
            // A restarted sender starts again from 0: not a loss.
            if source == from && gap > 0 && gap < 1 << 16 {
                add(&self.counters.datagrams_lost, u64::from(gap));
            }
        }
        self.last = Some((from, datagram.sequence));
        if role == Role::Master {
            add(&self.counters.datagrams_ignored, 1);
            return 0;
        }
        let mut queued = 0;
        for record in datagram.records() {
            match record {
                Ok(record) => {
                    self.route(record);
                    queued += 1;
                }
                Err(_) => add(&self.counters.records_malformed, 1),
            }
        }
        add(&self.counters.records_received, queued as u64);
        queued
    }

    /// Pushes `record` to the import queue(s) of the worker(s) that should have it.
    fn route(&self, record: SyncRecord) {
        let workers = self.imports.len();
        if workers == 0 {
            return;
        }
        let push = |worker: usize| {
            if self.imports[worker].push(record).is_err() {
                add(&self.counters.records_dropped, 1);
            }
        };
        match (record, self.routing) {
            (SyncRecord::Template(_), _) => push(0),
            (SyncRecord::Connection(_), Routing::Broadcast) => (0..workers).for_each(push),
            (SyncRecord::Connection(connection), Routing::Hash(route)) => {
                push(route(&connection.key, workers) % workers);
            }
        }
    }
}
