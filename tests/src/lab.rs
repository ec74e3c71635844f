//! The DR topology: namespaces, the bridge, addresses, ARP settings and the real servers' HTTP
//! servers, all torn down on drop. Optionally two or three directors on the one segment (for
//! VRRP failover), code run inside a host's namespace, and keepalived as a VRRP peer. The
//! routed topologies (routers, a far segment, the director's specific routes) are built by
//! `lab/routed.rs`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::client::{GetOptions, KeepAliveClient, LoadHandle, LoadOptions};
use crate::cmd::{poll_check, poll_until, run_with_timeout, Check, ChildGuard};
use crate::config::DirectorConfig;
use crate::director::DirectorProcess;
use crate::http::{self, HttpResponse};
use crate::keepalived::{Keepalived, KeepalivedOptions};
use crate::{
    director_ip, nat_rs_ip, rs_ip, rs_name, sys, CLIENT_IP, DIRECTOR_IP, MAX_DIRECTORS, PREFIX_LEN,
    SERVER_SIDE_IP, VIP, VIP_PORT,
};

pub(crate) mod ipv6;
mod routed;
pub use routed::{far_rs_ip, router_far_ip, router_ip, FAR_CLIENT_IP, FAR_SUBNET};

/// The real servers' HTTP server, written into each lab's directory.
const HTTP_SERVER_PY: &str = include_str!("../../scripts/lab-http-server.py");
/// The lab's HTTP client (one connection per request; also the background load generator).
const HTTP_GET_PY: &str = include_str!("../scripts/lab-http-get.py");
/// The lab's keep-alive client (one connection, many requests).
const HTTP_KEEPALIVE_PY: &str = include_str!("../scripts/lab-http-keepalive.py");

/// Bound on a single setup or inspection command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a real server's HTTP server becoming reachable.
const HTTP_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest lab the address plan allows (192.0.2.11 ..= 192.0.2.254).
const MAX_REAL_SERVERS: usize = 200;

/// Labs made by this process so far; part of each lab's unique prefix.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How big a lab to build.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Number of real servers (`rs1..rsN`, 192.0.2.11..).
    pub real_servers: usize,
    /// Ports every real server serves plain HTTP on (each answer names the port it came in
    /// on); [`Lab::dr_config`] makes its service over all of them. Default `[80]`.
    pub ports: Vec<u16>,
    /// Which LVS set-up to build. Default [`Topology::DirectRouting`].
    pub topology: Topology,
    /// Directors on the segment, 1 to 3: [`Host::Director`] (192.0.2.3), then
    /// [`Host::ExtraDirector`]`(2)` (192.0.2.251) and `(3)` (192.0.2.252), for VRRP failover.
    /// In the NAT lab each gets its own server-side address ([`Lab::server_side_ip_of`]). Default 1.
    pub directors: usize,
    /// Dual stack: IPv6 on in every host, each with its 2001:db8:: address too, the IPv6 VIP on
    /// the DR real servers' `lo`, HTTP servers listening on both families (`lab/ipv6.rs`).
    /// DR and NAT labs only. Default false (IPv6 off everywhere).
    pub ipv6: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            real_servers: 3,
            ports: vec![VIP_PORT],
            topology: Topology::DirectRouting,
            directors: 1,
            ipv6: false,
        }
    }
}

/// The shape of a lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One segment, 192.0.2.0/24: client, director and real servers (VIP on `lo`, ARP
    /// silenced) on one bridge. DR, and TUN with `rs-decap` on the real servers.
    DirectRouting,
    /// Two segments: client and director `eth0` on 192.0.2.0/24; director `eth1`
    /// (198.51.100.1) and real servers (198.51.100.11..) on 198.51.100.0/24, the real servers'
    /// default route via the director. The director's default route goes via the client (its
    /// client side's "router"); its kernel forwarding stays off.
    Nat,
    /// [`Topology::Nat`] without the director's default route, plus a router
    /// ([`Host::Router`]`(1)`) from the client segment to a far segment (203.0.113.0/24) holding
    /// a second client ([`Host::FarClient`]); the director reaches it by a specific route via
    /// the router. See `lab/routed.rs`.
    RoutedNat,
    /// TUN to real servers on the far segment (203.0.113.11..), behind [`Host::Router`]`(1)`,
    /// reached by the director through a specific route; the real servers hold the VIP on `lo`
    /// and decapsulate with `rs-decap`.
    RoutedTun,
    /// [`Topology::RoutedTun`] with two routers, the director's route to the far segment an
    /// ECMP route over both.
    RoutedTunEcmp,
}

impl LabOptions {
    /// `n` real servers on port 80.
    pub fn servers(n: usize) -> Self {
        Self {
            real_servers: n,
            ..Self::default()
        }
    }

    /// `directors` directors and `real_servers` real servers on one segment.
    pub fn directors(directors: usize, real_servers: usize) -> Self {
        Self {
            directors,
            ..Self::servers(real_servers)
        }
    }
}

/// Addresses a test may add to the client with [`Lab::add_client_address`] (TEST-NET-1, outside
/// the lab's address plan: .2 client, .3 director, .10 VIP, .11.. real servers, .251 and .252
/// the second and third directors).
pub const EXTRA_CLIENT_IPS: [&str; 6] = [
    "192.0.2.4",
    "192.0.2.5",
    "192.0.2.6",
    "192.0.2.7",
    "192.0.2.8",
    "192.0.2.9",
];

/// A machine of the lab, each its own network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// The namespace holding the bridge `br0` (no address).
    Switch,
    /// The client, 192.0.2.2.
    Client,
    /// The director, 192.0.2.3 (the VIP is added by the director itself).
    Director,
    /// Director `n` of a lab with several ([`LabOptions::directors`]): 2 is 192.0.2.251, 3 is
    /// 192.0.2.252. [`Host::Director`] is director 1.
    ExtraDirector(usize),
    /// Real server `n` (1-based), 192.0.2.(10 + n), VIP on `lo`.
    Rs(usize),
    /// Router `n` (1 or 2) of a routed lab: 192.0.2.(240 + n) on the client segment,
    /// 203.0.113.n on the far one, forwarding.
    Router(usize),
    /// The client on the far segment of [`Topology::RoutedNat`], 203.0.113.100.
    FarClient,
}

impl Host {
    /// The host's name: its namespace suffix, its bridge port and (for real servers) the name its
    /// HTTP server reports.
    pub fn name(self) -> String {
        match self {
            Host::Switch => "switch".into(),
            Host::Client => "client".into(),
            Host::Director => "director".into(),
            Host::ExtraDirector(n) => format!("director{n}"),
            Host::Rs(i) => rs_name(i),
            Host::Router(n) => format!("router{n}"),
            Host::FarClient => "farclient".into(),
        }
    }

    /// The host's own address on the lab segment (none for the switch).
    pub fn address(self) -> Option<String> {
        match self {
            Host::Switch => None,
            Host::Client => Some(CLIENT_IP.into()),
            Host::Director => Some(DIRECTOR_IP.into()),
            Host::ExtraDirector(n) => Some(director_ip(n)),
            Host::Rs(i) => Some(rs_ip(i)),
            Host::Router(n) => Some(routed::router_ip(n)),
            Host::FarClient => Some(routed::FAR_CLIENT_IP.into()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A DR lab. Dropping it kills every process it started and deletes its namespaces and files.
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    real_servers: usize,
    /// Directors on the segment (1 to 3).
    directors: usize,
    /// Ports the real servers serve.
    ports: Vec<u16>,
    topology: Topology,
    /// Dual stack ([`LabOptions::ipv6`]).
    ipv6: bool,
    /// Namespaces created so far, switch first.
    namespaces: Vec<String>,
    /// The HTTP server of `rs(i+1)`, while running.
    http: Mutex<Vec<Option<ChildGuard>>>,
    /// Files written into `dir` so far (for unique names).
    files: AtomicU32,
}

impl Lab {
    /// Builds the DR lab, panicking with the reason if it cannot.
    pub fn dr(options: LabOptions) -> Lab {
        Lab::try_dr(options).unwrap_or_else(|e| panic!("building the DR lab: {e:#}"))
    }

    /// Builds the NAT lab ([`Topology::Nat`]), panicking with the reason if it cannot.
    pub fn nat(options: LabOptions) -> Lab {
        Lab::try_dr(LabOptions {
            topology: Topology::Nat,
            ..options
        })
        .unwrap_or_else(|e| panic!("building the NAT lab: {e:#}"))
    }

    /// Builds the lab: switch, client, director, `options.real_servers` real servers with an
    /// HTTP server each (and, for DR, the VIP on `lo`). `options.topology` picks the shape.
    pub fn try_dr(options: LabOptions) -> Result<Lab> {
        ensure!(
            sys::is_root(),
            "the lab needs root (network namespaces): run as root, or set \
             DIRECTOR_SKIP_ROOT_TESTS=1 to skip the tests that need it"
        );
        ensure!(
            (1..=MAX_REAL_SERVERS).contains(&options.real_servers),
            "real_servers must be in 1..={MAX_REAL_SERVERS}, got {}",
            options.real_servers
        );
        ensure!(
            (1..=MAX_DIRECTORS).contains(&options.directors),
            "directors must be in 1..={MAX_DIRECTORS}, got {}",
            options.directors
        );
        ensure!(
            !options.ports.is_empty() && !options.ports.contains(&0),
            "ports must be non-empty and non-zero, got {:?}",
            options.ports
        );
        which("ethtool").context(
            "ethtool is needed to turn off TX checksum offload on the lab's veths \
             (apt-get install ethtool)",
        )?;
        python().context("python3 is needed for the lab's HTTP server and client")?;

        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("dl{}x{n}-", std::process::id());
        cleanup_stale(&prefix);
        let dir = std::env::temp_dir().join(prefix.trim_end_matches('-'));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

        // From here on, the guard owns whatever exists, so a failure below still cleans up.
        let mut lab = Lab {
            prefix,
            dir,
            real_servers: options.real_servers,
            directors: options.directors,
            ports: options.ports,
            topology: options.topology,
            ipv6: options.ipv6,
            namespaces: Vec::new(),
            http: Mutex::new((0..options.real_servers).map(|_| None).collect()),
            files: AtomicU32::new(0),
        };
        fs::write(lab.dir.join("lab-http-server.py"), HTTP_SERVER_PY)?;
        fs::write(lab.dir.join("lab-http-get.py"), HTTP_GET_PY)?;
        fs::write(lab.dir.join("lab-http-keepalive.py"), HTTP_KEEPALIVE_PY)?;
        lab.build()?;
        for i in 1..=lab.real_servers {
            lab.try_start_http(i)?;
        }
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let switch = self.add_namespace(Host::Switch)?;
        ip(&[
            "-n",
            &switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ])?;
        ip(&[
            "-n",
            &switch,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;

        let nat = matches!(self.topology, Topology::Nat | Topology::RoutedNat);
        let routed_tun = matches!(self.topology, Topology::RoutedTun | Topology::RoutedTunEcmp);
        if nat {
            for args in [
                &["link", "add", "br1", "type", "bridge", "stp_state", "0"][..],
                &["link", "set", "br1", "type", "bridge", "forward_delay", "0"],
                &["link", "set", "br1", "up"],
            ] {
                let mut full = vec!["-n", switch.as_str()];
                full.extend_from_slice(args);
                ip(&full)?;
            }
        }

        let mut hosts = vec![Host::Client, Host::Director];
        hosts.extend((2..=self.directors).map(Host::ExtraDirector));
        if !routed_tun {
            hosts.extend((1..=self.real_servers).map(Host::Rs));
        }
        for host in hosts {
            let ns = self.add_namespace(host)?;
            let (bridge, address) = match host {
                Host::Rs(i) if nat => ("br1", nat_rs_ip(i)),
                _ => (
                    "br0",
                    host.address()
                        .expect("every host but the switch has an address"),
                ),
            };
            Self::plug(&switch, &ns, &host.name(), "eth0", bridge, &address)?;
            // Local TCP stacks leave checksums partial on veth; after AF_XDP they arrive bad.
            self.try_exec_ok(host, &["ethtool", "-K", "eth0", "tx", "off"])?;
            match host {
                Host::Rs(_) if nat => {
                    ip(&["-n", &ns, "route", "add", "default", "via", SERVER_SIDE_IP])?;
                }
                Host::Rs(_) => {
                    ip(&["-n", &ns, "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
                    // Hold the VIP without ever answering ARP for it or using it as an ARP
                    // source.
                    let mut keys = Vec::new();
                    for iface in ["all", "eth0", "lo"] {
                        keys.push(format!("net.ipv4.conf.{iface}.arp_ignore=1"));
                        keys.push(format!("net.ipv4.conf.{iface}.arp_announce=2"));
                    }
                    let mut args = vec!["sysctl", "-q", "-w"];
                    args.extend(keys.iter().map(String::as_str));
                    self.try_exec_ok(host, &args)?;
                }
                Host::Director | Host::ExtraDirector(_) if nat => {
                    let port = format!("{}-s", host.name());
                    let address = self.server_side_ip_of(host);
                    Self::plug(&switch, &ns, &port, "eth1", "br1", &address)?;
                    self.try_exec_ok(host, &["ethtool", "-K", "eth1", "tx", "off"])?;
                    // The client stands in for the router in front of a NAT director (the
                    // routed lab has a real router, and no default route).
                    if self.topology == Topology::Nat {
                        ip(&["-n", &ns, "route", "add", "default", "via", CLIENT_IP])?;
                    }
                    // New namespaces start with forwarding off; say so, since NAT relies on it.
                    self.try_exec_ok(host, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])?;
                }
                _ => {}
            }
        }
        if !matches!(self.topology, Topology::DirectRouting | Topology::Nat) {
            self.build_routed(&switch)?;
        }
        if self.ipv6 {
            self.build_ipv6(&switch)?;
        }
        Ok(())
    }

    /// Connects namespace `ns` to `bridge` with a veth: `port` on the switch, `device` (up,
    /// with `address`/24) in `ns`.
    fn plug(
        switch: &str,
        ns: &str,
        port: &str,
        device: &str,
        bridge: &str,
        address: &str,
    ) -> Result<()> {
        ip(&[
            "-n", switch, "link", "add", port, "type", "veth", "peer", "name", device, "netns", ns,
        ])?;
        ip(&["-n", switch, "link", "set", port, "master", bridge])?;
        ip(&["-n", switch, "link", "set", port, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{address}/{PREFIX_LEN}"),
            "dev",
            device,
        ])?;
        ip(&["-n", ns, "link", "set", device, "up"])?;
        Ok(())
    }

    /// Creates the namespace of `host` with `lo` up and IPv6 off (no DAD or router solicitation
    /// noise on the segment), and records it for teardown.
    fn add_namespace(&mut self, host: Host) -> Result<String> {
        let ns = format!("{}{}", self.prefix, host.name());
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        self.try_exec_ok(
            host,
            &[
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        Ok(ns)
    }

    /// The lab's unique prefix (`dl<pid>x<n>-`); every namespace name starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab's scratch directory (configs, logs, scripts); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of real servers.
    pub fn real_servers(&self) -> usize {
        self.real_servers
    }

    /// The ports the real servers serve.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The lab's shape.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Real server `i`'s own address: 192.0.2.(10 + i) in the DR lab, 198.51.100.(10 + i) in
    /// the NAT labs, 203.0.113.(10 + i) in the routed TUN labs.
    pub fn rs_address(&self, i: usize) -> String {
        match self.topology {
            Topology::DirectRouting => rs_ip(i),
            Topology::Nat | Topology::RoutedNat => nat_rs_ip(i),
            Topology::RoutedTun | Topology::RoutedTunEcmp => routed::far_rs_ip(i),
        }
    }

    /// Number of directors.
    pub fn directors(&self) -> usize {
        self.directors
    }

    /// A director's own address on the NAT lab's server side: [`SERVER_SIDE_IP`] (the real
    /// servers' gateway) with one director; with several, 198.51.100.(1 + n) for director `n`,
    /// and the gateway address floats with VRRP (`[ha] server_address`).
    pub fn server_side_ip_of(&self, host: Host) -> String {
        let n = match host {
            Host::ExtraDirector(n) => n,
            _ => 1,
        };
        if self.directors == 1 {
            SERVER_SIDE_IP.to_owned()
        } else {
            format!("198.51.100.{}", 1 + n)
        }
    }

    /// The directors: [`Host::Director`], then [`Host::ExtraDirector`]`(2..)`.
    pub fn director_hosts(&self) -> Vec<Host> {
        let mut hosts = vec![Host::Director];
        hosts.extend((2..=self.directors).map(Host::ExtraDirector));
        hosts
    }

    /// The real servers, `Host::Rs(1) ..= Host::Rs(n)`.
    pub fn rs_hosts(&self) -> impl Iterator<Item = Host> {
        (1..=self.real_servers).map(Host::Rs)
    }

    /// The namespace name of `host`.
    pub fn namespace(&self, host: Host) -> String {
        if let Host::Rs(i) = host {
            assert!(
                (1..=self.real_servers).contains(&i),
                "the lab has no real server {i} (it has {})",
                self.real_servers
            );
        }
        if let Host::ExtraDirector(n) = host {
            assert!(
                (2..=self.directors).contains(&n),
                "the lab has no director {n} (it has {})",
                self.directors
            );
        }
        format!("{}{}", self.prefix, host.name())
    }

    /// A command that runs `args` inside the namespace of `host`.
    pub fn command(&self, host: Host, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(host)]);
        cmd.args(args);
        cmd
    }

    /// Runs `args` inside `host` (bounded to 30 s) and returns its output, whatever its status.
    pub fn exec(&self, host: Host, args: &[&str]) -> Output {
        self.try_exec(host, args)
            .unwrap_or_else(|e| panic!("on {host}: {e:#}"))
    }

    /// Like [`Lab::exec`], returning errors instead of panicking.
    pub fn try_exec(&self, host: Host, args: &[&str]) -> Result<Output> {
        run_with_timeout(&mut self.command(host, args), COMMAND_TIMEOUT)
    }

    /// Runs `args` inside `host` and returns its stdout; panics (with stderr) unless it exits 0.
    pub fn exec_ok(&self, host: Host, args: &[&str]) -> String {
        self.try_exec_ok(host, args)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Lab::exec_ok`], returning errors instead of panicking.
    pub fn try_exec_ok(&self, host: Host, args: &[&str]) -> Result<String> {
        let out = self.try_exec(host, args)?;
        check_output(&format!("on {host}: {}", args.join(" ")), &out)
    }

    /// Starts `args` inside `host` in the background, stdout and stderr to a log file in the lab
    /// directory; the process is killed when the guard drops.
    pub fn spawn(&self, host: Host, args: &[&str]) -> ChildGuard {
        let log = self.new_file(&format!("{host}-{}.log", base_name(args)));
        self.try_spawn_logged(host, args, &log)
            .unwrap_or_else(|e| panic!("on {host}: {e:#}"))
    }

    /// Like [`Lab::spawn`], logging to `log` (a [`Lab::new_file`] path the caller reads).
    pub fn spawn_logged(&self, host: Host, args: &[&str], log: &Path) -> ChildGuard {
        self.try_spawn_logged(host, args, log)
            .unwrap_or_else(|e| panic!("on {host}: {e:#}"))
    }

    pub(crate) fn try_spawn_logged(
        &self,
        host: Host,
        args: &[&str],
        log: &Path,
    ) -> Result<ChildGuard> {
        let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = self.command(host, args);
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        ChildGuard::spawn(cmd)
    }

    /// A fresh path in the lab directory, unique within the lab, ending in `name`.
    pub fn new_file(&self, name: &str) -> PathBuf {
        let k = self.files.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{k:03}-{name}"))
    }

    /// Runs `f` on a thread inside `host`'s network namespace and returns what it returns
    /// (a panic in `f` panics here). Sockets `f` opens belong to that namespace for good, and
    /// threads `f` starts stay in it: this is how a test runs a VRRP router "on" a director.
    pub fn in_namespace<T: Send>(&self, host: Host, f: impl FnOnce() -> T + Send) -> T {
        let path = PathBuf::from("/run/netns").join(self.namespace(host));
        thread::scope(|scope| {
            let worker = scope.spawn(|| {
                sys::enter_network_namespace(&path)
                    .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
                f()
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Sets `host`'s `eth0` down or up (`ip link set eth0 down|up` in its namespace): its
    /// bridge port loses or regains its carrier too, as a pulled and replugged cable would.
    pub fn set_link(&self, host: Host, up: bool) {
        let state = if up { "up" } else { "down" };
        self.exec_ok(host, &["ip", "link", "set", "eth0", state]);
    }

    /// Starts the lab's HTTP server on any host (say, a director standing in for a service
    /// that follows the VIP): it names itself after `host` and listens on the lab's ports on
    /// every address. Waits until it accepts on the host's own address; killed on drop.
    pub fn start_http_on(&self, host: Host) -> ChildGuard {
        self.try_start_http_on(host)
            .unwrap_or_else(|e| panic!("starting an HTTP server on {host}: {e:#}"))
    }

    fn try_start_http_on(&self, host: Host) -> Result<ChildGuard> {
        let address = host
            .address()
            .with_context(|| format!("{host} has no address"))?;
        let log = self.new_file(&format!("{host}-http.log"));
        self.spawn_http_server(host, &address, &log)
    }

    /// Runs the lab's HTTP server on `host`, named after it, on the lab's ports, logging to
    /// `log`, and waits until it accepts on `address` on every port (failing at once, with its
    /// log, if it exits first).
    fn spawn_http_server(&self, host: Host, address: &str, log: &Path) -> Result<ChildGuard> {
        let python = python()?;
        let python_s = python.to_string_lossy();
        let script = self.dir.join("lab-http-server.py");
        let script_s = script.to_string_lossy();
        let name = host.name();
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let mut args: Vec<&str> = vec![&python_s, &script_s, "--name", &name];
        if self.ipv6 {
            // One dual-stack socket per port: IPv4 clients appear as themselves, not ::ffff:.
            args.extend(["--bind", "::"]);
        }
        for port in &ports {
            args.extend(["--port", port.as_str()]);
        }
        let mut child = self.try_spawn_logged(host, &args, log)?;
        let mut addresses = vec![address.to_owned()];
        if self.ipv6 {
            addresses.push(ipv6::twin(address));
        }
        for (address, &port) in addresses
            .iter()
            .flat_map(|address| self.ports.iter().map(move |port| (address, port)))
        {
            poll_check(
                &format!("the HTTP server on {host} ({address}:{port})"),
                HTTP_READY_TIMEOUT,
                Duration::from_millis(20),
                || {
                    if let Ok(Some(status)) = child.try_wait() {
                        let log = fs::read_to_string(log).unwrap_or_default();
                        return Check::Fatal(format!("it exited ({status}); its log:\n{log}"));
                    }
                    match self.tcp_connects(host, address, port) {
                        Ok(()) => Check::Ready(()),
                        Err(reason) => Check::NotYet(reason),
                    }
                },
            )?;
        }
        Ok(child)
    }

    /// Starts keepalived (VRRP only) in `host`'s namespace with its own configuration, pid and
    /// log files in the lab directory, and waits until it has entered its first state. It
    /// never touches the host outside the namespace, and dies with the guard.
    pub fn start_keepalived(&self, host: Host, options: &KeepalivedOptions) -> Keepalived {
        Keepalived::start(self, host, options)
            .unwrap_or_else(|e| panic!("starting keepalived on {host}: {e:#}"))
    }

    // ---- real servers' HTTP servers ----

    /// Starts real server `i`'s HTTP server (if not running) and waits until it accepts.
    pub fn start_http(&self, i: usize) {
        self.try_start_http(i)
            .unwrap_or_else(|e| panic!("starting {}'s HTTP server: {e:#}", rs_name(i)));
    }

    fn try_start_http(&self, i: usize) -> Result<()> {
        let host = Host::Rs(i);
        let mut servers = self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = servers
            .get_mut(i.wrapping_sub(1))
            .with_context(|| format!("the lab has no real server {i}"))?;
        if slot.is_some() {
            return Ok(());
        }
        let log = self.dir.join(format!("{host}-http.log"));
        let child = self.spawn_http_server(host, &self.rs_address(i), &log)?;
        *slot = Some(child);
        Ok(())
    }

    /// Kills real server `i`'s HTTP server (SIGKILL) and waits until it is gone.
    pub fn stop_http(&self, i: usize) {
        let mut servers = self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = servers
            .get_mut(i.wrapping_sub(1))
            .unwrap_or_else(|| panic!("the lab has no real server {i}"));
        if let Some(child) = slot.take() {
            child
                .kill()
                .unwrap_or_else(|e| panic!("stopping {}'s HTTP server: {e:#}", rs_name(i)));
        }
    }

    /// Kills and restarts real server `i`'s HTTP server, waiting until it accepts again.
    pub fn restart_http(&self, i: usize) {
        self.stop_http(i);
        self.start_http(i);
    }

    /// Whether real server `i`'s HTTP server is running (as far as the lab started it).
    pub fn http_running(&self, i: usize) -> bool {
        let servers = self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        servers.get(i.wrapping_sub(1)).is_some_and(Option::is_some)
    }

    /// Pids of the running HTTP servers.
    pub fn http_pids(&self) -> Vec<u32> {
        let servers = self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        servers.iter().flatten().map(ChildGuard::id).collect()
    }

    /// One TCP connect from inside `host` to `address:port` (1 s timeout).
    pub fn tcp_connects(&self, host: Host, address: &str, port: u16) -> Result<(), String> {
        let python = python().map_err(|e| format!("{e:#}"))?;
        let out = self
            .try_exec(
                host,
                &[
                    &python.to_string_lossy(),
                    "-c",
                    "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()",
                    address,
                    &port.to_string(),
                ],
            )
            .map_err(|e| format!("{e:#}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
                .to_owned())
        }
    }

    // ---- HTTP client ----

    /// Adds `address` (one of [`EXTRA_CLIENT_IPS`]) to the client's `eth0`, so requests can come
    /// from several client addresses ([`GetOptions::source`]). Idempotent.
    pub fn add_client_address(&self, address: &str) {
        assert!(
            EXTRA_CLIENT_IPS.contains(&address),
            "{address} is not one of the lab's spare client addresses {EXTRA_CLIENT_IPS:?}"
        );
        if self.has_address(Host::Client, address) {
            return;
        }
        self.exec_ok(
            Host::Client,
            &[
                "ip",
                "addr",
                "add",
                &format!("{address}/{PREFIX_LEN}"),
                "dev",
                "eth0",
            ],
        );
    }

    /// `count` sequential GETs of `url` from the client, each on a new TCP connection with a 2 s
    /// timeout; one result per request, in order.
    pub fn http_get_many(&self, count: usize, url: &str) -> Vec<Result<HttpResponse>> {
        self.http_get_many_from(Host::Client, count, url, Duration::from_secs(2))
    }

    /// Sequential GETs from the client as `options` say (several URLs in turn, a source
    /// address), each on a new TCP connection; one result per request, in order.
    pub fn http_get(&self, options: &GetOptions) -> Vec<Result<HttpResponse>> {
        assert!(!options.urls.is_empty(), "GetOptions without a URL");
        let count = options.count;
        // The script stops trying at its deadline; the runner's bound is a backstop over it.
        let deadline = options
            .timeout
            .saturating_mul(u32::try_from(count).unwrap_or(u32::MAX))
            + Duration::from_secs(5);
        let mut args = self.client_args("lab-http-get.py");
        args.extend(options.urls.iter().cloned());
        args.extend([
            "--count".into(),
            count.to_string(),
            "--timeout".into(),
            options.timeout.as_secs_f64().to_string(),
            "--deadline".into(),
            deadline.as_secs_f64().to_string(),
        ]);
        if let Some(source) = &options.source {
            args.extend(["--source".into(), source.clone()]);
        }
        if let Some(port) = options.source_port {
            args.extend(["--source-port".into(), port.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let host = options.host;
        let out = run_with_timeout(
            &mut self.command(host, &args),
            deadline + Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("HTTP client on {host}: {e:#}"));
        assert!(
            out.status.success(),
            "HTTP client on {host} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        http::parse_results(&String::from_utf8_lossy(&out.stdout), count)
    }

    /// Starts a background load on `url` from the client: sequential GETs, each on a new TCP
    /// connection, until [`LoadHandle::stop`] (or the bounds in `options`).
    pub fn start_load(&self, url: &str, options: &LoadOptions) -> LoadHandle {
        let mut args = self.client_args("lab-http-get.py");
        args.extend([
            url.to_owned(),
            "--until-eof".into(),
            "--count".into(),
            options.max_requests.to_string(),
            "--timeout".into(),
            options.timeout.as_secs_f64().to_string(),
            "--deadline".into(),
            options.max_duration.as_secs_f64().to_string(),
        ]);
        if let Some(source) = &options.source {
            args.extend(["--source".into(), source.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.command(Host::Client, &args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        LoadHandle::start(cmd, options).unwrap_or_else(|e| panic!("starting the load: {e:#}"))
    }

    /// Opens ONE TCP connection from the client to `url` (from `source` if given) and keeps it;
    /// [`KeepAliveClient::get`] sends a request on it.
    pub fn keep_alive(&self, url: &str, source: Option<&str>) -> KeepAliveClient {
        let mut args = self.client_args("lab-http-keepalive.py");
        args.push(url.to_owned());
        if let Some(source) = source {
            args.extend(["--source".into(), source.to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.command(Host::Client, &args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        KeepAliveClient::start(cmd).unwrap_or_else(|e| panic!("keep-alive client to {url}: {e:#}"))
    }

    /// `python3 <lab dir>/<script>`.
    fn client_args(&self, script: &str) -> Vec<String> {
        let python = python().unwrap_or_else(|e| panic!("{e:#}"));
        vec![
            python.to_string_lossy().into_owned(),
            self.dir.join(script).to_string_lossy().into_owned(),
        ]
    }

    /// Like [`Lab::http_get_many`], from any host and with any per-request timeout.
    pub fn http_get_many_from(
        &self,
        host: Host,
        count: usize,
        url: &str,
        timeout: Duration,
    ) -> Vec<Result<HttpResponse>> {
        self.http_get(&GetOptions {
            host,
            timeout,
            ..GetOptions::new(count, url)
        })
    }

    // ---- director ----

    /// The stats socket path this lab's director uses (unique per lab).
    pub fn stats_socket(&self) -> PathBuf {
        self.stats_socket_of(Host::Director)
    }

    /// The stats socket path of a director of this lab ([`Lab::stats_socket`] for the first).
    pub fn stats_socket_of(&self, host: Host) -> PathBuf {
        PathBuf::from(format!("/run/director/{}{}.sock", self.prefix, host.name()))
    }

    /// A one-service DR config for this lab: `eth0`, one worker, service "web" on VIP
    /// 192.0.2.10/tcp, the lab's ports (80 unless [`LabOptions::ports`] said otherwise), over
    /// every real server, with `scheduler`.
    pub fn dr_config(&self, scheduler: &str) -> DirectorConfig {
        self.dr_config_over(scheduler, &(1..=self.real_servers).collect::<Vec<_>>())
    }

    /// Like [`Lab::dr_config`], over real servers `servers` only (1-based indices).
    pub fn dr_config_over(&self, scheduler: &str, servers: &[usize]) -> DirectorConfig {
        let mut config = DirectorConfig::dr(
            self.stats_socket(),
            scheduler,
            &servers
                .iter()
                .map(|&i| self.rs_address(i))
                .collect::<Vec<_>>(),
        );
        config.services[0].ports.clone_from(&self.ports);
        config
    }

    /// A one-service NAT config for the NAT lab: `eth0` client side, `eth1` server side, one
    /// worker, service "web" on VIP 192.0.2.10:80/tcp over every real server, mapped to
    /// `backend_port` (the real servers must serve it: [`LabOptions::ports`]) when given.
    pub fn nat_config(&self, scheduler: &str, backend_port: Option<u16>) -> DirectorConfig {
        let servers: Vec<String> = (1..=self.real_servers)
            .map(|i| self.rs_address(i))
            .collect();
        DirectorConfig::nat(self.stats_socket(), scheduler, &servers, backend_port)
    }

    /// Writes `config` as TOML into the lab directory and returns its path.
    pub fn write_config(&self, config: &DirectorConfig) -> PathBuf {
        self.write_config_text(&config.to_toml())
    }

    /// Writes a config given as text (for configs a test wants malformed) and returns its path.
    pub fn write_config_text(&self, text: &str) -> PathBuf {
        let path = self.new_file("director.toml");
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Writes `config` and starts the director on it in the director namespace, waiting until
    /// it is ready and holds every VIP of `config` (panics with the director's log if it does
    /// not get there).
    pub fn start_director(&self, config: &DirectorConfig) -> DirectorProcess {
        let path = self.write_config(config);
        let mut vips: Vec<&str> = config.services.iter().map(|s| s.vip.as_str()).collect();
        vips.sort_unstable();
        vips.dedup();
        DirectorProcess::start_on(self, Host::Director, &path, &config.stats_socket, &vips)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts the director on a config file whose stats socket is `stats_socket`.
    pub fn start_director_with(&self, config: &Path, stats_socket: &Path) -> DirectorProcess {
        self.try_start_director_with(config, stats_socket)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Lab::start_director_with`], returning errors (with the director's log) instead of
    /// panicking.
    pub fn try_start_director_with(
        &self,
        config: &Path,
        stats_socket: &Path,
    ) -> Result<DirectorProcess> {
        DirectorProcess::start(self, config, stats_socket)
    }

    /// Starts the director on `host` (any of [`Lab::director_hosts`]) on a config file whose
    /// stats socket is `stats_socket` ([`Lab::stats_socket_of`]); ready once the socket answers
    /// and, if `wait_for_vip`, the VIP is on its `eth0` (false for a VRRP backup). Panics with
    /// its log if it does not get there.
    pub fn start_director_on(
        &self,
        host: Host,
        config: &Path,
        stats_socket: &Path,
        wait_for_vip: bool,
    ) -> DirectorProcess {
        let vips: &[&str] = if wait_for_vip { &[VIP] } else { &[] };
        self.start_director_waiting_for(host, config, stats_socket, vips)
    }

    /// Like [`Lab::start_director_on`], ready once every address of `vips` (either family) is
    /// on its `eth0`.
    pub fn start_director_waiting_for(
        &self,
        host: Host,
        config: &Path,
        stats_socket: &Path,
        vips: &[&str],
    ) -> DirectorProcess {
        DirectorProcess::start_on(self, host, config, stats_socket, vips)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Whether `address` (IPv4 or IPv6) is configured on `host`'s `eth0`.
    pub fn has_address(&self, host: Host, address: &str) -> bool {
        let out = self.exec_ok(host, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        has_address(&out, address)
    }

    /// Whether an XDP program is attached to `host`'s `eth0` (`ip -d link` shows `prog/xdp`).
    pub fn xdp_attached(&self, host: Host) -> bool {
        let out = self.exec_ok(host, &["ip", "-d", "link", "show", "dev", "eth0"]);
        out.contains("prog/xdp")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Ok(mut servers) = self.http.lock() {
            servers.clear(); // kills every HTTP server
        }
        for ns in self.namespaces.iter().rev() {
            remove_namespace(ns);
        }
        for host in self.director_hosts() {
            let _ = fs::remove_file(self.stats_socket_of(host));
        }
        if std::env::var_os("LAB_KEEP_DIR").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Namespaces whose name starts with `prefix`, per `ip netns list`.
pub fn lab_namespaces(prefix: &str) -> Vec<String> {
    let out = run_with_timeout(Command::new("ip").args(["netns", "list"]), COMMAND_TIMEOUT)
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Best-effort removal of namespaces left by an earlier lab with this exact prefix (a reused
/// pid) or by a lab whose process no longer exists (a test killed before its guards ran).
fn cleanup_stale(prefix: &str) {
    for ns in lab_namespaces("dl") {
        let stale = ns.starts_with(prefix) || lab_owner(&ns).is_some_and(|pid| !pid_alive(pid));
        if stale {
            remove_namespace(&ns);
            if let Some((lab_prefix, _host)) = ns.split_once('-') {
                let _ = fs::remove_dir_all(std::env::temp_dir().join(lab_prefix));
                for director in ["director", "director2", "director3"] {
                    let _ = fs::remove_file(format!("/run/director/{lab_prefix}-{director}.sock"));
                }
            }
        }
    }
    // Scratch directories of dead labs whose namespaces were already gone.
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if lab_owner(&format!("{name}-dir")).is_some_and(|pid| !pid_alive(pid)) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The pid in a lab namespace name `dl<pid>x<n>-<host>`.
fn lab_owner(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix("dl")?;
    let (pid, rest) = rest.split_once('x')?;
    let (n, _host) = rest.split_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills whatever still runs in a lab namespace, then deletes it (which destroys its veths).
fn remove_namespace(ns: &str) {
    let pids = |ns: &str| -> Vec<u32> {
        run_with_timeout(
            Command::new("ip").args(["netns", "pids", ns]),
            COMMAND_TIMEOUT,
        )
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
    };
    for pid in pids(ns) {
        sys::kill(pid, libc::SIGKILL);
    }
    let _ = poll_until(
        &format!("processes in {ns} to exit"),
        Duration::from_secs(3),
        Duration::from_millis(10),
        || {
            if pids(ns).is_empty() {
                Ok(())
            } else {
                Err("still running".into())
            }
        },
    );
    match run_with_timeout(
        Command::new("ip").args(["netns", "del", ns]),
        COMMAND_TIMEOUT,
    ) {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "director-lab: ip netns del {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("director-lab: ip netns del {ns}: {e:#}"),
    }
}

/// Runs `ip ARGS` on the host (usually `ip -n NS ...`), failing with its stderr.
fn ip(args: &[&str]) -> Result<String> {
    let out = run_with_timeout(Command::new("ip").args(args), COMMAND_TIMEOUT)?;
    check_output(&format!("ip {}", args.join(" ")), &out)
}

pub(crate) fn check_output(what: &str, out: &Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `ip -o addr show` output lists `address` (`inet A/` or `inet6 A/`).
pub(crate) fn has_address(ip_addr_output: &str, address: &str) -> bool {
    ip_addr_output.contains(&format!("inet {address}/"))
        || ip_addr_output.contains(&format!("inet6 {address}/"))
}

fn base_name(args: &[&str]) -> String {
    args.first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_owned())
        .unwrap_or_default()
}

pub(crate) fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not found in PATH"))
}

/// The real Python interpreter (not a pyenv shim, which costs ~100 ms a start), or `LAB_PYTHON`.
pub(crate) fn python() -> Result<PathBuf> {
    static PYTHON: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("LAB_PYTHON") {
                return Ok(PathBuf::from(p));
            }
            let out = run_with_timeout(
                Command::new("python3").args(["-c", "import sys; print(sys.executable)"]),
                COMMAND_TIMEOUT,
            )
            .map_err(|e| format!("{e:#} (apt-get install python3)"))?;
            let exe = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !out.status.success() || exe.is_empty() {
                return Err("python3 does not run (apt-get install python3)".into());
            }
            Ok(PathBuf::from(exe))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_of_lab_namespace_names() {
        assert_eq!(lab_owner("dl1234x0-client"), Some(1234));
        assert_eq!(lab_owner("dl77x12-rs3"), Some(77));
        assert_eq!(lab_owner("dlfoo-client"), None);
        assert_eq!(lab_owner("dl12x-client"), None);
        assert_eq!(lab_owner("other"), None);
    }

    #[test]
    fn finds_address_in_ip_output() {
        let out = "2: eth0    inet 192.0.2.3/24 scope global eth0\n2: eth0    inet 192.0.2.10/32 scope global eth0\n";
        assert!(has_address(out, "192.0.2.10"));
        assert!(has_address(out, "192.0.2.3"));
        assert!(!has_address(out, "192.0.2.1"));
        let out =
            "2: eth0    inet6 2001:db8::10/128 scope global nodad \\       valid_lft forever\n";
        assert!(has_address(out, "2001:db8::10"));
        assert!(!has_address(out, "2001:db8::1"));
    }
}
