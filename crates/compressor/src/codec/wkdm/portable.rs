//! The portable WKdm compressor: safe Rust, `core` only.
//!
//! A page is compressed in runs of [`RUN`] words, each in four passes:
//!
//! 1. **Slots** of every word (a loop the compiler vectorizes); zero words take slot 16,
//!    which only ever holds zero.
//! 2. **The serial dictionary pass**, the only one whose words depend on each other: each
//!    word looks up and replaces its dictionary entry, keeps the XOR of the two for the tag
//!    pass, and is appended to the miss and index streams by storing it at each stream's
//!    cursor unconditionally and advancing only the cursors of the streams it belongs to.
//!    There is no branch and no bound check per word.
//! 3. **Tags** from the words and their XORs (a vectorized loop, then four tags to a byte).
//! 4. **Low parts** of the partial words, found from the tag bits: partial words are the
//!    rarest class, so visiting only them costs less than a cursor per word in pass 2.
//!
//! The misses of a run are then copied to the output, the index bytes packed into nibbles.
//! The low parts are split into their 8-bit and 2-bit streams once at the end. The budget
//! is checked after each run.

use super::format::{self, Counts, HEADER_LEN, LOW_MASK, slot};

/// Words per run: the unit of the passes and of the budget check.
const RUN: usize = 256;
/// Index bytes a run's buffer holds: up to 15 carried over from the run before, then up to
/// one per word of the run (a power of two, so a masked cursor needs no bound check).
const IDX_BUF: usize = 512;

/// Scratch sizes for a page of `N` words (const generics cannot derive them from `N`).
pub trait Geometry {
    /// Words per page (a multiple of [`RUN`] and a power of two).
    const WORDS: usize;
    /// Index stream scratch: `u64`s for `WORDS` nibbles plus one.
    type IndexScratch: AsMut<[u64]> + AsRef<[u64]>;
    /// Low-part scratch: the low 16 bits of each partial word (`WORDS` entries).
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

/// Stream cursors of the passes over a run.
struct Cursors {
    /// Misses of the current run.
    misses: usize,
    /// Index bytes in the run's index buffer (carried-over ones included).
    index: usize,
    /// Partial words of the page.
    partials: usize,
}

/// The serial pass over one run: dictionary lookup and update, the XOR of each word with
/// its entry into `xs`, and the appends to the miss buffer and the index buffer (every word
/// is stored at each cursor; only the streams it belongs to advance theirs).
#[inline(always)]
fn serial(
    dict: &mut [u32; 256],
    words: &[u32; RUN],
    slots: &[u8; RUN],
    xs: &mut [u32; RUN],
    miss: &mut [u32; RUN],
    index: &mut [u8; IDX_BUF],
    cur: &mut Cursors,
) {
    let (mut m, mut c) = (cur.misses, cur.index);
    for (((w4, h4), x4), _) in words
        .chunks_exact(4)
        .zip(slots.chunks_exact(4))
        .zip(xs.chunks_exact_mut(4))
        .zip(0..RUN / 4)
    {
        for k in 0..4 {
            let (w, h) = (w4[k], usize::from(h4[k]));
            let d = dict[h];
            dict[h] = w;
            let x = w ^ d;
            x4[k] = x;
            // A run has at most RUN misses before the last word's store, so `m < RUN` here.
            miss[m & (RUN - 1)] = w;
            m += usize::from(x > LOW_MASK);
            index[c & (IDX_BUF - 1)] = h as u8;
            // Exact or partial: x fits the low bits, and the word is not zero (slot 16).
            c += usize::from(x <= LOW_MASK) - usize::from(w == 0);
        }
    }
    (cur.misses, cur.index) = (m, c);
}

/// Appends the low 16 bits of the run's partial words (tag 2) to `low` from entry `p` on,
/// visiting only those words: runs have few of them. Returns the new partial count.
#[inline(always)]
fn append_partials(tags: &[u8], run: &[u32; RUN], low: &mut [u16], mut p: usize) -> usize {
    let low_mask = low.len() - 1;
    for (k, t16) in tags.chunks_exact(16).enumerate() {
        // Bit j set for each partial word j of the 64 (tag 2: bit 2j + 1 set, bit 2j clear).
        let mut partial = 0u64;
        for (half, t8) in t16.chunks_exact(8).enumerate() {
            let mut t = [0u8; 8];
            t.copy_from_slice(t8);
            let t = u64::from_le_bytes(t);
            let mut b = (t >> 1) & !t & 0x5555_5555_5555_5555;
            b = (b | b >> 1) & 0x3333_3333_3333_3333;
            b = (b | b >> 2) & 0x0F0F_0F0F_0F0F_0F0F;
            b = (b | b >> 4) & 0x00FF_00FF_00FF_00FF;
            b = (b | b >> 8) & 0x0000_FFFF_0000_FFFF;
            b = (b | b >> 16) & 0xFFFF_FFFF;
            partial |= b << (32 * half);
        }
        while partial != 0 {
            let j = 64 * k + partial.trailing_zeros() as usize;
            low[p & low_mask] = run[j & (RUN - 1)] as u16;
            p += 1;
            partial &= partial - 1;
        }
    }
    p
}

/// Narrows eight values (each below 256) to bytes.
///
/// The per-word bytes of the slot and tag passes are built in 32-bit lanes and narrowed once
/// here. Built as bytes directly, each condition in them is narrowed on its own, which on
/// SSE2 (the baseline x86_64 target) takes two pack instructions per condition and four
/// words: compression then took about 8 % longer.
#[inline(always)]
fn narrow(values: [u32; 8], out: &mut [u8]) {
    for (d, v) in out.iter_mut().zip(values) {
        *d = v as u8;
    }
}

/// Packs 8 index bytes (each below 16) into 8 nibbles, the first in the low bits.
#[inline(always)]
fn pack_nibbles(bytes: [u8; 8]) -> u64 {
    let v = u64::from_le_bytes(bytes);
    let v = (v | v >> 4) & 0x00FF_00FF_00FF_00FF;
    let v = (v | v >> 8) & 0x0000_FFFF_0000_FFFF;
    (v | v >> 16) & 0xFFFF_FFFF
}

/// Compresses `page` (`G::WORDS` words) into `out`. Returns the encoded length, or `None`
/// when the encoding would be longer than `budget` bytes or than `out`, or when it is
/// forecast to pass `forecast` bytes ([`Counts::forecast_passes`]; `usize::MAX`: never).
pub fn compress<G: Geometry>(
    page: &[u32],
    out: &mut [u8],
    budget: usize,
    forecast: usize,
) -> Option<usize> {
    let words = G::WORDS;
    let budget = budget.min(out.len());
    let tag_len = words / 4;
    if page.len() != words || budget < HEADER_LEN + tag_len {
        return None;
    }
    let (mut idx_scratch, mut low_scratch) = G::scratch();
    let idx_s = idx_scratch.as_mut();
    let low = low_scratch.as_mut();

    let (_, body) = out.split_at_mut(HEADER_LEN);
    let (tag_area, miss_area) = body.split_at_mut(tag_len);

    // Zero words take slot 16, which only ever holds zero; 256 entries need no bound check
    // for a `u8` slot.
    let mut dict = [0u32; 256];
    let mut slots = [0u8; RUN];
    let mut xs = [0u32; RUN];
    let mut tag_bytes = [0u8; RUN];
    let mut miss = [0u32; RUN];
    let mut index = [0u8; IDX_BUF];
    let mut cur = Cursors {
        misses: 0,
        index: 0,
        partials: 0,
    };
    let mut counts = Counts {
        misses: 0,
        indices: 0,
        partials: 0,
    };
    // Packed index words written to `idx_s` so far.
    let mut idx_pos = 0usize;

    for (r, (run, tags)) in page
        .chunks_exact(RUN)
        .zip(tag_area.chunks_exact_mut(RUN / 4))
        .enumerate()
    {
        let run = <&[u32; RUN]>::try_from(run).ok()?;
        for (h8, w8) in slots.chunks_exact_mut(8).zip(run.chunks_exact(8)) {
            let mut t = [0u32; 8];
            for (t, &w) in t.iter_mut().zip(w8) {
                *t = slot(w) as u32 | u32::from(w == 0) << 4;
            }
            narrow(t, h8);
        }
        cur.misses = 0;
        serial(
            &mut dict, run, &slots, &mut xs, &mut miss, &mut index, &mut cur,
        );
        // Tags: zero 0, exact 1, partial 2, miss 3, i.e. the number of the conditions
        // "not zero", "differs from its entry", "differs in the upper bits" that hold (each
        // implies the ones before).
        for ((t8, w8), x8) in tag_bytes
            .chunks_exact_mut(8)
            .zip(run.chunks_exact(8))
            .zip(xs.chunks_exact(8))
        {
            let mut t = [0u32; 8];
            for ((t, &w), &x) in t.iter_mut().zip(w8).zip(x8) {
                *t = u32::from(w != 0) + u32::from(x != 0) + u32::from(x > LOW_MASK);
            }
            narrow(t, t8);
        }
        for (t, b) in tags.chunks_exact_mut(2).zip(tag_bytes.chunks_exact(8)) {
            let v = u64::from_le_bytes(b.try_into().ok()?);
            let v = v | v >> 6 | v >> 12 | v >> 18;
            t.copy_from_slice(&[v as u8, (v >> 32) as u8]);
        }
        cur.partials = append_partials(tags, run, low, cur.partials);
        // The run's misses after the page's misses so far (the encoding is too long for
        // `out` if they do not fit).
        let pos = 4 * counts.misses;
        format::put_words(miss_area.get_mut(pos..pos + 4 * cur.misses)?, &miss);
        counts.misses += cur.misses;
        counts.partials = cur.partials;
        // Whole groups of 16 index bytes to the packed scratch; the rest moves to the front.
        let full = cur.index / 16;
        for (d, s) in idx_s
            .get_mut(idx_pos..idx_pos + full)?
            .iter_mut()
            .zip(index.chunks_exact(16))
        {
            let (lo, hi) = s.split_at(8);
            *d = pack_nibbles(lo.try_into().ok()?) | pack_nibbles(hi.try_into().ok()?) << 32;
        }
        idx_pos += full;
        counts.indices += 16 * full;
        let rest = cur.index % 16;
        index.copy_within(16 * full..16 * full + rest, 0);
        cur.index = rest;
        let pending = Counts {
            indices: counts.indices + rest,
            ..counts
        };
        if pending.min_len(words) > budget
            || pending.forecast_passes(words, (r + 1) * RUN, forecast)
        {
            return None;
        }
    }
    // The last nibbles (unused ones zero).
    let rest = cur.index;
    if let Some(b) = index.get_mut(rest..16) {
        b.fill(0);
    }
    let (lo, hi) = index.split_at(8);
    *idx_s.get_mut(idx_pos)? =
        pack_nibbles(lo.try_into().ok()?) | pack_nibbles(hi.get(..8)?.try_into().ok()?) << 32;
    counts.indices += rest;
    format::write_streams(
        out,
        words,
        counts,
        budget,
        idx_s,
        format::LowParts::Wide(low),
    )
}
