//! What an operation changed: the flush it owes and the table frames it released.
//!
//! Page-table operations never flush the TLB themselves. Each returns a [`PendingFlush`]
//! describing the translations that may still be cached; the caller hands it to a
//! [`FlushHook`] (the `machvm-tlb` crate implements one, or a kernel's own code), which
//! returns the [`FreedTables`] that only then may go back to the frame allocator. A hardware
//! walker may still hold a pointer to a freed table until the flush completes, so freeing it
//! earlier would let the walker read a reused frame.

use core::sync::atomic::{AtomicU64, Ordering};

use machvm_addr::{
    FrameAllocator, FrameRequest, PageSize, PhysAddr, PhysMapper, VaWidth, VirtAddr,
};

use crate::error::PageTableError;

/// The translations that must be invalidated: `[start, start + len)`, made of pages of at
/// least `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushRange {
    /// First virtual address whose translation changed.
    pub start: VirtAddr,
    /// Length of the range in bytes.
    pub len: u64,
    /// The smallest page size among the changed entries (the step of per-page invalidation).
    pub stride: PageSize,
    /// Number of leaf entries (pages or blocks) that changed.
    pub entries: u64,
    /// Only leaf entries changed: no table was unlinked, so walk caches of intermediate
    /// levels stay valid (aarch64 may use the last-level TLBI forms).
    pub leaf_only: bool,
}

/// Performs TLB maintenance on behalf of page-table operations.
///
/// Implementations issue the architecture's barriers and invalidations (and, on SMP, a
/// shootdown to the CPUs that may cache the table's translations).
pub trait FlushHook {
    /// Makes entries written so far visible to the hardware table walker before they are
    /// relied on (aarch64: `DSB ISHST`; x86_64: nothing). No invalidation is needed: the entries
    /// were invalid before.
    fn sync(&mut self);

    /// Invalidates every cached translation (and, unless `range.leaf_only`, every cached
    /// intermediate-table entry) for `range`, and waits until that is complete on every CPU
    /// that may use the table. Entries written before the call are visible to walkers after it.
    fn invalidate(&mut self, range: &FlushRange);
}

/// A [`FlushHook`] that does nothing: for tables no CPU uses (being built, or host
/// simulation without a TLB model).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoFlush;

impl FlushHook for NoFlush {
    fn sync(&mut self) {}
    fn invalidate(&mut self, _range: &FlushRange) {}
}

/// A [`FlushHook`] that only counts what it is asked to do (for tests and statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountingFlush {
    /// Calls to [`FlushHook::sync`].
    pub syncs: u64,
    /// Calls to [`FlushHook::invalidate`].
    pub invalidations: u64,
    /// Leaf entries covered by those invalidations.
    pub entries: u64,
    /// The last range invalidated.
    pub last: Option<FlushRange>,
}

impl FlushHook for CountingFlush {
    fn sync(&mut self) {
        self.syncs += 1;
    }

    fn invalidate(&mut self, range: &FlushRange) {
        self.invalidations += 1;
        self.entries += range.entries;
        self.last = Some(*range);
    }
}

/// Table frames unlinked by an operation, to be returned to the allocator after the flush.
///
/// The frames are chained through their first entry (a page-aligned address has bit 0 clear,
/// so a walker that still reaches the frame sees an invalid entry there). Release them with
/// [`release`](Self::release) (or [`PageTable::free_tables`](crate::PageTable::free_tables)).
#[must_use = "unlinked page-table frames leak unless released"]
#[derive(Debug, PartialEq, Eq)]
pub struct FreedTables {
    /// First frame of the chain (its raw address; meaningless while `count` is 0). Raw
    /// addresses rather than `Option<PhysAddr>` keep the record, which every operation
    /// returns, small.
    pub(crate) head: u64,
    /// Last frame of the chain (as `head`).
    pub(crate) tail: u64,
    pub(crate) count: u64,
    pub(crate) granule: PageSize,
}

impl FreedTables {
    pub(crate) const fn new(granule: PageSize) -> Self {
        Self {
            head: 0,
            tail: 0,
            count: 0,
            granule,
        }
    }

    /// Appends `other`'s frames; `link` writes the link from this chain's last frame to
    /// `other`'s first.
    pub(crate) fn append(&mut self, other: Self, link: impl FnOnce(u64, u64)) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.head = other.head;
        } else {
            link(self.tail, other.head);
        }
        self.tail = other.tail;
        self.count += other.count;
    }

    /// Returns the frames to `alloc`, reading the chain through `mapper`. Call it only after
    /// the flush that produced the list has completed.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::Mapper`] if a frame of the list is unreachable (frames after it
    ///   cannot be found and stay allocated);
    /// - [`PageTableError::FrameAllocation`] if `alloc` refused a frame (the rest are still
    ///   freed).
    #[inline]
    pub fn release<M: PhysMapper + ?Sized, A: FrameAllocator + ?Sized>(
        self,
        mapper: &M,
        alloc: &mut A,
    ) -> Result<(), PageTableError> {
        let mut result = Ok(());
        let mut next = PhysAddr::new_truncate(self.head);
        let request = FrameRequest::single(self.granule);
        for _ in 0..self.count {
            let frame = next;
            let ptr = mapper
                .phys_to_ptr(frame, 8)
                .map_err(PageTableError::Mapper)?;
            // SAFETY: the mapper made 8 bytes at `ptr` valid; `frame` is granule-aligned, so the
            // pointer is 8-byte aligned; table frames are only accessed atomically.
            let link = unsafe { &*ptr.as_ptr().cast::<AtomicU64>() }.load(Ordering::Relaxed);
            next = PhysAddr::new_truncate(link);
            // SAFETY: the frame was unlinked from its table and, by this method's contract,
            // the flush that made every walker forget it has completed.
            if let Err(e) = unsafe { alloc.deallocate(frame, request) } {
                result = result.and(Err(PageTableError::FrameAllocation(e)));
            }
        }
        result
    }

    /// Returns the number of table frames in the list.
    pub const fn len(&self) -> u64 {
        self.count
    }

    /// Returns whether the list is empty.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The TLB maintenance an operation owes, and the table frames it unlinked.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PhysAddr, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_page_table::{CountingFlush, PageAttrs, PageTable, Region, X86Pml4};
/// use machvm_addr::PageSize;
///
/// let sim = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let mut alloc = sim.frame_allocator();
/// let mut pt = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc)?;
/// let va = VirtAddr::new(0x4000_0000);
/// let attrs = PageAttrs::new(VmProt::READ | VmProt::WRITE);
/// let mapped = pt.map(va, PhysAddr::new(0x20_0000), PageSize::Size4KiB, &attrs, &mut alloc)?;
/// let mut hook = CountingFlush::default();
/// pt.finish(mapped, &mut hook, &mut alloc)?; // nothing to invalidate: only a sync
/// assert_eq!((hook.syncs, hook.invalidations), (1, 0));
///
/// let unmapped = pt.unmap_range(va, 0x1000, &mut hook, &mut alloc)?;
/// assert_eq!(unmapped.range().map(|r| r.entries), Some(1));
/// pt.finish(unmapped, &mut hook, &mut alloc)?; // invalidates, then frees the empty tables
/// assert_eq!(hook.invalidations, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "stale TLB entries remain until the pending flush is performed"]
#[derive(Debug, PartialEq, Eq)]
pub struct PendingFlush {
    pub(crate) start: u64,
    pub(crate) last: u64,
    pub(crate) entries: u64,
    pub(crate) stride: Option<PageSize>,
    pub(crate) leaf_only: bool,
    pub(crate) sync: bool,
    pub(crate) freed: FreedTables,
}

impl PendingFlush {
    #[inline]
    pub(crate) fn new(granule: PageSize) -> Self {
        Self {
            start: u64::MAX,
            last: 0,
            entries: 0,
            stride: None,
            leaf_only: true,
            sync: false,
            freed: FreedTables::new(granule),
        }
    }

    /// Records that the translations of `[va, va + len)` changed (`len > 0`, the range does
    /// not wrap), made of `entries` leaves of `size`.
    #[inline]
    pub(crate) fn add_range(&mut self, va: u64, len: u64, entries: u64, size: PageSize) {
        self.start = self.start.min(va);
        self.last = self.last.max(va.wrapping_add(len - 1));
        self.entries += entries;
        self.stride = Some(match self.stride {
            Some(s) if s < size => s,
            _ => size,
        });
    }

    /// Returns the range to invalidate, or `None` if no valid translation changed.
    #[inline]
    pub fn range(&self) -> Option<FlushRange> {
        let stride = self.stride?;
        Some(FlushRange {
            start: VirtAddr::new_truncate(self.start, VaWidth::WIDEST),
            len: self.last.wrapping_sub(self.start).wrapping_add(1),
            stride,
            entries: self.entries,
            leaf_only: self.leaf_only,
        })
    }

    /// Returns whether new entries were written that the walker must be made to see.
    pub const fn needs_sync(&self) -> bool {
        self.sync
    }

    /// Returns the table frames waiting for the flush.
    pub const fn freed_tables(&self) -> &FreedTables {
        &self.freed
    }

    /// Returns whether nothing is owed: no translation changed and no table was freed.
    pub const fn is_empty(&self) -> bool {
        self.stride.is_none() && !self.sync && self.freed.count == 0
    }

    /// Performs the flush through `hook` and returns the table frames that may now be freed.
    #[inline]
    pub fn flush<H: FlushHook + ?Sized>(self, hook: &mut H) -> FreedTables {
        if let Some(range) = self.range() {
            hook.invalidate(&range);
        } else if self.sync || self.freed.count != 0 {
            hook.sync();
        }
        self.freed
    }
}
