//! The lab itself, without the director: topology, real servers, teardown.

use std::panic;
use std::path::Path;
use std::time::Duration;

use director_lab::{
    assert_all_ok, director_ip, lab_namespaces, poll_until, require_root, rs_ip, rs_name,
    GetOptions, Host, KeepalivedOptions, KeepalivedState, Lab, LabOptions, LoadOptions, CLIENT_IP,
    EXTRA_CLIENT_IPS, VIP,
};

#[test]
fn lab_smoke() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let prefix = lab.prefix().to_owned();
    let mut names = lab_namespaces(&prefix);
    names.sort();
    let mut expected: Vec<String> = ["client", "director", "rs1", "rs2", "rs3", "switch"]
        .iter()
        .map(|h| format!("{prefix}{h}"))
        .collect();
    expected.sort();
    assert_eq!(names, expected);

    // The client reaches each real server's own address, and the server sees the client's.
    for i in 1..=3 {
        let url = format!("http://{}/", rs_ip(i));
        let results = lab.http_get_many(2, &url);
        for result in results {
            let response = result.unwrap_or_else(|e| panic!("GET {url}: {e:#}"));
            assert_eq!(response.status, 200, "{response:?}");
            assert_eq!(response.server, rs_name(i), "{response:?}");
            assert_eq!(response.client_ip(), CLIENT_IP, "{response:?}");
        }
        let health = lab.http_get_many(1, &format!("http://{}/healthz", rs_ip(i)));
        let health = health.into_iter().next().unwrap().unwrap();
        assert_eq!((health.status, health.body.trim()), (200, "ok"));
    }

    // No real server answers ARP for the VIP, and no director holds it yet: the VIP is dark.
    assert!(
        lab.tcp_connects(Host::Client, VIP, 80).is_err(),
        "the VIP answered without a director: a real server answers ARP for it"
    );
    assert!(
        !lab.has_address(Host::Director, VIP),
        "the VIP must not be pre-configured"
    );
    assert!(!lab.xdp_attached(Host::Director));

    let pids = lab.http_pids();
    assert_eq!(pids.len(), 3);
    let dir = lab.dir().to_path_buf();
    drop(lab);
    assert_eq!(
        lab_namespaces(&prefix),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "HTTP server {pid} left running"
        );
    }
    assert!(!dir.exists(), "lab directory {} left behind", dir.display());
}

#[test]
fn lab_is_removed_when_a_test_panics() {
    require_root!();
    let seen = std::sync::Mutex::new(None);
    let result = panic::catch_unwind(|| {
        let lab = Lab::dr(LabOptions::servers(1));
        *seen.lock().unwrap() = Some((lab.prefix().to_owned(), lab.http_pids()));
        panic!("intentional panic with a lab alive (this message is expected)");
    });
    assert!(result.is_err());
    let (prefix, pids) = seen.into_inner().unwrap().expect("the lab was built");
    assert_eq!(
        lab_namespaces(&prefix),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "HTTP server {pid} left running"
        );
    }
}

#[test]
fn lab_restarts_a_real_server() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(2));
    let rs2 = rs_ip(2);
    lab.stop_http(2);
    assert!(!lab.http_running(2));
    assert!(
        lab.tcp_connects(Host::Client, &rs2, 80).is_err(),
        "rs2 still accepts after stop"
    );
    lab.restart_http(2);
    assert!(lab.http_running(2));
    let response = lab
        .http_get_many(1, &format!("http://{rs2}/"))
        .remove(0)
        .unwrap();
    assert_eq!(response.server, "rs2");
}

/// The clients the reload and persistence tests rely on, against a real server directly (no
/// director): several ports, a second client address, the background load and the keep-alive
/// connection.
#[test]
fn lab_ports_sources_load_and_keep_alive() {
    require_root!();
    let lab = Lab::dr(LabOptions {
        real_servers: 1,
        ports: vec![80, 443],
        ..LabOptions::default()
    });
    let second = EXTRA_CLIENT_IPS[0];
    lab.add_client_address(second);
    let rs1 = rs_ip(1);
    let urls = [format!("http://{rs1}:80/"), format!("http://{rs1}:443/")];

    let results = lab.http_get(&GetOptions::alternating(4, &urls).from_address(second));
    let answered: Vec<(u16, String)> = results
        .into_iter()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{e:#}"));
            (r.port, r.client_ip().to_owned())
        })
        .collect();
    let expected: Vec<(u16, String)> = [80, 443, 80, 443]
        .into_iter()
        .map(|p| (p, second.to_owned()))
        .collect();
    assert_eq!(answered, expected, "alternating ports, from {second}");

    let mut load = lab.start_load(&urls[1], &LoadOptions::default());
    load.wait_until("20 answers", Duration::from_secs(10), |r| r.len() >= 20)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let results = load.stop();
    assert!(results.len() >= 20, "{} results", results.len());
    assert_all_ok(&results, "the background load");
    assert!(results
        .iter()
        .flatten()
        .all(|r| r.port == 443 && r.client_ip() == CLIENT_IP));

    let mut conn = lab.keep_alive(&urls[0], Some(second));
    assert!(
        conn.local_address().starts_with(second),
        "{}",
        conn.local_address()
    );
    for i in 0..3 {
        let r = conn.get().unwrap_or_else(|e| panic!("request {i}: {e:#}"));
        assert_eq!(
            (r.server.as_str(), r.client.as_str()),
            ("rs1", conn.local_address()),
            "request {i} rode the one connection"
        );
    }
    // A killed server breaks the connection, and the client says so instead of reconnecting.
    lab.stop_http(1);
    lab.start_http(1);
    assert!(
        conn.get().is_err(),
        "the kept connection survived its server's death"
    );
}

/// Three directors on one segment (for VRRP), a link taken down and back, code run inside a
/// director's namespace, and keepalived, all gone with the lab.
#[test]
fn lab_with_three_directors_and_keepalived() {
    require_root!();
    let lab = Lab::dr(LabOptions::directors(3, 1));
    let prefix = lab.prefix().to_owned();
    let mut names = lab_namespaces(&prefix);
    names.sort();
    let mut expected: Vec<String> = [
        "client",
        "director",
        "director2",
        "director3",
        "rs1",
        "switch",
    ]
    .iter()
    .map(|h| format!("{prefix}{h}"))
    .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(
        lab.director_hosts(),
        [
            Host::Director,
            Host::ExtraDirector(2),
            Host::ExtraDirector(3)
        ]
    );
    for (n, host) in lab.director_hosts().into_iter().enumerate() {
        assert!(lab.has_address(host, &director_ip(n + 1)));
        // Every director reaches the real server.
        lab.tcp_connects(host, &rs_ip(1), 80)
            .unwrap_or_else(|e| panic!("{host} to rs1: {e}"));
    }
    // A thread in director2's namespace sees director2's eth0 addresses, not the host's.
    let seen = lab.in_namespace(Host::ExtraDirector(2), || {
        std::fs::read_to_string("/proc/thread-self/net/fib_trie").unwrap_or_default()
    });
    assert!(seen.contains(&director_ip(2)), "{seen}");
    assert!(!seen.contains(&director_ip(1)), "{seen}");

    let _http = lab.start_http_on(Host::ExtraDirector(3));
    lab.set_link(Host::ExtraDirector(3), false);
    assert!(
        lab.tcp_connects(Host::Director, &director_ip(3), 80)
            .is_err(),
        "director3 answered with its link down"
    );
    lab.set_link(Host::ExtraDirector(3), true);
    lab.tcp_connects(Host::Director, &director_ip(3), 80)
        .unwrap_or_else(|e| panic!("director3 after its link came back: {e}"));

    // keepalived alone on the segment becomes master and adds the VIP in its namespace only.
    let mut keepalived = lab.start_keepalived(Host::ExtraDirector(3), &KeepalivedOptions::new(100));
    keepalived
        .wait_for_state(KeepalivedState::Master, Duration::from_secs(5))
        .unwrap();
    assert!(lab.has_address(Host::ExtraDirector(3), VIP));
    assert!(!lab.has_address(Host::Director, VIP));
    let pids = lab.exec_ok(Host::ExtraDirector(3), &["pgrep", "keepalived"]);
    let pids: Vec<String> = pids.split_whitespace().map(str::to_owned).collect();
    assert_eq!(pids.len(), 2, "keepalived and its VRRP child: {pids:?}");
    drop(lab); // keepalived still running: the lab's teardown must kill it
    drop(keepalived);
    assert_eq!(lab_namespaces(&prefix), Vec::<String>::new());
    // Its VRRP child is reparented to init when killed, which reaps it in its own time.
    for pid in pids {
        poll_until(
            &format!("keepalived {pid} to be gone"),
            Duration::from_secs(3),
            Duration::from_millis(10),
            || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => Ok(()),
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z') =>
                {
                    Ok(())
                }
                Ok(stat) => Err(stat),
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
}
