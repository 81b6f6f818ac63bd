#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

mod default_pager;
mod device;
mod error;
mod evict;
mod key;
mod slot_map;
pub mod swap;
mod vnode;
mod words;

pub use default_pager::{CompressorPager, DefaultPager, DefaultPagerStats, DefaultPool, SwapStore};
pub use device::{DeviceMemory, DevicePager, DeviceRange, MemAttr};
pub use error::{BackingError, PagingError};
pub use evict::{EvictStats, evict};
#[cfg(feature = "std")]
pub use key::OsEntropy;
pub use key::{FixedKey, KEY_MATERIAL_BYTES, KeySource};
pub use slot_map::{CHUNK_SLOTS, EMBEDDED_SLOTS};
#[cfg(feature = "std")]
pub use swap::FsSwapBacking;
pub use swap::{
    Faults, MemorySwapBacking, ReclaimReport, RecordInfo, Swap, SwapBacking, SwapConfig, SwapStats,
    SwapUsage,
};
#[cfg(feature = "std")]
pub use vnode::StdFile;
pub use vnode::{
    DEFAULT_CLUSTER_PAGES, FileBacking, FileFaults, MemoryFile, VnodePager, VnodeStats,
};
