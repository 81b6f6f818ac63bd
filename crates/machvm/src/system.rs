//! [`VmSystem`]: address spaces over one frame table, with faults, pageout, memory pressure
//! and the counters the reports print.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use machvm_addr::{FrameAllocator, PageSize, PhysAddr, PhysMapper, VirtAddr, VmProt};
use machvm_aslr::AslrRng;
use machvm_page_table::{AccessState, FlushHook, Format, SharedRoot};
use machvm_tlb::Asid;
use machvm_vm_map::{FaultError, FaultOutcome, Inheritance, MapError, MapRequest, Pmap, VmMap};
use machvm_vm_object::{
    FaultKind, ObjectError, ObjectKind, ObjectRef, PageFlags, PageMemory, PurgeableState,
};

use crate::frames::{FrameError, FramePool, FrameState, PageQueue, QueueCounts, SpaceId};
use crate::placement::RandomFit;
use crate::pmap::{PmapObserver, PmapSetupError, TablePmap};
use crate::pressure::{PressureLevel, PressureMonitor};

/// Gives each address space the flush hook that invalidates its translations on every CPU
/// that may cache them (`machvm_tlb::TlbFlush` / `ShootdownFlush` in a kernel, a software
/// TLB in a simulator).
pub trait FlushProvider {
    /// The hook of one space.
    type Hook: FlushHook;

    /// The hook for the space running with `asid`.
    fn hook(&self, asid: Asid) -> Self::Hook;

    /// Drops every translation of `asid` on every CPU (the space is gone; its ASID will be
    /// reused).
    fn flush_asid(&self, asid: Asid);

    /// CPU `cpu` starts running the space of `asid` (its root register is loaded); a
    /// provider that tracks which CPUs run a space records it, and brings the CPU's TLB up
    /// to date if it missed flushes while away. The default does nothing.
    fn switch_in(&self, asid: Asid, cpu: u32) {
        let _ = (asid, cpu);
    }

    /// CPU `cpu` stops running the space of `asid`. The default does nothing.
    fn switch_out(&self, asid: Asid, cpu: u32) {
        let _ = (asid, cpu);
    }
}

/// Counters the compressed-memory and swap layer reports (the anonymous pager).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PagerStats {
    /// Pages held compressed.
    pub stored_pages: u64,
    /// Memory the compressed pages occupy, in pages.
    pub occupied_pages: u64,
    /// Pages compressed so far.
    pub compressions: u64,
    /// Pages decompressed so far.
    pub decompressions: u64,
    /// Segments or pages read back from swap.
    pub swapins: u64,
    /// Segments or pages written to swap.
    pub swapouts: u64,
    /// How full the compressor is, in percent of its limit.
    pub fullness_percent: u8,
}

impl PagerStats {
    /// A statistics record (the fields are public for reading; this builds one).
    #[must_use]
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        stored_pages: u64,
        occupied_pages: u64,
        compressions: u64,
        decompressions: u64,
        swapins: u64,
        swapouts: u64,
        fullness_percent: u8,
    ) -> Self {
        Self {
            stored_pages,
            occupied_pages,
            compressions,
            decompressions,
            swapins,
            swapouts,
            fullness_percent,
        }
    }
}

/// Where anonymous memory goes when the pageout daemon evicts it (the default pager: the
/// compressor, then swap). Given to [`VmSystem::set_anonymous_pager`].
pub trait AnonymousPager: Send + Sync {
    /// Gives `object` (an anonymous object without a pager) the pager it pages through from
    /// now on ([`VmObject::set_pager`](machvm_vm_object::VmObject::set_pager)); called on
    /// its first page-out.
    ///
    /// # Errors
    ///
    /// An [`ObjectError`] when no pager can be made now; the page stays resident.
    fn attach(&self, object: &ObjectRef) -> Result<(), ObjectError>;

    /// The layer's counters.
    fn stats(&self) -> PagerStats {
        PagerStats::default()
    }

    /// The swap's usage (`None`: no swap).
    fn swap_usage(&self) -> Option<machvm_pager::SwapUsage> {
        None
    }
}

/// Why a [`VmSystem`] call failed. A failed call changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmError {
    /// No such address space.
    NoSuchSpace(SpaceId),
    /// Every ASID is in use.
    NoAsid,
    /// The address map refused the operation.
    Map(MapError),
    /// The fault could not be resolved.
    Fault(FaultError),
    /// A new address space's page table could not be made.
    Pmap(PmapSetupError),
    /// A VM object operation failed.
    Object(ObjectError),
    /// Frames could not be donated.
    Frames(FrameError),
    /// A pager could not be made or used (a file's pager, its object).
    Paging(machvm_pager::PagingError),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchSpace(s) => write!(f, "no {s}"),
            Self::NoAsid => f.write_str("no free ASID"),
            Self::Map(e) => write!(f, "address map: {e}"),
            Self::Fault(e) => write!(f, "fault: {e}"),
            Self::Pmap(e) => write!(f, "pmap: {e}"),
            Self::Object(e) => write!(f, "VM object: {e}"),
            Self::Frames(e) => write!(f, "frames: {e}"),
            Self::Paging(e) => write!(f, "pager: {e}"),
        }
    }
}

impl core::error::Error for VmError {}

impl From<MapError> for VmError {
    fn from(e: MapError) -> Self {
        Self::Map(e)
    }
}

impl From<FaultError> for VmError {
    fn from(e: FaultError) -> Self {
        Self::Fault(e)
    }
}

impl From<ObjectError> for VmError {
    fn from(e: ObjectError) -> Self {
        Self::Object(e)
    }
}

/// The event counters `vm_stat` prints (each moved by exactly one kind of event).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmCounters {
    /// Faults handled (resolved or not): `"Translation faults"`.
    pub faults: u64,
    /// Faults that copied a page on write.
    pub cow_faults: u64,
    /// Faults that zero-filled a page.
    pub zero_fill: u64,
    /// Pages the pageout scan found referenced and put back on the active queue, plus
    /// faults that found their page resident on the inactive or speculative queue.
    pub reactivations: u64,
    /// Pages read from a pager by a fault.
    pub pageins: u64,
    /// Pages the pageout daemon sent to a pager.
    pub pageouts: u64,
    /// Clean pages the pageout daemon dropped (their pager already held them).
    pub dropped: u64,
    /// Pages freed by purging volatile objects.
    pub purged: u64,
    /// Pages the pageout daemon moved from active to inactive.
    pub deactivations: u64,
    /// Read-ahead (speculative) pages a fault used.
    pub speculative_hits: u64,
}

/// What one [`VmSystem::pageout_step`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PageoutStep {
    /// Frames looked at.
    pub scanned: u64,
    /// Pages moved from active to inactive.
    pub deactivated: u64,
    /// Referenced pages put back on the active queue.
    pub reactivated: u64,
    /// Pages sent to a pager.
    pub paged_out: u64,
    /// Clean pages dropped.
    pub dropped: u64,
    /// Pages freed by purging.
    pub purged: u64,
    /// Pages that could not be evicted now (busy, wired, no owner, pager error); they went
    /// back to the active queue.
    pub skipped: u64,
    /// Pages the pager had no room for; they wait on the throttled queue.
    pub throttled: u64,
}

/// Targets of the pageout daemon, in percent of the managed frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PageoutTargets {
    /// Free frames the daemon keeps available.
    pub free_percent: u8,
    /// Share of the in-use pageable pages kept inactive (aged, next to go).
    pub inactive_percent: u8,
}

impl Default for PageoutTargets {
    fn default() -> Self {
        Self {
            free_percent: 10,
            inactive_percent: 33,
        }
    }
}

impl PageoutTargets {
    /// These targets with `percent` of the frames kept free (100: page out everything
    /// pageable).
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm::PageoutTargets;
    ///
    /// let drain = PageoutTargets::default().with_free_percent(100);
    /// assert_eq!((drain.free_percent, drain.inactive_percent), (100, 33));
    /// ```
    #[must_use]
    pub const fn with_free_percent(mut self, percent: u8) -> Self {
        self.free_percent = percent;
        self
    }

    /// These targets with `percent` of the in-use pageable pages kept inactive.
    #[must_use]
    pub const fn with_inactive_percent(mut self, percent: u8) -> Self {
        self.inactive_percent = percent;
        self
    }
}

/// Tells the frame table about the translations of one space.
#[derive(Debug)]
pub struct PvObserver<M: PhysMapper> {
    pool: Arc<FramePool<M>>,
    space: SpaceId,
}

impl<M: PhysMapper> PmapObserver for PvObserver<M> {
    fn mapped(&mut self, va: VirtAddr, frame: PhysAddr, wired: bool) {
        self.pool.mapped(frame, self.space, va, wired);
    }

    fn unmapped(&mut self, va: VirtAddr, frame: PhysAddr, wired: bool) {
        self.pool.unmapped(frame, self.space, va, wired);
    }

    fn wiring(&mut self, _va: VirtAddr, frame: PhysAddr, wired: bool) {
        self.pool.wiring(frame, wired);
    }

    fn writable(&mut self, _va: VirtAddr, frame: PhysAddr) {
        self.pool.mark_modified(frame);
    }
}

/// The pmap of a [`VmSystem`] space.
pub type SpacePmap<F, M, A, T> = TablePmap<F, M, A, <T as FlushProvider>::Hook, PvObserver<M>>;

/// The address map of a [`VmSystem`] space.
pub type SpaceMap<F, M, A, T> = VmMap<SpacePmap<F, M, A, T>>;

struct Space<F: Format, M, A, T>
where
    M: PhysMapper + Clone + Send + Sync + 'static,
    A: FrameAllocator + Clone,
    T: FlushProvider,
{
    map: SpaceMap<F, M, A, T>,
    asid: Asid,
    /// CPUs that ran the space since it was last flushed everywhere (bit per CPU).
    cpus: u64,
}

/// Where the `zprint` report gets its rows: a function returning the statistics of the zones
/// the system's memory comes from.
pub type ZoneSource = Box<dyn Fn() -> Vec<machvm_zone_alloc::ZoneStats> + Send + Sync>;

/// A callback on memory-pressure changes: `(old, new)`.
pub type PressureCallback = Box<dyn FnMut(PressureLevel, PressureLevel) + Send>;

/// A complete VM system over one page-table format (see the crate documentation).
///
/// - `F`: the translation format (`X86Pml4`, `A64Granule16K48`, …); its granule is the page
///   size of every space;
/// - `M`: the physical mapper (the kernel's direct map; `&SimPhysMemory` on the host);
/// - `A`: the allocator page-table frames come from (data frames come from the donated
///   frames);
/// - `T`: the TLB flush provider.
///
/// # Examples
///
/// ```
/// use machvm::{FlushProvider, VmSystem};
/// use machvm_addr::{PhysAddr, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_page_table::{NoFlush, X86Pml4};
/// use machvm_tlb::Asid;
/// use machvm_vm_map::MapRequest;
///
/// struct NoTlb;
/// impl FlushProvider for NoTlb {
///     type Hook = NoFlush;
///     fn hook(&self, _: Asid) -> NoFlush { NoFlush }
///     fn flush_asid(&self, _: Asid) {}
/// }
///
/// let sim: &'static SimPhysMemory =
///     Box::leak(Box::new(SimPhysMemory::builder().size_bytes(8 << 20).build()?));
/// let mut vm = VmSystem::<X86Pml4, _, _, _>::new(
///     sim, sim, NoTlb, VirtAddr::new(0x1000_0000), VirtAddr::new(0x2000_0000),
/// );
/// vm.donate(PhysAddr::new(0x40_0000), 256)?; // 1 MiB of frames for data pages
/// let space = vm.create_space()?;
/// let addr = vm.mmap(space, MapRequest::anonymous(0x4000))?;
/// vm.handle_fault(space, addr, VmProt::WRITE)?;
/// assert_eq!(vm.counters().zero_fill, 1);
/// assert_eq!(vm.queues().active, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct VmSystem<F, M, A, T>
where
    F: Format,
    M: PhysMapper + Clone + Send + Sync + 'static,
    A: FrameAllocator + Clone,
    T: FlushProvider,
{
    pool: Arc<FramePool<M>>,
    mapper: M,
    tables: A,
    flush: T,
    start: VirtAddr,
    end: VirtAddr,
    spaces: BTreeMap<SpaceId, Space<F, M, A, T>>,
    next_space: u32,
    free_asids: Vec<u16>,
    next_asid: u16,
    counters: VmCounters,
    targets: PageoutTargets,
    pager: Option<Arc<dyn AnonymousPager>>,
    pressure: PressureMonitor,
    callbacks: Vec<PressureCallback>,
    zones: Option<ZoneSource>,
    kernel: Option<SharedRoot<F>>,
    aslr: Option<AslrRng>,
    /// The pager's fullness at the last full pressure update (see `update_pressure`).
    pager_fullness: u8,
}

impl<F, M, A, T> fmt::Debug for VmSystem<F, M, A, T>
where
    F: Format,
    M: PhysMapper + Clone + Send + Sync + 'static,
    A: FrameAllocator + Clone,
    T: FlushProvider,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmSystem")
            .field("format", &F::NAME)
            .field("spaces", &self.spaces.len())
            .field("queues", &self.pool.counts())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The largest ASID handed out (8-bit ASIDs are the smallest hardware has).
const MAX_ASID: u16 = 255;

impl<F, M, A, T> VmSystem<F, M, A, T>
where
    F: Format,
    M: PhysMapper + Clone + Send + Sync + 'static,
    A: FrameAllocator + Clone,
    T: FlushProvider,
{
    /// A system with no frames and no spaces, whose spaces map user addresses in
    /// `[start, end)`.
    pub fn new(mapper: M, tables: A, flush: T, start: VirtAddr, end: VirtAddr) -> Self {
        Self {
            pool: Arc::new(FramePool::new(mapper.clone(), F::GRANULE.bytes())),
            mapper,
            tables,
            flush,
            start,
            end,
            spaces: BTreeMap::new(),
            next_space: 1,
            free_asids: Vec::new(),
            next_asid: 1,
            counters: VmCounters::default(),
            targets: PageoutTargets::default(),
            pager: None,
            pressure: PressureMonitor::new(),
            callbacks: Vec::new(),
            zones: None,
            kernel: None,
            aslr: None,
            pager_fullness: 0,
        }
    }

    /// Makes every space's table, existing and future, link the root entries of `shared`
    /// (the kernel's mappings, from [`PageTable::share_root`] on the kernel's table), so that
    /// loading a space's root register keeps the kernel mapped: on `x86_64`, where one root
    /// translates both halves, and on aarch64 when the kernel lives in the same half as the
    /// spaces (`TTBR0`). A kernel whose mappings live elsewhere (aarch64 `TTBR1`) does not
    /// need this.
    ///
    /// [`PageTable::share_root`]: machvm_page_table::PageTable::share_root
    ///
    /// # Errors
    ///
    /// - [`VmError::Pmap`] with [`PmapSetupError::SharedOverlap`] if the shared range
    ///   overlaps the spaces' window, or [`PmapSetupError::Table`] if a space's table cannot
    ///   link it (`AlreadyMapped` when kernel entries are shared already); nothing changes.
    ///
    /// # Safety
    ///
    /// As [`PageTable::link_root`](machvm_page_table::PageTable::link_root): the kernel's
    /// table keeps the shared root entries, and every table below them, for as long as this
    /// system has spaces (until it is dropped) — for example, it lives as long as the
    /// system and never unmaps everything below one of those entries.
    #[allow(unsafe_code)] // Forwards `PageTable::link_root`'s contract to the caller.
    pub unsafe fn share_kernel(&mut self, shared: SharedRoot<F>) -> Result<(), VmError> {
        let len = self.end.as_u64() - self.start.as_u64();
        if shared.overlaps(self.start, len) {
            return Err(VmError::Pmap(PmapSetupError::SharedOverlap {
                start: shared.start().as_u64(),
                len: shared.size(),
            }));
        }
        if self.kernel.is_some() {
            return Err(VmError::Pmap(PmapSetupError::Table(
                machvm_page_table::PageTableError::AlreadyMapped {
                    va: shared.start().as_u64(),
                },
            )));
        }
        let ids: Vec<SpaceId> = self.spaces.keys().copied().collect();
        for (n, id) in ids.iter().enumerate() {
            let Some(space) = self.spaces.get_mut(id) else {
                continue;
            };
            // SAFETY: the caller's contract.
            let linked = unsafe { space.map.pmap_mut().link_root(&shared) };
            if let Err(e) = linked {
                for done in &ids[..n] {
                    if let Some(s) = self.spaces.get_mut(done) {
                        s.map.pmap_mut().unlink_root();
                    }
                }
                return Err(VmError::Pmap(e));
            }
        }
        self.kernel = Some(shared);
        Ok(())
    }

    /// The kernel entries every space shares ([`share_kernel`](Self::share_kernel)), if any.
    #[must_use]
    pub fn kernel_entries(&self) -> Option<&SharedRoot<F>> {
        self.kernel.as_ref()
    }

    /// Adds `count` frames at `start` to the free queue (the kernel donates the memory it
    /// does not use itself).
    ///
    /// # Errors
    ///
    /// [`VmError::Frames`] (nothing added).
    pub fn donate(&mut self, start: PhysAddr, count: u32) -> Result<(), VmError> {
        self.pool.donate(start, count).map_err(VmError::Frames)?;
        self.update_pressure();
        Ok(())
    }

    /// The page size.
    #[must_use]
    pub fn page_size(&self) -> PageSize {
        F::GRANULE
    }

    /// The frame table.
    #[must_use]
    pub fn frames(&self) -> &Arc<FramePool<M>> {
        &self.pool
    }

    /// The physical mapper.
    #[must_use]
    pub fn mapper(&self) -> &M {
        &self.mapper
    }

    /// Pages on each queue.
    #[must_use]
    pub fn queues(&self) -> QueueCounts {
        self.pool.counts()
    }

    /// The event counters.
    #[must_use]
    pub fn counters(&self) -> VmCounters {
        self.counters
    }

    /// The pager layer's counters (zero without an anonymous pager).
    #[must_use]
    pub fn pager_stats(&self) -> PagerStats {
        self.pager.as_ref().map(|p| p.stats()).unwrap_or_default()
    }

    /// The `vm.swapusage` line of the anonymous pager's swap (`None` without a swap).
    #[must_use]
    pub fn swapusage(&self) -> Option<machvm_pager::SwapUsage> {
        self.pager.as_ref().and_then(|p| p.swap_usage())
    }

    /// Sets where evicted anonymous pages go.
    pub fn set_anonymous_pager(&mut self, pager: Arc<dyn AnonymousPager>) {
        self.pager = Some(pager);
    }

    /// Sets the pageout targets.
    pub fn set_pageout_targets(&mut self, targets: PageoutTargets) {
        self.targets = targets;
    }

    /// Tells the system where its zones' statistics come from (for [`zprint`](Self::zprint)).
    pub fn set_zone_source(&mut self, source: ZoneSource) {
        self.zones = Some(source);
    }

    /// The statistics of the zones the system was told about.
    #[must_use]
    pub fn zone_stats(&self) -> Vec<machvm_zone_alloc::ZoneStats> {
        self.zones.as_ref().map(|z| z()).unwrap_or_default()
    }

    /// Calls `callback(old, new)` whenever the pressure level changes.
    pub fn on_pressure_change(&mut self, callback: PressureCallback) {
        self.callbacks.push(callback);
    }

    /// The current memory-pressure level.
    #[must_use]
    pub fn pressure(&self) -> PressureLevel {
        self.pressure.level()
    }

    /// The ids of the live spaces.
    pub fn spaces(&self) -> impl Iterator<Item = SpaceId> + '_ {
        self.spaces.keys().copied()
    }

    /// The address map of `space`.
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`].
    pub fn map(&self, space: SpaceId) -> Result<&SpaceMap<F, M, A, T>, VmError> {
        Ok(&self.space(space)?.map)
    }

    /// The ASID `space` runs with.
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`].
    pub fn asid(&self, space: SpaceId) -> Result<Asid, VmError> {
        Ok(self.space(space)?.asid)
    }

    fn space(&self, id: SpaceId) -> Result<&Space<F, M, A, T>, VmError> {
        self.spaces.get(&id).ok_or(VmError::NoSuchSpace(id))
    }

    fn space_mut(&mut self, id: SpaceId) -> Result<&mut Space<F, M, A, T>, VmError> {
        self.spaces.get_mut(&id).ok_or(VmError::NoSuchSpace(id))
    }

    fn alloc_asid(&mut self) -> Result<Asid, VmError> {
        if let Some(a) = self.free_asids.pop() {
            return Ok(Asid::new(a));
        }
        if self.next_asid > MAX_ASID {
            return Err(VmError::NoAsid);
        }
        self.next_asid += 1;
        Ok(Asid::new(self.next_asid - 1))
    }

    fn new_pmap(&mut self, id: SpaceId, asid: Asid) -> Result<SpacePmap<F, M, A, T>, VmError> {
        let region = if F::supports_region(machvm_page_table::Region::Both) {
            machvm_page_table::Region::Both
        } else {
            machvm_page_table::Region::Lower
        };
        let mut pmap = TablePmap::with_region(
            F::GRANULE,
            self.start,
            self.end,
            region,
            true,
            self.mapper.clone(),
            self.tables.clone(),
            self.flush.hook(asid),
            PvObserver {
                pool: self.pool.clone(),
                space: id,
            },
        )
        .map_err(VmError::Pmap)?;
        if let Some(kernel) = &self.kernel {
            // SAFETY: `share_kernel`'s caller keeps the kernel entries alive while the system
            // has spaces; the new table has no entry outside the window yet.
            #[allow(unsafe_code)]
            unsafe { pmap.link_root(kernel) }.map_err(VmError::Pmap)?;
        }
        Ok(pmap)
    }

    fn next_id(&mut self) -> SpaceId {
        let id = SpaceId(self.next_space);
        self.next_space = self.next_space.wrapping_add(1).max(1);
        id
    }

    /// Creates an empty address space with its own page table and ASID.
    ///
    /// # Errors
    ///
    /// [`VmError::NoAsid`], [`VmError::Pmap`] (no frame for the root table).
    pub fn create_space(&mut self) -> Result<SpaceId, VmError> {
        self.add_space(|this, pmap| {
            let memory: Arc<dyn PageMemory> = this.pool.clone();
            Ok(VmMap::new(F::GRANULE, this.start, this.end, memory, pmap)?)
        })
    }

    /// Adds a space: an ASID, a pmap, and the map `build` makes over that pmap. On error the
    /// ASID goes back (it was never used, so it needs no flush) and the pmap is dropped with
    /// its tables.
    fn add_space(
        &mut self,
        build: impl FnOnce(&mut Self, SpacePmap<F, M, A, T>) -> Result<SpaceMap<F, M, A, T>, VmError>,
    ) -> Result<SpaceId, VmError> {
        let asid = self.alloc_asid()?;
        let id = self.next_id();
        match self.new_pmap(id, asid).and_then(|pmap| build(self, pmap)) {
            Ok(map) => {
                self.spaces.insert(id, Space { map, asid, cpus: 0 });
                Ok(id)
            }
            Err(e) => {
                self.free_asids.push(asid.as_u16());
                Err(e)
            }
        }
    }

    /// Destroys `space`: its mappings go (flushed), its page tables are freed, its objects
    /// lose a reference, and its ASID is flushed everywhere before reuse.
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`].
    pub fn destroy_space(&mut self, space: SpaceId) -> Result<(), VmError> {
        let s = self
            .spaces
            .remove(&space)
            .ok_or(VmError::NoSuchSpace(space))?;
        let asid = s.asid;
        // Translations first (the pmap flushes them and reports them to the frame table),
        // then the objects, whose frames can only be freed once nothing maps them.
        let Space { mut map, .. } = s;
        let (start, end) = (self.start, self.end);
        map.pmap_mut().remove(start, end);
        drop(map);
        self.flush.flush_asid(asid);
        self.free_asids.push(asid.as_u16());
        self.update_pressure();
        Ok(())
    }

    /// Records that `cpu` runs `space` from now on (telling the flush provider, which may
    /// flush the CPU's stale entries of the space first) and returns the value for its root
    /// register (CR3 with the PCID / TTBR0 with the ASID).
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`].
    pub fn activate(&mut self, space: SpaceId, cpu: u32) -> Result<u64, VmError> {
        let s = self
            .spaces
            .get_mut(&space)
            .ok_or(VmError::NoSuchSpace(space))?;
        if cpu < 64 {
            s.cpus |= 1 << cpu;
        }
        let root = s.map.pmap().root_register(s.asid.as_u16());
        self.flush.switch_in(s.asid, cpu);
        Ok(root)
    }

    /// Records that `cpu` stopped running `space` (it switched to another space).
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`].
    pub fn deactivate(&mut self, space: SpaceId, cpu: u32) -> Result<(), VmError> {
        let s = self
            .spaces
            .get_mut(&space)
            .ok_or(VmError::NoSuchSpace(space))?;
        if cpu < 64 {
            s.cpus &= !(1 << cpu);
        }
        self.flush.switch_out(s.asid, cpu);
        Ok(())
    }

    /// The CPUs running `space` (bit per CPU, CPUs 0–63).
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`].
    pub fn cpus_of(&self, space: SpaceId) -> Result<u64, VmError> {
        Ok(self.space(space)?.cpus)
    }

    /// Maps memory into `space` (`mmap`).
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::Map`].
    pub fn mmap(&mut self, space: SpaceId, request: MapRequest) -> Result<VirtAddr, VmError> {
        let map = &mut self
            .spaces
            .get_mut(&space)
            .ok_or(VmError::NoSuchSpace(space))?
            .map;
        Ok(match &mut self.aslr {
            Some(rng) => map.enter_with(request, &mut RandomFit::new(rng))?,
            None => map.enter(request)?,
        })
    }

    /// Randomises where `mmap` (and [`mmap_file`](Self::mmap_file)) put mappings without a
    /// fixed address, in every space: with `Some(rng)`, uniformly among every aligned
    /// position of every free gap that fits ([`RandomFit`], drawing from `rng`); with `None`
    /// (the default), at the lowest address that fits. Fixed mappings, `fork` (the child
    /// keeps the parent's addresses) and existing mappings are not affected.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm::sim::SimMachine;
    /// use machvm_aslr::AslrRng;
    /// use machvm_page_table::X86Pml4;
    /// use machvm_vm_map::MapRequest;
    ///
    /// let machine = SimMachine::<X86Pml4>::new(16, 1)?;
    /// let space = machine.create_space()?;
    /// let mut vm = machine.vm();
    /// let first = vm.mmap(space, MapRequest::anonymous(0x4000))?; // lowest fit
    /// // A kernel seeds from its entropy sources (`AslrRng::from_sources`).
    /// vm.set_mmap_randomisation(Some(AslrRng::from_seed([9; 32])));
    /// let next = vm.mmap(space, MapRequest::anonymous(0x4000))?;
    /// assert_ne!(next.as_u64(), first.as_u64() + 0x4000); // not packed after the first
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_mmap_randomisation(&mut self, rng: Option<AslrRng>) {
        self.aslr = rng;
    }

    /// The pager of `file`, whose pages come from this system's frames: map it with
    /// [`mmap_file`](Self::mmap_file). Keep the returned pager for as long as the file is
    /// mapped or cached: every mapping made through it shares one VM object (the unified
    /// buffer cache).
    ///
    /// # Errors
    ///
    /// [`VmError::Paging`] when the file's size cannot be read.
    pub fn open_file<File: machvm_pager::FileBacking + 'static>(
        &self,
        file: File,
    ) -> Result<Arc<machvm_pager::VnodePager<File>>, VmError> {
        let memory: Arc<dyn PageMemory> = self.pool.clone();
        machvm_pager::VnodePager::new(file, memory).map_err(VmError::Paging)
    }

    /// Maps `len` bytes of a file from `offset` into `space` (`mmap` of a file): shared (the
    /// file's pages themselves; writes reach the file on page-out or `msync`) or private
    /// (copy on write over them; changes never reach the file). `request` gives the location
    /// and protections; its size and backing are replaced.
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::Paging`] (the file's object), [`VmError::Map`].
    pub fn mmap_file<File: machvm_pager::FileBacking + 'static>(
        &mut self,
        space: SpaceId,
        file: &Arc<machvm_pager::VnodePager<File>>,
        offset: u64,
        len: u64,
        private: bool,
        prot: VmProt,
    ) -> Result<VirtAddr, VmError> {
        self.space(space)?;
        let object = file.object().map_err(VmError::Paging)?;
        let request = if private {
            MapRequest::private(object, offset, len)
        } else {
            MapRequest::shared(object, offset, len)
        }
        .protection(prot, VmProt::ALL);
        self.mmap(space, request)
    }

    /// Writes the dirty file pages mapped at `[addr, addr + len)` of `space` back to their
    /// file and makes them durable (`msync`); returns the pages written.
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::Map`] when nothing is mapped at `addr`,
    /// [`VmError::Object`] when the object has no pager or the write fails.
    pub fn msync(&mut self, space: SpaceId, addr: VirtAddr, len: u64) -> Result<u64, VmError> {
        let map = &self.space(space)?.map;
        let entry = map.lookup(addr).ok_or(VmError::Map(MapError::NotMapped {
            addr: addr.as_u64(),
        }))?;
        let object = entry.object().clone();
        let start = entry.offset() + (addr.as_u64() - entry.start().as_u64());
        let end_in_entry = entry.end().as_u64().min(addr.as_u64().saturating_add(len));
        let length = end_in_entry.saturating_sub(addr.as_u64());
        // A page written through a translation is not known dirty to its object yet.
        let ps = F::GRANULE.bytes();
        let mut page = start - start % ps;
        while page < start + length {
            if let Ok(Some(p)) = object.page(page) {
                if self.pool.state(p.frame).is_some_and(|f| f.modified) {
                    let _ = object.update_page(page, PageFlags::DIRTY, PageFlags::empty());
                }
            }
            page += ps;
        }
        Ok(object.synchronize(start, length)?)
    }

    /// Unmaps `[addr, addr + len)` of `space` (`munmap`).
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::Map`].
    pub fn munmap(&mut self, space: SpaceId, addr: VirtAddr, len: u64) -> Result<(), VmError> {
        self.space_mut(space)?.map.remove(addr, len)?;
        self.update_pressure();
        Ok(())
    }

    /// Changes the protection of `[addr, addr + len)` (`mprotect`).
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::Map`].
    pub fn mprotect(
        &mut self,
        space: SpaceId,
        addr: VirtAddr,
        len: u64,
        prot: VmProt,
    ) -> Result<(), VmError> {
        Ok(self.space_mut(space)?.map.protect(addr, len, prot)?)
    }

    /// Changes the inheritance of `[addr, addr + len)` (`minherit`).
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::Map`].
    pub fn minherit(
        &mut self,
        space: SpaceId,
        addr: VirtAddr,
        len: u64,
        inheritance: Inheritance,
    ) -> Result<(), VmError> {
        Ok(self.space_mut(space)?.map.inherit(addr, len, inheritance)?)
    }

    /// Wires `[addr, addr + len)` (faults every page in and keeps it resident).
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::Map`].
    pub fn wire(&mut self, space: SpaceId, addr: VirtAddr, len: u64) -> Result<(), VmError> {
        self.space_mut(space)?.map.wire(addr, len)?;
        self.update_pressure();
        Ok(())
    }

    /// Unwires `[addr, addr + len)`.
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::Map`].
    pub fn unwire(&mut self, space: SpaceId, addr: VirtAddr, len: u64) -> Result<(), VmError> {
        self.space_mut(space)?.map.unwire(addr, len)?;
        self.update_pressure();
        Ok(())
    }

    /// Sets the purgeable state of the object mapped at `addr` (created purgeable) and
    /// returns its old state.
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::Map`] when nothing is mapped there,
    /// [`VmError::Object`] when the object is not purgeable.
    pub fn set_purgeable(
        &mut self,
        space: SpaceId,
        addr: VirtAddr,
        state: PurgeableState,
    ) -> Result<PurgeableState, VmError> {
        let map = &self.space(space)?.map;
        let entry = map.lookup(addr).ok_or(VmError::Map(MapError::NotMapped {
            addr: addr.as_u64(),
        }))?;
        Ok(entry.object().set_purgeable(state)?)
    }

    /// Forks `space`: a new space whose entries follow their inheritance (share, copy on
    /// write, or none).
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::NoAsid`], [`VmError::Pmap`], [`VmError::Map`].
    pub fn fork(&mut self, space: SpaceId) -> Result<SpaceId, VmError> {
        self.space(space)?;
        self.add_space(|this, pmap| Ok(this.space_mut(space)?.map.fork(pmap)?))
    }

    /// Handles a page fault of `space` at `addr` for `access` (`vm_fault`), counting it.
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`], [`VmError::Fault`] (not mapped, protection, no memory
    /// — after a pageout step tried to free some —, pager errors).
    pub fn handle_fault(
        &mut self,
        space: SpaceId,
        addr: VirtAddr,
        access: VmProt,
    ) -> Result<FaultOutcome, VmError> {
        self.space(space)?;
        self.counters.faults += 1;
        let mut result = self.space_mut(space)?.map.fault(addr, access);
        let mut reclaimed = false;
        if matches!(result, Err(FaultError::Object(ObjectError::NoMemory))) {
            // Out of frames: reclaim some and try once more.
            let free_target = self.free_target().max(8);
            self.reclaim(free_target, 4 * free_target);
            reclaimed = true;
            result = self.space_mut(space)?.map.fault(addr, access);
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                if reclaimed {
                    self.update_pressure();
                }
                return Err(e.into());
            }
        };
        match outcome.kind {
            FaultKind::ZeroFill => self.counters.zero_fill += 1,
            FaultKind::CopyOnWrite => self.counters.cow_faults += 1,
            FaultKind::PageIn => self.counters.pageins += 1,
            _ => {
                match self.pool.queue_of(outcome.frame) {
                    Some(PageQueue::Inactive) => {
                        self.pool.requeue(outcome.frame, PageQueue::Active);
                        self.counters.reactivations += 1;
                    }
                    // A read-ahead page used at last: it joins the active pages.
                    Some(PageQueue::Speculative) => {
                        self.pool.requeue(outcome.frame, PageQueue::Active);
                        self.counters.speculative_hits += 1;
                    }
                    _ => {}
                }
            }
        }
        self.pool.set_referenced(outcome.frame, true);
        // Only a page-in or a reclaim changes what the pager holds; other faults move frames
        // between queues, so the level is recomputed from the last pager figure.
        if reclaimed || matches!(outcome.kind, FaultKind::PageIn) {
            self.update_pressure();
        } else {
            self.apply_pressure();
        }
        Ok(outcome)
    }

    fn free_target(&self) -> u64 {
        self.pool.counts().total() * u64::from(self.targets.free_percent) / 100
    }

    /// One incremental run of the pageout daemon, looking at no more than `budget` frames:
    /// ages active pages onto the inactive queue (clearing their reference bits), then, while
    /// free frames are below target, reclaims from the speculative and inactive queues —
    /// referenced pages are reactivated (second chance), volatile purgeable objects are
    /// purged, and other pages go to their pager (anonymous pages to the compressor).
    pub fn pageout_step(&mut self, budget: u64) -> PageoutStep {
        let target = self.free_target();
        let step = self.reclaim(target, budget);
        self.update_pressure();
        step
    }

    fn reclaim(&mut self, free_target: u64, budget: u64) -> PageoutStep {
        let mut step = PageoutStep::default();
        // Pages throttled by a full pager get another chance once it has room again.
        if self.pager_stats().fullness_percent < 90 {
            let n = usize::try_from(budget).unwrap_or(usize::MAX);
            for f in self.pool.oldest(PageQueue::Throttled, n) {
                self.pool.requeue(f.frame, PageQueue::Inactive);
            }
        }
        let counts = self.pool.counts();
        // Aging: keep the inactive queue at its share of the pageable pages.
        let pageable = counts.active + counts.inactive + counts.speculative;
        let inactive_target = pageable * u64::from(self.targets.inactive_percent) / 100;
        let want = inactive_target.saturating_sub(counts.inactive + counts.speculative);
        let n = usize::try_from(want.min(budget)).unwrap_or(usize::MAX);
        for frame in self.pool.oldest(PageQueue::Active, n) {
            step.scanned += 1;
            self.harvest(&frame);
            self.pool.set_referenced(frame.frame, false);
            if self.pool.requeue(frame.frame, PageQueue::Inactive) {
                step.deactivated += 1;
                self.counters.deactivations += 1;
            }
        }
        // Reclaim.
        while self.pool.counts().free < free_target && step.scanned < budget {
            let batch = usize::try_from((budget - step.scanned).min(32)).unwrap_or(32);
            let mut victims = self.pool.oldest(PageQueue::Speculative, batch);
            if victims.is_empty() {
                victims = self.pool.oldest(PageQueue::Inactive, batch);
            }
            if victims.is_empty() {
                // Nothing aged yet: age the oldest active pages without a second chance.
                let active = self.pool.oldest(PageQueue::Active, batch);
                if active.is_empty() {
                    break;
                }
                for f in &active {
                    step.scanned += 1;
                    self.harvest(f);
                    self.pool.set_referenced(f.frame, false);
                    if self.pool.requeue(f.frame, PageQueue::Inactive) {
                        step.deactivated += 1;
                        self.counters.deactivations += 1;
                    }
                }
                continue;
            }
            for victim in victims {
                step.scanned += 1;
                self.evict(&victim, &mut step);
                if self.pool.counts().free >= free_target || step.scanned >= budget {
                    break;
                }
            }
        }
        step
    }

    /// Reads and clears the accessed bits of every translation of `frame`; returns whether
    /// any was set or the software bit is.
    fn harvest(&mut self, frame: &FrameState) -> bool {
        let mut referenced = frame.referenced;
        let ps = F::GRANULE.bytes();
        for &(space, va) in &frame.mappings {
            if let Some(s) = self.spaces.get_mut(&space) {
                let end = VirtAddr::new_truncate(va.as_u64() + ps, F::VA_WIDTH);
                let clear = AccessState {
                    accessed: true,
                    dirty: false,
                };
                let _ = s.map.pmap_mut().harvest(va, end, clear, |m| {
                    referenced |= m.access.accessed;
                });
            }
        }
        referenced
    }

    fn evict(&mut self, victim: &FrameState, step: &mut PageoutStep) {
        let fresh = self.pool.state(victim.frame);
        let Some(fresh) = fresh else { return };
        if fresh.queue == PageQueue::Free || fresh.queue == PageQueue::Wired {
            return;
        }
        if self.harvest(&fresh) {
            self.pool.set_referenced(fresh.frame, false);
            self.pool.requeue(fresh.frame, PageQueue::Active);
            step.reactivated += 1;
            self.counters.reactivations += 1;
            return;
        }
        // The owner (checked: its page at the offset is still this frame).
        let owner = fresh.owner.as_ref().and_then(|(w, off)| {
            let object = w.upgrade()?;
            let page = object.page(*off).ok()??;
            (page.frame == fresh.frame).then_some((object, *off))
        });
        let Some((object, offset)) = owner else {
            // Not (or no longer) an object page we can find: leave it for later.
            self.pool.requeue(fresh.frame, PageQueue::Active);
            step.skipped += 1;
            return;
        };
        // Disconnect every translation first (each pmap flushes before returning). A page
        // written through a translation is not known dirty to its object, and a clean page
        // whose pager holds a copy is dropped without I/O: so a frame that had a writable
        // translation since it was allocated (`modified`, kept by the pmap observer) counts
        // as written. Hardware dirty bits would allow less I/O, but not every MMU (nor a
        // simulator) keeps them.
        let mut written = fresh.modified;
        for &(space, va) in &fresh.mappings {
            if let Some(m) = self
                .spaces
                .get(&space)
                .and_then(|s| s.map.pmap().lookup(va))
            {
                written |= m.access.dirty || m.attrs.prot().contains(VmProt::WRITE);
            }
        }
        self.disconnect(&fresh.mappings);
        if written {
            let _ = object.update_page(offset, PageFlags::DIRTY, PageFlags::empty());
        }
        if object.purgeable_state() == Some(PurgeableState::Volatile) {
            // Purging frees every page of the object: disconnect them all first.
            let mut frames = Vec::new();
            object.for_each_page(|_, page| frames.push(page.frame));
            for frame in frames {
                if let Some(state) = self.pool.state(frame) {
                    self.disconnect(&state.mappings);
                }
            }
            if let Ok(n) = object.purge() {
                step.purged += n;
                self.counters.purged += n;
                return;
            }
        }
        if object.pager().is_none() && object.kind() == ObjectKind::Internal {
            let attached = self.pager.as_ref().map(|p| p.attach(&object));
            if !matches!(attached, Some(Ok(()))) || object.pager().is_none() {
                self.keep(&fresh, step);
                return;
            }
        }
        match object.page_out(offset) {
            Ok(machvm_vm_object::PageOutOutcome::PagedOut) => {
                step.paged_out += 1;
                self.counters.pageouts += 1;
            }
            Ok(_) => {
                step.dropped += 1;
                self.counters.dropped += 1;
            }
            Err(ObjectError::Pager(machvm_vm_object::PagerError::NoSpace)) => {
                // The pager is full: the page waits on the throttled queue until it has room.
                self.pool.requeue(fresh.frame, PageQueue::Throttled);
                step.throttled += 1;
            }
            Err(_) => self.keep(&fresh, step),
        }
    }

    /// Removes the translations `mappings` (each pmap flushes before returning).
    fn disconnect(&mut self, mappings: &[(SpaceId, VirtAddr)]) {
        let ps = F::GRANULE.bytes();
        for &(space, va) in mappings {
            if let Some(s) = self.spaces.get_mut(&space) {
                let end = VirtAddr::new_truncate(va.as_u64() + ps, F::VA_WIDTH);
                s.map.pmap_mut().remove(va, end);
            }
        }
    }

    fn keep(&self, frame: &FrameState, step: &mut PageoutStep) {
        self.pool.requeue(frame.frame, PageQueue::Active);
        step.skipped += 1;
    }

    /// Recomputes the pressure level from the queues and the pager's current fullness, and
    /// tells the callbacks when it changed.
    fn update_pressure(&mut self) {
        self.pager_fullness = self.pager_stats().fullness_percent;
        self.apply_pressure();
    }

    /// Recomputes the pressure level from the queues and the pager fullness of the last
    /// [`update_pressure`](Self::update_pressure) (the fault path, which must not ask the
    /// pager for statistics on every fault).
    fn apply_pressure(&mut self) {
        let counts = self.pool.counts();
        let (old, new) = self.pressure.update(&counts, self.pager_fullness);
        if old != new {
            for cb in &mut self.callbacks {
                cb(old, new);
            }
        }
    }
}

impl<F, M, A, T> Drop for VmSystem<F, M, A, T>
where
    F: Format,
    M: PhysMapper + Clone + Send + Sync + 'static,
    A: FrameAllocator + Clone,
    T: FlushProvider,
{
    fn drop(&mut self) {
        let ids: Vec<SpaceId> = self.spaces.keys().copied().collect();
        for id in ids {
            let _ = self.destroy_space(id);
        }
    }
}
