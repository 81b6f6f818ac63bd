#![doc = include_str!("../README.md")]
// Normal builds are `no_std`; under `--cfg loom` the crate links std because loom needs it.
#![cfg_attr(not(loom), no_std)]

#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(any(test, loom, feature = "std"))]
extern crate alloc;

pub mod atomic;
mod cell;
mod cpu;
mod error;
mod hint;
#[cfg(any(test, loom, feature = "std"))]
mod host;
#[cfg(loom)]
pub mod model;
mod mutex;
mod padded;
mod rwlock;

pub use cell::UnsafeCell;
pub use cpu::{CpuId, CpuIndex, PerCpu, PerCpuCell};
pub use error::SyncError;
pub use hint::{Backoff, spin_loop};
#[cfg(any(test, loom, feature = "std"))]
pub use host::{CpuBinding, ThreadCpuId};
pub use mutex::{Mutex, MutexGuard};
pub use padded::{CACHE_LINE, CachePadded};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
