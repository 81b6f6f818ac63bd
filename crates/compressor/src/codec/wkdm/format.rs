//! The byte format of machvm's WKdm (version 1).
//!
//! ```text
//! offset  size              field
//! 0       2                 magic "WK"
//! 2       1                 format version (1)
//! 3       1                 log2 of the page size in bytes (12: 4 KiB, 14: 16 KiB)
//! 4       2                 miss count, little-endian
//! 6       2                 dictionary-index count (exact + partial words)
//! 8       2                 partial count
//! 10      2                 reserved, zero
//! 12      words / 4         tags: 2 bits per word, word i in bits 2*(i%4) of byte i/4;
//!                           0 zero, 1 exact, 2 partial, 3 miss
//! ..      4 * misses        the missed words, little-endian, in page order
//! ..      ceil(index / 2)   dictionary indices, 4 bits each, the first in the low nibble
//! ..      partial           low 8 bits of each partial word
//! ..      ceil(partial / 4) high 2 bits of each partial word's 10-bit low part, 4 per byte,
//!                           the first in bits 0..2
//! ```
//!
//! The stream is exactly this long, and unused bits of the last index and low-2 bytes are
//! zero, so the compressor writes one encoding per page. (A decoder cannot check that each
//! stored index is the hash of its word without decoding it, so a few other streams decode
//! too; they produce a page that is a function of the stream alone.)
//!
//! The dictionary has 16 words, all zero at the start. A word's slot is [`slot`] of its upper
//! 22 bits. Zero words neither use nor change it; an exact match leaves it unchanged; partial
//! and miss words replace the slot's word.

/// The header's length in bytes.
pub const HEADER_LEN: usize = 12;
/// The header's first two bytes.
pub const MAGIC: [u8; 2] = *b"WK";
/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;

/// Tag of a zero word.
pub const TAG_ZERO: u32 = 0;
/// Tag of a word equal to its dictionary slot.
pub const TAG_EXACT: u32 = 1;
/// Tag of a word whose upper 22 bits equal its dictionary slot's.
pub const TAG_PARTIAL: u32 = 2;
/// Tag of any other word.
pub const TAG_MISS: u32 = 3;

/// The low bits a partial match stores.
pub const LOW_BITS: u32 = 10;
/// Mask of the low bits.
pub const LOW_MASK: u32 = (1 << LOW_BITS) - 1;

/// Returns the dictionary slot (0..16) of a word: a multiplicative hash of its upper 22 bits,
/// so words that differ only in their low bits share a slot.
#[inline(always)]
#[must_use]
pub const fn slot(word: u32) -> usize {
    ((word >> LOW_BITS).wrapping_mul(0x9E37_79B1) >> 28) as usize
}

/// The counts a header carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Miss words.
    pub misses: usize,
    /// Exact and partial words (dictionary indices stored).
    pub indices: usize,
    /// Partial words (low parts stored).
    pub partials: usize,
}

impl Counts {
    /// Returns the encoded length of a page of `words` words with these counts.
    #[must_use]
    pub const fn encoded_len(self, words: usize) -> usize {
        HEADER_LEN
            + words / 4
            + 4 * self.misses
            + self.indices.div_ceil(2)
            + self.partials
            + self.partials.div_ceil(4)
    }

    /// Returns a lower bound of the encoded length while the page is being compressed.
    #[inline(always)]
    #[must_use]
    pub const fn min_len(self, words: usize) -> usize {
        HEADER_LEN + words / 4 + 4 * self.misses + self.indices / 2 + self.partials
    }

    /// Returns whether a page whose first `done` of `words` words gave these counts is
    /// forecast to encode longer than `limit` bytes. The forecast is made only at a quarter,
    /// half and three quarters of the page (`false` elsewhere), so every code path takes the
    /// same decision on the same page: the variable part of [`min_len`](Self::min_len) so far,
    /// scaled linearly to the whole page, plus the fixed part.
    #[inline(always)]
    #[must_use]
    pub(crate) const fn forecast_passes(self, words: usize, done: usize, limit: usize) -> bool {
        let quarter = words / 4;
        if quarter == 0 || done == 0 || done >= words || done % quarter != 0 {
            return false;
        }
        let fixed = HEADER_LEN + quarter;
        let variable = self.min_len(words) - fixed;
        match variable.checked_mul(words) {
            Some(scaled) => fixed.saturating_add(scaled / done) > limit,
            // Beyond any limit.
            None => true,
        }
    }
}

/// Writes `words` to `dst` as little-endian bytes, as many as `dst` holds whole (the miss
/// area's encoding).
#[inline(always)]
pub(crate) fn put_words(dst: &mut [u8], words: &[u32]) {
    for (d, w) in dst.chunks_exact_mut(4).zip(words) {
        d.copy_from_slice(&w.to_le_bytes());
    }
}

/// The areas of an encoded page.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Areas<'a> {
    /// Counts from the header.
    pub(crate) counts: Counts,
    /// The whole stream, with the offset of each area in it (for [`Reader`]).
    pub(crate) input: &'a [u8],
    /// Offset of the miss area in `input`.
    pub(crate) misses_at: usize,
    /// Offset of the index area in `input`.
    pub(crate) indices_at: usize,
    /// Offset of the low-8 area in `input`.
    pub(crate) low8_at: usize,
    /// Offset of the low-2 area in `input`.
    pub(crate) low2_at: usize,
    /// Tag bytes.
    pub(crate) tags: &'a [u8],
}

/// Writes the header for a page of `words` words into `out[..HEADER_LEN]`.
pub(crate) fn write_header(out: &mut [u8; HEADER_LEN], words: usize, counts: Counts) {
    let log2 = words.trailing_zeros() + 2;
    let [m0, m1] = (counts.misses as u16).to_le_bytes();
    let [i0, i1] = (counts.indices as u16).to_le_bytes();
    let [p0, p1] = (counts.partials as u16).to_le_bytes();
    *out = [
        MAGIC[0], MAGIC[1], VERSION, log2 as u8, m0, m1, i0, i1, p0, p1, 0, 0,
    ];
}

/// The low parts of the partial words, as a compressor gathered them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LowParts<'a> {
    /// The low 16 bits of each partial word (at least as many entries as partials).
    Wide(&'a [u16]),
    /// The low-8 stream (at least as many bytes as partials) and the low-2 stream packed
    /// little-endian into `u32`s, unused bits zero.
    // Written by the x86 vector compressors only, which bare-metal targets leave out.
    #[cfg_attr(
        not(all(target_arch = "x86_64", target_feature = "sse2")),
        allow(dead_code)
    )]
    Split {
        /// Low 8 bits, one byte per partial word.
        low8: &'a [u8],
        /// High 2 bits of the 10-bit low parts, 16 per `u32`.
        low2: &'a [u32],
    },
}

/// The index, low-8 and low-2 stream areas of an encoded page, which [`stream_areas`] cut
/// out of the output.
pub(crate) struct StreamAreas<'a> {
    /// Index nibbles, two to a byte.
    pub(crate) index: &'a mut [u8],
    /// Low 8 bits of each partial word.
    pub(crate) low8: &'a mut [u8],
    /// Bits 8 and 9 of each partial word, four to a byte.
    pub(crate) low2: &'a mut [u8],
    /// The encoded length.
    pub(crate) total: usize,
}

/// For a page whose tags and misses are in place: checks the encoded length against `budget`
/// and `out`, writes the header, and returns the stream areas after the misses (`None` when
/// the page passes the budget or `out`).
pub(crate) fn stream_areas(
    out: &mut [u8],
    words: usize,
    counts: Counts,
    budget: usize,
) -> Option<StreamAreas<'_>> {
    let total = counts.encoded_len(words);
    if total > budget.min(out.len()) {
        return None;
    }
    let (header, body) = out.split_first_chunk_mut::<HEADER_LEN>()?;
    write_header(header, words, counts);
    let rest = body.get_mut(words / 4 + 4 * counts.misses..)?;
    let (index, rest) = rest.split_at_mut(counts.indices.div_ceil(2));
    let (low8, rest) = rest.split_at_mut(counts.partials);
    let low2 = rest.get_mut(..counts.partials.div_ceil(4))?;
    Some(StreamAreas {
        index,
        low8,
        low2,
        total,
    })
}

/// Finishes an encoded page whose tags and misses are already in place: writes the header
/// and the index, low-8 and low-2 streams after the misses. `index` holds the index nibbles
/// packed little-endian into `u64`s, unused bits zero. Returns the encoded length, or `None`
/// when it passes `budget` or `out` (or a stream is shorter than `counts` says).
pub(crate) fn write_streams(
    out: &mut [u8],
    words: usize,
    counts: Counts,
    budget: usize,
    index: &[u64],
    low: LowParts<'_>,
) -> Option<usize> {
    let StreamAreas {
        index: idx_out,
        low8: low8_out,
        low2: low2_out,
        total,
    } = stream_areas(out, words, counts, budget)?;
    for (d, s) in idx_out
        .chunks_mut(8)
        .zip(index.iter().map(|w| w.to_le_bytes()))
    {
        d.copy_from_slice(s.get(..d.len())?);
    }
    match low {
        LowParts::Wide(low) => {
            let low = low.get(..counts.partials)?;
            for (d, &l) in low8_out.iter_mut().zip(low) {
                *d = l as u8;
            }
            // Bits 8..10 of four entries to one byte, the first in bits 0..2.
            let low2 = |l: [u16; 4]| {
                let v = u64::from(l[0])
                    | u64::from(l[1]) << 16
                    | u64::from(l[2]) << 32
                    | u64::from(l[3]) << 48;
                let v = (v >> 8) & 0x0003_0003_0003_0003;
                (v | v >> 14 | v >> 28 | v >> 42) as u8
            };
            let groups = low.chunks_exact(4);
            let last = groups.remainder();
            for (d, l) in low2_out.iter_mut().zip(groups) {
                *d = low2([l[0], l[1], l[2], l[3]]);
            }
            if !last.is_empty() {
                let mut l = [0u16; 4];
                l[..last.len()].copy_from_slice(last);
                *low2_out.last_mut()? = low2(l);
            }
        }
        LowParts::Split { low8, low2 } => {
            low8_out.copy_from_slice(low8.get(..counts.partials)?);
            for (d, s) in low2_out
                .chunks_mut(4)
                .zip(low2.iter().map(|w| w.to_le_bytes()))
            {
                d.copy_from_slice(s.get(..d.len())?);
            }
        }
    }
    Some(total)
}

/// Why a header or layout is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayoutError {
    /// The input ends early.
    Truncated,
    /// A field is invalid.
    Corrupt,
}

/// Splits an encoded page of `words` words (1024 or 4096) into its areas, checking the header
/// and the exact length.
///
/// # Errors
/// [`LayoutError::Truncated`] when the input is shorter than the header says,
/// [`LayoutError::Corrupt`] for a bad magic, version, page size, count or trailing bytes.
pub(crate) fn split(input: &[u8], words: usize) -> Result<Areas<'_>, LayoutError> {
    let Some((header, body)) = input.split_first_chunk::<HEADER_LEN>() else {
        return Err(LayoutError::Truncated);
    };
    let log2 = words.trailing_zeros() + 2;
    if header[0..2] != MAGIC || header[2] != VERSION || u32::from(header[3]) != log2 {
        return Err(LayoutError::Corrupt);
    }
    let field = |i: usize| usize::from(u16::from_le_bytes([header[i], header[i + 1]]));
    let counts = Counts {
        misses: field(4),
        indices: field(6),
        partials: field(8),
    };
    if field(10) != 0 || counts.partials > counts.indices || counts.misses + counts.indices > words
    {
        return Err(LayoutError::Corrupt);
    }
    let total = counts.encoded_len(words);
    if input.len() < total {
        return Err(LayoutError::Truncated);
    }
    if input.len() > total {
        return Err(LayoutError::Corrupt);
    }
    let (tags, rest) = body.split_at(words / 4);
    let (misses, rest) = rest.split_at(4 * counts.misses);
    let (indices, rest) = rest.split_at(counts.indices.div_ceil(2));
    let (low8, low2) = rest.split_at(counts.partials);
    // Canonical padding: unused bits of the last index and low-2 bytes are zero.
    if counts.indices % 2 == 1 && indices.last().is_some_and(|b| b >> 4 != 0) {
        return Err(LayoutError::Corrupt);
    }
    let used = 2 * (counts.partials % 4);
    if used != 0 && low2.last().is_some_and(|b| b >> used != 0) {
        return Err(LayoutError::Corrupt);
    }
    let misses_at = HEADER_LEN + tags.len();
    let indices_at = misses_at + misses.len();
    let low8_at = indices_at + indices.len();
    let low2_at = low8_at + low8.len();
    Ok(Areas {
        counts,
        input,
        misses_at,
        indices_at,
        low8_at,
        low2_at,
        tags,
    })
}

/// Fixed-size reads anywhere in an encoded page, for decoders that read a few bytes past the
/// area they need: inside the page such a read returns the next area's bytes (which the
/// caller ignores), past its end zeros.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    /// The page's last `TAIL` bytes (or all of a shorter one), then zeros.
    tail: [u8; 2 * Reader::TAIL],
    /// Offset of `tail[0]` in the page.
    tail_at: usize,
}

impl<'a> Reader<'a> {
    /// The longest read.
    pub(crate) const TAIL: usize = 64;

    /// Returns a reader of `input`.
    pub(crate) fn new(input: &'a [u8]) -> Self {
        let tail_at = input.len().saturating_sub(Self::TAIL);
        let mut tail = [0u8; 2 * Self::TAIL];
        let src = input.get(tail_at..).unwrap_or(&[]);
        if let Some(dst) = tail.get_mut(..src.len()) {
            dst.copy_from_slice(src);
        }
        Self {
            input,
            tail,
            tail_at,
        }
    }

    /// Returns the `N` (at most [`TAIL`](Self::TAIL)) bytes at `at`, zero past the page's
    /// end.
    #[inline(always)]
    pub(crate) fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        const { assert!(N <= Reader::TAIL) };
        if let Some(s) = self.input.get(at..).and_then(|s| s.first_chunk::<N>()) {
            return *s;
        }
        // Past `input.len() - N`, hence (for N <= TAIL) at or past `tail_at`.
        at.checked_sub(self.tail_at)
            .and_then(|t| self.tail.get(t..))
            .and_then(|s| s.first_chunk::<N>())
            .map_or([0; N], |s| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forecasts_are_made_at_quarter_pages_only_and_scale_linearly() {
        let words = 1024;
        let fixed = HEADER_LEN + words / 4;
        // A quarter of the page: 10 misses, 21 indices, 3 partials (21 / 2 = 10 nibble
        // bytes so far): 40 + 10 + 3 = 53 variable bytes, 212 forecast for the page.
        let c = Counts {
            misses: 10,
            indices: 21,
            partials: 3,
        };
        assert!(c.forecast_passes(words, 256, fixed + 211));
        assert!(!c.forecast_passes(words, 256, fixed + 212));
        // Half-way the same counts forecast half as much (106), at three quarters 53 * 4 / 3
        // rounded down (70).
        assert!(c.forecast_passes(words, 512, fixed + 105));
        assert!(!c.forecast_passes(words, 512, fixed + 106));
        assert!(c.forecast_passes(words, 768, fixed + 69));
        assert!(!c.forecast_passes(words, 768, fixed + 70));
        // No forecast away from the quarters, at the start or at the end of the page.
        for done in [0, 16, 255, 257, 1000, 1024] {
            assert!(!c.forecast_passes(words, done, 0), "done {done}");
        }
        // 16 KiB pages: quarters of 1024 words.
        assert!(c.forecast_passes(4096, 1024, HEADER_LEN + 1024 + 211));
        assert!(!c.forecast_passes(4096, 256, 0));
        // Counts too large to scale do not wrap around.
        let huge = Counts {
            misses: usize::MAX / 8,
            indices: 0,
            partials: 0,
        };
        assert!(huge.forecast_passes(words, 256, usize::MAX - 1));
    }

    #[test]
    fn reader_returns_input_bytes_then_zeros() {
        let input: [u8; 100] = core::array::from_fn(|i| i as u8 + 1);
        let r = Reader::new(&input);
        assert_eq!(r.bytes::<8>(0), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.bytes::<4>(96), [97, 98, 99, 100]);
        assert_eq!(r.bytes::<4>(98), [99, 100, 0, 0]);
        assert_eq!(r.bytes::<16>(99)[..2], [100, 0]);
        assert_eq!(r.bytes::<64>(60)[..40], input[60..]);
        assert_eq!(r.bytes::<64>(60)[40..], [0; 24]);
        assert_eq!(r.bytes::<8>(100), [0; 8]);
        assert_eq!(r.bytes::<64>(usize::MAX - 3), [0; 64]);
    }

    #[test]
    fn reader_of_a_short_input() {
        let r = Reader::new(&[7, 8, 9]);
        assert_eq!(r.bytes::<4>(0), [7, 8, 9, 0]);
        assert_eq!(r.bytes::<4>(2), [9, 0, 0, 0]);
        assert_eq!(r.bytes::<64>(1)[..3], [8, 9, 0]);
        assert_eq!(Reader::new(&[]).bytes::<16>(0), [0; 16]);
    }
}
