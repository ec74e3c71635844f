//! ns per scheduling decision for every algorithm at 10, 100 and 1000 servers, and Maglev's table
//! build time. The least-connection family reads a `Loads` fixture with varied counts, so its scans
//! compare real numbers instead of all-zero ties.
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use scheduler::{
    flow_hash, Algorithm, Candidate, Flow, Loads, Scheduler, DEFAULT_MAGLEV_TABLE_SIZE,
};

fn servers(count: u64) -> Vec<Candidate> {
    (0..count)
        .map(|n| Candidate {
            key: 0xc000_0200_0000 + n,
            weight: 1,
        })
        .collect()
}

/// Connection counts that differ per server (a precomputed table, so the fixture itself costs one
/// load per call, like a summed per-worker counter block in the data plane would cost a few).
struct VariedLoads {
    active: Vec<u64>,
    inactive: Vec<u64>,
}

impl VariedLoads {
    fn new(count: u64) -> Self {
        Self {
            active: (0..count).map(|n| 50 + (n * 37) % 101).collect(),
            inactive: (0..count).map(|n| (n * 7919) % 1000).collect(),
        }
    }
}

impl Loads for VariedLoads {
    fn active(&self, server: usize) -> u64 {
        self.active.get(server).copied().unwrap_or(0)
    }
    fn inactive(&self, server: usize) -> u64 {
        self.inactive.get(server).copied().unwrap_or(0)
    }
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for &algorithm in Algorithm::ALL {
        for count in [10, 100, 1000] {
            let scheduler =
                Scheduler::new(algorithm, &servers(count), DEFAULT_MAGLEV_TABLE_SIZE).unwrap();
            let loads = VariedLoads::new(count);
            let mut port = 0u16;
            group.bench_with_input(
                BenchmarkId::new(algorithm.to_string(), count),
                &scheduler,
                |b, scheduler| {
                    b.iter(|| {
                        port = port.wrapping_add(1);
                        // Source and destination vary too, so sh, dh, lblc and lblcr see many
                        // clients and destinations (4096 of each), as a busy VIP does.
                        let src_addr = 0xc633_6400 | u32::from(port & 0x0fff);
                        let dst_addr = 0xc000_0200 | u32::from(port.rotate_left(5) & 0x0fff);
                        black_box(scheduler.pick(
                            &Flow {
                                hash: flow_hash(src_addr, dst_addr, port, 80, 6),
                                src_addr,
                                dst_addr,
                            },
                            &loads,
                        ))
                    });
                },
            );
        }
    }
    group.finish();
}

fn maglev_build(c: &mut Criterion) {
    let candidates = servers(1000);
    c.bench_function("maglev_build/1000_servers_65537_slots", |b| {
        b.iter(|| {
            Scheduler::new(
                Algorithm::Maglev,
                black_box(&candidates),
                DEFAULT_MAGLEV_TABLE_SIZE,
            )
            .unwrap()
        });
    });
}

criterion_group!(benches, pick, maglev_build);
criterion_main!(benches);
