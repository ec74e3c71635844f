//! IPv6 in the lab ([`LabOptions::ipv6`](super::LabOptions::ipv6)): every lab namespace starts
//! with IPv6 off; a dual-stack lab turns it back on (without duplicate address detection, so an
//! address is usable at once), gives each host an address in 2001:db8::/64 ending like its IPv4
//! one, puts the IPv6 VIP on the DR real servers' `lo` (a /128: Linux answers neighbour
//! solicitations only for addresses of the interface they arrive on, RFC 4861 7.2.3 leaves that
//! to the node, so no `arp_ignore` twin is needed), and on the NAT lab a server segment
//! 2001:db8:1::/64 whose real servers route through the director. Helpers write IPv6 and
//! dual-stack director configs.
//!
//! It must not touch the IPv4 plan, use addresses outside 2001:db8::/32, or wait without a
//! deadline. The routed labs stay IPv4-only (refused with `ipv6`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{bail, ensure, Result};

use super::{ip, Host, Lab, Topology};
use crate::cmd::poll_until;
use crate::config::DirectorConfig;
use crate::VIP_PORT;

/// Prefix length of the lab's IPv6 segments.
pub const PREFIX6_LEN: u8 = 64;
/// The IPv6 VIP (the real servers hold it on `lo` in the DR lab).
pub const VIP6: &str = "2001:db8::10";
/// The client's IPv6 address.
pub const CLIENT_IP6: &str = "2001:db8::2";
/// The (first) director's IPv6 address.
pub const DIRECTOR_IP6: &str = "2001:db8::3";
/// The director's IPv6 address on the NAT lab's server side (the real servers' gateway).
pub const SERVER_SIDE_IP6: &str = "2001:db8:1::1";
/// Bound on a host's link-local address becoming usable.
const LINK_LOCAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The IPv6 twin of an IPv4 lab address: 192.0.2.N -> 2001:db8::N, 198.51.100.N ->
/// 2001:db8:1::N (the host part is written in decimal digits, read as hex: ::11 for .11).
pub(super) fn twin(ipv4: &str) -> String {
    let address: Ipv4Addr = ipv4
        .parse()
        .unwrap_or_else(|e| panic!("{ipv4} is not an IPv4 address: {e}"));
    let [a, b, c, host] = address.octets();
    match (a, b, c) {
        (192, 0, 2) => format!("2001:db8::{host}"),
        (198, 51, 100) => format!("2001:db8:1::{host}"),
        _ => panic!("{ipv4} has no IPv6 twin in the lab"),
    }
}

/// Director `n`'s IPv6 address (1-based): 2001:db8::3, then ::251 and ::252.
pub fn director_ip6(n: usize) -> String {
    twin(&crate::director_ip(n))
}

/// Real server `i`'s IPv6 address in the DR lab: 2001:db8::11 for `rs1`.
pub fn rs_ip6(i: usize) -> String {
    twin(&crate::rs_ip(i))
}

/// Real server `i`'s IPv6 address on the NAT lab's server side: 2001:db8:1::11 for `rs1`.
pub fn nat_rs_ip6(i: usize) -> String {
    twin(&crate::nat_rs_ip(i))
}

/// `http://ADDRESS:PORT/`, the address in brackets if it is IPv6 (RFC 3986 3.2.2).
pub fn url_of(address: &str, port: u16) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("http://[{v6}]:{port}/"),
        _ => format!("http://{address}:{port}/"),
    }
}

/// The IPv6 VIP's URL, `http://[2001:db8::10]:80/`.
pub fn vip6_url() -> String {
    vip6_url_port(VIP_PORT)
}

/// The IPv6 VIP's URL on `port`.
pub fn vip6_url_port(port: u16) -> String {
    url_of(VIP6, port)
}

impl Host {
    /// The host's own IPv6 address on the lab segment, in a dual-stack lab (none for the switch,
    /// the routers and the far client).
    pub fn address6(self) -> Option<String> {
        match self {
            Host::Client | Host::Director | Host::ExtraDirector(_) | Host::Rs(_) => {
                self.address().map(|ipv4| twin(&ipv4))
            }
            Host::Switch | Host::Router(_) | Host::FarClient => None,
        }
    }
}

impl Lab {
    /// Whether the lab is dual stack ([`LabOptions::ipv6`](super::LabOptions::ipv6)).
    pub fn ipv6(&self) -> bool {
        self.ipv6
    }

    /// Real server `i`'s own IPv6 address: 2001:db8::(10 + i) in the DR lab, 2001:db8:1::(10 + i)
    /// in the NAT lab.
    pub fn rs_address6(&self, i: usize) -> String {
        twin(&self.rs_address(i))
    }

    /// A director's IPv6 address on the NAT lab's server side: [`SERVER_SIDE_IP6`] with one
    /// director, 2001:db8:1::(1 + n) for director `n` with several.
    pub fn server_side_ip6_of(&self, host: Host) -> String {
        twin(&self.server_side_ip_of(host))
    }

    /// A one-service IPv6 DR config: service "web6" on [`VIP6`], the lab's ports, over every
    /// real server's IPv6 address, with `scheduler`.
    pub fn dr6_config(&self, scheduler: &str) -> DirectorConfig {
        let mut config = self.dr_config(scheduler);
        let service = &mut config.services[0];
        service.name = "web6".into();
        service.vip = VIP6.into();
        for (i, backend) in (1..).zip(&mut service.backends) {
            backend.address = self.rs_address6(i);
        }
        config
    }

    /// A one-service IPv6 NAT config for the NAT lab: service "web6" on `[VIP6]:80` over every
    /// real server's server-side IPv6 address, mapped to `backend_port` when given.
    pub fn nat6_config(&self, scheduler: &str, backend_port: Option<u16>) -> DirectorConfig {
        let mut config = self.nat_config(scheduler, backend_port);
        let service = &mut config.services[0];
        service.name = "web6".into();
        service.vip = VIP6.into();
        for (i, backend) in (1..).zip(&mut service.backends) {
            backend.address = self.rs_address6(i);
        }
        config
    }

    /// One file, two services on one director: "web" on the IPv4 VIP and "web6" on [`VIP6`],
    /// each over every real server's address of its family, both DR with `scheduler`.
    pub fn dual_stack_config(&self, scheduler: &str) -> DirectorConfig {
        let mut config = self.dr_config(scheduler);
        let web6 = self.dr6_config(scheduler).services.remove(0);
        config.services.push(web6);
        config
    }

    /// Turns IPv6 on in every host of a dual-stack lab and gives each its addresses; called by
    /// `build` once the IPv4 lab exists.
    pub(super) fn build_ipv6(&mut self, switch: &str) -> Result<()> {
        ensure!(
            matches!(self.topology, Topology::DirectRouting | Topology::Nat),
            "the {:?} lab has no IPv6 plan",
            self.topology
        );
        // Without an MLD querier on the segment, snooping bridges may stop flooding the
        // solicited-node groups NDP relies on; the lab's bridges flood all multicast.
        let mut bridges = vec!["br0"];
        if self.topology == Topology::Nat {
            bridges.push("br1");
        }
        for bridge in bridges {
            ip(&[
                "-n",
                switch,
                "link",
                "set",
                bridge,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ])?;
        }
        let nat = self.topology == Topology::Nat;
        let mut hosts = vec![Host::Client];
        hosts.extend(self.director_hosts());
        hosts.extend(self.rs_hosts());
        for host in hosts {
            self.enable_ipv6(host)?;
            let own = match host {
                Host::Rs(i) if nat => self.rs_address6(i),
                _ => host.address6().expect("lab hosts have an IPv6 twin"),
            };
            self.add_address6(host, &own, PREFIX6_LEN, "eth0")?;
            match host {
                Host::Rs(_) if nat => {
                    let gateway = self.server_side_ip6_of(Host::Director);
                    self.try_exec_ok(
                        host,
                        &["ip", "-6", "route", "add", "default", "via", &gateway],
                    )?;
                }
                Host::Rs(_) => self.add_address6(host, VIP6, 128, "lo")?,
                Host::Director | Host::ExtraDirector(_) if nat => {
                    let server_side = self.server_side_ip6_of(host);
                    self.add_address6(host, &server_side, PREFIX6_LEN, "eth1")?;
                    // As for IPv4: the client stands in for the router in front of the director.
                    self.try_exec_ok(
                        host,
                        &["ip", "-6", "route", "add", "default", "via", CLIENT_IP6],
                    )?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Turns IPv6 on in `host` without duplicate address detection, and waits (bounded) until
    /// `eth0` has a usable link-local address (NDP's and VRRPv3's source, RFC 4861 4.1).
    fn enable_ipv6(&self, host: Host) -> Result<()> {
        let mut keys = vec![
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.accept_ra=0",
            "net.ipv6.conf.default.accept_ra=0",
            "net.ipv6.conf.all.forwarding=0",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
            "net.ipv6.conf.lo.disable_ipv6=0",
        ];
        let mut devices = vec!["eth0"];
        if self.topology == Topology::Nat && matches!(host, Host::Director | Host::ExtraDirector(_))
        {
            devices.push("eth1");
        }
        let per_device: Vec<String> = devices
            .iter()
            .flat_map(|device| {
                [
                    format!("net.ipv6.conf.{device}.accept_dad=0"),
                    format!("net.ipv6.conf.{device}.accept_ra=0"),
                    format!("net.ipv6.conf.{device}.disable_ipv6=0"),
                ]
            })
            .collect();
        keys.extend(per_device.iter().map(String::as_str));
        let mut args = vec!["sysctl", "-q", "-w"];
        args.extend(keys);
        self.try_exec_ok(host, &args)?;
        for device in devices {
            poll_until(
                &format!("{host}'s {device} link-local address"),
                LINK_LOCAL_TIMEOUT,
                Duration::from_millis(20),
                || {
                    let shown = self
                        .try_exec_ok(
                            host,
                            &[
                                "ip", "-6", "-o", "addr", "show", "dev", device, "scope", "link",
                            ],
                        )
                        .map_err(|e| format!("{e:#}"))?;
                    if shown.contains("fe80::") && !shown.contains("tentative") {
                        Ok(())
                    } else {
                        Err(shown)
                    }
                },
            )?;
        }
        Ok(())
    }

    /// `ip -6 addr add ADDRESS/PREFIX dev DEVICE nodad` in `host`.
    fn add_address6(&self, host: Host, address: &str, prefix: u8, device: &str) -> Result<()> {
        let with_prefix = format!("{address}/{prefix}");
        self.try_exec_ok(
            host,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &with_prefix,
                "dev",
                device,
                "nodad",
            ],
        )?;
        Ok(())
    }

    /// The IPv6 neighbour entry `host` holds for `address` on `device` (`ip -6 neigh show`),
    /// or an error naming what it holds instead.
    pub fn neighbour6(&self, host: Host, address: &str, device: &str) -> Result<String> {
        let shown =
            self.try_exec_ok(host, &["ip", "-6", "neigh", "show", address, "dev", device])?;
        if shown.trim().is_empty() {
            bail!("{host} has no neighbour entry for {address} on {device}");
        }
        Ok(shown.trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_keep_the_host_part() {
        assert_eq!(twin("192.0.2.2"), CLIENT_IP6);
        assert_eq!(twin("192.0.2.3"), DIRECTOR_IP6);
        assert_eq!(twin("192.0.2.10"), VIP6);
        assert_eq!(rs_ip6(1), "2001:db8::11");
        assert_eq!(nat_rs_ip6(3), "2001:db8:1::13");
        assert_eq!(twin(crate::SERVER_SIDE_IP), SERVER_SIDE_IP6);
        assert_eq!(director_ip6(2), "2001:db8::251");
    }

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(vip6_url(), "http://[2001:db8::10]:80/");
        assert_eq!(url_of("192.0.2.10", 8080), "http://192.0.2.10:8080/");
    }
}
