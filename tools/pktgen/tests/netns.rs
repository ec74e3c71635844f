//! The built `pktgen` binary end to end in throwaway network namespaces (one per test, named
//! after the process, deleted even when a test fails), each with a veth pair `va`/`vb` and
//! IPv6 off so that nothing but pktgen's frames crosses it. TEST-NET addresses only.
//!
//! - `send` on `va` into `sink` on `vb`, paced: the sink counts exactly what was sent, split
//!   correctly by destination MAC, with latency for the stamped frames; the JSON documents have
//!   their documented shape.
//! - `hairpin` on `vb`, `sink` on `va`: every frame comes back with its MACs swapped.
//! - `macswap` (the director's AF_XDP socket and classifier) on `vb`: every frame of its service
//!   comes back; SIGINT stops it and it reports.
//!
//! After each, no XDP program is left on either interface. Needs root; skipped otherwise.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pktgen");
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A network namespace with a veth pair `va`/`vb` up and IPv6 off, deleted on drop (panics
/// included), with everything in it.
struct Lab {
    name: String,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let name = format!("pktg{}{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let lab = Lab { name };
        // No router solicitations or MLD reports: the sinks must count only pktgen's frames.
        for key in [
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ] {
            lab.exec(&["sysctl", "-qw", key]);
        }
        lab.exec(&[
            "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb",
        ]);
        for iface in ["va", "vb", "lo"] {
            lab.exec(&["ip", "link", "set", iface, "up"]);
        }
        lab
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `pktgen args` in the namespace to completion.
    fn pktgen(&self, args: &[&str]) -> Output {
        let mut full = vec![BIN];
        full.extend_from_slice(args);
        self.exec(&full)
    }

    /// Starts `pktgen args` in the namespace and waits for its "ready" line.
    fn start(&self, args: &[&str]) -> Background {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.name.as_str(), BIN])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting pktgen");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains(": ready on ") {
                    let _ = ready_tx.send(());
                }
                lines.push(line);
            }
            lines.join("\n")
        });
        let mut background = Background {
            child: Some(child),
            reader: Some(reader),
        };
        if ready_rx.recv_timeout(READY_TIMEOUT).is_err() {
            let (_, stderr) = background.finish();
            panic!("pktgen {args:?} never got ready: {stderr}");
        }
        background
    }

    /// The MAC address of `iface` in the namespace.
    fn mac(&self, iface: &str) -> String {
        let output = self.exec(&["cat", &format!("/sys/class/net/{iface}/address")]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Panics if an XDP program is still attached to `va` or `vb`.
    fn assert_no_xdp(&self) {
        for iface in ["va", "vb"] {
            let output = self.exec(&["ip", "-d", "link", "show", iface]);
            let details = String::from_utf8_lossy(&output.stdout);
            assert!(
                !details.contains("prog/xdp"),
                "{iface} still has an XDP program: {details}"
            );
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A pktgen command running in the background; killed on drop if still running.
struct Background {
    child: Option<Child>,
    reader: Option<thread::JoinHandle<String>>,
}

impl Background {
    /// Sends SIGINT, as Ctrl-C would.
    fn interrupt(&self) {
        let child = self.child.as_ref().expect("running");
        // `ip netns exec` execs the command, so the child's pid is pktgen's.
        // SAFETY: kill(2) on our own child's pid.
        let result = unsafe { libc::kill(child.id().cast_signed(), libc::SIGINT) };
        assert_eq!(result, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the command to exit; returns its stdout and stderr.
    fn finish(&mut self) -> (String, String) {
        let child = self.child.take().expect("running");
        let output = child.wait_with_output().expect("waiting for pktgen");
        let stderr = self
            .reader
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default();
        assert!(output.status.success(), "pktgen failed: {stderr}");
        (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
    }

    /// Waits for the command to exit and parses its JSON output.
    fn json(&mut self) -> Value {
        let (stdout, stderr) = self.finish();
        serde_json::from_str(&stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}\nstderr: {stderr}"))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn json_of(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

/// Frames per destination MAC in a sink report.
fn by_mac(report: &Value) -> Vec<(String, u64)> {
    report["by_dst_mac"]
        .as_array()
        .expect("by_dst_mac is an array")
        .iter()
        .map(|entry| {
            (
                entry["mac"].as_str().expect("mac").to_owned(),
                entry["packets"].as_u64().expect("packets"),
            )
        })
        .collect()
}

/// Checks that `report` has exactly `keys`.
#[track_caller]
fn assert_keys(report: &Value, keys: &[&str]) {
    let mut found: Vec<&str> = report
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    found.sort_unstable();
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    assert_eq!(found, keys);
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario with both JSON shapes spelled out"
)]
fn sink_counts_exactly_what_send_sent_by_destination_mac() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = Lab::new("s");
    let mut sink = lab.start(&[
        "sink",
        "vb",
        "--count",
        "30000",
        "--duration",
        "20s",
        "--latency",
        "--json",
    ]);
    let udp = json_of(&lab.pktgen(&[
        "send",
        "va",
        "--dst-mac",
        "02:00:00:00:01:01",
        "--dst-ip",
        "192.0.2.10",
        "--dst-port",
        "53",
        "--src-net",
        "198.51.100.0/28",
        "--flows",
        "16",
        "--count",
        "20000",
        "--rate",
        "200k",
        "--json",
    ]));
    let ack = json_of(&lab.pktgen(&[
        "send",
        "va",
        "--dst-mac",
        "02:00:00:00:01:02",
        "--dst-ip",
        "192.0.2.10",
        "--dst-port",
        "80",
        "--kind",
        "ack",
        "--size",
        "128",
        "--count",
        "10000",
        "--rate",
        "200k",
        "--latency",
        "--json",
    ]));
    let report = sink.json();

    assert_keys(
        &udp,
        &[
            "interface",
            "kind",
            "size",
            "flows",
            "frames",
            "elapsed_s",
            "pps",
            "rate_target_pps",
            "latency_stamp",
            "stopped_by",
        ],
    );
    assert_eq!(udp["frames"], 20000);
    assert_eq!(udp["stopped_by"], "count");
    assert_eq!(udp["kind"], "udp");
    assert_eq!(udp["rate_target_pps"], 200_000);
    assert_eq!(ack["frames"], 10000);
    assert_eq!(ack["kind"], "tcp_ack");
    assert_eq!(ack["latency_stamp"], true);

    assert_keys(
        &report,
        &[
            "interface",
            "elapsed_s",
            "packets",
            "bytes",
            "per_second_pps",
            "peak_pps",
            "by_dst_mac",
            "mac_overflow",
            "stamped",
            "latency",
            "stopped_by",
        ],
    );
    assert_eq!(report["packets"], 30000, "{report}");
    assert_eq!(report["bytes"], 20000 * 64 + 10000 * 128);
    assert_eq!(report["stopped_by"], "count");
    assert_eq!(
        by_mac(&report),
        [
            ("02:00:00:00:01:01".to_owned(), 20000),
            ("02:00:00:00:01:02".to_owned(), 10000)
        ]
    );
    assert_eq!(report["stamped"], 10000);
    let latency = &report["latency"];
    assert_keys(
        latency,
        &["samples", "min_ns", "p50_ns", "p99_ns", "p999_ns", "max_ns"],
    );
    assert_eq!(latency["samples"], 10000);
    let p50 = latency["p50_ns"].as_u64().unwrap();
    let p99 = latency["p99_ns"].as_u64().unwrap();
    assert!(p50 > 0 && p50 <= p99, "{latency}");
    lab.assert_no_xdp();
}

#[test]
fn hairpin_sends_every_frame_back_with_its_macs_swapped() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = Lab::new("h");
    let mut hairpin = lab.start(&["hairpin", "vb", "--duration", "30s", "--json"]);
    let mut sink = lab.start(&[
        "sink",
        "va",
        "--count",
        "20000",
        "--duration",
        "20s",
        "--json",
    ]);
    lab.pktgen(&[
        "send",
        "va",
        "--dst-mac",
        "02:00:00:00:00:0a",
        "--dst-ip",
        "192.0.2.10",
        "--dst-port",
        "80",
        "--kind",
        "syn",
        "--count",
        "20000",
        "--rate",
        "200k",
    ]);
    let report = sink.json();
    hairpin.interrupt();
    let hairpinned = hairpin.json();

    // Back to the sender's own MAC, the template's source.
    assert_eq!(by_mac(&report), [(lab.mac("va"), 20000)], "{report}");
    assert_eq!(hairpinned["frames"], 20000);
    assert_eq!(hairpinned["stopped_by"], "signal");
    lab.assert_no_xdp();
}

#[test]
fn macswap_returns_every_frame_of_its_service_and_stops_on_sigint() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = Lab::new("m");
    let mut macswap = lab.start(&[
        "macswap",
        "vb",
        "--vip",
        "192.0.2.10",
        "--port",
        "80",
        "--protocol",
        "tcp",
        "--duration",
        "30s",
        "--json",
    ]);
    let mut sink = lab.start(&[
        "sink",
        "va",
        "--count",
        "20000",
        "--duration",
        "20s",
        "--json",
    ]);
    lab.pktgen(&[
        "send",
        "va",
        "--dst-mac",
        "02:00:00:00:00:0a",
        "--dst-ip",
        "192.0.2.10",
        "--dst-port",
        "80",
        "--kind",
        "ack",
        "--flows",
        "100",
        "--count",
        "20000",
        "--rate",
        "50k",
    ]);
    let report = sink.json();
    macswap.interrupt();
    let forwarded = macswap.json();

    assert_eq!(
        by_mac(&report),
        [(lab.mac("va"), 20000)],
        "{report}\n{forwarded}"
    );
    assert_eq!(forwarded["received"], 20000, "{forwarded}");
    assert_eq!(forwarded["transmitted"], 20000, "{forwarded}");
    assert_eq!(forwarded["stopped_by"], "signal");
    lab.assert_no_xdp();
}
