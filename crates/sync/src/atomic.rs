//! Atomic types and fences: `core::sync::atomic` normally, `loom::sync::atomic` under `--cfg loom`.
//!
//! Every machvm crate takes its atomics from here, never from `core` directly, so that a
//! `--cfg loom` build model-checks the real code. The re-exported items have the same names and
//! methods in both modes; what differs is listed below.
//!
//! # `const` construction
//!
//! Outside loom the constructors are `const fn` (they are `core`'s), so atomics can sit in
//! `static`s. Loom's constructors are not `const` (each loom atomic registers itself with the
//! running model), so code that must also build under loom creates its atomics at run time,
//! inside the structure that owns them, and hands out `&` references. For a value that really is
//! global in the kernel, keep the `static` behind `#[cfg(not(loom))]` and give the loom build a
//! constructor that the model calls:
//!
//! ```
//! use machvm_sync::atomic::{AtomicU64, Ordering};
//!
//! /// A generation counter owned by its subsystem instead of a `static`.
//! pub struct Generation(AtomicU64);
//!
//! impl Generation {
//!     pub fn new() -> Self {
//!         Self(AtomicU64::new(0))
//!     }
//!
//!     pub fn bump(&self) -> u64 {
//!         // Relaxed: the counter orders nothing else; readers only need a unique value.
//!         self.0.fetch_add(1, Ordering::Relaxed)
//!     }
//! }
//!
//! // Outside loom the same type can also be a `static`:
//! #[cfg(not(loom))]
//! static GLOBAL: AtomicU64 = AtomicU64::new(0);
//!
//! let g = Generation::new();
//! assert_eq!(g.bump(), 0);
//! assert_eq!(g.bump(), 1);
//! # #[cfg(not(loom))]
//! # assert_eq!(GLOBAL.load(Ordering::Relaxed), 0);
//! ```
//!
//! # Other differences under loom
//!
//! - Loom atomics are larger than a machine word and are not `repr(transparent)`; do not
//!   transmute or share them with hardware.
//! - Only the operations loom implements are available in both modes (loads, stores, swaps,
//!   compare-exchange, `fetch_*`, `get_mut`, `into_inner`); `as_ptr` and friends are not.
//!
//! # Examples
//!
//! Publishing a value with a Release store and an Acquire load:
//!
//! ```
//! use machvm_sync::atomic::{AtomicBool, AtomicUsize, Ordering};
//!
//! let data = AtomicUsize::new(0);
//! let ready = AtomicBool::new(false);
//!
//! data.store(42, Ordering::Relaxed);
//! // Release: orders the store to `data` above before the flag becomes visible.
//! ready.store(true, Ordering::Release);
//!
//! // Acquire: pairs with the Release store, so the `data` store is visible once `ready` is.
//! if ready.load(Ordering::Acquire) {
//!     assert_eq!(data.load(Ordering::Relaxed), 42);
//! }
//! ```

#[cfg(not(loom))]
pub use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(loom)]
pub use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{AtomicBool, AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize};
    use super::{Ordering, fence};

    #[test]
    fn reexported_atomics_load_what_was_stored() {
        let b = AtomicBool::new(false);
        let u8_ = AtomicU8::new(1);
        let u16_ = AtomicU16::new(2);
        let u32_ = AtomicU32::new(3);
        let u64_ = AtomicU64::new(4);
        let us = AtomicUsize::new(5);
        let mut target = 7_u32;
        let p = AtomicPtr::new(core::ptr::null_mut());

        b.store(true, Ordering::Release);
        u8_.fetch_add(1, Ordering::Relaxed);
        u16_.fetch_add(1, Ordering::Relaxed);
        u32_.fetch_add(1, Ordering::Relaxed);
        u64_.fetch_add(1, Ordering::Relaxed);
        us.fetch_add(1, Ordering::Relaxed);
        p.store(&raw mut target, Ordering::Release);
        fence(Ordering::SeqCst);

        assert!(b.load(Ordering::Acquire));
        assert_eq!(u8_.load(Ordering::Relaxed), 2);
        assert_eq!(u16_.load(Ordering::Relaxed), 3);
        assert_eq!(u32_.load(Ordering::Relaxed), 4);
        assert_eq!(u64_.load(Ordering::Relaxed), 5);
        assert_eq!(us.load(Ordering::Relaxed), 6);
        assert_eq!(p.load(Ordering::Acquire), &raw mut target);
    }

    #[test]
    fn atomics_are_const_constructible_outside_loom() {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        COUNTER.fetch_add(1, Ordering::Relaxed);
        assert!(COUNTER.load(Ordering::Relaxed) >= 1);
    }
}
