//! WKdm (Wilson & Kaplan's dictionary compressor for in-memory data), implemented from the
//! published algorithm in machvm's own versioned format (see [`format`]).
//!
//! Every 32-bit word is classified against a 16-entry direct-mapped dictionary indexed by a
//! hash of the word's upper 22 bits: zero (2 bits), exact match (2 + 4 bits), partial match of
//! the upper 22 bits (2 + 4 + 10 bits) or miss (2 + 32 bits). Compression stops early once its
//! output would pass the caller's budget.
//!
//! Three code paths produce identical bytes: [`CodePath::Portable`] (safe Rust) and, on
//! x86_64, [`CodePath::X86Avx2`] and [`CodePath::X86Avx512`] (the latter built by Rust 1.89
//! or later), chosen by the [`VectorPolicy`] the codec is built with.

// Built only by Rust 1.89 or later (`cfg(machvm_avx512)`), where its intrinsics are stable.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2", machvm_avx512))]
#[clippy::msrv = "1.89"]
mod avx512;
mod decode;
pub mod format;
mod portable;
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod x86;

use super::stats::CodecStats;
use super::vector::{CodePath, VectorPolicy};
use super::{CodecKind, CompressError, DecodeError, Encoded, PageCodec, PageSize, raw};

/// Compresses one page with WKdm into `out` on the path `policy` selects. Returns the encoded
/// length, or `None` when the output would be longer than `budget` (or than `out`).
///
/// # Errors
/// [`CompressError::BadPageLength`] when `page` is not one page of `page_size`.
pub fn compress_page(
    page_size: PageSize,
    policy: VectorPolicy,
    page: &[u32],
    out: &mut [u8],
    budget: usize,
) -> Result<Option<usize>, CompressError> {
    compress_with(page_size, policy.resolve(), page, out, budget)
}

/// Decodes a WKdm stream into one page on the path `policy` selects. On error the page is
/// zero-filled, so its contents never depend on what the buffer held before.
///
/// # Errors
/// [`DecodeError::BadPageLength`] when `out` is not one page,
/// [`DecodeError::Truncated`] when the input is shorter than its header says,
/// [`DecodeError::Corrupt`] for a bad header, trailing bytes, non-zero padding or tags that
/// disagree with the header's counts.
pub fn decompress_page(
    page_size: PageSize,
    policy: VectorPolicy,
    input: &[u8],
    out: &mut [u32],
) -> Result<(), DecodeError> {
    decompress_with(page_size, policy.resolve(), input, out)
}

/// [`compress_page`] on a resolved path. Crate-private: a [`CodePath`] can be named by
/// anyone, only [`VectorPolicy::resolve`] vouches that the CPU runs it.
pub(crate) fn compress_with(
    page_size: PageSize,
    path: CodePath,
    page: &[u32],
    out: &mut [u8],
    budget: usize,
) -> Result<Option<usize>, CompressError> {
    compress_forecast(page_size, path, page, out, budget, usize::MAX)
}

/// [`compress_with`] that also gives up when the encoding is forecast to pass `forecast`
/// bytes ([`format::Counts::forecast_passes`]).
pub(crate) fn compress_forecast(
    page_size: PageSize,
    path: CodePath,
    page: &[u32],
    out: &mut [u8],
    budget: usize,
    forecast: usize,
) -> Result<Option<usize>, CompressError> {
    check_page(page_size, page.len())
        .map_err(|(expected, actual)| CompressError::BadPageLength { expected, actual })?;
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2", machvm_avx512))]
    if path == CodePath::X86Avx512 {
        return Ok(avx512::compress(page_size, page, out, budget, forecast));
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if matches!(path, CodePath::X86Avx2 | CodePath::X86Avx512) {
        return Ok(x86::compress(page_size, page, out, budget, forecast));
    }
    let _ = path;
    Ok(match page_size {
        PageSize::Size4K => portable::compress::<portable::Page4K>(page, out, budget, forecast),
        _ => portable::compress::<portable::Page16K>(page, out, budget, forecast),
    })
}

/// [`decompress_page`] on a resolved path (crate-private for the reason given at
/// [`compress_with`]).
pub(crate) fn decompress_with(
    page_size: PageSize,
    path: CodePath,
    input: &[u8],
    out: &mut [u32],
) -> Result<(), DecodeError> {
    check_page(page_size, out.len())
        .map_err(|(expected, actual)| DecodeError::BadPageLength { expected, actual })?;
    let result = decode_checked(page_size, path, input, out);
    if result.is_err() {
        out.fill(0);
    }
    result
}

fn decode_checked(
    page_size: PageSize,
    path: CodePath,
    input: &[u8],
    out: &mut [u32],
) -> Result<(), DecodeError> {
    let areas = format::split(input, page_size.words()).map_err(|e| match e {
        format::LayoutError::Truncated => DecodeError::Truncated,
        format::LayoutError::Corrupt => DecodeError::Corrupt,
    })?;
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2", machvm_avx512))]
    if path == CodePath::X86Avx512 {
        return if avx512::decompress(&areas, out) {
            Ok(())
        } else {
            Err(DecodeError::Corrupt)
        };
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if matches!(path, CodePath::X86Avx2 | CodePath::X86Avx512) {
        return if x86::decompress(&areas, out) {
            Ok(())
        } else {
            Err(DecodeError::Corrupt)
        };
    }
    let _ = path;
    if decode::decompress(&areas, out) {
        Ok(())
    } else {
        Err(DecodeError::Corrupt)
    }
}

fn check_page(page_size: PageSize, len: usize) -> Result<(), (usize, usize)> {
    if len == page_size.words() {
        Ok(())
    } else {
        Err((page_size.words(), len))
    }
}

/// WKdm as a [`PageCodec`]: single-value pages are reported as such, pages WKdm cannot shrink
/// below a page are stored raw.
#[derive(Debug)]
pub struct Wkdm {
    page_size: PageSize,
    path: CodePath,
    stats: CodecStats,
}

impl Wkdm {
    /// Returns a WKdm codec for `page_size` that runs the path `policy` selects.
    #[must_use]
    pub fn new(page_size: PageSize, policy: VectorPolicy) -> Self {
        Self {
            page_size,
            path: policy.resolve(),
            stats: CodecStats::new(),
        }
    }

    /// Returns the code path in use.
    #[must_use]
    pub fn code_path(&self) -> CodePath {
        self.path
    }

    /// Returns the codec's statistics.
    #[must_use]
    pub fn stats(&self) -> &CodecStats {
        &self.stats
    }
}

impl PageCodec for Wkdm {
    fn page_size(&self) -> PageSize {
        self.page_size
    }

    fn max_encoded_len(&self) -> usize {
        self.page_size.bytes()
    }

    fn compress(&self, page: &[u32], out: &mut [u8]) -> Result<Encoded, CompressError> {
        if let Some(single) = self
            .stats
            .begin(self.page_size, page, out, self.max_encoded_len())?
        {
            return Ok(single);
        }
        let bytes = self.page_size.bytes();
        let len = compress_with(self.page_size, self.path, page, out, bytes - 1)?;
        self.stats.wkdm.record_attempt(bytes, len);
        match len {
            Some(len) => CodecStats::keep(&self.stats.wkdm, CodecKind::Wkdm, len),
            None => self.stats.keep_raw(page, out),
        }
    }

    fn decompress(
        &self,
        kind: CodecKind,
        input: &[u8],
        out: &mut [u32],
    ) -> Result<(), DecodeError> {
        let result = match kind {
            CodecKind::Wkdm => decompress_with(self.page_size, self.path, input, out),
            CodecKind::Raw => raw::load(self.page_size, input, out),
            _ => raw::unsupported(self.page_size, out),
        };
        self.stats.record_decode(&result);
        result
    }
}
