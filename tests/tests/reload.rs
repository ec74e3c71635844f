//! End-to-end: live reconfiguration (`director reload`, SIGHUP) and runtime backend operations,
//! under traffic.

use std::collections::BTreeSet;
use std::time::Duration;

use director_lab::stats;
use director_lab::{
    assert_all_ok, failures, require_root, rs_ip, rs_name, tally, vip_url, DirectorConfig,
    DirectorProcess, Lab, LabOptions, LoadOptions,
};
use serde_json::Value;

/// Bound on a reload's effect showing (rs3 serving, lbstat listing it).
const RELOAD_EFFECT: Duration = Duration::from_secs(10);
/// Bound on the load getting going.
const LOAD_START: Duration = Duration::from_secs(10);

/// Backend addresses of service `web`, per lbstat.
fn web_backends(stats: &Value) -> BTreeSet<String> {
    stats::backends(stats)
        .into_iter()
        .filter(|b| b.service == "web")
        .map(|b| b.address)
        .collect()
}

fn three_backends(director: &DirectorProcess) {
    let want: BTreeSet<String> = (1..=3).map(rs_ip).collect();
    director
        .wait_for_stats("lbstat to list 3 backends", RELOAD_EFFECT, |s| {
            (web_backends(s) == want).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn reload_adds_a_server_under_load_without_failures() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let director = lab.start_director(&lab.dr_config_over("rr", &[1, 2]));
    let mut load = lab.start_load(&vip_url(), &LoadOptions::default());
    load.wait_until("the load to get going", LOAD_START, |r| {
        r.iter().filter(|r| r.is_ok()).count() >= 20
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    director.replace_config(&lab.dr_config_over("rr", &[1, 2, 3]));
    let at = load.count();
    let reload = director.reload();
    let after = load.count();
    println!("{reload}");
    reload.assert_ok();

    let rs3 = rs_name(3);
    let waited = load.wait_until("rs3 to serve after the reload", RELOAD_EFFECT, |r| {
        r.iter()
            .skip(at)
            .flatten()
            .filter(|r| r.server == rs3)
            .count()
            >= 10
    });
    let results = load.stop();
    let served_after = tally(&results[at.min(results.len())..]);
    println!(
        "{} requests; the reload ran between requests #{at} and #{after}; served before: {:?}, \
         after: {served_after:?}",
        results.len(),
        tally(&results[..at.min(results.len())]),
    );
    waited.unwrap_or_else(|e| panic!("{e:#}"));
    assert_all_ok(&results, "the load across the reload");
    assert!(
        served_after.get(&rs3).copied().unwrap_or(0) > 0,
        "rs3 never served after the reload: {served_after:?}"
    );
    assert!(
        results[..at.min(results.len())]
            .iter()
            .flatten()
            .all(|r| r.server != rs3),
        "rs3 served before it was configured"
    );
    three_backends(&director);
    no_frame_lost(&director);
}

/// Every frame the classifier handed to the workers was forwarded: no drop of any kind, no
/// frame that found no socket, none the kernel dropped before a worker saw it. (A request can
/// succeed after a lost SYN by retransmitting; this catches that.)
fn no_frame_lost(director: &DirectorProcess) {
    let stats = director.stats();
    let drops = stats::worker_drops(&stats);
    assert!(drops.values().all(|&n| n == 0), "worker drops: {drops:?}");
    for counter in ["no_socket", "service_disabled"] {
        assert_eq!(
            stats::xdp_counter(&stats, counter),
            0,
            "xdp {counter}: {stats:#}"
        );
    }
    let workers = stats["workers"].as_array().expect("workers");
    for worker in workers {
        let dropped = worker["counters"]["xsk_rx_dropped"].as_u64().unwrap_or(0);
        assert_eq!(
            dropped, 0,
            "the kernel dropped frames for the socket: {worker:#}"
        );
    }
    assert_eq!(
        stats::workers_rx_packets(&stats),
        stats::workers_tx_packets(&stats),
        "every frame received was forwarded: {stats:#}"
    );
    assert_eq!(
        stats::workers_rx_packets(&stats),
        stats::xdp_counter(&stats, "redirected"),
        "every frame redirected was received: {stats:#}"
    );
}

#[test]
fn sighup_reloads() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let director = lab.start_director(&lab.dr_config_over("rr", &[1, 2]));
    let mut load = lab.start_load(&vip_url(), &LoadOptions::default());
    load.wait_until("the load to get going", LOAD_START, |r| {
        r.iter().filter(|r| r.is_ok()).count() >= 5
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    director.replace_config(&lab.dr_config_over("rr", &[1, 2, 3]));
    let at = load.count();
    assert!(director.sighup(), "the director is gone");
    three_backends(&director);
    let rs3 = rs_name(3);
    let waited = load.wait_until("rs3 to serve after SIGHUP", RELOAD_EFFECT, |r| {
        r.iter().flatten().any(|r| r.server == rs3)
    });
    let results = load.stop();
    println!(
        "{} requests; SIGHUP after #{at}; served: {:?}",
        results.len(),
        tally(&results)
    );
    waited.unwrap_or_else(|e| panic!("{e:#}"));
    assert_all_ok(&results, "the load across SIGHUP");
}

#[test]
fn invalid_reload_keeps_running_config() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let config = lab.dr_config("rr");
    let mut director = lab.start_director(&config);
    let before = stats::services(&director.stats());

    let mut bad: DirectorConfig = config.clone();
    bad.services[0].scheduler = "fastest".into();
    director.replace_config(&bad);
    let reload = director.reload();
    println!("{reload}");
    assert_eq!(reload.code(), Some(1), "{reload}");
    let text = reload.text();
    assert!(
        text.contains("scheduler") && text.contains("fastest"),
        "the error should name the key and the value: {reload}"
    );

    let results = lab.http_get_many(30, &vip_url());
    assert_all_ok(&results, "requests after a refused reload");
    assert_eq!(
        tally(&results).len(),
        3,
        "the old rr config still spreads over every server"
    );
    let after = stats::services(&director.stats());
    assert_eq!(
        after, before,
        "lbstat shows the services of the running config"
    );
    assert!(
        director.try_wait().ok().flatten().is_none(),
        "the director exited after a refused reload"
    );
}

#[test]
fn established_flow_survives_reload() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let mut config = lab.dr_config_over("maglev", &[1, 2]);
    config.services[0].set_weights(&[1, 1]);
    let director = lab.start_director(&config);

    let mut conn = lab.keep_alive(&vip_url(), None);
    let mut responses = Vec::new();
    for _ in 0..3 {
        responses.push(conn.get());
    }
    let server = match &responses[0] {
        Ok(r) => r.server.clone(),
        Err(e) => panic!("first request on the kept connection: {e:#}"),
    };
    println!("kept connection {} -> {server}", conn.local_address());

    // Weights change and a server joins: Maglev's table changes under the flow.
    let mut new = lab.dr_config_over("maglev", &[1, 2, 3]);
    new.services[0].set_weights(&[5, 1, 3]);
    director.replace_config(&new);
    director.reload().assert_ok();
    three_backends(&director);

    for _ in 0..3 {
        responses.push(conn.get());
    }
    // lbstat counts the kept flow as active on its server, across the reload.
    let address = (1..=3)
        .find(|&i| rs_name(i) == server)
        .map_or_else(|| panic!("unknown server {server:?}"), rs_ip);
    director
        .wait_for_stats(
            &format!("lbstat to count the kept flow as active on {address}"),
            RELOAD_EFFECT,
            |s| {
                stats::backend(s, "web", &address)
                    .and_then(|b| b.active_connections)
                    .filter(|&active| active >= 1)
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    for (i, r) in responses.iter().enumerate() {
        let r = r
            .as_ref()
            .unwrap_or_else(|e| panic!("request {i} on the kept connection: {e:#}"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.server, server,
            "request {i} on the kept connection moved: {r:?}"
        );
        assert_eq!(
            r.client,
            conn.local_address(),
            "request {i} came over another connection: {r:?}"
        );
    }
    // And new connections use the new config.
    assert_all_ok(
        &lab.http_get_many(20, &vip_url()),
        "new connections after the reload",
    );
}

#[test]
fn runtime_drain_disable_enable() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let director = lab.start_director(&lab.dr_config("rr"));
    let (rs1, rs2) = (rs_ip(1), rs_ip(2));
    let weight = |address: &str| {
        stats::backend(&director.stats(), "web", address)
            .unwrap_or_else(|| panic!("lbstat has no backend {address}"))
            .weight
    };
    let served = |what: &str| {
        let results = lab.http_get_many(30, &vip_url());
        assert_all_ok(&results, what);
        let served: BTreeSet<String> = tally(&results).into_keys().collect();
        println!("{what}: {:?}", tally(&results));
        served
    };
    let names =
        |indices: &[usize]| -> BTreeSet<String> { indices.iter().map(|&i| rs_name(i)).collect() };

    assert_eq!(served("before"), names(&[1, 2, 3]));

    director.backend_drain("web", &rs1).assert_ok();
    assert_eq!(weight(&rs1), 0, "lbstat weight of a drained backend");
    assert_eq!(served("rs1 drained"), names(&[2, 3]));

    director.backend_disable("web", &rs2).assert_ok();
    assert_eq!(served("rs1 drained, rs2 disabled"), names(&[3]));

    director.backend_enable("web", &rs2).assert_ok();
    director.backend_weight("web", &rs1, 1).assert_ok();
    assert_eq!(weight(&rs1), 1, "lbstat weight after `backend weight 1`");
    assert_eq!(served("rs2 enabled, rs1 weight 1"), names(&[1, 2, 3]));

    // Errors: exit 1 and a message naming what was not found.
    let unknown_backend = director.backend_drain("web", "192.0.2.99");
    println!("{unknown_backend}");
    assert_eq!(unknown_backend.code(), Some(1), "{unknown_backend}");
    assert!(
        unknown_backend.text().contains("192.0.2.99"),
        "the error names the backend: {unknown_backend}"
    );
    let unknown_service = director.backend_weight("nosuch", &rs1, 2);
    println!("{unknown_service}");
    assert_eq!(unknown_service.code(), Some(1), "{unknown_service}");
    assert!(
        unknown_service.text().contains("nosuch"),
        "the error names the service: {unknown_service}"
    );
    assert!(failures(&lab.http_get_many(6, &vip_url())).is_empty());
}

/// The lab's DR configuration plus 65 services of 64 ports each on the VIP (ports 1000 and
/// up): 4161 IPv4 (VIP, port, protocol) keys, past the classifier's 4096.
fn past_the_classifier(config: &DirectorConfig) -> DirectorConfig {
    let mut big = config.clone();
    for group in 0..65u16 {
        let mut extra = config.services[0].clone();
        extra.name = format!("extra{group}");
        extra.ports = (0..64).map(|port| 1000 + group * 64 + port).collect();
        big.services.push(extra);
    }
    big
}

/// `director check --config PATH` in the director's namespace.
fn director_check(lab: &Lab, path: &std::path::Path) -> std::process::Output {
    lab.exec(
        director_lab::Host::Director,
        &[
            &director_lab::director_bin().to_string_lossy(),
            "check",
            "--config",
            &path.to_string_lossy(),
        ],
    )
}

const PAST_THE_CLASSIFIER: &str =
    "services: 4161 IPv4 services (VIP, port, protocol) exceed the classifier's 4096 (map services)";

/// A reload past a map's capacity changes nothing (the classifier, the table, lbstat) and says
/// which limit, how many and how much; `director check` refuses the file with the same words.
/// At the capacity, both accept it, and the reload fills the map without an error.
#[test]
fn reload_past_the_classifier_capacity_is_refused_and_changes_nothing() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let config = lab.dr_config("rr");
    let mut director = lab.start_director(&config);
    let before = stats::services(&director.stats());

    let big = past_the_classifier(&config);
    director.replace_config(&big);
    let reload = director.reload();
    println!("{reload}");
    assert_eq!(reload.code(), Some(1), "{reload}");
    assert!(reload.text().contains(PAST_THE_CLASSIFIER), "{reload}");

    let results = lab.http_get_many(30, &vip_url());
    assert_all_ok(&results, "requests after the refused reload");
    assert_eq!(
        tally(&results).len(),
        3,
        "the old rr config still spreads over every server"
    );
    assert_eq!(
        stats::services(&director.stats()),
        before,
        "lbstat shows the services of the running config"
    );
    assert!(
        director.try_wait().ok().flatten().is_none(),
        "the director exited after a refused reload"
    );

    let out = director_check(&lab, &lab.write_config(&big));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "director check accepted it: {stderr}"
    );
    assert!(stderr.contains(PAST_THE_CLASSIFIER), "{stderr}");
    // Exactly 4096 fit, and check says how much memory they need.
    let mut fits = big;
    fits.services.pop();
    fits.services.last_mut().expect("services").ports.pop();
    let out = director_check(&lab, &lab.write_config(&fits));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("memory: ~") && stdout.contains("connection tables"),
        "{stdout}"
    );
    // And the running director takes them: the classifier's map full to the last entry.
    director.replace_config(&fits);
    let reload = director.reload();
    println!("{reload}");
    reload.assert_ok();
    assert!(!reload.text().contains("applied with errors"), "{reload}");
    assert_all_ok(
        &lab.http_get_many(30, &vip_url()),
        "requests with the classifier's map full",
    );
}
