//! Behaviour of both algorithms through the public API: empty and single-server sets, drained
//! servers, determinism, Maglev balance, disruption and weights, and build errors.

use std::collections::HashMap;
use std::time::Instant;

use proptest::prelude::*;
use scheduler::{
    flow_hash, Algorithm, BuildError, Candidate, Flow, NoLoads, Scheduler, UnknownAlgorithm,
    DEFAULT_MAGLEV_TABLE_SIZE, MAX_SERVERS,
};

const ALGORITHMS: [Algorithm; 2] = [Algorithm::RoundRobin, Algorithm::Maglev];

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
    for algorithm in ALGORITHMS {
        assert_eq!(algorithm.to_string().parse(), Ok(algorithm));
        assert!(Algorithm::NAMES.contains(&algorithm.to_string().as_str()));
    }
    let error = "wlc".parse::<Algorithm>().unwrap_err();
    assert_eq!(error, UnknownAlgorithm("wlc".to_owned()));
    let message = error.to_string();
    for name in Algorithm::NAMES {
        assert!(message.contains(name), "{message:?} does not list {name}");
    }
    assert!(
        message.contains("wlc"),
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
    for algorithm in ALGORITHMS {
        assert_eq!(build(algorithm, &servers(3)).algorithm(), algorithm);
    }
}

#[test]
fn empty_set_picks_nothing() {
    for algorithm in ALGORITHMS {
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
    for algorithm in ALGORITHMS {
        let scheduler = build(algorithm, &drained);
        for hash in sample_flow_hashes(100) {
            assert_eq!(scheduler.pick(&flow(hash), &NoLoads), None, "{algorithm}");
        }
    }
}

#[test]
fn single_server_is_always_picked() {
    for algorithm in ALGORITHMS {
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
    for algorithm in ALGORITHMS {
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
    for algorithm in ALGORITHMS {
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

proptest! {
    #[test]
    fn pick_returns_only_eligible_servers(
        servers in server_set(),
        hashes in prop::collection::vec(any::<u64>(), 1..64),
    ) {
        let any_eligible = servers.iter().any(|s| s.weight > 0);
        for algorithm in ALGORITHMS {
            // A small prime keeps each case fast while still exceeding 50 servers.
            let scheduler = Scheduler::new(algorithm, &servers, 251).unwrap();
            for &hash in &hashes {
                match scheduler.pick(&flow(hash), &NoLoads) {
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
