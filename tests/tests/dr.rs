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
    let wire_before = bytes_switch_sent_to_director(&lab);
    let rx_before = stats::workers_rx_bytes(&director.stats());

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

    // And on the wire: everything the bridge delivered to the director during the run is the
    // client's frames the workers took (plus a little ARP). The replies -- SYN-ACKs, responses,
    // FINs, about as many bytes again -- went from the real servers straight to the client.
    let wire = bytes_switch_sent_to_director(&lab) - wire_before;
    let rx_bytes = stats::workers_rx_bytes(&stats) - rx_before;
    println!("{scheduler}: bytes to the director's port {wire}, taken by its workers {rx_bytes}");
    assert!(
        rx_bytes > 2 * ARP_SLACK_BYTES,
        "too little traffic for the check to mean anything: {rx_bytes} bytes"
    );
    assert!(
        wire <= rx_bytes + ARP_SLACK_BYTES,
        "the director's port carried {wire} bytes but its workers took only {rx_bytes}: \
         reply traffic went through the director"
    );
}

/// Room for ARP and other broadcasts on the director's port during a run.
const ARP_SLACK_BYTES: u64 = 8 * 1024;

/// Bytes the bridge has sent out of the director's port (its veth in the switch namespace).
fn bytes_switch_sent_to_director(lab: &Lab) -> u64 {
    let port = Host::Director.name();
    let path = format!("/sys/class/net/{port}/statistics/tx_bytes");
    let text = lab.exec_ok(Host::Switch, &["cat", &path]);
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {text:?}: {e}"))
}

#[test]
fn failed_start_leaves_nothing_behind() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    // /proc refuses new directories, so the stats socket cannot be made: start-up fails after
    // the classifier is attached and the workers run, and must undo both.
    let mut config = lab.dr_config("maglev");
    config.stats_socket = "/proc/director-test/director.sock".into();
    let path = lab.write_config(&config);
    let out = run_with_timeout(
        lab.command(
            Host::Director,
            &[
                &director_bin().to_string_lossy(),
                "run",
                "--config",
                &path.to_string_lossy(),
            ],
        )
        .env("NO_COLOR", "1"),
        Duration::from_secs(20),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "director ran with an impossible socket: {stderr}"
    );
    assert!(
        stderr.contains("stats socket"),
        "the error names the socket: {stderr}"
    );
    assert!(
        !lab.has_address(Host::Director, VIP),
        "a VIP stayed behind: {stderr}"
    );
    assert!(
        !lab.xdp_attached(Host::Director),
        "an XDP program stayed behind: {stderr}"
    );
}

#[test]
fn director_keeps_a_vip_it_did_not_add() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    let vip = format!("{VIP}/32");
    lab.exec_ok(Host::Director, &["ip", "addr", "add", &vip, "dev", "eth0"]);
    let mut director = lab.start_director(&lab.dr_config("rr"));
    let served = lab.http_get_many(10, &vip_url());
    assert!(served.iter().all(Result::is_ok), "{served:?}");
    let stopped = director.stop();
    assert!(stopped.status.success(), "{}", stopped.status);
    assert!(
        lab.has_address(Host::Director, VIP),
        "the director removed a VIP the operator had configured"
    );
}

#[test]
fn director_stops_cleanly() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
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
    let lab = Lab::dr(LabOptions::servers(1));
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

/// An operator (or systemd) restarting the director at once: each start right after a stop must
/// come up, though the kernel frees the previous AF_XDP sockets' queue bindings asynchronously.
#[test]
fn director_restarts_at_once() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    let config = lab.dr_config("rr");
    for round in 0..6 {
        let path = lab.write_config(&config);
        let mut director = lab
            .try_start_director_with(&path, &config.stats_socket)
            .unwrap_or_else(|e| panic!("start {round} right after a stop: {e:#}"));
        let served = lab.http_get_many(2, &vip_url());
        assert!(
            served.iter().all(Result::is_ok),
            "round {round}: {served:?}"
        );
        let stopped = director.stop();
        assert!(
            stopped.status.success(),
            "round {round}: {}",
            stopped.status
        );
    }
}

#[test]
fn adaptive_polling_sleeps_when_idle_and_wakes_for_traffic() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let mut config = lab.dr_config("rr");
    config.poll = Some("adaptive".into());
    let director = lab.start_director(&config);
    let sleeps = |stats: &serde_json::Value| -> u64 {
        stats["workers"].as_array().map_or(0, |workers| {
            workers
                .iter()
                .filter_map(|worker| worker["counters"]["idle_sleeps"].as_u64())
                .sum()
        })
    };
    // Idle, the worker sleeps in poll(2)...
    let asleep = director
        .wait_for_stats(
            "the idle worker to sleep",
            Duration::from_secs(5),
            |stats| {
                let n = sleeps(stats);
                (n > 0).then_some(n)
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    // ...and a client's frames wake it: every request is answered.
    let results = lab.http_get_many(30, &vip_url());
    director_lab::assert_all_ok(&results, "requests to a sleeping worker");
    // It goes back to sleep once the traffic stops.
    let after = sleeps(&director.settled_stats(30));
    director
        .wait_for_stats(
            "the worker to sleep again",
            Duration::from_secs(5),
            |stats| (sleeps(stats) > after.max(asleep)).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The CPUs a thread may run on, from `/proc/PID/task/TID/status` (`Cpus_allowed_list`,
/// e.g. `0-1` or `0,2-3`).
fn allowed_cpus(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in {status}"))
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(low.parse::<usize>().unwrap()..=high.parse::<usize>().unwrap());
    }
    cpus
}

/// Every thread of `pid`: (name, CPUs it may run on).
fn threads(pid: u32) -> Vec<(String, Vec<usize>)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let path = task.unwrap().path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap();
            let status = std::fs::read_to_string(path.join("status")).unwrap();
            (name.trim().to_string(), allowed_cpus(&status))
        })
        .collect()
}

#[test]
fn worker_cpus_give_the_worker_its_cpu_and_keep_control_threads_off_it() {
    require_root!();
    let ours = allowed_cpus(&std::fs::read_to_string("/proc/self/status").unwrap());
    assert!(
        ours.len() >= 2,
        "this test needs two CPUs to put the worker and the control threads apart: {ours:?}"
    );
    let worker_cpu = *ours.last().unwrap();
    let lab = Lab::dr(LabOptions::default());
    let mut config = lab.dr_config("rr");
    config.worker_cpus = vec![worker_cpu];
    let mut director = lab.start_director(&config);
    // Serving, so the worker and every control thread are up.
    let results = lab.http_get_many(10, &vip_url());
    director_lab::assert_all_ok(&results, "requests with a pinned worker");
    let threads = threads(director.pid());
    let worker: Vec<_> = threads
        .iter()
        .filter(|(name, _)| name == "worker-0")
        .collect();
    assert_eq!(worker.len(), 1, "{threads:?}");
    assert_eq!(worker[0].1, vec![worker_cpu], "{threads:?}");
    // Every other thread keeps off the worker's CPU, the signal waiter too, though it was
    // started before the configuration was read.
    let others: Vec<_> = threads
        .iter()
        .filter(|(name, _)| name != "worker-0")
        .collect();
    assert!(
        others.iter().any(|(name, _)| name == "signals"),
        "{threads:?}"
    );
    assert!(others.len() >= 3, "{threads:?}");
    for (name, cpus) in others {
        assert!(
            !cpus.contains(&worker_cpu) && !cpus.is_empty(),
            "thread {name} may run on {cpus:?}, the worker's CPU is {worker_cpu}: {threads:?}"
        );
    }
    director.stop();
    // A CPU the process may not use is refused at start-up, naming the key.
    let mut refused = lab.dr_config("rr");
    refused.worker_cpus = vec![1000];
    let path = lab.write_config(&refused);
    let error = lab
        .try_start_director_with(&path, &refused.stats_socket)
        .err()
        .unwrap_or_else(|| panic!("a director with worker_cpus = [1000] started"));
    let text = format!("{error:#}");
    assert!(
        text.contains("director.worker_cpus[0] = 1000"),
        "the refusal does not name the key and value: {text}"
    );
}
