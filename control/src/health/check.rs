//! The lifecycle every check shares, whatever it speaks: how starting one went ([`Start`]), how
//! it ended ([`Outcome`]), what an answer read so far amounts to ([`Verdict`]) and the
//! [`Judge`] a probe asks about it, plus the byte-matching helpers the judges use.
//!
//! A leaf: the probes (`tcp`, `http`, `send_expect`, `exec`) import it and never each other;
//! it imports none of them and does no I/O.

use std::fmt;

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

/// Judges a server's answer for a check that sends a request and reads the reply (`http`,
/// `send_expect`); the TCP probe drives the connection and asks it after each read.
pub trait Judge: fmt::Debug + Send {
    /// Judges the answer read so far; `closed` says nothing more will come (the server closed,
    /// or the probe read all it will).
    fn judge(&self, answer: &[u8], closed: bool) -> Verdict;
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The start of what a server sent, printable, for a failure reason.
pub fn excerpt(bytes: &[u8]) -> String {
    const SHOWN: usize = 40;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]).into_owned();
    if bytes.len() > SHOWN {
        format!("{shown:?}...")
    } else {
        format!("{shown:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_printable() {
        assert_eq!(excerpt(b"a\x00b"), "\"a\\0b\"");
        assert_eq!(excerpt(&[b'x'; 50]), format!("{:?}...", "x".repeat(40)));
    }
}
