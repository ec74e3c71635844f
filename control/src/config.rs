//! The configuration file: TOML read into `Raw*` structs that mirror the file exactly (unknown
//! keys rejected), then validated into the typed [`Config`] the rest of the director uses.
//!
//! Every error names where it is (`service[0] "web": scheduler`), the value found and what was
//! expected, like `nginx -t`. `configs/reference.toml` documents every key.

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use dataplane::worker::PollMode;
use dataplane::{Forwarding, Protocol, Timeouts};
use scheduler::Algorithm;
use serde::Deserialize;

use crate::duration::{format_duration, parse_duration};
use crate::stats_server::DEFAULT_SOCKET_MODE;

/// Default `[director] max_connections`: connection-table entries per worker.
pub const DEFAULT_MAX_CONNECTIONS: usize = 262_144;
/// Largest `[director] max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1 << 28;
/// Largest CPU number in `[director] worker_cpus` (the kernel's CPU_SETSIZE - 1).
const MAX_CPU: usize = 1023;
/// Largest `[director] workers`.
pub const MAX_WORKERS: usize = 1024;
/// Largest backend weight, as `ipvsadm` accepts.
pub const MAX_WEIGHT: u32 = 65_535;
/// Largest `maglev_table_size` (the lookup table holds one `u16` per slot).
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 1 << 24;
/// Most ports in one service group.
pub const MAX_PORTS: usize = 64;
/// Longest `persistence` timeout (IPVS allows up to about 2^31 s; a day is plenty).
pub const MAX_PERSISTENCE: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest Unix socket path (`sun_path` holds 108 bytes including the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Longest interface name (`IFNAMSIZ` - 1).
const MAX_INTERFACE_NAME: usize = 15;
/// Longest service name.
const MAX_SERVICE_NAME: usize = 64;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The `[director]` table.
    pub director: DirectorConfig,
    /// The `[[service]]` tables, in file order.
    pub services: Vec<ServiceConfig>,
    /// The `[ha]` table: VRRP failover between directors; `None` runs alone, holding the VIPs.
    pub ha: Option<HaConfig>,
}

/// The `[director]` table: process-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectorConfig {
    /// Interfaces where VIP traffic arrives; each RX queue of each gets a worker.
    pub interfaces: Vec<String>,
    /// Worker threads; `None` means one per RX queue of each interface.
    pub workers: Option<usize>,
    /// Path of the stats/control Unix socket.
    pub stats_socket: PathBuf,
    /// Permission bits of the socket file (default 0660).
    pub stats_socket_mode: u32,
    /// Group given the socket file, whose members may also change the director.
    pub stats_socket_group: Option<String>,
    /// User the stats socket file belongs to, who may also change the director.
    pub stats_socket_owner: Option<String>,
    /// Address of the Prometheus `/metrics` HTTP listener, if any.
    pub metrics: Option<std::net::SocketAddr>,
    /// Connection-table bound per worker.
    pub max_connections: usize,
    /// How workers wait while no traffic arrives (`poll = "busy" | "adaptive"`).
    pub poll: PollMode,
    /// CPUs the workers are pinned to, worker `i` to `worker_cpus[i % len]`; the rest of the
    /// process keeps to the other CPUs it may use. Empty: workers take the allowed CPUs in
    /// turn and share them with everything else.
    pub worker_cpus: Vec<usize>,
    /// Connection idle timeouts.
    pub timeouts: Timeouts,
}

/// The `[ha]` table: the director takes part in a VRRPv3 (RFC 5798) virtual router, with other
/// directors or keepalived, and holds every service's VIP only while it is the master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaConfig {
    /// Interface the advertisements are sent and heard on (one of `director.interfaces`).
    pub interface: String,
    /// Virtual router ID, 1..=255, the same on every router of the group.
    pub vrid: u8,
    /// 1..=254; the highest wins. 255 (the address owner) and 0 (resigning) are refused.
    pub priority: u8,
    /// Between two advertisements as master: a multiple of 10 ms from 10 ms to 40.95 s.
    pub advert_interval: Duration,
    /// Whether a higher-priority backup takes over from a lower-priority master.
    pub preempt: bool,
    /// Send advertisements to these routers instead of the multicast group 224.0.0.18.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Exchange connection entries and persistence templates with the other directors (as
    /// IPVS's sync daemon), so NAT flows and persistence survive a failover.
    pub sync: bool,
    /// The sync cluster's id: datagrams carrying another are ignored (IPVS `syncid`). Default:
    /// the vrid.
    pub sync_id: u8,
    /// UDP port of the sync datagrams (default 8848, IPVS's).
    pub sync_port: u16,
    /// NAT: the real servers' default gateway on the server side (address, prefix length),
    /// held by the master like the VIPs, so replies follow a failover.
    pub server_address: Option<(Ipv4Addr, u8)>,
}

impl HaConfig {
    /// One line for `director check`, e.g.
    /// `ha: VRRPv3 vrid 51 priority 150 on eth0, every 100ms to 224.0.0.18, preempt`.
    pub fn summary(&self) -> String {
        let peers: Vec<String> = self.unicast_peers.iter().map(Ipv4Addr::to_string).collect();
        let destination = if peers.is_empty() {
            "224.0.0.18".to_owned()
        } else {
            peers.join(", ")
        };
        format!(
            "ha: VRRPv3 vrid {} priority {} on {}, every {} to {destination}, {}",
            self.vrid,
            self.priority,
            self.interface,
            format_duration(self.advert_interval),
            if self.preempt { "preempt" } else { "nopreempt" }
        ) + &if self.sync {
            format!(", sync id {} port {}", self.sync_id, self.sync_port)
        } else {
            String::new()
        }
    }
}

/// Default `ha.priority` (keepalived's).
pub const DEFAULT_HA_PRIORITY: u8 = 100;
/// Default `ha.advert_interval` (RFC 5798's and keepalived's).
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest `ha.advert_interval`: one centisecond, VRRPv3's unit.
pub const MIN_ADVERT_INTERVAL: Duration = Duration::from_millis(10);
/// Longest `ha.advert_interval`: 4095 centiseconds, the most VRRPv3's 12-bit field holds.
pub const MAX_ADVERT_INTERVAL: Duration = Duration::from_millis(40_950);
/// Default `ha.sync_port`: the IPVS sync daemon's.
pub const DEFAULT_SYNC_PORT: u16 = 8848;
/// Most `ha.unicast_peers` (a three-director set-up needs two).
pub const MAX_UNICAST_PEERS: usize = 16;

/// One `[[service]]` table: a virtual service and its real servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Operator's name, unique in the file.
    pub name: String,
    /// Virtual IP address.
    pub vip: Ipv4Addr,
    /// Destination port, 1..=65535: the first of `ports`.
    pub port: u16,
    /// Every port of the service (`port = 80` or `ports = [80, 443]`), `port` first. Several
    /// ports form a service group with one scheduler and shared persistence.
    pub ports: Vec<u16>,
    /// Client affinity: how long a client stays on its real server after its last packet.
    pub persistence: Option<Duration>,
    /// Netmask applied to client addresses for persistence (`ipvsadm -M`).
    pub persistence_netmask: Ipv4Addr,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Scheduling algorithm.
    pub scheduler: Algorithm,
    /// Forwarding method.
    pub forwarding: Forwarding,
    /// Maglev lookup-table size: prime, at least the number of backends.
    pub maglev_table_size: u32,
    /// Real servers, in file order (at least one).
    pub backends: Vec<BackendConfig>,
    /// `[service.health_check]`: how real servers are checked; `None` keeps every one in the
    /// pool (no checks).
    pub health_check: Option<HealthCheckConfig>,
    /// The sorry server: the service's only real server while every configured one is out of
    /// the pool (down or disabled). Weight 1; `port` as a backend's (NAT port mapping).
    pub fallback: Option<BackendConfig>,
}

/// One `[[service.backend]]` table: a real server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// Its IPv4 address (under DR it must be on the director's L2 segment).
    pub address: Ipv4Addr,
    /// Relative weight, 0..=65535; 0 drains it (no new flows).
    pub weight: u32,
    /// A static MAC address that overrides the neighbour table.
    pub mac: Option<[u8; 6]>,
    /// NAT only: the port the real server listens on (`VIP:80 -> RS:8080`); `None` keeps the
    /// port the client connected to.
    pub port: Option<u16>,
}

/// `[service.health_check]`: one check per real server, repeated every `interval` from the
/// director's control side; `fall` failures in a row take a server out, `rise` successes bring
/// it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// What a check does and what counts as success.
    pub kind: CheckKind,
    /// From the start of one check to the start of the next.
    pub interval: Duration,
    /// How long one check may take (at most `interval`); longer is a failure.
    pub timeout: Duration,
    /// Successes in a row that bring a down server back.
    pub rise: u32,
    /// Failures in a row that take an up server out.
    pub fall: u32,
    /// The port checked instead of the real server's own (its NAT `port`, else the service's
    /// first port).
    pub port: Option<u16>,
    /// What a down server's entry becomes.
    pub on_failure: OnFailure,
}

/// The kinds of health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connection is accepted (keepalived's TCP_CHECK).
    Tcp,
    /// `GET path HTTP/1.0` answers `expect_status`, with `expect_body` in the body if given
    /// (keepalived's HTTP_GET, ldirectord's `request`/`receive`).
    Http {
        /// Request path, starting with `/`.
        path: String,
        /// The status a healthy server answers.
        expect_status: u16,
        /// A substring the body must contain.
        expect_body: Option<String>,
    },
    /// Connect, write `send`, read until `expect` has been seen (piranha's send/expect).
    SendExpect {
        /// Bytes written after connecting; empty for a banner protocol.
        send: String,
        /// Bytes the answer must contain.
        expect: String,
    },
    /// Run a program: exit status 0 is healthy (keepalived's MISC_CHECK). `{address}` and
    /// `{port}` in any argument are replaced by the real server's.
    Exec {
        /// Absolute program path, then its arguments.
        command: Vec<String>,
    },
}

impl CheckKind {
    /// The `kind` value as written in the file.
    pub const fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::SendExpect { .. } => "send_expect",
            CheckKind::Exec { .. } => "exec",
        }
    }
}

/// What happens to a real server that fails its health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Out of the pool, as `director backend disable` does: its flows are rescheduled.
    Remove,
    /// Weight 0, as keepalived's `inhibit_on_failure`: no new flows, existing ones continue.
    Inhibit,
}

/// Default `health_check.interval` (HAProxy's `inter`).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Default `health_check.timeout`.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `health_check.rise` (HAProxy's).
pub const DEFAULT_CHECK_RISE: u32 = 2;
/// Default `health_check.fall` (HAProxy's).
pub const DEFAULT_CHECK_FALL: u32 = 3;
/// Shortest `health_check.interval`.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// Longest `health_check.interval`.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Largest `rise` and `fall`.
pub const MAX_RISE_FALL: u32 = 100;
/// Longest `send`, `expect` and `expect_body` (a check reads at most a few times this).
pub const MAX_CHECK_TEXT: usize = 4096;

/// Why a configuration was rejected. Each `Display` names where, the value and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Not valid TOML.
    #[error("TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// Valid TOML that does not have the expected shape: an unknown key, a missing key, or a value
    /// of the wrong type.
    #[error("{key}: {message} (line {line}, column {column})")]
    Structure {
        /// Key path as far as it can be told from the file, e.g. `service[0].backend[1].wieght`.
        key: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong, e.g. ``unknown field `wieght`, expected one of `address`, `weight`, `mac` ``.
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("{key} = {value}: {expected}")]
    Invalid {
        /// Where, e.g. `service[0] "web": scheduler`.
        key: String,
        /// The value as written, e.g. `"fastest"`.
        value: String,
        /// What is wrong and what was expected.
        expected: String,
    },
}

impl ConfigError {
    fn invalid(
        key: impl Into<String>,
        value: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }
}

impl Config {
    /// Whether any service forwards by `method`.
    pub fn uses(&self, method: Forwarding) -> bool {
        self.services
            .iter()
            .any(|service| service.forwarding == method)
    }

    /// The first forwarding method in use that needs the director's own address on its
    /// interfaces (TUN's outer source, NAT's two sides), if any.
    pub fn needs_own_addresses(&self) -> Option<Forwarding> {
        [Forwarding::Tunnel, Forwarding::Nat]
            .into_iter()
            .find(|&method| self.uses(method))
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        // First pass: syntax only, so syntax errors are told apart from shape errors.
        if let Err(error) = text.parse::<toml::Table>() {
            let (line, column) = error
                .span()
                .map_or((1, 1), |span| line_column(text, span.start));
            return Err(ConfigError::Syntax {
                line,
                column,
                message: error.message().trim().to_owned(),
            });
        }
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            let offset = error.span().map_or(0, |span| span.start);
            let (line, column) = line_column(text, offset);
            ConfigError::Structure {
                key: key_path_at(text, offset),
                line,
                column,
                // Raw integers are i64 so that ranges are checked with our own messages.
                message: error
                    .message()
                    .trim()
                    .replace("expected i64", "expected an integer"),
            }
        })?;
        raw.validate()
    }
}

impl ServiceConfig {
    /// One line for `director check`, e.g.
    /// `web: tcp 192.0.2.10:80 maglev dr -> 192.0.2.11 (weight 1), 192.0.2.12 (weight 1)`.
    pub fn summary(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let mut line = format!(
            "{}: {} {}:{} {} {}",
            self.name,
            self.protocol.name(),
            self.vip,
            ports.join(","),
            self.scheduler,
            self.forwarding.name()
        );
        if let Some(timeout) = self.persistence {
            let _ = write!(line, " persistent {}", format_duration(timeout));
            if self.persistence_netmask != Ipv4Addr::BROADCAST {
                let _ = write!(line, " mask {}", self.persistence_netmask);
            }
        }
        line.push_str(" ->");
        for (position, backend) in self.backends.iter().enumerate() {
            let separator = if position == 0 { " " } else { ", " };
            let _ = write!(line, "{separator}{}", backend.address);
            if let Some(port) = backend.port {
                let _ = write!(line, ":{port}");
            }
            let _ = write!(line, " (weight {}", backend.weight);
            if let Some(mac) = backend.mac {
                let _ = write!(line, ", mac {}", format_mac(mac));
            }
            line.push(')');
        }
        if let Some(fallback) = &self.fallback {
            let _ = write!(line, "; fallback {}", fallback.address);
            if let Some(port) = fallback.port {
                let _ = write!(line, ":{port}");
            }
        }
        if let Some(check) = &self.health_check {
            let _ = write!(
                line,
                "; {} check every {}, timeout {}, rise {}, fall {}, {} on failure",
                check.kind.name(),
                format_duration(check.interval),
                format_duration(check.timeout),
                check.rise,
                check.fall,
                match check.on_failure {
                    OnFailure::Remove => "remove",
                    OnFailure::Inhibit => "inhibit",
                }
            );
        }
        line
    }

    /// The port a health check of `backend` connects to: the check's own `port`, else the
    /// backend's NAT port, else the service's first port.
    pub fn check_port(&self, backend: &BackendConfig) -> u16 {
        self.health_check
            .as_ref()
            .and_then(|check| check.port)
            .or(backend.port)
            .unwrap_or(self.port)
    }
}

/// Parses a MAC address written as six colon-separated hex bytes, e.g. `02:00:00:00:00:11`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC address as six lower-case colon-separated hex bytes.
pub fn format_mac(mac: [u8; 6]) -> String {
    let mut text = String::with_capacity(17);
    for (position, byte) in mac.iter().enumerate() {
        let separator = if position == 0 { "" } else { ":" };
        let _ = write!(text, "{separator}{byte:02x}");
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    director: RawDirector,
    #[serde(default)]
    service: Vec<RawService>,
    ha: Option<RawHa>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirector {
    interfaces: Vec<String>,
    workers: Option<i64>,
    stats_socket: Option<String>,
    stats_socket_mode: Option<String>,
    stats_socket_group: Option<String>,
    stats_socket_owner: Option<String>,
    metrics: Option<String>,
    max_connections: Option<i64>,
    poll: Option<String>,
    worker_cpus: Option<Vec<i64>>,
    #[serde(default)]
    timeouts: RawTimeouts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHa {
    interface: Option<String>,
    vrid: i64,
    priority: Option<i64>,
    advert_interval: Option<String>,
    preempt: Option<bool>,
    unicast_peers: Option<Vec<String>>,
    sync: Option<bool>,
    sync_id: Option<i64>,
    sync_port: Option<i64>,
    server_address: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    tcp_established: Option<String>,
    tcp_syn: Option<String>,
    tcp_fin_wait: Option<String>,
    tcp_close: Option<String>,
    udp: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    vip: String,
    port: Option<i64>,
    ports: Option<Vec<i64>>,
    persistence: Option<String>,
    persistence_netmask: Option<String>,
    protocol: String,
    scheduler: String,
    forwarding: String,
    maglev_table_size: Option<i64>,
    #[serde(default)]
    backend: Vec<RawBackend>,
    health_check: Option<RawHealthCheck>,
    fallback: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    kind: String,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<i64>,
    fall: Option<i64>,
    port: Option<i64>,
    on_failure: Option<String>,
    path: Option<String>,
    expect_status: Option<i64>,
    expect_body: Option<String>,
    send: Option<String>,
    expect: Option<String>,
    command: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: String,
    weight: Option<i64>,
    mac: Option<String>,
    port: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Validation.

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let director = self.director.validate()?;
        if self.service.is_empty() {
            return Err(ConfigError::invalid(
                "service",
                "[]",
                "expected at least one [[service]] table",
            ));
        }
        let mut services: Vec<ServiceConfig> = Vec::with_capacity(self.service.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut keys: HashMap<(Ipv4Addr, u16, Protocol), usize> = HashMap::new();
        for (index, raw) in self.service.into_iter().enumerate() {
            let service = raw.validate(index)?;
            let at = format!("service[{index}] {:?}", service.name);
            if let Some(first) = names.insert(service.name.clone(), index) {
                return Err(ConfigError::invalid(
                    format!("{at}: name"),
                    format!("{:?}", service.name),
                    format!("duplicate service name, already used by service[{first}]"),
                ));
            }
            for &port in &service.ports {
                if let Some(first) = keys.insert((service.vip, port, service.protocol), index) {
                    return Err(ConfigError::invalid(
                        format!("{at}: vip"),
                        format!("\"{}\"", service.vip),
                        format!(
                            "{}:{}/{} is already served by service[{first}] {:?}, expected each \
                             (vip, port, protocol) once",
                            service.vip,
                            port,
                            service.protocol.name(),
                            services[first].name
                        ),
                    ));
                }
            }
            services.push(service);
        }
        check_sides(&director, &services)?;
        let ha = match self.ha {
            None => None,
            Some(raw) => Some(raw.validate(&director)?),
        };
        Ok(Config {
            director,
            services,
            ha,
        })
    }
}

/// The second interface is the NAT server side: NAT needs it, and nothing else uses it.
fn check_sides(director: &DirectorConfig, services: &[ServiceConfig]) -> Result<(), ConfigError> {
    let nat = services
        .iter()
        .position(|service| service.forwarding == Forwarding::Nat);
    match (nat, director.interfaces.as_slice()) {
        (Some(index), [only]) => Err(ConfigError::invalid(
            format!("service[{index}] {:?}: forwarding", services[index].name),
            "\"nat\"",
            format!(
                "NAT needs a client-side and a server-side interface, expected \
                 director.interfaces = [{only:?}, \"<server side>\"]"
            ),
        )),
        (None, [_, second]) => Err(ConfigError::invalid(
            "director.interfaces[1]",
            format!("{second:?}"),
            "a second interface is the NAT server side, but no service uses forwarding = \"nat\"; \
             list one interface",
        )),
        _ => Ok(()),
    }
}

impl RawDirector {
    fn validate(self) -> Result<DirectorConfig, ConfigError> {
        if self.interfaces.is_empty() {
            return Err(ConfigError::invalid(
                "director.interfaces",
                "[]",
                "expected at least one interface name, such as [\"eth0\"]",
            ));
        }
        if self.interfaces.len() > 2 {
            return Err(ConfigError::invalid(
                "director.interfaces",
                format!("[{} interfaces]", self.interfaces.len()),
                "expected one interface, or two for NAT: [\"<client side>\", \"<server side>\"]",
            ));
        }
        for (index, name) in self.interfaces.iter().enumerate() {
            let key = format!("director.interfaces[{index}]");
            if !valid_interface_name(name) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{name:?}"),
                    format!(
                        "invalid interface name, expected 1 to {MAX_INTERFACE_NAME} bytes without \
                         '/', ':' or whitespace"
                    ),
                ));
            }
            if let Some(first) = self.interfaces[..index]
                .iter()
                .position(|other| other == name)
            {
                return Err(ConfigError::invalid(
                    key,
                    format!("{name:?}"),
                    format!("interface listed twice, already director.interfaces[{first}]"),
                ));
            }
        }
        let workers = match self.workers {
            None => None,
            Some(workers) => Some(in_range(workers, 1, MAX_WORKERS, "director.workers")?),
        };
        let stats_socket = match self.stats_socket {
            None => PathBuf::from(director_proto::DEFAULT_SOCKET),
            Some(path) => {
                if path.is_empty() || path.len() > MAX_SOCKET_PATH || path.contains('\0') {
                    return Err(ConfigError::invalid(
                        "director.stats_socket",
                        format!("{path:?}"),
                        format!("expected a path of 1 to {MAX_SOCKET_PATH} bytes (the Unix socket limit)"),
                    ));
                }
                PathBuf::from(path)
            }
        };
        let stats_socket_mode = socket_mode(self.stats_socket_mode)?;
        let stats_socket_group = socket_group(self.stats_socket_group)?;
        let stats_socket_owner = socket_owner(self.stats_socket_owner)?;
        let metrics = metrics_address(self.metrics)?;
        let max_connections = match self.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(value) => in_range(value, 1, MAX_MAX_CONNECTIONS, "director.max_connections")?,
        };
        let poll = match self.poll.as_deref() {
            None | Some("busy") => PollMode::Busy,
            Some("adaptive") => PollMode::Adaptive,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "director.poll",
                    format!("{other:?}"),
                    "expected \"busy\" (spin always) or \"adaptive\" (sleep when idle)",
                ))
            }
        };
        let worker_cpus = worker_cpus(self.worker_cpus.unwrap_or_default())?;
        let timeouts = self.timeouts.validate()?;
        Ok(DirectorConfig {
            interfaces: self.interfaces,
            workers,
            stats_socket,
            stats_socket_mode,
            stats_socket_group,
            stats_socket_owner,
            metrics,
            max_connections,
            poll,
            worker_cpus,
            timeouts,
        })
    }
}

/// `director.worker_cpus`: CPU numbers, each once. Whether this machine has them is checked
/// at start-up, against the CPUs the process may run on.
fn worker_cpus(values: Vec<i64>) -> Result<Vec<usize>, ConfigError> {
    let mut cpus = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let key = format!("director.worker_cpus[{index}]");
        let cpu = in_range(value, 0, MAX_CPU, &key)?;
        if let Some(first) = cpus.iter().position(|&other| other == cpu) {
            return Err(ConfigError::invalid(
                key,
                cpu.to_string(),
                format!("CPU listed twice, already director.worker_cpus[{first}]"),
            ));
        }
        cpus.push(cpu);
    }
    Ok(cpus)
}

/// `director.stats_socket_mode`.
fn socket_mode(value: Option<String>) -> Result<u32, ConfigError> {
    Ok(match value {
        None => DEFAULT_SOCKET_MODE,
        Some(text) => u32::from_str_radix(&text, 8)
            .ok()
            .filter(|mode| {
                *mode <= 0o777 && text.len() <= 4 && text.bytes().all(|b| b.is_ascii_digit())
            })
            .ok_or_else(|| {
                ConfigError::invalid(
                    "director.stats_socket_mode",
                    format!("{text:?}"),
                    "expected octal permission bits as a string, such as \"0660\" or \"0666\"",
                )
            })?,
    })
}

/// `director.stats_socket_group`.
fn socket_group(value: Option<String>) -> Result<Option<String>, ConfigError> {
    account_name(value, "director.stats_socket_group", "a group name", "gid")
}

/// `director.stats_socket_owner`.
fn socket_owner(value: Option<String>) -> Result<Option<String>, ConfigError> {
    account_name(value, "director.stats_socket_owner", "a user name", "uid")
}

/// A user or group name as `/etc/passwd` and `/etc/group` spell them, or a number.
fn account_name(
    value: Option<String>,
    key: &str,
    what: &str,
    id: &str,
) -> Result<Option<String>, ConfigError> {
    Ok(match value {
        None => None,
        Some(name) => {
            let valid = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
            if !valid {
                return Err(ConfigError::invalid(
                    key,
                    format!("{name:?}"),
                    format!("expected {what} (1 to 32 of a-z A-Z 0-9 _ - . $) or a {id}"),
                ));
            }
            Some(name)
        }
    })
}

/// `director.metrics`.
fn metrics_address(value: Option<String>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    Ok(match value {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| {
            ConfigError::invalid(
                "director.metrics",
                format!("{text:?}"),
                "expected an address and port to serve /metrics on, such as \"127.0.0.1:9100\"",
            )
        })?),
    })
}

impl RawHa {
    fn validate(self, director: &DirectorConfig) -> Result<HaConfig, ConfigError> {
        let interface = match self.interface {
            None => director.interfaces[0].clone(),
            Some(name) => {
                if !director.interfaces.contains(&name) {
                    return Err(ConfigError::invalid(
                        "ha.interface",
                        format!("{name:?}"),
                        format!(
                            "expected one of director.interfaces {:?}",
                            director.interfaces
                        ),
                    ));
                }
                name
            }
        };
        let vrid = in_range(self.vrid, 1u8, u8::MAX, "ha.vrid")?;
        let priority = match self.priority {
            None => DEFAULT_HA_PRIORITY,
            Some(255) => {
                return Err(ConfigError::invalid(
                    "ha.priority",
                    "255",
                    "255 is reserved for the router that owns the addresses (RFC 5798 5.2.4), \
                     and the director only borrows its VIPs; expected 1..=254",
                ))
            }
            Some(value) => in_range(value, 1u8, 254, "ha.priority")?,
        };
        let advert_interval = match self.advert_interval {
            None => DEFAULT_ADVERT_INTERVAL,
            Some(text) => {
                let interval = parse_duration(&text).map_err(|error| {
                    ConfigError::invalid(
                        "ha.advert_interval",
                        format!("{text:?}"),
                        error.to_string(),
                    )
                })?;
                let whole_centiseconds = interval.as_nanos() % 10_000_000 == 0;
                if !(MIN_ADVERT_INTERVAL..=MAX_ADVERT_INTERVAL).contains(&interval)
                    || !whole_centiseconds
                {
                    return Err(ConfigError::invalid(
                        "ha.advert_interval",
                        format!("{text:?}"),
                        "expected a multiple of 10ms from \"10ms\" to \"40s950ms\" (VRRPv3 \
                         carries it in centiseconds, 12 bits)",
                    ));
                }
                interval
            }
        };
        let mut unicast_peers: Vec<Ipv4Addr> = Vec::new();
        let raw_peers = self.unicast_peers.unwrap_or_default();
        if raw_peers.len() > MAX_UNICAST_PEERS {
            return Err(ConfigError::invalid(
                "ha.unicast_peers",
                format!("[{} addresses]", raw_peers.len()),
                format!("expected at most {MAX_UNICAST_PEERS} peers"),
            ));
        }
        for (position, text) in raw_peers.iter().enumerate() {
            let key = format!("ha.unicast_peers[{position}]");
            let peer = unicast_address(text, &key)?;
            if let Some(first) = unicast_peers.iter().position(|other| *other == peer) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    format!("peer listed twice, already ha.unicast_peers[{first}]"),
                ));
            }
            unicast_peers.push(peer);
        }
        let sync_id = match self.sync_id {
            None => vrid,
            Some(id) => in_range(id, 0u8, u8::MAX, "ha.sync_id")?,
        };
        let sync_port = match self.sync_port {
            None => DEFAULT_SYNC_PORT,
            Some(port) => in_range(port, 1u16, u16::MAX, "ha.sync_port")?,
        };
        let server_address = match self.server_address {
            None => None,
            Some(text) => Some(parse_server_address(&text, director)?),
        };
        Ok(HaConfig {
            interface,
            vrid,
            priority,
            advert_interval,
            preempt: self.preempt.unwrap_or(true),
            unicast_peers,
            sync: self.sync.unwrap_or(false),
            sync_id,
            sync_port,
            server_address,
        })
    }
}

impl RawTimeouts {
    fn validate(self) -> Result<Timeouts, ConfigError> {
        let defaults = Timeouts::default();
        let one = |value: Option<String>,
                   name: &str,
                   default: Duration|
         -> Result<Duration, ConfigError> {
            let Some(text) = value else {
                return Ok(default);
            };
            let key = format!("director.timeouts.{name}");
            match parse_duration(&text) {
                Ok(duration) if duration.is_zero() => Err(ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    format!(
                        "expected a duration above zero (default {:?})",
                        format_duration(default)
                    ),
                )),
                Ok(duration) => Ok(duration),
                Err(error) => Err(ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    error.to_string(),
                )),
            }
        };
        Ok(Timeouts {
            tcp_established: one(
                self.tcp_established,
                "tcp_established",
                defaults.tcp_established,
            )?,
            tcp_syn: one(self.tcp_syn, "tcp_syn", defaults.tcp_syn)?,
            tcp_fin_wait: one(self.tcp_fin_wait, "tcp_fin_wait", defaults.tcp_fin_wait)?,
            tcp_close: one(self.tcp_close, "tcp_close", defaults.tcp_close)?,
            udp: one(self.udp, "udp", defaults.udp)?,
        })
    }
}

impl RawService {
    fn validate(self, index: usize) -> Result<ServiceConfig, ConfigError> {
        if !valid_service_name(&self.name) {
            return Err(ConfigError::invalid(
                format!("service[{index}].name"),
                format!("{:?}", self.name),
                format!("expected 1 to {MAX_SERVICE_NAME} characters from A-Z a-z 0-9 _ . -"),
            ));
        }
        let at = format!("service[{index}] {:?}", self.name);
        let vip = unicast_address(&self.vip, &format!("{at}: vip"))?;
        let ports = validate_ports(self.port, self.ports, &at)?;
        let port = ports[0];
        let (persistence, persistence_netmask) =
            validate_persistence(self.persistence, self.persistence_netmask, &at)?;
        let protocol = parse_protocol(&self.protocol, &at)?;
        let scheduler = Algorithm::from_str(&self.scheduler).map_err(|_| {
            ConfigError::invalid(
                format!("{at}: scheduler"),
                format!("{:?}", self.scheduler),
                format!(
                    "unknown scheduler, expected one of {}",
                    Algorithm::NAMES.join(", ")
                ),
            )
        })?;
        let forwarding = parse_forwarding(&self.forwarding, &at)?;
        if self.backend.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}: backend"),
                "[]",
                "expected at least one [[service.backend]] table",
            ));
        }
        if self.backend.len() > scheduler::MAX_SERVERS {
            return Err(ConfigError::invalid(
                format!("{at}: backend"),
                format!("[{} tables]", self.backend.len()),
                format!("expected at most {} backends", scheduler::MAX_SERVERS),
            ));
        }
        let maglev_table_size =
            validate_maglev_table_size(self.maglev_table_size, self.backend.len(), &at)?;
        let mut backends: Vec<BackendConfig> = Vec::with_capacity(self.backend.len());
        for (position, raw) in self.backend.into_iter().enumerate() {
            let backend = raw.validate(&format!("{at}: backend[{position}]"), vip)?;
            if let Some(first) = backends
                .iter()
                .position(|other| other.address == backend.address)
            {
                return Err(ConfigError::invalid(
                    format!("{at}: backend[{position}].address"),
                    format!("\"{}\"", backend.address),
                    format!("duplicate backend, already backend[{first}]"),
                ));
            }
            check_port_mapping(
                &backend,
                &format!("{at}: backend[{position}].port"),
                forwarding,
                &ports,
            )?;
            backends.push(backend);
        }
        let health_check = match self.health_check {
            None => None,
            Some(raw) => Some(raw.validate(&format!("{at}: health_check"))?),
        };
        let fallback = match self.fallback {
            None => None,
            Some(text) => Some(validate_fallback(
                &text,
                &format!("{at}: fallback"),
                vip,
                forwarding,
                &ports,
                &backends,
            )?),
        };
        Ok(ServiceConfig {
            name: self.name,
            vip,
            port,
            ports,
            persistence,
            persistence_netmask,
            protocol,
            scheduler,
            forwarding,
            maglev_table_size,
            backends,
            health_check,
            fallback,
        })
    }
}

/// `maglev_table_size`: prime, and at least the number of backends.
fn validate_maglev_table_size(
    size: Option<i64>,
    backends: usize,
    at: &str,
) -> Result<u32, ConfigError> {
    Ok(match size {
        None => scheduler::DEFAULT_MAGLEV_TABLE_SIZE,
        Some(size) => {
            let key = format!("{at}: maglev_table_size");
            let size = in_range(size, 1, MAX_MAGLEV_TABLE_SIZE, &key)?;
            if !is_prime(size) {
                return Err(ConfigError::invalid(
                    key,
                    size.to_string(),
                    format!(
                        "expected a prime number, such as {}",
                        scheduler::DEFAULT_MAGLEV_TABLE_SIZE
                    ),
                ));
            }
            if (size as usize) < backends {
                return Err(ConfigError::invalid(
                    key,
                    size.to_string(),
                    format!("expected at least the number of backends ({backends}), ideally 100 times it"),
                ));
            }
            size
        }
    })
}

/// `ha.server_address`: "address/prefix" on the server side, which needs a second interface.
fn parse_server_address(
    text: &str,
    director: &DirectorConfig,
) -> Result<(Ipv4Addr, u8), ConfigError> {
    let parsed = text.split_once('/').and_then(|(address, prefix)| {
        Some((
            address.parse::<Ipv4Addr>().ok()?,
            prefix.parse::<u8>().ok()?,
        ))
    });
    let Some((address, prefix)) = parsed.filter(|(address, prefix)| {
        (1..=32).contains(prefix) && !address.is_unspecified() && !address.is_multicast()
    }) else {
        return Err(ConfigError::invalid(
            "ha.server_address",
            format!("{text:?}"),
            "expected an IPv4 address with its prefix length, such as \"198.51.100.1/24\"",
        ));
    };
    if director.interfaces.len() < 2 {
        return Err(ConfigError::invalid(
            "ha.server_address",
            format!("{text:?}"),
            "the NAT gateway address lives on the server side, the second of \
             director.interfaces, and there is only one",
        ));
    }
    Ok((address, prefix))
}

/// A backend's `port` (LVS-NAT port mapping): only NAT rewrites ports, and one port cannot
/// stand for each of a service group's.
fn check_port_mapping(
    backend: &BackendConfig,
    key: &str,
    forwarding: Forwarding,
    ports: &[u16],
) -> Result<(), ConfigError> {
    let Some(port) = backend.port else {
        return Ok(());
    };
    if forwarding != Forwarding::Nat {
        return Err(ConfigError::invalid(
            key,
            port.to_string(),
            format!(
                "only forwarding = \"nat\" can change the port (this service uses {:?}); leave \
                 port out",
                forwarding.name()
            ),
        ));
    }
    if ports.len() > 1 {
        return Err(ConfigError::invalid(
            key,
            port.to_string(),
            "a service with several ports cannot map them all to one port; leave port out or \
             split the service",
        ));
    }
    Ok(())
}

/// `fallback = "ADDRESS"` or `"ADDRESS:PORT"`: the sorry server. Under dr and tun it serves the
/// port the client connected to (like every real server there), so a port may only repeat the
/// service's; under nat a port maps as a backend's `port` does.
fn validate_fallback(
    text: &str,
    key: &str,
    vip: Ipv4Addr,
    forwarding: Forwarding,
    ports: &[u16],
    backends: &[BackendConfig],
) -> Result<BackendConfig, ConfigError> {
    let value = format!("{text:?}");
    let invalid = |expected: String| ConfigError::invalid(key, &value, expected);
    let (address, port) = match text.split_once(':') {
        Some((address, port)) => (address, Some(port)),
        None => (text, None),
    };
    let Ok(address) = address.parse::<Ipv4Addr>() else {
        return Err(invalid(
            "expected an IPv4 address and optional port, such as \"192.0.2.50\" or \
             \"192.0.2.50:80\""
                .to_owned(),
        ));
    };
    unicast_address(&address.to_string(), key).map_err(|_| {
        invalid(
            "expected a unicast address (not 0.0.0.0, broadcast, multicast or loopback)".to_owned(),
        )
    })?;
    if address == vip {
        return Err(invalid(
            "the fallback equals the service's vip, expected the sorry server's own address"
                .to_owned(),
        ));
    }
    if let Some(position) = backends
        .iter()
        .position(|backend| backend.address == address)
    {
        return Err(invalid(format!(
            "the fallback is already backend[{position}]; it takes flows only while every \
             backend is out of the pool, so give it an address of its own"
        )));
    }
    let port = match port {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 => Some(port),
            _ => {
                return Err(invalid(
                    "expected a port of 1..=65535 after the colon".to_owned(),
                ))
            }
        },
    };
    let port =
        match (port, forwarding) {
            (None, _) => None,
            (Some(port), Forwarding::Nat) if ports.len() == 1 => Some(port),
            (Some(_), Forwarding::Nat) => return Err(invalid(
                "a service with several ports cannot map them all to one port; leave the port out"
                    .to_owned(),
            )),
            // Under dr and tun nothing rewrites ports: the sorry server gets the client's.
            (Some(port), _) if ports == [port] => None,
            (Some(_), _) => {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                return Err(invalid(format!(
                    "only forwarding = \"nat\" can change the port, and this service uses {:?} on \
                 port(s) {}; leave the port out",
                    forwarding.name(),
                    ports.join(", ")
                )));
            }
        };
    Ok(BackendConfig {
        address,
        weight: 1,
        mac: None,
        port,
    })
}

impl RawHealthCheck {
    fn validate(mut self, at: &str) -> Result<HealthCheckConfig, ConfigError> {
        let key = |name: &str| format!("{at}.{name}");
        let kind_name = self.kind.as_str();
        // Keys that belong to another kind would silently do nothing: refuse them.
        let quoted = |text: &Option<String>| text.as_ref().map(|text| format!("{text:?}"));
        let misplaced = [
            ("path", quoted(&self.path), "http"),
            (
                "expect_status",
                self.expect_status.map(|status| status.to_string()),
                "http",
            ),
            ("expect_body", quoted(&self.expect_body), "http"),
            ("send", quoted(&self.send), "send_expect"),
            ("expect", quoted(&self.expect), "send_expect"),
            (
                "command",
                self.command.as_ref().map(|command| format!("{command:?}")),
                "exec",
            ),
        ];
        let known = ["tcp", "http", "send_expect", "exec"];
        if !known.contains(&kind_name) {
            return Err(ConfigError::invalid(
                key("kind"),
                format!("{kind_name:?}"),
                "unknown health check kind, expected tcp, http, send_expect or exec",
            ));
        }
        for (name, value, owner) in misplaced {
            if let Some(value) = value {
                if owner != kind_name {
                    return Err(ConfigError::invalid(
                        key(name),
                        value,
                        format!(
                            "only meaningful with kind = \"{owner}\" (this check is {kind_name:?}); \
                             leave it out"
                        ),
                    ));
                }
            }
        }
        let interval = check_duration(
            self.interval.take(),
            &key("interval"),
            DEFAULT_CHECK_INTERVAL,
            (MIN_CHECK_INTERVAL, MAX_CHECK_INTERVAL),
            "",
        )?;
        let timeout = check_duration(
            self.timeout.take(),
            &key("timeout"),
            DEFAULT_CHECK_TIMEOUT.min(interval),
            (Duration::from_millis(1), interval),
            " (the interval: a check ends before the next one starts)",
        )?;
        let rise = match self.rise {
            None => DEFAULT_CHECK_RISE,
            Some(rise) => in_range(rise, 1, MAX_RISE_FALL, &key("rise"))?,
        };
        let fall = match self.fall {
            None => DEFAULT_CHECK_FALL,
            Some(fall) => in_range(fall, 1, MAX_RISE_FALL, &key("fall"))?,
        };
        let port = match self.port {
            None => None,
            Some(port) => Some(in_range(port, 1u16, u16::MAX, &key("port"))?),
        };
        let on_failure = match self.on_failure.as_deref() {
            None | Some("remove") => OnFailure::Remove,
            Some("inhibit") => OnFailure::Inhibit,
            Some(other) => {
                return Err(ConfigError::invalid(
                    key("on_failure"),
                    format!("{other:?}"),
                    "expected \"remove\" (out of the pool, flows rescheduled) or \"inhibit\" \
                     (weight 0, existing flows continue)",
                ))
            }
        };
        Ok(HealthCheckConfig {
            kind: self.kind(at)?,
            interval,
            timeout,
            rise,
            fall,
            port,
            on_failure,
        })
    }

    /// The kind with its own keys (the others were refused already).
    fn kind(self, at: &str) -> Result<CheckKind, ConfigError> {
        let key = |name: &str| format!("{at}.{name}");
        Ok(match self.kind.as_str() {
            "tcp" => CheckKind::Tcp,
            "http" => CheckKind::Http {
                path: check_path(self.path, &key("path"))?,
                expect_status: match self.expect_status {
                    None => 200,
                    Some(status) => in_range(status, 100, 599, &key("expect_status"))?,
                },
                expect_body: check_text(self.expect_body, &key("expect_body"), false)?,
            },
            "send_expect" => CheckKind::SendExpect {
                send: check_text(self.send, &key("send"), true)?.unwrap_or_default(),
                expect: check_text(self.expect, &key("expect"), false)?.ok_or_else(|| {
                    ConfigError::invalid(
                        key("expect"),
                        "(missing)",
                        "kind = \"send_expect\" needs expect = \"<what a healthy answer contains>\"",
                    )
                })?,
            },
            _ => CheckKind::Exec {
                command: check_command(self.command, &key("command"))?,
            },
        })
    }
}

/// A duration key of `[service.health_check]` within `bounds`, or `default`.
fn check_duration(
    value: Option<String>,
    key: &str,
    default: Duration,
    (low, high): (Duration, Duration),
    high_means: &str,
) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let duration = parse_duration(&text)
        .map_err(|error| ConfigError::invalid(key, format!("{text:?}"), error.to_string()))?;
    if duration < low || duration > high {
        return Err(ConfigError::invalid(
            key,
            format!("{text:?}"),
            format!(
                "expected {} to {}{high_means}",
                format_duration(low),
                format_duration(high)
            ),
        ));
    }
    Ok(duration)
}

/// `health_check.path`: goes into the request line as written, so no spaces or controls.
fn check_path(value: Option<String>, key: &str) -> Result<String, ConfigError> {
    let Some(path) = value else {
        return Ok("/".to_owned());
    };
    let valid = path.starts_with('/')
        && path.len() <= MAX_CHECK_TEXT
        && path.bytes().all(|byte| byte.is_ascii_graphic());
    if !valid {
        return Err(ConfigError::invalid(
            key,
            format!("{path:?}"),
            "expected a request path starting with '/', without spaces or control characters, \
             such as \"/healthz\"",
        ));
    }
    Ok(path)
}

/// `send`, `expect` or `expect_body`: at most [`MAX_CHECK_TEXT`] bytes, empty only if allowed.
fn check_text(
    value: Option<String>,
    key: &str,
    empty_allowed: bool,
) -> Result<Option<String>, ConfigError> {
    let Some(text) = value else {
        return Ok(None);
    };
    if (text.is_empty() && !empty_allowed) || text.len() > MAX_CHECK_TEXT {
        return Err(ConfigError::invalid(
            key,
            format!("{text:?}"),
            format!("expected 1 to {MAX_CHECK_TEXT} bytes"),
        ));
    }
    Ok(Some(text))
}

/// `health_check.command`: an absolute program path, then its arguments.
fn check_command(value: Option<Vec<String>>, key: &str) -> Result<Vec<String>, ConfigError> {
    let Some(command) = value else {
        return Err(ConfigError::invalid(
            key,
            "(missing)",
            "kind = \"exec\" needs command = [\"/path/to/check\", \"{address}\", \"{port}\"]",
        ));
    };
    let program_ok = command
        .first()
        .is_some_and(|program| program.starts_with('/'));
    if !program_ok || command.iter().any(|argument| argument.contains('\0')) {
        return Err(ConfigError::invalid(
            key,
            format!("{command:?}"),
            "expected an absolute program path and its arguments, such as \
             [\"/usr/local/bin/check\", \"{address}\", \"{port}\"] (run without a shell)",
        ));
    }
    Ok(command)
}

/// `port = N` or `ports = [N, ...]`, as a non-empty list without repeats.
fn validate_ports(
    port: Option<i64>,
    ports: Option<Vec<i64>>,
    at: &str,
) -> Result<Vec<u16>, ConfigError> {
    Ok(match (port, ports) {
        (Some(port), None) => vec![in_range(port, 1u16, u16::MAX, &format!("{at}: port"))?],
        (None, Some(list)) => {
            if list.is_empty() || list.len() > MAX_PORTS {
                return Err(ConfigError::invalid(
                    format!("{at}: ports"),
                    format!("[{} ports]", list.len()),
                    format!("expected 1 to {MAX_PORTS} ports"),
                ));
            }
            let mut ports: Vec<u16> = Vec::with_capacity(list.len());
            for (position, port) in list.into_iter().enumerate() {
                let key = format!("{at}: ports[{position}]");
                let port = in_range(port, 1u16, u16::MAX, &key)?;
                if ports.contains(&port) {
                    return Err(ConfigError::invalid(
                        key,
                        port.to_string(),
                        "port listed twice",
                    ));
                }
                ports.push(port);
            }
            ports
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                format!("{at}: ports"),
                "[...]",
                "expected either port or ports, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                format!("{at}: port"),
                "(missing)",
                "expected port = N or ports = [N, ...]",
            ))
        }
    })
}

/// `persistence` and `persistence_netmask`.
fn validate_persistence(
    persistence: Option<String>,
    netmask: Option<String>,
    at: &str,
) -> Result<(Option<Duration>, Ipv4Addr), ConfigError> {
    let persistence = match persistence {
        None => None,
        Some(text) => {
            let key = format!("{at}: persistence");
            let timeout = parse_duration(&text).map_err(|error| {
                ConfigError::invalid(&key, format!("{text:?}"), error.to_string())
            })?;
            if timeout.is_zero() || timeout > MAX_PERSISTENCE {
                return Err(ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    format!(
                        "expected a timeout from 1s to {}",
                        format_duration(MAX_PERSISTENCE)
                    ),
                ));
            }
            Some(timeout)
        }
    };
    let netmask = match netmask {
        None => Ipv4Addr::BROADCAST,
        Some(text) => {
            let key = format!("{at}: persistence_netmask");
            if persistence.is_none() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    "only meaningful with persistence = \"<timeout>\"",
                ));
            }
            parse_netmask(&text).ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    "expected a contiguous IPv4 netmask such as \"255.255.255.0\"",
                )
            })?
        }
    };
    Ok((persistence, netmask))
}

/// A contiguous dotted netmask (`255.255.255.0`), or `None`.
fn parse_netmask(text: &str) -> Option<Ipv4Addr> {
    let mask = u32::from(text.parse::<Ipv4Addr>().ok()?);
    // Contiguous ones first means the zeros after them, inverted, are a run of low ones.
    let host_bits = !mask;
    (host_bits & host_bits.wrapping_add(1) == 0).then_some(Ipv4Addr::from(mask))
}

fn parse_protocol(text: &str, at: &str) -> Result<Protocol, ConfigError> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(ConfigError::invalid(
            format!("{at}: protocol"),
            format!("{text:?}"),
            "unknown protocol, expected tcp or udp",
        )),
    }
}

fn parse_forwarding(text: &str, at: &str) -> Result<Forwarding, ConfigError> {
    match text {
        "dr" => Ok(Forwarding::DirectRouting),
        "tun" => Ok(Forwarding::Tunnel),
        "nat" => Ok(Forwarding::Nat),
        _ => Err(ConfigError::invalid(
            format!("{at}: forwarding"),
            format!("{text:?}"),
            "unknown forwarding method, expected dr, nat or tun",
        )),
    }
}

impl RawBackend {
    fn validate(self, at: &str, vip: Ipv4Addr) -> Result<BackendConfig, ConfigError> {
        let address = unicast_address(&self.address, &format!("{at}.address"))?;
        if address == vip {
            return Err(ConfigError::invalid(
                format!("{at}.address"),
                format!("{:?}", self.address),
                "backend address equals the service's vip, expected the real server's own address",
            ));
        }
        let weight = match self.weight {
            None => 1,
            Some(weight) => in_range(weight, 0, MAX_WEIGHT, &format!("{at}.weight"))?,
        };
        let mac = match self.mac {
            None => None,
            Some(text) => {
                let key = format!("{at}.mac");
                let Some(mac) = parse_mac(&text) else {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{text:?}"),
                        "expected six hex bytes separated by colons, such as \"02:00:00:00:00:11\"",
                    ));
                };
                if mac[0] & 1 != 0 || mac == [0; 6] {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{text:?}"),
                        "expected a unicast MAC address (not all-zero, multicast or broadcast)",
                    ));
                }
                Some(mac)
            }
        };
        let port = match self.port {
            None => None,
            Some(port) => Some(in_range(port, 1u16, u16::MAX, &format!("{at}.port"))?),
        };
        Ok(BackendConfig {
            address,
            weight,
            mac,
            port,
        })
    }
}

/// Converts a TOML integer to `T`, checking `low <= value <= high`.
fn in_range<T>(value: i64, low: T, high: T, key: &str) -> Result<T, ConfigError>
where
    T: TryFrom<i64> + PartialOrd + fmt::Display + Copy,
{
    match T::try_from(value) {
        Ok(converted) if low <= converted && converted <= high => Ok(converted),
        _ => Err(ConfigError::invalid(
            key,
            value.to_string(),
            format!("expected {low}..={high}"),
        )),
    }
}

/// Parses an IPv4 address that a host can own.
fn unicast_address(text: &str, key: &str) -> Result<Ipv4Addr, ConfigError> {
    let Ok(address) = text.parse::<Ipv4Addr>() else {
        return Err(ConfigError::invalid(
            key,
            format!("{text:?}"),
            "expected an IPv4 address such as \"192.0.2.10\"",
        ));
    };
    if address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_loopback()
    {
        return Err(ConfigError::invalid(
            key,
            format!("{text:?}"),
            "expected a unicast address (not 0.0.0.0, broadcast, multicast or loopback)",
        ));
    }
    Ok(address)
}

/// The kernel's `dev_valid_name`: 1..IFNAMSIZ-1 bytes, not `.` or `..`, no `/`, `:` or whitespace.
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|byte| byte == b'/' || byte == b':' || byte.is_ascii_whitespace() || byte == 0)
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

/// Trial division; `n` is at most [`MAX_MAGLEV_TABLE_SIZE`], so at most ~2000 divisions.
fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut divisor = 2u64;
    while divisor * divisor <= n {
        if n % divisor == 0 {
            return false;
        }
        divisor += 1;
    }
    true
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |position| position + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Best-effort key path of the value or key at `offset`, e.g. `service[1].backend[0].weight`,
/// worked out from the table headers above it and the `key =` on its line. Used only to make
/// shape errors easier to find; the line and column stay authoritative.
fn key_path_at(text: &str, offset: usize) -> String {
    let mut array_counts: HashMap<String, usize> = HashMap::new();
    let mut table = String::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|rest| rest.split("]]").next())
        {
            let name = name.trim().to_owned();
            *array_counts.entry(name.clone()).or_insert(0) += 1;
            let nested = format!("{name}.");
            array_counts.retain(|other, _| !other.starts_with(&nested));
            table = render_table(&name, &array_counts);
        } else if let Some(name) = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.split(']').next())
        {
            table = render_table(name.trim(), &array_counts);
        }
        let line_end = line_start + line.len();
        if offset < line_end || line_end == text.len() {
            if trimmed.starts_with('[') || trimmed.starts_with('#') {
                return table;
            }
            let Some((key, _)) = line.split_once('=') else {
                return table;
            };
            let key = key.trim().trim_matches('"');
            return if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
        }
        line_start = line_end;
    }
    table
}

/// `service.backend` -> `service[0].backend[2]`, given how many of each array table were seen.
fn render_table(name: &str, array_counts: &HashMap<String, usize>) -> String {
    let mut rendered = String::new();
    let mut prefix = String::new();
    for (position, part) in name.split('.').enumerate() {
        let part = part.trim();
        if position > 0 {
            rendered.push('.');
            prefix.push('.');
        }
        prefix.push_str(part);
        rendered.push_str(part);
        if let Some(count) = array_counts.get(&prefix) {
            let _ = write!(rendered, "[{}]", count.saturating_sub(1));
        }
    }
    rendered
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[director]
interfaces = ["eth0"]

[[service]]
name = "web"
vip = "192.0.2.10"
port = 80
protocol = "tcp"
scheduler = "maglev"
forwarding = "dr"

[[service.backend]]
address = "192.0.2.11"

[[service.backend]]
address = "192.0.2.12"
weight = 2
mac = "02:00:00:00:00:12"
"#;

    /// Replaces `from` (which must occur in GOOD) and returns the error message.
    fn error_with(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from:?} not in the base config");
        let text = GOOD.replacen(from, to, 1);
        match Config::parse(&text) {
            Ok(config) => panic!("{to:?} was accepted: {config:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn assert_mentions(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(
                message.contains(part),
                "{message:?} does not mention {part:?}"
            );
        }
    }

    #[test]
    fn parses_good_config_with_defaults() {
        let config = Config::parse(GOOD).unwrap();
        assert_eq!(config.director.interfaces, ["eth0"]);
        assert_eq!(config.director.workers, None);
        assert_eq!(
            config.director.stats_socket,
            Path::new(director_proto::DEFAULT_SOCKET)
        );
        assert_eq!(config.director.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.director.poll, PollMode::Busy);
        assert!(config.director.worker_cpus.is_empty());
        assert_mentions(
            &error_with(
                "interfaces = [\"eth0\"]",
                "interfaces = [\"eth0\"]\npoll = \"lazy\"",
            ),
            &["director.poll = \"lazy\"", "adaptive"],
        );
        assert_eq!(config.director.timeouts, Timeouts::default());
        let service = &config.services[0];
        assert_eq!(service.name, "web");
        assert_eq!(service.vip, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(service.port, 80);
        assert_eq!(service.protocol, Protocol::Tcp);
        assert_eq!(service.scheduler, Algorithm::Maglev);
        assert_eq!(service.forwarding, Forwarding::DirectRouting);
        assert_eq!(
            service.maglev_table_size,
            scheduler::DEFAULT_MAGLEV_TABLE_SIZE
        );
        assert_eq!(
            service.backends,
            [
                BackendConfig {
                    address: Ipv4Addr::new(192, 0, 2, 11),
                    weight: 1,
                    mac: None,
                    port: None,
                },
                BackendConfig {
                    address: Ipv4Addr::new(192, 0, 2, 12),
                    weight: 2,
                    mac: Some([2, 0, 0, 0, 0, 0x12]),
                    port: None,
                },
            ]
        );
        assert_eq!(
            service.summary(),
            "web: tcp 192.0.2.10:80 maglev dr -> 192.0.2.11 (weight 1), 192.0.2.12 (weight 2, mac 02:00:00:00:00:12)"
        );
    }

    #[test]
    fn parses_every_optional_key() {
        let text = GOOD.replace(
            "interfaces = [\"eth0\"]\n",
            "interfaces = [\"eth0\", \"eth1\"]\nworkers = 3\nstats_socket = \"/tmp/d.sock\"\n\
             max_connections = 1000\npoll = \"adaptive\"\nworker_cpus = [1, 0]\n[director.timeouts]\ntcp_established = \"1h\"\ntcp_syn = \"30s\"\n\
             tcp_fin_wait = \"1m\"\ntcp_close = \"500ms\"\nudp = \"2m\"\n",
        )
        .replace("scheduler = \"maglev\"", "scheduler = \"mh\"\nmaglev_table_size = 251")
        .replace("protocol = \"tcp\"", "protocol = \"udp\"")
        .replace("forwarding = \"dr\"", "forwarding = \"nat\"")
        .replace("weight = 2\n", "weight = 2\nport = 8080\n");
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.director.interfaces, ["eth0", "eth1"]);
        assert_eq!(config.services[0].forwarding, Forwarding::Nat);
        assert_eq!(
            config.services[0]
                .backends
                .iter()
                .map(|backend| backend.port)
                .collect::<Vec<_>>(),
            [None, Some(8080)]
        );
        assert!(
            config.services[0]
                .summary()
                .contains("192.0.2.12:8080 (weight 2"),
            "{}",
            config.services[0].summary()
        );
        assert_eq!(config.director.workers, Some(3));
        assert_eq!(config.director.stats_socket, Path::new("/tmp/d.sock"));
        assert_eq!(config.director.max_connections, 1000);
        assert_eq!(config.director.poll, PollMode::Adaptive);
        assert_eq!(config.director.worker_cpus, [1, 0]);
        assert_eq!(
            config.director.timeouts,
            Timeouts {
                tcp_established: Duration::from_hours(1),
                tcp_syn: Duration::from_secs(30),
                tcp_fin_wait: Duration::from_mins(1),
                tcp_close: Duration::from_millis(500),
                udp: Duration::from_mins(2),
            }
        );
        assert_eq!(config.services[0].scheduler, Algorithm::Maglev);
        assert_eq!(config.services[0].maglev_table_size, 251);
        assert_eq!(config.services[0].protocol, Protocol::Udp);
        let rr = Config::parse(&GOOD.replace("\"maglev\"", "\"rr\"")).unwrap();
        assert_eq!(rr.services[0].scheduler, Algorithm::RoundRobin);
    }

    #[test]
    fn nat_sides_and_port_mapping_are_checked() {
        let nat = |text: &str| {
            text.replace("\"dr\"", "\"nat\"")
                .replace("[\"eth0\"]", "[\"eth0\", \"eth1\"]")
        };
        assert!(Config::parse(&nat(GOOD)).is_ok());
        let problem = |text: String| Config::parse(&text).unwrap_err().to_string();
        assert_mentions(
            &problem(GOOD.replace("[\"eth0\"]", "[\"eth0\", \"eth1\"]")),
            &[
                "director.interfaces[1] = \"eth1\"",
                "no service uses forwarding = \"nat\"",
            ],
        );
        assert_mentions(
            &problem(GOOD.replace("[\"eth0\"]", "[\"eth0\", \"eth1\", \"eth2\"]")),
            &["director.interfaces = [3 interfaces]", "two for NAT"],
        );
        assert_mentions(
            &error_with("weight = 2\n", "weight = 2\nport = 8080\n"),
            &[
                "service[0] \"web\": backend[1].port = 8080",
                "only forwarding = \"nat\" can change the port",
            ],
        );
        assert_mentions(
            &problem(nat(GOOD).replace("weight = 2\n", "weight = 2\nport = 0\n")),
            &[
                "service[0] \"web\": backend[1].port = 0",
                "expected 1..=65535",
            ],
        );
        assert_mentions(
            &problem(
                nat(GOOD)
                    .replace("port = 80\n", "ports = [80, 443]\n")
                    .replace("weight = 2\n", "weight = 2\nport = 8080\n"),
            ),
            &["backend[1].port = 8080", "several ports"],
        );
    }

    #[test]
    fn shipped_configs_parse() {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let reference = Config::load(&configs.join("reference.toml")).unwrap();
        assert!(!reference.services.is_empty());
        let demo = Config::load(&configs.join("demo.toml")).unwrap();
        assert_eq!(demo.director.interfaces, ["eth0"]);
        assert!(demo.director.stats_socket.starts_with("/run/director"));
        assert_eq!(demo.services.len(), 1);
        let web = &demo.services[0];
        assert_eq!(
            (web.vip, web.port, web.protocol),
            (Ipv4Addr::new(192, 0, 2, 10), 80, Protocol::Tcp)
        );
        assert_eq!(
            (web.scheduler, web.forwarding),
            (Algorithm::Maglev, Forwarding::DirectRouting)
        );
        let addresses: Vec<Ipv4Addr> = web.backends.iter().map(|backend| backend.address).collect();
        assert_eq!(
            addresses,
            [
                Ipv4Addr::new(192, 0, 2, 11),
                Ipv4Addr::new(192, 0, 2, 12),
                Ipv4Addr::new(192, 0, 2, 13)
            ]
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let error = Config::load(Path::new("/nonexistent/director.toml")).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }));
        assert_mentions(
            &error.to_string(),
            &["/nonexistent/director.toml", "No such file"],
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let error = Config::parse(&GOOD.replace("port = 80", "port = = 80")).unwrap_err();
        let ConfigError::Syntax { line, column, .. } = error else {
            panic!("{error:?}")
        };
        assert_eq!((line, column), (8, 8));
        assert_mentions(&error.to_string(), &["line 8, column 8"]);
    }

    #[test]
    fn unknown_keys_are_named_with_their_table() {
        let message = error_with("weight = 2", "wieght = 2");
        assert_mentions(
            &message,
            &[
                "service[0].backend[1].wieght",
                "unknown field `wieght`",
                "line 18",
            ],
        );
        let message = error_with("port = 80", "port = 80\ncolour = \"blue\"");
        assert_mentions(
            &message,
            &[
                "service[0].colour",
                "unknown field `colour`",
                "expected one of",
            ],
        );
        let message = error_with(
            "interfaces = [\"eth0\"]",
            "interfaces = [\"eth0\"]\nthreads = 2",
        );
        assert_mentions(&message, &["director.threads", "unknown field `threads`"]);
        let message = error_with(
            "[director]",
            "[director.timeouts]\ntcp_est = \"1m\"\n[director]",
        );
        assert_mentions(
            &message,
            &["director.timeouts.tcp_est", "unknown field `tcp_est`"],
        );
        let message = error_with("[director]", "[directr]\n[director]");
        assert_mentions(&message, &["directr", "unknown field `directr`"]);
    }

    #[test]
    fn wrong_types_and_missing_keys_are_named() {
        let message = error_with("port = 80", "port = \"80\"");
        assert_mentions(
            &message,
            &[
                "service[0].port",
                "invalid type: string \"80\", expected an integer",
                "line 8",
            ],
        );
        let message = error_with("vip = \"192.0.2.10\"\n", "");
        assert_mentions(&message, &["service[0]", "missing field `vip`"]);
        let message = error_with("interfaces = [\"eth0\"]", "interfaces = \"eth0\"");
        assert_mentions(&message, &["director.interfaces", "invalid type"]);
    }

    #[test]
    fn interfaces_are_checked() {
        assert_mentions(
            &error_with("[\"eth0\"]", "[]"),
            &["director.interfaces = []", "at least one"],
        );
        assert_mentions(
            &error_with("[\"eth0\"]", "[\"eth 0\"]"),
            &[
                "director.interfaces[0] = \"eth 0\"",
                "invalid interface name",
            ],
        );
        assert_mentions(
            &error_with("[\"eth0\"]", "[\"averyveryverylongname\"]"),
            &[
                "director.interfaces[0]",
                "\"averyveryverylongname\"",
                "1 to 15 bytes",
            ],
        );
        assert_mentions(
            &error_with("[\"eth0\"]", "[\"eth0\", \"eth0\"]"),
            &["director.interfaces[1] = \"eth0\"", "listed twice"],
        );
    }

    #[test]
    fn socket_access_and_metrics_keys() {
        let config = Config::parse(GOOD).unwrap();
        assert_eq!(config.director.stats_socket_mode, 0o660);
        assert_eq!(config.director.stats_socket_group, None);
        assert_eq!(config.director.metrics, None);
        let text = GOOD.replacen(
            "interfaces = [\"eth0\"]",
            "interfaces = [\"eth0\"]\nstats_socket_mode = \"0666\"\n\
             stats_socket_group = \"lbadmin\"\nstats_socket_owner = \"lbops\"\n\
             metrics = \"127.0.0.1:9100\"",
            1,
        );
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.director.stats_socket_mode, 0o666);
        assert_eq!(
            config.director.stats_socket_group.as_deref(),
            Some("lbadmin")
        );
        assert_eq!(config.director.stats_socket_owner.as_deref(), Some("lbops"));
        assert_mentions(
            &error_with(
                "interfaces = [\"eth0\"]",
                "interfaces = [\"eth0\"]\nstats_socket_owner = \"bad name\"",
            ),
            &["director.stats_socket_owner", "\"bad name\"", "a user name"],
        );
        assert_eq!(
            config.director.metrics,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        let with = |line: &str| {
            error_with(
                "interfaces = [\"eth0\"]",
                &format!("interfaces = [\"eth0\"]\n{line}"),
            )
        };
        for bad in ["\"0999\"", "\"1777\"", "\"\"", "\"rw\""] {
            assert_mentions(
                &with(&format!("stats_socket_mode = {bad}")),
                &["director.stats_socket_mode", "octal permission bits"],
            );
        }
        assert_mentions(
            &with("stats_socket_mode = 660"),
            &["director.stats_socket_mode", "invalid type"],
        );
        assert_mentions(
            &with("stats_socket_group = \"lb admin\""),
            &["director.stats_socket_group = \"lb admin\"", "group name"],
        );
        assert_mentions(
            &with("metrics = \"localhost\""),
            &["director.metrics = \"localhost\"", "127.0.0.1:9100"],
        );
    }

    #[test]
    fn director_numbers_are_checked() {
        let with = |line: &str| {
            error_with(
                "interfaces = [\"eth0\"]",
                &format!("interfaces = [\"eth0\"]\n{line}"),
            )
        };
        assert_mentions(
            &with("workers = 0"),
            &["director.workers = 0", "expected 1..=1024"],
        );
        assert_mentions(
            &with("workers = -2"),
            &["director.workers = -2", "expected 1..=1024"],
        );
        assert_mentions(
            &with("worker_cpus = [1, 1024]"),
            &["director.worker_cpus[1] = 1024", "expected 0..=1023"],
        );
        assert_mentions(
            &with("worker_cpus = [-1]"),
            &["director.worker_cpus[0] = -1", "expected 0..=1023"],
        );
        assert_mentions(
            &with("worker_cpus = [3, 2, 3]"),
            &[
                "director.worker_cpus[2] = 3",
                "listed twice, already director.worker_cpus[0]",
            ],
        );
        assert_mentions(
            &with("max_connections = 0"),
            &["director.max_connections = 0", "expected 1.."],
        );
        assert_mentions(
            &with("stats_socket = \"\""),
            &["director.stats_socket = \"\"", "Unix socket"],
        );
        let long = format!("stats_socket = \"/{}\"", "a".repeat(120));
        assert_mentions(&with(&long), &["director.stats_socket", "1 to 107 bytes"]);
    }

    #[test]
    fn timeouts_are_checked() {
        let with = |line: &str| {
            error_with(
                "[director]",
                &format!("[director.timeouts]\n{line}\n[director]"),
            )
        };
        assert_mentions(
            &with("tcp_syn = \"1 minute\""),
            &[
                "director.timeouts.tcp_syn = \"1 minute\"",
                "expected a duration such as",
            ],
        );
        assert_mentions(
            &with("udp = \"10\""),
            &["director.timeouts.udp = \"10\"", "number without a unit"],
        );
        assert_mentions(
            &with("tcp_close = \"0s\""),
            &[
                "director.timeouts.tcp_close = \"0s\"",
                "above zero",
                "default \"10s\"",
            ],
        );
        assert_mentions(
            &with("tcp_fin_wait = \"3d\""),
            &["director.timeouts.tcp_fin_wait = \"3d\"", "unknown unit"],
        );
    }

    #[test]
    fn service_fields_are_checked() {
        assert_mentions(
            &error_with("\"maglev\"", "\"fastest\""),
            &[
                "service[0] \"web\": scheduler = \"fastest\": unknown scheduler, expected one of rr, wrr, lc, wlc, sed, nq, sh, dh, lblc, lblcr, maglev, mh",
            ],
        );
        assert_mentions(
            &error_with("port = 80", "port = 0"),
            &["service[0] \"web\": port = 0", "expected 1..=65535"],
        );
        assert_mentions(
            &error_with("port = 80", "port = 65536"),
            &["service[0] \"web\": port = 65536"],
        );
        assert_mentions(
            &error_with("\"tcp\"", "\"sctp\""),
            &[
                "service[0] \"web\": protocol = \"sctp\"",
                "expected tcp or udp",
            ],
        );
        assert_mentions(
            &error_with("\"dr\"", "\"nat\""),
            &[
                "service[0] \"web\": forwarding = \"nat\"",
                "client-side and a server-side interface",
                "[\"eth0\", \"<server side>\"]",
            ],
        );
        let tunnel = Config::parse(&GOOD.replacen("\"dr\"", "\"tun\"", 1)).unwrap();
        assert_eq!(tunnel.services[0].forwarding, Forwarding::Tunnel);
        assert_mentions(
            &error_with("\"dr\"", "\"magic\""),
            &[
                "service[0] \"web\": forwarding = \"magic\"",
                "unknown forwarding method, expected dr",
            ],
        );
        assert_mentions(
            &error_with("\"192.0.2.10\"", "\"192.0.2.300\""),
            &[
                "service[0] \"web\": vip = \"192.0.2.300\"",
                "expected an IPv4 address",
            ],
        );
        assert_mentions(
            &error_with("\"192.0.2.10\"", "\"224.0.0.1\""),
            &[
                "service[0] \"web\": vip = \"224.0.0.1\"",
                "expected a unicast address",
            ],
        );
        assert_mentions(
            &error_with("name = \"web\"", "name = \"web site\""),
            &[
                "service[0].name = \"web site\"",
                "expected 1 to 64 characters",
            ],
        );
    }

    #[test]
    fn maglev_table_size_is_checked() {
        let with = |size: &str| {
            error_with(
                "forwarding = \"dr\"",
                &format!("forwarding = \"dr\"\nmaglev_table_size = {size}"),
            )
        };
        assert_mentions(
            &with("65536"),
            &[
                "service[0] \"web\": maglev_table_size = 65536",
                "expected a prime number",
            ],
        );
        assert_mentions(
            &with("1"),
            &[
                "service[0] \"web\": maglev_table_size = 1",
                "expected a prime number",
            ],
        );
        assert_mentions(
            &with("0"),
            &["service[0] \"web\": maglev_table_size = 0", "expected 1..="],
        );
        assert_mentions(
            &with("99999999999"),
            &[
                "service[0] \"web\": maglev_table_size = 99999999999",
                "expected 1..=16777216",
            ],
        );
        // 3 is prime but smaller than the four backends below.
        let text = GOOD.replace(
            "forwarding = \"dr\"",
            "forwarding = \"dr\"\nmaglev_table_size = 3",
        );
        let text = format!("{text}\n[[service.backend]]\naddress = \"192.0.2.13\"\n[[service.backend]]\naddress = \"192.0.2.14\"\n");
        let message = Config::parse(&text).unwrap_err().to_string();
        assert_mentions(
            &message,
            &[
                "service[0] \"web\": maglev_table_size = 3",
                "at least the number of backends (4)",
            ],
        );
    }

    #[test]
    fn duplicates_are_rejected() {
        let second = |name: &str, vip: &str| {
            format!(
                "{GOOD}\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\n\
                 scheduler = \"rr\"\nforwarding = \"dr\"\n[[service.backend]]\naddress = \"192.0.2.21\"\n"
            )
        };
        let message = Config::parse(&second("web", "192.0.2.20"))
            .unwrap_err()
            .to_string();
        assert_mentions(
            &message,
            &[
                "service[1] \"web\": name = \"web\"",
                "duplicate service name",
                "service[0]",
            ],
        );
        let message = Config::parse(&second("web2", "192.0.2.10"))
            .unwrap_err()
            .to_string();
        assert_mentions(
            &message,
            &[
                "service[1] \"web2\": vip = \"192.0.2.10\"",
                "192.0.2.10:80/tcp is already served by service[0] \"web\"",
            ],
        );
        // Same VIP and port over UDP is a different service.
        let udp = second("dns", "192.0.2.10").replace(
            "port = 80\nprotocol = \"tcp\"\nscheduler = \"rr\"",
            "port = 80\nprotocol = \"udp\"\nscheduler = \"rr\"",
        );
        assert_eq!(Config::parse(&udp).unwrap().services.len(), 2);
        let message = error_with("\"192.0.2.12\"", "\"192.0.2.11\"");
        assert_mentions(
            &message,
            &[
                "service[0] \"web\": backend[1].address = \"192.0.2.11\"",
                "duplicate backend, already backend[0]",
            ],
        );
    }

    #[test]
    fn backends_are_checked() {
        let none = GOOD.split("[[service.backend]]").next().unwrap().to_owned();
        let message = Config::parse(&none).unwrap_err().to_string();
        assert_mentions(
            &message,
            &[
                "service[0] \"web\": backend = []",
                "at least one [[service.backend]]",
            ],
        );
        let no_service = GOOD.split("[[service]]").next().unwrap().to_owned();
        let message = Config::parse(&no_service).unwrap_err().to_string();
        assert_mentions(&message, &["service = []", "at least one [[service]]"]);
        assert_mentions(
            &error_with("weight = 2", "weight = 70000"),
            &[
                "service[0] \"web\": backend[1].weight = 70000",
                "expected 0..=65535",
            ],
        );
        assert_mentions(
            &error_with("weight = 2", "weight = -1"),
            &[
                "service[0] \"web\": backend[1].weight = -1",
                "expected 0..=65535",
            ],
        );
        assert_mentions(
            &error_with("\"02:00:00:00:00:12\"", "\"02:00:00:00:12\""),
            &[
                "service[0] \"web\": backend[1].mac = \"02:00:00:00:12\"",
                "six hex bytes",
            ],
        );
        assert_mentions(
            &error_with("\"02:00:00:00:00:12\"", "\"02:00:00:00:00:zz\""),
            &["backend[1].mac = \"02:00:00:00:00:zz\"", "six hex bytes"],
        );
        assert_mentions(
            &error_with("\"02:00:00:00:00:12\"", "\"ff:ff:ff:ff:ff:ff\""),
            &["backend[1].mac = \"ff:ff:ff:ff:ff:ff\"", "unicast MAC"],
        );
        assert_mentions(
            &error_with("\"192.0.2.11\"", "\"192.0.2.10\""),
            &[
                "service[0] \"web\": backend[0].address = \"192.0.2.10\"",
                "equals the service's vip",
            ],
        );
        assert_mentions(
            &error_with("\"192.0.2.11\"", "\"backend1\""),
            &[
                "service[0] \"web\": backend[0].address = \"backend1\"",
                "expected an IPv4 address",
            ],
        );
        // Weight 0 (drain) is allowed.
        assert_eq!(
            Config::parse(&GOOD.replace("weight = 2", "weight = 0"))
                .unwrap()
                .services[0]
                .backends[1]
                .weight,
            0
        );
    }

    #[test]
    fn mac_round_trip() {
        assert_eq!(parse_mac("02:00:00:00:00:11"), Some([2, 0, 0, 0, 0, 0x11]));
        assert_eq!(
            parse_mac("0A:bC:00:00:00:11"),
            Some([10, 0xbc, 0, 0, 0, 0x11])
        );
        assert_eq!(parse_mac("02:00:00:00:00:11:22"), None);
        assert_eq!(parse_mac("2:0:0:0:0:11"), None);
        assert_eq!(parse_mac("02-00-00-00-00-11"), None);
        assert_eq!(format_mac([2, 0, 0, 0xab, 0, 0x11]), "02:00:00:ab:00:11");
    }

    #[test]
    fn primes() {
        let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
        assert!(is_prime(16_777_213));
    }

    #[test]
    fn service_groups_and_persistence() {
        let config = Config::parse(&GOOD.replace(
            "port = 80",
            "ports = [80, 443]\npersistence = \"300s\"\npersistence_netmask = \"255.255.255.0\"",
        ))
        .unwrap();
        let web = &config.services[0];
        assert_eq!((web.port, web.ports.as_slice()), (80, &[80, 443][..]));
        assert_eq!(web.persistence, Some(Duration::from_secs(300)));
        assert_eq!(web.persistence_netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert!(
            web.summary()
                .contains("80,443 maglev dr persistent 5m mask 255.255.255.0"),
            "{}",
            web.summary()
        );

        let plain = Config::parse(GOOD).unwrap();
        assert_eq!(plain.services[0].ports, [80]);
        assert_eq!(plain.services[0].persistence, None);
        assert_eq!(plain.services[0].persistence_netmask, Ipv4Addr::BROADCAST);
    }

    #[test]
    fn service_group_and_persistence_errors_name_key_and_value() {
        let cases: [(&str, &[&str]); 7] = [
            (
                "ports = [80, 443]\nport = 8080",
                &["ports", "either port or ports"],
            ),
            ("ports = []", &["ports", "expected 1 to 64 ports"]),
            ("ports = [80, 80]", &["ports[1] = 80", "listed twice"]),
            ("ports = [80, 0]", &["ports[1] = 0"]),
            (
                "port = 80\npersistence = \"soon\"",
                &["persistence = \"soon\""],
            ),
            ("port = 80\npersistence = \"2d\"", &["persistence = \"2d\""]),
            (
                "port = 80\npersistence = \"1m\"\npersistence_netmask = \"255.0.255.0\"",
                &["persistence_netmask = \"255.0.255.0\"", "contiguous"],
            ),
        ];
        for (replacement, expected) in cases {
            let text = GOOD.replace("port = 80", replacement);
            let message = Config::parse(&text).unwrap_err().to_string();
            for needle in expected {
                assert!(
                    message.contains(needle),
                    "{replacement:?}: {message:?} lacks {needle:?}"
                );
            }
        }
        let message = Config::parse(&GOOD.replace("port = 80\n", ""))
            .unwrap_err()
            .to_string();
        assert!(message.contains("port"), "{message}");
        let message = Config::parse(&GOOD.replace(
            "port = 80",
            "port = 80\npersistence_netmask = \"255.255.255.0\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("only meaningful with persistence"),
            "{message}"
        );
    }

    #[test]
    fn service_group_ports_must_not_overlap_another_service() {
        let text = format!(
            "{GOOD}\n[[service]]\nname = \"tls\"\nvip = \"192.0.2.10\"\nports = [443, 80]\n\
             protocol = \"tcp\"\nscheduler = \"rr\"\nforwarding = \"dr\"\n\
             [[service.backend]]\naddress = \"192.0.2.11\"\n"
        );
        let message = Config::parse(&text).unwrap_err().to_string();
        assert!(
            message.contains("192.0.2.10:80/tcp is already served"),
            "{message}"
        );
    }

    /// GOOD with `[service.health_check]` holding `lines`.
    fn with_check(lines: &str) -> String {
        GOOD.replacen(
            "\n[[service.backend]]",
            &format!("\n[service.health_check]\n{lines}\n\n[[service.backend]]"),
            1,
        )
    }

    fn check_error(lines: &str) -> String {
        match Config::parse(&with_check(lines)) {
            Ok(config) => panic!(
                "{lines:?} was accepted: {:?}",
                config.services[0].health_check
            ),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn health_checks_parse_with_defaults() {
        let config = Config::parse(&with_check("kind = \"tcp\"")).unwrap();
        let web = &config.services[0];
        assert_eq!(
            web.health_check,
            Some(HealthCheckConfig {
                kind: CheckKind::Tcp,
                interval: DEFAULT_CHECK_INTERVAL,
                timeout: DEFAULT_CHECK_TIMEOUT,
                rise: DEFAULT_CHECK_RISE,
                fall: DEFAULT_CHECK_FALL,
                port: None,
                on_failure: OnFailure::Remove,
            })
        );
        assert_eq!(web.check_port(&web.backends[0]), 80);
        assert!(
            web.summary()
                .ends_with("; tcp check every 2s, timeout 1s, rise 2, fall 3, remove on failure"),
            "{}",
            web.summary()
        );
        // A short interval shortens the default timeout with it.
        let config = Config::parse(&with_check("kind = \"tcp\"\ninterval = \"300ms\"")).unwrap();
        let check = config.services[0].health_check.as_ref().unwrap();
        assert_eq!(
            (check.interval, check.timeout),
            (Duration::from_millis(300), Duration::from_millis(300))
        );
        assert_eq!(Config::parse(GOOD).unwrap().services[0].health_check, None);
    }

    #[test]
    fn health_checks_parse_every_kind_and_key() {
        let http = Config::parse(&with_check(
            "kind = \"http\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 1\nfall = 5\n\
             port = 8080\npath = \"/healthz\"\nexpect_status = 204\nexpect_body = \"ok\"\n\
             on_failure = \"inhibit\"",
        ))
        .unwrap();
        let web = &http.services[0];
        assert_eq!(
            web.health_check,
            Some(HealthCheckConfig {
                kind: CheckKind::Http {
                    path: "/healthz".to_owned(),
                    expect_status: 204,
                    expect_body: Some("ok".to_owned()),
                },
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                rise: 1,
                fall: 5,
                port: Some(8080),
                on_failure: OnFailure::Inhibit,
            })
        );
        assert_eq!(web.check_port(&web.backends[1]), 8080);
        let plain = Config::parse(&with_check("kind = \"http\"")).unwrap();
        assert_eq!(
            plain.services[0].health_check.as_ref().unwrap().kind,
            CheckKind::Http {
                path: "/".to_owned(),
                expect_status: 200,
                expect_body: None
            }
        );
        let send_expect = Config::parse(&with_check(
            "kind = \"send_expect\"\nsend = \"PING\\r\\n\"\nexpect = \"PONG\"",
        ))
        .unwrap();
        assert_eq!(
            send_expect.services[0].health_check.as_ref().unwrap().kind,
            CheckKind::SendExpect {
                send: "PING\r\n".to_owned(),
                expect: "PONG".to_owned()
            }
        );
        let banner =
            Config::parse(&with_check("kind = \"send_expect\"\nexpect = \"220 \"")).unwrap();
        assert_eq!(
            banner.services[0].health_check.as_ref().unwrap().kind,
            CheckKind::SendExpect {
                send: String::new(),
                expect: "220 ".to_owned()
            }
        );
        let exec = Config::parse(&with_check(
            "kind = \"exec\"\ncommand = [\"/usr/local/bin/check\", \"{address}\", \"{port}\"]",
        ))
        .unwrap();
        assert_eq!(
            exec.services[0].health_check.as_ref().unwrap().kind,
            CheckKind::Exec {
                command: vec![
                    "/usr/local/bin/check".to_owned(),
                    "{address}".to_owned(),
                    "{port}".to_owned()
                ]
            }
        );
    }

    /// Each `(lines, expected)`: `[service.health_check]` holding `lines` is refused with an
    /// error naming the check's key path and mentioning every `expected` part.
    fn assert_check_errors(cases: &[(&str, &[&str])]) {
        for (lines, expected) in cases {
            let message = check_error(lines);
            assert!(
                message.starts_with("service[0] \"web\": health_check"),
                "{lines:?}: {message}"
            );
            assert_mentions(&message, expected);
        }
    }

    #[test]
    fn health_check_timing_errors_name_key_and_value() {
        assert_check_errors(&[
            (
                "kind = \"icmp\"",
                &[
                    ".kind = \"icmp\"",
                    "expected tcp, http, send_expect or exec",
                ],
            ),
            (
                "kind = \"tcp\"\ninterval = \"5ms\"",
                &[".interval = \"5ms\"", "expected 10ms to 1h"],
            ),
            (
                "kind = \"tcp\"\ninterval = \"2h\"",
                &[".interval = \"2h\"", "expected 10ms to 1h"],
            ),
            (
                "kind = \"tcp\"\ninterval = \"often\"",
                &[".interval = \"often\"", "expected a duration"],
            ),
            (
                "kind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"2s\"",
                &[".timeout = \"2s\"", "expected 1ms to 1s (the interval"],
            ),
            (
                "kind = \"tcp\"\ntimeout = \"0s\"",
                &[".timeout = \"0s\"", "expected 1ms to 2s"],
            ),
            (
                "kind = \"tcp\"\nrise = 0",
                &[".rise = 0", "expected 1..=100"],
            ),
            (
                "kind = \"tcp\"\nfall = 101",
                &[".fall = 101", "expected 1..=100"],
            ),
            (
                "kind = \"tcp\"\nport = 0",
                &[".port = 0", "expected 1..=65535"],
            ),
            (
                "kind = \"tcp\"\non_failure = \"drain\"",
                &[".on_failure = \"drain\"", "expected \"remove\""],
            ),
        ]);
        // Unknown keys and wrong types are named with their table.
        assert_mentions(
            &check_error("kind = \"tcp\"\nintervall = \"1s\""),
            &[
                "service[0].health_check.intervall",
                "unknown field `intervall`",
            ],
        );
        assert_mentions(
            &check_error("kind = \"tcp\"\nrise = \"2\""),
            &["service[0].health_check.rise", "expected an integer"],
        );
        assert_mentions(
            &check_error("interval = \"1s\""),
            &["service[0].health_check", "missing field `kind`"],
        );
    }

    #[test]
    fn health_check_kind_errors_name_key_and_value() {
        assert_check_errors(&[
            (
                "kind = \"tcp\"\npath = \"/healthz\"",
                &[
                    ".path = \"/healthz\"",
                    "only meaningful with kind = \"http\"",
                ],
            ),
            (
                "kind = \"http\"\nexpect = \"ok\"",
                &[
                    ".expect = \"ok\"",
                    "only meaningful with kind = \"send_expect\"",
                ],
            ),
            (
                "kind = \"http\"\ncommand = [\"/bin/true\"]",
                &[
                    ".command = [\"/bin/true\"]",
                    "only meaningful with kind = \"exec\"",
                ],
            ),
            (
                "kind = \"http\"\npath = \"healthz\"",
                &[".path = \"healthz\"", "starting with '/'"],
            ),
            (
                "kind = \"http\"\npath = \"/a b\"",
                &[".path = \"/a b\"", "without spaces"],
            ),
            (
                "kind = \"http\"\nexpect_status = 99",
                &[".expect_status = 99", "expected 100..=599"],
            ),
            (
                "kind = \"http\"\nexpect_body = \"\"",
                &[".expect_body = \"\"", "expected 1 to 4096 bytes"],
            ),
            (
                "kind = \"send_expect\"\nsend = \"PING\"",
                &[".expect = (missing)", "needs expect"],
            ),
            (
                "kind = \"exec\"",
                &[".command = (missing)", "needs command"],
            ),
            (
                "kind = \"exec\"\ncommand = [\"check\", \"{address}\"]",
                &[
                    ".command = [\"check\", \"{address}\"]",
                    "absolute program path",
                ],
            ),
            (
                "kind = \"exec\"\ncommand = []",
                &[".command = []", "absolute program path"],
            ),
        ]);
    }

    #[test]
    fn reference_config_documents_health_checks_and_fallback() {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let reference = Config::load(&configs.join("reference.toml")).unwrap();
        let web = &reference.services[0];
        let check = web.health_check.as_ref().unwrap();
        assert_eq!(
            (
                check.kind.name(),
                check.interval,
                check.timeout,
                check.rise,
                check.fall
            ),
            (
                "http",
                Duration::from_secs(1),
                Duration::from_millis(500),
                2,
                3
            )
        );
        assert_eq!(
            web.fallback.as_ref().map(|fallback| fallback.address),
            Some(Ipv4Addr::new(192, 0, 2, 50))
        );
        // Every key of the table is documented, set or commented out.
        let text = std::fs::read_to_string(configs.join("reference.toml")).unwrap();
        for key in [
            "kind",
            "interval",
            "timeout",
            "rise",
            "fall",
            "on_failure",
            "port",
            "path",
            "expect_status",
            "expect_body",
            "send",
            "expect",
            "command",
        ] {
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
                "reference.toml does not document health_check.{key}"
            );
        }
    }

    #[test]
    fn fallback_is_checked() {
        let with = |fallback: &str| {
            GOOD.replacen(
                "forwarding = \"dr\"",
                &format!("forwarding = \"dr\"\nfallback = {fallback}"),
                1,
            )
        };
        let config = Config::parse(&with("\"192.0.2.50\"")).unwrap();
        let fallback = config.services[0].fallback.as_ref().unwrap();
        assert_eq!(
            (fallback.address, fallback.port, fallback.weight),
            (Ipv4Addr::new(192, 0, 2, 50), None, 1)
        );
        assert!(config.services[0]
            .summary()
            .contains("; fallback 192.0.2.50"));
        // Under dr the service's own port may be written; nothing is rewritten.
        let config = Config::parse(&with("\"192.0.2.50:80\"")).unwrap();
        assert_eq!(config.services[0].fallback.as_ref().unwrap().port, None);
        // Under nat the port maps.
        let nat = with("\"198.51.100.50:8080\"")
            .replace("\"dr\"", "\"nat\"")
            .replace("[\"eth0\"]", "[\"eth0\", \"eth1\"]");
        let config = Config::parse(&nat).unwrap();
        assert_eq!(
            config.services[0].fallback.as_ref().unwrap().port,
            Some(8080)
        );

        let problem = |text: String| Config::parse(&text).unwrap_err().to_string();
        let at = "service[0] \"web\": fallback";
        for (value, expected) in [
            (
                "\"192.0.2.50:8080\"",
                "only forwarding = \"nat\" can change the port",
            ),
            ("\"192.0.2.50:0\"", "expected a port of 1..=65535"),
            ("\"192.0.2.50:http\"", "expected a port of 1..=65535"),
            (
                "\"sorry.example\"",
                "expected an IPv4 address and optional port",
            ),
            ("\"127.0.0.1\"", "expected a unicast address"),
            ("\"192.0.2.10\"", "equals the service's vip"),
            ("\"192.0.2.12\"", "already backend[1]"),
        ] {
            assert_mentions(
                &problem(with(value)),
                &[&format!("{at} = {value}"), expected],
            );
        }
        assert_mentions(
            &problem(with("80")),
            &["service[0].fallback", "invalid type: integer `80`"],
        );
        let group = nat.replace("port = 80\n", "ports = [80, 443]\n");
        assert_mentions(
            &problem(group),
            &[&format!("{at} = \"198.51.100.50:8080\""), "several ports"],
        );
    }

    #[test]
    fn every_ipvs_scheduler_name_is_accepted() {
        for name in scheduler::Algorithm::NAMES {
            let text = GOOD.replace("scheduler = \"maglev\"", &format!("scheduler = \"{name}\""));
            let config = Config::parse(&text).unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(config.services[0].scheduler, name.parse().unwrap());
        }
    }

    const HA: &str = "\n[ha]\nvrid = 51\n";

    /// GOOD with an `[ha]` table holding `body`; parses it and returns the error message.
    fn ha_error(body: &str) -> String {
        match Config::parse(&format!("{GOOD}\n[ha]\n{body}\n")) {
            Ok(config) => panic!("[ha] {body:?} was accepted: {:?}", config.ha),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn ha_is_optional_and_has_defaults() {
        assert_eq!(Config::parse(GOOD).unwrap().ha, None);
        let config = Config::parse(&format!("{GOOD}{HA}")).unwrap();
        assert_eq!(
            config.ha,
            Some(HaConfig {
                interface: "eth0".into(),
                vrid: 51,
                priority: DEFAULT_HA_PRIORITY,
                advert_interval: DEFAULT_ADVERT_INTERVAL,
                preempt: true,
                unicast_peers: Vec::new(),
                sync: false,
                sync_id: 51,
                sync_port: DEFAULT_SYNC_PORT,
                server_address: None,
            })
        );
    }

    #[test]
    fn ha_server_address() {
        assert_mentions(
            &ha_error("vrid = 51\nserver_address = \"198.51.100.1\""),
            &["ha.server_address = \"198.51.100.1\"", "prefix length"],
        );
        assert_mentions(
            &ha_error("vrid = 51\nserver_address = \"198.51.100.1/24\""),
            &["ha.server_address", "only one"],
        );
        let nat = GOOD
            .replace("[\"eth0\"]", "[\"eth0\", \"eth1\"]")
            .replace("\"dr\"", "\"nat\"");
        let ha = Config::parse(&format!("{nat}{HA}server_address = \"198.51.100.1/24\"\n"))
            .unwrap()
            .ha
            .unwrap();
        assert_eq!(
            ha.server_address,
            Some((Ipv4Addr::new(198, 51, 100, 1), 24))
        );
    }

    #[test]
    fn ha_sync_keys() {
        let config = Config::parse(&format!(
            "{GOOD}{HA}sync = true\nsync_id = 7\nsync_port = 9000\n"
        ))
        .unwrap();
        let ha = config.ha.unwrap();
        assert!(ha.sync);
        assert_eq!((ha.sync_id, ha.sync_port), (7, 9000));
        assert!(
            ha.summary().ends_with(", sync id 7 port 9000"),
            "{}",
            ha.summary()
        );
        assert_mentions(
            &ha_error("vrid = 51\nsync_id = 256"),
            &["ha.sync_id = 256", "0..=255"],
        );
        assert_mentions(
            &ha_error("vrid = 51\nsync_port = 0"),
            &["ha.sync_port = 0", "1..=65535"],
        );
        assert_mentions(
            &ha_error("vrid = 51\nsync = \"yes\""),
            &["sync", "invalid type"],
        );
    }

    #[test]
    fn ha_parses_every_key() {
        let text = GOOD
            .replace(
                "interfaces = [\"eth0\"]",
                "interfaces = [\"eth0\", \"eth1\"]",
            )
            .replace("forwarding = \"dr\"", "forwarding = \"nat\"");
        let text = format!(
            "{text}\n[ha]\ninterface = \"eth1\"\nvrid = 255\npriority = 254\n\
             advert_interval = \"40s950ms\"\npreempt = false\n\
             unicast_peers = [\"192.0.2.251\", \"192.0.2.252\"]\n"
        );
        let ha = Config::parse(&text).unwrap().ha.unwrap();
        assert_eq!(ha.interface, "eth1");
        assert_eq!((ha.vrid, ha.priority), (255, 254));
        assert_eq!(ha.advert_interval, MAX_ADVERT_INTERVAL);
        assert!(!ha.preempt);
        assert_eq!(
            ha.unicast_peers,
            [Ipv4Addr::new(192, 0, 2, 251), Ipv4Addr::new(192, 0, 2, 252)]
        );
        assert_eq!(
            ha.summary(),
            "ha: VRRPv3 vrid 255 priority 254 on eth1, every 40950ms to 192.0.2.251, 192.0.2.252, \
             nopreempt"
        );
        let ha = Config::parse(&format!(
            "{GOOD}{HA}advert_interval = \"10ms\"\npriority = 1\n"
        ))
        .unwrap()
        .ha
        .unwrap();
        assert_eq!(ha.advert_interval, MIN_ADVERT_INTERVAL);
        assert_eq!(ha.priority, 1);
        assert_eq!(
            ha.summary(),
            "ha: VRRPv3 vrid 51 priority 1 on eth0, every 10ms to 224.0.0.18, preempt"
        );
    }

    #[test]
    fn ha_errors_name_key_and_value() {
        let cases: &[(&str, &[&str])] = &[
            (
                "vrid = 51\ninterface = \"eth9\"",
                &["ha.interface = \"eth9\"", "director.interfaces"],
            ),
            ("vrid = 0", &["ha.vrid = 0", "1..=255"]),
            ("vrid = 256", &["ha.vrid = 256", "1..=255"]),
            ("priority = 100", &["vrid", "missing"]),
            ("vrid = 51\npriority = 0", &["ha.priority = 0", "1..=254"]),
            (
                "vrid = 51\npriority = 255",
                &["ha.priority = 255", "owns the addresses", "1..=254"],
            ),
            ("vrid = 51\npriority = 300", &["ha.priority = 300"]),
            (
                "vrid = 51\nadvert_interval = \"15ms\"",
                &["ha.advert_interval = \"15ms\"", "multiple of 10ms"],
            ),
            (
                "vrid = 51\nadvert_interval = \"0s\"",
                &["ha.advert_interval = \"0s\"", "\"10ms\""],
            ),
            (
                "vrid = 51\nadvert_interval = \"41s\"",
                &["ha.advert_interval = \"41s\"", "\"40s950ms\""],
            ),
            (
                "vrid = 51\nadvert_interval = \"fast\"",
                &["ha.advert_interval = \"fast\"", "expected a duration"],
            ),
            (
                "vrid = 51\nunicast_peers = [\"192.0.2.300\"]",
                &["ha.unicast_peers[0] = \"192.0.2.300\"", "IPv4 address"],
            ),
            (
                "vrid = 51\nunicast_peers = [\"224.0.0.18\"]",
                &["ha.unicast_peers[0] = \"224.0.0.18\"", "unicast"],
            ),
            (
                "vrid = 51\nunicast_peers = [\"192.0.2.4\", \"192.0.2.4\"]",
                &["ha.unicast_peers[1] = \"192.0.2.4\"", "listed twice"],
            ),
            (
                "vrid = 51\npreempt = \"yes\"",
                &["ha.preempt", "expected a boolean"],
            ),
            (
                "vrid = 51\nvirtual_router_id = 51",
                &["ha", "unknown field"],
            ),
        ];
        for (body, parts) in cases {
            assert_mentions(&ha_error(body), parts);
        }
        let many: Vec<String> = (1..=MAX_UNICAST_PEERS + 1)
            .map(|i| format!("\"192.0.2.{}\"", 100 + i))
            .collect();
        assert_mentions(
            &ha_error(&format!("vrid = 51\nunicast_peers = [{}]", many.join(", "))),
            &["ha.unicast_peers", "at most 16"],
        );
    }

    #[test]
    fn reference_config_documents_ha() {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let reference = Config::load(&configs.join("reference.toml")).unwrap();
        let ha = reference.ha.expect("reference.toml shows [ha]");
        assert_eq!((ha.vrid, ha.priority), (51, 150));
        assert_eq!(ha.advert_interval, Duration::from_millis(100));
    }
}
