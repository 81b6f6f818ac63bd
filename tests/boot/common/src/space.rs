//! An address space as a kernel would keep one: a `machvm-page-table` table, the frame pool
//! its tables come from, and the TLB operations that flush its edits.
//!
//! Every edit goes the same way: the page-table operation returns a `PendingFlush`, and
//! [`PageTable::finish`] hands it to a [`TlbFlush`] hook (`machvm-tlb`'s `FlushHook`), which
//! invalidates what changed for this space's ASID and only then lets the unlinked table frames
//! go back to the pool.

use machvm_addr::{
    FrameAllocator, FrameRequest, IdentityMapper, PageSize, PhysAddr, VirtAddr, VmProt,
};
use machvm_page_table::{Format, PageAttrs, PageTable, PageTableError, PendingFlush, Region};
use machvm_sync::Mutex;
use machvm_tlb::gather::FlushOutcome;
use machvm_tlb::{Asid, TlbFlush, TlbOps};

use crate::pool::FramePool;

/// Read-write, non-global kernel data: the attributes of every test page.
pub const DATA: PageAttrs = PageAttrs::new(VmProt::READ.union(VmProt::WRITE));

/// One page table with its frame pool, TLB operations and ASID.
#[derive(Debug)]
pub struct AddressSpace<'a, F: Format, T: TlbOps> {
    /// The table. Locked only briefly (never across a probe), so the demand hook can take it.
    pub pt: Mutex<PageTable<F, IdentityMapper>>,
    /// The frame pool tables and test frames come from (shared between address spaces).
    pub pool: &'a Mutex<FramePool>,
    /// The TLB operations of this CPU.
    pub tlb: &'a T,
    /// The ASID (PCID) this space's non-global translations are tagged with.
    pub asid: Asid,
}

impl<'a, F: Format, T: TlbOps> AddressSpace<'a, F, T> {
    /// Creates an empty address space for `region`, with tables from `pool`.
    ///
    /// # Errors
    ///
    /// What [`PageTable::new`] returns.
    pub fn new(
        region: Region,
        pool: &'a Mutex<FramePool>,
        tlb: &'a T,
        asid: Asid,
    ) -> Result<Self, PageTableError> {
        // SAFETY: the kernels keep every pool frame (the only frames tables are built from)
        // identity-mapped, and run with the MMU off or on tables that identity-map the pool.
        let mapper = unsafe { IdentityMapper::new() };
        let pt = PageTable::new(region, mapper, &mut *pool.lock())?;
        Ok(Self {
            pt: Mutex::new(pt),
            pool,
            tlb,
            asid,
        })
    }

    /// Wraps a table built earlier (for example before the MMU was on, with `NoFlush`).
    pub fn from_table(
        pt: PageTable<F, IdentityMapper>,
        pool: &'a Mutex<FramePool>,
        tlb: &'a T,
        asid: Asid,
    ) -> Self {
        Self {
            pt: Mutex::new(pt),
            pool,
            tlb,
            asid,
        }
    }

    /// Returns the value for the root register (CR3 / TTBRn) with this space's ASID.
    pub fn root_register(&self) -> u64 {
        self.pt.lock().root_register(self.asid.as_u16())
    }

    /// Completes `pending` through the `TlbFlush` hook for `asid` and returns what it issued.
    ///
    /// # Errors
    ///
    /// What [`PageTable::finish`] returns (freeing the unlinked tables).
    pub fn finish_as(
        &self,
        pt: &PageTable<F, IdentityMapper>,
        pending: PendingFlush,
        asid: Asid,
    ) -> Result<FlushOutcome, PageTableError> {
        let mut hook = TlbFlush::new(self.tlb, asid);
        pt.finish(pending, &mut hook, &mut *self.pool.lock())?;
        Ok(hook.outcome())
    }

    /// Completes `pending` (see [`finish_as`](Self::finish_as)) for this space's ASID.
    ///
    /// # Errors
    ///
    /// What [`PageTable::finish`] returns.
    pub fn finish(
        &self,
        pt: &PageTable<F, IdentityMapper>,
        pending: PendingFlush,
    ) -> Result<FlushOutcome, PageTableError> {
        self.finish_as(pt, pending, self.asid)
    }

    /// Maps `[va, va + len)` to `[pa, pa + len)` with `attrs` (pages up to `largest`) and
    /// flushes.
    ///
    /// # Errors
    ///
    /// What [`PageTable::map_range`] returns.
    pub fn map_range(
        &self,
        va: u64,
        pa: u64,
        len: u64,
        attrs: &PageAttrs,
        largest: PageSize,
    ) -> Result<FlushOutcome, PageTableError> {
        let mut pt = self.pt.lock();
        let pending = {
            let mut pool = self.pool.lock();
            pt.map_range(
                VirtAddr::new(va),
                PhysAddr::new(pa),
                len,
                attrs,
                largest,
                &mut *pool,
            )?
        };
        let asid = if attrs.is_global() {
            Asid::KERNEL
        } else {
            self.asid
        };
        self.finish_as(&pt, pending, asid)
    }

    /// Maps one page or block of `size` and flushes.
    ///
    /// # Errors
    ///
    /// What [`PageTable::map`] returns.
    pub fn map(
        &self,
        va: u64,
        pa: u64,
        size: PageSize,
        attrs: &PageAttrs,
    ) -> Result<FlushOutcome, PageTableError> {
        let mut pt = self.pt.lock();
        let pending = pt.map(
            VirtAddr::new(va),
            PhysAddr::new(pa),
            size,
            attrs,
            &mut *self.pool.lock(),
        )?;
        self.finish(&pt, pending)
    }

    /// Unmaps `[va, va + len)` and flushes; returns what the flush issued.
    ///
    /// # Errors
    ///
    /// What [`PageTable::unmap_range`] returns.
    pub fn unmap_range(&self, va: u64, len: u64) -> Result<FlushOutcome, PageTableError> {
        self.unmap_range_as(va, len, self.asid)
    }

    /// Unmaps `[va, va + len)` and flushes as address space `asid` ([`Asid::KERNEL`] for
    /// global mappings); returns what the final flush issued.
    ///
    /// # Errors
    ///
    /// What [`PageTable::unmap_range`] returns.
    pub fn unmap_range_as(
        &self,
        va: u64,
        len: u64,
        asid: Asid,
    ) -> Result<FlushOutcome, PageTableError> {
        let mut pt = self.pt.lock();
        let mut hook = TlbFlush::new(self.tlb, asid);
        let pending = pt.unmap_range(VirtAddr::new(va), len, &mut hook, &mut *self.pool.lock())?;
        let before = hook.outcome();
        pt.finish(pending, &mut hook, &mut *self.pool.lock())?;
        let after = hook.outcome();
        // Report only the final flush (break-before-make inside the unmap, if any, flushed
        // through the same hook before it).
        let mut out = FlushOutcome::default();
        out.pages = after.pages - before.pages;
        out.ranges = after.ranges - before.ranges;
        out.full = after.full - before.full;
        out.synced = after.synced;
        Ok(out)
    }

    /// Allocates one granule frame, fills it with `pattern` (every `u64`), and returns its
    /// physical address.
    pub fn frame_with(&self, pattern: u64) -> u64 {
        let frame = crate::must!(
            self.pool.lock().allocate(FrameRequest::single(F::GRANULE)),
            "allocating a test frame"
        )
        .as_u64();
        fill(frame, F::GRANULE.bytes(), pattern);
        frame
    }

    /// Returns a frame from [`frame_with`](Self::frame_with) to the pool.
    pub fn free_frame(&self, frame: u64) {
        // SAFETY: the frame came from `frame_with` and its mapping was removed and flushed by
        // the caller.
        let _ = unsafe {
            self.pool
                .lock()
                .deallocate(PhysAddr::new(frame), FrameRequest::single(F::GRANULE))
        };
    }
}

/// Writes `pattern` to every `u64` of the identity-mapped `[pa, pa + len)`.
pub fn fill(pa: u64, len: u64, pattern: u64) {
    for off in (0..len).step_by(8) {
        // SAFETY: callers pass pool frames they own, which are identity-mapped read-write.
        unsafe { core::ptr::write_volatile((pa + off) as *mut u64, pattern) };
    }
}

/// Reads the `u64` at identity-mapped `pa`.
pub fn peek(pa: u64) -> u64 {
    // SAFETY: callers pass addresses inside identity-mapped kernel memory.
    unsafe { core::ptr::read_volatile(pa as *const u64) }
}
