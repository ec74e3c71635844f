//! The `exec` check: a program run without a shell, `{address}` and `{port}` in its arguments
//! replaced by the real server's; exit status 0 is healthy (keepalived's MISC_CHECK). An IPv6
//! `{address}` is the bare address (`2001:db8::11`, what `ping`, `nc` or `curl --interface`
//! take), without a URI's brackets; the environment also carries `DIRECTOR_CHECK_ADDRESS`,
//! `DIRECTOR_CHECK_PORT` and `DIRECTOR_CHECK_FAMILY` (`ipv4` or `ipv6`), so a script need not
//! parse its arguments.
//!
//! The child leads its own process group, so a check killed at its timeout takes whatever it
//! started with it, and is always reaped: the checker polls its pidfd, which becomes readable
//! when it exits, and collects its status without blocking. Its standard streams are
//! /dev/null.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Child, Command, Stdio};

use super::check::{Outcome, Start};
use super::sys;

/// One exec check running (or killed and not yet reaped).
#[derive(Debug)]
pub struct ExecCheck {
    child: Child,
    /// Readable once the child exits; `None` if the kernel has no pidfd_open, when the checker
    /// looks for the exit on a short timer instead.
    pidfd: Option<OwnedFd>,
    killed: bool,
}

impl ExecCheck {
    /// Starts `command` for the real server at `address`. A program that is missing or may
    /// not be run is a failed check; one the system cannot start now (no memory, too many
    /// processes) is no check at all.
    pub fn start(command: &[String], address: SocketAddr) -> Start<ExecCheck> {
        let substituted: Vec<String> = command
            .iter()
            .map(|argument| {
                argument
                    .replace("{address}", &address.ip().to_string())
                    .replace("{port}", &address.port().to_string())
            })
            .collect();
        let Some((program, arguments)) = substituted.split_first() else {
            return Start::Done(Err("no command to run".to_owned()));
        };
        let family = if address.is_ipv6() { "ipv6" } else { "ipv4" };
        let spawned = Command::new(program)
            .args(arguments)
            .env("DIRECTOR_CHECK_ADDRESS", address.ip().to_string())
            .env("DIRECTOR_CHECK_PORT", address.port().to_string())
            .env("DIRECTOR_CHECK_FAMILY", family)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                return Start::Done(Err(format!("cannot run {program}: {error}")))
            }
            Err(error) => return Start::Unavailable(format!("cannot start {program}: {error}")),
        };
        let pidfd = sys::pidfd_open(child.id()).ok();
        Start::Running(ExecCheck {
            child,
            pidfd,
            killed: false,
        })
    }

    /// The pidfd to poll for readability (the child's exit), if there is one.
    pub fn fd(&self) -> Option<RawFd> {
        self.pidfd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The outcome once the child has exited (and has been reaped), `None` while it runs.
    pub fn try_finish(&mut self) -> Option<Outcome> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(match (status.code(), status.signal()) {
                (Some(0), _) => Ok(()),
                (Some(code), _) => Err(format!("exit status {code}")),
                (None, Some(signal)) => Err(format!("killed by signal {signal}")),
                (None, None) => Err(format!("ended with {status}")),
            }),
            // Only if it was already reaped, which nothing else here does.
            Err(error) => Some(Err(format!("waiting for the check: {error}"))),
        }
    }

    /// SIGKILL to the check's process group, once; it is reaped like any exit.
    pub fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            sys::kill_process_group(self.child.id());
        }
    }

    /// Kills it and waits for it: for shutdown, where blocking briefly is fine.
    pub fn kill_and_reap(mut self) {
        self.kill();
        let _ = self.child.wait();
    }
}
