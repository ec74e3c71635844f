//! The lab's HTTP clients beyond one-shot batches: request options, a background load generator
//! that streams its results while it runs, and a keep-alive client holding one TCP connection.
//!
//! Both background clients run `tests/scripts/*.py` in the client namespace under a
//! [`ChildGuard`], so a panicking test still kills them.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, Command};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::cmd::{poll_until, ChildGuard};
use crate::http::{self, HttpResponse};
use crate::lab::Host;

/// Per-request timeout of the lab's clients unless told otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A batch of sequential GETs ([`crate::Lab::http_get`]), each on a new TCP connection.
#[derive(Clone, Debug)]
pub struct GetOptions {
    /// Where the client runs (the client host unless a test wants another).
    pub host: Host,
    /// Request `i` goes to `urls[i % urls.len()]`: two URLs alternate.
    pub urls: Vec<String>,
    /// Number of requests.
    pub count: usize,
    /// Local address to connect from (one of the client's addresses); the kernel's choice if
    /// `None`.
    pub source: Option<String>,
    /// Local port every request connects from (a client reusing its source port); the
    /// kernel's choice if `None`.
    pub source_port: Option<u16>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl GetOptions {
    /// `count` GETs of `url` from the client's main address, 2 s each at most.
    pub fn new(count: usize, url: &str) -> Self {
        Self {
            host: Host::Client,
            urls: vec![url.to_owned()],
            count,
            source: None,
            source_port: None,
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// `count` GETs going to `urls` in turn.
    pub fn alternating(count: usize, urls: &[String]) -> Self {
        Self {
            urls: urls.to_vec(),
            ..Self::new(count, "")
        }
    }

    /// The same, from local address `source`.
    #[must_use]
    pub fn from_address(mut self, source: &str) -> Self {
        self.source = Some(source.to_owned());
        self
    }

    /// The same, every request from local port `port`.
    #[must_use]
    pub fn from_port(mut self, port: u16) -> Self {
        self.source_port = Some(port);
        self
    }
}

/// Bounds and shape of a background load ([`crate::Lab::start_load`]).
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Local address to connect from; the kernel's choice if `None`.
    pub source: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The load stops by itself after this many requests...
    pub max_requests: usize,
    /// ...or after this long (a backstop: tests stop it long before).
    pub max_duration: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            source: None,
            timeout: REQUEST_TIMEOUT,
            max_requests: 100_000,
            max_duration: Duration::from_secs(60),
        }
    }
}

/// A running background load: sequential GETs, each on a new TCP connection, one JSON line per
/// request collected as it arrives. [`LoadHandle::stop`] ends it and returns every result;
/// dropping it kills the client.
pub struct LoadHandle {
    child: Option<ChildGuard>,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    stop_bound: Duration,
}

impl LoadHandle {
    pub(crate) fn start(cmd: Command, options: &LoadOptions) -> Result<Self> {
        let mut child = ChildGuard::spawn(cmd)?;
        let stdin = child
            .take_stdin()
            .context("the load client has no stdin pipe")?;
        let stdout = child
            .take_stdout()
            .context("the load client has no stdout pipe")?;
        let stderr = child.take_stderr();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stdout = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let stderr = thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = stderr {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        });
        Ok(Self {
            child: Some(child),
            stdin: Some(stdin),
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
            // The request in flight when told to stop finishes first (at most its timeout).
            stop_bound: options.timeout + Duration::from_secs(5),
        })
    }

    /// Requests reported so far.
    pub fn count(&self) -> usize {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The results reported so far, in request order.
    pub fn results(&self) -> Vec<Result<HttpResponse>> {
        let text = self
            .lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n");
        http::parse_stream(&text)
    }

    /// Polls the results (every 20 ms, at most `timeout`) until `ready` holds for them, and
    /// returns them; fails early if the client exited.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&[Result<HttpResponse>]) -> bool,
    ) -> Result<Vec<Result<HttpResponse>>> {
        poll_until(what, timeout, Duration::from_millis(20), || {
            let results = self.results();
            if ready(&results) {
                return Ok(results);
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the load client exited ({status}) after {} requests",
                        results.len()
                    ));
                }
            }
            let served = http::tally(&results);
            let failed = http::failures(&results).len();
            Err(format!(
                "{} requests, {failed} failed, served {served:?}",
                results.len()
            ))
        })
    }

    /// Stops the load (closes the client's stdin; it finishes the request in flight and exits;
    /// SIGKILL if it does not within the request timeout + 5 s) and returns every result, in
    /// order. Panics, with its stderr, if the client failed by itself.
    pub fn stop(mut self) -> Vec<Result<HttpResponse>> {
        drop(self.stdin.take());
        let mut child = self.child.take().expect("a running load has its child");
        let status = child.wait_timeout(self.stop_bound).ok().flatten();
        let killed = status.is_none();
        let status = match status {
            Some(status) => status,
            None => child.kill().unwrap_or_else(|e| panic!("{e:#}")),
        };
        if let Some(reader) = self.stdout.take() {
            let _ = reader.join();
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        assert!(
            killed || status.success(),
            "the load client failed ({status}): {}",
            String::from_utf8_lossy(&stderr)
        );
        if killed {
            eprintln!(
                "director-lab: the load client ignored its stop for {:?} and was killed",
                self.stop_bound
            );
        }
        self.results()
    }
}

impl Drop for LoadHandle {
    fn drop(&mut self) {
        drop(self.stdin.take());
        drop(self.child.take()); // kills it if still running
    }
}

/// ONE TCP connection from the client, kept open; each [`KeepAliveClient::get`] sends a GET on
/// it. It never reconnects, so a broken flow shows as a failed request. Dropping it closes the
/// connection and kills the client.
pub struct KeepAliveClient {
    child: Option<ChildGuard>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    local: String,
}

/// Bound on the keep-alive client connecting, and on one answer (over the 2 s request timeout).
const KEEPALIVE_BOUND: Duration = Duration::from_secs(5);

impl KeepAliveClient {
    pub(crate) fn start(cmd: Command) -> Result<Self> {
        let mut child = ChildGuard::spawn(cmd)?;
        let stdin = child
            .take_stdin()
            .context("the keep-alive client has no stdin pipe")?;
        let stdout = child
            .take_stdout()
            .context("the keep-alive client has no stdout pipe")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut client = Self {
            child: Some(child),
            stdin: Some(stdin),
            lines,
            local: String::new(),
        };
        let greeting = client.next_line()?;
        let doc: Value = serde_json::from_str(&greeting)
            .with_context(|| format!("keep-alive client said {greeting:?}"))?;
        match doc["connected"].as_str() {
            Some(local) => local.clone_into(&mut client.local),
            None => bail!("keep-alive client could not connect: {greeting}"),
        }
        Ok(client)
    }

    /// The connection's local `ip:port`.
    pub fn local_address(&self) -> &str {
        &self.local
    }

    /// One GET on the connection.
    pub fn get(&mut self) -> Result<HttpResponse> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the keep-alive client is closed")?;
        stdin
            .write_all(b"GET\n")
            .and_then(|()| stdin.flush())
            .context("asking the keep-alive client for a request")?;
        let line = self.next_line()?;
        http::parse_one(&line).ok_or_else(|| anyhow!("keep-alive client said {line:?}"))?
    }

    fn next_line(&mut self) -> Result<String> {
        let start = Instant::now();
        match self.lines.recv_timeout(KEEPALIVE_BOUND) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                bail!(
                    "the keep-alive client said nothing for {:?}",
                    start.elapsed()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                bail!("the keep-alive client exited ({status:?})")
            }
        }
    }
}

impl Drop for KeepAliveClient {
    fn drop(&mut self) {
        drop(self.stdin.take());
        drop(self.child.take());
    }
}
