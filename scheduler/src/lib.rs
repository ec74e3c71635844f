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
//! Algorithms:
//! - [`Algorithm::RoundRobin`] (`rr`): servers with weight > 0 in turn, as in IPVS.
//! - [`Algorithm::Maglev`] (`maglev`, IPVS's `mh`): consistent hashing from Eisenbud et al.,
//!   "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI 2016. Every director
//!   derives the same lookup table from the server keys, so a flow keeps its server when ECMP moves
//!   it to another director or a director restarts, and a server change remaps few other flows.
//!   See `maglev.rs` for the population algorithm and how weights enter it.
//!
//! Flows are identified by [`flow_hash`], a fixed-seed hash of the 5-tuple.
#![deny(unsafe_code)]

mod hash;
mod maglev;
mod rr;

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
}

impl Algorithm {
    /// Every name [`Algorithm::from_str`] accepts, for error messages and `--help`.
    pub const NAMES: &'static [&'static str] = &["rr", "maglev", "mh"];

    /// The canonical name, as `Display` prints it and configuration files spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "rr",
            Self::Maglev => "maglev",
        }
    }
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Parses `rr`, `maglev` or `mh` (IPVS's name for Maglev hashing); names are case-sensitive,
    /// as in `ipvsadm`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "rr" => Ok(Self::RoundRobin),
            "maglev" | "mh" => Ok(Self::Maglev),
            _ => Err(UnknownAlgorithm(name.to_owned())),
        }
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

/// A built, immutable scheduler shared read-only by all worker threads (Send + Sync).
#[derive(Debug)]
pub struct Scheduler {
    policy: Policy,
}

/// Per-algorithm state. Future IPVS algorithms (wrr, lc, wlc, sed, nq, sh, dh, lblc, lblcr) add a
/// variant and a module each.
#[derive(Debug)]
enum Policy {
    RoundRobin(rr::RoundRobin),
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
        let policy = match algorithm {
            Algorithm::RoundRobin => Policy::RoundRobin(rr::RoundRobin::new(servers)),
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
        Ok(Self { policy })
    }

    /// The algorithm this scheduler was built with.
    pub fn algorithm(&self) -> Algorithm {
        match self.policy {
            Policy::RoundRobin(_) => Algorithm::RoundRobin,
            Policy::Maglev(_) => Algorithm::Maglev,
        }
    }

    /// Picks a server index for a new flow, or None when no server has weight > 0.
    /// `flow_hash` comes from [`flow_hash()`]. Must not allocate, lock, or panic.
    #[inline]
    pub fn pick<L: Loads + ?Sized>(&self, flow: &Flow, loads: &L) -> Option<usize> {
        let _ = loads;
        match &self.policy {
            Policy::RoundRobin(rr) => rr.pick(),
            Policy::Maglev(maglev) => maglev.pick(flow.hash),
        }
    }

    /// The Maglev lookup table (one server index per slot), for stats and debugging; `None` for
    /// other algorithms. Empty when no server has weight > 0.
    pub fn maglev_table(&self) -> Option<&[u16]> {
        match &self.policy {
            Policy::Maglev(maglev) => Some(maglev.table()),
            Policy::RoundRobin(_) => None,
        }
    }
}
