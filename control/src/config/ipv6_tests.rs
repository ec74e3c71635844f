//! IPv6 in the configuration: which addresses each key takes, the family rules of each
//! forwarding method (DR and NAT keep the VIP's family; TUN may carry an IPv4 VIP to IPv6 real
//! servers, never the reverse), `persistence_prefix6`, `ha.server_address6`, the on-link check
//! over IPv6 prefixes and the summaries `director check` prints. Every refusal names the key and
//! the value.

use std::net::{IpAddr, Ipv6Addr};

use dataplane::Forwarding;

use super::fixtures::{assert_mentions, GOOD};
use super::{check_dr_on_link, Config, InterfacePrefixes};

/// One IPv6 service; `{forwarding}` and `{backend}` are filled in by [`service6`].
const SERVICE6: &str = r#"
[[service]]
name = "web6"
vip = "{vip}"
port = 80
protocol = "tcp"
scheduler = "maglev"
forwarding = "{forwarding}"
{extra}
[[service.backend]]
address = "{backend}"
"#;

/// GOOD (one IPv4 DR service) plus an IPv6 service, with a server side when it forwards by
/// NAT.
fn with_service(vip: &str, forwarding: &str, backend: &str, extra: &str) -> String {
    let director = if forwarding == "nat" {
        GOOD.replacen(
            "interfaces = [\"eth0\"]",
            "interfaces = [\"eth0\", \"eth1\"]",
            1,
        )
        .replacen("forwarding = \"dr\"", "forwarding = \"nat\"", 1)
    } else {
        GOOD.to_owned()
    };
    director
        + &SERVICE6
            .replace("{vip}", vip)
            .replace("{forwarding}", forwarding)
            .replace("{backend}", backend)
            .replace("{extra}", extra)
}

fn service6(forwarding: &str, backend: &str, extra: &str) -> String {
    with_service("2001:db8::10", forwarding, backend, extra)
}

fn refused(text: &str) -> String {
    match Config::parse(text) {
        Ok(config) => panic!("accepted: {:?}", config.services),
        Err(error) => error.to_string(),
    }
}

fn v6(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn one_file_holds_ipv4_and_ipv6_services() {
    let config = Config::parse(&service6("dr", "2001:db8::11", "")).unwrap();
    assert_eq!(config.services.len(), 2);
    assert!(config.services[0].vip.is_ipv4());
    let web6 = &config.services[1];
    assert_eq!(web6.vip, v6("2001:db8::10"));
    assert_eq!(web6.backends[0].address, v6("2001:db8::11"));
    assert_eq!(web6.persistence_prefix6, 128);
    // The same VIP twice is refused whatever the family, written in brackets.
    let twice = service6("dr", "2001:db8::11", "")
        + &SERVICE6
            .replace("web6", "again")
            .replace("{vip}", "2001:db8:0::10")
            .replace("{forwarding}", "dr")
            .replace("{backend}", "2001:db8::12")
            .replace("{extra}", "");
    assert_mentions(
        &refused(&twice),
        &[
            "service[2] \"again\": vip = \"2001:db8::10\"",
            "[2001:db8::10]:80/tcp is already served by service[1] \"web6\"",
        ],
    );
}

#[test]
fn ipv6_addresses_a_host_cannot_own_are_refused() {
    for (bad, why) in [
        ("fe80::10", "link-local"),
        ("ff02::1", "multicast"),
        ("::1", "loopback"),
        ("::", "::"),
        ("::ffff:192.0.2.10", "IPv4-mapped"),
    ] {
        assert_mentions(
            &refused(&with_service(bad, "dr", "2001:db8::11", "")),
            &[&format!("service[1] \"web6\": vip = \"{bad}\""), why],
        );
        assert_mentions(
            &refused(&service6("dr", bad, "")),
            &[
                &format!("service[1] \"web6\": backend[0].address = \"{bad}\""),
                "expected a global or unique-local unicast IPv6 address",
            ],
        );
    }
    assert_mentions(
        &refused(&service6("dr", "2001:db8::zz", "")),
        &[
            "backend[0].address = \"2001:db8::zz\"",
            "expected an IPv4 or IPv6 address",
        ],
    );
    assert_mentions(
        &refused(&service6("dr", "2001:db8::10", "")),
        &[
            "backend[0].address = \"2001:db8::10\"",
            "equals the service's vip",
        ],
    );
}

#[test]
fn dr_and_nat_keep_the_vips_family() {
    for forwarding in ["dr", "nat"] {
        assert_mentions(
            &refused(&service6(forwarding, "192.0.2.21", "")),
            &[
                "service[1] \"web6\": backend[0].address = \"192.0.2.21\" (IPv4)",
                "the vip \"2001:db8::10\" is IPv6",
                &format!("forwarding = \"{forwarding}\" needs real servers of the vip's family"),
                "expected an IPv6 address",
            ],
        );
        assert_mentions(
            &refused(&with_service("192.0.2.30", forwarding, "2001:db8::21", "")),
            &[
                "backend[0].address = \"2001:db8::21\" (IPv6)",
                "the vip \"192.0.2.30\" is IPv4",
                "expected an IPv4 address",
            ],
        );
    }
    let nat = Config::parse(&service6("nat", "2001:db8:2::11", "")).unwrap();
    assert_eq!(nat.services[1].forwarding, Forwarding::Nat);
}

#[test]
fn tun_carries_ipv4_vips_to_ipv6_servers_but_not_the_reverse() {
    let four_in_six =
        Config::parse(&with_service("192.0.2.30", "tun", "2001:db8:5::11", "")).unwrap();
    assert_eq!(
        four_in_six.services[1].backends[0].address,
        v6("2001:db8:5::11")
    );
    let six_in_six = Config::parse(&service6("tun", "2001:db8:5::11", "")).unwrap();
    assert_eq!(six_in_six.services[1].vip, v6("2001:db8::10"));
    assert_mentions(
        &refused(&service6("tun", "198.51.100.11", "")),
        &[
            "service[1] \"web6\": backend[0].address = \"198.51.100.11\" (IPv4)",
            "the vip \"2001:db8::10\" is IPv6",
            "cannot carry IPv6 in IPv4",
            "expected an IPv6 real server",
        ],
    );
}

#[test]
fn persistence_prefix6() {
    let config = Config::parse(&service6(
        "dr",
        "2001:db8::11",
        "persistence = \"300s\"\npersistence_prefix6 = 64",
    ))
    .unwrap();
    assert_eq!(config.services[1].persistence_prefix6, 64);
    // The IPv4 netmask keeps its default beside it.
    assert_eq!(
        config.services[1].persistence_netmask,
        std::net::Ipv4Addr::BROADCAST
    );
    assert_mentions(
        &refused(&service6(
            "dr",
            "2001:db8::11",
            "persistence = \"300s\"\npersistence_prefix6 = 129",
        )),
        &[
            "service[1] \"web6\": persistence_prefix6 = 129",
            "expected 0..=128",
        ],
    );
    assert_mentions(
        &refused(&service6("dr", "2001:db8::11", "persistence_prefix6 = 64")),
        &[
            "service[1] \"web6\": persistence_prefix6 = 64",
            "only meaningful with persistence",
        ],
    );
}

#[test]
fn ipv6_fallbacks_with_and_without_a_port() {
    let with_fallback = |forwarding: &str, fallback: &str| {
        service6(
            forwarding,
            "2001:db8:2::11",
            &format!("fallback = \"{fallback}\""),
        )
    };
    let nat = Config::parse(&with_fallback("nat", "[2001:db8:2::50]:8080")).unwrap();
    let fallback = nat.services[1].fallback.as_ref().unwrap();
    assert_eq!(
        (fallback.address, fallback.port),
        (v6("2001:db8:2::50"), Some(8080))
    );
    let bare = Config::parse(&with_fallback("dr", "2001:db8::50")).unwrap();
    let fallback = bare.services[1].fallback.as_ref().unwrap();
    assert_eq!(
        (fallback.address, fallback.port),
        (v6("2001:db8::50"), None)
    );
    let bracketed = Config::parse(&with_fallback("dr", "[2001:db8::50]")).unwrap();
    assert_eq!(
        bracketed.services[1].fallback.as_ref().unwrap().address,
        v6("2001:db8::50")
    );
    assert_mentions(
        &refused(&with_fallback("dr", "192.0.2.50")),
        &[
            "service[1] \"web6\": fallback = \"192.0.2.50\" (IPv4)",
            "the vip \"2001:db8::10\" is IPv6",
        ],
    );
    assert_mentions(
        &refused(&with_fallback("nat", "[2001:db8:2::50]:0")),
        &[
            "fallback = \"[2001:db8:2::50]:0\"",
            "expected a port of 1..=65535",
        ],
    );
    assert_mentions(
        &refused(&with_fallback("dr", "[2001:db8::zz]:80")),
        &["fallback = \"[2001:db8::zz]:80\"", "\"[2001:db8::50]:80\""],
    );
}

#[test]
fn ha_server_address6() {
    let nat = service6("nat", "2001:db8:2::11", "");
    let config = Config::parse(&format!(
        "{nat}\n[ha]\nvrid = 51\nserver_address6 = \"2001:db8:2::1/64\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.ha.unwrap().server_address6,
        Some(("2001:db8:2::1".parse::<Ipv6Addr>().unwrap(), 64))
    );
    for bad in [
        "2001:db8:2::1",
        "2001:db8:2::1/129",
        "fe80::1/64",
        "192.0.2.1/24",
    ] {
        assert_mentions(
            &refused(&format!(
                "{nat}\n[ha]\nvrid = 51\nserver_address6 = \"{bad}\"\n"
            )),
            &[
                &format!("ha.server_address6 = \"{bad}\""),
                "\"2001:db8:2::1/64\"",
            ],
        );
    }
    assert_mentions(
        &refused(&format!(
            "{GOOD}\n[ha]\nvrid = 51\nserver_address6 = \"2001:db8:2::1/64\"\n"
        )),
        &["ha.server_address6", "there is only one"],
    );
}

#[test]
fn on_link_check_reads_ipv6_prefixes() {
    let config = Config::parse(&service6("dr", "2001:db8::11", "")).unwrap();
    let eth0 = |prefixes: &[(&str, u8)]| {
        vec![InterfacePrefixes {
            interface: "eth0".into(),
            prefixes: prefixes
                .iter()
                .map(|(address, length)| (address.parse().unwrap(), *length))
                .collect(),
        }]
    };
    check_dr_on_link(&config, &eth0(&[("192.0.2.1", 24), ("2001:db8::1", 64)])).unwrap();
    // An IPv4 prefix covers no IPv6 server, a /64 elsewhere neither; the error lists both
    // families' prefixes.
    let error = check_dr_on_link(&config, &eth0(&[("192.0.2.1", 24), ("2001:db8:1::1", 64)]))
        .unwrap_err()
        .to_string();
    assert_mentions(
        &error,
        &[
            "service[1] \"web6\": backend[0].address = \"2001:db8::11\"",
            "(its prefixes: 192.0.2.1/24, 2001:db8:1::1/64)",
        ],
    );
    check_dr_on_link(&config, &eth0(&[("192.0.2.1", 24), ("2001:db8::1", 128)])).unwrap_err();
}

#[test]
fn director_check_writes_ipv6_in_brackets() {
    let config = Config::parse(&service6(
        "nat",
        "2001:db8:2::11",
        "persistence = \"60s\"\npersistence_prefix6 = 64\nfallback = \"[2001:db8:2::50]:8080\"",
    ))
    .unwrap();
    let line = config.services[1].summary();
    assert!(
        line.starts_with(
            "web6: tcp [2001:db8::10]:80 maglev nat persistent 1m prefix6 /64 -> 2001:db8:2::11 \
             (weight 1); fallback [2001:db8:2::50]:8080"
        ),
        "{line}"
    );
    let mapped = service6("nat", "2001:db8:2::11", "").replacen(
        "address = \"2001:db8:2::11\"",
        "address = \"2001:db8:2::11\"\nport = 8080",
        1,
    );
    let line = Config::parse(&mapped).unwrap().services[1].summary();
    assert!(
        line.contains("-> [2001:db8:2::11]:8080 (weight 1)"),
        "{line}"
    );
}
