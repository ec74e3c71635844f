//! One checker thread for hundreds of real servers: 300 listeners on 127.0.0.1, each checked
//! every 100 ms, all checked again and again while the process has exactly one thread more (the
//! checker's) than before, and back to as many once it stops. Alone in its own test binary, so
//! no other test's threads move the count.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::config::{CheckKind, HealthCheckConfig, OnFailure};
use control::health::{Health, HealthChecker, Target};

const SERVERS: usize = 300;
/// Bound on every server having been checked CHECKS times: 100 ms intervals make it about
/// half a second; the bound is generous for a loaded machine.
const WAIT: Duration = Duration::from_secs(30);
const CHECKS: u64 = 5;

/// The process's thread count, from /proc/self/status.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("Threads: in /proc/self/status")
}

#[test]
fn three_hundred_servers_are_checked_by_one_thread() {
    let listeners: Vec<TcpListener> = (0..SERVERS)
        .map(|_| {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            listener.set_nonblocking(true).unwrap();
            listener
        })
        .collect();
    let check = Arc::new(HealthCheckConfig {
        kind: CheckKind::Tcp,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        rise: 2,
        fall: 3,
        port: None,
        on_failure: OnFailure::Remove,
    });
    let targets: Vec<Target> = listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| {
            let SocketAddr::V4(address) = listener.local_addr().unwrap() else {
                unreachable!("bound to an IPv4 address")
            };
            Target {
                // One service per server: every one is a distinct (service, address).
                id: (format!("service{index}"), (*address.ip()).into()),
                address: SocketAddr::V4(address),
                check: Arc::clone(&check),
            }
        })
        .collect();
    let ids: Vec<_> = targets.iter().map(|target| target.id.clone()).collect();

    let before = threads();
    let checker = HealthChecker::start(targets).unwrap();
    let board = checker.board();
    let deadline = Instant::now() + WAIT;
    loop {
        // Take the checks' connections off the accept queues (on this thread), so the queues
        // never fill and every check is accepted.
        for listener in &listeners {
            while listener.accept().is_ok() {}
        }
        assert_eq!(threads(), before + 1, "the checker uses one thread");
        let done = ids
            .iter()
            .filter(|id| {
                board
                    .get(id)
                    .is_some_and(|entry| entry.checks_passed >= CHECKS)
            })
            .count();
        if done == SERVERS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {SERVERS} servers were checked {CHECKS} times within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let board = board.snapshot();
    let failed: Vec<_> = board
        .iter()
        .filter(|(_, entry)| entry.checks_failed > 0 || entry.health != Health::Up)
        .collect();
    assert!(failed.is_empty(), "checks failed: {failed:?}");
    assert!(checker.transitions().is_empty());

    drop(checker);
    assert_eq!(
        threads(),
        before,
        "the checker's thread is gone once it stops"
    );
}
