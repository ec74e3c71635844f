//! The master's side of state sync: drains every worker's export queue, batches the records
//! into datagrams sized by the interface's MTU (by bytes: a record with an IPv6 address takes
//! 64 bytes, an IPv4 one 24; with a key, the authentication trailer 40 more per datagram) and
//! sends them to the multicast group or the unicast peers, each signed (`auth`) when it has a
//! key. A partly filled datagram leaves after at most [`FLUSH_INTERVAL`].
//!
//! What it must not do: block a worker (it only pops from the lock-free queues) or send
//! anything as a backup (it discards its exports then).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::sync::wire::{
    datagram_len, encode_datagram, records_per_datagram, HEADER_LEN, MAX_RECORD_LEN, RECORD_LEN,
};
use dataplane::sync::{SyncQueue, SyncRecord};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::warn;

use super::auth::{KeyCell, Signer, TRAILER_LEN};
use super::config::{socket_error, Role, SyncConfig, SyncError, GROUP};
use super::counters::{add, SyncCounters};
use crate::netlink;

/// Longest a record waits in a partly filled datagram before it is sent.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// The master's side: drains the workers' export queues and sends datagrams.
pub struct SyncSender {
    socket: UdpSocket,
    destinations: Vec<SocketAddrV4>,
    exports: Vec<Arc<SyncQueue>>,
    sync_id: u8,
    sequence: u32,
    per_datagram: usize,
    /// The longest datagram the interface's MTU lets out unfragmented.
    max_datagram: usize,
    pending: Vec<SyncRecord>,
    /// The datagram `pending` makes, header included.
    pending_len: usize,
    /// When the oldest pending record was drained.
    oldest: Option<Instant>,
    buffer: Vec<u8>,
    counters: Arc<SyncCounters>,
    reported_error: bool,
    /// The key, which a reload may change, and the generation of it `signer` was made from.
    keys: Arc<KeyCell>,
    key_generation: u64,
    /// With a key: numbers and tags each datagram.
    signer: Option<Signer>,
}

impl SyncSender {
    /// A sender on `config.interface` draining `exports` (one queue per worker), sizing its
    /// datagrams by the interface's MTU.
    pub fn new(
        config: &SyncConfig,
        exports: Vec<Arc<SyncQueue>>,
        counters: Arc<SyncCounters>,
    ) -> Result<Self, SyncError> {
        let mtu =
            netlink::interface_mtu(&config.interface).map_err(|source| SyncError::Interface {
                interface: config.interface.clone(),
                source,
            })?;
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(socket_error(&config.interface, "create a UDP socket"))?;
        socket
            .bind_device(Some(config.interface.as_bytes()))
            .map_err(socket_error(&config.interface, "bind to the interface"))?;
        // IPVS sends its multicast with TTL 1: sync never leaves the link.
        socket
            .set_multicast_ttl_v4(1)
            .map_err(socket_error(&config.interface, "set the multicast TTL"))?;
        // Our own receiver must not get what we send.
        socket.set_multicast_loop_v4(false).map_err(socket_error(
            &config.interface,
            "turn multicast loopback off",
        ))?;
        socket
            .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())
            .map_err(socket_error(&config.interface, "bind"))?;
        let destinations = match &config.peers {
            Some(peers) => peers
                .iter()
                .map(|&peer| SocketAddrV4::new(peer, config.port))
                .collect(),
            None => vec![SocketAddrV4::new(GROUP, config.port)],
        };
        let per_datagram = records_per_datagram(usize::from(mtu));
        let max_datagram = datagram_len(usize::from(mtu));
        Ok(SyncSender {
            socket: socket.into(),
            destinations,
            exports,
            sync_id: config.sync_id,
            sequence: 0,
            per_datagram,
            max_datagram,
            pending: Vec::with_capacity(per_datagram),
            pending_len: HEADER_LEN,
            oldest: None,
            buffer: Vec::with_capacity(max_datagram),
            counters,
            reported_error: false,
            keys: Arc::new(KeyCell::new(config.key.clone())),
            key_generation: u64::MAX,
            signer: None,
        })
    }

    /// Takes its key from `keys` from now on (the daemon's, which a reload changes).
    pub(super) fn share_keys(&mut self, keys: Arc<KeyCell>) {
        self.keys = keys;
        self.key_generation = u64::MAX;
    }

    /// Follows a key change. What is pending was sized for the old key's trailer, so it leaves
    /// first, under the old key. A new key keeps the sequence numbers going up; a first key
    /// starts them from the clock.
    fn refresh_key(&mut self) {
        let generation = self.keys.generation();
        if generation == self.key_generation {
            return;
        }
        self.flush();
        self.key_generation = generation;
        match (self.keys.get(), &mut self.signer) {
            (None, signer) => *signer = None,
            (Some(key), Some(signer)) => signer.rekey(&key),
            (Some(key), signer) => *signer = Some(Signer::from_clock(&key)),
        }
    }

    /// The longest datagram before the trailer: the MTU's less the trailer with a key.
    fn unsigned_limit(&self) -> usize {
        if self.signer.is_some() {
            (self.max_datagram - TRAILER_LEN).max(HEADER_LEN + MAX_RECORD_LEN)
        } else {
            self.max_datagram
        }
    }

    /// The next sequence number of the authentication trailer, with a key.
    pub fn auth_sequence(&self) -> Option<u64> {
        self.signer.as_ref().map(Signer::next_sequence)
    }

    /// IPv4 (24-byte) records per datagram (from the MTU).
    pub fn records_per_datagram(&self) -> usize {
        self.per_datagram
    }

    /// The longest datagram it sends (from the MTU), header (and with a key, trailer) included.
    pub fn max_datagram_len(&self) -> usize {
        self.max_datagram
    }

    /// Drains every export queue once (as many records as each held when reached, so a busy
    /// worker cannot keep this going forever): as master, sends every datagram that fills, and
    /// the partly filled one once its oldest record has waited [`FLUSH_INTERVAL`]; as backup,
    /// discards them. Returns the records drained.
    pub fn poll(&mut self, role: Role, now: Instant) -> usize {
        self.refresh_key();
        let limit = self.unsigned_limit();
        let mut drained = 0;
        for index in 0..self.exports.len() {
            let waiting = self.exports[index].len();
            for _ in 0..waiting {
                let Some(record) = self.exports[index].pop() else {
                    break;
                };
                drained += 1;
                if role == Role::Backup {
                    add(&self.counters.records_discarded, 1);
                    continue;
                }
                if self.pending_len + record.wire_len() > limit {
                    self.flush();
                }
                self.oldest.get_or_insert(now);
                self.pending.push(record);
                self.pending_len += record.wire_len();
                // Full: not even an IPv4 record would fit.
                if self.pending_len + RECORD_LEN > limit {
                    self.flush();
                }
            }
        }
        if role == Role::Backup {
            // Left over from the time it was master.
            add(&self.counters.records_discarded, self.pending.len() as u64);
            self.pending.clear();
            self.pending_len = HEADER_LEN;
            self.oldest = None;
        } else if self
            .oldest
            .is_some_and(|oldest| now.saturating_duration_since(oldest) >= FLUSH_INTERVAL)
        {
            self.flush();
        }
        drained
    }

    /// Sends the pending records now, if any.
    pub fn flush(&mut self) {
        self.oldest = None;
        if self.pending.is_empty() {
            return;
        }
        // Everything pending fits: `poll` flushes before a record would overflow the datagram.
        encode_datagram(self.sync_id, self.sequence, &self.pending, &mut self.buffer);
        self.sequence = self.sequence.wrapping_add(1);
        if let Some(signer) = &mut self.signer {
            signer.sign(&mut self.buffer);
        }
        let mut sent = false;
        for destination in &self.destinations {
            match self.socket.send_to(&self.buffer, destination) {
                Ok(_) => {
                    add(&self.counters.datagrams_sent, 1);
                    sent = true;
                }
                Err(error) => {
                    add(&self.counters.send_errors, 1);
                    if !self.reported_error {
                        // Once: the counter tells the rest.
                        warn!(%destination, %error, "sending state sync failed");
                        self.reported_error = true;
                    }
                }
            }
        }
        if sent {
            add(&self.counters.records_sent, self.pending.len() as u64);
        }
        self.pending.clear();
        self.pending_len = HEADER_LEN;
    }
}
