//! Running commands with deadlines, child processes that die with their guard, and bounded polls.

use std::io::Read;
use std::process::{
    Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio,
};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys;

/// Interval between two checks of a child's state while waiting for it.
const WAIT_STEP: Duration = Duration::from_millis(5);

/// Runs `cmd` to completion with piped stdout/stderr, killing it if it outlives `timeout`.
///
/// A non-zero exit is not an error here (callers look at `Output::status`); a timeout is.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {what}"))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = wait_deadline(&mut child, timeout)?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{what} did not finish within {timeout:?}");
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` to exit, at most `timeout`; `None` if it is still running.
pub(crate) fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(WAIT_STEP);
    }
}

/// One look at a condition being polled.
#[derive(Debug)]
pub enum Check<T> {
    /// The condition holds.
    Ready(T),
    /// Not yet, and why.
    NotYet(String),
    /// It never will (say, the process being waited for exited): stop polling.
    Fatal(String),
}

/// Polls `check` every `interval` until it returns `Ok`, for at most `timeout`.
///
/// The error names `what` and the last reason `check` gave for not being ready.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    poll_check(what, timeout, interval, || match check() {
        Ok(value) => Check::Ready(value),
        Err(reason) => Check::NotYet(reason),
    })
}

/// Like [`poll_until`], with a way for `check` to give up at once ([`Check::Fatal`]).
pub fn poll_check<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Check<T>,
) -> Result<T> {
    let start = Instant::now();
    let mut attempts = 0_u32;
    loop {
        attempts += 1;
        match check() {
            Check::Ready(value) => return Ok(value),
            Check::Fatal(reason) => bail!("{what}: {reason}"),
            Check::NotYet(reason) => {
                if start.elapsed() >= timeout {
                    bail!(
                        "{what}: not ready after {timeout:?} ({attempts} checks); last: {reason}"
                    );
                }
            }
        }
        thread::sleep(interval);
    }
}

/// A child process that is killed (SIGKILL) and reaped when the guard drops.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    what: String,
}

impl ChildGuard {
    /// Spawns `cmd` (its stdio as the caller set it up) under a guard.
    pub fn spawn(mut cmd: Command) -> Result<Self> {
        let what = format!("{cmd:?}");
        let child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
        Ok(Self {
            child: Some(child),
            what,
        })
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Takes the child's stdin pipe (if it was spawned with `Stdio::piped()` and not taken yet).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.take())
    }

    /// Takes the child's stdout pipe (if it was spawned with `Stdio::piped()` and not taken yet).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Takes the child's stderr pipe (if it was spawned with `Stdio::piped()` and not taken yet).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.as_mut().and_then(|c| c.stderr.take())
    }

    /// The command line, for messages.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Whether the child has already exited (without reaping information loss: the status is kept).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("child {} was already reaped", self.what),
        }
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: i32) -> bool {
        sys::kill(self.id(), signal)
    }

    /// Waits for the child to exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => wait_deadline(child, timeout),
            None => bail!("child {} was already reaped", self.what),
        }
    }

    /// Kills the child (SIGKILL) and reaps it; returns its exit status.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.kill_inner()
    }

    fn kill_inner(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("child {} was already reaped", self.what);
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(status);
        }
        let _ = child.kill();
        // SIGKILL cannot be caught; the bound only guards against an unkillable (D-state) child.
        match wait_deadline(&mut child, Duration::from_secs(5))? {
            Some(status) => Ok(status),
            None => bail!("{} survived SIGKILL for 5 s", self.what),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.kill_inner() {
                eprintln!("director-lab: {e:#}");
            }
        }
    }
}
