//! How a zone learns which CPU it runs on, and that it may use that CPU's cache alone.

use machvm_sync::CpuIndex;

/// Runs code on the calling CPU with exclusive use of that CPU's zone caches.
///
/// The zone fast path touches only the current CPU's magazines, with no lock and no atomic
/// read-modify-write; this trait is what makes that sound.
///
/// # Safety
///
/// While `f` runs inside [`with_cpu`](Self::with_cpu) with `Some(cpu)`:
///
/// - the calling context runs on CPU `cpu` and does not migrate (in a kernel: preemption is
///   disabled);
/// - no other context uses the same zones with the same `cpu`: no other CPU reports that index,
///   and no interrupt handler on this CPU that allocates from or frees to a zone runs (mask
///   such interrupts, or have handlers use a [`CpuLocal`] that returns `None`).
///
/// Passing `None` is always allowed: the zone then takes its lock and uses no cache.
pub unsafe trait CpuLocal {
    /// Calls `f` with the current CPU's index, or `None` if the caller cannot give the
    /// guarantees above right now (early boot, an interrupt context, an unbound host thread).
    fn with_cpu<R>(&self, f: impl FnOnce(Option<CpuIndex>) -> R) -> R;
}

/// A [`CpuLocal`] that never names a CPU: every operation takes the zone lock and no per-CPU
/// cache is used (a single-lock allocator, for early boot or as a baseline).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoCpuCache;

// SAFETY: it always passes `None`, which promises nothing.
unsafe impl CpuLocal for NoCpuCache {
    #[inline]
    fn with_cpu<R>(&self, f: impl FnOnce(Option<CpuIndex>) -> R) -> R {
        f(None)
    }
}

// SAFETY: a bound thread's index is its own (no other live thread of the same `ThreadCpuId`
// has it), it cannot change while the binding lives (the binding is a value on the calling
// thread, which is inside this call), and host threads have no interrupt handlers; an unbound
// thread gets `None`.
#[cfg(any(feature = "std", loom))]
unsafe impl CpuLocal for machvm_sync::ThreadCpuId {
    #[inline]
    fn with_cpu<R>(&self, f: impl FnOnce(Option<CpuIndex>) -> R) -> R {
        f(self.try_current())
    }
}

// SAFETY: forwards to `L`, which makes the promises.
unsafe impl<L: CpuLocal + ?Sized> CpuLocal for &L {
    #[inline]
    fn with_cpu<R>(&self, f: impl FnOnce(Option<CpuIndex>) -> R) -> R {
        (**self).with_cpu(f)
    }
}
