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

mod receiver;
mod sender;

use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::conntrack::FlowKey;
use dataplane::sync::{SyncQueue, SyncQueues};
use tracing::{info, warn};

use crate::netlink::NetlinkError;
pub use dataplane::sync::wire::{
    encode_datagram, records_per_datagram, Datagram, DatagramError, HEADER_LEN, MAGIC, MAX_RECORDS,
    VERSION,
};
pub use receiver::SyncReceiver;
pub use sender::SyncSender;

/// The IPVS sync multicast group (`IP_VS_SYNC_GROUP`).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The IPVS sync port (`IP_VS_SYNC_PORT`).
pub const DEFAULT_PORT: u16 = 8848;
/// Longest a record waits in a partly filled datagram before it is sent.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// How often the sender thread drains the export queues.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

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
mod tests;
