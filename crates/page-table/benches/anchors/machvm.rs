//! machvm's own engine as a [`Driver`], for every format it benchmarks.
//!
//! Tables are reached through an `OffsetMapper` (a kernel's direct map: host address = physical
//! address + offset, like the anchors' drivers) and allocated from [`PhysMem`]'s
//! `SimPhysMemory`. Every operation's `PendingFlush` is completed with `NoFlush`, which frees
//! the tables it unlinked (the anchors free theirs too) and runs no TLB maintenance.

use core::marker::PhantomData;

use machvm_addr::{OffsetMapper, PageSize, PhysAddr, SimFrameAllocator, VirtAddr, VmProt};
use machvm_page_table::{
    A64Granule4K48, Format, NoFlush, PageAttrs, PageTable, Region, X86Pml4, X86Pml5,
};

use super::{Driver, Lookup, PAGE, PhysMem};

/// The row name of each benchmarked format: `machvm` for x86_64 4-level paging (the row the
/// anchors are compared with), `machvm-<format>` for the others.
pub trait Row: Format {
    /// Criterion function id.
    const ROW: &'static str;
    /// The region the benchmark addresses (lower-half user addresses) belong to.
    const REGION: Region;
}

impl Row for X86Pml4 {
    const ROW: &'static str = "machvm";
    const REGION: Region = Region::Both;
}

impl Row for X86Pml5 {
    const ROW: &'static str = "machvm-x86_64-5level";
    const REGION: Region = Region::Both;
}

/// aarch64, 4 KiB granule, 48-bit TTBR0 region: the geometry `aarch64-paging` uses here, so its
/// row compares like for like (same four levels, same table count).
impl Row for A64Granule4K48 {
    const ROW: &'static str = "machvm-aarch64-4k-48bit";
    const REGION: Region = Region::Lower;
}

/// Read-write user data, not executable (the anchors map the same).
fn rw() -> PageAttrs {
    PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true)
}

/// A machvm table of format `F` over [`PhysMem`].
#[derive(Debug)]
pub struct Machvm<F: Row> {
    pt: Option<PageTable<F, OffsetMapper>>,
    alloc: SimFrameAllocator<'static>,
    format: PhantomData<F>,
}

impl<F: Row> Machvm<F> {
    fn pt(&self) -> &PageTable<F, OffsetMapper> {
        self.pt.as_ref().expect("live table")
    }

    fn pt_mut(
        &mut self,
    ) -> (
        &mut PageTable<F, OffsetMapper>,
        &mut SimFrameAllocator<'static>,
    ) {
        (self.pt.as_mut().expect("live table"), &mut self.alloc)
    }

    /// Bytes per smallest page of the format (runs are given in 4 KiB pages).
    const GRANULE: u64 = F::GRANULE.bytes();
}

impl<F: Row> Drop for Machvm<F> {
    fn drop(&mut self) {
        if let Some(pt) = self.pt.take() {
            // SAFETY: the same direct map the table was created with (see `new`).
            let mapper = unsafe { OffsetMapper::new(pt.mapper().offset()) };
            let freed = pt.into_freed_tables();
            freed
                .release(&mapper, &mut self.alloc)
                .expect("release tables");
        }
    }
}

impl<F: Row> Driver for Machvm<F> {
    const NAME: &'static str = F::ROW;
    const LEVELS: u64 = F::LEVELS as u64;
    type Va = VirtAddr;

    fn new() -> Self {
        let mem = PhysMem::get();
        // SAFETY: `PhysMem` maps every physical address of its memory at `pa + offset` for
        // the life of the process, and the offset is page-aligned (the buffer is).
        let mapper = unsafe { OffsetMapper::new(mem.offset()) };
        let mut alloc = mem.sim().frame_allocator();
        let pt = PageTable::new(F::REGION, mapper, &mut alloc).expect("machvm root");
        Self {
            pt: Some(pt),
            alloc,
            format: PhantomData,
        }
    }

    #[inline]
    fn va(va: u64) -> VirtAddr {
        VirtAddr::new(va)
    }

    fn map_range(&mut self, va: u64, pa: u64, pages: u64) {
        let (pt, alloc) = self.pt_mut();
        let len = pages * PAGE;
        let done = pt
            .map_range(
                VirtAddr::new(va),
                PhysAddr::new(pa),
                len,
                &rw(),
                F::GRANULE,
                alloc,
            )
            .expect("machvm map_range");
        pt.finish(done, &mut NoFlush, alloc).expect("finish");
    }

    /// One `Cursor::map` call per page, all in one batch (one flush for the run).
    fn map_single(&mut self, va: u64, pa: u64, pages: u64) {
        let step = Self::GRANULE;
        let (pt, alloc) = self.pt_mut();
        let attrs = rw();
        let (result, done) = pt.cursor(alloc, |c| {
            (0..pages * PAGE / step).try_for_each(|i| {
                c.map(
                    VirtAddr::new(va + i * step),
                    PhysAddr::new(pa + i * step),
                    F::GRANULE,
                    &attrs,
                )
            })
        });
        result.expect("machvm map");
        pt.finish(done, &mut NoFlush, alloc).expect("finish");
    }

    #[inline]
    fn translate(&self, va: VirtAddr) -> Option<u64> {
        self.pt().translate(va).ok().map(|t| t.pa.as_u64())
    }

    fn unmap_range(&mut self, va: u64, pages: u64) {
        let (pt, alloc) = self.pt_mut();
        let done = pt
            .unmap_range(VirtAddr::new(va), pages * PAGE, &mut NoFlush, alloc)
            .expect("machvm unmap_range");
        pt.finish(done, &mut NoFlush, alloc).expect("finish");
    }

    /// One `Cursor::unmap_discard` call per page (it returns the frame, as the anchors'
    /// `unmap` do), all in one batch (one flush for the run).
    fn unmap_single(&mut self, va: u64, pages: u64) {
        let step = Self::GRANULE;
        let (pt, alloc) = self.pt_mut();
        let (result, done) = pt.cursor(alloc, |c| {
            (0..pages * PAGE / step)
                .try_for_each(|i| c.unmap_discard(VirtAddr::new(va + i * step)).map(drop))
        });
        result.expect("machvm unmap");
        pt.finish(done, &mut NoFlush, alloc).expect("finish");
    }

    fn protect_range(&mut self, va: u64, pages: u64) {
        let ro = PageAttrs::new(VmProt::READ).user(true);
        let (pt, alloc) = self.pt_mut();
        let done = pt
            .protect_range(VirtAddr::new(va), pages * PAGE, &ro, &mut NoFlush, alloc)
            .expect("machvm protect_range");
        pt.finish(done, &mut NoFlush, alloc).expect("finish");
    }

    fn lookup(&self, va: u64) -> Option<Lookup> {
        let t = self.pt().translate(VirtAddr::new(va)).ok()?;
        Some(Lookup {
            pa: t.pa.as_u64(),
            writable: t.mapping().attrs.prot().contains(VmProt::WRITE),
        })
    }
}

/// Maps 1 GiB at `va` -> `pa` with pages up to 1 GiB (the `map_range_1g` case) and returns the
/// table for the checks.
pub fn map_1g<F: Row>(t: &mut Machvm<F>, va: u64, pa: u64) {
    let (pt, alloc) = t.pt_mut();
    let done = pt
        .map_range(
            VirtAddr::new(va),
            PhysAddr::new(pa),
            1 << 30,
            &rw(),
            PageSize::Size1GiB,
            alloc,
        )
        .expect("machvm map_range 1G");
    pt.finish(done, &mut NoFlush, alloc).expect("finish");
}
