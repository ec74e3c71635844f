//! [`FibMirror`]: keeps the model current from netlink notifications, rebuilds the [`Fib`]
//! snapshot at most every [`MIN_REBUILD_INTERVAL`], writes neighbour changes to the shared
//! [`Neighbours`] array at once, and once a second asks the kernel to confirm or solicit every
//! neighbour in use.
//!
//! It is driven by its owner's loop, not a thread of its own: wait for [`FibMirror::fd`] to be
//! readable or [`FibMirror::timeout`] to pass, then call [`FibMirror::handle_ready`] and
//! [`FibMirror::tick`] ([`FibMirror::run_once`] does all three), and publish
//! [`FibMirror::take_snapshot`] when it gives one. It is the only writer of the neighbour
//! array.
//!
//! What it must not do: block its owner for long (notifications are drained without blocking;
//! the only waits are the kernel's answers to a dump or a neighbour request), or crash on
//! anything the kernel says.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::fib::neighbour::NeighbourSlotsFull;
use dataplane::fib::{Fib, Neighbour, NeighbourId, NeighbourSlots, Neighbours, NoRoute};

use crate::netlink::{Netlink, NetlinkError, NetlinkMonitor};

use super::build::{build, BuildCounts};
use super::counters::{FibCounters, FibSummary, NextHopSummary};
use super::log::RateLimitedLog;
use super::model::{Model, Touched, NUD_FAILED, NUD_UNCONFIRMED, NUD_USABLE};
use super::parse::{dump_requests, optional_dump, parse, Parsed};

/// Shortest time between two rebuilds: a burst of changes is coalesced into one snapshot that
/// still reaches the workers well within 100 ms of the first.
pub const MIN_REBUILD_INTERVAL: Duration = Duration::from_millis(25);
/// How often every neighbour in use is confirmed or solicited.
pub const NEIGHBOUR_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// See the module docs.
#[derive(Debug)]
pub struct FibMirror {
    requests: Netlink,
    monitor: NetlinkMonitor,
    model: Model,
    served: HashSet<u32>,
    pinned: BTreeSet<(u32, IpAddr)>,
    slots: NeighbourSlots,
    neighbours: Arc<Neighbours>,
    /// Slots held, with the state last written to each.
    held: HashMap<(u32, IpAddr), (NeighbourId, Neighbour)>,
    fib: Arc<Fib>,
    unpublished: bool,
    dirty: bool,
    last_rebuild: Instant,
    next_refresh: Instant,
    counters: FibCounters,
    log: RateLimitedLog,
}

impl FibMirror {
    /// Opens the notification socket, dumps the kernel's tables and builds the first snapshot,
    /// in the calling thread's network namespace. `served` are the interfaces the director
    /// serves; `capacity` the neighbour array's size.
    pub fn open(
        served: impl IntoIterator<Item = u32>,
        capacity: usize,
    ) -> Result<Self, NetlinkError> {
        // Subscribe before dumping, so no change falls between the dump and the first read.
        let monitor = NetlinkMonitor::open()?;
        let requests = Netlink::open()?;
        let now = Instant::now();
        let mut mirror = FibMirror {
            requests,
            monitor,
            model: Model::default(),
            served: served.into_iter().collect(),
            pinned: BTreeSet::new(),
            slots: NeighbourSlots::new(capacity),
            neighbours: Arc::new(Neighbours::with_capacity(capacity)),
            held: HashMap::new(),
            fib: Arc::new(Fib::default()),
            unpublished: false,
            dirty: true,
            last_rebuild: now,
            next_refresh: now,
            counters: FibCounters::default(),
            log: RateLimitedLog::default(),
        };
        mirror.dump()?;
        mirror.rebuild(now);
        Ok(mirror)
    }

    /// The neighbour array the snapshots' ids index; the same array for the mirror's lifetime.
    pub fn neighbours(&self) -> Arc<Neighbours> {
        Arc::clone(&self.neighbours)
    }

    /// The current snapshot.
    pub fn fib(&self) -> Arc<Fib> {
        Arc::clone(&self.fib)
    }

    /// The snapshot built since the last call, if any: what to publish to the workers.
    pub fn take_snapshot(&mut self) -> Option<Arc<Fib>> {
        std::mem::take(&mut self.unpublished).then(|| self.fib())
    }

    /// The notification socket, for its owner's poll(2).
    pub fn fd(&self) -> RawFd {
        self.monitor.fd()
    }

    /// How long the owner may wait for the socket before [`tick`](Self::tick) is due.
    pub fn timeout(&self, now: Instant) -> Duration {
        let refresh = self.next_refresh.saturating_duration_since(now);
        if self.dirty {
            refresh.min((self.last_rebuild + MIN_REBUILD_INTERVAL).saturating_duration_since(now))
        } else {
            refresh
        }
    }

    /// Waits at most `limit` (and no longer than [`timeout`](Self::timeout)) for
    /// notifications, handles them and ticks; the new snapshot, if one was built.
    pub fn run_once(&mut self, limit: Duration) -> Result<Option<Arc<Fib>>, NetlinkError> {
        let wait = self.timeout(Instant::now()).min(limit);
        if self.monitor.wait(wait)? {
            self.handle_ready(Instant::now())?;
        }
        self.tick(Instant::now());
        Ok(self.take_snapshot())
    }

    /// Reads every queued notification: route changes mark the snapshot for a rebuild,
    /// neighbour changes are written to their slot at once; an overrun re-dumps everything.
    pub fn handle_ready(&mut self, now: Instant) -> Result<(), NetlinkError> {
        let mut events = Vec::new();
        let drained = self
            .monitor
            .drain(|kind, payload| events.push(parse(kind, payload)))?;
        self.counters.notifications += drained.messages;
        for parsed in events {
            let event = match parsed {
                Parsed::Event(event) => event,
                Parsed::Ignored => {
                    self.counters.ignored += 1;
                    continue;
                }
                Parsed::Unreadable => {
                    self.counters.unreadable += 1;
                    if self.log.allow("unreadable", now) {
                        tracing::warn!("FIB: a netlink notification could not be read");
                    }
                    continue;
                }
            };
            match self.model.apply(event) {
                Touched::Routes => self.dirty = true,
                Touched::Neighbour(ifindex, address) => self.write_neighbour(ifindex, address, now),
            }
        }
        if drained.overrun {
            self.counters.overruns += 1;
            if self.log.allow("overrun", now) {
                tracing::warn!(
                    "netlink notifications overran; dumping routes and neighbours again"
                );
            }
            self.dump()?;
        }
        Ok(())
    }

    /// Rebuilds the snapshot if a change is waiting and the last rebuild is at least
    /// [`MIN_REBUILD_INTERVAL`] old; confirms or solicits neighbours in use once a second.
    pub fn tick(&mut self, now: Instant) {
        if self.dirty && now >= self.last_rebuild + MIN_REBUILD_INTERVAL {
            self.rebuild(now);
        }
        if now >= self.next_refresh {
            self.next_refresh = now + NEIGHBOUR_REFRESH_INTERVAL;
            let keys: Vec<(u32, IpAddr)> = self.held.keys().copied().collect();
            for (ifindex, address) in keys {
                self.refresh_neighbour(ifindex, address, now);
            }
        }
    }

    /// The neighbour slot of on-link destination `address` on `ifindex` (the director pins its
    /// on-link TUN real servers; NAT clients on-link reach their own MAC by their frames), kept
    /// until [`unpin`](Self::unpin);
    /// solicited now if unresolved (ARP for IPv4, a neighbour solicitation for IPv6). The next
    /// snapshot gives it a host route (/32 or /128) when a connected prefix of that served
    /// interface covers it.
    pub fn neighbour_for(
        &mut self,
        ifindex: u32,
        address: impl Into<IpAddr>,
    ) -> Result<NeighbourId, NeighbourSlotsFull> {
        let address = address.into();
        let id = self.slots.acquire(ifindex, address)?;
        if self.pinned.insert((ifindex, address)) {
            self.dirty = true;
        }
        if let std::collections::hash_map::Entry::Vacant(vacant) =
            self.held.entry((ifindex, address))
        {
            vacant.insert((id, Neighbour::Gone));
            let now = Instant::now();
            self.write_neighbour(ifindex, address, now);
            self.refresh_neighbour(ifindex, address, now);
        }
        Ok(id)
    }

    /// Lets go of a destination pinned by [`neighbour_for`](Self::neighbour_for); its slot is
    /// released at the next rebuild unless a route still uses it.
    pub fn unpin(&mut self, ifindex: u32, address: impl Into<IpAddr>) {
        if self.pinned.remove(&(ifindex, address.into())) {
            self.dirty = true;
        }
    }

    /// Changes the served interfaces; the next snapshot follows.
    pub fn set_served(&mut self, served: impl IntoIterator<Item = u32>) {
        self.served = served.into_iter().collect();
        self.dirty = true;
    }

    /// The counters.
    pub fn counters(&self) -> FibCounters {
        self.counters
    }

    /// The stats reply's view: counters, snapshot size and age.
    pub fn summary(&self, now: Instant) -> FibSummary {
        FibSummary {
            counters: self.counters,
            memory_bytes: self.fib.memory_bytes() as u64,
            last_update_age_ms: u64::try_from(
                now.saturating_duration_since(self.last_rebuild).as_millis(),
            )
            .unwrap_or(u64::MAX),
        }
    }

    /// The next hop the current snapshot gives `destination` (for flow hash 0), for the stats
    /// reply (a NAT client side, a TUN real server).
    pub fn next_hop(&self, destination: impl Into<IpAddr>) -> NextHopSummary {
        let destination = destination.into();
        let mut summary = NextHopSummary {
            destination: destination.to_string(),
            via: None,
            ifindex: None,
            mac: None,
            state: String::new(),
        };
        match self.fib.lookup(destination, 0) {
            Err(NoRoute { kind }) => kind.name().clone_into(&mut summary.state),
            Ok(next_hop) => {
                summary.ifindex = Some(next_hop.ifindex);
                summary.via = self
                    .held
                    .iter()
                    .find(|(_, &(id, _))| id == next_hop.neighbour)
                    .map(|(&(_, address), _)| address.to_string());
                let state = match self.neighbours.get(next_hop.neighbour) {
                    Neighbour::Resolved(mac) => {
                        summary.mac = Some(
                            mac.iter()
                                .map(|byte| format!("{byte:02x}"))
                                .collect::<Vec<_>>()
                                .join(":"),
                        );
                        "resolved"
                    }
                    Neighbour::Unresolved => "unresolved",
                    Neighbour::Failed => "failed",
                    Neighbour::Gone => "gone",
                };
                state.clone_into(&mut summary.state);
            }
        }
        summary
    }

    /// Replaces the model with a full dump. A table the kernel does not have (nexthop objects
    /// before Linux 5.3, IPv6 when booted without it) is skipped.
    fn dump(&mut self) -> Result<(), NetlinkError> {
        let mut model = Model::default();
        for (request, header, operation, reply) in dump_requests() {
            let result = self
                .requests
                .dump_payloads(operation, request, &header, |payload| {
                    // Other families and tables parse to nothing and are skipped.
                    if let Some(event) = parse(reply, payload).event() {
                        model.apply(event);
                    }
                });
            match result {
                Err(NetlinkError::Refused { .. }) if optional_dump(request, &header) => {}
                other => other?,
            }
        }
        self.model = model;
        self.counters.dumps += 1;
        self.dirty = true;
        let now = Instant::now();
        let keys: Vec<(u32, IpAddr)> = self.held.keys().copied().collect();
        for (ifindex, address) in keys {
            self.write_neighbour(ifindex, address, now);
        }
        Ok(())
    }

    fn rebuild(&mut self, now: Instant) {
        let built = build(&self.model, &self.served, &self.pinned, &mut self.slots);
        // Release what no route or pin references any more; write new slots' state.
        let gone: Vec<(u32, IpAddr)> = self
            .held
            .keys()
            .filter(|key| !built.referenced.contains(key))
            .copied()
            .collect();
        for (ifindex, address) in gone {
            if let Some(id) = self.slots.release(ifindex, address) {
                self.neighbours.publish(id, Neighbour::Gone);
            }
            self.held.remove(&(ifindex, address));
        }
        let mut fresh = Vec::new();
        for &(ifindex, address) in &built.referenced {
            if let Some(id) = self.slots.get(ifindex, address) {
                self.held.entry((ifindex, address)).or_insert_with(|| {
                    fresh.push((ifindex, address));
                    (id, Neighbour::Gone)
                });
            }
        }
        for (ifindex, address) in fresh {
            self.write_neighbour(ifindex, address, now);
            self.refresh_neighbour(ifindex, address, now);
        }
        self.count_build(built.counts, now);
        self.fib = Arc::new(built.fib);
        self.unpublished = true;
        self.dirty = false;
        self.last_rebuild = now;
        self.counters.rebuilds += 1;
        self.count_neighbours();
    }

    fn count_build(&mut self, counts: BuildCounts, now: Instant) {
        let counters = &mut self.counters;
        counters.prefixes = counts.prefixes;
        counters.prefixes_v6 = counts.prefixes_v6;
        counters.routes = counts.routes;
        counters.routes_not_served = counts.not_served;
        counters.legs_not_served = counts.legs_not_served;
        counters.routes_blackhole = counts.blackhole;
        counters.routes_unreachable = counts.unreachable;
        counters.routes_prohibit = counts.prohibit;
        counters.routes_missing_nexthop_object = counts.missing_nexthop_object;
        counters.neighbour_slots_full = counts.slots_full;
        for (kind, count) in [
            (
                "route_not_served",
                counts.not_served + counts.legs_not_served,
            ),
            ("route_blackhole", counts.blackhole),
            ("route_unreachable", counts.unreachable),
            ("route_prohibit", counts.prohibit),
            (
                "route_missing_nexthop_object",
                counts.missing_nexthop_object,
            ),
            ("neighbour_slots_full", counts.slots_full),
        ] {
            if count > 0 && self.log.allow(kind, now) {
                tracing::warn!(kind, count, "FIB: routes the director cannot forward by");
            }
        }
    }

    fn count_neighbours(&mut self) {
        let (mut resolved, mut unresolved, mut failed) = (0, 0, 0);
        for &(_, state) in self.held.values() {
            match state {
                Neighbour::Resolved(_) => resolved += 1,
                Neighbour::Failed => failed += 1,
                Neighbour::Unresolved | Neighbour::Gone => unresolved += 1,
            }
        }
        self.counters.next_hops = self.held.len() as u64;
        self.counters.neighbours_resolved = resolved;
        self.counters.neighbours_unresolved = unresolved;
        self.counters.neighbours_failed = failed;
    }

    /// Writes the model's state of a held neighbour to its slot if it changed.
    fn write_neighbour(&mut self, ifindex: u32, address: IpAddr, now: Instant) {
        let Some(&(id, written)) = self.held.get(&(ifindex, address)) else {
            return;
        };
        let state = match self.model.neighbours.get(&(ifindex, address)) {
            Some(entry) if entry.state & NUD_USABLE != 0 => entry
                .lladdr
                .map_or(Neighbour::Unresolved, Neighbour::Resolved),
            Some(entry) if entry.state & NUD_FAILED != 0 => Neighbour::Failed,
            _ => Neighbour::Unresolved,
        };
        if state == written {
            return;
        }
        if state == Neighbour::Failed && self.log.allow("neighbour_failed", now) {
            tracing::warn!(%address, ifindex, "FIB: next hop neighbour FAILED to resolve");
        }
        self.neighbours.publish(id, state);
        self.held.insert((ifindex, address), (id, state));
        self.counters.neighbour_updates += 1;
        self.count_neighbours();
    }

    /// Asks the kernel to confirm a STALE/DELAY/PROBE neighbour, or to resolve a missing,
    /// INCOMPLETE or FAILED one. Both are the same request (`RTM_NEWNEIGH` with `NTF_USE`,
    /// which runs the kernel's `neigh_event_send` as if a frame were sent to it: an ARP request
    /// for IPv4, a neighbour solicitation or unicast probe for IPv6, RFC 4861 7.3); REACHABLE,
    /// PERMANENT and NOARP entries need nothing.
    fn refresh_neighbour(&mut self, ifindex: u32, address: IpAddr, now: Instant) {
        let state = self
            .model
            .neighbours
            .get(&(ifindex, address))
            .map_or(0, |entry| entry.state);
        let counter = if state & NUD_UNCONFIRMED != 0 {
            &mut self.counters.neighbour_confirmations
        } else if state & NUD_USABLE == 0 {
            &mut self.counters.neighbour_solicitations
        } else {
            return;
        };
        *counter += 1;
        if let Err(error) = self.requests.solicit_neighbour(ifindex, address) {
            self.counters.neighbour_request_errors += 1;
            if self.log.allow("neighbour_request", now) {
                tracing::warn!(%error, "FIB: asking the kernel about a next hop failed");
            }
        }
    }
}
