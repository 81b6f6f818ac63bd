//! [`KernelPages`]: kernel memory for zones (XNU's `kmem`), mapped page by page into a window
//! of a real page table, so that zone guard pages and read-only zones are enforced by the MMU.
//!
//! [`KernelPages`] implements `machvm-zone-alloc`'s [`PageSource`]:
//!
//! - [`allocate`](PageSource::allocate) finds room in its virtual window (first fit, aligned
//!   as asked, never overlapping a live allocation), takes frames from a [`FrameAllocator`]
//!   and maps them read-write, not executable, in the page table. If anything fails, what it
//!   mapped is unmapped and flushed and the frames it took go back: nothing changes.
//! - [`protect`](PageSource::protect) changes whole pages of one live allocation:
//!   [`PageAccess::None`] removes their translations (the frames stay with the allocation),
//!   [`PageAccess::ReadOnly`] and [`PageAccess::ReadWrite`] rewrite the leaf entries (putting
//!   removed pages back on their frames). The flush it owes is completed through the flush
//!   hook before it returns, so a guard page faults on the next access on every CPU the hook
//!   covers, and a read-only page on the next write.
//! - [`deallocate`](PageSource::deallocate) unmaps, flushes, frees the page-table frames the
//!   unmap emptied, and only then gives the data frames back.
//!
//! The page-table edits go through the same engine calls as [`TablePmap`](crate::pmap::TablePmap)
//! (`map`, `protect_range`, `unmap_range`, then [`PageTable::finish`] with the hook), on a
//! table the kernel shares behind a lock: the kernel keeps using it for everything else.
//!
//! How the code that uses the memory reaches it is a [`PageView`]:
//!
//! - [`Mmu`] (a kernel): the pointers *are* the window's virtual addresses; the table is the
//!   one the CPUs run on, so every access goes through the entries `KernelPages` wrote.
//! - [`PhysView`] (host tests, feature-free): the pointers reach the frames through a
//!   [`PhysMapper`] (each allocation takes one physically contiguous run); the window's
//!   translations are then checked by walking the table, as the `sim` module's CPUs do.
//!
//! # Examples
//!
//! A guarded, read-only zone over kernel pages on simulated memory (needs `std` for the
//! simulated memory only):
//!
//! ```
//! use machvm::kmem::{KernelPages, PhysView};
//! use machvm_addr::{SimPhysMemory, VirtAddr, VmProt};
//! use machvm_page_table::{CountingFlush, PageTable, Region, X86Pml4};
//! use machvm_sync::Mutex;
//! use machvm_zone_alloc::{NoCpuCache, Zone, ZoneConfig, ZoneFlags};
//!
//! let sim = SimPhysMemory::builder().size_bytes(4 << 20).build()?;
//! let table = Mutex::new(PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut &sim)?);
//! let (start, end) = (VirtAddr::new(0xffff_c000_0000_0000), VirtAddr::new(0xffff_c000_0100_0000));
//! let pages = KernelPages::new(&table, start, end, &sim, CountingFlush::default(), PhysView::new(&sim))?;
//!
//! let zone: Zone<_, _, 1> = Zone::new(
//!     ZoneConfig::new("creds", 40).flags(ZoneFlags::READ_ONLY.with(ZoneFlags::GUARD_PAGES)),
//!     &pages,
//!     NoCpuCache,
//! )?;
//! let cred = zone.alloc()?;
//! // SAFETY: `cred` is an allocated element of `zone`.
//! unsafe { zone.mutate(cred, 0, &[1, 2, 3])? };
//! // The element's page is mapped read-only, the chunk's last page not at all.
//! let va = pages.va_of(cred).expect("in the window");
//! let t = table.lock().translate(va)?;
//! assert_eq!(t.mapping().attrs.prot(), VmProt::READ);
//! let chunk = zone.chunk_size() as u64;
//! let guard = VirtAddr::new((va.as_u64() & !(chunk - 1)) + chunk - 4096);
//! assert!(table.lock().translate(guard).is_err());
//! // SAFETY: allocated above, freed once.
//! unsafe { zone.free(cred)? };
//! drop(zone);
//! assert_eq!(pages.stats().frames, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;

use machvm_addr::{FrameAllocator, FrameRequest, PageSize, PhysAddr, PhysMapper, VirtAddr, VmProt};
use machvm_page_table::{FlushHook, Format, PageAttrs, PageTable, PageTableError, PendingFlush};
use machvm_sync::Mutex;
use machvm_zone_alloc::{PageAccess, PageSource, PageSourceError};

/// How the code using [`KernelPages`]' memory reaches it: the pointer an allocation is handed
/// out as.
///
/// # Safety
///
/// Implementers promise that the pointer [`pointer`](Self::pointer) returns for an
/// allocation reaches exactly the `bytes` bytes of the frames `KernelPages` mapped at `va`
/// (for [`CONTIGUOUS`](Self::CONTIGUOUS) views: the run starting at `first_frame`), readable
/// and writable while they are mapped read-write, and through nothing another allocation
/// uses.
pub unsafe trait PageView {
    /// Whether each allocation must be one physically contiguous run of frames (the view
    /// reaches memory by physical address).
    const CONTIGUOUS: bool;

    /// Returns the pointer for an allocation of `bytes` bytes mapped at `va`, whose first
    /// frame is `first_frame`; `None` if the view cannot reach it (the allocation fails with
    /// nothing changed).
    fn pointer(&self, va: VirtAddr, first_frame: PhysAddr, bytes: u64) -> Option<NonNull<u8>>;
}

/// The [`PageView`] of a kernel: the pointer is the virtual address, translated by the MMU
/// through the table [`KernelPages`] edits.
#[derive(Debug, Clone, Copy)]
pub struct Mmu(());

impl Mmu {
    /// Returns the view.
    ///
    /// # Safety
    ///
    /// - the table given to [`KernelPages::new`] is the one the CPUs that use the memory
    ///   translate through (the window's entries are live), and its flush hook invalidates
    ///   the window's translations on every one of those CPUs;
    /// - nothing else maps or unmaps pages in the window while the `KernelPages` exists.
    pub const unsafe fn new() -> Self {
        Self(())
    }
}

// SAFETY: `Mmu::new`'s caller promised that the CPUs translate the window through the table
// `KernelPages` maps the allocation's frames in, read-write; the frames are the
// allocation's own (from the frame allocator, which promises unused frames).
unsafe impl PageView for Mmu {
    const CONTIGUOUS: bool = false;

    fn pointer(&self, va: VirtAddr, _first_frame: PhysAddr, _bytes: u64) -> Option<NonNull<u8>> {
        let addr = usize::try_from(va.as_u64()).ok()?;
        NonNull::new(core::ptr::with_exposed_provenance_mut(addr))
    }
}

/// The [`PageView`] of a host simulation: the pointer reaches the allocation's frames (one
/// contiguous run) through `M`; the window's translations are what a simulated CPU walks.
#[derive(Debug, Clone)]
pub struct PhysView<M: PhysMapper>(M);

impl<M: PhysMapper> PhysView<M> {
    /// Returns the view through `mapper`.
    pub const fn new(mapper: M) -> Self {
        Self(mapper)
    }
}

// SAFETY: the mapper promises that `phys_to_ptr` reaches the frames themselves, readable and
// writable; the run is the allocation's own (from the frame allocator).
unsafe impl<M: PhysMapper> PageView for PhysView<M> {
    const CONTIGUOUS: bool = true;

    fn pointer(&self, _va: VirtAddr, first_frame: PhysAddr, bytes: u64) -> Option<NonNull<u8>> {
        let len = usize::try_from(bytes).ok()?;
        self.0.phys_to_ptr(first_frame, len).ok()
    }
}

/// Why a [`KernelPages`] could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelPagesError {
    /// The window is empty, not aligned to the table's granule, or not inside the region the
    /// table translates (for example in the other half of an aarch64 address space).
    BadWindow {
        /// First address of the window.
        start: u64,
        /// End (exclusive) of the window.
        end: u64,
    },
    /// Something is mapped in the window already.
    WindowInUse {
        /// The first mapped address.
        va: u64,
    },
}

impl fmt::Display for KernelPagesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadWindow { start, end } => write!(
                f,
                "window {start:#x}..{end:#x} is not a granule-aligned part of the table's region"
            ),
            Self::WindowInUse { va } => write!(f, "the window is not empty: {va:#x} is mapped"),
        }
    }
}

impl core::error::Error for KernelPagesError {}

/// Counters of a [`KernelPages`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KernelPagesStats {
    /// Live allocations.
    pub allocations: u64,
    /// Bytes of live allocations.
    pub bytes: u64,
    /// Data frames held (mapped or behind a [`PageAccess::None`] page).
    pub frames: u64,
    /// Pages of live allocations with no translation ([`PageAccess::None`]).
    pub hidden_pages: u64,
    /// Pages of live allocations mapped read-only.
    pub read_only_pages: u64,
    /// Allocations refused for lack of window space, frames or page-table frames.
    pub exhausted: u64,
    /// Calls refused for bad arguments: malformed requests, and `protect` / `deallocate`
    /// of ranges that are not whole pages of one live allocation.
    pub rejected: u64,
    /// Flushes completed through the hook.
    pub flushes: u64,
}

/// One live allocation.
#[derive(Debug)]
struct Allocation {
    va: u64,
    ptr: usize,
    pages: u64,
    /// The first frame of a contiguous run ([`PageView::CONTIGUOUS`]), else unused.
    run: PhysAddr,
    /// The frame of each page (views that are not contiguous), else empty.
    frames: Vec<PhysAddr>,
    /// Per page: the access it has now.
    access: Vec<PageAccess>,
}

impl Allocation {
    fn frame(&self, page: u64, bytes_per_page: u64) -> PhysAddr {
        match self.frames.get(page as usize) {
            Some(&f) => f,
            None => PhysAddr::new_truncate(self.run.as_u64() + page * bytes_per_page),
        }
    }

    fn bytes(&self, page: u64) -> u64 {
        self.pages * page
    }
}

/// The state behind the lock.
struct Inner<A, H> {
    alloc: A,
    hook: H,
    /// Sorted by `va`.
    live: Vec<Allocation>,
    stats: KernelPagesStats,
}

/// A [`PageSource`] over a window of a page table: see the [module documentation](self).
///
/// - `F`, `M`: the table's format and physical mapper; the table is shared behind a
///   [`Mutex`] (the kernel keeps using it);
/// - `A`: where data frames and the window's page-table frames come from;
/// - `H`: flushes the window's translations (for a kernel's global mappings,
///   `machvm_tlb::TlbFlush` with `Asid::KERNEL`);
/// - `V`: how the memory is reached ([`Mmu`] in a kernel, [`PhysView`] on the host).
///
/// Pages are mapped global (kernel memory is the same in every address space), read-write
/// and never executable. The bookkeeping (one record per allocation) comes from the global
/// heap, so a `KernelPages` cannot itself back the global allocator. Dropping it unmaps and
/// frees whatever is still allocated.
///
/// # Examples
///
/// See the [module documentation](self).
pub struct KernelPages<'t, F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook, V: PageView> {
    table: &'t Mutex<PageTable<F, M>>,
    inner: Mutex<Inner<A, H>>,
    view: V,
    start: u64,
    end: u64,
}

impl<F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook, V: PageView> fmt::Debug
    for KernelPages<'_, F, M, A, H, V>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelPages")
            .field("format", &F::NAME)
            .field("start", &format_args!("{:#x}", self.start))
            .field("end", &format_args!("{:#x}", self.end))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<'t, F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook, V: PageView>
    KernelPages<'t, F, M, A, H, V>
{
    /// Creates a page source that maps into `[start, end)` of `table`, with frames from
    /// `alloc`, flushing through `hook`, handing memory out through `view`.
    ///
    /// # Errors
    ///
    /// - [`KernelPagesError::BadWindow`] if the window is empty, not aligned to `F`'s
    ///   granule, or not inside the table's region (in one half);
    /// - [`KernelPagesError::WindowInUse`] if a page of the window is mapped already.
    pub fn new(
        table: &'t Mutex<PageTable<F, M>>,
        start: VirtAddr,
        end: VirtAddr,
        alloc: A,
        hook: H,
        view: V,
    ) -> Result<Self, KernelPagesError> {
        let (s, e) = (start.as_u64(), end.as_u64());
        let page = F::GRANULE.bytes();
        let bad = KernelPagesError::BadWindow { start: s, end: e };
        if s >= e || s % page != 0 || e % page != 0 {
            return Err(bad);
        }
        {
            let pt = table.lock();
            let mut mapped = pt.mappings(start, e - s).map_err(|_| bad)?;
            if let Some(m) = mapped.next() {
                return Err(KernelPagesError::WindowInUse { va: m.va.as_u64() });
            }
        }
        Ok(Self {
            table,
            inner: Mutex::new(Inner {
                alloc,
                hook,
                live: Vec::new(),
                stats: KernelPagesStats::default(),
            }),
            view,
            start: s,
            end: e,
        })
    }

    /// Returns the counters.
    #[must_use]
    pub fn stats(&self) -> KernelPagesStats {
        self.inner.lock().stats
    }

    /// Returns the window `[start, end)`.
    #[must_use]
    pub fn window(&self) -> (VirtAddr, VirtAddr) {
        (
            VirtAddr::new_truncate(self.start, F::VA_WIDTH),
            VirtAddr::new_truncate(self.end, F::VA_WIDTH),
        )
    }

    /// Returns the virtual address in the window of the byte `ptr` points at, if `ptr` lies
    /// in a live allocation (with [`Mmu`] that is `ptr` itself).
    #[must_use]
    pub fn va_of(&self, ptr: NonNull<u8>) -> Option<VirtAddr> {
        let page = F::GRANULE.bytes();
        let inner = self.inner.lock();
        let p = ptr.as_ptr().addr();
        inner
            .live
            .iter()
            .find(|a| p >= a.ptr && ((p - a.ptr) as u64) < a.bytes(page))
            .map(|a| VirtAddr::new_truncate(a.va + (p - a.ptr) as u64, F::VA_WIDTH))
    }

    /// Calls `f` with the flush hook (to read its counters).
    pub fn with_hook<R>(&self, f: impl FnOnce(&mut H) -> R) -> R {
        f(&mut self.inner.lock().hook)
    }

    fn va(a: u64) -> VirtAddr {
        VirtAddr::new_truncate(a, F::VA_WIDTH)
    }

    fn attrs(&self, access: PageAccess) -> Option<PageAttrs> {
        let prot = match access {
            PageAccess::ReadOnly => VmProt::READ,
            PageAccess::ReadWrite => VmProt::READ | VmProt::WRITE,
            _ => return None,
        };
        // Kernel memory is the same in every address space.
        Some(PageAttrs::new(prot).global(true))
    }

    /// First fit: the lowest `align`-aligned address with `bytes` free bytes, and the index
    /// in `live` to insert its record at.
    fn find_space(&self, live: &[Allocation], bytes: u64, align: u64) -> Option<(u64, usize)> {
        let page = F::GRANULE.bytes();
        let mut cursor = self.start;
        for (i, a) in live.iter().enumerate() {
            let at = cursor.checked_next_multiple_of(align)?;
            if at.checked_add(bytes)? <= a.va {
                return Some((at, i));
            }
            cursor = a.va + a.bytes(page);
        }
        let at = cursor.checked_next_multiple_of(align)?;
        (at.checked_add(bytes)? <= self.end).then_some((at, live.len()))
    }

    /// Takes the frames of a new allocation of `pages` pages (nothing is kept on failure).
    fn take_frames(
        alloc: &mut A,
        pages: u64,
        align: u64,
    ) -> Result<(PhysAddr, Vec<PhysAddr>), PageSourceError> {
        if V::CONTIGUOUS {
            // The pointer is the frames' own address: the run must be aligned like the
            // allocation. Frame requests align to page sizes only, so round up to one.
            let align = PageSize::ALL
                .iter()
                .copied()
                .find(|s| s.bytes() >= align)
                .ok_or(PageSourceError::Exhausted)?;
            let request = FrameRequest::new(F::GRANULE, pages)
                .and_then(|r| r.with_align(align))
                .map_err(|_| PageSourceError::Exhausted)?;
            let run = alloc
                .allocate(request)
                .map_err(|_| PageSourceError::Exhausted)?;
            return Ok((run, Vec::new()));
        }
        let mut frames = Vec::new();
        frames
            .try_reserve_exact(pages as usize)
            .map_err(|_| PageSourceError::Exhausted)?;
        for _ in 0..pages {
            match alloc.allocate(FrameRequest::single(F::GRANULE)) {
                Ok(f) => frames.push(f),
                Err(_) => {
                    Self::free_frames(alloc, PhysAddr::zero(), &frames, pages);
                    return Err(PageSourceError::Exhausted);
                }
            }
        }
        Ok((PhysAddr::zero(), frames))
    }

    /// Gives frames back: the run (contiguous views) or each of `frames`.
    fn free_frames(alloc: &mut A, run: PhysAddr, frames: &[PhysAddr], pages: u64) {
        if V::CONTIGUOUS {
            if let Ok(request) = FrameRequest::new(F::GRANULE, pages) {
                // SAFETY: the run came from `allocate` with `pages` frames of the granule (the
                // alignment is not part of the deallocation contract) and no translation or
                // pointer to it is used any more.
                let _ = unsafe { alloc.deallocate(run, request) };
            }
            return;
        }
        for &f in frames {
            // SAFETY: each frame came from a single-frame `allocate` and its translation was
            // removed and flushed (or never made).
            let _ = unsafe { alloc.deallocate(f, FrameRequest::single(F::GRANULE)) };
        }
    }

    /// Completes `pending` through the hook, freeing the tables it unlinked afterwards.
    fn finish(pt: &PageTable<F, M>, inner: &mut Inner<A, H>, pending: PendingFlush) {
        let owes = pending.range().is_some() || !pending.freed_tables().is_empty();
        // Freeing fails only if the mapper cannot reach a table frame it reached when the
        // table was built; the frame is then kept, never reused while linked.
        let _ = pt.finish(pending, &mut inner.hook, &mut inner.alloc);
        if owes {
            inner.stats.flushes += 1;
        }
    }

    /// Removes every translation of `[va, va + len)` and completes the flush.
    fn unmap(pt: &mut PageTable<F, M>, inner: &mut Inner<A, H>, va: u64, len: u64) {
        // Only granule pages are ever mapped in the window, so no split (the one thing that
        // can fail) is needed.
        if let Ok(pending) = pt.unmap_range(Self::va(va), len, &mut inner.hook, &mut inner.alloc) {
            Self::finish(pt, inner, pending);
        }
    }

    /// Maps the pages `pages` (indices) of the allocation at `va` on their frames (`frame`)
    /// with `attrs`; on failure unmaps what it mapped (flushed) and returns the error.
    fn map_pages(
        pt: &mut PageTable<F, M>,
        inner: &mut Inner<A, H>,
        va: u64,
        frame: impl Fn(u64) -> PhysAddr,
        pages: impl Iterator<Item = u64> + Clone,
        attrs: &PageAttrs,
    ) -> Result<(), PageSourceError> {
        let page = F::GRANULE.bytes();
        let mut all: Option<PendingFlush> = None;
        let mut failed = None;
        for i in pages.clone() {
            match pt.map(
                Self::va(va + i * page),
                frame(i),
                F::GRANULE,
                attrs,
                &mut inner.alloc,
            ) {
                Ok(p) => match all.as_mut() {
                    Some(into) => pt.merge_pending(into, p),
                    None => all = Some(p),
                },
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        if let Some(p) = all {
            Self::finish(pt, inner, p);
        }
        let Some((stop, e)) = failed else {
            return Ok(());
        };
        for i in pages.take_while(|&i| i != stop) {
            Self::unmap(pt, inner, va + i * page, page);
        }
        Err(match e {
            PageTableError::FrameAllocation(_) | PageTableError::Mapper(_) => {
                PageSourceError::Exhausted
            }
            _ => PageSourceError::BadRequest {
                bytes: page as usize,
                align: page as usize,
            },
        })
    }

    /// Finds the live allocation holding all of `[ptr, ptr + bytes)` (whole pages): its
    /// index and the first page.
    fn locate(
        &self,
        live: &[Allocation],
        ptr: NonNull<u8>,
        bytes: usize,
    ) -> Option<(usize, u64, u64)> {
        let page = F::GRANULE.bytes();
        let p = ptr.as_ptr().addr();
        let len = bytes as u64;
        if len == 0 || len % page != 0 || p as u64 % page != 0 {
            return None;
        }
        let i = live
            .iter()
            .position(|a| p >= a.ptr && ((p - a.ptr) as u64) < a.bytes(page))?;
        let a = &live[i];
        let off = (p - a.ptr) as u64;
        let end = off.checked_add(len)?;
        (end <= a.bytes(page)).then_some((i, off / page, len / page))
    }
}

// SAFETY: `allocate` hands out memory mapped read-write on frames only this allocation holds
// (from the frame allocator, which promises unused frames), reached through the view's
// pointer (the `PageView` promise), aligned to `align` (the window address, and for
// contiguous views the run, are aligned to it); it stays so until `deallocate`.
// `protect` only changes whole pages of one live allocation.
unsafe impl<F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook, V: PageView> PageSource
    for KernelPages<'_, F, M, A, H, V>
{
    fn page_size(&self) -> usize {
        F::GRANULE.bytes() as usize
    }

    fn allocate(&self, bytes: usize, align: usize) -> Result<NonNull<u8>, PageSourceError> {
        let page = F::GRANULE.bytes();
        let mut inner = self.inner.lock();
        let bad = PageSourceError::BadRequest { bytes, align };
        if bytes == 0
            || bytes as u64 % page != 0
            || !align.is_power_of_two()
            || (align as u64) < page
        {
            inner.stats.rejected += 1;
            return Err(bad);
        }
        let (len, pages) = (bytes as u64, bytes as u64 / page);
        let Some((va, at)) = self.find_space(&inner.live, len, align as u64) else {
            inner.stats.exhausted += 1;
            return Err(PageSourceError::Exhausted);
        };
        let mut access = Vec::new();
        if inner.live.try_reserve(1).is_err() || access.try_reserve_exact(pages as usize).is_err() {
            inner.stats.exhausted += 1;
            return Err(PageSourceError::Exhausted);
        }
        access.resize(pages as usize, PageAccess::ReadWrite);
        let (run, frames) = match Self::take_frames(&mut inner.alloc, pages, align as u64) {
            Ok(f) => f,
            Err(e) => {
                inner.stats.exhausted += 1;
                return Err(e);
            }
        };
        let rec = Allocation {
            va,
            ptr: 0,
            pages,
            run,
            frames,
            access,
        };
        let Some(ptr) = self.view.pointer(Self::va(va), rec.frame(0, page), len) else {
            Self::free_frames(&mut inner.alloc, rec.run, &rec.frames, pages);
            inner.stats.exhausted += 1;
            return Err(PageSourceError::Exhausted);
        };
        let rw = self
            .attrs(PageAccess::ReadWrite)
            .unwrap_or_else(|| unreachable!());
        let mapped = {
            let mut pt = self.table.lock();
            Self::map_pages(
                &mut pt,
                &mut inner,
                va,
                |i| rec.frame(i, page),
                0..pages,
                &rw,
            )
        };
        if let Err(e) = mapped {
            Self::free_frames(&mut inner.alloc, rec.run, &rec.frames, pages);
            inner.stats.exhausted += 1;
            return Err(e);
        }
        let rec = Allocation {
            ptr: ptr.as_ptr().addr(),
            ..rec
        };
        inner.live.insert(at, rec);
        inner.stats.allocations += 1;
        inner.stats.bytes += len;
        inner.stats.frames += pages;
        Ok(ptr)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, bytes: usize, _align: usize) {
        let page = F::GRANULE.bytes();
        let mut inner = self.inner.lock();
        let found = self
            .locate(&inner.live, ptr, bytes)
            .filter(|&(i, first, n)| first == 0 && n == inner.live[i].pages);
        let Some((i, _, _)) = found else {
            // Not an allocation of this source: refuse rather than unmap someone else's pages.
            inner.stats.rejected += 1;
            return;
        };
        let rec = inner.live.remove(i);
        {
            let mut pt = self.table.lock();
            Self::unmap(&mut pt, &mut inner, rec.va, rec.bytes(page));
        }
        // The translations are gone from every TLB the hook covers: the frames can go.
        Self::free_frames(&mut inner.alloc, rec.run, &rec.frames, rec.pages);
        let s = &mut inner.stats;
        s.allocations -= 1;
        s.bytes -= rec.bytes(page);
        s.frames -= rec.pages;
        for a in &rec.access {
            match a {
                PageAccess::None => s.hidden_pages -= 1,
                PageAccess::ReadOnly => s.read_only_pages -= 1,
                _ => {}
            }
        }
    }

    fn can_protect(&self) -> bool {
        true
    }

    fn protect(
        &self,
        ptr: NonNull<u8>,
        bytes: usize,
        access: PageAccess,
    ) -> Result<(), PageSourceError> {
        let page = F::GRANULE.bytes();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let Some((i, first, n)) = self.locate(&inner.live, ptr, bytes) else {
            inner.stats.rejected += 1;
            return Err(PageSourceError::BadRequest {
                bytes,
                align: page as usize,
            });
        };
        let va = inner.live[i].va;
        let range = first..first + n;
        let mut pt = self.table.lock();
        match self.attrs(access) {
            None => {
                Self::unmap(&mut pt, inner, va + first * page, n * page);
            }
            Some(attrs) => {
                // Pages without a translation go back on their frames first (undone if a
                // table frame is missing), then every page of the range gets `attrs`.
                let hidden: Vec<u64> = {
                    let rec = &inner.live[i];
                    range
                        .clone()
                        .filter(|&p| rec.access[p as usize] == PageAccess::None)
                        .collect()
                };
                let frames: Vec<PhysAddr> = hidden
                    .iter()
                    .map(|&p| inner.live[i].frame(p, page))
                    .collect();
                let frame_of = |p: u64| {
                    hidden
                        .iter()
                        .position(|&h| h == p)
                        .map_or(PhysAddr::zero(), |k| frames[k])
                };
                Self::map_pages(&mut pt, inner, va, frame_of, hidden.iter().copied(), &attrs)?;
                match pt.protect_range(
                    Self::va(va + first * page),
                    n * page,
                    &attrs,
                    &mut inner.hook,
                    &mut inner.alloc,
                ) {
                    Ok(pending) => Self::finish(&pt, inner, pending),
                    Err(_) => {
                        // Only granule pages are mapped here, so no split is needed and
                        // nothing can fail; should it, put the hidden pages back as they were.
                        for &p in &hidden {
                            Self::unmap(&mut pt, inner, va + p * page, page);
                        }
                        return Err(PageSourceError::Exhausted);
                    }
                }
            }
        }
        drop(pt);
        let Inner { live, stats, .. } = inner;
        for p in range {
            let old = core::mem::replace(&mut live[i].access[p as usize], access);
            match old {
                PageAccess::None => stats.hidden_pages -= 1,
                PageAccess::ReadOnly => stats.read_only_pages -= 1,
                _ => {}
            }
            match access {
                PageAccess::None => stats.hidden_pages += 1,
                PageAccess::ReadOnly => stats.read_only_pages += 1,
                _ => {}
            }
        }
        Ok(())
    }
}

impl<F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook, V: PageView> Drop
    for KernelPages<'_, F, M, A, H, V>
{
    fn drop(&mut self) {
        let page = F::GRANULE.bytes();
        let inner = self.inner.get_mut();
        let live = core::mem::take(&mut inner.live);
        if live.is_empty() {
            return;
        }
        let mut pt = self.table.lock();
        for rec in live {
            Self::unmap(&mut pt, inner, rec.va, rec.bytes(page));
            Self::free_frames(&mut inner.alloc, rec.run, &rec.frames, rec.pages);
        }
    }
}
