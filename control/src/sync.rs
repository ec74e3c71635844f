//! The sync daemon: connection state exchanged between directors over UDP, so established flows
//! and persistence survive a failover, as the IPVS sync daemon (`ip_vs_sync.c`) does for
//! keepalived pairs.
//!
//! The data plane exports and imports records through per-worker queues
//! ([`dataplane::sync`]); this module moves them between directors:
//! - [`SyncSender`] (the master's side) drains every worker's export queue on a control thread,
//!   batches the records into datagrams no larger than the interface's MTU allows, and sends them
//!   to the multicast group 224.0.0.81:8848 with TTL 1 (IPVS's group and port) or to a list of
//!   unicast peers, out of the configured interface. A partly filled datagram leaves after at
//!   most [`FLUSH_INTERVAL`] (IPVS waits up to 2 s; a shorter wait narrows the window in which a
//!   failover loses new flows).
//! - [`SyncReceiver`] (a backup's side) validates each datagram (magic, version, length, record
//!   count; anything else is counted and dropped, never trusted), filters it by sync id (IPVS's
//!   `syncid`, so several director pairs can share a link) and, with unicast peers, by source,
//!   then pushes each valid record to the import queue of the worker that would see the flow
//!   ([`Routing`]).
//! - [`SyncDaemon`] runs one of each on its own thread and switches roles at run time.
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
//! # Datagram format (version 1, big-endian)
//!
//! ```text
//!  0      4        5        6          8         10         12          16
//!  | magic | version | sync id | records | length | reserved | sequence |
//!  | "DSYN"|    1    |  0-255  |  count  | total  |    0     |  u32     |  records x 24 bytes
//! ```
//!
//! `length` is the whole datagram's and must equal 16 + 24 x `records`; `sequence` counts a
//! sender's datagrams, so a receiver can count the ones lost between two it got
//! (`datagrams_lost`). Records are [`dataplane::sync::SyncRecord`]'s 24-byte form. The sync
//! traffic is not authenticated (nor is IPVS's): keep it on a link only the directors share.
//!
//! What this module must not do: block a worker (queues are lock-free and bounded on both
//! sides; a full import queue drops the record and counts it), or panic on any datagram.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::conntrack::FlowKey;
use dataplane::sync::{RecordError, SyncQueue, SyncQueues, SyncRecord, RECORD_LEN};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tracing::{info, warn};

use crate::netlink::{self, NetlinkError};

/// The IPVS sync multicast group (`IP_VS_SYNC_GROUP`).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The IPVS sync port (`IP_VS_SYNC_PORT`).
pub const DEFAULT_PORT: u16 = 8848;
/// First bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"DSYN";
/// The format version this module writes and reads.
pub const VERSION: u8 = 1;
/// Length of the datagram header.
pub const HEADER_LEN: usize = 16;
/// Most records in one datagram (a UDP payload is at most 65 507 bytes).
pub const MAX_RECORDS: usize = (65_507 - HEADER_LEN) / RECORD_LEN;
/// Longest a record waits in a partly filled datagram before it is sent.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// How often the sender thread drains the export queues.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How long the receiver thread waits for a datagram before it checks for a stop.
const RECEIVE_TIMEOUT: Duration = Duration::from_millis(100);
/// IPv4 and UDP headers, taken from the MTU to size datagrams.
const IP_UDP_HEADERS: usize = 20 + 8;

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

    const fn from_u8(value: u8) -> Role {
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

/// Counters of both directions, for the stats socket. Written by the sync threads only.
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// Datagrams sent (to each destination counted once per destination).
    pub datagrams_sent: AtomicU64,
    /// Records sent (once per record, whatever the number of destinations).
    pub records_sent: AtomicU64,
    /// Datagrams the kernel refused to send.
    pub send_errors: AtomicU64,
    /// Exported records drained and thrown away because this director was a backup.
    pub records_discarded: AtomicU64,
    /// Valid datagrams of this cluster received (applied or ignored).
    pub datagrams_received: AtomicU64,
    /// Valid records received and queued for the workers.
    pub records_received: AtomicU64,
    /// Datagrams dropped as malformed (bad magic, version, length or record count).
    pub datagrams_malformed: AtomicU64,
    /// Records dropped as malformed (unknown kind, protocol, forwarding method or state).
    pub records_malformed: AtomicU64,
    /// Datagrams of another cluster (sync id) or, with unicast peers, from a stranger.
    pub datagrams_foreign: AtomicU64,
    /// Valid datagrams ignored because this director was the master.
    pub datagrams_ignored: AtomicU64,
    /// Datagrams a sender numbered but this receiver never got (gaps in the sequence).
    pub datagrams_lost: AtomicU64,
    /// Records a full worker import queue could not take (one per worker that refused it).
    pub records_dropped: AtomicU64,
}

/// A copy of [`SyncCounters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[expect(
    missing_docs,
    reason = "the fields mirror SyncCounters, documented there"
)]
pub struct SyncStats {
    pub datagrams_sent: u64,
    pub records_sent: u64,
    pub send_errors: u64,
    pub records_discarded: u64,
    pub datagrams_received: u64,
    pub records_received: u64,
    pub datagrams_malformed: u64,
    pub records_malformed: u64,
    pub datagrams_foreign: u64,
    pub datagrams_ignored: u64,
    pub datagrams_lost: u64,
    pub records_dropped: u64,
}

impl SyncCounters {
    /// The counters now.
    pub fn snapshot(&self) -> SyncStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SyncStats {
            datagrams_sent: load(&self.datagrams_sent),
            records_sent: load(&self.records_sent),
            send_errors: load(&self.send_errors),
            records_discarded: load(&self.records_discarded),
            datagrams_received: load(&self.datagrams_received),
            records_received: load(&self.records_received),
            datagrams_malformed: load(&self.datagrams_malformed),
            records_malformed: load(&self.records_malformed),
            datagrams_foreign: load(&self.datagrams_foreign),
            datagrams_ignored: load(&self.datagrams_ignored),
            datagrams_lost: load(&self.datagrams_lost),
            records_dropped: load(&self.records_dropped),
        }
    }
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

/// Why bytes are not a datagram of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Shorter than the header.
    #[error("shorter than the {HEADER_LEN}-byte header")]
    Truncated,
    /// Not our magic.
    #[error("bad magic")]
    Magic,
    /// A version this director does not read.
    #[error("unsupported version {0}")]
    Version(u8),
    /// The length field, the record count and the bytes received disagree.
    #[error("length {claimed} for {records} records, {received} bytes received")]
    Length {
        /// The header's length field.
        claimed: u16,
        /// The header's record count.
        records: u16,
        /// Bytes actually received.
        received: usize,
    },
    /// Another cluster's datagram.
    #[error("sync id {0} is another cluster's")]
    ForeignSyncId(u8),
}

/// A validated datagram: its header fields and its records, still encoded.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// The sender's sync id.
    pub sync_id: u8,
    /// The sender's datagram number.
    pub sequence: u32,
    records: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Validates `bytes` as a datagram of cluster `sync_id`. Every length is checked before any
    /// record is read, so no input can make a later read go out of bounds.
    pub fn parse(bytes: &'a [u8], sync_id: u8) -> Result<Self, DatagramError> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|header| header.try_into().ok())
            .ok_or(DatagramError::Truncated)?;
        if header[0..4] != MAGIC {
            return Err(DatagramError::Magic);
        }
        if header[4] != VERSION {
            return Err(DatagramError::Version(header[4]));
        }
        let records = u16::from_be_bytes([header[6], header[7]]);
        let claimed = u16::from_be_bytes([header[8], header[9]]);
        let expected = HEADER_LEN + usize::from(records) * RECORD_LEN;
        if usize::from(claimed) != expected || bytes.len() != expected {
            return Err(DatagramError::Length {
                claimed,
                records,
                received: bytes.len(),
            });
        }
        if header[5] != sync_id {
            return Err(DatagramError::ForeignSyncId(header[5]));
        }
        Ok(Datagram {
            sync_id: header[5],
            sequence: u32::from_be_bytes([header[12], header[13], header[14], header[15]]),
            records: &bytes[HEADER_LEN..],
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len() / RECORD_LEN
    }

    /// Whether it carries no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Its records, each decoded on its own: a bad one does not spoil the others.
    pub fn records(&self) -> impl Iterator<Item = Result<SyncRecord, RecordError>> + 'a {
        self.records
            .chunks_exact(RECORD_LEN)
            .map(SyncRecord::decode)
    }
}

/// Writes a datagram of `records` (at most [`MAX_RECORDS`]) into `out`, replacing its contents.
pub fn encode_datagram(sync_id: u8, sequence: u32, records: &[SyncRecord], out: &mut Vec<u8>) {
    let records = &records[..records.len().min(MAX_RECORDS)];
    let length = HEADER_LEN + records.len() * RECORD_LEN;
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(sync_id);
    // Both fit: MAX_RECORDS keeps the length under 65 507.
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&(length as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&sequence.to_be_bytes());
    let mut bytes = [0; RECORD_LEN];
    for record in records {
        record.encode(&mut bytes);
        out.extend_from_slice(&bytes);
    }
}

/// Records that fit a datagram on a link of `mtu` bytes (at least one, at most [`MAX_RECORDS`]).
pub fn records_per_datagram(mtu: usize) -> usize {
    (mtu.saturating_sub(IP_UDP_HEADERS + HEADER_LEN) / RECORD_LEN).clamp(1, MAX_RECORDS)
}

/// The master's side: drains the workers' export queues and sends datagrams.
pub struct SyncSender {
    socket: UdpSocket,
    destinations: Vec<SocketAddrV4>,
    exports: Vec<Arc<SyncQueue>>,
    sync_id: u8,
    sequence: u32,
    per_datagram: usize,
    pending: Vec<SyncRecord>,
    /// When the oldest pending record was drained.
    oldest: Option<Instant>,
    buffer: Vec<u8>,
    counters: Arc<SyncCounters>,
    reported_error: bool,
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
        Ok(SyncSender {
            socket: socket.into(),
            destinations,
            exports,
            sync_id: config.sync_id,
            sequence: 0,
            per_datagram,
            pending: Vec::with_capacity(per_datagram),
            oldest: None,
            buffer: Vec::with_capacity(HEADER_LEN + per_datagram * RECORD_LEN),
            counters,
            reported_error: false,
        })
    }

    /// Records per datagram (from the MTU).
    pub fn records_per_datagram(&self) -> usize {
        self.per_datagram
    }

    /// Drains every export queue once (as many records as each held when reached, so a busy
    /// worker cannot keep this going forever): as master, sends every datagram that fills, and
    /// the partly filled one once its oldest record has waited [`FLUSH_INTERVAL`]; as backup,
    /// discards them. Returns the records drained.
    pub fn poll(&mut self, role: Role, now: Instant) -> usize {
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
                self.oldest.get_or_insert(now);
                self.pending.push(record);
                if self.pending.len() >= self.per_datagram {
                    self.flush();
                }
            }
        }
        if role == Role::Backup {
            // Left over from the time it was master.
            add(&self.counters.records_discarded, self.pending.len() as u64);
            self.pending.clear();
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
        encode_datagram(self.sync_id, self.sequence, &self.pending, &mut self.buffer);
        self.sequence = self.sequence.wrapping_add(1);
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
    }
}

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
        })
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

    /// Handles one datagram from `from`: validated, filtered by sync id and peers, and as
    /// backup its records queued for the workers. Returns the records queued.
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

/// `map_err` helper naming the interface and the operation.
fn socket_error<'a>(
    interface: &'a str,
    operation: &'a str,
) -> impl FnOnce(io::Error) -> SyncError + 'a {
    move |source| SyncError::Socket {
        interface: interface.to_owned(),
        operation: operation.to_owned(),
        source,
    }
}

/// A sender and a receiver on their own threads, with a role control switches at run time.
/// Dropping it stops both threads (after sending what is pending, as master).
pub struct SyncDaemon {
    role: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    counters: Arc<SyncCounters>,
    threads: Vec<JoinHandle<()>>,
}

impl SyncDaemon {
    /// Opens both sockets on `config.interface` and starts the threads, in `role`. `queues`
    /// are the workers' (the same the pipelines got through
    /// [`dataplane::sync::SyncQueues::worker`]).
    pub fn start(
        config: &SyncConfig,
        queues: &SyncQueues,
        routing: Routing,
        role: Role,
    ) -> Result<Self, SyncError> {
        Self::with_queues(
            config,
            queues.exports().to_vec(),
            queues.imports().to_vec(),
            routing,
            role,
        )
    }

    /// [`SyncDaemon::start`] on queues given one by one (indexed by worker).
    pub fn with_queues(
        config: &SyncConfig,
        exports: Vec<Arc<SyncQueue>>,
        imports: Vec<Arc<SyncQueue>>,
        routing: Routing,
        role: Role,
    ) -> Result<Self, SyncError> {
        let counters = Arc::new(SyncCounters::default());
        let mut sender = SyncSender::new(config, exports, Arc::clone(&counters))?;
        let mut receiver = SyncReceiver::new(config, imports, routing, Arc::clone(&counters))?;
        let role_cell = Arc::new(AtomicU8::new(role as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let mut daemon = SyncDaemon {
            role: Arc::clone(&role_cell),
            stop: Arc::clone(&stop),
            counters,
            threads: Vec::new(),
        };
        let (sender_role, sender_stop) = (Arc::clone(&role_cell), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("sync-sender".to_owned())
            .spawn(move || {
                while !sender_stop.load(Ordering::Relaxed) {
                    let role = Role::from_u8(sender_role.load(Ordering::Relaxed));
                    sender.poll(role, Instant::now());
                    std::thread::sleep(POLL_INTERVAL);
                }
                let role = Role::from_u8(sender_role.load(Ordering::Relaxed));
                sender.poll(role, Instant::now());
                if role == Role::Master {
                    sender.flush();
                }
            })
            .map_err(|source| SyncError::Thread {
                name: "sender",
                source,
            })?;
        daemon.threads.push(thread);
        let thread = std::thread::Builder::new()
            .name("sync-receiver".to_owned())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    receiver.poll(|| Role::from_u8(role_cell.load(Ordering::Relaxed)));
                }
            })
            .map_err(|source| SyncError::Thread {
                name: "receiver",
                source,
            })?;
        daemon.threads.push(thread);
        let destination = config.peers.as_ref().map_or_else(
            || format!("{GROUP}:{}", config.port),
            |peers| format!("{peers:?} port {}", config.port),
        );
        info!(
            interface = %config.interface,
            sync_id = config.sync_id,
            %destination,
            role = role.name(),
            "state sync started"
        );
        Ok(daemon)
    }

    /// Switches the role (on a VRRP transition); takes effect within a few milliseconds.
    pub fn set_role(&self, role: Role) {
        let old = Role::from_u8(self.role.swap(role as u8, Ordering::Relaxed));
        if old != role {
            info!(
                from = old.name(),
                to = role.name(),
                "state sync role changed"
            );
        }
    }

    /// The current role.
    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Relaxed))
    }

    /// Both directions' counters.
    pub fn counters(&self) -> &Arc<SyncCounters> {
        &self.counters
    }

    /// Stops both threads and waits for them (at most about 100 ms).
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                warn!("a state sync thread panicked");
            }
        }
    }
}

impl Drop for SyncDaemon {
    fn drop(&mut self) {
        self.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::conntrack::ConnState;
    use dataplane::sync::{ConnectionRecord, TemplateRecord};
    use dataplane::{Forwarding, ServiceKey};
    use proptest::prelude::*;

    fn record(n: u16) -> SyncRecord {
        SyncRecord::Connection(ConnectionRecord {
            key: FlowKey {
                src_addr: Ipv4Addr::new(198, 51, 100, 7),
                dst_addr: Ipv4Addr::new(192, 0, 2, 10),
                src_port: 40000 + n,
                dst_port: 80,
                protocol: dataplane::Protocol::Tcp,
            },
            backend: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 11), 80),
            forwarding: Forwarding::DirectRouting,
            state: ConnState::TcpEstablished,
        })
    }

    fn template() -> SyncRecord {
        SyncRecord::Template(TemplateRecord {
            service: ServiceKey {
                vip: Ipv4Addr::new(192, 0, 2, 10),
                port: 443,
                protocol: dataplane::Protocol::Tcp,
            },
            client: Ipv4Addr::new(198, 51, 100, 0),
            backend: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 12), 443),
        })
    }

    #[test]
    fn datagram_golden_bytes() {
        let mut out = Vec::new();
        encode_datagram(7, 0x0102_0304, &[record(0)], &mut out);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &b"DSYN"[..],
            &[1, 7],                // version, sync id
            &[0, 1],                // one record
            &[0, 40],               // 16 + 24 bytes
            &[0, 0],                // reserved
            &[1, 2, 3, 4],          // sequence
            &[1, 6, 0, 1],          // connection, TCP, DR, established
            &[198, 51, 100, 7, 192, 0, 2, 10, 192, 0, 2, 11],
            &[0x9c, 0x40, 0, 80, 0, 80, 0, 0],
        ]
        .concat();
        assert_eq!(out, expected);
        let datagram = Datagram::parse(&out, 7).unwrap();
        assert_eq!((datagram.sync_id, datagram.sequence), (7, 0x0102_0304));
        assert_eq!(datagram.records().collect::<Vec<_>>(), vec![Ok(record(0))]);
    }

    #[test]
    fn malformed_datagrams_are_named() {
        let mut good = Vec::new();
        encode_datagram(3, 0, &[record(0), template()], &mut good);
        assert_eq!(Datagram::parse(&good, 3).unwrap().len(), 2);
        let with = |at: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[at] = value;
            Datagram::parse(&bytes, 3).map(|datagram| datagram.len())
        };
        assert_eq!(with(0, b'X').unwrap_err(), DatagramError::Magic);
        assert_eq!(with(4, 2).unwrap_err(), DatagramError::Version(2));
        assert!(matches!(
            with(7, 3).unwrap_err(),
            DatagramError::Length { records: 3, .. }
        ));
        assert!(matches!(
            with(9, 0).unwrap_err(),
            DatagramError::Length { claimed: 0, .. }
        ));
        assert_eq!(with(5, 4).unwrap_err(), DatagramError::ForeignSyncId(4));
        assert_eq!(
            Datagram::parse(&good[..good.len() - 1], 3).unwrap_err(),
            DatagramError::Length {
                claimed: 64,
                records: 2,
                received: 63
            }
        );
        assert_eq!(
            Datagram::parse(&good[..10], 3).unwrap_err(),
            DatagramError::Truncated
        );
        // One bad record does not spoil the other.
        let mut bytes = good.clone();
        bytes[HEADER_LEN] = 9;
        let datagram = Datagram::parse(&bytes, 3).unwrap();
        let records: Vec<_> = datagram.records().collect();
        assert_eq!(records[0], Err(RecordError::Kind(9)));
        assert_eq!(records[1], Ok(template()));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                    sync_id in any::<u8>()) {
            if let Ok(datagram) = Datagram::parse(&bytes, sync_id) {
                prop_assert_eq!(datagram.records().count(), datagram.len());
            }
        }

        #[test]
        fn random_records_after_a_valid_header_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..10).prop_flat_map(|counts| {
                proptest::collection::vec(any::<u8>(), counts.len() * RECORD_LEN)
            }),
        ) {
            let count = body.len() / RECORD_LEN;
            let mut bytes = Vec::new();
            encode_datagram(1, 9, &[], &mut bytes);
            bytes[6..8].copy_from_slice(&(count as u16).to_be_bytes());
            bytes[8..10].copy_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
            bytes.extend_from_slice(&body);
            let datagram = Datagram::parse(&bytes, 1).unwrap();
            prop_assert_eq!(datagram.records().count(), count);
        }
    }

    #[test]
    fn datagrams_fit_the_mtu() {
        assert_eq!(records_per_datagram(1500), (1500 - 44) / 24);
        assert_eq!(records_per_datagram(0), 1);
        assert_eq!(records_per_datagram(usize::from(u16::MAX)), MAX_RECORDS);
        let mut out = Vec::new();
        let many: Vec<_> = (0..MAX_RECORDS as u16 + 5).map(record).collect();
        encode_datagram(0, 0, &many, &mut out);
        assert!(out.len() <= 65_507);
        assert_eq!(Datagram::parse(&out, 0).unwrap().len(), MAX_RECORDS);
    }

    /// A sender and a receiver on the loopback interface, unicast, in this process: no root.
    fn loopback(
        sync_id: u8,
        port: u16,
        workers: usize,
        routing: Routing,
    ) -> (SyncSender, SyncReceiver, SyncQueues, Arc<SyncCounters>) {
        let queues = SyncQueues::new(workers, 4096);
        let counters = Arc::new(SyncCounters::default());
        let receiver_config = SyncConfig {
            interface: "lo".to_owned(),
            sync_id,
            peers: Some(vec![Ipv4Addr::LOCALHOST]),
            port,
        };
        let receiver = SyncReceiver::new(
            &receiver_config,
            queues.imports().to_vec(),
            routing,
            Arc::clone(&counters),
        )
        .unwrap();
        let port = receiver.local_addr().unwrap().port();
        let sender = SyncSender::new(
            &SyncConfig {
                port,
                ..receiver_config
            },
            queues.exports().to_vec(),
            Arc::clone(&counters),
        )
        .unwrap();
        (sender, receiver, queues, counters)
    }

    /// Receives until `want` records were queued or 2 s pass.
    fn receive(receiver: &mut SyncReceiver, want: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut queued = 0;
        while queued < want && Instant::now() < deadline {
            queued += receiver.poll(|| Role::Backup);
        }
        queued
    }

    #[test]
    fn batches_by_mtu_and_flushes_partial_datagrams() {
        let Ok(mtu) = netlink::interface_mtu("lo") else {
            return;
        };
        // Port 0: the kernel picks one for the receiver.
        let (mut sender, mut receiver, queues, counters) = loopback(5, 0, 2, Routing::Broadcast);
        let per = sender.records_per_datagram();
        assert_eq!(per, records_per_datagram(usize::from(mtu)));
        // One and a half datagrams' worth, from two workers.
        let total = per + per / 2;
        for n in 0..total {
            queues.exports()[n % 2].push(record(n as u16)).unwrap();
        }
        let start = Instant::now();
        assert_eq!(sender.poll(Role::Master, start), total);
        assert_eq!(counters.snapshot().datagrams_sent, 1, "only the full one");
        // Not yet old enough; then old enough.
        sender.poll(Role::Master, start + FLUSH_INTERVAL / 2);
        assert_eq!(counters.snapshot().datagrams_sent, 1);
        sender.poll(Role::Master, start + FLUSH_INTERVAL);
        assert_eq!(counters.snapshot().datagrams_sent, 2);
        assert_eq!(receive(&mut receiver, total), total);
        let stats = counters.snapshot();
        assert_eq!(stats.records_sent, total as u64);
        assert_eq!(stats.records_received, total as u64);
        assert_eq!(stats.datagrams_received, 2);
        assert_eq!(stats.datagrams_lost, 0);
        // Broadcast: every worker got every record, in order.
        for queue in queues.imports() {
            let got: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
            let mut want: Vec<_> = (0..total).map(|n| record(n as u16)).collect::<Vec<_>>();
            // The sender drains worker 0's queue, then worker 1's.
            want.sort_by_key(|record| match record {
                SyncRecord::Connection(c) => ((c.key.src_port - 40000) % 2, c.key.src_port),
                SyncRecord::Template(_) => (2, 0),
            });
            assert_eq!(got, want);
        }
    }

    #[test]
    fn sync_id_role_and_peers_filter() {
        let (mut sender, mut receiver, queues, counters) = loopback(1, 0, 1, Routing::Broadcast);
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.99:9".parse().unwrap();
        let mut bytes = Vec::new();
        encode_datagram(2, 0, &[record(1)], &mut bytes);
        assert_eq!(receiver.handle(&bytes, from, Role::Backup), 0);
        assert_eq!(counters.snapshot().datagrams_foreign, 1, "another cluster");
        encode_datagram(1, 1, &[record(1), template()], &mut bytes);
        assert_eq!(receiver.handle(&bytes, stranger, Role::Backup), 0);
        assert_eq!(counters.snapshot().datagrams_foreign, 2, "not a peer");
        assert_eq!(receiver.handle(&bytes, from, Role::Master), 0);
        assert_eq!(counters.snapshot().datagrams_ignored, 1, "a master ignores");
        assert_eq!(receiver.handle(&bytes[..20], from, Role::Backup), 0);
        assert_eq!(counters.snapshot().datagrams_malformed, 1);
        assert!(queues.imports()[0].is_empty());
        encode_datagram(1, 4, &[record(1), template()], &mut bytes);
        assert_eq!(receiver.handle(&bytes, from, Role::Backup), 2);
        assert_eq!(counters.snapshot().datagrams_lost, 2, "datagrams 2 and 3");
        assert_eq!(queues.imports()[0].len(), 2);

        // A backup drains its own exports without sending them.
        queues.exports()[0].push(record(5)).unwrap();
        assert_eq!(sender.poll(Role::Backup, Instant::now()), 1);
        sender.flush();
        let stats = counters.snapshot();
        assert_eq!((stats.records_discarded, stats.datagrams_sent), (1, 0));
    }

    #[test]
    fn hash_routing_picks_one_worker_and_templates_go_to_the_first() {
        fn by_port(key: &FlowKey, _workers: usize) -> usize {
            usize::from(key.src_port)
        }
        let (_, mut receiver, queues, counters) = loopback(1, 0, 3, Routing::Hash(by_port));
        let mut bytes = Vec::new();
        let records: Vec<_> = (0..6).map(record).chain([template()]).collect();
        encode_datagram(1, 0, &records, &mut bytes);
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(receiver.handle(&bytes, from, Role::Backup), 7);
        let lens: Vec<_> = queues.imports().iter().map(|queue| queue.len()).collect();
        // Ports 40000..40005 mod 3: 40000 % 3 = 1.
        assert_eq!(lens, vec![2 + 1, 2, 2]);
        assert_eq!(counters.snapshot().records_dropped, 0);
    }

    #[test]
    fn a_full_import_queue_drops_and_counts() {
        let queues = SyncQueues::new(2, 1);
        let counters = Arc::new(SyncCounters::default());
        let mut receiver = SyncReceiver::new(
            &SyncConfig {
                interface: "lo".to_owned(),
                sync_id: 0,
                peers: Some(vec![Ipv4Addr::LOCALHOST]),
                port: 0,
            },
            queues.imports().to_vec(),
            Routing::Broadcast,
            Arc::clone(&counters),
        )
        .unwrap();
        let mut bytes = Vec::new();
        encode_datagram(0, 0, &[record(1), record(2)], &mut bytes);
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(receiver.handle(&bytes, from, Role::Backup), 2);
        // Each worker took the first; each refused the second.
        assert_eq!(counters.snapshot().records_dropped, 2);
    }

    /// Waits (at most 2 s) until `done` holds.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        done()
    }

    #[test]
    fn daemon_switches_roles_at_run_time() {
        // A free port (the daemon sends to its peers on the port it listens on).
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let queues = SyncQueues::new(1, 64);
        // Its only peer is itself: as master it receives what it sends, and ignores it.
        let daemon = SyncDaemon::start(
            &SyncConfig {
                interface: "lo".to_owned(),
                sync_id: 9,
                peers: Some(vec![Ipv4Addr::LOCALHOST]),
                port,
            },
            &queues,
            Routing::Broadcast,
            Role::Backup,
        )
        .unwrap();
        let stats = || daemon.counters().snapshot();

        // Backup: its own exports are discarded, a peer's records reach the worker.
        queues.exports()[0].push(record(1)).unwrap();
        assert!(eventually(|| stats().records_discarded == 1));
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut bytes = Vec::new();
        encode_datagram(9, 0, &[record(2)], &mut bytes);
        peer.send_to(&bytes, ("127.0.0.1", port)).unwrap();
        assert!(eventually(|| queues.imports()[0].len() == 1));
        assert_eq!(queues.imports()[0].pop(), Some(record(2)));

        // Master: exports leave (and come back to itself, ignored).
        daemon.set_role(Role::Master);
        assert_eq!(daemon.role(), Role::Master);
        queues.exports()[0].push(record(3)).unwrap();
        assert!(eventually(|| stats().records_sent == 1));
        assert!(
            eventually(|| stats().datagrams_ignored == 1),
            "{:?}",
            stats()
        );
        assert!(queues.imports()[0].is_empty());
        assert_eq!(stats().send_errors, 0);
        daemon.stop();
    }
}
