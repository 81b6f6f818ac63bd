#![doc = include_str!("../README.md")]
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod codec;
pub mod pool;

pub use pool::{
    Handle, Pool, PoolConfig, PoolError, PoolPressure, PoolStats, SegmentMemory, SegmentStore,
};
