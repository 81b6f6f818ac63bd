//! Property test: random operation sequences on a small pool against a plain model.
//!
//! Properties, checked after every operation:
//! - every live handle loads exactly the page stored under it, whatever compaction and swap
//!   did in between (handles survive both);
//! - freed handles are refused; a failed operation changes neither the model nor the
//!   statistics;
//! - accounting: segments and buffers in core match, store records match swapped-out
//!   segments, pages stored = slot pages + single-value pages, compressed bytes = sum of live
//!   slot bytes.

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

use std::collections::HashMap;

use machvm_compressor::pool::{Handle, PoolConfig, PoolError, SegmentSize};
use pool_support::{check_invariants, pool, random_page, single_page, structured_page};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Store a page of kind `kind % 4` made from `seed`.
    Store {
        kind: u8,
        seed: u64,
    },
    /// Load the `pick`-th live handle (modulo the count).
    Load {
        pick: usize,
    },
    /// Free the `pick`-th live handle.
    Free {
        pick: usize,
    },
    /// Take the `pick`-th live handle.
    Take {
        pick: usize,
    },
    CompactMinor,
    CompactMajor,
    SwapOutOldest,
    /// Swap in segment `segment % 8`.
    SwapIn {
        segment: u32,
    },
    /// Use a handle that was freed.
    Stale {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), any::<u64>()).prop_map(|(kind, seed)| Op::Store { kind, seed }),
        4 => any::<usize>().prop_map(|pick| Op::Load { pick }),
        4 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Take { pick }),
        1 => Just(Op::CompactMinor),
        1 => Just(Op::CompactMajor),
        2 => Just(Op::SwapOutOldest),
        1 => any::<u32>().prop_map(|segment| Op::SwapIn { segment }),
        1 => any::<usize>().prop_map(|pick| Op::Stale { pick }),
    ]
}

fn page(kind: u8, seed: u64) -> [u32; 1024] {
    match kind % 4 {
        0 => random_page(seed),
        1 => structured_page(seed),
        // Few distinct values, so table entries are shared.
        2 => single_page((seed % 5) as u32),
        _ => single_page(seed as u32),
    }
}

fn pick<T: Copy>(items: &[T], i: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[i % items.len()])
}

fn run(ops: &[Op]) {
    let config = PoolConfig::new(SegmentSize::K64)
        .max_in_core_segments(3)
        .max_segments(6)
        .max_pages(64);
    let (pool, mem, store) = pool(config);
    let mut model: HashMap<Handle, [u32; 1024]> = HashMap::new();
    let mut order: Vec<Handle> = Vec::new();
    let mut freed: Vec<Handle> = Vec::new();
    let mut out = [0_u32; 1024];
    for op in ops {
        let before = pool.stats();
        match *op {
            Op::Store { kind, seed } => {
                let p = page(kind, seed);
                match pool.store(&p) {
                    Ok(h) => {
                        assert!(model.insert(h, p).is_none(), "handle issued twice");
                        order.push(h);
                    }
                    Err(PoolError::Exhausted) => {
                        assert_eq!(pool.stats(), before, "failed store changed the pool");
                    }
                    Err(e) => panic!("store: {e}"),
                }
            }
            Op::Load { pick: i } | Op::Take { pick: i } => {
                let Some(h) = pick(&order, i) else { continue };
                let take = matches!(op, Op::Take { .. });
                let r = if take {
                    pool.take(h, &mut out)
                } else {
                    pool.load(h, &mut out)
                };
                match r {
                    Ok(()) => {
                        assert_eq!(&out, &model[&h], "{h} loaded another page");
                        if take {
                            model.remove(&h);
                            order.retain(|x| *x != h);
                            freed.push(h);
                        }
                    }
                    // Swap-in of its segment needs room in core.
                    Err(PoolError::Exhausted) => {}
                    Err(e) => panic!("load {h}: {e}"),
                }
            }
            Op::Free { pick: i } => {
                let Some(h) = pick(&order, i) else { continue };
                pool.free(h).unwrap();
                model.remove(&h);
                order.retain(|x| *x != h);
                freed.push(h);
            }
            Op::CompactMinor => {
                let r = pool.compact_minor();
                assert_eq!(r.skipped_corrupt, 0);
            }
            Op::CompactMajor => {
                let r = pool.compact_major();
                assert_eq!(r.skipped_corrupt, 0);
            }
            Op::SwapOutOldest => {
                pool.swap_out_oldest().unwrap();
            }
            Op::SwapIn { segment } => match pool.swap_in(segment % 8) {
                Ok(()) | Err(PoolError::BadSegment { .. } | PoolError::Exhausted) => {}
                Err(e) => panic!("swap in: {e}"),
            },
            Op::Stale { pick: i } => {
                let Some(h) = pick(&freed, i) else { continue };
                if !model.contains_key(&h) {
                    assert_eq!(pool.load(h, &mut out), Err(PoolError::InvalidHandle(h)));
                    assert_eq!(pool.free(h), Err(PoolError::InvalidHandle(h)));
                }
            }
        }
        check_invariants(&pool, &mem, &store);
        assert_eq!(pool.stats().pages_stored, model.len() as u64);
    }
    // Every page is still there (swapping segments in as room allows).
    for (h, p) in &model {
        loop {
            match pool.load(*h, &mut out) {
                Ok(()) => break,
                Err(PoolError::Exhausted) => {
                    assert!(
                        pool.swap_out_oldest().unwrap().is_some(),
                        "no room to swap in"
                    );
                }
                Err(e) => panic!("final load {h}: {e}"),
            }
        }
        assert_eq!(&out, p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 96 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn pool_matches_the_model(ops in prop::collection::vec(op(), 1..if cfg!(miri) { 12 } else { 160 })) {
        run(&ops);
    }
}
