//! The netlink client against a real kernel, inside throwaway network namespaces (needs root).
//!
//! Layout: namespace `dirtest-nl-<pid>-<n>` holds `va` (198.51.100.1/24); its veth peer `vb`
//! lives in `dirtest-nl-<pid>-<n>-peer` with 198.51.100.2/24 and 198.51.100.3/24. Both
//! namespaces are deleted by a Drop guard, also when a test fails.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use control::config::parse_mac;
use control::netlink::{
    interface_index, interface_mac, interface_rx_queues, AddressChange, ListedAddress, Netlink,
    DIRECTOR_ADDRESS_PROTOCOL,
};

use common::{End, Namespace, VethPair};

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const PEER_SECOND: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const NOBODY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);

/// Namespace `dirtest-nl-<pid>-<n>` with `va`, and its peer `dirtest-nl-<pid>-<n>-peer` with
/// `vb`.
fn lab() -> VethPair {
    VethPair::new(
        "dirtest-nl",
        &End {
            suffix: "",
            link: "va",
            addresses: &["198.51.100.1/24"],
        },
        &End {
            suffix: "-peer",
            link: "vb",
            addresses: &["198.51.100.2/24", "198.51.100.3/24"],
        },
    )
}

/// Polls `probe` every 10 ms until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `va`'s index and a netlink socket, from a thread in the lab's namespace.
fn open_va() -> (u32, Netlink) {
    (interface_index("va").unwrap(), Netlink::open().unwrap())
}

/// The MAC `ip link` shows for an interface.
fn ip_link_mac(namespace: &Namespace, interface: &str) -> [u8; 6] {
    let output = namespace.ip(&["link", "show", interface]);
    let text = output
        .split("link/ether ")
        .nth(1)
        .expect("link/ether in ip link output");
    parse_mac(text.split_whitespace().next().unwrap()).expect("MAC in ip link output")
}

#[test]
fn interface_queries_match_ip_link() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let expected = ip_link_mac(&lab.a, "va");
    let (index, mac, queues) = lab.a.enter(|| {
        (
            interface_index("va").unwrap(),
            interface_mac("va").unwrap(),
            interface_rx_queues("va").unwrap(),
        )
    });
    assert_eq!(mac, expected);
    let shown = lab.a.ip(&["-o", "link", "show", "va"]);
    assert!(
        shown.starts_with(&format!("{index}: va@")),
        "ifindex {index} vs {shown:?}"
    );
    assert_eq!(queues, 1);
}

#[test]
fn add_and_remove_address_twice() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let vip = Ipv4Addr::new(203, 0, 113, 10);
    let (first, second) = lab.a.enter(move || {
        let (index, mut netlink) = open_va();
        let added = (
            netlink.add_address(index, vip, 32).unwrap(),
            netlink.add_address(index, vip, 32).unwrap(),
        );
        // The dump lists the interface's own address first and the new one with its prefix.
        let addresses = netlink.addresses(index).unwrap();
        assert_eq!(
            addresses.first(),
            Some(&(Ipv4Addr::new(198, 51, 100, 1), 24)),
            "{addresses:?}"
        );
        assert!(addresses.contains(&(vip, 32)), "{addresses:?}");
        assert_eq!(control::netlink::interface_mtu("va").unwrap(), 1500);
        added
    });
    assert_eq!(
        (first, second),
        (AddressChange::Added, AddressChange::AlreadyPresent)
    );
    let va_addresses = || lab.a.ip(&["-4", "addr", "show", "dev", "va"]);
    assert!(va_addresses().contains("203.0.113.10/32"));
    lab.a.enter(move || {
        let (index, mut netlink) = open_va();
        netlink.remove_address(index, vip, 32).unwrap();
        // Gone already: still fine.
        netlink.remove_address(index, vip, 32).unwrap();
    });
    let shown = va_addresses();
    assert!(!shown.contains("203.0.113.10"), "{shown}");
    assert!(shown.contains("198.51.100.1/24"), "{shown}");
    // A missing interface is refused with the operation named.
    let error = lab.a.enter(move || {
        Netlink::open()
            .unwrap()
            .add_address(9999, vip, 32)
            .unwrap_err()
            .to_string()
    });
    assert!(
        error.contains("add address 203.0.113.10/32 on ifindex 9999"),
        "{error}"
    );
}

#[test]
fn added_addresses_carry_the_directors_mark_and_a_dump_reads_it_back() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let vip = Ipv4Addr::new(203, 0, 113, 10);
    let vip6: std::net::Ipv6Addr = "2001:db8::10".parse().unwrap();
    // Added by the operator, without a mark.
    lab.a.ip(&["addr", "add", "203.0.113.20/32", "dev", "va"]);
    lab.a.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8::20/128",
        "dev",
        "va",
        "nodad",
    ]);
    let listed = lab.a.enter(move || {
        let (index, mut netlink) = open_va();
        netlink.add_address(index, vip, 32).unwrap();
        netlink.add_address(index, vip6, 128).unwrap();
        netlink.listed_addresses(index).unwrap()
    });
    let find = |address: std::net::IpAddr| -> ListedAddress {
        *listed
            .iter()
            .find(|listed| listed.address == address)
            .unwrap_or_else(|| panic!("{address} not listed: {listed:?}"))
    };
    for (address, prefix_len) in [(vip.into(), 32), (vip6.into(), 128)] {
        let added = find(address);
        assert_eq!(added.prefix_len, prefix_len, "{added:?}");
        assert_eq!(added.protocol, DIRECTOR_ADDRESS_PROTOCOL, "{added:?}");
        assert!(added.is_directors());
    }
    for address in ["203.0.113.20", "2001:db8::20", "198.51.100.1"] {
        let operators = find(address.parse().unwrap());
        assert_eq!(operators.protocol, 0, "{operators:?}");
        assert!(!operators.is_directors());
    }
    // IPv4 first, then IPv6 (its link-local address included).
    let first_v6 = listed.iter().position(|listed| listed.address.is_ipv6());
    assert!(
        listed
            .iter()
            .skip(first_v6.unwrap())
            .all(|listed| listed.address.is_ipv6()),
        "{listed:?}"
    );
}

#[test]
fn neighbour_learned_from_traffic() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let peer_mac = ip_link_mac(&lab.b, "vb");
    let found = lab.a.enter(|| {
        let (index, mut netlink) = open_va();
        assert_eq!(netlink.neighbour_mac(index, PEER).unwrap(), None);
        // Any datagram to the peer makes the kernel ARP for it (ping is not installed here).
        let socket = UdpSocket::bind((LOCAL, 0)).unwrap();
        socket.send_to(b"hello", (PEER, 9)).unwrap();
        poll(Duration::from_secs(3), || {
            netlink.neighbour_mac(index, PEER).unwrap()
        })
    });
    assert_eq!(found, Some(peer_mac));
}

#[test]
fn solicit_neighbour_triggers_arp() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let peer_mac = ip_link_mac(&lab.b, "vb");
    let (found, nobody) = lab.a.enter(|| {
        let (index, mut netlink) = open_va();
        assert_eq!(netlink.neighbour_mac(index, PEER_SECOND).unwrap(), None);
        netlink.solicit_neighbour(index, PEER_SECOND).unwrap();
        let found = poll(Duration::from_secs(3), || {
            netlink.neighbour_mac(index, PEER_SECOND).unwrap()
        });
        // Nobody answers for this one: the entry exists but never becomes usable.
        netlink.solicit_neighbour(index, NOBODY).unwrap();
        (found, netlink.neighbour_mac(index, NOBODY).unwrap())
    });
    assert_eq!(found, Some(peer_mac));
    assert_eq!(nobody, None);
    let table = lab.a.ip(&["neigh", "show", "dev", "va"]);
    assert!(table.contains("198.51.100.3"), "{table}");
    assert!(table.contains("198.51.100.99"), "{table}");
}

#[test]
fn ipv6_vip_is_added_without_dad_listed_and_removed_and_the_default_gateway_read() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let vip: std::net::Ipv6Addr = "2001:db8::10".parse().unwrap();
    let router: std::net::Ipv6Addr = "2001:db8:1::2".parse().unwrap();
    lab.a.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "va",
        "nodad",
    ]);
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
    let (added, again, listed, gateway, ipv4) = lab.a.enter(move || {
        let (index, mut netlink) = open_va();
        let added = netlink.add_address(index, vip, 128).unwrap();
        let again = netlink.add_address(index, vip, 128).unwrap();
        let listed = netlink.addresses_v6(index).unwrap();
        let gateway = netlink.default_gateway_v6(index).unwrap();
        let ipv4 = netlink.addresses(index).unwrap();
        (added, again, listed, gateway, ipv4)
    });
    assert_eq!(
        (added, again),
        (AddressChange::Added, AddressChange::AlreadyPresent)
    );
    assert!(listed.contains(&(vip, 128)), "{listed:?}");
    assert!(
        listed.contains(&("2001:db8:1::1".parse().unwrap(), 64)),
        "{listed:?}"
    );
    assert_eq!(ipv4, vec![(LOCAL, 24)], "IPv4 listing unchanged");
    assert_eq!(gateway, Some(router));
    let shown = lab.a.ip(&["-6", "addr", "show", "dev", "va"]);
    let line = shown
        .lines()
        .find(|line| line.contains("2001:db8::10/128"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(!line.contains("tentative"), "no DAD: {line}");
    lab.a.enter(move || {
        let (index, mut netlink) = open_va();
        netlink.remove_address(index, vip, 128).unwrap();
        netlink.remove_address(index, vip, 128).unwrap();
    });
    assert!(!lab
        .a
        .ip(&["-6", "addr", "show", "dev", "va"])
        .contains("2001:db8::10"));
}
