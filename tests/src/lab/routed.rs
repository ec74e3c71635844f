//! The routed labs ([`Topology::RoutedNat`], [`Topology::RoutedTun`],
//! [`Topology::RoutedTunEcmp`]): routers (plain namespaces with `ip_forward=1`) between the
//! client segment (192.0.2.0/24, bridge `br0`) and a far segment (203.0.113.0/24, bridge
//! `br2`), the director reaching the far segment by a specific route and never by a default
//! one. Helpers change a router's MAC, remove and re-add the director's route, and read how
//! many frames each router forwarded to the far segment.
//!
//! It must not change the DR and NAT labs, use addresses outside TEST-NET, or leave anything
//! behind: every namespace it makes is recorded in the [`Lab`] before it is configured, so the
//! lab's drop removes it even when set-up fails half-way.

use anyhow::{ensure, Context, Result};

use super::{ip, Host, Lab, Topology};
use crate::director::rs_decap_bin;
use crate::VIP;

/// The far segment behind the routers (TEST-NET-3).
pub const FAR_SUBNET: &str = "203.0.113.0/24";
/// The far client of [`Topology::RoutedNat`].
pub const FAR_CLIENT_IP: &str = "203.0.113.100";
/// Most real servers on the far segment (203.0.113.11 ..= 203.0.113.99).
const MAX_FAR_REAL_SERVERS: usize = 89;

/// Router `n`'s address on the client segment: 192.0.2.(240 + n).
pub fn router_ip(n: usize) -> String {
    assert!((1..=2).contains(&n), "router index {n} out of range");
    format!("192.0.2.{}", 240 + n)
}

/// Router `n`'s address on the far segment: 203.0.113.n.
pub fn router_far_ip(n: usize) -> String {
    assert!((1..=2).contains(&n), "router index {n} out of range");
    format!("203.0.113.{n}")
}

/// Real server `i`'s address on the far segment: 203.0.113.(10 + i).
pub fn far_rs_ip(i: usize) -> String {
    assert!(
        (1..=MAX_FAR_REAL_SERVERS).contains(&i),
        "far real server index {i} out of range"
    );
    format!("203.0.113.{}", 10 + i)
}

impl Lab {
    /// The routers of this lab: none, one, or two for [`Topology::RoutedTunEcmp`].
    pub fn routers(&self) -> usize {
        match self.topology {
            Topology::DirectRouting | Topology::Nat => 0,
            Topology::RoutedNat | Topology::RoutedTun => 1,
            Topology::RoutedTunEcmp => 2,
        }
    }

    /// Adds the routers, the far segment and what sits on it, and the director's route to it;
    /// called by `build` after the client segment (and, for NAT, the server side) exist.
    pub(super) fn build_routed(&mut self, switch: &str) -> Result<()> {
        if self.topology != Topology::RoutedNat {
            ensure!(
                self.real_servers <= MAX_FAR_REAL_SERVERS,
                "a routed TUN lab holds at most {MAX_FAR_REAL_SERVERS} real servers, got {}",
                self.real_servers
            );
        }
        for args in [
            &["link", "add", "br2", "type", "bridge", "stp_state", "0"][..],
            &["link", "set", "br2", "type", "bridge", "forward_delay", "0"],
            &["link", "set", "br2", "up"],
        ] {
            let mut full = vec!["-n", switch];
            full.extend_from_slice(args);
            ip(&full)?;
        }
        for n in 1..=self.routers() {
            let host = Host::Router(n);
            let ns = self.add_namespace(host)?;
            Self::plug(switch, &ns, &host.name(), "eth0", "br0", &router_ip(n))?;
            let far_port = format!("{}-f", host.name());
            Self::plug(switch, &ns, &far_port, "eth1", "br2", &router_far_ip(n))?;
            for device in ["eth0", "eth1"] {
                self.try_exec_ok(host, &["ethtool", "-K", device, "tx", "off"])?;
            }
            // A router forwards, and (replies from the VIP leave the far side) checks no
            // reverse path.
            let mut args = vec!["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"];
            let keys: Vec<String> = ["all", "default", "eth0", "eth1"]
                .iter()
                .map(|device| format!("net.ipv4.conf.{device}.rp_filter=0"))
                .collect();
            args.extend(keys.iter().map(String::as_str));
            self.try_exec_ok(host, &args)?;
        }
        // The client reaches the far segment through router 1 too (for tests that go around
        // the director).
        self.try_exec_ok(
            Host::Client,
            &["ip", "route", "add", FAR_SUBNET, "via", &router_ip(1)],
        )?;
        if self.topology == Topology::RoutedNat {
            let host = Host::FarClient;
            let ns = self.add_namespace(host)?;
            Self::plug(switch, &ns, &host.name(), "eth0", "br2", FAR_CLIENT_IP)?;
            self.try_exec_ok(host, &["ethtool", "-K", "eth0", "tx", "off"])?;
            self.try_exec_ok(
                host,
                &["ip", "route", "add", "default", "via", &router_far_ip(1)],
            )?;
        } else {
            for i in 1..=self.real_servers {
                self.add_far_real_server(switch, i)?;
            }
        }
        self.try_add_far_route()
    }

    /// Real server `i` on the far segment: its address, the VIP on `lo` (never announced),
    /// its default route via router 1, reverse-path filtering off (the inner source of a
    /// tunnelled frame is the client, not routed through eth0), and `rs-decap` on `eth0`.
    fn add_far_real_server(&mut self, switch: &str, i: usize) -> Result<()> {
        let host = Host::Rs(i);
        let ns = self.add_namespace(host)?;
        Self::plug(switch, &ns, &host.name(), "eth0", "br2", &far_rs_ip(i))?;
        self.try_exec_ok(host, &["ethtool", "-K", "eth0", "tx", "off"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &router_far_ip(1),
        ])?;
        ip(&["-n", &ns, "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        let mut keys = Vec::new();
        for device in ["all", "default", "eth0", "lo"] {
            keys.push(format!("net.ipv4.conf.{device}.arp_ignore=1"));
            keys.push(format!("net.ipv4.conf.{device}.arp_announce=2"));
            keys.push(format!("net.ipv4.conf.{device}.rp_filter=0"));
        }
        let mut args = vec!["sysctl", "-q", "-w"];
        args.extend(keys.iter().map(String::as_str));
        self.try_exec_ok(host, &args)?;
        let decap = rs_decap_bin();
        ensure!(
            decap.exists(),
            "{} is missing: build it first (cargo build --release --workspace --bins)",
            decap.display()
        );
        self.try_exec_ok(host, &[&decap.to_string_lossy(), "attach", "eth0"])
            .context("attaching rs-decap")?;
        Ok(())
    }

    /// The director's route to the far segment, as the lab set it up: via router 1, or for
    /// [`Topology::RoutedTunEcmp`] an ECMP route over both routers.
    fn far_route(&self) -> Vec<String> {
        let mut args: Vec<String> =
            vec!["ip".into(), "route".into(), "add".into(), FAR_SUBNET.into()];
        if self.routers() == 1 {
            args.extend(["via".into(), router_ip(1)]);
        } else {
            for n in 1..=self.routers() {
                args.extend(["nexthop".into(), "via".into(), router_ip(n)]);
            }
        }
        args
    }

    fn try_add_far_route(&self) -> Result<()> {
        let args = self.far_route();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.try_exec_ok(Host::Director, &args).map(drop)
    }

    /// Re-adds the director's route to the far segment ([`Lab::remove_far_route`] undone).
    pub fn add_far_route(&self) {
        self.try_add_far_route()
            .unwrap_or_else(|e| panic!("adding the director's route to {FAR_SUBNET}: {e:#}"));
    }

    /// Removes the director's route to the far segment: the director then has no route there
    /// at all (the routed labs give it no default route).
    pub fn remove_far_route(&self) {
        self.exec_ok(Host::Director, &["ip", "route", "del", FAR_SUBNET]);
    }

    /// The director's routes (`ip route show`), for messages.
    pub fn director_routes(&self) -> String {
        self.exec_ok(Host::Director, &["ip", "route", "show"])
    }

    /// Router `n`'s MAC on the client segment (the next hop the director uses).
    pub fn router_mac(&self, n: usize) -> String {
        self.exec_ok(Host::Router(n), &["cat", "/sys/class/net/eth0/address"])
            .trim()
            .to_owned()
    }

    /// Gives router `n`'s client-side interface a new MAC (`ip link set dev eth0 address`),
    /// as a replaced router would have; the director must follow it.
    pub fn set_router_mac(&self, n: usize, mac: &str) {
        // As a router taking over an address announces itself (VRRP, a replaced box): with
        // arp_notify the kernel sends a gratuitous ARP when the MAC changes, and the
        // director's kernel updates its neighbour entry from it.
        self.exec_ok(
            Host::Router(n),
            &["sysctl", "-qw", "net.ipv4.conf.eth0.arp_notify=1"],
        );
        self.exec_ok(
            Host::Router(n),
            &["ip", "link", "set", "dev", "eth0", "address", mac],
        );
    }

    /// Frames router `n` has sent onto the far segment so far (its `eth1` TX counter): what it
    /// forwarded there, plus a few ARP frames.
    pub fn router_forwarded(&self, n: usize) -> u64 {
        let text = self.exec_ok(
            Host::Router(n),
            &["cat", "/sys/class/net/eth1/statistics/tx_packets"],
        );
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("router{n} eth1 tx_packets {text:?}: {e}"))
    }
}
