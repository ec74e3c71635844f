//! The optional Prometheus endpoint (`[director] metrics = "127.0.0.1:9100"`): `GET /metrics`
//! answers [`director_proto::prometheus`] of the current stats; any other path is 404.
//!
//! It has no authentication, so it must be bound to a loopback or management address. It is
//! bounded like the stats socket: one thread serving one connection at a time, a request head of
//! at most [`MAX_REQUEST_BYTES`], and a deadline of [`CLIENT_TIMEOUT`] per connection, so a slow
//! or hostile client delays a scrape by at most that and never reaches the workers.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use director_proto::{prometheus, Stats, PROMETHEUS_CONTENT_TYPE};

/// Largest request head (request line and headers) read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A connection gets this long to send its request and read the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the idle accept loop looks at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Reads the stats to render.
pub type StatsSource = Arc<dyn Fn() -> Stats + Send + Sync>;

/// A running `/metrics` listener; dropping it stops the thread within about 25 ms (plus the
/// connection being served, at most [`CLIENT_TIMEOUT`]).
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address` and serves `/metrics` from `stats` until dropped.
    pub fn start(address: SocketAddr, stats: StatsSource) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("metrics".to_owned())
            .spawn({
                let stop = Arc::clone(&stop);
                move || accept_loop(&listener, &stats, &stop)
            })?;
        tracing::info!(%address, "Prometheus metrics listening on /metrics");
        Ok(MetricsServer {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port filled in if 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stats: &StatsSource, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(error) = serve(&stream, stats) {
                    tracing::debug!(%peer, %error, "metrics client closed");
                }
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL_INTERVAL);
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// Reads one request head and answers it; the connection is closed after.
fn serve(mut stream: &TcpStream, stats: &StatsSource) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n")
        && !head.windows(2).any(|window| window == b"\n\n")
    {
        if head.len() > MAX_REQUEST_BYTES {
            return respond(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return respond(stream, "408 Request Timeout", "text/plain", b"timed out\n");
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => head.extend_from_slice(&chunk[..read]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return respond(stream, "408 Request Timeout", "text/plain", b"timed out\n");
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut request_line = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (request_line.next(), request_line.next());
    let path = target.map(|target| target.split('?').next().unwrap_or(target));
    match (method, path) {
        (Some("GET" | "HEAD"), Some("/metrics")) => {
            let body = prometheus(&stats());
            let body = if method == Some("HEAD") {
                &b""[..]
            } else {
                body.as_bytes()
            };
            respond(stream, "200 OK", PROMETHEUS_CONTENT_TYPE, body)
        }
        (Some("GET" | "HEAD"), Some(_)) => respond(
            stream,
            "404 Not Found",
            "text/plain",
            b"not found; metrics are at /metrics\n",
        ),
        (Some(_), Some(_)) => respond(
            stream,
            "405 Method Not Allowed",
            "text/plain",
            b"only GET\n",
        ),
        _ => respond(stream, "400 Bad Request", "text/plain", b"bad request\n"),
    }
}

/// Writes a whole answer, then closes gently: our side first, then whatever the client still
/// sends is read and dropped (bounded), so unread input does not turn the close into a reset
/// that could destroy the answer in flight.
fn respond(
    mut stream: &TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Write)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 16 * MAX_REQUEST_BYTES {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(read) => drained += read,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Shutdown;

    use director_proto::ServiceStats;

    use super::*;

    fn server() -> MetricsServer {
        let stats: StatsSource = Arc::new(|| Stats {
            uptime_seconds: 2.0,
            services: vec![ServiceStats {
                name: "web".to_owned(),
                ..ServiceStats::default()
            }],
            ..Stats::default()
        });
        MetricsServer::start("127.0.0.1:0".parse().unwrap(), stats).unwrap()
    }

    fn get(server: &MetricsServer, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(server.address()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request).unwrap();
        let _ = stream.shutdown(Shutdown::Write);
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn serves_metrics_and_404s_the_rest() {
        let server = server();
        let answer = get(&server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("Content-Type: text/plain; version=0.0.4"),
            "{answer}"
        );
        assert!(answer.ends_with("director_uptime_seconds 2\n"), "{answer}");
        let answer = get(&server, b"GET / HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
        let answer = get(&server, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
        let answer = get(&server, b"\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    }

    #[test]
    fn serves_over_ipv6_with_the_family_label() {
        let stats: StatsSource = Arc::new(|| Stats {
            services: vec![ServiceStats {
                name: "web6".to_owned(),
                vip: "2001:db8::10".to_owned(),
                port: 80,
                backends: vec![director_proto::BackendStats {
                    address: "2001:db8::11".to_owned(),
                    connections_total: 7,
                    ..director_proto::BackendStats::default()
                }],
                ..ServiceStats::default()
            }],
            ..Stats::default()
        });
        // `metrics = "[::1]:9100"` in the configuration.
        let Ok(server) = MetricsServer::start("[::1]:0".parse().unwrap(), stats) else {
            return; // no IPv6 loopback here
        };
        assert!(server.address().is_ipv6());
        let answer = get(&server, b"GET /metrics HTTP/1.1\r\nHost: [::1]\r\n\r\n");
        assert!(
            answer.contains(
                "director_backend_connections_total{service=\"web6\",vip=\"2001:db8::10\",\
                 family=\"ipv6\",port=\"80\",protocol=\"\",backend=\"2001:db8::11\"} 7"
            ),
            "{answer}"
        );
    }

    #[test]
    fn oversized_and_silent_clients_are_cut_off() {
        let server = server();
        let huge = vec![b'a'; MAX_REQUEST_BYTES * 2];
        let answer = get(&server, &huge);
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        // A client that sends nothing is answered 408 after CLIENT_TIMEOUT ...
        let started = Instant::now();
        let mut silent = TcpStream::connect(server.address()).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        silent.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(started.elapsed() < CLIENT_TIMEOUT + Duration::from_secs(1));
        // ... and the next one is served.
        let answer = get(&server, b"GET /metrics HTTP/1.0\n\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    }
}
