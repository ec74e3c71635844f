//! Value checks that more than one section uses: an integer within a range, an address a host
//! can own. Each error names the key it was given.

use std::fmt;
use std::net::Ipv4Addr;

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
