//! [`RwLock`]: a spinning reader-writer lock outside loom, `loom::sync::RwLock` under loom.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

/// A reader-writer lock with no poisoning: many readers or one writer.
///
/// Outside loom this is [`spin::rwlock::RwLock`]: `read` and `write` spin until they can enter;
/// acquiring is an Acquire operation and releasing a Release operation, so a reader sees every
/// write made under earlier write locks. Spin's lock prefers readers: a steady stream of readers
/// can starve a writer, so keep read sections short. Under `--cfg loom` it is
/// `loom::sync::RwLock`, so models explore the interleavings.
///
/// As with [`Mutex`](crate::Mutex), the lock does not touch interrupts or preemption, is not
/// re-entrant (a thread holding a read lock that asks for the write lock deadlocks), and has no
/// poisoning.
///
/// # Examples
///
/// ```
/// use machvm_sync::RwLock;
///
/// static MAP_GENERATION: RwLock<u64> = RwLock::new(0);
///
/// *MAP_GENERATION.write() += 1;
/// let a = MAP_GENERATION.read();
/// let b = MAP_GENERATION.read(); // readers share the lock
/// assert_eq!(*a + *b, 2);
/// ```
pub struct RwLock<T: ?Sized> {
    #[cfg(not(loom))]
    inner: spin::rwlock::RwLock<T>,
    #[cfg(loom)]
    inner: loom::sync::RwLock<T>,
}

/// Holds shared read access to an [`RwLock`]; released when dropped.
///
/// Not `Send` in either mode.
///
/// # Examples
///
/// ```
/// use machvm_sync::RwLock;
///
/// let lock = RwLock::new(3);
/// let guard = lock.read();
/// assert_eq!(*guard, 3);
/// ```
#[must_use = "the read lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized + 'a> {
    #[cfg(not(loom))]
    inner: spin::rwlock::RwLockReadGuard<'a, T>,
    #[cfg(loom)]
    inner: loom::sync::RwLockReadGuard<'a, T>,
    /// Makes the guard `!Send` in both modes (loom's guard is, spin's is not).
    _not_send: PhantomData<*const ()>,
}

/// Holds exclusive write access to an [`RwLock`]; released when dropped.
///
/// Not `Send` in either mode.
///
/// # Examples
///
/// ```
/// use machvm_sync::RwLock;
///
/// let lock = RwLock::new(3);
/// *lock.write() = 4;
/// assert_eq!(*lock.read(), 4);
/// ```
#[must_use = "the write lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized + 'a> {
    #[cfg(not(loom))]
    inner: spin::rwlock::RwLockWriteGuard<'a, T>,
    #[cfg(loom)]
    inner: loom::sync::RwLockWriteGuard<'a, T>,
    /// Makes the guard `!Send` in both modes (loom's guard is, spin's is not).
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared `&RwLockReadGuard` only gives out `&T` (through `Deref` and `Debug`), so
// sharing it between threads is sound when `T: Sync`. The marker field only removes `Send`.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}

// SAFETY: a shared `&RwLockWriteGuard` only gives out `&T` (`DerefMut` needs `&mut` to the
// guard), so sharing it between threads is sound when `T: Sync`.
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

impl<T> RwLock<T> {
    /// Creates an unlocked reader-writer lock holding `value`.
    ///
    /// `const` outside loom only: loom's lock registers itself with the running model.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::RwLock;
    ///
    /// let lock = RwLock::new([0_u8; 8]);
    /// assert_eq!(lock.read().len(), 8);
    /// ```
    #[cfg(not(loom))]
    #[inline]
    #[must_use]
    pub const fn new(value: T) -> Self {
        Self {
            inner: spin::rwlock::RwLock::new(value),
        }
    }

    /// Creates an unlocked reader-writer lock holding `value` (not `const` under loom).
    #[cfg(loom)]
    #[must_use]
    pub fn new(value: T) -> Self {
        Self {
            inner: loom::sync::RwLock::new(value),
        }
    }

    /// Consumes the lock and returns the value; ownership proves nobody holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::RwLock;
    ///
    /// assert_eq!(RwLock::new(9).into_inner(), 9);
    /// ```
    #[inline]
    pub fn into_inner(self) -> T {
        #[cfg(not(loom))]
        {
            self.inner.into_inner()
        }
        #[cfg(loom)]
        {
            self.inner
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Acquires shared read access, waiting while a writer holds the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::RwLock;
    ///
    /// let lock = RwLock::new(1);
    /// assert_eq!(*lock.read(), 1);
    /// ```
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        #[cfg(not(loom))]
        let inner = self.inner.read();
        #[cfg(loom)]
        let inner = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        RwLockReadGuard {
            inner,
            _not_send: PhantomData,
        }
    }

    /// Acquires exclusive write access, waiting while any reader or writer holds the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::RwLock;
    ///
    /// let lock = RwLock::new(1);
    /// *lock.write() += 1;
    /// assert_eq!(*lock.read(), 2);
    /// ```
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        #[cfg(not(loom))]
        let inner = self.inner.write();
        #[cfg(loom)]
        let inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        RwLockWriteGuard {
            inner,
            _not_send: PhantomData,
        }
    }

    /// Acquires shared read access if no writer holds the lock right now; `None` otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::RwLock;
    ///
    /// let lock = RwLock::new(0);
    /// let w = lock.write();
    /// assert!(lock.try_read().is_none());
    /// drop(w);
    /// assert!(lock.try_read().is_some());
    /// ```
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        #[cfg(not(loom))]
        let inner = self.inner.try_read()?;
        #[cfg(loom)]
        let inner = match self.inner.try_read() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(RwLockReadGuard {
            inner,
            _not_send: PhantomData,
        })
    }

    /// Acquires exclusive write access if nobody holds the lock right now; `None` otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::RwLock;
    ///
    /// let lock = RwLock::new(0);
    /// let r = lock.read();
    /// assert!(lock.try_write().is_none());
    /// drop(r);
    /// assert!(lock.try_write().is_some());
    /// ```
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        #[cfg(not(loom))]
        let inner = self.inner.try_write()?;
        #[cfg(loom)]
        let inner = match self.inner.try_write() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(RwLockWriteGuard {
            inner,
            _not_send: PhantomData,
        })
    }

    /// Returns a mutable reference to the value; `&mut self` proves nobody holds the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::RwLock;
    ///
    /// let mut lock = RwLock::new(1);
    /// *lock.get_mut() = 2;
    /// assert_eq!(lock.into_inner(), 2);
    /// ```
    #[inline]
    pub fn get_mut(&mut self) -> &mut T {
        #[cfg(not(loom))]
        {
            self.inner.get_mut()
        }
        #[cfg(loom)]
        {
            self.inner
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> From<T> for RwLock<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    /// Prints the value if a read lock is available, `<locked>` otherwise; never waits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RwLock");
        match self.try_read() {
            Some(guard) => d.field("data", &&*guard),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish()
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
