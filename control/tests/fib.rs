//! The FIB mirror against a real kernel, inside throwaway network namespaces (needs root).
//!
//! Layout: namespace `dirtest-fib-<pid>-<n>` holds `va` (198.51.100.1/24, the served
//! interface); its veth peer `vb` lives in `dirtest-fib-<pid>-<n>-peer` with 198.51.100.2/24
//! and 198.51.100.3/24 (two routers). Both namespaces are deleted by a Drop guard, also when a
//! test fails. The mirror's sockets are opened inside the namespace and keep it; the test then
//! drives the mirror from its own thread, and changes the tables with `ip -n`.
//!
//! The IPv6 tests add 2001:db8:1::1/64 on `va` and 2001:db8:1::2/64 and 2001:db8:1::3/64 on
//! `vb` (with `nodad`, so they answer neighbour solicitations at once).

mod common;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use control::fib::{FibMirror, FibTask};
use control::neighbours;
use control::netlink::{interface_index, Netlink};
use dataplane::fib::{Fib, Neighbour, NoRoute, NoRouteKind};

use common::{End, Namespace, VethPair};

const ROUTER_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const LIMIT: Duration = Duration::from_secs(3);

fn lab() -> VethPair {
    VethPair::new(
        "dirtest-fib",
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

/// A mirror serving `va`, opened in the lab's namespace, and `va`'s index.
fn mirror(namespace: &Namespace) -> (FibMirror, u32) {
    namespace.enter(|| {
        let va = interface_index("va").unwrap();
        (FibMirror::open([va], 1024).unwrap(), va)
    })
}

/// Runs the mirror until `probe` holds for its current snapshot, for at most `LIMIT`.
fn until(mirror: &mut FibMirror, mut probe: impl FnMut(&FibMirror, &Fib) -> bool) -> bool {
    let deadline = Instant::now() + LIMIT;
    loop {
        if probe(mirror, &mirror.fib()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        mirror.run_once(Duration::from_millis(20)).unwrap();
    }
}

fn kind(fib: &Fib, address: Ipv4Addr) -> Option<NoRouteKind> {
    fib.lookup_v4(address, 0).err().map(|NoRoute { kind }| kind)
}

/// The distinct neighbours 64 flow hashes reach for `address`.
fn spread(fib: &Fib, address: Ipv4Addr) -> usize {
    let neighbours: std::collections::HashSet<_> = (0..64u64)
        .filter_map(|hash| {
            fib.lookup_v4(address, hash.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .ok()
                .map(|next_hop| next_hop.neighbour)
        })
        .collect();
    neighbours.len()
}

#[test]
fn routes_added_and_removed_reach_the_next_snapshot() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let (mut mirror, va) = mirror(&lab.a);
    let destination = Ipv4Addr::new(192, 0, 2, 5);
    assert_eq!(kind(&mirror.fib(), destination), Some(NoRouteKind::NoMatch));
    assert_eq!(
        kind(&mirror.fib(), ROUTER_A),
        Some(NoRouteKind::OnLinkUnresolved)
    );

    lab.a
        .ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.2"]);
    assert!(until(&mut mirror, |_, fib| fib
        .lookup_v4(destination, 0)
        .is_ok_and(|next_hop| next_hop.ifindex == va)));
    assert!(
        mirror.fib().lookup_v4(ROUTER_A, 0).is_ok(),
        "a gateway gets a host route"
    );
    let summary = mirror.next_hop(destination);
    assert_eq!(summary.via.as_deref(), Some("198.51.100.2"));
    assert_eq!(mirror.counters().next_hops, 1);

    lab.a.ip(&["route", "del", "192.0.2.0/24"]);
    assert!(until(&mut mirror, |_, fib| kind(fib, destination)
        == Some(NoRouteKind::NoMatch)));
    assert!(until(&mut mirror, |mirror, _| mirror.counters().next_hops == 0));
}

#[test]
fn blackhole_and_unserved_routes_are_counted() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    // An interface the director does not serve (no dummy module here: a veth within the
    // namespace).
    lab.a
        .ip(&["link", "add", "vc", "type", "veth", "peer", "name", "vd"]);
    lab.a.ip(&["addr", "add", "203.0.113.1/25", "dev", "vc"]);
    lab.a.ip(&["link", "set", "vd", "up"]);
    lab.a.ip(&["link", "set", "vc", "up"]);
    let (mut mirror, _) = mirror(&lab.a);
    lab.a.ip(&["route", "add", "blackhole", "203.0.113.128/25"]);
    lab.a.ip(&[
        "route",
        "add",
        "192.0.2.0/24",
        "via",
        "203.0.113.2",
        "dev",
        "vc",
    ]);
    assert!(until(&mut mirror, |mirror, _| {
        let counters = mirror.counters();
        counters.routes_blackhole == 1 && counters.routes_not_served >= 2
    }));
    let fib = mirror.fib();
    assert_eq!(
        kind(&fib, Ipv4Addr::new(203, 0, 113, 200)),
        Some(NoRouteKind::Blackhole)
    );
    assert_eq!(
        kind(&fib, Ipv4Addr::new(192, 0, 2, 1)),
        Some(NoRouteKind::NotServed)
    );
    assert_eq!(
        kind(&fib, Ipv4Addr::new(203, 0, 113, 7)),
        Some(NoRouteKind::NotServed)
    );
}

#[test]
fn ecmp_routes_and_nexthop_groups_spread_over_both_routers() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let (mut mirror, _) = mirror(&lab.a);
    lab.a.ip(&[
        "route",
        "add",
        "192.0.2.0/24",
        "nexthop",
        "via",
        "198.51.100.2",
        "nexthop",
        "via",
        "198.51.100.3",
    ]);
    assert!(until(&mut mirror, |_, fib| spread(
        fib,
        Ipv4Addr::new(192, 0, 2, 9)
    ) == 2));

    lab.a.ip(&[
        "nexthop",
        "add",
        "id",
        "1",
        "via",
        "198.51.100.2",
        "dev",
        "va",
    ]);
    lab.a.ip(&[
        "nexthop",
        "add",
        "id",
        "2",
        "via",
        "198.51.100.3",
        "dev",
        "va",
    ]);
    lab.a.ip(&["nexthop", "add", "id", "10", "group", "1/2"]);
    lab.a.ip(&["route", "add", "203.0.113.0/24", "nhid", "10"]);
    assert!(until(&mut mirror, |_, fib| spread(
        fib,
        Ipv4Addr::new(203, 0, 113, 9)
    ) == 2));
    assert_eq!(
        mirror.counters().next_hops,
        2,
        "both routes share two slots"
    );

    // Deleting the group deletes its routes, which the kernel does not notify one by one.
    lab.a.ip(&["nexthop", "del", "id", "10"]);
    assert!(until(&mut mirror, |_, fib| kind(
        fib,
        Ipv4Addr::new(203, 0, 113, 9)
    ) == Some(NoRouteKind::NoMatch)));
    assert_eq!(mirror.counters().routes_missing_nexthop_object, 0);
}

#[test]
fn neighbour_mac_lands_in_its_slot_and_a_change_is_followed() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let (mut mirror, va) = mirror(&lab.a);
    let server = Ipv4Addr::new(198, 51, 100, 50);
    let id = mirror.neighbour_for(va, server).unwrap();
    let neighbours = mirror.neighbours();
    assert!(until(&mut mirror, |_, fib| fib
        .lookup_v4(server, 0)
        .is_ok_and(|next_hop| next_hop.neighbour == id)));
    for mac in ["02:00:00:00:00:01", "02:00:00:00:00:02"] {
        lab.a.ip(&[
            "neigh",
            "replace",
            "198.51.100.50",
            "lladdr",
            mac,
            "dev",
            "va",
            "nud",
            "reachable",
        ]);
        let last = mac.as_bytes()[mac.len() - 1] - b'0';
        assert!(
            until(&mut mirror, |_, _| neighbours.get(id)
                == Neighbour::Resolved([2, 0, 0, 0, 0, last])),
            "slot follows {mac}"
        );
    }
}

#[test]
fn stale_neighbour_in_use_is_confirmed() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    lab.a.ip(&[
        "neigh",
        "replace",
        "198.51.100.2",
        "lladdr",
        "02:00:00:00:00:0a",
        "dev",
        "va",
        "nud",
        "stale",
    ]);
    let (mut mirror, va) = mirror(&lab.a);
    mirror.neighbour_for(va, ROUTER_A).unwrap();
    assert!(mirror.counters().neighbour_confirmations >= 1);
    // The kernel moves a STALE entry that is used to DELAY, then probes it.
    let moved = until(&mut mirror, |_, _| {
        !lab.a
            .ip(&["neigh", "show", "198.51.100.2", "dev", "va"])
            .contains("STALE")
    });
    assert!(moved, "the kernel entry left STALE");
    assert_eq!(mirror.counters().neighbour_request_errors, 0);
}

#[test]
fn a_hundred_changes_in_a_second_build_few_snapshots() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let (mut mirror, _) = mirror(&lab.a);
    let before = mirror.counters();
    let name = lab.a.name.clone();
    let start = Instant::now();
    let flapper = std::thread::spawn(move || {
        let namespace = Namespace { name };
        for change in 0..100 {
            if change % 2 == 0 {
                namespace.ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.2"]);
            } else {
                namespace.ip(&["route", "del", "192.0.2.0/24"]);
            }
        }
    });
    while !flapper.is_finished() {
        mirror.run_once(Duration::from_millis(20)).unwrap();
    }
    flapper.join().unwrap();
    let elapsed = start.elapsed();
    let settle = Instant::now() + Duration::from_millis(200);
    while Instant::now() < settle {
        mirror.run_once(Duration::from_millis(20)).unwrap();
    }
    let after = mirror.counters();
    let rebuilds = after.rebuilds - before.rebuilds;
    assert!(after.notifications - before.notifications >= 100);
    eprintln!("{rebuilds} rebuilds for 100 changes in {elapsed:?}");
    let bound = elapsed.as_millis() / 25 + 3;
    assert!(
        u128::from(rebuilds) <= bound && rebuilds < 60,
        "{rebuilds} rebuilds for 100 changes in {elapsed:?}"
    );
    assert_eq!(
        kind(&mirror.fib(), Ipv4Addr::new(192, 0, 2, 1)),
        Some(NoRouteKind::NoMatch)
    );
}

#[test]
fn failed_neighbour_is_counted_and_solicited_again() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    // Give up on an unanswered neighbour after 3 x 100 ms instead of 3 s.
    common::ip(&[
        "netns",
        "exec",
        &lab.a.name,
        "sysctl",
        "-qw",
        "net.ipv4.neigh.va.retrans_time_ms=100",
    ]);
    let (mut mirror, va) = mirror(&lab.a);
    let nobody = Ipv4Addr::new(198, 51, 100, 99);
    let id = mirror.neighbour_for(va, nobody).unwrap();
    let neighbours = mirror.neighbours();
    assert_eq!(neighbours.get(id), Neighbour::Unresolved);
    assert!(until(&mut mirror, |mirror, _| {
        neighbours.get(id) == Neighbour::Failed && mirror.counters().neighbours_failed == 1
    }));
    let solicited = mirror.counters().neighbour_solicitations;
    assert!(until(&mut mirror, |mirror, _| mirror
        .counters()
        .neighbour_solicitations
        > solicited));
}

#[test]
fn task_thread_sends_a_change_and_answers_requests() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let (task, va) = lab.a.enter(|| {
        let va = interface_index("va").unwrap();
        (FibTask::spawn(vec![va], 1024).unwrap(), va)
    });
    let first = task.snapshots().recv_timeout(LIMIT).unwrap();
    let destination = Ipv4Addr::new(192, 0, 2, 5);
    assert_eq!(kind(&first, destination), Some(NoRouteKind::NoMatch));

    lab.a
        .ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.2"]);
    // `ip` returns once the kernel has the route; the snapshot follows from its notification.
    // The latency is printed, not asserted: tests assert behaviour, the machine's load decides
    // the time.
    let changed = Instant::now();
    let snapshot = task.snapshots().recv_timeout(LIMIT).unwrap();
    let latency = changed.elapsed();
    assert!(snapshot.lookup_v4(destination, 0).is_ok());
    eprintln!("route change to snapshot: {latency:?}");

    let id = task.neighbour_for(va, ROUTER_A).unwrap();
    assert_eq!(snapshot.lookup_v4(destination, 0).unwrap().neighbour, id);
    let summary = task.summary().unwrap();
    assert!(summary.counters.rebuilds >= 2);
    assert_eq!(
        task.next_hop(destination).unwrap().via.as_deref(),
        Some("198.51.100.2")
    );
    drop(task);
}

#[test]
fn notification_overrun_is_counted_and_redumped() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let (mut mirror, _) = mirror(&lab.a);
    // 20000 routes (one prefix, 20000 metrics) while the mirror reads nothing: more
    // notifications than its 4 MiB socket buffer holds.
    let batch = std::env::temp_dir().join(format!("dirtest-fib-{}.batch", std::process::id()));
    let mut lines = String::new();
    for metric in 1..=20_000 {
        writeln!(
            lines,
            "route add 192.0.2.0/24 via 198.51.100.2 metric {metric}"
        )
        .unwrap();
    }
    std::fs::write(&batch, lines).unwrap();
    let result = std::panic::catch_unwind(|| lab.a.ip(&["-batch", batch.to_str().unwrap()]));
    std::fs::remove_file(&batch).unwrap();
    result.unwrap();
    assert!(until(&mut mirror, |mirror, fib| {
        mirror.counters().overruns >= 1 && fib.lookup_v4(Ipv4Addr::new(192, 0, 2, 1), 0).is_ok()
    }));
    assert!(mirror.counters().dumps >= 2);
}

const ROUTER6_A: &str = "2001:db8:1::2";
const ROUTER6_B: &str = "2001:db8:1::3";

fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

/// The lab with IPv6 addresses on both ends.
fn lab6() -> VethPair {
    let lab = lab();
    lab.a.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "va",
        "nodad",
    ]);
    for router in [ROUTER6_A, ROUTER6_B] {
        let address = format!("{router}/64");
        lab.b
            .ip(&["-6", "addr", "add", &address, "dev", "vb", "nodad"]);
    }
    lab
}

/// `vb`'s MAC, as `ip link` shows it.
fn peer_mac(lab: &VethPair) -> [u8; 6] {
    let output = lab.b.ip(&["link", "show", "vb"]);
    let text = output.split("link/ether ").nth(1).expect("link/ether");
    let mut mac = [0u8; 6];
    for (byte, hex) in mac
        .iter_mut()
        .zip(text.split_whitespace().next().unwrap().split(':'))
    {
        *byte = u8::from_str_radix(hex, 16).unwrap();
    }
    mac
}

fn kind6(fib: &Fib, address: &str) -> Option<NoRouteKind> {
    fib.lookup_v6(v6(address), 0)
        .err()
        .map(|NoRoute { kind }| kind)
}

/// The distinct neighbours 64 flow hashes reach for IPv6 `address`.
fn spread6(fib: &Fib, address: &str) -> usize {
    let neighbours: std::collections::HashSet<_> = (0..64u64)
        .filter_map(|hash| {
            fib.lookup(
                IpAddr::V6(v6(address)),
                hash.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            )
            .ok()
            .map(|next_hop| next_hop.neighbour)
        })
        .collect();
    neighbours.len()
}

#[test]
fn ipv6_routes_are_mirrored_and_looked_up() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab6();
    let (mut mirror, va) = mirror(&lab.a);
    // The connected /64 from the dump; link-local noise is left out.
    assert_eq!(
        kind6(&mirror.fib(), "2001:db8:1::99"),
        Some(NoRouteKind::OnLinkUnresolved)
    );
    assert_eq!(kind6(&mirror.fib(), "fe80::99"), Some(NoRouteKind::NoMatch));
    assert_eq!(
        kind(&mirror.fib(), Ipv4Addr::new(198, 51, 100, 99)),
        Some(NoRouteKind::OnLinkUnresolved),
        "IPv4 beside it"
    );

    lab.a
        .ip(&["-6", "route", "add", "2001:db8:10::/48", "via", ROUTER6_A]);
    lab.a.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:20::/48",
        "nexthop",
        "via",
        ROUTER6_A,
        "nexthop",
        "via",
        ROUTER6_B,
    ]);
    lab.a
        .ip(&["-6", "route", "add", "blackhole", "2001:db8:30::/48"]);
    lab.a
        .ip(&["-6", "route", "add", "unreachable", "2001:db8:40::/48"]);
    assert!(until(&mut mirror, |_, fib| {
        spread6(fib, "2001:db8:20::9") == 2
            && kind6(fib, "2001:db8:40::1") == Some(NoRouteKind::Unreachable)
    }));
    let fib = mirror.fib();
    let via_a = fib.lookup_v6(v6("2001:db8:10::5"), 0).unwrap();
    assert_eq!(via_a.ifindex, va);
    assert_eq!(
        fib.lookup_v6(v6(ROUTER6_A), 0).unwrap().neighbour,
        via_a.neighbour,
        "a gateway gets a /128 host route to its own slot"
    );
    assert_eq!(kind6(&fib, "2001:db8:30::1"), Some(NoRouteKind::Blackhole));
    assert_eq!(kind6(&fib, "2001:db8:99::1"), Some(NoRouteKind::NoMatch));
    assert_eq!(
        mirror.next_hop(v6("2001:db8:10::5")).via.as_deref(),
        Some(ROUTER6_A)
    );
    let counters = mirror.counters();
    assert_eq!(counters.next_hops, 2, "two gateways, one slot each");
    assert_eq!(
        (counters.routes_blackhole, counters.routes_unreachable),
        (1, 1)
    );
    assert!(counters.prefixes_v6 >= 6, "{counters:?}");
    assert_eq!(counters.unreadable, 0);

    // Nexthop objects with IPv6 gateways, as for IPv4.
    for (id, router) in [("1", ROUTER6_A), ("2", ROUTER6_B)] {
        lab.a
            .ip(&["nexthop", "add", "id", id, "via", router, "dev", "va"]);
    }
    lab.a.ip(&["nexthop", "add", "id", "10", "group", "1/2"]);
    lab.a
        .ip(&["-6", "route", "add", "2001:db8:50::/48", "nhid", "10"]);
    assert!(until(&mut mirror, |_, fib| spread6(fib, "2001:db8:50::9") == 2));
    assert_eq!(mirror.counters().next_hops, 2, "shared with the ECMP route");

    // Deleting one leg of an IPv6 multipath route notifies that leg alone: the other stays.
    lab.a
        .ip(&["-6", "route", "del", "2001:db8:20::/48", "via", ROUTER6_B]);
    assert!(until(&mut mirror, |_, fib| spread6(fib, "2001:db8:20::9") == 1));
    assert_eq!(
        mirror.next_hop(v6("2001:db8:20::9")).via.as_deref(),
        Some(ROUTER6_A)
    );

    lab.a.ip(&["-6", "route", "del", "2001:db8:10::/48"]);
    lab.a.ip(&["-6", "route", "del", "2001:db8:20::/48"]);
    lab.a.ip(&["nexthop", "del", "id", "10"]);
    assert!(until(&mut mirror, |_, fib| {
        kind6(fib, "2001:db8:10::5") == Some(NoRouteKind::NoMatch)
            && kind6(fib, "2001:db8:50::9") == Some(NoRouteKind::NoMatch)
    }));
    assert!(until(&mut mirror, |mirror, _| mirror.counters().next_hops == 0));
    assert_eq!(mirror.counters().unreadable, 0);
}

#[test]
fn ipv6_neighbour_is_solicited_and_its_mac_lands_in_its_slot() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab6();
    let mac = peer_mac(&lab);
    let (mut mirror, va) = mirror(&lab.a);
    // Not known to the kernel yet: pinning it makes the kernel send a neighbour solicitation.
    let id = mirror.neighbour_for(va, v6(ROUTER6_B)).unwrap();
    let neighbours = mirror.neighbours();
    assert!(mirror.counters().neighbour_solicitations >= 1);
    assert!(
        until(&mut mirror, |_, fib| {
            neighbours.get(id) == Neighbour::Resolved(mac)
                && fib
                    .lookup_v6(v6(ROUTER6_B), 0)
                    .is_ok_and(|next_hop| next_hop.neighbour == id)
        }),
        "{:?}",
        lab.a.ip(&["-6", "neigh", "show", "dev", "va"])
    );
    assert_eq!(mirror.next_hop(v6(ROUTER6_B)).state, "resolved");
    assert_eq!(mirror.counters().neighbour_request_errors, 0);
    assert_eq!(mirror.counters().unreadable, 0);

    mirror.unpin(va, v6(ROUTER6_B));
    assert!(until(&mut mirror, |mirror, _| mirror.counters().next_hops == 0));
    assert_eq!(neighbours.get(id), Neighbour::Gone);
}

#[test]
fn ipv6_pins_go_through_the_task_thread() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab6();
    let mac = peer_mac(&lab);
    let (task, va) = lab.a.enter(|| {
        let va = interface_index("va").unwrap();
        (FibTask::spawn(vec![va], 1024).unwrap(), va)
    });
    let id = task.neighbour_for(va, v6(ROUTER6_A)).unwrap();
    let neighbours = task.neighbours();
    let deadline = Instant::now() + LIMIT;
    let resolved = loop {
        let summary = task.next_hop(v6(ROUTER6_A)).unwrap();
        // The summary and the shared slot are written one after the other: wait for both.
        let slot_resolved = neighbours.get(id) == Neighbour::Resolved(mac);
        if (summary.state == "resolved" && slot_resolved) || Instant::now() >= deadline {
            break summary;
        }
        // The pin's snapshot and the kernel's answer arrive on the task's own schedule.
        let _ = task.snapshots().recv_timeout(Duration::from_millis(20));
    };
    assert_eq!(resolved.via.as_deref(), Some(ROUTER6_A), "{resolved:?}");
    assert_eq!(neighbours.get(id), Neighbour::Resolved(mac));
}

#[test]
fn neighbours_resolve_finds_ipv6_and_ipv4_peers_and_gives_up_on_nobody() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab6();
    let mac = peer_mac(&lab);
    let (ipv6, ipv4, nobody) = lab.a.enter(|| {
        let va = interface_index("va").unwrap();
        let mut netlink = Netlink::open().unwrap();
        let address = IpAddr::V6(v6(ROUTER6_A));
        assert_eq!(
            netlink.neighbour_mac(va, address).unwrap(),
            None,
            "not yet known"
        );
        let ipv6 = neighbours::resolve(&mut netlink, va, address, LIMIT).unwrap();
        let ipv4 = neighbours::resolve(&mut netlink, va, IpAddr::V4(ROUTER_A), LIMIT).unwrap();
        let nobody = IpAddr::V6(v6("2001:db8:1::99"));
        let started = Instant::now();
        let none = neighbours::resolve(&mut netlink, va, nobody, Duration::from_millis(300));
        assert!(started.elapsed() < LIMIT, "the wait is bounded");
        (ipv6, ipv4, none.unwrap())
    });
    assert_eq!(ipv6, Some(mac));
    assert_eq!(ipv4, Some(mac));
    assert_eq!(nobody, None);
    let table = lab.a.ip(&["-6", "neigh", "show", "dev", "va"]);
    assert!(table.contains("2001:db8:1::99"), "solicited: {table}");
}

#[test]
fn stale_ipv6_neighbour_in_use_is_confirmed_and_a_silent_one_fails() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab6();
    // Give up on an unanswered neighbour after 3 x 100 ms instead of 3 s.
    common::ip(&[
        "netns",
        "exec",
        &lab.a.name,
        "sysctl",
        "-qw",
        "net.ipv6.neigh.va.retrans_time_ms=100",
    ]);
    lab.a.ip(&[
        "-6",
        "neigh",
        "replace",
        ROUTER6_A,
        "lladdr",
        "02:00:00:00:00:0a",
        "dev",
        "va",
        "nud",
        "stale",
    ]);
    let (mut mirror, va) = mirror(&lab.a);
    let stale = mirror.neighbour_for(va, v6(ROUTER6_A)).unwrap();
    let neighbours = mirror.neighbours();
    assert_eq!(
        neighbours.get(stale),
        Neighbour::Resolved([2, 0, 0, 0, 0, 0x0a]),
        "a STALE MAC is used while it is confirmed"
    );
    assert!(mirror.counters().neighbour_confirmations >= 1);
    // The kernel moves a STALE entry that is used to DELAY, then probes it.
    let moved = until(&mut mirror, |_, _| {
        !lab.a
            .ip(&["-6", "neigh", "show", ROUTER6_A, "dev", "va"])
            .contains("STALE")
    });
    assert!(moved, "the kernel entry left STALE");

    let nobody = mirror.neighbour_for(va, v6("2001:db8:1::99")).unwrap();
    assert_eq!(neighbours.get(nobody), Neighbour::Unresolved);
    assert!(until(&mut mirror, |mirror, _| {
        neighbours.get(nobody) == Neighbour::Failed && mirror.counters().neighbours_failed == 1
    }));
    assert_eq!(mirror.counters().neighbour_request_errors, 0);
}
