//! Malloc zones: creation, use, statistics, stale ids, slot exhaustion and destruction
//! returning every page.

use machvm_zone_alloc::{
    DEFAULT_ZONE_NAME, MallocZones, NoCpuCache, SystemPages, ZoneError, ZoneFlags,
};

#[test]
fn zones_are_created_used_listed_and_destroyed() {
    let pages = SystemPages::new();
    let zones: MallocZones<'_, _, _, 1, 3> =
        MallocZones::new(&pages, &NoCpuCache, 42, ZoneFlags::HARDENED).unwrap();
    let base = pages.in_use();
    let a = zones.create("QuartzCore").unwrap();
    let b = zones.create("WebKit Malloc").unwrap();
    assert_eq!(zones.create("one too many"), Err(ZoneError::TooManyZones));

    let mut blocks = Vec::new();
    for size in [1usize, 16, 100, 5000, 40_000, 200_000] {
        let p = zones.malloc(a, size).unwrap();
        assert_eq!(p.as_ptr() as usize % 16, 0);
        // SAFETY: `size` writable bytes.
        unsafe { p.as_ptr().write_bytes(0xaa, size) };
        blocks.push((p, size));
    }
    let z = zones.calloc(b, 10, 30).unwrap();
    // SAFETY: 300 readable bytes.
    let zeroed = unsafe { core::slice::from_raw_parts(z.as_ptr(), 300) };
    assert!(zeroed.iter().all(|&x| x == 0));

    let stats = zones.statistics(a).unwrap();
    assert_eq!(stats.blocks_in_use, 6);
    assert!(stats.size_in_use >= 1 + 16 + 100 + 5000 + 40_000 + 200_000);
    assert!(stats.size_allocated >= stats.size_in_use);

    let names: Vec<_> = zones.iter().map(|(_, h)| h.name().to_owned()).collect();
    assert_eq!(names, [DEFAULT_ZONE_NAME, "QuartzCore", "WebKit Malloc"]);
    assert_eq!(
        zones.iter().next().map(|(id, _)| id),
        Some(zones.default_zone())
    );

    // Destroying a zone frees its blocks and pages at once.
    // SAFETY: no block or reference of `a` is used afterwards.
    unsafe { zones.destroy(a).unwrap() };
    assert_eq!(zones.malloc(a, 8), Err(ZoneError::NoSuchZone));
    assert_eq!(zones.statistics(a), Err(ZoneError::NoSuchZone));
    // SAFETY: as above.
    assert_eq!(unsafe { zones.destroy(a) }, Err(ZoneError::NoSuchZone));
    let default = zones.default_zone();
    // SAFETY: the default zone cannot be destroyed; nothing is touched.
    let refused = unsafe { zones.destroy(default) };
    assert_eq!(refused, Err(ZoneError::BadConfig));

    // The slot is reused by a new zone, and the old id stays dead.
    let c = zones.create("reused").unwrap();
    assert_ne!(c, a);
    assert_eq!(zones.malloc(a, 8), Err(ZoneError::NoSuchZone));
    let p = zones.malloc(c, 64).unwrap();
    // SAFETY: a live 64-byte block of `c`; then no use of `c` or `b` afterwards.
    unsafe {
        zones.free(c, p, 64).unwrap();
        zones.free(b, z, 300).unwrap();
        zones.destroy(b).unwrap();
        zones.destroy(c).unwrap();
    }
    assert_eq!(pages.in_use(), base, "destroyed zones gave every page back");
    drop(zones);
    assert_eq!(pages.in_use(), 0);
}

#[test]
fn realloc_keeps_contents_across_classes() {
    let pages = SystemPages::new();
    let zones: MallocZones<'_, _, _, 1, 2> =
        MallocZones::new(&pages, &NoCpuCache, 7, ZoneFlags::RELEASE_DEFAULT).unwrap();
    let d = zones.default_zone();
    let p = zones.malloc(d, 40).unwrap();
    // SAFETY: 40 writable bytes.
    unsafe { p.as_ptr().write_bytes(3, 40) };
    // SAFETY: live 40-byte block.
    let q = unsafe { zones.realloc(d, p, 40, 48) }.unwrap();
    assert_eq!(p, q, "40 and 48 share the 48-byte class");
    // SAFETY: live 48-byte block.
    let r = unsafe { zones.realloc(d, q, 48, 3000) }.unwrap();
    // SAFETY: at least 40 readable bytes.
    let bytes = unsafe { core::slice::from_raw_parts(r.as_ptr(), 40) };
    assert!(bytes.iter().all(|&x| x == 3));
    // SAFETY: live 3000-byte block.
    unsafe { zones.free(d, r, 3000).unwrap() };
}

#[test]
fn pressure_relief_gives_back_the_cached_memory_of_one_zone_or_all() {
    let pages = SystemPages::new();
    let cpus = machvm_sync::ThreadCpuId::new();
    let _cpu = cpus.bind(machvm_sync::CpuIndex::new(0)).unwrap();
    let zones: MallocZones<'_, _, _, 1, 3> =
        MallocZones::new(&pages, &cpus, 9, ZoneFlags::RELEASE_DEFAULT).unwrap();
    let a = zones.default_zone();
    let b = zones.create("b").unwrap();
    // 2000-byte blocks: their class caches 8 per CPU (magazines of 4), so most of the freed
    // blocks wait in the depot, holding whole chunks.
    let (n, size) = (if cfg!(miri) { 200 } else { 1000 }, 2000);
    for id in [a, b] {
        let blocks: Vec<_> = (0..n).map(|_| zones.malloc(id, size).unwrap()).collect();
        for p in blocks {
            // SAFETY: allocated above from `id` with `size`, freed once.
            unsafe { zones.free(id, p, size).unwrap() };
        }
    }
    let held = pages.in_use();
    let b_before = zones.statistics(b).unwrap().size_allocated;
    let from_a = zones.pressure_relief(Some(a), 0).unwrap();
    assert!(from_a > 0);
    assert_eq!(pages.in_use(), held - from_a);
    assert_eq!(
        zones.statistics(b).unwrap().size_allocated,
        b_before,
        "b untouched"
    );
    // A goal stops the relief once met; 0 takes everything that can go.
    let some = zones.pressure_relief(None, 1).unwrap();
    assert!(some > 0);
    let rest = zones.pressure_relief(None, 0).unwrap();
    assert_eq!(pages.in_use(), held - from_a - some - rest);
    assert_eq!(
        zones.pressure_relief(None, 0).unwrap(),
        0,
        "nothing left to give"
    );
    // SAFETY: no block of `b` is in use.
    unsafe { zones.destroy(b).unwrap() };
    assert_eq!(
        zones.pressure_relief(Some(b), 0),
        Err(machvm_zone_alloc::ZoneError::NoSuchZone)
    );
}
