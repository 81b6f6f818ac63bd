//! The aarch64 formats on the engine, and a differential test against `aarch64-paging`.
//!
//! - Engine tests, for each of the six granule/VA aliases and both regions (TTBR0 lower,
//!   TTBR1 upper), on `SimPhysMemory`: map with and without blocks, translate at offsets,
//!   unmap part of a block (split with break-before-make), protect, out-of-range errors, and
//!   that every table frame goes back to the allocator at the end.
//! - Differential test (4 KiB granule, 48-bit VA, root at level 0, EL1&0 regime) against
//!   `aarch64-paging` 0.12: the same mappings are built by both over simulated memory and the
//!   leaf descriptors are compared bit for bit, after mapping, after partial unmaps that split
//!   blocks, after protects and after a dirty-state harvest.
//!
//! `aarch64-paging` writes the attribute bits it is given, so every attribute (including `DBM`
//! and the software bits) is given to it explicitly in the form the machvm format uses; the
//! comparison is exact, nothing is masked. The one semantic difference shows in the protect
//! step: `aarch64-paging` has no notion of dirty state, so making a page read-only there means
//! setting `READ_ONLY` *and* clearing `DBM` (otherwise, with `TCR_EL1.HD`, the hardware would
//! make the page writable again on a write) and recording "dirty" in `SWFLAG_0` (bit 55), which
//! is what the machvm format does on its own.

extern crate alloc;

use alloc::collections::BTreeMap;
use core::ptr::NonNull;

use aarch64_paging::Mapping as ApMapping;
use aarch64_paging::descriptor::{El1Attributes, PhysicalAddress};
use aarch64_paging::paging::{
    Constraints, El1And0, MemoryRegion, PageTable as ApTable, Translation as ApTranslation, VaRange,
};
use machvm_addr::{FrameRequest, PageSize, PhysAddr, PhysMapper, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{
    A64Granule4K39, A64Granule4K48, A64Granule16K47, A64Granule16K48, A64Granule64K42,
    A64Granule64K48, AccessState, CountingFlush, FlushHook, FlushRange, Format, MemType, NoFlush,
    PageAttrs, PageTable, PageTableError, Region, SwFlags,
};

fn sim() -> SimPhysMemory {
    SimPhysMemory::builder()
        .size_bytes(16 << 20)
        .build()
        .unwrap()
}

/// Every valid leaf of the table at `root`: virtual address -> (engine level, raw descriptor).
///
/// Reads the raw memory with the format's geometry only (bit 1 distinguishes tables from
/// blocks), independently of the format's `classify`; also checks that table descriptors carry
/// no attribute bits.
fn leaves<F: Format>(sim: &SimPhysMemory, root: u64, region: Region) -> BTreeMap<u64, (u8, u64)> {
    fn walk<F: Format>(
        sim: &SimPhysMemory,
        table: u64,
        level: u8,
        prefix: u64,
        out: &mut BTreeMap<u64, (u8, u64)>,
    ) {
        let shift = F::GRANULE.shift() + u32::from(level) * F::INDEX_BITS;
        let bits = if level == F::LEVELS - 1 {
            F::ROOT_INDEX_BITS
        } else {
            F::INDEX_BITS
        };
        let oa = ((1u64 << 48) - 1) & !(F::GRANULE.bytes() - 1);
        for i in 0..1u64 << bits {
            let raw = sim.read_u64(PhysAddr::new(table + 8 * i)).unwrap();
            if raw & 1 == 0 {
                continue;
            }
            let va = prefix | (i << shift);
            if level > 0 && raw & 2 != 0 {
                assert_eq!(
                    raw & !oa,
                    0b11,
                    "table descriptor with attributes at {va:#x}"
                );
                walk::<F>(sim, raw & oa, level - 1, va, out);
            } else {
                out.insert(va, (level, raw));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk::<F>(sim, root, F::LEVELS - 1, 0, &mut out);
    if region == Region::Upper {
        let high = !(F::VA_WIDTH.half_size() - 1);
        out = out.into_iter().map(|(va, e)| (va | high, e)).collect();
    }
    out
}

fn va(raw: u64) -> VirtAddr {
    VirtAddr::new(raw)
}

fn pa(raw: u64) -> PhysAddr {
    PhysAddr::new(raw)
}

fn urw() -> PageAttrs {
    PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true)
}

fn uro() -> PageAttrs {
    PageAttrs::new(VmProt::READ).user(true)
}

// ---------------------------------------------------------------------------------------------
// Engine tests, every format
// ---------------------------------------------------------------------------------------------

/// A flush hook that records every invalidation.
#[derive(Default)]
struct Recorder(Vec<FlushRange>);

impl FlushHook for Recorder {
    fn sync(&mut self) {}

    fn invalidate(&mut self, range: &FlushRange) {
        self.0.push(*range);
    }
}

/// Runs the engine through one format and region.
fn exercise<F: Format>(region: Region) {
    let sim = sim();
    let mut alloc = sim.frame_allocator();
    assert_eq!(
        PageTable::<F, _>::new(Region::Both, &sim, &mut alloc).err(),
        Some(PageTableError::RegionNotSupported)
    );
    let mut pt = PageTable::<F, _>::new(region, &sim, &mut alloc).unwrap();
    let g = F::GRANULE.bytes();
    assert!(
        pt.root().is_aligned(g),
        "{}: root frame aligned to the granule",
        F::NAME
    );
    assert_eq!(pt.root_register(0x42), pt.root().as_u64() | 0x42 << 48);
    let block = F::leaf_size(1).unwrap();
    let bs = block.bytes();
    let bits = u32::from(F::VA_WIDTH.bits());
    // The middle of the region: 0x8000_0000_0000 (lower) / 0xffff_8000_0000_0000 (upper) for
    // 48-bit regions.
    let base = match region {
        Region::Lower => 1u64 << (bits - 1),
        _ => (1u64 << (bits - 1)).wrapping_neg(),
    };
    let mut hook = CountingFlush::default();

    // Pages only.
    let (vp, pp) = (base, 0x1_0000_0000);
    let done = pt
        .map_range(va(vp), pa(pp), 5 * g, &urw(), F::GRANULE, &mut alloc)
        .unwrap();
    pt.finish(done, &mut hook, &mut alloc).unwrap();
    for i in 0..5 {
        let t = pt.translate(va(vp + i * g + 0x123)).unwrap();
        assert_eq!(t.pa, pa(pp + i * g + 0x123), "{}", F::NAME);
        assert_eq!(t.size, F::GRANULE);
        assert_eq!(t.mapping().va, va(vp + i * g));
        assert_eq!(t.mapping().attrs, urw());
        assert_eq!(
            t.mapping().access,
            AccessState {
                accessed: true,
                dirty: true
            }
        );
    }
    assert_eq!(
        pt.translate(va(vp + 5 * g)).err(),
        Some(PageTableError::NotMapped { va: vp + 5 * g })
    );

    // A block-sized, block-aligned run with blocks not allowed: pages.
    let (vn, pn) = (base + 8 * bs, 0x3_0000_0000);
    let done = pt
        .map_range(va(vn), pa(pn), bs, &urw(), F::GRANULE, &mut alloc)
        .unwrap();
    pt.finish(done, &mut hook, &mut alloc).unwrap();
    let t = pt.translate(va(vn + bs - 1)).unwrap();
    assert_eq!((t.pa, t.size), (pa(pn + bs - 1), F::GRANULE));

    // Two blocks and three pages, blocks allowed.
    let (vb, pb) = (base + 4 * bs, 0x2_0000_0000);
    let k = PageAttrs::new(VmProt::READ | VmProt::WRITE).global(true);
    let done = pt
        .map_range(va(vb), pa(pb), 2 * bs + 3 * g, &k, block, &mut alloc)
        .unwrap();
    pt.finish(done, &mut hook, &mut alloc).unwrap();
    let off = bs / 2 + 0x88;
    let t = pt.translate(va(vb + bs + off)).unwrap();
    assert_eq!(
        (t.pa, t.size, t.mapping().va),
        (pa(pb + bs + off), block, va(vb + bs))
    );
    let t = pt.translate(va(vb + 2 * bs + 2 * g + 8)).unwrap();
    assert_eq!((t.pa, t.size), (pa(pb + 2 * bs + 2 * g + 8), F::GRANULE));
    assert_eq!(
        pt.map(va(vb + bs), pa(0), F::GRANULE, &k, &mut alloc).err(),
        Some(PageTableError::AlreadyMapped { va: vb + bs })
    );
    let before = sim.frames_in_use();

    // Unmap one granule inside the first block: break-before-make on the whole block.
    let invalidations = hook.invalidations;
    let done = pt
        .unmap_range(va(vb + 2 * g), g, &mut hook, &mut alloc)
        .unwrap();
    assert_eq!(
        hook.invalidations,
        invalidations + 1,
        "{}: BBM invalidation",
        F::NAME
    );
    let bbm = hook.last.unwrap();
    assert_eq!(
        (bbm.start, bbm.len, bbm.stride, bbm.entries),
        (va(vb), bs, block, 1)
    );
    assert!(bbm.leaf_only);
    pt.finish(done, &mut hook, &mut alloc).unwrap();
    assert_eq!(hook.invalidations, invalidations + 2);
    assert_eq!(hook.last.unwrap().start, va(vb + 2 * g));
    assert!(sim.frames_in_use() > before, "a table for the split");
    assert_eq!(
        pt.translate(va(vb + 2 * g + 5)).err(),
        Some(PageTableError::NotMapped { va: vb + 2 * g + 5 })
    );
    for o in [0, g + 1, 3 * g, bs - 1] {
        let t = pt.translate(va(vb + o)).unwrap();
        assert_eq!(
            (t.pa, t.size, t.mapping().attrs),
            (pa(pb + o), F::GRANULE, k),
            "{o:#x}"
        );
        assert_eq!(
            t.mapping().access,
            AccessState {
                accessed: true,
                dirty: true
            }
        );
    }
    // The other block is untouched.
    assert_eq!(pt.translate(va(vb + bs)).unwrap().size, block);

    // Protect two pages read-only: dirtiness carried into the software bit.
    let done = pt
        .protect_range(va(vp), 2 * g, &uro(), &mut hook, &mut alloc)
        .unwrap();
    assert_eq!(done.range().map(|r| r.entries), Some(2));
    pt.finish(done, &mut hook, &mut alloc).unwrap();
    let t = pt.translate(va(vp + g)).unwrap();
    assert_eq!(t.mapping().attrs, uro());
    assert_eq!(
        t.mapping().access,
        AccessState {
            accessed: true,
            dirty: true
        }
    );
    assert_eq!(pt.translate(va(vp + 2 * g)).unwrap().mapping().attrs, urw());

    // Protect one granule inside the second block: split (BBM) and reprotect.
    let invalidations = hook.invalidations;
    let ro = PageAttrs::new(VmProt::READ).global(true);
    let done = pt
        .protect_range(va(vb + bs + g), g, &ro, &mut hook, &mut alloc)
        .unwrap();
    assert_eq!(hook.invalidations, invalidations + 1);
    assert_eq!(hook.last.unwrap().len, bs);
    pt.finish(done, &mut hook, &mut alloc).unwrap();
    assert_eq!(pt.translate(va(vb + bs + g)).unwrap().mapping().attrs, ro);
    assert_eq!(pt.translate(va(vb + bs)).unwrap().mapping().attrs, k);
    assert_eq!(
        pt.translate(va(vb + bs + 2 * g)).unwrap().pa,
        pa(pb + bs + 2 * g)
    );

    // Harvest: clearing dirty makes writable pages writable-clean, still writable.
    let mut seen = 0;
    let done = pt
        .harvest(
            va(vp),
            5 * g,
            AccessState {
                accessed: true,
                dirty: true,
            },
            |m| {
                assert!(m.access.dirty && m.access.accessed);
                seen += 1;
            },
        )
        .unwrap();
    assert_eq!(seen, 5);
    pt.finish(done, &mut hook, &mut alloc).unwrap();
    let t = pt.translate(va(vp + 4 * g)).unwrap();
    assert_eq!(
        (t.mapping().attrs, t.mapping().access),
        (urw(), AccessState::default())
    );

    // Out of range: the other half, and beyond the region's width.
    let other = match region {
        Region::Lower => 0xffff_8000_0000_0000,
        _ => 0x4000_0000,
    };
    assert_eq!(
        pt.translate(va(other)).err(),
        Some(PageTableError::OutOfRange { va: other })
    );
    assert_eq!(
        pt.map(va(other), pa(0), F::GRANULE, &urw(), &mut alloc)
            .err(),
        Some(PageTableError::OutOfRange { va: other })
    );
    let beyond = match region {
        Region::Lower => 1u64 << bits,
        _ => (1u64 << bits).wrapping_neg() - g,
    };
    assert_eq!(
        pt.translate(va(beyond)).err(),
        Some(PageTableError::OutOfRange { va: beyond })
    );

    // 1 GiB blocks (4 KiB granule): split into 2 MiB blocks and pages.
    if let Some(gig) = F::leaf_size(2) {
        let (vg, pg) = (base + 2 * gig.bytes(), 0x4_0000_0000);
        let done = pt
            .map_range(va(vg), pa(pg), gig.bytes(), &k, gig, &mut alloc)
            .unwrap();
        pt.finish(done, &mut hook, &mut alloc).unwrap();
        assert_eq!(pt.translate(va(vg + 12345)).unwrap().size, gig);
        let hole = vg + 3 * bs + g;
        // Two breaks: the 1 GiB block, then the (just published) 2 MiB block holding the hole.
        let mut rec = Recorder::default();
        let done = pt.unmap_range(va(hole), g, &mut rec, &mut alloc).unwrap();
        let breaks: Vec<_> = rec
            .0
            .iter()
            .map(|r| (r.start, r.len, r.leaf_only))
            .collect();
        assert_eq!(
            breaks,
            [(va(vg), gig.bytes(), true), (va(vg + 3 * bs), bs, true)]
        );
        pt.finish(done, &mut hook, &mut alloc).unwrap();
        assert!(pt.translate(va(hole)).is_err());
        let t = pt.translate(va(vg + 5 * bs + 7)).unwrap();
        assert_eq!((t.pa, t.size), (pa(pg + 5 * bs + 7), block));
        let t = pt.translate(va(hole + g)).unwrap();
        assert_eq!((t.pa, t.size), (pa(pg + 3 * bs + 2 * g), F::GRANULE));
    }

    // The raw descriptors agree with what translate reports.
    let raw = leaves::<F>(&sim, pt.root().as_u64(), region);
    for (&v, &(level, e)) in &raw {
        let t = pt.translate(va(v)).unwrap();
        let size = F::leaf_size(level).unwrap();
        assert_eq!(t.size, size);
        let page = e & 3 == 3;
        assert_eq!(
            page,
            level == 0,
            "{v:#x}: pages 0b11 at level 0 only, blocks 0b01"
        );
        assert_eq!(e & ((1 << 48) - 1) & !(size.bytes() - 1), t.pa.as_u64());
    }

    // Unmap everything; every table frame goes back.
    let end = base + 16 * bs.max(1 << 30);
    let done = pt
        .unmap_range(va(base), end - base, &mut hook, &mut alloc)
        .unwrap();
    pt.finish(done, &mut NoFlush, &mut alloc).unwrap();
    assert!(pt.mappings(va(base), end - base).unwrap().next().is_none());
    let freed = pt.into_freed_tables();
    freed.release(&sim, &mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), 0, "{}", F::NAME);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps thousands of 16K/64K-granule entries: hours under miri; basic.rs covers the unsafe paths"
)]
fn granule_4k_48bit() {
    exercise::<A64Granule4K48>(Region::Lower);
    exercise::<A64Granule4K48>(Region::Upper);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps thousands of 16K/64K-granule entries: hours under miri; basic.rs covers the unsafe paths"
)]
fn granule_4k_39bit() {
    exercise::<A64Granule4K39>(Region::Lower);
    exercise::<A64Granule4K39>(Region::Upper);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps thousands of 16K/64K-granule entries: hours under miri; basic.rs covers the unsafe paths"
)]
fn granule_16k_47bit() {
    exercise::<A64Granule16K47>(Region::Lower);
    exercise::<A64Granule16K47>(Region::Upper);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps thousands of 16K/64K-granule entries: hours under miri; basic.rs covers the unsafe paths"
)]
fn granule_16k_48bit() {
    exercise::<A64Granule16K48>(Region::Lower);
    exercise::<A64Granule16K48>(Region::Upper);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps thousands of 16K/64K-granule entries: hours under miri; basic.rs covers the unsafe paths"
)]
fn granule_64k_42bit() {
    exercise::<A64Granule64K42>(Region::Lower);
    exercise::<A64Granule64K42>(Region::Upper);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps thousands of 16K/64K-granule entries: hours under miri; basic.rs covers the unsafe paths"
)]
fn granule_64k_48bit() {
    exercise::<A64Granule64K48>(Region::Lower);
    exercise::<A64Granule64K48>(Region::Upper);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps thousands of 16K/64K-granule entries: hours under miri; basic.rs covers the unsafe paths"
)]
fn upper_half_uses_the_high_root_entries() {
    // 16K/48-bit: the root has two entries; the upper half's top bit selects the second one.
    let sim = sim();
    let mut alloc = sim.frame_allocator();
    let mut pt = PageTable::<A64Granule16K48, _>::new(Region::Upper, &sim, &mut alloc).unwrap();
    let v = 0xffff_8000_0000_4000;
    let done = pt
        .map(
            va(v),
            pa(0x8000_4000),
            PageSize::Size16KiB,
            &uro(),
            &mut alloc,
        )
        .unwrap();
    pt.finish(done, &mut NoFlush, &mut alloc).unwrap();
    let root = pt.root();
    assert_eq!(sim.read_u64(root).unwrap(), 0);
    assert_eq!(
        sim.read_u64(PhysAddr::new(root.as_u64() + 8)).unwrap() & 3,
        3
    );
    let raw = leaves::<A64Granule16K48>(&sim, root.as_u64(), Region::Upper);
    assert_eq!(raw.keys().copied().collect::<Vec<_>>(), [v]);
    // Lowest and highest upper-half pages.
    for v in [0xffff_0000_0000_0000, 0xffff_ffff_ffff_c000] {
        let done = pt
            .map(va(v), pa(0x4000), PageSize::Size16KiB, &uro(), &mut alloc)
            .unwrap();
        pt.finish(done, &mut NoFlush, &mut alloc).unwrap();
        assert_eq!(pt.translate(va(v + 0x3fff)).unwrap().pa, pa(0x7fff));
    }
    assert_eq!(
        pt.translate(va(0xfffe_ffff_ffff_c000)).err(),
        Some(PageTableError::OutOfRange {
            va: 0xfffe_ffff_ffff_c000
        })
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps thousands of 16K/64K-granule entries: hours under miri; basic.rs covers the unsafe paths"
)]
fn sizes_the_granule_lacks_are_refused() {
    let sim = sim();
    let mut alloc = sim.frame_allocator();
    let mut pt = PageTable::<A64Granule16K47, _>::new(Region::Lower, &sim, &mut alloc).unwrap();
    for size in [PageSize::Size4KiB, PageSize::Size2MiB, PageSize::Size1GiB] {
        assert_eq!(
            pt.map(va(0), pa(0), size, &uro(), &mut alloc).err(),
            Some(PageTableError::SizeNotSupported { size })
        );
    }
    assert!(matches!(
        pt.map(
            va(0x4000),
            pa(1 << 48),
            PageSize::Size16KiB,
            &uro(),
            &mut alloc
        ),
        Err(PageTableError::PhysOutOfRange { .. })
    ));
    assert!(matches!(
        pt.map_range(
            va(0x1000),
            pa(0),
            0x4000,
            &uro(),
            PageSize::Size16KiB,
            &mut alloc
        ),
        Err(PageTableError::Misaligned { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Differential test against aarch64-paging (4 KiB granule, 48-bit VA, root level 0)
// ---------------------------------------------------------------------------------------------

/// Table frames for `aarch64-paging`, taken from a [`SimPhysMemory`].
struct SimTables<'a> {
    sim: &'a SimPhysMemory,
}

impl ApTranslation<El1Attributes> for SimTables<'_> {
    fn allocate_table(&mut self) -> (NonNull<ApTable<El1Attributes>>, PhysicalAddress) {
        let frame = self
            .sim
            .allocate(FrameRequest::single(PageSize::Size4KiB))
            .unwrap();
        let ptr = self.sim.phys_to_ptr(frame, 4096).unwrap();
        (ptr.cast(), PhysicalAddress(frame.as_u64() as usize))
    }

    unsafe fn deallocate_table(&mut self, table: NonNull<ApTable<El1Attributes>>) {
        let start = self.sim.phys_to_ptr(self.sim.base(), 1).unwrap();
        let offset = (table.as_ptr().addr() - start.as_ptr().addr()) as u64;
        let frame = PhysAddr::new(self.sim.base().as_u64() + offset);
        // SAFETY: `aarch64-paging` frees only tables `allocate_table` gave it, once, and no
        // longer uses them.
        unsafe {
            self.sim
                .deallocate(frame, FrameRequest::single(PageSize::Size4KiB))
        }
        .unwrap();
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<ApTable<El1Attributes>> {
        self.sim
            .phys_to_ptr(PhysAddr::new(pa.0 as u64), 4096)
            .unwrap()
            .cast()
    }
}

/// Normal write-back memory (MAIR index 1), inner shareable, accessed.
const NORMAL: El1Attributes = El1Attributes::VALID
    .union(El1Attributes::ATTRIBUTE_INDEX_1)
    .union(El1Attributes::INNER_SHAREABLE)
    .union(El1Attributes::ACCESSED);

/// One mapping given to both implementations.
struct Case {
    off: u64,
    pa: u64,
    len: u64,
    ours: PageAttrs,
    theirs: El1Attributes,
    blocks: bool,
}

fn cases() -> Vec<Case> {
    use El1Attributes as A;
    let k_rw = PageAttrs::new(VmProt::READ | VmProt::WRITE).global(true);
    vec![
        // User data: nG, EL0 access, never executable, writable-dirty.
        Case {
            off: 0x4000_3000,
            pa: 0x8000_3000,
            len: 16 << 12,
            ours: urw(),
            theirs: NORMAL | A::NON_GLOBAL | A::USER | A::UXN | A::PXN | A::DBM,
            blocks: false,
        },
        // User code: read-only, PXN only.
        Case {
            off: 0x4010_0000,
            pa: 0x9000_0000,
            len: 8 << 12,
            ours: PageAttrs::new(VmProt::READ | VmProt::EXECUTE).user(true),
            theirs: NORMAL | A::NON_GLOBAL | A::USER | A::READ_ONLY | A::PXN,
            blocks: false,
        },
        // User copy-on-write, wired: software bits 56 and 57.
        Case {
            off: 0x4020_0000,
            pa: 0x9100_0000,
            len: 3 << 12,
            ours: uro().sw(SwFlags::WIRED | SwFlags::COW),
            theirs: NORMAL
                | A::NON_GLOBAL
                | A::USER
                | A::READ_ONLY
                | A::UXN
                | A::PXN
                | A::SWFLAG_1
                | A::SWFLAG_2,
            blocks: false,
        },
        // Kernel text: global, UXN only.
        Case {
            off: 0x5000_0000,
            pa: 0x4020_0000,
            len: 5 << 12,
            ours: PageAttrs::new(VmProt::READ | VmProt::EXECUTE).global(true),
            theirs: NORMAL | A::READ_ONLY | A::UXN,
            blocks: false,
        },
        // Kernel data with 2 MiB blocks and pages on both sides.
        Case {
            off: 0x5fff_e000,
            pa: 0x9fff_e000,
            len: 0x2000 + (4 << 20) + 0x3000,
            ours: k_rw,
            theirs: NORMAL | A::UXN | A::PXN | A::DBM,
            blocks: true,
        },
        // MMIO: Device-nGnRE (MAIR index 4), no shareability bits.
        Case {
            off: 0x7000_0000,
            pa: 0x0900_0000,
            len: 4 << 12,
            ours: k_rw.mem_type(MemType::Device),
            theirs: A::VALID | A::ATTRIBUTE_INDEX_4 | A::ACCESSED | A::UXN | A::PXN | A::DBM,
            blocks: false,
        },
        // Frame buffer (Normal non-cacheable, index 2) and write-through (index 3).
        Case {
            off: 0x7100_0000,
            pa: 0xc000_0000,
            len: 2 << 12,
            ours: k_rw.mem_type(MemType::WriteCombining),
            theirs: (NORMAL - A::ATTRIBUTE_INDEX_1)
                | A::ATTRIBUTE_INDEX_2
                | A::UXN
                | A::PXN
                | A::DBM,
            blocks: false,
        },
        Case {
            off: 0x7200_0000,
            pa: 0xc100_0000,
            len: 2 << 12,
            ours: k_rw.mem_type(MemType::WriteThrough),
            theirs: (NORMAL - A::ATTRIBUTE_INDEX_1)
                | A::ATTRIBUTE_INDEX_3
                | A::UXN
                | A::PXN
                | A::DBM,
            blocks: false,
        },
        // A 1 GiB block and a 2 MiB block, read-only, non-global.
        Case {
            off: 0x80_0000_0000,
            pa: 0x1_4000_0000,
            len: (1 << 30) + (2 << 20),
            ours: PageAttrs::new(VmProt::READ),
            theirs: NORMAL | A::NON_GLOBAL | A::READ_ONLY | A::UXN | A::PXN,
            blocks: true,
        },
    ]
}

fn region_of(start: u64, len: u64) -> MemoryRegion {
    MemoryRegion::new(start as usize, (start + len) as usize)
}

fn assert_same(what: &str, ours: &BTreeMap<u64, (u8, u64)>, theirs: &BTreeMap<u64, (u8, u64)>) {
    for (va, &(level, raw)) in ours {
        let Some(&(tl, traw)) = theirs.get(va) else {
            panic!("{what}: {va:#x} only in machvm (level {level}, {raw:#018x})");
        };
        assert_eq!(
            (level, raw),
            (tl, traw),
            "{what}: {va:#x}: machvm {raw:#018x} vs aarch64-paging {traw:#018x} (xor {:#x})",
            raw ^ traw
        );
    }
    for va in theirs.keys() {
        assert!(
            ours.contains_key(va),
            "{what}: {va:#x} only in aarch64-paging"
        );
    }
}

fn differential(region: Region) {
    let (base, va_range) = match region {
        Region::Lower => (0, VaRange::Lower),
        _ => (0xffff_8000_0000_0000, VaRange::Upper),
    };
    let ours_sim = sim();
    let theirs_sim = sim();
    let mut alloc = ours_sim.frame_allocator();
    let mut pt = PageTable::<A64Granule4K48, _>::new(region, &ours_sim, &mut alloc).unwrap();
    let mut map =
        ApMapping::with_asid_and_va_range(SimTables { sim: &theirs_sim }, 1, 0, El1And0, va_range);
    let compare = |what: &str, pt: &PageTable<A64Granule4K48, &SimPhysMemory>, root: u64| {
        let ours = leaves::<A64Granule4K48>(&ours_sim, pt.root().as_u64(), region);
        let theirs = leaves::<A64Granule4K48>(&theirs_sim, root, region);
        assert!(!ours.is_empty());
        assert_same(what, &ours, &theirs);
        ours.len()
    };

    let cases = cases();
    for c in &cases {
        let largest = if c.blocks {
            PageSize::Size1GiB
        } else {
            PageSize::Size4KiB
        };
        let done = pt
            .map_range(
                va(base + c.off),
                pa(c.pa),
                c.len,
                &c.ours,
                largest,
                &mut alloc,
            )
            .unwrap();
        pt.finish(done, &mut NoFlush, &mut alloc).unwrap();
        let constraints = if c.blocks {
            Constraints::NO_CONTIGUOUS_HINT
        } else {
            Constraints::NO_BLOCK_MAPPINGS | Constraints::NO_CONTIGUOUS_HINT
        };
        map.map_range(
            &region_of(base + c.off, c.len),
            PhysicalAddress(c.pa as usize),
            c.theirs,
            constraints,
        )
        .unwrap();
    }
    let root = map.root_address().0 as u64;
    let n = compare("map", &pt, root);
    // 16 + 8 + 3 + 5 + (2 + 2 blocks + 3) + 4 + 2 + 2 + (1 GiB + 2 MiB)
    assert_eq!(n, 16 + 8 + 3 + 5 + 7 + 4 + 2 + 2 + 2);

    // Partial unmaps that split a 2 MiB block and a 1 GiB block (into 2 MiB blocks + pages).
    let holes = [(0x6000_5000, 0x2000), (0x80_0060_1000, 0x1000)];
    for (off, len) in holes {
        let done = pt
            .unmap_range(va(base + off), len, &mut NoFlush, &mut alloc)
            .unwrap();
        pt.finish(done, &mut NoFlush, &mut alloc).unwrap();
        map.map_range(
            &region_of(base + off, len),
            PhysicalAddress(0),
            El1Attributes::empty(),
            Constraints::NO_BLOCK_MAPPINGS,
        )
        .unwrap();
    }
    compare("unmap", &pt, root);

    // Protect: half of the user data read-only (dirty kept in bit 55), and one page inside the
    // second 2 MiB block of kernel data read-only (split first).
    let (off, len) = (0x4000_3000, 8 << 12);
    let done = pt
        .protect_range(va(base + off), len, &uro(), &mut NoFlush, &mut alloc)
        .unwrap();
    pt.finish(done, &mut NoFlush, &mut alloc).unwrap();
    let ro = El1Attributes::READ_ONLY | El1Attributes::SWFLAG_0;
    map.modify_range(&region_of(base + off, len), &|_, d| {
        if d.flags().contains(El1Attributes::VALID) {
            d.modify_flags(ro, El1Attributes::DBM)
        } else {
            Ok(())
        }
    })
    .unwrap();
    let (off, len) = (0x6020_1000, 0x1000);
    let k_ro = PageAttrs::new(VmProt::READ).global(true);
    let done = pt
        .protect_range(va(base + off), len, &k_ro, &mut NoFlush, &mut alloc)
        .unwrap();
    pt.finish(done, &mut NoFlush, &mut alloc).unwrap();
    map.modify_range(&region_of(base + off, len), &|_, d| {
        if d.flags().contains(El1Attributes::VALID) {
            d.modify_flags(ro, El1Attributes::DBM)
        } else {
            Ok(())
        }
    })
    .unwrap();
    compare("protect", &pt, root);

    // Harvest the dirty state of the still-writable user pages: writable-clean is AP[2] set
    // with DBM kept, i.e. aarch64-paging's plain READ_ONLY on a DBM page.
    let (off, len) = (0x4000_3000 + (8 << 12), 8 << 12);
    let done = pt
        .harvest(
            va(base + off),
            len,
            AccessState {
                accessed: false,
                dirty: true,
            },
            |m| {
                assert!(m.access.dirty);
            },
        )
        .unwrap();
    pt.finish(done, &mut NoFlush, &mut alloc).unwrap();
    map.modify_range(&region_of(base + off, len), &|_, d| {
        if d.flags().contains(El1Attributes::VALID) {
            d.modify_flags(El1Attributes::READ_ONLY, El1Attributes::empty())
        } else {
            Ok(())
        }
    })
    .unwrap();
    compare("harvest", &pt, root);
    let t = pt.translate(va(base + off)).unwrap();
    assert_eq!(
        (t.mapping().attrs, t.mapping().access.dirty),
        (urw(), false)
    );

    // Both give every frame back.
    drop(map);
    assert_eq!(theirs_sim.frames_in_use(), 0);
    let all = (1u64 << 47) - 0x1000;
    let done = pt
        .unmap_range(va(base), all, &mut NoFlush, &mut alloc)
        .unwrap();
    pt.finish(done, &mut NoFlush, &mut alloc).unwrap();
    let freed = pt.into_freed_tables();
    freed.release(&ours_sim, &mut alloc).unwrap();
    assert_eq!(ours_sim.frames_in_use(), 0);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps thousands of 16K/64K-granule entries: hours under miri; basic.rs covers the unsafe paths"
)]
fn same_descriptors_as_aarch64_paging_lower() {
    differential(Region::Lower);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "maps thousands of 16K/64K-granule entries: hours under miri; basic.rs covers the unsafe paths"
)]
fn same_descriptors_as_aarch64_paging_upper() {
    differential(Region::Upper);
}
