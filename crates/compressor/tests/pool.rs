//! Behaviour of the segment pool: round trips, single values, limits and pressure, compaction,
//! swap, corruption, handles, and the no-heap configuration.

// Not under miri: this crate's only unsafe code is the AVX2 path (which miri cannot run) and the
// byte views of `codec::bytes`, both exercised by the unit tests miri runs; these tests drive
// safe code (and lz4_flex, also reached by the unit tests) through hundreds of pages, which
// took most of CI's miri step. They run natively in `cargo test`.
#![cfg(not(miri))]
// Host tests: std is the natural choice.
#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

mod pool_support;

use std::sync::Arc;

use machvm_compressor::codec::{CodecKind, PageSize, VectorPolicy};
use machvm_compressor::pool::{
    Handle, HandleSlot, MemoryStore, NoStore, Pool, PoolConfig, PoolError, PoolPressure,
    SegmentEntry, SegmentSize, SegmentState, SliceMemory, StoreError, Tables,
};
use pool_support::{
    CountingMemory, check_invariants, hybrid, pool, random_page, single_page, structured_page,
};

fn small() -> PoolConfig {
    PoolConfig::new(SegmentSize::K64)
        .max_in_core_segments(8)
        .max_segments(16)
        .max_pages(4096)
}

/// Pages per test, smaller under miri.
fn n(full: usize) -> usize {
    if cfg!(miri) { full.min(12) } else { full }
}

#[test]
fn stored_pages_load_back_unchanged() {
    let (pool, mem, store) = pool(small());
    let pages: Vec<[u32; 1024]> = (0..n(40))
        .map(|i| {
            if i % 2 == 0 {
                structured_page(i as u64)
            } else {
                random_page(i as u64)
            }
        })
        .collect();
    let handles: Vec<Handle> = pages.iter().map(|p| pool.store(p).unwrap()).collect();
    check_invariants(&pool, &mem, &store);
    let mut out = [0_u32; 1024];
    for (h, p) in handles.iter().zip(&pages) {
        assert!(!h.is_single_value());
        pool.load(*h, &mut out).unwrap();
        assert_eq!(&out, p);
    }
    let st = pool.stats();
    assert_eq!(st.pages_stored, pages.len() as u64);
    assert_eq!(st.loads, pages.len() as u64);
    assert!(st.incompressible_pages >= (pages.len() / 2) as u64);
    assert!(st.compression_ratio() > 1.0);
    for h in handles {
        pool.take(h, &mut out).unwrap();
    }
    check_invariants(&pool, &mem, &store);
    assert_eq!(pool.stats().pages_stored, 0);
    // Only the (now empty) filling segment is left.
    assert_eq!(pool.stats().segments_in_core, 1);
}

#[test]
fn single_value_pages_share_a_refcounted_entry_and_take_no_segment_space() {
    let (pool, mem, store) = pool(small());
    let a = pool.store(&single_page(0)).unwrap();
    let b = pool.store(&single_page(0)).unwrap();
    let c = pool.store(&single_page(0)).unwrap();
    let d = pool.store(&single_page(0xdead_beef)).unwrap();
    assert!(a.is_single_value() && d.is_single_value());
    assert_eq!(pool.single_value_refs(a).unwrap(), 3);
    assert_eq!(pool.single_value_refs(d).unwrap(), 1);
    let st = pool.stats();
    assert_eq!((st.single_value_pages, st.single_values), (4, 2));
    assert_eq!((st.single_value_hits, st.compressed_bytes), (4, 0));
    assert_eq!(st.segments_in_core, 0, "no segment was needed");
    pool.free(a).unwrap();
    pool.free(b).unwrap();
    assert_eq!(pool.single_value_refs(c).unwrap(), 1);
    let mut out = [1_u32; 1024];
    pool.load(c, &mut out).unwrap();
    assert_eq!(out, single_page(0));
    pool.load(d, &mut out).unwrap();
    assert_eq!(out, single_page(0xdead_beef));
    pool.free(c).unwrap();
    assert_eq!(pool.stats().single_values, 1);
    assert_eq!(pool.free(c), Err(PoolError::InvalidHandle(c)));
    assert_eq!(pool.single_value_refs(c), Err(PoolError::InvalidHandle(c)));
    // A 64-bit pattern (two alternating words) is a single value too.
    let mut alt = [0_u32; 1024];
    for (i, w) in alt.iter_mut().enumerate() {
        *w = if i % 2 == 0 { 0x1111 } else { 0x2222 };
    }
    let e = pool.store(&alt).unwrap();
    assert!(e.is_single_value());
    pool.load(e, &mut out).unwrap();
    assert_eq!(out, alt);
    check_invariants(&pool, &mem, &store);
}

#[test]
fn single_values_that_miss_the_table_go_to_a_segment() {
    let (pool, mem, store) = pool(small());
    let values: Vec<u32> = (0..n(400) as u32)
        .map(|i| i.wrapping_mul(0x0101_0107) + 1)
        .collect();
    let handles: Vec<Handle> = values
        .iter()
        .map(|&v| pool.store(&single_page(v)).unwrap())
        .collect();
    let st = pool.stats();
    if !cfg!(miri) {
        assert!(st.single_value_misses > 0, "{st:?}");
    }
    assert_eq!(
        st.single_value_hits + st.single_value_misses,
        values.len() as u64
    );
    let mut out = [0_u32; 1024];
    for (h, &v) in handles.iter().zip(&values) {
        pool.load(*h, &mut out).unwrap();
        assert_eq!(out, single_page(v));
    }
    check_invariants(&pool, &mem, &store);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "fills segments page by page: minutes under miri; the memory paths it uses run in the other tests"
)]
fn a_store_at_the_in_core_limit_fails_and_changes_nothing() {
    let config = PoolConfig::new(SegmentSize::K64)
        .max_in_core_segments(2)
        .max_segments(4)
        .max_pages(256);
    let (pool, mem, store) = pool(config);
    assert_eq!(pool.pressure(), PoolPressure::Normal);
    let mut handles = Vec::new();
    let mut seed = 0;
    let err = loop {
        seed += 1;
        match pool.store(&random_page(seed)) {
            Ok(h) => handles.push(h),
            Err(e) => break e,
        }
    };
    assert_eq!(err, PoolError::Exhausted);
    // Two 64 KiB segments of raw 4 KiB pages: 15 pages each.
    assert_eq!(handles.len(), 30);
    assert_eq!(pool.pressure(), PoolPressure::Exhausted);
    let before = pool.stats();
    assert_eq!(pool.store(&random_page(999)), Err(PoolError::Exhausted));
    assert_eq!(pool.stats(), before, "a failed store changes nothing");
    // Single values still fit: they need no segment space.
    let z = pool.store(&single_page(0)).unwrap();
    pool.free(z).unwrap();
    // Swapping a segment out makes room.
    assert!(pool.swap_out_oldest().unwrap().is_some());
    assert_eq!(pool.pressure(), PoolPressure::Normal);
    let h = pool.store(&random_page(1000)).unwrap();
    // A load from the swapped-out segment now needs a swap-in past the limit.
    assert_eq!(
        pool.load(handles[0], &mut [0; 1024]),
        Err(PoolError::Exhausted)
    );
    pool.free(h).unwrap();
    check_invariants(&pool, &mem, &store);
    let mut out = [0_u32; 1024];
    for (i, h) in handles.iter().enumerate().skip(15) {
        pool.take(*h, &mut out).unwrap();
        assert_eq!(out, random_page(i as u64 + 1));
    }
    // The filling segment emptied: the swapped-out one can come back.
    pool.load(handles[0], &mut out).unwrap();
    assert_eq!(out, random_page(1));
    check_invariants(&pool, &mem, &store);
}

#[test]
fn pressure_passes_nearing_limit_at_98_percent_of_the_handle_table() {
    let config = PoolConfig::new(SegmentSize::K64).max_pages(100);
    let (pool, _mem, _store) = pool(config);
    let mut hs = Vec::new();
    for i in 0..97 {
        hs.push(pool.store(&single_page(i % 3)).unwrap());
    }
    assert_eq!(pool.pressure(), PoolPressure::Normal);
    hs.push(pool.store(&single_page(0)).unwrap());
    assert_eq!(pool.pressure(), PoolPressure::NearingLimit);
    hs.push(pool.store(&single_page(0)).unwrap());
    hs.push(pool.store(&structured_page(1)).unwrap());
    assert_eq!(pool.pressure(), PoolPressure::Exhausted);
    let before = pool.stats();
    assert_eq!(pool.store(&single_page(0)), Err(PoolError::Exhausted));
    assert_eq!(pool.store(&structured_page(2)), Err(PoolError::Exhausted));
    assert_eq!(pool.stats(), before);
    pool.free(hs.pop().unwrap()).unwrap();
    pool.free(hs.pop().unwrap()).unwrap();
    pool.free(hs.pop().unwrap()).unwrap();
    assert_eq!(pool.pressure(), PoolPressure::Normal);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "fills segments page by page: minutes under miri; the memory paths it uses run in the other tests"
)]
fn segment_memory_refusal_is_reported_and_changes_nothing() {
    let mem = CountingMemory::with_limit(1);
    let store = Arc::new(MemoryStore::new());
    let pool = Pool::new(small(), hybrid(), mem.clone(), Arc::clone(&store)).unwrap();
    let mut hs = Vec::new();
    for i in 0..15 {
        hs.push(pool.store(&random_page(i)).unwrap());
    }
    let before = pool.stats();
    assert_eq!(pool.store(&random_page(99)), Err(PoolError::OutOfMemory));
    assert_eq!(pool.stats(), before);
    assert_eq!(pool.filling_segment(), Some(0));
    assert_eq!(pool.segment(0).unwrap().state, SegmentState::Filling);
    check_invariants(&pool, &mem, &store);
}

#[test]
fn minor_compaction_closes_holes_and_keeps_handles() {
    let (pool, mem, store) = pool(small());
    let pages: Vec<[u32; 1024]> = (0..n(45)).map(|i| random_page(i as u64)).collect();
    let handles: Vec<Handle> = pages.iter().map(|p| pool.store(p).unwrap()).collect();
    for h in handles.iter().step_by(2) {
        pool.free(*h).unwrap();
    }
    let before = pool.stats();
    assert!(before.bytes_unused > 0);
    let report = pool.compact_minor();
    assert!(report.segments >= 1, "{report:?}");
    assert!(report.bytes_reclaimed > 0);
    let after = pool.stats();
    assert!(after.bytes_unused < before.bytes_unused);
    assert_eq!(after.compressed_bytes, before.compressed_bytes);
    check_invariants(&pool, &mem, &store);
    let mut out = [0_u32; 1024];
    for (i, h) in handles.iter().enumerate().skip(1).step_by(2) {
        pool.load(*h, &mut out).unwrap();
        assert_eq!(out, pages[i]);
    }
}

#[test]
fn major_compaction_merges_sparse_segments_and_handles_follow() {
    let (pool, mem, store) = pool(small());
    let count = n(90);
    let pages: Vec<[u32; 1024]> = (0..count).map(|i| random_page(i as u64)).collect();
    let handles: Vec<Handle> = pages.iter().map(|p| pool.store(p).unwrap()).collect();
    let segments_before = pool.stats().segments_in_core;
    // Keep one page in five.
    for (i, h) in handles.iter().enumerate() {
        if i % 5 != 0 {
            pool.free(*h).unwrap();
        }
    }
    let report = pool.compact_major();
    check_invariants(&pool, &mem, &store);
    if !cfg!(miri) {
        assert!(report.segments >= 2, "{report:?}");
        assert!(report.slots_moved >= 2);
        assert!(pool.stats().segments_in_core < segments_before);
        assert_eq!(pool.stats().major_compactions, u64::from(report.segments));
    }
    let mut out = [0_u32; 1024];
    for (i, h) in handles.iter().enumerate().step_by(5) {
        pool.load(*h, &mut out).unwrap();
        assert_eq!(out, pages[i], "page {i} after major compaction");
    }
    // A second pass finds nothing more to merge.
    let again = pool.compact_major();
    assert_eq!(again.skipped_corrupt, 0);
}

#[test]
fn swapped_out_segments_swap_back_in_on_load() {
    let (pool, mem, store) = pool(small());
    let pages: Vec<[u32; 1024]> = (0..n(40)).map(|i| structured_page(i as u64)).collect();
    let handles: Vec<Handle> = pages.iter().map(|p| pool.store(p).unwrap()).collect();
    let filling = pool.filling_segment().unwrap();
    assert_eq!(
        pool.swap_out(filling),
        Err(PoolError::BadSegment { segment: filling })
    );
    let mut swapped = Vec::new();
    while let Some(s) = pool.swap_out_oldest().unwrap() {
        assert!(pool.segment(s).unwrap().state.is_swapped_out());
        swapped.push(s);
    }
    let st = pool.stats();
    assert_eq!(st.segments_swapped, swapped.len() as u64);
    assert_eq!(st.swap_outs, swapped.len() as u64);
    check_invariants(&pool, &mem, &store);
    let mut out = [0_u32; 1024];
    for (h, p) in handles.iter().zip(&pages) {
        pool.load(*h, &mut out).unwrap();
        assert_eq!(&out, p);
    }
    assert_eq!(pool.stats().segments_swapped, 0);
    assert_eq!(pool.stats().swap_ins, swapped.len() as u64);
    check_invariants(&pool, &mem, &store);
}

#[test]
fn pages_freed_while_swapped_out_are_dropped_on_swap_in() {
    let (pool, mem, store) = pool(small());
    let pages: Vec<[u32; 1024]> = (0..20).map(|i| random_page(i as u64)).collect();
    let handles: Vec<Handle> = pages.iter().map(|p| pool.store(p).unwrap()).collect();
    let seg = pool.swap_out_oldest().unwrap().unwrap();
    // Free some pages of the swapped-out segment: it becomes sparse.
    pool.free(handles[0]).unwrap();
    pool.free(handles[3]).unwrap();
    assert_eq!(
        pool.segment(seg).unwrap().state,
        SegmentState::SwappedOutSparse
    );
    // Reuse the freed handle-table entries for new pages elsewhere.
    let extra: Vec<Handle> = (0..2)
        .map(|i| pool.store(&random_page(100 + i)).unwrap())
        .collect();
    pool.swap_in(seg).unwrap();
    let info = pool.segment(seg).unwrap();
    assert_eq!(info.state, SegmentState::Sealed);
    assert_eq!(info.live_slots, 13, "15 pages, 2 freed while out");
    check_invariants(&pool, &mem, &store);
    let mut out = [0_u32; 1024];
    for (i, h) in handles.iter().enumerate() {
        if i == 0 || i == 3 {
            assert_eq!(pool.load(*h, &mut out), Err(PoolError::InvalidHandle(*h)));
        } else {
            pool.load(*h, &mut out).unwrap();
            assert_eq!(out, pages[i]);
        }
    }
    for (i, h) in extra.iter().enumerate() {
        pool.load(*h, &mut out).unwrap();
        assert_eq!(out, random_page(100 + i as u64));
    }
    // Freeing every page of a swapped-out segment frees its store record without a swap-in.
    let seg2 = pool.swap_out_oldest().unwrap().unwrap();
    let ins = pool.stats().swap_ins;
    for (i, h) in handles.iter().enumerate() {
        if i != 0 && i != 3 {
            pool.free(*h).unwrap();
        }
    }
    assert_eq!(pool.segment(seg2), None);
    assert_eq!(pool.stats().swap_ins, ins);
    check_invariants(&pool, &mem, &store);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "fills segments page by page: minutes under miri; the memory paths it uses run in the other tests"
)]
fn a_failed_swap_out_leaves_the_segment_in_core() {
    let mem = CountingMemory::new();
    let store = Arc::new(MemoryStore::with_limit(0));
    let pool = Pool::new(small(), hybrid(), mem.clone(), Arc::clone(&store)).unwrap();
    let pages: Vec<[u32; 1024]> = (0..20).map(|i| random_page(i as u64)).collect();
    let handles: Vec<Handle> = pages.iter().map(|p| pool.store(p).unwrap()).collect();
    pool.free(handles[1]).unwrap();
    assert_eq!(
        pool.swap_out_oldest(),
        Err(PoolError::Store(StoreError::NoSpace))
    );
    assert_eq!(pool.segment(0).unwrap().state, SegmentState::Sealed);
    let mut out = [0_u32; 1024];
    for (i, h) in handles.iter().enumerate().filter(|(i, _)| *i != 1) {
        pool.load(*h, &mut out).unwrap();
        assert_eq!(out, pages[i]);
    }
    check_invariants(&pool, &mem, &store);
    // A pool without a store cannot swap either.
    let no_swap = Pool::new(small(), hybrid(), CountingMemory::new(), NoStore).unwrap();
    for i in 0..16 {
        no_swap.store(&random_page(i as u64)).unwrap();
    }
    assert_eq!(
        no_swap.swap_out_oldest(),
        Err(PoolError::Store(StoreError::Unsupported))
    );
}

#[test]
fn a_corrupted_swapped_out_segment_is_an_error_not_data() {
    let (pool, mem, store) = pool(small());
    let pages: Vec<[u32; 1024]> = (0..20).map(|i| random_page(i as u64)).collect();
    let handles: Vec<Handle> = pages.iter().map(|p| pool.store(p).unwrap()).collect();
    let seg = pool.swap_out_oldest().unwrap().unwrap();
    let key = store.keys()[0];
    for offset in [0_usize, 100, 5000] {
        store.with_record_mut(key, |_, image| image[offset % image.len()] ^= 0x10);
        let mut out = [0_u32; 1024];
        assert_eq!(
            pool.load(handles[0], &mut out),
            Err(PoolError::SegmentCorrupt { segment: seg })
        );
        assert_eq!(
            pool.swap_in(seg),
            Err(PoolError::SegmentCorrupt { segment: seg })
        );
        assert!(pool.segment(seg).unwrap().state.is_swapped_out());
        check_invariants(&pool, &mem, &store);
        // Undo the damage: the segment reads back fine.
        store.with_record_mut(key, |_, image| image[offset % image.len()] ^= 0x10);
    }
    // A header that names another segment is refused too.
    store.with_record_mut(key, |h, _| h.segment += 1);
    assert_eq!(
        pool.swap_in(seg),
        Err(PoolError::SegmentCorrupt { segment: seg })
    );
    store.with_record_mut(key, |h, _| h.segment -= 1);
    assert!(pool.stats().corruptions >= 4);
    pool.swap_in(seg).unwrap();
    let mut out = [0_u32; 1024];
    for (h, p) in handles.iter().zip(&pages) {
        pool.load(*h, &mut out).unwrap();
        assert_eq!(&out, p);
    }
    check_invariants(&pool, &mem, &store);
}

#[test]
fn a_stray_write_into_an_in_core_slot_is_an_error_not_data() {
    let (pool, mem, store) = pool(small());
    let a = pool.store(&structured_page(1)).unwrap();
    // The next buffer write (storing b) first flips a byte of a's data.
    mem.arm_stray_write(10, 0x01);
    let b = pool.store(&structured_page(2)).unwrap();
    let mut out = [0_u32; 1024];
    assert_eq!(pool.load(a, &mut out), Err(PoolError::SlotCorrupt(a)));
    assert_ne!(out, structured_page(1));
    pool.load(b, &mut out).unwrap();
    assert_eq!(out, structured_page(2));
    assert_eq!(pool.take(a, &mut out), Err(PoolError::SlotCorrupt(a)));
    // The damaged page can still be freed.
    pool.free(a).unwrap();
    // A stray write into the slot directory (the last bytes of the buffer) is caught too:
    // c reuses a's slot 0, whose record is the last 16 bytes; flip a bit of its length.
    let c = pool.store(&structured_page(3)).unwrap();
    mem.arm_stray_write(64 * 1024 - 16 + 4, 0x40);
    let d = pool.store(&structured_page(4)).unwrap();
    assert_eq!(pool.load(c, &mut out), Err(PoolError::SlotCorrupt(c)));
    pool.load(d, &mut out).unwrap();
    assert_eq!(out, structured_page(4));
    assert!(pool.stats().corruptions >= 3);
    check_invariants(&pool, &mem, &store);
}

#[test]
fn stale_double_freed_and_forged_handles_are_refused() {
    let (pool, _mem, _store) = pool(small());
    let a = pool.store(&structured_page(1)).unwrap();
    pool.free(a).unwrap();
    assert_eq!(pool.free(a), Err(PoolError::InvalidHandle(a)));
    let b = pool.store(&structured_page(2)).unwrap();
    let mut out = [0_u32; 1024];
    assert_eq!(pool.load(a, &mut out), Err(PoolError::InvalidHandle(a)));
    pool.load(b, &mut out).unwrap();
    for bits in [
        1_u64,
        u64::MAX,
        b.to_bits() ^ (1 << 63),
        b.to_bits() + (1 << 32),
    ] {
        let forged = Handle::from_bits(bits).unwrap();
        assert_eq!(
            pool.load(forged, &mut out),
            Err(PoolError::InvalidHandle(forged))
        );
        assert_eq!(pool.free(forged), Err(PoolError::InvalidHandle(forged)));
    }
    assert_eq!(pool.stats().pages_stored, 1);
}

#[test]
fn wrong_lengths_and_configurations_are_refused() {
    let (pool, _mem, _store) = pool(small());
    assert_eq!(
        pool.store(&[0; 512]),
        Err(PoolError::BadPageLength {
            expected: 1024,
            actual: 512
        })
    );
    let h = pool.store(&structured_page(0)).unwrap();
    assert_eq!(
        pool.load(h, &mut [0; 4096]),
        Err(PoolError::BadPageLength {
            expected: 1024,
            actual: 4096
        })
    );
    assert!(matches!(
        pool.store_with_scratch(&structured_page(0), &mut [0; 100]),
        Err(PoolError::ScratchTooSmall { .. })
    ));
    assert_eq!(pool.swap_in(77), Err(PoolError::BadSegment { segment: 77 }));
    for config in [
        small().max_slots(0),
        small().max_slots(1025),
        small().max_in_core_segments(0),
        small().max_pages(0),
        small().max_segments(0),
    ] {
        assert_eq!(
            Pool::new(config, hybrid(), CountingMemory::new(), NoStore).err(),
            Some(PoolError::BadConfig)
        );
    }
}

#[test]
fn sixteen_kib_pages_fit_256_kib_segments() {
    let codec = machvm_compressor::codec::Hybrid::new(PageSize::Size16K, VectorPolicy::Portable);
    let config = PoolConfig::new(SegmentSize::K256).max_in_core_segments(4);
    if codec.max_encoded_len_fits(config) {
        let pool = Pool::new(config, codec, CountingMemory::new(), NoStore).unwrap();
        let mut page = vec![0_u32; 4096];
        for (i, w) in page.iter_mut().enumerate() {
            *w = (i as u32).wrapping_mul(2_654_435_761);
        }
        let h = pool.store(&page).unwrap();
        let mut out = vec![0_u32; 4096];
        pool.load(h, &mut out).unwrap();
        assert_eq!(out, page);
    }
}

/// Whether a codec's largest output fits a slot (16-bit lengths).
trait Fits {
    fn max_encoded_len_fits(&self, config: PoolConfig) -> bool;
}

impl<C: machvm_compressor::codec::PageCodec> Fits for C {
    fn max_encoded_len_fits(&self, config: PoolConfig) -> bool {
        self.max_encoded_len() <= usize::from(u16::MAX)
            && self.max_encoded_len() + 16 <= config.segment_size.bytes()
    }
}

#[test]
fn a_pool_runs_without_a_heap_on_borrowed_tables_and_a_memory_region() {
    let mut region = vec![0_u8; 3 * 64 * 1024];
    let memory: SliceMemory<'_, 3> = SliceMemory::new(&mut region, 64 * 1024);
    let mut segments: [SegmentEntry<&mut [u8]>; 4] = [const { SegmentEntry::new() }; 4];
    let mut handles = [HandleSlot::EMPTY; 64];
    let tables = Tables::borrowed(&mut segments, &mut handles);
    let config = PoolConfig::new(SegmentSize::K64).max_in_core_segments(3);
    let pool = Pool::with_tables(config, hybrid(), &memory, NoStore, tables).unwrap();
    let hs: Vec<Handle> = (0..n(40))
        .map(|i| pool.store(&random_page(i as u64)).unwrap())
        .collect();
    assert_eq!(
        memory.free_chunks(),
        3 - pool.stats().segments_in_core as usize
    );
    let mut out = [0_u32; 1024];
    for (i, h) in hs.iter().enumerate() {
        pool.take(*h, &mut out).unwrap();
        assert_eq!(out, random_page(i as u64));
    }
    drop(pool);
    assert_eq!(memory.free_chunks(), 3);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "fills segments page by page: minutes under miri; the memory paths it uses run in the other tests"
)]
fn dropping_the_pool_returns_every_buffer_and_store_record() {
    let (pool, mem, store) = pool(small());
    for i in 0..n(40).max(16) {
        pool.store(&random_page(i as u64)).unwrap();
    }
    pool.swap_out_oldest().unwrap();
    assert!(mem.outstanding() > 0 && !store.is_empty());
    drop(pool);
    assert_eq!(mem.outstanding(), 0);
    assert!(store.is_empty());
}

#[test]
fn raw_pages_are_counted_as_incompressible() {
    let (pool, _mem, _store) = pool(small());
    pool.store(&random_page(1)).unwrap();
    pool.store(&structured_page(1)).unwrap();
    let st = pool.stats();
    assert_eq!(st.incompressible_pages, 1);
    assert_eq!(st.stores, 2);
    let _ = CodecKind::Raw;
}

#[test]
#[cfg_attr(
    miri,
    ignore = "fills segments page by page: minutes under miri; the memory paths it uses run in the other tests"
)]
fn threads_store_load_and_free_concurrently() {
    let (pool, mem, store) = pool(small().max_in_core_segments(16));
    let pool = Arc::new(pool);
    let threads: Vec<_> = (0..4_u64)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let mut out = [0_u32; 1024];
                for round in 0..n(30) as u64 {
                    let seed = t * 1000 + round;
                    let page = if round % 3 == 0 {
                        single_page(seed as u32 % 4)
                    } else {
                        structured_page(seed)
                    };
                    let h = pool.store(&page).unwrap();
                    if round % 7 == 0 {
                        pool.compact_minor();
                        pool.compact_major();
                    }
                    pool.load(h, &mut out).unwrap();
                    assert_eq!(out, page);
                    if round % 2 == 0 {
                        pool.take(h, &mut out).unwrap();
                        assert_eq!(out, page);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    check_invariants(&pool, &mem, &store);
}
