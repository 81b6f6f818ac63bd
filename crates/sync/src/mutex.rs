//! [`Mutex`]: a spinlock outside loom, `loom::sync::Mutex` under loom.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

/// A mutual-exclusion lock with no poisoning: a spinlock outside loom, loom's mutex under loom.
///
/// Outside loom this is [`spin::mutex::SpinMutex`]: `lock` spins (with
/// [`core::hint::spin_loop`]) until the lock is free; acquiring is an Acquire operation and
/// releasing (dropping the guard) a Release operation, so everything written while the lock was
/// held is visible to the next holder. Under `--cfg loom` it is `loom::sync::Mutex`, so models
/// explore every interleaving of lock holders.
///
/// The lock does not touch interrupts or preemption. In a kernel, a lock also taken from an
/// interrupt handler must be held with interrupts disabled on that CPU, or the handler can spin
/// forever on a lock its own CPU holds. The lock is not fair and not re-entrant: locking it
/// twice on one thread deadlocks.
///
/// There is no poisoning: a panic while the lock is held simply releases it when the guard is
/// dropped (outside loom a `no_std` kernel panic does not unwind anyway).
///
/// # Examples
///
/// ```
/// use machvm_sync::Mutex;
///
/// static FREE_PAGES: Mutex<u64> = Mutex::new(1024);
///
/// *FREE_PAGES.lock() -= 1;
/// assert_eq!(*FREE_PAGES.lock(), 1023);
/// ```
pub struct Mutex<T: ?Sized> {
    #[cfg(not(loom))]
    inner: spin::mutex::SpinMutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

/// Holds a [`Mutex`] locked; the lock is released when the guard is dropped.
///
/// Dereferences to the protected value. The guard is not `Send` (in both modes, so code that
/// compiles outside loom also compiles under it): unlock on the thread that locked.
///
/// # Examples
///
/// ```
/// use machvm_sync::Mutex;
///
/// let m = Mutex::new(vec![1]);
/// let mut guard = m.lock();
/// guard.push(2);
/// drop(guard);
/// assert_eq!(*m.lock(), [1, 2]);
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized + 'a> {
    #[cfg(not(loom))]
    inner: spin::mutex::SpinMutexGuard<'a, T>,
    #[cfg(loom)]
    inner: loom::sync::MutexGuard<'a, T>,
    /// Makes the guard `!Send` in both modes (loom's guard is, spin's is not).
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared `&MutexGuard` only gives out `&T` (through `Deref` and `Debug`), so sharing
// the guard between threads is sound exactly when sharing `&T` is, i.e. when `T: Sync`. The
// `PhantomData<*const ()>` only exists to remove `Send`, not `Sync`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    /// Creates an unlocked mutex holding `value`.
    ///
    /// `const` outside loom only: loom's mutex registers itself with the running model.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::Mutex;
    ///
    /// let m = Mutex::new(0_u32);
    /// assert_eq!(m.into_inner(), 0);
    /// ```
    #[cfg(not(loom))]
    #[inline]
    #[must_use]
    pub const fn new(value: T) -> Self {
        Self {
            inner: spin::mutex::SpinMutex::new(value),
        }
    }

    /// Creates an unlocked mutex holding `value` (not `const` under loom).
    #[cfg(loom)]
    #[must_use]
    pub fn new(value: T) -> Self {
        Self {
            inner: loom::sync::Mutex::new(value),
        }
    }

    /// Consumes the mutex and returns the value; ownership proves nobody holds the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::Mutex;
    ///
    /// assert_eq!(Mutex::new("x").into_inner(), "x");
    /// ```
    #[inline]
    pub fn into_inner(self) -> T {
        #[cfg(not(loom))]
        {
            self.inner.into_inner()
        }
        #[cfg(loom)]
        {
            // No poisoning in our API: a poisoned loom lock still hands back its value.
            self.inner
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Acquires the lock, spinning (outside loom) or blocking the model thread (under loom)
    /// until it is free.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::Mutex;
    ///
    /// let m = Mutex::new(1);
    /// *m.lock() += 1;
    /// assert_eq!(*m.lock(), 2);
    /// ```
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        let inner = self.inner.lock();
        #[cfg(loom)]
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        MutexGuard {
            inner,
            _not_send: PhantomData,
        }
    }

    /// Acquires the lock if it is free right now; returns `None` if it is held.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::Mutex;
    ///
    /// let m = Mutex::new(());
    /// let held = m.lock();
    /// assert!(m.try_lock().is_none());
    /// drop(held);
    /// assert!(m.try_lock().is_some());
    /// ```
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        #[cfg(not(loom))]
        let inner = self.inner.try_lock()?;
        #[cfg(loom)]
        let inner = match self.inner.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(MutexGuard {
            inner,
            _not_send: PhantomData,
        })
    }

    /// Returns a mutable reference to the value; `&mut self` proves nobody holds the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::Mutex;
    ///
    /// let mut m = Mutex::new(1);
    /// *m.get_mut() = 5;
    /// assert_eq!(*m.lock(), 5);
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

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    /// Prints the value if the lock is free, `<locked>` otherwise; never waits for the lock.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(guard) => d.field("data", &&*guard),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish()
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
