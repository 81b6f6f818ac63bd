//! The leak scanner: reachability through roots and through other elements, interior
//! pointers, cycles, cached elements skipped, and a kalloc heap's large blocks.

use core::ptr::NonNull;

use machvm_sync::{CpuIndex, ThreadCpuId};
use machvm_zone_alloc::{
    Kalloc, LeakScan, NoCpuCache, SystemPages, Zone, ZoneConfig, ZoneFlags, find_leaks,
};

fn link(from: NonNull<u8>, to: usize, word: usize) {
    // SAFETY: `from` is a live element of at least `(word + 1) * 8` bytes.
    unsafe { from.as_ptr().cast::<usize>().add(word).write(to) };
}

#[test]
fn reachability_follows_roots_elements_and_interior_pointers() {
    let cpus = ThreadCpuId::new();
    let _cpu = cpus.bind(CpuIndex::new(0)).unwrap();
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("graph", 64).flags(ZoneFlags::HARDENED),
        SystemPages::new(),
        &cpus,
    )
    .unwrap();
    let [root, child, grandchild, cycle_a, cycle_b, lone]: [NonNull<u8>; 6] =
        core::array::from_fn(|_| zone.alloc().unwrap());
    link(root, child.as_ptr() as usize, 0);
    // An interior pointer keeps the element alive too.
    link(child, grandchild.as_ptr() as usize + 24, 3);
    link(cycle_a, cycle_b.as_ptr() as usize, 0);
    link(cycle_b, cycle_a.as_ptr() as usize, 0);
    // A freed element sits in the CPU cache with its marker: not a leak.
    let freed = zone.alloc().unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { zone.free(freed).unwrap() };

    let roots = [root.as_ptr() as usize, 0xdead_beef];
    let range = roots.as_ptr() as usize..roots.as_ptr() as usize + size_of_val(&roots);
    // SAFETY: `roots` is readable; nothing else runs.
    let leaks = unsafe { find_leaks(&[&zone as &dyn LeakScan], &[range]) };
    let mut want = vec![
        cycle_a.as_ptr() as usize,
        cycle_b.as_ptr() as usize,
        lone.as_ptr() as usize,
    ];
    want.sort_unstable();
    let got: Vec<usize> = leaks.iter().map(|l| l.addr).collect();
    assert_eq!(got, want);
    assert!(leaks.iter().all(|l| l.zone == "graph" && l.size == 64));
}

#[test]
fn kalloc_heaps_report_zone_and_large_leaks() {
    let pages = SystemPages::new();
    let heap: Kalloc<'_, _, _, 1> = Kalloc::new("heap", &pages, &NoCpuCache, 5)
        .unwrap()
        .tracking_large_blocks();
    let small = heap
        .alloc(core::alloc::Layout::from_size_align(40, 8).unwrap())
        .unwrap();
    let big = heap
        .alloc(core::alloc::Layout::from_size_align(100_000, 8).unwrap())
        .unwrap();
    let kept = heap
        .alloc(core::alloc::Layout::from_size_align(200, 8).unwrap())
        .unwrap();
    let roots = [kept.as_ptr() as usize];
    let range = roots.as_ptr() as usize..roots.as_ptr() as usize + 8;
    // SAFETY: `roots` is readable; nothing else runs.
    let leaks = unsafe { find_leaks(&[&heap as &dyn LeakScan], &[range]) };
    let mut got: Vec<(usize, usize)> = leaks.iter().map(|l| (l.addr, l.size)).collect();
    got.sort_unstable();
    let mut want = [
        (small.as_ptr() as usize, 48),
        // A large block's size is its usable size: whole pages minus the header.
        (
            big.as_ptr() as usize,
            (100_000usize + 64).next_multiple_of(4096) - 64,
        ),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
}
