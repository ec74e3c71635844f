//! A counting global allocator for the tests that prove the per-packet path allocates nothing
//! (`dataplane/tests/no_alloc.rs`, `scheduler/tests/no_alloc.rs`).
//!
//! A test binary installs it with
//! `#[global_allocator] static ALLOCATOR: alloc_count::CountingAllocator = alloc_count::CountingAllocator;`
//! and wraps the code under test in [`allocations_during`] (or [`deallocations_during`]).
//!
//! Only allocations made by the calling thread while it measures are counted: the test
//! harness's own threads keep allocating while a test runs, and on a loaded machine that landed
//! inside a measured loop (CI once saw "wlc allocated 4 times" from a process-wide counter).
//!
//! It must not change what the allocator does: every call goes unchanged to [`System`]. It is
//! test support only; nothing in a shipped binary depends on it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to [`System`], counting each allocation and deallocation the measuring thread makes.
pub struct CountingAllocator;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static DEALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    }
}

fn note_deallocation() {
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        let _ = DEALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
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
        note_deallocation();
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` and returns how many allocations (including zeroed allocations and reallocations)
/// this thread made meanwhile.
///
/// Counts nothing unless [`CountingAllocator`] is the binary's global allocator; a test should
/// first check that a known allocation is seen.
pub fn allocations_during(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|count| count.set(0));
    MEASURING.with(|measuring| measuring.set(true));
    f();
    MEASURING.with(|measuring| measuring.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// Runs `f` and returns how many times this thread freed memory meanwhile (a table swap on a
/// worker must leave the freeing to another thread).
///
/// Counts nothing unless [`CountingAllocator`] is the binary's global allocator; a test should
/// first check that a known deallocation is seen.
pub fn deallocations_during(f: impl FnOnce()) -> u64 {
    DEALLOCATIONS.with(|count| count.set(0));
    MEASURING.with(|measuring| measuring.set(true));
    f();
    MEASURING.with(|measuring| measuring.set(false));
    DEALLOCATIONS.with(Cell::get)
}
