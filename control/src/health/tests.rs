//! The checker against real servers on 127.0.0.1 and ::1 (std listeners served by threads of
//! the test) and real programs: every kind passing and failing for the reasons an operator would read,
//! timeouts, exec checks killed and reaped, rise/fall, and updates keeping state.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::*;
use crate::config::OnFailure;

/// Bound on anything a test waits for: generous next to the intervals and timeouts used.
const WAIT: Duration = Duration::from_secs(10);

fn check(kind: CheckKind, interval_ms: u64, timeout_ms: u64) -> Arc<HealthCheckConfig> {
    Arc::new(HealthCheckConfig {
        kind,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        rise: 1,
        fall: 1,
        port: None,
        on_failure: OnFailure::Remove,
    })
}

fn target(name: &str, address: SocketAddr, check: &Arc<HealthCheckConfig>) -> Target {
    Target {
        id: (name.to_owned(), address.ip()),
        address,
        check: Arc::clone(check),
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
}

fn local6(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind(local(0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `board` until `id`'s entry satisfies `ready`, and returns it.
fn wait_for(
    board: &HealthBoard,
    id: &BackendId,
    what: &str,
    ready: impl Fn(&BackendHealth) -> bool,
) -> BackendHealth {
    let deadline = Instant::now() + WAIT;
    loop {
        let entry = board.get(id);
        if let Some(entry) = entry.as_ref().filter(|entry| ready(entry)) {
            return entry.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}; last entry {entry:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs checks of `kind` against `address` and returns the first result: `Ok` or why not.
/// (The first check comes within one interval, which is the timeout here.)
fn first_result(kind: CheckKind, address: SocketAddr, timeout_ms: u64) -> Result<(), String> {
    let check = check(kind, timeout_ms, timeout_ms);
    let target = target("web", address, &check);
    let id = target.id.clone();
    let checker = HealthChecker::start(vec![target]).unwrap();
    let board = checker.board();
    let entry = wait_for(&board, &id, "the first check", |entry| {
        entry.checks_passed + entry.checks_failed > 0
    });

    if entry.checks_passed > 0 {
        Ok(())
    } else {
        Err(entry.last_failure.unwrap_or_default())
    }
}

/// A server on 127.0.0.1 (or ::1) that answers each connection with `answer(request)` once it has read
/// a request (up to a blank line, or `request_end`), then closes. Sends each request it read.
struct Server {
    address: SocketAddr,
    requests: mpsc::Receiver<String>,
    _thread: JoinHandle<()>,
}

impl Server {
    fn start(request_end: &'static str, answer: fn(&str) -> Vec<u8>) -> Server {
        Server::start_on(local(0), request_end, answer)
    }

    fn start_on(
        bind: SocketAddr,
        request_end: &'static str,
        answer: fn(&str) -> Vec<u8>,
    ) -> Server {
        let listener = TcpListener::bind(bind).unwrap();
        let address = listener.local_addr().unwrap();
        let (sender, requests) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                stream.set_read_timeout(Some(WAIT)).unwrap();
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !String::from_utf8_lossy(&request).contains(request_end) {
                    match stream.read(&mut byte) {
                        Ok(1) => request.push(byte[0]),
                        _ => break,
                    }
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let _ = stream.write_all(&answer(&request));
                if sender.send(request).is_err() {
                    return;
                }
            }
        });
        Server {
            address,
            requests,
            _thread: thread,
        }
    }
}

fn http(path: &str, expect_body: Option<&str>) -> CheckKind {
    CheckKind::Http {
        path: path.to_owned(),
        expect_status: 200,
        expect_body: expect_body.map(str::to_owned),
    }
}

#[test]
fn tcp_check_passes_when_accepted_and_fails_when_refused() {
    let listener = TcpListener::bind(local(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(first_result(CheckKind::Tcp, local(port), 500), Ok(()));
    assert_eq!(
        first_result(CheckKind::Tcp, local(closed_port()), 500),
        Err("connection refused".to_owned())
    );
}

#[test]
fn tcp_check_times_out_when_the_server_never_completes_a_connection() {
    // An accept queue of 0 holds one connection; once it is full the kernel drops SYNs, so a
    // further connect neither succeeds nor fails until long after the check's timeout.
    let listener = sys::listen_with_backlog(local(0), 0);
    let address = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    while fillers.len() < 64 {
        match TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => break,
        }
    }
    assert!(fillers.len() < 64, "the accept queue never filled");
    let started = Instant::now();
    assert_eq!(
        first_result(CheckKind::Tcp, address, 200),
        Err("timeout (200ms) while connecting".to_owned())
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn http_check_judges_status_and_body() {
    let healthy = Server::start("\r\n\r\n", |_| {
        b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n".to_vec()
    });
    assert_eq!(
        first_result(http("/healthz", Some("ok")), healthy.address, 1000),
        Ok(())
    );
    let request = healthy.requests.recv_timeout(WAIT).unwrap();
    assert!(
        request.starts_with(&format!(
            "GET /healthz HTTP/1.0\r\nHost: {}\r\n",
            healthy.address
        )),
        "{request:?}"
    );
    assert_eq!(first_result(http("/", None), healthy.address, 1000), Ok(()));
    assert_eq!(
        first_result(http("/healthz", Some("ready")), healthy.address, 1000),
        Err("body lacks \"ready\"".to_owned())
    );

    let failing = Server::start("\r\n\r\n", |_| {
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec()
    });
    assert_eq!(
        first_result(http("/healthz", None), failing.address, 1000),
        Err("status 503 (expected 200)".to_owned())
    );
    let mute = Server::start("\r\n\r\n", |_| Vec::new());
    assert_eq!(
        first_result(http("/healthz", None), mute.address, 1000),
        Err("closed without answering".to_owned())
    );
}

#[test]
fn http_check_times_out_waiting_for_a_slow_answer() {
    // Accepted by the kernel, never read or answered.
    let listener = TcpListener::bind(local(0)).unwrap();
    let address = listener.local_addr().unwrap();
    assert_eq!(
        first_result(http("/", None), address, 200),
        Err("timeout (200ms) while waiting for the answer".to_owned())
    );
}

#[test]
fn send_expect_check_sends_and_looks_for_the_answer() {
    let send_expect = |send: &str| CheckKind::SendExpect {
        send: send.to_owned(),
        expect: "PONG".to_owned(),
    };
    let pong = Server::start("\r\n", |request| {
        if request == "PING\r\n" {
            b"+PONG\r\n".to_vec()
        } else {
            b"-ERR unknown command\r\n".to_vec()
        }
    });
    assert_eq!(
        first_result(send_expect("PING\r\n"), pong.address, 1000),
        Ok(())
    );
    assert_eq!(pong.requests.recv_timeout(WAIT).unwrap(), "PING\r\n");
    assert_eq!(
        first_result(send_expect("QUIT\r\n"), pong.address, 1000),
        Err("answer lacks \"PONG\": \"-ERR unknown command\\r\\n\"".to_owned())
    );
    // A banner protocol: nothing sent, the greeting judged.
    let banner = Server::start("", |_| b"PONG ready\r\n".to_vec());
    assert_eq!(first_result(send_expect(""), banner.address, 1000), Ok(()));
}

/// `/bin/sh -c SCRIPT sh ARGS...`, as an exec check.
fn shell(script: &str, arguments: &[&str]) -> CheckKind {
    let mut command = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        script.to_owned(),
        "sh".to_owned(),
    ];
    command.extend(arguments.iter().map(|&argument| argument.to_owned()));
    CheckKind::Exec { command }
}

#[test]
fn exec_check_passes_on_exit_status_0_with_address_and_port_substituted() {
    let address = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 11).into(), 8080);
    assert_eq!(
        first_result(
            shell(
                "test \"$1\" = 192.0.2.11 && test \"$2\" = 8080 && test \"$3\" = 192.0.2.11:8080",
                &["{address}", "{port}", "{address}:{port}"]
            ),
            address,
            2000
        ),
        Ok(())
    );
    assert_eq!(
        first_result(shell("exit 3", &[]), address, 2000),
        Err("exit status 3".to_owned())
    );
    assert_eq!(
        first_result(shell("kill -TERM $$", &[]), address, 2000),
        Err("killed by signal 15".to_owned())
    );
    let missing = CheckKind::Exec {
        command: vec!["/nonexistent/check".to_owned()],
    };
    let failure = first_result(missing, address, 2000).unwrap_err();
    assert!(
        failure.starts_with("cannot run /nonexistent/check: No such file"),
        "{failure}"
    );
}

/// Every kind against real servers on ::1, the same code path as a real server on
/// 2001:db8::11 (an AF_INET6 socket; the lab's namespace tests reach those).
mod ipv6 {
    use super::*;

    #[test]
    fn tcp_check_passes_when_accepted_and_fails_when_refused() {
        let Ok(listener) = TcpListener::bind(local6(0)) else {
            return; // no IPv6 on this host's loopback
        };
        let address = listener.local_addr().unwrap();
        assert!(address.is_ipv6());
        assert_eq!(first_result(CheckKind::Tcp, address, 500), Ok(()));
        drop(listener);
        assert_eq!(
            first_result(CheckKind::Tcp, address, 500),
            Err("connection refused".to_owned())
        );
    }

    #[test]
    fn http_check_sends_a_bracketed_host_and_judges_the_answer() {
        if TcpListener::bind(local6(0)).is_err() {
            return;
        }
        let healthy = Server::start_on(local6(0), "\r\n\r\n", |_| {
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n".to_vec()
        });
        assert_eq!(
            first_result(http("/healthz", Some("ok")), healthy.address, 1000),
            Ok(())
        );
        let request = healthy.requests.recv_timeout(WAIT).unwrap();
        let host = format!("Host: [::1]:{}\r\n", healthy.address.port());
        assert!(
            request.starts_with(&format!("GET /healthz HTTP/1.0\r\n{host}")),
            "{request:?}"
        );
        let failing = Server::start_on(local6(0), "\r\n\r\n", |_| {
            b"HTTP/1.1 503 Service Unavailable\r\n\r\n".to_vec()
        });
        assert_eq!(
            first_result(http("/healthz", None), failing.address, 1000),
            Err("status 503 (expected 200)".to_owned())
        );
    }

    #[test]
    fn send_expect_check_sends_and_looks_for_the_answer() {
        if TcpListener::bind(local6(0)).is_err() {
            return;
        }
        let send_expect = |send: &str| CheckKind::SendExpect {
            send: send.to_owned(),
            expect: "PONG".to_owned(),
        };
        let pong = Server::start_on(local6(0), "\r\n", |request| {
            if request == "PING\r\n" {
                b"+PONG\r\n".to_vec()
            } else {
                b"-ERR\r\n".to_vec()
            }
        });
        assert_eq!(
            first_result(send_expect("PING\r\n"), pong.address, 1000),
            Ok(())
        );
        assert_eq!(pong.requests.recv_timeout(WAIT).unwrap(), "PING\r\n");
        assert_eq!(
            first_result(send_expect("QUIT\r\n"), pong.address, 1000),
            Err("answer lacks \"PONG\": \"-ERR\\r\\n\"".to_owned())
        );
    }

    #[test]
    fn exec_check_gets_the_bare_address_in_arguments_and_environment() {
        let address: SocketAddr = "[2001:db8::11]:8080".parse().unwrap();
        assert_eq!(
            first_result(
                shell(
                    "test \"$1\" = 2001:db8::11 && test \"$2\" = 8080 \
                     && test \"$DIRECTOR_CHECK_ADDRESS\" = 2001:db8::11 \
                     && test \"$DIRECTOR_CHECK_PORT\" = 8080 \
                     && test \"$DIRECTOR_CHECK_FAMILY\" = ipv6",
                    &["{address}", "{port}"]
                ),
                address,
                2000
            ),
            Ok(())
        );
        // The same script fails for an IPv4 server: the test can tell them apart.
        assert!(first_result(
            shell("test \"$DIRECTOR_CHECK_FAMILY\" = ipv6", &[]),
            "192.0.2.11:8080".parse().unwrap(),
            2000
        )
        .is_err());
    }
}

/// A scratch directory for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("director-health-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name.
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .is_some_and(|state| state != 'Z')
}

#[test]
fn exec_check_is_killed_at_its_timeout_with_what_it_started_and_reaped() {
    let scratch = Scratch::new("kill");
    let pids = scratch.0.join("pids");
    // The check's shell starts a helper in the background, records both pids (renamed into
    // place, so the file is whole or absent), and hangs. On a loaded machine the timeout can
    // fire before the shell got that far; then the check is tried again with a longer one.
    let script = "sleep 30 & echo $$ $! > \"$1.part\"; mv \"$1.part\" \"$1\"; wait";
    let mut recorded = None;
    for timeout_ms in [300, 1_000, 3_000, 10_000] {
        let kind = shell(script, &[pids.to_str().unwrap()]);
        let failure = first_result(kind, local(1), timeout_ms).unwrap_err();
        assert_eq!(
            failure,
            format!(
                "timeout ({}): killed",
                format_duration(Duration::from_millis(timeout_ms))
            )
        );
        if let Ok(text) = std::fs::read_to_string(&pids) {
            recorded = Some(text);
            break;
        }
    }
    let recorded = recorded.expect("the check never recorded its pids, even with a 10 s timeout");
    let recorded: Vec<u32> = recorded
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    let [shell_pid, helper_pid] = recorded[..] else {
        panic!("pids file: {recorded:?}")
    };
    // The failure is reported only once the check was reaped: no zombie of ours remains.
    assert!(
        !std::path::Path::new(&format!("/proc/{shell_pid}")).exists(),
        "the killed check {shell_pid} was not reaped"
    );
    // Its helper got the same SIGKILL (its new parent reaps it, maybe a moment later).
    let deadline = Instant::now() + WAIT;
    while alive(helper_pid) {
        assert!(Instant::now() < deadline, "helper {helper_pid} survived");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn exec_checks_run_at_most_max_running_exec_at_once() {
    let scratch = Scratch::new("limit");
    let running = scratch.0.clone();
    let kind = shell(
        "touch \"$1/$$\"; sleep 0.1; rm \"$1/$$\"",
        &[running.to_str().unwrap()],
    );
    let check = check(kind, 50, 2000);
    let targets: Vec<Target> = (1..=3 * MAX_RUNNING_EXEC as u8)
        .map(|host| {
            target(
                "web",
                SocketAddr::new(Ipv4Addr::new(192, 0, 2, host).into(), 80),
                &check,
            )
        })
        .collect();
    let ids: Vec<BackendId> = targets.iter().map(|target| target.id.clone()).collect();
    let checker = HealthChecker::start(targets).unwrap();
    let board = checker.board();
    let deadline = Instant::now() + WAIT;
    let mut most = 0;
    loop {
        let now_running = std::fs::read_dir(&running).unwrap().count();
        most = most.max(now_running);
        assert!(
            now_running <= MAX_RUNNING_EXEC,
            "{now_running} exec checks at once"
        );
        if ids
            .iter()
            .all(|id| board.get(id).is_some_and(|entry| entry.checks_passed >= 2))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every server was checked twice: {:?}",
            board.snapshot()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(most > 1, "exec checks never overlapped");
    let failures: u64 = board
        .snapshot()
        .values()
        .map(|entry| entry.checks_failed)
        .sum();
    assert_eq!(failures, 0, "{:?}", board.snapshot());
}

#[test]
fn rise_and_fall_move_a_server_down_and_back_with_transitions() {
    let listener = TcpListener::bind(local(0)).unwrap();
    let address = listener.local_addr().unwrap();
    let check = Arc::new(HealthCheckConfig {
        rise: 2,
        fall: 3,
        ..(*check(CheckKind::Tcp, 20, 500)).clone()
    });
    let target = target("web", address, &check);
    let id = target.id.clone();
    let checker = HealthChecker::start(vec![target]).unwrap();
    let board = checker.board();
    wait_for(&board, &id, "passing checks", |entry| {
        entry.checks_passed >= 3
    });
    assert!(checker.transitions().is_empty(), "a healthy server moved");

    drop(listener);
    let down = checker.transitions().recv_timeout(WAIT).unwrap();
    assert_eq!(
        down,
        Transition {
            id: id.clone(),
            from: Health::Up,
            to: Health::Down,
            reason: "connection refused".to_owned()
        }
    );
    let at_down = board.get(&id).unwrap();
    assert_eq!(at_down.health, Health::Down);
    assert!(
        at_down.checks_failed >= 3,
        "down after fewer than fall failures: {at_down:?}"
    );

    let _listener = TcpListener::bind(address).unwrap();
    let up = checker.transitions().recv_timeout(WAIT).unwrap();
    assert_eq!(
        up,
        Transition {
            id: id.clone(),
            from: Health::Down,
            to: Health::Up,
            reason: "2 check(s) passed in a row".to_owned()
        }
    );
    let at_up = board.get(&id).unwrap();
    assert_eq!((at_up.health, at_up.transitions), (Health::Up, 2));
    assert_eq!(at_up.last_failure.as_deref(), Some("connection refused"));
}

#[test]
fn an_update_keeps_the_state_of_servers_that_stay() {
    let check = check(CheckKind::Tcp, 20, 500);
    let down = target("web", local(closed_port()), &check);
    let listener = TcpListener::bind(local(0)).unwrap();
    let up_address = listener.local_addr().unwrap();
    // Same address, other services: distinct servers.
    let up = target("api", up_address, &check);
    let checker = HealthChecker::start(vec![down.clone(), up.clone()]).unwrap();
    let board = checker.board();
    let transition = checker.transitions().recv_timeout(WAIT).unwrap();
    assert_eq!((&transition.id, transition.to), (&down.id, Health::Down));
    wait_for(&board, &up.id, "api passing", |entry| {
        entry.checks_passed > 0
    });
    let before = board.get(&down.id).unwrap();

    // A reload keeps "web" (with a slower check), drops "api" and adds "new".
    let slower = Arc::new(HealthCheckConfig {
        interval: Duration::from_millis(30),
        ..(*check).clone()
    });
    let new = target("new", up_address, &check);
    checker.update(vec![
        Target {
            check: slower,
            ..down.clone()
        },
        new.clone(),
    ]);
    let deadline = Instant::now() + WAIT;
    while board.get(&up.id).is_some() {
        assert!(Instant::now() < deadline, "api is still on the board");
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = wait_for(&board, &down.id, "web checked again", |entry| {
        entry.checks_failed > before.checks_failed
    });
    assert_eq!(
        (after.health, after.transitions),
        (Health::Down, 1),
        "{after:?}"
    );
    let fresh = wait_for(&board, &new.id, "new checked", |entry| {
        entry.checks_passed > 0
    });
    assert_eq!((fresh.health, fresh.transitions), (Health::Up, 0));
    assert!(
        checker.transitions().try_recv().is_err(),
        "the update moved a server"
    );
}
