//! Errors of the segment pool and of segment stores.

use core::fmt;

use super::handle::Handle;
use crate::codec::{CompressError, DecodeError};

/// Why a pool operation failed. A failed operation leaves the pool as it was: no page is lost,
/// no slot or handle leaks, and the statistics do not move.
///
/// Variants are ordered by kind: caller mistakes, resources, then damaged data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// The configuration is invalid: a slot limit of zero or above
    /// [`MAX_SLOTS`](super::MAX_SLOTS), an in-core segment limit of zero, empty tables, or a
    /// codec whose largest output could never fit a segment. Not retryable.
    BadConfig,
    /// The page slice is not one page of the codec's page size. Not retryable.
    BadPageLength {
        /// Words expected (one page).
        expected: usize,
        /// Words given.
        actual: usize,
    },
    /// The scratch buffer given is shorter than the codec's largest output
    /// ([`PageCodec::max_encoded_len`](crate::codec::PageCodec::max_encoded_len)).
    /// Not retryable with the same buffer.
    ScratchTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The handle is not live in this pool: never issued, already freed (or taken), or from
    /// another pool. Not retryable.
    InvalidHandle(Handle),
    /// The segment number does not name a live segment, or the segment is not in a state the
    /// operation accepts (for example swapping out the filling segment). Not retryable as is.
    BadSegment {
        /// The segment number given.
        segment: u32,
    },
    /// The pool is at a limit: every handle is in use, every segment descriptor is in use, or
    /// the in-core segment limit is reached and a new segment (or a swap-in) would pass it.
    /// Retryable after pages are freed, segments are compacted or swapped out.
    Exhausted,
    /// The segment memory refused to provide a segment buffer. Retryable when memory frees up.
    OutOfMemory,
    /// The segment store failed. Retryable if the store's error is.
    Store(StoreError),
    /// The codec refused the page (a codec that breaks its own contract).
    Compress(CompressError),
    /// A slot's bytes do not match their checksum, or its record points outside the segment:
    /// the page is damaged and is not returned. The handle stays live (free it to drop the
    /// page). Not retryable.
    SlotCorrupt(Handle),
    /// A swapped-out segment read back from the store does not match the checksum taken when it
    /// was written (or the store returned another segment's record), or an in-core segment's
    /// slot directory is inconsistent (records outside the data area or overlapping) so it
    /// cannot be compacted or swapped out. The segment stays as it was. Not retryable unless
    /// the store's corruption was transient.
    SegmentCorrupt {
        /// The segment number.
        segment: u32,
    },
    /// The codec could not decode a slot whose checksum was correct (a codec that cannot read
    /// its own output). The handle stays live. Not retryable.
    Decode(DecodeError),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadConfig => f.write_str("invalid pool configuration"),
            Self::BadPageLength { expected, actual } => {
                write!(f, "page of {actual} words given, the pool takes {expected}")
            }
            Self::ScratchTooSmall { needed, actual } => {
                write!(f, "scratch buffer of {actual} bytes, {needed} needed")
            }
            Self::InvalidHandle(h) => write!(f, "handle {h} is not live in this pool"),
            Self::BadSegment { segment } => {
                write!(
                    f,
                    "segment {segment} does not exist or is in the wrong state"
                )
            }
            Self::Exhausted => f.write_str("compressor pool is exhausted"),
            Self::OutOfMemory => f.write_str("segment memory is exhausted"),
            Self::Store(e) => write!(f, "segment store: {e}"),
            Self::Compress(e) => write!(f, "codec: {e}"),
            Self::SlotCorrupt(h) => write!(f, "slot of handle {h} is corrupt"),
            Self::SegmentCorrupt { segment } => {
                write!(f, "swapped-out segment {segment} failed its checksum")
            }
            Self::Decode(e) => write!(f, "codec: {e}"),
        }
    }
}

impl core::error::Error for PoolError {}

impl From<StoreError> for PoolError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Why a [`SegmentStore`](super::SegmentStore) operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot take another segment (swap space is full). Retryable after frees.
    NoSpace,
    /// The key names no record (never written, or freed). Not retryable.
    NotFound,
    /// The record's length differs from the buffer given to read it into. Not retryable.
    LengthMismatch {
        /// Bytes in the record.
        stored: usize,
        /// Bytes asked for.
        asked: usize,
    },
    /// The backing device failed. Retryable if the device's failure was transient.
    Io,
    /// The store does not swap at all ([`NoStore`](super::NoStore)).
    Unsupported,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoSpace => f.write_str("no space left for a segment"),
            Self::NotFound => f.write_str("no such segment record"),
            Self::LengthMismatch { stored, asked } => {
                write!(f, "record of {stored} bytes read into {asked} bytes")
            }
            Self::Io => f.write_str("backing device error"),
            Self::Unsupported => f.write_str("this store does not swap"),
        }
    }
}

impl core::error::Error for StoreError {}
