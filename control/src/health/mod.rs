//! Health checks: whether each real server should get new flows, decided from the control side.
//!
//! One thread, `health-checker`, checks every real server of every service that has a
//! `[service.health_check]`, each every `interval`: a TCP connect (`tcp.rs`), an HTTP GET
//! (`http.rs`), a send/expect exchange (`send_expect.rs`), or a program run (`exec.rs`); the
//! lifecycle they share (start, verdict, outcome) is in `check.rs`, and no probe imports
//! another. Sockets are non-blocking and multiplexed with one poll(2), each check a small state
//! machine with a deadline, so hundreds of servers cost one thread. At most
//! [`MAX_RUNNING_EXEC`] programs run at once and [`MAX_OPEN_PROBES`] sockets are open at once;
//! checks beyond that wait their turn. First checks are spread over the interval so that
//! hundreds do not fire at once.
//!
//! Single results become health through rise and fall ([`hysteresis`]): servers start up, go
//! down after `fall` failures in a row and come back after `rise` successes. Each change is sent
//! as a [`Transition`] to the main loop, which rebuilds the service table; the counters behind
//! the stats live in a [`HealthBoard`] the stats socket reads.
//!
//! What it must not do: run in or wait for a worker, block on any one server, or leave a child
//! process unreaped. It never touches the service table itself: it only reports.

mod check;
mod exec;
mod http;
pub mod hysteresis;
mod send_expect;
#[expect(
    unsafe_code,
    reason = "non-blocking connect, poll(2), pidfd_open and kill; every block has a SAFETY comment"
)]
mod sys;
mod tcp;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
pub use director_proto::Health;
use tracing::{debug, warn};

use crate::config::{CheckKind, Config, HealthCheckConfig};
use crate::duration::format_duration;
use crate::table::BackendId;
use check::{Outcome, Start};
use exec::ExecCheck;
use http::HttpExpectation;
use hysteresis::Hysteresis;
use send_expect::Contains;
use tcp::{Exchange, Probe};

#[cfg(feature = "fuzzing")]
pub(crate) use check::Verdict;

/// Most exec checks running at once; more wait until one ends.
pub const MAX_RUNNING_EXEC: usize = 8;
/// Most TCP-based checks in flight (open sockets) at once; more wait until one ends.
pub const MAX_OPEN_PROBES: usize = 512;
/// Without pidfds (kernels before 5.3), how often a running exec check is looked at.
const EXEC_EXIT_POLL: Duration = Duration::from_millis(10);
/// Longest the checker sleeps with nothing due (a backstop: updates wake it at once).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// One real server to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Which server of which service.
    pub id: BackendId,
    /// Where the check connects (and what `{address}`/`{port}` become for exec).
    pub address: SocketAddr,
    /// The service's check.
    pub check: Arc<HealthCheckConfig>,
}

/// Every real server `config` asks to check, with the port each check uses.
pub fn targets(config: &Config) -> Vec<Target> {
    let mut targets = Vec::new();
    for service in &config.services {
        let Some(check) = &service.health_check else {
            continue;
        };
        let check = Arc::new(check.clone());
        for backend in &service.backends {
            targets.push(Target {
                id: (service.name.clone(), backend.address),
                address: SocketAddr::new(backend.address, service.check_port(backend)),
                check: Arc::clone(&check),
            });
        }
    }
    targets
}

/// What a check of `kind` (not exec) sends to `address` and how it judges the answer; `None`
/// for `tcp`, which passes once connected.
fn exchange(kind: &CheckKind, address: SocketAddr) -> Option<Exchange> {
    match kind {
        CheckKind::Http {
            path,
            expect_status,
            expect_body,
        } => Some(Exchange {
            request: http::request(path, address),
            judge: Box::new(HttpExpectation {
                status: *expect_status,
                body: expect_body.clone(),
            }),
        }),
        CheckKind::SendExpect { send, expect } => Some(Exchange {
            request: send.as_bytes().to_vec(),
            judge: Box::new(Contains {
                expected: expect.clone(),
            }),
        }),
        CheckKind::Tcp | CheckKind::Exec { .. } => None,
    }
}

/// How a check of `kind` against `address` judges the server's answer; `None` for `tcp` and
/// `exec`, which read none. For the fuzzing harness (`crate::fuzzing`), which feeds the judge
/// arbitrary answers.
#[cfg(feature = "fuzzing")]
pub(crate) fn judge_of(kind: &CheckKind, address: SocketAddr) -> Option<Box<dyn check::Judge>> {
    exchange(kind, address).map(|exchange| exchange.judge)
}

/// A real server's health changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Which server of which service.
    pub id: BackendId,
    /// Its health before.
    pub from: Health,
    /// Its health now.
    pub to: Health,
    /// Why: the last check's failure ("connection refused", "status 503 (expected 200)"), or
    /// the successes that brought it back.
    pub reason: String,
}

/// One real server's health and check counters, as the stats show them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealth {
    /// Up or down.
    pub health: Health,
    /// Checks that passed.
    pub checks_passed: u64,
    /// Checks that failed.
    pub checks_failed: u64,
    /// Changes of health (up to down and back).
    pub transitions: u64,
    /// Why the last failed check failed.
    pub last_failure: Option<String>,
}

impl Default for BackendHealth {
    fn default() -> Self {
        BackendHealth {
            health: Health::Up,
            checks_passed: 0,
            checks_failed: 0,
            transitions: 0,
            last_failure: None,
        }
    }
}

/// The checked servers' health and counters, written by the checker after each check and read
/// by the stats socket. Servers without a check are not on it.
#[derive(Debug, Default)]
pub struct HealthBoard {
    entries: Mutex<HashMap<BackendId, BackendHealth>>,
}

impl HealthBoard {
    /// One server's entry, if it is checked.
    pub fn get(&self, id: &BackendId) -> Option<BackendHealth> {
        self.lock().get(id).cloned()
    }

    /// Every entry.
    pub fn snapshot(&self) -> HashMap<BackendId, BackendHealth> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BackendId, BackendHealth>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the checker thread is told.
enum Command {
    /// Check exactly these servers from now on (a reload).
    Update(Vec<Target>),
    /// End the thread.
    Stop,
}

/// The running checker thread. Dropping it stops the thread, killing and reaping any exec
/// checks still running.
pub struct HealthChecker {
    commands: Sender<Command>,
    /// Writing a byte here wakes the thread from poll(2).
    wake: UnixStream,
    transitions: Receiver<Transition>,
    board: Arc<HealthBoard>,
    thread: Option<JoinHandle<()>>,
}

impl HealthChecker {
    /// Starts the thread checking `targets`.
    pub fn start(targets: Vec<Target>) -> io::Result<HealthChecker> {
        let (wake, wake_reader) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_reader.set_nonblocking(true)?;
        let (commands, command_receiver) = crossbeam_channel::unbounded();
        let (transition_sender, transitions) = crossbeam_channel::unbounded();
        let board = Arc::new(HealthBoard::default());
        let mut check_loop = CheckLoop {
            entries: Vec::new(),
            orphans: Vec::new(),
            board: Arc::clone(&board),
            transitions: transition_sender,
            commands: command_receiver,
            wake: wake_reader,
            jitter: RandomState::new(),
            short_of_resources: None,
        };
        check_loop.update(targets, Instant::now());
        let thread = std::thread::Builder::new()
            .name("health-checker".to_owned())
            .spawn(move || check_loop.run())?;
        Ok(HealthChecker {
            commands,
            wake,
            transitions,
            board,
            thread: Some(thread),
        })
    }

    /// Checks exactly `targets` from now on. Servers that stay (same service and address) keep
    /// their health, counters and schedule; new ones start up; gone ones are forgotten.
    pub fn update(&self, targets: Vec<Target>) {
        let _ = self.commands.send(Command::Update(targets));
        self.wake_up();
    }

    /// Where health changes arrive.
    pub fn transitions(&self) -> &Receiver<Transition> {
        &self.transitions
    }

    /// The health and counters of every checked server.
    pub fn board(&self) -> Arc<HealthBoard> {
        Arc::clone(&self.board)
    }

    fn wake_up(&self) {
        // A full socket buffer means a wake-up is already pending.
        let _ = (&self.wake).write(&[1]);
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        self.wake_up();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("the health checker thread panicked");
            }
        }
    }
}

/// One checked server in the thread.
struct Entry {
    target: Target,
    state: Hysteresis,
    /// When the next check starts (if none is running).
    next_due: Instant,
    running: Option<Running>,
}

/// A check in flight.
struct Running {
    deadline: Instant,
    check: RunningCheck,
}

enum RunningCheck {
    Probe(Probe),
    /// A program; `timed_out` holds the failure once it was killed at its deadline and is
    /// only waiting to be reaped.
    Exec {
        check: ExecCheck,
        timed_out: Option<String>,
    },
}

/// Who a polled descriptor belongs to.
#[derive(Clone, Copy)]
enum Owner {
    Wake,
    Entry(usize),
    Orphan,
}

/// The checker thread's state.
struct CheckLoop {
    entries: Vec<Entry>,
    /// Exec checks of servers no longer checked, killed and waiting to be reaped.
    orphans: Vec<ExecCheck>,
    board: Arc<HealthBoard>,
    transitions: Sender<Transition>,
    commands: Receiver<Command>,
    wake: UnixStream,
    jitter: RandomState,
    /// Why the last check could not start, while the director is short of sockets or
    /// processes (logged once when it begins).
    short_of_resources: Option<String>,
}

impl CheckLoop {
    fn run(mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut owners: Vec<Owner> = Vec::new();
        loop {
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Update(targets)) => self.update(targets, Instant::now()),
                    Ok(Command::Stop) | Err(TryRecvError::Disconnected) => {
                        self.shut_down();
                        return;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            self.start_due(now);
            let wake_at = self.poll_set(now, &mut fds, &mut owners);
            if let Err(error) = sys::poll(&mut fds, wake_at.saturating_duration_since(now)) {
                warn!(%error, "health checker: poll failed");
                std::thread::sleep(EXEC_EXIT_POLL);
            }
            for (fd, owner) in fds.iter().zip(&owners) {
                if fd.revents == 0 {
                    continue;
                }
                match *owner {
                    Owner::Wake => self.drain_wake(),
                    Owner::Entry(index) => self.advance(index),
                    Owner::Orphan => {}
                }
            }
            // Exits without a pidfd, and orphans, are looked at on every pass.
            for index in 0..self.entries.len() {
                if matches!(
                    &self.entries[index].running,
                    Some(Running { check: RunningCheck::Exec { check, .. }, .. }) if check.fd().is_none()
                ) {
                    self.advance(index);
                }
            }
            self.orphans
                .retain_mut(|orphan| orphan.try_finish().is_none());
            self.expire(Instant::now());
        }
    }

    /// Fills the poll set; returns when the loop must wake at the latest.
    fn poll_set(
        &self,
        now: Instant,
        fds: &mut Vec<libc::pollfd>,
        owners: &mut Vec<Owner>,
    ) -> Instant {
        fds.clear();
        owners.clear();
        let mut push = |fd, events, owner| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            owners.push(owner);
        };
        push(self.wake.as_raw_fd(), libc::POLLIN, Owner::Wake);
        let mut wake_at = now + MAX_SLEEP;
        let mut exit_timer = false;
        for (index, entry) in self.entries.iter().enumerate() {
            match &entry.running {
                // Due but held back by a limit: a check ending (a poll event) frees room.
                None if entry.next_due <= now => {}
                None => wake_at = wake_at.min(entry.next_due),
                Some(running) => match &running.check {
                    RunningCheck::Probe(probe) => {
                        push(probe.fd(), probe.events(), Owner::Entry(index));
                        wake_at = wake_at.min(running.deadline);
                    }
                    RunningCheck::Exec { check, timed_out } => {
                        match check.fd() {
                            Some(fd) => push(fd, libc::POLLIN, Owner::Entry(index)),
                            None => exit_timer = true,
                        }
                        if timed_out.is_none() {
                            wake_at = wake_at.min(running.deadline);
                        }
                    }
                },
            }
        }
        for orphan in &self.orphans {
            match orphan.fd() {
                Some(fd) => push(fd, libc::POLLIN, Owner::Orphan),
                None => exit_timer = true,
            }
        }
        if exit_timer {
            wake_at = wake_at.min(now + EXEC_EXIT_POLL);
        }
        wake_at
    }

    fn drain_wake(&mut self) {
        let mut buffer = [0u8; 64];
        while matches!((&self.wake).read(&mut buffer), Ok(count) if count > 0) {}
    }

    /// Replaces the targets, keeping the state of those that stay.
    fn update(&mut self, targets: Vec<Target>, now: Instant) {
        let mut previous: HashMap<BackendId, Entry> = self
            .entries
            .drain(..)
            .map(|entry| (entry.target.id.clone(), entry))
            .collect();
        let mut board = self.board.lock();
        for target in targets {
            let entry = if let Some(mut entry) = previous.remove(&target.id) {
                // A shorter interval takes effect now, not after the old one.
                entry.next_due = entry.next_due.min(now + target.check.interval);
                entry.target = target;
                entry
            } else {
                // Spread first checks over the interval so hundreds do not fire together.
                let slot = (self.jitter.hash_one(&target.id) % 1024) as u32;
                board.insert(target.id.clone(), BackendHealth::default());
                Entry {
                    next_due: now + target.check.interval.mul_f64(f64::from(slot) / 1024.0),
                    state: Hysteresis::new(),
                    running: None,
                    target,
                }
            };
            self.entries.push(entry);
        }
        for (id, entry) in previous {
            board.remove(&id);
            if let Some(Running {
                check: RunningCheck::Exec { mut check, .. },
                ..
            }) = entry.running
            {
                check.kill();
                self.orphans.push(check);
            }
        }
    }

    /// Starts every check that is due, as far as the limits allow, longest waiting first.
    fn start_due(&mut self, now: Instant) {
        let mut due: Vec<usize> = (0..self.entries.len())
            .filter(|&index| {
                let entry = &self.entries[index];
                entry.running.is_none() && entry.next_due <= now
            })
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_by_key(|&index| self.entries[index].next_due);
        let (mut probes, mut execs) = self.in_flight();
        for index in due {
            let is_exec = matches!(
                self.entries[index].target.check.kind,
                CheckKind::Exec { .. }
            );
            if (is_exec && execs >= MAX_RUNNING_EXEC) || (!is_exec && probes >= MAX_OPEN_PROBES) {
                continue;
            }
            let entry = &mut self.entries[index];
            entry.next_due = now + entry.target.check.interval;
            let deadline = now + entry.target.check.timeout;
            let started = match &entry.target.check.kind {
                CheckKind::Exec { command } => {
                    ExecCheck::start(command, entry.target.address).map(|check| {
                        RunningCheck::Exec {
                            check,
                            timed_out: None,
                        }
                    })
                }
                kind => Probe::start(entry.target.address, exchange(kind, entry.target.address))
                    .map(RunningCheck::Probe),
            };
            match started {
                Start::Running(check) => {
                    if is_exec {
                        execs += 1;
                    } else {
                        probes += 1;
                    }
                    entry.running = Some(Running { deadline, check });
                    self.short_of_resources = None;
                }
                Start::Done(outcome) => {
                    self.short_of_resources = None;
                    self.finish(index, outcome);
                }
                // The director's own shortage says nothing about the server: no verdict, try
                // again next interval (a director out of descriptors must not empty its pools).
                Start::Unavailable(why) => {
                    if self.short_of_resources.is_none() {
                        warn!(%why, "health checks cannot run; servers keep their health");
                    }
                    self.short_of_resources = Some(why);
                }
            }
        }
    }

    /// Checks in flight: (sockets, programs including orphans).
    fn in_flight(&self) -> (usize, usize) {
        let mut probes = 0;
        let mut execs = self.orphans.len();
        for entry in &self.entries {
            match entry.running.as_ref().map(|running| &running.check) {
                Some(RunningCheck::Probe(_)) => probes += 1,
                Some(RunningCheck::Exec { .. }) => execs += 1,
                None => {}
            }
        }
        (probes, execs)
    }

    /// Moves entry `index`'s check on after its descriptor became ready.
    fn advance(&mut self, index: usize) {
        let Some(running) = &mut self.entries[index].running else {
            return;
        };
        let outcome = match &mut running.check {
            RunningCheck::Probe(probe) => probe.advance(),
            RunningCheck::Exec { check, timed_out } => check
                .try_finish()
                .map(|outcome| timed_out.take().map_or(outcome, Err)),
        };
        if let Some(outcome) = outcome {
            self.entries[index].running = None;
            self.finish(index, outcome);
        }
    }

    /// Fails every check past its deadline: sockets are closed, programs killed (and finished
    /// once reaped).
    fn expire(&mut self, now: Instant) {
        for index in 0..self.entries.len() {
            let entry = &mut self.entries[index];
            let Some(running) = &mut entry.running else {
                continue;
            };
            if running.deadline > now {
                continue;
            }
            let timeout = format_duration(entry.target.check.timeout);
            match &mut running.check {
                RunningCheck::Probe(probe) => {
                    let reason = format!("timeout ({timeout}) while {}", probe.doing());
                    entry.running = None;
                    self.finish(index, Err(reason));
                }
                RunningCheck::Exec { check, timed_out } if timed_out.is_none() => {
                    check.kill();
                    *timed_out = Some(format!("timeout ({timeout}): killed"));
                }
                RunningCheck::Exec { .. } => {}
            }
        }
    }

    /// Records a finished check: counters, rise/fall, and a transition if health changed.
    fn finish(&mut self, index: usize, outcome: Outcome) {
        let entry = &mut self.entries[index];
        let check = &entry.target.check;
        let before = entry.state.health();
        let changed = entry.state.record(outcome.is_ok(), check.rise, check.fall);
        if let Err(reason) = &outcome {
            debug!(
                service = %entry.target.id.0,
                backend = %entry.target.id.1,
                check = check.kind.name(),
                reason = %reason,
                "health check failed"
            );
        }
        {
            let mut board = self.board.lock();
            let health = board.entry(entry.target.id.clone()).or_default();
            match &outcome {
                Ok(()) => health.checks_passed += 1,
                Err(reason) => {
                    health.checks_failed += 1;
                    health.last_failure = Some(reason.clone());
                }
            }
            health.health = entry.state.health();
            if changed.is_some() {
                health.transitions += 1;
            }
        }
        if let Some(to) = changed {
            let reason = match outcome {
                Ok(()) => format!("{} check(s) passed in a row", check.rise),
                Err(reason) => reason,
            };
            let _ = self.transitions.send(Transition {
                id: entry.target.id.clone(),
                from: before,
                to,
                reason,
            });
        }
    }

    /// Kills and reaps every program still running.
    fn shut_down(&mut self) {
        for entry in &mut self.entries {
            if let Some(Running {
                check: RunningCheck::Exec { check, .. },
                ..
            }) = entry.running.take()
            {
                check.kill_and_reap();
            }
        }
        for orphan in self.orphans.drain(..) {
            orphan.kill_and_reap();
        }
    }
}

#[cfg(test)]
mod tests;
