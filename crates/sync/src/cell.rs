//! [`UnsafeCell`] with loom's closure-based access API in both modes.

use core::fmt;

/// An interior-mutability cell whose accesses loom can check.
///
/// Outside loom this is a `repr(transparent)` wrapper around [`core::cell::UnsafeCell`] and every
/// method compiles down to the bare pointer access. Under `--cfg loom` it wraps
/// `loom::cell::UnsafeCell`, which records each [`with`](Self::with) (a read) and
/// [`with_mut`](Self::with_mut) (a write) and fails the model when a write can race with any
/// other access to the same cell, i.e. when the accesses are not ordered by happens-before.
///
/// The API is loom's: instead of handing out a raw pointer that lives arbitrarily long (which
/// loom could not track), the pointer is passed to a closure and the access lasts exactly as long
/// as the closure runs.
///
/// # Safety contract
///
/// [`with`](Self::with) and [`with_mut`](Self::with_mut) are safe to call; dereferencing the
/// pointer they pass is `unsafe`, and the dereference is sound only if, for the duration of the
/// closure:
///
/// - through the `*mut T` of `with_mut`: no other access (read or write, from any thread or from
///   a re-entrant call) to the value happens;
/// - through the `*const T` of `with`: no write to the value happens (other reads may);
/// - the pointer, and any reference made from it, does not escape the closure.
///
/// The type, like [`core::cell::UnsafeCell`], is `Send` when `T: Send` and never `Sync`; the
/// structure that owns the cell decides, with an `unsafe impl Sync` and its own invariant, how
/// accesses are serialised (a lock bit, CPU ownership, an epoch, ...).
///
/// # Examples
///
/// ```
/// use machvm_sync::UnsafeCell;
///
/// let cell = UnsafeCell::new(1_u32);
/// // SAFETY: `cell` is local to this thread and no other access is live during the closure.
/// cell.with_mut(|p| unsafe { *p += 1 });
/// // SAFETY: no write to `cell` is live during the closure.
/// let v = cell.with(|p| unsafe { *p });
/// assert_eq!(v, 2);
/// assert_eq!(cell.into_inner(), 2);
/// ```
#[cfg_attr(not(loom), repr(transparent))]
pub struct UnsafeCell<T: ?Sized> {
    #[cfg(not(loom))]
    inner: core::cell::UnsafeCell<T>,
    #[cfg(loom)]
    inner: loom::cell::UnsafeCell<T>,
}

impl<T> UnsafeCell<T> {
    /// Creates a cell holding `value`.
    ///
    /// `const` outside loom only: loom's cell registers itself with the running model.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::UnsafeCell;
    ///
    /// let cell = UnsafeCell::new([0_u8; 4]);
    /// assert_eq!(cell.into_inner(), [0; 4]);
    /// ```
    #[cfg(not(loom))]
    #[inline]
    #[must_use]
    pub const fn new(value: T) -> Self {
        Self {
            inner: core::cell::UnsafeCell::new(value),
        }
    }

    /// Creates a cell holding `value` (not `const` under loom).
    #[cfg(loom)]
    #[track_caller]
    #[must_use]
    pub fn new(value: T) -> Self {
        Self {
            inner: loom::cell::UnsafeCell::new(value),
        }
    }

    /// Consumes the cell and returns the value.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::UnsafeCell;
    ///
    /// assert_eq!(UnsafeCell::new(7).into_inner(), 7);
    /// ```
    #[inline]
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> UnsafeCell<T> {
    /// Calls `f` with a read-only pointer to the value; loom records a read for `f`'s duration.
    ///
    /// Calling this is safe; dereferencing the pointer inside `f` is sound only under the type's
    /// [safety contract](Self#safety-contract): no write to the value for the duration of `f`,
    /// and the pointer does not escape `f`.
    ///
    /// # Panics
    ///
    /// Under loom, panics (failing the model) when the read races with a write.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::UnsafeCell;
    ///
    /// let cell = UnsafeCell::new(5_u64);
    /// // SAFETY: nothing writes `cell` while the closure runs.
    /// let doubled = cell.with(|p| unsafe { *p } * 2);
    /// assert_eq!(doubled, 10);
    /// ```
    #[inline(always)]
    #[cfg_attr(loom, track_caller)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.inner.get())
        }
        #[cfg(loom)]
        {
            self.inner.with(f)
        }
    }

    /// Calls `f` with a mutable pointer to the value; loom records a write for `f`'s duration.
    ///
    /// Calling this is safe; dereferencing the pointer inside `f` is sound only under the type's
    /// [safety contract](Self#safety-contract): no other access to the value (from any thread,
    /// or re-entrantly from `f` itself) for the duration of `f`, and the pointer does not escape
    /// `f`.
    ///
    /// # Panics
    ///
    /// Under loom, panics (failing the model) when the write races with any other access.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::UnsafeCell;
    ///
    /// let cell = UnsafeCell::new(Vec::new());
    /// // SAFETY: `cell` is not shared, so nothing else accesses it during the closure.
    /// cell.with_mut(|p| unsafe { (&mut *p).push(1) });
    /// assert_eq!(cell.into_inner(), [1]);
    /// ```
    #[inline(always)]
    #[cfg_attr(loom, track_caller)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.inner.get())
        }
        #[cfg(loom)]
        {
            self.inner.with_mut(f)
        }
    }

    /// Returns a mutable reference to the value; `&mut self` proves no other access exists.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::UnsafeCell;
    ///
    /// let mut cell = UnsafeCell::new(1);
    /// *cell.get_mut() += 1;
    /// assert_eq!(cell.into_inner(), 2);
    /// ```
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn get_mut(&mut self) -> &mut T {
        #[cfg(not(loom))]
        {
            self.inner.get_mut()
        }
        #[cfg(loom)]
        {
            // SAFETY: `&mut self` is a unique borrow of the cell for the returned lifetime, so no
            // other access to the value can happen while the reference lives; loom is still told
            // about the access (as a write) for the instant the reference is made.
            self.inner.with_mut(|p| unsafe { &mut *p })
        }
    }
}

impl<T: Default> Default for UnsafeCell<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> From<T> for UnsafeCell<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: ?Sized> fmt::Debug for UnsafeCell<T> {
    /// Prints `UnsafeCell { .. }`: reading the value could race with a writer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsafeCell").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::UnsafeCell;
    use alloc::string::String;
    use std::format;

    #[test]
    fn with_mut_then_with_sees_the_write() {
        let cell = UnsafeCell::new(String::from("a"));
        // SAFETY: `cell` is local; no other access is live during the closure.
        cell.with_mut(|p| unsafe { (&mut *p).push('b') });
        // SAFETY: no write is live during the closure.
        let len = cell.with(|p| unsafe { (&*p).len() });
        assert_eq!(len, 2);
        assert_eq!(cell.into_inner(), "ab");
    }

    #[test]
    fn get_mut_gives_exclusive_access() {
        let mut cell = UnsafeCell::new(3_u8);
        *cell.get_mut() = 9;
        assert_eq!(cell.into_inner(), 9);
    }

    #[test]
    fn new_is_const_outside_loom() {
        let cell = const { UnsafeCell::new(4_u32) };
        assert_eq!(cell.into_inner(), 4);
    }

    #[test]
    fn debug_does_not_read_the_value() {
        let cell = UnsafeCell::new(1);
        assert_eq!(format!("{cell:?}"), "UnsafeCell { .. }");
    }

    #[test]
    fn cell_is_transparent_outside_loom() {
        assert_eq!(size_of::<UnsafeCell<u64>>(), size_of::<u64>());
        assert_eq!(align_of::<UnsafeCell<u64>>(), align_of::<u64>());
    }

    #[test]
    fn unsized_cell_is_accessible() {
        let cell: &UnsafeCell<[u8]> = &UnsafeCell::new([1_u8, 2, 3]);
        // SAFETY: no write is live during the closure.
        let sum: u32 = cell.with(|p| unsafe { (&*p).iter().map(|&b| u32::from(b)).sum() });
        assert_eq!(sum, 6);
    }
}
