//! The served interfaces' connected prefixes, read from the kernel, and the on-link check of
//! DR real servers against them ([`crate::config::check_dr_on_link`]) for `director check`,
//! start-up and reload.
//!
//! It only reads addresses (over [`crate::netlink`]); it must not change anything, and the
//! rule itself stays in the pure config check.

use std::net::IpAddr;

use anyhow::Context as _;

use crate::config::{check_dr_on_link, Config, InterfacePrefixes};
use crate::netlink::{self, Netlink};

/// The IPv4 and IPv6 prefixes of each interface in `names`, in order (IPv4 first). IPv6
/// link-local prefixes are left out: no real server is configured by a link-local address.
pub fn read_prefixes(
    netlink: &mut Netlink,
    names: &[String],
) -> anyhow::Result<Vec<InterfacePrefixes>> {
    names
        .iter()
        .map(|name| {
            let ifindex =
                netlink::interface_index(name).with_context(|| format!("interface {name}"))?;
            let mut prefixes: Vec<(IpAddr, u8)> = netlink
                .addresses(ifindex)
                .with_context(|| format!("addresses of interface {name}"))?
                .into_iter()
                .map(|(address, length)| (IpAddr::V4(address), length))
                .collect();
            let v6 = netlink
                .addresses_v6(ifindex)
                .with_context(|| format!("IPv6 addresses of interface {name}"))?;
            prefixes.extend(
                v6.into_iter()
                    .filter(|(address, _)| !address.is_unicast_link_local())
                    .map(|(address, length)| (IpAddr::V6(address), length)),
            );
            Ok(InterfacePrefixes {
                interface: name.clone(),
                prefixes,
            })
        })
        .collect()
}

/// Reads the served interfaces' prefixes and refuses a DR real server none of the client
/// side's covers.
pub fn check_on_link(netlink: &mut Netlink, config: &Config) -> anyhow::Result<()> {
    let connected = read_prefixes(netlink, &config.director.interfaces)?;
    check_dr_on_link(config, &connected)?;
    Ok(())
}
