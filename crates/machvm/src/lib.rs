#![doc = include_str!("../README.md")]
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod compressed;
// The frame table touches frame bytes through the kernel's physical mapper.
#[allow(unsafe_code)]
pub mod frames;
// Kernel pages hand out raw pointers to the memory they map (the `PageSource` contract).
#[allow(unsafe_code)]
pub mod kmem;
pub mod placement;
pub mod pmap;
pub mod pressure;
pub mod report;
pub mod shootdown;
// The simulator's memory handle forwards the simulated memory's unsafe traits.
#[cfg(feature = "std")]
#[allow(unsafe_code)]
pub mod sim;
mod system;

pub use frames::{PageQueue, QueueCounts, SpaceId};
pub use kmem::{KernelPages, KernelPagesError, KernelPagesStats, Mmu, PageView, PhysView};
pub use pressure::PressureLevel;
pub use system::{
    AnonymousPager, FlushProvider, PageoutStep, PageoutTargets, PagerStats, PressureCallback,
    PvObserver, SpaceMap, SpacePmap, VmCounters, VmError, VmSystem, ZoneSource,
};

#[doc(inline)]
pub use machvm_addr as addr;
#[doc(inline)]
pub use machvm_page_table as page_table;
#[doc(inline)]
pub use machvm_sync as sync;
#[doc(inline)]
pub use machvm_zone_alloc as zone_alloc;
