//! The aarch64 contiguous hint: which pages `map_range_contiguous` hints, and how every other
//! operation keeps hinted groups whole (Arm ARM D8.6.1).

use machvm_addr::{PhysAddr, SimFrameAllocator, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{
    A64Granule4K48, A64Granule16K47, AccessState, CountingFlush, Format, NoFlush, PageAttrs,
    PageTable, PageTableError, Region, X86Pml4,
};

/// Contiguous hint, bit 52 of a stage-1 page descriptor.
const CONT: u64 = 1 << 52;

fn rw() -> PageAttrs {
    PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true)
}

fn sim() -> SimPhysMemory {
    SimPhysMemory::builder()
        .size_bytes(4 << 20)
        .build()
        .unwrap()
}

/// Maps `len` bytes at `va` -> `pa` with `map_range_contiguous` in granule pages and completes
/// the flush.
fn map_hinted<F: Format>(
    pt: &mut PageTable<F, &SimPhysMemory>,
    alloc: &mut SimFrameAllocator<'_>,
    va: u64,
    pa: u64,
    len: u64,
) {
    let done = pt
        .map_range_contiguous(
            VirtAddr::new(va),
            PhysAddr::new(pa),
            len,
            &rw(),
            F::GRANULE,
            alloc,
        )
        .unwrap();
    pt.finish(done, &mut NoFlush, alloc).unwrap();
}

/// Returns the hint of every page in `[va, va + len)` (`None` for unmapped pages).
fn hints<F: Format>(pt: &PageTable<F, &SimPhysMemory>, va: u64, len: u64) -> Vec<Option<bool>> {
    let gran = F::GRANULE.bytes();
    (0..len / gran)
        .map(|k| {
            pt.translate(VirtAddr::new(va + k * gran))
                .ok()
                .map(|t| t.mapping().contiguous)
        })
        .collect()
}

/// Reads the raw level-3 descriptor of `va` by walking the table in `sim` (4K granule,
/// 48-bit: four levels).
fn raw_4k(sim: &SimPhysMemory, root: PhysAddr, va: u64) -> u64 {
    let mut table = root.as_u64();
    for level in (0..4).rev() {
        let idx = (va >> (12 + 9 * level)) & 511;
        let raw = sim.read_u64(PhysAddr::new(table + idx * 8)).unwrap();
        if level == 0 {
            return raw;
        }
        table = raw & 0x0000_ffff_ffff_f000;
    }
    unreachable!()
}

#[test]
fn only_whole_aligned_groups_get_the_hint() {
    let sim = sim();
    let mut alloc = sim.frame_allocator();
    let mut pt = PageTable::<A64Granule4K48, _>::new(Region::Lower, &sim, &mut alloc).unwrap();
    // 40 pages from page 8 of a 64 KiB group: pages 8..16 cover a group partly and stay
    // unhinted; the groups 16..32 and 32..48 are whole (the run ends at page 48).
    let base = 0x40_0000_0000u64;
    let va = base + 8 * 0x1000;
    map_hinted(&mut pt, &mut alloc, va, 0x8000_8000, 40 * 0x1000);
    let got = hints(&pt, base, 48 * 0x1000);
    let want: Vec<Option<bool>> = (0..48).map(|k| (k >= 8).then_some(k >= 16)).collect();
    assert_eq!(got, want);
    // The hint is bit 52 of the descriptor, set only on hinted pages.
    assert_ne!(raw_4k(&sim, pt.root(), base + 16 * 0x1000) & CONT, 0);
    assert_eq!(raw_4k(&sim, pt.root(), base + 8 * 0x1000) & CONT, 0);

    // A physical run aligned differently from the virtual one gets no hint at all.
    let va2 = base + (1 << 21);
    map_hinted(&mut pt, &mut alloc, va2, 0x9000_1000, 32 * 0x1000);
    assert!(
        hints(&pt, va2, 32 * 0x1000)
            .iter()
            .all(|h| *h == Some(false))
    );
}

#[test]
fn partial_unmap_unfolds_the_group_with_break_before_make() {
    let sim = sim();
    let mut alloc = sim.frame_allocator();
    let mut pt = PageTable::<A64Granule4K48, _>::new(Region::Lower, &sim, &mut alloc).unwrap();
    let va = 0x40_0000_0000u64;
    map_hinted(&mut pt, &mut alloc, va, 0x8000_0000, 64 * 0x1000);

    // Without a hook, a single page of a group cannot go: the others must lose the hint
    // first. Nothing changes.
    let e = pt.unmap(VirtAddr::new(va + 0x3000)).unwrap_err();
    assert_eq!(e, PageTableError::BreakBeforeMake { va: va + 0x3000 });
    let (r, pending) = pt.cursor(&mut alloc, |c| c.unmap_discard(VirtAddr::new(va + 0x3000)));
    assert_eq!(r, Err(PageTableError::BreakBeforeMake { va: va + 0x3000 }));
    assert!(pending.is_empty());
    pt.finish(pending, &mut NoFlush, &mut alloc).unwrap();
    assert!(hints(&pt, va, 64 * 0x1000).iter().all(|h| *h == Some(true)));

    // unmap_range of pages 3..20: groups 0..16 and 16..32 are partial and are unfolded
    // (one invalidation for both), then the pages go.
    let mut hook = CountingFlush::default();
    let pending = pt
        .unmap_range(
            VirtAddr::new(va + 0x3000),
            17 * 0x1000,
            &mut hook,
            &mut alloc,
        )
        .unwrap();
    assert_eq!(hook.invalidations, 1);
    let unfold = hook.last.unwrap();
    assert_eq!((unfold.start.as_u64(), unfold.len), (va, 32 * 0x1000));
    assert_eq!(unfold.entries, 32);
    assert_eq!(pending.range().unwrap().entries, 17);
    pt.finish(pending, &mut hook, &mut alloc).unwrap();
    let got = hints(&pt, va, 64 * 0x1000);
    let want: Vec<Option<bool>> = (0..64)
        .map(|k| (!(3..20).contains(&k)).then_some(k >= 32))
        .collect();
    assert_eq!(got, want);
    // The unfolded pages still translate to the same frames.
    assert_eq!(
        pt.translate(VirtAddr::new(va + 0x2123)).unwrap().pa,
        PhysAddr::new(0x8000_2123)
    );

    // Unfolded pages are single pages again.
    let (m, pending) = pt.unmap(VirtAddr::new(va + 0x1000)).unwrap();
    assert!(!m.contiguous);
    pt.finish(pending, &mut hook, &mut alloc).unwrap();

    // A whole group goes without an unfold: only the final flush.
    let before = hook.invalidations;
    let pending = pt
        .unmap_range(
            VirtAddr::new(va + 32 * 0x1000),
            16 * 0x1000,
            &mut hook,
            &mut alloc,
        )
        .unwrap();
    assert_eq!(hook.invalidations, before);
    pt.finish(pending, &mut hook, &mut alloc).unwrap();
    assert!(
        hints(&pt, va + 48 * 0x1000, 16 * 0x1000)
            .iter()
            .all(|h| *h == Some(true))
    );
}

#[test]
fn protect_unfolds_every_group_it_touches() {
    let sim = sim();
    let mut alloc = sim.frame_allocator();
    let mut pt = PageTable::<A64Granule16K47, _>::new(Region::Lower, &sim, &mut alloc).unwrap();
    let va = 0x10_0000_0000u64;
    let gran = 0x4000u64;
    map_hinted(&mut pt, &mut alloc, va, 0x8000_0000, 3 * 128 * gran);
    assert!(
        hints(&pt, va, 3 * 128 * gran)
            .iter()
            .all(|h| *h == Some(true))
    );

    // Read-only over the first group and 10 pages of the second: both groups unfold in one
    // invalidation, the third keeps its hint.
    let ro = PageAttrs::new(VmProt::READ).user(true);
    let mut hook = CountingFlush::default();
    let pending = pt
        .protect_range(VirtAddr::new(va), 138 * gran, &ro, &mut hook, &mut alloc)
        .unwrap();
    assert_eq!(hook.invalidations, 1);
    assert_eq!(hook.last.unwrap().len, 256 * gran);
    pt.finish(pending, &mut hook, &mut alloc).unwrap();
    let got = hints(&pt, va, 3 * 128 * gran);
    assert!(got[..256].iter().all(|h| *h == Some(false)));
    assert!(got[256..].iter().all(|h| *h == Some(true)));
    let t = pt.translate(VirtAddr::new(va + 137 * gran)).unwrap();
    assert_eq!(t.mapping().attrs, ro);
    let t = pt.translate(VirtAddr::new(va + 138 * gran)).unwrap();
    assert_eq!(t.mapping().attrs, rw());
}

#[test]
fn harvest_reports_and_clears_whole_groups() {
    let sim = sim();
    let mut alloc = sim.frame_allocator();
    let mut pt = PageTable::<A64Granule4K48, _>::new(Region::Lower, &sim, &mut alloc).unwrap();
    let va = 0x40_0000_0000u64;
    map_hinted(&mut pt, &mut alloc, va, 0x8000_0000, 16 * 0x1000);
    // The hardware recorded an access in page 9 of the group only (it may pick any entry).
    let pte = va + 9 * 0x1000;
    let raw = raw_4k(&sim, pt.root(), pte);
    let af = 1 << 10;
    let root = pt.root().as_u64();
    let leaf_table = {
        let mut table = root;
        for level in (1..4).rev() {
            let idx = (pte >> (12 + 9 * level)) & 511;
            table = sim.read_u64(PhysAddr::new(table + idx * 8)).unwrap() & 0x0000_ffff_ffff_f000;
        }
        table
    };
    // Fresh mappings have AF set (no access-flag faults); clear it everywhere first.
    let all = AccessState {
        accessed: true,
        dirty: false,
    };
    let p = pt
        .harvest(VirtAddr::new(va), 16 * 0x1000, all, |_| {})
        .unwrap();
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    sim.write_u64(PhysAddr::new(leaf_table + 9 * 8), raw | af)
        .unwrap();

    // Harvesting pages 2..4 sees the access through the group and clears all 16 entries.
    let mut seen = Vec::new();
    let p = pt
        .harvest(VirtAddr::new(va + 0x2000), 0x2000, all, |m| seen.push(*m))
        .unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|m| m.access.accessed && m.contiguous));
    let range = p.range().unwrap();
    assert_eq!((range.start.as_u64(), range.len), (va, 16 * 0x1000));
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
    assert_eq!(raw_4k(&sim, pt.root(), pte) & af, 0);
}

#[test]
fn formats_without_the_hint_map_as_map_range() {
    let sim = sim();
    let mut alloc = sim.frame_allocator();
    let mut pt = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc).unwrap();
    let va = 0x40_0000_0000u64;
    map_hinted(&mut pt, &mut alloc, va, 0x8000_0000, 32 * 0x1000);
    assert!(
        hints(&pt, va, 32 * 0x1000)
            .iter()
            .all(|h| *h == Some(false))
    );
    let (m, p) = pt.unmap(VirtAddr::new(va + 0x5000)).unwrap();
    assert_eq!(m.pa, PhysAddr::new(0x8000_5000));
    pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
}
