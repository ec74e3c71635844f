//! `Scheduler::pick` must not allocate: every algorithm runs many picks under a counting global
//! allocator and the count must not move.
//!
//! `alloc_count` counts only the test thread's allocations, so the harness's own bookkeeping
//! cannot land inside a measured loop.

use alloc_count::{allocations_during, CountingAllocator};
use scheduler::{flow_hash, Algorithm, Candidate, Flow, Loads, Scheduler};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

struct Varied;

impl Loads for Varied {
    fn active(&self, server: usize) -> u64 {
        (server as u64 * 7) % 5
    }
    fn inactive(&self, server: usize) -> u64 {
        (server as u64 * 13) % 300
    }
}

#[test]
fn pick_does_not_allocate() {
    // The counter works: one allocation is seen as one.
    assert_eq!(
        allocations_during(|| drop(std::hint::black_box(vec![1u8; 16]))),
        1
    );

    let servers: Vec<Candidate> = (0..40)
        .map(|i| Candidate {
            key: i * 0x9e37_79b9,
            weight: (i % 4) as u32,
        })
        .collect();
    for &algorithm in Algorithm::ALL {
        let scheduler = Scheduler::new(algorithm, &servers, 251).unwrap();
        let mut picked = 0_usize;
        let allocations = allocations_during(|| {
            for i in 0..10_000_u32 {
                let flow = Flow {
                    hash: flow_hash(i, i % 97, 1, 2, 6),
                    src_addr: i,
                    dst_addr: i % 97,
                };
                picked += scheduler.pick(&flow, &Varied).unwrap();
            }
        });
        assert_eq!(allocations, 0, "{algorithm} allocated {allocations} times");
        assert!(picked > 0);
    }
}
