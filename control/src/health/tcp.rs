//! A check over one TCP connection, as a state machine the checker's poll loop drives: connect,
//! then (http, send_expect) write the request, then read until the answer is judged. Every step
//! is non-blocking; the loop polls [`Probe::fd`] for [`Probe::events`] and calls
//! [`Probe::advance`] when it is ready, and gives up at the check's deadline.
//!
//! `tcp` passes once the connection is accepted; `http` and `send_expect` once their
//! [`Judge`] passes the answer. This module speaks TCP only: what to send and how to judge the
//! answer come in an [`Exchange`] built by the checker, so it never imports a sibling probe.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd as _, RawFd};

use super::check::{Judge, Outcome, Start, Verdict};
use super::sys::{self, ConnectError};

/// Most bytes of an answer read before giving up on finding what was expected.
pub const MAX_ANSWER: usize = 64 * 1024;

/// What a probe waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending,
    Reading,
}

/// What a request-and-answer check sends once connected, and how its answer is judged.
#[derive(Debug)]
pub struct Exchange {
    /// The bytes written once connected.
    pub request: Vec<u8>,
    /// Judges the answer.
    pub judge: Box<dyn Judge>,
}

/// One check in flight.
#[derive(Debug)]
pub struct Probe {
    stream: TcpStream,
    phase: Phase,
    /// `None` for a plain `tcp` check, which passes once connected.
    exchange: Option<Exchange>,
    written: usize,
    answer: Vec<u8>,
}

impl Probe {
    /// Starts a check against `address` that sends and judges `exchange`, or passes once
    /// connected if there is none; it may be decided at once (the connection refused on the
    /// spot, say).
    pub fn start(address: SocketAddr, exchange: Option<Exchange>) -> Start<Probe> {
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
            exchange,
            written: 0,
            answer: Vec::new(),
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
        if self.exchange.is_none() {
            return Some(Ok(()));
        }
        self.phase = Phase::Sending;
        self.send()
    }

    fn send(&mut self) -> Option<Outcome> {
        let request = self
            .exchange
            .as_ref()
            .map_or(&[][..], |exchange| &exchange.request);
        while self.written < request.len() {
            match self.stream.write(&request[self.written..]) {
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
        match &self.exchange {
            None => Verdict::Pass,
            Some(exchange) => exchange.judge.judge(&self.answer, closed),
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
