//! `Scheduler::pick` must not allocate: every algorithm runs many picks under a counting global
//! allocator and the count must not move.
//!
//! Only allocations made by the test's own thread while counting is on are counted: the
//! harness's main thread may still be doing its own bookkeeping when the test starts, and on a
//! loaded machine that landed inside a measured loop (CI saw "wlc allocated 4 times").

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use scheduler::{flow_hash, Algorithm, Candidate, Flow, Loads, Scheduler};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations this thread made meanwhile.
fn allocations_during(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|count| count.set(0));
    COUNTING.with(|counting| counting.set(true));
    f();
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.with(Cell::get)
}

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
