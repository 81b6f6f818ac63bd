//! The crate's error type.

use core::fmt;

use machvm_addr::{AddrError, PageSize};

/// Why attributes cannot be encoded by a format.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrProblem {
    /// Writable and executable at once without [`PageAttrs::allow_write_execute`].
    ///
    /// [`PageAttrs::allow_write_execute`]: crate::PageAttrs::allow_write_execute
    WriteExecute,
    /// No access at all: a mapping with `VmProt::NONE` cannot be expressed by a valid entry;
    /// unmap the range instead.
    NoAccess,
    /// Write or execute without read where the format cannot express it.
    NoRead,
}

/// Describes why a page-table operation failed.
///
/// Variants are ordered by kind: caller mistakes (retrying the same call fails again), then
/// exhausted resources (a retry can succeed once frames are freed), then state conflicts. A call
/// that returns an error leaves the page table exactly as it was: nothing is half-mapped, no
/// frame is leaked and no pending flush is lost.
///
/// # Examples
///
/// ```
/// use machvm_page_table::PageTableError;
///
/// let e = PageTableError::AlreadyMapped { va: 0x4000_0000 };
/// assert_eq!(e.to_string(), "virtual address 0x40000000 is already mapped");
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageTableError {
    /// An address is not a multiple of the page size the operation uses.
    Misaligned {
        /// The rejected address (virtual or physical).
        addr: u64,
        /// The alignment it needed, in bytes.
        align: u64,
    },
    /// A length is zero or not a multiple of the format's granule.
    BadLength {
        /// The rejected length in bytes.
        len: u64,
    },
    /// A virtual address (or the end of a range) is not in the region this table translates:
    /// not canonical for the format's VA width, or in the other half (aarch64 TTBR0/TTBR1).
    OutOfRange {
        /// The first rejected address.
        va: u64,
    },
    /// A physical address is beyond what the format can encode.
    PhysOutOfRange {
        /// The rejected physical address.
        pa: u64,
    },
    /// The format has no page or block of this size.
    SizeNotSupported {
        /// The rejected size.
        size: PageSize,
    },
    /// The attributes cannot be encoded (see [`AttrProblem`]).
    InvalidAttributes {
        /// What is wrong with them.
        problem: AttrProblem,
    },
    /// The root table was created for another region than the format allows.
    RegionNotSupported,
    /// Allocating a table frame failed; nothing was changed. A retry can succeed once frames
    /// are available.
    FrameAllocation(AddrError),
    /// The physical mapper could not reach a table frame; nothing was changed.
    Mapper(AddrError),
    /// Part of the range is already mapped (by a page, or by a larger page or block covering
    /// it). Nothing was changed.
    AlreadyMapped {
        /// The first mapped address found.
        va: u64,
    },
    /// The address (or part of the range, for operations that need every page mapped) is not
    /// mapped.
    NotMapped {
        /// The first unmapped address found.
        va: u64,
    },
    /// A change to a live entry needs break-before-make (aarch64) and no flush hook was
    /// available to perform it.
    BreakBeforeMake {
        /// The address of the live entry.
        va: u64,
    },
}

impl fmt::Display for PageTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Misaligned { addr, align } => {
                write!(f, "address {addr:#x} is not aligned to {align:#x}")
            }
            Self::BadLength { len } => write!(f, "length {len:#x} is zero or not a whole granule"),
            Self::OutOfRange { va } => {
                write!(f, "virtual address {va:#x} is outside the table's region")
            }
            Self::PhysOutOfRange { pa } => {
                write!(
                    f,
                    "physical address {pa:#x} cannot be encoded by the format"
                )
            }
            Self::SizeNotSupported { size } => {
                write!(f, "the format has no {size} pages or blocks")
            }
            Self::InvalidAttributes { problem } => match problem {
                AttrProblem::WriteExecute => {
                    f.write_str("writable and executable mapping refused (not explicitly allowed)")
                }
                AttrProblem::NoAccess => {
                    f.write_str("a mapping without any access is not encodable")
                }
                AttrProblem::NoRead => {
                    f.write_str("write or execute without read is not encodable by the format")
                }
            },
            Self::RegionNotSupported => f.write_str("the format does not support this region"),
            Self::FrameAllocation(e) => write!(f, "page-table frame allocation failed: {e}"),
            Self::Mapper(e) => write!(f, "page-table frame not reachable: {e}"),
            Self::AlreadyMapped { va } => write!(f, "virtual address {va:#x} is already mapped"),
            Self::NotMapped { va } => write!(f, "virtual address {va:#x} is not mapped"),
            Self::BreakBeforeMake { va } => {
                write!(f, "live entry at {va:#x} needs break-before-make")
            }
        }
    }
}

impl core::error::Error for PageTableError {}
