//! Resolving a page through a shadow chain: zero fill, page-in, copy on write, delayed-copy
//! pushes, and page-out.

use alloc::sync::Arc;

use machvm_addr::{PhysAddr, VmProt};
use machvm_sync::Backoff;

use crate::object::{ObjectKind, ObjectRef, PurgeableState, VmObject};
use crate::page::{PageFlags, VmPage};
use crate::pager::{PageIn, PageOutKind};
use crate::{MemoryObject, ObjectError};

/// How a fault found its page (the `vm_stat` counter it moves).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// The page was resident already (a "reactivation" when the caller had it inactive).
    Resident,
    /// A new zero-filled page (bottom of an anonymous chain, or a hole of a file).
    ZeroFill,
    /// A page of a backing object copied into the top object for a write.
    CopyOnWrite,
    /// The page was read from a pager.
    PageIn,
}

/// The page a fault resolved to.
#[derive(Clone, Debug)]
pub struct ResolvedPage {
    /// The frame to map.
    pub frame: PhysAddr,
    /// The object the page belongs to (the top object, or one below it for a read of a
    /// page that is still shared).
    pub object: ObjectRef,
    /// The page's offset in `object`.
    pub offset: u64,
    /// How many shadow links below the top object `object` is (0: the top object).
    pub depth: usize,
    /// How the page was found.
    pub kind: FaultKind,
    /// Whether the page may be mapped writable: it belongs to the top object, and no
    /// delayed copy still needs its old contents. A read fault on a shared page returns
    /// `false`, so the first write faults again and copies.
    pub writable: bool,
}

/// What happened to a page-out request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageOutOutcome {
    /// The page went to the pager and its frame was freed.
    PagedOut,
    /// The page was clean and its pager already holds it: the frame was freed without I/O.
    Dropped,
}

/// Where a walk down the chain stopped.
enum Found {
    /// A resident page in `object` at `offset`, `depth` links down.
    Page(ObjectRef, u64, usize, VmPage, FaultKind),
    /// Nothing anywhere: zero-fill in the top object.
    Nothing,
}

/// The old contents of a page a delayed copy must receive.
#[derive(Clone, Copy)]
enum Old {
    /// Zeros (the page did not exist).
    Zero,
    /// The source object's own resident page.
    Resident,
    /// A frame the faulting path owns (a fresh copy of the page).
    Private(PhysAddr),
}

/// Passes on a step that did not complete (a retry or an error), giving back `frame`, which
/// the faulting path allocated and no object holds yet; `None` when the step completed.
fn unless_done(
    memory: &dyn crate::PageMemory,
    frame: PhysAddr,
    step: Result<Step<()>, ObjectError>,
) -> Option<Result<Step<ResolvedPage>, ObjectError>> {
    match step {
        Ok(Step::Done(())) => None,
        Ok(Step::Retry) => {
            memory.free_page(frame);
            Some(Ok(Step::Retry))
        }
        Err(e) => {
            memory.free_page(frame);
            Some(Err(e))
        }
    }
}

/// One step of a walk that must start over (a page turned busy, a race was lost).
enum Step<T> {
    Done(T),
    Retry,
}

impl VmObject {
    /// Resolves the page at `offset` of `top` for `access` (a fault): walks the shadow chain,
    /// pages in from the pager that holds the page, zero-fills at the bottom of an anonymous
    /// chain (in `top`), and for a write copies a page found below `top` up into it
    /// (copy on write) and pushes the old contents into a delayed copy of `top` first.
    ///
    /// Waits (spinning with back-off) while the page is busy elsewhere; kernels that sleep
    /// instead use [`try_resolve`](Self::try_resolve). No lock is held across a pager call.
    ///
    /// # Errors
    ///
    /// A bad offset, [`ObjectError::Purged`] for an emptied purgeable object,
    /// [`ObjectError::NoMemory`], or [`ObjectError::Pager`] when a pager failed (nothing is
    /// left half-done: a failed page-in leaves no page behind).
    pub fn resolve(
        top: &ObjectRef,
        offset: u64,
        access: VmProt,
    ) -> Result<ResolvedPage, ObjectError> {
        let mut backoff = Backoff::new();
        loop {
            match Self::try_resolve(top, offset, access) {
                Err(ObjectError::PageBusy { .. }) => backoff.spin(),
                other => return other,
            }
        }
    }

    /// [`resolve`](Self::resolve) that returns [`ObjectError::PageBusy`] instead of waiting
    /// when the page (or the one it copies from) is busy.
    ///
    /// # Errors
    ///
    /// As for [`resolve`](Self::resolve), plus [`ObjectError::PageBusy`].
    pub fn try_resolve(
        top: &ObjectRef,
        offset: u64,
        access: VmProt,
    ) -> Result<ResolvedPage, ObjectError> {
        {
            let st = top.lock();
            top.check(&st, offset)?;
        }
        loop {
            if let Step::Done(page) = Self::resolve_once(top, offset, access)? {
                return Ok(page);
            }
        }
    }

    fn resolve_once(
        top: &ObjectRef,
        offset: u64,
        access: VmProt,
    ) -> Result<Step<ResolvedPage>, ObjectError> {
        let write = access.contains(VmProt::WRITE);
        let found = match Self::find(top, offset, access, true)? {
            Step::Done(found) => found,
            Step::Retry => return Ok(Step::Retry),
        };
        match found {
            Found::Page(object, off, 0, page, kind) => {
                // The top object's own page.
                let copy = top.lock().live_copy();
                if write {
                    if let Some(copy) = &copy {
                        if let Step::Retry = Self::push(top, copy, offset, Old::Resident)? {
                            return Ok(Step::Retry);
                        }
                    }
                }
                let set = if write {
                    PageFlags::REFERENCED | PageFlags::DIRTY
                } else {
                    PageFlags::REFERENCED
                };
                let _ = top.update_page(offset, set, PageFlags::SPECULATIVE);
                Ok(Step::Done(ResolvedPage {
                    frame: page.frame,
                    object,
                    offset: off,
                    depth: 0,
                    kind,
                    writable: write || copy.is_none(),
                }))
            }
            Found::Page(object, off, depth, page, kind) => {
                if !write {
                    let _ = object.update_page(off, PageFlags::REFERENCED, PageFlags::SPECULATIVE);
                    return Ok(Step::Done(ResolvedPage {
                        frame: page.frame,
                        object,
                        offset: off,
                        depth,
                        kind,
                        writable: false,
                    }));
                }
                // Copy on write: copy the backing page up into the top object.
                let memory = top.memory().clone();
                let frame = memory.alloc_page()?;
                let copied = Self::with_busy(&object, off, |src| memory.copy_page(src, frame));
                if let Some(out) = unless_done(&*memory, frame, copied) {
                    return out;
                }
                if let Some(copy) = top.lock().live_copy() {
                    let pushed = Self::push(top, &copy, offset, Old::Private(frame));
                    if let Some(out) = unless_done(&*memory, frame, pushed) {
                        return out;
                    }
                }
                Self::install(top, offset, frame, FaultKind::CopyOnWrite)
            }
            Found::Nothing => {
                let memory = top.memory().clone();
                let frame = memory.alloc_page()?;
                memory.zero_page(frame);
                if write {
                    if let Some(copy) = top.lock().live_copy() {
                        let pushed = Self::push(top, &copy, offset, Old::Zero);
                        if let Some(out) = unless_done(&*memory, frame, pushed) {
                            return out;
                        }
                    }
                }
                let step = Self::install(top, offset, frame, FaultKind::ZeroFill)?;
                if let Step::Done(mut page) = step {
                    page.writable = write || top.lock().live_copy().is_none();
                    return Ok(Step::Done(page));
                }
                Ok(step)
            }
        }
    }

    /// Installs a new dirty page in `top` (zero fill or copy on write); a racing fault that
    /// installed one first wins (our frame is freed and the walk starts over).
    fn install(
        top: &ObjectRef,
        offset: u64,
        frame: PhysAddr,
        kind: FaultKind,
    ) -> Result<Step<ResolvedPage>, ObjectError> {
        let mut st = top.lock();
        if st.purgeable == Some(PurgeableState::Empty) {
            drop(st);
            top.memory().free_page(frame);
            return Err(ObjectError::Purged);
        }
        if st.pages.contains_key(&offset) {
            drop(st);
            top.memory().free_page(frame);
            return Ok(Step::Retry);
        }
        st.insert(
            offset,
            VmPage::new(frame, PageFlags::DIRTY | PageFlags::REFERENCED),
        );
        top.owned(frame, offset, PageFlags::DIRTY | PageFlags::REFERENCED);
        Ok(Step::Done(ResolvedPage {
            frame,
            object: top.clone(),
            offset,
            depth: 0,
            kind,
            writable: true,
        }))
    }

    /// Walks down from `top` to the first object that has the page (paging it in when its
    /// pager holds it). With `page_in` false, a page only in a pager counts as found nowhere.
    fn find(
        top: &ObjectRef,
        offset: u64,
        access: VmProt,
        page_in: bool,
    ) -> Result<Step<Found>, ObjectError> {
        let mut object = top.clone();
        let mut off = offset;
        let mut depth = 0;
        loop {
            let (pager, kind, shadow) = {
                let st = object.lock();
                if st.purgeable == Some(PurgeableState::Empty) {
                    return Err(ObjectError::Purged);
                }
                if let Some(page) = st.pages.get(&off) {
                    if page.is_busy() {
                        return Err(ObjectError::PageBusy { offset: off });
                    }
                    return Ok(Step::Done(Found::Page(
                        object.clone(),
                        off,
                        depth,
                        *page,
                        FaultKind::Resident,
                    )));
                }
                (st.pager.clone(), st.kind, st.shadow.clone())
            };
            if let Some(pager) = pager.filter(|_| page_in) {
                // Ask without the lock whether the pager has it (external pagers always
                // answer for their range; an internal object's default pager only for what
                // it paged out).
                if kind == ObjectKind::External || pager.has_page(off) {
                    match Self::page_in(&object, off, &pager, kind, access)? {
                        Step::Done(Some((page, kind))) => {
                            return Ok(Step::Done(Found::Page(object, off, depth, page, kind)));
                        }
                        Step::Done(None) => {}
                        Step::Retry => return Ok(Step::Retry),
                    }
                }
            }
            match shadow {
                Some(shadow) => {
                    off = off
                        .checked_add(shadow.offset)
                        .ok_or(ObjectError::OutOfRange { offset: off })?;
                    object = shadow.object;
                    depth += 1;
                }
                None => return Ok(Step::Done(Found::Nothing)),
            }
        }
    }

    /// Pages in `off` of `object` from `pager`: a busy placeholder keeps other faults
    /// waiting while the pager runs without the lock. Returns the page, or `None` when the
    /// pager had nothing (for an internal object: look further down).
    fn page_in(
        object: &ObjectRef,
        off: u64,
        pager: &Arc<dyn MemoryObject>,
        kind: ObjectKind,
        access: VmProt,
    ) -> Result<Step<Option<(VmPage, FaultKind)>>, ObjectError> {
        let memory = object.memory().clone();
        let frame = memory.alloc_page()?;
        {
            let mut st = object.lock();
            if st.pages.contains_key(&off) {
                drop(st);
                memory.free_page(frame);
                return Ok(Step::Retry);
            }
            st.insert(off, VmPage::new(frame, PageFlags::BUSY | PageFlags::ABSENT));
            object.owned(frame, off, PageFlags::BUSY | PageFlags::ABSENT);
            st.paging_in_progress += 1;
        }
        let mut result = Err(crate::PagerError::Io);
        memory.with_page(frame, &mut |bytes| {
            result = pager.data_request(off, bytes, access);
        });
        let filled = match result {
            Ok(PageIn::Filled) => Some(FaultKind::PageIn),
            Ok(PageIn::Absent) if kind == ObjectKind::External => {
                memory.zero_page(frame);
                Some(FaultKind::ZeroFill)
            }
            _ => None,
        };
        let mut st = object.lock();
        st.paging_in_progress -= 1;
        match filled {
            Some(fault_kind) => {
                let page = st.update(off, |p| {
                    p.flags.remove(PageFlags::BUSY | PageFlags::ABSENT);
                });
                drop(st);
                match page {
                    Some(page) => Ok(Step::Done(Some((page, fault_kind)))),
                    None => Ok(Step::Retry),
                }
            }
            None => {
                st.remove(off);
                drop(st);
                memory.free_page(frame);
                match result {
                    Err(e) => Err(ObjectError::Pager(e)),
                    _ => Ok(Step::Done(None)),
                }
            }
        }
    }

    /// Runs `f` on the frame of the resident page `off` of `object` while the page is marked
    /// busy (so nobody pages it out or frees it meanwhile).
    fn with_busy(
        object: &ObjectRef,
        off: u64,
        f: impl FnOnce(PhysAddr),
    ) -> Result<Step<()>, ObjectError> {
        let frame = {
            let mut st = object.lock();
            match st.pages.get(&off) {
                None => return Ok(Step::Retry),
                Some(p) if p.is_busy() => return Err(ObjectError::PageBusy { offset: off }),
                Some(p) => {
                    let frame = p.frame;
                    st.update(off, |p| p.flags.insert(PageFlags::BUSY));
                    frame
                }
            }
        };
        f(frame);
        object
            .lock()
            .update(off, |p| p.flags.remove(PageFlags::BUSY));
        Ok(Step::Done(()))
    }

    /// Before `source`'s page at `offset` changes, gives its delayed copy `copy` the old
    /// contents unless the copy has its own page there already.
    fn push(
        source: &ObjectRef,
        copy: &ObjectRef,
        offset: u64,
        old: Old,
    ) -> Result<Step<()>, ObjectError> {
        // The copy shadows its source at `shadow.offset`.
        let Some(shadow) = copy.shadow() else {
            return Ok(Step::Done(()));
        };
        if !Arc::ptr_eq(&shadow.object, source) {
            return Ok(Step::Done(()));
        }
        let Some(copy_off) = offset.checked_sub(shadow.offset) else {
            return Ok(Step::Done(()));
        };
        let pager = {
            let st = copy.lock();
            if copy_off >= st.size || st.pages.contains_key(&copy_off) {
                return Ok(Step::Done(()));
            }
            st.pager.clone()
        };
        if pager.is_some_and(|p| p.has_page(copy_off)) {
            return Ok(Step::Done(()));
        }
        let memory = copy.memory().clone();
        let frame = memory.alloc_page()?;
        match old {
            Old::Zero => memory.zero_page(frame),
            Old::Private(src) => memory.copy_page(src, frame),
            Old::Resident => {
                // Keep the source page busy while copying it (nobody pages it out).
                match Self::with_busy(source, offset, |src| memory.copy_page(src, frame)) {
                    Ok(Step::Done(())) => {}
                    other => {
                        memory.free_page(frame);
                        return other;
                    }
                }
            }
        }
        let mut st = copy.lock();
        if st.pages.contains_key(&copy_off) {
            drop(st);
            memory.free_page(frame);
            return Ok(Step::Done(()));
        }
        st.insert(copy_off, VmPage::new(frame, PageFlags::DIRTY));
        copy.owned(frame, copy_off, PageFlags::DIRTY);
        Ok(Step::Done(()))
    }

    /// Looks `offset` up through the chain without creating anything: the frame holding
    /// the page's current contents (paged in if a pager holds it), or `None` when the page
    /// reads as zeros.
    ///
    /// # Errors
    ///
    /// As for [`try_resolve`](Self::try_resolve).
    pub(crate) fn lookup_contents(
        top: &ObjectRef,
        offset: u64,
    ) -> Result<Option<(ObjectRef, u64, PhysAddr)>, ObjectError> {
        let mut backoff = Backoff::new();
        loop {
            match Self::find(top, offset, VmProt::READ, true) {
                Ok(Step::Done(Found::Page(object, off, _, page, _))) => {
                    return Ok(Some((object, off, page.frame)));
                }
                Ok(Step::Done(Found::Nothing)) => return Ok(None),
                Ok(Step::Retry) | Err(ObjectError::PageBusy { .. }) => backoff.spin(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Pages out the resident page at `offset` through the object's pager and frees its
    /// frame: the page is busy (faults wait) while the pager writes it without the lock; a
    /// clean page whose pager already holds it is dropped without I/O. The caller removes
    /// every mapping of the page first.
    ///
    /// # Errors
    ///
    /// [`ObjectError::NoPager`], [`ObjectError::NotResident`], [`ObjectError::PageBusy`],
    /// [`ObjectError::PageWired`], a bad offset, or [`ObjectError::Pager`] when the pager
    /// could not take the page (it stays resident, unchanged).
    pub fn page_out(&self, offset: u64) -> Result<PageOutOutcome, ObjectError> {
        let (pager, page) = {
            let mut st = self.lock();
            self.check(&st, offset)?;
            let pager = st.pager.clone().ok_or(ObjectError::NoPager)?;
            let page = self.resident(&st, offset)?;
            if page.is_busy() {
                return Err(ObjectError::PageBusy { offset });
            }
            if page.is_wired() {
                return Err(ObjectError::PageWired { offset });
            }
            st.update(offset, |p| p.flags.insert(PageFlags::BUSY));
            st.paging_in_progress += 1;
            (pager, page)
        };
        let needs_io = page.flags.contains(PageFlags::DIRTY)
            || page.flags.contains(PageFlags::PRECIOUS)
            || !pager.has_page(offset);
        let mut result = Ok(());
        if needs_io {
            self.memory().with_page(page.frame, &mut |bytes| {
                result = pager.data_return(offset, bytes, PageOutKind::Evict);
            });
        }
        let mut st = self.lock();
        st.paging_in_progress -= 1;
        match result {
            Ok(()) => {
                st.remove(offset);
                drop(st);
                self.memory().free_page(page.frame);
                Ok(if needs_io {
                    PageOutOutcome::PagedOut
                } else {
                    PageOutOutcome::Dropped
                })
            }
            Err(e) => {
                st.update(offset, |p| p.flags.remove(PageFlags::BUSY));
                Err(ObjectError::Pager(e))
            }
        }
    }

    /// Writes the dirty pages of `[offset, offset + length)` back to the pager and marks them
    /// clean, then asks the pager to make the range durable (`msync`). Returns the pages
    /// written.
    ///
    /// # Errors
    ///
    /// [`ObjectError::NoPager`], a bad range, or [`ObjectError::Pager`] (pages written
    /// before the failure are clean; the failed one stays dirty).
    pub fn synchronize(&self, offset: u64, length: u64) -> Result<u64, ObjectError> {
        let end = offset
            .checked_add(length)
            .ok_or(ObjectError::OutOfRange { offset })?;
        let (pager, dirty) = {
            let st = self.lock();
            if length == 0 {
                return Ok(0);
            }
            self.check(&st, offset)?;
            if end > st.size {
                return Err(ObjectError::OutOfRange { offset: end });
            }
            let pager = st.pager.clone().ok_or(ObjectError::NoPager)?;
            let dirty: alloc::vec::Vec<u64> = st
                .pages
                .range(offset..end)
                .filter(|(_, p)| p.flags.contains(PageFlags::DIRTY))
                .map(|(o, _)| *o)
                .collect();
            (pager, dirty)
        };
        let mut written = 0;
        for off in dirty {
            let frame = {
                let mut st = self.lock();
                match st.pages.get(&off) {
                    Some(p) if !p.is_busy() && p.flags.contains(PageFlags::DIRTY) => {
                        let frame = p.frame;
                        // Clean before writing: a write during the I/O dirties it again.
                        st.update(off, |p| {
                            p.flags.insert(PageFlags::BUSY);
                            p.flags.remove(PageFlags::DIRTY);
                        });
                        st.paging_in_progress += 1;
                        frame
                    }
                    _ => continue,
                }
            };
            let mut result = Ok(());
            self.memory().with_page(frame, &mut |bytes| {
                result = pager.data_return(off, bytes, PageOutKind::Clean);
            });
            let mut st = self.lock();
            st.paging_in_progress -= 1;
            st.update(off, |p| {
                p.flags.remove(PageFlags::BUSY);
                if result.is_err() {
                    p.flags.insert(PageFlags::DIRTY);
                }
            });
            drop(st);
            result?;
            written += 1;
        }
        pager.synchronize(offset, length)?;
        Ok(written)
    }
}
