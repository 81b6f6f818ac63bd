//! Errors of address-map operations and of the fault path.

use core::fmt;

use machvm_addr::VmProt;
use machvm_vm_object::ObjectError;

/// Why a pmap could not install a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PmapError {
    /// No memory for a page-table page; a retry after memory is freed can succeed.
    NoMemory,
    /// The pmap refused the address (outside what its page tables can map); a retry cannot
    /// succeed.
    BadAddress,
}

impl fmt::Display for PmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoMemory => "no memory for a page-table page",
            Self::BadAddress => "address not mappable by the pmap",
        })
    }
}

impl core::error::Error for PmapError {}

/// Why an address-map operation failed. A failed operation leaves the map as it was (see
/// each method's `# Errors` for the few resource failures that may leave entries split).
///
/// Variants are ordered by kind: caller mistakes first (a retry with the same arguments
/// fails again), then resources (a retry can succeed), then state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapError {
    /// The size is zero (`vm_parameter_validation`: zero length is refused, not a no-op).
    ZeroSize,
    /// An address or size is not a multiple of the map's page size (or of the alignment a
    /// fixed mapping asked for).
    Unaligned {
        /// The offending value.
        value: u64,
        /// The alignment it must have.
        align: u64,
    },
    /// `start + size` wraps around the address space.
    Overflow {
        /// The start address.
        start: u64,
        /// The size.
        size: u64,
    },
    /// The range leaves the map's bounds `[min, max)`.
    OutOfBounds {
        /// Range start.
        start: u64,
        /// Range end (exclusive).
        end: u64,
    },
    /// A protection value holds bits other than read, write and execute.
    InvalidProtection {
        /// The raw bits given.
        bits: u32,
    },
    /// The current protection asked for exceeds the maximum protection.
    ProtectionExceedsMax {
        /// The requested current protection.
        current: VmProt,
        /// The maximum protection it must fit in.
        maximum: VmProt,
    },
    /// A new maximum protection would raise the old one (it can only be lowered).
    MaxRaised {
        /// The requested maximum.
        requested: VmProt,
        /// The entry's maximum now.
        maximum: VmProt,
    },
    /// A raw inheritance value is not share (0), copy (1) or none (2).
    InvalidInheritance {
        /// The raw value given.
        raw: u32,
    },
    /// The alignment mask is not of the form `2^k - 1`.
    InvalidAlignMask {
        /// The mask given.
        mask: u64,
    },
    /// The map bounds are empty, unaligned, or the page size is not 4 or 16 KiB.
    InvalidBounds,
    /// The object's page size differs from the map's.
    PageSizeMismatch {
        /// The map's page size.
        map: u64,
        /// The object's page size.
        object: u64,
    },
    /// The object window `[offset, offset + size)` is unaligned or does not fit in the object.
    ObjectRange {
        /// The offset given.
        offset: u64,
        /// The size given.
        size: u64,
    },
    /// A placement hook returned an address that is not an aligned start of a free range
    /// large enough for the request.
    BadPlacement {
        /// The address returned.
        addr: u64,
    },
    /// Part of the range is not mapped (protect, wire and unwire need a fully mapped range).
    NotMapped {
        /// The first unmapped address.
        addr: u64,
    },
    /// Unwiring a range whose entry is not wired.
    NotWired {
        /// The start of the unwired entry.
        addr: u64,
    },
    /// Wiring an entry whose current protection grants no access.
    NoAccess {
        /// The start of the entry.
        addr: u64,
    },
    /// No free range of the requested size (and alignment, guard) is left; a retry after
    /// an unmap can succeed.
    NoSpace {
        /// The size asked for.
        size: u64,
    },
    /// A fixed mapping overlaps existing entries (use overwrite to replace them).
    Occupied {
        /// The first occupied address.
        addr: u64,
    },
    /// A wire count would overflow.
    WireOverflow {
        /// The start of the entry.
        addr: u64,
    },
    /// The object layer failed (no memory, a pager error, a purged object).
    Object(ObjectError),
    /// The pmap could not install a translation.
    Pmap(PmapError),
    /// A fault taken on behalf of the operation (wiring) failed.
    Fault(FaultError),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroSize => f.write_str("size is zero"),
            Self::Unaligned { value, align } => {
                write!(f, "{value:#x} is not a multiple of {align:#x}")
            }
            Self::Overflow { start, size } => {
                write!(f, "range {start:#x} + {size:#x} wraps around")
            }
            Self::OutOfBounds { start, end } => {
                write!(f, "range {start:#x}..{end:#x} leaves the map")
            }
            Self::InvalidProtection { bits } => write!(f, "invalid protection bits {bits:#x}"),
            Self::ProtectionExceedsMax { current, maximum } => {
                write!(f, "protection {current} exceeds the maximum {maximum}")
            }
            Self::MaxRaised { requested, maximum } => {
                write!(f, "maximum protection {requested} would raise {maximum}")
            }
            Self::InvalidInheritance { raw } => write!(f, "invalid inheritance {raw}"),
            Self::InvalidAlignMask { mask } => write!(f, "alignment mask {mask:#x} is not 2^k-1"),
            Self::InvalidBounds => f.write_str("invalid map bounds or page size"),
            Self::PageSizeMismatch { map, object } => {
                write!(
                    f,
                    "object page size {object:#x} differs from the map's {map:#x}"
                )
            }
            Self::ObjectRange { offset, size } => {
                write!(
                    f,
                    "object window {offset:#x} + {size:#x} does not fit the object"
                )
            }
            Self::BadPlacement { addr } => {
                write!(f, "placement hook returned unusable address {addr:#x}")
            }
            Self::NotMapped { addr } => write!(f, "address {addr:#x} is not mapped"),
            Self::NotWired { addr } => write!(f, "entry at {addr:#x} is not wired"),
            Self::NoAccess { addr } => write!(f, "entry at {addr:#x} grants no access"),
            Self::NoSpace { size } => write!(f, "no free range of {size:#x} bytes"),
            Self::Occupied { addr } => write!(f, "address {addr:#x} is already mapped"),
            Self::WireOverflow { addr } => {
                write!(f, "wire count of the entry at {addr:#x} would overflow")
            }
            Self::Object(e) => write!(f, "object layer: {e}"),
            Self::Pmap(e) => write!(f, "pmap: {e}"),
            Self::Fault(e) => write!(f, "fault: {e}"),
        }
    }
}

impl core::error::Error for MapError {}

impl From<ObjectError> for MapError {
    fn from(e: ObjectError) -> Self {
        Self::Object(e)
    }
}

impl From<PmapError> for MapError {
    fn from(e: PmapError) -> Self {
        Self::Pmap(e)
    }
}

impl From<FaultError> for MapError {
    fn from(e: FaultError) -> Self {
        Self::Fault(e)
    }
}

/// Why a page fault could not be resolved (what the trap handler turns into a signal or a
/// kernel panic). A failed fault changes nothing the caller can see; a protection failure
/// changes nothing at all.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultError {
    /// The access asked for is empty or holds bits other than read, write, execute.
    InvalidAccess {
        /// The raw bits given.
        bits: u32,
    },
    /// No entry maps the address (`KERN_INVALID_ADDRESS`, SIGSEGV).
    NotMapped {
        /// The faulting address.
        addr: u64,
    },
    /// The entry's current protection does not grant the access
    /// (`KERN_PROTECTION_FAILURE`, SIGBUS/SIGSEGV).
    Protection {
        /// The faulting address.
        addr: u64,
        /// The access attempted.
        access: VmProt,
        /// The entry's current protection.
        protection: VmProt,
    },
    /// The object layer failed: no memory (retry can succeed), a pager error or a purged
    /// object (`VM_FAULT_MEMORY_ERROR`).
    Object(ObjectError),
    /// The pmap could not install the translation (retry can succeed after memory is freed).
    Pmap(PmapError),
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidAccess { bits } => write!(f, "invalid access bits {bits:#x}"),
            Self::NotMapped { addr } => write!(f, "address {addr:#x} is not mapped"),
            Self::Protection {
                addr,
                access,
                protection,
            } => write!(
                f,
                "{access} access at {addr:#x} denied by protection {protection}"
            ),
            Self::Object(e) => write!(f, "object layer: {e}"),
            Self::Pmap(e) => write!(f, "pmap: {e}"),
        }
    }
}

impl core::error::Error for FaultError {}

impl From<ObjectError> for FaultError {
    fn from(e: ObjectError) -> Self {
        Self::Object(e)
    }
}

impl From<PmapError> for FaultError {
    fn from(e: PmapError) -> Self {
        Self::Pmap(e)
    }
}
