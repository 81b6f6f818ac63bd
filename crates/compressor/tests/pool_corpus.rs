//! Every page of the shared corpus round-trips through the pool, in core and after a trip
//! through swap, and the pool's statistics agree with the pages stored.

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

use machvm_compressor::codec::{Encoded, PageCodec};
use machvm_compressor::pool::{Handle, PoolConfig, SegmentSize};
use pool_support::{check_invariants, corpus, hybrid, pool};

#[test]
fn every_corpus_page_round_trips_through_the_pool() {
    let Some(pages) = corpus() else {
        return;
    };
    let config = PoolConfig::new(SegmentSize::K256)
        .max_in_core_segments(256)
        .max_segments(512)
        .max_pages(pages.len());
    let (pool, mem, store) = pool(config);
    let handles: Vec<Handle> = pages.iter().map(|p| pool.store(p).unwrap()).collect();
    check_invariants(&pool, &mem, &store);
    let st = pool.stats();
    assert_eq!(st.pages_stored, pages.len() as u64);
    let singles = pages
        .iter()
        .filter(|p| {
            let (a, b) = (p[0], p[1]);
            p.chunks_exact(2).all(|w| w[0] == a && w[1] == b)
        })
        .count() as u64;
    assert_eq!(st.single_value_hits + st.single_value_misses, singles);
    // The compressed bytes are what the codec writes for each page (whatever the corpus):
    // a single-value page costs nothing in the value table and its 8-byte value in a segment.
    let codec = hybrid();
    let mut buf = vec![0_u8; codec.max_encoded_len()];
    let codec_bytes: u64 = pages
        .iter()
        .map(|p| match codec.compress(p, &mut buf).unwrap() {
            Encoded::Stored { len, .. } => len as u64,
            _ => 0,
        })
        .sum();
    assert_eq!(
        st.compressed_bytes,
        codec_bytes + 8 * st.single_value_misses,
        "{st:?}"
    );
    assert_eq!(st.input_bytes, 4096 * pages.len() as u64);
    eprintln!(
        "corpus: {} pages, ratio {:.2}, efficiency {:.2}, {} segments, fragmentation {:.1} %",
        st.pages_stored,
        st.compression_ratio(),
        st.efficiency(),
        st.segments_in_core,
        st.fragmentation_percent()
    );
    let mut out = [0_u32; 1024];
    for (h, p) in handles.iter().zip(&pages) {
        pool.load(*h, &mut out).unwrap();
        assert_eq!(&out, p);
    }
    // Swap every sealed segment out, then read everything back through swap-in.
    while pool.swap_out_oldest().unwrap().is_some() {}
    check_invariants(&pool, &mem, &store);
    for (i, (h, p)) in handles.iter().zip(&pages).enumerate() {
        if i % 2 == 0 {
            pool.take(*h, &mut out).unwrap();
        } else {
            pool.load(*h, &mut out).unwrap();
        }
        assert_eq!(&out, p);
    }
    pool.compact_major();
    check_invariants(&pool, &mem, &store);
    for (h, p) in handles.iter().zip(&pages).skip(1).step_by(2) {
        pool.take(*h, &mut out).unwrap();
        assert_eq!(&out, p);
    }
    assert_eq!(pool.stats().pages_stored, 0);
    check_invariants(&pool, &mem, &store);
}
