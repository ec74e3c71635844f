//! End-to-end: IPv6 services in the namespace lab (issue 15), with real sockets, real HTTP
//! servers and the kernel's NDP. The dual-stack lab itself (no real server answers NDP for the
//! VIP on its `lo`); direct routing over three real servers that see the client's own IPv6
//! address; one file serving an IPv4 and an IPv6 service at once; NAT with port mapping on an
//! IPv6 server segment, and an ICMPv6 error translated for the client (RFC 4443); TUN as
//! IPv6-in-IPv6 and IPv4-in-IPv6 (RFC 2473) through `rs-decap`, seen on the wire, and
//! packet-too-big teaching the client the path MTU; a VRRPv3-over-IPv6 failover (RFC 5798)
//! between two directors under client load, and an IPv6 VIP traded with keepalived.
//!
//! Addresses: 2001:db8::/64 on the client segment, 2001:db8:1::/64 on the NAT server side
//! (RFC 3849's documentation prefix), each host's ending like its TEST-NET one (`lab/ipv6.rs`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use director_lab::config::with_stats_socket;
use director_lab::stats::{self, Backend};
use director_lab::{
    assert_all_ok, poll_until, require_root, rs_decap_bin, rs_name, tally, url_of, vip6_url,
    vip_url, workspace_dir, ChildGuard, DirectorProcess, GetOptions, Host, HttpResponse,
    KeepalivedOptions, KeepalivedState, Lab, LabOptions, LoadOptions, CLIENT_IP, CLIENT_IP6,
    DIRECTOR_IP6, VIP, VIP6,
};
use serde_json::Value;

/// Requests of the DR test (Maglev over three servers: each gets some, with near certainty).
const DR_REQUESTS: usize = 150;
/// Requests of the other tests (a multiple of 2 and of 3, for round robin).
const REQUESTS: usize = 60;

/// How long a director, a failover or the client load may take to get where a test waits.
const WITHIN: Duration = Duration::from_secs(5);

/// A dual-stack lab of `real_servers` real servers on port 80.
fn lab6(real_servers: usize) -> Lab {
    Lab::dr(LabOptions {
        ipv6: true,
        ..LabOptions::servers(real_servers)
    })
}

/// The backend of `stats` at `address`, however the stats spell an IPv6 address.
fn backend_at(backends: &[Backend], address: &str) -> Backend {
    let wanted: IpAddr = address.parse().unwrap();
    backends
        .iter()
        .find(|b| {
            b.address
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                == Ok(wanted)
        })
        .cloned()
        .unwrap_or_else(|| panic!("no backend {address} in {backends:#?}"))
}

/// Panics unless the workers dropped nothing.
#[track_caller]
fn assert_no_drops(stats: &Value) {
    let drops = stats::worker_drops(stats);
    assert!(drops.values().all(|&n| n == 0), "worker drops: {drops:?}");
}

/// Panics unless every response came from `client` as the real server saw it.
#[track_caller]
fn assert_client_seen(results: &[anyhow::Result<HttpResponse>], client: &str) {
    for response in results.iter().flatten() {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(
            response.client_ip(),
            client,
            "the real server sees the client: {response:?}"
        );
    }
}

/// Whether `address`/`prefix` is on `host`'s `device`.
fn has_address6(lab: &Lab, host: Host, device: &str, address: &str, prefix: u8) -> bool {
    let shown = lab.exec_ok(host, &["ip", "-o", "-6", "addr", "show", "dev", device]);
    shown.contains(&format!("inet6 {address}/{prefix} "))
}

// ---- the lab itself ----

#[test]
fn dual_stack_lab_serves_ipv6_directly_and_no_real_server_answers_ndp_for_the_vip() {
    require_root!();
    let lab = lab6(2);
    // Each real server's HTTP server answers on its own IPv6 address and sees the client's.
    for i in 1..=2 {
        let results = lab.http_get_many(2, &url_of(&lab.rs_address6(i), 80));
        assert_all_ok(&results, &format!("HTTP to {}", lab.rs_address6(i)));
        assert_client_seen(&results, CLIENT_IP6);
        assert_eq!(tally(&results).get(&rs_name(i)), Some(&2), "{results:?}");
    }
    // IPv4 clients of the same dual-stack sockets are still reported as themselves.
    let results = lab.http_get_many(1, &url_of(&lab.rs_address(1), 80));
    assert_all_ok(&results, "HTTP to rs1 over IPv4");
    assert_client_seen(&results, CLIENT_IP);
    // Without a director nobody owns the VIP on the segment: the real servers hold it on `lo`
    // and their kernels leave the client's solicitations for it unanswered (RFC 4861 7.2.3).
    let connect = lab.tcp_connects(Host::Client, VIP6, 80);
    assert!(connect.is_err(), "something accepted on [{VIP6}]:80");
    let entry = lab
        .neighbour6(Host::Client, VIP6, "eth0")
        .unwrap_or_else(|e| panic!("the client never solicited {VIP6}: {e:#}"));
    assert!(
        !entry.contains("lladdr"),
        "a real server answered a neighbour solicitation for {VIP6}: {entry}"
    );
}

// ---- direct routing ----

#[test]
fn dr6_maglev_spreads_over_three_servers_that_see_the_client() {
    require_root!();
    let lab = lab6(3);
    let director = lab.start_director(&lab.dr6_config("maglev"));
    // The director holds the VIP as a /128 host address; the real servers on `lo`.
    assert!(
        has_address6(&lab, Host::Director, "eth0", VIP6, 128),
        "the director holds {VIP6}/128 on eth0"
    );
    for host in lab.rs_hosts() {
        assert!(has_address6(&lab, host, "lo", VIP6, 128), "{host} lo");
    }

    let results = lab.http_get_many(DR_REQUESTS, &vip6_url());
    assert_all_ok(&results, "HTTP to the IPv6 VIP over DR");
    assert_client_seen(&results, CLIENT_IP6);
    let served = tally(&results);
    println!("dr6: requests per real server: {served:?}");
    let names: Vec<String> = (1..=3).map(rs_name).collect();
    assert_eq!(
        served.keys().cloned().collect::<Vec<_>>(),
        names,
        "Maglev spreads over every real server: {served:?}"
    );

    let stats = director.settled_stats(DR_REQUESTS as u64);
    assert_no_drops(&stats);
    let backends = stats::backends(&stats);
    for i in 1..=3 {
        let backend = backend_at(&backends, &lab.rs_address6(i));
        assert_eq!(
            backend.connections_total,
            served[&rs_name(i)] as u64,
            "connections counted per real server: {backend:?}"
        );
        assert_eq!(
            (backend.packets_out, backend.bytes_out),
            (0, 0),
            "DR: replies bypass the director: {backend:?}"
        );
    }
    // The real servers reached the client directly: each learned its MAC by NDP, and the
    // client resolved only the director (through the VIP), never a real server's VIP.
    for host in lab.rs_hosts() {
        lab.neighbour6(host, CLIENT_IP6, "eth0")
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let director_mac = mac_of(&lab, Host::Director);
    let vip_entry = lab
        .neighbour6(Host::Client, VIP6, "eth0")
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        vip_entry.contains(&director_mac),
        "the client reaches {VIP6} at the director ({director_mac}): {vip_entry}"
    );
}

/// `host`'s `eth0` MAC.
fn mac_of(lab: &Lab, host: Host) -> String {
    let shown = lab.exec_ok(host, &["ip", "-o", "link", "show", "dev", "eth0"]);
    let mut words = shown.split_whitespace();
    words.find(|word| *word == "link/ether");
    words.next().expect("eth0 has a MAC").to_owned()
}

// ---- dual stack ----

#[test]
fn dual_stack_file_serves_both_families_at_once() {
    require_root!();
    let lab = lab6(3);
    // The checked-in example, with this lab's stats socket.
    let example = workspace_dir().join("configs/dual-stack.toml");
    let text =
        std::fs::read_to_string(&example).unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    let socket = lab.stats_socket();
    let config = lab.write_config_text(&with_stats_socket(&text, &socket.to_string_lossy()));
    let director = lab.start_director_waiting_for(Host::Director, &config, &socket, &[VIP, VIP6]);

    // The two families alternate, one new connection each: both services serve at once.
    let results = lab.http_get(&GetOptions::alternating(REQUESTS, &[vip_url(), vip6_url()]));
    assert_all_ok(&results, "alternating IPv4 and IPv6 requests");
    let mut served: BTreeMap<(bool, String), usize> = BTreeMap::new();
    for (i, response) in results.iter().flatten().enumerate() {
        let ipv6 = i % 2 == 1;
        let client = if ipv6 { CLIENT_IP6 } else { CLIENT_IP };
        assert_eq!(response.client_ip(), client, "request {i}: {response:?}");
        *served.entry((ipv6, response.server.clone())).or_default() += 1;
    }
    println!("dual stack: requests per (ipv6, real server): {served:?}");
    for ipv6 in [false, true] {
        for i in 1..=3 {
            assert!(
                served.contains_key(&(ipv6, rs_name(i))),
                "{} served no {} request: {served:?}",
                rs_name(i),
                if ipv6 { "IPv6" } else { "IPv4" }
            );
        }
    }

    // And with curl, as a person would check it.
    for (flag, url) in [("-4", vip_url()), ("-6", vip6_url())] {
        let out = lab.exec(
            Host::Client,
            &["curl", "-sS", flag, "-g", "--max-time", "5", &url],
        );
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {flag} {url}: {}{body}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(body.contains("\"server\": \"rs"), "curl {flag}: {body}");
    }

    let stats = director.settled_stats(REQUESTS as u64 + 2);
    assert_no_drops(&stats);
    let services: Vec<String> = stats::services(&stats)
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(
        services.contains(&"web".to_owned()) && services.contains(&"web6".to_owned()),
        "{services:?}"
    );
    let backends = stats::backends(&stats);
    let per_family = |service: &str| -> u64 {
        backends
            .iter()
            .filter(|b| b.service == service)
            .map(|b| b.connections_total)
            .sum()
    };
    assert_eq!(per_family("web"), REQUESTS as u64 / 2 + 1, "{backends:#?}");
    assert_eq!(per_family("web6"), REQUESTS as u64 / 2 + 1, "{backends:#?}");
}

// ---- NAT ----

/// The port the NAT lab's real servers listen on; the service is `[VIP6]:80`.
const BACKEND_PORT: u16 = 8080;

#[test]
fn nat6_forwards_http_with_port_mapping_on_an_ipv6_server_segment() {
    require_root!();
    let lab = Lab::nat(LabOptions {
        ipv6: true,
        ports: vec![BACKEND_PORT],
        ..LabOptions::default()
    });
    let forwarding = || {
        lab.exec_ok(
            Host::Director,
            &["sysctl", "-n", "net.ipv6.conf.all.forwarding"],
        )
        .trim()
        .to_owned()
    };
    assert_eq!(forwarding(), "0");
    // Routed through the director's kernel the client does not reach the server segment (no
    // IPv6 forwarding there): whatever crosses below is the data plane's doing.
    lab.exec_ok(
        Host::Client,
        &[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8:1::/64",
            "via",
            DIRECTOR_IP6,
        ],
    );
    assert!(
        lab.tcp_connects(Host::Client, &lab.rs_address6(1), BACKEND_PORT)
            .is_err(),
        "the client reached {} through the director's kernel",
        lab.rs_address6(1)
    );
    // The real servers' way back is the director's server-side address.
    let route = lab.exec_ok(Host::Rs(1), &["ip", "-6", "route", "get", CLIENT_IP6]);
    assert!(
        route.contains(&format!("via {}", lab.server_side_ip6_of(Host::Director))),
        "{route}"
    );
    let director = lab.start_director(&lab.nat6_config("rr", Some(BACKEND_PORT)));

    let results = lab.http_get_many(REQUESTS, &vip6_url());
    assert_all_ok(&results, "HTTP to the IPv6 VIP through NAT");
    assert_client_seen(&results, CLIENT_IP6);
    let served = tally(&results);
    println!("nat6: requests per real server: {served:?}");
    for i in 1..=3 {
        assert_eq!(
            served.get(&rs_name(i)).copied(),
            Some(REQUESTS / 3),
            "rr over 3 servers: {served:?}"
        );
    }
    for response in results.iter().flatten() {
        assert_eq!(
            response.port, BACKEND_PORT,
            "[VIP6]:80 mapped to 8080: {response:?}"
        );
    }

    let stats = director.settled_stats(REQUESTS as u64);
    assert_no_drops(&stats);
    let backends = stats::backends(&stats);
    for i in 1..=3 {
        let backend = backend_at(&backends, &lab.rs_address6(i));
        assert!(
            backend.packets_in > 0 && backend.packets_out > 0,
            "NAT: both directions through the director: {backend:?}"
        );
    }
    assert_eq!(forwarding(), "0", "the director turned IPv6 forwarding on");
}

#[test]
fn nat6_translates_a_real_servers_icmpv6_error_for_the_client() {
    require_root!();
    let lab = Lab::nat(LabOptions {
        ipv6: true,
        ports: vec![BACKEND_PORT],
        ..LabOptions::servers(1)
    });
    // A UDP service mapped to a port nothing listens on: the real server's kernel answers
    // ICMPv6 port unreachable (RFC 4443 3.1) about (client -> rs:9999), which reaches the
    // client's socket as an error about (client -> [VIP6]:5353) only if the director
    // translates the error, its quote and both checksums.
    let mut config = lab.nat6_config("rr", Some(9999));
    let service = &mut config.services[0];
    service.protocol = "udp".into();
    service.ports = vec![5353];
    let director = lab.start_director(&config);

    let probe = "import socket,sys\n\
                 s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
                 s.settimeout(3)\n\
                 s.connect((sys.argv[1],5353))\n\
                 s.send(b'x')\n\
                 try:\n    s.recv(100)\n    print('answer')\n\
                 except ConnectionRefusedError:\n    print('refused')\n\
                 except socket.timeout:\n    print('timeout')\n";
    let out = lab.exec_ok(Host::Client, &["python3", "-c", probe, VIP6]);
    assert_eq!(
        out.trim(),
        "refused",
        "the client's UDP socket should see the translated port unreachable; director log:\n{}",
        director.log()
    );
    let stats = director.stats();
    assert!(
        stats["xdp"]["icmp_redirected"].as_u64().unwrap_or(0) > 0,
        "the server side's classifier did not steer the ICMPv6 error: {stats:#}"
    );
    assert_no_drops(&stats);
}

// ---- TUN ----

/// Prepares real server `i` for tunnelled traffic: the decapsulator on `eth0`, and IPv4
/// reverse-path filtering off (a 4in6 packet's inner source is the client, which `eth0` did not
/// route to; IPv6 has no such filter).
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

/// A `tcpdump` on the bridge port of `host` (in the switch namespace, so it sees frames before
/// the real server's XDP program strips them), collecting up to `count` lines matching `filter`.
struct Capture {
    tcpdump: ChildGuard,
    seen: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Capture {
    fn start(lab: &Lab, host: Host, count: usize, filter: &str) -> Capture {
        let port = host.name();
        let count = count.to_string();
        let mut command = lab.command(
            Host::Switch,
            &["tcpdump", "-l", "-n", "-c", &count, "-i", &port, filter],
        );
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut tcpdump = ChildGuard::spawn(command).unwrap();
        let (send, seen) = mpsc::channel();
        for stream in [
            Box::new(tcpdump.take_stdout().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(tcpdump.take_stderr().unwrap()),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = send.send(line);
                }
            });
        }
        let mut capture = Capture {
            tcpdump,
            seen,
            lines: Vec::new(),
        };
        poll_until(
            "tcpdump to listen",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                capture.lines.extend(capture.seen.try_iter());
                if capture.lines.iter().any(|l| l.contains("listening on")) {
                    Ok(())
                } else {
                    Err(format!("{:?}", capture.lines))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        capture
    }

    /// Waits (bounded) for tcpdump to have its `count` frames, and returns every line.
    fn finish(mut self) -> Vec<String> {
        self.tcpdump.wait_timeout(Duration::from_secs(10)).unwrap();
        self.lines.extend(self.seen.try_iter());
        self.lines
    }
}

/// `rs-decap status eth0`'s `counter` on real server `i`.
fn decap_counter(lab: &Lab, i: usize, counter: &str) -> u64 {
    let report = lab.exec_ok(
        Host::Rs(i),
        &[&rs_decap_bin().to_string_lossy(), "status", "eth0"],
    );
    report
        .lines()
        .find_map(|line| line.strip_prefix(counter))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {counter} counter in: {report}"))
}

#[test]
fn tun6_forwards_http_through_ipv6_in_ipv6() {
    require_root!();
    let lab = lab6(3);
    for i in 1..=3 {
        tunnel_endpoint(&lab, i);
    }
    let mut config = lab.dr6_config("rr");
    config.services[0].forwarding = "tun".into();
    let director = lab.start_director(&config);
    // Next header 41 (IPv6) in the outer header: RFC 2473's IPv6-in-IPv6.
    let capture = Capture::start(&lab, Host::Rs(1), 3, "ip6 proto 41");

    let results = lab.http_get_many(REQUESTS, &vip6_url());
    assert_all_ok(&results, "HTTP to the IPv6 VIP through the tunnel");
    assert_client_seen(&results, CLIENT_IP6);
    let served = tally(&results);
    println!("tun6: requests per real server: {served:?}");
    for i in 1..=3 {
        assert_eq!(
            served.get(&rs_name(i)).copied(),
            Some(REQUESTS / 3),
            "rr over 3 servers: {served:?}"
        );
    }

    let output = capture.finish();
    println!("capture: {output:#?}");
    let outer = format!("{DIRECTOR_IP6} > {}: ", lab.rs_address6(1));
    let inner = format!("{CLIENT_IP6}.");
    assert!(
        output.iter().any(|line| line.contains(&outer)
            && line.contains(&inner)
            && line.contains(&format!("> {VIP6}.80"))),
        "no IPv6-in-IPv6 frame {outer}(client > [VIP6]:80) on the wire to rs1: {output:#?}"
    );
    assert_no_drops(&director.stats());
    for i in 1..=3 {
        let decapsulated = decap_counter(&lab, i, "decapsulated_6in6");
        assert!(
            decapsulated >= 3 * (REQUESTS / 3) as u64,
            "rs{i}: decapsulated_6in6 {decapsulated}"
        );
    }
}

#[test]
fn tun6_answers_too_big_packets_with_packet_too_big() {
    require_root!();
    let lab = lab6(1);
    tunnel_endpoint(&lab, 1);
    let mut config = lab.dr6_config("rr");
    config.services[0].forwarding = "tun".into();
    let director = lab.start_director(&config);

    // A request whose headers fill full-size segments: each is 40 bytes too big once
    // tunnelled, so the director must answer ICMPv6 packet-too-big (RFC 4443 3.2, MTU 1460)
    // and the client's TCP must shrink its segments for the request to get through.
    let header = format!("X-Padding: {}", "x".repeat(6000));
    let url = vip6_url();
    let out = lab.exec(
        Host::Client,
        &[
            "curl",
            "-sS",
            "-6",
            "-g",
            "--max-time",
            "10",
            "-H",
            &header,
            &url,
        ],
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl through the IPv6 tunnel failed: {}{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains(&rs_name(1)), "{body}");
    let route = lab.exec_ok(Host::Client, &["ip", "-6", "route", "get", VIP6]);
    assert!(
        route.contains("mtu 1460"),
        "the client did not learn the path MTU: {route}"
    );
    let stats = director.stats();
    assert!(
        stats::worker_counter(&stats, "icmp6_packet_too_big_sent") > 0,
        "no packet-too-big was counted: {stats:#}"
    );
}

#[test]
fn tun_carries_an_ipv4_service_to_ipv6_real_servers_in_ipv6() {
    require_root!();
    let lab = lab6(2);
    for i in 1..=2 {
        tunnel_endpoint(&lab, i);
    }
    // The IPv4 VIP, its real servers named by their IPv6 addresses: IPv4-in-IPv6.
    let mut config = lab.dr_config("rr");
    let service = &mut config.services[0];
    service.forwarding = "tun".into();
    for (i, backend) in (1..).zip(&mut service.backends) {
        backend.address = lab.rs_address6(i);
    }
    let director = lab.start_director(&config);
    // Next header 4 (IPv4) in the outer IPv6 header.
    let capture = Capture::start(&lab, Host::Rs(1), 3, "ip6 proto 4");

    let results = lab.http_get_many(REQUESTS, &vip_url());
    assert_all_ok(&results, "HTTP to the IPv4 VIP through IPv6 tunnels");
    assert_client_seen(&results, CLIENT_IP);
    let served = tally(&results);
    for i in 1..=2 {
        assert_eq!(
            served.get(&rs_name(i)).copied(),
            Some(REQUESTS / 2),
            "rr over 2 servers: {served:?}"
        );
    }

    let output = capture.finish();
    println!("capture: {output:#?}");
    let outer = format!("{DIRECTOR_IP6} > {}: ", lab.rs_address6(1));
    assert!(
        output.iter().any(|line| line.contains(&outer)
            && line.contains(&format!("{CLIENT_IP}."))
            && line.contains(&format!("> {VIP}.80"))),
        "no IPv4-in-IPv6 frame {outer}(client > VIP:80) on the wire to rs1: {output:#?}"
    );
    assert_no_drops(&director.stats());
    for i in 1..=2 {
        let decapsulated = decap_counter(&lab, i, "decapsulated_4in6");
        assert!(
            decapsulated >= 3 * (REQUESTS / 2) as u64,
            "rs{i}: decapsulated_4in6 {decapsulated}"
        );
    }
}

// ---- failover ----

/// The primary director, priority 150, and the backup, 100.
const PRIMARY: Host = Host::Director;
const BACKUP: Host = Host::ExtraDirector(2);

/// Writes the lab's IPv6 DR config for `host` with an `[ha]` table of `priority` (vrid 51,
/// 100 ms advertisements), and returns it with its stats socket.
fn ha6_config(lab: &Lab, host: Host, priority: u8) -> (PathBuf, PathBuf) {
    let mut config = lab.dr6_config("maglev");
    let socket = lab.stats_socket_of(host);
    config.stats_socket.clone_from(&socket);
    let text = format!(
        "{}\n[ha]\nvrid = 51\npriority = {priority}\nadvert_interval = \"100ms\"\n",
        config.to_toml()
    );
    (lab.write_config_text(&text), socket)
}

fn wait_for_state(director: &DirectorProcess, state: &str) {
    director
        .wait_for_stats(&format!("VRRP state {state}"), WITHIN, |stats| {
            (stats["ha"]["state"].as_str() == Some(state)).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", director.log()));
}

#[test]
fn ipv6_vip_fails_over_between_two_directors_under_load() {
    require_root!();
    let lab = Lab::dr(LabOptions {
        ipv6: true,
        ..LabOptions::directors(2, 3)
    });
    let (primary_config, primary_socket) = ha6_config(&lab, PRIMARY, 150);
    let (backup_config, backup_socket) = ha6_config(&lab, BACKUP, 100);
    let primary =
        lab.start_director_waiting_for(PRIMARY, &primary_config, &primary_socket, &[VIP6]);
    let backup = lab.start_director_waiting_for(BACKUP, &backup_config, &backup_socket, &[]);
    wait_for_state(&primary, "MASTER");
    wait_for_state(&backup, "BACKUP");
    assert!(!lab.has_address(BACKUP, VIP6), "the backup holds {VIP6}");

    let options = LoadOptions {
        timeout: Duration::from_millis(300),
        ..LoadOptions::default()
    };
    let mut load = lab.start_load(&vip6_url(), &options);
    let through_primary = 5;
    load.wait_until("requests through the primary", WITHIN, |r| {
        r.iter().flatten().count() >= through_primary
    })
    .unwrap();

    // The primary's cable is pulled: the backup takes the VIP, announces it with an unsolicited
    // neighbour advertisement, and the client's new connections reach the real servers again.
    lab.set_link(PRIMARY, false);
    wait_for_state(&backup, "MASTER");
    poll_until("the backup to hold the VIP", WITHIN, STEP, || {
        if lab.has_address(BACKUP, VIP6) {
            Ok(())
        } else {
            Err(format!("{VIP6} not on the backup's eth0"))
        }
    })
    .unwrap();
    let before = backup_rx(&backup);
    let answered = load.results().iter().flatten().count();
    load.wait_until("requests through the new master", WITHIN, |r| {
        r.iter().flatten().count() >= answered + 10
    })
    .unwrap_or_else(|e| panic!("{e:#}\nbackup log:\n{}", backup.log()));
    let results = load.stop();
    assert_client_seen(&results, CLIENT_IP6);
    assert!(
        backup_rx(&backup) > before,
        "the new master's workers carried the requests"
    );
    let backup_mac = mac_of(&lab, BACKUP);
    let entry = lab
        .neighbour6(Host::Client, VIP6, "eth0")
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        entry.contains(&backup_mac),
        "the client's neighbour entry for {VIP6} moved to the backup ({backup_mac}): {entry}"
    );
    let served = tally(&results);
    println!("failover6: requests per real server: {served:?}");
    drop(primary);
}

#[test]
fn the_director_and_keepalived_hand_an_ipv6_vip_to_each_other() {
    require_root!();
    let lab = Lab::dr(LabOptions {
        ipv6: true,
        ..LabOptions::directors(2, 1)
    });
    let (config, socket) = ha6_config(&lab, PRIMARY, 150);
    let mut director = lab.start_director_waiting_for(PRIMARY, &config, &socket, &[VIP6]);
    wait_for_state(&director, "MASTER");
    // keepalived 2.x, an IPv6 vrrp_instance (VRRPv3 to ff02::12), priority 100, same vrid and
    // VIP: it must stay backup, hearing the director's IPv6 advertisements.
    let mut keepalived = lab.start_keepalived(
        BACKUP,
        &KeepalivedOptions {
            vips: vec![VIP6.into()],
            ..KeepalivedOptions::new(100)
        },
    );
    keepalived
        .wait_for_state(KeepalivedState::Backup, WITHIN)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", keepalived.log()));
    assert_all_ok(&lab.http_get_many(5, &vip6_url()), "through the director");

    // The director stops (priority 0): keepalived takes the VIP.
    director.stop();
    keepalived
        .wait_for_state(KeepalivedState::Master, WITHIN)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", keepalived.log()));
    poll_until("keepalived to hold the VIP", WITHIN, STEP, || {
        if lab.has_address(BACKUP, VIP6) {
            Ok(())
        } else {
            Err(format!("{VIP6} not on {BACKUP}'s eth0"))
        }
    })
    .unwrap();

    // Started again, the director preempts keepalived (150 > 100) and serves.
    let director = lab.start_director_waiting_for(PRIMARY, &config, &socket, &[VIP6]);
    wait_for_state(&director, "MASTER");
    keepalived
        .wait_for_state(KeepalivedState::Backup, WITHIN)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", keepalived.log()));
    assert_all_ok(
        &lab.http_get_many(5, &vip6_url()),
        "through the director again",
    );
}

/// Polling step for the failover's conditions.
const STEP: Duration = Duration::from_millis(20);

/// Frames the director's workers received.
fn backup_rx(director: &DirectorProcess) -> u64 {
    stats::workers_rx_packets(&director.stats())
}
