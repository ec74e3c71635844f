//! End-to-end: the director under more traffic than it can forward.
//!
//! `pktgen send` (an XDP program run with BPF_PROG_RUN in live-frames mode) outruns any AF_XDP
//! forwarder in copy mode several times over. Fed that way over a veth pair of its own, the
//! director must shed the excess where it costs it nothing, at the RX ring (the kernel counts
//! those drops in `xsk_rx_*`), and never take a frame only to drop it at a full TX ring: every
//! frame a worker received leaves, and arrives.
//!
//! A SYN flood of spoofed TEST-NET-2 sources (a raw-socket generator in the client's namespace,
//! a bounded count) into a table smaller than the flood: every real client's request succeeds
//! and a keep-alive connection opened before it carries on, on the same server (issue 16).
//!
//! A real server's connection thresholds (`max_connections`/`min_connections`, `ipvsadm -x/-y`):
//! at its upper one it gets no new connections until it falls below its lower one.

use std::fmt::Write as _;
use std::time::Duration;

use director_lab::{
    pktgen_bin, poll_until, require_root, rs_ip, rs_name, vip_url, ChildGuard, DirectorConfig,
    DirectorProcess, Host, Lab, LabOptions, VIP,
};
use serde_json::Value;

/// The flood's own link: `fl0` in the client's namespace (generator and sink), `fl1` in the
/// director's.
const GENERATOR_SIDE: &str = "fl0";
const DIRECTOR_SIDE: &str = "fl1";
/// Frames the generator sends, flat out (a second or two here).
const FRAMES: u64 = 400_000;
/// Static MACs of the real servers: nothing answers for them, the sink counts by them.
const REAL_SERVER_MACS: [&str; 2] = ["02:00:00:00:01:01", "02:00:00:00:01:02"];

fn mac_of(lab: &Lab, host: Host, interface: &str) -> String {
    lab.exec_ok(
        host,
        &["cat", &format!("/sys/class/net/{interface}/address")],
    )
    .trim()
    .to_owned()
}

/// Waits (bounded) until `log` holds a line containing `marker`.
fn wait_for_line(log: &std::path::Path, marker: &str) {
    poll_until(
        &format!("{marker:?} in {}", log.display()),
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains(marker) {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The JSON document a pktgen command printed after its progress lines.
fn json_in(log: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(log).unwrap();
    let start = text
        .find("\n{")
        .unwrap_or_else(|| panic!("no JSON in {}: {text}", log.display()));
    serde_json::from_str(&text[start + 1..]).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The flood's veth pair, up, with IPv6 off.
fn add_flood_link(lab: &Lab) {
    let director_ns = lab.namespace(Host::Director);
    lab.exec_ok(
        Host::Client,
        &[
            "ip",
            "link",
            "add",
            GENERATOR_SIDE,
            "type",
            "veth",
            "peer",
            "name",
            DIRECTOR_SIDE,
            "netns",
            &director_ns,
        ],
    );
    for (host, interface) in [
        (Host::Client, GENERATOR_SIDE),
        (Host::Director, DIRECTOR_SIDE),
    ] {
        // Nothing but the flood on this link: no IPv6 chatter for the sink to count.
        lab.exec_ok(
            host,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{interface}.disable_ipv6=1"),
            ],
        );
        lab.exec_ok(host, &["ip", "link", "set", interface, "up"]);
    }
    // DR real servers must be on a connected prefix of the director's interface: the real
    // servers' /24 (no prefix route: the lab's own 192.0.2.0/24 route stays on eth0).
    lab.exec_ok(
        Host::Director,
        &[
            "ip",
            "addr",
            "add",
            "192.0.2.250/24",
            "dev",
            DIRECTOR_SIDE,
            "noprefixroute",
        ],
    );
}

/// The director on the flood's link, one DR service over the static-MAC real servers.
fn start_flood_director(lab: &Lab) -> DirectorProcess {
    let mut config = DirectorConfig::dr(lab.stats_socket(), "maglev", &[]);
    config.interfaces = vec![DIRECTOR_SIDE.into()];
    let mut text = config.to_toml();
    for (n, mac) in REAL_SERVER_MACS.iter().enumerate() {
        let _ = write!(
            text,
            "\n[[service.backend]]\naddress = \"192.0.2.{}\"\nmac = \"{mac}\"\n",
            11 + n
        );
    }
    let path = lab.new_file("overload.toml");
    std::fs::write(&path, &text).unwrap();
    lab.start_director_on(Host::Director, &path, &config.stats_socket, false)
}

#[test]
fn an_overloaded_director_drops_at_the_rx_ring_and_forwards_every_frame_it_takes() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    add_flood_link(&lab);
    let director = start_flood_director(&lab);

    let pktgen = pktgen_bin();
    let pktgen = pktgen.to_string_lossy();
    let sink_log = lab.new_file("sink.log");
    let sink = lab.spawn_logged(
        Host::Client,
        &[
            &pktgen,
            "sink",
            GENERATOR_SIDE,
            "--duration",
            "60s",
            "--json",
        ],
        &sink_log,
    );
    wait_for_line(&sink_log, "ready on");

    let director_mac = mac_of(&lab, Host::Director, DIRECTOR_SIDE);
    let sent = lab.exec_ok(
        Host::Client,
        &[
            &pktgen,
            "send",
            GENERATOR_SIDE,
            "--dst-mac",
            &director_mac,
            "--dst-ip",
            VIP,
            "--dst-port",
            "80",
            "--kind",
            "ack",
            "--flows",
            "1000",
            "--count",
            &FRAMES.to_string(),
            "--duration",
            "20s",
            "--json",
        ],
    );
    let sent: Value = serde_json::from_str(&sent).unwrap_or_else(|e| panic!("{e}: {sent}"));
    let sent_frames = sent["frames"].as_u64().unwrap();
    assert_eq!(sent_frames, FRAMES, "{sent}");

    let settled = settled_worker(&director);
    stop_sink(sink);
    let counted = json_in(&sink_log);
    let arrived: u64 = counted["by_dst_mac"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| REAL_SERVER_MACS.contains(&entry["mac"].as_str().unwrap()))
        .map(|entry| entry["packets"].as_u64().unwrap())
        .sum();

    let received = settled["rx_packets"].as_u64().unwrap();
    let transmitted = settled["tx_packets"].as_u64().unwrap();
    let report = format!("sent {sent_frames}, worker {settled:#}, sink {counted:#}");
    // It was overloaded: the kernel shed frames at the RX ring...
    assert!(received < sent_frames, "{report}");
    assert!(kernel_dropped(&settled) > 0, "{report}");
    // ...and what the worker took, it forwarded: nothing dropped after processing.
    assert_eq!(settled["drops"]["tx_ring_full"], 0, "{report}");
    assert_eq!(transmitted, received, "{report}");
    // Every frame it transmitted arrived, spread over both real servers.
    assert_eq!(arrived, transmitted, "{report}");
    for mac in REAL_SERVER_MACS {
        let share = counted["by_dst_mac"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["mac"] == mac)
            .and_then(|entry| entry["packets"].as_u64())
            .unwrap_or(0);
        assert!(share > transmitted / 4, "{mac} got {share}: {report}");
    }
}

/// The worker's stats once its counters have stopped moving (the rings drained) and its
/// kernel socket statistics, published with housekeeping once a second, show frames the kernel
/// shed.
fn settled_worker(director: &DirectorProcess) -> Value {
    let mut previous = None;
    poll_until(
        "the worker to drain its rings and publish the kernel's drops",
        Duration::from_secs(10),
        Duration::from_millis(300),
        || {
            let worker = director.stats()["workers"][0].clone();
            let key = (worker["rx_packets"].as_u64(), worker["tx_packets"].as_u64());
            let still = previous == Some(key);
            previous = Some(key);
            if still && kernel_dropped(&worker) > 0 {
                Ok(worker)
            } else {
                Err(format!("{worker:#}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Frames the kernel dropped at the worker's RX ring (ring full, or no fill buffer).
fn kernel_dropped(worker: &Value) -> u64 {
    worker["counters"]["xsk_rx_dropped"].as_u64().unwrap_or(0)
        + worker["counters"]["xsk_rx_ring_full"].as_u64().unwrap_or(0)
}

/// Stops the sink (SIGINT: it prints its totals) and waits for it.
fn stop_sink(mut sink: ChildGuard) {
    assert!(sink.signal(libc::SIGINT), "signalling {}", sink.describe());
    let status = sink
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap_or_else(|| panic!("{} ignored SIGINT", sink.describe()));
    assert!(status.success(), "{}: {status}", sink.describe());
}

/// The SYN flood generator: `COUNT` TCP SYNs to VIP:PORT from random addresses of
/// 198.51.100.0/24 (TEST-NET-2) and random ports, written to an AF_PACKET socket on IFACE as
/// fast as it goes; prints how many it sent. Seeded, so every run sends the same flood.
const SYN_FLOOD_PY: &str = r#"
import random, socket, struct, sys

iface, dst_mac, vip, port, count = sys.argv[1:6]
dst_mac = bytes.fromhex(dst_mac.replace(":", ""))
vip, port, count = socket.inet_aton(vip), int(port), int(count)
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((iface, 0))
src_mac = sock.getsockname()[4]

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

rng = random.Random(16)
for n in range(count):
    src = bytes([198, 51, 100, rng.randint(1, 254)])
    tcp = struct.pack("!HHIIBBHHH", rng.randint(1024, 65535), port, rng.getrandbits(32), 0,
                      5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + vip + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), n & 0xFFFF, 0x4000, 64, 6, 0,
                     src, vip)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    sock.send(dst_mac + src_mac + b"\x08\x00" + ip + tcp)
print(count)
"#;

/// Spoofed SYNs in the flood: nearly twice the table, four times its embryonic share.
const FLOOD_SYNS: u64 = 60_000;
/// The director's table: half of it for embryonic ones, which the flood cycles in about half a
/// second at the generator's rate: longer than a real client's handshake, retransmissions included.
const FLOOD_TABLE: u64 = 32_768;

/// The lab and a director with an rr DR service over its real servers, a `table`-entry
/// connection table (half for embryonic entries), and established flows that time out before
/// embryonic ones (30 s against 60): evicting the entry nearest its deadline, as before issue
/// 16, would take an idle established flow's first.
fn flood_lab(table: u64) -> (Lab, DirectorProcess) {
    let lab = Lab::dr(LabOptions::default());
    let config = lab.dr_config("rr");
    let text = config
        .to_toml()
        .replacen(
            "[director]\n",
            &format!("[director]\nmax_connections = {table}\nembryonic_share = 0.5\n"),
            1,
        )
        .replacen(
            "\n[[service]]",
            "\n[director.timeouts]\ntcp_established = \"30s\"\n\n[[service]]",
            1,
        );
    let path = lab.write_config_text(&text);
    let director = lab.start_director_with(&path, &config.stats_socket);
    (lab, director)
}

/// Starts [`SYN_FLOOD_PY`] in the client's namespace: `count` spoofed SYNs to the VIP.
fn spawn_flood(lab: &Lab, count: u64) -> (ChildGuard, std::path::PathBuf) {
    let script = lab.new_file("synflood.py");
    std::fs::write(&script, SYN_FLOOD_PY).unwrap();
    let director_mac = mac_of(lab, Host::Director, "eth0");
    let log = lab.new_file("synflood.log");
    let flood = lab.spawn_logged(
        Host::Client,
        &[
            "python3",
            &script.to_string_lossy(),
            "eth0",
            &director_mac,
            VIP,
            "80",
            &count.to_string(),
        ],
        &log,
    );
    (flood, log)
}

/// Waits (bounded) for the flood to end, checking it succeeded.
fn finish_flood(mut flood: ChildGuard, log: &std::path::Path) {
    let status = flood
        .wait_timeout(Duration::from_secs(600))
        .unwrap()
        .unwrap_or_else(|| panic!("the flood did not end: {}", flood.describe()));
    let output = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "the flood generator failed: {output}");
}

/// New connections from the client, five at a time, until the flood ends (at most `most`):
/// (succeeded, failures).
fn requests_during(lab: &Lab, flood: &mut ChildGuard, most: usize) -> (usize, Vec<String>) {
    let (mut succeeded, mut failures) = (0, Vec::new());
    while flood.try_wait().unwrap().is_none() && succeeded + failures.len() < most {
        for result in lab.http_get_many(5, &vip_url()) {
            match result {
                Ok(_) => succeeded += 1,
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
    }
    (succeeded, failures)
}

#[test]
fn a_syn_flood_spares_real_clients_and_established_flows() {
    require_root!();
    let (lab, director) = flood_lab(FLOOD_TABLE);
    // An established flow from before the flood: rr would give a lost entry's next segment to
    // another server, which resets it.
    let mut keep_alive = lab.keep_alive(&vip_url(), None);
    let before = keep_alive
        .get()
        .expect("the keep-alive connection before the flood");

    let (mut flood, log) = spawn_flood(&lab, FLOOD_SYNS);
    let (succeeded, failures) = requests_during(&lab, &mut flood, 500);
    finish_flood(flood, &log);
    let after = keep_alive
        .get()
        .expect("the keep-alive connection after the flood");

    let stats = director.stats();
    let worker = &stats["workers"][0];
    let report = format!("{succeeded} requests during the flood, worker {worker:#}");
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}; {report}",
        failures.len()
    );
    assert!(
        succeeded >= 5,
        "the flood ended before any request: {report}"
    );
    assert_eq!(before.server, after.server, "{report}");
    // The flood reached the director and replaced embryonic entries by the thousand. Not all
    // of its SYNs arrive on a loaded machine (seen: 18141 replaced of 60000 sent, with the
    // generator and the director sharing two cores with other tests), so the bound is half of
    // the embryonic share, not a share of what was sent.
    let quota = worker["counters"]["conn_embryonic_quota"].as_u64().unwrap();
    assert!(quota > FLOOD_TABLE / 4, "{report}");
    println!("SYN flood: {report}");
}

#[test]
fn a_real_server_at_its_upper_threshold_gets_no_new_connections_until_below_its_lower() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let config = lab.dr_config("rr");
    let first = format!("address = \"{}\"\n", rs_ip(1));
    // Closed connections count until their entries expire: make that a second.
    let text = config
        .to_toml()
        .replacen(
            &first,
            &format!("{first}max_connections = 3\nmin_connections = 2\n"),
            1,
        )
        .replacen(
            "\n[[service]]",
            "\n[director.timeouts]\ntcp_fin_wait = \"1s\"\ntcp_close = \"1s\"\n\n[[service]]",
            1,
        );
    let path = lab.write_config_text(&text);
    let director = lab.start_director_with(&path, &config.stats_socket);
    let connect = || {
        let mut client = lab.keep_alive(&vip_url(), None);
        let server = client.get().expect("a keep-alive connection").server;
        (client, server)
    };
    let on_first = |open: &[(_, String)]| open.iter().filter(|(_, s)| *s == rs_name(1)).count();

    // Keep-alive connections hold their entries: rs1 takes 3, then none.
    let mut open: Vec<_> = (0..12).map(|_| connect()).collect();
    let servers: Vec<&String> = open.iter().map(|(_, server)| server).collect();
    assert_eq!(on_first(&open), 3, "{servers:?}");
    for (client, server) in &mut open {
        let again = client.get().expect("an established connection carries on");
        assert_eq!(&again.server, server);
    }
    // One of rs1's closes: 2 left, not below 2, so still nothing new for it.
    let index = open.iter().position(|(_, s)| *s == rs_name(1)).unwrap();
    drop(open.remove(index));
    poll_until(
        "rs1's closed connection to leave the table",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let stats = director.stats();
            let rs1 = &stats["services"][0]["backends"][0];
            let count = rs1["active_connections"].as_u64().unwrap_or(0)
                + rs1["inactive_connections"].as_u64().unwrap_or(0);
            if count == 2 {
                Ok(())
            } else {
                Err(format!("{rs1}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let more: Vec<_> = (0..6).map(|_| connect()).collect();
    assert_eq!(
        on_first(&more),
        0,
        "rs1 at 2 connections, its lower threshold"
    );
    open.extend(more);
    // Another closes: 1, below 2: rs1 takes new connections again, up to 3.
    let index = open.iter().position(|(_, s)| *s == rs_name(1)).unwrap();
    drop(open.remove(index));
    let mut again = Vec::new();
    poll_until(
        "a new connection to reach rs1 again",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            again.push(connect());
            if on_first(&again) > 0 {
                Ok(())
            } else {
                Err(format!("{} connections, none on rs1", again.len()))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    again.extend((0..6).map(|_| connect()));
    assert_eq!(on_first(&again), 2, "rs1 back up to 3 and no further");
}

/// `name` from the environment as a number, else `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |text| {
        text.parse().unwrap_or_else(|e| panic!("{name}: {e}"))
    })
}

/// The resident set of process `pid`, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}: {status}"))
}

/// The SYN flood benchmark (`benches/synflood.sh`, figures in `benches/README.md`): real
/// clients' success rate under rr while spoofed SYNs flood a smaller table, established flows
/// lost, and the director's RSS before and after. Reports; asserts nothing beyond the lab.
#[test]
#[ignore = "a benchmark: run by benches/synflood.sh"]
fn synflood_bench() {
    require_root!();
    let syns = env_u64("SYNFLOOD_SYNS", 300_000);
    let table = env_u64("SYNFLOOD_TABLE", 4096);
    let flows = env_u64("SYNFLOOD_ESTABLISHED", 20);
    let (lab, director) = flood_lab(table);
    let mut established: Vec<_> = (0..flows)
        .map(|_| {
            let mut client = lab.keep_alive(&vip_url(), None);
            let server = client.get().expect("an established flow").server;
            (client, server)
        })
        .collect();
    let rss_before = rss_kib(director.pid());
    let rx_before = director.stats()["workers"][0]["rx_packets"]
        .as_u64()
        .unwrap_or(0);
    let started = std::time::Instant::now();
    let (mut flood, log) = spawn_flood(&lab, syns);
    let (succeeded, failures) = requests_during(&lab, &mut flood, usize::MAX);
    finish_flood(flood, &log);
    let seconds = started.elapsed().as_secs_f64();
    let lost = established
        .iter_mut()
        .map(|(client, server)| client.get().map_or(true, |r| r.server != *server))
        .filter(|&lost| lost)
        .count();
    let rss_after = rss_kib(director.pid());
    let stats = director.stats();
    let worker = &stats["workers"][0];
    let counter = |name: &str| worker["counters"][name].as_u64().unwrap_or(0);
    let requests = succeeded + failures.len();
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let (rate, success) = (
        syns as f64 / seconds,
        100.0 * succeeded as f64 / requests.max(1) as f64,
    );
    println!(
        "synflood: {syns} spoofed SYNs in {seconds:.1} s ({rate:.0}/s) into a {table}-entry \
         table (rr, 3 real servers); worker rx {} frames; real clients {succeeded}/{requests} \
         HTTP requests succeeded ({success:.1}%); established flows lost {lost}/{flows}; \
         conn_embryonic_quota {}, conn_table_full_syn {}, connections_evicted {}; director \
         RSS {rss_before} KiB before, {rss_after} KiB after; failures: {:?}",
        worker["rx_packets"].as_u64().unwrap_or(0) - rx_before,
        counter("conn_embryonic_quota"),
        worker["drops"]["conn_table_full_syn"].as_u64().unwrap_or(0),
        counter("connections_evicted"),
        &failures[..failures.len().min(3)],
    );
}
