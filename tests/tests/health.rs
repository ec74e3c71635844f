//! End-to-end: health checks in the namespace lab. A real server whose HTTP server is killed
//! leaves the pool within fall x interval (+ timeout), no request reaches it while it is out,
//! and it comes back after rise successes; with `inhibit` it stays at weight 0; with every real
//! server down the fallback serves; tcp, send/expect and exec checks; health kept across a
//! reload; and under NAT, where the answers to the director's checks come from NAT real servers
//! and must reach the director's kernel, not its workers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use director_lab::{
    assert_all_ok, require_root, rs_name, tally, vip_url, DirectorConfig, DirectorProcess,
    HealthCheck, HttpResponse, Lab, LabOptions,
};
use serde_json::Value;

/// The checks' timing in every test but exec's: every 400 ms, 350 ms to answer.
const INTERVAL: Duration = Duration::from_millis(400);
const TIMEOUT: Duration = Duration::from_millis(350);
const RISE: u32 = 2;
const FALL: u32 = 3;
/// What the bounds below add for lbstat round trips, a busy machine and the first check's
/// jitter (up to one interval after start).
const SLACK: Duration = Duration::from_secs(3);
/// Requests sent while a server is out (or back).
const REQUESTS: usize = 60;

fn timed(check: HealthCheck) -> HealthCheck {
    let ms = |duration: Duration| format!("{}ms", duration.as_millis());
    HealthCheck {
        interval: Some(ms(INTERVAL)),
        timeout: Some(ms(TIMEOUT)),
        rise: Some(RISE),
        fall: Some(FALL),
        ..check
    }
}

/// `GET /healthz` must answer 200 with `ok` in the body (the lab's servers do).
fn http_check() -> HealthCheck {
    timed(HealthCheck {
        path: Some("/healthz".into()),
        expect_status: Some(200),
        expect_body: Some("ok".into()),
        ..HealthCheck::new("http")
    })
}

/// How long a server may take to be seen down: `fall` checks an interval apart, the last one
/// timing out at worst.
fn down_bound(interval: Duration, timeout: Duration, fall: u32) -> Duration {
    interval * fall + timeout + SLACK
}

/// How long a server may take to be seen up again.
fn up_bound(interval: Duration, timeout: Duration, rise: u32) -> Duration {
    interval * rise + timeout + SLACK
}

/// Backend `address` of the only service, as lbstat's JSON has it.
fn backend(stats: &Value, address: &str) -> Option<Value> {
    stats["services"][0]["backends"]
        .as_array()?
        .iter()
        .find(|backend| backend["address"] == address)
        .cloned()
}

fn number(backend: &Value, key: &str) -> u64 {
    backend[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {backend}"))
}

/// Waits until backend `address` reports health `health` (and `more` holds), returns it.
fn wait_health(
    director: &DirectorProcess,
    address: &str,
    health: &str,
    within: Duration,
    more: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    let found = director
        .wait_for_stats(&format!("{address} to be {health}"), within, |stats| {
            backend(stats, address).filter(|backend| backend["health"] == health && more(backend))
        })
        .unwrap_or_else(|e| panic!("{e:#}\n--- director log ---\n{}", director.log()));
    println!("{address} {health} after {:?}", started.elapsed());
    found
}

/// Waits until every configured server has passed `checks` checks.
fn wait_checked(director: &DirectorProcess, addresses: &[String], checks: u64) {
    for address in addresses {
        wait_health(
            director,
            address,
            "up",
            up_bound(INTERVAL, TIMEOUT, 1) * 2,
            |backend| number(backend, "checks_passed") >= checks,
        );
    }
}

/// Waits until backend `address` reports `health`, "up" or "down" (and `more` holds), within
/// the standard timing's bound for that change; returns it.
fn wait_standard(
    director: &DirectorProcess,
    address: &str,
    health: &str,
    more: impl Fn(&Value) -> bool,
) -> Value {
    let within = match health {
        "down" => down_bound(INTERVAL, TIMEOUT, FALL),
        "up" => up_bound(INTERVAL, TIMEOUT, RISE),
        other => panic!("no bound for health {other:?}"),
    };
    wait_health(director, address, health, within, more)
}

fn wait_down(director: &DirectorProcess, address: &str) -> Value {
    wait_standard(director, address, "down", |_| true)
}

fn wait_up(director: &DirectorProcess, address: &str) -> Value {
    wait_standard(director, address, "up", |_| true)
}

/// The lab's three real servers' addresses.
fn addresses(lab: &Lab) -> Vec<String> {
    (1..=3).map(|i| lab.rs_address(i)).collect()
}

/// Starts the director on `config` with `check` on its service; returns once every real server
/// has passed `checks` checks.
fn start_checked(
    lab: &Lab,
    config: &mut DirectorConfig,
    check: HealthCheck,
    checks: u64,
) -> DirectorProcess {
    config.services[0].health_check = Some(check);
    let director = lab.start_director(config);
    wait_checked(&director, &addresses(lab), checks);
    director
}

fn servers(results: &[anyhow::Result<HttpResponse>]) -> Vec<String> {
    tally(results).into_keys().collect()
}

fn names(indices: &[usize]) -> Vec<String> {
    indices.iter().map(|&i| rs_name(i)).collect()
}

/// Sends `count` requests to the VIP, which must all succeed (`what` names the situation).
fn get_all_ok(lab: &Lab, count: usize, what: &str) -> Vec<anyhow::Result<HttpResponse>> {
    let results = lab.http_get_many(count, &vip_url());
    assert_all_ok(&results, what);
    results
}

/// Sends `count` requests to the VIP, which must all succeed and be served by exactly the real
/// servers `expected` (1-based).
#[track_caller]
fn assert_served_by(
    lab: &Lab,
    director: &DirectorProcess,
    count: usize,
    what: &str,
    expected: &[usize],
) {
    let results = get_all_ok(lab, count, what);
    assert_eq!(
        servers(&results),
        names(expected),
        "{what}: served {:?}; backends {:#}",
        tally(&results),
        director.stats()["services"][0]["backends"]
    );
}

#[test]
fn a_dead_server_leaves_the_pool_and_comes_back_after_rise_successes() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let director = start_checked(&lab, &mut lab.dr_config("rr"), http_check(), 2);
    let addresses = addresses(&lab);
    let rs2 = lab.rs_address(2);

    lab.stop_http(2);
    let down = wait_down(&director, &rs2);
    assert_eq!(down["last_check_failure"], "connection refused", "{down}");
    assert_eq!(number(&down, "health_transitions"), 1, "{down}");
    assert!(number(&down, "checks_failed") >= u64::from(FALL), "{down}");
    assert_eq!(down["disabled"], false, "{down}");
    assert_served_by(&lab, &director, REQUESTS, "rs2 out of the pool", &[1, 3]);

    lab.start_http(2);
    let up = wait_up(&director, &rs2);
    assert_eq!(number(&up, "health_transitions"), 2, "{up}");
    let results = get_all_ok(&lab, REQUESTS, "rs2 back");
    let served = tally(&results);
    assert_eq!(
        served.values().copied().collect::<Vec<_>>(),
        [REQUESTS / 3; 3],
        "rr over all three again: {served:?}"
    );

    let stats = director.stats();
    for address in [&addresses[0], &addresses[2]] {
        let backend = backend(&stats, address).unwrap();
        assert_eq!(number(&backend, "health_transitions"), 0, "{backend}");
        assert_eq!(number(&backend, "checks_failed"), 0, "{backend}");
    }
    let log = director.log();
    for line in [
        format!("health check: service web backend {rs2}: up -> down (connection refused)"),
        format!(
            "health check: service web backend {rs2}: down -> up ({RISE} check(s) passed in a row)"
        ),
    ] {
        assert!(log.contains(&line), "the log lacks {line:?}:\n{log}");
    }
    let table = director.lbstat_table().unwrap();
    assert!(
        table.contains("checks: passed=")
            && table.contains("transitions=2 last failure: connection refused"),
        "{table}"
    );
}

#[test]
fn inhibit_keeps_a_dead_server_at_weight_0() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let inhibit = HealthCheck {
        on_failure: Some("inhibit".into()),
        ..http_check()
    };
    let director = start_checked(&lab, &mut lab.dr_config("rr"), inhibit, 1);
    let rs2 = lab.rs_address(2);

    lab.stop_http(2);
    let down = wait_standard(&director, &rs2, "down", |backend| backend["weight"] == 0);
    // Still in the table (its flows continue), at weight 0, not disabled.
    assert_eq!(down["disabled"], false, "{down}");
    assert!(down["mac"].is_string(), "{down}");
    assert_served_by(&lab, &director, REQUESTS, "rs2 inhibited", &[1, 3]);

    lab.start_http(2);
    wait_standard(&director, &rs2, "up", |backend| backend["weight"] == 1);
    assert_served_by(&lab, &director, REQUESTS, "rs2 back", &[1, 2, 3]);
}

#[test]
fn the_fallback_serves_while_every_real_server_is_down() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let mut config = lab.dr_config_over("rr", &[1]);
    let rs1 = lab.rs_address(1);
    let rs3 = lab.rs_address(3);
    config.services[0].fallback = Some(format!("{rs3}:80"));
    config.services[0].health_check = Some(http_check());
    let director = lab.start_director(&config);
    wait_checked(&director, std::slice::from_ref(&rs1), 1);
    assert!(
        backend(&director.stats(), &rs3).is_none(),
        "the fallback is listed while rs1 serves"
    );
    assert_served_by(&lab, &director, 10, "rs1 up", &[1]);

    lab.stop_http(1);
    wait_down(&director, &rs1);
    let fallback = director
        .wait_for_stats("the fallback in the pool", SLACK, |stats| {
            backend(stats, &rs3).filter(|backend| backend["fallback"] == true)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        fallback["mac"].is_string(),
        "the fallback's MAC is resolved: {fallback}"
    );
    assert_served_by(&lab, &director, REQUESTS, "fallback serving", &[3]);

    lab.start_http(1);
    wait_up(&director, &rs1);
    director
        .wait_for_stats("the fallback out of the pool", SLACK, |stats| {
            backend(stats, &rs3).is_none().then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_served_by(&lab, &director, REQUESTS, "rs1 back", &[1]);
    let log = director.log();
    assert!(
        log.contains(&format!(
            "service web: no real server left in the pool; fallback {rs3} takes new flows"
        )),
        "{log}"
    );
}

/// A tcp check finds a dead server; a reload to a send/expect check keeps it down (a reload
/// must not put a failing server back) with its counters, and the send/expect check brings it
/// back once it answers.
#[test]
fn tcp_and_send_expect_checks_and_health_across_a_reload() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let mut config = lab.dr_config("rr");
    let director = start_checked(&lab, &mut config, timed(HealthCheck::new("tcp")), 2);
    let addresses = addresses(&lab);
    let rs2 = lab.rs_address(2);
    lab.stop_http(2);
    let down = wait_down(&director, &rs2);
    assert_eq!(down["last_check_failure"], "connection refused", "{down}");
    let failed_before = number(&down, "checks_failed");

    config.services[0].health_check = Some(timed(HealthCheck {
        send: Some("GET /healthz HTTP/1.0\r\n\r\n".into()),
        expect: Some("ok".into()),
        ..HealthCheck::new("send_expect")
    }));
    director.replace_config(&config);
    director.reload().assert_ok();
    let after = backend(&director.stats(), &rs2).unwrap();
    assert_eq!(
        after["health"], "down",
        "the reload put a failing server back: {after}"
    );
    assert_eq!(number(&after, "health_transitions"), 1, "{after}");
    assert!(number(&after, "checks_failed") >= failed_before, "{after}");
    assert_served_by(
        &lab,
        &director,
        REQUESTS,
        "rs2 out after the reload",
        &[1, 3],
    );

    lab.start_http(2);
    wait_up(&director, &rs2);
    // The other two passed send/expect checks too, without a failure since the reload.
    for address in [&addresses[0], &addresses[2]] {
        let backend = backend(&director.stats(), address).unwrap();
        assert_eq!(
            (
                number(&backend, "checks_failed"),
                backend["health"].as_str()
            ),
            (0, Some("up")),
            "{backend}"
        );
    }
    assert_served_by(&lab, &director, REQUESTS, "rs2 back", &[1, 2, 3]);
}

/// The real Python interpreter by absolute path (exec checks run without a shell; a pyenv shim
/// would add a shell script's start-up to every check), or `LAB_PYTHON`.
fn python3() -> PathBuf {
    if let Some(python) = std::env::var_os("LAB_PYTHON") {
        return PathBuf::from(python);
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs (the lab needs it anyway)");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn an_exec_check_runs_a_program_per_server() {
    require_root!();
    let lab = Lab::dr(LabOptions::default());
    let mut config: DirectorConfig = lab.dr_config("rr");
    // A program start costs more than a connection: a roomier timing than the other tests.
    let (interval, timeout, fall) = (Duration::from_secs(1), Duration::from_secs(1), 3);
    config.services[0].health_check = Some(HealthCheck {
        command: Some(vec![
            python3().to_string_lossy().into_owned(),
            "-c".into(),
            "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5).close()"
                .into(),
            "{address}".into(),
            "{port}".into(),
        ]),
        interval: Some("1s".into()),
        timeout: Some("1s".into()),
        rise: Some(RISE),
        fall: Some(fall),
        ..HealthCheck::new("exec")
    });
    let director = lab.start_director(&config);
    let rs3 = lab.rs_address(3);
    wait_health(
        &director,
        &rs3,
        "up",
        up_bound(interval, timeout, 1) * 2,
        |backend| number(backend, "checks_passed") >= 1,
    );
    lab.stop_http(3);
    let down = wait_health(
        &director,
        &rs3,
        "down",
        down_bound(interval, timeout, fall),
        |_| true,
    );
    assert_eq!(down["last_check_failure"], "exit status 1", "{down}");
    assert_served_by(&lab, &director, REQUESTS, "rs3 out", &[1, 2]);
    lab.start_http(3);
    wait_health(
        &director,
        &rs3,
        "up",
        up_bound(interval, timeout, RISE),
        |_| true,
    );
}

/// Under NAT the checks' answers come from NAT real servers, whose frames the server side's
/// classifier steers to the workers; addressed to the director itself, they must reach its
/// kernel instead, or every server would fail its checks.
#[test]
fn nat_real_servers_answer_the_directors_checks() {
    require_root!();
    let lab = Lab::nat(LabOptions::default());
    let director = start_checked(&lab, &mut lab.nat_config("rr", None), http_check(), 3);
    let stats = director.stats();
    for address in &addresses(&lab) {
        let backend = backend(&stats, address).unwrap();
        assert_eq!(number(&backend, "checks_failed"), 0, "{backend}");
    }
    let to_director = director_lab::stats::xdp_counter(&stats, "to_director");
    assert!(
        to_director > 0,
        "no check answer was passed to the kernel: {}",
        stats["xdp"]
    );
    assert_served_by(&lab, &director, 30, "NAT with health checks", &[1, 2, 3]);

    lab.stop_http(1);
    let rs1 = lab.rs_address(1);
    wait_down(&director, &rs1);
    assert_served_by(&lab, &director, 30, "NAT, rs1 out", &[2, 3]);
}
