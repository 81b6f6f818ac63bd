//! `VmObject`: resident pages, shadow link, copy strategy, pager, purgeable state, wiring.

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use core::fmt;

use machvm_addr::PhysAddr;
use machvm_sync::{Mutex, MutexGuard};

use crate::page::{PageCounts, PageFlags, VmPage};
use crate::{MemoryObject, ObjectError, PageMemory};

/// A shared reference to a VM object. The reference count of Mach's `vm_object` is this
/// `Arc`'s strong count: map entries, shadows and faults in progress each hold one.
pub type ObjectRef = Arc<VmObject>;

/// A process-wide unique object number (for reports and debugging).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(u64);

impl ObjectId {
    /// The number.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A plain `core` counter (not the loom shim): ids only have to be unique.
static NEXT_ID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

/// Whether the kernel or an outside pager owns the object's backing store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// Anonymous memory: zero-filled on first touch, paged to the default pager (compressor
    /// and swap) once it has one.
    Internal,
    /// Memory backed by an outside pager (a file, a device): every non-resident page comes
    /// from the pager.
    External,
}

/// How copies of the object are made (`memory_object_copy_strategy_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CopyStrategy {
    /// Copy eagerly: the copy gets its own pages at once (device memory, wired memory).
    None,
    /// Copy on write on both sides: the copy shares the object, and whichever side writes
    /// first gets a shadow (anonymous memory, fork).
    Symmetric,
    /// Delayed copy: the copy is a new object that shadows this one, and a write to this
    /// object first pushes the old page into the copy (file mappings, `MAP_PRIVATE` of a
    /// shared object).
    Delay,
}

/// The purgeable state of an object created purgeable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PurgeableState {
    /// The contents must be kept.
    NonVolatile,
    /// The system may purge the contents under pressure.
    Volatile,
    /// The contents were purged; faults fail until the object is made non-volatile again,
    /// after which it reads as zeros.
    Empty,
}

/// The object an object shadows, and where its window starts in it.
#[derive(Clone, Debug)]
pub struct Shadow {
    /// The backing object.
    pub object: ObjectRef,
    /// Offset of this object's offset 0 in the backing object.
    pub offset: u64,
}

/// Everything behind an object's lock.
pub(crate) struct ObjectState {
    pub(crate) size: u64,
    pub(crate) pages: BTreeMap<u64, VmPage>,
    pub(crate) counts: PageCounts,
    pub(crate) shadow: Option<Shadow>,
    /// The newest delayed copy of this object (strategy [`CopyStrategy::Delay`]).
    pub(crate) copy: Option<Weak<VmObject>>,
    pub(crate) strategy: CopyStrategy,
    pub(crate) kind: ObjectKind,
    pub(crate) pager: Option<Arc<dyn MemoryObject>>,
    pub(crate) purgeable: Option<PurgeableState>,
    /// Page-ins and page-outs running without the lock.
    pub(crate) paging_in_progress: u32,
}

impl ObjectState {
    /// Inserts a page and counts it.
    pub(crate) fn insert(&mut self, offset: u64, page: VmPage) {
        self.counts.account(&page, true);
        self.pages.insert(offset, page);
    }

    /// Removes a page and uncounts it.
    pub(crate) fn remove(&mut self, offset: u64) -> Option<VmPage> {
        let page = self.pages.remove(&offset)?;
        self.counts.account(&page, false);
        Some(page)
    }

    /// Changes a resident page through `f`, keeping the counts right.
    pub(crate) fn update(&mut self, offset: u64, f: impl FnOnce(&mut VmPage)) -> Option<VmPage> {
        let page = self.pages.get_mut(&offset)?;
        self.counts.account(page, false);
        f(page);
        self.counts.account(page, true);
        Some(*page)
    }

    /// The live delayed copy, if any (forgets a dead one).
    pub(crate) fn live_copy(&mut self) -> Option<ObjectRef> {
        let copy = self.copy.as_ref()?.upgrade();
        if copy.is_none() {
            self.copy = None;
        }
        copy
    }
}

/// A Mach VM object: a range of pages, some resident, the rest in its pager or in the object
/// it shadows.
///
/// **The copy-on-write contract.** An object that other objects shadow is frozen for them:
/// it is not written directly any more (an address map writes through a new shadow instead,
/// which is what needs-copy entries do), with one exception: the source of a delayed copy,
/// whose writes push the old pages into its copy first. A delayed copy object is frozen in
/// the same way (older copies may shadow it). [`VmObject::resolve`] zero-fills a page that no
/// object of the chain has in the object it was asked about, so a shadow never shows pages
/// its backing object gains later.
///
/// Objects are shared through [`ObjectRef`]s. All state sits behind one lock (from
/// `machvm-sync`), which is never held across a pager call or while another object's lock is
/// taken, except top-down along a shadow chain. Dropping the last reference frees every
/// resident frame, terminates the pager and releases the shadow.
///
/// # Example
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use machvm_addr::{PageSize, SimPhysMemory, VmProt};
/// use machvm_vm_object::{FaultKind, SimPageMemory, VmObject};
///
/// let phys = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let memory = Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB)?);
/// let object = VmObject::anonymous(16 * 4096, memory)?;
///
/// // First touch: a zero-filled page.
/// let page = VmObject::resolve(&object, 0x3000, VmProt::WRITE)?;
/// assert_eq!(page.kind, FaultKind::ZeroFill);
/// assert_eq!(object.page_counts().resident, 1);
/// # Ok(()) }
/// ```
pub struct VmObject {
    /// This object, weakly (what [`PageMemory::page_owned`] hands out).
    me: Weak<VmObject>,
    /// Live [`MapperMark`]s: address-map entries mapping this object directly.
    mappers: core::sync::atomic::AtomicUsize,
    id: ObjectId,
    page_size: u64,
    memory: Arc<dyn PageMemory>,
    state: Mutex<ObjectState>,
}

impl fmt::Debug for VmObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmObject")
            .field("id", &self.id)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

/// Options for a new object ([`VmObject::builder`]).
#[derive(Debug)]
#[must_use]
pub struct ObjectBuilder {
    size: u64,
    memory: Arc<dyn PageMemory>,
    pager: Option<Arc<dyn MemoryObject>>,
    strategy: Option<CopyStrategy>,
    purgeable: bool,
    shadow: Option<Shadow>,
}

impl ObjectBuilder {
    /// Backs the object with `pager`: it becomes [`ObjectKind::External`] (and copies are
    /// delayed unless a strategy is chosen).
    pub fn pager(mut self, pager: Arc<dyn MemoryObject>) -> Self {
        self.pager = Some(pager);
        self
    }

    /// Chooses the copy strategy (default: symmetric for anonymous objects, delayed for
    /// objects with a pager).
    pub fn strategy(mut self, strategy: CopyStrategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Makes the object purgeable (initially non-volatile).
    pub fn purgeable(mut self) -> Self {
        self.purgeable = true;
        self
    }

    /// Makes the object shadow `[offset, offset + size)` of `object`.
    pub(crate) fn shadow(mut self, object: ObjectRef, offset: u64) -> Self {
        self.shadow = Some(Shadow { object, offset });
        self
    }

    /// Creates the object.
    ///
    /// # Errors
    ///
    /// [`ObjectError::BadSize`] if the size is zero or not a multiple of the page size;
    /// [`ObjectError::PageSizeMismatch`] if the memory's page size is not 4 or 16 KiB or a
    /// shadow uses another page size; [`ObjectError::OutOfRange`] if a shadow window ends
    /// past its backing object.
    pub fn build(self) -> Result<ObjectRef, ObjectError> {
        let page_size = self.memory.page_size();
        if page_size != 4096 && page_size != 16384 {
            return Err(ObjectError::PageSizeMismatch);
        }
        if self.size == 0 || self.size % page_size != 0 {
            return Err(ObjectError::BadSize);
        }
        if let Some(shadow) = &self.shadow {
            if shadow.object.page_size != page_size {
                return Err(ObjectError::PageSizeMismatch);
            }
            if shadow.offset % page_size != 0 {
                return Err(ObjectError::Unaligned {
                    offset: shadow.offset,
                });
            }
            let end = shadow.offset.checked_add(self.size);
            if end.is_none_or(|end| end > shadow.object.size()) {
                return Err(ObjectError::OutOfRange {
                    offset: shadow.offset,
                });
            }
        }
        let kind = if self.pager.is_some() {
            ObjectKind::External
        } else {
            ObjectKind::Internal
        };
        let strategy = self.strategy.unwrap_or(match kind {
            ObjectKind::Internal => CopyStrategy::Symmetric,
            ObjectKind::External => CopyStrategy::Delay,
        });
        Ok(Arc::new_cyclic(|me| VmObject {
            me: me.clone(),
            mappers: core::sync::atomic::AtomicUsize::new(0),
            id: ObjectId(NEXT_ID.fetch_add(1, core::sync::atomic::Ordering::Relaxed)),
            page_size,
            memory: self.memory,
            state: Mutex::new(ObjectState {
                size: self.size,
                pages: BTreeMap::new(),
                counts: PageCounts::default(),
                shadow: self.shadow,
                copy: None,
                strategy,
                kind,
                pager: self.pager,
                purgeable: self.purgeable.then_some(PurgeableState::NonVolatile),
                paging_in_progress: 0,
            }),
        }))
    }
}

/// A mark an address-map entry holds while it maps an object directly (the object is its
/// top object): [`VmObject::mappers`] counts them. Those entries are the only holders of
/// translations that can write the object's pages, which is what a `fork` must know before
/// it makes a delayed copy. Cloning a mark counts one more mapper; dropping it, one fewer.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use machvm_addr::{PageSize, SimPhysMemory};
/// use machvm_vm_object::{MapperMark, SimPageMemory, VmObject};
///
/// let phys = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let memory = Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB)?);
/// let object = VmObject::anonymous(0x4000, memory)?;
/// let mark = MapperMark::new(&object);
/// let second = mark.clone();
/// assert_eq!(object.mappers(), 2);
/// drop((mark, second));
/// assert_eq!(object.mappers(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MapperMark {
    object: Weak<VmObject>,
}

impl MapperMark {
    /// Counts one more mapper of `object`.
    #[must_use]
    pub fn new(object: &ObjectRef) -> Self {
        object
            .mappers
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        Self {
            object: Arc::downgrade(object),
        }
    }
}

impl Clone for MapperMark {
    fn clone(&self) -> Self {
        if let Some(object) = self.object.upgrade() {
            object
                .mappers
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
        Self {
            object: self.object.clone(),
        }
    }
}

impl Drop for MapperMark {
    fn drop(&mut self) {
        if let Some(object) = self.object.upgrade() {
            object
                .mappers
                .fetch_sub(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl VmObject {
    /// The live [`MapperMark`]s of this object: how many address-map entries map it
    /// directly.
    #[must_use]
    pub fn mappers(&self) -> usize {
        self.mappers.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Tells the page memory that `frame` is now this object's page at `offset` (called with
    /// the object's lock held, after every insertion of a resident page).
    pub(crate) fn owned(&self, frame: PhysAddr, offset: u64, flags: PageFlags) {
        self.memory.page_owned(frame, &self.me, offset, flags);
    }

    /// Options for a new object of `size` bytes over `memory`.
    pub fn builder(size: u64, memory: Arc<dyn PageMemory>) -> ObjectBuilder {
        ObjectBuilder {
            size,
            memory,
            pager: None,
            strategy: None,
            purgeable: false,
            shadow: None,
        }
    }

    /// A new anonymous object of `size` bytes (zero-fill on demand, symmetric copies).
    ///
    /// # Errors
    ///
    /// As for [`ObjectBuilder::build`].
    pub fn anonymous(size: u64, memory: Arc<dyn PageMemory>) -> Result<ObjectRef, ObjectError> {
        Self::builder(size, memory).build()
    }

    /// A new object of `size` bytes backed by `pager` (external, delayed copies).
    ///
    /// # Errors
    ///
    /// As for [`ObjectBuilder::build`].
    pub fn with_pager(
        size: u64,
        pager: Arc<dyn MemoryObject>,
        memory: Arc<dyn PageMemory>,
    ) -> Result<ObjectRef, ObjectError> {
        Self::builder(size, memory).pager(pager).build()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ObjectState> {
        self.state.lock()
    }

    pub(crate) fn memory(&self) -> &Arc<dyn PageMemory> {
        &self.memory
    }

    /// The object's id.
    #[must_use]
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The page size in bytes.
    #[must_use]
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.lock().size
    }

    /// Internal (anonymous) or external (pager-backed).
    #[must_use]
    pub fn kind(&self) -> ObjectKind {
        self.lock().kind
    }

    /// The copy strategy.
    #[must_use]
    pub fn copy_strategy(&self) -> CopyStrategy {
        self.lock().strategy
    }

    /// Changes the copy strategy: a map sharing an anonymous object between address spaces
    /// switches it from symmetric to delayed copies (XNU's "true share"), since symmetric
    /// copies assume nobody writes the object directly.
    pub fn set_copy_strategy(&self, strategy: CopyStrategy) {
        self.lock().strategy = strategy;
    }

    /// The object this one shadows, if any.
    #[must_use]
    pub fn shadow(&self) -> Option<Shadow> {
        self.lock().shadow.clone()
    }

    /// How many objects lie below this one on its shadow chain.
    #[must_use]
    pub fn shadow_depth(&self) -> usize {
        let mut depth = 0;
        let mut next = self.shadow();
        while let Some(shadow) = next {
            depth += 1;
            next = shadow.object.shadow();
        }
        depth
    }

    /// The newest delayed copy of this object, while it lives.
    #[must_use]
    pub fn delayed_copy(&self) -> Option<ObjectRef> {
        self.lock().live_copy()
    }

    /// The pager, if the object has one.
    #[must_use]
    pub fn pager(&self) -> Option<Arc<dyn MemoryObject>> {
        self.lock().pager.clone()
    }

    /// Gives an internal object its pager (the default pager does this on the first
    /// page-out).
    ///
    /// # Errors
    ///
    /// [`ObjectError::HasPager`] if the object already has one.
    pub fn set_pager(&self, pager: Arc<dyn MemoryObject>) -> Result<(), ObjectError> {
        let mut st = self.lock();
        if st.pager.is_some() {
            return Err(ObjectError::HasPager);
        }
        st.pager = Some(pager);
        Ok(())
    }

    /// Checks that `offset` is a page-aligned offset inside the object.
    pub(crate) fn check(&self, st: &ObjectState, offset: u64) -> Result<(), ObjectError> {
        if offset % self.page_size != 0 {
            return Err(ObjectError::Unaligned { offset });
        }
        if offset >= st.size {
            return Err(ObjectError::OutOfRange { offset });
        }
        Ok(())
    }

    /// The resident page at `offset` (checked) in the locked state `st`.
    pub(crate) fn resident(&self, st: &ObjectState, offset: u64) -> Result<VmPage, ObjectError> {
        self.check(st, offset)?;
        st.pages
            .get(&offset)
            .copied()
            .ok_or(ObjectError::NotResident { offset })
    }

    /// The resident page at `offset` of this object (not its shadows), if any.
    ///
    /// # Errors
    ///
    /// [`ObjectError::Unaligned`] or [`ObjectError::OutOfRange`] for a bad offset.
    pub fn page(&self, offset: u64) -> Result<Option<VmPage>, ObjectError> {
        let st = self.lock();
        self.check(&st, offset)?;
        Ok(st.pages.get(&offset).copied())
    }

    /// Makes `frame` the resident page at `offset`. The object owns the frame from now on
    /// and frees it when the page is freed.
    ///
    /// # Errors
    ///
    /// [`ObjectError::Unaligned`] / [`ObjectError::OutOfRange`] for a bad offset,
    /// [`ObjectError::AlreadyResident`] if a page is there.
    pub fn insert_page(
        &self,
        offset: u64,
        frame: PhysAddr,
        flags: PageFlags,
    ) -> Result<(), ObjectError> {
        let mut st = self.lock();
        self.check(&st, offset)?;
        if st.pages.contains_key(&offset) {
            return Err(ObjectError::AlreadyResident { offset });
        }
        st.insert(offset, VmPage::new(frame, flags));
        self.owned(frame, offset, flags);
        Ok(())
    }

    /// Removes the resident page at `offset` and hands its frame to the caller (who must
    /// free or reuse it).
    ///
    /// # Errors
    ///
    /// [`ObjectError::NotResident`], [`ObjectError::PageBusy`], [`ObjectError::PageWired`],
    /// or a bad offset.
    pub fn remove_page(&self, offset: u64) -> Result<VmPage, ObjectError> {
        let mut st = self.lock();
        let page = self.resident(&st, offset)?;
        if page.is_busy() {
            return Err(ObjectError::PageBusy { offset });
        }
        if page.is_wired() {
            return Err(ObjectError::PageWired { offset });
        }
        st.remove(offset);
        Ok(page)
    }

    /// Removes the resident page at `offset` and frees its frame.
    ///
    /// # Errors
    ///
    /// As for [`remove_page`](Self::remove_page).
    pub fn free_page(&self, offset: u64) -> Result<(), ObjectError> {
        let page = self.remove_page(offset)?;
        self.memory.free_page(page.frame);
        Ok(())
    }

    /// Sets and clears state bits of the resident page at `offset` ([`PageFlags::BUSY`] and
    /// [`PageFlags::ABSENT`] cannot be changed this way); returns the page after the change.
    ///
    /// # Errors
    ///
    /// [`ObjectError::NotResident`] or a bad offset.
    pub fn update_page(
        &self,
        offset: u64,
        set: PageFlags,
        clear: PageFlags,
    ) -> Result<VmPage, ObjectError> {
        let fixed = PageFlags::BUSY | PageFlags::ABSENT;
        let mut st = self.lock();
        self.check(&st, offset)?;
        st.update(offset, |p| {
            p.flags.insert(set - fixed);
            p.flags.remove(clear - fixed);
        })
        .ok_or(ObjectError::NotResident { offset })
    }

    /// Wires the resident page at `offset` (one more wiring).
    ///
    /// # Errors
    ///
    /// [`ObjectError::NotResident`], [`ObjectError::PageBusy`],
    /// [`ObjectError::WireOverflow`], or a bad offset.
    pub fn wire_page(&self, offset: u64) -> Result<VmPage, ObjectError> {
        let mut st = self.lock();
        let page = self.resident(&st, offset)?;
        if page.is_busy() {
            return Err(ObjectError::PageBusy { offset });
        }
        let count = page
            .wire_count
            .checked_add(1)
            .ok_or(ObjectError::WireOverflow { offset })?;
        st.update(offset, |p| p.wire_count = count)
            .ok_or(ObjectError::NotResident { offset })
    }

    /// Drops one wiring of the page at `offset`.
    ///
    /// # Errors
    ///
    /// [`ObjectError::NotResident`], [`ObjectError::NotWired`], or a bad offset.
    pub fn unwire_page(&self, offset: u64) -> Result<VmPage, ObjectError> {
        let mut st = self.lock();
        let page = self.resident(&st, offset)?;
        let count = page
            .wire_count
            .checked_sub(1)
            .ok_or(ObjectError::NotWired { offset })?;
        st.update(offset, |p| p.wire_count = count)
            .ok_or(ObjectError::NotResident { offset })
    }

    /// Page counts of this object, by state.
    #[must_use]
    pub fn page_counts(&self) -> PageCounts {
        self.lock().counts
    }

    /// Calls `f` for each resident page, in offset order, under the object's lock (`f` must
    /// not use this object).
    pub fn for_each_page(&self, mut f: impl FnMut(u64, &VmPage)) {
        let st = self.lock();
        for (offset, page) in &st.pages {
            f(*offset, page);
        }
    }

    /// The purgeable state, or `None` for an object not created purgeable.
    #[must_use]
    pub fn purgeable_state(&self) -> Option<PurgeableState> {
        self.lock().purgeable
    }

    /// Changes the purgeable state; returns the previous one. Making an emptied object
    /// non-volatile (or volatile) again makes it usable, reading as zeros.
    ///
    /// # Errors
    ///
    /// [`ObjectError::NotPurgeable`] for an object not created purgeable, or when asked to
    /// set [`PurgeableState::Empty`] directly (use [`purge`](Self::purge)).
    pub fn set_purgeable(&self, state: PurgeableState) -> Result<PurgeableState, ObjectError> {
        let mut st = self.lock();
        let old = st.purgeable.ok_or(ObjectError::NotPurgeable)?;
        if state == PurgeableState::Empty {
            return Err(ObjectError::NotPurgeable);
        }
        st.purgeable = Some(state);
        Ok(old)
    }

    /// Purges a volatile object: frees its resident pages, drops its pager's data and marks
    /// it empty. Returns the number of pages freed (0, and no change, unless the object is
    /// volatile and has no busy or wired page).
    ///
    /// Mappings of the object's pages must be removed by the caller first (the facade's pmap
    /// does it).
    ///
    /// # Errors
    ///
    /// [`ObjectError::NotPurgeable`] for an object not created purgeable.
    pub fn purge(&self) -> Result<u64, ObjectError> {
        let (frames, pager, size) = {
            let mut st = self.lock();
            match st.purgeable {
                None => return Err(ObjectError::NotPurgeable),
                Some(PurgeableState::Volatile) => {}
                Some(_) => return Ok(0),
            }
            if st.counts.busy > 0 || st.counts.wired > 0 || st.paging_in_progress > 0 {
                return Ok(0);
            }
            let pages = core::mem::take(&mut st.pages);
            st.counts = PageCounts::default();
            st.purgeable = Some(PurgeableState::Empty);
            (pages, st.pager.clone(), st.size)
        };
        let freed = frames.len() as u64;
        for page in frames.values() {
            self.memory.free_page(page.frame);
        }
        if let Some(pager) = pager {
            let mut offset = 0;
            while offset < size {
                pager.data_discard(offset);
                offset += self.page_size;
            }
        }
        Ok(freed)
    }

    /// Frees the resident pages of `[offset, offset + length)` and discards the pager's copies
    /// (`madvise(MADV_FREE)`-like, for internal objects: the range reads as its shadow's, or
    /// zeros, afterwards). Busy and wired pages are skipped. Returns the pages freed.
    ///
    /// # Errors
    ///
    /// A bad offset or range.
    pub fn discard_range(&self, offset: u64, length: u64) -> Result<u64, ObjectError> {
        let end = offset
            .checked_add(length)
            .ok_or(ObjectError::OutOfRange { offset })?;
        let (frames, pager) = {
            let mut st = self.lock();
            if length == 0 {
                return Ok(0);
            }
            self.check(&st, offset)?;
            if end > st.size || end % self.page_size != 0 {
                return Err(ObjectError::OutOfRange { offset: end });
            }
            let victims: alloc::vec::Vec<u64> = st
                .pages
                .range(offset..end)
                .filter(|(_, p)| !p.is_busy() && !p.is_wired())
                .map(|(o, _)| *o)
                .collect();
            let frames: alloc::vec::Vec<PhysAddr> = victims
                .iter()
                .filter_map(|o| st.remove(*o).map(|p| p.frame))
                .collect();
            let pager = (st.kind == ObjectKind::Internal)
                .then(|| st.pager.clone())
                .flatten();
            (frames, pager)
        };
        for frame in &frames {
            self.memory.free_page(*frame);
        }
        if let Some(pager) = pager {
            let mut o = offset;
            while o < end {
                pager.data_discard(o);
                o += self.page_size;
            }
        }
        Ok(frames.len() as u64)
    }
}

impl Drop for VmObject {
    fn drop(&mut self) {
        // Free this object's pages, terminate its pager, then release the chain below
        // iteratively (a long chain must not recurse through nested drops).
        let st = self.state.get_mut();
        for page in core::mem::take(&mut st.pages).values() {
            self.memory.free_page(page.frame);
        }
        if let Some(pager) = st.pager.take() {
            pager.terminate();
        }
        let mut next = st.shadow.take();
        while let Some(shadow) = next {
            next = None;
            if let Some(mut object) = Arc::into_inner(shadow.object) {
                // The last reference: take its shadow before it drops, so the drop below
                // does not recurse.
                next = object.state.get_mut().shadow.take();
            }
        }
    }
}
