//! The real servers' and the NAT gateway's MACs for IPv6 services, read from the kernel's
//! neighbour table and solicited over NDP (RFC 4861), inside throwaway network namespaces
//! (needs root).
//!
//! Layout: namespace `dirtest-nb6-<pid>-<n>` holds `va` (2001:db8:1::1/64, default route via
//! 2001:db8:1::2); its veth peer `vb` in `dirtest-nb6-<pid>-<n>-peer` holds 2001:db8:1::2/64 and
//! 2001:db8:1::3/64. All addresses skip DAD. Both namespaces are deleted by a Drop guard.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use control::config::{parse_mac, Config};
use control::neighbours::{self, Sides};
use control::netlink::{interface_index, Netlink};

use common::{End, VethPair};

fn lab() -> VethPair {
    let lab = VethPair::new(
        "dirtest-nb6",
        &End {
            suffix: "",
            link: "va",
            addresses: &[],
        },
        &End {
            suffix: "-peer",
            link: "vb",
            addresses: &[],
        },
    );
    lab.a.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "va",
        "nodad",
    ]);
    for address in ["2001:db8:1::2/64", "2001:db8:1::3/64"] {
        lab.b
            .ip(&["-6", "addr", "add", address, "dev", "vb", "nodad"]);
    }
    lab.a.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:1::2",
        "dev",
        "va",
    ]);
    lab
}

/// A NAT service on an IPv6 VIP whose real server is `vb`'s second address.
const CONFIG: &str = r#"
[director]
interfaces = ["va", "vb"]

[[service]]
name = "app6"
vip = "2001:db8::20"
port = 80
protocol = "tcp"
scheduler = "rr"
forwarding = "nat"

[[service.backend]]
address = "2001:db8:1::3"
"#;

#[test]
fn ipv6_real_servers_and_the_ipv6_gateway_are_solicited_and_resolved() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let peer_mac = {
        let output = lab.b.ip(&["link", "show", "vb"]);
        let text = output.split("link/ether ").nth(1).unwrap();
        parse_mac(text.split_whitespace().next().unwrap()).unwrap()
    };
    let config = Config::parse(CONFIG).unwrap();
    let (before, missing, after) = lab.a.enter(move || {
        let index = interface_index("va").unwrap();
        let mut netlink = Netlink::open().unwrap();
        // One interface plays both sides here: the real server and the gateway share a link.
        let sides = Sides {
            client: index,
            server: Some(index),
            tun_by_route: false,
        };
        let (before, missing) = neighbours::lookup(&mut netlink, sides, &config);
        let (after, interrupted) = neighbours::resolve_waiting(
            &mut netlink,
            sides,
            &config,
            Duration::from_secs(3),
            |pause| {
                std::thread::sleep(pause);
                false
            },
        );
        assert!(!interrupted);
        (before, missing, after)
    });
    // Nothing known at first: both are missing, each named by its IPv6 address.
    let server: IpAddr = "2001:db8:1::3".parse().unwrap();
    let router: IpAddr = "2001:db8:1::2".parse().unwrap();
    assert!(before.backends.is_empty(), "{before:?}");
    let missing: Vec<IpAddr> = missing.iter().map(|&(_, address)| address).collect();
    assert!(
        missing.contains(&server) && missing.contains(&router),
        "{missing:?}"
    );
    // Solicited over NDP, both answer with vb's MAC.
    assert_eq!(after.backends.get(&server), Some(&peer_mac), "{after:?}");
    assert_eq!(
        after.gateway6,
        Some(("2001:db8:1::2".parse().unwrap(), Some(peer_mac)))
    );
    // No IPv4 default route: the NAT replies' next hop is the IPv6 gateway's.
    assert_eq!(after.gateway, None);
    assert_eq!(after.gateway_mac(), Some(peer_mac));
}
