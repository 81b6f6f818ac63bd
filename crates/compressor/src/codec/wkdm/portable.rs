//! The portable WKdm compressor: safe Rust, `core` only.
//!
//! It runs over blocks of 16 words without data-dependent branches inside a block: each
//! word's class is computed arithmetically, and each output stream is written at its current
//! position unconditionally and advanced only by the words that belong to it.

use super::format::{self, Counts, HEADER_LEN, LOW_MASK, TAG_EXACT, TAG_MISS, TAG_PARTIAL, slot};

/// Scratch sizes for a page of `N` words (const generics cannot derive them from `N`).
pub trait Geometry {
    /// Words per page.
    const WORDS: usize;
    /// Index stream scratch: `u64`s for `WORDS` nibbles plus one.
    type IndexScratch: AsMut<[u64]> + AsRef<[u64]>;
    /// Low-part scratch: the low 16 bits of each partial word (a power of two entries).
    type LowScratch: AsMut<[u16]> + AsRef<[u16]>;
    /// Returns zeroed scratch.
    fn scratch() -> (Self::IndexScratch, Self::LowScratch);
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
    type LowScratch = [u16; 1024];
    fn scratch() -> (Self::IndexScratch, Self::LowScratch) {
        ([0; 1024 / 16 + 1], [0; 1024])
    }
}

impl Geometry for Page16K {
    const WORDS: usize = 4096;
    type IndexScratch = [u64; 4096 / 16 + 1];
    type LowScratch = [u16; 4096];
    fn scratch() -> (Self::IndexScratch, Self::LowScratch) {
        ([0; 4096 / 16 + 1], [0; 4096])
    }
}

/// What a word adds to each stream, per class: 0 exact, 1 partial, 2 miss, 16 zero (others
/// unused). Fields: the tag in bits 30..32, the mask of the slot nibble appended to the index
/// stream, the index bits appended, the low parts appended, the miss words appended.
#[derive(Clone, Copy)]
struct Classes {
    tag: [u32; 32],
    index_mask: [u64; 32],
    index_bits: [u32; 32],
    partial: [usize; 32],
    miss: [usize; 32],
}

const CLASSES: Classes = {
    let mut c = Classes {
        tag: [0; 32],
        index_mask: [0; 32],
        index_bits: [0; 32],
        partial: [0; 32],
        miss: [0; 32],
    };
    c.tag[0] = TAG_EXACT << 30;
    c.index_mask[0] = 15;
    c.index_bits[0] = 4;
    c.tag[1] = TAG_PARTIAL << 30;
    c.index_mask[1] = 15;
    c.index_bits[1] = 4;
    c.partial[1] = 1;
    c.tag[2] = TAG_MISS << 30;
    c.miss[2] = 1;
    c
};

/// The state the serial pass carries from block to block.
struct Pass<'a> {
    dict: [u32; 256],
    classes: Classes,
    low: &'a mut [u16],
    partials: usize,
}

/// One block's results: tags, index nibbles and their bit count, miss count.
struct Block {
    tags: u32,
    index: u64,
    index_bits: u32,
    misses: usize,
}

impl Pass<'_> {
    /// Runs the serial pass over 16 words with their `slots`, storing every word at the
    /// block's miss cursor in `miss_out` (so its first `misses` words are the misses) and
    /// the low 16 bits of every word at the partial cursor.
    #[inline(always)]
    fn block(&mut self, block: &[u32; 16], slots: &[u8; 16], miss_out: &mut [u8; 64]) -> Block {
        let c = &self.classes;
        let low_mask = self.low.len() - 1;
        let mut b = Block {
            tags: 0,
            index: 0,
            index_bits: 0,
            misses: 0,
        };
        let mut partials = self.partials;
        for (&w, &h) in block.iter().zip(slots) {
            let h = usize::from(h);
            let d = self.dict[h];
            self.dict[h] = w;
            let x = w ^ d;
            let k = (usize::from(x != 0) + usize::from(x > LOW_MASK) + (h & 16)) & 31;
            // Word j's tag ends in bits 2j..2j+2 after the 16 shifts.
            b.tags = (b.tags >> 2) | c.tag[k];
            b.index |= (h as u64 & c.index_mask[k]) << b.index_bits;
            b.index_bits += c.index_bits[k];
            if let Some(l) = self.low.get_mut(partials & low_mask) {
                *l = w as u16;
            }
            partials += c.partial[k];
            let m = 4 * (b.misses & 15);
            if let Some(dst) = miss_out.get_mut(m..m + 4) {
                dst.copy_from_slice(&w.to_le_bytes());
            }
            b.misses += c.miss[k];
        }
        self.partials = partials;
        b
    }
}

/// Compresses `page` (`G::WORDS` words) into `out`. Returns the encoded length, or `None`
/// when the encoding would be longer than `budget` bytes or than `out`.
///
/// The slots of each run of 256 words are computed first (a loop the compiler vectorizes),
/// then per block of 16 words one serial pass looks up and replaces each word's dictionary
/// entry and appends to the streams through a per-class table: the index nibbles gather in
/// a register, the low 16 bits of every word are stored at the partial cursor (which only
/// partial words advance), every word is stored at the block's miss cursor (straight into
/// the output while there is room). The low parts are split into their 8-bit and 2-bit
/// streams once at the end.
pub fn compress<G: Geometry>(page: &[u32], out: &mut [u8], budget: usize) -> Option<usize> {
    let words = G::WORDS;
    let budget = budget.min(out.len());
    let tag_len = words / 4;
    if page.len() != words || budget < HEADER_LEN + tag_len {
        return None;
    }
    let (mut idx_scratch, mut low_scratch) = G::scratch();
    let idx_s = idx_scratch.as_mut();

    let (_, body) = out.split_at_mut(HEADER_LEN);
    let (tag_area, miss_area) = body.split_at_mut(tag_len);

    // Zero words take slot 16, which only ever holds zero; 256 entries need no bound check
    // for a `u8` slot. The class table is copied to the stack, where it is addressed without
    // a base register.
    let mut pass = Pass {
        dict: [0; 256],
        classes: core::hint::black_box(CLASSES),
        low: low_scratch.as_mut(),
        partials: 0,
    };
    let mut counts = Counts {
        misses: 0,
        indices: 0,
        partials: 0,
    };
    // Index stream: u64 words, `idx_acc` holds `idx_bits` (< 64) pending bits.
    let (mut idx_acc, mut idx_bits, mut idx_pos) = (0u128, 0u32, 0usize);

    // The slots of a whole run of blocks first (a loop the compiler vectorizes), so the
    // serial pass reads them long after they were stored.
    let mut slots = [0u8; 256];
    for (i, (block, tag_out)) in page
        .chunks_exact(16)
        .zip(tag_area.chunks_exact_mut(4))
        .enumerate()
    {
        if i % 16 == 0 {
            let run = page.get(16 * i..16 * i + 256)?;
            for (h, &w) in slots.iter_mut().zip(run) {
                *h = if w == 0 { 16 } else { slot(w) as u8 };
            }
        }
        let block = <&[u32; 16]>::try_from(block).ok()?;
        let block_slots = slots
            .get(16 * (i % 16)..16 * (i % 16) + 16)?
            .first_chunk::<16>()?;
        // Misses go straight to the output while 64 bytes are left there, else through a
        // buffer that is copied as far as needed.
        let pos = 4 * counts.misses;
        let b = match miss_area
            .get_mut(pos..)
            .and_then(|s| s.first_chunk_mut::<64>())
        {
            Some(dst) => pass.block(block, block_slots, dst),
            None => {
                let mut buf = [0u8; 64];
                let b = pass.block(block, block_slots, &mut buf);
                let dst = miss_area.get_mut(pos..pos + 4 * b.misses)?;
                dst.copy_from_slice(buf.get(..4 * b.misses)?);
                b
            }
        };
        tag_out.copy_from_slice(&b.tags.to_le_bytes());
        counts.misses += b.misses;
        counts.indices += (b.index_bits / 4) as usize;
        counts.partials = pass.partials;
        let (block_idx, block_idx_bits) = (b.index, b.index_bits);

        // Index nibbles of the block (up to 64 bits) onto the stream.
        idx_acc |= u128::from(block_idx) << idx_bits;
        idx_bits += block_idx_bits;
        *idx_s.get_mut(idx_pos)? = idx_acc as u64;
        let full = (idx_bits >> 6) as usize;
        idx_pos += full;
        idx_acc >>= 64 * full as u32;
        idx_bits &= 63;
        *idx_s.get_mut(idx_pos)? = idx_acc as u64;

        if counts.min_len(words) > budget {
            return None;
        }
    }
    // Each block rewrites the stream word that holds its pending bits, so the scratch holds
    // every bit.
    format::write_streams(
        out,
        words,
        counts,
        budget,
        idx_s,
        format::LowParts::Wide(pass.low),
    )
}
