#![doc = include_str!("../README.md")]
// Normal builds are `no_std`; under `--cfg loom` the crate links std because loom needs it.
#![cfg_attr(not(loom), no_std)]

#[cfg(any(test, loom, feature = "std"))]
extern crate std;

#[cfg(any(test, loom, feature = "std"))]
extern crate alloc;

pub mod arch;
pub mod asid;
pub mod gather;
#[cfg(feature = "page-table")]
mod hook;
mod ops;
pub mod pcid;
pub mod shootdown;
#[cfg(feature = "std")]
pub mod soft;
pub mod space;

pub use asid::{AsidAllocator, AsidContext, AsidError, AsidSwitch};
pub use gather::{FlushGather, FlushRecord};
#[cfg(feature = "page-table")]
pub use hook::{ShootdownFlush, ShootdownFlushStats, TlbFlush};
pub use ops::{Asid, TlbCaps, TlbOps};
pub use pcid::{PcidCache, PcidSwitch, SpaceId};
pub use shootdown::{CpuMask, CpuSet, IpiSender, Shootdown, ShootdownError};
pub use space::{CatchUp, SpaceCpus};
