//! Scheduling algorithms that choose a real server for a new flow.
//!
//! This is the bottom layer of the director: `dataplane` asks a [`Scheduler`] for a server when a
//! flow has no connection-table entry yet, and `control` builds a new `Scheduler` whenever the
//! server set, a weight or the algorithm changes, then swaps it in atomically. Build once, read
//! from every worker: a `Scheduler` is immutable apart from lock-free counters, and is
//! `Send + Sync`.
//!
//! What this crate must not do:
//! - no I/O, no clock, no randomness: the same inputs give the same decisions on every machine,
//!   which Maglev needs so that every director sends a flow to the same server;
//! - no allocation, lock, syscall or panic in [`Scheduler::pick`], which runs per new flow on the
//!   hot path (allocation happens once, in [`Scheduler::new`]);
//! - no `unsafe` and no dependencies.
//!
//! Algorithms, as `ipvsadm(8)` names them (each module cites the kernel source it follows, under
//! `net/netfilter/ipvs/`):
//!
//! | name | variant | file | chooses | IPVS source |
//! |---|---|---|---|---|
//! | `rr` | [`Algorithm::RoundRobin`] | `rr.rs` | servers in turn | `ip_vs_rr.c` |
//! | `wrr` | [`Algorithm::WeightedRoundRobin`] | `wrr.rs` | in turn, interleaved by weight | `ip_vs_wrr.c` |
//! | `lc` | [`Algorithm::LeastConnection`] | `lc.rs` | least `active * 256 + inactive` | `ip_vs_lc.c` |
//! | `wlc` | [`Algorithm::WeightedLeastConnection`] | `lc.rs` | least `(active * 256 + inactive) / weight` | `ip_vs_wlc.c` |
//! | `sed` | [`Algorithm::ShortestExpectedDelay`] | `sed.rs` | least `(active + 1) / weight` | `ip_vs_sed.c` |
//! | `nq` | [`Algorithm::NeverQueue`] | `sed.rs` | an idle server, else as `sed` | `ip_vs_nq.c` |
//! | `sh` | [`Algorithm::SourceHashing`] | `sh.rs` | weighted hash table of the client address | `ip_vs_sh.c` |
//! | `dh` | [`Algorithm::DestinationHashing`] | `sh.rs` | weighted hash table of the destination address | `ip_vs_dh.c` |
//! | `lblc` | [`Algorithm::LocalityBasedLeastConnection`] | `lblc.rs` | one server per destination, `wlc` when overloaded | `ip_vs_lblc.c` |
//! | `lblcr` | [`Algorithm::LocalityBasedLeastConnectionReplication`] | `lblc.rs` | a server set per destination | `ip_vs_lblcr.c` |
//! | `maglev` (`mh`) | [`Algorithm::Maglev`] | `maglev.rs` | consistent hash of the 5-tuple | `ip_vs_mh.c` |
//!
//! Maglev is Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI
//! 2016: every director derives the same lookup table from the server keys, so a flow keeps its
//! server when ECMP moves it to another director or a director restarts, and a server change remaps
//! few other flows. See `maglev.rs` for the population algorithm and how weights enter it.
//!
//! Everywhere, weight 0 means "drained": never picked for a new flow. [`Scheduler::pick`] returns
//! `None` exactly when no server has weight > 0.
//!
//! Flows are identified by [`flow_hash`], a fixed-seed hash of the 5-tuple.
//!
//! # Consistency model
//!
//! The least-connection family (`lc`, `wlc`, `sed`, `nq`, `lblc`, `lblcr`) reads connection
//! counts through [`Loads`]. In the data plane each worker owns its counters: one writer per
//! counter block, cache-line padded (`#[repr(align(64))]`, in `dataplane`), updated without
//! atomic read-modify-write contention. A [`Loads`] implementation sums a server's counters over
//! every worker with relaxed loads. So a decision may miss the connections another core opened or
//! closed in the batch it is processing right now (up to one RX batch per worker), and two workers
//! deciding at the same moment may both choose the same least-loaded server. Least-connection
//! choices are therefore approximate under bursts of new flows, but they never wait for another
//! core, and they converge as the counts settle: an over-chosen server looks busier on the next
//! batch and is passed over. IPVS makes the same trade: its schedulers read `activeconns` and
//! `inactconns` with plain `atomic_read()` under RCU, without a lock, while other CPUs update them.
//!
//! Scheduler state is lock-free too: `rr` and `wrr` advance one shared atomic cursor, `lblc` and
//! `lblcr` keep per-destination entries in fixed arrays of atomics (see `lblc.rs` for what is
//! approximated there), and every other algorithm is read-only after [`Scheduler::new`].
#![deny(unsafe_code)]

mod hash;
mod lblc;
mod lc;
mod maglev;
mod rr;
mod sed;
mod sh;
mod weights;
mod wrr;

use std::fmt;
use std::str::FromStr;

pub use hash::flow_hash;

/// Default Maglev lookup-table size: a prime, as the Maglev paper requires (M = 65537).
///
/// The paper advises `M` well above 100 times the number of servers to keep the per-server share
/// within a few percent; 65537 suits up to a few hundred servers.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65537;

/// Most servers a [`Scheduler`] accepts: Maglev stores server indices as `u16`.
pub const MAX_SERVERS: usize = 1 << 16;

/// A real server as the scheduler sees it. Its index in the slice passed to `Scheduler::new`
/// is what `pick` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Stable identity of the server (e.g. a hash of its address and port): Maglev derives the
    /// server's permutation from it, so the same set of servers gives the same table on every
    /// director and across restarts.
    pub key: u64,
    /// Relative weight; 0 means "no new flows" (drain).
    pub weight: u32,
}

/// What a scheduler may look at in a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// [`flow_hash`] of the 5-tuple.
    pub hash: u64,
    /// Client address (host order): `sh` hashes it.
    pub src_addr: u32,
    /// Destination address (host order): `dh`, `lblc` and `lblcr` key on it.
    pub dst_addr: u32,
}

/// Connection counts per server, as the least-connection family reads them: summed over every
/// worker's counters (see the consistency model in the crate docs). Indices are those of the
/// slice passed to [`Scheduler::new`].
pub trait Loads {
    /// Connections in an active state (TCP established, UDP): IPVS's `activeconns`.
    fn active(&self, server: usize) -> u64;
    /// Connections in other TCP states: IPVS's `inactconns`.
    fn inactive(&self, server: usize) -> u64;

    /// Both counts at once, `(active, inactive)`; implementors that sum per-worker counters
    /// override it to read each worker's cache line once.
    fn counts(&self, server: usize) -> (u64, u64) {
        (self.active(server), self.inactive(server))
    }

    /// Whether the server is above its connection threshold (IPVS's `IP_VS_DEST_F_OVERLOAD`,
    /// `ipvsadm -x`/`-y`): it gets no new flow, whatever the algorithm, until the implementor
    /// says it is back below its lower threshold. Every algorithm asks it of the server it
    /// would pick; the implementor keeps the hysteresis. The default: never.
    fn over_threshold(&self, _server: usize) -> bool {
        false
    }
}

/// No connections anywhere: for callers and tests of algorithms that ignore load.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLoads;

impl Loads for NoLoads {
    fn active(&self, _server: usize) -> u64 {
        0
    }
    fn inactive(&self, _server: usize) -> u64 {
        0
    }
}

/// A scheduling algorithm, named as in configuration files and `ipvsadm -s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// `rr`: each new flow goes to the next server with weight > 0.
    RoundRobin,
    /// `maglev` (alias `mh`): consistent hashing of the flow's 5-tuple over a weighted table.
    Maglev,
    /// `wrr`: in turn, each server as often as its weight, interleaved as in IPVS.
    WeightedRoundRobin,
    /// `lc`: the fewest connections (`active * 256 + inactive`), weights ignored beyond drain.
    LeastConnection,
    /// `wlc`: the fewest connections per unit of weight (IPVS's default scheduler).
    WeightedLeastConnection,
    /// `sed`: the shortest expected delay, `(active + 1) / weight`.
    ShortestExpectedDelay,
    /// `nq`: an idle server if there is one, else as `sed`.
    NeverQueue,
    /// `sh`: a weighted hash table of the client (source) address.
    SourceHashing,
    /// `dh`: a weighted hash table of the destination address.
    DestinationHashing,
    /// `lblc`: one remembered server per destination address, `wlc` when it is overloaded.
    LocalityBasedLeastConnection,
    /// `lblcr`: a remembered server set per destination address, grown under overload.
    LocalityBasedLeastConnectionReplication,
}

impl Algorithm {
    /// Every name [`Algorithm::from_str`] accepts, for error messages and `--help`.
    pub const NAMES: &'static [&'static str] = &[
        "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "lblc", "lblcr", "maglev", "mh",
    ];

    /// Every algorithm, in the order of [`Algorithm::NAMES`].
    pub const ALL: &'static [Algorithm] = &[
        Self::RoundRobin,
        Self::WeightedRoundRobin,
        Self::LeastConnection,
        Self::WeightedLeastConnection,
        Self::ShortestExpectedDelay,
        Self::NeverQueue,
        Self::SourceHashing,
        Self::DestinationHashing,
        Self::LocalityBasedLeastConnection,
        Self::LocalityBasedLeastConnectionReplication,
        Self::Maglev,
    ];

    /// The canonical name, as `Display` prints it and configuration files spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "rr",
            Self::WeightedRoundRobin => "wrr",
            Self::LeastConnection => "lc",
            Self::WeightedLeastConnection => "wlc",
            Self::ShortestExpectedDelay => "sed",
            Self::NeverQueue => "nq",
            Self::SourceHashing => "sh",
            Self::DestinationHashing => "dh",
            Self::LocalityBasedLeastConnection => "lblc",
            Self::LocalityBasedLeastConnectionReplication => "lblcr",
            Self::Maglev => "maglev",
        }
    }

    /// Whether [`Scheduler::pick`] reads its [`Loads`] argument: true for the least-connection
    /// family, so callers of the others may pass [`NoLoads`] and skip summing counters (every
    /// algorithm asks [`Loads::over_threshold`], which [`NoLoads`] answers with no).
    pub const fn uses_loads(self) -> bool {
        matches!(
            self,
            Self::LeastConnection
                | Self::WeightedLeastConnection
                | Self::ShortestExpectedDelay
                | Self::NeverQueue
                | Self::LocalityBasedLeastConnection
                | Self::LocalityBasedLeastConnectionReplication
        )
    }
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Parses an `ipvsadm -s` name, or `maglev` for IPVS's `mh`; names are case-sensitive, as in
    /// `ipvsadm`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            "rr" => Self::RoundRobin,
            "wrr" => Self::WeightedRoundRobin,
            "lc" => Self::LeastConnection,
            "wlc" => Self::WeightedLeastConnection,
            "sed" => Self::ShortestExpectedDelay,
            "nq" => Self::NeverQueue,
            "sh" => Self::SourceHashing,
            "dh" => Self::DestinationHashing,
            "lblc" => Self::LocalityBasedLeastConnection,
            "lblcr" => Self::LocalityBasedLeastConnectionReplication,
            "maglev" | "mh" => Self::Maglev,
            _ => return Err(UnknownAlgorithm(name.to_owned())),
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheduler name that [`Algorithm::from_str`] does not know; holds the rejected name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm(pub String);

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scheduling algorithm {:?}: expected one of {}",
            self.0,
            Algorithm::NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownAlgorithm {}

/// Why [`Scheduler::new`] refused a server set or table size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// The Maglev table size is not prime; permutations only cover every slot when it is.
    TableSizeNotPrime(u32),
    /// The Maglev table has fewer slots than there are servers, so some would get none.
    TableTooSmall {
        /// The requested table size.
        size: u32,
        /// The number of servers (including drained ones).
        servers: usize,
    },
    /// More servers than [`MAX_SERVERS`].
    TooManyServers(usize),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TableSizeNotPrime(size) => write!(
                f,
                "Maglev table size {size} is not prime (expected a prime such as \
                 {DEFAULT_MAGLEV_TABLE_SIZE})"
            ),
            Self::TableTooSmall { size, servers } => write!(
                f,
                "Maglev table size {size} is smaller than the number of servers ({servers}); \
                 expected a prime of at least 100 times the server count"
            ),
            Self::TooManyServers(servers) => {
                write!(
                    f,
                    "{servers} servers given, at most {MAX_SERVERS} are supported"
                )
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// How many more places a table-driven algorithm (`rr`, `wrr`, `sh`, `dh`, Maglev) tries after
/// its pick is over its threshold ([`Loads::over_threshold`]): the next slots of its table, so
/// an overloaded server's flows spread the way the table spreads servers, as IPVS's `mh` and
/// `sh` fallbacks walk theirs. Past these, the least loaded server under its threshold (`wlc`),
/// so a pick costs at most this many probes plus one scan of the servers.
pub const FALLBACK_PROBES: usize = 64;

/// A built, immutable scheduler shared read-only by all worker threads (Send + Sync).
#[derive(Debug)]
pub struct Scheduler {
    policy: Policy,
    /// Every server's weight, for the fallback past an over-threshold pick.
    weights: Box<[u32]>,
}

/// Per-algorithm state. The least-connection family keeps only the weights; loads come with
/// each pick.
#[derive(Debug)]
enum Policy {
    RoundRobin(rr::RoundRobin),
    WeightedRoundRobin(wrr::WeightedRoundRobin),
    LeastConnection(Box<[u32]>),
    WeightedLeastConnection(Box<[u32]>),
    ShortestExpectedDelay(Box<[u32]>),
    NeverQueue(Box<[u32]>),
    SourceHashing(sh::AddressHash),
    DestinationHashing(sh::AddressHash),
    LocalityBasedLeastConnection(lblc::Lblc),
    LocalityBasedLeastConnectionReplication(lblc::Lblcr),
    Maglev(maglev::Maglev),
}

impl Scheduler {
    /// Builds the scheduler for this server set. Servers with weight 0 never receive new flows.
    /// `maglev_table_size` is used only by Maglev and must be prime and >= number of servers.
    pub fn new(
        algorithm: Algorithm,
        servers: &[Candidate],
        maglev_table_size: u32,
    ) -> Result<Self, BuildError> {
        if servers.len() > MAX_SERVERS {
            return Err(BuildError::TooManyServers(servers.len()));
        }
        let weights = || servers.iter().map(|server| server.weight).collect();
        let policy = match algorithm {
            Algorithm::RoundRobin => Policy::RoundRobin(rr::RoundRobin::new(servers)),
            Algorithm::WeightedRoundRobin => {
                Policy::WeightedRoundRobin(wrr::WeightedRoundRobin::new(servers))
            }
            Algorithm::LeastConnection => Policy::LeastConnection(weights()),
            Algorithm::WeightedLeastConnection => Policy::WeightedLeastConnection(weights()),
            Algorithm::ShortestExpectedDelay => Policy::ShortestExpectedDelay(weights()),
            Algorithm::NeverQueue => Policy::NeverQueue(weights()),
            Algorithm::SourceHashing => Policy::SourceHashing(sh::AddressHash::new(servers)),
            Algorithm::DestinationHashing => {
                Policy::DestinationHashing(sh::AddressHash::new(servers))
            }
            Algorithm::LocalityBasedLeastConnection => {
                Policy::LocalityBasedLeastConnection(lblc::Lblc::new(servers))
            }
            Algorithm::LocalityBasedLeastConnectionReplication => {
                Policy::LocalityBasedLeastConnectionReplication(lblc::Lblcr::new(servers))
            }
            Algorithm::Maglev => {
                if !maglev::is_prime(maglev_table_size) {
                    return Err(BuildError::TableSizeNotPrime(maglev_table_size));
                }
                if (maglev_table_size as usize) < servers.len() {
                    return Err(BuildError::TableTooSmall {
                        size: maglev_table_size,
                        servers: servers.len(),
                    });
                }
                Policy::Maglev(maglev::Maglev::new(servers, maglev_table_size))
            }
        };
        Ok(Self {
            policy,
            weights: weights(),
        })
    }

    /// The algorithm this scheduler was built with.
    pub fn algorithm(&self) -> Algorithm {
        match self.policy {
            Policy::RoundRobin(_) => Algorithm::RoundRobin,
            Policy::WeightedRoundRobin(_) => Algorithm::WeightedRoundRobin,
            Policy::LeastConnection(_) => Algorithm::LeastConnection,
            Policy::WeightedLeastConnection(_) => Algorithm::WeightedLeastConnection,
            Policy::ShortestExpectedDelay(_) => Algorithm::ShortestExpectedDelay,
            Policy::NeverQueue(_) => Algorithm::NeverQueue,
            Policy::SourceHashing(_) => Algorithm::SourceHashing,
            Policy::DestinationHashing(_) => Algorithm::DestinationHashing,
            Policy::LocalityBasedLeastConnection(_) => Algorithm::LocalityBasedLeastConnection,
            Policy::LocalityBasedLeastConnectionReplication(_) => {
                Algorithm::LocalityBasedLeastConnectionReplication
            }
            Policy::Maglev(_) => Algorithm::Maglev,
        }
    }

    /// Picks a server index for a new flow, or None when no server has weight > 0.
    /// `flow.hash` comes from [`flow_hash()`]; `loads`' counts are read only by the
    /// least-connection family ([`Algorithm::uses_loads`]), its thresholds by every algorithm. Never allocates, locks or panics; `lc`, `wlc`, `sed`,
    /// `nq`, `lblc` and `lblcr` scan the servers (`O(n)`, as IPVS does), the others are `O(1)`.
    ///
    /// A server over its threshold ([`Loads::over_threshold`]) is skipped as a drained one is:
    /// the least-connection family leaves it out of its scan; the others, when their pick is
    /// over, try the next [`FALLBACK_PROBES`] places of their table, then the least loaded
    /// server under its threshold. `None` when every server with weight > 0 is over.
    #[inline]
    pub fn pick<L: Loads + ?Sized>(&self, flow: &Flow, loads: &L) -> Option<usize> {
        let pick = self.pick_by_policy(flow, loads)?;
        if loads.over_threshold(pick) {
            self.fallback(flow, loads)
        } else {
            Some(pick)
        }
    }

    /// A server under its threshold when the algorithm's pick was over it (see
    /// [`Scheduler::pick`]). Out of line: the common pick never comes here.
    #[inline(never)]
    fn fallback<L: Loads + ?Sized>(&self, flow: &Flow, loads: &L) -> Option<usize> {
        let under = |server: usize| !loads.over_threshold(server);
        let walked = match &self.policy {
            // Each further turn advances the shared cursor, as IPVS's rr moves past an
            // overloaded server.
            Policy::RoundRobin(rr) => {
                (0..FALLBACK_PROBES).find_map(|_| rr.pick().filter(|&server| under(server)))
            }
            Policy::WeightedRoundRobin(wrr) => {
                (0..FALLBACK_PROBES).find_map(|_| wrr.pick().filter(|&server| under(server)))
            }
            Policy::SourceHashing(table) => table.fallback(flow.src_addr, under),
            Policy::DestinationHashing(table) => table.fallback(flow.dst_addr, under),
            Policy::Maglev(maglev) => maglev.fallback(flow.hash, under),
            _ => None,
        };
        walked.or_else(|| {
            lc::least_loaded(
                self.weights
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|&(server, _)| under(server)),
                loads,
            )
        })
    }

    #[inline]
    fn pick_by_policy<L: Loads + ?Sized>(&self, flow: &Flow, loads: &L) -> Option<usize> {
        match &self.policy {
            Policy::RoundRobin(rr) => rr.pick(),
            Policy::WeightedRoundRobin(wrr) => wrr.pick(),
            Policy::LeastConnection(weights) => lc::least_connection(weights, loads),
            Policy::WeightedLeastConnection(weights) => {
                lc::weighted_least_connection(weights, loads)
            }
            Policy::ShortestExpectedDelay(weights) => {
                sed::shortest_expected_delay(weights, loads, false)
            }
            Policy::NeverQueue(weights) => sed::shortest_expected_delay(weights, loads, true),
            Policy::SourceHashing(table) => table.pick(flow.src_addr),
            Policy::DestinationHashing(table) => table.pick(flow.dst_addr),
            Policy::LocalityBasedLeastConnection(lblc) => lblc.pick(flow.dst_addr, loads),
            Policy::LocalityBasedLeastConnectionReplication(lblcr) => {
                lblcr.pick(flow.dst_addr, loads)
            }
            Policy::Maglev(maglev) => maglev.pick(flow.hash),
        }
    }

    /// The Maglev lookup table (one server index per slot), for stats and debugging; `None` for
    /// other algorithms. Empty when no server has weight > 0.
    pub fn maglev_table(&self) -> Option<&[u16]> {
        match &self.policy {
            Policy::Maglev(maglev) => Some(maglev.table()),
            _ => None,
        }
    }
}
