//! Pool operation sequences against a model: every load returns the page stored, failed
//! operations change nothing, freed handles are refused, and damage injected into swapped-out
//! segments is reported, never returned as data.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use machvm_compressor::codec::{Hybrid, PageSize, VectorPolicy};
use machvm_compressor::pool::{
    Handle, HeapMemory, MemoryStore, Pool, PoolConfig, PoolError, SegmentSize,
};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PageKind {
    /// Random words (stored raw).
    Noise,
    /// Small integers with a stride (compresses).
    Ints,
    /// One repeated 32-bit value.
    Single,
    /// Zeros with a few words set.
    Sparse,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Store {
        kind: PageKind,
        seed: u32,
    },
    Load {
        pick: u8,
    },
    Free {
        pick: u8,
    },
    Take {
        pick: u8,
    },
    Stale {
        pick: u8,
    },
    CompactMinor,
    CompactMajor,
    SwapOutOldest,
    SwapIn {
        segment: u8,
    },
    /// Flips a byte of a swapped-out segment's image (then loads from it must fail until it
    /// is flipped back).
    Damage {
        record: u8,
        offset: u16,
        xor: u8,
    },
}

fn page(kind: PageKind, seed: u32) -> [u32; 1024] {
    let mut p = [0_u32; 1024];
    let mut x = seed | 1;
    for (i, w) in p.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *w = match kind {
            PageKind::Noise => x,
            PageKind::Ints => (i as u32 * (seed & 7)) & 0xff,
            PageKind::Single => seed % 3,
            PageKind::Sparse => {
                if i % 97 == (seed as usize % 97) {
                    x
                } else {
                    0
                }
            }
        };
    }
    p
}

fuzz_target!(|ops: Vec<Op>| {
    let config = PoolConfig::new(SegmentSize::K64)
        .max_in_core_segments(3)
        .max_segments(6)
        .max_pages(48);
    let store = Arc::new(MemoryStore::new());
    let pool = Pool::new(
        config,
        Hybrid::new(PageSize::Size4K, VectorPolicy::Portable),
        HeapMemory::new(),
        Arc::clone(&store),
    )
    .unwrap();
    let mut model: HashMap<Handle, [u32; 1024]> = HashMap::new();
    let mut live: Vec<Handle> = Vec::new();
    let mut freed: Vec<Handle> = Vec::new();
    // Damage currently applied: (key, offset, xor).
    let mut damage: Vec<(machvm_compressor::pool::SwapKey, usize, u8)> = Vec::new();
    let mut out = [0_u32; 1024];
    for op in ops.into_iter().take(200) {
        let before = pool.stats();
        match op {
            Op::Store { kind, seed } => {
                let p = page(kind, seed);
                match pool.store(&p) {
                    Ok(h) => {
                        assert!(model.insert(h, p).is_none());
                        live.push(h);
                    }
                    Err(PoolError::Exhausted) => assert_eq!(pool.stats(), before),
                    Err(e) => panic!("store: {e}"),
                }
            }
            Op::Load { pick } | Op::Take { pick } => {
                if live.is_empty() {
                    continue;
                }
                let h = live[pick as usize % live.len()];
                let take = matches!(op, Op::Take { .. });
                let r = if take {
                    pool.take(h, &mut out)
                } else {
                    pool.load(h, &mut out)
                };
                match r {
                    Ok(()) => {
                        assert_eq!(out, model[&h]);
                        if take {
                            model.remove(&h);
                            live.retain(|x| *x != h);
                            freed.push(h);
                        }
                    }
                    Err(PoolError::Exhausted) => {}
                    Err(PoolError::SegmentCorrupt { .. }) => {
                        assert!(!damage.is_empty(), "corruption reported without damage");
                    }
                    Err(e) => panic!("load: {e}"),
                }
            }
            Op::Free { pick } => {
                if live.is_empty() {
                    continue;
                }
                let h = live.remove(pick as usize % live.len());
                pool.free(h).unwrap();
                model.remove(&h);
                freed.push(h);
            }
            Op::Stale { pick } => {
                if freed.is_empty() {
                    continue;
                }
                let h = freed[pick as usize % freed.len()];
                assert_eq!(pool.load(h, &mut out), Err(PoolError::InvalidHandle(h)));
                assert_eq!(pool.free(h), Err(PoolError::InvalidHandle(h)));
            }
            Op::CompactMinor => {
                assert_eq!(pool.compact_minor().skipped_corrupt, 0);
            }
            Op::CompactMajor => {
                assert_eq!(pool.compact_major().skipped_corrupt, 0);
            }
            Op::SwapOutOldest => {
                pool.swap_out_oldest().unwrap();
            }
            Op::SwapIn { segment } => match pool.swap_in(u32::from(segment % 8)) {
                Ok(()) | Err(PoolError::BadSegment { .. } | PoolError::Exhausted) => {}
                Err(PoolError::SegmentCorrupt { .. }) => assert!(!damage.is_empty()),
                Err(e) => panic!("swap in: {e}"),
            },
            Op::Damage {
                record,
                offset,
                xor,
            } => {
                let keys = store.keys();
                if keys.is_empty() || xor == 0 {
                    continue;
                }
                let key = keys[record as usize % keys.len()];
                let applied = store.with_record_mut(key, |_, image| {
                    let at = offset as usize % image.len();
                    image[at] ^= xor;
                    at
                });
                if let Some(at) = applied {
                    damage.push((key, at, xor));
                }
            }
        }
        // Undo all damage once a store record it was in is gone (freed or swapped in: a
        // swap-in of a damaged record always fails, so the record survives until freed).
        damage.retain(|(key, _, _)| store.keys().contains(key));
        assert_eq!(pool.stats().pages_stored, model.len() as u64);
    }
    // Repair the store, then every page must load.
    for (key, at, xor) in damage.drain(..).rev() {
        store.with_record_mut(key, |_, image| image[at] ^= xor);
    }
    for (h, p) in &model {
        loop {
            match pool.load(*h, &mut out) {
                Ok(()) => break,
                Err(PoolError::Exhausted) => {
                    assert!(pool.swap_out_oldest().unwrap().is_some());
                }
                Err(e) => panic!("final load: {e}"),
            }
        }
        assert_eq!(&out, p);
    }
});
