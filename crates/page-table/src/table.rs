//! The engine: one walker for every format.
//!
//! # Design
//!
//! - **Walk addresses.** A virtual address is reduced to the bits the root translates
//!   (`w = va & (2^top - 1)`), so ranges in the upper half never reach `2^64` and every loop
//!   works on plain `u64` arithmetic; [`PageTable::to_va`] converts back for reports.
//! - **Plan, reserve, commit.** Operations that may create tables (`map_range`, splits in
//!   `unmap_range` and `protect_range`) first walk the range without changing anything: they
//!   detect conflicts and count the tables they will need. They then allocate all of them
//!   (checking each frame with the mapper and zeroing it unless the allocator already did), and
//!   only then change the table. A failed allocation therefore leaves the table exactly as it
//!   was.
//! - **Trusted frames.** Every table frame was accepted by `PhysMapper::phys_to_ptr` once (when
//!   allocated, or by the caller of `from_root`), so walks use `phys_to_ptr_unchecked`.
//! - **Leaf-table cache.** Single-page `map`/`unmap` remember the last leaf table they reached;
//!   the cache is cleared whenever a table may be unlinked. A [`Cursor`](crate::Cursor) goes
//!   further: it keeps its state in scalars the compiler holds in registers, accumulates one
//!   flush for a whole batch, and checks a leaf table for emptiness once, when it moves on.
//! - **Region bounds.** A region is one run of addresses in wrapping order (the upper half
//!   precedes the lower half), so "is `va` in the table's region" is one subtraction and one
//!   compare.
//! - **Contiguous groups.** Hinted pages (aarch64) always come in whole, aligned groups with
//!   one physical run and the same attributes: edits that would break a group first clear the
//!   hint of the whole group with break-before-make (bit 0 cleared in place, one invalidation,
//!   bit 0 set again), and harvest treats a group as one unit.
//! - **Publication order.** A new subtree is filled while unreachable and linked into its
//!   parent last with a `Release` store, so another CPU's walker (software with `Acquire`
//!   loads, or hardware after the [`FlushHook::sync`]) never sees a half-built table.
//! - **Atomic entries.** Entries are `AtomicU64`: hardware walkers read them concurrently and
//!   x86 sets accessed/dirty bits with locked read-modify-writes. Changes that must not lose
//!   those bits (protect, harvest, unmap with a visitor) use compare-and-swap or swap; clearing
//!   entries nobody reports on uses plain stores. Hardware-visible memory cannot be modelled by
//!   loom, so this crate uses `core` atomics directly rather than `machvm-sync`.
//! - **Deferred frees.** Tables that become empty are unlinked and chained into the
//!   [`PendingFlush`]; the frames go back to the allocator only after the flush. Unmapping a
//!   range that covers a whole table drops the table without clearing its entries.

use core::marker::PhantomData;
use core::ptr;
use core::slice;
use core::sync::atomic::{AtomicU64, Ordering};

use machvm_addr::{
    FixedPageSize, Frame, FrameAllocator, FrameRequest, Page, PageSize, PhysAddr, PhysMapper,
    VaWidth, VirtAddr,
};

use crate::attrs::{PageAttrs, Region};
use crate::error::PageTableError;
use crate::flush::{FlushHook, FlushRange, FreedTables, PendingFlush};
use crate::format::{AccessState, Entry, Format, Geo, MAX_CONTIGUOUS_PAGES};

/// One leaf mapping: a page or block.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First virtual address of the page or block.
    pub va: VirtAddr,
    /// First physical address it maps to.
    pub pa: PhysAddr,
    /// Its size.
    pub size: PageSize,
    /// Its attributes.
    pub attrs: PageAttrs,
    /// Its accessed/dirty state (when read). For a page with the contiguous hint this is the
    /// state of its whole group (hardware may record an access in any entry of the group).
    pub access: AccessState,
    /// Whether the entry carries the contiguous hint (aarch64 pages mapped by
    /// [`PageTable::map_range_contiguous`]).
    pub contiguous: bool,
}

/// The result of [`PageTable::translate`].
///
/// Decoding the attributes costs more than the walk itself, so it happens only when
/// [`mapping`](Self::mapping) is called.
#[non_exhaustive]
#[derive(Clone, Copy)]
pub struct Translation {
    /// The physical address the translated virtual address maps to.
    pub pa: PhysAddr,
    /// The size of the page or block that maps it.
    pub size: PageSize,
    page: VirtAddr,
    raw: u64,
    level: u8,
    contiguous: bool,
    decode: fn(u64, u8) -> PageAttrs,
    access: fn(u64) -> AccessState,
}

impl Translation {
    /// Returns the page or block that maps the address, with its attributes decoded.
    pub fn mapping(&self) -> Mapping {
        Mapping {
            va: self.page,
            pa: PhysAddr::new_truncate(self.pa.as_u64() & !(self.size.bytes() - 1)),
            size: self.size,
            attrs: (self.decode)(self.raw, self.level),
            access: (self.access)(self.raw),
            contiguous: self.contiguous,
        }
    }
}

impl core::fmt::Debug for Translation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Translation")
            .field("pa", &self.pa)
            .field("mapping", &self.mapping())
            .finish()
    }
}

impl PartialEq for Translation {
    fn eq(&self, other: &Self) -> bool {
        self.pa == other.pa && self.mapping() == other.mapping()
    }
}

impl Eq for Translation {}

/// Receives the mappings removed by [`PageTable::unmap_range_with`].
///
/// Closures `FnMut(&Mapping)` implement it. Visiting makes every removed entry be read with an
/// atomic swap, so its accessed/dirty bits are exact even while other CPUs use the table.
pub trait UnmapVisitor {
    /// Whether entries must be read one by one (`false` lets whole tables be dropped unread).
    const VISIT: bool = true;
    /// Called once per removed page or block.
    fn unmapped(&mut self, mapping: &Mapping);
}

impl<Fun: FnMut(&Mapping)> UnmapVisitor for Fun {
    fn unmapped(&mut self, mapping: &Mapping) {
        self(mapping);
    }
}

/// The visitor of [`PageTable::unmap_range`]: reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoVisit;

impl UnmapVisitor for NoVisit {
    const VISIT: bool = false;
    fn unmapped(&mut self, _mapping: &Mapping) {}
}

/// A leaf found by a walk: the table holding it, its entry and what the entry maps.
#[derive(Clone, Copy)]
pub(crate) struct Leaf {
    pub(crate) table: PhysAddr,
    pub(crate) frame: PhysAddr,
    pub(crate) raw: u64,
    pub(crate) level: u8,
    pub(crate) size: PageSize,
}

/// Table frames allocated and zeroed ahead of a commit, chained through their first entry.
struct Reserve {
    head: Option<PhysAddr>,
    count: u64,
}

/// What a plan found out: tables to create.
type Plan = Result<u64, PageTableError>;

/// Root entries of one page table that other tables of the same format link to, made by
/// [`PageTable::share_root`] and linked with [`PageTable::link_root`]: how the table of every
/// address space maps the kernel the same way (on `x86_64`, where one root translates both
/// halves; or on aarch64 when the kernel lives in `TTBR0`'s half).
///
/// It names the lender's root frame and a run of its root entries; it borrows nothing, so
/// the lender's owner keeps it alive as long as any table links it (see `link_root`).
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_page_table::{NoFlush, PageAttrs, PageTable, PageTableError, Region, X86Pml4};
///
/// let sim = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let mut alloc = sim.frame_allocator();
/// // The kernel's table maps its image in the first 512 GiB (one PML4 entry)...
/// let mut kernel = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc)?;
/// let image = VirtAddr::new(0x10_0000);
/// let rx = PageAttrs::new(VmProt::READ | VmProt::EXECUTE).global(true);
/// let done = kernel.map(image, PhysAddr::new(0x10_0000), PageSize::Size4KiB, &rx, &mut alloc)?;
/// kernel.finish(done, &mut NoFlush, &mut alloc)?;
/// let span = PageTable::<X86Pml4, &SimPhysMemory>::root_entry_span();
/// let shared = kernel.share_root(VirtAddr::new(0), span)?;
///
/// // ...which an address space's table links, next to its own user mappings.
/// let mut space = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc)?;
/// // SAFETY: `kernel` outlives the link (it is unlinked below) and keeps its first entry.
/// unsafe { space.link_root(&shared) }?;
/// assert!(matches!(space.translate(image), Err(PageTableError::OutOfRange { .. })));
/// space.unlink_root();
/// space.free_all_tables(&mut alloc)?; // frees the space's root only
/// assert_eq!(kernel.translate(image)?.pa, PhysAddr::new(0x10_0000));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedRoot<F: Format> {
    root: PhysAddr,
    first: usize,
    count: usize,
    start: u64,
    len: u64,
    format: PhantomData<F>,
}

impl<F: Format> SharedRoot<F> {
    /// The first virtual address of the shared range.
    pub fn start(&self) -> VirtAddr {
        VirtAddr::new_truncate(self.start, VaWidth::WIDEST)
    }

    /// The bytes of the shared range.
    pub const fn size(&self) -> u64 {
        self.len
    }

    /// The physical address of the lender's root table.
    pub const fn lender_root(&self) -> PhysAddr {
        self.root
    }

    /// Whether the shared range and `[start, start + len)` have an address in common.
    pub fn overlaps(&self, start: VirtAddr, len: u64) -> bool {
        let (a, b) = (self.start, start.as_u64());
        len != 0 && (b.wrapping_sub(a) < self.len || a.wrapping_sub(b) < len)
    }
}

impl<F: Format> Clone for SharedRoot<F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Format> Copy for SharedRoot<F> {}

impl<F: Format> PartialEq for SharedRoot<F> {
    fn eq(&self, other: &Self) -> bool {
        (self.root, self.start, self.len) == (other.root, other.start, other.len)
    }
}

impl<F: Format> Eq for SharedRoot<F> {}

impl<F: Format> core::fmt::Debug for SharedRoot<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedRoot")
            .field("format", &F::NAME)
            .field("lender_root", &self.root)
            .field("start", &format_args!("{:#x}", self.start))
            .field("len", &format_args!("{:#x}", self.len))
            .finish()
    }
}

/// A page table of format `F` whose frames are reached through `M`.
///
/// All mutating operations take `&mut self`: one owner edits the table at a time, while
/// hardware walkers (and `&self` readers) may read it concurrently.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_page_table::{NoFlush, PageAttrs, PageTable, Region, X86Pml4};
///
/// let sim = SimPhysMemory::builder().size_bytes(4 << 20).build()?;
/// let mut alloc = sim.frame_allocator();
/// let mut pt = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc)?;
/// let attrs = PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true);
///
/// // 1 MiB of 4 KiB pages at 0x4000_0000 -> 0x10_0000, in one call.
/// let va = VirtAddr::new(0x4000_0000);
/// let done = pt.map_range(va, PhysAddr::new(0x10_0000), 1 << 20, &attrs, PageSize::Size2MiB, &mut alloc)?;
/// pt.finish(done, &mut NoFlush, &mut alloc)?;
///
/// let t = pt.translate(VirtAddr::new(0x4000_5123))?;
/// assert_eq!(t.pa, PhysAddr::new(0x10_5123));
/// assert_eq!(t.size, PageSize::Size4KiB);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PageTable<F: Format, M: PhysMapper> {
    root: PhysAddr,
    region: Region,
    mapper: M,
    /// The last level-0 table a single-page `map`/`unmap` reached, keyed by the walk address
    /// bits above it: successive single-page operations in one 2 MiB (4K granule) span skip
    /// the walk. Only `&mut self` operations read or write it; it is cleared whenever a table
    /// may be unlinked, so it never names a freed frame.
    pub(crate) leaf_cache: Option<(u64, PhysAddr)>,
    /// The addresses of the region.
    pub(crate) bounds: Bounds,
    /// The root entries linked from another table ([`link_root`](Self::link_root)), if any.
    linked: Option<SharedRoot<F>>,
    format: PhantomData<F>,
}

impl<F: Format, M: PhysMapper> core::fmt::Debug for PageTable<F, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageTable")
            .field("format", &F::NAME)
            .field("root", &self.root)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A read-only view of a live page table that another owner edits: what a hardware walker
/// sees. Every entry is read atomically, so a walk racing with an edit sees the entry either
/// before or after it, never a torn value — the guarantee the MMU has.
///
/// Made with [`TableReader::new`] from the table's root; a simulator uses one per address
/// space to walk like the MMU of a simulated CPU while the VM layer edits the table.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_page_table::{NoFlush, PageAttrs, PageTable, Region, TableReader, X86Pml4};
///
/// let sim = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let mut alloc = sim.frame_allocator();
/// let mut pt = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc)?;
/// // SAFETY: `pt` outlives the reader and frees no table while the reader walks.
/// let reader = unsafe { TableReader::<X86Pml4, _>::new(pt.root(), Region::Both, &sim) }?;
/// let va = VirtAddr::new(0x4000_0000);
/// let done = pt.map(va, PhysAddr::new(0x8_0000), PageSize::Size4KiB, &PageAttrs::new(VmProt::READ), &mut alloc)?;
/// pt.finish(done, &mut NoFlush, &mut alloc)?;
/// assert_eq!(reader.translate(va)?.pa, PhysAddr::new(0x8_0000));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TableReader<F: Format, M: PhysMapper> {
    inner: PageTable<F, M>,
}

impl<F: Format, M: PhysMapper> core::fmt::Debug for TableReader<F, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TableReader")
            .field("format", &F::NAME)
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl<F: Format, M: PhysMapper> TableReader<F, M> {
    /// A reader of the table whose root is at `root`.
    ///
    /// # Errors
    ///
    /// As [`PageTable::from_root`].
    ///
    /// # Safety
    ///
    /// - `root` and every table reachable from it are valid tables of format `F` whose
    ///   frames `mapper` reaches;
    /// - a table frame the owner unlinks is freed only once no walk of this reader that may
    ///   have reached it is still running (the owner frees tables after a TLB flush, so a
    ///   reader used only by CPUs that take part in that flush qualifies), and the root
    ///   stays allocated while the reader exists.
    pub unsafe fn new(root: PhysAddr, region: Region, mapper: M) -> Result<Self, PageTableError> {
        // SAFETY: the caller's promises cover what `from_root` needs for reading; the
        // reader never edits (no method takes `&mut`), so concurrent edits by the owner
        // are the walker/editor race the engine is built for.
        let inner = unsafe { PageTable::from_root(root, region, mapper) }?;
        Ok(Self { inner })
    }

    /// Translates `va` as the MMU would now (see [`PageTable::translate`]).
    ///
    /// # Errors
    ///
    /// As [`PageTable::translate`].
    #[inline]
    pub fn translate(&self, va: VirtAddr) -> Result<Translation, PageTableError> {
        self.inner.translate(va)
    }

    /// The root of the table read.
    pub fn root(&self) -> PhysAddr {
        self.inner.root
    }
}

/// The addresses a table's region covers, in wrapping order: the canonical upper half
/// `[2^64 - half, 2^64)` directly precedes the lower half `[0, half)`, so a region is one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// First address of the region.
    base: u64,
    /// Bytes in the region: `va` is inside iff `va - base` (wrapping) is below this.
    size: u64,
    /// Offsets (`va - base`) `[hole_start, hole_end)` inside the region that belong to the
    /// root entries linked from another table ([`PageTable::link_root`]); both `u64::MAX`
    /// when nothing is linked.
    hole_start: u64,
    hole_end: u64,
}

impl Bounds {
    const fn of<F: Format>(region: Region) -> Self {
        let half = F::VA_WIDTH.half_size();
        let (base, size) = match region {
            Region::Lower => (0, half),
            Region::Upper => (half.wrapping_neg(), half),
            Region::Both => (half.wrapping_neg(), 2 * half),
        };
        Self {
            base,
            size,
            hole_start: u64::MAX,
            hole_end: u64::MAX,
        }
    }
}

/// Constant context of a `map_range`.
struct MapCtx {
    templates: [u64; 8],
    largest_level: u8,
    /// Set the contiguous hint on whole, aligned level-0 groups.
    contiguous: bool,
}

impl<F: Format, M: PhysMapper> PageTable<F, M> {
    const TOP_SHIFT: u32 = Geo::<F>::shift(Geo::<F>::ROOT) + F::ROOT_INDEX_BITS;
    const W_MASK: u64 = (1u64 << Self::TOP_SHIFT) - 1;
    const GRANULE: u64 = F::GRANULE.bytes();

    /// Creates an empty table translating `region`, allocating its root frame from `alloc`.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::RegionNotSupported`] if `F` cannot translate `region` (x86_64
    ///   formats translate [`Region::Both`]; aarch64 formats one half each).
    /// - [`PageTableError::FrameAllocation`] if the root frame cannot be allocated.
    /// - [`PageTableError::Mapper`] if `mapper` cannot reach it (the frame is given back).
    pub fn new<A: FrameAllocator + ?Sized>(
        region: Region,
        mapper: M,
        alloc: &mut A,
    ) -> Result<Self, PageTableError> {
        if !F::supports_region(region) {
            return Err(PageTableError::RegionNotSupported);
        }
        let mut pt = Self {
            root: PhysAddr::zero(),
            region,
            mapper,
            leaf_cache: None,
            bounds: Bounds::of::<F>(region),
            linked: None,
            format: PhantomData,
        };
        let mut reserve = pt.reserve(1, alloc)?;
        pt.root = pt.take(&mut reserve)?;
        Ok(pt)
    }

    /// Wraps an existing table whose root is at `root`.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::RegionNotSupported`] if `F` cannot translate `region`.
    /// - [`PageTableError::Misaligned`] if `root` is not aligned to the granule.
    /// - [`PageTableError::Mapper`] if `mapper` cannot reach the root frame.
    ///
    /// # Safety
    ///
    /// - `root` and every table reachable from it are valid tables of format `F`, and
    ///   `mapper.phys_to_ptr` accepts every one of their frames (the engine walks them without
    ///   checking again);
    /// - their frames came from the allocator later operations will free them to;
    /// - nothing else edits these tables while the returned value exists.
    pub unsafe fn from_root(
        root: PhysAddr,
        region: Region,
        mapper: M,
    ) -> Result<Self, PageTableError> {
        if !F::supports_region(region) {
            return Err(PageTableError::RegionNotSupported);
        }
        if !root.is_aligned(Self::GRANULE) {
            return Err(PageTableError::Misaligned {
                addr: root.as_u64(),
                align: Self::GRANULE,
            });
        }
        mapper
            .phys_to_ptr(root, Geo::<F>::TABLE_BYTES)
            .map_err(PageTableError::Mapper)?;
        Ok(Self {
            root,
            region,
            mapper,
            leaf_cache: None,
            bounds: Bounds::of::<F>(region),
            linked: None,
            format: PhantomData,
        })
    }

    /// Returns the physical address of the root table.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Returns the value to load into the root register (CR3, TTBR0/TTBR1) with `asid` as
    /// PCID/ASID.
    pub fn root_register(&self, asid: u16) -> u64 {
        F::root_register(self.root, asid)
    }

    /// Returns the region this table translates.
    pub fn region(&self) -> Region {
        self.region
    }

    /// Returns the physical mapper.
    pub fn mapper(&self) -> &M {
        &self.mapper
    }

    // ------------------------------------------------------------------------------------
    // Shared root entries
    // ------------------------------------------------------------------------------------

    /// Bytes of address space one root entry covers (512 GiB for `X86Pml4`, 1 GiB for
    /// `A64Granule4K39`, …): the unit in which root entries are shared.
    pub const fn root_entry_span() -> u64 {
        Geo::<F>::entry_span(Geo::<F>::ROOT)
    }

    /// Describes this table's root entries for `[va, va + len)`, so that other tables of the
    /// same format can link them ([`link_root`](Self::link_root)): how every address space's
    /// table shares one set of kernel mappings. Nothing changes here.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::BadLength`] if `len` is zero or not a multiple of
    ///   [`root_entry_span`](Self::root_entry_span);
    /// - [`PageTableError::Misaligned`] if `va` is not aligned to it;
    /// - [`PageTableError::OutOfRange`] if the range is not in this table's region, not in
    ///   one half, or overlaps root entries this table itself links from another.
    pub fn share_root(&self, va: VirtAddr, len: u64) -> Result<SharedRoot<F>, PageTableError> {
        let span = Self::root_entry_span();
        if len == 0 || len % span != 0 {
            return Err(PageTableError::BadLength { len });
        }
        if !va.is_aligned(span) {
            return Err(PageTableError::Misaligned {
                addr: va.as_u64(),
                align: span,
            });
        }
        let (ws, _) = self.walk_range(va, len)?;
        Ok(SharedRoot {
            root: self.root,
            first: Geo::<F>::index(ws, Geo::<F>::ROOT),
            count: (len / span) as usize,
            start: va.as_u64(),
            len,
            format: PhantomData,
        })
    }

    /// Makes this table's root entries for the range of `shared` point to the same
    /// next-level tables as the entries of the table that lent them, so both translate the
    /// range alike (and see every later change below those entries).
    ///
    /// From then on the linked range belongs to the lender: this table refuses to map,
    /// unmap, protect, harvest or translate in it ([`PageTableError::OutOfRange`]), and
    /// frees none of the lender's tables when it frees its own
    /// ([`free_all_tables`](Self::free_all_tables)). [`unlink_root`](Self::unlink_root)
    /// undoes the link. Entries change from invalid to valid only, so no flush is needed; a
    /// table already in use needs the [`FlushHook::sync`] that publishes new entries before
    /// a CPU relies on them.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::AlreadyMapped`] if this table links a range already, or has a
    ///   valid root entry in the range (at the first such address);
    /// - [`PageTableError::OutOfRange`] if the range is not in this table's region;
    /// - [`PageTableError::Mapper`] if this table's mapper cannot reach the lender's root.
    ///
    /// # Safety
    ///
    /// - the lender's root frame and every table reachable from the linked entries stay
    ///   allocated, and those root entries stay unchanged, until this table has unlinked
    ///   them or has been freed: the lender does not unlink, free or replace the tables
    ///   below them (for example, it never unmaps everything below one of them);
    /// - the lender's entries are valid entries of format `F` for this table's region (a
    ///   table of the same format and region made them).
    pub unsafe fn link_root(&mut self, shared: &SharedRoot<F>) -> Result<(), PageTableError> {
        if let Some(l) = &self.linked {
            return Err(PageTableError::AlreadyMapped { va: l.start });
        }
        let (ws, _) = self.walk_range(shared.start(), shared.len)?;
        if Geo::<F>::index(ws, Geo::<F>::ROOT) != shared.first {
            return Err(PageTableError::OutOfRange { va: shared.start });
        }
        self.mapper
            .phys_to_ptr(shared.root, Geo::<F>::TABLE_BYTES)
            .map_err(PageTableError::Mapper)?;
        let span = Self::root_entry_span();
        let lent = shared.first..shared.first + shared.count;
        let own = self.table(self.root);
        if let Some(i) = lent.clone().find(|&i| {
            F::classify(own[i].load(Ordering::Relaxed), Geo::<F>::ROOT) != Entry::Invalid
        }) {
            let w = ws + (i - shared.first) as u64 * span;
            return Err(PageTableError::AlreadyMapped { va: self.to_va(w) });
        }
        // SAFETY: `phys_to_ptr` accepted the lender's root just above, and the caller keeps
        // it allocated while linked; it is accessed like every table frame, atomically.
        let theirs = unsafe {
            let ptr = self
                .mapper
                .phys_to_ptr_unchecked(shared.root, Geo::<F>::TABLE_BYTES);
            slice::from_raw_parts(ptr.as_ptr().cast::<AtomicU64>(), Geo::<F>::TABLE_BYTES / 8)
        };
        for i in lent {
            // Release: a walker that sees the entry sees the lender's tables below it.
            own[i].store(theirs[i].load(Ordering::Acquire), Ordering::Release);
        }
        let hole_start = shared.start.wrapping_sub(self.bounds.base);
        self.bounds.hole_start = hole_start;
        self.bounds.hole_end = hole_start + shared.len;
        self.linked = Some(*shared);
        Ok(())
    }

    /// Clears the root entries [`link_root`](Self::link_root) linked (the lender's tables
    /// are left alone) and returns what was linked, or `None` if nothing was.
    ///
    /// CPUs may still cache translations of the range through this table: flush them (the
    /// table's ASID, or the range) before relying on their absence. Freeing this table
    /// afterwards needs no more than its usual flush.
    pub fn unlink_root(&mut self) -> Option<SharedRoot<F>> {
        let linked = self.linked.take()?;
        let own = self.table(self.root);
        for e in &own[linked.first..linked.first + linked.count] {
            e.store(0, Ordering::Release);
        }
        self.bounds.hole_start = u64::MAX;
        self.bounds.hole_end = u64::MAX;
        Some(linked)
    }

    /// Returns what [`link_root`](Self::link_root) linked into this table, if anything.
    pub fn linked_root(&self) -> Option<&SharedRoot<F>> {
        self.linked.as_ref()
    }

    // ------------------------------------------------------------------------------------
    // Addresses
    // ------------------------------------------------------------------------------------

    /// Converts a walk address back to the virtual address it stands for.
    #[inline(always)]
    pub(crate) fn to_va(&self, w: u64) -> u64 {
        match self.region {
            Region::Lower => w,
            Region::Upper => w | !Self::W_MASK,
            Region::Both => {
                let shift = 64 - Self::TOP_SHIFT;
                (((w << shift) as i64) >> shift) as u64
            }
        }
    }

    /// Checks that `[va, va + len)` (`len > 0`) lies in this table's region, inside one half
    /// of the address space, and returns the walk addresses of its start and end.
    #[inline(always)]
    pub(crate) fn walk_range(&self, va: VirtAddr, len: u64) -> Result<(u64, u64), PageTableError> {
        Self::walk_range_in(self.bounds, va, len)
    }

    /// [`walk_range`](Self::walk_range) with the region's bounds given (a caller's loop keeps
    /// them in registers).
    #[inline(always)]
    pub(crate) fn walk_range_in(
        bounds: Bounds,
        va: VirtAddr,
        len: u64,
    ) -> Result<(u64, u64), PageTableError> {
        let raw = va.as_u64();
        let off = raw.wrapping_sub(bounds.base);
        if off >= bounds.size {
            return Err(PageTableError::OutOfRange { va: raw });
        }
        // The last byte must be in the region and in the same half (the halves are
        // `half`-aligned in `off`). Constant-folds away for one-byte lookups.
        let half = F::VA_WIDTH.half_size();
        let last = off.wrapping_add(len - 1);
        if len > bounds.size || last >= bounds.size || (last ^ off) >= half {
            // Report the first address past the half.
            let end = raw.wrapping_add((off | (half - 1)) + 1 - off);
            return Err(PageTableError::OutOfRange {
                va: if end == 0 { u64::MAX } else { end },
            });
        }
        // Linked root entries belong to the table that lent them: not walked from here.
        if last >= bounds.hole_start && off < bounds.hole_end {
            return Err(PageTableError::OutOfRange {
                va: raw.wrapping_add(bounds.hole_start.saturating_sub(off)),
            });
        }
        let w = raw & Self::W_MASK;
        Ok((w, w + len))
    }

    fn check_len(va: VirtAddr, len: u64) -> Result<(), PageTableError> {
        if len == 0 || len % Self::GRANULE != 0 {
            return Err(PageTableError::BadLength { len });
        }
        if !va.is_aligned(Self::GRANULE) {
            return Err(PageTableError::Misaligned {
                addr: va.as_u64(),
                align: Self::GRANULE,
            });
        }
        Ok(())
    }

    fn level_of(size: PageSize) -> Result<u8, PageTableError> {
        (0..F::LEVELS)
            .find(|&l| F::leaf_size(l) == Some(size))
            .ok_or(PageTableError::SizeNotSupported { size })
    }

    // ------------------------------------------------------------------------------------
    // Frames
    // ------------------------------------------------------------------------------------

    /// Returns the entries of the table frame at `pa`.
    ///
    /// Every table frame of this table was accepted by the mapper: frames the engine
    /// allocates are checked in [`reserve`](Self::reserve), the root and the tables of a
    /// [`from_root`](Self::from_root) table are the caller's promise.
    #[inline(always)]
    pub(crate) fn table(&self, pa: PhysAddr) -> &[AtomicU64] {
        // SAFETY: see above: `phys_to_ptr(pa, TABLE_BYTES)` returned `Ok` before for every
        // table frame.
        let ptr = unsafe { self.mapper.phys_to_ptr_unchecked(pa, Geo::<F>::TABLE_BYTES) };
        // SAFETY: the mapper promises `TABLE_BYTES` bytes valid for reads and writes while it
        // is borrowed (we borrow `self`), aligned like `pa`, which is granule-aligned, so the
        // pointer is 8-byte aligned. Table frames are accessed only atomically, by this engine
        // and by hardware walkers; no `&mut` to them exists, so shared `AtomicU64`s are sound.
        unsafe {
            slice::from_raw_parts(ptr.as_ptr().cast::<AtomicU64>(), Geo::<F>::TABLE_BYTES / 8)
        }
    }

    /// Allocates and zeroes `n` table frames; on failure gives back what it took.
    fn reserve<A: FrameAllocator + ?Sized>(
        &self,
        n: u64,
        alloc: &mut A,
    ) -> Result<Reserve, PageTableError> {
        let mut reserve = Reserve {
            head: None,
            count: 0,
        };
        let request = FrameRequest::single(F::GRANULE);
        while reserve.count < n {
            let frame = match alloc.allocate(request) {
                Ok(frame) => frame,
                Err(e) => {
                    self.release(reserve, alloc);
                    return Err(PageTableError::FrameAllocation(e));
                }
            };
            let ptr = match self.mapper.phys_to_ptr(frame, Geo::<F>::TABLE_BYTES) {
                Ok(ptr) => ptr,
                Err(e) => {
                    // SAFETY: the frame was just allocated and never used.
                    let _ = unsafe { alloc.deallocate(frame, request) };
                    self.release(reserve, alloc);
                    return Err(PageTableError::Mapper(e));
                }
            };
            if !alloc.zeroes_frames() {
                // SAFETY: the frame is freshly allocated, so nothing else accesses it, and the
                // mapper made `TABLE_BYTES` bytes at `ptr` valid for writes.
                unsafe { ptr::write_bytes(ptr.as_ptr(), 0, Geo::<F>::TABLE_BYTES) };
            }
            if let Some(next) = reserve.head {
                self.table(frame)[0].store(next.as_u64(), Ordering::Relaxed);
            }
            reserve.head = Some(frame);
            reserve.count += 1;
        }
        Ok(reserve)
    }

    /// Takes a zeroed table frame from `reserve`.
    fn take(&self, reserve: &mut Reserve) -> Result<PhysAddr, PageTableError> {
        let head = reserve.head.ok_or(PageTableError::FrameAllocation(
            machvm_addr::AddrError::OutOfFrames,
        ))?;
        reserve.count -= 1;
        let first = &self.table(head)[0];
        reserve.head = if reserve.count == 0 {
            None
        } else {
            Some(PhysAddr::new_truncate(first.load(Ordering::Relaxed)))
        };
        first.store(0, Ordering::Relaxed);
        Ok(head)
    }

    /// Gives the frames of `reserve` back to `alloc` (best effort: used on error paths).
    fn release<A: FrameAllocator + ?Sized>(&self, mut reserve: Reserve, alloc: &mut A) {
        while let Ok(frame) = self.take(&mut reserve) {
            // SAFETY: reserved frames were never linked into the table.
            let _ = unsafe { alloc.deallocate(frame, FrameRequest::single(F::GRANULE)) };
            if reserve.count == 0 {
                break;
            }
        }
    }

    /// Chains the unlinked table `frame` into `freed`.
    #[inline]
    fn push_freed(&self, freed: &mut FreedTables, frame: PhysAddr) {
        if freed.count == 0 {
            freed.tail = frame.as_u64();
        } else {
            // A page-aligned address has bit 0 clear: a walker that still reaches this
            // table before the flush sees an invalid entry here.
            self.table(frame)[0].store(freed.head, Ordering::Relaxed);
        }
        freed.head = frame.as_u64();
        freed.count += 1;
    }

    /// Returns the table frames of `freed` to `alloc`. Call it only after the flush that
    /// produced `freed` completed.
    ///
    /// # Errors
    ///
    /// As [`FreedTables::release`].
    #[inline]
    pub fn free_tables<A: FrameAllocator + ?Sized>(
        &self,
        freed: FreedTables,
        alloc: &mut A,
    ) -> Result<(), PageTableError> {
        freed.release(&self.mapper, alloc)
    }

    /// Performs `pending`'s flush through `hook`, then frees the tables it unlinked.
    ///
    /// # Errors
    ///
    /// As [`free_tables`](Self::free_tables).
    #[inline]
    pub fn finish<H: FlushHook + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        pending: PendingFlush,
        hook: &mut H,
        alloc: &mut A,
    ) -> Result<(), PageTableError> {
        let freed = pending.flush(hook);
        if freed.is_empty() {
            return Ok(());
        }
        self.free_tables(freed, alloc)
    }

    /// Appends `other` to `into` (their flush ranges merge into one covering range), so
    /// several operations can share one flush.
    pub fn merge_pending(&self, into: &mut PendingFlush, other: PendingFlush) {
        into.freed.append(other.freed, |tail, head| {
            self.table(PhysAddr::new_truncate(tail))[0].store(head, Ordering::Relaxed);
        });
        if let Some(stride) = other.stride {
            let len = other.last.wrapping_sub(other.start).wrapping_add(1);
            into.add_range(other.start, len, other.entries, stride);
        }
        into.leaf_only &= other.leaf_only;
        into.sync |= other.sync;
    }

    /// Consumes the table and returns every table frame of it (root included) for freeing.
    ///
    /// Mapped pages are not touched. Before [`FreedTables::release`] gives the frames back,
    /// every CPU must have stopped using the table and flushed its translations (for example
    /// by flushing the ASID the table ran with).
    pub fn into_freed_tables(self) -> FreedTables {
        let mut freed = FreedTables::new(F::GRANULE);
        self.free_subtree(Geo::<F>::ROOT, self.root, &mut freed);
        freed
    }

    /// Consumes the table and frees every table frame of it (root included) to `alloc`, like
    /// [`into_freed_tables`](Self::into_freed_tables) followed by [`FreedTables::release`]
    /// through the table's own mapper.
    ///
    /// Mapped pages are not touched. Call it only once every CPU has stopped using the table
    /// and flushed its translations.
    ///
    /// # Errors
    ///
    /// As [`FreedTables::release`].
    pub fn free_all_tables<A: FrameAllocator + ?Sized>(
        self,
        alloc: &mut A,
    ) -> Result<(), PageTableError> {
        let mut freed = FreedTables::new(F::GRANULE);
        self.free_subtree(Geo::<F>::ROOT, self.root, &mut freed);
        freed.release(&self.mapper, alloc)
    }

    // ------------------------------------------------------------------------------------
    // map
    // ------------------------------------------------------------------------------------

    /// Maps one page or block of `size` at `va` to `pa`.
    ///
    /// Creates the intermediate tables it needs. The returned flush only asks for a sync:
    /// the entry was invalid before.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::SizeNotSupported`] if the format has no leaf of `size`;
    /// - [`PageTableError::Misaligned`] if `va` or `pa` is not aligned to `size`;
    /// - [`PageTableError::OutOfRange`] if the page is outside the table's region;
    /// - [`PageTableError::PhysOutOfRange`] if `pa` cannot be encoded;
    /// - [`PageTableError::InvalidAttributes`] if the format cannot express `attrs`;
    /// - [`PageTableError::AlreadyMapped`] if any part of the page is mapped;
    /// - [`PageTableError::FrameAllocation`] / [`PageTableError::Mapper`] if a table cannot
    ///   be created.
    #[inline]
    pub fn map<A: FrameAllocator + ?Sized>(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        size: PageSize,
        attrs: &PageAttrs,
        alloc: &mut A,
    ) -> Result<PendingFlush, PageTableError> {
        let (w, level, entry) = Self::check_map(self.bounds, va, pa, size, attrs)?;
        let mut pending = PendingFlush::new(F::GRANULE);
        pending.sync = true;
        let key = w >> Geo::<F>::shift(1);
        match self.leaf_cache {
            Some((cached, table)) if level == 0 && cached == key => {
                self.store_new_leaf(table, w, entry)?;
                return Ok(pending);
            }
            _ => {}
        }
        let table = self.install_leaf(w, level, entry, alloc)?;
        if level == 0 {
            self.leaf_cache = Some((key, table));
        }
        Ok(pending)
    }

    /// Checks the arguments of a single-page map and returns the walk address, the leaf
    /// level and the entry to write.
    #[inline(always)]
    pub(crate) fn check_map(
        bounds: Bounds,
        va: VirtAddr,
        pa: PhysAddr,
        size: PageSize,
        attrs: &PageAttrs,
    ) -> Result<(u64, u8, u64), PageTableError> {
        let level = Self::level_of(size)?;
        Self::check_phys(pa, size.bytes(), size)?;
        if !va.is_aligned(size.bytes()) {
            return Err(PageTableError::Misaligned {
                addr: va.as_u64(),
                align: size.bytes(),
            });
        }
        let (w, _) = Self::walk_range_in(bounds, va, size.bytes())?;
        let template = F::leaf_template(attrs, level)?;
        Ok((w, level, template | pa.as_u64()))
    }

    /// Writes the new level-0 leaf `entry` for walk address `w` into the leaf table `table`,
    /// unless the slot is taken.
    #[inline(always)]
    pub(crate) fn store_new_leaf(
        &self,
        table: PhysAddr,
        w: u64,
        entry: u64,
    ) -> Result<(), PageTableError> {
        let slot = &self.table(table)[Geo::<F>::index(w, 0)];
        if F::classify(slot.load(Ordering::Relaxed), 0) != Entry::Invalid {
            return Err(PageTableError::AlreadyMapped { va: self.to_va(w) });
        }
        slot.store(entry, Ordering::Release);
        Ok(())
    }

    /// Writes the leaf `entry` at `level` for walk address `w`, creating the tables that are
    /// missing on the way, and returns the table that holds it. A failed allocation changes
    /// nothing.
    #[inline(always)]
    pub(crate) fn install_leaf<A: FrameAllocator + ?Sized>(
        &self,
        w: u64,
        level: u8,
        entry: u64,
        alloc: &mut A,
    ) -> Result<PhysAddr, PageTableError> {
        let mut table = self.root;
        let mut l = Geo::<F>::ROOT;
        let mut t = self.table(table);
        while l > level {
            match F::classify(t[Geo::<F>::index(w, l)].load(Ordering::Acquire), l) {
                Entry::Table(next) => {
                    table = next;
                    l -= 1;
                    t = self.table(table);
                }
                Entry::Leaf(_) => return Err(PageTableError::AlreadyMapped { va: self.to_va(w) }),
                Entry::Invalid => break,
            }
        }
        let slot = &t[Geo::<F>::index(w, l)];
        if l == level {
            if F::classify(slot.load(Ordering::Relaxed), level) != Entry::Invalid {
                return Err(PageTableError::AlreadyMapped { va: self.to_va(w) });
            }
            slot.store(entry, Ordering::Release);
            return Ok(table);
        }
        // Tables for levels l-1 ..= level are missing: build the chain unreachable, then
        // publish it with one store.
        let mut reserve = self.reserve(u64::from(l - level), alloc)?;
        let top = self.take(&mut reserve)?;
        let mut cur = top;
        let mut cl = l - 1;
        loop {
            let ct = self.table(cur);
            if cl == level {
                ct[Geo::<F>::index(w, cl)].store(entry, Ordering::Relaxed);
                break;
            }
            let next = self.take(&mut reserve)?;
            ct[Geo::<F>::index(w, cl)].store(F::table_entry(next), Ordering::Relaxed);
            cur = next;
            cl -= 1;
        }
        slot.store(F::table_entry(top), Ordering::Release);
        Ok(cur)
    }

    /// Maps the typed page `page` to `frame` (see [`map`](Self::map)).
    ///
    /// # Errors
    ///
    /// As [`map`](Self::map).
    pub fn map_page<S: FixedPageSize, A: FrameAllocator + ?Sized>(
        &mut self,
        page: Page<S>,
        frame: Frame<S>,
        attrs: &PageAttrs,
        alloc: &mut A,
    ) -> Result<PendingFlush, PageTableError> {
        self.map(
            page.start_address(),
            frame.start_address(),
            S::SIZE,
            attrs,
            alloc,
        )
    }

    fn check_phys(pa: PhysAddr, len: u64, align: PageSize) -> Result<(), PageTableError> {
        if !pa.is_aligned(align.bytes()) {
            return Err(PageTableError::Misaligned {
                addr: pa.as_u64(),
                align: align.bytes(),
            });
        }
        match pa.as_u64().checked_add(len) {
            Some(end) if end <= F::PHYS_LIMIT => Ok(()),
            _ => Err(PageTableError::PhysOutOfRange { pa: pa.as_u64() }),
        }
    }

    /// Maps `len` bytes at `va` to the physical run at `pa`, choosing for every part the
    /// largest page or block (up to `largest`) that the alignment of both addresses allows.
    ///
    /// Each table on the way is visited once; leaf entries are written in one pass. Existing
    /// tables are reused. Nothing is changed if any page of the range is already mapped.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::BadLength`] if `len` is zero or not a multiple of the granule;
    /// - [`PageTableError::Misaligned`] if `va` or `pa` is not granule-aligned;
    /// - [`PageTableError::SizeNotSupported`] if `largest` is below the granule;
    /// - [`PageTableError::OutOfRange`] / [`PageTableError::PhysOutOfRange`] if either run
    ///   leaves what the table or the format can address;
    /// - [`PageTableError::InvalidAttributes`] if the format cannot express `attrs`;
    /// - [`PageTableError::AlreadyMapped`] if any part of the range is mapped;
    /// - [`PageTableError::FrameAllocation`] / [`PageTableError::Mapper`] if the tables it
    ///   needs cannot be created (all-or-nothing: nothing is changed).
    pub fn map_range<A: FrameAllocator + ?Sized>(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        len: u64,
        attrs: &PageAttrs,
        largest: PageSize,
        alloc: &mut A,
    ) -> Result<PendingFlush, PageTableError> {
        self.map_range_hinted(va, pa, len, attrs, largest, false, alloc)
    }

    /// Maps like [`map_range`](Self::map_range) and also sets the contiguous hint on every
    /// aligned group of [`Format::CONTIGUOUS_PAGES`] pages of the range whose physical run is
    /// aligned the same way (aarch64: 16 pages with the 4K granule, 128 with 16K, 32 with 64K),
    /// so the TLB can cache each group as one entry. Formats without the hint map exactly like
    /// `map_range`.
    ///
    /// The engine keeps every hinted group whole: [`unmap_range`](Self::unmap_range) of part of
    /// a group and [`protect_range`](Self::protect_range) of any of it first clear the hint of
    /// the whole group with break-before-make through their hook (protected pages lose the
    /// hint; map again to regain it), [`harvest`](Self::harvest) reports and clears the
    /// accessed/dirty state of whole groups, and single-page [`unmap`](Self::unmap) (which has
    /// no hook) refuses hinted pages with [`PageTableError::BreakBeforeMake`].
    ///
    /// # Errors
    ///
    /// As [`map_range`](Self::map_range).
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
    /// use machvm_page_table::{A64Granule16K47, NoFlush, PageAttrs, PageTable, Region};
    ///
    /// let sim = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
    /// let mut alloc = sim.frame_allocator();
    /// let mut pt = PageTable::<A64Granule16K47, _>::new(Region::Lower, &sim, &mut alloc)?;
    /// let attrs = PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true);
    /// // 4 MiB of 16 KiB pages: two hinted groups of 128 pages (2 MiB each).
    /// let va = VirtAddr::new(0x10_0000_0000);
    /// let done = pt.map_range_contiguous(va, PhysAddr::new(0x8000_0000), 4 << 20, &attrs, PageSize::Size16KiB, &mut alloc)?;
    /// pt.finish(done, &mut NoFlush, &mut alloc)?;
    /// assert!(pt.translate(va)?.mapping().contiguous);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_range_contiguous<A: FrameAllocator + ?Sized>(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        len: u64,
        attrs: &PageAttrs,
        largest: PageSize,
        alloc: &mut A,
    ) -> Result<PendingFlush, PageTableError> {
        self.map_range_hinted(va, pa, len, attrs, largest, true, alloc)
    }

    #[allow(clippy::too_many_arguments)] // map_range's arguments and the hint choice
    fn map_range_hinted<A: FrameAllocator + ?Sized>(
        &mut self,
        va: VirtAddr,
        pa: PhysAddr,
        len: u64,
        attrs: &PageAttrs,
        largest: PageSize,
        contiguous: bool,
        alloc: &mut A,
    ) -> Result<PendingFlush, PageTableError> {
        Self::check_len(va, len)?;
        Self::check_phys(pa, len, F::GRANULE)?;
        let (ws, we) = self.walk_range(va, len)?;
        let mut ctx = MapCtx {
            templates: [0; 8],
            largest_level: 0,
            contiguous: contiguous && F::CONTIGUOUS_PAGES > 1,
        };
        let mut any = false;
        for level in 0..F::LEVELS {
            if F::leaf_size(level).is_some_and(|size| size <= largest) {
                ctx.templates[usize::from(level)] = F::leaf_template(attrs, level)?;
                ctx.largest_level = level;
                any = true;
            }
        }
        if !any {
            return Err(PageTableError::SizeNotSupported { size: largest });
        }
        let root = Geo::<F>::ROOT;
        let needed = self.plan_map(&ctx, root, Some(self.root), ws, we, pa.as_u64())?;
        let mut reserve = self.reserve(needed, alloc)?;
        let result = self.commit_map(&ctx, root, self.root, ws, we, pa.as_u64(), &mut reserve);
        if reserve.count != 0 {
            self.release(reserve, alloc);
        }
        result?;
        let mut pending = PendingFlush::new(F::GRANULE);
        pending.sync = true;
        Ok(pending)
    }

    #[inline(always)]
    fn leaf_here(ctx: &MapCtx, level: u8, w: u64, end: u64, p: u64) -> bool {
        let span = Geo::<F>::entry_span(level);
        level <= ctx.largest_level
            && F::leaf_size(level).is_some()
            && (w | p) & (span - 1) == 0
            && end - w == span
    }

    fn plan_map(
        &self,
        ctx: &MapCtx,
        level: u8,
        table: Option<PhysAddr>,
        ws: u64,
        we: u64,
        pa: u64,
    ) -> Plan {
        let t = match table {
            Some(table) => Some(self.table(table)),
            None if level == 0 => return Ok(0),
            None => None,
        };
        if level == 0 {
            if let Some(t) = t {
                let i0 = Geo::<F>::index(ws, 0);
                let n = ((we - ws) >> Geo::<F>::GRANULE_SHIFT) as usize;
                if let Some(k) = t[i0..i0 + n]
                    .iter()
                    .position(|e| F::classify(e.load(Ordering::Relaxed), 0) != Entry::Invalid)
                {
                    return Err(PageTableError::AlreadyMapped {
                        va: self.to_va(ws + ((k as u64) << Geo::<F>::GRANULE_SHIFT)),
                    });
                }
            }
            return Ok(0);
        }
        let span = Geo::<F>::entry_span(level);
        let (mut w, mut p, mut n) = (ws, pa, 0);
        while w < we {
            let end = ((w | (span - 1)) + 1).min(we);
            let raw = t.map_or(0, |t| t[Geo::<F>::index(w, level)].load(Ordering::Acquire));
            match F::classify(raw, level) {
                Entry::Leaf(_) => return Err(PageTableError::AlreadyMapped { va: self.to_va(w) }),
                Entry::Table(child) => {
                    n += self.plan_map(ctx, level - 1, Some(child), w, end, p)?
                }
                Entry::Invalid => {
                    if !Self::leaf_here(ctx, level, w, end, p) {
                        n += 1 + self.plan_map(ctx, level - 1, None, w, end, p)?;
                    }
                }
            }
            p += end - w;
            w = end;
        }
        Ok(n)
    }

    #[allow(clippy::too_many_arguments)] // the recursion's state, kept in registers
    fn commit_map(
        &self,
        ctx: &MapCtx,
        level: u8,
        table: PhysAddr,
        ws: u64,
        we: u64,
        pa: u64,
        reserve: &mut Reserve,
    ) -> Result<(), PageTableError> {
        let t = self.table(table);
        if level == 0 {
            let template = ctx.templates[0];
            let i0 = Geo::<F>::index(ws, 0);
            let n = ((we - ws) >> Geo::<F>::GRANULE_SHIFT) as usize;
            // Whole groups inside the run whose physical run is aligned like their addresses
            // (va and pa advance together, so one check covers every group).
            let (h0, h1) = if ctx.contiguous {
                let g = F::CONTIGUOUS_PAGES;
                let h0 = (i0 + g - 1) & !(g - 1);
                let h1 = (i0 + n) & !(g - 1);
                let pa_h0 = pa + (((h0 - i0) as u64) << Geo::<F>::GRANULE_SHIFT);
                let aligned = pa_h0 & ((g as u64) * Self::GRANULE - 1) == 0;
                if aligned && h0 < h1 {
                    (h0, h1)
                } else {
                    (i0, i0)
                }
            } else {
                (i0, i0)
            };
            // Three runs (before, inside and after the hinted groups), each a plain loop.
            let mut p = template | pa;
            for (range, hint) in
                [(i0, h0), (h0, h1), (h1, i0 + n)]
                    .into_iter()
                    .zip([0, F::CONTIGUOUS_BIT, 0])
            {
                let (from, to) = range;
                for e in t.get(from..to).unwrap_or(&[]) {
                    e.store(p | hint, Ordering::Relaxed);
                    p += Self::GRANULE;
                }
            }
            return Ok(());
        }
        let span = Geo::<F>::entry_span(level);
        let (mut w, mut p) = (ws, pa);
        while w < we {
            let end = ((w | (span - 1)) + 1).min(we);
            let slot = &t[Geo::<F>::index(w, level)];
            match F::classify(slot.load(Ordering::Acquire), level) {
                Entry::Table(child) => {
                    self.commit_map(ctx, level - 1, child, w, end, p, reserve)?
                }
                Entry::Invalid if Self::leaf_here(ctx, level, w, end, p) => {
                    slot.store(ctx.templates[usize::from(level)] | p, Ordering::Relaxed);
                }
                Entry::Invalid => {
                    let child = self.take(reserve)?;
                    self.commit_map(ctx, level - 1, child, w, end, p, reserve)?;
                    slot.store(F::table_entry(child), Ordering::Release);
                }
                // The plan rejected ranges with leaves; nothing changed the table since.
                Entry::Leaf(_) => return Err(PageTableError::AlreadyMapped { va: self.to_va(w) }),
            }
            p += end - w;
            w = end;
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // translate and walk
    // ------------------------------------------------------------------------------------

    /// Translates `va`: the physical address, and the page or block that maps it.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::OutOfRange`] if `va` is outside the table's region;
    /// - [`PageTableError::NotMapped`] if no leaf maps it.
    #[inline]
    pub fn translate(&self, va: VirtAddr) -> Result<Translation, PageTableError> {
        let (w, _) = self.walk_range(va, 1)?;
        let leaf = self
            .walk_leaf(w)
            .map_err(|_| PageTableError::NotMapped { va: va.as_u64() })?;
        let mask = leaf.size.bytes() - 1;
        Ok(Translation {
            pa: PhysAddr::new_truncate(leaf.frame.as_u64() + (w & mask)),
            size: leaf.size,
            page: VirtAddr::new_truncate(va.as_u64() & !mask, VaWidth::WIDEST),
            raw: leaf.raw,
            level: leaf.level,
            contiguous: Geo::<F>::hinted(leaf.raw, leaf.level),
            decode: F::leaf_attrs,
            access: F::access_state,
        })
    }

    /// Walks to the leaf that maps walk address `w`; if there is none, returns the level at
    /// which the walk stopped (so callers can skip the whole invalid span). The one walk of
    /// the engine's lookups.
    #[inline(always)]
    pub(crate) fn walk_leaf(&self, w: u64) -> Result<Leaf, u8> {
        let mut table = self.root;
        // A loop with a constant trip count: the compiler unrolls it, so every level's shift,
        // index mask and leaf size are constants.
        for level in (0..=Geo::<F>::ROOT).rev() {
            let raw = self.table(table)[Geo::<F>::index(w, level)].load(Ordering::Acquire);
            match F::classify(raw, level) {
                Entry::Table(next) if level > 0 => table = next,
                Entry::Leaf(frame) => {
                    return match F::leaf_size(level) {
                        Some(size) => Ok(Leaf {
                            table,
                            frame,
                            raw,
                            level,
                            size,
                        }),
                        None => Err(level),
                    };
                }
                _ => return Err(level),
            }
        }
        // Level 0 holds no table entries (`classify` at level 0 reports leaves or invalid).
        Err(0)
    }

    /// Returns the leaf mapping walk address `w` (see [`walk_leaf`](Self::walk_leaf)).
    #[inline(always)]
    fn leaf_at(&self, w: u64) -> Result<Mapping, u8> {
        let leaf = self.walk_leaf(w)?;
        Ok(Mapping {
            va: VirtAddr::new_truncate(self.to_va(w & !(leaf.size.bytes() - 1)), VaWidth::WIDEST),
            pa: leaf.frame,
            size: leaf.size,
            attrs: F::leaf_attrs(leaf.raw, leaf.level),
            access: F::access_state(leaf.raw),
            contiguous: Geo::<F>::hinted(leaf.raw, leaf.level),
        })
    }

    /// Returns an iterator over the leaf mappings that intersect `[va, va + len)`, in address
    /// order (a page or block partly inside the range is reported whole).
    ///
    /// # Errors
    ///
    /// - [`PageTableError::BadLength`] / [`PageTableError::Misaligned`] for a bad range;
    /// - [`PageTableError::OutOfRange`] if it leaves the table's region.
    pub fn mappings(&self, va: VirtAddr, len: u64) -> Result<Mappings<'_, F, M>, PageTableError> {
        Self::check_len(va, len)?;
        let (w, end) = self.walk_range(va, len)?;
        Ok(Mappings {
            table: self,
            w,
            end,
        })
    }

    // ------------------------------------------------------------------------------------
    // unmap
    // ------------------------------------------------------------------------------------

    /// Unmaps the page or block that starts at `va` and returns it.
    ///
    /// The entry is removed with an atomic swap, so the returned accessed/dirty state is exact.
    /// Tables left empty are unlinked and freed after the flush.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::OutOfRange`] if `va` is outside the table's region;
    /// - [`PageTableError::NotMapped`] if no leaf starts at `va` (use
    ///   [`unmap_range`](Self::unmap_range) to remove part of a larger page).
    #[inline]
    pub fn unmap(&mut self, va: VirtAddr) -> Result<(Mapping, PendingFlush), PageTableError> {
        let (w, _) = self.walk_range(va, 1)?;
        let not_mapped = PageTableError::NotMapped { va: va.as_u64() };
        let (table, level, size) = self.find_leaf(w).ok_or(not_mapped)?;
        let mapping = self.take_leaf(table, w, va.as_u64(), level, size)?;
        let mut pending = PendingFlush::new(F::GRANULE);
        self.cleared_leaf(w, table, level, size, &mut pending);
        Ok((mapping, pending))
    }

    /// Clears the leaf of `size` at `level` in `table` that starts at walk address `w` (virtual
    /// address `va`) with a swap, so its accessed/dirty state is exact, and returns what it
    /// mapped.
    ///
    /// # Errors
    ///
    /// [`PageTableError::NotMapped`] if `w` is not the start of a leaf there (nothing changes).
    #[inline(always)]
    pub(crate) fn take_leaf(
        &self,
        table: PhysAddr,
        w: u64,
        va: u64,
        level: u8,
        size: PageSize,
    ) -> Result<Mapping, PageTableError> {
        let not_mapped = PageTableError::NotMapped { va };
        if w & (size.bytes() - 1) != 0 {
            return Err(not_mapped);
        }
        let t = self.table(table);
        let idx = Geo::<F>::index(w, level);
        if Geo::<F>::hinted(t[idx].load(Ordering::Relaxed), level) {
            // The rest of the group must lose the hint first, which needs a flush.
            return Err(PageTableError::BreakBeforeMake { va });
        }
        let raw = t[idx].swap(0, Ordering::Relaxed);
        let Entry::Leaf(pa) = F::classify(raw, level) else {
            // Nothing was there (a cached leaf table with an invalid slot): put it back.
            t[idx].store(raw, Ordering::Relaxed);
            return Err(not_mapped);
        };
        Ok(Mapping {
            va: VirtAddr::new_truncate(va, VaWidth::WIDEST),
            pa,
            size,
            attrs: F::leaf_attrs(raw, level),
            access: F::access_state(raw),
            contiguous: false,
        })
    }

    /// Clears the leaf like [`take_leaf`](Self::take_leaf), but with a load and a plain store:
    /// accessed/dirty bits set between the two are lost. Returns the frame it mapped.
    ///
    /// # Errors
    ///
    /// [`PageTableError::NotMapped`] if `w` is not the start of a leaf there (nothing changes).
    #[inline(always)]
    pub(crate) fn discard_leaf(
        &self,
        table: PhysAddr,
        w: u64,
        va: u64,
        level: u8,
        size: PageSize,
    ) -> Result<PhysAddr, PageTableError> {
        let slot = &self.table(table)[Geo::<F>::index(w, level)];
        let raw = slot.load(Ordering::Relaxed);
        match F::classify(raw, level) {
            Entry::Leaf(_) if Geo::<F>::hinted(raw, level) && w & (size.bytes() - 1) == 0 => {
                Err(PageTableError::BreakBeforeMake { va })
            }
            Entry::Leaf(pa) if w & (size.bytes() - 1) == 0 => {
                slot.store(0, Ordering::Relaxed);
                Ok(pa)
            }
            _ => Err(PageTableError::NotMapped { va }),
        }
    }

    /// Finds the table holding the leaf that maps walk address `w` (through the leaf cache
    /// when it covers `w`), with the leaf's level and size; `None` if nothing maps `w`.
    #[inline(always)]
    fn find_leaf(&mut self, w: u64) -> Option<(PhysAddr, u8, PageSize)> {
        let key = w >> Geo::<F>::shift(1);
        match self.leaf_cache {
            Some((cached, table)) if cached == key => return Some((table, 0, F::GRANULE)),
            _ => {}
        }
        let leaf = self.walk_leaf(w).ok()?;
        if leaf.level == 0 {
            self.leaf_cache = Some((key, leaf.table));
        }
        Some((leaf.table, leaf.level, leaf.size))
    }

    /// Records in `pending` the flush owed for the leaf of `size` at walk address `w` that was
    /// just cleared in `table` (at `level`), unlinking the tables that became empty.
    #[inline(always)]
    pub(crate) fn cleared_leaf(
        &mut self,
        w: u64,
        table: PhysAddr,
        level: u8,
        size: PageSize,
        pending: &mut PendingFlush,
    ) {
        pending.add_range(self.to_va(w), size.bytes(), 1, size);
        let idx = Geo::<F>::index(w, level);
        let t = self.table(table);
        // A mapped neighbour (the usual case when pages go one by one) settles it without a
        // scan.
        let neighbour = |i: Option<usize>| {
            i.and_then(|i| t.get(i))
                .is_some_and(|e| e.load(Ordering::Relaxed) != 0)
        };
        if neighbour(idx.checked_add(1)) || neighbour(idx.checked_sub(1)) {
            return;
        }
        if level < Geo::<F>::ROOT && self.is_empty_except(t, level, idx, idx + 1) {
            self.leaf_cache = None;
            self.unlink_empty(w, level, pending);
        }
    }

    /// Unlinks the table at `level` on the walk of `w`, which the caller found empty, and
    /// every ancestor that becomes empty with it (never the root), chaining them into
    /// `pending`. Walks again from the root: this happens once per table, not once per page.
    #[cold]
    pub(crate) fn unlink_empty(&self, w: u64, level: u8, pending: &mut PendingFlush) {
        let mut path = [PhysAddr::zero(); 8];
        let mut table = self.root;
        let mut l = Geo::<F>::ROOT;
        while l >= level {
            path[usize::from(l)] = table;
            if l == level {
                break;
            }
            match F::classify(
                self.table(table)[Geo::<F>::index(w, l)].load(Ordering::Acquire),
                l,
            ) {
                Entry::Table(next) => table = next,
                _ => return,
            }
            l -= 1;
        }
        let mut l = level;
        while l < Geo::<F>::ROOT {
            let child = path[usize::from(l)];
            let i = Geo::<F>::index(w, l);
            if l != level && !self.is_empty_except(self.table(child), l, i, i) {
                break;
            }
            let parent = self.table(path[usize::from(l + 1)]);
            parent[Geo::<F>::index(w, l + 1)].store(0, Ordering::Relaxed);
            self.push_freed(&mut pending.freed, child);
            pending.leaf_only = false;
            l += 1;
        }
    }

    /// Returns whether a table at `level` has no entry outside `[i0, i1)`.
    ///
    /// Scans upward from `i1` first: when pages are unmapped in ascending order the next entry
    /// is usually the one that is still mapped.
    #[inline]
    pub(crate) fn is_empty_except(&self, t: &[AtomicU64], level: u8, i0: usize, i1: usize) -> bool {
        let n = Geo::<F>::entries(level);
        // OR entries with plain loads, which the compiler vectorises: one cache line, then 64
        // entries (eight lines) per branch.
        let occupied = |part: &[AtomicU64]| {
            let words = part.as_ptr().cast::<u64>();
            let read = |i: usize| {
                // SAFETY: callers pass `i < part.len()`, and `AtomicU64` has the layout of
                // `u64`. A plain read through a shared reference to the atomic's cell is not a
                // data race: entries are written only by `&mut PageTable` operations, and a
                // `&self` method like this one cannot run during one of them (the callers
                // that mutate hold `&mut`). Hardware walkers may set accessed/dirty bits
                // concurrently, but only in valid (non-zero) entries, so the answer does not
                // depend on them.
                unsafe { words.add(i).read() }
            };
            // One cache line first: next to a page just unmapped, a mapped neighbour is the
            // common case and ends the scan early.
            let head = part.len().min(8);
            if (0..head).fold(0, |acc, i| acc | read(i)) != 0 {
                return true;
            }
            let full = head + (part.len() - head) / 64 * 64;
            for start in (head..full).step_by(64) {
                if (start..start + 64).fold(0, |acc, i| acc | read(i)) != 0 {
                    return true;
                }
            }
            (full..part.len()).fold(0, |acc, i| acc | read(i)) != 0
        };
        !(occupied(&t[i1..n]) || occupied(&t[..i0]))
    }

    /// Unmaps every page in `[va, va + len)`; holes are skipped.
    ///
    /// Pages and blocks partly inside the range are split first (on aarch64 with
    /// break-before-make through `hook`); tables that become empty are unlinked and returned
    /// in the pending flush; tables entirely inside the range are dropped without reading
    /// their entries.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::BadLength`] / [`PageTableError::Misaligned`] for a bad range;
    /// - [`PageTableError::OutOfRange`] if it leaves the table's region;
    /// - [`PageTableError::FrameAllocation`] / [`PageTableError::Mapper`] if a split needs a
    ///   table that cannot be created (nothing is changed).
    pub fn unmap_range<H: FlushHook + ?Sized, A: FrameAllocator + ?Sized>(
        &mut self,
        va: VirtAddr,
        len: u64,
        hook: &mut H,
        alloc: &mut A,
    ) -> Result<PendingFlush, PageTableError> {
        self.unmap_range_with(va, len, hook, alloc, &mut NoVisit)
    }

    /// Unmaps every page in `[va, va + len)` like [`unmap_range`](Self::unmap_range) and
    /// reports each removed page or block (with exact accessed/dirty state) to `visitor`.
    ///
    /// # Errors
    ///
    /// As [`unmap_range`](Self::unmap_range).
    pub fn unmap_range_with<H, A, V>(
        &mut self,
        va: VirtAddr,
        len: u64,
        hook: &mut H,
        alloc: &mut A,
        visitor: &mut V,
    ) -> Result<PendingFlush, PageTableError>
    where
        H: FlushHook + ?Sized,
        A: FrameAllocator + ?Sized,
        V: UnmapVisitor + ?Sized,
    {
        Self::check_len(va, len)?;
        let (ws, we) = self.walk_range(va, len)?;
        if !V::VISIT && len == Self::GRANULE {
            // One page of a leaf table (the common single-page call): no plan, no split.
            if let Some((table, 0, size)) = self.find_leaf(ws) {
                let slot = &self.table(table)[Geo::<F>::index(ws, 0)];
                let raw = slot.load(Ordering::Relaxed);
                if F::classify(raw, 0) == Entry::Invalid {
                    return Ok(PendingFlush::new(F::GRANULE));
                }
                if !Geo::<F>::hinted(raw, 0) {
                    // Nobody asked for the old value: a plain store (see `Unmap::leaves`).
                    slot.store(0, Ordering::Relaxed);
                    let mut pending = PendingFlush::new(F::GRANULE);
                    self.cleared_leaf(ws, table, 0, size, &mut pending);
                    return Ok(pending);
                }
                // A page of a contiguous group: the general path unfolds the group first.
            }
        }
        // Tables may be unlinked.
        self.leaf_cache = None;
        self.edit(ws, we, &mut Unmap { visitor }, hook, alloc)
    }

    /// Plans, reserves and commits `op` over the walk range `[ws, we)`.
    fn edit<O: EditOp + ?Sized, H: FlushHook + ?Sized, A: FrameAllocator + ?Sized>(
        &mut self,
        ws: u64,
        we: u64,
        op: &mut O,
        hook: &mut H,
        alloc: &mut A,
    ) -> Result<PendingFlush, PageTableError> {
        let root = Geo::<F>::ROOT;
        let needed = self.plan_edit(root, self.root, ws, we)?;
        let mut reserve = self.reserve(needed, alloc)?;
        let mut pending = PendingFlush::new(F::GRANULE);
        let result = self.commit_edit(
            root,
            self.root,
            ws,
            we,
            op,
            &mut pending,
            hook,
            &mut reserve,
        );
        if reserve.count != 0 {
            self.release(reserve, alloc);
        }
        result?;
        Ok(pending)
    }

    // ------------------------------------------------------------------------------------
    // protect and harvest
    // ------------------------------------------------------------------------------------

    /// Gives every mapped page in `[va, va + len)` the attributes `attrs` (holes are skipped;
    /// addresses and accessed/dirty state are kept). Pages and blocks partly inside the range
    /// are split first.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::BadLength`] / [`PageTableError::Misaligned`] for a bad range;
    /// - [`PageTableError::OutOfRange`] if it leaves the table's region;
    /// - [`PageTableError::InvalidAttributes`] if the format cannot express `attrs`;
    /// - [`PageTableError::FrameAllocation`] / [`PageTableError::Mapper`] if a split needs a
    ///   table that cannot be created (nothing is changed).
    pub fn protect_range<H: FlushHook + ?Sized, A: FrameAllocator + ?Sized>(
        &mut self,
        va: VirtAddr,
        len: u64,
        attrs: &PageAttrs,
        hook: &mut H,
        alloc: &mut A,
    ) -> Result<PendingFlush, PageTableError> {
        Self::check_len(va, len)?;
        let (ws, we) = self.walk_range(va, len)?;
        let mut templates = [0u64; 8];
        for level in 0..F::LEVELS {
            if F::leaf_size(level).is_some() {
                templates[usize::from(level)] = F::leaf_template(attrs, level)?;
            }
        }
        self.edit(ws, we, &mut Protect { templates }, hook, alloc)
    }

    /// Reports the accessed/dirty state of every page or block intersecting `[va, va + len)`
    /// to `f`, clearing the states selected by `clear` (atomically, so concurrent hardware
    /// updates are never lost). Clearing owes a flush, so the hardware sets the bits again
    /// on the next access.
    ///
    /// # Errors
    ///
    /// - [`PageTableError::BadLength`] / [`PageTableError::Misaligned`] for a bad range;
    /// - [`PageTableError::OutOfRange`] if it leaves the table's region.
    pub fn harvest<Fun: FnMut(&Mapping)>(
        &mut self,
        va: VirtAddr,
        len: u64,
        clear: AccessState,
        mut f: Fun,
    ) -> Result<PendingFlush, PageTableError> {
        Self::check_len(va, len)?;
        let (ws, we) = self.walk_range(va, len)?;
        let mut pending = PendingFlush::new(F::GRANULE);
        let mut w = ws;
        while w < we {
            match self.walk_leaf(w) {
                Ok(leaf) if Geo::<F>::hinted(leaf.raw, leaf.level) => {
                    w = self.harvest_group(leaf.table, w, we, clear, &mut f, &mut pending);
                }
                Ok(Leaf {
                    table, level, size, ..
                }) => {
                    let slot = &self.table(table)[Geo::<F>::index(w, level)];
                    let mut seen = 0;
                    let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |raw| {
                        seen = raw;
                        let new = F::clear_access(raw, clear);
                        (new != raw).then_some(new)
                    });
                    let start = w & !(size.bytes() - 1);
                    if let Entry::Leaf(pa) = F::classify(seen, level) {
                        let va = self.to_va(start);
                        f(&Mapping {
                            va: VirtAddr::new_truncate(va, VaWidth::WIDEST),
                            pa,
                            size,
                            attrs: F::leaf_attrs(seen, level),
                            access: F::access_state(seen),
                            contiguous: false,
                        });
                        if F::clear_access(seen, clear) != seen {
                            pending.add_range(va, size.bytes(), 1, size);
                        }
                    }
                    w = start + size.bytes();
                }
                Err(level) => w = (w | (Geo::<F>::entry_span(level) - 1)) + 1,
            }
        }
        Ok(pending)
    }

    /// Harvests the contiguous group holding the hinted page at walk address `w`: clears the
    /// state of every entry of the group, reports the pages of the group inside `[w, we)` with
    /// the group's combined state (the hardware may have recorded an access in any entry) and
    /// returns the walk address after what it reported.
    fn harvest_group<Fun: FnMut(&Mapping)>(
        &self,
        table: PhysAddr,
        w: u64,
        we: u64,
        clear: AccessState,
        f: &mut Fun,
        pending: &mut PendingFlush,
    ) -> u64 {
        let g = F::CONTIGUOUS_PAGES;
        let span = g as u64 * Self::GRANULE;
        let gw = w & !(span - 1);
        let gi = Geo::<F>::index(gw, 0);
        let mut seen = [0u64; MAX_CONTIGUOUS_PAGES];
        let mut state = AccessState::default();
        let mut changed = false;
        for (slot, old) in self.table(table)[gi..gi + g].iter().zip(&mut seen) {
            let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |raw| {
                *old = raw;
                let new = F::clear_access(raw, clear);
                (new != raw).then_some(new)
            });
            changed |= F::clear_access(*old, clear) != *old;
            let a = F::access_state(*old);
            state.accessed |= a.accessed;
            state.dirty |= a.dirty;
        }
        let end = (gw + span).min(we);
        let first = ((w - gw) >> Geo::<F>::GRANULE_SHIFT) as usize;
        let last = ((end - gw) >> Geo::<F>::GRANULE_SHIFT) as usize;
        for (k, &raw) in seen.iter().enumerate().take(last).skip(first) {
            if let Entry::Leaf(pa) = F::classify(raw, 0) {
                f(&Mapping {
                    va: VirtAddr::new_truncate(
                        self.to_va(gw + ((k as u64) << Geo::<F>::GRANULE_SHIFT)),
                        VaWidth::WIDEST,
                    ),
                    pa,
                    size: F::GRANULE,
                    attrs: F::leaf_attrs(raw, 0),
                    access: state,
                    contiguous: true,
                });
            }
        }
        if changed {
            pending.add_range(self.to_va(gw), span, g as u64, F::GRANULE);
        }
        end
    }

    // ------------------------------------------------------------------------------------
    // Shared plan/commit for edits of existing mappings (unmap, protect)
    // ------------------------------------------------------------------------------------

    /// Counts the tables needed to split leaves partly inside `[ws, we)`. Subtrees entirely
    /// inside the range hold no partial leaves and are not visited.
    fn plan_edit(&self, level: u8, table: PhysAddr, ws: u64, we: u64) -> Plan {
        if level == 0 {
            return Ok(0);
        }
        let t = self.table(table);
        let span = Geo::<F>::entry_span(level);
        let (mut w, mut n) = (ws, 0);
        while w < we {
            let end = ((w | (span - 1)) + 1).min(we);
            let whole = w & (span - 1) == 0 && end - w == span;
            match F::classify(t[Geo::<F>::index(w, level)].load(Ordering::Acquire), level) {
                Entry::Invalid => {}
                Entry::Leaf(_) if whole => {}
                Entry::Leaf(_) => n += self.plan_split(level, w, end)?,
                Entry::Table(_) if whole => {}
                Entry::Table(child) => n += self.plan_edit(level - 1, child, w, end)?,
            }
            w = end;
        }
        Ok(n)
    }

    /// Counts the tables needed to split a leaf at `level` so that `[ws, we)` (inside it,
    /// not all of it) consists of whole leaves.
    fn plan_split(&self, level: u8, ws: u64, we: u64) -> Plan {
        let child = level - 1;
        let Some(size) = F::leaf_size(child) else {
            return Err(PageTableError::SizeNotSupported {
                size: F::leaf_size(level).unwrap_or(F::GRANULE),
            });
        };
        let span = size.bytes();
        let first = ws & !(span - 1);
        let last = (we - 1) & !(span - 1);
        let mut n = 1;
        if ws != first || we < first + span {
            n += self.plan_split_partial(child, ws, we.min(first + span))?;
        }
        if last != first && we != last + span {
            n += self.plan_split_partial(child, last, we)?;
        }
        Ok(n)
    }

    fn plan_split_partial(&self, level: u8, ws: u64, we: u64) -> Plan {
        if level == 0 {
            Ok(0)
        } else {
            self.plan_split(level, ws, we)
        }
    }

    /// Unlinks nothing but chains every table of the subtree at `table` (level `level`) into
    /// `freed`.
    fn free_subtree(&self, level: u8, table: PhysAddr, freed: &mut FreedTables) {
        if level > 0 {
            // The tables behind linked root entries belong to the table that lent them.
            let lent = match &self.linked {
                Some(l) if level == Geo::<F>::ROOT => l.first..l.first + l.count,
                _ => 0..0,
            };
            let t = self.table(table);
            for (i, e) in t[..Geo::<F>::entries(level)].iter().enumerate() {
                if lent.contains(&i) {
                    continue;
                }
                if let Entry::Table(child) = F::classify(e.load(Ordering::Acquire), level) {
                    self.free_subtree(level - 1, child, freed);
                }
            }
        }
        self.push_freed(freed, table);
    }

    /// Replaces the live leaf in `slot` (at `level`, covering walk address `w`) by a table of
    /// leaves one level down with the same translation and attributes.
    fn split<H: FlushHook + ?Sized>(
        &self,
        slot: &AtomicU64,
        level: u8,
        w: u64,
        hook: &mut H,
        reserve: &mut Reserve,
    ) -> Result<PhysAddr, PageTableError> {
        let raw = slot.load(Ordering::Acquire);
        let Entry::Leaf(pa) = F::classify(raw, level) else {
            return Err(PageTableError::NotMapped { va: self.to_va(w) });
        };
        let (Some(size), Some(child_size)) = (F::leaf_size(level), F::leaf_size(level - 1)) else {
            return Err(PageTableError::SizeNotSupported { size: F::GRANULE });
        };
        let child = self.take(reserve)?;
        let ct = self.table(child);
        let template = F::split_template(raw, level);
        let mut p = pa.as_u64();
        for e in &ct[..Geo::<F>::entries(level - 1)] {
            e.store(template | p, Ordering::Relaxed);
            p += child_size.bytes();
        }
        let start = w & !(size.bytes() - 1);
        if F::NEEDS_BBM {
            // Break: invalidate the block everywhere before the table replaces it.
            slot.store(0, Ordering::Relaxed);
            hook.invalidate(&FlushRange {
                start: VirtAddr::new_truncate(self.to_va(start), VaWidth::WIDEST),
                len: size.bytes(),
                stride: size,
                entries: 1,
                leaf_only: true,
            });
        }
        // Make: the table holds the same translations, so on formats without BBM the stale
        // block entry in a TLB stays correct until the caller's flush.
        slot.store(F::table_entry(child), Ordering::Release);
        Ok(child)
    }

    /// Clears the contiguous hint of the groups of level-0 table `t` that the edit of the `n`
    /// entries from `i0` (walk address `ws`) touches: the groups it covers partly, and with
    /// `whole` also those it covers entirely.
    ///
    /// Break-before-make for all of them at once: every entry of a hinted group is made
    /// invalid by clearing bit 0 (its other bits stay, and the hardware no longer updates it),
    /// one invalidation through `hook` covers the groups, then each entry gets bit 0 back
    /// without the hint.
    fn unfold_groups<H: FlushHook + ?Sized>(
        &self,
        t: &[AtomicU64],
        ws: u64,
        i0: usize,
        n: usize,
        whole: bool,
        hook: &mut H,
    ) {
        let g = F::CONTIGUOUS_PAGES;
        let (first, end) = (i0 & !(g - 1), i0 + n);
        let last = (end - 1) & !(g - 1);
        let touched = |gi: usize| {
            let partial = gi < i0 || gi + g > end;
            (whole || partial) && Geo::<F>::hinted(t[gi].load(Ordering::Relaxed), 0)
        };
        let groups = || {
            let step = if whole { g } else { (last - first).max(1) };
            (first..=last).step_by(step).filter(|&gi| touched(gi))
        };
        let (mut lo, mut hi, mut entries) = (usize::MAX, 0, 0);
        for gi in groups() {
            for e in &t[gi..gi + g] {
                e.fetch_and(!1, Ordering::Relaxed);
            }
            (lo, hi, entries) = (lo.min(gi), gi + g, entries + g);
        }
        if entries == 0 {
            return;
        }
        let va_of = |i: usize| {
            self.to_va(ws - ((i0 as u64) << Geo::<F>::GRANULE_SHIFT))
                .wrapping_add((i as u64) << Geo::<F>::GRANULE_SHIFT)
        };
        hook.invalidate(&FlushRange {
            start: VirtAddr::new_truncate(va_of(lo), VaWidth::WIDEST),
            len: ((hi - lo) as u64) << Geo::<F>::GRANULE_SHIFT,
            stride: F::GRANULE,
            entries: entries as u64,
            leaf_only: true,
        });
        for e in &t[lo..hi] {
            let raw = e.load(Ordering::Relaxed);
            if raw & 1 == 0 && raw & F::CONTIGUOUS_BIT != 0 {
                e.store((raw | 1) & !F::CONTIGUOUS_BIT, Ordering::Release);
            }
        }
    }

    /// Applies `op` to every leaf in `[ws, we)` of the table at `level`; returns whether the
    /// table has no entry left.
    #[allow(clippy::too_many_arguments)] // the recursion's state
    fn commit_edit<O: EditOp + ?Sized, H: FlushHook + ?Sized>(
        &self,
        level: u8,
        table: PhysAddr,
        ws: u64,
        we: u64,
        op: &mut O,
        pending: &mut PendingFlush,
        hook: &mut H,
        reserve: &mut Reserve,
    ) -> Result<bool, PageTableError> {
        let t = self.table(table);
        let i0 = Geo::<F>::index(ws, level);
        if level == 0 {
            let n = ((we - ws) >> Geo::<F>::GRANULE_SHIFT) as usize;
            if F::CONTIGUOUS_PAGES > 1 {
                self.unfold_groups(t, ws, i0, n, O::UNFOLDS_WHOLE_GROUPS, hook);
            }
            let changed = op.leaves::<F, H>(
                &t[i0..i0 + n],
                0,
                |k| self.to_va(ws + ((k as u64) << Geo::<F>::GRANULE_SHIFT)),
                hook,
            );
            if changed != 0 {
                pending.add_range(self.to_va(ws), we - ws, changed, F::GRANULE);
            }
            return Ok(O::REMOVES && self.is_empty_except(t, 0, i0, i0 + n));
        }
        let span = Geo::<F>::entry_span(level);
        let mut w = ws;
        // Whether an entry inside the range is still in use after the op.
        let mut kept = !O::REMOVES;
        while w < we {
            let end = ((w | (span - 1)) + 1).min(we);
            let whole = w & (span - 1) == 0 && end - w == span;
            let idx = Geo::<F>::index(w, level);
            let slot = &t[idx];
            match F::classify(slot.load(Ordering::Acquire), level) {
                Entry::Invalid => {}
                Entry::Leaf(_) if whole => {
                    kept |= !O::REMOVES;
                    let changed =
                        op.leaves::<F, H>(slice::from_ref(slot), level, |_| self.to_va(w), hook);
                    if changed != 0 {
                        let size = F::leaf_size(level).unwrap_or(F::GRANULE);
                        pending.add_range(self.to_va(w), span, 1, size);
                    }
                }
                Entry::Leaf(_) => {
                    let child = self.split(slot, level, w, hook, reserve)?;
                    self.commit_edit(level - 1, child, w, end, op, pending, hook, reserve)?;
                    kept = true;
                }
                Entry::Table(child) if whole && O::REMOVES && !O::VISITS => {
                    slot.store(0, Ordering::Relaxed);
                    self.free_subtree(level - 1, child, &mut pending.freed);
                    pending.add_range(
                        self.to_va(w),
                        span,
                        span >> Geo::<F>::GRANULE_SHIFT,
                        F::GRANULE,
                    );
                    pending.leaf_only = false;
                }
                Entry::Table(child) => {
                    if self.commit_edit(level - 1, child, w, end, op, pending, hook, reserve)? {
                        slot.store(0, Ordering::Relaxed);
                        self.push_freed(&mut pending.freed, child);
                        pending.add_range(self.to_va(w & !(span - 1)), span, 0, F::GRANULE);
                        pending.leaf_only = false;
                    } else {
                        kept = true;
                    }
                }
            }
            w = end;
        }
        let i1 = Geo::<F>::index(we - 1, level) + 1;
        Ok(!kept && level != Geo::<F>::ROOT && self.is_empty_except(t, level, i0, i1))
    }
}

/// What [`PageTable::commit_edit`] does to the leaves of the range.
trait EditOp {
    /// Whether the op clears entries (so tables can become empty).
    const REMOVES: bool;
    /// Whether each removed entry must be read (no dropping of whole tables).
    const VISITS: bool;
    /// Whether contiguous groups entirely inside the range lose their hint too (groups the
    /// range covers partly always do).
    const UNFOLDS_WHOLE_GROUPS: bool;
    /// Applies the op to `slots` (leaves of `level`; slot `k` maps `va_of(k)`); returns how
    /// many valid entries changed.
    fn leaves<F: Format, H: FlushHook + ?Sized>(
        &mut self,
        slots: &[AtomicU64],
        level: u8,
        va_of: impl Fn(usize) -> u64,
        hook: &mut H,
    ) -> u64;
}

struct Unmap<'v, V: ?Sized> {
    visitor: &'v mut V,
}

impl<V: UnmapVisitor + ?Sized> EditOp for Unmap<'_, V> {
    const REMOVES: bool = true;
    const VISITS: bool = V::VISIT;
    // Whole groups are cleared entry by entry and flushed once, like any unmapped run.
    const UNFOLDS_WHOLE_GROUPS: bool = false;

    #[inline(always)]
    fn leaves<F: Format, H: FlushHook + ?Sized>(
        &mut self,
        slots: &[AtomicU64],
        level: u8,
        va_of: impl Fn(usize) -> u64,
        _hook: &mut H,
    ) -> u64 {
        let mut changed = 0;
        for (k, slot) in slots.iter().enumerate() {
            if V::VISIT {
                let raw = slot.swap(0, Ordering::Relaxed);
                if let (Entry::Leaf(pa), Some(size)) =
                    (F::classify(raw, level), F::leaf_size(level))
                {
                    changed += 1;
                    self.visitor.unmapped(&Mapping {
                        va: VirtAddr::new_truncate(va_of(k), VaWidth::WIDEST),
                        pa,
                        size,
                        attrs: F::leaf_attrs(raw, level),
                        access: F::access_state(raw),
                        contiguous: Geo::<F>::hinted(raw, level),
                    });
                }
            } else {
                let raw = slot.load(Ordering::Relaxed);
                if raw != 0 {
                    // Nobody reads the old value: a plain store loses nothing anyone asked
                    // for, and a racing hardware A/D update either precedes it (and is
                    // overwritten) or finds the entry invalid.
                    changed += u64::from(F::classify(raw, level) != Entry::Invalid);
                    slot.store(0, Ordering::Relaxed);
                }
            }
        }
        changed
    }
}

struct Protect {
    templates: [u64; 8],
}

impl EditOp for Protect {
    const REMOVES: bool = false;
    const VISITS: bool = true;
    // New attributes are written entry by entry: a hinted group would mix old and new.
    const UNFOLDS_WHOLE_GROUPS: bool = true;

    #[inline(always)]
    fn leaves<F: Format, H: FlushHook + ?Sized>(
        &mut self,
        slots: &[AtomicU64],
        level: u8,
        va_of: impl Fn(usize) -> u64,
        hook: &mut H,
    ) -> u64 {
        let template = self.templates[usize::from(level)];
        let mut changed = 0;
        // Entries whose change needs break-before-make, broken in batches: one
        // invalidation covers a whole batch.
        const BATCH: usize = 64;
        let mut broken = [(0usize, 0u64); BATCH];
        let mut n_broken = 0;
        for (k, slot) in slots.iter().enumerate() {
            let raw = slot.load(Ordering::Relaxed);
            if !matches!(F::classify(raw, level), Entry::Leaf(_)) {
                continue;
            }
            if F::NEEDS_BBM && F::change_needs_break(raw, F::reprotect(raw, level, template)) {
                // Break: the swap also collects accessed/dirty bits set up to this point.
                broken[n_broken] = (k, slot.swap(0, Ordering::Relaxed));
                n_broken += 1;
                if n_broken == BATCH {
                    changed += Self::make::<F, H>(slots, level, &broken, template, &va_of, hook);
                    n_broken = 0;
                }
                continue;
            }
            // Compare-and-swap so an accessed/dirty bit set by hardware meanwhile is kept.
            let result =
                slot.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |raw| match F::classify(raw, level) {
                        Entry::Leaf(_) => {
                            let new = F::reprotect(raw, level, template);
                            (new != raw).then_some(new)
                        }
                        _ => None,
                    },
                );
            changed += u64::from(result.is_ok());
        }
        if n_broken != 0 {
            changed +=
                Self::make::<F, H>(slots, level, &broken[..n_broken], template, &va_of, hook);
        }
        changed
    }
}

impl Protect {
    /// Completes break-before-make for `broken` (slot index, old entry) of `slots`: invalidates
    /// the span they cover, then writes their new entries.
    #[cold]
    fn make<F: Format, H: FlushHook + ?Sized>(
        slots: &[AtomicU64],
        level: u8,
        broken: &[(usize, u64)],
        template: u64,
        va_of: &impl Fn(usize) -> u64,
        hook: &mut H,
    ) -> u64 {
        let (Some(&(first, _)), Some(&(last, _)), Some(size)) =
            (broken.first(), broken.last(), F::leaf_size(level))
        else {
            return 0;
        };
        let start = va_of(first);
        hook.invalidate(&FlushRange {
            start: VirtAddr::new_truncate(start, VaWidth::WIDEST),
            len: va_of(last).wrapping_sub(start) + size.bytes(),
            stride: size,
            entries: broken.len() as u64,
            leaf_only: true,
        });
        for &(k, old) in broken {
            slots[k].store(F::reprotect(old, level, template), Ordering::Release);
        }
        broken.len() as u64
    }
}

/// Iterator over the leaf mappings of a range; see [`PageTable::mappings`].
#[derive(Debug)]
pub struct Mappings<'a, F: Format, M: PhysMapper> {
    table: &'a PageTable<F, M>,
    w: u64,
    end: u64,
}

impl<F: Format, M: PhysMapper> Iterator for Mappings<'_, F, M> {
    type Item = Mapping;

    fn next(&mut self) -> Option<Self::Item> {
        while self.w < self.end {
            match self.table.leaf_at(self.w) {
                Ok(mapping) => {
                    let size = mapping.size.bytes();
                    self.w = (self.w & !(size - 1)) + size;
                    return Some(mapping);
                }
                Err(level) => self.w = (self.w | (Geo::<F>::entry_span(level) - 1)) + 1,
            }
        }
        None
    }
}

impl<F: Format, M: PhysMapper> core::iter::FusedIterator for Mappings<'_, F, M> {}
