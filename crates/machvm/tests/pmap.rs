//! `TablePmap`: the `Pmap` contract over a real page table, with the flushes counted.

use machvm::pmap::{PmapSetupError, TablePmap};
use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{A64Granule4K48, AccessState, CountingFlush, SwFlags, X86Pml4};
use machvm_vm_map::{Pmap, PmapError};

const START: u64 = 0x40_0000;
const END: u64 = 0x80_0000;
const PS: u64 = 0x1000;

fn va(page: u64) -> VirtAddr {
    VirtAddr::new(START + page * PS)
}

fn frame(n: u64) -> PhysAddr {
    PhysAddr::new(0x10_0000 + n * PS)
}

type X86<'a> = TablePmap<X86Pml4, &'a SimPhysMemory, &'a SimPhysMemory, CountingFlush>;

fn pmap(sim: &SimPhysMemory) -> X86<'_> {
    TablePmap::new_user(
        PageSize::Size4KiB,
        va(0),
        VirtAddr::new(END),
        sim,
        sim,
        CountingFlush::default(),
    )
    .expect("pmap")
}

fn sim() -> SimPhysMemory {
    SimPhysMemory::builder()
        .size_bytes(4 << 20)
        .build()
        .expect("sim")
}

#[test]
fn enter_maps_and_a_new_frame_replaces_with_a_flush() {
    let sim = sim();
    let mut p = pmap(&sim);
    p.enter(va(1), frame(1), VmProt::READ, false).unwrap();
    assert_eq!(
        p.hook().invalidations,
        0,
        "a new entry owes no invalidation"
    );
    let m = p.lookup(va(1)).unwrap();
    assert_eq!(
        (m.pa, m.attrs.prot(), m.attrs.is_user()),
        (frame(1), VmProt::READ, true)
    );

    // Copy on write: same page, new frame, more rights.
    p.enter(va(1), frame(2), VmProt::DEFAULT, false).unwrap();
    let m = p.lookup(va(1)).unwrap();
    assert_eq!((m.pa, m.attrs.prot()), (frame(2), VmProt::DEFAULT));
    assert_eq!(p.hook().invalidations, 1, "the old translation was flushed");
    let s = p.stats();
    assert_eq!((s.resident, s.entered, s.replaced), (1, 1, 1));

    // Same frame, more rights: an upgrade in place, no invalidation needed by the format
    // beyond what it asks for; the translation is updated.
    p.enter(va(1), frame(2), VmProt::ALL, false).unwrap();
    assert_eq!(p.lookup(va(1)).unwrap().attrs.prot(), VmProt::ALL);
    assert_eq!(p.stats().resident, 1);
}

#[test]
fn no_rights_means_no_translation() {
    let sim = sim();
    let mut p = pmap(&sim);
    p.enter(va(0), frame(0), VmProt::DEFAULT, false).unwrap();
    p.enter(va(0), frame(0), VmProt::NONE, false).unwrap();
    assert!(p.lookup(va(0)).is_none());
    assert_eq!(p.stats().resident, 0);
    // Protecting to nothing removes as well.
    p.enter(va(2), frame(2), VmProt::DEFAULT, false).unwrap();
    p.protect(va(2), va(3), VmProt::EXECUTE);
    assert!(
        p.lookup(va(2)).is_none(),
        "read-write ∩ execute grants nothing"
    );
}

#[test]
fn protect_intersects_page_by_page_and_keeps_wiring() {
    let sim = sim();
    let mut p = pmap(&sim);
    p.enter(va(0), frame(0), VmProt::DEFAULT, true).unwrap();
    p.enter(va(1), frame(1), VmProt::READ | VmProt::EXECUTE, false)
        .unwrap();
    p.enter(va(2), frame(2), VmProt::ALL, false).unwrap();
    let before = p.hook().invalidations;
    p.protect(va(0), va(4), VmProt::READ | VmProt::EXECUTE);
    let prot = |p: &X86<'_>, n| p.lookup(va(n)).unwrap().attrs.prot();
    assert_eq!(prot(&p, 0), VmProt::READ);
    assert_eq!(prot(&p, 1), VmProt::READ | VmProt::EXECUTE, "unchanged");
    assert_eq!(prot(&p, 2), VmProt::READ | VmProt::EXECUTE);
    assert!(
        p.lookup(va(0))
            .unwrap()
            .attrs
            .sw_flags()
            .contains(SwFlags::WIRED)
    );
    assert_eq!(p.stats().wired, 1);
    assert!(
        p.hook().invalidations > before,
        "lowered rights were flushed"
    );
}

#[test]
fn wiring_is_kept_in_the_entry() {
    let sim = sim();
    let mut p = pmap(&sim);
    p.enter(va(3), frame(3), VmProt::DEFAULT, false).unwrap();
    p.set_wired(va(3), true);
    assert!(
        p.lookup(va(3))
            .unwrap()
            .attrs
            .sw_flags()
            .contains(SwFlags::WIRED)
    );
    assert_eq!(p.stats().wired, 1);
    p.set_wired(va(3), false);
    assert!(
        !p.lookup(va(3))
            .unwrap()
            .attrs
            .sw_flags()
            .contains(SwFlags::WIRED)
    );
    assert_eq!(p.stats().wired, 0);
    p.set_wired(va(9), true); // not mapped: nothing happens
    assert!(p.lookup(va(9)).is_none());
}

#[test]
fn remove_flushes_once_and_drop_frees_every_table() {
    let sim = sim();
    let before = sim.frames_in_use();
    {
        let mut p = pmap(&sim);
        for n in 0..8 {
            p.enter(va(n), frame(n), VmProt::DEFAULT, false).unwrap();
        }
        let tables = sim.frames_in_use() - before;
        assert_eq!(tables, 4, "root, PDPT, PD and one leaf table");
        let flushes = p.stats().flushes;
        p.remove(va(0), va(8));
        assert_eq!(
            p.stats().flushes,
            flushes + 1,
            "one flush for the whole range"
        );
        assert_eq!(
            sim.frames_in_use() - before,
            1,
            "emptied tables freed after the flush"
        );
        p.enter(va(100), frame(0), VmProt::READ, false).unwrap();
    }
    assert_eq!(
        sim.frames_in_use(),
        before,
        "dropping the pmap frees its tables"
    );
}

#[test]
fn harvest_reports_and_clears_reference_bits() {
    let sim = sim();
    let mut p = pmap(&sim);
    p.enter(va(0), frame(0), VmProt::DEFAULT, false).unwrap();
    p.enter(va(1), frame(1), VmProt::DEFAULT, false).unwrap();
    // Simulated hardware has set no accessed bits yet.
    let mut seen = Vec::new();
    p.harvest(
        va(0),
        va(2),
        AccessState {
            accessed: true,
            dirty: false,
        },
        |m| {
            seen.push((m.va, m.access.accessed));
        },
    )
    .unwrap();
    assert_eq!(seen, vec![(va(0), false), (va(1), false)]);
    assert_eq!(
        p.harvest(
            va(0),
            VirtAddr::new(END + PS),
            AccessState::default(),
            |_| {}
        ),
        Err(PmapError::BadAddress)
    );
}

#[test]
fn bad_setups_and_addresses_are_refused() {
    let sim = sim();
    let r = TablePmap::<X86Pml4, _, _, _>::new_user(
        PageSize::Size16KiB,
        va(0),
        VirtAddr::new(END),
        &sim,
        &sim,
        CountingFlush::default(),
    );
    assert!(matches!(r, Err(PmapSetupError::GranuleMismatch { .. })));
    let r = TablePmap::<X86Pml4, _, _, _>::new_user(
        PageSize::Size4KiB,
        VirtAddr::new(END),
        va(0),
        &sim,
        &sim,
        CountingFlush::default(),
    );
    assert!(matches!(r, Err(PmapSetupError::BadWindow { .. })));
    // aarch64 user tables translate the lower half only.
    let r = TablePmap::<A64Granule4K48, _, _, _>::new_user(
        PageSize::Size4KiB,
        VirtAddr::new(0xffff_8000_0000_0000),
        VirtAddr::new(0xffff_8000_0010_0000),
        &sim,
        &sim,
        CountingFlush::default(),
    );
    assert!(matches!(r, Err(PmapSetupError::BadWindow { .. })));

    let mut p = pmap(&sim);
    assert_eq!(
        p.enter(VirtAddr::new(END), frame(0), VmProt::READ, false),
        Err(PmapError::BadAddress)
    );
    assert_eq!(
        p.enter(VirtAddr::new(START + 1), frame(0), VmProt::READ, false),
        Err(PmapError::BadAddress)
    );
    assert_eq!(p.stats().resident, 0);
}

#[test]
fn out_of_table_frames_is_no_memory_and_changes_nothing() {
    // 5 frames: the root and three tables fit, a second leaf table does not.
    let sim = SimPhysMemory::builder()
        .size_bytes(5 * PS)
        .build()
        .expect("sim");
    let mut p = TablePmap::<X86Pml4, _, _, _>::new_user(
        PageSize::Size4KiB,
        va(0),
        VirtAddr::new(0x4000_0000),
        &sim,
        &sim,
        CountingFlush::default(),
    )
    .unwrap();
    p.enter(va(0), frame(0), VmProt::DEFAULT, false).unwrap();
    let in_use = sim.frames_in_use();
    let far = VirtAddr::new(START + (2 << 20)); // another 2 MiB span: another leaf table
    let extra = 5 - in_use;
    for _ in 0..extra {
        // Fill the memory so the next table allocation fails.
        let mut a = sim.frame_allocator();
        let _ = machvm_addr::FrameAllocator::allocate(
            &mut a,
            machvm_addr::FrameRequest::single(PageSize::Size4KiB),
        );
    }
    assert_eq!(
        p.enter(far, frame(1), VmProt::DEFAULT, false),
        Err(PmapError::NoMemory)
    );
    assert!(p.lookup(far).is_none());
    assert_eq!(p.lookup(va(0)).unwrap().pa, frame(0));
    assert_eq!(p.stats().no_memory, 1);
}
