//! Shadow chains: shadows for copy on write, copies by strategy, collapse and bypass.

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::ObjectError;
use crate::object::{CopyStrategy, ObjectKind, ObjectRef, Shadow, VmObject};
use crate::page::{PageCounts, PageFlags};

/// The result of [`VmObject::copy`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CopyResult {
    /// Symmetric copy: the copy is the same object at `offset`; both the source's and the
    /// copy's mappings must be marked needs-copy (and the source's write-protected), and the
    /// first write on either side creates a shadow.
    Symmetric {
        /// The shared object.
        object: ObjectRef,
        /// Offset of the copied range in it.
        offset: u64,
    },
    /// Delayed copy: a new object that shadows the source; writes to the source push old
    /// pages into it. The source's existing mappings must be write-protected, and the copy
    /// object is frozen like a backing object: map it needs-copy, so that the first write
    /// creates a shadow of it (an older delayed copy of the same source may shadow it).
    Delayed {
        /// The copy object.
        object: ObjectRef,
        /// Offset of the copied range in it.
        offset: u64,
    },
    /// Eager copy: a new object holding its own copy of every page of the range.
    Copied {
        /// The new object (offset 0 is the range's start).
        object: ObjectRef,
    },
}

/// What [`VmObject::collapse`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollapseStats {
    /// Backing objects merged into the object (it held their only reference).
    pub collapsed: u64,
    /// Backing objects linked past (they held nothing visible through the object).
    pub bypassed: u64,
    /// Pages moved up from merged objects.
    pub pages_moved: u64,
    /// Pages freed (hidden by the object, or outside its window).
    pub pages_freed: u64,
}

impl VmObject {
    /// A new anonymous object of `size` bytes that shadows `[offset, offset + size)` of
    /// `backing`: reads see the backing pages, writes copy them up (copy on write).
    ///
    /// # Errors
    ///
    /// [`ObjectError::BadSize`], [`ObjectError::Unaligned`], or
    /// [`ObjectError::OutOfRange`] when the window does not fit in `backing`.
    pub fn shadow_of(
        backing: &ObjectRef,
        offset: u64,
        size: u64,
    ) -> Result<ObjectRef, ObjectError> {
        Self::builder(size, backing.memory().clone())
            .shadow(backing.clone(), offset)
            .build()
    }

    /// Copies `[offset, offset + size)` of `source` by its copy strategy (see
    /// [`CopyResult`]).
    ///
    /// # Errors
    ///
    /// A bad range, [`ObjectError::NoMemory`], [`ObjectError::Purged`], or a pager error
    /// during an eager copy (the partial copy is dropped; the source is unchanged).
    pub fn copy(source: &ObjectRef, offset: u64, size: u64) -> Result<CopyResult, ObjectError> {
        let strategy = source.copy_strategy();
        Self::copy_with(source, offset, size, strategy)
    }

    /// Copies `[offset, offset + size)` of `source` with `strategy` instead of the object's
    /// own (a map copying wired memory eagerly, for instance).
    ///
    /// # Errors
    ///
    /// As for [`copy`](Self::copy).
    pub fn copy_with(
        source: &ObjectRef,
        offset: u64,
        size: u64,
        strategy: CopyStrategy,
    ) -> Result<CopyResult, ObjectError> {
        let object_size = source.size();
        let page = source.page_size();
        if size == 0 || size % page != 0 {
            return Err(ObjectError::BadSize);
        }
        if offset % page != 0 {
            return Err(ObjectError::Unaligned { offset });
        }
        if offset.checked_add(size).is_none_or(|end| end > object_size) {
            return Err(ObjectError::OutOfRange { offset });
        }
        match strategy {
            CopyStrategy::Symmetric => Ok(CopyResult::Symmetric {
                object: source.clone(),
                offset,
            }),
            CopyStrategy::Delay => Self::copy_delayed(source, object_size, offset),
            CopyStrategy::None => Self::copy_eagerly(source, offset, size),
        }
    }

    /// A delayed copy covers the whole source, so an older copy can shadow the newer one: the
    /// source pages it has not received yet are exactly those unchanged since, which the newer
    /// copy sees.
    fn copy_delayed(
        source: &ObjectRef,
        object_size: u64,
        offset: u64,
    ) -> Result<CopyResult, ObjectError> {
        let copy = Self::builder(object_size, source.memory().clone())
            .shadow(source.clone(), 0)
            .build()?;
        let old = {
            let mut st = source.lock();
            let old = st.live_copy();
            st.copy = Some(Arc::downgrade(&copy));
            old
        };
        if let Some(old) = old {
            let mut st = old.lock();
            if st
                .shadow
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(&s.object, source) && s.offset == 0)
            {
                st.shadow = Some(Shadow {
                    object: copy.clone(),
                    offset: 0,
                });
            }
        }
        Ok(CopyResult::Delayed {
            object: copy,
            offset,
        })
    }

    /// Copies every page of the range that has contents now into a new object.
    fn copy_eagerly(source: &ObjectRef, offset: u64, size: u64) -> Result<CopyResult, ObjectError> {
        let copy = Self::anonymous(size, source.memory().clone())?;
        let memory = source.memory().clone();
        let page = source.page_size();
        let mut at = 0;
        while at < size {
            if let Some((object, off, _)) = Self::lookup_contents(source, offset + at)? {
                let frame = memory.alloc_page()?;
                // Copy under the owner's lock so the frame cannot go away meanwhile.
                let copied = {
                    let st = object.lock();
                    match st.pages.get(&off) {
                        Some(p) if !p.is_busy() => {
                            memory.copy_page(p.frame, frame);
                            true
                        }
                        _ => false,
                    }
                };
                if copied {
                    copy.insert_page(at, frame, PageFlags::DIRTY)?;
                } else {
                    memory.free_page(frame);
                    continue; // the page moved; look it up again
                }
            }
            at += page;
        }
        Ok(CopyResult::Copied { object: copy })
    }

    /// Shortens the shadow chain below `this` as far as possible: a backing object whose only
    /// reference is `this`'s shadow link is merged into `this` (its visible pages move up,
    /// the rest are freed), and a backing object that shows nothing through `this` is linked
    /// past. Stops at a backing object with a pager (its paged-out data cannot move), with
    /// busy or wired pages or page-ins in flight, with a delayed copy of its own, or that is
    /// itself the live delayed copy of the object it shadows.
    ///
    /// # Errors
    ///
    /// [`ObjectError::NoShadow`] if `this` shadows nothing.
    pub fn collapse(this: &ObjectRef) -> Result<CollapseStats, ObjectError> {
        let mut stats = CollapseStats::default();
        if this.shadow().is_none() {
            return Err(ObjectError::NoShadow);
        }
        loop {
            let progressed = Self::collapse_once(this, &mut stats);
            if !progressed {
                return Ok(stats);
            }
        }
    }

    /// Returns whether `object` (state `st`, locked) is the live delayed copy of the object
    /// it shadows: pushes from that source still land in it, so it must stay in place.
    fn is_delayed_copy(object: &ObjectRef, st: &crate::object::ObjectState) -> bool {
        st.shadow.as_ref().is_some_and(|s| {
            // Lock order: down the chain.
            let source = s.object.lock();
            source
                .copy
                .as_ref()
                .is_some_and(|w| core::ptr::eq(w.as_ptr(), Arc::as_ptr(object)))
        })
    }

    fn collapse_once(this: &ObjectRef, stats: &mut CollapseStats) -> bool {
        let mut top = this.lock();
        let Some(shadow) = top.shadow.clone() else {
            return false;
        };
        let backing = shadow.object;
        let window = shadow.offset;
        let size = top.size;
        // Lock order: down the chain (this, then its backing object).
        let mut back = backing.lock();
        if back.pager.is_some()
            || back.counts.busy > 0
            || back.paging_in_progress > 0
            || back.live_copy().is_some()
            || back.kind != ObjectKind::Internal
        {
            return false;
        }
        if back.counts.wired > 0 || Self::is_delayed_copy(&backing, &back) {
            return false;
        }
        let end = window.saturating_add(size);
        // References: `backing` (our clone) + `top.shadow` = 2 when nobody else has one.
        let sole = Arc::strong_count(&backing) == 2;
        if sole && top.pager.is_none() {
            // Collapse: move visible pages up, free the rest, adopt the backing's shadow.
            let pages = core::mem::take(&mut back.pages);
            back.counts = PageCounts::default();
            let mut freed = Vec::new();
            for (off, page) in pages {
                let up = off.wrapping_sub(window);
                if off >= window && off < end && !top.pages.contains_key(&up) {
                    top.insert(up, page);
                    this.owned(page.frame, up, page.flags);
                    stats.pages_moved += 1;
                } else {
                    freed.push(page.frame);
                }
            }
            let next = back.shadow.take();
            drop(back);
            top.shadow = rebased(next, window);
            drop(top);
            stats.collapsed += 1;
            stats.pages_freed += freed.len() as u64;
            for frame in freed {
                this.memory().free_page(frame);
            }
            return true;
        }
        // Bypass: every backing page inside the window is hidden by a page of `this` (never
        // when the backing object has more pages than `this`: no scan then).
        if back.counts.resident > top.counts.resident {
            return false;
        }
        // One merged walk over the two sorted page maps.
        let mut mine = top.pages.keys().peekable();
        let hidden = back.pages.range(window..end).all(|(off, _)| {
            let want = off - window;
            while mine.next_if(|k| **k < want).is_some() {}
            mine.peek().is_some_and(|k| **k == want)
        });
        if hidden {
            let next = back.shadow.clone();
            drop(back);
            top.shadow = rebased(next, window);
            drop(top);
            stats.bypassed += 1;
            return true;
        }
        false
    }
}

/// The backing object's own shadow link as seen from an object whose window starts at
/// `window` in it (the sum cannot overflow: each window lies inside its backing object).
fn rebased(next: Option<Shadow>, window: u64) -> Option<Shadow> {
    next.map(|s| Shadow {
        offset: s.offset.saturating_add(window),
        object: s.object,
    })
}
