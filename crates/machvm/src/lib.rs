#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

pub mod pmap;

#[doc(inline)]
pub use machvm_addr as addr;
#[doc(inline)]
pub use machvm_page_table as page_table;
#[doc(inline)]
pub use machvm_sync as sync;
