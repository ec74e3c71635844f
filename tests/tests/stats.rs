//! End-to-end: the stats socket, `lbstat` and `/metrics` against a director in the lab.
//!
//! - Exactly N connections through the VIP are counted exactly, packets_in covers what the
//!   client sent, and the table, `--json`, `--prometheus` and `/metrics` agree.
//! - A user without rights cannot change the director but can read its stats.
//! - Garbage and oversized requests get error replies and the director keeps forwarding.
//! - `lbstat --watch` survives the director restarting.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use director_lab::stats::{self, Backend};
use director_lab::{
    assert_all_ok, director_bin, lbstat_bin, poll_until, require_root, rs_ip, run_with_timeout,
    vip_url, ChildGuard, DirectorProcess, Host, Lab, LabOptions, DIRECTOR_IP,
};
use serde_json::Value;

/// Connections the counting test makes.
const CONNECTIONS: usize = 25;
/// Where the director serves /metrics in the counting test (its own lab address).
const METRICS_PORT: u16 = 9100;

/// Starts a director on the lab's rr config with `extra` lines added to `[director]`.
fn start_with(lab: &Lab, extra: &str) -> (DirectorProcess, PathBuf) {
    let config = lab.dr_config("rr");
    let text = config
        .to_toml()
        .replacen("[director]\n", &format!("[director]\n{extra}"), 1);
    let path = lab.write_config_text(&text);
    (lab.start_director_with(&path, &config.stats_socket), path)
}

fn client_tx_packets(lab: &Lab) -> u64 {
    lab.exec_ok(
        Host::Client,
        &["cat", "/sys/class/net/eth0/statistics/tx_packets"],
    )
    .trim()
    .parse()
    .unwrap()
}

fn lbstat(args: &[&str], socket: &Path) -> String {
    let out = run_with_timeout(
        Command::new(lbstat_bin())
            .args(args)
            .arg("--socket")
            .arg(socket),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(out.status.success(), "lbstat {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Sums of the samples of `metric` in Prometheus text.
fn prometheus_sum(text: &str, metric: &str) -> u64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|line| {
            let value = line.rsplit(' ').next().unwrap();
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("bad sample: {line}"))
        })
        .sum()
}

/// The service line of lbstat's table: (Conns, InPkts, InBytes).
fn table_totals(table: &str) -> (u64, u64, u64) {
    let line = table
        .lines()
        .find(|line| line.starts_with("TCP "))
        .unwrap_or_else(|| panic!("no service line in\n{table}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    // TCP VIP:port scheduler fwd name ActConn InActConn Conns InPkts InBytes Conn/s Pkt/s Bytes/s
    assert_eq!(fields.len(), 13, "{line}");
    let number = |i: usize| fields[i].parse::<u64>().unwrap();
    (number(7), number(8), number(9))
}

#[test]
fn counts_exact_connections_and_all_outputs_agree() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let (director, _) = start_with(
        &lab,
        &format!("metrics = \"{DIRECTOR_IP}:{METRICS_PORT}\"\n"),
    );
    let sent_before = client_tx_packets(&lab);

    let results = lab.http_get_many(CONNECTIONS, &vip_url());
    assert_all_ok(&results, "GETs through the VIP");
    let sent = client_tx_packets(&lab) - sent_before;

    let stats = director.settled_stats(CONNECTIONS as u64);
    let backends = stats::backends(&stats);
    let connections: u64 = backends.iter().map(|b| b.connections_total).sum();
    let packets_in: u64 = backends.iter().map(|b| b.packets_in).sum();
    let bytes_in: u64 = backends.iter().map(|b| b.bytes_in).sum();
    println!("client sent {sent} frames; director: {connections} connections, {packets_in} frames");
    assert_eq!(connections, CONNECTIONS as u64, "{stats:#}");
    // Every connection is at least SYN, ACK + request, FIN (and its ACK).
    assert!(packets_in >= 3 * CONNECTIONS as u64, "{stats:#}");
    // Everything the client sent went through the director, apart from a few ARP frames; and
    // the director forwarded nothing the client did not send.
    assert!(
        packets_in <= sent && sent - packets_in <= 8,
        "client sent {sent} frames, director forwarded {packets_in}: {stats:#}"
    );
    for service in stats["services"].as_array().unwrap() {
        for backend in service["backends"].as_array().unwrap() {
            assert_eq!(backend["health"], "up", "{backend}");
            assert_eq!(backend["packets_out"], 0, "{backend}");
        }
    }

    // The table, --json, --prometheus and /metrics agree.
    let socket = director.stats_socket();
    let table = lbstat(&[], socket);
    assert_eq!(
        table_totals(&table),
        (connections, packets_in, bytes_in),
        "\n{table}"
    );
    let json: Value = serde_json::from_str(&lbstat(&["--json"], socket)).unwrap();
    let from_json: Vec<Backend> = stats::backends(&json);
    assert_eq!(
        from_json.iter().map(|b| b.connections_total).sum::<u64>(),
        connections
    );
    let prometheus = lbstat(&["--prometheus"], socket);
    let metrics = lab.exec_ok(
        Host::Client,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{DIRECTOR_IP}:{METRICS_PORT}/metrics"),
        ],
    );
    for text in [&prometheus, &metrics] {
        assert_eq!(
            prometheus_sum(text, "director_backend_connections_total"),
            connections,
            "\n{text}"
        );
        assert_eq!(
            prometheus_sum(text, "director_backend_packets_in_total"),
            packets_in
        );
        assert_eq!(
            prometheus_sum(text, "director_backend_bytes_in_total"),
            bytes_in
        );
        assert_eq!(prometheus_sum(text, "director_backend_up"), 3);
        assert_eq!(
            prometheus_sum(text, "director_worker_rx_packets_total"),
            stats::workers_rx_packets(&json)
        );
    }
    let not_found = lab.exec_ok(
        Host::Client,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            &format!("http://{DIRECTOR_IP}:{METRICS_PORT}/"),
        ],
    );
    assert_eq!(not_found, "404");

    // Rates: connections made now show up in the 5 s rate at the next sample. All of this may
    // run within the director's first second, which counts because it samples once at start.
    assert_all_ok(&lab.http_get_many(10, &vip_url()), "more GETs");
    let rate = director
        .wait_for_stats(
            "a non-zero 5 s connection rate",
            Duration::from_secs(4),
            |s| {
                let rate = s["services"][0]["rate_5s"]["connections_per_second"].as_f64()?;
                (rate > 0.0).then_some(rate)
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    // At most every connection made so far, within a window of at least a second.
    assert!(rate <= 35.0, "{rate}");
}

#[test]
fn unprivileged_user_reads_stats_but_cannot_mutate() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(2));
    let (director, _) = start_with(&lab, "stats_socket_mode = \"0666\"\n");
    let socket = director.stats_socket().to_string_lossy().into_owned();
    let as_nobody = |program: &Path, args: &[&str]| {
        let out = run_with_timeout(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(program)
                .args(args)
                .args(["--socket", &socket]),
            Duration::from_secs(10),
        )
        .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let rs1 = rs_ip(1);
    for args in [
        vec!["backend", "drain", "web", rs1.as_str()],
        vec!["backend", "disable", "web", rs1.as_str()],
        vec!["reload"],
    ] {
        let (ok, output) = as_nobody(&director_bin(), &args);
        assert!(!ok, "{args:?} as nobody succeeded: {output}");
        assert!(
            output.contains("permission denied: uid 65534"),
            "{args:?}: {output}"
        );
    }
    let (ok, output) = as_nobody(&lbstat_bin(), &["--json"]);
    assert!(ok, "lbstat as nobody: {output}");
    let stats: Value = serde_json::from_str(&output).unwrap();
    let backend = stats::backend(&stats, "web", &rs1).unwrap();
    assert_eq!(backend.weight, 1, "nothing changed: {stats:#}");
    assert!(director.log().contains("control request refused"));
    // Root still may.
    director.backend_drain("web", &rs1).assert_ok();
    assert_eq!(
        stats::backend(&director.stats(), "web", &rs1)
            .unwrap()
            .weight,
        0
    );
}

/// Sends raw bytes on a fresh connection and returns the reply line.
fn raw_exchange(socket: &Path, bytes: &[u8]) -> Value {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // An oversized request may be answered (and the connection closed) before all of it is
    // written; that write error is expected.
    let _ = stream.write_all(bytes);
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn garbage_on_the_socket_gets_errors_and_forwarding_continues() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(2));
    let (director, _) = start_with(&lab, "");
    let socket = director.stats_socket();
    let garbage: [(&[u8], &str); 4] = [
        (b"this is not json\n", "bad request"),
        (b"{\"request\":\"self_destruct\"}\n", "bad request"),
        (b"\xff\xfe\x00\x01\n", "bad request"),
        (b"[1,2,3]\n", "bad request"),
    ];
    for (bytes, expected) in garbage {
        let reply = raw_exchange(socket, bytes);
        assert_eq!(reply["reply"], "error", "{reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(expected),
            "{reply}"
        );
    }
    let oversized = vec![b'x'; 200 * 1024];
    let reply = raw_exchange(socket, &oversized);
    assert_eq!(reply["reply"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("longer than"),
        "{reply}"
    );
    // A client that connects and says nothing does not block others.
    let mut silent = UnixStream::connect(socket).unwrap();
    // And the director still forwards and answers.
    let results = lab.http_get_many(10, &vip_url());
    assert_all_ok(&results, "GETs through the VIP");
    let stats = director.settled_stats(10);
    let connections: u64 = stats::backends(&stats)
        .iter()
        .map(|b| b.connections_total)
        .sum();
    assert_eq!(connections, 10, "{stats:#}");
    let _ = silent.write_all(b"{\"request\":\"stats\"}\n");
    let mut reply = String::new();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = BufReader::new(&mut silent).read_line(&mut reply);
    assert!(reply.contains("\"reply\":\"stats\""), "{reply}");
}

#[test]
fn lbstat_watch_survives_a_director_restart() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    let (mut director, config) = start_with(&lab, "");
    let socket = director.stats_socket().to_path_buf();
    let mut command = Command::new(lbstat_bin());
    command
        .args(["--watch", "0.2", "--count", "100000", "--socket"])
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watch = ChildGuard::spawn(command).unwrap();
    let mut stdout = watch.take_stdout().unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let reader = std::thread::spawn({
        let output = Arc::clone(&output);
        move || {
            let mut chunk = [0u8; 4096];
            while let Ok(read) = stdout.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                output
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..read]));
            }
        }
    });
    let frames = |output: &Arc<Mutex<String>>| -> Vec<String> {
        output
            .lock()
            .unwrap()
            .split("\x1b[2J")
            .skip(1)
            .map(str::to_owned)
            .collect()
    };
    let wait_for_frame = |what: &str, after: usize, needle: &str| -> usize {
        poll_until(
            what,
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                let frames = frames(&output);
                frames
                    .iter()
                    .enumerate()
                    .skip(after)
                    .find(|(_, frame)| frame.contains(needle))
                    .map(|(index, _)| index)
                    .ok_or_else(|| format!("{} frames so far", frames.len()))
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{:?}", frames(&output).last()))
    };
    let up = wait_for_frame("a frame with the table", 0, "TCP  192.0.2.10:80");
    director.stop();
    let down = wait_for_frame(
        "a frame while the director is down",
        up,
        "waiting for director at",
    );
    assert!(watch.try_wait().unwrap().is_none(), "lbstat --watch exited");
    let restarted = lab.start_director_with(&config, &socket);
    let back = wait_for_frame("a frame after the restart", down, "TCP  192.0.2.10:80");
    assert!(back > down && down > up);
    assert!(watch.try_wait().unwrap().is_none(), "lbstat --watch exited");
    drop(restarted);
    drop(watch);
    let _ = reader.join();
}
