//! [`FibTask`]: the mirror on a thread of its own, for a loop built on crossbeam channels (the
//! director's `select!`): new snapshots arrive on [`FibTask::snapshots`], and the loop asks for
//! neighbour slots, the summary and next hops through short request/reply messages.
//!
//! What it must not do: stop on an error from the kernel (it logs it, rate-limited, and
//! carries on), or make its caller wait longer than [`REQUEST_TIMEOUT`].

use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use dataplane::fib::neighbour::NeighbourSlotsFull;
use dataplane::fib::{Fib, NeighbourId, Neighbours};

use crate::netlink::NetlinkError;

use super::counters::{FibSummary, NextHopSummary};
use super::log::RateLimitedLog;
use super::mirror::FibMirror;

/// Longest a request waits for the mirror's thread, which answers between two reads of the
/// notification socket (at most [`POLL_LIMIT`] apart).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest the thread waits on the socket before looking at requests.
const POLL_LIMIT: Duration = Duration::from_millis(20);

/// Why a request to the mirror's thread got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FibTaskError {
    /// Every neighbour slot is taken.
    #[error(transparent)]
    SlotsFull(#[from] NeighbourSlotsFull),
    /// The thread did not answer in time or has stopped.
    #[error("the FIB mirror did not answer within {REQUEST_TIMEOUT:?}")]
    NoAnswer,
}

enum Request {
    NeighbourFor(u32, IpAddr, Sender<Result<NeighbourId, NeighbourSlotsFull>>),
    Unpin(u32, IpAddr),
    SetServed(Vec<u32>),
    Summary(Sender<FibSummary>),
    NextHop(IpAddr, Sender<NextHopSummary>),
}

/// See the module docs. Dropping it stops the thread.
#[derive(Debug)]
pub struct FibTask {
    snapshots: Receiver<Arc<Fib>>,
    requests: Option<Sender<Request>>,
    neighbours: Arc<Neighbours>,
    thread: Option<JoinHandle<()>>,
}

impl FibTask {
    /// Opens the mirror in the calling thread's network namespace (see [`FibMirror::open`])
    /// and starts its thread; the first snapshot is already waiting on
    /// [`snapshots`](Self::snapshots).
    pub fn spawn(served: Vec<u32>, capacity: usize) -> Result<Self, NetlinkError> {
        let mut mirror = FibMirror::open(served, capacity)?;
        let neighbours = mirror.neighbours();
        let (snapshot_sender, snapshots) = crossbeam_channel::unbounded();
        let (requests, request_receiver) = crossbeam_channel::unbounded();
        if let Some(first) = mirror.take_snapshot() {
            let _ = snapshot_sender.send(first);
        }
        let thread = std::thread::Builder::new()
            .name("fib".to_owned())
            .spawn(move || run(&mut mirror, &snapshot_sender, &request_receiver))
            .map_err(|source| NetlinkError::Io {
                operation: "start the FIB mirror thread".to_owned(),
                source,
            })?;
        Ok(FibTask {
            snapshots,
            requests: Some(requests),
            neighbours,
            thread: Some(thread),
        })
    }

    /// New snapshots, oldest first: publish the last one received.
    pub fn snapshots(&self) -> &Receiver<Arc<Fib>> {
        &self.snapshots
    }

    /// The neighbour array every snapshot's ids index.
    pub fn neighbours(&self) -> Arc<Neighbours> {
        Arc::clone(&self.neighbours)
    }

    /// See [`FibMirror::neighbour_for`]: an IPv4 or IPv6 on-link destination.
    pub fn neighbour_for(
        &self,
        ifindex: u32,
        address: impl Into<IpAddr>,
    ) -> Result<NeighbourId, FibTaskError> {
        let address = address.into();
        Ok(self.ask(|reply| Request::NeighbourFor(ifindex, address, reply))??)
    }

    /// See [`FibMirror::unpin`].
    pub fn unpin(&self, ifindex: u32, address: impl Into<IpAddr>) {
        self.tell(Request::Unpin(ifindex, address.into()));
    }

    /// See [`FibMirror::set_served`].
    pub fn set_served(&self, served: Vec<u32>) {
        self.tell(Request::SetServed(served));
    }

    /// See [`FibMirror::summary`].
    pub fn summary(&self) -> Result<FibSummary, FibTaskError> {
        self.ask(Request::Summary)
    }

    /// See [`FibMirror::next_hop`].
    pub fn next_hop(&self, destination: impl Into<IpAddr>) -> Result<NextHopSummary, FibTaskError> {
        let destination = destination.into();
        self.ask(|reply| Request::NextHop(destination, reply))
    }

    fn tell(&self, request: Request) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(request);
        }
    }

    fn ask<T>(&self, request: impl FnOnce(Sender<T>) -> Request) -> Result<T, FibTaskError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.tell(request(reply));
        answer
            .recv_timeout(REQUEST_TIMEOUT)
            .map_err(|_| FibTaskError::NoAnswer)
    }
}

impl Drop for FibTask {
    fn drop(&mut self) {
        // Disconnecting the requests stops the thread within POLL_LIMIT.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(mirror: &mut FibMirror, snapshots: &Sender<Arc<Fib>>, requests: &Receiver<Request>) {
    let mut log = RateLimitedLog::default();
    loop {
        match mirror.run_once(POLL_LIMIT) {
            Ok(Some(snapshot)) => {
                let _ = snapshots.send(snapshot);
            }
            Ok(None) => {}
            Err(error) => {
                if log.allow("netlink", Instant::now()) {
                    tracing::error!(%error, "FIB mirror: netlink failed; retrying");
                }
                std::thread::sleep(POLL_LIMIT);
            }
        }
        loop {
            match requests.try_recv() {
                Ok(request) => answer(mirror, request),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

fn answer(mirror: &mut FibMirror, request: Request) {
    match request {
        Request::NeighbourFor(ifindex, address, reply) => {
            let _ = reply.send(mirror.neighbour_for(ifindex, address));
        }
        Request::Unpin(ifindex, address) => mirror.unpin(ifindex, address),
        Request::SetServed(served) => mirror.set_served(served),
        Request::Summary(reply) => {
            let _ = reply.send(mirror.summary(Instant::now()));
        }
        Request::NextHop(destination, reply) => {
            let _ = reply.send(mirror.next_hop(destination));
        }
    }
}
