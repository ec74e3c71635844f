//! End-to-end: next hops from the routing table (issue 14) in the routed labs. NAT serves a
//! client on its own segment and one behind a router with no default route; TUN reaches real
//! servers behind one router and behind two by an ECMP route; a router's MAC change is followed
//! by established flows; a removed route drops (counted) and a re-added one serves again.
//!
//! The lab tests (no director) show the topologies themselves work. DR real servers off the
//! director's segment are refused by `director check`, start-up and reload alike.

use std::time::{Duration, Instant};

use director_lab::{
    assert_all_ok, failures, far_rs_ip, poll_until, require_root, router_ip, stats, tally, vip_url,
    Host, Lab, LabOptions, Topology, CLIENT_IP, DIRECTOR_IP, FAR_CLIENT_IP, FAR_SUBNET,
};

const REQUESTS: usize = 30;

fn routed(topology: Topology) -> Lab {
    Lab::try_dr(LabOptions {
        topology,
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("building the {topology:?} lab: {e:#}"))
}

/// Whether `host` reaches `address` (the lab has no ping): a TCP connect to port 80 that is
/// accepted or refused (a RST came back), not timed out.
fn reaches(lab: &Lab, host: Host, address: &str) -> bool {
    match lab.tcp_connects(host, address, 80) {
        Ok(()) => true,
        Err(reason) => reason.contains("refused"),
    }
}

/// A TUN config over every real server of a routed TUN lab.
fn tun_config(lab: &Lab) -> director_lab::DirectorConfig {
    let mut config = lab.dr_config("rr");
    config.services[0].forwarding = "tun".into();
    config
}

// ---- the labs alone ----

#[test]
fn routed_nat_lab_reaches_the_far_client_only_by_its_route() {
    require_root!();
    let lab = routed(Topology::RoutedNat);
    let routes = lab.director_routes();
    assert!(!routes.contains("default"), "no default route: {routes}");
    assert!(routes.contains(FAR_SUBNET), "{routes}");
    assert!(reaches(&lab, Host::Client, DIRECTOR_IP), "on-link client");
    assert!(
        reaches(&lab, Host::FarClient, DIRECTOR_IP),
        "far client via the route"
    );
    lab.remove_far_route();
    assert!(
        !reaches(&lab, Host::FarClient, DIRECTOR_IP),
        "the director answered the far client without a route: {}",
        lab.director_routes()
    );
    lab.add_far_route();
    assert!(
        reaches(&lab, Host::FarClient, DIRECTOR_IP),
        "route re-added"
    );
}

#[test]
fn routed_tun_lab_serves_the_client_through_the_router() {
    require_root!();
    let lab = routed(Topology::RoutedTun);
    let routes = lab.director_routes();
    assert!(!routes.contains("default"), "no default route: {routes}");
    for i in 1..=lab.real_servers() {
        let before = lab.router_forwarded(1);
        let url = format!("http://{}:80/", far_rs_ip(i));
        let results = lab.http_get_many(3, &url);
        assert_all_ok(
            &results,
            "the client to a far real server, around the director",
        );
        assert!(
            lab.router_forwarded(1) >= before + 3,
            "router1 forwarded them"
        );
        assert!(
            reaches(&lab, Host::Director, &far_rs_ip(i)),
            "director to rs{i}"
        );
    }
    let old = lab.router_mac(1);
    lab.set_router_mac(1, "02:00:00:00:02:f1");
    assert_eq!(lab.router_mac(1), "02:00:00:00:02:f1", "was {old}");
}

#[test]
fn routed_tun_ecmp_lab_has_two_next_hops() {
    require_root!();
    let lab = routed(Topology::RoutedTunEcmp);
    let routes = lab.director_routes();
    assert_eq!(routes.matches("nexthop via").count(), 2, "{routes}");
    assert!(!routes.contains("default"), "{routes}");
    for i in 1..=lab.real_servers() {
        assert!(
            reaches(&lab, Host::Director, &far_rs_ip(i)),
            "director to rs{i}"
        );
    }
    let forwarded = lab.router_forwarded(1) + lab.router_forwarded(2);
    assert!(
        forwarded >= 3,
        "the routers forwarded the pings: {forwarded}"
    );
}

// ---- the director ----

#[test]
fn nat_serves_an_on_link_and_a_routed_client_without_a_default_route() {
    require_root!();
    let lab = routed(Topology::RoutedNat);
    for nat_reply in ["last-hop", "route"] {
        let text = lab.nat_config("rr", None).to_toml().replacen(
            "[director]\n",
            &format!("[director]\nnat_reply = \"{nat_reply}\"\n"),
            1,
        );
        let path = lab.write_config_text(&text);
        let mut director = lab.start_director_with(&path, &lab.stats_socket());
        let near = lab.http_get_many(REQUESTS, &vip_url());
        assert_all_ok(
            &near,
            &format!("{nat_reply}: the client on the director's segment"),
        );
        let far = lab.http_get_many_from(
            Host::FarClient,
            REQUESTS,
            &vip_url(),
            Duration::from_secs(2),
        );
        assert_all_ok(&far, &format!("{nat_reply}: the client behind the router"));
        for response in near.iter().flatten() {
            assert_eq!(response.client_ip(), CLIENT_IP, "{response:?}");
        }
        for response in far.iter().flatten() {
            assert_eq!(response.client_ip(), FAR_CLIENT_IP, "{response:?}");
        }
        director.stop();
    }
}

#[test]
fn tun_reaches_real_servers_behind_a_router() {
    require_root!();
    let lab = routed(Topology::RoutedTun);
    let director = lab.start_director(&tun_config(&lab));
    let before = lab.router_forwarded(1);
    let results = lab.http_get_many(REQUESTS, &vip_url());
    assert_all_ok(&results, "TUN through a router");
    let served = tally(&results);
    assert_eq!(
        served.len(),
        lab.real_servers(),
        "rr over every server: {served:?}"
    );
    let forwarded = lab.router_forwarded(1) - before;
    assert!(
        forwarded >= REQUESTS as u64,
        "router1 forwarded {forwarded} frames"
    );
    // The stats show each real server's next hop: the router, resolved; and the mirror's size.
    let stats = director.stats();
    let routing = &stats["routing"];
    for i in 1..=lab.real_servers() {
        let hop = next_hop(&stats, &far_rs_ip(i)).unwrap_or_else(|| panic!("{routing:#}"));
        assert_eq!(hop["via"], router_ip(1).as_str(), "{hop:#}");
        assert_eq!(hop["state"], "resolved", "{hop:#}");
    }
    assert!(
        routing["counters"]["prefixes"].as_u64().unwrap() > 0,
        "{routing:#}"
    );
    assert_eq!(routing["nat_reply"], "last-hop");
    let table = director.lbstat_table().unwrap();
    assert!(
        table.contains(&format!("via {}", router_ip(1))),
        "lbstat shows the next hops: {table}"
    );
}

/// The stats' next hop toward `destination` (a TUN real server).
fn next_hop<'a>(stats: &'a serde_json::Value, destination: &str) -> Option<&'a serde_json::Value> {
    stats["routing"]["next_hops"]
        .as_array()?
        .iter()
        .find(|hop| hop["destination"] == destination)
}

fn next_hop_state(stats: &serde_json::Value, destination: &str) -> Option<String> {
    next_hop(stats, destination)?["state"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn tun_ecmp_spreads_flows_over_both_routers_and_keeps_each_on_one() {
    require_root!();
    let lab = routed(Topology::RoutedTunEcmp);
    let _director = lab.start_director(&tun_config(&lab));
    let counts = || (lab.router_forwarded(1), lab.router_forwarded(2));

    // Many flows (each request a new connection, a new source port): both paths are used.
    let (one, two) = counts();
    let results = lab.http_get_many(100, &vip_url());
    assert_all_ok(&results, "TUN over ECMP");
    let (one_after, two_after) = counts();
    assert!(
        one_after - one >= 10 && two_after - two >= 10,
        "both routers carry flows: router1 +{}, router2 +{}",
        one_after - one,
        two_after - two
    );

    // One flow: every one of its frames takes the same router (the other sees ARP at most).
    let mut flow = lab.keep_alive(&vip_url(), None);
    let (one, two) = counts();
    for _ in 0..REQUESTS {
        flow.get()
            .unwrap_or_else(|e| panic!("keep-alive request: {e:#}"));
    }
    let (one_delta, two_delta) = (lab.router_forwarded(1) - one, lab.router_forwarded(2) - two);
    let (used, other) = (one_delta.max(two_delta), one_delta.min(two_delta));
    assert!(
        used >= REQUESTS as u64 && other <= 3,
        "one flow on one router: router1 +{one_delta}, router2 +{two_delta}"
    );
}

#[test]
fn a_routers_mac_change_is_followed() {
    require_root!();
    let lab = routed(Topology::RoutedTun);
    let director = lab.start_director(&tun_config(&lab));
    let mut flow = lab.keep_alive(&vip_url(), None);
    flow.get()
        .unwrap_or_else(|e| panic!("before the change: {e:#}"));
    lab.set_router_mac(1, "02:00:00:00:02:f1");
    let changed = Instant::now();
    // The established flow's next request goes through the router's new MAC (its entry names
    // the neighbour, whose slot the mirror rewrote); the time is printed, not asserted.
    flow.get()
        .unwrap_or_else(|e| panic!("after the change: {e:#}"));
    eprintln!(
        "first request after the MAC change: {:?}",
        changed.elapsed()
    );
    let stats = director.stats();
    let hop = next_hop(&stats, &far_rs_ip(1)).unwrap_or_else(|| panic!("{stats:#}"));
    assert_eq!(hop["mac"], "02:00:00:00:02:f1", "{hop:#}");
    for _ in 0..10 {
        flow.get()
            .unwrap_or_else(|e| panic!("keep-alive after the change: {e:#}"));
    }
    let fresh = lab.http_get_many(REQUESTS, &vip_url());
    assert_all_ok(&fresh, "new connections after the MAC change");
}

#[test]
fn a_removed_route_drops_counted_and_a_readded_one_serves() {
    require_root!();
    let lab = routed(Topology::RoutedTun);
    let director = lab.start_director(&tun_config(&lab));
    assert_all_ok(&lab.http_get_many(REQUESTS, &vip_url()), "with the route");

    lab.remove_far_route();
    // The mirror sees the removal (a notification) and the table the workers use carries it.
    poll_until(
        "the director's next hop toward the far real servers to go",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || match next_hop_state(&director.stats(), &far_rs_ip(1)) {
            Some(state) if state == "no_route" => Ok(()),
            other => Err(format!("next hop state {other:?}")),
        },
    )
    .unwrap();
    let without = lab.http_get_many_from(Host::Client, 10, &vip_url(), Duration::from_millis(500));
    assert_eq!(
        failures(&without).len(),
        10,
        "requests succeeded with no route to the real servers"
    );
    let drops = stats::worker_drops(&director.stats());
    let no_route: u64 = drops
        .iter()
        .filter(|(reason, _)| reason.contains("no_route"))
        .map(|(_, n)| n)
        .sum();
    assert!(no_route > 0, "no no_route drops counted: {drops:?}");

    lab.add_far_route();
    poll_until(
        "requests to succeed again after the route is back",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            let results =
                lab.http_get_many_from(Host::Client, 3, &vip_url(), Duration::from_millis(500));
            if failures(&results).is_empty() {
                Ok(())
            } else {
                Err(format!("{:?}", failures(&results)))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_all_ok(&lab.http_get_many(REQUESTS, &vip_url()), "route re-added");
}

/// `director check` refuses a DR real server that is off-link (the lab's director has
/// 192.0.2.0/24 only), naming it.
#[test]
fn director_check_refuses_an_off_link_dr_server() {
    require_root!();
    let lab = routed(Topology::RoutedTun);
    // Routed real servers under DR: not on the director's segment.
    let config = lab.dr_config("rr");
    let path = lab.write_config(&config);
    let out = lab.exec(
        Host::Director,
        &[
            &director_lab::director_bin().to_string_lossy(),
            "check",
            "--config",
            &path.to_string_lossy(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "director check accepted off-link DR servers"
    );
    assert!(
        stderr.contains(&format!("backend[0].address = \"{}\"", far_rs_ip(1)))
            && stderr.contains("directly connected network of eth0")
            && stderr.contains("use \"tun\""),
        "{stderr}"
    );
    // The same servers under TUN are fine.
    let path = lab.write_config(&tun_config(&lab));
    let out = lab.exec(
        Host::Director,
        &[
            &director_lab::director_bin().to_string_lossy(),
            "check",
            "--config",
            &path.to_string_lossy(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start-up and a reload refuse an off-link DR real server too, naming it; a refused reload
/// leaves the running configuration serving.
#[test]
fn start_up_and_reload_refuse_an_off_link_dr_server() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let mut off_link = lab.dr_config("rr");
    off_link.services[0].backends[1].address = "203.0.113.5".into();

    let path = lab.write_config(&off_link);
    let refused = lab
        .try_start_director_with(&path, &lab.stats_socket())
        .err()
        .unwrap_or_else(|| panic!("the director started with an off-link DR server"));
    let message = format!("{refused:#}");
    assert!(
        message.contains("backend[1].address = \"203.0.113.5\"")
            && message.contains("directly connected network of eth0"),
        "{message}"
    );

    let director = lab.start_director(&lab.dr_config("rr"));
    director.replace_config(&off_link);
    let reload = director.reload();
    assert_eq!(reload.code(), Some(1), "{reload}");
    assert!(
        reload
            .text()
            .contains("backend[1].address = \"203.0.113.5\""),
        "the error should name the server: {reload}"
    );
    assert_all_ok(
        &lab.http_get_many(REQUESTS, &vip_url()),
        "the running configuration after a refused reload",
    );
}
