//! Storage of the pool's metadata tables: borrowed from the caller, or owned on the heap.

use core::ops::{Deref, DerefMut};

#[cfg(feature = "alloc")]
use alloc::boxed::Box;

/// A table the pool keeps its metadata in: a caller's slice (no heap needed) or, with the
/// `alloc` feature, a boxed slice.
#[derive(Debug)]
pub(crate) enum Table<'a, T> {
    /// Storage borrowed from the caller for the pool's lifetime.
    Borrowed(&'a mut [T]),
    /// Storage on the heap.
    #[cfg(feature = "alloc")]
    Owned(Box<[T]>),
}

impl<T> Deref for Table<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Self::Borrowed(s) => s,
            #[cfg(feature = "alloc")]
            Self::Owned(b) => b,
        }
    }
}

impl<T> DerefMut for Table<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Self::Borrowed(s) => s,
            #[cfg(feature = "alloc")]
            Self::Owned(b) => b,
        }
    }
}
