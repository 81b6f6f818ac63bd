//! Page codecs: WKdm, LZ4, the hybrid policy and single-value detection.
//!
//! This module fixes the contract between the codecs and the segment pool
//! ([`PageCodec`], [`Encoded`], [`CodecKind`]); the codecs themselves live in submodules.

use core::fmt;

/// The size of the pages a codec compresses.
///
/// Pages are passed as slices of 32-bit words (`&[u32]`), never as bytes: on aarch64 with
/// strict alignment, word loads from a byte array turn into byte loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PageSize {
    /// 4 KiB pages (1024 words): x86_64 and most aarch64 systems.
    Size4K,
    /// 16 KiB pages (4096 words): Apple Silicon.
    Size16K,
}

impl PageSize {
    /// The page size in bytes.
    #[must_use]
    pub const fn bytes(self) -> usize {
        match self {
            Self::Size4K => 4096,
            Self::Size16K => 16384,
        }
    }

    /// The page size in 32-bit words.
    #[must_use]
    pub const fn words(self) -> usize {
        self.bytes() / 4
    }
}

/// The codec that produced a stored page; kept next to the stored bytes so the page can be
/// decoded later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum CodecKind {
    /// WKdm (Wilson & Kaplan), machvm's own versioned format.
    Wkdm = 1,
    /// An LZ4 block (`lz4_flex`).
    Lz4 = 2,
    /// The page's bytes unchanged (pages that do not compress).
    Raw = 3,
}

impl CodecKind {
    /// The kind stored as `byte` (see the `repr(u8)` values), or `None` for an unknown byte.
    #[must_use]
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Wkdm),
            2 => Some(Self::Lz4),
            3 => Some(Self::Raw),
            _ => None,
        }
    }
}

/// A page that is one value repeated: stored without segment space.
///
/// `value` holds the repeated 64-bit pattern; a repeated 32-bit value `v` is stored as
/// `v | (v << 32)` so both widths fill a page the same way (little-endian words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SingleValue {
    /// The repeated 64-bit pattern (word 0 in the low half, word 1 in the high half).
    pub value: u64,
}

impl SingleValue {
    /// Fills `out` (a whole page of words) with the pattern.
    pub fn fill(self, out: &mut [u32]) {
        let lo = self.value as u32;
        let hi = (self.value >> 32) as u32;
        for pair in out.chunks_mut(2) {
            pair[0] = lo;
            if let Some(w) = pair.get_mut(1) {
                *w = hi;
            }
        }
    }
}

/// What compressing one page produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoded {
    /// The page is one repeated value; nothing was written to the output buffer.
    SingleValue(SingleValue),
    /// `len` bytes were written to the start of the output buffer by codec `kind`.
    Stored {
        /// The codec whose output was kept.
        kind: CodecKind,
        /// Bytes written to the output buffer.
        len: usize,
    },
}

/// Why a page could not be compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompressError {
    /// The input slice is not exactly one page of the codec's page size.
    BadPageLength {
        /// Words expected (one page).
        expected: usize,
        /// Words given.
        actual: usize,
    },
    /// The output buffer is smaller than [`PageCodec::max_encoded_len`]; a compressor must be
    /// able to store any page raw.
    OutputTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        actual: usize,
    },
}

impl fmt::Display for CompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPageLength { expected, actual } => {
                write!(
                    f,
                    "page of {actual} words given, the codec takes {expected}"
                )
            }
            Self::OutputTooSmall { needed, actual } => {
                write!(f, "output buffer of {actual} bytes, {needed} needed")
            }
        }
    }
}

impl core::error::Error for CompressError {}

/// Why stored bytes could not be decoded into a page. The output page's contents are
/// unspecified after an error (but every byte of it is initialised).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The output slice is not exactly one page of the codec's page size.
    BadPageLength {
        /// Words expected (one page).
        expected: usize,
        /// Words given.
        actual: usize,
    },
    /// The input ends before the page is complete.
    Truncated,
    /// The input is not valid for the codec (bad header, version, page size, or a stream
    /// that would write outside the page or read outside the input).
    Corrupt,
    /// The input decodes to fewer or more bytes than one page.
    WrongLength,
    /// The codec kind is not one this codec can decode.
    UnsupportedCodec,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPageLength { expected, actual } => {
                write!(
                    f,
                    "output of {actual} words given, the codec fills {expected}"
                )
            }
            Self::Truncated => f.write_str("compressed input is truncated"),
            Self::Corrupt => f.write_str("compressed input is corrupt"),
            Self::WrongLength => f.write_str("compressed input does not decode to one page"),
            Self::UnsupportedCodec => f.write_str("codec kind not supported by this codec"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// A page compressor the segment pool stores pages through.
///
/// Implementations are shared between CPUs (`&self`); statistics they keep use atomics.
pub trait PageCodec {
    /// The page size this codec takes.
    fn page_size(&self) -> PageSize;

    /// The output buffer size [`compress`](Self::compress) needs: enough for any page,
    /// including one stored raw.
    fn max_encoded_len(&self) -> usize;

    /// Compresses one page (`page.len() == self.page_size().words()`) into `out`.
    ///
    /// # Errors
    /// [`CompressError::BadPageLength`] for a slice that is not one page,
    /// [`CompressError::OutputTooSmall`] when `out` is shorter than
    /// [`max_encoded_len`](Self::max_encoded_len).
    fn compress(&self, page: &[u32], out: &mut [u8]) -> Result<Encoded, CompressError>;

    /// Decodes bytes produced by [`compress`](Self::compress) with `kind` into one page.
    ///
    /// # Errors
    /// A [`DecodeError`] for input that is not a valid page of this codec; never a panic or
    /// an access outside `input` or `out`.
    fn decompress(&self, kind: CodecKind, input: &[u8], out: &mut [u32])
    -> Result<(), DecodeError>;
}

mod bytes;
pub mod hybrid;
pub mod lz4;
mod raw;
pub mod single;
pub mod stats;
pub mod vector;
pub mod wkdm;

pub use hybrid::{Best, Hybrid};
pub use lz4::Lz4;
pub use stats::{CodecCounters, CodecCountersSnapshot, CodecStats, CodecStatsSnapshot};
pub use vector::{CodePath, CpuFeatures, VectorPolicy};
pub use wkdm::Wkdm;
