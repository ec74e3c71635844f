//! The file as written: serde structs that mirror the TOML exactly, unknown keys rejected.
//!
//! Nothing is checked here beyond shape; integers are `i64` so that ranges are checked by the
//! section modules with our own messages, and strings stay strings until a section parses them.

use serde::Deserialize;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) director: RawDirector,
    #[serde(default)]
    pub(super) service: Vec<RawService>,
    pub(super) ha: Option<RawHa>,
}

/// `[director]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDirector {
    pub(super) interfaces: Vec<String>,
    pub(super) workers: Option<i64>,
    pub(super) stats_socket: Option<String>,
    pub(super) stats_socket_mode: Option<String>,
    pub(super) stats_socket_group: Option<String>,
    pub(super) stats_socket_owner: Option<String>,
    pub(super) metrics: Option<String>,
    pub(super) max_connections: Option<i64>,
    /// A fraction: the one float of the file.
    pub(super) embryonic_share: Option<f64>,
    pub(super) poll: Option<String>,
    pub(super) worker_cpus: Option<Vec<i64>>,
    pub(super) nat_reply: Option<String>,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
}

/// `[ha]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    pub(super) interface: Option<String>,
    pub(super) vrid: i64,
    pub(super) priority: Option<i64>,
    pub(super) advert_interval: Option<String>,
    pub(super) preempt: Option<bool>,
    pub(super) preempt_delay: Option<String>,
    pub(super) unicast_peers: Option<Vec<String>>,
    pub(super) sync: Option<bool>,
    pub(super) sync_id: Option<i64>,
    pub(super) sync_port: Option<i64>,
    pub(super) sync_key: Option<String>,
    pub(super) sync_key_file: Option<String>,
    pub(super) server_address: Option<String>,
    pub(super) server_address6: Option<String>,
}

/// `[director.timeouts]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) tcp_established: Option<String>,
    pub(super) tcp_syn: Option<String>,
    pub(super) tcp_fin_wait: Option<String>,
    pub(super) tcp_close: Option<String>,
    pub(super) udp: Option<String>,
}

/// One `[[service]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: String,
    pub(super) vip: String,
    pub(super) port: Option<i64>,
    pub(super) ports: Option<Vec<i64>>,
    pub(super) persistence: Option<String>,
    pub(super) persistence_netmask: Option<String>,
    pub(super) persistence_prefix6: Option<i64>,
    pub(super) protocol: String,
    pub(super) scheduler: String,
    pub(super) forwarding: String,
    pub(super) maglev_table_size: Option<i64>,
    #[serde(default)]
    pub(super) backend: Vec<RawBackend>,
    pub(super) health_check: Option<RawHealthCheck>,
    pub(super) fallback: Option<String>,
}

/// `[service.health_check]` as written: the keys of every kind, refused later where they do
/// not belong.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub(super) kind: String,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) rise: Option<i64>,
    pub(super) fall: Option<i64>,
    pub(super) port: Option<i64>,
    pub(super) on_failure: Option<String>,
    pub(super) path: Option<String>,
    pub(super) expect_status: Option<i64>,
    pub(super) expect_body: Option<String>,
    pub(super) send: Option<String>,
    pub(super) expect: Option<String>,
    pub(super) command: Option<Vec<String>>,
}

/// One `[[service.backend]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) address: String,
    pub(super) weight: Option<i64>,
    pub(super) mac: Option<String>,
    pub(super) port: Option<i64>,
    pub(super) max_connections: Option<i64>,
    pub(super) min_connections: Option<i64>,
}
