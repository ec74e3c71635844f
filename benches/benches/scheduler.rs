//! ns per scheduling decision at 10, 100 and 1000 servers, and Maglev's table build time.
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use scheduler::{
    flow_hash, Algorithm, Candidate, Flow, NoLoads, Scheduler, DEFAULT_MAGLEV_TABLE_SIZE,
};

fn servers(count: u64) -> Vec<Candidate> {
    (0..count)
        .map(|n| Candidate {
            key: 0xc000_0200_0000 + n,
            weight: 1,
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for algorithm in [Algorithm::RoundRobin, Algorithm::Maglev] {
        for count in [10, 100, 1000] {
            let scheduler =
                Scheduler::new(algorithm, &servers(count), DEFAULT_MAGLEV_TABLE_SIZE).unwrap();
            let mut port = 0u16;
            group.bench_with_input(
                BenchmarkId::new(algorithm.to_string(), count),
                &scheduler,
                |b, scheduler| {
                    b.iter(|| {
                        port = port.wrapping_add(1);
                        black_box(scheduler.pick(
                            &Flow {
                                hash: flow_hash(0xc633_6407, 0xc000_020a, port, 80, 6),
                                src_addr: 0xc633_6407,
                                dst_addr: 0xc000_020a,
                            },
                            &NoLoads,
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
