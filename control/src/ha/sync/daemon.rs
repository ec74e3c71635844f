//! [`SyncDaemon`]: a sender and a receiver, each on its own thread, with the role control
//! switches at run time by one atomic store (no socket churn, nothing to restart), and the key
//! a reload may replace ([`SyncDaemon::set_key`]).
//!
//! What it must not do: block the caller on a role switch, or outlive its handle (dropping it
//! stops both threads).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::sync::{SyncQueue, SyncQueues};
use tracing::{info, warn};

use crate::config::SyncKey;

use super::auth::KeyCell;
use super::config::{Role, Routing, SyncConfig, SyncError, GROUP};
use super::counters::SyncCounters;
use super::receiver::SyncReceiver;
use super::sender::SyncSender;

/// How often the sender thread drains the export queues.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A sender and a receiver on their own threads, with a role control switches at run time.
/// Dropping it stops both threads (after sending what is pending, as master).
pub struct SyncDaemon {
    role: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    counters: Arc<SyncCounters>,
    keys: Arc<KeyCell>,
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
        counters
            .authenticated
            .store(config.key.is_some(), Ordering::Relaxed);
        let mut sender = SyncSender::new(config, exports, Arc::clone(&counters))?;
        let mut receiver = SyncReceiver::new(config, imports, routing, Arc::clone(&counters))?;
        let keys = Arc::new(KeyCell::new(config.key.clone()));
        sender.share_keys(Arc::clone(&keys));
        receiver.share_keys(Arc::clone(&keys));
        let role_cell = Arc::new(AtomicU8::new(role as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let mut daemon = SyncDaemon {
            role: Arc::clone(&role_cell),
            stop: Arc::clone(&stop),
            counters,
            keys,
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
            authenticated = config.key.is_some(),
            "state sync started"
        );
        Ok(daemon)
    }

    /// Replaces the key (a reload): the next datagram sent is signed with it and the next one
    /// received checked against it; `None` goes back to unauthenticated sync. Sequence numbers
    /// and replay windows carry on.
    pub fn set_key(&self, key: Option<SyncKey>) {
        if self.keys.get() != key {
            info!(authenticated = key.is_some(), "state sync key changed");
            self.counters
                .authenticated
                .store(key.is_some(), Ordering::Relaxed);
            self.keys.set(key);
        }
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
