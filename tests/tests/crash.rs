//! End-to-end: crash recovery of the addresses the director holds. A director killed with
//! SIGKILL leaves its VIP on the interface, marked as the director's (`IFA_PROTO`); the next
//! run removes every marked address at start-up (a VIP no longer in the file too), holds the
//! VIP again and removes it at its clean stop, with or without `[ha]`, and under `[ha]` with
//! NAT the floating server-side gateway likewise. A VIP the operator added (without the mark)
//! is never removed.

use std::net::IpAddr;

use control::netlink::{interface_index, ListedAddress, Netlink, DIRECTOR_ADDRESS_PROTOCOL};
use director_lab::{require_root, DirectorProcess, Host, Lab, LabOptions, SERVER_SIDE_IP, VIP};

/// A VIP the file no longer has: a killed run's leftover the next run must remove.
const FORMER_VIP: &str = "192.0.2.99";
/// The floating NAT gateway `[ha]` holds on the server side in the NAT case.
const NAT_GATEWAY: &str = "198.51.100.254";

/// The director's `eth0` addresses with who added them, read over netlink in its namespace.
fn director_addresses(lab: &Lab) -> Vec<ListedAddress> {
    addresses_on(lab, "eth0")
}

/// The director's addresses on `interface`, with who added them.
fn addresses_on(lab: &Lab, interface: &'static str) -> Vec<ListedAddress> {
    lab.in_namespace(Host::Director, || {
        let ifindex = interface_index(interface).unwrap();
        Netlink::open().unwrap().listed_addresses(ifindex).unwrap()
    })
}

/// How `address` is on the director's `eth0`: `None` if it is not.
fn listed(lab: &Lab, address: &str) -> Option<ListedAddress> {
    listed_on(lab, "eth0", address)
}

/// How `address` is on the director's `interface`: `None` if it is not.
fn listed_on(lab: &Lab, interface: &'static str, address: &str) -> Option<ListedAddress> {
    let address: IpAddr = address.parse().unwrap();
    addresses_on(lab, interface)
        .into_iter()
        .find(|listed| listed.address == address)
}

/// Asserts `address` is on the director's `eth0` with the director's mark.
#[track_caller]
fn assert_marked(lab: &Lab, address: &str, when: &str) {
    assert_marked_on(lab, "eth0", address, when);
}

/// Asserts `address` is on the director's `interface` with the director's mark.
#[track_caller]
fn assert_marked_on(lab: &Lab, interface: &'static str, address: &str, when: &str) {
    let found = listed_on(lab, interface, address).unwrap_or_else(|| {
        panic!(
            "{when}: {address} is not on the director's {interface}: {:?}",
            addresses_on(lab, interface)
        )
    });
    assert_eq!(
        found.protocol, DIRECTOR_ADDRESS_PROTOCOL,
        "{when}: {address} without the director's mark: {found:?}"
    );
}

/// Kills a director serving `config_text`, checks what it left, starts a new run on the same
/// file and stops it cleanly: nothing marked may stay (with `gateway`, on `eth1` either).
fn killed_run_leftovers_are_removed_by_the_next_run(
    lab: &Lab,
    config_text: &str,
    gateway: Option<&str>,
) {
    let config = lab.write_config_text(config_text);
    let socket = lab.stats_socket();
    let mut killed = lab.start_director_with(&config, &socket);
    assert_marked(lab, VIP, "while the first run serves");
    let stopped = killed.kill();
    assert!(!stopped.status.success(), "SIGKILL: {stopped:?}");
    drop(killed);
    assert_marked(lab, VIP, "after SIGKILL (the crash this recovers from)");
    if let Some(gateway) = gateway {
        assert_marked_on(lab, "eth1", gateway, "the NAT gateway after SIGKILL");
    }
    // A VIP an earlier file had, left by a killed run: marked as the director's.
    lab.in_namespace(Host::Director, || {
        let ifindex = interface_index("eth0").unwrap();
        Netlink::open()
            .unwrap()
            .add_address(ifindex, FORMER_VIP.parse::<IpAddr>().unwrap(), 32)
            .unwrap();
    });
    assert_marked(lab, FORMER_VIP, "the former VIP's leftover");

    let mut next = lab.start_director_with(&config, &socket);
    assert_marked(lab, VIP, "while the next run serves");
    if let Some(gateway) = gateway {
        assert_marked_on(lab, "eth1", gateway, "the NAT gateway of the next run");
    }
    assert!(
        listed(lab, FORMER_VIP).is_none(),
        "the leftover of a VIP no longer in the file stayed: {:?}\n{}",
        director_addresses(lab),
        next.log()
    );
    let log = next.log();
    assert!(
        log.contains("removed an address a killed director left"),
        "the next run did not say it removed the leftovers:\n{log}"
    );
    let stopped = next.stop();
    assert!(stopped.status.success() && !stopped.killed, "{stopped:?}");
    assert!(
        listed(lab, VIP).is_none(),
        "the VIP outlived the clean stop of the run that took charge of it: {:?}",
        director_addresses(lab)
    );
    if let Some(gateway) = gateway {
        assert!(
            listed_on(lab, "eth1", gateway).is_none(),
            "the NAT gateway outlived the clean stop: {:?}",
            addresses_on(lab, "eth1")
        );
    }
}

#[test]
fn a_killed_directors_vip_is_removed_by_the_next_runs_clean_stop() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    let text = lab.dr_config("rr").to_toml();
    killed_run_leftovers_are_removed_by_the_next_run(&lab, &text, None);
}

#[test]
fn under_ha_a_killed_masters_vip_is_removed_by_the_next_runs_clean_stop() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    // Alone in its group, the director becomes master and adds the VIP.
    let text = format!(
        "{}\n[ha]\nvrid = 53\npriority = 150\nadvert_interval = \"100ms\"\n",
        lab.dr_config("rr").to_toml()
    );
    killed_run_leftovers_are_removed_by_the_next_run(&lab, &text, None);
}

#[test]
fn under_ha_a_killed_nat_masters_gateway_is_removed_by_the_next_runs_clean_stop() {
    require_root!();
    let lab = Lab::nat(LabOptions::servers(1));
    // A floating gateway beside the director's own server-side address (the operator's, which
    // must stay).
    let text = format!(
        "{}\n[ha]\nvrid = 54\npriority = 150\nadvert_interval = \"100ms\"\n\
         server_address = \"{NAT_GATEWAY}/24\"\n",
        lab.nat_config("rr", None).to_toml()
    );
    killed_run_leftovers_are_removed_by_the_next_run(&lab, &text, Some(NAT_GATEWAY));
    let own = listed_on(&lab, "eth1", SERVER_SIDE_IP).unwrap_or_else(|| {
        panic!(
            "the director's own server-side address is gone: {:?}",
            addresses_on(&lab, "eth1")
        )
    });
    assert_eq!(own.protocol, 0, "{own:?}");
}

#[test]
fn a_vip_the_operator_added_survives_a_clean_stop() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    lab.exec_ok(
        Host::Director,
        &["ip", "addr", "add", &format!("{VIP}/32"), "dev", "eth0"],
    );
    let mut director: DirectorProcess = lab.start_director(&lab.dr_config("rr"));
    let found = listed(&lab, VIP).expect("the operator's VIP");
    assert_eq!(found.protocol, 0, "the director marked the operator's VIP");
    let stopped = director.stop();
    assert!(stopped.status.success() && !stopped.killed, "{stopped:?}");
    let log = director.log();
    assert!(
        log.contains("the operator's"),
        "the director did not say the VIP is the operator's:\n{log}"
    );
    let found = listed(&lab, VIP).unwrap_or_else(|| {
        panic!(
            "the operator's VIP was removed at the clean stop: {:?}\n{log}",
            director_addresses(&lab)
        )
    });
    assert_eq!(found.protocol, 0);
}
