#![doc = include_str!("../README.md")]
#![no_std]
// `unsafe` is allowed only in `arch` (the RDSEED/RDRAND/RNDR instructions and the ID
// registers); everything else is safe code.
#![deny(unsafe_code)]

#[cfg(test)]
extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("machvm-aslr supports 64-bit targets only");

#[allow(unsafe_code)] // The CPU instructions; see the module docs.
pub mod arch;
mod bits;
pub mod entropy;
mod error;
pub mod fit;
pub mod layout;
mod range;
mod rng;
pub mod slide;

pub use bits::EntropyBits;
pub use entropy::{BootSeed, EntropySource, HealthFailure, HwEntropy, SEED_LEN, Seed, SourceKind};
pub use error::AslrError;
pub use fit::{FitRequest, Placement};
pub use layout::{
    Arch, Layout, LayoutBuilder, LayoutConfig, Personality, Policy, Region, RegionKind,
};
pub use range::VaRange;
pub use rng::AslrRng;
pub use slide::{Slide, SlideRequest, slide};
