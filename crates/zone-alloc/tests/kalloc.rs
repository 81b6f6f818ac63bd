//! kalloc against a model: random layouts (every class, over-aligned and large requests),
//! allocations, frees and reallocations; blocks never overlap, are aligned, keep their
//! contents across `realloc`, grow in place within their class, and the statistics count
//! exactly the live blocks.

// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use machvm_sync::{CpuIndex, ThreadCpuId};
use machvm_zone_alloc::{
    KALLOC_CLASSES, KALLOC_MAX, Kalloc, NoCpuCache, PageSourceError, SystemPages, ZoneError,
    ZoneFlags,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    ProptestConfig::with_cases(cases)
}

/// Longest operation sequence: shorter under miri, which interprets every instruction.
const fn max_ops() -> usize {
    if cfg!(miri) { 24 } else { 200 }
}

#[derive(Debug, Clone)]
enum Op {
    Alloc { size: usize, align_shift: u32 },
    Free { pick: usize },
    Realloc { pick: usize, size: usize },
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0..=1100usize,
        3 => 1100..=KALLOC_MAX,
        1 => KALLOC_MAX..=3 * KALLOC_MAX,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (size(), 0..14u32).prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        3 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        2 => (any::<usize>(), size()).prop_map(|(pick, size)| Op::Realloc { pick, size }),
    ]
}

/// Fills a block with a byte derived from its address and a generation.
fn fill(p: usize, len: usize, tag: u8) {
    // SAFETY: the caller passes a live block of at least `len` bytes.
    unsafe { (p as *mut u8).write_bytes(tag, len) };
}

fn holds(p: usize, len: usize, tag: u8) -> bool {
    // SAFETY: the caller passes a live block of at least `len` bytes.
    unsafe { std::slice::from_raw_parts(p as *const u8, len) }
        .iter()
        .all(|&b| b == tag)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn kalloc_matches_the_model(ops in proptest::collection::vec(op(), 1..max_ops()), hardened in any::<bool>()) {
        let cpus = ThreadCpuId::new();
        let _cpu = cpus.bind(CpuIndex::new(0)).unwrap();
        let pages = SystemPages::new();
        let flags = if hardened { ZoneFlags::HARDENED } else { ZoneFlags::RELEASE_DEFAULT };
        let heap: Kalloc<'_, _, _, 2> = Kalloc::with_flags("prop", &pages, &cpus, 77, flags).unwrap();
        // address -> (layout, tag)
        let mut live: BTreeMap<usize, (Layout, u8)> = BTreeMap::new();
        let mut tag = 0u8;
        for op in ops {
            tag = tag.wrapping_add(1);
            match op {
                Op::Alloc { size, align_shift } => {
                    let layout = Layout::from_size_align(size, 1 << align_shift).unwrap();
                    let p = heap.alloc(layout).unwrap().as_ptr() as usize;
                    prop_assert_eq!(p % layout.align(), 0, "misaligned for {:?}", layout);
                    prop_assert!(heap.usable_size(layout) >= size);
                    let len = size.max(1);
                    if let Some((&a, &(l, _))) = live.range(..=p).next_back() {
                        prop_assert!(a + l.size().max(1) <= p, "overlap below");
                    }
                    if let Some((&a, _)) = live.range(p..).next() {
                        prop_assert!(p + len <= a, "overlap above");
                    }
                    fill(p, size, tag);
                    live.insert(p, (layout, tag));
                }
                Op::Free { pick } if !live.is_empty() => {
                    let (&p, &(layout, t)) = live.iter().nth(pick % live.len()).unwrap();
                    prop_assert!(holds(p, layout.size(), t));
                    // SAFETY: live block of `layout`, freed once.
                    unsafe { heap.free(NonNull::new(p as *mut u8).unwrap(), layout) };
                    live.remove(&p);
                }
                Op::Realloc { pick, size } if !live.is_empty() => {
                    let (&p, &(layout, t)) = live.iter().nth(pick % live.len()).unwrap();
                    let in_place = heap.usable_size(layout) >= size
                        && heap.usable_size(Layout::from_size_align(size, layout.align()).unwrap())
                            == heap.usable_size(layout);
                    // SAFETY: live block of `layout`.
                    let q = unsafe { heap.realloc(NonNull::new(p as *mut u8).unwrap(), layout, size) }
                        .unwrap()
                        .as_ptr() as usize;
                    if in_place {
                        prop_assert_eq!(q, p, "same class: in place");
                    }
                    prop_assert!(holds(q, layout.size().min(size), t), "contents lost");
                    live.remove(&p);
                    let new_layout = Layout::from_size_align(size, layout.align()).unwrap();
                    fill(q, size, tag);
                    live.insert(q, (new_layout, tag));
                }
                _ => {}
            }
            let in_zones: usize = heap.zone_stats().map(|z| z.in_use).sum();
            let large = heap.large_stats().live;
            prop_assert_eq!(in_zones + large, live.len());
        }
        for (p, (layout, _)) in live {
            // SAFETY: live, freed once.
            unsafe { heap.free(NonNull::new(p as *mut u8).unwrap(), layout) };
        }
        prop_assert_eq!(heap.large_stats().bytes, 0);
    }
}

#[test]
fn class_zones_are_named_and_sized() {
    let pages = SystemPages::new();
    let heap: Kalloc<'_, _, _, 1> = Kalloc::new("kalloc", &pages, &NoCpuCache, 1).unwrap();
    let names: Vec<String> = heap.zone_stats().map(|z| z.name().to_string()).collect();
    assert_eq!(names.len(), KALLOC_CLASSES.len());
    assert_eq!(names[0], "kalloc.16");
    assert_eq!(names[KALLOC_CLASSES.len() - 1], "kalloc.32768");
    for (zone, &size) in heap.zones().iter().zip(&KALLOC_CLASSES) {
        assert_eq!(zone.element_size(), size);
    }
}

#[test]
fn out_of_memory_is_an_error_and_large_blocks_go_back() {
    let pages = SystemPages::with_limit(1 << 20);
    let heap: Kalloc<'_, _, _, 1> = Kalloc::new("oom", &pages, &NoCpuCache, 1).unwrap();
    let big = Layout::from_size_align(600 << 10, 8).unwrap();
    let p = heap.alloc(big).unwrap();
    assert_eq!(
        heap.alloc(big),
        Err(ZoneError::Source(PageSourceError::Exhausted))
    );
    // SAFETY: allocated above.
    unsafe { heap.free(p, big) };
    assert_eq!(pages.in_use(), 0);
    assert_eq!(heap.large_stats().live, 0);
}

#[test]
fn out_of_memory_drains_the_zone_caches_and_tries_again() {
    // A smaller source under miri, which interprets every one of the allocations.
    let limit = if cfg!(miri) { 192 << 10 } else { 1 << 20 };
    let pages = SystemPages::with_limit(limit);
    let cpus = ThreadCpuId::new();
    let _cpu = cpus.bind(CpuIndex::new(0)).unwrap();
    let heap: Kalloc<'_, _, _, 1> = Kalloc::new("oom.drain", &pages, &cpus, 1).unwrap();
    let small = Layout::from_size_align(64, 8).unwrap();
    let mut live = Vec::new();
    while let Ok(p) = heap.alloc(small) {
        live.push(p);
    }
    for p in live {
        // SAFETY: allocated above, freed once.
        unsafe { heap.free(p, small) };
    }
    // The freed blocks wait in the 64-byte zone's magazines and depot, holding its chunks; a
    // large block needs those pages, so the heap drains the zones and succeeds.
    let big = Layout::from_size_align(limit / 2, 8).unwrap();
    let p = heap
        .alloc(big)
        .expect("the zones' cached memory is given back");
    // SAFETY: allocated above.
    unsafe { heap.free(p, big) };
}
