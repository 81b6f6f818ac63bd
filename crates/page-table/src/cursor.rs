//! Batches of single-page operations that share one pending flush.
//!
//! A kernel that maps or unmaps pages one at a time (a fault handler filling a run, `fork`
//! copying entries, `munmap` of a sparse region) pays, per call of [`PageTable::map`] /
//! [`PageTable::unmap`], for a fresh [`PendingFlush`], its completion and an emptiness scan of
//! the leaf table. A [`Cursor`] keeps the leaf table it reached, accumulates one
//! [`PendingFlush`] for the whole batch, and checks a leaf table for emptiness once, when it
//! moves to another table or the batch ends, instead of after every page.

use machvm_addr::{FrameAllocator, PageSize, PhysAddr, PhysMapper, VirtAddr};

use crate::attrs::PageAttrs;
use crate::error::PageTableError;
use crate::flush::PendingFlush;
use crate::format::{Format, Geo};
use crate::table::{Bounds, Mapping, PageTable, Translation};

/// `Held::key` when the cursor holds no leaf table (walk addresses are below 2^57, so no key
/// reaches it).
const NO_LEAF: u64 = u64::MAX;

/// A batch of single-page operations on a [`PageTable`], created by [`PageTable::cursor`].
///
/// Every operation has the semantics, checks and errors of the [`PageTable`] method of the
/// same name, with two differences: the flush each one owes is added to the batch's
/// [`PendingFlush`] (returned by [`PageTable::cursor`]), and a leaf table that unmapping left
/// empty is unlinked when the cursor moves to another leaf table or the batch ends.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_page_table::{CountingFlush, PageAttrs, PageTable, Region, X86Pml4};
///
/// let sim = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let mut alloc = sim.frame_allocator();
/// let mut pt = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc)?;
/// let attrs = PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true);
/// let base = 0x4000_0000u64;
///
/// // Map 16 pages one by one, in one batch.
/// let (mapped, pending) = pt.cursor(&mut alloc, |c| {
///     (0..16u64).try_for_each(|i| {
///         let (va, pa) = (VirtAddr::new(base + i * 0x1000), PhysAddr::new(0x8_0000 + i * 0x1000));
///         c.map(va, pa, PageSize::Size4KiB, &attrs)
///     })
/// });
/// mapped?;
/// let mut hook = CountingFlush::default();
/// pt.finish(pending, &mut hook, &mut alloc)?;
///
/// // Unmap them again; the emptied tables are freed after the batch's one flush.
/// let (unmapped, pending) = pt.cursor(&mut alloc, |c| {
///     (0..16u64).map(|i| c.unmap(VirtAddr::new(base + i * 0x1000))).collect::<Result<Vec<_>, _>>()
/// });
/// assert_eq!(unmapped?.len(), 16);
/// assert_eq!(pending.range().map(|r| r.entries), Some(16));
/// assert_eq!(pending.freed_tables().len(), 3);
/// pt.finish(pending, &mut hook, &mut alloc)?;
/// assert_eq!(hook.invalidations, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Cursor<'a, F: Format, M: PhysMapper, A: FrameAllocator + ?Sized> {
    pt: &'a mut PageTable<F, M>,
    alloc: &'a mut A,
    /// The batch's flush, except the granule pages the fast path cleared (in `held`).
    pending: &'a mut PendingFlush,
    /// Scalar state of the fast path. Slow paths get it by value and return it, so no call
    /// sees its address and the compiler keeps it in registers across a caller's loop.
    held: Held,
    /// The table's region bounds, copied so that the checks need no load from the table.
    bounds: Bounds,
}

/// The leaf table a cursor holds and the granule pages it cleared in it.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Walk address bits above the leaf table ([`NO_LEAF`] for none).
    key: u64,
    /// The leaf (level-0) table.
    table: PhysAddr,
    /// Virtual address of the lowest granule page cleared through the fast path so far (in
    /// any table), `u64::MAX` if none.
    start: u64,
    /// Last byte of the highest such page.
    last: u64,
    /// Number of such pages.
    entries: u64,
    /// `entries` when the cursor reached `table`: if it grew, `table` may have become empty.
    /// (A count rather than a flag keeps the fast path to one increment.)
    entries_at_take: u64,
    /// Pages the fast path mapped (they owe the walker a sync).
    mapped: u64,
}

impl Held {
    const NONE: Self = Self {
        key: NO_LEAF,
        table: PhysAddr::zero(),
        start: u64::MAX,
        last: 0,
        entries: 0,
        entries_at_take: 0,
        mapped: 0,
    };

    /// Records that the granule page at `va` was cleared in the held table.
    #[inline(always)]
    fn cleared_page(&mut self, va: u64, granule: u64) {
        self.start = self.start.min(va);
        self.last = self.last.max(va + (granule - 1));
        self.entries += 1;
    }

    /// Makes `table` (for walk addresses with `key`) the held table.
    #[inline(always)]
    fn take(&mut self, key: u64, table: PhysAddr) {
        self.key = key;
        self.table = table;
        self.entries_at_take = self.entries;
    }
}

impl<F: Format, M: PhysMapper, A: FrameAllocator + ?Sized> core::fmt::Debug
    for Cursor<'_, F, M, A>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cursor")
            .field("table", &self.pt)
            .field("pending", &self.pending)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl<F: Format, M: PhysMapper> PageTable<F, M> {
    /// Runs `batch` with a [`Cursor`] over this table and returns its result together with
    /// the flush owed by everything the batch changed (including the table frames it
    /// unlinked).
    ///
    /// The flush is returned even when `batch` stops early or reports an error: the
    /// operations that succeeded before stay done and owe their flush.
    #[must_use = "the pending flush carries stale translations and unlinked table frames"]
    #[inline]
    pub fn cursor<A: FrameAllocator + ?Sized, R>(
        &mut self,
        alloc: &mut A,
        batch: impl FnOnce(&mut Cursor<'_, F, M, A>) -> R,
    ) -> (R, PendingFlush) {
        let mut pending = PendingFlush::new(F::GRANULE);
        let bounds = self.bounds;
        let mut cursor = Cursor {
            pt: self,
            alloc,
            pending: &mut pending,
            held: Held::NONE,
            bounds,
        };
        let result = batch(&mut cursor);
        let held = cursor.held;
        Cursor::<F, M, A>::leave(cursor.pt, cursor.pending, held);
        if held.mapped != 0 {
            pending.sync = true;
        }
        if held.entries != 0 {
            pending.add_range(
                held.start,
                held.last - held.start + 1,
                held.entries,
                F::GRANULE,
            );
        }
        (result, pending)
    }
}

impl<F: Format, M: PhysMapper, A: FrameAllocator + ?Sized> Cursor<'_, F, M, A> {
    /// Maps one page or block of `size` at `va` to `pa`, as [`PageTable::map`].
    ///
    /// # Errors
    ///
    /// As [`PageTable::map`]; a failed call changes nothing.
    #[inline]
    pub fn map(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        size: PageSize,
        attrs: &PageAttrs,
    ) -> Result<(), PageTableError> {
        let (w, level, entry) = PageTable::<F, M>::check_map(self.bounds, va, pa, size, attrs)?;
        let key = w >> Geo::<F>::shift(1);
        if level == 0 && key == self.held.key {
            self.pt.store_new_leaf(self.held.table, w, entry)?;
            self.held.mapped += 1;
            return Ok(());
        }
        let (held, result) = Self::map_slow(
            self.pt,
            self.alloc,
            self.pending,
            self.held,
            w,
            level,
            entry,
        );
        self.held = held;
        result
    }

    /// The rest of [`map`](Self::map): a level-0 page outside the held table (which the
    /// cursor lets go of and replaces), or a block.
    ///
    /// The state comes back beside the result, not inside it: a `Result<Held, _>` would make
    /// the compiler split `Held`'s fields around the error's bytes in the caller's loop.
    #[inline(never)]
    fn map_slow(
        pt: &mut PageTable<F, M>,
        alloc: &mut A,
        pending: &mut PendingFlush,
        mut held: Held,
        w: u64,
        level: u8,
        entry: u64,
    ) -> (Held, Result<(), PageTableError>) {
        if level == 0 {
            held = Self::leave(pt, pending, held);
        }
        match pt.install_leaf(w, level, entry, alloc) {
            Ok(table) => {
                pending.sync = true;
                if level == 0 {
                    held.take(w >> Geo::<F>::shift(1), table);
                }
                (held, Ok(()))
            }
            Err(e) => (held, Err(e)),
        }
    }

    /// Unmaps the page or block that starts at `va` and returns it, as [`PageTable::unmap`]
    /// (the entry is swapped out, so the accessed/dirty state is exact).
    ///
    /// # Errors
    ///
    /// As [`PageTable::unmap`]; a failed call changes nothing.
    #[inline]
    pub fn unmap(&mut self, va: VirtAddr) -> Result<Mapping, PageTableError> {
        let (w, _) = PageTable::<F, M>::walk_range_in(self.bounds, va, 1)?;
        if w >> Geo::<F>::shift(1) == self.held.key {
            let mapping = self
                .pt
                .take_leaf(self.held.table, w, va.as_u64(), 0, F::GRANULE)?;
            self.held.cleared_page(va.as_u64(), F::GRANULE.bytes());
            return Ok(mapping);
        }
        let (held, result) = Self::unmap_slow(self.pt, self.pending, self.held, w, va.as_u64());
        self.held = held;
        result
    }

    /// Unmaps the page or block that starts at `va` and returns the frame it mapped and its
    /// size, without reading its accessed/dirty state.
    ///
    /// The entry is read and then cleared with a plain store (no locked read-modify-write):
    /// accessed/dirty bits that another CPU's walker sets in between are lost. Use it where
    /// the page's contents are thrown away (anonymous memory being freed, a table no CPU
    /// runs); use [`unmap`](Self::unmap) where the dirty state decides a write-back. This is
    /// the single-page counterpart of [`PageTable::unmap_range`], which discards the same way.
    ///
    /// # Errors
    ///
    /// As [`PageTable::unmap`]; a failed call changes nothing.
    #[inline]
    pub fn unmap_discard(&mut self, va: VirtAddr) -> Result<(PhysAddr, PageSize), PageTableError> {
        let (w, _) = PageTable::<F, M>::walk_range_in(self.bounds, va, 1)?;
        if w >> Geo::<F>::shift(1) == self.held.key {
            let pa = self
                .pt
                .discard_leaf(self.held.table, w, va.as_u64(), 0, F::GRANULE)?;
            self.held.cleared_page(va.as_u64(), F::GRANULE.bytes());
            return Ok((pa, F::GRANULE));
        }
        let (held, result) = Self::unmap_slow(self.pt, self.pending, self.held, w, va.as_u64());
        self.held = held;
        result.map(|m| (m.pa, m.size))
    }

    /// The rest of an unmap: a leaf outside the held table (which the cursor lets go of), found
    /// by a walk; a level-0 leaf's table becomes the held one.
    #[inline(never)]
    fn unmap_slow(
        pt: &mut PageTable<F, M>,
        pending: &mut PendingFlush,
        held: Held,
        w: u64,
        va: u64,
    ) -> (Held, Result<Mapping, PageTableError>) {
        let mut held = Self::leave(pt, pending, held);
        let Ok(leaf) = pt.walk_leaf(w) else {
            return (held, Err(PageTableError::NotMapped { va }));
        };
        let mapping = match pt.take_leaf(leaf.table, w, va, leaf.level, leaf.size) {
            Ok(mapping) => mapping,
            Err(e) => return (held, Err(e)),
        };
        if leaf.level == 0 {
            held.take(w >> Geo::<F>::shift(1), leaf.table);
            held.cleared_page(va, leaf.size.bytes());
        } else {
            pt.cleared_leaf(w, leaf.table, leaf.level, leaf.size, pending);
        }
        (held, Ok(mapping))
    }

    /// Translates `va`, as [`PageTable::translate`] (it sees the batch's changes so far).
    ///
    /// # Errors
    ///
    /// As [`PageTable::translate`].
    #[inline]
    pub fn translate(&self, va: VirtAddr) -> Result<Translation, PageTableError> {
        self.pt.translate(va)
    }

    /// Lets go of the leaf table `held` names, unlinking it (and the ancestors that become
    /// empty with it) into `pending` if unmapping left it empty; keeps the accumulated range.
    #[inline(never)]
    fn leave(pt: &mut PageTable<F, M>, pending: &mut PendingFlush, mut held: Held) -> Held {
        if held.entries != held.entries_at_take && pt.is_empty_except(pt.table(held.table), 0, 0, 0)
        {
            // Tables are unlinked: the table's own single-page cache may name one.
            pt.leaf_cache = None;
            pt.unlink_empty(held.key << Geo::<F>::shift(1), 0, pending);
        }
        held.key = NO_LEAF;
        held
    }
}

#[cfg(test)]
mod tests {
    use machvm_addr::{PageSize, PhysAddr, SimFrameAllocator, SimPhysMemory, VirtAddr, VmProt};

    use crate::{CountingFlush, PageAttrs, PageTable, PageTableError, Region, X86Pml4};

    const BASE: u64 = 0x7f00_0000_0000;

    fn rw() -> PageAttrs {
        PageAttrs::new(VmProt::READ | VmProt::WRITE)
    }

    fn table(sim: &SimPhysMemory) -> (PageTable<X86Pml4, &SimPhysMemory>, SimFrameAllocator<'_>) {
        let mut alloc = sim.frame_allocator();
        let pt = PageTable::new(Region::Both, sim, &mut alloc).unwrap();
        (pt, alloc)
    }

    #[test]
    fn cursor_maps_and_unmaps_across_leaf_tables() {
        let sim = SimPhysMemory::builder()
            .size_bytes(1 << 20)
            .build()
            .unwrap();
        let (mut pt, mut alloc) = table(&sim);
        let before = sim.frames_in_use();
        // 3 leaf tables: 0x1ff.. crosses a 2 MiB boundary twice.
        let pages: u64 = 1024 + 2;
        let start = BASE + (2 << 20) - 0x1000;
        let (r, pending) = pt.cursor(&mut alloc, |c| {
            (0..pages).try_for_each(|i| {
                c.map(
                    VirtAddr::new(start + i * 0x1000),
                    PhysAddr::new(0x1000_0000 + i * 0x1000),
                    PageSize::Size4KiB,
                    &rw(),
                )
            })
        });
        r.unwrap();
        assert!(pending.needs_sync() && pending.range().is_none());
        let mut hook = CountingFlush::default();
        pt.finish(pending, &mut hook, &mut alloc).unwrap();
        assert_eq!(sim.frames_in_use() - before, 2 + 4);
        let t = pt
            .translate(VirtAddr::new(start + 700 * 0x1000 + 5))
            .unwrap();
        assert_eq!(t.pa, PhysAddr::new(0x1000_0000 + 700 * 0x1000 + 5));

        // Mapping again fails and changes nothing; the cursor reports it.
        let (r, pending) = pt.cursor(&mut alloc, |c| {
            c.map(
                VirtAddr::new(start + 0x1000),
                PhysAddr::new(0),
                PageSize::Size4KiB,
                &rw(),
            )
        });
        assert_eq!(r, Err(PageTableError::AlreadyMapped { va: start + 0x1000 }));
        assert!(pending.is_empty());
        pt.finish(pending, &mut hook, &mut alloc).unwrap();

        // Unmap backwards (the cursor moves between tables in the other direction).
        let (r, pending) = pt.cursor(&mut alloc, |c| {
            (0..pages).rev().try_for_each(|i| {
                let m = c.unmap(VirtAddr::new(start + i * 0x1000))?;
                assert_eq!(m.pa, PhysAddr::new(0x1000_0000 + i * 0x1000));
                Ok::<_, PageTableError>(())
            })
        });
        r.unwrap();
        let range = pending.range().unwrap();
        assert_eq!(range.start.as_u64(), start);
        assert_eq!(range.len, pages * 0x1000);
        assert_eq!(range.entries, pages);
        assert!(!range.leaf_only);
        assert_eq!(pending.freed_tables().len(), 2 + 4);
        pt.finish(pending, &mut hook, &mut alloc).unwrap();
        assert_eq!(sim.frames_in_use(), before);
        assert!(pt.translate(VirtAddr::new(start)).is_err());
    }

    #[test]
    fn cursor_unmap_errors_change_nothing() {
        let sim = SimPhysMemory::builder()
            .size_bytes(1 << 20)
            .build()
            .unwrap();
        let (mut pt, mut alloc) = table(&sim);
        let done = pt
            .map_range(
                VirtAddr::new(BASE),
                PhysAddr::new(0x20_0000),
                4 << 20,
                &rw(),
                PageSize::Size2MiB,
                &mut alloc,
            )
            .unwrap();
        pt.finish(done, &mut crate::NoFlush, &mut alloc).unwrap();
        let (r, pending) = pt.cursor(&mut alloc, |c| {
            // Inside a 2 MiB block, not its start.
            let inside = c.unmap(VirtAddr::new(BASE + 0x1000));
            // Nothing mapped there.
            let hole = c.unmap(VirtAddr::new(BASE + (8 << 20)));
            // The block itself.
            let block = c.unmap(VirtAddr::new(BASE + (2 << 20)));
            (inside, hole, block)
        });
        assert!(matches!(r.0, Err(PageTableError::NotMapped { .. })));
        assert!(matches!(r.1, Err(PageTableError::NotMapped { .. })));
        let block = r.2.unwrap();
        assert_eq!(block.size, PageSize::Size2MiB);
        assert_eq!(block.pa, PhysAddr::new(0x40_0000));
        let range = pending.range().unwrap();
        assert_eq!(
            (range.start.as_u64(), range.len),
            (BASE + (2 << 20), 2 << 20)
        );
        pt.finish(pending, &mut crate::NoFlush, &mut alloc).unwrap();
        assert_eq!(
            pt.translate(VirtAddr::new(BASE + 0x1234)).unwrap().pa,
            PhysAddr::new(0x20_1234)
        );
    }
}
