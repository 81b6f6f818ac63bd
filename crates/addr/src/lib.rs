#![doc = include_str!("../README.md")]
#![no_std]

#[cfg(any(test, feature = "std"))]
extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("machvm-addr supports 64-bit targets only (it relies on usize == u64)");

mod error;
mod frame_alloc;
mod mapper;
mod page;
mod phys;
mod prot;
#[cfg(feature = "std")]
mod sim;
mod size;
#[cfg(feature = "test-util")]
pub mod testing;
mod virt;

pub use error::AddrError;
pub use frame_alloc::{FrameAllocator, FrameRequest};
pub use mapper::{IdentityMapper, OffsetMapper, PhysMapper};
pub use page::{DynFrame, DynPage, Frame, FrameIter, FrameRange, Page, PageIter, PageRange};
pub use phys::PhysAddr;
pub use prot::{ProtPair, VmProt};
#[cfg(feature = "std")]
pub use sim::{SimFrameAllocator, SimPhysMemory, SimPhysMemoryBuilder};
pub use size::{
    FixedPageSize, PageSize, Size1GiB, Size2MiB, Size4KiB, Size16KiB, Size32MiB, Size64KiB,
    Size512MiB,
};
pub use virt::{VaWidth, VirtAddr};
