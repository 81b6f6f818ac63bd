//! The anchors machvm's page tables are compared with, and what they share: the simulated
//! physical memory ([`PhysMem`]), the address layout of every case, and the [`Driver`] trait
//! through which `page_table.rs` runs each case on each anchor.
//!
//! Fairness (see `shared/notes/anchor-crates.md`): every implementation takes its table frames
//! from the same [`PhysMem`], a pre-faulted host buffer handed out 4 KiB at a time; the pages it
//! maps point at physical addresses outside that buffer that are never dereferenced; no TLB
//! maintenance runs for anyone (`MapperFlush::ignore()` for `x86_64`, `page_table_multiarch`
//! flushes only on `target_os = "none"`, aarch64-paging's TLBI only exists on aarch64 and only
//! for an active `Mapping`).

pub mod aarch64_paging;
pub mod machvm;
pub mod page_table_multiarch;
pub mod x86_64;

use core::ptr::NonNull;
use std::sync::OnceLock;

use machvm_addr::{FrameRequest, PageSize, PhysAddr, PhysMapper, SimPhysMemory};

/// Bytes in a base page.
pub const PAGE: u64 = 4096;
/// Pages in the 64 MiB run of most cases.
pub const PAGES: u64 = 16384;
/// Bytes in the 64 MiB run.
pub const RANGE: u64 = PAGES * PAGE;
/// First virtual address of every run: a 1 GiB-aligned user address (lower half for both
/// x86_64 and aarch64 `TTBR0` with a 48-bit VA space).
pub const VA_BASE: u64 = 0x0000_5555_4000_0000;
/// Physical address `VA_BASE` maps to; 1 GiB-aligned, outside [`PhysMem`], never dereferenced.
pub const TARGET_PA: u64 = 0x0000_0001_0000_0000;
/// Physical address of the first byte of the simulated memory that holds the tables.
pub const SIM_BASE: u64 = 0x4000_0000;
/// Size of the simulated memory: room for the tables of 1 GiB of 4 KiB pages (513 frames) with
/// plenty to spare, a few live tables at once included.
pub const SIM_SIZE: u64 = 16 << 20;
/// Table frames a 4-level format needs for the 64 MiB run at `VA_BASE` in 4 KiB pages:
/// root, level 3, level 2 and 32 leaf tables.
pub const TABLES_64M_4K: u64 = 1 + 1 + 1 + RANGE / (2 << 20);

/// Returns the physical address `va` is mapped to by every case's mapping.
pub const fn expected_pa(va: u64) -> u64 {
    TARGET_PA + (va - VA_BASE)
}

/// The simulated physical memory all implementations allocate their tables from.
///
/// Zeroing: `SimPhysMemory` zeroes frames on allocation (its default), and that stays on.
/// aarch64-paging's `Translation::allocate_table` must return a zeroed page (it does not zero it
/// itself), while `x86_64` (`PageTable::zero` in `create_next_table`) and `page_table_multiarch`
/// (`write_bytes` in `alloc_table`) zero their own new tables. Keeping the allocator's zeroing on
/// gives every implementation the same zeroed frames from the same code; the two anchors that
/// zero again pay a few tenths of a nanosecond per mapped page for it (a second memset of
/// 35 x 4 KiB per 16384 pages).
#[derive(Debug)]
pub struct PhysMem {
    sim: SimPhysMemory,
    /// Host pointer to the byte at `SIM_BASE`.
    host: NonNull<u8>,
}

// SAFETY: `host` points into `sim`'s buffer, which is `Sync`; the pointer itself is only used
// to derive pointers to table frames, whose users synchronise through the implementations'
// `&mut` APIs. The benchmarks are single-threaded anyway.
unsafe impl Sync for PhysMem {}
// SAFETY: as for `Sync`; `SimPhysMemory` is `Send`.
unsafe impl Send for PhysMem {}

impl PhysMem {
    /// Returns the process-wide simulated memory, building and pre-faulting it on first use.
    pub fn get() -> &'static PhysMem {
        static MEM: OnceLock<PhysMem> = OnceLock::new();
        MEM.get_or_init(|| {
            let sim = SimPhysMemory::builder()
                .size_bytes(SIM_SIZE)
                .base(PhysAddr::new(SIM_BASE))
                .build()
                .expect("simulated memory");
            // Touch every frame once (allocation zeroes it) so no benchmark takes the host's
            // first-touch page faults inside its timing.
            let all = FrameRequest::new(PageSize::Size4KiB, SIM_SIZE / PAGE).expect("request");
            let start = sim.allocate(all).expect("pre-fault");
            // SAFETY: nothing uses the frames; they were only zeroed.
            unsafe { sim.deallocate(start, all) }.expect("pre-fault free");
            let host = sim
                .phys_to_ptr(PhysAddr::new(SIM_BASE), SIM_SIZE as usize)
                .expect("host pointer");
            PhysMem { sim, host }
        })
    }

    /// Returns the simulated memory itself (a `FrameAllocator` and `PhysMapper` through `&`).
    pub fn sim(&self) -> &SimPhysMemory {
        &self.sim
    }

    /// Allocates one zeroed 4 KiB table frame and returns its physical address.
    ///
    /// # Panics
    ///
    /// If the simulated memory is exhausted (a benchmark leaked tables).
    pub fn alloc_table(&self) -> u64 {
        self.sim
            .allocate(FrameRequest::single(PageSize::Size4KiB))
            .expect("simulated memory exhausted")
            .as_u64()
    }

    /// Frees a frame from [`alloc_table`](Self::alloc_table).
    ///
    /// # Safety
    ///
    /// Nothing uses the frame any more.
    ///
    /// # Panics
    ///
    /// If `pa` is not a live table frame (a driver bug).
    pub unsafe fn free_table(&self, pa: u64) {
        // SAFETY: forwarded from our caller.
        unsafe {
            self.sim
                .deallocate(PhysAddr::new(pa), FrameRequest::single(PageSize::Size4KiB))
        }
        .expect("free of a frame that is not a live table");
    }

    /// Returns the host pointer for physical address `pa` (which must lie in the memory for the
    /// pointer to be usable).
    #[inline]
    pub fn ptr(&self, pa: u64) -> *mut u8 {
        self.host
            .as_ptr()
            .wrapping_add(pa.wrapping_sub(SIM_BASE) as usize)
    }

    /// Returns the physical address of host pointer `ptr` into the memory.
    #[inline]
    pub fn pa_of(&self, ptr: *const u8) -> u64 {
        (ptr as u64).wrapping_sub(self.host.as_ptr() as u64) + SIM_BASE
    }

    /// Returns the offset with `host address = physical address + offset` (wrapping).
    pub fn offset(&self) -> u64 {
        (self.host.as_ptr() as u64).wrapping_sub(SIM_BASE)
    }

    /// Returns the number of 4 KiB frames allocated now.
    pub fn frames_in_use(&self) -> u64 {
        self.sim.frames_in_use()
    }
}

/// What a mapping looks like to the correctness checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Physical address the virtual address translates to.
    pub pa: u64,
    /// Whether the leaf entry allows writes.
    pub writable: bool,
}

/// One implementation driven in its fastest documented way for each case. Every method works on
/// `pages` 4 KiB pages from virtual address `va`; all panic if the implementation reports an
/// error, so a failing driver cannot report a fast time.
pub trait Driver: Sized {
    /// The criterion function id.
    const NAME: &'static str;
    /// Levels of the table (the 64 MiB run needs one table per level above the leaf tables).
    const LEVELS: u64 = 4;
    /// The address type [`translate`](Self::translate) takes, built outside the timing.
    type Va: Copy;

    /// Returns a fresh, empty table whose frames come from [`PhysMem::get`].
    fn new() -> Self;
    /// Converts a raw virtual address to [`Va`](Self::Va).
    fn va(va: u64) -> Self::Va;
    /// Maps the run with as few calls as the API allows (4 KiB pages, read-write user data).
    fn map_range(&mut self, va: u64, pa: u64, pages: u64);
    /// Maps the run with one call per page.
    fn map_single(&mut self, va: u64, pa: u64, pages: u64);
    /// Translates one address (the hot path of `translate_random`).
    fn translate(&self, va: Self::Va) -> Option<u64>;
    /// Unmaps the run with as few calls as the API allows.
    fn unmap_range(&mut self, va: u64, pages: u64);
    /// Unmaps the run with one call per page.
    fn unmap_single(&mut self, va: u64, pages: u64);
    /// Makes the run read-only with as few calls as the API allows.
    fn protect_range(&mut self, va: u64, pages: u64);
    /// Looks `va` up for the checks (not timed).
    fn lookup(&self, va: u64) -> Option<Lookup>;
}
