//! Zone behaviour: allocation and free through the CPU caches and the lock, limits, trimming,
//! every hardening check provoked, host threads as CPUs, and a property test against a model.

// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use machvm_sync::{CpuIndex, ThreadCpuId};
use machvm_zone_alloc::{
    FlagCase, HardenedFlags, NoCpuCache, PageSourceError, ReleaseDefaultFlags, SystemPages,
    Violation, ViolationKind, Zone, ZoneConfig, ZoneError, ZoneFlags, ZprintTable,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig::with_cases(cases)
}

/// Violations seen by `record`, per test (each test uses its own zone name).
static SEEN: Mutex<Vec<(String, ViolationKind, usize)>> = Mutex::new(Vec::new());

fn record(v: &Violation<'_>) {
    SEEN.lock()
        .unwrap()
        .push((v.zone.to_string(), v.kind, v.addr));
}

fn seen(zone: &str) -> Vec<(ViolationKind, usize)> {
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|(z, _, _)| z == zone)
        .map(|&(_, k, a)| (k, a))
        .collect()
}

fn hardened(name: &str, size: usize) -> ZoneConfig<'_> {
    ZoneConfig::new(name, size)
        .flags(ZoneFlags::HARDENED)
        .secret(0x1234_5678_9abc_def1)
        .on_violation(record)
}

/// A zone whose operations run as CPU 0 of a `ThreadCpuId` bound on the calling thread.
struct Bound {
    cpus: ThreadCpuId,
}

impl Bound {
    fn new() -> Self {
        Self {
            cpus: ThreadCpuId::new(),
        }
    }
}

#[test]
fn elements_are_distinct_aligned_and_hold_their_contents() {
    let b = Bound::new();
    let _cpu0 = b.cpus.bind(CpuIndex::new(0)).unwrap();
    let zone: Zone<_, _, 2> = Zone::new(
        ZoneConfig::new("basic", 72).align(64).magazine_size(8),
        SystemPages::new(),
        &b.cpus,
    )
    .unwrap();
    assert_eq!(zone.stride(), 128);
    let mut live = Vec::new();
    for i in 0..1000u32 {
        let p = zone.alloc().unwrap();
        assert_eq!(p.as_ptr() as usize % 64, 0);
        // SAFETY: 72 writable bytes from the zone.
        unsafe { p.as_ptr().write_bytes(i as u8, 72) };
        live.push((p, i as u8));
    }
    let mut sorted: Vec<usize> = live.iter().map(|(p, _)| p.as_ptr() as usize).collect();
    sorted.sort_unstable();
    assert!(
        sorted.windows(2).all(|w| w[1] - w[0] >= 128),
        "elements overlap"
    );
    for (p, v) in &live {
        // SAFETY: the element is live and 72 bytes long.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), 72) };
        assert!(bytes.iter().all(|b| b == v));
    }
    let stats = zone.stats();
    assert_eq!((stats.in_use, stats.alloc_count), (1000, 1000));
    for (p, _) in live {
        // SAFETY: allocated above, freed once.
        unsafe { zone.free(p).unwrap() };
    }
    let stats = zone.stats();
    assert_eq!(stats.in_use, 0);
    assert!(stats.cached > 0, "frees went to the CPU cache: {stats:?}");
}

#[test]
fn zero_on_free_returns_zeroed_memory() {
    let zone: Zone<_, _, 1> =
        Zone::new(hardened("zeroed", 200), SystemPages::new(), NoCpuCache).unwrap();
    let p = zone.alloc().unwrap();
    // SAFETY: 200 writable bytes.
    unsafe { p.as_ptr().write_bytes(0xff, 200) };
    // SAFETY: allocated above.
    unsafe { zone.free(p).unwrap() };
    let q = zone.alloc().unwrap();
    assert_eq!(p, q, "the chunk freelist is LIFO");
    // SAFETY: 200 readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(q.as_ptr(), 200) };
    assert!(bytes.iter().all(|&b| b == 0));
    // SAFETY: allocated above.
    unsafe { zone.free(q).unwrap() };
}

#[test]
fn double_free_is_caught_in_the_cache_and_in_the_chunk() {
    // Both fast-path cases (the hardened set, the release default), cached and locked.
    for (name, base, cached) in [
        ("double.cached", ZoneFlags::HARDENED, true),
        ("double.locked", ZoneFlags::HARDENED, false),
        ("double.release.cached", ZoneFlags::RELEASE_DEFAULT, true),
        ("double.release.locked", ZoneFlags::RELEASE_DEFAULT, false),
    ] {
        let b = Bound::new();
        let _cpu0 = b.cpus.bind(CpuIndex::new(0)).unwrap();
        let flags = if cached {
            base
        } else {
            base.with(ZoneFlags::NO_CACHE)
        };
        let zone: Zone<_, _, 1> =
            Zone::new(hardened(name, 64).flags(flags), SystemPages::new(), &b.cpus).unwrap();
        let p = zone.alloc().unwrap();
        // SAFETY: allocated above.
        unsafe { zone.free(p).unwrap() };
        // SAFETY: deliberately violates the contract; the zone must catch it.
        let err = unsafe { zone.free(p) }.unwrap_err();
        assert_eq!(err, ZoneError::Violation(ViolationKind::DoubleFree));
        assert_eq!(
            seen(name),
            [(ViolationKind::DoubleFree, p.as_ptr() as usize)]
        );
        // The zone is intact: the element comes back exactly once.
        let a = zone.alloc().unwrap();
        let b2 = zone.alloc().unwrap();
        assert_ne!(a, b2);
    }
}

/// An allocation from a magazine marks its element allocated whichever way the element came
/// into the magazine: a run of fresh elements, a chunk's freelist (after `drain`), a free on
/// the same CPU, or a magazine another CPU filled. Every element so allocated is handed out
/// once and frees once, and a second free is caught.
#[test]
fn elements_from_every_kind_of_magazine_fill_free_once() {
    for (name, flags) in [
        ("marks.release", ZoneFlags::RELEASE_DEFAULT),
        ("marks.hardened", ZoneFlags::HARDENED),
        ("marks.none", ZoneFlags::NONE),
    ] {
        let cpus = ThreadCpuId::new();
        let config = hardened(name, 48).flags(flags).magazine_size(8);
        let zone: Zone<_, _, 2> = Zone::new(config, SystemPages::new(), &cpus).unwrap();
        let _cpu0 = cpus.bind(CpuIndex::new(0)).unwrap();
        let n = 100;
        // Fresh runs, then a shuffled free on this CPU.
        let mut live: Vec<NonNull<u8>> = (0..n).map(|_| zone.alloc().unwrap()).collect();
        for i in (1..live.len()).rev() {
            live.swap(i, (i * 7 + 3) % (i + 1));
        }
        for &p in &live {
            // SAFETY: allocated above, freed once.
            unsafe { zone.free(p).unwrap() };
        }
        // Back to the chunks: the next fills come off shuffled freelists.
        zone.drain_cpu_cache();
        zone.drain();
        let from_freelists: Vec<usize> = (0..n)
            .map(|_| zone.alloc().unwrap().as_ptr() as usize)
            .collect();
        // Another CPU frees them: its magazines reach this CPU through the depot.
        std::thread::scope(|s| {
            let (zone, cpus, addrs) = (&zone, &cpus, &from_freelists);
            s.spawn(move || {
                let _cpu1 = cpus.bind(CpuIndex::new(1)).unwrap();
                for &a in addrs {
                    let p = NonNull::new(a as *mut u8).unwrap();
                    // SAFETY: allocated above, freed once, here.
                    unsafe { zone.free(p).unwrap() };
                }
                zone.drain_cpu_cache();
            });
        });
        let again: Vec<NonNull<u8>> = (0..n).map(|_| zone.alloc().unwrap()).collect();
        let mut addrs: Vec<usize> = again.iter().map(|p| p.as_ptr() as usize).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), n, "{name}: an element was handed out twice");
        assert_eq!(zone.stats().in_use, n, "{name}");
        for &p in &again {
            // SAFETY: allocated above, freed once.
            unsafe { zone.free(p).unwrap() };
        }
        if flags.contains(ZoneFlags::CHECK_FREE) {
            for &p in again.iter().step_by(17) {
                // SAFETY: deliberately violates the contract; the zone must catch it.
                let err = unsafe { zone.free(p) }.unwrap_err();
                assert_eq!(
                    err,
                    ZoneError::Violation(ViolationKind::DoubleFree),
                    "{name}"
                );
            }
        }
        assert!(
            seen(name)
                .iter()
                .all(|&(k, _)| k == ViolationKind::DoubleFree)
        );
        assert_eq!(zone.stats().in_use, 0, "{name}");
    }
}

#[test]
fn foreign_and_misaligned_pointers_are_caught() {
    let z1: Zone<_, _, 1> =
        Zone::new(hardened("foreign.a", 64), SystemPages::new(), NoCpuCache).unwrap();
    let z2: Zone<_, _, 1> =
        Zone::new(hardened("foreign.b", 64), SystemPages::new(), NoCpuCache).unwrap();
    let p = z1.alloc().unwrap();
    // SAFETY: `p` is readable zone memory; the zone must refuse it.
    let err = unsafe { z2.free(p) }.unwrap_err();
    assert_eq!(err, ZoneError::Violation(ViolationKind::ForeignPointer));
    // SAFETY: as above.
    assert_eq!(unsafe { z2.require(p) }, Err(ViolationKind::ForeignPointer));
    // SAFETY: as above.
    assert_eq!(unsafe { z1.require(p) }, Ok(()));
    let inside = NonNull::new(p.as_ptr().wrapping_add(8)).unwrap();
    // SAFETY: a pointer into a live element; the zone must refuse it.
    let err = unsafe { z1.free(inside) }.unwrap_err();
    assert_eq!(err, ZoneError::Violation(ViolationKind::NotAnElement));
    assert_eq!(seen("foreign.b").len(), 2);
    assert_eq!(
        seen("foreign.a"),
        [(ViolationKind::NotAnElement, inside.as_ptr() as usize)]
    );
    // SAFETY: allocated above, freed once.
    unsafe { z1.free(p).unwrap() };
}

/// A free hands the state byte it located to the allocation that pops the element right back
/// (LIFO use): across magazine swaps, reloads and drains, every element so reused is marked
/// allocated (its next free succeeds) and freed (a second free is a double free).
#[test]
fn lifo_reuse_marks_the_popped_element() {
    for (name, flags) in [
        ("lifo.release", ZoneFlags::RELEASE_DEFAULT),
        ("lifo.hardened", ZoneFlags::HARDENED),
    ] {
        let b = Bound::new();
        let _cpu0 = b.cpus.bind(CpuIndex::new(0)).unwrap();
        let zone: Zone<_, _, 1> = Zone::new(
            hardened(name, 48).flags(flags).magazine_size(3),
            SystemPages::new(),
            &b.cpus,
        )
        .unwrap();
        let mut held = Vec::new();
        for round in 0..40usize {
            // Pairs, with a few elements held so the magazines fill, swap and reload.
            for _ in 0..round % 5 {
                let p = zone.alloc().unwrap();
                // SAFETY: allocated above, freed once.
                unsafe { zone.free(p).unwrap() };
            }
            if round % 3 == 0 {
                held.push(zone.alloc().unwrap());
            } else if let Some(p) = held.pop() {
                // SAFETY: allocated above, freed once.
                unsafe { zone.free(p).unwrap() };
            }
            if round % 7 == 6 {
                zone.drain_cpu_cache();
            }
            let p = zone.alloc().unwrap();
            // SAFETY: allocated above, freed once.
            unsafe { zone.free(p).unwrap() };
            // SAFETY: deliberately frees it again; the zone must catch it.
            let err = unsafe { zone.free(p) }.unwrap_err();
            assert_eq!(err, ZoneError::Violation(ViolationKind::DoubleFree));
            let q = zone.alloc().unwrap();
            assert_eq!(q, p, "LIFO reuse");
            // SAFETY: allocated above, freed once.
            unsafe { zone.free(q).unwrap() };
        }
        assert_eq!(seen(name).len(), 40);
        for p in held {
            // SAFETY: allocated above, freed once.
            unsafe { zone.free(p).unwrap() };
        }
        assert_eq!(zone.stats().in_use, 0);
    }
}

/// Which flag sets each specialized handle accepts: the fast paths' case (`CHECK_FREE`,
/// `ZERO_ON_FREE`, `READ_ONLY`) decides, the other flags do not.
#[test]
fn zones_specialize_for_their_own_case_of_the_flags_only() {
    fn cases(flags: ZoneFlags) -> (bool, bool) {
        let zone: Zone<_, _, 1> = Zone::new(
            ZoneConfig::new("cases", 64).flags(flags),
            SystemPages::new(),
            NoCpuCache,
        )
        .unwrap();
        (
            zone.specialize::<ReleaseDefaultFlags>().is_some(),
            zone.specialize::<HardenedFlags>().is_some(),
        )
    }
    let table = [
        (ZoneFlags::RELEASE_DEFAULT, (true, false)),
        (ZoneFlags::CHECK_FREE, (true, false)),
        (
            ZoneFlags::RELEASE_DEFAULT.with(ZoneFlags::NO_CACHE),
            (true, false),
        ),
        (ZoneFlags::HARDENED, (false, true)),
        (
            ZoneFlags::CHECK_FREE.with(ZoneFlags::ZERO_ON_FREE),
            (false, true),
        ),
        (ZoneFlags::HARDENED.with(ZoneFlags::NO_CACHE), (false, true)),
        (ZoneFlags::NONE, (false, false)),
        (ZoneFlags::ZERO_ON_FREE, (false, false)),
        (ZoneFlags::ENCODE_FREELIST, (false, false)),
        (
            ZoneFlags::HARDENED.with(ZoneFlags::READ_ONLY),
            (false, false),
        ),
    ];
    for (flags, want) in table {
        assert_eq!(cases(flags), want, "{flags:?}");
    }
}

/// A specialized handle keeps every check of its zone, cached and locked: double frees,
/// foreign and misaligned pointers, writes after free (hardened); and its elements are the
/// zone's (freed either way, counted once).
#[test]
fn specialized_handles_keep_every_check() {
    fn check<F: FlagCase>(name: &str, flags: ZoneFlags, cached: bool) {
        let b = Bound::new();
        let _cpu0 = b.cpus.bind(CpuIndex::new(0)).unwrap();
        let flags = if cached {
            flags
        } else {
            flags.with(ZoneFlags::NO_CACHE)
        };
        let zone: Zone<_, _, 1> =
            Zone::new(hardened(name, 64).flags(flags), SystemPages::new(), &b.cpus).unwrap();
        let other: Zone<_, _, 1> = Zone::new(
            ZoneConfig::new("specialized.other", 64),
            SystemPages::new(),
            NoCpuCache,
        )
        .unwrap();
        let fast = zone.specialize::<F>().unwrap();
        let mut want = Vec::new();
        // Elements cross between the two paths.
        let p = fast.alloc().unwrap();
        let q = zone.alloc().unwrap();
        assert_ne!(p, q);
        assert_eq!(zone.stats().in_use, 2);
        // SAFETY: allocated above, freed once each.
        unsafe {
            zone.free(p).unwrap();
            fast.free(q).unwrap();
        }
        assert_eq!(fast.zone().stats().in_use, 0);
        // A double free, through the handle.
        // SAFETY: deliberately violates the contract; the zone must catch it.
        let err = unsafe { fast.free(p) }.unwrap_err();
        assert_eq!(err, ZoneError::Violation(ViolationKind::DoubleFree));
        want.push((ViolationKind::DoubleFree, p.as_ptr() as usize));
        // Another zone's element, and a pointer inside one of ours.
        let foreign = other.alloc().unwrap();
        // SAFETY: readable zone memory; the zone must refuse it.
        let err = unsafe { fast.free(foreign) }.unwrap_err();
        assert_eq!(err, ZoneError::Violation(ViolationKind::ForeignPointer));
        want.push((ViolationKind::ForeignPointer, foreign.as_ptr() as usize));
        let r = fast.alloc().unwrap();
        let inside = NonNull::new(r.as_ptr().wrapping_add(16)).unwrap();
        // SAFETY: a pointer into a live element; the zone must refuse it.
        let err = unsafe { fast.free(inside) }.unwrap_err();
        assert_eq!(err, ZoneError::Violation(ViolationKind::NotAnElement));
        want.push((ViolationKind::NotAnElement, inside.as_ptr() as usize));
        // SAFETY: allocated above, freed once.
        unsafe { fast.free(r).unwrap() };
        if flags.contains(ZoneFlags::ZERO_ON_FREE) && cached {
            // A write to the element on top of the magazine is caught by the next allocation.
            // SAFETY: deliberately writes freed zone memory, still the zone's (in a magazine).
            unsafe { r.as_ptr().add(40).write(1) };
            let err = fast.alloc().unwrap_err();
            assert_eq!(err, ZoneError::Violation(ViolationKind::ModifiedAfterFree));
            want.push((ViolationKind::ModifiedAfterFree, r.as_ptr() as usize));
            assert_eq!(zone.stats().quarantined, 1);
        }
        assert_eq!(seen(name), want);
        let s = zone.stats();
        assert_eq!((s.in_use, s.alloc_count), (0, 3));
        // SAFETY: allocated above, freed once.
        unsafe { other.free(foreign).unwrap() };
    }
    check::<ReleaseDefaultFlags>("specialized.release", ZoneFlags::RELEASE_DEFAULT, true);
    check::<ReleaseDefaultFlags>(
        "specialized.release.locked",
        ZoneFlags::RELEASE_DEFAULT,
        false,
    );
    check::<HardenedFlags>("specialized.hardened", ZoneFlags::HARDENED, true);
    check::<HardenedFlags>("specialized.hardened.locked", ZoneFlags::HARDENED, false);
}

#[test]
fn writes_after_free_are_caught_on_allocation() {
    let b = Bound::new();
    let _cpu0 = b.cpus.bind(CpuIndex::new(0)).unwrap();
    let zone: Zone<_, _, 1> = Zone::new(hardened("uaf", 64), SystemPages::new(), &b.cpus).unwrap();
    let p = zone.alloc().unwrap();
    // SAFETY: allocated above.
    unsafe { zone.free(p).unwrap() };
    // A use-after-free write (the memory stays mapped: the element sits in a magazine).
    // SAFETY: deliberately writes freed zone memory, which is still owned by the zone.
    unsafe { p.as_ptr().add(40).write(1) };
    let err = zone.alloc().unwrap_err();
    assert_eq!(err, ZoneError::Violation(ViolationKind::ModifiedAfterFree));
    assert_eq!(
        seen("uaf"),
        [(ViolationKind::ModifiedAfterFree, p.as_ptr() as usize)]
    );
    assert_eq!(zone.stats().quarantined, 1);
    // The next allocation gets another element.
    assert_ne!(zone.alloc().unwrap(), p);
}

#[test]
fn every_byte_of_a_freed_element_is_zeroed_and_checked() {
    // Strides in each of the zeroing and checking classes (up to 32, 64 and 128 bytes, and
    // above), multiples of 16 and not: each byte must be zeroed on free and any write to it
    // caught on the next allocation from the CPU cache.
    let b = Bound::new();
    let _cpu0 = b.cpus.bind(CpuIndex::new(0)).unwrap();
    for size in [16, 24, 32, 40, 48, 56, 64, 72, 96, 120, 128, 136, 200] {
        let name = format!("bytes.{size}");
        let zone: Zone<_, _, 1> =
            Zone::new(hardened(&name, size).align(8), SystemPages::new(), &b.cpus).unwrap();
        assert_eq!(zone.stride(), size);
        for at in 0..size {
            let p = zone.alloc().unwrap();
            // SAFETY: `size` writable bytes.
            unsafe { p.as_ptr().write_bytes(0xff, size) };
            // SAFETY: allocated above.
            unsafe { zone.free(p).unwrap() };
            let q = zone.alloc().unwrap();
            assert_eq!(q, p, "the CPU cache is LIFO");
            // SAFETY: `size` readable bytes.
            let bytes = unsafe { std::slice::from_raw_parts(q.as_ptr(), size) };
            assert!(bytes.iter().all(|&b| b == 0), "size {size}: {bytes:?}");
            // SAFETY: allocated above.
            unsafe { zone.free(q).unwrap() };
            // SAFETY: deliberately writes freed zone memory, still owned by the zone (the
            // element sits in a magazine).
            unsafe { q.as_ptr().add(at).write(1) };
            assert_eq!(
                zone.alloc().unwrap_err(),
                ZoneError::Violation(ViolationKind::ModifiedAfterFree),
                "size {size}, byte {at}"
            );
        }
        assert_eq!(zone.stats().quarantined, size);
    }
}

#[test]
fn writes_after_free_to_an_element_back_in_its_chunk_are_caught() {
    let b = Bound::new();
    let _cpu0 = b.cpus.bind(CpuIndex::new(0)).unwrap();
    let zone: Zone<_, _, 1> =
        Zone::new(hardened("uaf.loose", 64), SystemPages::new(), &b.cpus).unwrap();
    let keep = zone.alloc().unwrap();
    let p = zone.alloc().unwrap();
    // SAFETY: allocated above.
    unsafe { zone.free(p).unwrap() };
    // The magazines go back to the chunks: `p` is free in its chunk (which `keep` keeps).
    zone.drain_cpu_cache();
    zone.drain();
    assert_eq!(zone.stats().cached, 0);
    // SAFETY: deliberately writes freed zone memory, still owned by the zone (its chunk is
    // not empty, so it stays).
    unsafe { p.as_ptr().add(8).write(1) };
    let err = zone.alloc().unwrap_err();
    assert_eq!(err, ZoneError::Violation(ViolationKind::ModifiedAfterFree));
    assert_eq!(
        seen("uaf.loose"),
        [(ViolationKind::ModifiedAfterFree, p.as_ptr() as usize)]
    );
    // The chunk is retired; allocation goes on from a new one.
    assert_eq!(zone.stats().quarantined_chunks, 1);
    let q = zone.alloc().unwrap();
    assert_ne!(q, p);
    // SAFETY: allocated above, freed once each.
    unsafe {
        zone.free(q).unwrap();
        zone.free(keep).unwrap();
    }
}

#[test]
fn a_forged_freelist_link_is_caught() {
    let zone: Zone<_, _, 1> = Zone::new(
        hardened("forged", 64).flags(ZoneFlags::HARDENED.with(ZoneFlags::NO_CACHE)),
        SystemPages::new(),
        NoCpuCache,
    )
    .unwrap();
    let a = zone.alloc().unwrap();
    let b = zone.alloc().unwrap();
    // SAFETY: allocated above; `a` goes to its chunk's freelist first, then `b` on top.
    unsafe {
        zone.free(a).unwrap();
        zone.free(b).unwrap();
    }
    // Overwrite `b`'s link (its first word) as an attacker with a write-after-free would,
    // pointing it at a chosen address.
    // SAFETY: deliberately corrupts freed zone memory.
    unsafe { b.as_ptr().cast::<usize>().write(0x4141_4141_4141_4141) };
    // The forged link is caught before `b`, which holds it, is handed out.
    let err = zone.alloc().unwrap_err();
    assert_eq!(err, ZoneError::Violation(ViolationKind::FreelistCorrupted));
    assert_eq!(
        seen("forged"),
        [(ViolationKind::FreelistCorrupted, b.as_ptr() as usize)]
    );
    let stats = zone.stats();
    assert_eq!(stats.quarantined_chunks, 1);
    // Allocation continues from a fresh chunk.
    let c = zone.alloc().unwrap();
    assert_ne!(zone.chunk_of_test(c), zone.chunk_of_test(b));
}

trait ChunkOf {
    fn chunk_of_test(&self, p: NonNull<u8>) -> usize;
}

impl<S: machvm_zone_alloc::PageSource, C: machvm_zone_alloc::CpuLocal, const N: usize> ChunkOf
    for Zone<S, C, N>
{
    fn chunk_of_test(&self, p: NonNull<u8>) -> usize {
        p.as_ptr() as usize & !(self.chunk_size() - 1)
    }
}

static EXHAUSTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn limits_exhaustion_callback_and_trim() {
    let pages = SystemPages::new();
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("limited", 256)
            .limit(40)
            .on_exhaustion(|s| {
                assert!(s.in_use >= 36);
                EXHAUSTED.fetch_add(1, Ordering::Relaxed);
            }),
        &pages,
        NoCpuCache,
    )
    .unwrap();
    let mut live: Vec<_> = (0..40).map(|_| zone.alloc().unwrap()).collect();
    assert_eq!(EXHAUSTED.load(Ordering::Relaxed), 1);
    assert_eq!(zone.alloc(), Err(ZoneError::LimitReached { limit: 40 }));
    let held = pages.in_use();
    assert!(held > 0);
    for p in live.drain(..) {
        // SAFETY: allocated above, freed once.
        unsafe { zone.free(p).unwrap() };
    }
    assert_eq!(
        zone.stats().empty_chunks,
        zone.stats().cur_size / zone.chunk_size()
    );
    let released = zone.trim(0);
    assert_eq!(released, held - pages.in_use());
    assert_eq!(zone.stats().cur_size, 0);
    // Below 80 % and back up: the callback fires again.
    let live: Vec<_> = (0..38).map(|_| zone.alloc().unwrap()).collect();
    assert_eq!(EXHAUSTED.load(Ordering::Relaxed), 2);
    for p in live {
        // SAFETY: allocated above, freed once.
        unsafe { zone.free(p).unwrap() };
    }
}

/// Allocates until the page source is exhausted (checking that this is the error); returns
/// what was allocated.
fn until_the_source_runs_dry<S: machvm_zone_alloc::PageSource, C: machvm_zone_alloc::CpuLocal>(
    zone: &Zone<S, C, 1>,
) -> Vec<NonNull<u8>> {
    let mut live = Vec::new();
    let err = loop {
        match zone.alloc() {
            Ok(p) => live.push(p),
            Err(e) => break e,
        }
    };
    assert_eq!(err, ZoneError::Source(PageSourceError::Exhausted));
    live
}

#[test]
fn an_exhausted_page_source_is_an_error_that_changes_nothing() {
    let pages = SystemPages::with_limit(16 * 1024);
    let zone: Zone<_, _, 1> =
        Zone::new(ZoneConfig::new("small", 4000), &pages, NoCpuCache).unwrap();
    let live = until_the_source_runs_dry(&zone);
    let before = zone.stats();
    assert_eq!(
        zone.alloc(),
        Err(ZoneError::Source(PageSourceError::Exhausted))
    );
    let after = zone.stats();
    assert_eq!(
        (before.in_use, before.cur_size),
        (after.in_use, after.cur_size)
    );
    for p in live {
        // SAFETY: allocated above, freed once.
        unsafe { zone.free(p).unwrap() };
    }
    drop(zone);
    assert_eq!(pages.in_use(), 0, "dropping the zone gives every page back");
}

#[test]
fn bad_configs_are_refused() {
    let bad = [
        ZoneConfig::new("zero", 0),
        ZoneConfig::new("huge", machvm_zone_alloc::MAX_ELEMENT_SIZE + 1),
        ZoneConfig::new("align", 64).align(48),
        ZoneConfig::new("align.page", 64).align(8192),
        ZoneConfig::new("magazine", 64).magazine_size(0),
        ZoneConfig::new("a name that is much longer than thirty-two bytes", 64),
    ];
    for config in bad {
        let z = Zone::<_, _, 1>::new(config, SystemPages::new(), NoCpuCache);
        assert_eq!(z.err(), Some(ZoneError::BadConfig));
    }
    // A page source with pages below 4096 bytes (or not a power of two) is refused.
    for page in [2048, 6144] {
        let z = Zone::<_, _, 1>::new(ZoneConfig::new("page", 64), SmallPages(page), NoCpuCache);
        assert_eq!(z.err(), Some(ZoneError::BadConfig));
    }
}

/// A page source claiming a page size the zone does not accept (it never hands out memory).
struct SmallPages(usize);

// SAFETY: `allocate` never succeeds.
unsafe impl machvm_zone_alloc::PageSource for SmallPages {
    fn page_size(&self) -> usize {
        self.0
    }

    fn allocate(&self, _bytes: usize, _align: usize) -> Result<NonNull<u8>, PageSourceError> {
        Err(PageSourceError::Exhausted)
    }

    unsafe fn deallocate(&self, _ptr: NonNull<u8>, _bytes: usize, _align: usize) {}
}

/// A hardened zone of `size`-byte elements in magazines of `magazine`, for host threads bound
/// to CPUs 0 and 1 of `cpus`.
fn two_cpu_zone<'c>(
    cpus: &'c ThreadCpuId,
    name: &str,
    size: usize,
    magazine: usize,
) -> Zone<SystemPages, &'c ThreadCpuId, 2> {
    let config = ZoneConfig::new(name, size)
        .flags(ZoneFlags::HARDENED)
        .magazine_size(magazine);
    Zone::new(config, SystemPages::new(), cpus).unwrap()
}

#[test]
fn cross_cpu_frees_with_host_threads() {
    const PER_THREAD: usize = if cfg!(miri) { 300 } else { 20_000 };
    let cpus = ThreadCpuId::new();
    let zone = two_cpu_zone(&cpus, "cross", 64, 4);
    let (tx, rx) = std::sync::mpsc::sync_channel::<usize>(256);
    std::thread::scope(|s| {
        let (zone, cpus) = (&zone, &cpus);
        s.spawn(move || {
            let _cpu = cpus.bind(CpuIndex::new(0)).unwrap();
            for i in 0..PER_THREAD {
                let p = zone.alloc().unwrap();
                // SAFETY: 64 writable bytes.
                unsafe { p.as_ptr().cast::<usize>().add(2).write(i) };
                tx.send(p.as_ptr() as usize).unwrap();
            }
        });
        s.spawn(move || {
            let _cpu = cpus.bind(CpuIndex::new(1)).unwrap();
            for i in 0..PER_THREAD {
                let addr = rx.recv().unwrap();
                let p = NonNull::new(addr as *mut u8).unwrap();
                // SAFETY: the element is live and ours now.
                assert_eq!(unsafe { p.as_ptr().cast::<usize>().add(2).read() }, i);
                // SAFETY: allocated by the other thread, freed once here.
                unsafe { zone.free(p).unwrap() };
            }
        });
    });
    let stats = zone.stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert_eq!(stats.alloc_count, PER_THREAD as u64);
    // Both threads are gone: take over their caches, then everything goes back.
    // SAFETY: no thread runs zone code any more.
    unsafe {
        zone.drain_offline_cpu(CpuIndex::new(0));
        zone.drain_offline_cpu(CpuIndex::new(1));
    }
    zone.drain();
    let stats = zone.stats();
    assert_eq!((stats.cached, stats.cur_size), (0, 0), "{stats:?}");
}

#[test]
fn zprint_table_lists_every_zone() {
    let zones: Vec<Zone<_, _, 1>> = ["vm.objects", "vm.maps", "kalloc.64"]
        .iter()
        .map(|n| Zone::new(ZoneConfig::new(n, 64), SystemPages::new(), NoCpuCache).unwrap())
        .collect();
    let p = zones[1].alloc().unwrap();
    let stats: Vec<_> = zones.iter().map(Zone::stats).collect();
    let table = ZprintTable::new(&stats).to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3 + 3);
    assert!(lines[0].starts_with("zone name"));
    let maps = lines.iter().find(|l| l.starts_with("vm.maps")).unwrap();
    let cols: Vec<&str> = maps.split_whitespace().collect();
    // name, elem size, cur size, max size, cur #elts, max #elts, inuse, alloc size, alloc
    // count (elements per chunk), frag
    assert_eq!(cols.len(), 10, "{maps}");
    let per_chunk = stats[1].elements_per_chunk;
    assert_eq!(per_chunk, stats[1].cur_elements, "one chunk");
    assert_eq!(
        per_chunk,
        (16 << 10) / 64 - 6,
        "a 16 KiB chunk less its header"
    );
    let per_chunk = per_chunk.to_string();
    assert_eq!(
        (cols[1], cols[5], cols[6], cols[7], cols[8]),
        ("64", "-", "1", "16K", per_chunk.as_str())
    );
    // SAFETY: allocated above.
    unsafe { zones[1].free(p).unwrap() };
}

/// An operation of the property test (`fast`: through the zone's `SpecializedZone` handle).
#[derive(Debug, Clone)]
enum Op {
    Alloc { zone: usize, fast: bool },
    Free { pick: usize, fast: bool },
    Write { pick: usize, byte: u8 },
    Drain { zone: usize },
    Trim { zone: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, any::<bool>()).prop_map(|(zone, fast)| Op::Alloc { zone, fast }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, fast)| Op::Free { pick, fast }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(pick, byte)| Op::Write { pick, byte }),
        1 => (0..3usize).prop_map(|zone| Op::Drain { zone }),
        1 => (0..3usize).prop_map(|zone| Op::Trim { zone }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Random allocations, frees, writes, drains and trims over three zones (cached hardened,
    /// cached release-default, locked), allocations and frees through the zone or its
    /// specialized handle, against a model of the live elements: no two live elements
    /// overlap, each is aligned, keeps what was written to it, and the statistics count
    /// exactly the live elements.
    #[test]
    fn zones_match_the_model(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 40 } else { 300 })) {
        let b = Bound::new();
        let _cpu0 = b.cpus.bind(CpuIndex::new(0)).unwrap();
        let sizes = [24usize, 64, 520];
        let flags = [ZoneFlags::HARDENED, ZoneFlags::RELEASE_DEFAULT, ZoneFlags::HARDENED.with(ZoneFlags::NO_CACHE)];
        let zones: Vec<Zone<_, _, 1>> = (0..3)
            .map(|i| {
                Zone::new(
                    ZoneConfig::new("prop", sizes[i]).flags(flags[i]).magazine_size(3).on_violation(|v| panic!("{v}")),
                    SystemPages::new(),
                    &b.cpus,
                )
                .unwrap()
            })
            .collect();
        let hardened = [0, 2].map(|i| zones[i].specialize::<HardenedFlags>().unwrap());
        let release = zones[1].specialize::<ReleaseDefaultFlags>().unwrap();
        // address -> (zone, size, byte written)
        let mut live: BTreeMap<usize, (usize, usize, u8)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Alloc { zone, fast } => {
                    let p = match (zone, fast) {
                        (_, false) => zones[zone].alloc(),
                        (1, true) => release.alloc(),
                        (_, true) => hardened[zone / 2].alloc(),
                    };
                    let p = p.unwrap().as_ptr() as usize;
                    prop_assert_eq!(p % 16, 0);
                    let size = sizes[zone];
                    if let Some((&a, &(_, s, _))) = live.range(..=p).next_back() {
                        prop_assert!(a + s <= p, "overlaps the element below");
                    }
                    if let Some((&a, _)) = live.range(p..).next() {
                        prop_assert!(p + size <= a, "overlaps the element above");
                    }
                    // SAFETY: `size` writable bytes of a live element.
                    unsafe { (p as *mut u8).write_bytes(0x5a, size) };
                    live.insert(p, (zone, size, 0x5a));
                }
                Op::Free { pick, fast } if !live.is_empty() => {
                    let (&p, &(zone, size, byte)) = live.iter().nth(pick % live.len()).unwrap();
                    // SAFETY: a live element of `size` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
                    prop_assert!(bytes.iter().all(|&x| x == byte), "contents changed");
                    let p = NonNull::new(p as *mut u8).unwrap();
                    // SAFETY: live, freed once.
                    unsafe {
                        match (zone, fast) {
                            (_, false) => zones[zone].free(p),
                            (1, true) => release.free(p),
                            (_, true) => hardened[zone / 2].free(p),
                        }
                    }
                    .unwrap();
                    let p = p.as_ptr() as usize;
                    live.remove(&p);
                }
                Op::Write { pick, byte } if !live.is_empty() => {
                    let n = live.len();
                    let (&p, entry) = live.iter_mut().nth(pick % n).unwrap();
                    // SAFETY: a live element of `entry.1` bytes.
                    unsafe { (p as *mut u8).write_bytes(byte, entry.1) };
                    entry.2 = byte;
                }
                Op::Drain { zone } => {
                    zones[zone].drain_cpu_cache();
                    zones[zone].drain();
                }
                Op::Trim { zone } => {
                    zones[zone].trim(0);
                }
                _ => {}
            }
            for (i, z) in zones.iter().enumerate() {
                let want = live.values().filter(|(zone, _, _)| *zone == i).count();
                prop_assert_eq!(z.stats().in_use, want);
            }
        }
    }
}

/// Allocates `n` elements on the bound CPU.
fn take<S: machvm_zone_alloc::PageSource>(
    zone: &Zone<S, &ThreadCpuId, 1>,
    n: usize,
) -> Vec<NonNull<u8>> {
    (0..n).map(|_| zone.alloc().unwrap()).collect()
}

/// Frees every element of `live`.
fn give<S: machvm_zone_alloc::PageSource>(zone: &Zone<S, &ThreadCpuId, 1>, live: Vec<NonNull<u8>>) {
    for p in live {
        // SAFETY: allocated from `zone`, freed once.
        unsafe { zone.free(p).unwrap() };
    }
}

#[test]
fn trim_shrinks_the_depot_to_its_working_set() {
    // 4 KiB elements in magazines of 4: the depot always keeps 128 KiB, 8 magazines.
    const KEPT: usize = 8 * 4;
    const CACHE: usize = 2 * 4;
    // Enough magazines (100) that the 10 still in use after the last trim leave whole
    // magazine pages (7 magazines each) idle.
    let n = 400;
    let b = Bound::new();
    let _cpu = b.cpus.bind(CpuIndex::new(0)).unwrap();
    let pages = SystemPages::new();
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("depot.trim", 4096)
            .flags(ZoneFlags::RELEASE_DEFAULT)
            .magazine_size(4),
        &pages,
        &b.cpus,
    )
    .unwrap();
    give(&zone, take(&zone, n));
    let full = zone.stats();
    assert_eq!((full.in_use, full.cached), (0, n), "{full:?}");
    // The first trim has seen no interval yet: nothing in the depot is known to be idle.
    zone.trim(0);
    assert_eq!(zone.stats().cached, n);
    // Use half of the elements, then give them back: half of the depot was in use.
    let half = take(&zone, n / 2);
    give(&zone, half);
    let used = zone.stats();
    assert_eq!(used.cached, n);
    let released = zone.trim(0);
    let after = zone.stats();
    assert!(
        after.cached >= n / 2 && after.cached <= n / 2 + CACHE,
        "the working set stays cached: {after:?}"
    );
    assert!(released > 0 && after.cur_size < used.cur_size, "{after:?}");
    // Nothing used since: the depot shrinks to what it always keeps, and magazine pages whose
    // magazines are all unused go back too.
    let before = pages.in_use();
    let released = zone.trim(0);
    let idle = zone.stats();
    assert!(idle.cached <= KEPT + CACHE, "{idle:?}");
    assert!(idle.magazine_bytes < after.magazine_bytes, "{idle:?}");
    assert_eq!(released, before - pages.in_use());
    // The elements still cached are good for reuse, and drain gives back everything else.
    give(&zone, take(&zone, n));
    assert_eq!(zone.stats().in_use, 0);
    zone.drain_cpu_cache();
    zone.drain();
    let drained = zone.stats();
    assert_eq!((drained.cached, drained.cur_size), (0, 0), "{drained:?}");
}

#[test]
fn a_capped_depot_returns_elements_to_their_chunks() {
    let b = Bound::new();
    let _cpu = b.cpus.bind(CpuIndex::new(0)).unwrap();
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("depot.capped", 4096)
            .flags(ZoneFlags::RELEASE_DEFAULT)
            .magazine_size(4)
            .depot_limit(0),
        SystemPages::new(),
        &b.cpus,
    )
    .unwrap();
    give(&zone, take(&zone, if cfg!(miri) { 80 } else { 300 }));
    // A cap below 128 KiB per CPU is raised to it: 8 magazines of 4, plus the CPU's two.
    let stats = zone.stats();
    assert!(stats.cached <= 8 * 4 + 2 * 4, "{stats:?}");
}

#[test]
fn an_exhausted_page_source_takes_back_what_the_depot_holds() {
    let b = Bound::new();
    let _cpu = b.cpus.bind(CpuIndex::new(0)).unwrap();
    let pages = SystemPages::with_limit(1 << 20);
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("depot.reclaim", 2048).magazine_size(4),
        &pages,
        &b.cpus,
    )
    .unwrap();
    let live = until_the_source_runs_dry(&zone);
    let most = live.len();
    give(&zone, live);
    // Another CPU, one without a cache here, allocates from the chunks: the elements waiting
    // in the depot go back to them instead of the allocation failing.
    std::thread::scope(|s| {
        s.spawn(|| {
            let _other = b.cpus.bind(CpuIndex::new(1)).unwrap();
            let got: Vec<_> = (0..most - 8)
                .map(|_| zone.alloc().expect("depot elements reclaimed"))
                .collect();
            for p in got {
                // SAFETY: allocated above, freed once.
                unsafe { zone.free(p).unwrap() };
            }
        });
    });
}

#[test]
fn trimming_while_cpus_churn_keeps_every_element() {
    const ROUNDS: usize = if cfg!(miri) { 3 } else { 200 };
    const BURST: usize = if cfg!(miri) { 20 } else { 300 };
    let cpus = ThreadCpuId::new();
    let zone = two_cpu_zone(&cpus, "depot.churn", 2048, 2);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let (zone, cpus, done) = (&zone, &cpus, &done);
        let workers: Vec<_> = (0..2u32)
            .map(|cpu| {
                s.spawn(move || {
                    let _bound = cpus.bind(CpuIndex::new(cpu)).unwrap();
                    for round in 0..ROUNDS {
                        let live: Vec<_> = (0..BURST).map(|_| zone.alloc().unwrap()).collect();
                        for (i, p) in live.iter().enumerate() {
                            // SAFETY: a live element of 2048 bytes.
                            unsafe { p.as_ptr().cast::<usize>().write(round ^ i) };
                        }
                        for (i, p) in live.into_iter().enumerate() {
                            // SAFETY: as above; nobody else wrote it.
                            assert_eq!(unsafe { p.as_ptr().cast::<usize>().read() }, round ^ i);
                            // SAFETY: allocated above, freed once.
                            unsafe { zone.free(p).unwrap() };
                        }
                    }
                    // The CPU gives its own cache back before it stops.
                    zone.drain_cpu_cache();
                })
            })
            .collect();
        s.spawn(move || {
            while !done.load(Ordering::Relaxed) {
                zone.trim(1);
                std::thread::yield_now();
            }
        });
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
    assert_eq!(zone.stats().in_use, 0);
    zone.drain();
    let stats = zone.stats();
    assert_eq!((stats.cached, stats.cur_size), (0, 0), "{stats:?}");
}

#[test]
fn a_depot_cap_set_later_flushes_the_excess_and_holds() {
    let b = Bound::new();
    let _cpu = b.cpus.bind(CpuIndex::new(0)).unwrap();
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("depot.setcap", 4096)
            .flags(ZoneFlags::RELEASE_DEFAULT)
            .magazine_size(4),
        SystemPages::new(),
        &b.cpus,
    )
    .unwrap();
    give(&zone, take(&zone, 300));
    assert_eq!(
        zone.stats().cached,
        300,
        "not capped: everything stays cached"
    );
    // Any cap is at least 128 KiB per CPU: 8 magazines of 4, plus the CPU's two.
    zone.set_depot_limit(Some(0));
    assert!(zone.stats().cached <= 8 * 4 + 2 * 4, "{:?}", zone.stats());
    give(&zone, take(&zone, 300));
    assert!(zone.stats().cached <= 8 * 4 + 2 * 4, "{:?}", zone.stats());
    zone.set_depot_limit(None);
    give(&zone, take(&zone, 300));
    assert_eq!(zone.stats().cached, 300);
}
