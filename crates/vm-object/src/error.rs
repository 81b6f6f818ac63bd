//! Errors of VM objects and pagers.

use core::fmt;

/// Why a pager could not serve a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PagerError {
    /// The backing store failed to read or write (an I/O error, a corrupt or tampered swap
    /// slot, a checksum mismatch); the page's data is not available.
    Io,
    /// The offset lies outside what the pager backs.
    OutOfRange,
    /// The pager has no space left to store a page (swap full, compressor exhausted).
    NoSpace,
    /// The pager was terminated.
    Terminated,
    /// The pager does not support this request (a device pager asked to page out).
    Unsupported,
}

impl fmt::Display for PagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Io => "pager I/O error",
            Self::OutOfRange => "offset outside the pager's range",
            Self::NoSpace => "pager has no space left",
            Self::Terminated => "pager terminated",
            Self::Unsupported => "request not supported by this pager",
        })
    }
}

impl core::error::Error for PagerError {}

/// Why an operation on a VM object failed. A failed operation leaves the object as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectError {
    /// The object size is zero or not a multiple of the page size.
    BadSize,
    /// An offset is not a multiple of the object's page size.
    Unaligned {
        /// The offset given.
        offset: u64,
    },
    /// An offset (or range) lies outside the object.
    OutOfRange {
        /// The offset given.
        offset: u64,
    },
    /// A page is already resident at this offset.
    AlreadyResident {
        /// The offset given.
        offset: u64,
    },
    /// No page is resident at this offset.
    NotResident {
        /// The offset given.
        offset: u64,
    },
    /// The page is busy (being paged in or out, or copied); wait and retry.
    PageBusy {
        /// The offset of the busy page.
        offset: u64,
    },
    /// The page is wired and cannot be removed or paged out.
    PageWired {
        /// The offset of the wired page.
        offset: u64,
    },
    /// A page's wire count would overflow (more than `u16::MAX` wirings).
    WireOverflow {
        /// The offset of the page.
        offset: u64,
    },
    /// Unwiring a page that is not wired.
    NotWired {
        /// The offset of the page.
        offset: u64,
    },
    /// No physical page could be allocated.
    NoMemory,
    /// The object's contents were purged (purgeable object in the empty state).
    Purged,
    /// The object is not purgeable.
    NotPurgeable,
    /// The object has no pager (page-out or synchronize on an object without one).
    NoPager,
    /// The object already has a pager.
    HasPager,
    /// The pager failed; the fault or page-out that needed it cannot complete.
    Pager(PagerError),
    /// The request needs an object that shadows nothing (or something else this object is
    /// not); for example, collapsing an object without a shadow.
    NoShadow,
    /// The range's page size does not match the object's page size.
    PageSizeMismatch,
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSize => f.write_str("object size is zero or not a multiple of the page size"),
            Self::Unaligned { offset } => write!(f, "offset {offset:#x} is not page-aligned"),
            Self::OutOfRange { offset } => write!(f, "offset {offset:#x} is outside the object"),
            Self::AlreadyResident { offset } => {
                write!(f, "a page is already resident at offset {offset:#x}")
            }
            Self::NotResident { offset } => write!(f, "no page resident at offset {offset:#x}"),
            Self::PageBusy { offset } => write!(f, "page at offset {offset:#x} is busy"),
            Self::PageWired { offset } => write!(f, "page at offset {offset:#x} is wired"),
            Self::WireOverflow { offset } => {
                write!(
                    f,
                    "wire count of the page at offset {offset:#x} would overflow"
                )
            }
            Self::NotWired { offset } => write!(f, "page at offset {offset:#x} is not wired"),
            Self::NoMemory => f.write_str("no physical page available"),
            Self::Purged => f.write_str("the purgeable object was emptied"),
            Self::NotPurgeable => f.write_str("the object is not purgeable"),
            Self::NoPager => f.write_str("the object has no pager"),
            Self::HasPager => f.write_str("the object already has a pager"),
            Self::Pager(e) => write!(f, "pager failed: {e}"),
            Self::NoShadow => f.write_str("the object shadows no other object"),
            Self::PageSizeMismatch => f.write_str("page size does not match the object's"),
        }
    }
}

impl core::error::Error for ObjectError {}

impl From<PagerError> for ObjectError {
    fn from(e: PagerError) -> Self {
        Self::Pager(e)
    }
}
