//! The one check of a configuration against the running system: a DR real server (and a DR
//! fallback) must be on a directly connected network of the client-side interface, the one a
//! DR frame leaves by, since DR only changes the frame's destination MAC.
//!
//! It is pure: the caller reads the interfaces' prefixes from the kernel and passes them in
//! (`director check`, start-up and reload all call [`check_dr_on_link`]). It must not read the
//! system itself, nor judge anything but DR servers' addresses.

use std::fmt::Write as _;
use std::net::IpAddr;

use dataplane::Forwarding;

use super::{Config, ConfigError};

/// An interface's IPv4 and IPv6 addresses with their prefix lengths, as the kernel lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfacePrefixes {
    /// The interface's name.
    pub interface: String,
    /// Its addresses and prefix lengths, e.g. `(192.0.2.1, 24)` or `(2001:db8::1, 64)`.
    pub prefixes: Vec<(IpAddr, u8)>,
}

impl InterfacePrefixes {
    /// Whether a connected prefix of this interface covers `address`.
    pub fn covers(&self, address: IpAddr) -> bool {
        self.prefixes
            .iter()
            .any(|&(own, length)| same_network(own, address, length))
    }
}

/// Refuses a DR real server or DR fallback that no connected prefix of the client-side
/// interface (`director.interfaces[0]`) covers, naming it. `connected` holds what the kernel
/// says of the served interfaces; if the client side is not among them nothing is checked
/// (the caller says why it could not read it). A server with a configured `mac` is not
/// checked: the operator vouches for its link, as before this check existed (a real server
/// reached by a device route, or a lab without addresses).
pub fn check_dr_on_link(
    config: &Config,
    connected: &[InterfacePrefixes],
) -> Result<(), ConfigError> {
    let Some(client_side) = config
        .director
        .interfaces
        .first()
        .and_then(|name| connected.iter().find(|known| &known.interface == name))
    else {
        return Ok(());
    };
    for (index, service) in config.services.iter().enumerate() {
        if service.forwarding != Forwarding::DirectRouting {
            continue;
        }
        let at = format!("service[{index}] {:?}", service.name);
        let backends = service
            .backends
            .iter()
            .enumerate()
            .map(|(position, backend)| (format!("{at}: backend[{position}].address"), backend));
        let fallback = service
            .fallback
            .iter()
            .map(|fallback| (format!("{at}: fallback"), fallback));
        for (key, server) in backends.chain(fallback) {
            if server.mac.is_none() && !client_side.covers(server.address) {
                return Err(ConfigError::invalid(
                    key,
                    format!("\"{}\"", server.address),
                    off_link(client_side),
                ));
            }
        }
    }
    Ok(())
}

/// What an off-link DR server's error says after its key and value.
fn off_link(client_side: &InterfacePrefixes) -> String {
    let mut prefixes = String::new();
    for (position, (address, length)) in client_side.prefixes.iter().enumerate() {
        let separator = if position == 0 { "" } else { ", " };
        let _ = write!(prefixes, "{separator}{address}/{length}");
    }
    if prefixes.is_empty() {
        prefixes.push_str("none");
    }
    format!(
        "forwarding = \"dr\" needs the real server on a directly connected network of {} \
         (its prefixes: {prefixes}); use \"tun\" for routed real servers",
        client_side.interface
    )
}

/// Whether `a` and `b` are of one family and share their first `length` bits.
fn same_network(a: IpAddr, b: IpAddr, length: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(length.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(length.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{check_dr_on_link, same_network, InterfacePrefixes};
    use crate::config::fixtures::{assert_mentions, GOOD};
    use crate::config::Config;

    fn eth0(prefixes: &[(&str, u8)]) -> Vec<InterfacePrefixes> {
        vec![InterfacePrefixes {
            interface: "eth0".into(),
            prefixes: prefixes
                .iter()
                .map(|(address, length)| (address.parse().unwrap(), *length))
                .collect(),
        }]
    }

    #[test]
    fn prefixes_cover_their_network_only() {
        let a = |text: &str| text.parse().unwrap();
        assert!(same_network(a("192.0.2.1"), a("192.0.2.254"), 24));
        assert!(!same_network(a("192.0.2.1"), a("192.0.3.1"), 24));
        assert!(same_network(a("10.0.0.1"), a("203.0.113.5"), 0));
        assert!(same_network(a("192.0.2.10"), a("192.0.2.10"), 32));
        assert!(!same_network(a("192.0.2.10"), a("192.0.2.11"), 32));
        assert!(same_network(a("192.0.2.129"), a("192.0.2.200"), 25));
        assert!(!same_network(a("192.0.2.129"), a("192.0.2.100"), 25));
    }

    #[test]
    fn on_link_dr_servers_pass() {
        let config = Config::parse(GOOD).unwrap();
        check_dr_on_link(&config, &eth0(&[("192.0.2.1", 24)])).unwrap();
        // A /32 VIP beside the real prefix changes nothing.
        check_dr_on_link(&config, &eth0(&[("192.0.2.10", 32), ("192.0.2.1", 24)])).unwrap();
    }

    #[test]
    fn off_link_dr_server_is_named() {
        let text = GOOD.replacen("192.0.2.11", "203.0.113.5", 1);
        let config = Config::parse(&text).unwrap();
        let error = check_dr_on_link(&config, &eth0(&[("192.0.2.10", 32), ("192.0.2.1", 24)]))
            .unwrap_err()
            .to_string();
        assert_mentions(
            &error,
            &[
                "service[0] \"web\": backend[0].address = \"203.0.113.5\"",
                "forwarding = \"dr\" needs the real server on a directly connected network of eth0",
                "(its prefixes: 192.0.2.10/32, 192.0.2.1/24)",
                "use \"tun\" for routed real servers",
            ],
        );
        let error = check_dr_on_link(&config, &eth0(&[]))
            .unwrap_err()
            .to_string();
        assert_mentions(
            &error,
            &[
                "backend[0].address = \"203.0.113.5\"",
                "(its prefixes: none)",
            ],
        );
        // backend[1] has a configured MAC: not checked, even off-link.
        let text = GOOD.replacen("192.0.2.12", "203.0.113.6", 1);
        let config = Config::parse(&text).unwrap();
        check_dr_on_link(&config, &eth0(&[("192.0.2.1", 24)])).unwrap();
        check_dr_on_link(&config, &eth0(&[])).unwrap_err();
    }

    #[test]
    fn off_link_dr_fallback_is_named() {
        let text = GOOD.replacen(
            "forwarding = \"dr\"",
            "forwarding = \"dr\"\nfallback = \"198.51.100.7\"",
            1,
        );
        let config = Config::parse(&text).unwrap();
        let error = check_dr_on_link(&config, &eth0(&[("192.0.2.1", 24)]))
            .unwrap_err()
            .to_string();
        assert_mentions(
            &error,
            &[
                "service[0] \"web\": fallback = \"198.51.100.7\"",
                "directly connected network of eth0",
            ],
        );
    }

    #[test]
    fn other_methods_and_unknown_interfaces_are_not_checked() {
        let text = GOOD
            .replacen("forwarding = \"dr\"", "forwarding = \"tun\"", 1)
            .replacen("192.0.2.12", "203.0.113.5", 1);
        let config = Config::parse(&text).unwrap();
        check_dr_on_link(&config, &eth0(&[("192.0.2.1", 24)])).unwrap();
        let text = GOOD.replacen("192.0.2.12", "203.0.113.5", 1);
        let config = Config::parse(&text).unwrap();
        check_dr_on_link(&config, &[]).unwrap();
    }
}
