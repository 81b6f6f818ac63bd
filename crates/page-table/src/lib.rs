#![doc = include_str!("../README.md")]
#![no_std]

#[cfg(any(test, feature = "test-util"))]
extern crate std;

pub mod aarch64;
mod attrs;
mod cursor;
mod error;
mod flush;
mod format;
mod table;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod x86_64;

pub use aarch64::{
    A64Granule4K39, A64Granule4K48, A64Granule16K47, A64Granule16K48, A64Granule64K42,
    A64Granule64K48, Aarch64,
};
pub use attrs::{MemType, PageAttrs, Region, SwFlags};
pub use cursor::Cursor;
pub use error::{AttrProblem, PageTableError};
pub use flush::{CountingFlush, FlushHook, FlushRange, FreedTables, NoFlush, PendingFlush};
pub use format::{AccessState, Entry, Format, MAX_CONTIGUOUS_PAGES};
pub use table::{
    Mapping, Mappings, NoVisit, PageTable, SharedRoot, TableReader, Translation, UnmapVisitor,
};
pub use x86_64::{X86Pml4, X86Pml5};
