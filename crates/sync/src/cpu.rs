//! CPU identity ([`CpuIndex`], [`CpuId`]) and per-CPU storage ([`PerCpu`], [`PerCpuCell`]).
//!
//! # Design
//!
//! Per-CPU data comes in two types so that shared and exclusive access can never alias:
//!
//! - [`PerCpu<T, N>`]: every slot is shared. Any CPU may read any slot through `&T` (safe);
//!   mutation goes through `T`'s own interior mutability (atomics, a [`Mutex`](crate::Mutex)).
//!   Use it for per-CPU counters read by everyone, per-CPU shootdown mailboxes, run queues
//!   behind a lock.
//! - [`PerCpuCell<T, N>`]: every slot belongs to its CPU. The owner gets `&mut T` without locks
//!   or atomic read-modify-writes through the `unsafe`
//!   [`with_current_mut`](PerCpuCell::with_current_mut); there is no safe shared access, so no
//!   safe code can hold a `&T` into a slot while its owner holds the `&mut T`. Use it for the
//!   per-CPU fast paths (zone-allocator magazines, per-CPU free lists).
//!
//! Slots are [`CachePadded`] so CPUs writing their own slots do not share cache lines. Out-of-range
//! indices give `None`, never a panic. Slots of a [`PerCpuCell`] are the crate's
//! [`UnsafeCell`], so under `--cfg loom` every exclusive and shared access is checked for races.

use core::fmt;
use core::mem::{ManuallyDrop, MaybeUninit};

use crate::cell::UnsafeCell;
use crate::padded::CachePadded;

/// The index of a CPU (a logical processor): 0, 1, ... in the order the kernel numbers them.
///
/// Plain data with no promise attached: any `u32` can be a `CpuIndex`, and per-CPU containers
/// check it against their size (an out-of-range index yields `None`). The promise that an
/// index is *the caller's* CPU comes from a [`CpuId`] implementation.
///
/// # Examples
///
/// ```
/// use machvm_sync::CpuIndex;
///
/// let cpu = CpuIndex::new(3);
/// assert_eq!(cpu.as_u32(), 3);
/// assert_eq!(cpu.as_usize(), 3);
/// assert_eq!(cpu.to_string(), "3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct CpuIndex(u32);

impl CpuIndex {
    /// Creates the index `index`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::CpuIndex;
    ///
    /// const BOOT_CPU: CpuIndex = CpuIndex::new(0);
    /// assert_eq!(BOOT_CPU.as_u32(), 0);
    /// ```
    #[inline]
    #[must_use]
    pub const fn new(index: u32) -> Self {
        Self(index)
    }

    /// Returns the index as a `u32`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::CpuIndex;
    ///
    /// assert_eq!(CpuIndex::new(2).as_u32(), 2);
    /// ```
    #[inline]
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        self.0
    }

    /// Returns the index as a `usize`, for indexing.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::CpuIndex;
    ///
    /// assert_eq!(CpuIndex::new(2).as_usize(), 2);
    /// ```
    #[inline]
    #[must_use]
    pub const fn as_usize(self) -> usize {
        // Lossless: machvm targets are 64-bit (and `usize` is at least 32 bits wherever
        // `AtomicU32` exists).
        self.0 as usize
    }
}

impl fmt::Display for CpuIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Tells the calling context which CPU it is running on.
///
/// A kernel implements it by reading its per-CPU base (`GS` on `x86_64`, `TPIDR_EL1` on aarch64);
/// host tests use `ThreadCpuId` (feature `std`), which gives each bound
/// thread a fixed index. [`PerCpu::current`] and [`PerCpuCell::with_current_mut`] take one.
///
/// # Safety
///
/// Implementers promise, for every call of [`current_cpu`](Self::current_cpu) on a value (and on
/// every value sharing its state; for a kernel that is all values of the type):
///
/// - the returned index is the CPU the calling context is running on, and it stays the calling
///   context's CPU for as long as the caller keeps itself from migrating (in a kernel: while it
///   keeps preemption disabled; for a host thread: while its binding lives);
/// - no two contexts that run in parallel get the same index. Contexts that share an index run
///   on the same CPU, so they can only interleave by preemption or interrupts, which the callers
///   of [`PerCpuCell::with_current_mut`] exclude.
///
/// Unsafe code relies on both promises: [`PerCpuCell::with_current_mut`] hands out `&mut T` to
/// the slot at the returned index.
///
/// # Examples
///
/// A kernel-style implementation reading a per-CPU variable (here a plain field stands in for
/// the `gs:`/`TPIDR_EL1`-relative load):
///
/// ```
/// use machvm_sync::{CpuId, CpuIndex};
///
/// /// Reads the index from the current CPU's per-CPU area.
/// struct PerCpuArea {
///     # index: u32,
/// }
///
/// // SAFETY: each CPU's per-CPU area records that CPU's own index, set once at CPU bring-up,
/// // and the area read is the one of the CPU executing the load; callers disable preemption
/// // around uses that must not migrate.
/// unsafe impl CpuId for PerCpuArea {
///     fn current_cpu(&self) -> CpuIndex {
///         CpuIndex::new(self.index)
///     }
/// }
///
/// let cpu = PerCpuArea { index: 0 };
/// assert_eq!(cpu.current_cpu(), CpuIndex::new(0));
/// ```
pub unsafe trait CpuId {
    /// Returns the index of the CPU the calling context is running on.
    fn current_cpu(&self) -> CpuIndex;
}

// SAFETY: forwards to `C`, whose implementation makes the promises.
unsafe impl<C: CpuId + ?Sized> CpuId for &C {
    #[inline]
    fn current_cpu(&self) -> CpuIndex {
        (**self).current_cpu()
    }
}

/// Moves the `N` elements of `$values` (an `[$elem; N]`) through the `const fn` `$make` into a
/// `[$out; N]`, in a `const` context (where `<[T; N]>::map` is not available).
macro_rules! const_map_array {
    ($values:expr, $elem:ty => $out:ty, $make:path) => {{
        let values = ManuallyDrop::new($values);
        let src = (&raw const values).cast::<$elem>();
        let mut out = [const { MaybeUninit::<$out>::uninit() }; N];
        let mut i = 0;
        while i < N {
            // SAFETY: `ManuallyDrop<[T; N]>` has the layout of `[T; N]`, so `src` points to N
            // initialised elements; `i < N` keeps the read in bounds, and each element is read
            // exactly once. `values` is never dropped, so the moved-out elements are not
            // dropped twice.
            let value = unsafe { src.add(i).read() };
            out[i] = MaybeUninit::new($make(value));
            i += 1;
        }
        // SAFETY: the loop initialised all N elements, and `[MaybeUninit<U>; N]` has the layout
        // of `[U; N]`. `out` itself needs no drop (`MaybeUninit` never drops its contents).
        unsafe { (&raw const out).cast::<[$out; N]>().read() }
    }};
}

/// Fails to compile (at monomorphisation) if `N` slots could not all be named by a [`CpuIndex`].
const fn assert_indexable<const N: usize>() {
    assert!(N <= u32::MAX as usize, "PerCpu: N must fit in a CpuIndex");
}

/// Converts `index` to the `CpuIndex` of a slot; `index < N <= u32::MAX`.
fn slot_index(index: usize) -> CpuIndex {
    CpuIndex::new(u32::try_from(index).unwrap_or(u32::MAX))
}

/// One value per CPU, all readable by every CPU; slots are padded to [`CACHE_LINE`].
///
/// Access is shared only: [`get`](Self::get), [`current`](Self::current) and
/// [`iter`](Self::iter) return `&T`, so mutation across CPUs goes through `T`'s interior
/// mutability (atomics, a [`Mutex`](crate::Mutex)). For exclusive per-CPU data with no
/// synchronisation, use [`PerCpuCell`]. With `&mut self` (e.g. during bring-up, before other
/// CPUs run) [`get_mut`](Self::get_mut) and [`iter_mut`](Self::iter_mut) give `&mut T`.
///
/// `PerCpu<T, N>` is `Sync` exactly when `T` is.
///
/// [`CACHE_LINE`]: crate::CACHE_LINE
///
/// # Examples
///
/// ```
/// use machvm_sync::{CpuIndex, PerCpu};
/// use machvm_sync::atomic::{AtomicU64, Ordering};
///
/// // `const` construction works in both modes when `T`'s constructor is const.
/// static FAULTS: PerCpu<AtomicU64, 4> = PerCpu::new([const { AtomicU64::new(0) }; 4]);
///
/// // Relaxed: statistics only, nothing is ordered against them.
/// FAULTS.get(CpuIndex::new(1)).unwrap().fetch_add(1, Ordering::Relaxed);
/// let total: u64 = FAULTS.iter().map(|c| c.load(Ordering::Relaxed)).sum();
/// assert_eq!(total, 1);
/// assert!(FAULTS.get(CpuIndex::new(4)).is_none()); // out of range
/// ```
pub struct PerCpu<T, const N: usize> {
    slots: [CachePadded<T>; N],
}

impl<T, const N: usize> PerCpu<T, N> {
    /// Creates the per-CPU storage with `values[i]` as CPU `i`'s slot.
    ///
    /// `const` in both modes (the slots hold plain `T`s); under loom, `T`'s own constructor may
    /// still not be `const`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::{CpuIndex, PerCpu};
    ///
    /// const IDS: PerCpu<u32, 2> = PerCpu::new([10, 11]);
    /// assert_eq!(IDS.get(CpuIndex::new(1)), Some(&11));
    /// ```
    #[must_use]
    pub const fn new(values: [T; N]) -> Self {
        const { assert_indexable::<N>() };
        Self {
            slots: const_map_array!(values, T => CachePadded<T>, CachePadded::new),
        }
    }

    /// Creates the per-CPU storage with `f(cpu)` as each CPU's slot, in index order.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::{CpuIndex, PerCpu};
    ///
    /// let ids = PerCpu::<u32, 4>::from_fn(|cpu| cpu.as_u32() * 10);
    /// assert_eq!(ids.get(CpuIndex::new(3)), Some(&30));
    /// ```
    #[must_use]
    pub fn from_fn(mut f: impl FnMut(CpuIndex) -> T) -> Self {
        const { assert_indexable::<N>() };
        Self {
            slots: core::array::from_fn(|i| CachePadded::new(f(slot_index(i)))),
        }
    }

    /// Returns the number of slots, `N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpu;
    ///
    /// assert_eq!(PerCpu::new([0_u8; 3]).len(), 3);
    /// ```
    #[inline]
    #[must_use]
    pub const fn len(&self) -> usize {
        N
    }

    /// Returns whether there are no slots (`N == 0`).
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpu;
    ///
    /// assert!(PerCpu::<u8, 0>::new([]).is_empty());
    /// ```
    #[inline]
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        N == 0
    }

    /// Returns CPU `cpu`'s slot, or `None` if `cpu` is not below `N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::{CpuIndex, PerCpu};
    ///
    /// let p = PerCpu::new([1, 2]);
    /// assert_eq!(p.get(CpuIndex::new(0)), Some(&1));
    /// assert_eq!(p.get(CpuIndex::new(2)), None);
    /// ```
    #[inline]
    #[must_use]
    pub fn get(&self, cpu: CpuIndex) -> Option<&T> {
        self.slots.get(cpu.as_usize()).map(|slot| &**slot)
    }

    /// Returns the calling CPU's slot (as reported by `cpu`), or `None` if its index is not
    /// below `N`.
    ///
    /// The slot stays valid to read after the caller migrates (all slots are shared), but it is
    /// then some other CPU's slot; disable preemption if that matters.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::{CpuId, CpuIndex, PerCpu};
    ///
    /// struct Boot;
    /// // SAFETY: the example runs on one thread, which is CPU 0.
    /// unsafe impl CpuId for Boot {
    ///     fn current_cpu(&self) -> CpuIndex {
    ///         CpuIndex::new(0)
    ///     }
    /// }
    ///
    /// let p = PerCpu::new(["cpu0", "cpu1"]);
    /// assert_eq!(p.current(&Boot), Some(&"cpu0"));
    /// ```
    #[inline]
    #[must_use]
    pub fn current<C: CpuId + ?Sized>(&self, cpu: &C) -> Option<&T> {
        self.get(cpu.current_cpu())
    }

    /// Returns a mutable reference to CPU `cpu`'s slot, or `None` if `cpu` is not below `N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::{CpuIndex, PerCpu};
    ///
    /// let mut p = PerCpu::new([0, 0]);
    /// *p.get_mut(CpuIndex::new(1)).unwrap() = 5;
    /// assert_eq!(p.into_inner(), [0, 5]);
    /// ```
    #[inline]
    #[must_use]
    pub fn get_mut(&mut self, cpu: CpuIndex) -> Option<&mut T> {
        self.slots.get_mut(cpu.as_usize()).map(|slot| &mut **slot)
    }

    /// Iterates over the slots in CPU index order.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpu;
    ///
    /// let p = PerCpu::new([1, 2, 3]);
    /// assert_eq!(p.iter().sum::<i32>(), 6);
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> + DoubleEndedIterator {
        self.slots.iter().map(|slot| &**slot)
    }

    /// Iterates mutably over the slots in CPU index order.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpu;
    ///
    /// let mut p = PerCpu::new([1, 2]);
    /// p.iter_mut().for_each(|v| *v *= 10);
    /// assert_eq!(p.into_inner(), [10, 20]);
    /// ```
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = &mut T> + DoubleEndedIterator {
        self.slots.iter_mut().map(|slot| &mut **slot)
    }

    /// Consumes the storage and returns the slots' values in CPU index order.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpu;
    ///
    /// assert_eq!(PerCpu::new([4, 5]).into_inner(), [4, 5]);
    /// ```
    pub fn into_inner(self) -> [T; N] {
        self.slots.map(CachePadded::into_inner)
    }
}

impl<T: Default, const N: usize> Default for PerCpu<T, N> {
    fn default() -> Self {
        Self::from_fn(|_| T::default())
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for PerCpu<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One value per CPU, each accessed exclusively by its own CPU; slots are padded to
/// [`CACHE_LINE`].
///
/// The per-CPU fast path: a CPU reaches its own slot through
/// [`with_current_mut`](Self::with_current_mut) as `&mut T`, with no lock and no atomic
/// read-modify-write. Exclusivity is not checked at run time (that is the point); it is the
/// caller's obligation, stated in the `# Safety` sections, and usually met by disabling
/// preemption (and masking interrupts whose handlers touch the same cell) around the access.
///
/// There is deliberately no safe `&self` access to any slot: a safe `get(&self) -> &T` could
/// alias the `&mut T` its owner holds. Other CPUs reach a slot only through the `unsafe`
/// [`with_mut`](Self::with_mut) / [`with`](Self::with) (e.g. draining an offline CPU's
/// magazine), or safely through `&mut self` ([`get_mut`](Self::get_mut),
/// [`iter_mut`](Self::iter_mut), [`into_inner`](Self::into_inner)).
///
/// `PerCpuCell<T, N>` is `Sync` when `T: Send` (like a [`Mutex`](crate::Mutex): each slot is used
/// by one context at a time). Under `--cfg loom`, slots are loom cells and racing accesses fail
/// the model.
///
/// [`CACHE_LINE`]: crate::CACHE_LINE
///
/// # Examples
///
/// ```
/// use machvm_sync::{CpuId, CpuIndex, PerCpuCell};
///
/// struct Boot;
/// // SAFETY: the example runs on one thread, which is CPU 0.
/// unsafe impl CpuId for Boot {
///     fn current_cpu(&self) -> CpuIndex {
///         CpuIndex::new(0)
///     }
/// }
///
/// let magazines: PerCpuCell<Vec<usize>, 2> = PerCpuCell::from_fn(|_| Vec::new());
/// // SAFETY: single-threaded example, no preemption or interrupts, and the closure does not
/// // touch `magazines` again, so nothing else accesses CPU 0's slot during the call.
/// let len = unsafe {
///     magazines.with_current_mut(&Boot, |mag| {
///         mag.push(0x1000);
///         mag.len()
///     })
/// };
/// assert_eq!(len, Some(1));
/// ```
pub struct PerCpuCell<T, const N: usize> {
    slots: [CachePadded<UnsafeCell<T>>; N],
}

// SAFETY: a slot is only reached through `&mut self` or through the unsafe `with_mut` /
// `with_current_mut` / `with`, whose contracts forbid accesses that overlap a mutable one; so
// each `T` is used by one thread at a time and may move between threads: `T: Send` suffices,
// as for a mutex. Concurrent shared access (`with` from several threads) additionally needs
// `T: Sync`, which `with` requires.
unsafe impl<T: Send, const N: usize> Sync for PerCpuCell<T, N> {}

/// Wraps one value as a padded cell (a `const fn` path for `const_map_array!`).
#[cfg(not(loom))]
const fn padded_cell<T>(value: T) -> CachePadded<UnsafeCell<T>> {
    CachePadded::new(UnsafeCell::new(value))
}

impl<T, const N: usize> PerCpuCell<T, N> {
    /// Creates the per-CPU cells with `values[i]` as CPU `i`'s slot.
    ///
    /// `const` outside loom only: under loom each slot is a loom cell that registers with the
    /// running model.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpuCell;
    ///
    /// static COUNTS: PerCpuCell<u64, 4> = PerCpuCell::new([0; 4]);
    /// assert_eq!(COUNTS.len(), 4);
    /// ```
    #[cfg(not(loom))]
    #[must_use]
    pub const fn new(values: [T; N]) -> Self {
        const { assert_indexable::<N>() };
        Self {
            slots: const_map_array!(values, T => CachePadded<UnsafeCell<T>>, padded_cell),
        }
    }

    /// Creates the per-CPU cells with `values[i]` as CPU `i`'s slot (not `const` under loom).
    #[cfg(loom)]
    #[must_use]
    pub fn new(values: [T; N]) -> Self {
        const { assert_indexable::<N>() };
        Self {
            slots: values.map(|value| CachePadded::new(UnsafeCell::new(value))),
        }
    }

    /// Creates the per-CPU cells with `f(cpu)` as each CPU's slot, in index order.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpuCell;
    ///
    /// let cells = PerCpuCell::<u32, 2>::from_fn(|cpu| cpu.as_u32());
    /// assert_eq!(cells.into_inner(), [0, 1]);
    /// ```
    #[must_use]
    pub fn from_fn(mut f: impl FnMut(CpuIndex) -> T) -> Self {
        const { assert_indexable::<N>() };
        Self {
            slots: core::array::from_fn(|i| CachePadded::new(UnsafeCell::new(f(slot_index(i))))),
        }
    }

    /// Returns the number of slots, `N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpuCell;
    ///
    /// assert_eq!(PerCpuCell::<u8, 3>::from_fn(|_| 0).len(), 3);
    /// ```
    #[inline]
    #[must_use]
    pub const fn len(&self) -> usize {
        N
    }

    /// Returns whether there are no slots (`N == 0`).
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpuCell;
    ///
    /// assert!(PerCpuCell::<u8, 0>::from_fn(|_| 0).is_empty());
    /// ```
    #[inline]
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        N == 0
    }

    /// Runs `f` with exclusive access to the calling CPU's slot (as reported by `cpu`); returns
    /// `None` without calling `f` if that index is not below `N`.
    ///
    /// This is the per-CPU fast path: no lock, no atomic read-modify-write. Under loom the
    /// access is recorded as a write for the duration of `f`.
    ///
    /// # Safety
    ///
    /// For the whole call, including `f`, nothing else may access the slot this call uses:
    ///
    /// - the calling context must stay on its CPU (in a kernel: preemption disabled; with
    ///   `ThreadCpuId`: the thread's binding alive), so the index `cpu`
    ///   returned stays its own;
    /// - no context that can interrupt or preempt it on this CPU may access the slot (mask
    ///   interrupts whose handlers use this cell, or make sure they do not);
    /// - `f` must not access this cell's slot again (no re-entrant `with_current_mut`);
    /// - no other CPU may access the slot through [`with_mut`](Self::with_mut) or
    ///   [`with`](Self::with) meanwhile;
    /// - every context that uses this cell's slots through `with_current_mut` uses the same
    ///   [`CpuId`] source, so its uniqueness promise covers them all.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::{CpuId, CpuIndex, PerCpuCell};
    ///
    /// struct Boot;
    /// // SAFETY: the example runs on one thread, which is CPU 0.
    /// unsafe impl CpuId for Boot {
    ///     fn current_cpu(&self) -> CpuIndex {
    ///         CpuIndex::new(0)
    ///     }
    /// }
    ///
    /// let hits = PerCpuCell::<u64, 2>::from_fn(|_| 0);
    /// for _ in 0..3 {
    ///     // SAFETY: single thread, no interrupts, no re-entrancy: the slot is ours alone.
    ///     unsafe { hits.with_current_mut(&Boot, |h| *h += 1) };
    /// }
    /// assert_eq!(hits.into_inner(), [3, 0]);
    /// ```
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub unsafe fn with_current_mut<C: CpuId + ?Sized, R>(
        &self,
        cpu: &C,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        // SAFETY: the caller's contract is `with_mut`'s for the index `cpu` reports: the slot
        // is the caller's own CPU's, which (by `CpuId`'s uniqueness promise and the caller's
        // no-migration, no-interrupt, no-re-entrancy obligations) nothing else accesses.
        unsafe { self.with_mut(cpu.current_cpu(), f) }
    }

    /// Runs `f` with exclusive access to CPU `cpu`'s slot; returns `None` without calling `f`
    /// if `cpu` is not below `N`.
    ///
    /// For reaching another CPU's slot when that CPU cannot touch it (it is offline, parked in
    /// a cross-call, or not started yet).
    ///
    /// # Safety
    ///
    /// For the whole call, including `f`, no other access to slot `cpu` may happen: not by its
    /// owner (through [`with_current_mut`](Self::with_current_mut)), not through
    /// [`with`](Self::with), not re-entrantly from `f`. Any earlier accesses to the slot must
    /// happen-before this call (e.g. through the Release/Acquire handshake that took the CPU
    /// offline).
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::{CpuIndex, PerCpuCell};
    ///
    /// let cells = PerCpuCell::<u32, 2>::new([0, 0]);
    /// // SAFETY: the cell is local and no other access to slot 1 exists.
    /// let r = unsafe { cells.with_mut(CpuIndex::new(1), |v| { *v = 7; *v }) };
    /// assert_eq!(r, Some(7));
    /// // SAFETY: as above; index 2 is out of range and `f` is not called.
    /// assert_eq!(unsafe { cells.with_mut(CpuIndex::new(2), |v| *v) }, None);
    /// ```
    #[inline(always)]
    #[cfg_attr(loom, track_caller)]
    pub unsafe fn with_mut<R>(&self, cpu: CpuIndex, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let slot = self.slots.get(cpu.as_usize())?;
        Some(slot.with_mut(|ptr| {
            // SAFETY: `ptr` comes from a live cell, so it is valid and aligned; the caller
            // guarantees no other access to this slot while `f` runs, so the `&mut T` is
            // unique, and `f`'s signature keeps it from escaping.
            f(unsafe { &mut *ptr })
        }))
    }

    /// Runs `f` with shared access to CPU `cpu`'s slot; returns `None` without calling `f` if
    /// `cpu` is not below `N`.
    ///
    /// For reading another CPU's slot when it cannot be changing (statistics after the CPUs
    /// quiesced, a debugger dump).
    ///
    /// # Safety
    ///
    /// For the whole call, including `f`, no mutable access to slot `cpu` may happen (through
    /// [`with_current_mut`](Self::with_current_mut) or [`with_mut`](Self::with_mut), on any
    /// CPU, or from `f`), and earlier mutable accesses must happen-before this call (e.g. the
    /// writing threads were joined). Other shared accesses may overlap.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::{CpuIndex, PerCpuCell};
    ///
    /// let cells = PerCpuCell::<u32, 2>::new([3, 4]);
    /// let mut total = 0;
    /// for i in 0..2 {
    ///     // SAFETY: nothing mutates the local cell while we read it.
    ///     total += unsafe { cells.with(CpuIndex::new(i), |v| *v) }.unwrap();
    /// }
    /// assert_eq!(total, 7);
    /// ```
    #[inline]
    #[cfg_attr(loom, track_caller)]
    pub unsafe fn with<R>(&self, cpu: CpuIndex, f: impl FnOnce(&T) -> R) -> Option<R>
    where
        T: Sync,
    {
        let slot = self.slots.get(cpu.as_usize())?;
        Some(slot.with(|ptr| {
            // SAFETY: `ptr` comes from a live cell, so it is valid and aligned; the caller
            // guarantees no mutable access to this slot while `f` runs, so a shared reference
            // is sound, and `f`'s signature keeps it from escaping.
            f(unsafe { &*ptr })
        }))
    }

    /// Returns a mutable reference to CPU `cpu`'s slot, or `None` if `cpu` is not below `N`;
    /// `&mut self` proves nothing else accesses it.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::{CpuIndex, PerCpuCell};
    ///
    /// let mut cells = PerCpuCell::<u8, 2>::new([0, 0]);
    /// *cells.get_mut(CpuIndex::new(0)).unwrap() = 1;
    /// assert!(cells.get_mut(CpuIndex::new(9)).is_none());
    /// assert_eq!(cells.into_inner(), [1, 0]);
    /// ```
    #[inline]
    #[must_use]
    pub fn get_mut(&mut self, cpu: CpuIndex) -> Option<&mut T> {
        self.slots
            .get_mut(cpu.as_usize())
            .map(|slot| slot.get_mut())
    }

    /// Iterates mutably over the slots in CPU index order; `&mut self` proves exclusivity.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpuCell;
    ///
    /// let mut cells = PerCpuCell::<u32, 3>::new([1, 2, 3]);
    /// let total: u32 = cells.iter_mut().map(|v| *v).sum();
    /// assert_eq!(total, 6);
    /// ```
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = &mut T> + DoubleEndedIterator {
        self.slots.iter_mut().map(|slot| slot.get_mut())
    }

    /// Consumes the cells and returns the slots' values in CPU index order.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::PerCpuCell;
    ///
    /// assert_eq!(PerCpuCell::<u8, 2>::new([1, 2]).into_inner(), [1, 2]);
    /// ```
    pub fn into_inner(self) -> [T; N] {
        self.slots
            .map(|slot| CachePadded::into_inner(slot).into_inner())
    }
}

impl<T: Default, const N: usize> Default for PerCpuCell<T, N> {
    fn default() -> Self {
        Self::from_fn(|_| T::default())
    }
}

impl<T, const N: usize> fmt::Debug for PerCpuCell<T, N> {
    /// Prints the slot count only: reading a slot could race with its owner.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuCell")
            .field("cpus", &N)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
