//! The director's stats and control socket protocol: one JSON request per line from the client,
//! one JSON reply per line from the director, over a Unix stream socket.
//!
//! This crate holds the message types and a minimal blocking client ([`call`]), so `lbstat`,
//! the `director` command line and scripts speak the protocol without linking the data plane.
//! It must not hold server logic.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod prometheus;
pub use prometheus::{prometheus, PROMETHEUS_CONTENT_TYPE};

/// `address:port` as a URI's authority writes it: an IPv6 address in brackets
/// (`[2001:db8::10]:80`, RFC 3986 section 3.2.2), an IPv4 one as it is (`192.0.2.10:80`).
/// `port` may be a list (`80,443`). Everything that shows an address with a port uses it.
pub fn host_port(address: &str, port: impl std::fmt::Display) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// `"ipv6"` for an IPv6 address as the stats show it, else `"ipv4"`: the `family` of JSON
/// services and of Prometheus labels.
pub fn address_family(address: &str) -> &'static str {
    if address.contains(':') {
        "ipv6"
    } else {
        "ipv4"
    }
}

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
    /// Re-read the configuration file the director was started with and apply it without a
    /// restart; an invalid file is rejected and the running configuration kept.
    Reload,
    /// Set a backend's weight until the next reload (0 drains it: no new flows).
    SetWeight {
        /// Service name.
        service: String,
        /// Backend address.
        backend: String,
        /// New weight.
        weight: u32,
    },
    /// Weight 0 until the next reload: existing flows continue, new ones go elsewhere.
    Drain {
        /// Service name.
        service: String,
        /// Backend address.
        backend: String,
    },
    /// Take a backend out of the pool until the next reload or `enable`: no new flows, and its
    /// flows are rescheduled.
    Disable {
        /// Service name.
        service: String,
        /// Backend address.
        backend: String,
    },
    /// Undo `disable`.
    Enable {
        /// Service name.
        service: String,
        /// Backend address.
        backend: String,
    },
}

impl Request {
    /// Whether the request changes the director's state.
    pub fn is_mutating(&self) -> bool {
        !matches!(self, Request::Stats)
    }
}

/// A reply line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Stats`].
    Stats(Stats),
    /// A mutating request succeeded.
    Ok {
        /// What was done, for a person.
        message: String,
    },
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
    /// VRRP and state sync, when `[ha]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<Box<HaStats>>,
    /// The routing table mirror, for a director that forwards NAT or TUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Box<RoutingStats>>,
}

/// Next hops from the kernel's routing table: the mirror's size and freshness, and the next
/// hop of each TUN real server and of the NAT client side's default route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingStats {
    /// `[director] nat_reply`: "last-hop" or "route".
    pub nat_reply: String,
    /// Milliseconds since the snapshot in use was built.
    pub last_update_age_ms: u64,
    /// Bytes the snapshot's tables hold.
    pub memory_bytes: u64,
    /// The mirror's counters by name (prefixes, next_hops, rebuilds, notifications,
    /// neighbour_confirmations, routes_blackhole, ...).
    pub counters: BTreeMap<String, u64>,
    /// Next hops of interest: `role` says whose ("tun web 203.0.113.11", "nat client side").
    pub next_hops: Vec<NextHopStats>,
}

/// The next hop a route lookup gives for one destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextHopStats {
    /// Whose next hop this is: "tun SERVICE ADDRESS" or "nat client side".
    pub role: String,
    /// The destination looked up.
    pub destination: String,
    /// The next hop's address (a gateway, or the destination itself on-link).
    pub via: Option<String>,
    /// Its MAC when resolved.
    pub mac: Option<String>,
    /// "resolved", "unresolved", "failed", or why there is no next hop ("no_route",
    /// "route_blackhole", ...).
    pub state: String,
}

/// The director's part in its VRRP group, and its connection sync.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HaStats {
    /// "MASTER", "BACKUP", "FAULT" or "INIT".
    pub state: String,
    /// Whether this director holds the VIPs and forwards (master).
    pub serving: bool,
    /// Virtual router id.
    pub vrid: u8,
    /// Our priority.
    pub priority: u8,
    /// The master as last heard (ourselves while master).
    #[serde(default)]
    pub master_address: Option<String>,
    /// The master's priority.
    #[serde(default)]
    pub master_priority: Option<u8>,
    /// Advertisements sent.
    pub adverts_sent: u64,
    /// Valid advertisements received for our vrid.
    pub adverts_received: u64,
    /// State changes.
    pub transitions: u64,
    /// Times this director became master.
    pub became_master: u64,
    /// Datagrams discarded as invalid (bad TTL, checksum, version...).
    pub adverts_invalid: u64,
    /// Gratuitous ARP frames sent.
    pub gratuitous_arps_sent: u64,
    /// How long the last takeover took, in microseconds, from VRRP's decision to the VIPs
    /// added and steered to the workers (0 before the first).
    #[serde(default)]
    pub takeover_latency_us: u64,
    /// The longest takeover since start, in microseconds.
    #[serde(default)]
    pub takeover_latency_max_us: u64,
    /// Connection sync, when `ha.sync` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStats>,
}

/// Connection sync counters (the master sends, backups apply).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStats {
    /// "master" (sending) or "backup" (applying).
    pub role: String,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Records sent.
    pub records_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Records received.
    pub records_received: u64,
    /// Datagrams that did not parse.
    pub datagrams_malformed: u64,
    /// Datagrams missed, by sequence number.
    pub datagrams_lost: u64,
    /// Records dropped because a worker's import queue was full.
    pub records_dropped: u64,
    /// Send errors.
    pub send_errors: u64,
    /// Whether sync is authenticated (`ha.sync_key`); false from a director that predates it.
    #[serde(default)]
    pub authenticated: bool,
    /// With a key: datagrams refused for carrying no authentication trailer.
    #[serde(default)]
    pub auth_missing: u64,
    /// With a key: datagrams refused for a tag that did not match (another key, or altered).
    #[serde(default)]
    pub auth_bad_tag: u64,
    /// With a key: datagrams refused as replayed or older than the replay window.
    #[serde(default)]
    pub auth_replayed: u64,
    /// Without a key: keyed datagrams ignored (the other director has a key, this one not).
    #[serde(default)]
    pub auth_unexpected: u64,
}

/// One virtual service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Operator's name.
    pub name: String,
    /// Virtual IP.
    pub vip: String,
    /// The VIP's family, `"ipv4"` or `"ipv6"` ([`address_family`]); empty from a director
    /// that predates IPv6.
    #[serde(default)]
    pub family: String,
    /// Port (the first, for a service group).
    pub port: u16,
    /// Every port of the service.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Persistence timeout in seconds, if the service is persistent.
    #[serde(default)]
    pub persistence_seconds: Option<u64>,
    /// "tcp" or "udp".
    pub protocol: String,
    /// Scheduler name ("rr", "maglev").
    pub scheduler: String,
    /// Forwarding method ("dr").
    pub forwarding: String,
    /// Real servers.
    pub backends: Vec<BackendStats>,
    /// Its backends' rates summed, over the last second.
    #[serde(default)]
    pub rate_1s: Rates,
    /// Its backends' rates summed, over the last five seconds.
    #[serde(default)]
    pub rate_5s: Rates,
}

/// Whether a real server takes new flows: `down` when its health check failed `fall` times in a
/// row (until it passes `rise` times) or when it was taken out with `disable`. A server without
/// a health check is `up` unless disabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// In the pool.
    #[default]
    Up,
    /// Out of the pool.
    Down,
}

impl Health {
    /// "up" or "down", as the JSON has it.
    pub const fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// Per-second rates of a backend (or a service: its backends summed), computed by the director
/// from counter samples it takes once a second. All zero until two samples exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// New connections per second (`connections_total`).
    pub connections_per_second: f64,
    /// Frames forwarded per second (`packets_in`).
    pub packets_per_second: f64,
    /// Bytes forwarded per second (`bytes_in`).
    pub bytes_per_second: f64,
}

impl std::ops::Add for Rates {
    type Output = Rates;

    /// Field-wise sum.
    fn add(self, other: Rates) -> Rates {
        Rates {
            connections_per_second: self.connections_per_second + other.connections_per_second,
            packets_per_second: self.packets_per_second + other.packets_per_second,
            bytes_per_second: self.bytes_per_second + other.bytes_per_second,
        }
    }
}

/// Per-second rates of a worker, computed like [`Rates`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerRates {
    /// Frames received per second.
    pub rx_packets_per_second: f64,
    /// Bytes received per second.
    pub rx_bytes_per_second: f64,
    /// Frames transmitted per second.
    pub tx_packets_per_second: f64,
    /// Bytes transmitted per second.
    pub tx_bytes_per_second: f64,
}

/// One real server of one service, summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Address.
    pub address: String,
    /// Port (the service's port under DR).
    pub port: u16,
    /// Weight in effect (the configured one unless changed at run time).
    pub weight: u32,
    /// Taken out of the pool at run time (`disable`).
    #[serde(default)]
    pub disabled: bool,
    /// "up" or "down" (`down` when disabled).
    #[serde(default)]
    pub health: Health,
    /// Health checks of it that passed (0 without a `[service.health_check]`).
    #[serde(default)]
    pub checks_passed: u64,
    /// Health checks of it that failed.
    #[serde(default)]
    pub checks_failed: u64,
    /// Changes of its health, up to down or back.
    #[serde(default)]
    pub health_transitions: u64,
    /// Why its last failed health check failed ("connection refused", "status 503 (expected
    /// 200)"), if one ever did.
    #[serde(default)]
    pub last_check_failure: Option<String>,
    /// The service's fallback (sorry) server, in the pool because no real server is.
    #[serde(default)]
    pub fallback: bool,
    /// Connections in an active state (TCP established, UDP), summed over workers.
    #[serde(default)]
    pub active_connections: u64,
    /// Connections in other TCP states, summed over workers.
    #[serde(default)]
    pub inactive_connections: u64,
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
    /// Rates over the last second.
    #[serde(default)]
    pub rate_1s: Rates,
    /// Rates over the last five seconds.
    #[serde(default)]
    pub rate_5s: Rates,
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
    /// RX/TX rates over the last second.
    #[serde(default)]
    pub rate_1s: WorkerRates,
    /// RX/TX rates over the last five seconds.
    #[serde(default)]
    pub rate_5s: WorkerRates,
}

/// How long [`call`] waits for the director to take a request and to answer it. A reload waits
/// for every worker to adopt the new tables, well within this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request to the director at `socket` and returns its reply.
pub fn call(socket: &Path, request: &Request) -> io::Result<Reply> {
    let context = |what: &str, error: io::Error| {
        io::Error::new(
            error.kind(),
            format!("{what} {}: {error}", socket.display()),
        )
    };
    let mut stream = UnixStream::connect(socket)
        .map_err(|error| context("is director running? socket", error))?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|error| context("sending a request to", error))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|error| context("reading the reply from", error))?;
    if reply.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("director closed {} without replying", socket.display()),
        ));
    }
    serde_json::from_str(&reply).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply from {}: {error}", socket.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_ports_bracket_ipv6() {
        assert_eq!(host_port("192.0.2.10", 80), "192.0.2.10:80");
        assert_eq!(host_port("2001:db8::10", 80), "[2001:db8::10]:80");
        assert_eq!(host_port("2001:db8::10", "80,443"), "[2001:db8::10]:80,443");
        assert_eq!(address_family("2001:db8::10"), "ipv6");
        assert_eq!(address_family("::ffff:192.0.2.1"), "ipv6");
        assert_eq!(address_family("192.0.2.10"), "ipv4");
    }
}
