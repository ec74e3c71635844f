//! Behaviour of every algorithm through the public API: empty and single-server sets, drained
//! servers, determinism, the IPVS semantics of each scheduler on hand-built loads, convergence to
//! the weights, Maglev balance and disruption, and build errors.

use std::collections::HashMap;
use std::time::Instant;

use proptest::prelude::*;
use scheduler::{
    flow_hash, Algorithm, BuildError, Candidate, Flow, Loads, NoLoads, Scheduler, UnknownAlgorithm,
    DEFAULT_MAGLEV_TABLE_SIZE, MAX_SERVERS,
};

const ALGORITHMS: &[Algorithm] = Algorithm::ALL;

/// `count` equal-weight servers with well-spread keys, as a hash of address and port would give.
fn servers(count: u64) -> Vec<Candidate> {
    (0..count)
        .map(|i| Candidate {
            key: server_key(i),
            weight: 1,
        })
        .collect()
}

fn server_key(i: u64) -> u64 {
    // Any injective spread works; consecutive integers would also do since keys are re-hashed.
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555
}

fn build(algorithm: Algorithm, servers: &[Candidate]) -> Scheduler {
    Scheduler::new(algorithm, servers, DEFAULT_MAGLEV_TABLE_SIZE).unwrap()
}

fn maglev_table(servers: &[Candidate], size: u32) -> Vec<u16> {
    Scheduler::new(Algorithm::Maglev, servers, size)
        .unwrap()
        .maglev_table()
        .unwrap()
        .to_vec()
}

/// The table as server keys, so tables built from differently ordered slices compare equal.
fn table_by_key(servers: &[Candidate], size: u32) -> Vec<u64> {
    maglev_table(servers, size)
        .iter()
        .map(|&index| servers[usize::from(index)].key)
        .collect()
}

/// Slots per server index.
fn slot_counts(table: &[u16], servers: usize) -> Vec<usize> {
    let mut counts = vec![0; servers];
    for &index in table {
        counts[usize::from(index)] += 1;
    }
    counts
}

/// `part / whole` for counts that fit in `u32`, which every count in these tests does.
fn ratio(part: usize, whole: usize) -> f64 {
    f64::from(u32::try_from(part).unwrap()) / f64::from(u32::try_from(whole).unwrap())
}

/// Hashes of distinct flows from one client network, as the data plane would compute them.
fn sample_flow_hashes(count: u32) -> impl Iterator<Item = u64> {
    (0..count).map(|i| {
        flow_hash(
            0x0a00_0000 | (i >> 10),
            0xc0a8_0001,
            1024 + (i & 1023) as u16,
            443,
            6,
        )
    })
}

#[test]
fn algorithm_names_round_trip() {
    assert_eq!("rr".parse(), Ok(Algorithm::RoundRobin));
    assert_eq!("maglev".parse(), Ok(Algorithm::Maglev));
    assert_eq!("mh".parse(), Ok(Algorithm::Maglev));
    assert_eq!("wlc".parse(), Ok(Algorithm::WeightedLeastConnection));
    assert_eq!(
        "lblcr".parse(),
        Ok(Algorithm::LocalityBasedLeastConnectionReplication)
    );
    for &algorithm in ALGORITHMS {
        assert_eq!(algorithm.to_string().parse(), Ok(algorithm));
        assert!(Algorithm::NAMES.contains(&algorithm.to_string().as_str()));
    }
    for name in Algorithm::NAMES {
        let algorithm: Algorithm = name.parse().unwrap();
        assert!(ALGORITHMS.contains(&algorithm), "{name}");
    }
    assert_eq!(ALGORITHMS.len(), Algorithm::NAMES.len() - 1, "one alias");
    assert!(
        "WLC".parse::<Algorithm>().is_err(),
        "names are case-sensitive"
    );
    let error = "fifo".parse::<Algorithm>().unwrap_err();
    assert_eq!(error, UnknownAlgorithm("fifo".to_owned()));
    let message = error.to_string();
    for name in Algorithm::NAMES {
        assert!(message.contains(name), "{message:?} does not list {name}");
    }
    assert!(
        message.contains("fifo"),
        "{message:?} does not name the rejected value"
    );
}

#[test]
fn scheduler_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Scheduler>();
}

#[test]
fn algorithm_is_reported() {
    for &algorithm in ALGORITHMS {
        assert_eq!(build(algorithm, &servers(3)).algorithm(), algorithm);
    }
}

#[test]
fn empty_set_picks_nothing() {
    for &algorithm in ALGORITHMS {
        let scheduler = build(algorithm, &[]);
        for hash in sample_flow_hashes(100) {
            assert_eq!(scheduler.pick(&flow(hash), &NoLoads), None, "{algorithm}");
        }
    }
}

#[test]
fn all_drained_picks_nothing() {
    let drained: Vec<Candidate> = servers(5)
        .into_iter()
        .map(|s| Candidate { weight: 0, ..s })
        .collect();
    for &algorithm in ALGORITHMS {
        let scheduler = build(algorithm, &drained);
        for hash in sample_flow_hashes(100) {
            assert_eq!(scheduler.pick(&flow(hash), &NoLoads), None, "{algorithm}");
        }
    }
}

#[test]
fn single_server_is_always_picked() {
    for &algorithm in ALGORITHMS {
        let scheduler = build(algorithm, &servers(1));
        for hash in sample_flow_hashes(1000).chain([0, u64::MAX]) {
            assert_eq!(
                scheduler.pick(&flow(hash), &NoLoads),
                Some(0),
                "{algorithm}"
            );
        }
    }
}

#[test]
fn drained_server_is_never_picked() {
    let mut set = servers(4);
    set[2].weight = 0;
    for &algorithm in ALGORITHMS {
        let scheduler = build(algorithm, &set);
        for hash in sample_flow_hashes(10_000) {
            let picked = scheduler.pick(&flow(hash), &NoLoads).unwrap();
            assert_ne!(picked, 2, "{algorithm} picked the drained server");
        }
    }
}

#[test]
fn round_robin_visits_servers_evenly_in_order() {
    let mut set = servers(5);
    set[1].weight = 0;
    let scheduler = build(Algorithm::RoundRobin, &set);
    let picks: Vec<usize> = (0..4000)
        .map(|_| scheduler.pick(&flow(0), &NoLoads).unwrap())
        .collect();
    assert_eq!(&picks[..8], &[0, 2, 3, 4, 0, 2, 3, 4]);
    let counts = picks.iter().fold(HashMap::new(), |mut counts, &index| {
        *counts.entry(index).or_insert(0) += 1;
        counts
    });
    assert_eq!(
        counts,
        HashMap::from([(0, 1000), (2, 1000), (3, 1000), (4, 1000)])
    );
}

#[test]
fn round_robin_is_shared_across_threads() {
    let scheduler = build(Algorithm::RoundRobin, &servers(4));
    let counts: Vec<Vec<usize>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut counts = vec![0; 4];
                    for _ in 0..10_000 {
                        counts[scheduler.pick(&flow(0), &NoLoads).unwrap()] += 1;
                    }
                    counts
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap())
            .collect()
    });
    // Every pick took a distinct cursor value, so the total is exactly even.
    let totals: Vec<usize> = (0..4)
        .map(|server| counts.iter().map(|c| c[server]).sum())
        .collect();
    assert_eq!(totals, vec![10_000; 4]);
}

#[test]
fn maglev_is_deterministic() {
    let set = servers(37);
    assert_eq!(maglev_table(&set, 65_537), maglev_table(&set, 65_537));
}

#[test]
fn maglev_table_depends_on_keys_not_slice_order() {
    let mut set = servers(50);
    set[7].weight = 3;
    set[20].weight = 0;
    let reference = table_by_key(&set, 65_537);
    // A fixed pseudo-random shuffle and a reversal.
    let mut shuffled = set.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, (server_key(i as u64) % (i as u64 + 1)) as usize);
    }
    assert_ne!(shuffled, set);
    assert_eq!(table_by_key(&shuffled, 65_537), reference);
    let reversed: Vec<Candidate> = set.iter().rev().copied().collect();
    assert_eq!(table_by_key(&reversed, 65_537), reference);
}

/// Guards cross-version agreement: a change here means directors of different releases would
/// send the same flow to different servers.
#[test]
fn maglev_table_is_pinned() {
    let table = maglev_table(&servers(5), 13);
    assert_eq!(table, PINNED_TABLE);
}
// Cross-checked against an independent Python transcription of the population algorithm.
const PINNED_TABLE: [u16; 13] = [1, 0, 3, 4, 2, 0, 0, 3, 1, 2, 2, 4, 4];

#[test]
fn maglev_spreads_equal_weights_evenly() {
    let set = servers(100);
    let table = maglev_table(&set, DEFAULT_MAGLEV_TABLE_SIZE);
    let counts = slot_counts(&table, set.len());
    let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    let ratio = ratio(max, min);
    println!("maglev balance, 100 servers, M = 65537: slots per server {min}..={max}, max/min = {ratio:.4}");
    assert!(ratio <= 1.05, "max/min slot ratio {ratio}");
}

#[test]
fn maglev_removal_moves_few_other_slots() {
    let set = servers(100);
    let removed = 42;
    let before = table_by_key(&set, DEFAULT_MAGLEV_TABLE_SIZE);
    let remaining: Vec<Candidate> = set
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != removed)
        .map(|(_, s)| *s)
        .collect();
    let after = table_by_key(&remaining, DEFAULT_MAGLEV_TABLE_SIZE);

    let removed_key = set[removed].key;
    let mut other_slots = 0;
    let mut other_moved = 0;
    for (old, new) in before.iter().zip(&after) {
        if *old == removed_key {
            assert_ne!(*new, removed_key);
        } else {
            other_slots += 1;
            other_moved += usize::from(old != new);
        }
    }
    let share = ratio(other_moved, other_slots);
    println!(
        "maglev disruption, 100 -> 99 servers: {other_moved} of {other_slots} other slots moved ({:.3}%)",
        share * 100.0
    );
    assert!(share < 0.01, "{:.3}% of other slots moved", share * 100.0);
}

#[test]
fn maglev_follows_weights() {
    let set = [
        Candidate {
            key: server_key(1),
            weight: 3,
        },
        Candidate {
            key: server_key(2),
            weight: 1,
        },
    ];
    let table = maglev_table(&set, DEFAULT_MAGLEV_TABLE_SIZE);
    let counts = slot_counts(&table, set.len());
    let heavy_share = ratio(counts[0], table.len());
    println!(
        "maglev weights 3:1 -> slot shares {:.4}:{:.4}",
        heavy_share,
        1.0 - heavy_share
    );
    assert!(
        (heavy_share - 0.75).abs() < 0.02,
        "3:1 weights gave share {heavy_share}"
    );
}

#[test]
fn maglev_follows_mixed_weights() {
    let set: Vec<Candidate> = (0..20)
        .map(|i| Candidate {
            key: server_key(i),
            weight: 1 + (i % 4) as u32,
        })
        .collect();
    let table = maglev_table(&set, DEFAULT_MAGLEV_TABLE_SIZE);
    let counts = slot_counts(&table, set.len());
    let total_weight: u32 = set.iter().map(|s| s.weight).sum();
    for (server, &count) in set.iter().zip(&counts) {
        let expected = ratio(table.len(), 1) * f64::from(server.weight) / f64::from(total_weight);
        let error = (ratio(count, 1) - expected).abs() / expected;
        assert!(
            error < 0.05,
            "weight {} got {count} slots, expected {expected:.0}",
            server.weight
        );
    }
}

#[test]
fn maglev_builds_1000_servers_quickly() {
    let set = servers(1000);
    let start = Instant::now();
    let scheduler = build(Algorithm::Maglev, &set);
    let elapsed = start.elapsed();
    println!("maglev build, 1000 servers, M = 65537: {elapsed:?}");
    assert_eq!(scheduler.maglev_table().unwrap().len(), 65_537);
    // Generous so debug builds pass too; release builds take a few milliseconds.
    assert!(elapsed.as_secs() < 2, "build took {elapsed:?}");
}

#[test]
fn maglev_builds_skewed_weights() {
    // One heavy server among many light ones is the worst case for the credit loop.
    let mut set = servers(1000);
    set[0].weight = u32::MAX;
    let scheduler = build(Algorithm::Maglev, &set);
    let counts = slot_counts(scheduler.maglev_table().unwrap(), set.len());
    assert!(
        counts[0] > 65_537 - 1000,
        "heavy server got {} slots",
        counts[0]
    );
}

#[test]
fn table_size_must_be_prime() {
    for size in [0, 1, 4, 65_536, 100_000] {
        let result = Scheduler::new(Algorithm::Maglev, &servers(1), size);
        assert_eq!(result.unwrap_err(), BuildError::TableSizeNotPrime(size));
    }
    // Round robin ignores the table size.
    Scheduler::new(Algorithm::RoundRobin, &servers(1), 0).unwrap();
    assert!(BuildError::TableSizeNotPrime(4)
        .to_string()
        .contains("not prime"));
}

#[test]
fn table_must_have_a_slot_per_server() {
    let result = Scheduler::new(Algorithm::Maglev, &servers(12), 11);
    assert_eq!(
        result.unwrap_err(),
        BuildError::TableTooSmall {
            size: 11,
            servers: 12
        }
    );
    // Exactly one slot per server is allowed, and each server gets its slot.
    let table = maglev_table(&servers(11), 11);
    assert_eq!(slot_counts(&table, 11), vec![1; 11]);
}

#[test]
fn too_many_servers_is_rejected() {
    let set = vec![Candidate { key: 1, weight: 1 }; MAX_SERVERS + 1];
    for &algorithm in ALGORITHMS {
        let result = Scheduler::new(algorithm, &set, DEFAULT_MAGLEV_TABLE_SIZE);
        assert_eq!(
            result.unwrap_err(),
            BuildError::TooManyServers(MAX_SERVERS + 1)
        );
    }
}

fn server_set() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec((any::<u64>(), 0..5_u32), 0..50).prop_map(|servers| {
        servers
            .into_iter()
            .map(|(key, weight)| Candidate { key, weight })
            .collect()
    })
}

/// Random loads for up to 50 servers.
fn loads() -> impl Strategy<Value = Counts> {
    (
        prop::collection::vec(0..200_u64, 50),
        prop::collection::vec(0..2000_u64, 50),
    )
        .prop_map(|(active, inactive)| Counts { active, inactive })
}

/// Random flows: distinct hashes, a few clients and destinations (so lblc/lblcr state is reused).
fn flows() -> impl Strategy<Value = Vec<Flow>> {
    prop::collection::vec((any::<u64>(), 0..8_u32, 0..8_u32), 1..64).prop_map(|flows| {
        flows
            .into_iter()
            .map(|(hash, src, dst)| Flow {
                hash,
                src_addr: 0x0a00_0000 | src,
                dst_addr: 0xc000_0200 | dst,
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn pick_returns_only_eligible_servers(
        servers in server_set(),
        loads in loads(),
        flows in flows(),
    ) {
        let any_eligible = servers.iter().any(|s| s.weight > 0);
        for &algorithm in ALGORITHMS {
            // A small prime keeps each case fast while still exceeding 50 servers.
            let scheduler = Scheduler::new(algorithm, &servers, 251).unwrap();
            for flow in &flows {
                match scheduler.pick(flow, &loads) {
                    Some(index) => prop_assert!(servers[index].weight > 0, "{} picked drained {}", algorithm, index),
                    None => prop_assert!(!any_eligible, "{} picked nothing from an eligible set", algorithm),
                }
            }
        }
    }

    #[test]
    fn maglev_table_is_independent_of_slice_order(
        servers in server_set(),
        rotation in 0..50_usize,
    ) {
        // Duplicate keys are tie-broken by slice position, so only unique keys are order-free.
        let mut keys: Vec<u64> = servers.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        keys.dedup();
        prop_assume!(keys.len() == servers.len() && !servers.is_empty());
        let mut rotated = servers.clone();
        rotated.rotate_left(rotation % servers.len());
        prop_assert_eq!(table_by_key(&rotated, 251), table_by_key(&servers, 251));
    }
}

/// A flow with this hash, for algorithms that look only at the hash.
fn flow(hash: u64) -> Flow {
    Flow {
        hash,
        src_addr: 0xc633_6407,
        dst_addr: 0xc000_020a,
    }
}

/// Hand-built connection counts per server index.
#[derive(Clone, Debug, Default)]
struct Counts {
    active: Vec<u64>,
    inactive: Vec<u64>,
}

impl Counts {
    fn active(active: &[u64]) -> Self {
        Self {
            active: active.to_vec(),
            inactive: vec![0; active.len()],
        }
    }

    fn new(active: &[u64], inactive: &[u64]) -> Self {
        Self {
            active: active.to_vec(),
            inactive: inactive.to_vec(),
        }
    }
}

impl Loads for Counts {
    fn active(&self, server: usize) -> u64 {
        self.active.get(server).copied().unwrap_or(0)
    }
    fn inactive(&self, server: usize) -> u64 {
        self.inactive.get(server).copied().unwrap_or(0)
    }
}

fn weighted(weights: &[u32]) -> Vec<Candidate> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Candidate {
            key: server_key(i as u64),
            weight,
        })
        .collect()
}

fn pick_with(algorithm: Algorithm, weights: &[u32], loads: &Counts) -> Option<usize> {
    build(algorithm, &weighted(weights)).pick(&flow(0), loads)
}

/// Picks per server over `picks` new flows from distinct clients to distinct destinations.
fn pick_counts(scheduler: &Scheduler, servers: usize, picks: u32) -> Vec<usize> {
    let mut counts = vec![0; servers];
    for i in 0..picks {
        let flow = Flow {
            hash: flow_hash(0x0a00_0000 + i, 0xc000_0200 + i, 1024, 80, 6),
            src_addr: 0x0a00_0000 + i,
            dst_addr: 0xc000_0200 + i,
        };
        counts[scheduler.pick(&flow, &NoLoads).unwrap()] += 1;
    }
    counts
}

fn assert_shares(what: &str, counts: &[usize], weights: &[u32], tolerance: f64) {
    let total: usize = counts.iter().sum();
    let total_weight: u32 = weights.iter().sum();
    for (server, (&count, &weight)) in counts.iter().zip(weights).enumerate() {
        let share = ratio(count, total);
        let expected = f64::from(weight) / f64::from(total_weight);
        assert!(
            (share - expected).abs() <= tolerance,
            "{what}: server {server} (weight {weight}) got {share:.4}, expected {expected:.4}"
        );
    }
    println!("{what}: weights {weights:?} -> picks {counts:?}");
}

#[test]
fn every_algorithm_is_deterministic() {
    let set = weighted(&[3, 0, 1, 2, 5, 1]);
    let loads = Counts::new(&[4, 0, 1, 7, 2, 0], &[10, 0, 300, 1, 0, 5]);
    for &algorithm in ALGORITHMS {
        let picks = |scheduler: Scheduler| -> Vec<Option<usize>> {
            (0..500_u32)
                .map(|i| {
                    let flow = Flow {
                        hash: flow_hash(i, i % 7, 1, 2, 6),
                        src_addr: i % 13,
                        dst_addr: i % 5,
                    };
                    scheduler.pick(&flow, &loads)
                })
                .collect()
        };
        assert_eq!(
            picks(build(algorithm, &set)),
            picks(build(algorithm, &set)),
            "{algorithm}"
        );
    }
}

#[test]
fn uses_loads_marks_the_least_connection_family() {
    let loaded: Vec<&str> = ALGORITHMS
        .iter()
        .filter(|algorithm| algorithm.uses_loads())
        .map(|algorithm| algorithm.name())
        .collect();
    assert_eq!(loaded, ["lc", "wlc", "sed", "nq", "lblc", "lblcr"]);
}

#[test]
fn wlc_overhead_is_active_times_256_plus_inactive() {
    use Algorithm::WeightedLeastConnection as Wlc;
    // 1 active = 256 vs 255 inactive: the inactive one is lighter.
    assert_eq!(
        pick_with(Wlc, &[1, 1], &Counts::new(&[1, 0], &[0, 255])),
        Some(1)
    );
    // 256 vs 256: a tie keeps the first.
    assert_eq!(
        pick_with(Wlc, &[1, 1], &Counts::new(&[1, 0], &[0, 256])),
        Some(0)
    );
    assert_eq!(
        pick_with(Wlc, &[1, 1], &Counts::new(&[1, 0], &[0, 257])),
        Some(0)
    );
    // Inactive connections count too: 2*256+1 vs 2*256.
    assert_eq!(
        pick_with(Wlc, &[1, 1], &Counts::new(&[2, 2], &[1, 0])),
        Some(1)
    );
}

#[test]
fn wlc_picks_least_overhead_per_weight() {
    use Algorithm::WeightedLeastConnection as Wlc;
    // 256/1 vs 700/3 = 233: the heavier server is relatively lighter.
    assert_eq!(
        pick_with(Wlc, &[1, 3], &Counts::new(&[1, 2], &[0, 188])),
        Some(1)
    );
    // 256/1 vs 800/3 = 266.
    assert_eq!(
        pick_with(Wlc, &[1, 3], &Counts::new(&[1, 3], &[0, 32])),
        Some(0)
    );
    // Exact tie 256/1 == 768/3: the first in slice order.
    assert_eq!(pick_with(Wlc, &[1, 3], &Counts::active(&[1, 3])), Some(0));
    // Idle set: every ratio is 0, so the first eligible server.
    assert_eq!(
        pick_with(Wlc, &[0, 2, 1], &Counts::active(&[0, 0, 0])),
        Some(1)
    );
    // The drained server is skipped even though it is the least loaded.
    assert_eq!(
        pick_with(Wlc, &[0, 1, 1], &Counts::active(&[0, 5, 4])),
        Some(2)
    );
    // Counts near u64::MAX neither overflow nor panic.
    let huge = Counts::new(&[u64::MAX, u64::MAX - 1], &[u64::MAX, 0]);
    assert_eq!(pick_with(Wlc, &[u32::MAX, u32::MAX], &huge), Some(0));
}

#[test]
fn lc_ignores_weights() {
    // Overheads 255 and 256: lc takes the first, wlc the one with weight 100.
    let loads = Counts::new(&[0, 1], &[255, 0]);
    assert_eq!(
        pick_with(Algorithm::LeastConnection, &[1, 100], &loads),
        Some(0)
    );
    assert_eq!(
        pick_with(Algorithm::WeightedLeastConnection, &[1, 100], &loads),
        Some(1)
    );
    // Ties keep the first; drained servers are skipped.
    let idle = Counts::active(&[0, 0, 0]);
    assert_eq!(
        pick_with(Algorithm::LeastConnection, &[0, 1, 9], &idle),
        Some(1)
    );
    let loads = Counts::new(&[3, 1, 0], &[0, 0, 257]);
    assert_eq!(
        pick_with(Algorithm::LeastConnection, &[5, 5, 5], &loads),
        Some(1)
    );
}

#[test]
fn sed_and_nq_differ_on_an_idle_light_server() {
    // Server 0: weight 1, idle -> sed delay (0+1)/1 = 1. Server 1: weight 10, 1 active ->
    // (1+1)/10 = 0.2. sed queues on the big server; nq never queues while a server is idle.
    let loads = Counts::active(&[0, 1]);
    assert_eq!(
        pick_with(Algorithm::ShortestExpectedDelay, &[1, 10], &loads),
        Some(1)
    );
    assert_eq!(pick_with(Algorithm::NeverQueue, &[1, 10], &loads), Some(0));
    // With nobody idle, nq is sed: (2+1)/1 = 3 vs (1+1)/10.
    let busy = Counts::active(&[2, 1]);
    assert_eq!(pick_with(Algorithm::NeverQueue, &[1, 10], &busy), Some(1));
    // sed ignores inactive connections (wlc would not).
    let closing = Counts::new(&[1, 1], &[0, 10_000]);
    assert_eq!(
        pick_with(Algorithm::ShortestExpectedDelay, &[1, 2], &closing),
        Some(1)
    );
    // nq returns the first idle server, and not a drained one.
    let idle = Counts::active(&[0, 5, 0, 0]);
    assert_eq!(
        pick_with(Algorithm::NeverQueue, &[0, 1, 1, 9], &idle),
        Some(2)
    );
    // sed ties (2/1 == 4/2) keep the first.
    let tie = Counts::active(&[1, 3]);
    assert_eq!(
        pick_with(Algorithm::ShortestExpectedDelay, &[1, 2], &tie),
        Some(0)
    );
}

/// A flow from `src` to `dst`, hashed as the data plane would.
fn flow_between(src: u32, dst: u32, port: u16) -> Flow {
    Flow {
        hash: flow_hash(src, dst, port, 80, 6),
        src_addr: src,
        dst_addr: dst,
    }
}

#[test]
fn sh_keeps_a_client_on_one_server_and_spreads_clients_by_weight() {
    let weights = [3, 1, 2];
    let scheduler = build(Algorithm::SourceHashing, &weighted(&weights));
    let rebuilt = build(Algorithm::SourceHashing, &weighted(&weights));
    let mut counts = vec![0; weights.len()];
    for client in 0..100_000_u32 {
        let src = 0x0a00_0000 + client;
        let first = scheduler
            .pick(&flow_between(src, 0xc000_020a, 1024), &NoLoads)
            .unwrap();
        // Any port, any destination, any build: the same server.
        for (dst, port) in [(0xc000_020b, 2000), (0x0808_0808, 65_535)] {
            assert_eq!(
                scheduler.pick(&flow_between(src, dst, port), &NoLoads),
                Some(first)
            );
        }
        assert_eq!(
            rebuilt.pick(&flow_between(src, 1, 1), &NoLoads),
            Some(first)
        );
        counts[first] += 1;
    }
    assert_shares("sh clients", &counts, &weights, 0.02);
}

#[test]
fn dh_keeps_a_destination_on_one_server_and_spreads_destinations_by_weight() {
    let weights = [1, 3, 1, 5];
    let scheduler = build(Algorithm::DestinationHashing, &weighted(&weights));
    let mut counts = vec![0; weights.len()];
    for destination in 0..100_000_u32 {
        let dst = 0xc000_0000 + destination;
        let first = scheduler
            .pick(&flow_between(0x0a00_0001, dst, 1024), &NoLoads)
            .unwrap();
        for (src, port) in [(0x0a00_0002, 2000), (0x0b0b_0b0b, 9)] {
            assert_eq!(
                scheduler.pick(&flow_between(src, dst, port), &NoLoads),
                Some(first)
            );
        }
        counts[first] += 1;
    }
    assert_shares("dh destinations", &counts, &weights, 0.02);
}

#[test]
fn sh_draining_a_server_moves_only_its_clients() {
    let before = build(Algorithm::SourceHashing, &weighted(&[1, 1, 1, 1]));
    let after = build(Algorithm::SourceHashing, &weighted(&[1, 1, 0, 1]));
    let (mut moved, mut kept) = (0, 0);
    for client in 0..10_000_u32 {
        let flow = flow_between(0x0a00_0000 + client, 1, 1);
        let old = before.pick(&flow, &NoLoads).unwrap();
        let new = after.pick(&flow, &NoLoads).unwrap();
        assert_ne!(new, 2);
        if old == 2 {
            continue;
        }
        kept += usize::from(old == new);
        moved += usize::from(old != new);
    }
    // Drained servers keep their buckets (resolved to neighbours), so other clients stay put.
    assert_eq!(
        moved, 0,
        "{moved} clients of live servers moved ({kept} kept)"
    );
    // The drained server's clients spread over the others, roughly by weight.
    let counts = pick_counts(&after, 4, 100_000);
    assert_shares("sh after draining", &counts, &[1, 1, 0, 1], 0.05);
    let drained = build(Algorithm::SourceHashing, &weighted(&[3, 1, 0, 2]));
    let counts = pick_counts(&drained, 4, 100_000);
    assert_shares("sh with a drained server", &counts, &[3, 1, 0, 2], 0.05);
}

#[test]
fn lblc_keeps_a_destination_until_its_server_is_overloaded() {
    let scheduler = build(
        Algorithm::LocalityBasedLeastConnection,
        &weighted(&[4, 4, 4]),
    );
    let to = |dst| flow_between(0x0a00_0001, dst, 1000);
    let dst = 0xc000_0201;
    // First flow: the wlc choice (server 0 on an idle cluster).
    assert_eq!(
        scheduler.pick(&to(dst), &Counts::active(&[0, 0, 0])),
        Some(0)
    );
    // Busy but not over its weight (4 active on weight 4): stays, although 1 and 2 are idle.
    for active in [1, 2, 3, 4] {
        let loads = Counts::active(&[active, 0, 0]);
        assert_eq!(scheduler.pick(&to(dst), &loads), Some(0), "active {active}");
    }
    // Another destination gets its own wlc choice.
    assert_eq!(
        scheduler.pick(&to(0xc000_0202), &Counts::active(&[4, 0, 1])),
        Some(1)
    );
    // Over its weight, but every server is at least half busy: stays (IPVS's is_overloaded).
    assert_eq!(
        scheduler.pick(&to(dst), &Counts::active(&[5, 2, 3])),
        Some(0)
    );
    // Over its weight while server 2 is under half: moves to the wlc choice, and stays there.
    assert_eq!(
        scheduler.pick(&to(dst), &Counts::active(&[5, 3, 1])),
        Some(2)
    );
    assert_eq!(
        scheduler.pick(&to(dst), &Counts::active(&[0, 0, 2])),
        Some(2)
    );
}

#[test]
fn lblc_moves_a_destination_off_a_drained_server() {
    let scheduler = build(
        Algorithm::LocalityBasedLeastConnection,
        &weighted(&[1, 0, 1]),
    );
    let flow = flow_between(1, 0xc000_0201, 1);
    assert_eq!(scheduler.pick(&flow, &Counts::active(&[3, 0, 0])), Some(2));
    assert_eq!(scheduler.pick(&flow, &Counts::active(&[0, 0, 1])), Some(2));
}

#[test]
fn lblcr_grows_the_set_under_overload() {
    let scheduler = build(
        Algorithm::LocalityBasedLeastConnectionReplication,
        &weighted(&[2, 2, 2, 2]),
    );
    let flow = flow_between(0x0a00_0001, 0xc000_0201, 1000);
    let pick = |active: &[u64]| scheduler.pick(&flow, &Counts::active(active));
    assert_eq!(pick(&[0, 0, 0, 0]), Some(0));
    // Not overloaded: the set {0} is used although others are idle.
    assert_eq!(pick(&[2, 0, 0, 0]), Some(0));
    // Overloaded (3 > 2, server 1 under half): server 1 joins the set and takes the flow.
    assert_eq!(pick(&[3, 0, 0, 0]), Some(1));
    // The set is {0, 1}: its least-loaded member wins, even when an outsider is idler.
    assert_eq!(pick(&[1, 2, 0, 0]), Some(0));
    assert_eq!(pick(&[2, 1, 0, 0]), Some(1));
    // Both overloaded: server 2 joins; now the set {0, 1, 2} answers.
    assert_eq!(pick(&[3, 3, 0, 0]), Some(2));
    assert_eq!(pick(&[2, 2, 1, 0]), Some(2));
    // A plain lblc would have kept one server: compare with the same sequence.
    let lblc = build(
        Algorithm::LocalityBasedLeastConnection,
        &weighted(&[2, 2, 2, 2]),
    );
    let lblc_pick = |active: &[u64]| lblc.pick(&flow, &Counts::active(active));
    assert_eq!(lblc_pick(&[0, 0, 0, 0]), Some(0));
    assert_eq!(lblc_pick(&[3, 0, 0, 0]), Some(1));
    assert_eq!(
        lblc_pick(&[1, 2, 0, 0]),
        Some(1),
        "lblc remembers only server 1"
    );
}

#[test]
fn wrr_follows_the_ipvs_sequence() {
    let scheduler = build(Algorithm::WeightedRoundRobin, &weighted(&[4, 3, 2]));
    let picks: Vec<usize> = (0..18)
        .map(|_| scheduler.pick(&flow(0), &NoLoads).unwrap())
        .collect();
    // LVS documentation's example: A=4, B=3, C=2 -> AABABCABC.
    assert_eq!(
        picks,
        [0, 0, 1, 0, 1, 2, 0, 1, 2, 0, 0, 1, 0, 1, 2, 0, 1, 2]
    );
}

#[test]
fn wrr_converges_to_the_weights() {
    for weights in [&[3, 1, 0][..], &[5, 3, 2], &[1, 1, 1, 1], &[0, 7, 0, 1]] {
        let scheduler = build(Algorithm::WeightedRoundRobin, &weighted(weights));
        let counts = pick_counts(&scheduler, weights.len(), 100_000);
        // Whole periods divide 100_000 here, so the shares are exact.
        assert_shares("wrr", &counts, weights, 1e-9);
    }
}

#[test]
fn wrr_is_shared_across_threads() {
    let weights = [3, 1, 0, 2];
    let scheduler = build(Algorithm::WeightedRoundRobin, &weighted(&weights));
    let totals: Vec<usize> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| pick_counts(&scheduler, weights.len(), 6_000)))
            .collect();
        workers.into_iter().fold(vec![0; 4], |mut totals, worker| {
            for (total, count) in totals.iter_mut().zip(worker.join().unwrap()) {
                *total += count;
            }
            totals
        })
    });
    // 24_000 picks took distinct cursor values: exactly 4_000 whole periods of 6.
    assert_eq!(totals, [12_000, 4_000, 0, 8_000]);
}

#[test]
fn maglev_converges_to_the_weights() {
    for weights in [&[3, 1, 0][..], &[5, 3, 2]] {
        let set = weighted(weights);
        let table = maglev_table(&set, DEFAULT_MAGLEV_TABLE_SIZE);
        assert_shares(
            "maglev slots",
            &slot_counts(&table, set.len()),
            weights,
            0.01,
        );
        let scheduler = build(Algorithm::Maglev, &set);
        let counts = pick_counts(&scheduler, set.len(), 200_000);
        assert_shares("maglev flows", &counts, weights, 0.02);
    }
}

/// A toy cluster: every new connection goes where the scheduler says and stays open, so the
/// final counts show where a least-connection scheduler steers load.
fn simulate(algorithm: Algorithm, weights: &[u32], connections: u32) -> Vec<usize> {
    let scheduler = build(algorithm, &weighted(weights));
    let mut loads = Counts::active(&vec![0; weights.len()]);
    for i in 0..connections {
        let server = scheduler.pick(&flow_between(i, 1, 1), &loads).unwrap();
        loads.active[server] += 1;
        // Every tenth connection closes an old one on the busiest server, leaving it in
        // TIME_WAIT (inactive), so both counts move.
        if i % 10 == 9 {
            let busiest = (0..weights.len()).max_by_key(|&s| loads.active[s]).unwrap();
            loads.active[busiest] -= 1;
            loads.inactive[busiest] += 1;
        }
    }
    loads
        .active
        .iter()
        .map(|&count| usize::try_from(count).unwrap())
        .collect()
}

#[test]
fn least_connection_cluster_tracks_the_weights() {
    let counts = simulate(Algorithm::WeightedLeastConnection, &[3, 1], 4000);
    assert_shares("wlc cluster", &counts, &[3, 1], 0.03);
    let counts = simulate(Algorithm::WeightedLeastConnection, &[5, 3, 2, 0], 4000);
    assert_shares("wlc cluster", &counts, &[5, 3, 2, 0], 0.03);
    for algorithm in [Algorithm::ShortestExpectedDelay, Algorithm::NeverQueue] {
        let counts = simulate(algorithm, &[3, 1], 4000);
        assert_shares(algorithm.name(), &counts, &[3, 1], 0.03);
    }
    // lc ignores weights: equal shares whatever the weights (drained excepted).
    let counts = simulate(Algorithm::LeastConnection, &[3, 1, 0], 4000);
    assert_shares("lc cluster", &counts, &[1, 1, 0], 0.03);
}

/// Loads with some servers over their threshold, the others idle.
struct OverThreshold(Vec<bool>);

impl Loads for OverThreshold {
    fn active(&self, _server: usize) -> u64 {
        0
    }
    fn inactive(&self, _server: usize) -> u64 {
        0
    }
    fn over_threshold(&self, server: usize) -> bool {
        self.0.get(server).copied().unwrap_or(false)
    }
}

#[test]
fn a_server_over_its_threshold_gets_nothing_under_any_algorithm() {
    let set = servers(5);
    for &algorithm in ALGORITHMS {
        let scheduler = build(algorithm, &set);
        let loads = OverThreshold(vec![false, true, false, true, true]);
        let mut picked = [0usize; 5];
        for hash in sample_flow_hashes(2000) {
            let flow = Flow {
                hash,
                src_addr: hash as u32,
                dst_addr: (hash >> 32) as u32,
            };
            let server = scheduler
                .pick(&flow, &loads)
                .unwrap_or_else(|| panic!("{algorithm}: nothing picked with two servers under"));
            picked[server] += 1;
        }
        assert_eq!(
            [picked[1], picked[3], picked[4]],
            [0, 0, 0],
            "{algorithm}: {picked:?}"
        );
        // Table-driven ones spread over the servers left, not onto one neighbour (the
        // least-connection family, all loads 0 here, takes the first of the ties).
        assert!(
            algorithm.uses_loads() || (picked[0] > 100 && picked[2] > 100),
            "{algorithm}: {picked:?}"
        );
        // Every server over: nothing, as with every server drained.
        let flow = Flow {
            hash: 7,
            src_addr: 7,
            dst_addr: 7,
        };
        assert_eq!(
            scheduler.pick(&flow, &OverThreshold(vec![true; 5])),
            None,
            "{algorithm}"
        );
    }
}

#[test]
fn maglev_keeps_flows_of_servers_under_their_threshold_in_place() {
    let set = servers(10);
    let scheduler = build(Algorithm::Maglev, &set);
    let mut over = vec![false; 10];
    over[4] = true;
    let loads = OverThreshold(over);
    for hash in sample_flow_hashes(5000) {
        let flow = Flow {
            hash,
            src_addr: 0,
            dst_addr: 0,
        };
        let usual = scheduler.pick(&flow, &NoLoads).unwrap();
        let now = scheduler.pick(&flow, &loads).unwrap();
        if usual == 4 {
            assert_ne!(now, 4);
        } else {
            assert_eq!(now, usual, "a flow of a server under its threshold moved");
        }
    }
}
