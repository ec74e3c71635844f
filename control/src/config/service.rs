//! Validation of the `[[service]]` tables and their `[[service.backend]]`s: names, VIP and
//! ports, persistence, protocol, scheduler, forwarding, the Maglev table size, each backend, and
//! the fallback (sorry server); across services, unique names and each (vip, port, protocol)
//! served once.
//!
//! Addresses are IPv4 or IPv6. A real server's family must be the VIP's under DR and NAT (DR
//! only changes the MAC, NAT only the addresses); TUN may carry an IPv4 VIP's packets to an
//! IPv6 real server (IPv4-in-IPv6, RFC 2473), never the reverse, as IPVS and Katran allow.
//!
//! The `[service.health_check]` table is `health`'s; this module only hands it over.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use dataplane::{Forwarding, Protocol, Thresholds};
use scheduler::Algorithm;

use super::raw::{RawBackend, RawService};
use super::values::{in_range, unicast_ip_address};
use super::{
    parse_mac, BackendConfig, ConfigError, ServiceConfig, MAX_MAGLEV_TABLE_SIZE, MAX_PERSISTENCE,
    MAX_PORTS, MAX_SERVICE_NAME, MAX_WEIGHT,
};
use crate::duration::{format_duration, parse_duration};

/// The `[[service]]` tables: at least one, each valid, every name once and every
/// (vip, port, protocol) served by one service only.
pub(super) fn validate_services(
    tables: Vec<RawService>,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    if tables.is_empty() {
        return Err(ConfigError::invalid(
            "service",
            "[]",
            "expected at least one [[service]] table",
        ));
    }
    let mut services: Vec<ServiceConfig> = Vec::with_capacity(tables.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<(IpAddr, u16, Protocol), usize> = HashMap::new();
    for (index, raw) in tables.into_iter().enumerate() {
        let service = raw.validate(index)?;
        let at = format!("service[{index}] {:?}", service.name);
        if let Some(first) = names.insert(service.name.clone(), index) {
            return Err(ConfigError::invalid(
                format!("{at}: name"),
                format!("{:?}", service.name),
                format!("duplicate service name, already used by service[{first}]"),
            ));
        }
        for &port in &service.ports {
            if let Some(first) = keys.insert((service.vip, port, service.protocol), index) {
                return Err(ConfigError::invalid(
                    format!("{at}: vip"),
                    format!("\"{}\"", service.vip),
                    format!(
                        "{}/{} is already served by service[{first}] {:?}, expected each \
                         (vip, port, protocol) once",
                        SocketAddr::new(service.vip, port),
                        service.protocol.name(),
                        services[first].name
                    ),
                ));
            }
        }
        services.push(service);
    }
    Ok(services)
}

impl RawService {
    fn validate(self, index: usize) -> Result<ServiceConfig, ConfigError> {
        if !valid_service_name(&self.name) {
            return Err(ConfigError::invalid(
                format!("service[{index}].name"),
                format!("{:?}", self.name),
                format!("expected 1 to {MAX_SERVICE_NAME} characters from A-Z a-z 0-9 _ . -"),
            ));
        }
        let at = format!("service[{index}] {:?}", self.name);
        let vip = unicast_ip_address(&self.vip, &format!("{at}: vip"))?;
        let ports = validate_ports(self.port, self.ports, &at)?;
        let port = ports[0];
        let (persistence, persistence_netmask) =
            validate_persistence(self.persistence, self.persistence_netmask, &at)?;
        let persistence_prefix6 =
            validate_prefix6(self.persistence_prefix6, persistence.is_some(), &at)?;
        let protocol = parse_protocol(&self.protocol, &at)?;
        let scheduler = Algorithm::from_str(&self.scheduler).map_err(|_| {
            ConfigError::invalid(
                format!("{at}: scheduler"),
                format!("{:?}", self.scheduler),
                format!(
                    "unknown scheduler, expected one of {}",
                    Algorithm::NAMES.join(", ")
                ),
            )
        })?;
        let forwarding = parse_forwarding(&self.forwarding, &at)?;
        if self.backend.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}: backend"),
                "[]",
                "expected at least one [[service.backend]] table",
            ));
        }
        if self.backend.len() > scheduler::MAX_SERVERS {
            return Err(ConfigError::invalid(
                format!("{at}: backend"),
                format!("[{} tables]", self.backend.len()),
                format!("expected at most {} backends", scheduler::MAX_SERVERS),
            ));
        }
        let maglev_table_size =
            validate_maglev_table_size(self.maglev_table_size, self.backend.len(), &at)?;
        let mut backends: Vec<BackendConfig> = Vec::with_capacity(self.backend.len());
        for (position, raw) in self.backend.into_iter().enumerate() {
            let backend = raw.validate(&format!("{at}: backend[{position}]"), vip, forwarding)?;
            if let Some(first) = backends
                .iter()
                .position(|other| other.address == backend.address)
            {
                return Err(ConfigError::invalid(
                    format!("{at}: backend[{position}].address"),
                    format!("\"{}\"", backend.address),
                    format!("duplicate backend, already backend[{first}]"),
                ));
            }
            check_port_mapping(
                &backend,
                &format!("{at}: backend[{position}].port"),
                forwarding,
                &ports,
            )?;
            backends.push(backend);
        }
        let health_check = match self.health_check {
            None => None,
            Some(raw) => Some(raw.validate(&format!("{at}: health_check"))?),
        };
        let fallback = match self.fallback {
            None => None,
            Some(text) => Some(validate_fallback(
                &text,
                &format!("{at}: fallback"),
                vip,
                forwarding,
                &ports,
                &backends,
            )?),
        };
        Ok(ServiceConfig {
            name: self.name,
            vip,
            port,
            ports,
            persistence,
            persistence_netmask,
            persistence_prefix6,
            protocol,
            scheduler,
            forwarding,
            maglev_table_size,
            backends,
            health_check,
            fallback,
        })
    }
}

/// `maglev_table_size`: prime, and at least the number of backends.
fn validate_maglev_table_size(
    size: Option<i64>,
    backends: usize,
    at: &str,
) -> Result<u32, ConfigError> {
    Ok(match size {
        None => scheduler::DEFAULT_MAGLEV_TABLE_SIZE,
        Some(size) => {
            let key = format!("{at}: maglev_table_size");
            let size = in_range(size, 1, MAX_MAGLEV_TABLE_SIZE, &key)?;
            if !is_prime(size) {
                return Err(ConfigError::invalid(
                    key,
                    size.to_string(),
                    format!(
                        "expected a prime number, such as {}",
                        scheduler::DEFAULT_MAGLEV_TABLE_SIZE
                    ),
                ));
            }
            if (size as usize) < backends {
                return Err(ConfigError::invalid(
                    key,
                    size.to_string(),
                    format!("expected at least the number of backends ({backends}), ideally 100 times it"),
                ));
            }
            size
        }
    })
}

/// A real server's family against the VIP's: equal under DR and NAT; under TUN an IPv4 VIP may
/// also go to an IPv6 real server (4in6), an IPv6 VIP never to an IPv4 one (IPv4 cannot carry
/// IPv6 here: no 6in4).
fn check_family(
    server: IpAddr,
    key: &str,
    vip: IpAddr,
    forwarding: Forwarding,
) -> Result<(), ConfigError> {
    let allowed = match (vip, server, forwarding) {
        (IpAddr::V4(_), IpAddr::V4(_), _)
        | (IpAddr::V6(_), IpAddr::V6(_), _)
        | (IpAddr::V4(_), IpAddr::V6(_), Forwarding::Tunnel) => true,
        (IpAddr::V6(_), IpAddr::V4(_), _) | (IpAddr::V4(_), IpAddr::V6(_), _) => false,
    };
    if allowed {
        return Ok(());
    }
    let family = |address: IpAddr| if address.is_ipv4() { "IPv4" } else { "IPv6" };
    let expected = if forwarding == Forwarding::Tunnel {
        format!(
            "the vip \"{vip}\" is IPv6 and forwarding = \"tun\" cannot carry IPv6 in IPv4; \
             expected an IPv6 real server (an IPv4 vip may tunnel to IPv6 ones, not the reverse)"
        )
    } else {
        format!(
            "the vip \"{vip}\" is {} and forwarding = {:?} needs real servers of the vip's \
             family; expected an {} address (only \"tun\" mixes families, IPv4 vip to IPv6 \
             real servers)",
            family(vip),
            forwarding.name(),
            family(vip)
        )
    };
    Err(ConfigError::invalid(
        key,
        format!("\"{server}\" ({})", family(server)),
        expected,
    ))
}

/// A backend's `port` (LVS-NAT port mapping): only NAT rewrites ports, and one port cannot
/// stand for each of a service group's.
fn check_port_mapping(
    backend: &BackendConfig,
    key: &str,
    forwarding: Forwarding,
    ports: &[u16],
) -> Result<(), ConfigError> {
    let Some(port) = backend.port else {
        return Ok(());
    };
    if forwarding != Forwarding::Nat {
        return Err(ConfigError::invalid(
            key,
            port.to_string(),
            format!(
                "only forwarding = \"nat\" can change the port (this service uses {:?}); leave \
                 port out",
                forwarding.name()
            ),
        ));
    }
    if ports.len() > 1 {
        return Err(ConfigError::invalid(
            key,
            port.to_string(),
            "a service with several ports cannot map them all to one port; leave port out or \
             split the service",
        ));
    }
    Ok(())
}

/// `fallback = "ADDRESS"` or `"ADDRESS:PORT"`: the sorry server. Under dr and tun it serves the
/// port the client connected to (like every real server there), so a port may only repeat the
/// service's; under nat a port maps as a backend's `port` does.
fn validate_fallback(
    text: &str,
    key: &str,
    vip: IpAddr,
    forwarding: Forwarding,
    ports: &[u16],
    backends: &[BackendConfig],
) -> Result<BackendConfig, ConfigError> {
    let value = format!("{text:?}");
    let invalid = |expected: String| ConfigError::invalid(key, &value, expected);
    // "ADDRESS", "IPV4:PORT" or "[IPV6]:PORT": an IPv6 address holds colons of its own.
    let (address, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((address, port)) => (address, Some(port)),
            None => (rest.strip_suffix(']').unwrap_or(text), None),
        }
    } else if text.matches(':').count() == 1 {
        text.split_once(':')
            .map_or((text, None), |(address, port)| (address, Some(port)))
    } else {
        (text, None)
    };
    let Ok(address) = address.parse::<IpAddr>() else {
        return Err(invalid(
            "expected an address and optional port, such as \"192.0.2.50\", \"192.0.2.50:80\", \
             \"2001:db8::50\" or \"[2001:db8::50]:80\""
                .to_owned(),
        ));
    };
    unicast_ip_address(&address.to_string(), key).map_err(|_| {
        invalid(
            "expected a unicast address (not unspecified, broadcast, multicast, loopback or \
             link-local)"
                .to_owned(),
        )
    })?;
    check_family(address, key, vip, forwarding)?;
    if address == vip {
        return Err(invalid(
            "the fallback equals the service's vip, expected the sorry server's own address"
                .to_owned(),
        ));
    }
    if let Some(position) = backends
        .iter()
        .position(|backend| backend.address == address)
    {
        return Err(invalid(format!(
            "the fallback is already backend[{position}]; it takes flows only while every \
             backend is out of the pool, so give it an address of its own"
        )));
    }
    let port = match port {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 => Some(port),
            _ => {
                return Err(invalid(
                    "expected a port of 1..=65535 after the colon".to_owned(),
                ))
            }
        },
    };
    let port =
        match (port, forwarding) {
            (None, _) => None,
            (Some(port), Forwarding::Nat) if ports.len() == 1 => Some(port),
            (Some(_), Forwarding::Nat) => return Err(invalid(
                "a service with several ports cannot map them all to one port; leave the port out"
                    .to_owned(),
            )),
            // Under dr and tun nothing rewrites ports: the sorry server gets the client's.
            (Some(port), _) if ports == [port] => None,
            (Some(_), _) => {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                return Err(invalid(format!(
                    "only forwarding = \"nat\" can change the port, and this service uses {:?} on \
                 port(s) {}; leave the port out",
                    forwarding.name(),
                    ports.join(", ")
                )));
            }
        };
    Ok(BackendConfig {
        address,
        weight: 1,
        mac: None,
        port,
        thresholds: Thresholds::default(),
    })
}

/// `port = N` or `ports = [N, ...]`, as a non-empty list without repeats.
fn validate_ports(
    port: Option<i64>,
    ports: Option<Vec<i64>>,
    at: &str,
) -> Result<Vec<u16>, ConfigError> {
    Ok(match (port, ports) {
        (Some(port), None) => vec![in_range(port, 1u16, u16::MAX, &format!("{at}: port"))?],
        (None, Some(list)) => {
            if list.is_empty() || list.len() > MAX_PORTS {
                return Err(ConfigError::invalid(
                    format!("{at}: ports"),
                    format!("[{} ports]", list.len()),
                    format!("expected 1 to {MAX_PORTS} ports"),
                ));
            }
            let mut ports: Vec<u16> = Vec::with_capacity(list.len());
            for (position, port) in list.into_iter().enumerate() {
                let key = format!("{at}: ports[{position}]");
                let port = in_range(port, 1u16, u16::MAX, &key)?;
                if ports.contains(&port) {
                    return Err(ConfigError::invalid(
                        key,
                        port.to_string(),
                        "port listed twice",
                    ));
                }
                ports.push(port);
            }
            ports
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                format!("{at}: ports"),
                "[...]",
                "expected either port or ports, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                format!("{at}: port"),
                "(missing)",
                "expected port = N or ports = [N, ...]",
            ))
        }
    })
}

/// `persistence` and `persistence_netmask`.
fn validate_persistence(
    persistence: Option<String>,
    netmask: Option<String>,
    at: &str,
) -> Result<(Option<Duration>, Ipv4Addr), ConfigError> {
    let persistence = match persistence {
        None => None,
        Some(text) => {
            let key = format!("{at}: persistence");
            let timeout = parse_duration(&text).map_err(|error| {
                ConfigError::invalid(&key, format!("{text:?}"), error.to_string())
            })?;
            if timeout.is_zero() || timeout > MAX_PERSISTENCE {
                return Err(ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    format!(
                        "expected a timeout from 1s to {}",
                        format_duration(MAX_PERSISTENCE)
                    ),
                ));
            }
            Some(timeout)
        }
    };
    let netmask = match netmask {
        None => Ipv4Addr::BROADCAST,
        Some(text) => {
            let key = format!("{at}: persistence_netmask");
            if persistence.is_none() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    "only meaningful with persistence = \"<timeout>\"",
                ));
            }
            parse_netmask(&text).ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    "expected a contiguous IPv4 netmask such as \"255.255.255.0\"",
                )
            })?
        }
    };
    Ok((persistence, netmask))
}

/// `persistence_prefix6`: the IPv6 client prefix length persistence keys on (IPVS's
/// `-M` for IPv6 is a prefix length too), 0..=128, default 128 (one template per address).
fn validate_prefix6(prefix: Option<i64>, persistent: bool, at: &str) -> Result<u8, ConfigError> {
    let Some(prefix) = prefix else {
        return Ok(128);
    };
    let key = format!("{at}: persistence_prefix6");
    if !persistent {
        return Err(ConfigError::invalid(
            key,
            prefix.to_string(),
            "only meaningful with persistence = \"<timeout>\"",
        ));
    }
    in_range(prefix, 0u8, 128, &key)
}

/// A contiguous dotted netmask (`255.255.255.0`), or `None`.
fn parse_netmask(text: &str) -> Option<Ipv4Addr> {
    let mask = u32::from(text.parse::<Ipv4Addr>().ok()?);
    // Contiguous ones first means the zeros after them, inverted, are a run of low ones.
    let host_bits = !mask;
    (host_bits & host_bits.wrapping_add(1) == 0).then_some(Ipv4Addr::from(mask))
}

fn parse_protocol(text: &str, at: &str) -> Result<Protocol, ConfigError> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(ConfigError::invalid(
            format!("{at}: protocol"),
            format!("{text:?}"),
            "unknown protocol, expected tcp or udp",
        )),
    }
}

fn parse_forwarding(text: &str, at: &str) -> Result<Forwarding, ConfigError> {
    match text {
        "dr" => Ok(Forwarding::DirectRouting),
        "tun" => Ok(Forwarding::Tunnel),
        "nat" => Ok(Forwarding::Nat),
        _ => Err(ConfigError::invalid(
            format!("{at}: forwarding"),
            format!("{text:?}"),
            "unknown forwarding method, expected dr, nat or tun",
        )),
    }
}

impl RawBackend {
    fn validate(
        self,
        at: &str,
        vip: IpAddr,
        forwarding: Forwarding,
    ) -> Result<BackendConfig, ConfigError> {
        let address = unicast_ip_address(&self.address, &format!("{at}.address"))?;
        check_family(address, &format!("{at}.address"), vip, forwarding)?;
        if address == vip {
            return Err(ConfigError::invalid(
                format!("{at}.address"),
                format!("{:?}", self.address),
                "backend address equals the service's vip, expected the real server's own address",
            ));
        }
        let weight = match self.weight {
            None => 1,
            Some(weight) => in_range(weight, 0, MAX_WEIGHT, &format!("{at}.weight"))?,
        };
        let mac = match self.mac {
            None => None,
            Some(text) => {
                let key = format!("{at}.mac");
                let Some(mac) = parse_mac(&text) else {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{text:?}"),
                        "expected six hex bytes separated by colons, such as \"02:00:00:00:00:11\"",
                    ));
                };
                if mac[0] & 1 != 0 || mac == [0; 6] {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{text:?}"),
                        "expected a unicast MAC address (not all-zero, multicast or broadcast)",
                    ));
                }
                Some(mac)
            }
        };
        let port = match self.port {
            None => None,
            Some(port) => Some(in_range(port, 1u16, u16::MAX, &format!("{at}.port"))?),
        };
        let thresholds = thresholds(self.max_connections, self.min_connections, at)?;
        Ok(BackendConfig {
            address,
            weight,
            mac,
            port,
            thresholds,
        })
    }
}

/// A backend's `max_connections` and `min_connections` (IPVS's `u_threshold` and
/// `l_threshold`, at most 2^32 - 1 as there): the lower needs the upper and must be below it.
fn thresholds(max: Option<i64>, min: Option<i64>, at: &str) -> Result<Thresholds, ConfigError> {
    let (max_key, min_key) = (
        format!("{at}.max_connections"),
        format!("{at}.min_connections"),
    );
    let max = match max {
        None => 0,
        Some(value) => in_range(value, 1, u64::from(u32::MAX), &max_key)?,
    };
    let min = match min {
        None => 0,
        Some(value) => in_range(value, 1, u64::from(u32::MAX), &min_key)?,
    };
    if min > 0 && max == 0 {
        return Err(ConfigError::invalid(
            min_key,
            min.to_string(),
            format!(
                "a lower connection threshold needs an upper one: set {max_key} above it (this \
                 backend's, not director.max_connections)"
            ),
        ));
    }
    if min > 0 && min >= max {
        return Err(ConfigError::invalid(
            min_key,
            min.to_string(),
            format!("expected less than {max_key} = {max}"),
        ));
    }
    Ok(Thresholds { max, min })
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

/// Trial division; `n` is at most [`MAX_MAGLEV_TABLE_SIZE`], so at most ~2000 divisions.
fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut divisor = 2u64;
    while divisor * divisor <= n {
        if n % divisor == 0 {
            return false;
        }
        divisor += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::{assert_mentions, error_with, GOOD};
    use crate::config::Config;

    #[test]
    fn service_fields_are_checked() {
        assert_mentions(
            &error_with("\"maglev\"", "\"fastest\""),
            &[
                "service[0] \"web\": scheduler = \"fastest\": unknown scheduler, expected one of rr, wrr, lc, wlc, sed, nq, sh, dh, lblc, lblcr, maglev, mh",
            ],
        );
        assert_mentions(
            &error_with("port = 80", "port = 0"),
            &["service[0] \"web\": port = 0", "expected 1..=65535"],
        );
        assert_mentions(
            &error_with("port = 80", "port = 65536"),
            &["service[0] \"web\": port = 65536"],
        );
        assert_mentions(
            &error_with("\"tcp\"", "\"sctp\""),
            &[
                "service[0] \"web\": protocol = \"sctp\"",
                "expected tcp or udp",
            ],
        );
        assert_mentions(
            &error_with("\"dr\"", "\"nat\""),
            &[
                "service[0] \"web\": forwarding = \"nat\"",
                "client-side and a server-side interface",
                "[\"eth0\", \"<server side>\"]",
            ],
        );
        let tunnel = Config::parse(&GOOD.replacen("\"dr\"", "\"tun\"", 1)).unwrap();
        assert_eq!(tunnel.services[0].forwarding, Forwarding::Tunnel);
        assert_mentions(
            &error_with("\"dr\"", "\"magic\""),
            &[
                "service[0] \"web\": forwarding = \"magic\"",
                "unknown forwarding method, expected dr",
            ],
        );
        assert_mentions(
            &error_with("\"192.0.2.10\"", "\"192.0.2.300\""),
            &[
                "service[0] \"web\": vip = \"192.0.2.300\"",
                "expected an IPv4 or IPv6 address",
            ],
        );
        assert_mentions(
            &error_with("\"192.0.2.10\"", "\"224.0.0.1\""),
            &[
                "service[0] \"web\": vip = \"224.0.0.1\"",
                "expected a unicast address",
            ],
        );
        assert_mentions(
            &error_with("name = \"web\"", "name = \"web site\""),
            &[
                "service[0].name = \"web site\"",
                "expected 1 to 64 characters",
            ],
        );
    }

    #[test]
    fn maglev_table_size_is_checked() {
        let with = |size: &str| {
            error_with(
                "forwarding = \"dr\"",
                &format!("forwarding = \"dr\"\nmaglev_table_size = {size}"),
            )
        };
        assert_mentions(
            &with("65536"),
            &[
                "service[0] \"web\": maglev_table_size = 65536",
                "expected a prime number",
            ],
        );
        assert_mentions(
            &with("1"),
            &[
                "service[0] \"web\": maglev_table_size = 1",
                "expected a prime number",
            ],
        );
        assert_mentions(
            &with("0"),
            &["service[0] \"web\": maglev_table_size = 0", "expected 1..="],
        );
        assert_mentions(
            &with("99999999999"),
            &[
                "service[0] \"web\": maglev_table_size = 99999999999",
                "expected 1..=16777216",
            ],
        );
        // 3 is prime but smaller than the four backends below.
        let text = GOOD.replace(
            "forwarding = \"dr\"",
            "forwarding = \"dr\"\nmaglev_table_size = 3",
        );
        let text = format!("{text}\n[[service.backend]]\naddress = \"192.0.2.13\"\n[[service.backend]]\naddress = \"192.0.2.14\"\n");
        let message = Config::parse(&text).unwrap_err().to_string();
        assert_mentions(
            &message,
            &[
                "service[0] \"web\": maglev_table_size = 3",
                "at least the number of backends (4)",
            ],
        );
    }

    #[test]
    fn duplicates_are_rejected() {
        let second = |name: &str, vip: &str| {
            format!(
                "{GOOD}\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\n\
                 scheduler = \"rr\"\nforwarding = \"dr\"\n[[service.backend]]\naddress = \"192.0.2.21\"\n"
            )
        };
        let message = Config::parse(&second("web", "192.0.2.20"))
            .unwrap_err()
            .to_string();
        assert_mentions(
            &message,
            &[
                "service[1] \"web\": name = \"web\"",
                "duplicate service name",
                "service[0]",
            ],
        );
        let message = Config::parse(&second("web2", "192.0.2.10"))
            .unwrap_err()
            .to_string();
        assert_mentions(
            &message,
            &[
                "service[1] \"web2\": vip = \"192.0.2.10\"",
                "192.0.2.10:80/tcp is already served by service[0] \"web\"",
            ],
        );
        // Same VIP and port over UDP is a different service.
        let udp = second("dns", "192.0.2.10").replace(
            "port = 80\nprotocol = \"tcp\"\nscheduler = \"rr\"",
            "port = 80\nprotocol = \"udp\"\nscheduler = \"rr\"",
        );
        assert_eq!(Config::parse(&udp).unwrap().services.len(), 2);
        let message = error_with("\"192.0.2.12\"", "\"192.0.2.11\"");
        assert_mentions(
            &message,
            &[
                "service[0] \"web\": backend[1].address = \"192.0.2.11\"",
                "duplicate backend, already backend[0]",
            ],
        );
    }

    #[test]
    fn connection_thresholds_are_checked() {
        let config = Config::parse(&GOOD.replace(
            "weight = 2",
            "weight = 2\nmax_connections = 100\nmin_connections = 80",
        ))
        .unwrap();
        let backends = &config.services[0].backends;
        assert_eq!(backends[0].thresholds, Thresholds::default());
        assert_eq!(backends[1].thresholds, Thresholds { max: 100, min: 80 });
        let only_max =
            Config::parse(&GOOD.replace("weight = 2", "weight = 2\nmax_connections = 100"))
                .unwrap();
        assert_eq!(
            only_max.services[0].backends[1].thresholds,
            Thresholds { max: 100, min: 0 }
        );
        let with = |lines: &str| error_with("weight = 2", &format!("weight = 2\n{lines}"));
        assert_mentions(
            &with("max_connections = 0"),
            &[
                "service[0] \"web\": backend[1].max_connections = 0",
                "expected 1..=4294967295",
            ],
        );
        assert_mentions(
            &with("max_connections = 4294967296"),
            &["backend[1].max_connections = 4294967296"],
        );
        assert_mentions(
            &with("min_connections = 10"),
            &[
                "backend[1].min_connections = 10",
                "needs an upper one",
                "not director.max_connections",
            ],
        );
        assert_mentions(
            &with("max_connections = 10\nmin_connections = 10"),
            &[
                "backend[1].min_connections = 10",
                "expected less than service[0] \"web\": backend[1].max_connections = 10",
            ],
        );
    }

    #[test]
    fn backends_are_checked() {
        let none = GOOD.split("[[service.backend]]").next().unwrap().to_owned();
        let message = Config::parse(&none).unwrap_err().to_string();
        assert_mentions(
            &message,
            &[
                "service[0] \"web\": backend = []",
                "at least one [[service.backend]]",
            ],
        );
        let no_service = GOOD.split("[[service]]").next().unwrap().to_owned();
        let message = Config::parse(&no_service).unwrap_err().to_string();
        assert_mentions(&message, &["service = []", "at least one [[service]]"]);
        assert_mentions(
            &error_with("weight = 2", "weight = 70000"),
            &[
                "service[0] \"web\": backend[1].weight = 70000",
                "expected 0..=65535",
            ],
        );
        assert_mentions(
            &error_with("weight = 2", "weight = -1"),
            &[
                "service[0] \"web\": backend[1].weight = -1",
                "expected 0..=65535",
            ],
        );
        assert_mentions(
            &error_with("\"02:00:00:00:00:12\"", "\"02:00:00:00:12\""),
            &[
                "service[0] \"web\": backend[1].mac = \"02:00:00:00:12\"",
                "six hex bytes",
            ],
        );
        assert_mentions(
            &error_with("\"02:00:00:00:00:12\"", "\"02:00:00:00:00:zz\""),
            &["backend[1].mac = \"02:00:00:00:00:zz\"", "six hex bytes"],
        );
        assert_mentions(
            &error_with("\"02:00:00:00:00:12\"", "\"ff:ff:ff:ff:ff:ff\""),
            &["backend[1].mac = \"ff:ff:ff:ff:ff:ff\"", "unicast MAC"],
        );
        assert_mentions(
            &error_with("\"192.0.2.11\"", "\"192.0.2.10\""),
            &[
                "service[0] \"web\": backend[0].address = \"192.0.2.10\"",
                "equals the service's vip",
            ],
        );
        assert_mentions(
            &error_with("\"192.0.2.11\"", "\"backend1\""),
            &[
                "service[0] \"web\": backend[0].address = \"backend1\"",
                "expected an IPv4 or IPv6 address",
            ],
        );
        // Weight 0 (drain) is allowed.
        assert_eq!(
            Config::parse(&GOOD.replace("weight = 2", "weight = 0"))
                .unwrap()
                .services[0]
                .backends[1]
                .weight,
            0
        );
    }

    #[test]
    fn primes() {
        let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
        assert!(is_prime(16_777_213));
    }

    #[test]
    fn service_groups_and_persistence() {
        let config = Config::parse(&GOOD.replace(
            "port = 80",
            "ports = [80, 443]\npersistence = \"300s\"\npersistence_netmask = \"255.255.255.0\"",
        ))
        .unwrap();
        let web = &config.services[0];
        assert_eq!((web.port, web.ports.as_slice()), (80, &[80, 443][..]));
        assert_eq!(web.persistence, Some(Duration::from_secs(300)));
        assert_eq!(web.persistence_netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert!(
            web.summary()
                .contains("80,443 maglev dr persistent 5m mask 255.255.255.0"),
            "{}",
            web.summary()
        );

        let plain = Config::parse(GOOD).unwrap();
        assert_eq!(plain.services[0].ports, [80]);
        assert_eq!(plain.services[0].persistence, None);
        assert_eq!(plain.services[0].persistence_netmask, Ipv4Addr::BROADCAST);
    }

    #[test]
    fn service_group_and_persistence_errors_name_key_and_value() {
        let cases: [(&str, &[&str]); 7] = [
            (
                "ports = [80, 443]\nport = 8080",
                &["ports", "either port or ports"],
            ),
            ("ports = []", &["ports", "expected 1 to 64 ports"]),
            ("ports = [80, 80]", &["ports[1] = 80", "listed twice"]),
            ("ports = [80, 0]", &["ports[1] = 0"]),
            (
                "port = 80\npersistence = \"soon\"",
                &["persistence = \"soon\""],
            ),
            ("port = 80\npersistence = \"2d\"", &["persistence = \"2d\""]),
            (
                "port = 80\npersistence = \"1m\"\npersistence_netmask = \"255.0.255.0\"",
                &["persistence_netmask = \"255.0.255.0\"", "contiguous"],
            ),
        ];
        for (replacement, expected) in cases {
            let text = GOOD.replace("port = 80", replacement);
            let message = Config::parse(&text).unwrap_err().to_string();
            for needle in expected {
                assert!(
                    message.contains(needle),
                    "{replacement:?}: {message:?} lacks {needle:?}"
                );
            }
        }
        let message = Config::parse(&GOOD.replace("port = 80\n", ""))
            .unwrap_err()
            .to_string();
        assert!(message.contains("port"), "{message}");
        let message = Config::parse(&GOOD.replace(
            "port = 80",
            "port = 80\npersistence_netmask = \"255.255.255.0\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("only meaningful with persistence"),
            "{message}"
        );
    }

    #[test]
    fn service_group_ports_must_not_overlap_another_service() {
        let text = format!(
            "{GOOD}\n[[service]]\nname = \"tls\"\nvip = \"192.0.2.10\"\nports = [443, 80]\n\
             protocol = \"tcp\"\nscheduler = \"rr\"\nforwarding = \"dr\"\n\
             [[service.backend]]\naddress = \"192.0.2.11\"\n"
        );
        let message = Config::parse(&text).unwrap_err().to_string();
        assert!(
            message.contains("192.0.2.10:80/tcp is already served"),
            "{message}"
        );
    }

    #[test]
    fn fallback_is_checked() {
        let with = |fallback: &str| {
            GOOD.replacen(
                "forwarding = \"dr\"",
                &format!("forwarding = \"dr\"\nfallback = {fallback}"),
                1,
            )
        };
        let config = Config::parse(&with("\"192.0.2.50\"")).unwrap();
        let fallback = config.services[0].fallback.as_ref().unwrap();
        assert_eq!(
            (fallback.address, fallback.port, fallback.weight),
            (IpAddr::from([192, 0, 2, 50]), None, 1)
        );
        assert!(config.services[0]
            .summary()
            .contains("; fallback 192.0.2.50"));
        // Under dr the service's own port may be written; nothing is rewritten.
        let config = Config::parse(&with("\"192.0.2.50:80\"")).unwrap();
        assert_eq!(config.services[0].fallback.as_ref().unwrap().port, None);
        // Under nat the port maps.
        let nat = with("\"198.51.100.50:8080\"")
            .replace("\"dr\"", "\"nat\"")
            .replace("[\"eth0\"]", "[\"eth0\", \"eth1\"]");
        let config = Config::parse(&nat).unwrap();
        assert_eq!(
            config.services[0].fallback.as_ref().unwrap().port,
            Some(8080)
        );

        let problem = |text: String| Config::parse(&text).unwrap_err().to_string();
        let at = "service[0] \"web\": fallback";
        for (value, expected) in [
            (
                "\"192.0.2.50:8080\"",
                "only forwarding = \"nat\" can change the port",
            ),
            ("\"192.0.2.50:0\"", "expected a port of 1..=65535"),
            ("\"192.0.2.50:http\"", "expected a port of 1..=65535"),
            ("\"sorry.example\"", "expected an address and optional port"),
            ("\"127.0.0.1\"", "expected a unicast address"),
            ("\"192.0.2.10\"", "equals the service's vip"),
            ("\"192.0.2.12\"", "already backend[1]"),
        ] {
            assert_mentions(
                &problem(with(value)),
                &[&format!("{at} = {value}"), expected],
            );
        }
        assert_mentions(
            &problem(with("80")),
            &["service[0].fallback", "invalid type: integer `80`"],
        );
        let group = nat.replace("port = 80\n", "ports = [80, 443]\n");
        assert_mentions(
            &problem(group),
            &[&format!("{at} = \"198.51.100.50:8080\""), "several ports"],
        );
    }

    #[test]
    fn every_ipvs_scheduler_name_is_accepted() {
        for name in scheduler::Algorithm::NAMES {
            let text = GOOD.replace("scheduler = \"maglev\"", &format!("scheduler = \"{name}\""));
            let config = Config::parse(&text).unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(config.services[0].scheduler, name.parse().unwrap());
        }
    }
}
