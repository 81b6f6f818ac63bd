#![doc = include_str!("../README.md")]
// Normal builds are `no_std`; under `--cfg loom` the crate links std because loom needs it.
#![cfg_attr(not(loom), no_std)]

#[cfg(any(test, loom, feature = "std"))]
extern crate std;

#[cfg(any(test, loom, feature = "alloc"))]
extern crate alloc;

#[cfg(feature = "allocator-api2")]
mod api2;
mod chunk;
mod cpu;
mod error;
mod global;
mod kalloc;
mod leaks;
mod malloc;
mod pac;
mod source;
mod specialized;
mod stats;
mod zone;

pub use cpu::{CpuLocal, NoCpuCache};
pub use error::{Violation, ViolationHandler, ViolationKind, ZoneError, panic_on_violation};
pub use global::GlobalKalloc;
pub use kalloc::{KALLOC_CLASSES, KALLOC_MAX, Kalloc, LargeStats};
pub use leaks::LeakScan;
#[cfg(feature = "alloc")]
pub use leaks::{Leak, find_leaks};
pub use malloc::{DEFAULT_ZONE_NAME, MALLOC_ALIGN, MallocStats, MallocZoneId, MallocZones};
pub use pac::PacKeys;
#[cfg(feature = "std")]
pub use source::SystemPages;
pub use source::{PageAccess, PageSource, PageSourceError};
pub use specialized::{FlagCase, HardenedFlags, ReleaseDefaultFlags, SpecializedZone};
pub use stats::{ZoneStats, ZprintTable};
pub use zone::{
    MAX_ELEMENT_SIZE, MAX_MAGAZINE, MAX_NAME, MIN_ELEMENT_SIZE, Zone, ZoneConfig, ZoneFlags,
};
