//! Host integration tests across the machvm crates.
//!
//! The tests live in `tests/tests/`; this library holds what they share: a deterministic
//! generator, the workloads of the machine simulator (`machvm::sim`) with their flat model,
//! and an in-memory anonymous pager. The QEMU test kernels are under `tests/boot/`.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

pub mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use machvm::AnonymousPager;
use machvm_vm_object::{InMemoryPager, ObjectError, ObjectRef};

/// An anonymous pager that keeps evicted pages in memory (one `InMemoryPager` per object),
/// for simulations that need a pager but not the compressor.
#[derive(Debug, Default)]
pub struct MemPagers {
    made: AtomicU64,
}

impl MemPagers {
    /// Pagers made so far (one per object paged out).
    pub fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }
}

impl AnonymousPager for MemPagers {
    fn attach(&self, object: &ObjectRef) -> Result<(), ObjectError> {
        self.made.fetch_add(1, Ordering::Relaxed);
        object.set_pager(Arc::new(InMemoryPager::new()))
    }
}

/// A small deterministic pseudo-random generator (SplitMix64) so that multi-threaded tests are
/// reproducible per seed without pulling a RNG crate into every test.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Creates a generator from `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Returns the next 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a value in `0..bound` (`bound` must be non-zero; 0 gives 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64().checked_rem(bound).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn splitmix_is_deterministic_per_seed() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = SplitMix64::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = SplitMix64::new(7);
        assert_eq!(a, (0..4).map(|_| r.next_u64()).collect::<Vec<_>>());
        assert_ne!(SplitMix64::new(8).next_u64(), a[0]);
    }

    #[test]
    fn below_stays_in_bounds() {
        let mut r = SplitMix64::new(1);
        assert!((0..1000).all(|_| r.below(3) < 3));
        assert_eq!(r.below(0), 0);
    }
}
