//! The forwarding information base the workers read next hops from: an immutable snapshot of the
//! kernel's routes that control builds ([`FibBuilder`]) and publishes, and the neighbour array
//! ([`neighbour`]) the chosen next hop's MAC is read from.
//!
//! - [`lpm`]: the longest-prefix-match table, generic over the address width.
//! - [`neighbour`]: the lock-free neighbour array and control's slot allocator for it.
//!
//! A lookup ([`Fib::lookup_v4`], [`Fib::lookup_v6`], or [`Fib::lookup`] for either family) maps an address to a [`RouteId`] through the LPM table, then the
//! route to a next hop ([`NextHopRef`]: a [`NeighbourId`] and an interface index) or to the
//! reason there is none ([`NoRouteKind`], one per counter). A new connection looks up once and
//! keeps the neighbour id, so later MAC changes reach it through the neighbour array.
//!
//! Multipath (ECMP) routes choose by flow hash through a per-group table of [`ECMP_BUCKETS`]
//! buckets, each filled by weighted rendezvous hashing (Thaler and Ravishankar, "Using
//! name-based mappings to increase hit rates", 1998; the weighted score `-weight / ln(u)` of
//! Schindelhauer and Schomaker, 2005) over the group's next hops, named by address and
//! interface. Why this one:
//! - stable: a flow's bucket depends only on its hash, a bucket's next hop only on the group's
//!   next hops (addresses, interfaces, weights), not on their order or neighbour slots;
//! - removing a next hop moves exactly the flows that were on it (each bucket keeps the best of
//!   the survivors, which is its old winner unless that was the one removed), and adding one
//!   moves flows only onto it. RFC 2992's hash-threshold moves flows of other next hops as well,
//!   and Maglev (the scheduler's) moves a few. Linux's resilient nexthop groups get the same
//!   property by remembering the previous bucket table; rendezvous needs no history, so control
//!   can build every snapshot from scratch;
//! - weights are honoured in expectation; the share of buckets a next hop gets deviates from
//!   `weight / total` by the binomial spread of 1024 buckets (a standard deviation of at most
//!   1.6 points, at a share of one half).
//!
//! The table costs one byte per bucket (1 KiB per multipath group: control should give routes
//! through the same next hops one shared [`RouteId`]) and one read per lookup. Scores use `f64`
//! logarithms at build time only; two machines' tables could differ in a bucket whose top two
//! scores are within a rounding error, which only matters for a flow that moves between
//! directors (neighbour ids are local, so the taking-over director looks its next hop up again).
//!
//! IPv6 (issue 15) sits beside IPv4: a second LPM table over `u128`, filled by
//! [`FibBuilder::add_v6`] and read by [`Fib::lookup_v6`], which like [`Fib::lookup_v4`] ends in
//! the family-independent [`Fib::resolve`]. Routes, next-hop groups and neighbour ids are shared
//! by both families (a 4in6 tunnel's IPv6 next hop and an IPv4 route's gateway are both just a
//! route id and a neighbour slot); only the prefix tables are per family.
//!
//! What it must not do: talk to the kernel (control reads netlink and builds snapshots), change
//! after it is built, or allocate, lock or panic in a lookup.

pub mod lpm;
pub mod neighbour;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use self::lpm::{Lpm, LpmBuilder, PrefixTooLong};
pub use self::neighbour::{Neighbour, NeighbourId, NeighbourSlots, Neighbours};

/// Buckets in a multipath group's table (a power of two).
pub const ECMP_BUCKETS: usize = 1024;
const ECMP_BUCKET_BITS: u32 = ECMP_BUCKETS.trailing_zeros();
const _: () = assert!(ECMP_BUCKETS.is_power_of_two());
/// Most next hops in one multipath group (a bucket holds a one-byte member index).
pub const MAX_GROUP_NEXT_HOPS: usize = 256;

/// Index of a route in a [`Fib`]: what its LPM table maps prefixes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteId(pub u32);

/// One next hop of a route, as control gives it to the builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The gateway's address, or for a host route to an on-link destination, the destination's.
    /// With `ifindex` it names the next hop in a multipath group's bucket table, so the choice
    /// does not depend on which neighbour slot the next hop holds on this director today.
    pub address: IpAddr,
    /// The slot of the neighbour at `address` on `ifindex`.
    pub neighbour: NeighbourId,
    /// Egress interface index.
    pub ifindex: u32,
    /// Relative share of flows in a multipath group (Linux's `rtnh_hops + 1`); at least 1.
    pub weight: u32,
}

/// What a prefix leads to, as control gives it to the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Through one next hop, or several chosen by flow hash.
    Forward(Vec<NextHop>),
    /// A connected prefix: the destination is on-link but has no neighbour (no host route) in
    /// this snapshot yet. Control adds a host route per neighbour it knows or is resolving.
    OnLink,
    /// `blackhole`: drop silently.
    Blackhole,
    /// `unreachable`.
    Unreachable,
    /// `prohibit`.
    Prohibit,
    /// Out of an interface the director does not serve.
    NotServed,
}

/// Where a lookup says to send a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHopRef {
    /// The neighbour whose MAC the frame goes to.
    pub neighbour: NeighbourId,
    /// Egress interface index.
    pub ifindex: u32,
}

/// Why a lookup found no next hop; each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoRouteKind {
    /// No prefix covers the address.
    NoMatch,
    /// A blackhole route.
    Blackhole,
    /// An unreachable route.
    Unreachable,
    /// A prohibit route.
    Prohibit,
    /// The route leaves through an interface the director does not serve.
    NotServed,
    /// On a connected prefix, but the destination has no neighbour slot yet: control should
    /// solicit it.
    OnLinkUnresolved,
}

impl NoRouteKind {
    /// Every kind, in counter order.
    pub const ALL: [NoRouteKind; 6] = [
        NoRouteKind::NoMatch,
        NoRouteKind::Blackhole,
        NoRouteKind::Unreachable,
        NoRouteKind::Prohibit,
        NoRouteKind::NotServed,
        NoRouteKind::OnLinkUnresolved,
    ];

    /// The counter's name.
    pub const fn name(self) -> &'static str {
        match self {
            NoRouteKind::NoMatch => "no_route",
            NoRouteKind::Blackhole => "route_blackhole",
            NoRouteKind::Unreachable => "route_unreachable",
            NoRouteKind::Prohibit => "route_prohibit",
            NoRouteKind::NotServed => "route_not_served",
            NoRouteKind::OnLinkUnresolved => "route_onlink_unresolved",
        }
    }
}

/// A lookup that found no next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoute {
    /// Why.
    pub kind: NoRouteKind,
}

/// A route or prefix the builder refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FibError {
    /// A forwarding route with no next hop.
    #[error("a forwarding route needs at least one next hop")]
    EmptyGroup,
    /// More next hops than a bucket can name.
    #[error("{count} next hops in one route; at most {MAX_GROUP_NEXT_HOPS}")]
    GroupTooLarge {
        /// Next hops given.
        count: usize,
    },
    /// A next hop of weight 0.
    #[error(
        "next hop via neighbour {neighbour:?} on interface {ifindex} has weight 0; at least 1"
    )]
    ZeroWeight {
        /// The next hop's neighbour.
        neighbour: NeighbourId,
        /// The next hop's interface.
        ifindex: u32,
    },
    /// A prefix naming a route the builder has not been given.
    #[error("route {0:?} was not added to this builder")]
    UnknownRoute(RouteId),
    /// A prefix longer than its address.
    #[error(transparent)]
    PrefixTooLong(#[from] PrefixTooLong),
}

/// A route as laid out in the snapshot.
#[derive(Clone, Copy, Debug)]
enum Resolution {
    Single(NextHopRef),
    /// Next hops from `first` in `Fib::next_hops`; bucket table from `buckets` in
    /// `Fib::buckets`.
    Group {
        first: u32,
        buckets: u32,
    },
    Refused(NoRouteKind),
}

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Fib {
    v4: Lpm<u32, RouteId>,
    v6: Lpm<u128, RouteId>,
    routes: Vec<Resolution>,
    next_hops: Vec<NextHopRef>,
    buckets: Vec<u8>,
}

impl Fib {
    /// The next hop for `address`; among a multipath route's next hops, the one `flow_hash`
    /// picks (the same for the same hash while the route's next hops stay the same).
    #[inline]
    pub fn lookup_v4(&self, address: Ipv4Addr, flow_hash: u64) -> Result<NextHopRef, NoRoute> {
        match self.v4.lookup(address.to_bits()) {
            Some(route) => self.resolve(route, flow_hash),
            None => Err(NoRoute {
                kind: NoRouteKind::NoMatch,
            }),
        }
    }

    /// The next hop for IPv6 `address`, chosen as [`lookup_v4`](Self::lookup_v4) chooses.
    #[inline]
    pub fn lookup_v6(&self, address: Ipv6Addr, flow_hash: u64) -> Result<NextHopRef, NoRoute> {
        match self.v6.lookup(address.to_bits()) {
            Some(route) => self.resolve(route, flow_hash),
            None => Err(NoRoute {
                kind: NoRouteKind::NoMatch,
            }),
        }
    }

    /// The next hop for `address` of either family.
    #[inline]
    pub fn lookup(&self, address: IpAddr, flow_hash: u64) -> Result<NextHopRef, NoRoute> {
        match address {
            IpAddr::V4(address) => self.lookup_v4(address, flow_hash),
            IpAddr::V6(address) => self.lookup_v6(address, flow_hash),
        }
    }

    /// The next hop route `route` gives for `flow_hash`, whatever the address family. A route
    /// id from another snapshot gives [`NoRouteKind::NoMatch`] if out of range.
    #[inline]
    pub fn resolve(&self, route: RouteId, flow_hash: u64) -> Result<NextHopRef, NoRoute> {
        let refused = |kind| Err(NoRoute { kind });
        match self.routes.get(route.0 as usize) {
            Some(&Resolution::Single(next_hop)) => Ok(next_hop),
            Some(&Resolution::Group { first, buckets }) => {
                let bucket = buckets as usize + ecmp_bucket(flow_hash);
                let Some(&member) = self.buckets.get(bucket) else {
                    return refused(NoRouteKind::NoMatch);
                };
                match self.next_hops.get(first as usize + usize::from(member)) {
                    Some(&next_hop) => Ok(next_hop),
                    None => refused(NoRouteKind::NoMatch),
                }
            }
            Some(&Resolution::Refused(kind)) => refused(kind),
            None => refused(NoRouteKind::NoMatch),
        }
    }

    /// Routes in the snapshot.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// IPv4 prefixes in the snapshot.
    pub fn prefix_count_v4(&self) -> usize {
        self.v4.len()
    }

    /// IPv6 prefixes in the snapshot.
    pub fn prefix_count_v6(&self) -> usize {
        self.v6.len()
    }

    /// Bytes held by the snapshot's tables.
    pub fn memory_bytes(&self) -> usize {
        self.v4.memory_bytes()
            + self.v6.memory_bytes()
            + self.routes.len() * size_of::<Resolution>()
            + self.next_hops.len() * size_of::<NextHopRef>()
            + self.buckets.len()
    }
}

/// The bucket a flow hash falls in: the top bits of the hash remixed, so that the choice does
/// not follow the bits other consumers of the same flow hash use (the connection table's low
/// bits, Maglev's hash modulo its table size).
#[inline(always)]
fn ecmp_bucket(flow_hash: u64) -> usize {
    (mix64(flow_hash ^ ECMP_SEED) >> (64 - ECMP_BUCKET_BITS)) as usize
}

/// Seed for the bucket choice and the rendezvous scores (an arbitrary odd constant).
const ECMP_SEED: u64 = 0x6a09_e667_f3bc_c909;

/// MurmurHash3's 64-bit finaliser (the scheduler's `hash::mix64`, which is private to it).
#[inline(always)]
const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// A next hop's name in the rendezvous scores: a hash of its address and interface.
fn next_hop_key(next_hop: &NextHop) -> u64 {
    let (bits, family) = match next_hop.address {
        IpAddr::V4(address) => (u128::from(address.to_bits()), 4),
        IpAddr::V6(address) => (address.to_bits(), 6),
    };
    let interface = (u64::from(next_hop.ifindex) << 8) | family;
    mix64(mix64(mix64(bits as u64 ^ ECMP_SEED) ^ (bits >> 64) as u64) ^ interface)
}

/// Weighted rendezvous score of the next hop named `key` (weight `weight`) for `bucket`:
/// `weight / -ln(u)` with `u` uniform in (0, 1) from a hash of both; the bucket goes to the
/// highest.
fn rendezvous_score(bucket: usize, key: u64, weight: u32) -> f64 {
    let hash = mix64(key ^ mix64(bucket as u64));
    // 53 bits, shifted by half a step so u is never 0 or 1.
    #[expect(
        clippy::cast_precision_loss,
        reason = "53 bits fit an f64 mantissa exactly"
    )]
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -unit.ln()
}

/// Collects routes and IPv4 and IPv6 prefixes, then [`build`](Self::build)s the immutable [`Fib`].
#[derive(Clone, Debug, Default)]
pub struct FibBuilder {
    v4: LpmBuilder<u32, RouteId>,
    v6: LpmBuilder<u128, RouteId>,
    routes: Vec<Resolution>,
    next_hops: Vec<NextHopRef>,
    buckets: Vec<u8>,
}

impl FibBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route that prefixes can then point at; routes through the same next hops should
    /// be added once and shared.
    pub fn add_route(&mut self, route: &Route) -> Result<RouteId, FibError> {
        let resolution = match route {
            Route::Forward(next_hops) => self.lay_out_group(next_hops)?,
            Route::OnLink => Resolution::Refused(NoRouteKind::OnLinkUnresolved),
            Route::Blackhole => Resolution::Refused(NoRouteKind::Blackhole),
            Route::Unreachable => Resolution::Refused(NoRouteKind::Unreachable),
            Route::Prohibit => Resolution::Refused(NoRouteKind::Prohibit),
            Route::NotServed => Resolution::Refused(NoRouteKind::NotServed),
        };
        let id = RouteId(u32::try_from(self.routes.len()).expect("fewer than 2^32 routes"));
        self.routes.push(resolution);
        Ok(id)
    }

    fn lay_out_group(&mut self, next_hops: &[NextHop]) -> Result<Resolution, FibError> {
        if let Some(zero) = next_hops.iter().find(|next_hop| next_hop.weight == 0) {
            return Err(FibError::ZeroWeight {
                neighbour: zero.neighbour,
                ifindex: zero.ifindex,
            });
        }
        let as_ref = |next_hop: &NextHop| NextHopRef {
            neighbour: next_hop.neighbour,
            ifindex: next_hop.ifindex,
        };
        match next_hops {
            [] => Err(FibError::EmptyGroup),
            [only] => Ok(Resolution::Single(as_ref(only))),
            _ if next_hops.len() > MAX_GROUP_NEXT_HOPS => Err(FibError::GroupTooLarge {
                count: next_hops.len(),
            }),
            _ => {
                let first = to_u32(self.next_hops.len());
                let buckets = to_u32(self.buckets.len());
                self.next_hops.extend(next_hops.iter().map(as_ref));
                let keys: Vec<u64> = next_hops.iter().map(next_hop_key).collect();
                for bucket in 0..ECMP_BUCKETS {
                    let mut best = (0, f64::NEG_INFINITY);
                    for (member, (next_hop, &key)) in next_hops.iter().zip(&keys).enumerate() {
                        let score = rendezvous_score(bucket, key, next_hop.weight);
                        // Ties keep the earlier member.
                        if score > best.1 {
                            best = (member, score);
                        }
                    }
                    self.buckets.push(best.0 as u8);
                }
                Ok(Resolution::Group { first, buckets })
            }
        }
    }

    /// Points `prefix/len` at `route`; bits past `len` are ignored. The longest matching prefix
    /// wins; the same prefix added twice keeps the last.
    pub fn add_v4(&mut self, prefix: Ipv4Addr, len: u32, route: RouteId) -> Result<(), FibError> {
        if route.0 as usize >= self.routes.len() {
            return Err(FibError::UnknownRoute(route));
        }
        self.v4.insert(prefix.to_bits(), len, route)?;
        Ok(())
    }

    /// Points IPv6 `prefix/len` at `route`, as [`add_v4`](Self::add_v4) does (`len` up to 128).
    pub fn add_v6(&mut self, prefix: Ipv6Addr, len: u32, route: RouteId) -> Result<(), FibError> {
        if route.0 as usize >= self.routes.len() {
            return Err(FibError::UnknownRoute(route));
        }
        self.v6.insert(prefix.to_bits(), len, route)?;
        Ok(())
    }

    /// [`add_v4`](Self::add_v4) or [`add_v6`](Self::add_v6), by `prefix`'s family.
    pub fn add(&mut self, prefix: IpAddr, len: u32, route: RouteId) -> Result<(), FibError> {
        match prefix {
            IpAddr::V4(prefix) => self.add_v4(prefix, len, route),
            IpAddr::V6(prefix) => self.add_v6(prefix, len, route),
        }
    }

    /// Builds the snapshot.
    pub fn build(self) -> Fib {
        Fib {
            v4: self.v4.build(),
            v6: self.v6.build(),
            routes: self.routes,
            next_hops: self.next_hops,
            buckets: self.buckets,
        }
    }
}

fn to_u32(index: usize) -> u32 {
    u32::try_from(index).expect("a FIB of fewer than 2^32 next hops and buckets")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(neighbour: u32, ifindex: u32, weight: u32) -> NextHop {
        NextHop {
            address: IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + neighbour)),
            neighbour: NeighbourId::new(neighbour, 0),
            ifindex,
            weight,
        }
    }

    fn single_route_fib(route: &Route) -> Fib {
        let mut builder = FibBuilder::new();
        let id = builder.add_route(route).unwrap();
        builder.add_v4(Ipv4Addr::new(10, 0, 0, 0), 8, id).unwrap();
        builder.build()
    }

    #[test]
    fn special_routes_give_their_own_kind() {
        for (route, kind) in [
            (Route::Blackhole, NoRouteKind::Blackhole),
            (Route::Unreachable, NoRouteKind::Unreachable),
            (Route::Prohibit, NoRouteKind::Prohibit),
            (Route::NotServed, NoRouteKind::NotServed),
            (Route::OnLink, NoRouteKind::OnLinkUnresolved),
        ] {
            let fib = single_route_fib(&route);
            assert_eq!(
                fib.lookup_v4(Ipv4Addr::new(10, 1, 2, 3), 7),
                Err(NoRoute { kind })
            );
            assert_eq!(
                fib.lookup_v4(Ipv4Addr::new(11, 1, 2, 3), 7),
                Err(NoRoute {
                    kind: NoRouteKind::NoMatch
                })
            );
        }
        assert_eq!(
            Fib::default().lookup_v4(Ipv4Addr::UNSPECIFIED, 0),
            Err(NoRoute {
                kind: NoRouteKind::NoMatch
            })
        );
        assert_eq!(
            Fib::default().resolve(RouteId(3), 0),
            Err(NoRoute {
                kind: NoRouteKind::NoMatch
            })
        );
    }

    #[test]
    fn single_next_hop_and_bad_groups() {
        let fib = single_route_fib(&Route::Forward(vec![via(3, 2, 1)]));
        assert_eq!(
            fib.lookup_v4(Ipv4Addr::new(10, 9, 9, 9), 123),
            Ok(NextHopRef {
                neighbour: NeighbourId::new(3, 0),
                ifindex: 2
            })
        );
        let mut builder = FibBuilder::new();
        assert_eq!(
            builder.add_route(&Route::Forward(vec![])),
            Err(FibError::EmptyGroup)
        );
        assert!(matches!(
            builder.add_route(&Route::Forward(vec![via(1, 1, 1), via(2, 1, 0)])),
            Err(FibError::ZeroWeight { ifindex: 1, .. })
        ));
        assert_eq!(
            builder.add_route(&Route::Forward((0..257).map(|n| via(n, 1, 1)).collect())),
            Err(FibError::GroupTooLarge { count: 257 })
        );
        assert_eq!(
            builder.add_v4(Ipv4Addr::UNSPECIFIED, 0, RouteId(0)),
            Err(FibError::UnknownRoute(RouteId(0)))
        );
        let id = builder.add_route(&Route::Blackhole).unwrap();
        assert!(matches!(
            builder.add_v4(Ipv4Addr::UNSPECIFIED, 33, id),
            Err(FibError::PrefixTooLong(_))
        ));
    }

    fn via_v6(neighbour: u32, ifindex: u32, weight: u32) -> NextHop {
        NextHop {
            address: IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                0,
                0x100 + neighbour as u16,
            )),
            neighbour: NeighbourId::new(neighbour, 0),
            ifindex,
            weight,
        }
    }

    fn v6(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_longest_prefix_wins_and_families_do_not_mix() {
        let mut builder = FibBuilder::new();
        let wide = builder
            .add_route(&Route::Forward(vec![via_v6(1, 2, 1)]))
            .unwrap();
        let narrow = builder
            .add_route(&Route::Forward(vec![via_v6(2, 3, 1)]))
            .unwrap();
        let hole = builder.add_route(&Route::Blackhole).unwrap();
        builder.add_v6(v6("2001:db8::"), 32, wide).unwrap();
        builder.add_v6(v6("2001:db8:5::"), 48, narrow).unwrap();
        builder
            .add(IpAddr::V6(v6("2001:db8:5:6::")), 64, hole)
            .unwrap();
        // The same route from an IPv4 prefix: route ids are shared by both families.
        builder
            .add(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8, narrow)
            .unwrap();
        let fib = builder.build();
        assert_eq!((fib.prefix_count_v4(), fib.prefix_count_v6()), (1, 3));
        let neighbour = |address: &str| fib.lookup_v6(v6(address), 0).map(|hop| hop.neighbour);
        assert_eq!(neighbour("2001:db8:1::1"), Ok(NeighbourId::new(1, 0)));
        assert_eq!(neighbour("2001:db8:5::1"), Ok(NeighbourId::new(2, 0)));
        assert_eq!(
            neighbour("2001:db8:5:6::1"),
            Err(NoRoute {
                kind: NoRouteKind::Blackhole
            })
        );
        assert_eq!(
            neighbour("2001:db9::1"),
            Err(NoRoute {
                kind: NoRouteKind::NoMatch
            })
        );
        // ::a00:1 has the bits of 10.0.0.1, but an IPv6 lookup never reads the IPv4 table.
        assert_eq!(
            neighbour("::a00:1"),
            Err(NoRoute {
                kind: NoRouteKind::NoMatch
            })
        );
        assert_eq!(
            fib.lookup(IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1)), 0),
            fib.lookup(IpAddr::V6(v6("2001:db8:5::9")), 0)
        );
        assert_eq!(
            fib.lookup(IpAddr::V6(v6("2001:db8:1::1")), 0),
            fib.lookup_v6(v6("2001:db8:1::1"), 0)
        );
    }

    #[test]
    fn ipv6_default_and_host_routes_and_bad_prefixes() {
        let mut builder = FibBuilder::new();
        let default = builder
            .add_route(&Route::Forward(vec![via_v6(1, 2, 1)]))
            .unwrap();
        let host = builder
            .add_route(&Route::Forward(vec![via_v6(7, 2, 1)]))
            .unwrap();
        builder.add_v6(Ipv6Addr::UNSPECIFIED, 0, default).unwrap();
        builder.add_v6(v6("2001:db8::7"), 128, host).unwrap();
        assert!(matches!(
            builder.add_v6(Ipv6Addr::UNSPECIFIED, 129, host),
            Err(FibError::PrefixTooLong(_))
        ));
        assert_eq!(
            builder.add_v6(Ipv6Addr::UNSPECIFIED, 0, RouteId(9)),
            Err(FibError::UnknownRoute(RouteId(9)))
        );
        let fib = builder.build();
        assert_eq!(
            fib.lookup_v6(v6("2001:db8::7"), 5).unwrap().neighbour,
            NeighbourId::new(7, 0)
        );
        assert_eq!(
            fib.lookup_v6(v6("2001:db8::8"), 5).unwrap().neighbour,
            NeighbourId::new(1, 0)
        );
        assert_eq!(
            fib.lookup_v6(v6("ffff::1"), 5).unwrap().neighbour,
            NeighbourId::new(1, 0)
        );
        assert_eq!(
            fib.lookup_v4(Ipv4Addr::new(192, 0, 2, 1), 5),
            Err(NoRoute {
                kind: NoRouteKind::NoMatch
            }),
            "an IPv6 default route is not an IPv4 one"
        );
    }

    #[test]
    fn ipv6_ecmp_spreads_by_weight_and_a_removed_next_hop_moves_only_its_flows() {
        let fib_of = |next_hops: Vec<NextHop>| {
            let mut builder = FibBuilder::new();
            let id = builder.add_route(&Route::Forward(next_hops)).unwrap();
            builder.add_v6(v6("2001:db8:100::"), 40, id).unwrap();
            builder.build()
        };
        let destination = v6("2001:db8:100::1");
        let three = fib_of(vec![via_v6(1, 2, 1), via_v6(2, 2, 1), via_v6(3, 2, 2)]);
        let two = fib_of(vec![via_v6(1, 2, 1), via_v6(3, 2, 2)]);
        let flows = 4000u64;
        let mut shares = [0u32; 4];
        for flow in 0..flows {
            let hash = mix64(flow);
            let before = three.lookup_v6(destination, hash).unwrap().neighbour;
            let after = two.lookup_v6(destination, hash).unwrap().neighbour;
            shares[before.index()] += 1;
            // The same flow, looked up again, stays.
            assert_eq!(
                three.lookup_v6(destination, hash).unwrap().neighbour,
                before
            );
            if before != NeighbourId::new(2, 0) {
                assert_eq!(after, before, "flow {flow} moved off a surviving next hop");
            }
        }
        // Weights 1:1:2 over 4000 flows: about 1000, 1000, 2000.
        assert!((800..1200).contains(&shares[1]), "{shares:?}");
        assert!((800..1200).contains(&shares[2]), "{shares:?}");
        assert!((1750..2250).contains(&shares[3]), "{shares:?}");
    }
}
