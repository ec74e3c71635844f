//! Benchmarks of the director's reliability under churn (issue 16, "Measured, in benches/"):
//! ignored tests that print figures, run by `benches/reload_storm.sh` and `benches/soak.sh`.
//!
//! The reload storm: 100 reloads in 20 s (by default) alternating schedulers, weights, a second
//! service and an invalid file, under continuous HTTP requests; reports failed requests (goal
//! 0), the director's RSS growth (goal < 10%) and UMEM frames leaked (goal 0, from the
//! `frames_*` gauges at idle before and after).
//!
//! The soak: two directors in one VRRP group for N minutes (2 by default), continuous requests,
//! a real server's HTTP server stopped and started (its health check flapping), reloads on both
//! directors and failovers (the master's link down, then back: it preempts); reports requests
//! ok and failed by what was going on, failovers and reloads done, RSS and frames.
//!
//! They report rather than assert (the lab's own set-up still panics when it fails); every loop
//! is bounded in count and time, and nothing leaves the lab's namespaces (TEST-NET-1 only).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use director_lab::stats;
use director_lab::{
    poll_until, require_root, rs_ip, vip_url, DirectorConfig, DirectorProcess, HealthCheck, Host,
    HttpResponse, Lab, LabOptions, LoadHandle, LoadOptions, ServiceConfig,
};
use serde_json::Value;

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

/// RSS growth from `before` to `after`, in percent.
#[expect(clippy::cast_precision_loss, reason = "KiB counts far below 2^52")]
fn growth_percent(before: u64, after: u64) -> f64 {
    100.0 * (after as f64 - before as f64) / before.max(1) as f64
}

/// Where a director's UMEM frames are, summed over its workers (the `frames_*` gauges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frames {
    free: u64,
    in_fill: u64,
    in_tx: u64,
    in_hand: u64,
}

impl Frames {
    fn of(stats: &Value) -> Self {
        let sum = |name: &str| stats::worker_counter(stats, name);
        Self {
            free: sum("frames_free"),
            in_fill: sum("frames_in_fill"),
            in_tx: sum("frames_in_tx"),
            in_hand: sum("frames_in_hand"),
        }
    }

    /// Frames back with us or lent for receiving: at idle, every frame.
    fn at_rest(self) -> u64 {
        self.free + self.in_fill
    }
}

/// The frame gauges once the director is idle: nothing on a TX ring or in hand, and two reads
/// (housekeeping publishes them once a second) alike. Bounded; returns the last read anyway.
fn idle_frames(director: &DirectorProcess) -> Frames {
    let mut previous = None;
    let mut last = None;
    let settled = poll_until(
        "the frame gauges to settle at idle",
        Duration::from_secs(15),
        Duration::from_millis(600),
        || {
            let frames = Frames::of(&director.try_stats().map_err(|e| format!("{e:#}"))?);
            last = Some(frames);
            let still = previous == Some(frames);
            previous = Some(frames);
            if still && frames.in_tx == 0 && frames.in_hand == 0 && frames.at_rest() > 0 {
                Ok(())
            } else {
                Err(format!("{frames:?}"))
            }
        },
    );
    if let Err(e) = settled {
        eprintln!("{e:#}; using the last read");
    }
    last.expect("lbstat answered at least once")
}

/// Frames missing at idle after the run (0 if none).
fn frames_leaked(before: Frames, after: Frames) -> u64 {
    before.at_rest().saturating_sub(after.at_rest())
}

/// The director's worker drops that are not zero, by reason.
fn nonzero_drops(director: &DirectorProcess) -> Vec<(String, u64)> {
    stats::worker_drops(&director.stats())
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// A background load of sequential requests (a new connection each) that lasts up to `most`.
fn start_load(lab: &Lab, most: Duration) -> LoadHandle {
    let mut load = lab.start_load(
        &vip_url(),
        &LoadOptions {
            max_requests: usize::MAX,
            max_duration: most,
            ..LoadOptions::default()
        },
    );
    load.wait_until("the load to get going", Duration::from_secs(10), |r| {
        r.iter().flatten().count() >= 10
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    load
}

/// Failed requests of `results`, and the first few failures' messages.
fn failures_of(results: &[anyhow::Result<HttpResponse>]) -> (usize, Vec<String>) {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    (failed.len(), failed.into_iter().take(3).collect())
}

// ---- the reload storm ----

/// Schedulers the storm cycles through.
const SCHEDULERS: [&str; 6] = ["rr", "wrr", "maglev", "wlc", "lc", "sh"];
/// Weights of the three real servers the storm cycles through.
const WEIGHTS: [[u32; 3]; 4] = [[1, 1, 1], [3, 1, 2], [1, 5, 1], [2, 2, 7]];
/// The storm's second service, added and removed: no traffic goes to it.
const EXTRA_SERVICE: &str = "extra";
const EXTRA_PORT: u16 = 8080;

/// The storm's config: the lab's DR service `web` and, when `current.extra`, service `extra`.
#[derive(Clone, Copy, Debug)]
struct StormState {
    scheduler: usize,
    weights: usize,
    extra: bool,
}

impl StormState {
    fn config(self, lab: &Lab) -> DirectorConfig {
        let mut config = lab.dr_config(SCHEDULERS[self.scheduler]);
        config.services[0].set_weights(&WEIGHTS[self.weights]);
        if self.extra {
            let extra = ServiceConfig {
                name: EXTRA_SERVICE.into(),
                ports: vec![EXTRA_PORT],
                ..config.services[0].clone()
            };
            config.services.push(extra);
        }
        config
    }

    /// Service names and schedulers, as lbstat lists them.
    fn expected_services(self) -> Vec<(String, String)> {
        let mut services = vec![("web".to_owned(), SCHEDULERS[self.scheduler].to_owned())];
        if self.extra {
            services.push((EXTRA_SERVICE.into(), SCHEDULERS[self.scheduler].to_owned()));
        }
        services
    }
}

fn services_running(director: &DirectorProcess) -> Vec<(String, String)> {
    stats::services(&director.stats())
        .into_iter()
        .map(|service| (service.name, service.scheduler))
        .collect()
}

/// What the storm counted.
#[derive(Default)]
struct StormTally {
    valid: usize,
    valid_refused: Vec<String>,
    invalid: usize,
    invalid_accepted: Vec<String>,
    /// Reloads after which lbstat did not list the services expected (the new ones after a
    /// valid file, the old ones after an invalid one).
    wrong_config: Vec<String>,
    peak_rss: u64,
}

/// The reload storm benchmark (`benches/reload_storm.sh`, figures in `benches/README.md`).
#[test]
#[ignore = "a benchmark: run by benches/reload_storm.sh"]
fn reload_storm_bench() {
    require_root!();
    let reloads = env_u64("STORM_RELOADS", 100);
    let seconds = env_u64("STORM_SECONDS", 20);
    let lab = Lab::dr(LabOptions::default());
    let mut state = StormState {
        scheduler: 0,
        weights: 0,
        extra: false,
    };
    let director = lab.start_director(&state.config(&lab));
    let frames_before = idle_frames(&director);
    let mut load = start_load(&lab, Duration::from_secs(seconds + 120));
    let rss_before = rss_kib(director.pid());

    let mut tally = StormTally {
        peak_rss: rss_before,
        ..StormTally::default()
    };
    let slot = Duration::from_secs(seconds) / u32::try_from(reloads.max(1)).unwrap();
    let started = Instant::now();
    for n in 0..reloads {
        storm_reload(&lab, &director, &mut state, n, &mut tally);
        tally.peak_rss = tally.peak_rss.max(rss_kib(director.pid()));
        // Pacing, not readiness: the next reload's slot.
        let next = started + slot * u32::try_from(n + 1).unwrap();
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let storm = started.elapsed();
    let during = load.count();
    // A few more requests after the last reload, then stop.
    load.wait_until("requests after the storm", Duration::from_secs(10), |r| {
        r.len() >= during + 10
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let results = load.stop();
    let frames_after = idle_frames(&director);
    let rss_after = rss_kib(director.pid());
    let (failed, first_failures) = failures_of(&results);

    let mut report = String::new();
    let _ = write!(
        report,
        "reload storm: {reloads} reloads in {:.1} s ({} valid: schedulers, weights, service \
         {EXTRA_SERVICE} added/removed; {} invalid); {} requests, {failed} failed; valid reloads \
         refused {}, invalid accepted {}, wrong config after a reload {}; director RSS \
         {rss_before} KiB before, {rss_after} KiB after ({:+.1}%), peak {} KiB; frames at rest \
         {} before, {} after: leaked {} (before {frames_before:?}, after {frames_after:?})",
        storm.as_secs_f64(),
        tally.valid,
        tally.invalid,
        results.len(),
        tally.valid_refused.len(),
        tally.invalid_accepted.len(),
        tally.wrong_config.len(),
        growth_percent(rss_before, rss_after),
        tally.peak_rss,
        frames_before.at_rest(),
        frames_after.at_rest(),
        frames_leaked(frames_before, frames_after),
    );
    for (what, list) in [
        ("failures", &first_failures),
        ("valid reloads refused", &tally.valid_refused),
        ("invalid reloads accepted", &tally.invalid_accepted),
        ("wrong config", &tally.wrong_config),
    ] {
        if !list.is_empty() {
            let _ = write!(report, "; {what}: {:?}", &list[..list.len().min(3)]);
        }
    }
    println!("{report}");
    let drops = stats::worker_drops(&director.stats());
    println!(
        "reload storm: worker drops {:?}",
        drops.iter().filter(|(_, &n)| n > 0).collect::<Vec<_>>()
    );
}

/// Reload `n` of the storm: a new scheduler, new weights, the second service toggled, or an
/// invalid file (every fourth), then lbstat's services checked against what should run.
fn storm_reload(
    lab: &Lab,
    director: &DirectorProcess,
    state: &mut StormState,
    n: u64,
    tally: &mut StormTally,
) {
    if n % 4 == 3 {
        let valid = state.config(lab).to_toml();
        let scheduler = format!("scheduler = \"{}\"", SCHEDULERS[state.scheduler]);
        assert!(valid.contains(&scheduler), "{valid}");
        director.replace_config_text(&valid.replacen(
            &scheduler,
            "scheduler = \"no-such-scheduler\"",
            1,
        ));
        let out = director.reload();
        tally.invalid += 1;
        if out.status.success() || !out.text().contains("no-such-scheduler") {
            tally.invalid_accepted.push(format!("#{n}: {out}"));
        }
    } else {
        match n % 4 {
            0 => state.scheduler = (state.scheduler + 1) % SCHEDULERS.len(),
            1 => state.weights = (state.weights + 1) % WEIGHTS.len(),
            _ => state.extra = !state.extra,
        }
        director.replace_config(&state.config(lab));
        let out = director.reload();
        tally.valid += 1;
        if !out.status.success() {
            tally.valid_refused.push(format!("#{n}: {out}"));
        }
    }
    let running = services_running(director);
    if running != state.expected_services() {
        tally
            .wrong_config
            .push(format!("#{n}: {running:?}, expected {state:?}"));
    }
}

// ---- the soak ----

/// Advertisement interval of the soak's VRRP group.
const ADVERT_INTERVAL: Duration = Duration::from_millis(100);
/// Bound on a state change, a health transition or a reload's effect.
const WITHIN: Duration = Duration::from_secs(10);
/// The real server whose HTTP server the soak stops and starts.
const FLAPPING: usize = 3;
/// The backup director of the pair (the primary is [`Host::Director`]).
const BACKUP: Host = Host::ExtraDirector(2);

/// The soak's config for one director: maglev over the three real servers with `weights`, an
/// HTTP health check, and `[ha]` with `priority` and state sync.
fn soak_config(lab: &Lab, host: Host, priority: u8, weights: &[u32; 3]) -> String {
    let mut config = lab.dr_config("maglev");
    config.stats_socket = lab.stats_socket_of(host);
    let service = &mut config.services[0];
    service.set_weights(weights);
    service.health_check = Some(HealthCheck {
        path: Some("/healthz".into()),
        expect_status: Some(200),
        ..HealthCheck::new("http").timing("200ms", "150ms", 2, 2)
    });
    // The README's advice: at least the check's interval x rise (0.4 s) plus a second, so a
    // returning primary's checks have passed before it takes the VIPs back. SOAK_PREEMPT_DELAY
    // overrides it ("0s" shows the takeback drops without it).
    let preempt_delay = std::env::var("SOAK_PREEMPT_DELAY").unwrap_or_else(|_| "2s".into());
    format!(
        "{}\n[ha]\nvrid = 61\npriority = {priority}\nadvert_interval = \"{}ms\"\nsync = true\n\
         preempt_delay = \"{preempt_delay}\"\n",
        config.to_toml(),
        ADVERT_INTERVAL.as_millis()
    )
}

fn ha_state(director: &DirectorProcess) -> String {
    director.try_stats().map_or_else(
        |_| "unreachable".to_owned(),
        |stats| stats["ha"]["state"].as_str().unwrap_or("none").to_owned(),
    )
}

fn wait_for_state(director: &DirectorProcess, state: &str) -> bool {
    director
        .wait_for_stats(&format!("VRRP state {state}"), WITHIN, |stats| {
            (stats["ha"]["state"] == state).then_some(())
        })
        .map_err(|e| eprintln!("{e:#}"))
        .is_ok()
}

/// Backends of the first service whose health is "up".
fn healthy_backends(stats: &Value) -> usize {
    stats["services"][0]["backends"]
        .as_array()
        .map_or(0, |backends| {
            backends.iter().filter(|b| b["health"] == "up").count()
        })
}

/// Waits until `director` sees the flapping server's health as `health` ("up"/"down").
fn wait_for_health(director: &DirectorProcess, health: &str) -> bool {
    let address = rs_ip(FLAPPING);
    director
        .wait_for_stats(&format!("{address} {health}"), WITHIN, |stats| {
            stats["services"][0]["backends"]
                .as_array()?
                .iter()
                .any(|b| b["address"] == address.as_str() && b["health"] == health)
                .then_some(())
        })
        .map_err(|e| eprintln!("{e:#}"))
        .is_ok()
}

/// The soak's phases, in the order of a cycle (requests are attributed to the phase during which
/// the load reported them).
const PHASES: [&str; 5] = [
    "a server down, until seen down",
    "the server back",
    "reload",
    "failover",
    "steady",
];

/// What the soak did, and requests by what was going on when they were sent.
#[derive(Default)]
struct SoakTally {
    cycles: usize,
    flaps: usize,
    reloads: usize,
    reloads_refused: Vec<String>,
    failovers: usize,
    /// Times the primary was master again (and the backup backup) while its own health checks
    /// still saw real servers down (they failed while its link was down).
    preempted_with_servers_down: usize,
    /// Steps that did not reach the state they wait for within [`WITHIN`].
    stuck: Vec<String>,
    /// (phase, first request index, end index) for attributing failures.
    phases: Vec<(&'static str, usize, usize)>,
}

impl SoakTally {
    fn phase(&mut self, name: &'static str, load: &LoadHandle, step: impl FnOnce(&mut Self)) {
        let from = load.count();
        step(self);
        self.phases.push((name, from, load.count()));
    }
}

/// The soak benchmark (`benches/soak.sh [MINUTES]`, figures in `benches/README.md`).
#[test]
#[ignore = "a benchmark: run by benches/soak.sh"]
fn soak_bench() {
    require_root!();
    let minutes = env_u64("SOAK_MINUTES", 2);
    let length = Duration::from_secs(minutes * 60);
    let lab = Lab::dr(LabOptions::directors(2, 3));
    let mut weights = [1, 1, 1];
    let primary_config = lab.write_config_text(&soak_config(&lab, Host::Director, 150, &weights));
    let backup_config = lab.write_config_text(&soak_config(&lab, BACKUP, 100, &weights));
    let primary = lab.start_director_on(
        Host::Director,
        &primary_config,
        &lab.stats_socket_of(Host::Director),
        true,
    );
    let backup = lab.start_director_on(BACKUP, &backup_config, &lab.stats_socket_of(BACKUP), false);
    assert!(wait_for_state(&primary, "MASTER") && wait_for_state(&backup, "BACKUP"));
    assert!(wait_for_health(&primary, "up") && wait_for_health(&backup, "up"));
    let directors = [(Host::Director, &primary, 150), (BACKUP, &backup, 100)];
    let frames_before = directors.map(|(_, d, _)| idle_frames(d));
    let mut load = start_load(&lab, length + Duration::from_secs(180));
    let rss_before = directors.map(|(_, d, _)| rss_kib(d.pid()));

    let mut tally = SoakTally::default();
    let started = Instant::now();
    // Each cycle takes a few seconds; the count bound is a backstop.
    while started.elapsed() < length && tally.cycles < 10_000 {
        tally.cycles += 1;
        soak_cycle(
            &lab,
            [&primary, &backup],
            &mut load,
            &mut weights,
            &mut tally,
        );
    }
    let soaked = started.elapsed();
    let results = load.stop();
    let frames_after = directors.map(|(_, d, _)| idle_frames(d));
    let rss_after = directors.map(|(_, d, _)| rss_kib(d.pid()));
    let (failed, first_failures) = failures_of(&results);

    let mut report = format!(
        "soak: {:.1} min, {} cycles: {} health flaps of rs{FLAPPING}, {} reloads ({} refused), \
         {} failovers (master's link down, then back and preempting); {} requests, {} ok, \
         {failed} failed; the primary back as master with real servers still down by its own \
         checks {} times",
        soaked.as_secs_f64() / 60.0,
        tally.cycles,
        tally.flaps,
        tally.reloads,
        tally.reloads_refused.len(),
        tally.failovers,
        results.len(),
        results.len() - failed,
        tally.preempted_with_servers_down,
    );
    report.push_str(&phases_report(&results, &tally));
    for (n, (host, director, _)) in directors.iter().enumerate() {
        let _ = write!(
            report,
            "; {host} ({}): RSS {} KiB before, {} KiB after ({:+.1}%), frames at rest {} before, \
             {} after: leaked {}, worker drops {:?}",
            ha_state(director),
            rss_before[n],
            rss_after[n],
            growth_percent(rss_before[n], rss_after[n]),
            frames_before[n].at_rest(),
            frames_after[n].at_rest(),
            frames_leaked(frames_before[n], frames_after[n]),
            nonzero_drops(director),
        );
    }
    for (what, list) in [
        ("failures", &first_failures),
        ("reloads refused", &tally.reloads_refused),
        ("steps stuck", &tally.stuck),
    ] {
        if !list.is_empty() {
            let _ = write!(report, "; {what}: {:?}", &list[..list.len().min(3)]);
        }
    }
    println!("{report}");
}

/// One soak cycle: a health flap, a reload of both directors, a failover and back, then 20
/// requests of steady state; requests attributed to each phase in `tally`.
fn soak_cycle(
    lab: &Lab,
    [primary, backup]: [&DirectorProcess; 2],
    load: &mut LoadHandle,
    weights: &mut [u32; 3],
    tally: &mut SoakTally,
) {
    let directors = [(Host::Director, primary, 150), (BACKUP, backup, 100)];
    tally.phase("a server down, until seen down", load, |tally| {
        lab.stop_http(FLAPPING);
        if !directors.iter().all(|(_, d, _)| wait_for_health(d, "down")) {
            tally
                .stuck
                .push(format!("cycle {}: rs{FLAPPING} down", tally.cycles));
        }
    });
    tally.phase("the server back", load, |tally| {
        lab.start_http(FLAPPING);
        if !directors.iter().all(|(_, d, _)| wait_for_health(d, "up")) {
            tally
                .stuck
                .push(format!("cycle {}: rs{FLAPPING} up", tally.cycles));
        }
        tally.flaps += 1;
    });
    tally.phase("reload", load, |tally| {
        weights.rotate_left(1);
        weights[0] += 1;
        if weights[0] > 5 {
            weights[0] = 1;
        }
        for (host, director, priority) in directors {
            director.replace_config_text(&soak_config(lab, host, priority, weights));
            let out = director.reload();
            tally.reloads += 1;
            if !out.status.success() {
                tally.reloads_refused.push(format!("{out}"));
            }
        }
    });
    tally.phase("failover", load, |tally| {
        lab.set_link(Host::Director, false);
        if !wait_for_state(backup, "MASTER") {
            tally
                .stuck
                .push(format!("cycle {}: backup master", tally.cycles));
        }
        tally.failovers += 1;
        lab.set_link(Host::Director, true);
        if !(wait_for_state(primary, "MASTER") && wait_for_state(backup, "BACKUP")) {
            tally
                .stuck
                .push(format!("cycle {}: primary back", tally.cycles));
        }
        tally.failovers += 1;
        // Its health checks failed while its link was down: are they back yet?
        if let Ok(stats) = primary.try_stats() {
            if healthy_backends(&stats) < lab.real_servers() {
                tally.preempted_with_servers_down += 1;
            }
        }
    });
    let from = load.count();
    let _ = load.wait_until("steady requests", WITHIN, |r| r.len() >= from + 20);
    tally.phases.push(("steady", from, load.count()));
}

/// Requests sent and failed during each phase of [`PHASES`], with the first few failures.
fn phases_report(results: &[anyhow::Result<HttpResponse>], tally: &SoakTally) -> String {
    let mut report = String::new();
    for phase in PHASES {
        let (mut sent, mut lost, mut examples) = (0, 0, Vec::new());
        for &(_, from, to) in tally.phases.iter().filter(|(name, _, _)| *name == phase) {
            let slice = &results[from.min(results.len())..to.min(results.len())];
            sent += slice.len();
            for (n, error) in slice
                .iter()
                .enumerate()
                .filter_map(|(n, r)| Some((n, r.as_ref().err()?)))
            {
                lost += 1;
                if examples.len() < 3 {
                    examples.push(format!("#{n} of {} in the phase: {error:#}", slice.len()));
                }
            }
        }
        let _ = write!(
            report,
            "; during {phase}: {lost}/{sent} failed {examples:?}"
        );
    }
    report
}
