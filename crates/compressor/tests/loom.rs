//! Loom models of the pool's concurrent operations (the real pool, over `machvm-sync`'s loom
//! locks).
//!
//! Run with `cargo xtask loom compressor` (`--cfg loom`, `LOOM_MAX_PREEMPTIONS=2`).
//!
//! - `concurrent_stores_and_loads_keep_pages_apart`: two threads each store a page, load it
//!   back and free it, while sharing the filling segment; each sees its own page, and the pool
//!   ends empty.
//! - `compaction_races_with_loads_and_frees`: a sparse sealed segment is merged away by one
//!   thread while another loads and frees pages in it; every load returns its page.
//! - `two_loads_of_a_swapped_out_page_swap_it_in_once`: both threads fault on the same
//!   swapped-out segment; one swap-in happens and both read the page.
#![cfg(loom)]
// Host tests: std is the natural choice.
#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

use loom::sync::Arc;
use loom::thread;
use machvm_compressor::codec::{Hybrid, PageSize, VectorPolicy};
use machvm_compressor::pool::{
    Handle, HeapMemory, MemoryStore, Pool, PoolConfig, SegmentSize, SegmentState,
};
use machvm_sync::model::run_model;

type LoomPool = Pool<'static, Hybrid, HeapMemory, MemoryStore>;

fn pool() -> Arc<LoomPool> {
    let config = PoolConfig::new(SegmentSize::K64)
        .max_in_core_segments(4)
        .max_segments(4)
        .max_pages(64);
    Arc::new(
        Pool::new(
            config,
            Hybrid::new(PageSize::Size4K, VectorPolicy::Portable),
            HeapMemory::new(),
            MemoryStore::new(),
        )
        .unwrap(),
    )
}

/// Spawns a model thread with a stack that holds pages, scratch buffers and the codec's work
/// areas (loom's default coroutine stacks are far smaller than a kernel thread's).
fn spawn_big<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new().stack_size(1 << 20).spawn(f).unwrap()
}

/// Runs `f` on a thread with a large stack (the model's main thread has a small one).
fn model(name: &'static str, f: fn()) {
    run_model(name, move || spawn_big(f).join().unwrap());
}

/// A page that compresses (WKdm or LZ4 output), distinct per `seed`.
fn page(seed: u32) -> [u32; 1024] {
    let mut p = [0_u32; 1024];
    for (i, w) in p.iter_mut().enumerate() {
        *w = match i % 4 {
            0 => seed,
            1 => i as u32,
            2 => 0,
            _ => 0x7f00_0000 + (i as u32 & 0xf0),
        };
    }
    p
}

/// A page that does not compress (stored raw: 15 fill a 64 KiB segment).
fn raw_page(seed: u32) -> [u32; 1024] {
    let mut x = seed.wrapping_mul(0x9E37_79B9) | 1;
    let mut p = [0_u32; 1024];
    for w in &mut p {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *w = x;
    }
    p
}

#[test]
fn concurrent_stores_and_loads_keep_pages_apart() {
    model("concurrent_stores_and_loads_keep_pages_apart", || {
        let pool = pool();
        let other = {
            let pool = Arc::clone(&pool);
            spawn_big(move || {
                let h = pool.store(&page(2)).unwrap();
                let mut out = [0_u32; 1024];
                pool.take(h, &mut out).unwrap();
                assert_eq!(out, page(2));
            })
        };
        let h = pool.store(&page(1)).unwrap();
        let mut out = [0_u32; 1024];
        pool.load(h, &mut out).unwrap();
        assert_eq!(out, page(1));
        pool.free(h).unwrap();
        other.join().unwrap();
        let st = pool.stats();
        assert_eq!((st.pages_stored, st.stores, st.frees), (0, 2, 2));
    });
}

#[test]
fn compaction_races_with_loads_and_frees() {
    model("compaction_races_with_loads_and_frees", || {
        let pool = pool();
        // Raw pages, 15 per segment: segments 0 and 1 fill and are sealed, 2 is filling.
        let handles: Vec<Handle> = (0..16).map(|i| pool.store(&raw_page(i)).unwrap()).collect();
        let more: Vec<Handle> = (16..31)
            .map(|i| pool.store(&raw_page(i)).unwrap())
            .collect();
        // Leave two pages in segment 0 and two in segment 1: both sparse.
        for h in handles.iter().skip(2).chain(more.iter().skip(1).take(13)) {
            pool.free(*h).unwrap();
        }
        let (a, b) = (handles[0], handles[1]);
        let compactor = {
            let pool = Arc::clone(&pool);
            spawn_big(move || {
                pool.compact_major();
            })
        };
        let mut out = [0_u32; 1024];
        pool.load(a, &mut out).unwrap();
        assert_eq!(out, raw_page(0));
        pool.free(b).unwrap();
        compactor.join().unwrap();
        pool.load(a, &mut out).unwrap();
        assert_eq!(out, raw_page(0));
        pool.load(more[0], &mut out).unwrap();
        assert_eq!(out, raw_page(16));
        assert_eq!(pool.stats().pages_stored, 3);
    });
}

#[test]
fn two_loads_of_a_swapped_out_page_swap_it_in_once() {
    model("two_loads_of_a_swapped_out_page_swap_it_in_once", || {
        let pool = pool();
        let handles: Vec<Handle> = (0..16).map(|i| pool.store(&raw_page(i)).unwrap()).collect();
        let seg = pool.swap_out_oldest().unwrap().unwrap();
        let h = handles[3];
        let other = {
            let pool = Arc::clone(&pool);
            spawn_big(move || {
                let mut out = [0_u32; 1024];
                pool.load(h, &mut out).unwrap();
                assert_eq!(out, raw_page(3));
            })
        };
        let mut out = [0_u32; 1024];
        pool.load(handles[4], &mut out).unwrap();
        assert_eq!(out, raw_page(4));
        other.join().unwrap();
        assert_eq!(pool.segment(seg).unwrap().state, SegmentState::Sealed);
        let st = pool.stats();
        assert_eq!((st.swap_outs, st.swap_ins), (1, 1));
        assert_eq!(pool.segment_store().len(), 0);
    });
}
