//! Next hops from the kernel's routing table (issue 14): the FIB mirror's thread
//! ([`crate::fib::FibTask`]) started for a director that forwards NAT or TUN, its snapshots put
//! into every table the director publishes (with the one neighbour array the mirror keeps
//! current), and the on-link TUN real servers pinned in it so that their lookups give their own
//! neighbour (a connected prefix alone gives `route_onlink_unresolved`).
//!
//! What it must not do: look anything up per frame (the workers do, in the snapshot) or wait on
//! the mirror for longer than its bounded requests.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dataplane::fib::Fib;
use dataplane::{Forwarding, Routing};
use tracing::warn;

use super::Director;
use crate::config::{Config, NatReply};
use crate::connected;
use crate::fib::FibTask;
use crate::netlink::Netlink;

/// Neighbour slots the mirror may hand out: next hops in use and pinned real servers.
pub(super) const NEIGHBOUR_CAPACITY: usize = 4096;

/// How long start-up waits for the mirror's first snapshot (its first dump is one netlink
/// round trip per table).
const FIRST_SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// Starts the mirror for a director that forwards NAT or TUN (DR needs no routes: its real
/// servers are on-link, checked at start-up), serving `client_ifindex`: TUN packets and NAT
/// replies leave by it. Returns the task and the routing view for the first table.
pub(super) fn start(
    config: &Config,
    client_ifindex: u32,
) -> anyhow::Result<Option<(FibTask, Routing)>> {
    if !config.uses(Forwarding::Nat) && !config.uses(Forwarding::Tunnel) {
        return Ok(None);
    }
    let task = FibTask::spawn(vec![client_ifindex], NEIGHBOUR_CAPACITY)
        .context("starting the routing table mirror")?;
    let fib = task
        .snapshots()
        .recv_timeout(FIRST_SNAPSHOT_WAIT)
        .context("the routing table mirror sent no first snapshot")?;
    let routing = Routing {
        fib,
        neighbours: task.neighbours(),
        client_ifindex,
        nat_reply: NatReply::default(),
        epoch: 0,
    };
    Ok(Some((task, routing)))
}

/// The TUN real servers (fallbacks included) on a connected prefix of the client side: the
/// ones to pin, so the FIB gives each a host route and a neighbour slot of its own.
pub(super) fn on_link_tun_servers(netlink: &mut Netlink, config: &Config) -> BTreeSet<IpAddr> {
    let Some(client) = config.director.interfaces.first() else {
        return BTreeSet::new();
    };
    let connected = match connected::read_prefixes(netlink, std::slice::from_ref(client)) {
        Ok(connected) => connected,
        Err(error) => {
            warn!(error = %format!("{error:#}"), "cannot read the client side's prefixes");
            return BTreeSet::new();
        }
    };
    config
        .services
        .iter()
        .filter(|service| service.forwarding == Forwarding::Tunnel)
        .flat_map(|service| service.backends.iter().chain(&service.fallback))
        .map(|backend| backend.address)
        .filter(|&address| connected.iter().any(|side| side.covers(address)))
        .collect()
}

impl Director {
    /// Pins the on-link TUN real servers of the configuration in force in the mirror (and
    /// unpins those no longer configured or on-link). The mirror publishes a new snapshot when
    /// its pins change.
    pub(super) fn pin_tun_servers(&mut self) {
        let Some(fib) = &self.shared.fib else {
            return;
        };
        let wanted = on_link_tun_servers(&mut self.netlink, &self.config);
        for &address in self.pinned.difference(&wanted) {
            fib.unpin(self.home_ifindex, address);
        }
        for &address in &wanted {
            if let Err(error) = fib.neighbour_for(self.home_ifindex, address) {
                warn!(%address, %error, "could not pin a TUN real server in the routing mirror");
            }
        }
        self.pinned = wanted;
    }

    /// Takes the mirror's newest snapshot (`first`, or a newer one already waiting) into the
    /// tables: the workers see it with the next publication.
    pub(super) fn routes_changed(&mut self, first: Arc<Fib>) {
        let mut newest = first;
        if let Some(fib) = &self.shared.fib {
            while let Ok(newer) = fib.snapshots().try_recv() {
                newest = newer;
            }
        }
        if let Some(routing) = &mut self.builder.routing {
            routing.fib = newest;
            // Established flows look their routes up again in the new snapshot.
            routing.epoch = routing.epoch.wrapping_add(1);
            self.rebuild();
        }
    }
}
