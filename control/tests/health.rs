//! Health checks to IPv6 real servers over a real link (needs root): the checker runs in
//! namespace `dhc6-<pid>-<n>-a` (veth `ha`, 2001:db8::1/64), the real servers listen in
//! `dhc6-<pid>-<n>-b` (veth `hb`, 2001:db8::11/64), so every check resolves its server through
//! NDP (RFC 4861) and connects across the veth, as a director's checks reach its real servers.
//! Addresses are added with `nodad`, so they are usable at once. Both namespaces are deleted by
//! a Drop guard, also when a test fails. Every wait is bounded.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use control::config::{CheckKind, HealthCheckConfig, OnFailure};
use control::health::{BackendHealth, Health, HealthBoard, HealthChecker, Target};

use common::{End, VethPair};

/// Bound on any wait: generous next to the 100 ms intervals.
const WAIT: Duration = Duration::from_secs(10);
const SERVER: &str = "2001:db8::11";

fn lab() -> VethPair {
    let lab = VethPair::new(
        "dhc6",
        &End {
            suffix: "-a",
            link: "ha",
            addresses: &[],
        },
        &End {
            suffix: "-b",
            link: "hb",
            addresses: &[],
        },
    );
    lab.a
        .ip(&["addr", "add", "2001:db8::1/64", "dev", "ha", "nodad"]);
    lab.b
        .ip(&["addr", "add", &format!("{SERVER}/64"), "dev", "hb", "nodad"]);
    lab
}

fn check(kind: CheckKind) -> Arc<HealthCheckConfig> {
    Arc::new(HealthCheckConfig {
        kind,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(1000),
        rise: 1,
        fall: 1,
        port: None,
        on_failure: OnFailure::Remove,
    })
}

/// A target for service `name` on the real server's `port`.
fn target(name: &str, port: u16, kind: CheckKind) -> Target {
    Target {
        id: (name.to_owned(), SERVER.parse().unwrap()),
        address: SocketAddr::new(SERVER.parse().unwrap(), port),
        check: check(kind),
    }
}

/// Serves `listener` (already bound in the servers' namespace) on a thread: reads a request up
/// to `request_end`, answers `answer`, closes; sends each request it read.
fn serve(
    listener: TcpListener,
    request_end: &'static str,
    answer: &'static [u8],
) -> mpsc::Receiver<String> {
    let (sender, requests) = mpsc::channel();
    std::thread::spawn(move || {
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
            let _ = stream.write_all(answer);
            if sender
                .send(String::from_utf8_lossy(&request).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    requests
}

/// Polls `board` until `name`'s entry has a first result, and returns it.
fn first_result(board: &HealthBoard, name: &str) -> BackendHealth {
    let id = (name.to_owned(), SERVER.parse::<std::net::IpAddr>().unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(entry) = board
            .get(&id)
            .filter(|entry| entry.checks_passed + entry.checks_failed > 0)
        {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no check within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn every_kind_reaches_an_ipv6_real_server_across_a_link() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let bind = |port: u16| {
        lab.b
            .enter(move || TcpListener::bind((SERVER.parse::<std::net::Ipv6Addr>().unwrap(), port)))
            .unwrap()
    };
    let http_requests = serve(
        bind(80),
        "\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
    );
    let pong_requests = serve(bind(6379), "\r\n", b"+PONG\r\n");
    let tcp_listener = bind(7000);

    let targets = vec![
        target("tcp", 7000, CheckKind::Tcp),
        target("refused", 7001, CheckKind::Tcp),
        target(
            "http",
            80,
            CheckKind::Http {
                path: "/healthz".to_owned(),
                expect_status: 200,
                expect_body: Some("ok".to_owned()),
            },
        ),
        target(
            "send_expect",
            6379,
            CheckKind::SendExpect {
                send: "PING\r\n".to_owned(),
                expect: "PONG".to_owned(),
            },
        ),
        target(
            "exec",
            80,
            CheckKind::Exec {
                command: vec![
                    "/bin/sh".to_owned(),
                    "-c".to_owned(),
                    "test \"$1\" = 2001:db8::11 && test \"$DIRECTOR_CHECK_FAMILY\" = ipv6"
                        .to_owned(),
                    "sh".to_owned(),
                    "{address}".to_owned(),
                ],
            },
        ),
    ];
    // The checker's thread is started from a thread in namespace a, so it lives there.
    let checker = lab.a.enter(move || HealthChecker::start(targets).unwrap());
    let board = checker.board();

    for name in ["tcp", "http", "send_expect", "exec"] {
        let entry = first_result(&board, name);
        assert_eq!(
            (entry.checks_passed > 0, entry.health),
            (true, Health::Up),
            "{name}: {entry:?}"
        );
    }
    let refused = first_result(&board, "refused");
    assert_eq!(refused.checks_passed, 0);
    assert_eq!(
        refused.last_failure.as_deref(),
        Some("connection refused"),
        "{refused:?}"
    );

    let request = http_requests.recv_timeout(WAIT).unwrap();
    assert!(
        request.starts_with("GET /healthz HTTP/1.0\r\nHost: [2001:db8::11]:80\r\n"),
        "{request:?}"
    );
    assert_eq!(pong_requests.recv_timeout(WAIT).unwrap(), "PING\r\n");
    // The TCP check's connection arrived from the checker's side of the link.
    tcp_listener.set_nonblocking(false).unwrap();
    let (_, from) = tcp_listener.accept().unwrap();
    assert_eq!(
        from.ip(),
        "2001:db8::1".parse::<std::net::IpAddr>().unwrap()
    );
    drop(checker);
}
