//! Errors of the pagers, the swap and the backings they run on.

use core::fmt;

use machvm_compressor::PoolError;
use machvm_vm_object::{ObjectError, PagerError};

/// Why a backing (a [`SwapBacking`](crate::SwapBacking) or a
/// [`FileBacking`](crate::FileBacking)) could not do what it was asked.
///
/// Implementations of the backing traits return it; the pagers turn it into a
/// [`PagingError::Backing`] or, on the fault and page-out paths, a [`PagerError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackingError {
    /// `[offset, offset + len)` lies outside the file (or overflows). Not retryable.
    OutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: u64,
    },
    /// No file with this index exists (never created, or deleted). Not retryable.
    NoSuchFile {
        /// The file index.
        index: u32,
    },
    /// A file with this index exists already. Not retryable.
    FileExists {
        /// The file index.
        index: u32,
    },
    /// The device is full: a file could not be created, grown or written. Retryable after
    /// space is freed.
    NoSpace,
    /// The device failed to read or write. Retryable if the failure was transient.
    Io,
    /// The backing does not support the request (a read-only file asked to write).
    /// Not retryable.
    Unsupported,
}

impl fmt::Display for BackingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutOfRange { offset, len } => {
                write!(f, "range {offset:#x}+{len:#x} is outside the file")
            }
            Self::NoSuchFile { index } => write!(f, "no backing file {index}"),
            Self::FileExists { index } => write!(f, "backing file {index} exists already"),
            Self::NoSpace => f.write_str("no space left on the backing device"),
            Self::Io => f.write_str("backing device i/o error"),
            Self::Unsupported => f.write_str("request not supported by the backing"),
        }
    }
}

impl core::error::Error for BackingError {}

/// Why an operation of this crate failed. A failed operation leaves every pager, swap file and
/// object as it was.
///
/// Variants are ordered by kind: caller mistakes, resources, then state and lower layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PagingError {
    /// A configuration value is out of range (the name says which). Not retryable.
    BadConfig {
        /// The field or argument at fault.
        what: &'static str,
    },
    /// The page sizes of two parts do not match (an object and its pager, a pool's codec and
    /// an object). Not retryable.
    PageSizeMismatch {
        /// The page size the pager works with, in bytes.
        expected: u64,
        /// The page size given, in bytes.
        actual: u64,
    },
    /// An address or length is not a multiple of the page size. Not retryable.
    Unaligned {
        /// The value given.
        value: u64,
    },
    /// A range is empty, wraps around, or overlaps another one. Not retryable.
    BadRange {
        /// Start of the range.
        start: u64,
        /// Length of the range in bytes.
        len: u64,
    },
    /// The object is not the kind this pager backs (the default pager takes internal objects
    /// only). Not retryable.
    WrongObjectKind,
    /// The swap key material is unusable (both AES-XTS halves equal, as with an all-zero
    /// seed). Retryable with other key material.
    WeakKey,
    /// The entropy source could not produce key material. Retryable if the source recovers.
    Entropy,
    /// Memory for the crate's own tables or buffers could not be allocated. Retryable when
    /// memory frees up.
    OutOfMemory,
    /// Swap is full: every file is at its largest and no more files may be created, or the
    /// device refused to create or grow one. Retryable after pages are freed.
    NoSpace,
    /// A swap record failed its integrity check (tampering or a bad read): its data is not
    /// returned. Not retryable unless the device's error was transient.
    Corrupt {
        /// The swap file index.
        file: u32,
        /// The slot in the file.
        slot: u32,
    },
    /// A backing failed.
    Backing(BackingError),
    /// The compressor pool failed.
    Pool(PoolError),
    /// The VM object layer failed.
    Object(ObjectError),
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadConfig { what } => write!(f, "invalid configuration: {what}"),
            Self::PageSizeMismatch { expected, actual } => {
                write!(f, "page size {actual:#x} given, {expected:#x} expected")
            }
            Self::Unaligned { value } => write!(f, "{value:#x} is not page-aligned"),
            Self::BadRange { start, len } => {
                write!(f, "range {start:#x}+{len:#x} is empty, wraps or overlaps")
            }
            Self::WrongObjectKind => f.write_str("the object is not of the kind this pager backs"),
            Self::WeakKey => f.write_str("swap key material is weak (equal xts halves)"),
            Self::Entropy => f.write_str("entropy source failed"),
            Self::OutOfMemory => f.write_str("out of memory for pager tables"),
            Self::NoSpace => f.write_str("swap space is exhausted"),
            Self::Corrupt { file, slot } => {
                write!(
                    f,
                    "swap record in file {file} slot {slot} failed its integrity check"
                )
            }
            Self::Backing(e) => write!(f, "backing: {e}"),
            Self::Pool(e) => write!(f, "compressor: {e}"),
            Self::Object(e) => write!(f, "vm object: {e}"),
        }
    }
}

impl core::error::Error for PagingError {}

impl From<BackingError> for PagingError {
    fn from(e: BackingError) -> Self {
        match e {
            BackingError::NoSpace => Self::NoSpace,
            e => Self::Backing(e),
        }
    }
}

impl From<PoolError> for PagingError {
    fn from(e: PoolError) -> Self {
        Self::Pool(e)
    }
}

impl From<ObjectError> for PagingError {
    fn from(e: ObjectError) -> Self {
        Self::Object(e)
    }
}

impl From<PagingError> for PagerError {
    /// The pager-protocol error a fault or page-out sees.
    fn from(e: PagingError) -> Self {
        match e {
            PagingError::NoSpace | PagingError::OutOfMemory => Self::NoSpace,
            PagingError::Backing(BackingError::OutOfRange { .. }) => Self::OutOfRange,
            PagingError::Backing(BackingError::NoSpace) => Self::NoSpace,
            PagingError::Backing(BackingError::Unsupported) => Self::Unsupported,
            PagingError::Pool(PoolError::Exhausted | PoolError::OutOfMemory) => Self::NoSpace,
            PagingError::Object(ObjectError::Pager(e)) => e,
            _ => Self::Io,
        }
    }
}

impl From<BackingError> for PagerError {
    fn from(e: BackingError) -> Self {
        PagingError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn messages_are_lowercase_with_values() {
        assert_eq!(
            PagingError::Corrupt { file: 2, slot: 7 }.to_string(),
            "swap record in file 2 slot 7 failed its integrity check"
        );
        assert_eq!(
            BackingError::OutOfRange {
                offset: 0x1000,
                len: 0x200
            }
            .to_string(),
            "range 0x1000+0x200 is outside the file"
        );
        assert_eq!(
            PagingError::Backing(BackingError::Io).to_string(),
            "backing: backing device i/o error"
        );
    }

    #[test]
    fn fault_paths_see_the_matching_pager_error() {
        assert_eq!(PagerError::from(PagingError::NoSpace), PagerError::NoSpace);
        assert_eq!(PagerError::from(BackingError::NoSpace), PagerError::NoSpace);
        assert_eq!(PagerError::from(BackingError::Io), PagerError::Io);
        assert_eq!(
            PagerError::from(PagingError::Corrupt { file: 0, slot: 0 }),
            PagerError::Io
        );
        assert_eq!(
            PagerError::from(PagingError::Pool(PoolError::Exhausted)),
            PagerError::NoSpace
        );
        assert_eq!(
            PagingError::from(BackingError::NoSpace),
            PagingError::NoSpace
        );
    }
}
