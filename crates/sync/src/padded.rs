//! [`CachePadded`]: a value alone on its own cache line(s).

use core::fmt;
use core::ops::{Deref, DerefMut};

/// The alignment, in bytes, that [`CachePadded`] (and so every [`PerCpu`](crate::PerCpu) slot)
/// uses to keep values written by different CPUs off the same cache line.
///
/// 128 bytes on every target: `x86_64` lines are 64 bytes but the spatial prefetcher pulls in
/// pairs of lines (Intel 64 and IA-32 Optimization Reference Manual, "spatial prefetcher"), and
/// several aarch64 cores (Apple M-series, Neoverse parts with 128-byte prefetch granules) use
/// 128-byte lines. Padding to 128 costs memory only, never correctness.
///
/// # Examples
///
/// ```
/// use machvm_sync::{CACHE_LINE, CachePadded};
///
/// assert_eq!(align_of::<CachePadded<u8>>(), CACHE_LINE);
/// ```
pub const CACHE_LINE: usize = 128;

/// Wraps a value so it starts on a [`CACHE_LINE`] boundary and no other value shares its lines.
///
/// Use it for data that different CPUs write often (per-CPU counters, shootdown mailboxes, the
/// head and tail of a queue), so one CPU's writes do not invalidate the line another CPU is
/// using ("false sharing"). The size is rounded up to a multiple of [`CACHE_LINE`].
///
/// # Examples
///
/// ```
/// use machvm_sync::{CACHE_LINE, CachePadded};
/// use machvm_sync::atomic::{AtomicUsize, Ordering};
///
/// struct Queue {
///     head: CachePadded<AtomicUsize>,
///     tail: CachePadded<AtomicUsize>,
/// }
///
/// let q = Queue { head: CachePadded::new(AtomicUsize::new(0)), tail: CachePadded::new(AtomicUsize::new(0)) };
/// q.tail.fetch_add(1, Ordering::Relaxed); // derefs to the atomic
/// assert_eq!(size_of::<CachePadded<u64>>(), CACHE_LINE);
/// ```
#[repr(C, align(128))]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CachePadded<T> {
    value: T,
}

// Keeps the `repr(align(..))` literal above and the documented constant in step.
const _: () = assert!(align_of::<CachePadded<u8>>() == CACHE_LINE);

impl<T> CachePadded<T> {
    /// Wraps `value`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::CachePadded;
    ///
    /// let padded = CachePadded::new(1_u32);
    /// assert_eq!(*padded, 1);
    /// ```
    #[inline]
    #[must_use]
    pub const fn new(value: T) -> Self {
        Self { value }
    }

    /// Unwraps the value.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::CachePadded;
    ///
    /// assert_eq!(CachePadded::new(3).into_inner(), 3);
    /// ```
    #[inline]
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for CachePadded<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> From<T> for CachePadded<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: fmt::Debug> fmt::Debug for CachePadded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CachePadded").field(&self.value).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{CACHE_LINE, CachePadded};

    #[test]
    fn padded_values_are_aligned_and_sized_to_the_cache_line() {
        assert_eq!(align_of::<CachePadded<u8>>(), CACHE_LINE);
        assert_eq!(size_of::<CachePadded<u8>>(), CACHE_LINE);
        assert_eq!(size_of::<CachePadded<[u8; 129]>>(), 2 * CACHE_LINE);
        let pair = [CachePadded::new(0_u8), CachePadded::new(1_u8)];
        let a = (&raw const pair[0]).addr();
        let b = (&raw const pair[1]).addr();
        assert_eq!(a % CACHE_LINE, 0);
        assert_eq!(b - a, CACHE_LINE);
    }
}
