//! The crate's error type.

use core::fmt;

use crate::prot::VmProt;
use crate::virt::VaWidth;

/// Describes why an address, range, protection or frame operation failed.
///
/// Variants are ordered by kind: caller mistakes first (retrying the same call fails again),
/// then exhausted resources (a retry can succeed once something is freed), then state errors.
/// A call that returns an error leaves every object it was given unchanged.
///
/// # Examples
///
/// ```
/// use machvm_addr::{AddrError, VirtAddr};
///
/// let err = VirtAddr::try_new(0x0100_0000_0000_0000).unwrap_err();
/// assert!(matches!(err, AddrError::NotCanonical { addr: 0x0100_0000_0000_0000, .. }));
/// assert_eq!(
///     err.to_string(),
///     "virtual address 0x100000000000000 is not canonical for 56-bit halves"
/// );
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrError {
    /// A virtual address is not canonical: it lies in the hole between the lower half
    /// `[0, 2^bits)` and the upper half `[2^64 - 2^bits, 2^64)` of `width`.
    /// Retrying with the same address fails again.
    NotCanonical {
        /// The rejected address.
        addr: u64,
        /// The half width the address was checked against.
        width: VaWidth,
    },
    /// A physical address is at or above `2^52`, the widest physical address space of `x86_64` and
    /// aarch64. Retrying with the same address fails again.
    PhysTooWide {
        /// The rejected address.
        addr: u64,
    },
    /// An address is not a multiple of the alignment the operation needs.
    /// Retrying with the same address fails again.
    Misaligned {
        /// The rejected address.
        addr: u64,
        /// The alignment it had to have, in bytes.
        align: u64,
    },
    /// An alignment is not a power of two, or is smaller than an operation requires
    /// (a frame request aligned below its frame size). Retrying with it fails again.
    BadAlignment {
        /// The rejected alignment, in bytes.
        align: u64,
    },
    /// A [`VaWidth`] was requested outside `VaWidth::MIN_BITS..=VaWidth::MAX_BITS`.
    /// Retrying with the same width fails again.
    BadWidth {
        /// The rejected number of bits.
        bits: u8,
    },
    /// A size is zero or not a multiple of the granule it must be made of (a frame request for
    /// zero frames, a simulated memory that is not a whole number of 4 KiB frames).
    /// Retrying with the same size fails again.
    BadSize {
        /// The rejected size, in bytes.
        size: u64,
    },
    /// An address computation has no valid result: it wraps around `u64`, lands in the
    /// non-canonical hole of the virtual address space, crosses that hole, or reaches `2^52` for
    /// physical addresses. Retrying with the same inputs fails again.
    Overflow,
    /// A range's end lies before its start. Retrying with the same bounds fails again.
    BackwardsRange {
        /// The start the caller gave.
        start: u64,
        /// The end the caller gave.
        end: u64,
    },
    /// A physical range `[addr, addr + len)` is outside what a [`PhysMapper`](crate::PhysMapper)
    /// or simulated memory can reach. Retrying with the same range fails again.
    OutOfRange {
        /// The first physical address of the range.
        addr: u64,
        /// The length of the range, in bytes.
        len: u64,
    },
    /// A current protection asks for rights the maximum protection does not grant.
    /// Retrying fails until the request is narrowed.
    ProtectionExceedsMax {
        /// The protection asked for.
        requested: VmProt,
        /// The maximum protection in force.
        max: VmProt,
    },
    /// A new maximum protection adds rights the old maximum did not have; a maximum can only be
    /// lowered (as with Mach `vm_protect(set_maximum = TRUE)`). Retrying fails again.
    MaxProtectionRaised {
        /// The maximum asked for.
        requested: VmProt,
        /// The maximum in force.
        max: VmProt,
    },
    /// A frame allocator has no free run of frames that satisfies the request (also returned
    /// when [`SimPhysMemory`](crate::SimPhysMemory) cannot allocate its host buffer). A retry can
    /// succeed after frames are freed.
    OutOfFrames,
    /// A frame allocator refused the request because fault injection is armed (see
    /// `SimPhysMemory::fail_after`). A retry succeeds once injection is reset.
    InjectedFailure,
    /// A frame range handed back to an allocator is not a live allocation of that size: a
    /// double free, a free of memory never allocated, or a free with a different request.
    /// Retrying with the same arguments fails again.
    NotAllocated {
        /// The start address that was passed in.
        addr: u64,
    },
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotCanonical { addr, width } => write!(
                f,
                "virtual address {addr:#x} is not canonical for {}-bit halves",
                width.bits()
            ),
            Self::PhysTooWide { addr } => {
                write!(f, "physical address {addr:#x} does not fit in 52 bits")
            }
            Self::Misaligned { addr, align } => {
                write!(f, "address {addr:#x} is not aligned to {align:#x}")
            }
            Self::BadAlignment { align } => write!(f, "alignment {align:#x} is not usable"),
            Self::BadWidth { bits } => {
                write!(f, "virtual address width of {bits} bits is not supported")
            }
            Self::BadSize { size } => write!(f, "size {size:#x} is not usable"),
            Self::Overflow => f.write_str("address arithmetic overflowed the address space"),
            Self::BackwardsRange { start, end } => {
                write!(f, "range {start:#x}..{end:#x} is backwards")
            }
            Self::OutOfRange { addr, len } => {
                write!(f, "physical range {addr:#x}+{len:#x} is out of range")
            }
            Self::ProtectionExceedsMax { requested, max } => {
                write!(f, "protection {requested} exceeds maximum protection {max}")
            }
            Self::MaxProtectionRaised { requested, max } => {
                write!(
                    f,
                    "maximum protection {requested} would raise maximum {max}"
                )
            }
            Self::OutOfFrames => f.write_str("out of physical frames"),
            Self::InjectedFailure => f.write_str("injected allocation failure"),
            Self::NotAllocated { addr } => {
                write!(
                    f,
                    "frames at {addr:#x} are not a live allocation of that size"
                )
            }
        }
    }
}

impl core::error::Error for AddrError {}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn display_is_lowercase_hex_without_period() {
        let cases = [
            (
                AddrError::PhysTooWide {
                    addr: 0x10_0000_0000_0000,
                },
                "physical address 0x10000000000000 does not fit in 52 bits",
            ),
            (
                AddrError::Misaligned {
                    addr: 0x1001,
                    align: 0x1000,
                },
                "address 0x1001 is not aligned to 0x1000",
            ),
            (
                AddrError::BackwardsRange {
                    start: 0x2000,
                    end: 0x1000,
                },
                "range 0x2000..0x1000 is backwards",
            ),
            (
                AddrError::ProtectionExceedsMax {
                    requested: VmProt::ALL,
                    max: VmProt::READ,
                },
                "protection rwx exceeds maximum protection r--",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
        for err in [
            AddrError::Overflow,
            AddrError::OutOfFrames,
            AddrError::InjectedFailure,
        ] {
            let s = err.to_string();
            assert!(!s.ends_with('.'));
            assert_eq!(s, s.to_lowercase());
        }
    }
}
