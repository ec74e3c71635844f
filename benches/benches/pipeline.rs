//! ns per frame through `Pipeline::process` on golden-fixture frames: for DR a frame of an
//! established flow (connection-table hit) and a SYN of a new flow (miss, schedule, insert); for
//! NAT a client frame and a real server's reply of an established flow (both rewritten, port
//! mapped, checksums updated incrementally); for TUN a frame of an established flow
//! (encapsulated into the headroom).
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::testing::{
    backend, backend_mac, counter_blocks, in_chunk, interfaces, service, table, with_forwarding,
    with_port, FrameBuilder, DIRECTOR_MAC, UMEM_HEADROOM,
};
use dataplane::{Egress, Forwarding, Pipeline, Protocol, ServiceTable, Verdict, WorkerCounters};
use scheduler::Algorithm;

fn dr_table(algorithm: Algorithm) -> ServiceTable {
    let backends = (1..=3)
        .map(|n| {
            backend(
                &format!("192.0.2.{}", 10 + n),
                Some(backend_mac(n)),
                1,
                usize::from(n - 1),
            )
        })
        .collect();
    table(
        1,
        vec![service("192.0.2.10:80", Protocol::Tcp, algorithm, backends)],
        counter_blocks(1, 3),
    )
}

/// One frame through the pipeline as a worker sees it: `template` written into the chunk's
/// frame slot (as the kernel would), then processed in place.
fn process_copy(
    pipeline: &mut Pipeline,
    chunk: &mut [u8],
    template: &[u8],
    table: &ServiceTable,
    now: Instant,
    counters: &WorkerCounters,
) -> Verdict {
    let len = template.len();
    chunk[UMEM_HEADROOM..UMEM_HEADROOM + len].copy_from_slice(template);
    pipeline.process(black_box(chunk), UMEM_HEADROOM, len, table, now, counters)
}

fn established(c: &mut Criterion) {
    let mut group = c.benchmark_group("dr");
    group.throughput(Throughput::Elements(1));
    for algorithm in [Algorithm::Maglev, Algorithm::RoundRobin] {
        let table = dr_table(algorithm);
        let counters = WorkerCounters::default();
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 1 << 16);
        let template = FrameBuilder::tcp()
            .src("198.51.100.7:40000")
            .dst("192.0.2.10:80")
            .ack()
            .payload(&[0; 64])
            .build();
        let (mut chunk, len) = (in_chunk(&template), template.len());
        let now = Instant::now();
        assert!(matches!(
            pipeline.process(&mut chunk, UMEM_HEADROOM, len, &table, now, &counters),
            Verdict::Tx { .. }
        ));
        group.bench_function(format!("established/{algorithm}"), |b| {
            b.iter(|| {
                black_box(process_copy(
                    &mut pipeline,
                    &mut chunk,
                    &template,
                    &table,
                    now,
                    &counters,
                ))
            });
        });
    }
    group.finish();
}

fn new_flows(c: &mut Criterion) {
    let mut group = c.benchmark_group("dr");
    group.throughput(Throughput::Elements(1));
    for algorithm in [Algorithm::Maglev, Algorithm::RoundRobin] {
        let table = dr_table(algorithm);
        let counters = WorkerCounters::default();
        // A table smaller than the flows cycled through, so every SYN is a miss and an insert
        // (and, once full, an eviction): the worst case per frame.
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 4096);
        let templates: Vec<Vec<u8>> = (0..8192u32)
            .map(|n| {
                let source = format!(
                    "198.51.{}.{}:{}",
                    100 + (n >> 14),
                    (n >> 6) & 0xff,
                    1024 + (n & 0x3f)
                );
                FrameBuilder::tcp()
                    .src(&source)
                    .dst("192.0.2.10:80")
                    .syn()
                    .build()
            })
            .collect();
        let mut chunk = in_chunk(&templates[0]);
        let now = Instant::now();
        let mut next = 0;
        group.bench_function(format!("new_flow/{algorithm}"), |b| {
            b.iter(|| {
                let template = &templates[next];
                next = (next + 1) % templates.len();
                black_box(process_copy(
                    &mut pipeline,
                    &mut chunk,
                    template,
                    &table,
                    now,
                    &counters,
                ))
            });
        });
    }
    group.finish();
}

fn malformed(c: &mut Criterion) {
    let table = dr_table(Algorithm::Maglev);
    let counters = WorkerCounters::default();
    let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 1024);
    let template = FrameBuilder::tcp()
        .src("198.51.100.7:40000")
        .dst("192.0.2.10:80")
        .more_fragments()
        .build();
    let mut chunk = in_chunk(&template);
    let now = Instant::now();
    c.bench_function("drop/fragment", |b| {
        b.iter(|| {
            black_box(process_copy(
                &mut pipeline,
                &mut chunk,
                &template,
                &table,
                now,
                &counters,
            ))
        });
    });
}

/// One service of three real servers forwarded by `forwarding` (NAT maps port 80 to 8080),
/// with the fixture interfaces.
fn table_for(forwarding: Forwarding) -> ServiceTable {
    let backends = (1..=3)
        .map(|n| {
            with_port(
                backend(
                    &format!("198.51.100.{}", 10 + n),
                    Some(backend_mac(n)),
                    1,
                    usize::from(n - 1),
                ),
                if forwarding == Forwarding::Nat {
                    8080
                } else {
                    0
                },
            )
        })
        .collect();
    table(
        1,
        vec![with_forwarding(
            service("192.0.2.10:80", Protocol::Tcp, Algorithm::Maglev, backends),
            forwarding,
        )],
        counter_blocks(1, 3),
    )
    .with_interfaces(interfaces(1500))
}

/// NAT both ways and TUN, for an established flow.
fn nat_and_tun(c: &mut Criterion) {
    let client = "203.0.113.7:40000";
    for forwarding in [Forwarding::Nat, Forwarding::Tunnel] {
        let table = table_for(forwarding);
        let counters = WorkerCounters::default();
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 1 << 16);
        let now = Instant::now();
        let syn = FrameBuilder::tcp()
            .src(client)
            .dst("192.0.2.10:80")
            .syn()
            .build();
        let mut chunk = in_chunk(&syn);
        let verdict = process_copy(&mut pipeline, &mut chunk, &syn, &table, now, &counters);
        let Verdict::Tx { start, .. } = verdict else {
            panic!("the SYN was not forwarded: {verdict:?}");
        };
        // The real server the flow got, read from the rewritten (or encapsulated) frame's
        // innermost destination: byte 30..34 of an IPv4 frame, 20 bytes further when tunnelled.
        let inner = if forwarding == Forwarding::Tunnel {
            20
        } else {
            0
        };
        let server = &chunk[start + inner + 30..start + inner + 34];
        let server = format!("{}.{}.{}.{}", server[0], server[1], server[2], server[3]);

        let mut group = c.benchmark_group(forwarding.name());
        group.throughput(Throughput::Elements(1));
        let inbound = FrameBuilder::tcp()
            .src(client)
            .dst("192.0.2.10:80")
            .ack()
            .payload(&[0; 64])
            .build();
        group.bench_function("established/inbound", |b| {
            b.iter(|| {
                black_box(process_copy(
                    &mut pipeline,
                    &mut chunk,
                    &inbound,
                    &table,
                    now,
                    &counters,
                ))
            });
        });
        if forwarding == Forwarding::Nat {
            let reply = FrameBuilder::tcp()
                .src(&format!("{server}:8080"))
                .dst(client)
                .ack()
                .payload(&[0; 64])
                .build();
            let verdict = process_copy(&mut pipeline, &mut chunk, &reply, &table, now, &counters);
            assert!(
                matches!(
                    verdict,
                    Verdict::Tx {
                        egress: Egress::Peer,
                        ..
                    }
                ),
                "the reply was not translated: {verdict:?}"
            );
            group.bench_function("established/reply", |b| {
                b.iter(|| {
                    black_box(process_copy(
                        &mut pipeline,
                        &mut chunk,
                        &reply,
                        &table,
                        now,
                        &counters,
                    ))
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, established, new_flows, malformed, nat_and_tun);
criterion_main!(benches);
