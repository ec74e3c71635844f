//! End-to-end: the director in IP-in-IP tunnel mode (LVS-TUN), with `rs-decap` on the real
//! servers because this kernel has no ipip module.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use director_lab::{
    assert_all_ok, poll_until, require_root, rs_decap_bin, rs_ip, rs_name, tally, vip_url, Host,
    Lab, LabOptions, CLIENT_IP, DIRECTOR_IP, VIP,
};

const REQUESTS: usize = 60;

/// Prepares real server `i` for tunnelled traffic: the decapsulator on eth0, and reverse-path
/// filtering off (the inner source is the client, which eth0 did not route to).
fn tunnel_endpoint(lab: &Lab, i: usize) {
    let host = Host::Rs(i);
    for key in ["all", "default", "eth0", "lo"] {
        lab.exec_ok(
            host,
            &[
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv4.conf.{key}.rp_filter=0"),
            ],
        );
    }
    lab.exec_ok(host, &[&rs_decap_bin().to_string_lossy(), "attach", "eth0"]);
}

#[test]
fn tun_forwards_http_through_ip_in_ip() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    for i in 1..=3 {
        tunnel_endpoint(&lab, i);
    }
    let mut config = lab.dr_config("rr");
    config.services[0].forwarding = "tun".into();
    let director = lab.start_director(&config);

    // Watch what the bridge sends to rs1: the director's tunnelled frames, before rs1's XDP
    // program strips them.
    let mut capture = lab.command(
        Host::Switch,
        &[
            "tcpdump",
            "-l",
            "-n",
            "-c",
            "3",
            "-i",
            &Host::Rs(1).name(),
            "ip proto 4",
        ],
    );
    capture
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut tcpdump = director_lab::ChildGuard::spawn(capture).unwrap();
    let (lines, seen) = mpsc::channel();
    for stream in [
        Box::new(tcpdump.take_stdout().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(tcpdump.take_stderr().unwrap()),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
    }
    let mut output = Vec::new();
    poll_until(
        "tcpdump to listen",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            output.extend(seen.try_iter());
            if output.iter().any(|line| line.contains("listening on")) {
                Ok(())
            } else {
                Err(format!("{output:?}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    let results = lab.http_get_many(REQUESTS, &vip_url());
    assert_all_ok(&results, "HTTP through the tunnel");
    let served = tally(&results);
    println!("tun: requests per real server: {served:?}");
    for i in 1..=3 {
        assert_eq!(
            served.get(&rs_name(i)).copied(),
            Some(20),
            "rr over 3 servers: {served:?}"
        );
    }
    for response in results.iter().flatten() {
        assert_eq!(
            response.client_ip(),
            CLIENT_IP,
            "the real server sees the client: {response:?}"
        );
    }

    tcpdump.wait_timeout(Duration::from_secs(10)).unwrap();
    output.extend(seen.try_iter());
    println!("capture: {output:#?}");
    let outer = format!("{DIRECTOR_IP} > {}: ", rs_ip(1));
    let inner = format!("{CLIENT_IP}.");
    let tunnelled: Vec<&String> = output
        .iter()
        .filter(|line| {
            line.contains(&outer) && line.contains(&inner) && line.contains(&format!("> {VIP}.80"))
        })
        .collect();
    assert!(
        !tunnelled.is_empty(),
        "no IP-in-IP frame {outer}(client > VIP:80) on the wire to rs1: {output:#?}"
    );

    let stats = director.stats();
    let drops = director_lab::stats::worker_drops(&stats);
    assert!(drops.values().all(|&n| n == 0), "worker drops: {drops:?}");
    // Each real server's decapsulator took its share: at least 3 frames per connection.
    for i in 1..=3 {
        let report = lab.exec_ok(
            Host::Rs(i),
            &[&rs_decap_bin().to_string_lossy(), "status", "eth0"],
        );
        let decapsulated: u64 = report
            .lines()
            .find_map(|line| line.strip_prefix("decapsulated_4in4"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no decapsulated counter in: {report}"));
        assert!(decapsulated >= 3 * 20, "rs{i}: {report}");
    }
}

#[test]
fn tun_answers_too_big_packets_so_path_mtu_discovery_works() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    tunnel_endpoint(&lab, 1);
    let mut config = lab.dr_config("rr");
    config.services[0].forwarding = "tun".into();
    let director = lab.start_director(&config);

    // A request whose headers fill full-size segments: each is 20 bytes too big once
    // tunnelled, so the director must answer fragmentation-needed (MTU 1480) and the client's
    // TCP must shrink its segments and retransmit for the request to get through.
    let padding = "x".repeat(6000);
    let header = format!("X-Padding: {padding}");
    let out = lab.exec(
        Host::Client,
        &["curl", "-sS", "--max-time", "10", "-H", &header, &vip_url()],
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl through the tunnel failed: {}{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains(&rs_name(1)), "{body}");

    let stats = director.stats();
    let sent: u64 = stats["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|worker| {
            worker["counters"]["icmp_frag_needed_sent"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert!(sent > 0, "no fragmentation-needed was sent: {stats:#}");
    let route = lab.exec_ok(Host::Client, &["ip", "route", "get", VIP]);
    assert!(
        route.contains("mtu 1480"),
        "the client did not learn the path MTU: {route}"
    );
}
