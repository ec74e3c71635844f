//! [`Stats`] in the Prometheus text exposition format, version 0.0.4: what `lbstat --prometheus`
//! prints and the director's optional `/metrics` endpoint serves.
//!
//! Each metric family is written once, `# HELP` and `# TYPE` first, then all its samples.
//! Counters end in `_total`. Rates are not exported: Prometheus computes them with `rate()`.

use std::fmt::Write as _;

use crate::{BackendStats, Health, RoutingStats, ServiceStats, Stats, SyncStats, WorkerStats};

/// The `Content-Type` of [`prometheus`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `stats` as Prometheus text (format 0.0.4).
pub fn prometheus(stats: &Stats) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "director_uptime_seconds",
        "gauge",
        "Seconds since the director started.",
        [(String::new(), Value::Float(stats.uptime_seconds))],
    );

    backend_families(&mut out, stats);
    worker_families(&mut out, stats);
    family(
        &mut out,
        "director_xdp_packets_total",
        "counter",
        "The XDP classifier's verdicts, summed over CPUs and interfaces.",
        stats
            .xdp
            .iter()
            .map(|(name, value)| (labels(&[("result", name)]), Value::Int(*value))),
    );
    if let Some(ha) = &stats.ha {
        family(
            &mut out,
            "director_ha_master",
            "gauge",
            "1 while this director is the VRRP master holding the VIPs, else 0.",
            [(String::new(), Value::Int(u64::from(ha.serving)))],
        );
        family(
            &mut out,
            "director_ha_transitions_total",
            "counter",
            "VRRP state changes.",
            [(String::new(), Value::Int(ha.transitions))],
        );
        for (name, help, micros) in [
            (
                "director_ha_takeover_latency_seconds",
                "How long the last takeover took, from VRRP's decision to the VIPs added and steered.",
                ha.takeover_latency_us,
            ),
            (
                "director_ha_takeover_latency_max_seconds",
                "The longest takeover since start, from VRRP's decision to the VIPs added and steered.",
                ha.takeover_latency_max_us,
            ),
        ] {
            family(
                &mut out,
                name,
                "gauge",
                help,
                [(
                    String::new(),
                    Value::Float(std::time::Duration::from_micros(micros).as_secs_f64()),
                )],
            );
        }
        if let Some(sync) = &ha.sync {
            sync_families(&mut out, sync);
        }
    }
    if let Some(routing) = &stats.routing {
        routing_families(&mut out, routing);
    }
    out
}

/// State sync: records each way, and the datagrams sync authentication refused, by reason.
fn sync_families(out: &mut String, sync: &SyncStats) {
    family(
        out,
        "director_sync_records_total",
        "counter",
        "Connection sync records sent (as master) and received (as backup).",
        [
            ("sent", sync.records_sent),
            ("received", sync.records_received),
        ]
        .map(|(direction, value)| (labels(&[("direction", direction)]), Value::Int(value))),
    );
    family(
        out,
        "director_sync_authenticated",
        "gauge",
        "1 while connection sync is authenticated (ha.sync_key), else 0.",
        [(String::new(), Value::Int(u64::from(sync.authenticated)))],
    );
    family(
        out,
        "director_sync_auth_refused_total",
        "counter",
        "Sync datagrams refused by authentication: no trailer (missing), a tag that did not match (bad_tag), replayed or too old (replayed), keyed while this director has no key (unexpected).",
        [
            ("missing", sync.auth_missing),
            ("bad_tag", sync.auth_bad_tag),
            ("replayed", sync.auth_replayed),
            ("unexpected", sync.auth_unexpected),
        ]
        .map(|(reason, value)| (labels(&[("reason", reason)]), Value::Int(value))),
    );
}

/// The routing mirror: its counters (`director_fib_<name>`), its age, and one sample per next
/// hop of interest, 1 while resolved.
fn routing_families(out: &mut String, routing: &RoutingStats) {
    family(
        out,
        "director_fib_last_update_age_seconds",
        "gauge",
        "Seconds since the routing snapshot in use was built.",
        [(
            String::new(),
            Value::Float(
                std::time::Duration::from_millis(routing.last_update_age_ms).as_secs_f64(),
            ),
        )],
    );
    family(
        out,
        "director_fib_memory_bytes",
        "gauge",
        "Bytes the routing snapshot's tables hold.",
        [(String::new(), Value::Int(routing.memory_bytes))],
    );
    for (name, value) in &routing.counters {
        // Sizes are gauges; everything the mirror counts up is a counter.
        let (metric, kind) = if FIB_GAUGES.contains(&name.as_str()) {
            (format!("director_fib_{}", metric_name(name)), "gauge")
        } else {
            (
                format!("director_fib_{}_total", metric_name(name)),
                "counter",
            )
        };
        family(
            out,
            &metric,
            kind,
            &format!("The routing table mirror's {name}."),
            [(String::new(), Value::Int(*value))],
        );
    }
    family(
        out,
        "director_next_hop_resolved",
        "gauge",
        "1 while the next hop toward a TUN real server or the NAT client side's default route is resolved, else 0 (lbstat and the JSON say why).",
        routing.next_hops.iter().map(|hop| {
            (
                labels(&[("role", &hop.role), ("destination", &hop.destination)]),
                Value::Int(u64::from(hop.state == "resolved")),
            )
        }),
    );
}

/// The mirror's counters that describe the snapshot in use (they go down as well as up)
/// rather than running totals (control's `FibCounters` says which).
const FIB_GAUGES: [&str; 13] = [
    "prefixes",
    "routes",
    "next_hops",
    "neighbours_resolved",
    "neighbours_unresolved",
    "neighbours_failed",
    "routes_not_served",
    "legs_not_served",
    "routes_blackhole",
    "routes_unreachable",
    "routes_prohibit",
    "routes_missing_nexthop_object",
    "neighbour_slots_full",
];

/// One metric read from each `T`: name, type, help, value.
struct Metric<T> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&T) -> u64,
}

const fn metric<T>(
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&T) -> u64,
) -> Metric<T> {
    Metric {
        name,
        kind,
        help,
        value,
    }
}

fn backend_families(out: &mut String, stats: &Stats) {
    let backends: Vec<(&ServiceStats, &BackendStats)> = stats
        .services
        .iter()
        .flat_map(|service| {
            service
                .backends
                .iter()
                .map(move |backend| (service, backend))
        })
        .collect();
    for Metric {
        name,
        kind,
        help,
        value,
    } in backend_metrics()
    {
        family(
            out,
            name,
            kind,
            help,
            backends.iter().map(|(service, backend)| {
                (
                    labels(&[
                        ("service", &service.name),
                        ("vip", &service.vip),
                        // Lets a query sum per family (`sum by (family)`).
                        ("family", crate::address_family(&service.vip)),
                        ("port", &service.port.to_string()),
                        ("protocol", &service.protocol),
                        ("backend", &backend.address),
                    ]),
                    Value::Int(value(backend)),
                )
            }),
        );
    }
}

/// The per-backend families, in output order.
fn backend_metrics() -> [Metric<BackendStats>; 14] {
    [
        metric(
            "director_backend_connections_total",
            "counter",
            "New flows scheduled to the real server.",
            |b| b.connections_total,
        ),
        metric(
            "director_backend_packets_in_total",
            "counter",
            "Frames forwarded to the real server.",
            |b| b.packets_in,
        ),
        metric(
            "director_backend_bytes_in_total",
            "counter",
            "Bytes forwarded to the real server.",
            |b| b.bytes_in,
        ),
        metric(
            "director_backend_packets_out_total",
            "counter",
            "Frames from the real server through the director (0 under direct routing).",
            |b| b.packets_out,
        ),
        metric(
            "director_backend_bytes_out_total",
            "counter",
            "Bytes from the real server through the director (0 under direct routing).",
            |b| b.bytes_out,
        ),
        metric(
            "director_backend_active_connections",
            "gauge",
            "Tracked connections in an active state (TCP established, UDP).",
            |b| b.active_connections,
        ),
        metric(
            "director_backend_inactive_connections",
            "gauge",
            "Tracked connections in other TCP states.",
            |b| b.inactive_connections,
        ),
        metric(
            "director_backend_weight",
            "gauge",
            "Weight in effect (0: draining).",
            |b| u64::from(b.weight),
        ),
        metric(
            "director_backend_up",
            "gauge",
            "1 if the real server is in the pool (health up), 0 if not.",
            |b| u64::from(b.health == Health::Up),
        ),
        metric(
            "director_backend_disabled",
            "gauge",
            "1 if the real server was taken out with `disable`.",
            |b| u64::from(b.disabled),
        ),
        metric(
            "director_backend_fallback",
            "gauge",
            "1 if this is the service's fallback server, in the pool because no real server is.",
            |b| u64::from(b.fallback),
        ),
        metric(
            "director_backend_checks_passed_total",
            "counter",
            "Health checks of the real server that passed.",
            |b| b.checks_passed,
        ),
        metric(
            "director_backend_checks_failed_total",
            "counter",
            "Health checks of the real server that failed.",
            |b| b.checks_failed,
        ),
        metric(
            "director_backend_health_transitions_total",
            "counter",
            "Changes of the real server's health (up to down, down to up).",
            |b| b.health_transitions,
        ),
    ]
}

fn worker_families(out: &mut String, stats: &Stats) {
    let worker_labels = |worker: &WorkerStats, extra: Option<(&str, &str)>| {
        let mut pairs = vec![
            ("worker", worker.worker.to_string()),
            ("interface", worker.interface.clone()),
            ("queue", worker.queue.to_string()),
        ];
        if let Some((key, value)) = extra {
            pairs.push((key, value.to_owned()));
        }
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        labels(&pairs)
    };
    let worker_metrics: [Metric<WorkerStats>; 4] = [
        metric(
            "director_worker_rx_packets_total",
            "counter",
            "Frames the worker took from its RX ring.",
            |w| w.rx_packets,
        ),
        metric(
            "director_worker_rx_bytes_total",
            "counter",
            "Bytes the worker took from its RX ring.",
            |w| w.rx_bytes,
        ),
        metric(
            "director_worker_tx_packets_total",
            "counter",
            "Frames the worker put on its TX ring.",
            |w| w.tx_packets,
        ),
        metric(
            "director_worker_tx_bytes_total",
            "counter",
            "Bytes the worker put on its TX ring.",
            |w| w.tx_bytes,
        ),
    ];
    for Metric {
        name,
        kind,
        help,
        value,
    } in worker_metrics
    {
        family(
            out,
            name,
            kind,
            help,
            stats
                .workers
                .iter()
                .map(|worker| (worker_labels(worker, None), Value::Int(value(worker)))),
        );
    }
    family(
        out,
        "director_worker_drops_total",
        "counter",
        "Frames the worker dropped, by reason.",
        stats.workers.iter().flat_map(|worker| {
            worker.drops.iter().map(move |(reason, count)| {
                (
                    worker_labels(worker, Some(("reason", reason))),
                    Value::Int(*count),
                )
            })
        }),
    );
    // The other worker counters, one family each, in name order.
    let mut names: Vec<&String> = stats
        .workers
        .iter()
        .flat_map(|worker| worker.counters.keys())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let gauge = GAUGES.contains(&name.as_str());
        let metric = format!(
            "director_worker_{}{}",
            metric_name(name),
            if gauge { "" } else { "_total" }
        );
        family(
            out,
            &metric,
            if gauge { "gauge" } else { "counter" },
            &format!("The worker's {name} counter (see lbstat)."),
            stats.workers.iter().filter_map(|worker| {
                worker
                    .counters
                    .get(name)
                    .map(|value| (worker_labels(worker, None), Value::Int(*value)))
            }),
        );
    }
}

/// Worker counters that are levels, not event counts.
const GAUGES: [&str; 5] = [
    "connections_active",
    "frames_free",
    "frames_in_fill",
    "frames_in_tx",
    "frames_in_hand",
];

enum Value {
    Int(u64),
    Float(f64),
}

/// Writes one family; nothing at all if it has no samples.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, Value)>,
) {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = match value {
            Value::Int(value) => writeln!(out, "{name}{labels} {value}"),
            Value::Float(value) if value.is_finite() => writeln!(out, "{name}{labels} {value}"),
            Value::Float(_) => writeln!(out, "{name}{labels} NaN"),
        };
    }
}

/// `{key="value",...}` with the values escaped; empty for no labels.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// HELP text escapes backslash and newline.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A counter name made a valid metric-name fragment: `[a-zA-Z0-9_]`, others become `_`.
fn metric_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn fixture() -> Stats {
        let mut worker = WorkerStats {
            worker: 0,
            interface: "eth0".to_owned(),
            queue: 1,
            rx_packets: 10,
            rx_bytes: 1000,
            tx_packets: 9,
            tx_bytes: 900,
            ..WorkerStats::default()
        };
        worker.drops.insert("no_service".to_owned(), 1);
        worker.counters.insert("connections_active".to_owned(), 2);
        worker.counters.insert("tx_wakeups".to_owned(), 3);
        Stats {
            uptime_seconds: 1.5,
            services: vec![ServiceStats {
                name: "we\"b\\\n".to_owned(),
                vip: "192.0.2.10".to_owned(),
                port: 80,
                ports: vec![80],
                protocol: "tcp".to_owned(),
                scheduler: "rr".to_owned(),
                forwarding: "dr".to_owned(),
                backends: vec![
                    BackendStats {
                        address: "192.0.2.11".to_owned(),
                        port: 80,
                        weight: 2,
                        connections_total: 3,
                        packets_in: 9,
                        bytes_in: 600,
                        checks_passed: 40,
                        checks_failed: 4,
                        health_transitions: 2,
                        last_check_failure: Some("connection refused".to_owned()),
                        ..BackendStats::default()
                    },
                    BackendStats {
                        address: "192.0.2.12".to_owned(),
                        port: 80,
                        disabled: true,
                        health: Health::Down,
                        ..BackendStats::default()
                    },
                ],
                ..ServiceStats::default()
            }],
            workers: vec![worker],
            xdp: [("redirected".to_owned(), 10)].into_iter().collect(),
            ha: None,
            routing: None,
        }
    }

    #[test]
    fn renders_the_fixture_exactly() {
        let l1 = r#"{service="we\"b\\\n",vip="192.0.2.10",family="ipv4",port="80",protocol="tcp",backend="192.0.2.11"}"#;
        let l2 = r#"{service="we\"b\\\n",vip="192.0.2.10",family="ipv4",port="80",protocol="tcp",backend="192.0.2.12"}"#;
        let w = r#"{worker="0",interface="eth0",queue="1"}"#;
        let expected = format!(
            "\
# HELP director_uptime_seconds Seconds since the director started.
# TYPE director_uptime_seconds gauge
director_uptime_seconds 1.5
# HELP director_backend_connections_total New flows scheduled to the real server.
# TYPE director_backend_connections_total counter
director_backend_connections_total{l1} 3
director_backend_connections_total{l2} 0
# HELP director_backend_packets_in_total Frames forwarded to the real server.
# TYPE director_backend_packets_in_total counter
director_backend_packets_in_total{l1} 9
director_backend_packets_in_total{l2} 0
# HELP director_backend_bytes_in_total Bytes forwarded to the real server.
# TYPE director_backend_bytes_in_total counter
director_backend_bytes_in_total{l1} 600
director_backend_bytes_in_total{l2} 0
# HELP director_backend_packets_out_total Frames from the real server through the director (0 under direct routing).
# TYPE director_backend_packets_out_total counter
director_backend_packets_out_total{l1} 0
director_backend_packets_out_total{l2} 0
# HELP director_backend_bytes_out_total Bytes from the real server through the director (0 under direct routing).
# TYPE director_backend_bytes_out_total counter
director_backend_bytes_out_total{l1} 0
director_backend_bytes_out_total{l2} 0
# HELP director_backend_active_connections Tracked connections in an active state (TCP established, UDP).
# TYPE director_backend_active_connections gauge
director_backend_active_connections{l1} 0
director_backend_active_connections{l2} 0
# HELP director_backend_inactive_connections Tracked connections in other TCP states.
# TYPE director_backend_inactive_connections gauge
director_backend_inactive_connections{l1} 0
director_backend_inactive_connections{l2} 0
# HELP director_backend_weight Weight in effect (0: draining).
# TYPE director_backend_weight gauge
director_backend_weight{l1} 2
director_backend_weight{l2} 0
# HELP director_backend_up 1 if the real server is in the pool (health up), 0 if not.
# TYPE director_backend_up gauge
director_backend_up{l1} 1
director_backend_up{l2} 0
# HELP director_backend_disabled 1 if the real server was taken out with `disable`.
# TYPE director_backend_disabled gauge
director_backend_disabled{l1} 0
director_backend_disabled{l2} 1
# HELP director_backend_fallback 1 if this is the service's fallback server, in the pool because no real server is.
# TYPE director_backend_fallback gauge
director_backend_fallback{l1} 0
director_backend_fallback{l2} 0
# HELP director_backend_checks_passed_total Health checks of the real server that passed.
# TYPE director_backend_checks_passed_total counter
director_backend_checks_passed_total{l1} 40
director_backend_checks_passed_total{l2} 0
# HELP director_backend_checks_failed_total Health checks of the real server that failed.
# TYPE director_backend_checks_failed_total counter
director_backend_checks_failed_total{l1} 4
director_backend_checks_failed_total{l2} 0
# HELP director_backend_health_transitions_total Changes of the real server's health (up to down, down to up).
# TYPE director_backend_health_transitions_total counter
director_backend_health_transitions_total{l1} 2
director_backend_health_transitions_total{l2} 0
# HELP director_worker_rx_packets_total Frames the worker took from its RX ring.
# TYPE director_worker_rx_packets_total counter
director_worker_rx_packets_total{w} 10
# HELP director_worker_rx_bytes_total Bytes the worker took from its RX ring.
# TYPE director_worker_rx_bytes_total counter
director_worker_rx_bytes_total{w} 1000
# HELP director_worker_tx_packets_total Frames the worker put on its TX ring.
# TYPE director_worker_tx_packets_total counter
director_worker_tx_packets_total{w} 9
# HELP director_worker_tx_bytes_total Bytes the worker put on its TX ring.
# TYPE director_worker_tx_bytes_total counter
director_worker_tx_bytes_total{w} 900
# HELP director_worker_drops_total Frames the worker dropped, by reason.
# TYPE director_worker_drops_total counter
director_worker_drops_total{{worker=\"0\",interface=\"eth0\",queue=\"1\",reason=\"no_service\"}} 1
# HELP director_worker_connections_active The worker's connections_active counter (see lbstat).
# TYPE director_worker_connections_active gauge
director_worker_connections_active{w} 2
# HELP director_worker_tx_wakeups_total The worker's tx_wakeups counter (see lbstat).
# TYPE director_worker_tx_wakeups_total counter
director_worker_tx_wakeups_total{w} 3
# HELP director_xdp_packets_total The XDP classifier's verdicts, summed over CPUs and interfaces.
# TYPE director_xdp_packets_total counter
director_xdp_packets_total{{result=\"redirected\"}} 10
"
        );
        let rendered = prometheus(&fixture());
        assert_eq!(rendered, expected, "\n{rendered}");
    }

    #[test]
    fn routing_renders_its_counters_age_and_next_hops() {
        let stats = Stats {
            routing: Some(Box::new(RoutingStats {
                nat_reply: "last-hop".to_owned(),
                last_update_age_ms: 1500,
                memory_bytes: 4096,
                counters: [("prefixes".to_owned(), 7), ("rebuilds".to_owned(), 3)]
                    .into_iter()
                    .collect(),
                next_hops: vec![crate::NextHopStats {
                    role: "tun web 203.0.113.11".to_owned(),
                    destination: "203.0.113.11".to_owned(),
                    via: Some("192.0.2.241".to_owned()),
                    mac: Some("02:00:00:00:02:01".to_owned()),
                    state: "resolved".to_owned(),
                }],
            })),
            ..Stats::default()
        };
        let text = prometheus(&stats);
        for line in [
            "# TYPE director_fib_prefixes gauge",
            "director_fib_prefixes 7",
            "# TYPE director_fib_rebuilds_total counter",
            "director_fib_rebuilds_total 3",
            "director_fib_last_update_age_seconds 1.5",
            "director_fib_memory_bytes 4096",
            "director_next_hop_resolved{role=\"tun web 203.0.113.11\",destination=\"203.0.113.11\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn ipv6_services_carry_their_family_and_bare_addresses() {
        let mut stats = fixture();
        stats.services[0].vip = "2001:db8::10".to_owned();
        stats.services[0].backends[0].address = "2001:db8::11".to_owned();
        let text = prometheus(&stats);
        // Labels keep the address and the port apart: no brackets needed, none added.
        let line = r#"director_backend_connections_total{service="we\"b\\\n",vip="2001:db8::10",family="ipv6",port="80",protocol="tcp",backend="2001:db8::11"} 3"#;
        assert!(text.contains(line), "{text}");
        assert!(!text.contains('['), "{text}");
    }

    #[test]
    fn empty_stats_render_only_uptime() {
        assert_eq!(
            prometheus(&Stats::default()),
            "# HELP director_uptime_seconds Seconds since the director started.\n\
             # TYPE director_uptime_seconds gauge\ndirector_uptime_seconds 0\n"
        );
    }

    /// A small parser of the exposition format: every sample line must be well-formed, belong
    /// to the family its `# TYPE` announced, and each family appear once.
    fn parse(text: &str) -> BTreeMap<String, String> {
        let mut samples = BTreeMap::new();
        let mut typed: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert!(!typed.contains(&name.to_owned()), "family twice: {line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                typed.push(name.to_owned());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.starts_with('#'), "{line}");
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
            assert_eq!(typed.last().map(String::as_str), Some(name), "{line}");
            let mut rest = &line[name_end..];
            let mut key = name.to_owned();
            if let Some(body) = rest.strip_prefix('{') {
                // label="value" pairs, values with \\ \" \n escapes.
                let mut chars = body.char_indices();
                let mut end = None;
                let mut in_value = false;
                while let Some((index, c)) = chars.next() {
                    match (in_value, c) {
                        (true, '\\') => {
                            let (_, escaped) = chars.next().unwrap();
                            assert!(['\\', '"', 'n'].contains(&escaped), "{line}");
                        }
                        (true, '"') => in_value = false,
                        (true, '\n') => panic!("raw newline in {line}"),
                        (false, '"') => in_value = true,
                        (false, '}') => {
                            end = Some(index);
                            break;
                        }
                        (false, c) => assert!(
                            c.is_ascii_alphanumeric() || c == '_' || c == '=' || c == ',',
                            "{line}"
                        ),
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated labels: {line}"));
                key.push('{');
                key.push_str(&body[..=end]);
                rest = &body[end + 1..];
            }
            let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{line}"));
            let _: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            assert!(
                samples.insert(key, value.to_owned()).is_none(),
                "duplicate: {line}"
            );
        }
        samples
    }

    #[test]
    fn every_line_parses_back() {
        let samples = parse(&prometheus(&fixture()));
        assert_eq!(
            samples[r#"director_backend_packets_in_total{service="we\"b\\\n",vip="192.0.2.10",family="ipv4",port="80",protocol="tcp",backend="192.0.2.11"}"#],
            "9"
        );
        assert_eq!(samples["director_uptime_seconds"], "1.5");
        assert_eq!(samples.len(), 2 * 14 + 4 + 1 + 2 + 1 + 1);
    }

    #[test]
    fn sync_counters_and_auth_refusals_by_reason() {
        let mut stats = fixture();
        stats.ha = Some(Box::new(crate::HaStats {
            serving: false,
            sync: Some(SyncStats {
                records_received: 12,
                authenticated: true,
                auth_missing: 1,
                auth_bad_tag: 2,
                auth_replayed: 3,
                ..SyncStats::default()
            }),
            ..crate::HaStats::default()
        }));
        let samples = parse(&prometheus(&stats));
        assert_eq!(samples["director_ha_master"], "0");
        assert_eq!(
            samples[r#"director_sync_records_total{direction="received"}"#],
            "12"
        );
        assert_eq!(samples["director_sync_authenticated"], "1");
        for (reason, value) in [
            ("missing", "1"),
            ("bad_tag", "2"),
            ("replayed", "3"),
            ("unexpected", "0"),
        ] {
            let key = format!("director_sync_auth_refused_total{{reason=\"{reason}\"}}");
            assert_eq!(samples[&key], value, "{key}");
        }
    }
}
