//! Behaviour tests of the engine on the x86_64 formats.

use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{
    AccessState, AttrProblem, CountingFlush, NoFlush, PageAttrs, PageTable, PageTableError, Region,
    SwFlags, X86Pml4, X86Pml5,
};

const G1: u64 = 1 << 30;
const M2: u64 = 2 << 20;

fn setup() -> SimPhysMemory {
    SimPhysMemory::builder()
        .size_bytes(16 << 20)
        .build()
        .unwrap()
}

fn rw() -> PageAttrs {
    PageAttrs::new(VmProt::READ | VmProt::WRITE)
}

type Pt<'a> = PageTable<X86Pml4, &'a SimPhysMemory>;

fn table(sim: &SimPhysMemory) -> Pt<'_> {
    PageTable::new(Region::Both, sim, &mut sim.frame_allocator()).unwrap()
}

#[test]
fn map_range_at_an_unaligned_start_maps_every_page() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let va = VirtAddr::new(0x40_0000_0000 + 0x14_d000);
    let p = pt
        .map_range(
            va,
            PhysAddr::new(0x10_0000_7000),
            0x12000,
            &rw(),
            PageSize::Size4KiB,
            &mut alloc,
        )
        .unwrap();
    assert!(p.range().is_none(), "new mappings owe no invalidation");
    assert!(p.needs_sync());
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(pt.translate(va).unwrap().pa, PhysAddr::new(0x10_0000_7000));
    let all: Vec<_> = pt
        .mappings(VirtAddr::new(0x40_0000_0000), G1)
        .unwrap()
        .collect();
    assert_eq!(all.len(), 18);
    assert!(all.iter().all(|m| m.size == PageSize::Size4KiB));
}

#[test]
fn map_range_uses_the_largest_page_alignment_allows() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    // 1 GiB + 2 MiB + 4 KiB, all aligned: one 1G page, one 2M page, one 4K page.
    let len = G1 + M2 + 0x1000;
    let p = pt
        .map_range(
            VirtAddr::new(G1),
            PhysAddr::new(2 * G1),
            len,
            &rw(),
            PageSize::Size1GiB,
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    let sizes: Vec<_> = pt
        .mappings(VirtAddr::new(G1), 2 * G1)
        .unwrap()
        .map(|m| m.size)
        .collect();
    assert_eq!(
        sizes,
        [PageSize::Size1GiB, PageSize::Size2MiB, PageSize::Size4KiB]
    );
    // Root + PDPT (holds the 1G page) + PD (2M page) + PT (4K page).
    assert_eq!(sim.frames_in_use(), 4);
    // A physical run misaligned for big pages falls back to 4 KiB.
    let p = pt
        .map_range(
            VirtAddr::new(8 * G1),
            PhysAddr::new(0x1000),
            M2,
            &rw(),
            PageSize::Size1GiB,
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(pt.mappings(VirtAddr::new(8 * G1), M2).unwrap().count(), 512);
}

#[test]
fn mapping_over_a_mapped_page_fails_and_changes_nothing() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let p = pt
        .map(
            VirtAddr::new(0x20_0000 + 0x5000),
            PhysAddr::new(0x5000),
            PageSize::Size4KiB,
            &rw(),
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    let frames = sim.frames_in_use();
    let err = pt
        .map_range(
            VirtAddr::new(0x20_0000),
            PhysAddr::new(0),
            0x10000,
            &rw(),
            PageSize::Size4KiB,
            &mut alloc,
        )
        .unwrap_err();
    assert_eq!(err, PageTableError::AlreadyMapped { va: 0x20_5000 });
    assert_eq!(sim.frames_in_use(), frames);
    assert!(pt.translate(VirtAddr::new(0x20_0000)).is_err());
    // A 2 MiB page over it is refused too.
    assert_eq!(
        pt.map(
            VirtAddr::new(0x20_0000),
            PhysAddr::new(0),
            PageSize::Size2MiB,
            &rw(),
            &mut alloc
        )
        .unwrap_err(),
        PageTableError::AlreadyMapped { va: 0x20_0000 }
    );
}

#[test]
fn failed_table_allocation_leaves_the_table_unchanged() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let frames = sim.frames_in_use();
    // 8 MiB of 4K pages in a fresh region needs PDPT + PD + 4 PTs = 6 tables; allow 3.
    sim.fail_after(Some(3));
    let err = pt
        .map_range(
            VirtAddr::new(4 * G1),
            PhysAddr::new(0),
            8 << 20,
            &rw(),
            PageSize::Size4KiB,
            &mut alloc,
        )
        .unwrap_err();
    sim.fail_after(None);
    assert!(matches!(err, PageTableError::FrameAllocation(_)));
    assert_eq!(sim.frames_in_use(), frames);
    assert_eq!(pt.mappings(VirtAddr::new(4 * G1), G1).unwrap().count(), 0);
    // Single-page map: the same all-or-nothing rule.
    sim.fail_after(Some(1));
    assert!(
        pt.map(
            VirtAddr::new(4 * G1),
            PhysAddr::new(0),
            PageSize::Size4KiB,
            &rw(),
            &mut alloc
        )
        .is_err()
    );
    sim.fail_after(None);
    assert_eq!(sim.frames_in_use(), frames);
}

#[test]
fn unmapping_the_middle_of_a_2m_page_splits_it() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let p = pt
        .map(
            VirtAddr::new(M2),
            PhysAddr::new(4 * M2),
            PageSize::Size2MiB,
            &rw().sw(SwFlags::WIRED),
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    let mut hook = CountingFlush::default();
    let p = pt
        .unmap_range(VirtAddr::new(M2 + 0x3000), 0x2000, &mut hook, &mut alloc)
        .unwrap();
    let r = p.range().unwrap();
    assert_eq!(
        (r.start.as_u64(), r.len, r.entries, r.stride),
        (M2 + 0x3000, 0x2000, 2, PageSize::Size4KiB)
    );
    assert_eq!(hook.invalidations, 0, "x86 needs no break-before-make");
    pt.finish(p, &mut hook, &mut alloc).unwrap();
    let pages: Vec<_> = pt.mappings(VirtAddr::new(M2), M2).unwrap().collect();
    assert_eq!(pages.len(), 510);
    assert!(
        pages
            .iter()
            .all(|m| m.size == PageSize::Size4KiB && m.attrs.sw_flags() == SwFlags::WIRED)
    );
    assert_eq!(
        pt.translate(VirtAddr::new(M2 + 0x5008)).unwrap().pa,
        PhysAddr::new(4 * M2 + 0x5008)
    );
    assert!(pt.translate(VirtAddr::new(M2 + 0x4000)).is_err());
}

#[test]
fn unmapping_part_of_a_1g_page_splits_twice() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let p = pt
        .map(
            VirtAddr::new(G1),
            PhysAddr::new(G1),
            PageSize::Size1GiB,
            &rw(),
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    let before = sim.frames_in_use();
    let p = pt
        .unmap_range(
            VirtAddr::new(G1 + M2 + 0x1000),
            0x1000,
            &mut NoFlush,
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), before + 2, "one PD and one PT");
    let mut sizes = [0u32; 2];
    for m in pt.mappings(VirtAddr::new(G1), G1).unwrap() {
        match m.size {
            PageSize::Size2MiB => sizes[1] += 1,
            PageSize::Size4KiB => sizes[0] += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(sizes, [511, 511]);
}

#[test]
fn unmap_frees_tables_that_become_empty_after_the_flush() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let va = VirtAddr::new(0x7f00_0000_0000);
    let p = pt
        .map(
            va,
            PhysAddr::new(0x9000),
            PageSize::Size4KiB,
            &rw(),
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), 4);
    let (m, p) = pt.unmap(va).unwrap();
    assert_eq!(
        (m.va, m.pa, m.size),
        (va, PhysAddr::new(0x9000), PageSize::Size4KiB)
    );
    assert_eq!(p.freed_tables().len(), 3);
    assert_eq!(sim.frames_in_use(), 4, "nothing is freed before the flush");
    let mut hook = CountingFlush::default();
    pt.finish(p, &mut hook, &mut alloc).unwrap();
    assert_eq!(hook.invalidations, 1);
    assert!(!hook.last.unwrap().leaf_only, "tables went away");
    assert_eq!(sim.frames_in_use(), 1);
}

#[test]
fn unmap_range_drops_whole_tables_and_keeps_shared_ones() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let p = pt
        .map_range(
            VirtAddr::new(G1),
            PhysAddr::new(0),
            3 * M2,
            &rw(),
            PageSize::Size4KiB,
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), 1 + 1 + 1 + 3);
    // The first two leaf tables are covered whole; the third keeps one page.
    let p = pt
        .unmap_range(VirtAddr::new(G1), 3 * M2 - 0x1000, &mut NoFlush, &mut alloc)
        .unwrap();
    assert_eq!(p.freed_tables().len(), 2);
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), 4);
    assert!(pt.translate(VirtAddr::new(G1 + 3 * M2 - 0x1000)).is_ok());
    let p = pt
        .unmap_range(
            VirtAddr::new(G1 + 3 * M2 - 0x1000),
            0x1000,
            &mut NoFlush,
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), 1);
}

#[test]
fn unmap_range_with_reports_every_removed_leaf() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let p = pt
        .map_range(
            VirtAddr::new(0),
            PhysAddr::new(0),
            M2 + 0x3000,
            &rw(),
            PageSize::Size2MiB,
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    let mut seen = Vec::new();
    let p = pt
        .unmap_range_with(
            VirtAddr::new(0),
            4 * M2,
            &mut NoFlush,
            &mut alloc,
            &mut |m: &machvm_page_table::Mapping| seen.push((m.va.as_u64(), m.size)),
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(
        seen,
        [
            (0, PageSize::Size2MiB),
            (M2, PageSize::Size4KiB),
            (M2 + 0x1000, PageSize::Size4KiB),
            (M2 + 0x2000, PageSize::Size4KiB)
        ]
    );
    assert_eq!(sim.frames_in_use(), 1);
}

#[test]
fn protect_range_changes_only_mapped_pages_and_splits_partial_blocks() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let p = pt
        .map(
            VirtAddr::new(M2),
            PhysAddr::new(M2),
            PageSize::Size2MiB,
            &rw(),
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    let ro = PageAttrs::new(VmProt::READ);
    let p = pt
        .protect_range(
            VirtAddr::new(M2 - 0x1000),
            0x3000,
            &ro,
            &mut NoFlush,
            &mut alloc,
        )
        .unwrap();
    assert_eq!(p.range().unwrap().entries, 2);
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert!(
        pt.translate(VirtAddr::new(M2 - 0x1000)).is_err(),
        "holes stay holes"
    );
    assert_eq!(pt.translate(VirtAddr::new(M2)).unwrap().mapping().attrs, ro);
    assert_eq!(
        pt.translate(VirtAddr::new(M2 + 0x2000))
            .unwrap()
            .mapping()
            .attrs,
        rw()
    );
    // Refused attributes change nothing.
    let wx = PageAttrs::new(VmProt::ALL);
    assert_eq!(
        pt.protect_range(VirtAddr::new(M2), M2, &wx, &mut NoFlush, &mut alloc)
            .unwrap_err(),
        PageTableError::InvalidAttributes {
            problem: AttrProblem::WriteExecute
        }
    );
    assert_eq!(
        pt.translate(VirtAddr::new(M2 + 0x2000))
            .unwrap()
            .mapping()
            .attrs,
        rw()
    );
}

#[test]
fn harvest_reports_and_clears_access_bits() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let p = pt
        .map_range(
            VirtAddr::new(0),
            PhysAddr::new(0),
            0x4000,
            &rw(),
            PageSize::Size4KiB,
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    // Pretend the CPU accessed page 1 and wrote page 2: find their entries (P|RW|NX|pa) in
    // the simulated memory and set A, and A|D.
    let find = |want: u64| {
        (0..sim.total_frames() * 512)
            .map(|i| PhysAddr::new(i * 8))
            .find(|&pa| sim.read_u64(pa).unwrap() == want)
            .unwrap()
    };
    let e1 = find(0x8000_0000_0000_1003);
    sim.write_u64(e1, 0x8000_0000_0000_1023).unwrap();
    let e2 = find(0x8000_0000_0000_2003);
    sim.write_u64(e2, 0x8000_0000_0000_2063).unwrap();
    let mut states = Vec::new();
    let all = AccessState {
        accessed: true,
        dirty: true,
    };
    let p = pt
        .harvest(VirtAddr::new(0), 0x4000, all, |m| states.push(m.access))
        .unwrap();
    assert_eq!(
        p.range().unwrap().entries,
        2,
        "two entries changed, two to flush"
    );
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    let none = AccessState::default();
    assert_eq!(
        states,
        [
            none,
            AccessState {
                accessed: true,
                dirty: false
            },
            all,
            none
        ]
    );
    let mut again = Vec::new();
    let p = pt
        .harvest(VirtAddr::new(0), 0x4000, all, |m| again.push(m.access))
        .unwrap();
    assert!(p.is_empty());
    assert!(again.iter().all(|s| *s == none));
}

#[test]
fn addresses_outside_the_region_are_refused() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    // Non-canonical for 4-level paging (fine for 5-level).
    let va = VirtAddr::new(0x0000_8000_0000_0000);
    assert_eq!(
        pt.map(va, PhysAddr::new(0), PageSize::Size4KiB, &rw(), &mut alloc)
            .unwrap_err(),
        PageTableError::OutOfRange { va: va.as_u64() }
    );
    // A range running off the end of the lower half.
    let end = VirtAddr::new(0x0000_7fff_ffff_f000);
    assert!(matches!(
        pt.map_range(
            end,
            PhysAddr::new(0),
            0x2000,
            &rw(),
            PageSize::Size4KiB,
            &mut alloc
        ),
        Err(PageTableError::OutOfRange { .. })
    ));
    // The last page of the address space is fine.
    let top = VirtAddr::new(0xffff_ffff_ffff_f000);
    let p = pt
        .map(
            top,
            PhysAddr::new(0x1000),
            PageSize::Size4KiB,
            &rw(),
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(
        pt.translate(VirtAddr::new(0xffff_ffff_ffff_fff8))
            .unwrap()
            .pa,
        PhysAddr::new(0x1ff8)
    );
    assert_eq!(pt.mappings(top, 0x1000).unwrap().count(), 1);
    let p = pt
        .unmap_range(top, 0x1000, &mut NoFlush, &mut alloc)
        .unwrap();
    let r = p.range().unwrap();
    assert_eq!((r.start, r.len), (top, 0x1000));
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    // Misuse of sizes and alignment.
    assert_eq!(
        pt.map(
            VirtAddr::new(0x1000),
            PhysAddr::new(0),
            PageSize::Size2MiB,
            &rw(),
            &mut alloc
        )
        .unwrap_err(),
        PageTableError::Misaligned {
            addr: 0x1000,
            align: M2
        }
    );
    assert_eq!(
        pt.map(
            VirtAddr::new(0),
            PhysAddr::new(0),
            PageSize::Size16KiB,
            &rw(),
            &mut alloc
        )
        .unwrap_err(),
        PageTableError::SizeNotSupported {
            size: PageSize::Size16KiB
        }
    );
    assert_eq!(
        pt.unmap_range(VirtAddr::new(0), 0x1800, &mut NoFlush, &mut alloc)
            .unwrap_err(),
        PageTableError::BadLength { len: 0x1800 }
    );
}

#[test]
fn five_level_tables_reach_the_57_bit_space() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = PageTable::<X86Pml5, _>::new(Region::Both, &sim, &mut alloc).unwrap();
    let va = VirtAddr::new(0x00ff_ffff_ffff_f000);
    let p = pt
        .map(
            va,
            PhysAddr::new(0x3000),
            PageSize::Size4KiB,
            &rw(),
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), 5);
    assert_eq!(pt.translate(va).unwrap().pa, PhysAddr::new(0x3000));
    assert_eq!(pt.root_register(3), pt.root().as_u64() | 3);
}

#[test]
fn teardown_returns_every_table_frame() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    let p = pt
        .map_range(
            VirtAddr::new(G1),
            PhysAddr::new(0),
            5 * M2,
            &rw(),
            PageSize::Size4KiB,
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    let p = pt
        .map(
            VirtAddr::new(0xffff_8000_0000_0000),
            PhysAddr::new(0),
            PageSize::Size1GiB,
            &rw(),
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert!(sim.frames_in_use() > 1);
    let freed = pt.into_freed_tables();
    assert_eq!(freed.len(), sim.frames_in_use());
    freed.release(&sim, &mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), 0);
}

#[test]
fn pending_flushes_merge_into_one_flush() {
    let sim = setup();
    let mut alloc = sim.frame_allocator();
    let mut pt = table(&sim);
    for base in [G1, 3 * G1] {
        let p = pt
            .map_range(
                VirtAddr::new(base),
                PhysAddr::new(0),
                M2,
                &rw(),
                PageSize::Size4KiB,
                &mut alloc,
            )
            .unwrap();
        pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    }
    let frames = sim.frames_in_use();
    let mut all = pt
        .unmap_range(VirtAddr::new(G1), M2, &mut NoFlush, &mut alloc)
        .unwrap();
    let second = pt
        .unmap_range(VirtAddr::new(3 * G1), M2, &mut NoFlush, &mut alloc)
        .unwrap();
    let (a, b) = (all.freed_tables().len(), second.freed_tables().len());
    pt.merge_pending(&mut all, second);
    let r = all.range().unwrap();
    // One range covering both unmaps, and the whole span of every table that emptied (the
    // last one is the 512 GiB PDPT).
    assert_eq!((r.start.as_u64(), r.len), (0, 512 * G1));
    assert!(!r.leaf_only);
    assert_eq!(all.freed_tables().len(), a + b);
    let mut hook = CountingFlush::default();
    pt.finish(all, &mut hook, &mut alloc).unwrap();
    assert_eq!(hook.invalidations, 1);
    assert_eq!(sim.frames_in_use(), frames - a - b);
}

#[test]
fn tables_from_an_allocator_that_does_not_zero_are_cleared() {
    let sim = SimPhysMemory::builder()
        .size_bytes(64 << 10)
        .zero_on_alloc(false)
        .build()
        .unwrap();
    // Leave garbage (bit 0 set: "present" on both architectures) in every frame.
    for pa in (0..64 << 10).step_by(8) {
        sim.write_u64(PhysAddr::new(pa), u64::MAX).unwrap();
    }
    let mut alloc = sim.frame_allocator();
    assert!(!machvm_addr::FrameAllocator::zeroes_frames(&alloc));
    let mut pt = table(&sim);
    let p = pt
        .map(
            VirtAddr::new(G1),
            PhysAddr::new(0x5000),
            PageSize::Size4KiB,
            &rw(),
            &mut alloc,
        )
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    let all: Vec<_> = pt.mappings(VirtAddr::new(0), 4 * G1).unwrap().collect();
    assert_eq!(all.len(), 1, "only the page we mapped: {all:?}");
}
