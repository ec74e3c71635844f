//! The configuration file: TOML read into `Raw*` structs that mirror the file exactly (unknown
//! keys rejected), then validated into the typed [`Config`] the rest of the director uses.
//!
//! Every error names where it is (`service[0] "web": scheduler`), the value found and what was
//! expected, like `nginx -t`. `configs/reference.toml` documents every key.
//!
//! This module holds the typed model the rest of the director reads, its limits and defaults,
//! the entry points ([`Config::load`], [`Config::parse`]) and the one check that spans sections
//! (which interfaces NAT needs). The rest, one concern a file:
//!
//! - `raw`: the file as written, the serde structs; nothing is checked there.
//! - `director`, `service` (services, backends, the fallback), `health`, `ha`: each section's
//!   validation, from its raw struct into its typed one.
//! - `values`: value checks more than one section uses (integer ranges, unicast addresses of
//!   either family).
//!
//! Addresses are IPv4 or IPv6 wherever a service or real server is named; `service` holds the
//! rule of which families each forwarding method may mix.
//! - `error`: [`ConfigError`], and the key path and position of a TOML shape error.
//! - `summary`: the one-line summaries `director check` prints.
//! - `mac`: MAC addresses as the file and the summaries write them.
//! - `sync_key`: `ha.sync_key` and `ha.sync_key_file`, the secret that authenticates sync.
//! - `onlink`: DR real servers on a connected network of the client side, checked against
//!   interface prefixes the caller reads from the kernel.
//!
//! What it must not do: look at the running system. Beyond reading the file (and the sync key
//! file it names), validation is text in, model out; whether interfaces, CPUs, users and groups exist is checked at start-up by the
//! modules that use them.

mod director;
mod error;
#[cfg(test)]
mod fixtures;
mod ha;
mod health;
#[cfg(test)]
mod ipv6_tests;
mod mac;
mod onlink;
mod raw;
mod service;
mod summary;
mod sync_key;
mod values;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dataplane::worker::PollMode;
pub use dataplane::NatReply;
use dataplane::{Forwarding, Protocol, Thresholds, Timeouts};
use scheduler::Algorithm;

pub use self::error::ConfigError;
use self::error::{key_path_at, line_column};
pub use self::mac::{format_mac, parse_mac};
pub use self::onlink::{check_dr_on_link, InterfacePrefixes};
use self::raw::RawConfig;
use self::service::validate_services;
pub use self::sync_key::{SyncKey, MIN_SYNC_KEY_LEN};

/// Default `[director] max_connections`: connection-table entries per worker.
pub const DEFAULT_MAX_CONNECTIONS: usize = 262_144;
/// Default `[director] embryonic_share`: the share of each worker's connection table that
/// embryonic (SYN-only) entries may fill.
pub const DEFAULT_EMBRYONIC_SHARE: f64 = 0.5;
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
    /// Most embryonic (SYN-only) entries per worker before a new one replaces the oldest:
    /// `embryonic_share` (default 0.5) of `max_connections`, rounded up.
    pub embryonic_limit: usize,
    /// How workers wait while no traffic arrives (`poll = "busy" | "adaptive"`).
    pub poll: PollMode,
    /// CPUs the workers are pinned to, worker `i` to `worker_cpus[i % len]`; the rest of the
    /// process keeps to the other CPUs it may use. Empty: workers take the allowed CPUs in
    /// turn and share them with everything else.
    pub worker_cpus: Vec<usize>,
    /// Connection idle timeouts.
    pub timeouts: Timeouts,
    /// Where the reply to a NAT client goes (`nat_reply = "last-hop" | "route"`).
    pub nat_reply: NatReply,
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
    /// How long after starting (or its link coming back) this director follows a
    /// lower-priority master before preempting it, so that its health checks and neighbour
    /// entries are back before it takes the VIPs (keepalived's `preempt_delay`). Default 0.
    pub preempt_delay: Duration,
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
    /// The pair's shared secret (`sync_key` or `sync_key_file`): with it every sync datagram
    /// carries an HMAC-SHA256 tag and a sequence number, and datagrams without a valid one
    /// are refused; without it sync is unauthenticated, as IPVS's. A reload applies a new key.
    pub sync_key: Option<SyncKey>,
    /// NAT: the real servers' default gateway on the server side (address, prefix length),
    /// held by the master like the VIPs, so replies follow a failover.
    pub server_address: Option<(Ipv4Addr, u8)>,
    /// NAT with IPv6 real servers: their IPv6 default gateway on the server side (address,
    /// prefix length), held like `server_address`.
    pub server_address6: Option<(Ipv6Addr, u8)>,
}

/// Default `ha.priority` (keepalived's).
pub const DEFAULT_HA_PRIORITY: u8 = 100;
/// Default `ha.advert_interval` (RFC 5798's and keepalived's).
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest `ha.advert_interval`: one centisecond, VRRPv3's unit.
pub const MIN_ADVERT_INTERVAL: Duration = Duration::from_millis(10);
/// Longest `ha.advert_interval`: 4095 centiseconds, the most VRRPv3's 12-bit field holds.
pub const MAX_ADVERT_INTERVAL: Duration = Duration::from_millis(40_950);
/// The longest `ha.preempt_delay`.
pub const MAX_PREEMPT_DELAY: Duration = Duration::from_secs(3600);
/// Default `ha.sync_port`: the IPVS sync daemon's.
pub const DEFAULT_SYNC_PORT: u16 = 8848;
/// Most `ha.unicast_peers` (a three-director set-up needs two).
pub const MAX_UNICAST_PEERS: usize = 16;

/// One `[[service]]` table: a virtual service and its real servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Operator's name, unique in the file.
    pub name: String,
    /// Virtual IP address, IPv4 or IPv6.
    pub vip: IpAddr,
    /// Destination port, 1..=65535: the first of `ports`.
    pub port: u16,
    /// Every port of the service (`port = 80` or `ports = [80, 443]`), `port` first. Several
    /// ports form a service group with one scheduler and shared persistence.
    pub ports: Vec<u16>,
    /// Client affinity: how long a client stays on its real server after its last packet.
    pub persistence: Option<Duration>,
    /// Netmask applied to IPv4 client addresses for persistence (`ipvsadm -M`).
    pub persistence_netmask: Ipv4Addr,
    /// Prefix length applied to IPv6 client addresses for persistence, 0..=128 (128: each
    /// address on its own; 64 keeps a household on one server).
    pub persistence_prefix6: u8,
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
    /// Its address, the VIP's family except under TUN (under DR it must be on the director's
    /// L2 segment).
    pub address: IpAddr,
    /// Relative weight, 0..=65535; 0 drains it (no new flows).
    pub weight: u32,
    /// A static MAC address that overrides the neighbour table.
    pub mac: Option<[u8; 6]>,
    /// NAT only: the port the real server listens on (`VIP:80 -> RS:8080`); `None` keeps the
    /// port the client connected to.
    pub port: Option<u16>,
    /// `max_connections` / `min_connections` (`ipvsadm -x`/`-y`): at `max` connections the
    /// server gets no new ones until it falls below `min`; the default has none.
    pub thresholds: Thresholds,
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

impl RawConfig {
    /// Each section in turn, then what spans them; `[ha]` comes last because it is checked
    /// against `[director]`.
    fn validate(self) -> Result<Config, ConfigError> {
        let director = self.director.validate()?;
        let services = validate_services(self.service)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::{assert_mentions, error_with, GOOD};

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
        assert_eq!(config.director.embryonic_limit, DEFAULT_MAX_CONNECTIONS / 2);
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
                    address: Ipv4Addr::new(192, 0, 2, 11).into(),
                    weight: 1,
                    mac: None,
                    port: None,
                    thresholds: dataplane::Thresholds::default(),
                },
                BackendConfig {
                    address: Ipv4Addr::new(192, 0, 2, 12).into(),
                    weight: 2,
                    mac: Some([2, 0, 0, 0, 0, 0x12]),
                    port: None,
                    thresholds: dataplane::Thresholds::default(),
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
             max_connections = 1000\nembryonic_share = 0.25\npoll = \"adaptive\"\nworker_cpus = [1, 0]\n[director.timeouts]\ntcp_established = \"1h\"\ntcp_syn = \"30s\"\n\
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
        assert_eq!(config.director.embryonic_limit, 250);
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
            (Ipv4Addr::new(192, 0, 2, 10).into(), 80, Protocol::Tcp)
        );
        assert_eq!(
            (web.scheduler, web.forwarding),
            (Algorithm::Maglev, Forwarding::DirectRouting)
        );
        let addresses: Vec<IpAddr> = web.backends.iter().map(|backend| backend.address).collect();
        assert_eq!(
            addresses,
            [
                IpAddr::from([192, 0, 2, 11]),
                IpAddr::from([192, 0, 2, 12]),
                IpAddr::from([192, 0, 2, 13])
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
}
