#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod entry;
mod error;
mod fault;
mod fork;
mod map;
mod placement;
mod pmap;
mod region;
mod wire;

pub use entry::{Inheritance, VmMapEntry, VmTag};
pub use error::{FaultError, MapError, PmapError};
pub use fault::FaultOutcome;
pub use map::{Backing, FaultStats, Location, MapRequest, VmMap};
pub use placement::{FirstFit, Gap, Placement};
pub use pmap::Pmap;
#[cfg(feature = "std")]
pub use pmap::{SoftMapping, SoftPmap};
pub use region::{MapReport, Region, ShareMode};

/// How a fault found its page (re-exported from `machvm-vm-object`).
pub use machvm_vm_object::FaultKind;
