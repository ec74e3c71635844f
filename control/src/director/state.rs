//! The running director's state that the stats socket reads: the [`Shared`] snapshot of
//! interfaces, workers, the published table and HA status, and the [`Command`] a socket request
//! becomes when it must go through the main loop.
//!
//! A leaf module: the loop ([`super`]) writes this state and [`crate::stats`] renders it, and
//! neither is imported here. It must hold data only, no behaviour of the loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use dataplane::xdp::XdpClassifier;
use dataplane::{ServiceTable, WorkerCounters};
use director_proto::{Reply, Request};

use crate::fib::FibTask;
use crate::ha::sync::SyncCounters;
use crate::ha::vrrp::VrrpStatusSource;
use crate::health::HealthBoard;
use crate::rates::RateTracker;
use crate::table::PoolView;

/// One interface the director serves.
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// Its MAC address (the source MAC of forwarded frames).
    pub mac: [u8; 6],
    /// The classifier attached to it.
    pub classifier: XdpClassifier,
}

/// A running worker as control sees it.
pub struct WorkerHandle {
    /// Index.
    pub index: usize,
    /// Interface name.
    pub interface: String,
    /// RX queue.
    pub queue: u32,
    /// Its counters.
    pub counters: Arc<WorkerCounters>,
    /// Where new tables go to this worker (only the loop publishes).
    pub(super) tables: Sender<Arc<ServiceTable>>,
}

/// What the stats socket reads.
pub struct Shared {
    /// Process start.
    pub started: Instant,
    /// The table the workers were last sent.
    pub table: Mutex<Arc<ServiceTable>>,
    /// What that table leaves out (disabled and down servers, to show them anyway) and which
    /// of its servers are fallbacks.
    pub pool: Mutex<PoolView>,
    /// Health and check counters of the checked servers.
    pub health: Arc<HealthBoard>,
    /// Interfaces with their classifiers.
    pub interfaces: Vec<Interface>,
    /// Workers.
    pub workers: Vec<WorkerHandle>,
    /// Counter samples for the replies' rates, taken once a second by the main loop.
    pub rates: RateTracker,
    /// VRRP and sync state, with `[ha]` (set once VRRP runs).
    pub ha: OnceLock<HaView>,
    /// The routing table mirror, for a director that forwards NAT or TUN.
    pub fib: Option<FibTask>,
}

/// What the stats socket reads of VRRP and state sync.
pub struct HaView {
    /// The router's status.
    pub vrrp: VrrpStatusSource,
    /// Whether this director holds the VIPs now.
    pub serving: Arc<AtomicBool>,
    /// The sync daemon's counters, with `ha.sync`.
    pub sync: Option<Arc<SyncCounters>>,
    /// How long takeovers took (written by the HA actions thread).
    pub takeover_latency: Arc<TakeoverLatency>,
}

/// How long takeovers took, from the VRRP threads' decision to the VIPs added and steered.
#[derive(Debug, Default)]
pub struct TakeoverLatency {
    /// The last one's, in microseconds (0 before the first).
    pub last_us: AtomicU64,
    /// The longest one's, in microseconds.
    pub max_us: AtomicU64,
}

impl TakeoverLatency {
    /// Records one takeover's.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.last_us.store(micros, Ordering::Relaxed);
        self.max_us.fetch_max(micros, Ordering::Relaxed);
    }
}

/// A mutating request from the control socket, with where its answer goes. The main loop
/// executes these one at a time, so reloads and run-time changes never interleave.
pub struct Command {
    /// What to do.
    pub request: Request,
    /// Where to send the outcome.
    pub reply: Sender<Reply>,
}
