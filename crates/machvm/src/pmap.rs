//! [`TablePmap`]: the [`Pmap`] of a [`VmMap`](machvm_vm_map::VmMap) over a real
//! [`PageTable`] and a TLB flush hook.
//!
//! Every change that can leave an old translation in a TLB (unmap, lower protection, a new
//! frame for a mapped page) goes through the page-table crate's [`PendingFlush`] and is
//! completed through the space's [`FlushHook`] before the call returns; page-table frames the
//! change emptied are given back only after that flush. A new frame for a mapped page is
//! installed break-before-make: the old entry is removed and flushed first, so no CPU can hold
//! both translations.

use core::fmt;

use machvm_addr::{FrameAllocator, PageSize, PhysAddr, PhysMapper, VirtAddr, VmProt};
use machvm_page_table::{
    AccessState, FlushHook, Format, Mapping, PageAttrs, PageTable, PageTableError, PendingFlush,
    Region, SharedRoot, SwFlags,
};
use machvm_vm_map::{Pmap, PmapError};

/// Why a [`TablePmap`] could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PmapSetupError {
    /// The format's granule is not the page size asked for (a map of 16 KiB pages needs a
    /// 16 KiB-granule format).
    GranuleMismatch {
        /// The page size asked for.
        page_size: PageSize,
        /// The format's granule.
        granule: PageSize,
    },
    /// The window is empty, unaligned, or not inside the region the format translates.
    BadWindow {
        /// First address of the window.
        start: u64,
        /// End (exclusive) of the window.
        end: u64,
    },
    /// The page table could not be created (no frame for its root, or the format cannot
    /// translate the region), or shared root entries could not be linked into it.
    Table(PageTableError),
    /// Shared root entries ([`TablePmap::link_root`]) overlap the pmap's window.
    SharedOverlap {
        /// First address of the shared range.
        start: u64,
        /// Bytes of the shared range.
        len: u64,
    },
}

impl fmt::Display for PmapSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GranuleMismatch { page_size, granule } => write!(
                f,
                "page size {page_size} does not match the format's granule {granule}"
            ),
            Self::BadWindow { start, end } => {
                write!(
                    f,
                    "window {start:#x}..{end:#x} is not a page-aligned part of the region"
                )
            }
            Self::Table(e) => write!(f, "page table: {e}"),
            Self::SharedOverlap { start, len } => write!(
                f,
                "shared root entries {start:#x}..{:#x} overlap the window",
                start.wrapping_add(*len)
            ),
        }
    }
}

impl core::error::Error for PmapSetupError {}

/// Hears about every translation a [`TablePmap`] creates or removes: how a VM system keeps
/// its reverse map (which translations map a frame) and its wired page queue.
///
/// `()` ignores everything.
pub trait PmapObserver {
    /// `va` now maps `frame` (`wired`: the translation is wired).
    fn mapped(&mut self, va: VirtAddr, frame: PhysAddr, wired: bool) {
        let _ = (va, frame, wired);
    }

    /// `va` no longer maps `frame` (`wired`: the translation was wired).
    fn unmapped(&mut self, va: VirtAddr, frame: PhysAddr, wired: bool) {
        let _ = (va, frame, wired);
    }

    /// The translation of `va` to `frame` became wired (`true`) or pageable.
    fn wiring(&mut self, va: VirtAddr, frame: PhysAddr, wired: bool) {
        let _ = (va, frame, wired);
    }

    /// The translation of `va` to `frame` allows writes (new, or upgraded): the frame may be
    /// modified from now on without any fault telling the VM layer.
    fn writable(&mut self, va: VirtAddr, frame: PhysAddr) {
        let _ = (va, frame);
    }
}

impl PmapObserver for () {}

/// Counters of a [`TablePmap`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PmapStats {
    /// Pages mapped now.
    pub resident: u64,
    /// Pages mapped now that are wired.
    pub wired: u64,
    /// Translations created where none was.
    pub entered: u64,
    /// Translations replaced by one to another frame (break-before-make).
    pub replaced: u64,
    /// Translations whose rights changed in place.
    pub reprotected: u64,
    /// Translations removed.
    pub removed: u64,
    /// Flushes completed through the hook (one per operation that owed one, however many
    /// pages it covered).
    pub flushes: u64,
    /// Operations refused with [`PmapError::NoMemory`] (nothing changed).
    pub no_memory: u64,
}

/// A [`Pmap`] over a [`PageTable`] of format `F`.
///
/// - `M` reaches table frames (the kernel's direct map, or `&SimPhysMemory` on the host);
/// - `A` allocates and frees page-table frames (data frames belong to the VM objects);
/// - `H` flushes this address space's translations on every CPU that may hold them
///   (`machvm_tlb::TlbFlush` on one CPU, `machvm_tlb::ShootdownFlush` on several).
///
/// The pmap serves one window `[start, end)` of virtual addresses (the map's bounds); entries
/// carry the user bit when built with [`new_user`](Self::new_user). Protections the format
/// cannot express are widened the way the hardware would read them: a write-only or
/// execute-only page becomes readable as well (`x86_64` has no write-only or execute-only
/// pages). A translation with no rights at all is never installed; the page faults instead.
/// Wiring is kept in the entry's [`SwFlags::WIRED`] bit.
///
/// Dropping the pmap removes every translation (with a flush) and frees every table frame.
///
/// # Examples
///
/// ```
/// use machvm::pmap::TablePmap;
/// use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_page_table::{CountingFlush, X86Pml4};
/// use machvm_vm_map::Pmap;
///
/// let sim = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let (start, end) = (VirtAddr::new(0x40_0000), VirtAddr::new(0x80_0000));
/// let mut pmap = TablePmap::<X86Pml4, _, _, _>::new_user(
///     PageSize::Size4KiB, start, end, &sim, &sim, CountingFlush::default(),
/// )?;
/// let frame = PhysAddr::new(0x8_0000);
/// pmap.enter(start, frame, VmProt::READ | VmProt::WRITE, false)?;
/// assert_eq!(pmap.lookup(start).map(|m| m.pa), Some(frame));
///
/// // Write-protect it (copy on write): the old writable translation is flushed.
/// pmap.protect(start, VirtAddr::new(0x40_1000), VmProt::READ);
/// assert_eq!(pmap.lookup(start).map(|m| m.attrs.prot()), Some(VmProt::READ));
/// assert_eq!(pmap.hook().invalidations, 1);
/// pmap.remove(start, end);
/// assert_eq!(pmap.stats().resident, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TablePmap<F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook, O = ()>
where
    O: PmapObserver,
{
    table: Option<PageTable<F, M>>,
    alloc: A,
    hook: H,
    observer: O,
    start: u64,
    end: u64,
    user: bool,
    stats: PmapStats,
}

impl<F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook, O: PmapObserver> fmt::Debug
    for TablePmap<F, M, A, H, O>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TablePmap")
            .field("format", &F::NAME)
            .field("start", &format_args!("{:#x}", self.start))
            .field("end", &format_args!("{:#x}", self.end))
            .field("user", &self.user)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook> TablePmap<F, M, A, H, ()> {
    /// Creates a pmap for user pages of `page_size` in `[start, end)`, with a new page table
    /// whose frames come from `alloc`.
    ///
    /// The table translates the lower half on aarch64 formats (TTBR0) and both halves on
    /// `x86_64` formats.
    ///
    /// # Errors
    ///
    /// - [`PmapSetupError::GranuleMismatch`] if `page_size` is not `F`'s granule;
    /// - [`PmapSetupError::BadWindow`] if the window is empty, not page-aligned or not in the
    ///   lower half;
    /// - [`PmapSetupError::Table`] if the root table cannot be allocated.
    pub fn new_user(
        page_size: PageSize,
        start: VirtAddr,
        end: VirtAddr,
        mapper: M,
        alloc: A,
        hook: H,
    ) -> Result<Self, PmapSetupError> {
        let region = if F::supports_region(Region::Both) {
            Region::Both
        } else {
            Region::Lower
        };
        Self::with_region(page_size, start, end, region, true, mapper, alloc, hook, ())
    }
}

impl<F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook, O: PmapObserver>
    TablePmap<F, M, A, H, O>
{
    /// Creates a pmap for pages of `page_size` in `[start, end)` with a new table translating
    /// `region`; `user` sets the user-accessible bit of every entry; `observer` hears about
    /// every translation made or removed.
    ///
    /// # Errors
    ///
    /// As [`new_user`](Self::new_user); the window must lie in the lower half (addresses
    /// below the half size) or the upper half of `region`.
    #[allow(clippy::too_many_arguments)]
    pub fn with_region(
        page_size: PageSize,
        start: VirtAddr,
        end: VirtAddr,
        region: Region,
        user: bool,
        mapper: M,
        mut alloc: A,
        hook: H,
        observer: O,
    ) -> Result<Self, PmapSetupError> {
        if page_size != F::GRANULE {
            return Err(PmapSetupError::GranuleMismatch {
                page_size,
                granule: F::GRANULE,
            });
        }
        let (s, e) = (start.as_u64(), end.as_u64());
        let half = F::VA_WIDTH.half_size();
        let page = page_size.bytes();
        let in_lower = e <= half;
        let in_upper = s >= half.wrapping_neg();
        let region_ok = match region {
            Region::Lower => in_lower,
            Region::Upper => in_upper,
            Region::Both => in_lower || in_upper,
            _ => false,
        };
        if s >= e || s % page != 0 || e % page != 0 || !region_ok {
            return Err(PmapSetupError::BadWindow { start: s, end: e });
        }
        let table =
            PageTable::<F, M>::new(region, mapper, &mut alloc).map_err(PmapSetupError::Table)?;
        Ok(Self {
            table: Some(table),
            alloc,
            hook,
            observer,
            start: s,
            end: e,
            user,
            stats: PmapStats::default(),
        })
    }

    /// The page table (for the CPU: its root register value; for tests: walks).
    #[must_use]
    pub fn table(&self) -> &PageTable<F, M> {
        // Only `Drop` takes the table out.
        self.table.as_ref().unwrap_or_else(|| unreachable!())
    }

    fn table_mut(&mut self) -> &mut PageTable<F, M> {
        self.table.as_mut().unwrap_or_else(|| unreachable!())
    }

    /// The value to load into the root register (CR3 / TTBR0) to run this space with `asid`.
    #[must_use]
    pub fn root_register(&self, asid: u16) -> u64 {
        self.table().root_register(asid)
    }

    /// Links root entries another table lends (the kernel's mappings, see
    /// [`PageTable::link_root`]) into this pmap's table, so that the CPU keeps running the
    /// kernel while it runs this space. The pmap never edits outside its window, and drops
    /// the link before freeing its table.
    ///
    /// # Errors
    ///
    /// - [`PmapSetupError::SharedOverlap`] if the shared range overlaps the window;
    /// - [`PmapSetupError::Table`] with what [`PageTable::link_root`] returns.
    ///
    /// # Safety
    ///
    /// As [`PageTable::link_root`]: the lender keeps the shared root entries, and every table
    /// below them, until this pmap is dropped or [`unlink_root`](Self::unlink_root) is called.
    #[allow(unsafe_code)] // Forwards `PageTable::link_root`'s contract to the caller.
    pub unsafe fn link_root(&mut self, shared: &SharedRoot<F>) -> Result<(), PmapSetupError> {
        if shared.overlaps(
            VirtAddr::new_truncate(self.start, F::VA_WIDTH),
            self.end - self.start,
        ) {
            return Err(PmapSetupError::SharedOverlap {
                start: shared.start().as_u64(),
                len: shared.size(),
            });
        }
        // SAFETY: the caller's contract is `PageTable::link_root`'s; this pmap edits only its
        // window, which the check above keeps out of the shared range.
        unsafe { self.table_mut().link_root(shared) }.map_err(PmapSetupError::Table)
    }

    /// Clears the root entries [`link_root`](Self::link_root) linked (see
    /// [`PageTable::unlink_root`]) and returns them.
    pub fn unlink_root(&mut self) -> Option<SharedRoot<F>> {
        self.table_mut().unlink_root()
    }

    /// The flush hook.
    #[must_use]
    pub fn hook(&self) -> &H {
        &self.hook
    }

    /// The flush hook, mutably.
    pub fn hook_mut(&mut self) -> &mut H {
        &mut self.hook
    }

    /// The observer.
    #[must_use]
    pub fn observer(&self) -> &O {
        &self.observer
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> PmapStats {
        self.stats
    }

    /// The page size.
    #[must_use]
    pub fn page_size(&self) -> PageSize {
        F::GRANULE
    }

    /// The translation of the page holding `va`, if any.
    #[must_use]
    pub fn lookup(&self, va: VirtAddr) -> Option<Mapping> {
        if !self.in_window(va.as_u64(), 1) {
            return None;
        }
        self.table().translate(va).ok().map(|t| t.mapping())
    }

    /// Reports the accessed / dirty state of every translation in `[start, end)` to `f` and
    /// clears the states selected by `clear` (with the flush that makes the hardware set them
    /// again on the next access): the pageout daemon's reference-bit scan.
    ///
    /// # Errors
    ///
    /// [`PmapError::BadAddress`] if the range is not a page-aligned part of the window.
    pub fn harvest(
        &mut self,
        start: VirtAddr,
        end: VirtAddr,
        clear: AccessState,
        f: impl FnMut(&Mapping),
    ) -> Result<(), PmapError> {
        let len = self.checked_range(start, end)?;
        let pending = self
            .table_mut()
            .harvest(start, len, clear, f)
            .map_err(|_| PmapError::BadAddress)?;
        self.finish(pending);
        Ok(())
    }

    /// Whether `[start, start + len)` is inside the window.
    fn in_window(&self, start: u64, len: u64) -> bool {
        start >= self.start && start.checked_add(len).is_some_and(|e| e <= self.end)
    }

    /// Clamps `[start, end)` to the window and returns its length (0 when nothing is left).
    fn clamp(&self, start: VirtAddr, end: VirtAddr) -> (VirtAddr, u64) {
        let s = start.as_u64().max(self.start);
        let e = end.as_u64().min(self.end);
        let page = F::GRANULE.bytes();
        let (s, e) = (s & !(page - 1), e.saturating_add(page - 1) & !(page - 1));
        (VirtAddr::new_truncate(s, F::VA_WIDTH), e.saturating_sub(s))
    }

    fn checked_range(&self, start: VirtAddr, end: VirtAddr) -> Result<u64, PmapError> {
        let page = F::GRANULE.bytes();
        let (s, e) = (start.as_u64(), end.as_u64());
        if s >= e || s % page != 0 || e % page != 0 || !self.in_window(s, e - s) {
            return Err(PmapError::BadAddress);
        }
        Ok(e - s)
    }

    /// Completes `pending` through the hook and frees the tables it unlinked.
    fn finish(&mut self, pending: PendingFlush) {
        let owes = pending.range().is_some() || !pending.freed_tables().is_empty();
        let Self {
            table, alloc, hook, ..
        } = self;
        let table = table.as_mut().unwrap_or_else(|| unreachable!());
        // Freeing can fail only if the mapper cannot reach a frame it reached when the table
        // was built; the frames are then kept (leaked), never reused while still linked.
        let _ = table.finish(pending, hook, alloc);
        if owes {
            self.stats.flushes += 1;
        }
    }

    /// The entry attributes for `prot`, widened until the format accepts them, or `None` if
    /// `prot` grants nothing.
    fn attrs(&self, prot: VmProt, sw: SwFlags) -> Result<Option<PageAttrs>, PmapError> {
        if prot == VmProt::NONE {
            return Ok(None);
        }
        expressible::<F>(PageAttrs::new(prot).user(self.user).sw(sw))
            .map(Some)
            .map_err(|_| PmapError::BadAddress)
    }

    /// Removes the translations in `[va, va + len)`, flushes them and updates the counters.
    fn unmap(&mut self, va: VirtAddr, len: u64) {
        let (mut removed, mut wired) = (0u64, 0u64);
        let Self {
            table,
            alloc,
            hook,
            observer,
            ..
        } = self;
        let table = table.as_mut().unwrap_or_else(|| unreachable!());
        let mut visit = |m: &Mapping| {
            removed += m.size.bytes() / F::GRANULE.bytes();
            let was_wired = m.attrs.sw_flags().contains(SwFlags::WIRED);
            if was_wired {
                wired += 1;
            }
            if m.access.dirty {
                // Hardware recorded a write the VM layer may not know about.
                observer.writable(m.va, m.pa);
            }
            observer.unmapped(m.va, m.pa, was_wired);
        };
        // Only pages of the granule are ever mapped, so no split (the one thing that can
        // fail) is needed, and the range is inside the window.
        if let Ok(pending) = table.unmap_range_with(va, len, hook, alloc, &mut visit) {
            self.stats.removed += removed;
            self.stats.resident -= removed;
            self.stats.wired -= wired;
            self.finish(pending);
        }
    }

    /// Re-protects the run `[va, va + len)`, whose pages all have `attrs`.
    fn reprotect_run(&mut self, va: VirtAddr, len: u64, attrs: &PageAttrs, pages: u64) {
        let Self {
            table, alloc, hook, ..
        } = self;
        let table = table.as_mut().unwrap_or_else(|| unreachable!());
        if let Ok(pending) = table.protect_range(va, len, attrs, hook, alloc) {
            self.stats.reprotected += pages;
            self.finish(pending);
        }
    }

    /// Applies `change` to the attributes of every translation in `[va, va + len)`, run by
    /// run of equal attributes; a translation left with no rights is removed.
    fn change_attrs(
        &mut self,
        va: VirtAddr,
        len: u64,
        mut change: impl FnMut(&PageAttrs) -> Option<PageAttrs>,
    ) {
        let page = F::GRANULE.bytes();
        let end = va.as_u64() + len;
        let mut cur = va.as_u64();
        while cur < end {
            // The next run: consecutive pages with equal attributes.
            let run = {
                let Ok(mut it) = self
                    .table()
                    .mappings(VirtAddr::new_truncate(cur, F::VA_WIDTH), end - cur)
                else {
                    return;
                };
                let Some(first) = it.next() else { return };
                let mut run_end = first.va.as_u64() + page;
                for m in it {
                    if m.va.as_u64() != run_end || m.attrs != first.attrs {
                        break;
                    }
                    run_end += page;
                }
                (first.va.as_u64(), run_end, first.attrs)
            };
            let (run_start, run_end, old) = run;
            let run_len = run_end - run_start;
            let start = VirtAddr::new_truncate(run_start, F::VA_WIDTH);
            match change(&old) {
                None => self.unmap(start, run_len),
                Some(new) if new == old => {}
                Some(new) => {
                    let pages = run_len / page;
                    let was = old.sw_flags().contains(SwFlags::WIRED);
                    let now = new.sw_flags().contains(SwFlags::WIRED);
                    self.reprotect_run(start, run_len, &new, pages);
                    match (was, now) {
                        (false, true) => self.stats.wired += pages,
                        (true, false) => self.stats.wired -= pages,
                        _ => {}
                    }
                }
            }
            cur = run_end;
        }
    }
}

impl<F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook, O: PmapObserver> Pmap
    for TablePmap<F, M, A, H, O>
{
    fn enter(
        &mut self,
        va: VirtAddr,
        frame: PhysAddr,
        prot: VmProt,
        wired: bool,
    ) -> Result<(), PmapError> {
        let page = F::GRANULE.bytes();
        if !va.is_aligned(page) || !self.in_window(va.as_u64(), page) {
            return Err(PmapError::BadAddress);
        }
        let sw = if wired {
            SwFlags::WIRED
        } else {
            SwFlags::empty()
        };
        let Some(attrs) = self.attrs(prot, sw)? else {
            // No rights: no translation; any access faults.
            self.unmap(va, page);
            return Ok(());
        };
        let old = self.lookup(va);
        if let Some(old) = old {
            if old.pa == frame {
                if old.attrs != attrs {
                    self.change_attrs(va, page, |_| Some(attrs));
                    if old.attrs.sw_flags().contains(SwFlags::WIRED) != wired {
                        self.observer.wiring(va, frame, wired);
                    }
                    if attrs.prot().contains(VmProt::WRITE)
                        && !old.attrs.prot().contains(VmProt::WRITE)
                    {
                        self.observer.writable(va, frame);
                    }
                }
                return Ok(());
            }
        }
        if let Some(old) = old {
            // Break before make: the old entry goes and is flushed on every CPU before the
            // new one is written. If the unmap emptied the leaf table, the map below
            // allocates it again; should that fail, the page is left unmapped (a later
            // access faults and retries), never mapped to the wrong frame.
            match self.table_mut().unmap(va) {
                Ok((_, pending)) => self.finish(pending),
                Err(_) => return Err(PmapError::BadAddress),
            }
            let was_wired = old.attrs.sw_flags().contains(SwFlags::WIRED);
            if was_wired {
                self.stats.wired -= 1;
            }
            self.observer.unmapped(va, old.pa, was_wired);
            self.stats.resident -= 1;
            self.stats.replaced += 1;
        }
        let Self { table, alloc, .. } = self;
        let table = table.as_mut().unwrap_or_else(|| unreachable!());
        let result = table.map(va, frame, F::GRANULE, &attrs, alloc);
        match result {
            Ok(pending) => {
                if old.is_none() {
                    self.stats.entered += 1;
                }
                self.stats.resident += 1;
                if wired {
                    self.stats.wired += 1;
                }
                self.observer.mapped(va, frame, wired);
                if attrs.prot().contains(VmProt::WRITE) {
                    self.observer.writable(va, frame);
                }
                self.finish(pending);
                Ok(())
            }
            Err(PageTableError::FrameAllocation(_) | PageTableError::Mapper(_)) => {
                self.stats.no_memory += 1;
                Err(PmapError::NoMemory)
            }
            Err(_) => Err(PmapError::BadAddress),
        }
    }

    fn remove(&mut self, start: VirtAddr, end: VirtAddr) {
        let (start, len) = self.clamp(start, end);
        if len != 0 {
            self.unmap(start, len);
        }
    }

    fn protect(&mut self, start: VirtAddr, end: VirtAddr, prot: VmProt) {
        let (start, len) = self.clamp(start, end);
        if len == 0 {
            return;
        }
        let user = self.user;
        self.change_attrs(start, len, |old| {
            let kept = old.prot() & prot;
            if kept == VmProt::NONE {
                return None;
            }
            let new = PageAttrs::new(kept)
                .user(user)
                .sw(old.sw_flags())
                .mem_type(old.memory_type())
                .global(old.is_global());
            // The entry held `old`, so the widened form is expressible too.
            Some(expressible::<F>(new).unwrap_or_else(|wider| wider))
        });
    }

    fn set_wired(&mut self, va: VirtAddr, wired: bool) {
        let page = F::GRANULE.bytes();
        if !va.is_aligned(page) || !self.in_window(va.as_u64(), page) {
            return;
        }
        let Some(old) = self.lookup(va) else {
            return;
        };
        if old.attrs.sw_flags().contains(SwFlags::WIRED) == wired {
            return;
        }
        self.change_attrs(va, page, |old| {
            let mut sw = old.sw_flags();
            sw.set(SwFlags::WIRED, wired);
            Some(old.sw(sw))
        });
        self.observer.wiring(va, old.pa, wired);
    }
}

impl<F: Format, M: PhysMapper, A: FrameAllocator, H: FlushHook, O: PmapObserver> Drop
    for TablePmap<F, M, A, H, O>
{
    fn drop(&mut self) {
        let (start, len) = (
            VirtAddr::new_truncate(self.start, F::VA_WIDTH),
            self.end - self.start,
        );
        self.unmap(start, len);
        // The lender's entries stay with the lender (the table would skip them anyway).
        self.table_mut().unlink_root();
        if let Some(table) = self.table.take() {
            // The unmap above flushed every translation of the window, so no CPU can still
            // walk into these tables.
            let _ = table.free_all_tables(&mut self.alloc);
        }
    }
}

/// Makes `attrs` expressible in `F`'s leaf entries, the way vm-map's protections are meant:
/// write + execute is allowed explicitly when asked for (the page-table crate refuses it by
/// default), and `READ` is added where the format has no entry for a protection without it
/// (write-only, execute-only). `Err` carries the widened attributes when even they are not
/// expressible.
fn expressible<F: Format>(attrs: PageAttrs) -> Result<PageAttrs, PageAttrs> {
    let prot = attrs.prot();
    let attrs = if prot.contains(VmProt::WRITE | VmProt::EXECUTE) {
        attrs.allow_write_execute()
    } else {
        attrs
    };
    if F::leaf_template(&attrs, 0).is_ok() {
        return Ok(attrs);
    }
    let wider = attrs.with_prot(prot | VmProt::READ);
    match F::leaf_template(&wider, 0) {
        Ok(_) => Ok(wider),
        Err(_) => Err(wider),
    }
}
