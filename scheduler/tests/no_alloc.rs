//! `Scheduler::pick` must not allocate: every algorithm runs many picks under a counting global
//! allocator and the count must not move.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use scheduler::{flow_hash, Algorithm, Candidate, Flow, Loads, Scheduler};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let servers: Vec<Candidate> = (0..40)
        .map(|i| Candidate {
            key: i * 0x9e37_79b9,
            weight: (i % 4) as u32,
        })
        .collect();
    for &algorithm in Algorithm::ALL {
        let scheduler = Scheduler::new(algorithm, &servers, 251).unwrap();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let mut picked = 0_usize;
        for i in 0..10_000_u32 {
            let flow = Flow {
                hash: flow_hash(i, i % 97, 1, 2, 6),
                src_addr: i,
                dst_addr: i % 97,
            };
            picked += scheduler.pick(&flow, &Varied).unwrap();
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert_eq!(allocations, 0, "{algorithm} allocated {allocations} times");
        assert!(picked > 0);
    }
}
