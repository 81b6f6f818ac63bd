//! [`ThreadCpuId`]: host threads as CPUs, for tests (feature `std`, and always under loom).

use alloc::vec::Vec;
use core::cell::RefCell;
use core::marker::PhantomData;

use crate::cpu::{CpuId, CpuIndex};
use crate::error::SyncError;
use crate::mutex::Mutex;

/// Source of unique [`ThreadCpuId`] instance ids.
///
/// `core`'s atomic on purpose, also under loom: the id only has to be unique, it is not part of
/// the concurrency being modelled, and a loom atomic cannot live in a `static`.
static NEXT_INSTANCE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

// The `(instance id, cpu)` bindings of the current thread.
#[cfg(not(loom))]
std::thread_local! {
    static BINDINGS: RefCell<Vec<(u64, CpuIndex)>> = const { RefCell::new(Vec::new()) };
}

#[cfg(loom)]
loom::thread_local! {
    static BINDINGS: RefCell<Vec<(u64, CpuIndex)>> = RefCell::new(Vec::new());
}

/// A [`CpuId`] for host tests: each thread that [binds](Self::bind) an index is that CPU until
/// its [`CpuBinding`] is dropped.
///
/// Each `ThreadCpuId` value is its own machine: bindings made through one value are invisible
/// to another, so parallel tests with their own `ThreadCpuId` do not collide on indices. Within
/// one value an index is bound to at most one live thread, and a thread to at most one index,
/// which is what [`CpuId`]'s safety promise asks for. A thread's index never changes while its
/// binding lives (the binding is not `Send`, so it is dropped on the thread that made it).
///
/// Available with the `std` feature, and always under `--cfg loom` (where it uses loom's
/// thread-locals, so each loom thread has its own binding).
///
/// # Examples (needs `std`)
///
/// ```
/// # #[cfg(feature = "std")] {
/// use machvm_sync::{CpuIndex, PerCpuCell, ThreadCpuId};
///
/// let cpus = ThreadCpuId::new();
/// let counters = PerCpuCell::<u64, 2>::new([0, 0]);
/// std::thread::scope(|s| {
///     for i in 0..2 {
///         let (cpus, counters) = (&cpus, &counters);
///         s.spawn(move || {
///             let _bound = cpus.bind(CpuIndex::new(i)).unwrap();
///             for _ in 0..100 {
///                 // SAFETY: this thread is the only one bound to index `i` in `cpus`, the binding
///                 // outlives the call, and nothing else touches `counters` until the join.
///                 unsafe { counters.with_current_mut(cpus, |c| *c += 1) };
///             }
///         });
///     }
/// });
/// assert_eq!(counters.into_inner(), [100, 100]);
/// # }
/// ```
#[derive(Debug)]
pub struct ThreadCpuId {
    /// Distinguishes this value's bindings in the threads' binding lists.
    id: u64,
    /// Indices bound to live threads through this value.
    bound: Mutex<Vec<CpuIndex>>,
}

/// Keeps the calling thread bound to a CPU index of a [`ThreadCpuId`]; unbinds when dropped.
///
/// Not `Send`: the binding belongs to the thread that made it.
///
/// # Examples (needs `std`)
///
/// ```
/// # #[cfg(feature = "std")] {
/// use machvm_sync::{CpuId, CpuIndex, ThreadCpuId};
///
/// let cpus = ThreadCpuId::new();
/// let binding = cpus.bind(CpuIndex::new(2)).unwrap();
/// assert_eq!(binding.cpu(), CpuIndex::new(2));
/// assert_eq!(cpus.current_cpu(), CpuIndex::new(2));
/// drop(binding);
/// assert_eq!(cpus.try_current(), None);
/// # }
/// ```
#[derive(Debug)]
#[must_use = "the thread is unbound as soon as the binding is dropped"]
pub struct CpuBinding<'a> {
    owner: &'a ThreadCpuId,
    cpu: CpuIndex,
    /// Keeps the binding on its thread: dropping it elsewhere would unbind the wrong thread.
    _not_send: PhantomData<*const ()>,
}

impl ThreadCpuId {
    /// Creates a machine with no thread bound.
    ///
    /// # Examples (needs `std`)
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use machvm_sync::ThreadCpuId;
    ///
    /// assert_eq!(ThreadCpuId::new().try_current(), None);
    /// # }
    /// ```
    #[must_use]
    pub fn new() -> Self {
        // Relaxed: only uniqueness of the value matters, nothing is published with it.
        let id = NEXT_INSTANCE.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        Self {
            id,
            bound: Mutex::new(Vec::new()),
        }
    }

    /// Binds the calling thread to `cpu` until the returned [`CpuBinding`] is dropped.
    ///
    /// # Errors
    ///
    /// - [`SyncError::ThreadAlreadyBound`] if the calling thread is already bound through this
    ///   value;
    /// - [`SyncError::CpuAlreadyBound`] if another live thread holds `cpu` in this value.
    ///
    /// Nothing changes on error.
    ///
    /// # Panics
    ///
    /// Panics if called while the thread's thread-locals are being destroyed.
    ///
    /// # Examples (needs `std`)
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use machvm_sync::{CpuIndex, SyncError, ThreadCpuId};
    ///
    /// let cpus = ThreadCpuId::new();
    /// let _mine = cpus.bind(CpuIndex::new(0)).unwrap();
    /// assert_eq!(
    ///     cpus.bind(CpuIndex::new(1)).unwrap_err(),
    ///     SyncError::ThreadAlreadyBound { cpu: CpuIndex::new(0) },
    /// );
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         assert_eq!(
    ///             cpus.bind(CpuIndex::new(0)).unwrap_err(),
    ///             SyncError::CpuAlreadyBound { cpu: CpuIndex::new(0) },
    ///         );
    ///     });
    /// });
    /// # }
    /// ```
    pub fn bind(&self, cpu: CpuIndex) -> Result<CpuBinding<'_>, SyncError> {
        if let Some(current) = self.try_current() {
            return Err(SyncError::ThreadAlreadyBound { cpu: current });
        }
        {
            let mut bound = self.bound.lock();
            if bound.contains(&cpu) {
                return Err(SyncError::CpuAlreadyBound { cpu });
            }
            bound.push(cpu);
        }
        // After the registry: until this point no thread-local says "bound", so no window
        // exists in which this thread reports `cpu` without owning it.
        BINDINGS.with(|b| b.borrow_mut().push((self.id, cpu)));
        Ok(CpuBinding {
            owner: self,
            cpu,
            _not_send: PhantomData,
        })
    }

    /// Returns the calling thread's index in this machine, or `None` if it is not bound.
    ///
    /// # Panics
    ///
    /// Panics if called while the thread's thread-locals are being destroyed.
    ///
    /// # Examples (needs `std`)
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use machvm_sync::{CpuIndex, ThreadCpuId};
    ///
    /// let cpus = ThreadCpuId::new();
    /// assert_eq!(cpus.try_current(), None);
    /// let _b = cpus.bind(CpuIndex::new(5)).unwrap();
    /// assert_eq!(cpus.try_current(), Some(CpuIndex::new(5)));
    /// # }
    /// ```
    #[must_use]
    pub fn try_current(&self) -> Option<CpuIndex> {
        BINDINGS.with(|b| {
            b.borrow()
                .iter()
                .find(|&&(id, _)| id == self.id)
                .map(|&(_, cpu)| cpu)
        })
    }
}

impl Default for ThreadCpuId {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `current_cpu` returns the index recorded in the calling thread's own binding list,
// which only that thread's `bind` adds and only its `CpuBinding` (not `Send`, so dropped on the
// same thread) removes: the index is fixed while the binding lives. `bind` adds an index to the
// shared registry under its lock only if no live thread holds it, and a binding leaves the
// thread-local list before it leaves the registry, so no two threads ever report the same
// index. A thread with no binding gets a panic, never an index.
unsafe impl CpuId for ThreadCpuId {
    /// Returns the calling thread's bound index.
    ///
    /// # Panics
    ///
    /// Panics if the calling thread is not bound through this value (use
    /// [`try_current`](ThreadCpuId::try_current) to check).
    #[track_caller]
    fn current_cpu(&self) -> CpuIndex {
        match self.try_current() {
            Some(cpu) => cpu,
            None => panic!("ThreadCpuId: this thread is not bound to a cpu; call bind() first"),
        }
    }
}

impl CpuBinding<'_> {
    /// Returns the index this binding holds.
    ///
    /// # Examples (needs `std`)
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use machvm_sync::{CpuIndex, ThreadCpuId};
    ///
    /// let cpus = ThreadCpuId::new();
    /// assert_eq!(cpus.bind(CpuIndex::new(1)).unwrap().cpu(), CpuIndex::new(1));
    /// # }
    /// ```
    #[must_use]
    pub fn cpu(&self) -> CpuIndex {
        self.cpu
    }
}

impl Drop for CpuBinding<'_> {
    fn drop(&mut self) {
        let id = self.owner.id;
        // Thread-local first, registry second (see `bind`). If the thread-locals are already
        // gone the thread is exiting and can no longer report an index.
        let _ = BINDINGS.try_with(|b| b.borrow_mut().retain(|&(bound_id, _)| bound_id != id));
        self.owner.bound.lock().retain(|&cpu| cpu != self.cpu);
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
