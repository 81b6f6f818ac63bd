#![doc = include_str!("../README.md")]
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod chain;
mod error;
mod fault;
mod memory;
mod object;
mod page;
mod pager;

pub use chain::{CollapseStats, CopyResult};
pub use error::{ObjectError, PagerError};
pub use fault::{FaultKind, PageOutOutcome, ResolvedPage};
pub use memory::PageMemory;
#[cfg(feature = "std")]
pub use memory::SimPageMemory;
pub use object::{
    CopyStrategy, ObjectBuilder, ObjectId, ObjectKind, ObjectRef, PurgeableState, Shadow, VmObject,
};
pub use page::{PageCounts, PageFlags, VmPage};
pub use pager::{MemoryObject, PageIn, PageOutKind};
