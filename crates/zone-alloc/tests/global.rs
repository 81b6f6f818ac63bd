//! `GlobalKalloc` as this test binary's `#[global_allocator]`: the test harness, threads,
//! collections and strings all run on the zone allocator, with per-CPU caches for the first
//! threads and the locked path for the rest; allocation failure is reported, not a panic, so
//! `try_reserve` works.

// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};

use machvm_sync::CpuIndex;
use machvm_zone_alloc::{CpuLocal, GlobalKalloc, SystemPages, ZoneFlags};

/// Host threads as CPUs: each thread takes the next index on first use; threads past the
/// last per-CPU cache use the zone lock.
struct ThreadSlots;

static NEXT: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static SLOT: Cell<Option<u32>> = const { Cell::new(None) };
}

// SAFETY: every thread gets its own index (a counter, never reused), so no two threads share
// a CPU cache; host threads have no interrupt handlers; the index of a thread never changes.
// During thread-local teardown the slot may be gone: then `None` (the locked path).
unsafe impl CpuLocal for ThreadSlots {
    fn with_cpu<R>(&self, f: impl FnOnce(Option<CpuIndex>) -> R) -> R {
        let cpu = SLOT
            .try_with(|s| {
                if s.get().is_none() {
                    s.set(Some(NEXT.fetch_add(1, Ordering::Relaxed)));
                }
                s.get()
            })
            .ok()
            .flatten();
        f(cpu.map(CpuIndex::new))
    }
}

static PAGES: SystemPages = SystemPages::with_limit(1 << 30);
static CPUS: ThreadSlots = ThreadSlots;

#[global_allocator]
static HEAP: GlobalKalloc<SystemPages, ThreadSlots, 4> =
    GlobalKalloc::with_flags(&PAGES, &CPUS, 0x0123_4567_89ab_cdef, ZoneFlags::HARDENED);

/// Scales a workload down under miri, which interprets every instruction.
const fn scaled(n: u32) -> u32 {
    if cfg!(miri) { n / 50 } else { n }
}

#[test]
fn collections_run_on_the_zone_allocator() {
    let mut map = BTreeMap::new();
    for i in 0..scaled(10_000) {
        map.insert(i, format!("value {i}"));
    }
    assert_eq!(
        map[&(scaled(10_000) / 2)],
        format!("value {}", scaled(10_000) / 2)
    );
    let n = u64::from(scaled(100_000));
    let mut v: Vec<u64> = Vec::new();
    for i in 0..n {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), n * (n - 1) / 2);
    let big = vec![7u8; if cfg!(miri) { 40_000 } else { 1 << 20 }];
    assert!(big.iter().all(|&b| b == 7));
    let heap = HEAP.heap().expect("built");
    assert!(heap.large_stats().alloc_count > 0);
    assert!(heap.zone_stats().any(|z| z.alloc_count > 0));
}

#[test]
fn threads_allocate_and_free_across_each_other() {
    let handles: Vec<_> = (0..if cfg!(miri) { 2 } else { 6 })
        .map(|t| {
            std::thread::spawn(move || {
                let mut m = HashMap::new();
                for i in 0..scaled(5_000) as usize {
                    m.insert(i, vec![t as u8; i % 300]);
                }
                m
            })
        })
        .collect();
    // Maps built on other threads are dropped (freed) here.
    for (t, h) in handles.into_iter().enumerate() {
        let m = h.join().unwrap();
        let last = scaled(5_000) as usize - 1;
        assert_eq!(m[&last], vec![t as u8; last % 300]);
    }
}

#[test]
fn try_reserve_reports_exhaustion_instead_of_panicking() {
    let mut v: Vec<u8> = Vec::new();
    // More than the page source's 1 GiB limit.
    assert!(v.try_reserve(2 << 30).is_err());
    assert!(v.try_reserve(1 << 20).is_ok());
}

#[test]
fn zeroed_allocations_are_zero() {
    let v = vec![0u64; scaled(4096) as usize];
    assert!(v.iter().all(|&x| x == 0));
    let small: Vec<u8> = std::iter::repeat_n(0u8, 100).collect();
    assert!(small.iter().all(|&x| x == 0));
    let layout = std::alloc::Layout::from_size_align(100, 8).unwrap();
    // SAFETY: a non-zero layout; the block is written within bounds and freed once.
    unsafe {
        let dirty = std::alloc::alloc(layout);
        dirty.write_bytes(0xff, 100);
        std::alloc::dealloc(dirty, layout);
        // The freed block is handed out zeroed for the next zeroed request of that class.
        let again = std::alloc::alloc_zeroed(layout);
        assert!(
            std::slice::from_raw_parts(again, 100)
                .iter()
                .all(|&x| x == 0)
        );
        std::alloc::dealloc(again, layout);
    }
}
