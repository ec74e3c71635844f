//! The service table: what the data plane serves, as one immutable snapshot.
//!
//! Control builds a [`ServiceTable`] from the configuration and the neighbour table and hands it
//! to every worker; a worker swaps to a new snapshot between batches. Nothing here changes after
//! construction, so workers read it without synchronisation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::conntrack::FlowAddr;
use crate::counters::BackendCounters;
use crate::fib::{Fib, Neighbours};
use crate::persistence::PersistenceTable;
use crate::wire::MacAddr;

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    /// The IPv4 protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The protocol with this IPv4 protocol number, if it is one we serve.
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// Lower-case name, as in the configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How frames reach a real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarding {
    /// Direct routing: rewrite the Ethernet destination to the real server's MAC and send the
    /// frame out of the interface it came in on (LVS-DR).
    DirectRouting,
    /// Masquerading (LVS-NAT): rewrite the destination VIP:port to the real server's
    /// address:port on the way in and the source back to VIP:port on the way out; the real
    /// servers route their replies through the director. See [`crate::rewrite::nat`].
    Nat,
    /// IP-in-IP tunnelling (LVS-TUN): wrap the packet in an outer IPv4 header addressed to the
    /// real server, which decapsulates it and answers the client directly. See
    /// [`crate::rewrite::tun`].
    Tunnel,
}

impl Forwarding {
    /// Name as in the configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Forwarding::DirectRouting => "dr",
            Forwarding::Nat => "nat",
            Forwarding::Tunnel => "tun",
        }
    }
}

/// What identifies a service on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual IP address.
    pub vip: IpAddr,
    /// Destination port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

impl ServiceKey {
    /// The key in one word, for [`ServiceIndex`]'s hash: an IPv4 VIP, port and protocol number
    /// side by side (exact), an IPv6 VIP folded to 32 bits first.
    #[inline]
    pub const fn packed(&self) -> u64 {
        Self::pack(FlowAddr::new(self.vip).fold32(), self.port, self.protocol)
    }

    #[inline]
    const fn pack(vip: u32, port: u16, protocol: Protocol) -> u64 {
        ((vip as u64) << 24) | ((port as u64) << 8) | protocol.number() as u64
    }
}

/// A real server of one service.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Its address. Of the service's family, except that an IPv4 service forwarded by TUN may
    /// have IPv6 real servers (IPv4-in-IPv6, as IPVS allows).
    pub address: IpAddr,
    /// Its MAC address, from the neighbour table or the configuration; `None` while unresolved
    /// (frames scheduled to it are dropped and counted until it resolves). Not read for TUN
    /// when the table has a [`Routing`]: the route to `address` gives the next hop.
    pub mac: Option<[u8; 6]>,
    /// Configured weight; the scheduler never gives new flows to weight 0.
    pub weight: u32,
    /// NAT only: the port the real server listens on (`VIP:80 -> RS:8080`); 0 = the port the
    /// client connected to. Other forwarding methods cannot change ports and ignore it.
    pub port: u16,
    /// Index of this backend's counters in each worker's [`BackendCounters`] block, and its
    /// stable identity.
    ///
    /// The data plane relies on control for two guarantees: the same backend of the same service
    /// keeps its slot across reloads, and a slot is given to another backend only once its
    /// `active_connections` and `inactive_connections` gauges are zero in every worker. Connection
    /// entries remember the slot they incremented so the decrement (on expiry, eviction, removal
    /// or rebinding) lands on the same gauge whatever tables came between; persistence templates
    /// name their backend by slot, found again with [`Service::backend_by_slot`].
    pub counter_slot: usize,
    /// Its connection thresholds (`ipvsadm -x`/`-y`); the default has none.
    pub thresholds: Thresholds,
}

/// A real server's connection thresholds, IPVS's `u_threshold` and `l_threshold`
/// (`ipvsadm -x`/`-y`, the backend's `max_connections`/`min_connections` in the configuration):
/// once its connections (active and inactive, summed over the workers) reach `max`, it gets no
/// new flows, whatever the scheduler, until they fall below `min` (IPVS's
/// `IP_VS_DEST_F_OVERLOAD`, set in `ip_vs_bind_dest()` and cleared in `ip_vs_unbind_dest()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Thresholds {
    /// The upper threshold; 0: none (and `min` is ignored).
    pub max: u64,
    /// The lower threshold; 0: three quarters of `max`, as IPVS does without one.
    pub min: u64,
}

impl Thresholds {
    /// Whether a server with `connections` is over its threshold, given whether it was
    /// (`was_over`): the hysteresis of [`Thresholds`].
    #[inline]
    pub const fn over(self, connections: u64, was_over: bool) -> bool {
        if self.max == 0 {
            false
        } else if was_over {
            if self.min == 0 {
                // IPVS: `totalconns * 4 < u_threshold * 3` clears it.
                connections.saturating_mul(4) >= self.max.saturating_mul(3)
            } else {
                connections >= self.min
            }
        } else {
            connections >= self.max
        }
    }
}

/// Client affinity of a service (IPVS persistence, `ipvsadm -p TIMEOUT -M NETMASK`): every
/// connection from one client address (masked) goes to the server its first one got, across all
/// of the service's ports and all workers, until `timeout` after that client was last seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// How long affinity outlives the client's last packet.
    pub timeout: Duration,
    /// IPv4 client addresses are masked with this before lookup (host order; `u32::MAX` = /32).
    pub netmask: u32,
    /// IPv6 client addresses are masked with this before lookup (`u128::MAX` = /128).
    pub netmask6: u128,
    /// Stable identity of the service's persistence group, kept across reloads.
    pub group: u32,
}

impl Persistence {
    /// `client` masked with its family's netmask, as templates are keyed.
    #[inline]
    pub fn client(&self, client: IpAddr) -> IpAddr {
        match client {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & self.netmask)),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & self.netmask6)),
        }
    }
}

/// One virtual service: a VIP and protocol on one or more ports, its scheduler and its real
/// servers.
pub struct Service {
    /// Operator's name for it.
    pub name: String,
    /// What it listens on: the VIP, protocol and first port.
    pub key: ServiceKey,
    /// Every port it listens on, `key.port` first. Several ports make a service group sharing
    /// one scheduler and persistence, as an LVS firewall-mark service does (HTTP and HTTPS).
    pub ports: Vec<u16>,
    /// Client affinity, if configured.
    pub persistence: Option<Persistence>,
    /// How frames reach its real servers.
    pub forwarding: Forwarding,
    /// Chooses a backend index for a new flow.
    pub scheduler: scheduler::Scheduler,
    /// Real servers; `scheduler.pick` returns an index into this.
    pub backends: Vec<Backend>,
}

impl Service {
    /// Every (VIP, port, protocol) the service answers on.
    pub fn keys(&self) -> impl Iterator<Item = ServiceKey> + '_ {
        self.ports
            .iter()
            .map(|&port| ServiceKey { port, ..self.key })
    }

    /// Index of the backend with this address, for flows created under an older snapshot.
    pub fn backend_index(&self, address: IpAddr) -> Option<usize> {
        self.backends
            .iter()
            .position(|backend| backend.address == address)
    }

    /// Index of the backend with this [`Backend::counter_slot`], for persistence templates.
    #[inline]
    pub fn backend_by_slot(&self, counter_slot: usize) -> Option<usize> {
        self.backends
            .iter()
            .position(|backend| backend.counter_slot == counter_slot)
    }
}

/// A real server's key for the scheduler ([`scheduler::Candidate::key`]): an IPv4 address as
/// its 32 bits (so Maglev tables of IPv4 pools are what they were before IPv6), an IPv6 one
/// with its halves XORed.
#[inline]
pub const fn scheduler_key(address: IpAddr) -> u64 {
    match address {
        IpAddr::V4(v4) => v4.to_bits() as u64,
        IpAddr::V6(v6) => {
            let bits = v6.to_bits();
            (bits as u64) ^ ((bits >> 64) as u64)
        }
    }
}

impl Backend {
    /// The real server's port for a flow to service port `service_port` ([`Backend::port`]).
    #[inline]
    pub const fn port_for(&self, service_port: u16) -> u16 {
        if self.port == 0 {
            service_port
        } else {
            self.port
        }
    }
}

/// What the rewrites need to know about one of the director's interfaces. Control fills it from
/// the kernel (link, address and route/neighbour tables); the data plane resolves nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interface {
    /// Its MAC: the source of every frame sent out of it.
    pub mac: MacAddr,
    /// The director's IPv4 address on it: the outer source of LVS-TUN packets sent out of it.
    pub address: Ipv4Addr,
    /// The director's IPv6 address on it (global scope), the outer source of IPv6 LVS-TUN
    /// packets; `None` if it has none (those frames are dropped as
    /// [`crate::DropReason::UnsupportedForwarding`]).
    pub address6: Option<Ipv6Addr>,
    /// Its MTU (IP bytes, Ethernet header excluded): the limit for LVS-TUN encapsulation.
    pub mtu: u16,
    /// The MAC of the next hop toward the clients (the default gateway on that link), for NAT
    /// replies and translated ICMP errors; `None` while unresolved (those frames are dropped as
    /// [`crate::DropReason::NeighbourUnresolved`]). Only the client side's is read: frames to
    /// real servers use each [`Backend::mac`]. Not read when the table has a [`Routing`]: NAT
    /// replies then follow [`NatReply`].
    pub next_hop_mac: Option<MacAddr>,
}

/// The director's two sides. With one interface (DR, TUN, one-armed NAT) both are the same.
///
/// Which frames arrive where, and where [`crate::pipeline::Egress`] sends them, is described in
/// [`crate::pipeline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interfaces {
    /// Where clients' frames for the VIPs arrive ([`crate::pipeline::Egress::Ingress`] for
    /// DR, TUN and answers to clients; [`crate::pipeline::Egress::Peer`] for NAT replies).
    pub client: Interface,
    /// Where the NAT real servers are ([`crate::pipeline::Egress::Peer`] for NAT inbound).
    pub server: Interface,
}

/// Where NAT replies go (`[director] nat_reply`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NatReply {
    /// To the MAC the connection's client frames arrive from (F5's "auto last hop"): the client
    /// itself on-link, or whichever router forwarded them. No route to the client is needed.
    #[default]
    LastHop,
    /// To the next hop a route lookup of the client's address gives, once per connection.
    Route,
}

impl NatReply {
    /// The value as the configuration writes it (`[director] nat_reply`).
    pub fn name(self) -> &'static str {
        match self {
            NatReply::LastHop => "last-hop",
            NatReply::Route => "route",
        }
    }
}

/// The routing view control publishes with a snapshot: the FIB and the neighbour array its
/// next hops index. With it, TUN sends to the route's next hop toward the real server and NAT
/// replies follow [`NatReply`]; see [`crate::pipeline`]'s docs.
#[derive(Clone, Debug)]
pub struct Routing {
    /// The routes, immutable.
    pub fib: Arc<Fib>,
    /// The next hops' MACs, updated in place by control.
    pub neighbours: Arc<Neighbours>,
    /// Interface index of the client side: TUN packets and NAT replies leave by it, so a route
    /// out of any other interface is refused as not served.
    pub client_ifindex: u32,
    /// Where NAT replies go.
    pub nat_reply: NatReply,
    /// Which FIB snapshot this is (control counts them, wrapping): a connection whose next hop
    /// was found in another one looks its route up again on its next frame, so a route change
    /// moves established flows too, not only new ones.
    pub epoch: u16,
}

/// Idle timeouts for connection-table entries (IPVS's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the handshake completes.
    pub tcp_established: Duration,
    /// TCP after a SYN only.
    pub tcp_syn: Duration,
    /// TCP after a FIN.
    pub tcp_fin_wait: Duration,
    /// TCP after a RST.
    pub tcp_close: Duration,
    /// Any UDP flow.
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        // ip_vs_proto_tcp.c / ip_vs_proto_udp.c defaults.
        Timeouts {
            tcp_established: Duration::from_secs(15 * 60),
            tcp_syn: Duration::from_secs(60),
            tcp_fin_wait: Duration::from_secs(2 * 60),
            tcp_close: Duration::from_secs(10),
            udp: Duration::from_secs(5 * 60),
        }
    }
}

/// Everything the workers serve, as one immutable snapshot.
pub struct ServiceTable {
    /// Increases with every snapshot control publishes.
    pub generation: u64,
    /// The services.
    pub services: Vec<Service>,
    /// `services` index by key.
    index: ServiceIndex,
    /// Connection idle timeouts.
    pub timeouts: Timeouts,
    /// Per-worker backend counters, indexed `[worker][backend.counter_slot]`. Control keeps the
    /// same blocks across snapshots so totals survive a rebuild.
    pub backend_counters: Vec<Arc<[BackendCounters]>>,
    /// Persistence templates, shared by every worker. Control creates one table and carries it
    /// across snapshots ([`ServiceTable::with_persistence`]) so clients stay pinned through a
    /// reload; [`ServiceTable::new`] installs an empty one (capacity 0, nothing pinned).
    pub persistence: Arc<PersistenceTable>,
    /// The director's interfaces, for NAT and TUN ([`ServiceTable::with_interfaces`]). `None`
    /// (what [`ServiceTable::new`] leaves): DR works, NAT and TUN services drop their frames as
    /// [`crate::DropReason::UnsupportedForwarding`].
    pub interfaces: Option<Interfaces>,
    /// Routes and neighbours ([`ServiceTable::with_routing`]). `None` (what
    /// [`ServiceTable::new`] leaves): NAT replies go to the client side's
    /// [`Interface::next_hop_mac`] and TUN to each [`Backend::mac`].
    pub routing: Option<Routing>,
}

impl ServiceTable {
    /// Builds a snapshot. Later services with a duplicate key shadow earlier ones; control
    /// rejects duplicates before it gets here.
    pub fn new(
        generation: u64,
        services: Vec<Service>,
        timeouts: Timeouts,
        backend_counters: Vec<Arc<[BackendCounters]>>,
    ) -> Self {
        let index = ServiceIndex::new(
            services
                .iter()
                .enumerate()
                .flat_map(|(position, service)| service.keys().map(move |key| (key, position))),
        );
        ServiceTable {
            generation,
            services,
            index,
            timeouts,
            backend_counters,
            persistence: Arc::new(PersistenceTable::new(0)),
            interfaces: None,
            routing: None,
        }
    }

    /// This snapshot with next hops from `routing`.
    #[must_use]
    pub fn with_routing(mut self, routing: Routing) -> Self {
        self.routing = Some(routing);
        self
    }

    /// This snapshot with the facts NAT and TUN need about the director's interfaces.
    #[must_use]
    pub fn with_interfaces(mut self, interfaces: Interfaces) -> Self {
        self.interfaces = Some(interfaces);
        self
    }

    /// This snapshot with `table` as its persistence templates.
    #[must_use]
    pub fn with_persistence(mut self, table: Arc<PersistenceTable>) -> Self {
        self.persistence = table;
        self
    }

    /// An empty table, as workers start with before control publishes the first one.
    pub fn empty(workers: usize) -> Self {
        ServiceTable::new(
            0,
            Vec::new(),
            Timeouts::default(),
            vec![Arc::from(Vec::new()); workers],
        )
    }

    /// The service for this key and its index.
    #[inline]
    pub fn lookup(&self, key: &ServiceKey) -> Option<(usize, &Service)> {
        self.lookup_flow(FlowAddr::new(key.vip), key.port, key.protocol)
    }

    /// [`ServiceTable::lookup`] by the VIP as a frame's [`crate::conntrack::FlowKey`] holds it:
    /// the per-frame path, with no conversion to `IpAddr` and back.
    #[inline]
    pub fn lookup_flow(
        &self,
        vip: FlowAddr,
        port: u16,
        protocol: Protocol,
    ) -> Option<(usize, &Service)> {
        let packed = ServiceKey::pack(vip.fold32(), port, protocol);
        let position = self.index.get(vip, packed)?;
        Some((position, self.services.get(position)?))
    }
}

/// [`ServiceTable`]'s index from [`ServiceKey`] to position: packed keys in an open-addressing
/// array, at most half full, found by Fibonacci hashing (multiply by 2^64 / phi, keep the top
/// bits; Knuth vol. 3, 6.4) and linear probing. Built once per snapshot, read by every frame:
/// a lookup is a multiplication and, as a rule, one bucket, where a general hash map pays for a
/// seeded hasher over the key's fields. The keys are the operator's, not the clients', so a
/// fixed multiplier is enough: a frame can only probe the runs the configuration made.
struct ServiceIndex {
    /// (packed key, VIP, position); packed key 0 is an empty bucket. The packed key is exact
    /// for IPv4 and holds the port and protocol exactly, the VIP folded for IPv6, so a match
    /// compares the VIP too (as a [`FlowAddr`], two words, as the frame's key holds it).
    buckets: Box<[(u64, FlowAddr, u32)]>,
    /// 64 - log2(buckets.len()).
    shift: u32,
}

impl ServiceIndex {
    /// Later entries with an existing key replace its position.
    fn new(entries: impl Iterator<Item = (ServiceKey, usize)>) -> Self {
        let entries: Vec<(ServiceKey, u32)> = entries
            .map(|(key, position)| (key, u32::try_from(position).unwrap_or(u32::MAX)))
            .collect();
        let len = (entries.len() * 2).max(2).next_power_of_two();
        let mut index = ServiceIndex {
            buckets: vec![(0, FlowAddr::default(), 0); len].into_boxed_slice(),
            shift: 64 - len.trailing_zeros(),
        };
        for (key, position) in entries {
            let (packed, vip) = (key.packed(), FlowAddr::new(key.vip));
            let mut at = index.home(packed);
            loop {
                let bucket = &mut index.buckets[at];
                if bucket.0 == 0 || (bucket.0 == packed && bucket.1 == vip) {
                    *bucket = (packed, vip, position);
                    break;
                }
                at = (at + 1) & (len - 1);
            }
        }
        index
    }

    #[inline]
    fn home(&self, packed: u64) -> usize {
        (packed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[cfg(test)]
    fn get_key(&self, key: ServiceKey) -> Option<usize> {
        self.get(FlowAddr::new(key.vip), key.packed())
    }

    #[inline]
    fn get(&self, vip: FlowAddr, packed: u64) -> Option<usize> {
        let mask = self.buckets.len() - 1;
        let mut at = self.home(packed);
        // At most half full: an empty bucket ends every run.
        loop {
            let (found, found_vip, position) = *self.buckets.get(at)?;
            if found == packed && found_vip == vip {
                return Some(position as usize);
            }
            if found == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(vip: [u8; 4], port: u16, protocol: Protocol) -> ServiceKey {
        ServiceKey {
            vip: IpAddr::from(vip),
            port,
            protocol,
        }
    }

    #[test]
    fn index_finds_every_key_and_nothing_else() {
        let keys: Vec<ServiceKey> = (0..600u16)
            .map(|n| {
                let protocol = if n % 2 == 0 {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                key([192, 0, 2, (n % 50) as u8], 80 + n / 50, protocol)
            })
            .collect();
        let index = ServiceIndex::new(keys.iter().copied().zip(0..));
        for (position, key) in keys.iter().enumerate() {
            assert_eq!(index.get_key(*key), Some(position), "{key:?}");
        }
        // Near misses: the other protocol, another port, another address.
        assert_eq!(index.get_key(key([192, 0, 2, 0], 80, Protocol::Udp)), None);
        assert_eq!(index.get_key(key([192, 0, 2, 0], 79, Protocol::Tcp)), None);
        assert_eq!(index.get_key(key([192, 0, 2, 50], 80, Protocol::Tcp)), None);
        assert_eq!(
            index.get_key(key([198, 51, 100, 0], 80, Protocol::Tcp)),
            None
        );
    }

    #[test]
    fn index_tells_ipv6_vips_apart_whose_packed_words_collide() {
        // Both fold to the same 32 bits (their differences cancel in the XOR of the words).
        let one: IpAddr = "2001:db8:0:1:0:1:0:1".parse().unwrap();
        let other: IpAddr = "2001:db8::1".parse().unwrap();
        let six = |vip| ServiceKey {
            vip,
            port: 80,
            protocol: Protocol::Tcp,
        };
        assert_eq!(six(one).packed(), six(other).packed());
        let index = ServiceIndex::new([(six(one), 0), (six(other), 1)].into_iter());
        assert_eq!(index.get_key(six(one)), Some(0));
        assert_eq!(index.get_key(six(other)), Some(1));
        assert_eq!(index.get_key(six("2001:db8::2".parse().unwrap())), None);
        // An IPv4-mapped IPv6 address is its IPv4 address's key (`FlowAddr`): the parser drops
        // such addresses on the wire and the configuration refuses them, so none is looked up.
        let v4 = key([192, 0, 2, 10], 80, Protocol::Tcp);
        let index = ServiceIndex::new([(v4, 0)].into_iter());
        assert_eq!(
            index.get_key(six("::ffff:192.0.2.10".parse().unwrap())),
            Some(0)
        );
        assert_eq!(
            index.get_key(six("::ffff:192.0.2.11".parse().unwrap())),
            None
        );
    }

    #[test]
    fn index_later_duplicates_shadow_earlier_and_empty_finds_nothing() {
        let web = key([192, 0, 2, 10], 80, Protocol::Tcp);
        let dns = key([192, 0, 2, 10], 53, Protocol::Udp);
        let index = ServiceIndex::new([(web, 0), (dns, 1), (web, 2)].into_iter());
        assert_eq!(index.get_key(web), Some(2));
        assert_eq!(index.get_key(dns), Some(1));
        let empty = ServiceIndex::new(std::iter::empty());
        assert_eq!(empty.get_key(web), None);
    }

    #[test]
    fn packed_keys_differ_in_every_field() {
        let base = key([192, 0, 2, 10], 80, Protocol::Tcp);
        assert_ne!(base.packed(), 0);
        assert_ne!(
            base.packed(),
            key([192, 0, 2, 11], 80, Protocol::Tcp).packed()
        );
        assert_ne!(
            base.packed(),
            key([192, 0, 2, 10], 81, Protocol::Tcp).packed()
        );
        assert_ne!(
            base.packed(),
            key([192, 0, 2, 10], 80, Protocol::Udp).packed()
        );
        assert_ne!(
            key([255, 255, 255, 255], 65535, Protocol::Udp).packed(),
            key([255, 255, 255, 255], 65535, Protocol::Tcp).packed()
        );
    }
}
