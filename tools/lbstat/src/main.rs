//! `lbstat`: shows a running director's counters, `ipvsadm -L --stats` style.
//!
//! It asks the director's stats socket for `{"request":"stats"}` and prints services with their
//! real servers (weight, health, connections, totals and the last second's rates; under a
//! health-checked server, its check counters), then
//! per-worker counters (non-zero drops and counters only) and the XDP classifier's counters.
//! `--json` prints the raw `Stats` document instead, for scripts; `--prometheus` the Prometheus
//! text format. `--watch SECONDS` redraws the table every SECONDS until interrupted (or `--count`
//! frames), and keeps waiting while the director is down or restarting.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use director_proto::{Reply, Request, Stats};

/// Width of the text before the counter columns, shared by service and backend lines.
const PREFIX_WIDTH: usize = 58;
/// Clears the terminal and puts the cursor top left, as `watch` does.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Shows a running director's services, real servers and counters.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The director's stats socket.
    #[arg(long, default_value = director_proto::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the stats document as JSON instead of a table.
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Print the counters in the Prometheus text format (0.0.4) instead of a table.
    #[arg(long)]
    prometheus: bool,
    /// Redraw the table every SECONDS (fractions allowed) until interrupted; while the director
    /// is unreachable, say so and keep trying.
    #[arg(long, value_name = "SECONDS", conflicts_with_all = ["json", "prometheus"])]
    watch: Option<f64>,
    /// With --watch: stop after this many frames.
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lbstat: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if let Some(seconds) = args.watch {
        return watch(args, seconds);
    }
    let stats = fetch(args)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &stats).context("write JSON")?;
        writeln!(stdout)?;
    } else if args.prometheus {
        stdout.write_all(director_proto::prometheus(&stats).as_bytes())?;
    } else {
        stdout.write_all(render(&stats).as_bytes())?;
    }
    Ok(())
}

/// The live view: a frame every `seconds`, each a cleared screen with the table, or a line
/// saying the director cannot be reached (it may be restarting), until `--count` frames.
fn watch(args: &Args, seconds: f64) -> Result<()> {
    if !(0.1..=86_400.0).contains(&seconds) {
        bail!("--watch {seconds}: expected a period of 0.1 to 86400 seconds");
    }
    let period = Duration::from_secs_f64(seconds);
    let mut frames = 0u64;
    loop {
        let started = Instant::now();
        let frame = match fetch(args) {
            Ok(stats) => render(&stats),
            Err(error) => format!(
                "waiting for director at {}... ({error:#})\n",
                args.socket.display()
            ),
        };
        let mut stdout = std::io::stdout().lock();
        write!(
            stdout,
            "{CLEAR_SCREEN}Every {seconds}s: lbstat --socket {}\n\n{frame}",
            args.socket.display()
        )?;
        stdout.flush()?;
        drop(stdout);
        frames += 1;
        if args.count.is_some_and(|count| frames >= count) {
            return Ok(());
        }
        std::thread::sleep(period.saturating_sub(started.elapsed()));
    }
}

/// Sends one stats request and reads the reply line.
fn fetch(args: &Args) -> Result<Stats> {
    match director_proto::call(&args.socket, &Request::Stats)? {
        Reply::Stats(stats) => Ok(stats),
        Reply::Error { message } => bail!("director answered with an error: {message}"),
        Reply::Ok { message } => bail!("director answered a stats request with: {message}"),
    }
}

/// One service line and its backend lines.
fn render_service(out: &mut String, service: &director_proto::ServiceStats) {
    let sum = |field: fn(&director_proto::BackendStats) -> u64| {
        service
            .backends
            .iter()
            .map(field)
            .fold(0u64, u64::saturating_add)
    };
    let ports = if service.ports.len() > 1 {
        let ports: Vec<String> = service.ports.iter().map(u16::to_string).collect();
        ports.join(",")
    } else {
        service.port.to_string()
    };
    let mut name = service.name.clone();
    if let Some(seconds) = service.persistence_seconds {
        let _ = write!(name, " persistent {seconds}s");
    }
    let prefix = format!(
        "{:<4} {:<19} {:<9} {:<4} {}",
        service.protocol.to_uppercase(),
        director_proto::host_port(&service.vip, ports),
        service.scheduler,
        service.forwarding,
        name
    );
    let _ = writeln!(
        out,
        "{prefix:<PREFIX_WIDTH$}{:>8} {:>9} {:>10} {:>12} {:>14} {}",
        sum(|backend| backend.active_connections),
        sum(|backend| backend.inactive_connections),
        sum(|backend| backend.connections_total),
        sum(|backend| backend.packets_in),
        sum(|backend| backend.bytes_in),
        rates(&service.rate_1s),
    );
    for backend in &service.backends {
        let status = if backend.disabled {
            "disabled"
        } else if backend.fallback {
            "fallback"
        } else {
            backend.mac.as_deref().unwrap_or("unresolved")
        };
        let prefix = format!(
            "  -> {:<19} {:<7} {:<6} {status}",
            director_proto::host_port(&backend.address, backend.port),
            backend.weight,
            backend.health.name(),
        );
        let _ = writeln!(
            out,
            "{prefix:<PREFIX_WIDTH$}{:>8} {:>9} {:>10} {:>12} {:>14} {}",
            backend.active_connections,
            backend.inactive_connections,
            backend.connections_total,
            backend.packets_in,
            backend.bytes_in,
            rates(&backend.rate_1s),
        );
        if backend.checks_passed + backend.checks_failed > 0 {
            let _ = write!(
                out,
                "       checks: passed={} failed={} transitions={}",
                backend.checks_passed, backend.checks_failed, backend.health_transitions
            );
            if let Some(reason) = &backend.last_check_failure {
                let _ = write!(out, " last failure: {reason}");
            }
            let _ = writeln!(out);
        }
    }
}

/// The VRRP line: state, group, adverts, takeover latency and sync.
fn render_ha(out: &mut String, ha: &director_proto::HaStats) {
    let master = ha.master_address.as_deref().unwrap_or("unknown");
    let _ = write!(
        out,
        "vrrp {} vrid {} priority {} (master {master}), adverts sent {} received {}",
        ha.state, ha.vrid, ha.priority, ha.adverts_sent, ha.adverts_received
    );
    if ha.became_master > 0 {
        let _ = write!(
            out,
            ", last takeover {:.1} ms (longest {:.1} ms)",
            std::time::Duration::from_micros(ha.takeover_latency_us).as_secs_f64() * 1e3,
            std::time::Duration::from_micros(ha.takeover_latency_max_us).as_secs_f64() * 1e3
        );
    }
    if let Some(sync) = &ha.sync {
        let _ = write!(
            out,
            "; sync {} records sent {} received {} lost datagrams {}",
            sync.role, sync.records_sent, sync.records_received, sync.datagrams_lost
        );
        render_sync_auth(out, sync);
    }
    let _ = writeln!(out);
}

/// Sync authentication on the `vrrp` line: shown with a key, or when something was refused.
fn render_sync_auth(out: &mut String, sync: &director_proto::SyncStats) {
    let refused = sync.auth_missing + sync.auth_bad_tag + sync.auth_replayed;
    if !sync.authenticated && refused + sync.auth_unexpected == 0 {
        return;
    }
    let _ = write!(
        out,
        "; auth {} refused missing {} bad tag {} replayed {}",
        if sync.authenticated { "on" } else { "off" },
        sync.auth_missing,
        sync.auth_bad_tag,
        sync.auth_replayed
    );
    if sync.auth_unexpected > 0 {
        let _ = write!(out, " unexpected keyed {}", sync.auth_unexpected);
    }
}

/// The table lbstat prints.
fn render(stats: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "director up {}", uptime(stats.uptime_seconds));
    if let Some(ha) = &stats.ha {
        render_ha(&mut out, ha);
    }
    if let Some(routing) = &stats.routing {
        let count = |name: &str| routing.counters.get(name).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "routes {} prefixes, {} next hops ({} unresolved), updated {:.1}s ago; nat replies to {}",
            count("prefixes"),
            count("next_hops"),
            count("neighbours_unresolved") + count("neighbours_failed"),
            std::time::Duration::from_millis(routing.last_update_age_ms).as_secs_f64(),
            routing.nat_reply
        );
        for hop in &routing.next_hops {
            let via = hop.via.as_deref().unwrap_or("-");
            let mac = hop.mac.as_deref().unwrap_or("-");
            let _ = writeln!(
                out,
                "  next hop {}: {} via {via} {mac} {}",
                hop.role, hop.destination, hop.state
            );
        }
    }
    for first in [
        "Prot VIP:Port            Scheduler Fwd  Name",
        "  -> RemoteAddress:Port  Weight  Health MAC",
    ] {
        let _ = writeln!(
            out,
            "{first:<PREFIX_WIDTH$}{:>8} {:>9} {:>10} {:>12} {:>14} {:>8} {:>9} {:>10}",
            "ActConn", "InActConn", "Conns", "InPkts", "InBytes", "Conn/s", "Pkt/s", "Bytes/s"
        );
    }
    for service in &stats.services {
        render_service(&mut out, service);
    }
    if !stats.workers.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<6} {:<20} {:>12} {:>14} {:>12} {:>14} {:>9} {:>9}",
            "Worker",
            "Interface:Queue",
            "RxPkts",
            "RxBytes",
            "TxPkts",
            "TxBytes",
            "RxPkt/s",
            "TxPkt/s"
        );
    }
    for worker in &stats.workers {
        let _ = writeln!(
            out,
            "{:<6} {:<20} {:>12} {:>14} {:>12} {:>14} {:>9} {:>9}",
            worker.worker,
            format!("{}:{}", worker.interface, worker.queue),
            worker.rx_packets,
            worker.rx_bytes,
            worker.tx_packets,
            worker.tx_bytes,
            rate(worker.rate_1s.rx_packets_per_second),
            rate(worker.rate_1s.tx_packets_per_second),
        );
        if let Some(drops) = non_zero(&worker.drops) {
            let _ = writeln!(out, "       drops: {drops}");
        }
        if let Some(counters) = non_zero(&worker.counters) {
            let _ = writeln!(out, "       {counters}");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "XDP classifier: {}",
        non_zero(&stats.xdp).unwrap_or_else(|| "all zero".to_owned())
    );
    out
}

/// The Conn/s, Pkt/s and Bytes/s columns.
fn rates(rates: &director_proto::Rates) -> String {
    format!(
        "{:>8} {:>9} {:>10}",
        rate(rates.connections_per_second),
        rate(rates.packets_per_second),
        rate(rates.bytes_per_second)
    )
}

/// A rate for a column: one decimal below 10, whole numbers up to ten thousand, then K, M, G.
fn rate(per_second: f64) -> String {
    if !per_second.is_finite() || per_second <= 0.0 {
        "0".to_owned()
    } else if per_second < 10.0 {
        format!("{per_second:.1}")
    } else if per_second < 1e4 {
        format!("{per_second:.0}")
    } else if per_second < 1e6 {
        format!("{:.0}K", per_second / 1e3)
    } else if per_second < 1e9 {
        format!("{:.1}M", per_second / 1e6)
    } else {
        format!("{:.1}G", per_second / 1e9)
    }
}

/// `name=value` for each non-zero counter, or `None` if all are zero.
fn non_zero(counters: &BTreeMap<String, u64>) -> Option<String> {
    let parts: Vec<String> = counters
        .iter()
        .filter(|(_, &value)| value != 0)
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// `1d02h03m04s` style.
fn uptime(seconds: f64) -> String {
    // Saturating float-to-int cast: NaN and negatives become 0.
    #[expect(
        clippy::cast_sign_loss,
        reason = "the cast saturates; negatives become 0"
    )]
    let total = seconds as u64;
    let (days, hours, minutes, seconds) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if days > 0 {
        format!("{days}d{hours:02}h{minutes:02}m{seconds:02}s")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m{seconds:02}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use director_proto::{BackendStats, Health, Rates, ServiceStats, WorkerRates, WorkerStats};

    use super::*;

    fn sample() -> Stats {
        let backend = |address: &str, mac: Option<&str>, conns: u32| BackendStats {
            address: address.to_owned(),
            port: 80,
            weight: 1,
            mac: mac.map(str::to_owned),
            connections_total: u64::from(conns),
            packets_in: u64::from(conns) * 3,
            bytes_in: u64::from(conns) * 300,
            rate_1s: Rates {
                connections_per_second: f64::from(conns) / 100.0,
                packets_per_second: f64::from(conns) * 3.0,
                bytes_per_second: f64::from(conns) * 300.0,
            },
            ..BackendStats::default()
        };
        let mut worker = WorkerStats {
            worker: 0,
            interface: "eth0".to_owned(),
            queue: 1,
            rx_packets: 310,
            rx_bytes: 31_000,
            tx_packets: 300,
            tx_bytes: 30_000,
            rate_1s: WorkerRates {
                rx_packets_per_second: 12_345.0,
                tx_packets_per_second: 2_500_000.0,
                ..WorkerRates::default()
            },
            ..WorkerStats::default()
        };
        worker.drops.insert("no_service".to_owned(), 4);
        worker.drops.insert("neighbour_unresolved".to_owned(), 6);
        worker.drops.insert("truncated".to_owned(), 0);
        worker
            .counters
            .insert("connections_created".to_owned(), 100);
        worker.counters.insert("fill_ring_starved".to_owned(), 0);
        Stats {
            uptime_seconds: 3723.9,
            services: vec![ServiceStats {
                name: "web".to_owned(),
                vip: "192.0.2.10".to_owned(),
                port: 80,
                ports: vec![80],
                persistence_seconds: None,
                protocol: "tcp".to_owned(),
                scheduler: "maglev".to_owned(),
                forwarding: "dr".to_owned(),
                backends: vec![
                    BackendStats {
                        checks_passed: 120,
                        ..backend("192.0.2.11", Some("02:00:00:00:00:11"), 100)
                    },
                    backend("192.0.2.12", Some("02:00:00:00:00:12"), 120),
                    backend("192.0.2.13", None, 80),
                    BackendStats {
                        address: "192.0.2.14".to_owned(),
                        port: 80,
                        disabled: true,
                        health: Health::Down,
                        ..BackendStats::default()
                    },
                    BackendStats {
                        address: "192.0.2.15".to_owned(),
                        port: 80,
                        health: Health::Down,
                        mac: Some("02:00:00:00:00:15".to_owned()),
                        checks_passed: 30,
                        checks_failed: 3,
                        health_transitions: 1,
                        last_check_failure: Some("status 503 (expected 200)".to_owned()),
                        ..BackendStats::default()
                    },
                    BackendStats {
                        fallback: true,
                        ..backend("192.0.2.50", Some("02:00:00:00:00:50"), 0)
                    },
                ],
                rate_1s: Rates {
                    connections_per_second: 3.0,
                    packets_per_second: 900.0,
                    bytes_per_second: 90_000.0,
                },
                ..ServiceStats::default()
            }],
            workers: vec![worker],
            xdp: [("redirected".to_owned(), 310), ("passed".to_owned(), 0)]
                .into_iter()
                .collect(),
            ha: None,
            routing: None,
        }
    }

    #[test]
    fn renders_ipvsadm_like_table() {
        let expected = "\
director up 1h02m03s
Prot VIP:Port            Scheduler Fwd  Name               ActConn InActConn      Conns       InPkts        InBytes   Conn/s     Pkt/s    Bytes/s
  -> RemoteAddress:Port  Weight  Health MAC                ActConn InActConn      Conns       InPkts        InBytes   Conn/s     Pkt/s    Bytes/s
TCP  192.0.2.10:80       maglev    dr   web                      0         0        300          900          90000      3.0       900        90K
  -> 192.0.2.11:80       1       up     02:00:00:00:00:11        0         0        100          300          30000      1.0       300        30K
       checks: passed=120 failed=0 transitions=0
  -> 192.0.2.12:80       1       up     02:00:00:00:00:12        0         0        120          360          36000      1.2       360        36K
  -> 192.0.2.13:80       1       up     unresolved               0         0         80          240          24000      0.8       240        24K
  -> 192.0.2.14:80       0       down   disabled                 0         0          0            0              0        0         0          0
  -> 192.0.2.15:80       0       down   02:00:00:00:00:15        0         0          0            0              0        0         0          0
       checks: passed=30 failed=3 transitions=1 last failure: status 503 (expected 200)
  -> 192.0.2.50:80       1       up     fallback                 0         0          0            0              0        0         0          0

Worker Interface:Queue            RxPkts        RxBytes       TxPkts        TxBytes   RxPkt/s   TxPkt/s
0      eth0:1                        310          31000          300          30000       12K      2.5M
       drops: neighbour_unresolved=6 no_service=4
       connections_created=100

XDP classifier: redirected=310
";
        let rendered = render(&sample());
        assert_eq!(rendered, expected, "\n{rendered}");
    }

    #[test]
    fn renders_ipv6_services_with_bracketed_addresses() {
        let mut stats = sample();
        let mut six = stats.services[0].clone();
        six.name = "web6".to_owned();
        six.vip = "2001:db8::10".to_owned();
        six.ports = vec![80, 443];
        six.backends.truncate(2);
        six.backends[0].address = "2001:db8::11".to_owned();
        six.backends[1].address = "2001:db8:0:1::12".to_owned();
        six.backends[1].port = 8080;
        stats.services.push(six);
        let rendered = render(&stats);
        let lines: Vec<&str> = rendered.lines().collect();
        let at = lines.iter().position(|line| line.contains("web6")).unwrap();
        assert!(
            lines[at].starts_with("TCP  [2001:db8::10]:80,443 maglev    dr   web6"),
            "{rendered}"
        );
        assert!(
            lines[at + 1].starts_with("  -> [2001:db8::11]:80   1       up     02:00:00:00:00:11"),
            "{rendered}"
        );
        assert!(
            lines[at + 3]
                .starts_with("  -> [2001:db8:0:1::12]:8080 1       up     02:00:00:00:00:12"),
            "{rendered}"
        );
        // The IPv4 service is as before.
        assert!(
            rendered.contains("\nTCP  192.0.2.10:80       maglev"),
            "{rendered}"
        );
    }

    #[test]
    fn renders_sync_authentication_refusals() {
        let mut stats = sample();
        let mut sync = director_proto::SyncStats {
            role: "backup".to_owned(),
            records_received: 5,
            ..director_proto::SyncStats::default()
        };
        stats.ha = Some(Box::new(director_proto::HaStats {
            state: "BACKUP".to_owned(),
            vrid: 51,
            priority: 100,
            sync: Some(sync.clone()),
            ..director_proto::HaStats::default()
        }));
        let first = |stats: &Stats| render(stats).lines().nth(1).unwrap().to_owned();
        // Keyless and nothing refused: as before.
        assert!(
            first(&stats).ends_with("; sync backup records sent 0 received 5 lost datagrams 0"),
            "{}",
            first(&stats)
        );
        sync.authenticated = true;
        sync.auth_bad_tag = 4;
        stats.ha.as_mut().unwrap().sync = Some(sync.clone());
        assert!(
            first(&stats).ends_with("; auth on refused missing 0 bad tag 4 replayed 0"),
            "{}",
            first(&stats)
        );
        sync.authenticated = false;
        sync.auth_unexpected = 2;
        stats.ha.as_mut().unwrap().sync = Some(sync);
        assert!(
            first(&stats)
                .ends_with("; auth off refused missing 0 bad tag 4 replayed 0 unexpected keyed 2"),
            "{}",
            first(&stats)
        );
    }

    #[test]
    fn renders_empty_stats() {
        let rendered = render(&Stats::default());
        assert!(
            rendered.starts_with("director up 0s\nProt VIP:Port"),
            "{rendered}"
        );
        assert!(
            rendered.ends_with("XDP classifier: all zero\n"),
            "{rendered}"
        );
        assert!(!rendered.contains("Worker"));
    }

    #[test]
    fn rate_columns() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(f64::NAN), "0");
        assert_eq!(rate(0.25), "0.2");
        assert_eq!(rate(9.96), "10.0");
        assert_eq!(rate(123.4), "123");
        assert_eq!(rate(12_345.0), "12K");
        assert_eq!(rate(2_500_000.0), "2.5M");
        assert_eq!(rate(3.2e9), "3.2G");
    }

    #[test]
    fn options_parse() {
        let args = Args::try_parse_from(["lbstat", "--watch", "1", "--count", "3"]).unwrap();
        assert_eq!((args.watch, args.count), (Some(1.0), Some(3)));
        assert_eq!(args.socket, PathBuf::from(director_proto::DEFAULT_SOCKET));
        assert!(Args::try_parse_from(["lbstat", "--count", "3"]).is_err());
        assert!(Args::try_parse_from(["lbstat", "--json", "--prometheus"]).is_err());
        assert!(Args::try_parse_from(["lbstat", "--watch", "1", "--json"]).is_err());
        assert!(Args::try_parse_from(["lbstat", "--prometheus", "--socket", "/x"]).is_ok());
    }

    #[test]
    fn uptime_units() {
        assert_eq!(uptime(0.4), "0s");
        assert_eq!(uptime(59.0), "59s");
        assert_eq!(uptime(61.0), "1m01s");
        assert_eq!(uptime(90_061.0), "1d01h01m01s");
        assert_eq!(uptime(f64::NAN), "0s");
    }

    #[test]
    fn missing_socket_is_explained() {
        let args = Args {
            socket: PathBuf::from("/nonexistent/director.sock"),
            json: false,
            prometheus: false,
            watch: None,
            count: None,
        };
        let message = format!("{:#}", fetch(&args).unwrap_err());
        assert!(
            message.starts_with("is director running? socket /nonexistent/director.sock: "),
            "{message}"
        );
    }
}
