//! The director's stats and control socket protocol: one JSON request per line from the client,
//! one JSON reply per line from the director, over a Unix stream socket.
//!
//! This crate holds only the message types, so `lbstat` and scripts can speak the protocol
//! without linking the data plane. It must not do I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default socket path, as in the configuration's `[director] stats_socket`.
pub const DEFAULT_SOCKET: &str = "/run/director/director.sock";

/// Largest request line the director reads; longer requests get an error reply.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A request line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// All counters: services, backends, workers, XDP classifier.
    Stats,
}

/// A reply line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Stats`].
    Stats(Stats),
    /// The request could not be served.
    Error {
        /// What went wrong, for a person.
        message: String,
    },
}

/// Everything `lbstat` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds since the director started.
    pub uptime_seconds: f64,
    /// Configured services.
    pub services: Vec<ServiceStats>,
    /// Per-worker counters.
    pub workers: Vec<WorkerStats>,
    /// The XDP classifier's counters summed over CPUs, by name (e.g. "redirected", "no_service").
    pub xdp: BTreeMap<String, u64>,
}

/// One virtual service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Operator's name.
    pub name: String,
    /// Virtual IP.
    pub vip: String,
    /// Port.
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
    /// Scheduler name ("rr", "maglev").
    pub scheduler: String,
    /// Forwarding method ("dr").
    pub forwarding: String,
    /// Real servers.
    pub backends: Vec<BackendStats>,
}

/// One real server of one service, summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Address.
    pub address: String,
    /// Port (the service's port under DR).
    pub port: u16,
    /// Configured weight.
    pub weight: u32,
    /// MAC address in use, if resolved.
    pub mac: Option<String>,
    /// New flows scheduled to it.
    pub connections_total: u64,
    /// Frames forwarded to it.
    pub packets_in: u64,
    /// Bytes forwarded to it.
    pub bytes_in: u64,
    /// Frames from it through the director (always 0 under DR).
    pub packets_out: u64,
    /// Bytes from it through the director (always 0 under DR).
    pub bytes_out: u64,
}

/// One worker thread.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: usize,
    /// Interface it serves.
    pub interface: String,
    /// RX queue it serves.
    pub queue: u32,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Drops by reason name.
    pub drops: BTreeMap<String, u64>,
    /// Other counters by name (connections_created, fill_ring_starved, kernel XDP socket stats...).
    pub counters: BTreeMap<String, u64>,
}
