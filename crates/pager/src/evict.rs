//! Eviction under memory pressure: which resident pages of an object go first.

use alloc::vec::Vec;

use machvm_vm_object::{ObjectError, ObjectRef, PageFlags, PageOutOutcome};

use crate::PagingError;

/// What [`evict`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EvictStats {
    /// Speculative (read-ahead, never used) pages freed.
    pub speculative: u64,
    /// Clean pages freed (dropped without I/O when the pager holds them).
    pub clean: u64,
    /// Dirty pages written to the pager and freed.
    pub dirty: u64,
    /// Pages whose page-out failed (they stay resident and unchanged).
    pub failed: u64,
}

impl EvictStats {
    /// Pages freed.
    #[must_use]
    pub const fn freed(&self) -> u64 {
        self.speculative + self.clean + self.dirty
    }
}

/// Frees up to `target` resident pages of `object` through its pager, cheapest first:
/// speculative pages, then clean unreferenced pages, clean pages, and only then dirty pages
/// (unreferenced first), which cost a write. Busy and wired pages are skipped. A file
/// object's clean pages are dropped without I/O, which is why pressure on the file cache
/// evicts them first.
///
/// The caller removes the pages' mappings first (a kernel's pageout daemon disconnects them
/// through the pmap).
///
/// # Errors
///
/// [`PagingError::Object`] with [`ObjectError::NoPager`] when the object has no pager (for
/// an anonymous object, attach the default pager first). Individual page-out failures are
/// counted in [`EvictStats::failed`].
pub fn evict(object: &ObjectRef, target: u64) -> Result<EvictStats, PagingError> {
    if object.pager().is_none() {
        return Err(ObjectError::NoPager.into());
    }
    let mut stats = EvictStats::default();
    let mut candidates: Vec<(u8, u64)> = Vec::new();
    let mut alloc_failed = false;
    object.for_each_page(|offset, page| {
        if page.is_busy() || page.is_wired() {
            return;
        }
        let f = page.flags;
        let class = if f.contains(PageFlags::SPECULATIVE) {
            0
        } else if !f.intersects(PageFlags::DIRTY | PageFlags::PRECIOUS) {
            if f.contains(PageFlags::REFERENCED) {
                2
            } else {
                1
            }
        } else if f.contains(PageFlags::REFERENCED) {
            4
        } else {
            3
        };
        if candidates.try_reserve(1).is_ok() {
            candidates.push((class, offset));
        } else {
            alloc_failed = true;
        }
    });
    if alloc_failed && candidates.is_empty() {
        return Err(PagingError::OutOfMemory);
    }
    candidates.sort_unstable();
    for (class, offset) in candidates {
        if stats.freed() >= target {
            break;
        }
        match object.page_out(offset) {
            Ok(outcome) => match (class, outcome) {
                (0, _) => stats.speculative += 1,
                (1 | 2, _) | (_, PageOutOutcome::Dropped) => stats.clean += 1,
                _ => stats.dirty += 1,
            },
            Err(_) => stats.failed += 1,
        }
    }
    Ok(stats)
}
