//! Memory for the large per-worker tables and the UMEM: 2 MiB-aligned anonymous mappings the
//! kernel is asked to back with transparent huge pages, populated before first use; and
//! [`prefetch`], the cache hint the worker uses to overlap their misses.
//!
//! The connection table's slab and hash indexes are sized for `max_connections` (hundreds of
//! thousands of entries: tens of MiB) and touched at random places per packet, and every frame
//! received lies in a UMEM chunk of its own (16 MiB of them by default). On 4 KiB pages that is
//! a TLB miss on most lookups and most frames, each a page walk, a two-dimensional one under a
//! hypervisor; on 2 MiB pages a few TLB entries cover the whole table. DPDK gets the same from
//! hugetlbfs; here `madvise(MADV_HUGEPAGE)` asks for transparent huge pages, which need no
//! reserved pool and no set-up (`/sys/kernel/mm/transparent_hugepage/enabled` must be `madvise`
//! or `always`; with `never` the mapping simply stays on 4 KiB pages).
//!
//! The mapping is also populated up front (`MADV_POPULATE_WRITE`, Linux 5.14), so the packet
//! path never takes the page fault (and, for a huge page, the 2 MiB clearing) of a first touch.
//!
//! [`HugePages`] is an `allocator_api2` allocator, so hashbrown's tables and `allocator_api2`
//! vectors can live in it. Small allocations (under [`HugePages::THRESHOLD`]) go to the global
//! allocator: a mapping per small block would waste memory and gain nothing.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global};

/// Size and alignment of a huge page on x86-64 and arm64 with 4 KiB base pages.
const HUGE_PAGE: usize = 2 << 20;

/// Hints the CPU to bring the cache line holding `value` into its caches, without waiting for
/// it: for data the caller will read a little later (DPDK's `rte_prefetch0`). A no-op on
/// targets without the hint.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing into the program and never faults; the address is that
    // of a live reference in any case.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Allocates blocks of at least [`HugePages::THRESHOLD`] bytes as huge-page-backed mappings
/// (see the module docs) and smaller ones from the global allocator.
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePages;

impl HugePages {
    /// Blocks this large or larger get a mapping of their own.
    pub const THRESHOLD: usize = HUGE_PAGE / 2;

    /// Bytes of this process's memory backed by transparent huge pages (`AnonHugePages` in
    /// `/proc/self/smaps_rollup`), for tests and diagnostics; `None` if it cannot be read.
    pub fn process_huge_bytes() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
        let line = text
            .lines()
            .find(|line| line.starts_with("AnonHugePages:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

/// The length a block of `size` bytes is mapped with.
pub(crate) fn mapped_len(size: usize) -> Option<usize> {
    size.checked_next_multiple_of(HUGE_PAGE)
}

/// Maps `len` bytes (a multiple of [`HUGE_PAGE`]) at a [`HUGE_PAGE`]-aligned address, asks for
/// huge pages and populates them. The caller unmaps exactly `len` bytes from the result.
pub(crate) fn map_huge(len: usize) -> Option<NonNull<u8>> {
    // Over-map by one huge page and trim both ends, so what is left starts on a boundary: the
    // kernel only backs aligned 2 MiB ranges with huge pages.
    let over = len.checked_add(HUGE_PAGE)?;
    // SAFETY: an anonymous private mapping with no address hint aliases nothing; the result is
    // checked for MAP_FAILED before use.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            over,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let head = aligned - start;
    let tail = over - head - len;
    // SAFETY: both ranges lie inside the mapping just made and outside the part kept; munmap of
    // a zero length is skipped. madvise only advises on the kept range.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        let kept = aligned as *mut libc::c_void;
        // Both are advice: without huge pages (THP off) or without MADV_POPULATE_WRITE (before
        // Linux 5.14) the memory works the same, on 4 KiB pages or faulted in on first touch.
        libc::madvise(kept, len, libc::MADV_HUGEPAGE);
        libc::madvise(kept, len, MADV_POPULATE_WRITE);
    }
    NonNull::new(aligned as *mut u8)
}

/// `MADV_POPULATE_WRITE` (Linux 5.14), not in every libc crate version.
const MADV_POPULATE_WRITE: libc::c_int = 23;

// SAFETY: blocks come from an anonymous mapping (zeroed, valid for `layout.size()` bytes,
// aligned to 2 MiB, which covers any `layout.align()` up to that) or from `Global`; each is
// released the way it was made, decided by the same size rule in both directions.
unsafe impl Allocator for HugePages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() < Self::THRESHOLD || layout.align() > HUGE_PAGE {
            return Global.allocate(layout);
        }
        let len = mapped_len(layout.size()).ok_or(AllocError)?;
        let base = map_huge(len).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(base, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() < Self::THRESHOLD || layout.align() > HUGE_PAGE {
            // SAFETY: the caller passes a block `allocate` made with this layout, which by the
            // same rule came from `Global`.
            unsafe { Global.deallocate(ptr, layout) };
            return;
        }
        if let Some(len) = mapped_len(layout.size()) {
            // SAFETY: `ptr` is the start of a mapping of exactly `len` bytes made by
            // `map_huge` for this layout, and the caller no longer uses it.
            unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::vec::Vec;

    #[test]
    fn large_blocks_are_aligned_zeroed_and_writable() {
        let count = 3 * HUGE_PAGE / 8 + 5;
        let mut values: Vec<u64, HugePages> = Vec::with_capacity_in(count, HugePages);
        assert_eq!(values.as_ptr() as usize % HUGE_PAGE, 0);
        values.resize(count, 7);
        assert!(values.iter().all(|&value| value == 7));
        values[count - 1] = 9;
        assert_eq!(values[count - 1], 9);
    }

    #[test]
    fn small_blocks_come_from_the_global_allocator() {
        let mut values: Vec<u8, HugePages> = Vec::with_capacity_in(64, HugePages);
        values.extend_from_slice(&[1, 2, 3]);
        assert_eq!(&values[..], &[1, 2, 3]);
    }

    #[test]
    fn a_table_in_huge_pages_works_like_any_other() {
        let mut table = hashbrown::HashTable::with_capacity_in(1 << 18, HugePages);
        let hash = |value: &u32| u64::from(*value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for value in 0..10_000u32 {
            table.insert_unique(hash(&value), value, hash);
        }
        for value in 0..10_000u32 {
            assert_eq!(table.find(hash(&value), |v| *v == value), Some(&value));
        }
    }
}
