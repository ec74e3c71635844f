//! Validation of the `[ha]` table: the VRRPv3 virtual router (interface, vrid, priority,
//! advertisement interval, unicast peers), connection sync (its key in `sync_key`) and the NAT
//! gateway address.
//!
//! It checks the table against `[director]` (the interface must be one of its own), nothing else.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::raw::RawHa;
use super::sync_key::validate_sync_key;
use super::values::{in_range, is_unicast_v6, unicast_address};
use super::{
    ConfigError, DirectorConfig, HaConfig, DEFAULT_ADVERT_INTERVAL, DEFAULT_HA_PRIORITY,
    DEFAULT_SYNC_PORT, MAX_ADVERT_INTERVAL, MAX_PREEMPT_DELAY, MAX_UNICAST_PEERS,
    MIN_ADVERT_INTERVAL,
};
use crate::duration::parse_duration;

impl RawHa {
    pub(super) fn validate(self, director: &DirectorConfig) -> Result<HaConfig, ConfigError> {
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
        let preempt_delay = validate_preempt_delay(self.preempt_delay)?;
        let unicast_peers = validate_unicast_peers(&self.unicast_peers.unwrap_or_default())?;
        let sync_id = match self.sync_id {
            None => vrid,
            Some(id) => in_range(id, 0u8, u8::MAX, "ha.sync_id")?,
        };
        let sync_port = match self.sync_port {
            None => DEFAULT_SYNC_PORT,
            Some(port) => in_range(port, 1u16, u16::MAX, "ha.sync_port")?,
        };
        let sync = self.sync.unwrap_or(false);
        let sync_key = validate_sync_key(self.sync_key, self.sync_key_file, sync)?;
        let server_address = match self.server_address {
            None => None,
            Some(text) => Some(parse_server_address(&text, director)?),
        };
        let server_address6 = match self.server_address6 {
            None => None,
            Some(text) => Some(parse_server_address6(&text, director)?),
        };
        Ok(HaConfig {
            interface,
            vrid,
            priority,
            advert_interval,
            preempt: self.preempt.unwrap_or(true),
            preempt_delay,
            unicast_peers,
            sync,
            sync_id,
            sync_port,
            sync_key,
            server_address,
            server_address6,
        })
    }
}

/// `ha.preempt_delay`: a duration up to [`MAX_PREEMPT_DELAY`]; default none.
fn validate_preempt_delay(text: Option<String>) -> Result<Duration, ConfigError> {
    let Some(text) = text else {
        return Ok(Duration::ZERO);
    };
    let delay = parse_duration(&text).map_err(|error| {
        ConfigError::invalid("ha.preempt_delay", format!("{text:?}"), error.to_string())
    })?;
    if delay > MAX_PREEMPT_DELAY {
        return Err(ConfigError::invalid(
            "ha.preempt_delay",
            format!("{text:?}"),
            "expected at most \"1h\"",
        ));
    }
    Ok(delay)
}

/// `ha.unicast_peers`: at most [`MAX_UNICAST_PEERS`] IPv4 addresses, each once.
fn validate_unicast_peers(raw_peers: &[String]) -> Result<Vec<Ipv4Addr>, ConfigError> {
    let mut unicast_peers: Vec<Ipv4Addr> = Vec::new();
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
    Ok(unicast_peers)
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

/// `ha.server_address6`: the IPv6 twin of `ha.server_address`, "address/prefix" on the server
/// side. Added without DAD like the VIPs: the backup does not hold it, so no duplicate exists
/// while the master has it.
fn parse_server_address6(
    text: &str,
    director: &DirectorConfig,
) -> Result<(Ipv6Addr, u8), ConfigError> {
    let parsed = text.split_once('/').and_then(|(address, prefix)| {
        Some((
            address.parse::<Ipv6Addr>().ok()?,
            prefix.parse::<u8>().ok()?,
        ))
    });
    let Some((address, prefix)) =
        parsed.filter(|&(address, prefix)| (1..=128).contains(&prefix) && is_unicast_v6(address))
    else {
        return Err(ConfigError::invalid(
            "ha.server_address6",
            format!("{text:?}"),
            "expected a unicast IPv6 address (not link-local) with its prefix length, such as \
             \"2001:db8:2::1/64\"",
        ));
    };
    if director.interfaces.len() < 2 {
        return Err(ConfigError::invalid(
            "ha.server_address6",
            format!("{text:?}"),
            "the NAT gateway address lives on the server side, the second of \
             director.interfaces, and there is only one",
        ));
    }
    Ok((address, prefix))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::fixtures::{assert_mentions, GOOD};
    use crate::config::Config;

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
                preempt_delay: Duration::ZERO,
                unicast_peers: Vec::new(),
                sync: false,
                sync_id: 51,
                sync_port: DEFAULT_SYNC_PORT,
                sync_key: None,
                server_address: None,
                server_address6: None,
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
             advert_interval = \"40s950ms\"\npreempt = false\npreempt_delay = \"5s\"\n\
             unicast_peers = [\"192.0.2.251\", \"192.0.2.252\"]\n"
        );
        let ha = Config::parse(&text).unwrap().ha.unwrap();
        assert_eq!(ha.interface, "eth1");
        assert_eq!((ha.vrid, ha.priority), (255, 254));
        assert_eq!(ha.advert_interval, MAX_ADVERT_INTERVAL);
        assert!(!ha.preempt);
        assert_eq!(ha.preempt_delay, std::time::Duration::from_secs(5));
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
                "vrid = 51\npreempt_delay = \"soon\"",
                &["ha.preempt_delay = \"soon\"", "expected a duration"],
            ),
            (
                "vrid = 51\npreempt_delay = \"2h\"",
                &["ha.preempt_delay = \"2h\"", "at most \"1h\""],
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
