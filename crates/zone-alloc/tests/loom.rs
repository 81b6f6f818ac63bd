//! Loom models of the zone's concurrent parts.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=2 cargo test --release -p machvm-zone-alloc --test loom`.
//!
//! Two threads stand for two CPUs (bound through `ThreadCpuId`); magazines hold one element so
//! that every second operation trades magazines with the depot or the chunks under the zone
//! lock. The per-CPU caches are loom cells, so a CPU touching another's cache fails the model.
//!
//! - `magazine_exchange_with_the_depot_never_hands_out_an_element_twice`: both CPUs allocate
//!   two elements and free them; no element is live twice, and every element is back at the
//!   end.
//! - `cross_cpu_free_returns_the_element_to_circulation`: CPU 0 allocates and hands the element
//!   to CPU 1, which frees it while CPU 0 allocates again; the two live elements differ, and
//!   the freed one is allocatable again.
//! - `trimming_while_a_cpu_trades_magazines_loses_nothing`: CPU 1 trims the zone (the zone GC:
//!   depot to its working set, empty chunks and idle magazine pages back) while CPU 0
//!   allocates and frees through the depot; no element is live twice, and after a drain the
//!   zone holds nothing.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use machvm_sync::atomic::{AtomicUsize, Ordering};
use machvm_sync::model::run_model;
use machvm_sync::{CpuIndex, ThreadCpuId};
use machvm_zone_alloc::{SystemPages, Zone, ZoneConfig, ZoneFlags};

type TestZone = Zone<SystemPages, &'static ThreadCpuId, 2>;

/// A `ThreadCpuId` for one model iteration (leaked: zones borrow it for `'static`).
fn cpus() -> &'static ThreadCpuId {
    Box::leak(Box::new(ThreadCpuId::new()))
}

fn zone(cpus: &'static ThreadCpuId) -> Arc<TestZone> {
    Arc::new(
        Zone::new(
            ZoneConfig::new("loom", 32)
                .flags(ZoneFlags::HARDENED)
                .magazine_size(1),
            SystemPages::new(),
            cpus,
        )
        .unwrap(),
    )
}

#[test]
fn magazine_exchange_with_the_depot_never_hands_out_an_element_twice() {
    run_model(
        "magazine_exchange_with_the_depot_never_hands_out_an_element_twice",
        || {
            let cpus = cpus();
            let zone = zone(cpus);
            // Each element's owner tag: a live element holds its owner's CPU + 1 in word 2.
            let other = {
                let zone = Arc::clone(&zone);
                thread::spawn(move || churn(&zone, cpus, 1))
            };
            churn(&zone, cpus, 0);
            other.join().unwrap();
            let stats = zone.stats();
            assert_eq!((stats.in_use, stats.alloc_count), (0, 4));
        },
    );
}

/// Allocates two elements on `cpu`, checks nobody else writes them, frees them.
fn churn(zone: &TestZone, cpus: &ThreadCpuId, cpu: u32) {
    let _bound = cpus.bind(CpuIndex::new(cpu)).unwrap();
    let tag = cpu as usize + 1;
    let a = zone.alloc().unwrap();
    let b = zone.alloc().unwrap();
    assert_ne!(a, b);
    for p in [a, b] {
        // SAFETY: a live 32-byte element.
        unsafe { p.as_ptr().cast::<usize>().add(2).write(tag) };
    }
    thread::yield_now();
    for p in [a, b] {
        // SAFETY: as above; a second owner would have overwritten the tag.
        assert_eq!(unsafe { p.as_ptr().cast::<usize>().add(2).read() }, tag);
        // SAFETY: allocated above, freed once.
        unsafe { zone.free(p).unwrap() };
    }
}

#[test]
fn cross_cpu_free_returns_the_element_to_circulation() {
    run_model("cross_cpu_free_returns_the_element_to_circulation", || {
        let cpus = cpus();
        let zone = zone(cpus);
        let handoff = Arc::new(AtomicUsize::new(0));

        let cpu1 = {
            let (zone, handoff) = (Arc::clone(&zone), Arc::clone(&handoff));
            thread::spawn(move || {
                let _bound = cpus.bind(CpuIndex::new(1)).unwrap();
                let addr = loop {
                    match handoff.load(Ordering::Acquire) {
                        0 => thread::yield_now(),
                        a => break a,
                    }
                };
                let p = core::ptr::NonNull::new(addr as *mut u8).unwrap();
                // SAFETY: handed over by CPU 0, which no longer uses it; freed once.
                unsafe { zone.free(p).unwrap() };
            })
        };

        let _bound = cpus.bind(CpuIndex::new(0)).unwrap();
        let first = zone.alloc().unwrap();
        handoff.store(first.as_ptr() as usize, Ordering::Release);
        let second = zone.alloc().unwrap();
        assert_ne!(
            first, second,
            "an element handed to CPU 1 came back while live"
        );
        cpu1.join().unwrap();
        // SAFETY: allocated above, freed once.
        unsafe { zone.free(second).unwrap() };
        assert_eq!(zone.stats().in_use, 0);
        // Drain everything back to the chunks: both elements are free there.
        zone.drain_cpu_cache();
        zone.drain();
    });
}

#[test]
fn trimming_while_a_cpu_trades_magazines_loses_nothing() {
    run_model(
        "trimming_while_a_cpu_trades_magazines_loses_nothing",
        || {
            let cpus = cpus();
            let zone = zone(cpus);
            let gc = {
                let zone = Arc::clone(&zone);
                thread::spawn(move || {
                    zone.trim(0);
                    zone.trim(0);
                })
            };
            churn(&zone, cpus, 0);
            gc.join().unwrap();
            let stats = zone.stats();
            assert_eq!((stats.in_use, stats.alloc_count), (0, 2));
            let _bound = cpus.bind(CpuIndex::new(0)).unwrap();
            zone.drain_cpu_cache();
            zone.drain();
            let stats = zone.stats();
            assert_eq!((stats.cached, stats.cur_size), (0, 0), "{stats:?}");
        },
    );
}
