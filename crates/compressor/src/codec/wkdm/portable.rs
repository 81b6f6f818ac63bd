//! The portable WKdm path: safe Rust, `core` only.
//!
//! Both directions run over blocks of 16 words without data-dependent branches inside a
//! block: every word's tag is computed arithmetically, and each output stream is written at
//! its current position unconditionally and advanced only by the words that belong to it.

use super::format::{
    self, Counts, HEADER_LEN, LOW_MASK, TAG_MISS, TAG_PARTIAL, miss_window, slot, window_u64,
    window_u128,
};

/// Scratch sizes for a page of `N` words (const generics cannot derive them from `N`).
pub trait Geometry {
    /// Words per page.
    const WORDS: usize;
    /// Index stream scratch: `u64`s for `WORDS` nibbles plus one.
    type IndexScratch: AsMut<[u64]> + AsRef<[u64]>;
    /// Low-8 scratch: one byte per word (a power of two).
    type Low8Scratch: AsMut<[u8]> + AsRef<[u8]>;
    /// Low-2 scratch: `u32`s for `WORDS` 2-bit values plus one.
    type Low2Scratch: AsMut<[u32]> + AsRef<[u32]>;
    /// Returns zeroed scratch.
    fn scratch() -> (Self::IndexScratch, Self::Low8Scratch, Self::Low2Scratch);
}

/// 4 KiB pages.
#[derive(Debug)]
pub enum Page4K {}
/// 16 KiB pages.
#[derive(Debug)]
pub enum Page16K {}

impl Geometry for Page4K {
    const WORDS: usize = 1024;
    type IndexScratch = [u64; 1024 / 16 + 1];
    type Low8Scratch = [u8; 1024];
    type Low2Scratch = [u32; 1024 / 16 + 1];
    fn scratch() -> (Self::IndexScratch, Self::Low8Scratch, Self::Low2Scratch) {
        ([0; 1024 / 16 + 1], [0; 1024], [0; 1024 / 16 + 1])
    }
}

impl Geometry for Page16K {
    const WORDS: usize = 4096;
    type IndexScratch = [u64; 4096 / 16 + 1];
    type Low8Scratch = [u8; 4096];
    type Low2Scratch = [u32; 4096 / 16 + 1];
    fn scratch() -> (Self::IndexScratch, Self::Low8Scratch, Self::Low2Scratch) {
        ([0; 4096 / 16 + 1], [0; 4096], [0; 4096 / 16 + 1])
    }
}

/// Compresses `page` (`G::WORDS` words) into `out`. Returns the encoded length, or `None`
/// when the encoding would be longer than `budget` bytes or than `out`.
pub fn compress<G: Geometry>(page: &[u32], out: &mut [u8], budget: usize) -> Option<usize> {
    let words = G::WORDS;
    let budget = budget.min(out.len());
    let tag_len = words / 4;
    if page.len() != words || budget < HEADER_LEN + tag_len {
        return None;
    }
    let (mut idx_scratch, mut low8_scratch, mut low2_scratch) = G::scratch();
    let idx_s = idx_scratch.as_mut();
    let low8_s = low8_scratch.as_mut();
    let low8_mask = low8_s.len() - 1;
    let low2_s = low2_scratch.as_mut();

    let (_, body) = out.split_at_mut(HEADER_LEN);
    let (tag_area, miss_area) = body.split_at_mut(tag_len);

    // Slot 16 takes the zero words, which must not disturb the dictionary: so every word
    // stores itself, and no store depends on the load before it (no loop-carried chain).
    let mut dict = [0u32; 32];
    let mut counts = Counts {
        misses: 0,
        indices: 0,
        partials: 0,
    };
    // Index stream: u64 words, `idx_acc` holds `idx_bits` (< 64) pending bits.
    let (mut idx_acc, mut idx_bits, mut idx_pos) = (0u128, 0u32, 0usize);
    // Low-2 stream: u32 words, `low2_acc` holds `low2_bits` (< 32) pending bits.
    let (mut low2_acc, mut low2_bits, mut low2_pos) = (0u64, 0u32, 0usize);

    for (block, tag_out) in page.chunks_exact(16).zip(tag_area.chunks_exact_mut(4)) {
        let mut tags = 0u32;
        let mut block_idx = 0u64;
        let mut block_indices = 0u32;
        let mut misses = [0u32; 16];
        let mut block_misses = 0usize;
        let mut partials = counts.partials;
        for &w in block {
            let h = if w == 0 { 16 } else { slot(w) };
            let d = dict[h & 31];
            dict[h & 31] = w;
            let x = w ^ d;
            let nonzero = u32::from(w != 0);
            // zero 0, exact 1, partial 2, miss 3.
            let t = nonzero * (1 + u32::from(x != 0) + u32::from(x > LOW_MASK));
            // Word j's tag ends in bits 2j..2j+2 after the 16 shifts.
            tags = (tags >> 2) | (t << 30);
            let has_idx = t.wrapping_sub(1) < 2;
            block_idx |= (h as u64 & 0u64.wrapping_sub(u64::from(has_idx))) << (4 * block_indices);
            block_indices += u32::from(has_idx);
            let partial = t == TAG_PARTIAL;
            low8_s[partials & low8_mask] = w as u8;
            low2_acc |=
                u64::from((w >> 8) & 3 & 0u32.wrapping_sub(u32::from(partial))) << low2_bits;
            low2_bits += 2 * u32::from(partial);
            partials += usize::from(partial);
            misses[block_misses & 15] = w;
            block_misses += usize::from(t == TAG_MISS);
        }
        counts.partials = partials;
        tag_out.copy_from_slice(&tags.to_le_bytes());

        // Misses of the block: 64 bytes when there is room, else exactly what is needed.
        let pos = 4 * counts.misses;
        if let Some(dst) = miss_area.get_mut(pos..pos + 64) {
            for (d, w) in dst.chunks_exact_mut(4).zip(misses) {
                d.copy_from_slice(&w.to_le_bytes());
            }
        } else {
            let dst = miss_area.get_mut(pos..pos + 4 * block_misses)?;
            for (d, w) in dst.chunks_exact_mut(4).zip(misses) {
                d.copy_from_slice(&w.to_le_bytes());
            }
        }
        counts.misses += block_misses;
        counts.indices += block_indices as usize;

        // Index nibbles of the block (up to 64 bits) onto the stream.
        idx_acc |= u128::from(block_idx) << idx_bits;
        idx_bits += 4 * block_indices;
        *idx_s.get_mut(idx_pos)? = idx_acc as u64;
        let full = (idx_bits >> 6) as usize;
        idx_pos += full;
        idx_acc >>= 64 * full as u32;
        idx_bits &= 63;
        *idx_s.get_mut(idx_pos)? = idx_acc as u64;

        // Low-2 bits of the block (up to 32) onto the stream.
        *low2_s.get_mut(low2_pos)? = low2_acc as u32;
        let full = (low2_bits >> 5) as usize;
        low2_pos += full;
        low2_acc >>= 32 * full as u32;
        low2_bits &= 31;
        *low2_s.get_mut(low2_pos)? = low2_acc as u32;

        if counts.min_len(words) > budget {
            return None;
        }
    }
    // Each block rewrites the stream word that holds its pending bits, so the scratch holds
    // every bit.
    let total = counts.encoded_len(words);
    if total > budget {
        return None;
    }
    let (header, body) = out.split_first_chunk_mut::<HEADER_LEN>()?;
    format::write_header(header, words, counts);
    let rest = body.get_mut(tag_len + 4 * counts.misses..)?;
    let (idx_out, rest) = rest.split_at_mut(counts.indices.div_ceil(2));
    for (d, s) in idx_out
        .chunks_mut(8)
        .zip(idx_s.iter().map(|w| w.to_le_bytes()))
    {
        d.copy_from_slice(s.get(..d.len())?);
    }
    let (low8_out, rest) = rest.split_at_mut(counts.partials);
    low8_out.copy_from_slice(low8_s.get(..counts.partials)?);
    let low2_out = rest.get_mut(..counts.partials.div_ceil(4))?;
    for (d, s) in low2_out
        .chunks_mut(4)
        .zip(low2_s.iter().map(|w| w.to_le_bytes()))
    {
        d.copy_from_slice(s.get(..d.len())?);
    }
    Some(total)
}

/// Per tag (zero, exact, partial, miss): the bits a decoded word takes from the slot's upper
/// half, from its lower half, from the stored low part and from the miss word.
const KEEP_UPPER: [u32; 4] = [0, !LOW_MASK, !LOW_MASK, 0];
const KEEP_LOWER: [u32; 4] = [0, LOW_MASK, 0, 0];
const TAKE_LOW: [u32; 4] = [0, 0, LOW_MASK, 0];
const TAKE_MISS: [u32; 4] = [0, 0, 0, u32::MAX];

/// Decodes the areas of a checked stream into `out` (`words` words). Returns `false` when the
/// tags disagree with the header's counts (the output is then garbage, but derived from the
/// input only).
///
/// The dictionary is kept as two halves: the upper 22 bits of each slot (changed only by
/// misses) and its low 10 bits (changed by misses and partial matches). Every value stored
/// into either comes straight from the input streams, so no word waits for the decoding of
/// the word before it: the loop has no chain through memory.
pub fn decompress(areas: &format::Areas<'_>, out: &mut [u32]) -> bool {
    // Slot 16 is a sink for the words that leave a half unchanged; 32 entries let `& 31`
    // bound every index.
    let mut upper = [0u32; 32];
    let mut lower = [0u32; 32];
    let (mut indices, mut partials, mut misses) = (0usize, 0usize, 0usize);
    for (block, tag_bytes) in out.chunks_exact_mut(16).zip(areas.tags.chunks_exact(4)) {
        let Ok(tag_bytes) = <[u8; 4]>::try_from(tag_bytes) else {
            return false;
        };
        let tags = u32::from_le_bytes(tag_bytes);
        let idx_win = (window_u128(areas.indices, indices / 2) >> (4 * (indices % 2))) as u64;
        let low8_win = window_u128(areas.low8, partials).to_le_bytes();
        let low2_win = window_u64(areas.low2, partials / 4) >> (2 * (partials % 4));
        let miss_win = miss_window(areas.misses, misses);
        let (mut bi, mut bp, mut bm) = (0u32, 0u32, 0usize);
        for (j, o) in block.iter_mut().enumerate() {
            let t = (tags >> (2 * j)) & 3;
            let idx = ((idx_win >> (4 * bi)) & 15) as usize;
            let low =
                u32::from(low8_win[bp as usize & 15]) | (((low2_win >> (2 * bp)) as u32 & 3) << 8);
            let miss = miss_win[bm & 15];
            let is_miss = 0u32.wrapping_sub(u32::from(t == TAG_MISS));
            let is_partial = 0u32.wrapping_sub(u32::from(t == TAG_PARTIAL));
            // Exact: the slot's word; partial: its upper bits and the stored low bits; miss:
            // the miss word. The masks come from tables indexed by the tag so that the
            // compiler keeps both dictionary loads instead of branching around one.
            let ti = t as usize & 3;
            let w = (upper[idx] & KEEP_UPPER[ti])
                | (lower[idx] & KEEP_LOWER[ti])
                | (low & TAKE_LOW[ti])
                | (miss & TAKE_MISS[ti]);
            // What partial and miss words store, computed from the streams alone.
            let new_low = ((miss & is_miss) | (low & !is_miss)) & LOW_MASK;
            let miss_slot = slot(miss);
            // Masks instead of a `match`: the slots must not cost a branch per word.
            let m = is_miss as usize;
            let p = is_partial as usize;
            let upper_slot = (miss_slot & m) | (16 & !m);
            let lower_slot = (miss_slot & m) | (idx & p) | (16 & !(m | p));
            upper[upper_slot & 31] = miss;
            lower[lower_slot & 31] = new_low;
            *o = w;
            bi += u32::from(t.wrapping_sub(1) < 2);
            bp += u32::from(t == TAG_PARTIAL);
            bm += usize::from(t == TAG_MISS);
        }
        indices += bi as usize;
        partials += bp as usize;
        misses += bm;
    }
    let c = areas.counts;
    indices == c.indices && partials == c.partials && misses == c.misses
}
