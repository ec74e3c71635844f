//! A check over one TCP connection, as a state machine the checker's poll loop drives: connect,
//! then (http, send_expect) write the request, then read until the answer is judged. Every step
//! is non-blocking; the loop polls [`Probe::fd`] for [`Probe::events`] and calls
//! [`Probe::advance`] when it is ready, and gives up at the check's deadline.
//!
//! `tcp` passes once the connection is accepted; `send_expect` once the answer contains the
//! expected bytes; `http` as [`super::http`] judges.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd as _, RawFd};

use super::http;
use super::sys::{self, ConnectError};
use crate::config::CheckKind;

/// Most bytes of an answer read before giving up on finding what was expected.
pub const MAX_ANSWER: usize = 64 * 1024;

/// What an answer read so far amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Healthy.
    Pass,
    /// Not healthy, and why.
    Fail(String),
    /// Undecided: read more.
    NeedMore,
}

/// What a probe waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending,
    Reading,
}

/// What counts as healthy.
#[derive(Clone, Debug)]
enum Expectation {
    Connected,
    Http { status: u16, body: Option<String> },
    Contains(String),
}

/// One check in flight.
#[derive(Debug)]
pub struct Probe {
    stream: TcpStream,
    phase: Phase,
    request: Vec<u8>,
    written: usize,
    answer: Vec<u8>,
    expectation: Expectation,
}

/// The outcome of a finished check: `Err` holds why it failed.
pub type Outcome = Result<(), String>;

/// How starting a check went.
#[derive(Debug)]
pub enum Start<T> {
    /// In flight.
    Running(T),
    /// Decided at once.
    Done(Outcome),
    /// The director could not even try (no socket, no process): says nothing about the
    /// server, so it counts as no check at all.
    Unavailable(String),
}

impl<T> Start<T> {
    /// The running check converted by `convert`.
    pub fn map<U>(self, convert: impl FnOnce(T) -> U) -> Start<U> {
        match self {
            Start::Running(check) => Start::Running(convert(check)),
            Start::Done(outcome) => Start::Done(outcome),
            Start::Unavailable(why) => Start::Unavailable(why),
        }
    }
}

impl Probe {
    /// Starts a check of `kind` (not exec) against `address`; it may be decided at once (the
    /// connection refused on the spot, say).
    pub fn start(address: SocketAddrV4, kind: &CheckKind) -> Start<Probe> {
        let (request, expectation) = match kind {
            CheckKind::Http {
                path,
                expect_status,
                expect_body,
            } => (
                http::request(path, address),
                Expectation::Http {
                    status: *expect_status,
                    body: expect_body.clone(),
                },
            ),
            CheckKind::SendExpect { send, expect } => (
                send.as_bytes().to_vec(),
                Expectation::Contains(expect.clone()),
            ),
            CheckKind::Tcp | CheckKind::Exec { .. } => (Vec::new(), Expectation::Connected),
        };
        let (stream, connected) = match sys::connect_nonblocking(address) {
            Ok(connected) => connected,
            // The director's own shortage (no local port, no buffers) says nothing of the
            // server: no verdict, as when no socket can be had.
            Err(ConnectError::Connect(error))
                if matches!(
                    error.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                return Start::Unavailable(format!("cannot connect for a check: {error}"))
            }
            Err(ConnectError::Connect(error)) => return Start::Done(Err(describe(&error))),
            Err(ConnectError::Socket(error)) => {
                return Start::Unavailable(format!("no socket for a check: {error}"))
            }
        };
        let mut probe = Probe {
            stream,
            phase: Phase::Connecting,
            request,
            written: 0,
            answer: Vec::new(),
            expectation,
        };
        if connected {
            if let Some(outcome) = probe.on_connected() {
                return Start::Done(outcome);
            }
        }
        Start::Running(probe)
    }

    /// The socket to poll.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// The poll events it waits for.
    pub fn events(&self) -> i16 {
        match self.phase {
            Phase::Connecting | Phase::Sending => libc::POLLOUT,
            Phase::Reading => libc::POLLIN,
        }
    }

    /// What it was doing, for a timeout's reason.
    pub fn doing(&self) -> &'static str {
        match self.phase {
            Phase::Connecting => "connecting",
            Phase::Sending => "sending",
            Phase::Reading => "waiting for the answer",
        }
    }

    /// Moves on after poll reported the socket ready (or failed); `Some` once decided.
    pub fn advance(&mut self) -> Option<Outcome> {
        match self.phase {
            Phase::Connecting => match self.stream.take_error() {
                Ok(None) => self.on_connected(),
                Ok(Some(error)) | Err(error) => Some(Err(describe(&error))),
            },
            Phase::Sending => self.send(),
            Phase::Reading => self.read(),
        }
    }

    fn on_connected(&mut self) -> Option<Outcome> {
        if matches!(self.expectation, Expectation::Connected) {
            return Some(Ok(()));
        }
        self.phase = Phase::Sending;
        self.send()
    }

    fn send(&mut self) -> Option<Outcome> {
        while self.written < self.request.len() {
            match self.stream.write(&self.request[self.written..]) {
                Ok(0) => return Some(Err("connection closed while sending".to_owned())),
                Ok(count) => self.written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Some(Err(describe(&error))),
            }
        }
        self.phase = Phase::Reading;
        // The answer may already be there; reading now saves a trip through poll.
        self.read()
    }

    fn read(&mut self) -> Option<Outcome> {
        let mut chunk = [0u8; 4096];
        loop {
            let room = MAX_ANSWER - self.answer.len();
            let closed = match self.stream.read(&mut chunk[..room.min(4096)]) {
                Ok(0) => true,
                Ok(count) => {
                    self.answer.extend_from_slice(&chunk[..count]);
                    false
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Some(Err(describe(&error))),
            };
            let full = self.answer.len() >= MAX_ANSWER;
            match self.judge(closed || full) {
                Verdict::Pass => return Some(Ok(())),
                Verdict::Fail(reason) if full && !closed => {
                    return Some(Err(format!(
                        "{reason} in the first {} KiB",
                        MAX_ANSWER / 1024
                    )))
                }
                Verdict::Fail(reason) => return Some(Err(reason)),
                Verdict::NeedMore => {}
            }
        }
    }

    fn judge(&self, closed: bool) -> Verdict {
        match &self.expectation {
            Expectation::Connected => Verdict::Pass,
            Expectation::Http { status, body } => {
                http::judge(&self.answer, closed, *status, body.as_deref())
            }
            Expectation::Contains(expected) => {
                if http::find(&self.answer, expected.as_bytes()).is_some() {
                    Verdict::Pass
                } else if closed {
                    Verdict::Fail(if self.answer.is_empty() {
                        format!("closed without answering (expected {expected:?})")
                    } else {
                        format!("answer lacks {expected:?}: {}", http::excerpt(&self.answer))
                    })
                } else {
                    Verdict::NeedMore
                }
            }
        }
    }
}

/// A socket error as a failure reason, short and lower case ("connection refused").
fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ECONNREFUSED) => "connection refused".to_owned(),
        Some(libc::ECONNRESET) => "connection reset".to_owned(),
        Some(libc::EHOSTUNREACH) => "host unreachable".to_owned(),
        Some(libc::ENETUNREACH) => "network unreachable".to_owned(),
        Some(libc::ETIMEDOUT) => "connection timed out".to_owned(),
        Some(libc::EPIPE) => "connection closed while sending".to_owned(),
        _ => error.to_string(),
    }
}
