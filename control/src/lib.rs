//! The director's control side: everything that is not per-packet work.
//!
//! - [`config`]: reads the TOML configuration and validates it into typed structs, with errors
//!   that name the key, the value and what was expected (`director check`).
//! - [`connected`]: the served interfaces' prefixes from the kernel, against which DR real
//!   servers must be on-link.
//! - [`duration`]: the `"15m"` / `"100ms"` duration syntax of the configuration.
//! - [`limits`]: what a configuration needs (classifier map entries, counter slots, memory)
//!   against what the director and the machine have; start-up, reload and `director check`
//!   refuse what does not fit before anything changes.
//! - [`health`]: health checks of the real servers (tcp, http, send/expect, exec) on one
//!   thread with poll(2); health changes go to the main loop, which rebuilds the table.
//! - [`fib`]: the FIB mirror: the kernel's IPv4 routes, links and neighbours kept current from
//!   netlink notifications, built into `dataplane::fib` snapshots and the neighbour array.
//! - [`netlink`]: a small synchronous rtnetlink client: interface index, MAC and RX queue count,
//!   neighbour (ARP) lookups and solicitation for real servers' MACs, VIP addresses.
//! - [`stats_server`]: the Unix socket that answers `lbstat` and scripts, one JSON request per
//!   line (types in `director-proto`).
//! - [`director`]: `director run`: start-up and shutdown, and the main loop between them that
//!   follows VRRP first, then reloads, control requests, health verdicts and neighbour updates;
//!   one file per concern (attaching the XDP classifiers and starting workers, the classifiers'
//!   maps, VIPs, building and publishing [`dataplane::ServiceTable`] snapshots, reload). Its
//!   `state` is what [`stats`] reads.
//! - [`signals`]: SIGINT/SIGTERM/SIGHUP delivered as channel messages.
//! - [`stats`]: answers stats requests from the workers' counters and the rest of
//!   [`director::state`].
//! - [`rates`]: the once-a-second counter samples behind the replies' 1 s and 5 s rates.
//! - [`access`]: who may change the director through the socket (`SO_PEERCRED`, groups).
//! - [`metrics`]: the optional Prometheus `/metrics` HTTP listener.
//! - [`ha`]: high availability between directors: [`ha::vrrp`], VRRPv3 (RFC 5798) with other
//!   directors or keepalived, decides who holds the VIPs; [`ha::sync`] sends connection state
//!   to the backups so flows survive a failover.
//!
//! What control must not do: touch frames. The per-packet path (parsing, scheduling a flow,
//! rewriting, transmitting) belongs to `dataplane`; control only builds the immutable snapshots
//! the workers read and reads the counters they publish. Nothing here runs per packet, so
//! control may allocate, lock, log and make syscalls freely, but it must never make a worker
//! wait for it.
//!
//! Unsafe code is confined to [`netlink`] (raw sockets and ioctls), [`signals`] (signal
//! masks), [`access`] (`SO_PEERCRED`, `geteuid`), `ha::vrrp::socket` (raw IP and `AF_PACKET`
//! sockets) and `health::sys` (non-blocking connect, poll(2), pidfds, killing a check's process
//! group); the rest of the crate denies it.
#![deny(unsafe_code)]

#[expect(
    unsafe_code,
    reason = "getsockopt(SO_PEERCRED) and geteuid; every block has a SAFETY comment"
)]
pub mod access;
pub mod config;
pub mod connected;
pub mod director;
pub mod duration;
pub mod fib;
/// The cargo-fuzz targets' harnesses; only with the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod ha;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod neighbours;
#[expect(
    unsafe_code,
    reason = "raw netlink sockets and ioctls; every block has a SAFETY comment"
)]
pub mod netlink;
pub mod rates;
#[expect(
    unsafe_code,
    reason = "signal masks and sigwait; every block has a SAFETY comment"
)]
pub mod signals;
pub mod stats;
pub mod stats_server;
pub mod table;

pub use config::{BackendConfig, Config, ConfigError, DirectorConfig, HaConfig, ServiceConfig};
