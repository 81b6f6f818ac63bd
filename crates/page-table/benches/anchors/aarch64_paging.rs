//! aarch64-paging (0.12): a `Mapping` for the EL1&0 regime, lower VA range, root level 0 (four
//! levels, 48-bit VAs), 4 KiB granule, through a [`Translation`] over [`PhysMem`].
//!
//! The `Mapping` is never activated, so it does no break-before-make checks and no TLB
//! maintenance (and TLBI only exists on aarch64 hosts anyway); inactive, its calls are the
//! `RootTable` ones plus one atomic load.
//!
//! - map: `map_range` over the whole run (`NO_BLOCK_MAPPINGS`, else it would use 2 MiB blocks),
//!   or over one page per call;
//! - unmap: `map_range` with flags lacking `VALID`; over the whole aligned run it frees the leaf
//!   tables instead of clearing entries (its fastest way, and fine);
//! - protect: `modify_range` with `modify_flags(READ_ONLY, ...)` on each descriptor (it keeps the
//!   output address: a real protect, unlike a second `map_range` that must know the PAs);
//! - translate: it has no single-address lookup, so `walk_range` over one byte.

use core::ptr::NonNull;

use ::aarch64_paging::Mapping;
use ::aarch64_paging::descriptor::{El1Attributes, PhysicalAddress};
use ::aarch64_paging::paging::{
    Constraints, El1And0, MemoryRegion, PageTable, Translation, VaRange,
};

use super::{Driver, Lookup, PAGE, PhysMem};

/// Read-write user data, normal memory (MAIR index 1), not executable.
const RW: El1Attributes = El1Attributes::VALID
    .union(El1Attributes::ATTRIBUTE_INDEX_1)
    .union(El1Attributes::INNER_SHAREABLE)
    .union(El1Attributes::ACCESSED)
    .union(El1Attributes::NON_GLOBAL)
    .union(El1Attributes::USER)
    .union(El1Attributes::UXN)
    .union(El1Attributes::PXN);
/// Root level 0: four levels of 4 KiB tables.
const ROOT_LEVEL: usize = 0;
/// Leaf level.
const LEAF_LEVEL: usize = 3;

/// [`Translation`] that takes tables from [`PhysMem`].
#[derive(Debug)]
pub struct SimTranslation {
    mem: &'static PhysMem,
}

impl Translation<El1Attributes> for SimTranslation {
    #[inline]
    fn allocate_table(&mut self) -> (NonNull<PageTable<El1Attributes>>, PhysicalAddress) {
        let pa = self.mem.alloc_table();
        let ptr = NonNull::new(self.mem.ptr(pa).cast()).expect("table pointer");
        (ptr, PhysicalAddress(pa as usize))
    }

    unsafe fn deallocate_table(&mut self, page_table: NonNull<PageTable<El1Attributes>>) {
        let pa = self.mem.pa_of(page_table.as_ptr().cast());
        // SAFETY: the caller promises the table came from `allocate_table` and is unused now.
        unsafe { self.mem.free_table(pa) };
    }

    #[inline]
    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<El1Attributes>> {
        NonNull::new(self.mem.ptr(pa.0 as u64).cast()).expect("table pointer")
    }
}

/// A fresh, inactive aarch64-paging `Mapping` over [`PhysMem`]. Dropping it frees every table.
#[derive(Debug)]
pub struct Aarch64Paging {
    map: Mapping<SimTranslation, El1And0>,
}

/// Returns the region of `pages` pages from `va`.
#[inline]
fn region(va: u64, pages: u64) -> MemoryRegion {
    MemoryRegion::new(va as usize, (va + pages * PAGE) as usize)
}

impl Driver for Aarch64Paging {
    const NAME: &'static str = "aarch64-paging";
    type Va = usize;

    fn new() -> Self {
        let translation = SimTranslation {
            mem: PhysMem::get(),
        };
        Self {
            map: Mapping::with_asid_and_va_range(
                translation,
                1,
                ROOT_LEVEL,
                El1And0,
                VaRange::Lower,
            ),
        }
    }

    #[inline]
    fn va(va: u64) -> usize {
        va as usize
    }

    fn map_range(&mut self, va: u64, pa: u64, pages: u64) {
        self.map
            .map_range(
                &region(va, pages),
                PhysicalAddress(pa as usize),
                RW,
                Constraints::NO_BLOCK_MAPPINGS,
            )
            .expect("aarch64-paging map_range");
    }

    fn map_single(&mut self, va: u64, pa: u64, pages: u64) {
        for i in 0..pages {
            self.map
                .map_range(
                    &region(va + i * PAGE, 1),
                    PhysicalAddress((pa + i * PAGE) as usize),
                    RW,
                    Constraints::NO_BLOCK_MAPPINGS,
                )
                .expect("aarch64-paging map_range (page)");
        }
    }

    #[inline]
    fn translate(&self, va: usize) -> Option<u64> {
        let mut out = None;
        self.map
            .walk_range(&MemoryRegion::new(va, va + 1), &mut |_, desc, level| {
                if desc.is_valid() {
                    let mask = (PAGE as usize) << ((LEAF_LEVEL - level) * 9);
                    out = Some((desc.output_address().0 + (va & (mask - 1))) as u64);
                }
                Ok(())
            })
            .expect("aarch64-paging walk_range");
        out
    }

    fn unmap_range(&mut self, va: u64, pages: u64) {
        self.map
            .map_range(
                &region(va, pages),
                PhysicalAddress(0),
                El1Attributes::empty(),
                Constraints::NO_BLOCK_MAPPINGS,
            )
            .expect("aarch64-paging unmap (range)");
    }

    fn unmap_single(&mut self, va: u64, pages: u64) {
        for i in 0..pages {
            self.map
                .map_range(
                    &region(va + i * PAGE, 1),
                    PhysicalAddress(0),
                    El1Attributes::empty(),
                    Constraints::NO_BLOCK_MAPPINGS,
                )
                .expect("aarch64-paging unmap (page)");
        }
    }

    fn protect_range(&mut self, va: u64, pages: u64) {
        self.map
            .modify_range(&region(va, pages), &|_, desc| {
                if desc.flags().contains(El1Attributes::VALID) {
                    desc.modify_flags(El1Attributes::READ_ONLY, El1Attributes::empty())
                } else {
                    Ok(())
                }
            })
            .expect("aarch64-paging modify_range");
    }

    fn lookup(&self, va: u64) -> Option<Lookup> {
        let mut out = None;
        self.map
            .walk_range(
                &MemoryRegion::new(va as usize, va as usize + 1),
                &mut |_, desc, level| {
                    if desc.is_valid() {
                        let mask = (PAGE as usize) << ((LEAF_LEVEL - level) * 9);
                        out = Some(Lookup {
                            pa: (desc.output_address().0 + (va as usize & (mask - 1))) as u64,
                            writable: !desc.flags().contains(El1Attributes::READ_ONLY),
                        });
                    }
                    Ok(())
                },
            )
            .expect("aarch64-paging walk_range");
        out
    }
}
