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
}

/// The areas of an encoded page.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Areas<'a> {
    /// Counts from the header.
    pub(crate) counts: Counts,
    /// Tag bytes.
    pub(crate) tags: &'a [u8],
    /// Miss words.
    pub(crate) misses: &'a [u8],
    /// Index nibbles.
    pub(crate) indices: &'a [u8],
    /// Low 8 bits of partial words.
    pub(crate) low8: &'a [u8],
    /// High 2 bits of the low parts.
    pub(crate) low2: &'a [u8],
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
    Ok(Areas {
        counts,
        tags,
        misses,
        indices,
        low8,
        low2,
    })
}

/// Reads up to 16 bytes at `offset` of `area` as a little-endian `u128`, zero past the end.
#[inline(always)]
pub(crate) fn window_u128(area: &[u8], offset: usize) -> u128 {
    if let Some(bytes) = area.get(offset..).and_then(|s| s.first_chunk::<16>()) {
        return u128::from_le_bytes(*bytes);
    }
    let mut buf = [0u8; 16];
    for (b, t) in buf.iter_mut().zip(area.get(offset..).unwrap_or(&[])) {
        *b = *t;
    }
    u128::from_le_bytes(buf)
}

/// Reads up to 8 bytes at `offset` of `area` as a little-endian `u64`, zero past the end.
#[inline(always)]
pub(crate) fn window_u64(area: &[u8], offset: usize) -> u64 {
    if let Some(bytes) = area.get(offset..).and_then(|s| s.first_chunk::<8>()) {
        return u64::from_le_bytes(*bytes);
    }
    let mut buf = [0u8; 8];
    for (b, t) in buf.iter_mut().zip(area.get(offset..).unwrap_or(&[])) {
        *b = *t;
    }
    u64::from_le_bytes(buf)
}

/// Reads up to 16 little-endian words at word `index` of the miss area, zero past the end.
#[inline(always)]
pub(crate) fn miss_window(area: &[u8], index: usize) -> [u32; 16] {
    let mut words = [0u32; 16];
    let tail = area.get(4 * index..).unwrap_or(&[]);
    for (w, b) in words.iter_mut().zip(tail.chunks_exact(4)) {
        if let Ok(b) = <[u8; 4]>::try_from(b) {
            *w = u32::from_le_bytes(b);
        }
    }
    words
}
