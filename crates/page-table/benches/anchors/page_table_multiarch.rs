//! `page_table_multiarch` (0.6): `x86_64::X64PageTable` (its arch modules are chosen by
//! `target_arch`, not by features, so on an x86_64 host the x86_64 format is the only one).
//!
//! `PagingHandler` has no `self`, so [`Handler`] reaches [`PhysMem`] through statics. Changes go
//! through one cursor per run (`map_region` with `allow_huge = false`, `map`, `unmap_region`,
//! `unmap`, `protect_region`); the cursor's TLB flush on drop only runs on
//! `target_os = "none"`. Lookups use `query`.

use core::sync::atomic::{AtomicU64, Ordering};

use ::page_table_multiarch::x86_64::X64PageTable;
use ::page_table_multiarch::{MappingFlags, PageSize, PagingHandler};
use memory_addr::{PAGE_SIZE_4K, PhysAddr, VirtAddr};

use super::{Driver, Lookup, PAGE, PhysMem};

/// Read-write user data.
const RW: MappingFlags = MappingFlags::READ
    .union(MappingFlags::WRITE)
    .union(MappingFlags::USER);
/// [`RW`] without `WRITE`.
const RO: MappingFlags = MappingFlags::READ.union(MappingFlags::USER);

/// `PhysMem::offset`, cached so `phys_to_virt` is a load and an add.
static OFFSET: AtomicU64 = AtomicU64::new(0);

/// The static [`PagingHandler`] over [`PhysMem::get`].
#[derive(Debug)]
pub enum Handler {}

impl PagingHandler for Handler {
    #[inline]
    fn alloc_frame() -> Option<PhysAddr> {
        Some(PhysAddr::from_usize(PhysMem::get().alloc_table() as usize))
    }

    fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr> {
        // Only single 4 KiB table frames are ever requested by `PageTable64`.
        (num == 1 && align <= PAGE_SIZE_4K)
            .then(|| PhysAddr::from_usize(PhysMem::get().alloc_table() as usize))
    }

    #[inline]
    fn dealloc_frame(paddr: PhysAddr) {
        // SAFETY: `PageTable64` frees a table only once nothing refers to it.
        unsafe { PhysMem::get().free_table(paddr.as_usize() as u64) };
    }

    fn dealloc_frames(paddr: PhysAddr, num: usize) {
        assert_eq!(num, 1, "only single table frames are allocated");
        Self::dealloc_frame(paddr);
    }

    #[inline]
    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
        VirtAddr::from_usize(
            (paddr.as_usize() as u64).wrapping_add(OFFSET.load(Ordering::Relaxed)) as usize,
        )
    }
}

/// A fresh `X64PageTable` over [`PhysMem`]. Dropping it frees every table.
pub struct PageTableMultiarch {
    pt: X64PageTable<Handler>,
}

impl core::fmt::Debug for PageTableMultiarch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageTableMultiarch")
            .field("root", &self.pt.root_paddr())
            .finish()
    }
}

impl Driver for PageTableMultiarch {
    const NAME: &'static str = "page_table_multiarch";
    type Va = VirtAddr;

    fn new() -> Self {
        OFFSET.store(PhysMem::get().offset(), Ordering::Relaxed);
        Self {
            pt: X64PageTable::try_new().expect("page_table_multiarch root"),
        }
    }

    #[inline]
    fn va(va: u64) -> VirtAddr {
        VirtAddr::from_usize(va as usize)
    }

    fn map_range(&mut self, va: u64, pa: u64, pages: u64) {
        let (va0, pa0) = (va as usize, pa as usize);
        self.pt
            .cursor()
            .map_region(
                VirtAddr::from_usize(va0),
                |v| PhysAddr::from_usize(v.as_usize() - va0 + pa0),
                (pages * PAGE) as usize,
                RW,
                false,
            )
            .expect("page_table_multiarch map_region");
    }

    fn map_single(&mut self, va: u64, pa: u64, pages: u64) {
        let mut cursor = self.pt.cursor();
        for i in 0..pages {
            cursor
                .map(
                    VirtAddr::from_usize((va + i * PAGE) as usize),
                    PhysAddr::from_usize((pa + i * PAGE) as usize),
                    PageSize::Size4K,
                    RW,
                )
                .expect("page_table_multiarch map");
        }
    }

    #[inline]
    fn translate(&self, va: VirtAddr) -> Option<u64> {
        self.pt
            .query(va)
            .ok()
            .map(|(pa, _, _)| pa.as_usize() as u64)
    }

    fn unmap_range(&mut self, va: u64, pages: u64) {
        self.pt
            .cursor()
            .unmap_region(VirtAddr::from_usize(va as usize), (pages * PAGE) as usize)
            .expect("page_table_multiarch unmap_region");
    }

    fn unmap_single(&mut self, va: u64, pages: u64) {
        let mut cursor = self.pt.cursor();
        for i in 0..pages {
            cursor
                .unmap(VirtAddr::from_usize((va + i * PAGE) as usize))
                .expect("page_table_multiarch unmap");
        }
    }

    fn protect_range(&mut self, va: u64, pages: u64) {
        self.pt
            .cursor()
            .protect_region(
                VirtAddr::from_usize(va as usize),
                (pages * PAGE) as usize,
                RO,
            )
            .expect("page_table_multiarch protect_region");
    }

    fn lookup(&self, va: u64) -> Option<Lookup> {
        self.pt
            .query(VirtAddr::from_usize(va as usize))
            .ok()
            .map(|(pa, flags, _)| Lookup {
                pa: pa.as_usize() as u64,
                writable: flags.contains(MappingFlags::WRITE),
            })
    }
}
