//! Value checks that more than one section uses: an integer within a range, an address a host
//! can own (IPv4 only, or either family). Each error names the key it was given.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ConfigError;

/// Converts a TOML integer to `T`, checking `low <= value <= high`.
pub(super) fn in_range<T>(value: i64, low: T, high: T, key: &str) -> Result<T, ConfigError>
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
pub(super) fn unicast_address(text: &str, key: &str) -> Result<Ipv4Addr, ConfigError> {
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

/// Parses an IPv4 or IPv6 address that a host can own and forward to: for IPv6 not `::`,
/// multicast, loopback, link-local (fe80::/10, meaningful only with an interface) or
/// IPv4-mapped (`::ffff:0:0/96`, an IPv4 address in disguise: write it as IPv4).
pub(super) fn unicast_ip_address(text: &str, key: &str) -> Result<IpAddr, ConfigError> {
    let Ok(address) = text.parse::<IpAddr>() else {
        return Err(ConfigError::invalid(
            key,
            format!("{text:?}"),
            "expected an IPv4 or IPv6 address such as \"192.0.2.10\" or \"2001:db8::10\"",
        ));
    };
    match address {
        IpAddr::V4(_) => unicast_address(text, key).map(IpAddr::V4),
        IpAddr::V6(v6) if is_unicast_v6(v6) => Ok(address),
        IpAddr::V6(_) => Err(ConfigError::invalid(
            key,
            format!("{text:?}"),
            "expected a global or unique-local unicast IPv6 address (not ::, multicast, \
             loopback, link-local fe80::/10 or IPv4-mapped ::ffff:0:0/96)",
        )),
    }
}

/// Whether `address` is an IPv6 unicast address the director can hold or forward to.
pub(super) fn is_unicast_v6(address: Ipv6Addr) -> bool {
    let first = address.segments()[0];
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || first & 0xffc0 == 0xfe80
        || address.to_ipv4_mapped().is_some())
}
