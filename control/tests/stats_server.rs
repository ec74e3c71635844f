//! The stats socket with real Unix sockets in a temporary directory, and `lbstat` against it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::stats_server::{Handler, SocketAccess, StatsServer, StatsServerError, MAX_CLIENTS};
use director_proto::{
    BackendStats, Reply, Request, ServiceStats, Stats, WorkerStats, MAX_REQUEST_BYTES,
};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "dirtest-stats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample_stats() -> Stats {
    let mut worker = WorkerStats {
        worker: 0,
        interface: "eth0".to_owned(),
        queue: 0,
        rx_packets: 300,
        rx_bytes: 30_000,
        tx_packets: 298,
        tx_bytes: 29_800,
        ..WorkerStats::default()
    };
    worker.drops.insert("no_service".to_owned(), 2);
    worker.drops.insert("truncated".to_owned(), 0);
    Stats {
        uptime_seconds: 12.5,
        services: vec![
            ServiceStats {
                name: "web".to_owned(),
                vip: "192.0.2.10".to_owned(),
                family: "ipv4".to_owned(),
                port: 80,
                ports: vec![80],
                persistence_seconds: None,
                protocol: "tcp".to_owned(),
                scheduler: "maglev".to_owned(),
                forwarding: "dr".to_owned(),
                backends: vec![BackendStats {
                    address: "192.0.2.11".to_owned(),
                    port: 80,
                    weight: 1,
                    mac: Some("02:00:00:00:00:11".to_owned()),
                    connections_total: 100,
                    packets_in: 298,
                    bytes_in: 29_800,
                    ..BackendStats::default()
                }],
                ..ServiceStats::default()
            },
            ServiceStats {
                name: "web6".to_owned(),
                vip: "2001:db8::10".to_owned(),
                family: "ipv6".to_owned(),
                port: 80,
                ports: vec![80],
                protocol: "tcp".to_owned(),
                scheduler: "maglev".to_owned(),
                forwarding: "dr".to_owned(),
                backends: vec![BackendStats {
                    address: "2001:db8::11".to_owned(),
                    port: 80,
                    weight: 1,
                    connections_total: 5,
                    ..BackendStats::default()
                }],
                ..ServiceStats::default()
            },
        ],
        workers: vec![worker],
        xdp: [("redirected".to_owned(), 300)].into_iter().collect(),
        ha: None,
        routing: None,
    }
}

fn stats_handler() -> Handler {
    Arc::new(|request, _peer| match request {
        Request::Stats => Reply::Stats(sample_stats()),
        other => Reply::Error {
            message: format!("not served here: {other:?}"),
        },
    })
}

/// Sends one line and reads one reply line.
fn exchange(stream: &mut UnixStream, line: &[u8]) -> Reply {
    stream.write_all(line).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|error| panic!("{reply:?}: {error}"))
}

fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

fn assert_error(reply: &Reply, fragment: &str) {
    match reply {
        Reply::Error { message } => {
            assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
        }
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn serves_stats_and_survives_bad_requests() {
    let dir = TempDir::new();
    let path = dir.0.join("sub/dir/director.sock");
    let server = StatsServer::start(&path, stats_handler()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    let mut client = connect(&path);
    assert_eq!(
        exchange(&mut client, b"{\"request\":\"stats\"}\n"),
        Reply::Stats(sample_stats())
    );
    assert_error(&exchange(&mut client, b"{not json\n"), "bad request");
    assert_error(
        &exchange(&mut client, b"{\"request\":\"reboot\"}\n"),
        "unknown variant `reboot`",
    );
    assert_error(&exchange(&mut client, b"[1,2,3]\n"), "bad request");
    // Same connection still works after the errors; CRLF and blank lines are fine.
    assert_eq!(
        exchange(&mut client, b"\n{\"request\":\"stats\"}\r\n"),
        Reply::Stats(sample_stats())
    );

    // An oversized request gets an error and its connection is closed; others are unaffected.
    let mut big = connect(&path);
    let huge = vec![b'x'; MAX_REQUEST_BYTES + 10];
    big.write_all(&huge).unwrap();
    let mut reply = String::new();
    BufReader::new(big).read_line(&mut reply).unwrap();
    let reply: Reply = serde_json::from_str(&reply).unwrap();
    assert_error(&reply, "request longer than");
    assert_eq!(
        exchange(&mut client, b"{\"request\":\"stats\"}\n"),
        Reply::Stats(sample_stats())
    );

    // A request without a trailing newline is answered at EOF.
    let mut last = connect(&path);
    last.write_all(b"{\"request\":\"stats\"}").unwrap();
    last.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    BufReader::new(last).read_line(&mut reply).unwrap();
    assert_eq!(
        serde_json::from_str::<Reply>(&reply).unwrap(),
        Reply::Stats(sample_stats())
    );

    let started = Instant::now();
    server.shutdown();
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn a_stuck_client_does_not_block_others() {
    let dir = TempDir::new();
    let path = dir.0.join("director.sock");
    let server = StatsServer::start(&path, stats_handler()).unwrap();
    // One client sends half a request and stalls; another is connected and silent.
    let mut stuck = connect(&path);
    stuck.write_all(b"{\"request\":").unwrap();
    let _silent = connect(&path);
    let started = Instant::now();
    let mut client = connect(&path);
    assert_eq!(
        exchange(&mut client, b"{\"request\":\"stats\"}\n"),
        Reply::Stats(sample_stats())
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // Shutdown does not wait for the stuck clients either.
    let started = Instant::now();
    drop(server);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "drop took {:?}",
        started.elapsed()
    );
    assert!(!path.exists());
}

#[test]
fn client_count_is_bounded() {
    let dir = TempDir::new();
    let path = dir.0.join("director.sock");
    let _server = StatsServer::start(&path, stats_handler()).unwrap();
    let mut held: Vec<UnixStream> = Vec::new();
    for _ in 0..MAX_CLIENTS {
        let mut client = connect(&path);
        // A full exchange proves the client has its own thread before the next connects.
        assert_eq!(
            exchange(&mut client, b"{\"request\":\"stats\"}\n"),
            Reply::Stats(sample_stats())
        );
        held.push(client);
    }
    let mut refused = connect(&path);
    let mut reply = String::new();
    BufReader::new(refused.try_clone().unwrap())
        .read_line(&mut reply)
        .unwrap();
    assert_error(&serde_json::from_str(&reply).unwrap(), "too many clients");
    let _ = refused.write_all(b"\n");
    // Freeing one slot lets the next client in (the thread notices EOF within its poll interval).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut client = connect(&path);
        match exchange(&mut client, b"{\"request\":\"stats\"}\n") {
            Reply::Stats(_) => break,
            Reply::Error { message } | Reply::Ok { message } => {
                assert!(Instant::now() < deadline, "still refused: {message}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn panicking_handler_gets_an_error_reply() {
    let dir = TempDir::new();
    let path = dir.0.join("director.sock");
    let _server = StatsServer::start(&path, Arc::new(|_, _| panic!("handler bug"))).unwrap();
    let mut client = connect(&path);
    assert_error(
        &exchange(&mut client, b"{\"request\":\"stats\"}\n"),
        "internal error",
    );
    assert_error(
        &exchange(&mut client, b"{\"request\":\"stats\"}\n"),
        "internal error",
    );
}

#[test]
fn stale_socket_is_replaced_but_live_one_and_other_files_are_not() {
    let dir = TempDir::new();
    let path = dir.0.join("director.sock");
    // A stale socket: bound, then its listener dropped (the file stays).
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = StatsServer::start(&path, stats_handler()).unwrap();
    // A second director on the same socket is refused, and the first keeps its socket.
    let error = StatsServer::start(&path, stats_handler()).unwrap_err();
    assert!(matches!(error, StatsServerError::InUse { .. }), "{error:?}");
    assert!(
        error.to_string().contains("another director running"),
        "{error}"
    );
    let mut client = connect(&path);
    assert_eq!(
        exchange(&mut client, b"{\"request\":\"stats\"}\n"),
        Reply::Stats(sample_stats())
    );
    drop(server);
    // A regular file is never removed.
    std::fs::write(&path, b"precious").unwrap();
    let error = StatsServer::start(&path, stats_handler()).unwrap_err();
    assert!(
        matches!(error, StatsServerError::NotASocket { .. }),
        "{error:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn lbstat_reads_a_live_server() {
    // lbstat is a binary of another package; cargo puts it next to this test's binary's
    // directory when the workspace's tests are built together. Skip quietly if it is absent.
    let Some(lbstat) = locate_lbstat() else {
        eprintln!("lbstat binary not built; skipping (cargo test -p lbstat -p control builds it)");
        return;
    };
    let dir = TempDir::new();
    let path = dir.0.join("director.sock");
    let server = StatsServer::start(&path, stats_handler()).unwrap();
    let output = std::process::Command::new(&lbstat)
        .arg("--socket")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("TCP  192.0.2.10:80"), "{table}");
    assert!(table.contains("  -> 192.0.2.11:80"), "{table}");
    assert!(table.contains("TCP  [2001:db8::10]:80 "), "{table}");
    assert!(table.contains("  -> [2001:db8::11]:80 "), "{table}");
    assert!(table.contains("no_service"), "{table}");
    let output = std::process::Command::new(&lbstat)
        .arg("--socket")
        .arg(&path)
        .arg("--json")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stats: Stats = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stats, sample_stats());
    drop(server);
    let output = std::process::Command::new(&lbstat)
        .arg("--socket")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("is director running?"), "{message}");
}

/// `target/<profile>/lbstat`, found from this test binary's path (`target/<profile>/deps/..`).
fn locate_lbstat() -> Option<PathBuf> {
    let test_binary = std::env::current_exe().ok()?;
    let profile_dir = test_binary.parent()?.parent()?;
    let candidate = profile_dir.join("lbstat");
    candidate.is_file().then_some(candidate)
}

/// Runs a small Python client as uid/gid 65534 (nobody/nogroup, no supplementary groups: std
/// clears them when a root parent sets the uid) that sends `lines` to `path` and prints each
/// reply line.
fn as_nobody(path: &Path, lines: &[&str]) -> Vec<Reply> {
    use std::os::unix::process::CommandExt;
    let script = "import socket, sys\n\
s = socket.socket(socket.AF_UNIX)\n\
s.connect(sys.argv[1])\n\
f = s.makefile('rw')\n\
for line in sys.argv[2:]: f.write(line + '\\n'); f.flush(); print(f.readline(), end='')\n";
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .args(lines)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// Root-only: a peer that is not root, the owner or in the group cannot mutate but can read
/// stats; with the group configured, a member can mutate.
#[test]
fn mutations_need_root_the_owner_or_the_group() {
    // Needs root to run a client as another user.
    if !dataplane::testing::require_root() {
        return;
    }
    let dir = TempDir::new();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.0.join("director.sock");
    let mutations = Arc::new(AtomicUsize::new(0));
    let handler = |mutations: Arc<AtomicUsize>| -> Handler {
        Arc::new(move |request, peer| match request {
            Request::Stats => Reply::Stats(sample_stats()),
            other => {
                mutations.fetch_add(1, Ordering::Relaxed);
                Reply::Ok {
                    message: format!("{other:?} by uid {}", peer.uid),
                }
            }
        })
    };
    let drain = r#"{"request":"drain","service":"web","backend":"192.0.2.11"}"#;
    let stats = r#"{"request":"stats"}"#;

    // Mode 0666 lets anyone connect; only stats are served to nobody.
    let access = SocketAccess {
        mode: 0o666,
        owner: None,
        group: None,
    };
    let server = StatsServer::start_with(&path, &access, handler(Arc::clone(&mutations))).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let replies = as_nobody(&path, &[drain, stats, r#"{"request":"reload"}"#]);
    assert_error(&replies[0], "permission denied: uid 65534 gid 65534");
    assert_eq!(replies[1], Reply::Stats(sample_stats()));
    assert_error(&replies[2], "permission denied");
    assert_eq!(mutations.load(Ordering::Relaxed), 0, "nothing changed");
    // Root may.
    let mut stream = connect(&path);
    let reply = exchange(&mut stream, format!("{drain}\n").as_bytes());
    assert!(matches!(reply, Reply::Ok { .. }), "{reply:?}");
    assert_eq!(mutations.load(Ordering::Relaxed), 1);
    drop(stream);
    server.shutdown();

    // The group "nogroup" (65534) owns the socket and may mutate; 0660 lets it connect.
    let access = SocketAccess {
        mode: 0o660,
        owner: None,
        group: Some("nogroup".to_owned()),
    };
    let group_server =
        StatsServer::start_with(&path, &access, handler(Arc::clone(&mutations))).unwrap();
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::gid(&metadata),
            metadata.permissions().mode() & 0o777
        ),
        (65534, 0o660)
    );
    let replies = as_nobody(&path, &[drain]);
    assert_eq!(
        replies[0],
        Reply::Ok {
            message: "Drain { service: \"web\", backend: \"192.0.2.11\" } by uid 65534".to_owned()
        }
    );
    assert_eq!(mutations.load(Ordering::Relaxed), 2);
    drop(group_server);

    // The user "nobody" owns the socket (no group): it may connect through the owner bits and
    // mutate; the file says so.
    let access = SocketAccess {
        mode: 0o600,
        owner: Some("nobody".to_owned()),
        group: None,
    };
    let _server = StatsServer::start_with(&path, &access, handler(Arc::clone(&mutations))).unwrap();
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&metadata),
            metadata.permissions().mode() & 0o777
        ),
        (65534, 0o600)
    );
    let replies = as_nobody(&path, &[drain]);
    assert!(matches!(replies[0], Reply::Ok { .. }), "{replies:?}");
    assert_eq!(mutations.load(Ordering::Relaxed), 3);
}

#[test]
fn unknown_group_is_refused_at_start() {
    let dir = TempDir::new();
    let path = dir.0.join("director.sock");
    let access = SocketAccess {
        mode: 0o660,
        owner: None,
        group: Some("no-such-group-xyz".to_owned()),
    };
    let error = StatsServer::start_with(&path, &access, stats_handler()).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("group \"no-such-group-xyz\"") && message.contains("/etc/group"),
        "{message}"
    );
    assert!(!path.exists());
}

#[test]
fn lbstat_watch_waits_for_a_missing_director_and_prometheus_reads_a_live_one() {
    let Some(lbstat) = locate_lbstat() else {
        eprintln!("lbstat binary not built; skipping (cargo test -p lbstat -p control builds it)");
        return;
    };
    let dir = TempDir::new();
    let path = dir.0.join("director.sock");
    let output = std::process::Command::new(&lbstat)
        .args(["--watch", "0.1", "--count", "3", "--socket"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text.matches(&format!("waiting for director at {}", path.display()))
            .count(),
        3,
        "{text}"
    );
    assert_eq!(text.matches("\x1b[2J").count(), 3, "{text}");

    let _server = StatsServer::start(&path, stats_handler()).unwrap();
    let output = std::process::Command::new(&lbstat)
        .arg("--prometheus")
        .arg("--socket")
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        director_proto::prometheus(&sample_stats())
    );
}
