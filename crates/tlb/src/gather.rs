//! Flush batching: collect what page-table operations changed, flush once.
//!
//! Every page-table operation reports the translations it changed (a range, the smallest page
//! size in it, whether only leaf entries changed). A [`FlushGather`] collects these records
//! for one address space, merges overlapping and adjacent ones, and when asked to flush picks
//! the cheapest correct form:
//!
//! - nothing, or only a barrier, when no live translation changed;
//! - one invalidation per page while the pages to invalidate stay at or below the ceiling
//!   (default [`DEFAULT_CEILING`] = 33, the point where Linux also stops flushing page by page);
//! - above it, one range invalidation per merged range when the hardware has range
//!   instructions and few ranges, otherwise the whole address space (`invalidate_asid`, or
//!   `invalidate_all` for the kernel's global translations).

use machvm_addr::{PageSize, VaWidth, VirtAddr};

use crate::ops::{Asid, TlbOps};

/// Pages up to which a flush invalidates page by page.
pub const DEFAULT_CEILING: u64 = 33;

/// Distinct ranges a gather keeps before it merges everything into one covering range.
pub const MAX_RANGES: usize = 8;

/// The translations one page-table operation changed.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, VirtAddr};
/// use machvm_tlb::gather::FlushRecord;
///
/// let r = FlushRecord::new(VirtAddr::new(0x4000_0000), 0x3000, PageSize::Size4KiB);
/// assert_eq!(r.pages(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushRecord {
    /// First virtual address whose translation changed.
    pub start: VirtAddr,
    /// Length of the changed range in bytes.
    pub len: u64,
    /// Smallest page size among the changed entries: the step of per-page invalidation.
    pub stride: PageSize,
    /// Only leaf entries changed (no table was unlinked), so cached intermediate entries may
    /// stay (aarch64 last-level invalidations).
    pub leaf_only: bool,
}

impl FlushRecord {
    /// Returns a record of leaf changes in `[start, start + len)` made of `stride` pages.
    pub const fn new(start: VirtAddr, len: u64, stride: PageSize) -> Self {
        Self {
            start,
            len,
            stride,
            leaf_only: true,
        }
    }

    /// Returns the record with `leaf_only` set as given.
    #[must_use]
    pub const fn leaf_only(mut self, leaf_only: bool) -> Self {
        self.leaf_only = leaf_only;
        self
    }

    /// Returns the number of per-page invalidations this record needs: every `stride` page
    /// the range intersects.
    pub const fn pages(&self) -> u64 {
        if self.len == 0 {
            return 0;
        }
        let step = self.stride.bytes();
        let first = self.start.as_u64() / step;
        let last = (self.end() - 1) / step;
        last - first + 1
    }

    /// Exclusive end, saturating at the top of the address space.
    const fn end(&self) -> u64 {
        self.start.as_u64().saturating_add(self.len)
    }
}

/// How a gather's flush was carried out (returned by [`FlushGather::flush`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FlushOutcome {
    /// Per-page invalidations issued.
    pub pages: u64,
    /// Range invalidations issued.
    pub ranges: u64,
    /// Whole-address-space (or, for the kernel, whole-TLB) invalidations issued.
    pub full: u64,
    /// Whether a barrier was issued (always with invalidations, alone for new entries).
    pub synced: bool,
}

impl FlushOutcome {
    /// Returns the number of invalidation instructions (or instruction groups) issued.
    pub const fn operations(&self) -> u64 {
        self.pages + self.ranges + self.full
    }
}

/// Collects flush records for one address space and flushes them in one batch.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, VirtAddr};
/// use machvm_tlb::gather::{FlushGather, FlushRecord};
/// use machvm_tlb::{Asid, TlbCaps, TlbOps};
/// use std::cell::Cell;
///
/// /// Counts what it is asked to do.
/// #[derive(Default)]
/// struct Count { pages: Cell<u64>, asids: Cell<u64> }
/// impl TlbOps for Count {
///     fn caps(&self) -> TlbCaps { TlbCaps::new(false, false, true, 12) }
///     fn sync(&self) {}
///     fn invalidate_page(&self, _: Asid, _: VirtAddr, _: bool) { self.pages.set(self.pages.get() + 1) }
///     fn invalidate_asid(&self, _: Asid) { self.asids.set(self.asids.get() + 1) }
///     fn invalidate_all(&self) {}
///     fn complete(&self) {}
/// }
///
/// let mut gather = FlushGather::new(Asid::new(7));
/// // Three unmaps of neighbouring pages and one of the same page again: one 3-page flush.
/// for va in [0x1000, 0x2000, 0x3000, 0x2000] {
///     gather.add(FlushRecord::new(VirtAddr::new(va), 0x1000, PageSize::Size4KiB));
/// }
/// let ops = Count::default();
/// let done = gather.flush(&ops);
/// assert_eq!((done.pages, ops.pages.get()), (3, 3));
///
/// // 1000 pages: above the ceiling, so the whole ASID goes at once.
/// gather.add(FlushRecord::new(VirtAddr::new(0x10_0000), 1000 * 0x1000, PageSize::Size4KiB));
/// let done = gather.flush(&ops);
/// assert_eq!((done.full, ops.asids.get()), (1, 1));
/// ```
#[derive(Debug, Clone)]
pub struct FlushGather {
    asid: Asid,
    ceiling: u64,
    /// Disjoint ranges sorted by start (the first `len` are used).
    ranges: [FlushRecord; MAX_RANGES],
    len: usize,
    /// New entries were written: the walker must see them (a barrier) even without
    /// invalidations.
    needs_sync: bool,
}

impl FlushGather {
    /// Returns an empty gather for address space `asid` with the default ceiling.
    pub const fn new(asid: Asid) -> Self {
        Self::with_ceiling(asid, DEFAULT_CEILING)
    }

    /// Returns an empty gather that invalidates page by page up to `ceiling` pages.
    pub const fn with_ceiling(asid: Asid, ceiling: u64) -> Self {
        const EMPTY: FlushRecord = FlushRecord::new(VirtAddr::zero(), 0, PageSize::Size4KiB);
        Self {
            asid,
            ceiling,
            ranges: [EMPTY; MAX_RANGES],
            len: 0,
            needs_sync: false,
        }
    }

    /// Returns the address space this gather flushes.
    pub const fn asid(&self) -> Asid {
        self.asid
    }

    /// Returns whether nothing is owed.
    pub const fn is_empty(&self) -> bool {
        self.len == 0 && !self.needs_sync
    }

    /// Returns the ranges gathered so far (disjoint, sorted by address).
    pub fn ranges(&self) -> &[FlushRecord] {
        self.ranges.get(..self.len).unwrap_or(&[])
    }

    /// Returns the number of per-page invalidations the gathered ranges need.
    pub fn pages(&self) -> u64 {
        self.ranges()
            .iter()
            .fold(0u64, |n, r| n.saturating_add(r.pages()))
    }

    /// Records that new entries were written (they need a barrier, not an invalidation).
    pub fn add_sync(&mut self) {
        self.needs_sync = true;
    }

    /// Adds the translations of `record`; overlapping and adjacent ranges merge (keeping the
    /// smaller stride, and `leaf_only` only if both were). Empty records are ignored.
    pub fn add(&mut self, record: FlushRecord) {
        if record.len == 0 {
            return;
        }
        let mut merged = record;
        // Absorb every range that overlaps or touches `merged`, then insert it in order.
        let mut i = 0;
        while i < self.len {
            let r = self.ranges[i];
            if r.start.as_u64() <= merged.end() && merged.start.as_u64() <= r.end() {
                merged = Self::union(&merged, &r);
                self.remove(i);
            } else {
                i += 1;
            }
        }
        if self.len == MAX_RANGES {
            // Too many distinct ranges: one covering range (flushing more is always correct).
            let mut all = merged;
            for r in self.ranges() {
                all = Self::union(&all, r);
            }
            self.len = 1;
            self.ranges[0] = all;
            return;
        }
        let at = self
            .ranges()
            .iter()
            .position(|r| r.start.as_u64() > merged.start.as_u64())
            .unwrap_or(self.len);
        let mut j = self.len;
        while j > at {
            self.ranges[j] = self.ranges[j - 1];
            j -= 1;
        }
        self.ranges[at] = merged;
        self.len += 1;
    }

    fn union(a: &FlushRecord, b: &FlushRecord) -> FlushRecord {
        let start = a.start.as_u64().min(b.start.as_u64());
        let end = a.end().max(b.end());
        FlushRecord {
            start: VirtAddr::new_truncate(start, VaWidth::WIDEST),
            len: end - start,
            stride: if a.stride < b.stride {
                a.stride
            } else {
                b.stride
            },
            leaf_only: a.leaf_only && b.leaf_only,
        }
    }

    fn remove(&mut self, i: usize) {
        let mut k = i;
        while k + 1 < self.len {
            self.ranges[k] = self.ranges[k + 1];
            k += 1;
        }
        self.len -= 1;
    }

    /// Issues the gathered flush through `ops` (see the module docs for the forms it picks)
    /// and empties the gather.
    pub fn flush<T: TlbOps + ?Sized>(&mut self, ops: &T) -> FlushOutcome {
        let mut out = FlushOutcome::default();
        if self.is_empty() {
            return out;
        }
        ops.sync();
        out.synced = true;
        if self.len != 0 {
            let caps = ops.caps();
            if self.pages() <= self.ceiling {
                for r in self.ranges() {
                    let step = r.stride.bytes();
                    let mut page = r.start.as_u64() & !(step - 1);
                    while page < r.end() {
                        let va = VirtAddr::new_truncate(page, VaWidth::WIDEST);
                        ops.invalidate_page(self.asid, va, r.leaf_only);
                        out.pages += 1;
                        page = match page.checked_add(step) {
                            Some(next) => next,
                            None => break,
                        };
                    }
                }
            } else if caps.range && self.len <= MAX_RANGES / 2 {
                for r in self.ranges() {
                    ops.invalidate_range(self.asid, r.start, r.len, r.stride, r.leaf_only);
                    out.ranges += 1;
                }
            } else if self.asid == Asid::KERNEL {
                // Kernel mappings are global: only a full invalidation drops them.
                ops.invalidate_all();
                out.full += 1;
            } else {
                ops.invalidate_asid(self.asid);
                out.full += 1;
            }
        }
        ops.complete();
        self.len = 0;
        self.needs_sync = false;
        out
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use core::cell::RefCell;

    use super::*;
    use crate::ops::TlbCaps;

    /// Records every call.
    #[derive(Default)]
    struct Log {
        range: bool,
        calls: RefCell<Vec<(&'static str, u64, u64)>>,
    }

    impl TlbOps for Log {
        fn caps(&self) -> TlbCaps {
            TlbCaps::new(true, self.range, true, 16)
        }
        fn sync(&self) {
            self.calls.borrow_mut().push(("sync", 0, 0));
        }
        fn invalidate_page(&self, asid: Asid, va: VirtAddr, _leaf_only: bool) {
            self.calls
                .borrow_mut()
                .push(("page", u64::from(asid.as_u16()), va.as_u64()));
        }
        fn invalidate_range(
            &self,
            _asid: Asid,
            start: VirtAddr,
            len: u64,
            _stride: PageSize,
            _leaf_only: bool,
        ) {
            self.calls.borrow_mut().push(("range", start.as_u64(), len));
        }
        fn invalidate_asid(&self, asid: Asid) {
            self.calls
                .borrow_mut()
                .push(("asid", u64::from(asid.as_u16()), 0));
        }
        fn invalidate_all(&self) {
            self.calls.borrow_mut().push(("all", 0, 0));
        }
        fn complete(&self) {
            self.calls.borrow_mut().push(("complete", 0, 0));
        }
    }

    fn rec(va: u64, pages: u64) -> FlushRecord {
        FlushRecord::new(VirtAddr::new(va), pages * 0x1000, PageSize::Size4KiB)
    }

    #[test]
    fn overlapping_and_adjacent_records_merge() {
        let mut g = FlushGather::new(Asid::new(1));
        g.add(rec(0x5000, 1));
        g.add(rec(0x1000, 2));
        g.add(rec(0x3000, 1)); // touches 0x1000..0x3000
        g.add(rec(0x2000, 1)); // inside
        assert_eq!(
            g.ranges()
                .iter()
                .map(|r| (r.start.as_u64(), r.len))
                .collect::<Vec<_>>(),
            [(0x1000, 0x3000), (0x5000, 0x1000)]
        );
        g.add(rec(0x4000, 1)); // bridges the two
        assert_eq!(g.ranges().len(), 1);
        assert_eq!(g.pages(), 5);
    }

    #[test]
    fn below_the_ceiling_flushes_page_by_page_once() {
        let mut g = FlushGather::new(Asid::new(3));
        for va in [0x9000, 0x7000, 0x8000, 0x7000] {
            g.add(rec(va, 1));
        }
        let ops = Log::default();
        let out = g.flush(&ops);
        assert_eq!(out.pages, 3);
        assert_eq!(
            *ops.calls.borrow(),
            [
                ("sync", 0, 0),
                ("page", 3, 0x7000),
                ("page", 3, 0x8000),
                ("page", 3, 0x9000),
                ("complete", 0, 0)
            ]
        );
        assert!(g.is_empty());
        // Nothing owed: nothing issued.
        assert_eq!(g.flush(&ops), FlushOutcome::default());
    }

    #[test]
    fn above_the_ceiling_uses_ranges_or_the_whole_asid() {
        let ops = Log {
            range: true,
            ..Log::default()
        };
        let mut g = FlushGather::new(Asid::new(9));
        g.add(rec(0x10_0000, 40));
        assert_eq!(g.flush(&ops).ranges, 1);
        let ops = Log::default();
        g.add(rec(0x10_0000, 40));
        assert_eq!(g.flush(&ops).full, 1);
        assert!(ops.calls.borrow().contains(&("asid", 9, 0)));
        // The kernel's global translations need a full invalidation.
        let mut k = FlushGather::new(Asid::KERNEL);
        k.add(rec(0xffff_8000_0000_0000, 100));
        let ops = Log::default();
        assert_eq!(k.flush(&ops).full, 1);
        assert!(ops.calls.borrow().contains(&("all", 0, 0)));
    }

    #[test]
    fn too_many_ranges_collapse_into_one_covering_range() {
        let mut g = FlushGather::with_ceiling(Asid::new(2), 1000);
        for i in 0..=MAX_RANGES as u64 {
            g.add(rec(0x10_0000 * (i + 1), 1));
        }
        assert_eq!(g.ranges().len(), 1);
        let r = g.ranges()[0];
        assert_eq!(r.start.as_u64(), 0x10_0000);
        assert_eq!(
            r.start.as_u64() + r.len,
            0x10_0000 * (MAX_RANGES as u64 + 1) + 0x1000
        );
    }

    #[test]
    fn unaligned_records_cover_every_page_they_touch() {
        let r = FlushRecord::new(VirtAddr::new(0x1800), 0x1000, PageSize::Size4KiB);
        assert_eq!(r.pages(), 2);
        let mut g = FlushGather::new(Asid::new(4));
        g.add(r);
        let ops = Log::default();
        assert_eq!(g.flush(&ops).pages, 2);
        assert!(ops.calls.borrow().contains(&("page", 4, 0x1000)));
        assert!(ops.calls.borrow().contains(&("page", 4, 0x2000)));
    }

    #[test]
    fn a_sync_alone_issues_only_barriers() {
        let mut g = FlushGather::new(Asid::new(2));
        g.add_sync();
        let ops = Log::default();
        let out = g.flush(&ops);
        assert!(out.synced && out.operations() == 0);
        assert_eq!(*ops.calls.borrow(), [("sync", 0, 0), ("complete", 0, 0)]);
    }
}
