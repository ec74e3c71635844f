//! End-to-end: the director in direct-routing mode, in the namespace lab.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use director_lab::stats::{self, Backend};
use director_lab::{
    director_bin, poll_until, require_root, rs_ip, rs_name, run_with_timeout, vip_url,
    DirectorConfig, Host, Lab, LabOptions, CLIENT_IP, VIP,
};

const REQUESTS: usize = 300;

#[test]
fn dr_maglev_300_requests() {
    dr_300_requests("maglev");
}

#[test]
fn dr_rr_300_requests() {
    dr_300_requests("rr");
}

fn dr_300_requests(scheduler: &str) {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let director = lab.start_director(&lab.dr_config(scheduler));

    let results = lab.http_get_many(REQUESTS, &vip_url());
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} requests failed; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let mut served: BTreeMap<String, u64> = BTreeMap::new();
    for response in results.iter().flatten() {
        assert_eq!(response.status, 200, "{response:?}");
        // Direct routing: the real server sees the client itself, not the director.
        assert_eq!(response.client_ip(), CLIENT_IP, "{response:?}");
        *served.entry(response.server.clone()).or_default() += 1;
    }
    println!("{scheduler}: requests per real server: {served:?}");
    let names: Vec<String> = (1..=3).map(rs_name).collect();
    assert_eq!(
        served.keys().cloned().collect::<Vec<_>>(),
        names,
        "every real server serves some"
    );
    if scheduler == "rr" {
        assert!(
            served.values().all(|&n| n == 100),
            "rr spreads 300 flows 100/100/100: {served:?}"
        );
    }

    let stats = director.settled_stats(REQUESTS as u64);
    println!("{scheduler}: lbstat --json: {stats}");
    let backends = stats::backends(&stats);
    assert_eq!(backends.len(), 3, "{stats:#}");
    let connections: u64 = backends.iter().map(|b| b.connections_total).sum();
    assert_eq!(
        connections, REQUESTS as u64,
        "one connection per request: {stats:#}"
    );
    for i in 1..=3 {
        let address = rs_ip(i);
        let b: &Backend = backends
            .iter()
            .find(|b| b.address == address)
            .unwrap_or_else(|| panic!("no backend {address} in {stats:#}"));
        assert_eq!(
            b.connections_total,
            served[&rs_name(i)],
            "{address}: connections_total vs responses from {}",
            rs_name(i)
        );
        assert!(b.packets_in > 0, "{b:?}");
        assert_eq!(
            (b.packets_out, b.bytes_out),
            (0, 0),
            "DR: replies bypass the director: {b:?}"
        );
    }
    let drops = stats::worker_drops(&stats);
    assert!(drops.values().all(|&n| n == 0), "worker drops: {drops:?}");

    // The director sees only client -> VIP frames: each one it received went to a backend, and
    // the XDP classifier redirected exactly those (no reply traffic ever reached it).
    let packets_in: u64 = backends.iter().map(|b| b.packets_in).sum();
    let rx = stats::workers_rx_packets(&stats);
    let redirected = stats::xdp_counter(&stats, "redirected");
    assert_eq!(
        packets_in, rx,
        "backend packets_in vs worker rx_packets: {stats:#}"
    );
    assert_eq!(
        rx, redirected,
        "worker rx_packets vs xdp.redirected: {stats:#}"
    );
}

#[test]
fn director_stops_cleanly() {
    require_root!();
    let lab = Lab::dr(LabOptions { real_servers: 1 });
    let mut director = lab.start_director(&lab.dr_config("maglev"));
    assert!(
        lab.xdp_attached(Host::Director),
        "no XDP program on the director's eth0 while running"
    );
    let stopped = director.stop();
    assert!(!stopped.killed, "the director ignored SIGTERM for 2 s");
    assert!(
        stopped.elapsed < Duration::from_secs(1),
        "shutdown took {:?}",
        stopped.elapsed
    );
    assert!(
        stopped.status.success(),
        "exit status after SIGTERM: {}",
        stopped.status
    );
    assert!(
        !lab.has_address(Host::Director, VIP),
        "the VIP stayed on the director's eth0"
    );
    assert!(
        !lab.xdp_attached(Host::Director),
        "an XDP program stayed attached after SIGTERM"
    );
}

#[test]
fn director_killed_leaves_no_program() {
    require_root!();
    let lab = Lab::dr(LabOptions { real_servers: 1 });
    let mut director = lab.start_director(&lab.dr_config("maglev"));
    assert!(
        lab.xdp_attached(Host::Director),
        "no XDP program on the director's eth0 while running"
    );
    let stopped = director.kill();
    assert!(!stopped.status.success());
    // The bpf_link dies with its last fd; the kernel detaches as the process's files close.
    poll_until(
        "XDP program to go",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || {
            if lab.xdp_attached(Host::Director) {
                Err("still attached".into())
            } else {
                Ok(())
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}: an XDP program outlived the killed director"));
}

#[test]
fn director_check_rejects_bad_config() {
    let bin = director_bin();
    let dir = std::env::temp_dir().join(format!("dl{}-check", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = DirectorConfig::dr(
        "/run/director/check.sock".into(),
        "fastest",
        &[rs_ip(1), rs_ip(2)],
    );
    let path = dir.join("bad-scheduler.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let out = run_with_timeout(
        Command::new(&bin).arg("check").arg("--config").arg(&path),
        Duration::from_secs(10),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "director check accepted scheduler = \"fastest\"; stderr: {stderr}"
    );
    assert!(
        stderr.contains("scheduler") && stderr.contains("fastest"),
        "the error should name the key and the value; stderr: {stderr}"
    );
}
