//! Spin-wait hints: [`spin_loop`] and the exponential [`Backoff`].

/// Tells the CPU (or loom) that the caller is busy-waiting for another thread.
///
/// Outside loom this is [`core::hint::spin_loop`] (`pause` on `x86_64`, `yield` on aarch64).
/// Under `--cfg loom` it is `loom::thread::yield_now`, which lets the model schedule another
/// thread: without it a spin loop waiting for a store that only another thread makes would spin
/// forever in the model. Every hand-written spin loop in machvm calls this in its body.
///
/// # Examples
///
/// ```
/// use machvm_sync::atomic::{AtomicBool, Ordering};
/// use machvm_sync::spin_loop;
///
/// let flag = AtomicBool::new(true);
/// // Acquire: pairs with the Release store that sets the flag, so what was written before it is
/// // visible after the loop.
/// while !flag.load(Ordering::Acquire) {
///     spin_loop();
/// }
/// ```
#[inline]
pub fn spin_loop() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Exponential backoff for contended retry loops (CAS loops, lock attempts).
///
/// Each [`spin`](Self::spin) issues `2^step` [`spin_loop`] hints and then increments `step`, up to
/// [`MAX_STEP`](Self::MAX_STEP) (so at most 64 hints per call). Under `--cfg loom` each `spin` is
/// a single [`spin_loop`] (one yield to the model): more would only multiply the states loom
/// explores without changing which interleavings exist.
///
/// # Examples
///
/// ```
/// use machvm_sync::Backoff;
/// use machvm_sync::atomic::{AtomicU32, Ordering};
///
/// let word = AtomicU32::new(0);
/// let mut backoff = Backoff::new();
/// let mut current = word.load(Ordering::Relaxed);
/// loop {
///     // Relaxed: the counter orders no other memory.
///     match word.compare_exchange_weak(current, current + 1, Ordering::Relaxed, Ordering::Relaxed) {
///         Ok(_) => break,
///         Err(seen) => {
///             current = seen;
///             backoff.spin();
///         }
///     }
/// }
/// assert_eq!(word.load(Ordering::Relaxed), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    step: u32,
}

impl Backoff {
    /// The largest step: a [`spin`](Self::spin) issues at most `2^MAX_STEP` = 64 hints.
    pub const MAX_STEP: u32 = 6;

    /// Creates a backoff at step 0 (the first [`spin`](Self::spin) issues one hint).
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::Backoff;
    ///
    /// assert!(!Backoff::new().is_saturated());
    /// ```
    #[inline]
    #[must_use]
    pub const fn new() -> Self {
        Self { step: 0 }
    }

    /// Waits `2^step` spin hints (one yield under loom), then doubles the next wait up to the cap.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::Backoff;
    ///
    /// let mut b = Backoff::new();
    /// for _ in 0..Backoff::MAX_STEP {
    ///     b.spin();
    /// }
    /// assert!(b.is_saturated());
    /// ```
    #[inline]
    pub fn spin(&mut self) {
        #[cfg(not(loom))]
        for _ in 0..(1_u32 << self.step) {
            spin_loop();
        }
        #[cfg(loom)]
        spin_loop();
        if self.step < Self::MAX_STEP {
            self.step += 1;
        }
    }

    /// Returns to step 0, e.g. after the contended operation succeeded.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::Backoff;
    ///
    /// let mut b = Backoff::new();
    /// b.spin();
    /// b.reset();
    /// assert_eq!(b, Backoff::new());
    /// ```
    #[inline]
    pub fn reset(&mut self) {
        self.step = 0;
    }

    /// Returns whether the wait per [`spin`](Self::spin) has reached its cap; a caller may then
    /// fall back to something slower (re-enable interrupts briefly, take a slow path).
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::Backoff;
    ///
    /// assert!(!Backoff::new().is_saturated());
    /// ```
    #[inline]
    #[must_use]
    pub const fn is_saturated(&self) -> bool {
        self.step >= Self::MAX_STEP
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Backoff, spin_loop};

    #[test]
    fn spin_loop_returns() {
        spin_loop();
    }

    #[test]
    fn backoff_saturates_after_max_step_spins_and_stays_capped() {
        let mut b = Backoff::new();
        for _ in 0..Backoff::MAX_STEP {
            assert!(!b.is_saturated());
            b.spin();
        }
        assert!(b.is_saturated());
        b.spin();
        assert!(b.is_saturated());
        b.reset();
        assert!(!b.is_saturated());
    }
}
