//! No frame makes the pipeline panic: random bytes, and random truncations and byte mutations of
//! valid fixture frames, go through `Pipeline::process`. The only checks are that it returns and
//! that a transmitted frame kept its length.

use std::sync::Arc;
use std::time::Instant;

use dataplane::testing::{self, backend, backend_mac, service, FrameBuilder, DIRECTOR_MAC};
use dataplane::{PersistenceTable, Pipeline, Protocol, ServiceTable, Verdict, WorkerCounters};
use proptest::prelude::*;
use scheduler::Algorithm;

fn table() -> ServiceTable {
    testing::table(
        1,
        vec![
            service(
                "192.0.2.10:80",
                Protocol::Tcp,
                Algorithm::Maglev,
                vec![
                    backend("10.0.0.1", Some(backend_mac(1)), 1, 0),
                    backend("10.0.0.2", Some(backend_mac(2)), 1, 1),
                ],
            ),
            service(
                "192.0.2.53:53",
                Protocol::Udp,
                Algorithm::RoundRobin,
                vec![backend("10.0.0.3", Some(backend_mac(3)), 1, 2)],
            ),
            service(
                "192.0.2.20:80",
                Protocol::Tcp,
                Algorithm::RoundRobin,
                vec![backend("10.0.0.4", None, 1, 3)],
            ),
            testing::with_persistence(
                testing::service_with_ports(
                    "192.0.2.40",
                    &[80, 443],
                    Protocol::Tcp,
                    Algorithm::Maglev,
                    vec![
                        backend("10.0.0.5", Some(backend_mac(5)), 1, 4),
                        backend("10.0.0.6", Some(backend_mac(6)), 0, 5),
                        backend("10.0.0.7", None, 1, 6),
                    ],
                ),
                300,
                "255.255.255.0",
                1,
            ),
        ],
        testing::counter_blocks(1, 7),
    )
    // Small, so random frames fill it and hit the full path.
    .with_persistence(Arc::new(PersistenceTable::new(8)))
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        FrameBuilder::tcp().dst("192.0.2.10:80").syn().build(),
        FrameBuilder::tcp()
            .dst("192.0.2.10:80")
            .ack()
            .payload(&[0x55; 100])
            .build(),
        FrameBuilder::tcp().dst("192.0.2.20:80").syn().build(),
        FrameBuilder::udp()
            .dst("192.0.2.53:53")
            .payload(&[1, 2, 3])
            .build(),
        FrameBuilder::tcp().dst("192.0.2.10:80").ihl(6).build(),
        FrameBuilder::icmp().dst("192.0.2.10:0").build(),
        FrameBuilder::tcp().dst("192.0.2.40:80").syn().build(),
        FrameBuilder::tcp().dst("192.0.2.40:443").ack().build(),
        FrameBuilder::udp().dst("192.0.2.40:443").build(),
    ]
}

/// A seed frame, truncated and with some bytes overwritten (header bytes more often).
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        any::<usize>(),
        proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
    )
        .prop_map(move |(which, cut, edits)| {
            let mut frame = seeds[which].clone();
            for (at, byte) in edits {
                if let Some(slot) = frame.get_mut(at) {
                    *slot = byte;
                }
            }
            frame.truncate(cut % (frame.len() + 1));
            frame
        })
}

fn run(
    pipeline: &mut Pipeline,
    table: &ServiceTable,
    counters: &WorkerCounters,
    mut frame: Vec<u8>,
) -> Result<(), TestCaseError> {
    let len = frame.len();
    let verdict = pipeline.process(&mut frame, table, Instant::now(), counters);
    if verdict == Verdict::Tx {
        prop_assert_eq!(frame.len(), len);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (table, counters) = (table(), WorkerCounters::default());
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 8);
        run(&mut pipeline, &table, &counters, frame)?;
    }

    #[test]
    fn mutated_valid_frames(frames in proptest::collection::vec(mutated(), 1..16)) {
        // Several frames through one small pipeline, so entries are hit, rebound and evicted.
        let (table, counters) = (table(), WorkerCounters::default());
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 4);
        for frame in frames {
            run(&mut pipeline, &table, &counters, frame)?;
        }
        pipeline.housekeeping(&table, Instant::now(), &counters);
        testing::assert_gauges_match(pipeline.connections(), &table, 0);
    }
}
