//! The crate's error type.

use core::fmt;

use machvm_addr::PageSize;

use crate::{Arch, EntropyBits, HealthFailure, RegionKind, SourceKind};

/// Why an ASLR operation failed. A failed operation returns nothing partial and changes no
/// layout, slide or generator state (an entropy source may latch a health failure, which is
/// the point of the check).
///
/// Variants are ordered by kind: caller mistakes (retrying the same call fails again),
/// exhausted room, entropy failures (a retry may succeed for `NoEntropy` when a busy
/// instruction recovers; never for a latched health failure), then policy.
///
/// # Examples
///
/// ```
/// use machvm_addr::VirtAddr;
/// use machvm_aslr::{AslrError, SlideRequest, VaRange};
///
/// let window = VaRange::new(VirtAddr::new(0x1000), 0x1000)?;
/// let err = SlideRequest::new(window, 0x1000, 0x1000).unwrap_err();
/// assert_eq!(err, AslrError::NoRoom { size: 0x1000, align: 0x1000, window_len: 0x1000 });
/// assert_eq!(
///     err.to_string(),
///     "no non-zero slide of 0x1000 bytes aligned to 0x1000 fits a window of 0x1000 bytes"
/// );
/// # Ok::<(), AslrError>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AslrError {
    /// An alignment that is zero or not a power of two. Caller mistake.
    BadAlignment {
        /// The rejected alignment.
        align: u64,
    },
    /// A region or request of zero bytes. Caller mistake.
    ZeroSize,
    /// A size that is not a multiple of the layout's page size. Caller mistake.
    UnalignedSize {
        /// The rejected size.
        size: u64,
        /// The page size it must be a multiple of.
        page: PageSize,
    },
    /// A range that is empty, wraps past `2^64`, or is not inside one canonical half.
    /// Caller mistake.
    BadRange {
        /// First address.
        start: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Free gaps given to random-fit placement that are not sorted by address and disjoint.
    /// Caller mistake (an address map's gaps always are).
    UnsortedGaps {
        /// Start of the first gap out of order.
        start: u64,
    },
    /// A layout configuration this crate has no defaults for. Caller mistake.
    UnsupportedConfig {
        /// The architecture.
        arch: Arch,
        /// The width of each half.
        va_bits: u8,
        /// The page size.
        page: PageSize,
    },
    /// A region setting out of range: design bits of zero or above the maximum, thread
    /// stacks sized with the generic setter, a zero thread count, or a size that overflows.
    /// Caller mistake.
    BadRegionSetting {
        /// The region.
        region: RegionKind,
    },
    /// More reserved ranges than a layout builder holds. Caller mistake.
    TooManyReserved {
        /// The capacity.
        max: usize,
    },
    /// A boot seed shorter than the minimum. Caller mistake (the bootloader gave too little).
    SeedTooShort {
        /// Bytes given.
        len: usize,
        /// Bytes required.
        min: usize,
    },
    /// A boot seed of all-zero or all-one bytes: an unfilled property, not entropy.
    WeakSeed,
    /// The window leaves no non-zero slide for the region (it holds at most the unslid
    /// position). Retrying fails again.
    NoRoom {
        /// Region size in bytes.
        size: u64,
        /// Alignment in bytes.
        align: u64,
        /// Window length in bytes.
        window_len: u64,
    },
    /// No free gap can hold the requested region. Retrying succeeds only after the map
    /// frees space.
    NoFit {
        /// Region size in bytes.
        size: u64,
        /// Alignment in bytes.
        align: u64,
    },
    /// The layout's windows do not fit their half of the address space (sizes or design
    /// bits too large for the VA size). Retrying fails again.
    LayoutDoesNotFit {
        /// The first region whose window did not fit.
        region: RegionKind,
    },
    /// Reserved ranges cover every position of a region's window. Retrying fails again.
    RegionBlocked {
        /// The region.
        region: RegionKind,
    },
    /// The gap iterator yielded fewer positions on its second pass than on its first: it is
    /// not a faithful clone. Caller mistake.
    InconsistentGaps,
    /// The random generator produced [`MAX_REJECTIONS`](crate::slide::MAX_REJECTIONS)
    /// rejected values in a row: it is broken (stuck). A working generator never does this.
    RngStuck,
    /// The entropy source had nothing to give: the instruction is absent, it did not deliver
    /// within its retry bound, or the boot seed is missing or already used. A retry can
    /// succeed only for a busy instruction.
    NoEntropy {
        /// The source (for hardware: the preferred instruction).
        source: SourceKind,
    },
    /// A hardware output failed a health check; the instruction is disabled (latched) and no
    /// retry will use it.
    EntropyHealth {
        /// The instruction that failed.
        source: SourceKind,
        /// The check it failed.
        failure: HealthFailure,
    },
    /// A randomised region has less entropy than its policy floor. The layout is not
    /// returned.
    BelowPolicy {
        /// The region.
        region: RegionKind,
        /// Its entropy.
        bits: EntropyBits,
        /// The floor, in whole bits.
        floor: u8,
    },
}

impl fmt::Display for AslrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadAlignment { align } => {
                write!(f, "alignment {align:#x} is not a power of two")
            }
            Self::ZeroSize => f.write_str("size is zero"),
            Self::UnalignedSize { size, page } => {
                write!(
                    f,
                    "size {size:#x} is not a multiple of the {page} page size"
                )
            }
            Self::BadRange { start, len } => write!(
                f,
                "range of {len:#x} bytes at {start:#x} is empty or not inside one canonical half"
            ),
            Self::UnsortedGaps { start } => {
                write!(
                    f,
                    "free gap at {start:#x} is out of order or overlaps the previous one"
                )
            }
            Self::UnsupportedConfig {
                arch,
                va_bits,
                page,
            } => write!(
                f,
                "no layout for {arch} with {va_bits}-bit halves and {page} pages"
            ),
            Self::BadRegionSetting { region } => write!(f, "invalid setting for the {region}"),
            Self::TooManyReserved { max } => write!(f, "more than {max} reserved ranges"),
            Self::SeedTooShort { len, min } => {
                write!(f, "boot seed of {len} bytes is shorter than {min} bytes")
            }
            Self::WeakSeed => f.write_str("boot seed is all zeros or all ones"),
            Self::NoRoom {
                size,
                align,
                window_len,
            } => write!(
                f,
                "no non-zero slide of {size:#x} bytes aligned to {align:#x} fits a window of \
                 {window_len:#x} bytes"
            ),
            Self::NoFit { size, align } => {
                write!(f, "no free gap holds {size:#x} bytes aligned to {align:#x}")
            }
            Self::LayoutDoesNotFit { region } => {
                write!(
                    f,
                    "the window of the {region} does not fit the address space"
                )
            }
            Self::RegionBlocked { region } => {
                write!(f, "reserved ranges leave no room for the {region}")
            }
            Self::InconsistentGaps => f.write_str("free-gap iterator changed between passes"),
            Self::RngStuck => f.write_str("random generator is stuck"),
            Self::NoEntropy { source } => write!(f, "no entropy available from {source}"),
            Self::EntropyHealth { source, failure } => {
                write!(f, "{source} failed its health check: {failure}")
            }
            Self::BelowPolicy {
                region,
                bits,
                floor,
            } => write!(
                f,
                "{region} has {bits} bits of entropy, below the policy floor of {floor}"
            ),
        }
    }
}

impl core::error::Error for AslrError {}
