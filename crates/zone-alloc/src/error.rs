//! Errors of zone operations and the hardening violations zones detect.

use core::fmt;

use crate::source::PageSourceError;

/// Why a zone operation failed. Failed operations change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZoneError {
    /// The zone reached its element limit (and the depot held nothing to give back).
    LimitReached {
        /// The limit, in elements.
        limit: usize,
    },
    /// The page source could not provide a new chunk.
    Source(PageSourceError),
    /// The zone configuration is invalid: an element size of zero or above
    /// [`MAX_ELEMENT_SIZE`](crate::MAX_ELEMENT_SIZE), an alignment that is not a power of two
    /// or above the page size, a name longer than [`MAX_NAME`](crate::MAX_NAME) bytes, or a
    /// magazine size above [`MAX_MAGAZINE`](crate::MAX_MAGAZINE).
    BadConfig,
    /// The malloc zone named by an id does not exist (never created, or destroyed).
    NoSuchZone,
    /// Every malloc-zone slot is in use.
    TooManyZones,
    /// A pointer given to the zone failed a hardening check (the zone's violation handler was
    /// called and returned; the operation was abandoned).
    Violation(ViolationKind),
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::LimitReached { limit } => write!(f, "zone limit of {limit} elements reached"),
            Self::Source(e) => write!(f, "page source: {e}"),
            Self::BadConfig => f.write_str("invalid zone configuration"),
            Self::NoSuchZone => f.write_str("no such malloc zone"),
            Self::TooManyZones => f.write_str("no free malloc zone slot"),
            Self::Violation(kind) => write!(f, "hardening violation: {kind}"),
        }
    }
}

impl core::error::Error for ZoneError {}

impl From<PageSourceError> for ZoneError {
    fn from(e: PageSourceError) -> Self {
        Self::Source(e)
    }
}

/// What a hardening check caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViolationKind {
    /// A pointer freed to (or required of) a zone that does not lie in one of its chunks.
    ForeignPointer,
    /// A pointer inside one of the zone's chunks that is not the start of an element
    /// (misaligned or pointing into the header).
    NotAnElement,
    /// An element freed while it was already free.
    DoubleFree,
    /// A free element of a zeroing zone was written to (its contents are no longer zero): a
    /// use-after-free write.
    ModifiedAfterFree,
    /// A chunk's freelist link does not point at a free element of the chunk: the freelist was
    /// overwritten or forged.
    FreelistCorrupted,
    /// A read-only zone's element was changed outside [`Zone::mutate`](crate::Zone).
    ReadOnlyWrite,
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ForeignPointer => "pointer does not belong to the zone",
            Self::NotAnElement => "pointer is not the start of an element",
            Self::DoubleFree => "element freed twice",
            Self::ModifiedAfterFree => "free element modified (use after free)",
            Self::FreelistCorrupted => "freelist link corrupted",
            Self::ReadOnlyWrite => "read-only element written",
        })
    }
}

/// A detected hardening violation: what, where, and in which zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation<'a> {
    /// The zone's name.
    pub zone: &'a str,
    /// What was detected.
    pub kind: ViolationKind,
    /// The address involved (the pointer freed, or the element or link found corrupt).
    pub addr: usize,
}

impl fmt::Display for Violation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zone `{}`: {} at {:#x}", self.zone, self.kind, self.addr)
    }
}

/// Called when a zone detects a violation. If it returns, the operation is abandoned: a bad
/// free leaves the element alone (it leaks rather than corrupting the zone), a corrupt element
/// or freelist found while allocating is quarantined and the allocation reports
/// [`ZoneError::Violation`]. The zone never continues silently.
pub type ViolationHandler = fn(&Violation<'_>);

/// The default [`ViolationHandler`]: panics with the violation's description.
///
/// # Panics
///
/// Always: that is its purpose.
pub fn panic_on_violation(v: &Violation<'_>) {
    panic!("{v}");
}
