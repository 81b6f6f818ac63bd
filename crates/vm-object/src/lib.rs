#![doc = include_str!("../README.md")]
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod chain;
mod error;
mod fault;
#[cfg(feature = "std")]
mod mem_pager;
mod memory;
mod object;
mod page;
mod pager;

pub use chain::{CollapseStats, CopyResult};
pub use error::{ObjectError, PagerError};
pub use fault::{FaultKind, PageOutOutcome, ResolvedPage};
#[cfg(feature = "std")]
pub use mem_pager::{InMemoryPager, PagerCounters};
pub use memory::PageMemory;
#[cfg(feature = "std")]
pub use memory::SimPageMemory;
pub use object::{
    CopyStrategy, MapperMark, ObjectBuilder, ObjectId, ObjectKind, ObjectRef, PurgeableState,
    Shadow, VmObject,
};
pub use page::{PageCounts, PageFlags, VmPage};
pub use pager::{MemoryObject, PageIn, PageOutKind};
