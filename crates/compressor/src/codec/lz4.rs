//! LZ4 block compression through `lz4_flex`'s block API (`no_std`, no alloc).
//!
//! Decoding checks that the block decodes to exactly one page: a block that stops short would
//! leave part of the page as it was (the RUSTSEC-2026-0041 class of leak), so any error or
//! short output zero-fills the page and returns an error.
//!
//! Stack: `lz4_flex`'s compressor keeps a 4096-entry hash table of `u16` (8 KiB) on the stack
//! for inputs under 64 KiB, which both page sizes are.

use lz4_flex::block;

use super::bytes::{as_bytes, as_bytes_mut};
use super::stats::CodecStats;
use super::{CodecKind, CompressError, DecodeError, Encoded, PageCodec, PageSize, raw};

/// The output space LZ4 needs for a page of `page_size` (LZ4's worst case for that input).
#[must_use]
pub const fn max_block_len(page_size: PageSize) -> usize {
    block::get_maximum_output_size(page_size.bytes())
}

/// Compresses one page into `out`. Returns the block length, or `None` when `out` is shorter
/// than [`max_block_len`].
#[must_use]
pub fn compress_page(page: &[u32], out: &mut [u8]) -> Option<usize> {
    block::compress_into(as_bytes(page), out).ok()
}

/// Decodes an LZ4 block into one page. On error the page is zero-filled.
///
/// # Errors
/// [`DecodeError::BadPageLength`] when `out` is not one page of `page_size`,
/// [`DecodeError::Truncated`] when the block ends inside a sequence,
/// [`DecodeError::WrongLength`] when it decodes to more or fewer bytes than a page,
/// [`DecodeError::Corrupt`] for any other invalid block.
pub fn decompress_page(
    page_size: PageSize,
    input: &[u8],
    out: &mut [u32],
) -> Result<(), DecodeError> {
    raw::check_out(page_size, out)?;
    let bytes = as_bytes_mut(out);
    let result = match block::decompress_into(input, bytes) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(_) | Err(block::DecompressError::OutputTooSmall { .. }) => Err(DecodeError::WrongLength),
        Err(block::DecompressError::ExpectedAnotherByte) => Err(DecodeError::Truncated),
        Err(_) => Err(DecodeError::Corrupt),
    };
    if result.is_err() {
        bytes.fill(0);
    }
    result
}

/// LZ4 as a [`PageCodec`]: single-value pages are reported as such, pages LZ4 cannot shrink
/// below a page are stored raw.
#[derive(Debug)]
pub struct Lz4 {
    page_size: PageSize,
    stats: CodecStats,
}

impl Lz4 {
    /// Returns an LZ4 codec for `page_size`.
    #[must_use]
    pub fn new(page_size: PageSize) -> Self {
        Self {
            page_size,
            stats: CodecStats::new(),
        }
    }

    /// Returns the codec's statistics.
    #[must_use]
    pub fn stats(&self) -> &CodecStats {
        &self.stats
    }
}

impl PageCodec for Lz4 {
    fn page_size(&self) -> PageSize {
        self.page_size
    }

    fn max_encoded_len(&self) -> usize {
        max_block_len(self.page_size)
    }

    fn compress(&self, page: &[u32], out: &mut [u8]) -> Result<Encoded, CompressError> {
        if let Some(single) = self
            .stats
            .begin(self.page_size, page, out, self.max_encoded_len())?
        {
            return Ok(single);
        }
        let bytes = self.page_size.bytes();
        let len = compress_page(page, out);
        self.stats.lz4.record_attempt(bytes, len);
        match len {
            Some(len) if len < bytes => CodecStats::keep(&self.stats.lz4, CodecKind::Lz4, len),
            _ => self.stats.keep_raw(page, out),
        }
    }

    fn decompress(
        &self,
        kind: CodecKind,
        input: &[u8],
        out: &mut [u32],
    ) -> Result<(), DecodeError> {
        let result = match kind {
            CodecKind::Lz4 => decompress_page(self.page_size, input, out),
            CodecKind::Raw => raw::load(self.page_size, input, out),
            _ => raw::unsupported(self.page_size, out),
        };
        self.stats.record_decode(&result);
        result
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::codec::{Best, Encoded, Hybrid, VectorPolicy};

    /// Pages that LZ4 compresses (text-like), that it cannot (pseudo-random) and that it
    /// takes after WKdm gives up (bytes repeating with a period WKdm does not see): the
    /// unit-test round trip miri runs through `lz4_flex` (the integration tests are too slow
    /// under miri).
    fn pages() -> [alloc::vec::Vec<u32>; 3] {
        let text = (0..1024u32).map(|i| 0x6f6c_6c65 ^ (i % 7) << 8).collect();
        let mut x = 0x2545_f491_u32;
        let random = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            })
            .collect();
        let period = (0..1024u32)
            .map(|i| (i % 3) * 0x0101_0101 + (i % 5))
            .collect();
        [text, random, period]
    }

    #[test]
    fn lz4_hybrid_and_best_round_trip() {
        let codecs: [&dyn PageCodec; 3] = [
            &Lz4::new(PageSize::Size4K),
            &Hybrid::new(PageSize::Size4K, VectorPolicy::Portable),
            &Best::new(PageSize::Size4K, VectorPolicy::Portable),
        ];
        for codec in codecs {
            for page in pages() {
                let mut out = vec![0xa5u8; codec.max_encoded_len()];
                let Encoded::Stored { kind, len } = codec.compress(&page, &mut out).unwrap() else {
                    panic!("no single-value page here");
                };
                let mut back = vec![0xdead_beef_u32; 1024];
                codec.decompress(kind, &out[..len], &mut back).unwrap();
                assert_eq!(back, page);
                // A truncated stream is an error that leaves no stale words.
                let mut back = vec![0xdead_beef_u32; 1024];
                if len > 1 {
                    assert!(codec.decompress(kind, &out[..len / 2], &mut back).is_err());
                    assert!(back.iter().all(|&w| w != 0xdead_beef), "stale output");
                }
            }
        }
    }
}
