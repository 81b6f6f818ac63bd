//! The x86_64 AVX-512 WKdm path (F, BW, CD, VL, VBMI2 and GFNI, with AVX2, BMI2, POPCNT and
//! LZCNT). Same format and results as the portable path. Compiled only by Rust 1.89 or later
//! (`cfg(machvm_avx512)`, set by `build.rs`).
//!
//! # Design
//!
//! The 16-entry dictionary lives in one `zmm` register and each block of 16 words is handled
//! in vector registers; no scalar pass over the words remains.
//!
//! For a block, with the slot of each word in a lane:
//! - `vpconflictd` gives each lane the mask of the earlier lanes with the same slot; its
//!   highest bit (`vplzcntd`) is the last such lane, so a word's dictionary entry is that
//!   lane's word, or the dictionary's before the block when there is none;
//! - the *slot rows* (lane `k`: the mask of the lanes with slot `k`, a 16×16 bit transpose
//!   done with one-hot bytes and one `vgf2p8affineqb`) give the last lane of each slot, so the
//!   dictionary after the block is one masked permutation of the block's words.
//!
//! So the only dependency from block to block is that permutation of the dictionary; the
//! rest of each block overlaps with its neighbours. The compressor writes the tags (`pdep`),
//! the misses compacted with `vpcompressd` straight into the output, and the index byte of
//! each exact or partial word and the low 16 bits of each partial word compacted into scratch
//! (`vpcompressb`, `vpcompressw`), which is packed into the index, low-8 and low-2 streams
//! once at the end. (No compress instruction stores to memory: that form is very slow on some
//! CPUs.)
//!
//! Decompression is the same in reverse: the index nibbles and low parts are first spread to
//! one scratch entry each; per block the tags become lane masks, the indices, low parts and
//! miss words are spread to their lanes with `vpexpandb`, `vpexpandw` and `vpexpandd`, a
//! miss's slot is its hash and a match's slot its stored index. A lane's upper 22 bits come
//! from the last earlier miss of its slot in the block (partial matches keep the upper bits),
//! an exact match's low bits from the last earlier write (miss or partial), each from the
//! dictionary before the block when there is none.
//!
//! Every read of the stream goes through [`format::Reader`] (bounded, zeros past the end);
//! every write goes to a bounds-checked slice.
//!
//! Only reached when the codec was built with a [`VectorPolicy`](crate::codec::VectorPolicy)
//! that found or was promised these features.

use core::arch::x86_64::{
    __m128i, __m256i, __m512i, _MM_HINT_T0, _mm_loadu_si128, _mm_maskz_compress_epi8,
    _mm_maskz_expand_epi8, _mm_prefetch, _mm_set1_epi8, _mm_storeu_si128,
    _mm256_broadcastsi128_si256, _mm256_gf2p8affine_epi64_epi8, _mm256_loadu_si256,
    _mm256_maskz_compress_epi16, _mm256_maskz_expand_epi16, _mm256_set1_epi64x, _mm256_setr_epi8,
    _mm256_shuffle_epi8, _mm256_storeu_si256, _mm256_unpackhi_epi64, _mm256_unpacklo_epi8,
    _mm512_and_si512, _mm512_broadcastmw_epi32, _mm512_conflict_epi32, _mm512_cvtepi16_epi8,
    _mm512_cvtepi32_epi8, _mm512_cvtepi32_epi16, _mm512_cvtepu8_epi16, _mm512_cvtepu8_epi32,
    _mm512_cvtepu16_epi32, _mm512_loadu_si512, _mm512_lzcnt_epi32, _mm512_maddubs_epi16,
    _mm512_mask_cvtepi32_epi8, _mm512_mask_mov_epi32, _mm512_mask_permutexvar_epi32,
    _mm512_mask_srli_epi32, _mm512_mask_testn_epi32_mask, _mm512_maskz_compress_epi32,
    _mm512_maskz_expand_epi32, _mm512_maskz_mov_epi32, _mm512_mullo_epi32, _mm512_or_si512,
    _mm512_permutexvar_epi32, _mm512_set_epi8, _mm512_set_epi16, _mm512_set1_epi16,
    _mm512_set1_epi32, _mm512_set1_epi64, _mm512_setr_epi32, _mm512_setzero_si512,
    _mm512_shuffle_epi8, _mm512_slli_epi16, _mm512_slli_epi32, _mm512_sllv_epi16,
    _mm512_srli_epi32, _mm512_storeu_si512, _mm512_sub_epi32, _mm512_ternarylogic_epi32,
    _mm512_test_epi32_mask, _mm512_xor_si512, _pdep_u32, _pext_u32, _pext_u64,
};

use super::format::{self, Counts, HEADER_LEN, LOW_MASK};
use crate::codec::PageSize;

/// Compresses with AVX-512; same contract as the portable `compress`.
pub fn compress(
    page_size: PageSize,
    page: &[u32],
    out: &mut [u8],
    budget: usize,
    forecast: usize,
) -> Option<usize> {
    // SAFETY: this module is only called with `CodePath::X86Avx512`, which `VectorPolicy`
    // resolves only after run-time detection of every feature `compress_impl` and
    // `decompress_impl` enable (GFNI included), or the caller's `unsafe` promise of them
    // (`CpuFeatures::with_x86_avx512`).
    unsafe {
        match page_size {
            PageSize::Size4K => compress_impl::<1024, 1056>(page, out, budget, forecast),
            _ => compress_impl::<4096, 4128>(page, out, budget, forecast),
        }
    }
}

/// Decodes checked areas with AVX-512; same contract as the portable `decompress`.
pub fn decompress(areas: &format::Areas<'_>, out: &mut [u32]) -> bool {
    // SAFETY: as in `compress`: the path is chosen only when the features are present.
    unsafe { decompress_impl(areas, out) }
}

/// The hash multiplier of [`format::slot`].
const SLOT_MUL: u32 = 0x9E37_79B1;

/// The slot of each word (`format::slot`, vectorised).
#[inline]
#[target_feature(enable = "avx512f")]
fn slots(w: __m512i) -> __m512i {
    _mm512_srli_epi32::<28>(_mm512_mullo_epi32(
        _mm512_srli_epi32::<10>(w),
        _mm512_set1_epi32(SLOT_MUL as i32),
    ))
}

/// The slot rows of a block, from its 16 slot bytes `sb` (lane `i` in byte `i`; 0..16, or
/// `0x80` for a lane to ignore): lane `k` of the result holds the mask of the lanes of slot
/// `k`, *bit-reversed* (bit `b` stands for lane `15 - b`).
///
/// One-hot bytes per lane and half of the slots (`vpshufb`), then each 8×8 bit matrix of
/// lanes × slots transposed with one `vgf2p8affineqb` (which takes the matrix rows in reverse
/// order), then the two halves of each row interleaved.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,gfni")]
fn rows_reversed(sb: __m128i) -> __m512i {
    let both = _mm256_broadcastsi128_si256(sb);
    // Low 128 bits: the one-hot byte of slots 0..8, high 128 bits: of slots 8..16; bytes
    // with bit 7 set (ignored lanes) give zero.
    let lut = _mm256_setr_epi8(
        1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8,
        16, 32, 64, -128,
    );
    // Qword `2h + g`: lanes `8g..8g + 8` (byte `j` for lane `8g + j`), slots `8h..8h + 8`.
    let onehot = _mm256_shuffle_epi8(lut, both);
    // Byte `j` of `1 << j`: result byte `j` of each qword, bit `i`, is bit `j` of the
    // qword's byte `7 - i`, so byte `j` of qword `2h + g` holds the lanes `8g + 7 - i` of
    // slot `8h + j`.
    let t = _mm256_gf2p8affine_epi64_epi8::<0>(
        _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64),
        onehot,
    );
    // Words: lanes 8..16 (g = 1) in the low byte, lanes 0..8 in the high byte, so bit `b`
    // stands for lane `15 - b`.
    _mm512_cvtepu16_epi32(_mm256_unpacklo_epi8(_mm256_unpackhi_epi64(t, t), t))
}

/// The highest set bit of each lane (`-1` for a zero lane).
#[inline]
#[target_feature(enable = "avx512f,avx512cd")]
fn last_lane(masks: __m512i) -> __m512i {
    _mm512_sub_epi32(_mm512_set1_epi32(31), _mm512_lzcnt_epi32(masks))
}

/// Compresses a page of `N` words with AVX-512 (`P` = `N + 32`: the index-byte and low-part
/// scratch entries).
///
/// Per block of 16 words, in vector registers: the slots; the last earlier lane of the same
/// slot (`vpconflictd`, then the highest bit), so each word's dictionary entry is that
/// lane's word or the dictionary's before the block; the dictionary after the block through
/// the slot rows ([`rows_reversed`]); the classes as masks. Misses are compacted
/// (`vpcompressd`) straight into the output, and the index of each exact or partial word
/// (one byte each) and the low 16 bits of each partial word into scratch, at cursors the
/// counts advance. The index nibbles and the two low-part streams are packed once at the
/// end.
#[target_feature(
    enable = "avx512f,avx512bw,avx512cd,avx512vl,avx512vbmi2,gfni,avx2,bmi1,bmi2,popcnt,lzcnt"
)]
fn compress_impl<const N: usize, const P: usize>(
    page: &[u32],
    out: &mut [u8],
    budget: usize,
    forecast: usize,
) -> Option<usize> {
    let words = N;
    let budget = budget.min(out.len());
    let tag_len = words / 4;
    if page.len() != words || budget < HEADER_LEN + tag_len {
        return None;
    }
    // Index of each exact and partial word, one byte each; low 16 bits of each partial word.
    let mut idx_s = [0u8; P];
    let mut low_s = [0u16; P];
    let (_, body) = out.split_at_mut(HEADER_LEN);
    let (tag_area, miss_area) = body.split_at_mut(tag_len);

    let mut counts = Counts {
        misses: 0,
        indices: 0,
        partials: 0,
    };
    let high = _mm512_set1_epi32(!LOW_MASK as i32);
    let mut dict = _mm512_setzero_si512();
    // Quarters of the page, so that the forecast is checked between them, not per block.
    for (q, (quarter, quarter_tags)) in page
        .chunks_exact(N / 4)
        .zip(tag_area.chunks_exact_mut(N / 16))
        .enumerate()
    {
        for (block, tag_out) in quarter
            .chunks_exact(16)
            .zip(quarter_tags.chunks_exact_mut(4))
        {
            let block = <&[u32; 16]>::try_from(block).ok()?;
            // SAFETY: `block` is 16 readable words; the load is unaligned.
            let w = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
            let nz = _mm512_test_epi32_mask(w, w);
            // Zero words take slot 0x80, which no other lane has and the rows ignore.
            let s = _mm512_mask_srli_epi32::<28>(
                _mm512_set1_epi32(0x80),
                nz,
                _mm512_mullo_epi32(
                    _mm512_srli_epi32::<10>(w),
                    _mm512_set1_epi32(SLOT_MUL as i32),
                ),
            );
            let sb = _mm512_cvtepi32_epi8(s);
            // Each word's dictionary entry: the last earlier word of the block with its slot,
            // else the dictionary's.
            let before = _mm512_conflict_epi32(s);
            let pred = _mm512_mask_permutexvar_epi32(
                _mm512_permutexvar_epi32(s, dict),
                _mm512_test_epi32_mask(before, before),
                last_lane(before),
                w,
            );
            // The dictionary after the block: each used slot's last word. In a bit-reversed row
            // the last lane is the lowest set bit `b`, and `lzcnt(1 << b)` is `31 - b`, lane
            // `15 - b` in its low 4 bits.
            let r = rows_reversed(sb);
            let lowest = _mm512_and_si512(r, _mm512_sub_epi32(_mm512_setzero_si512(), r));
            dict = _mm512_mask_permutexvar_epi32(
                dict,
                _mm512_test_epi32_mask(r, r),
                _mm512_lzcnt_epi32(lowest),
                w,
            );
            let x = _mm512_xor_si512(w, pred);
            let exact = _mm512_mask_testn_epi32_mask(nz, x, x);
            let upper = _mm512_mask_testn_epi32_mask(nz, x, high);
            let (miss, partial) = (nz ^ upper, upper ^ exact);
            // Tag bit 0 (exact or miss) and bit 1 (partial or miss) of each lane.
            let (b0, b1) = (u32::from(exact | miss), u32::from(nz ^ exact));
            let (p, m) = (b1 & !b0, b0 & b1);
            let tags = _pdep_u32(b0, 0x5555_5555) | _pdep_u32(b1, 0xAAAA_AAAA);
            tag_out.copy_from_slice(&tags.to_le_bytes());

            // Misses, compacted.
            let n = m.count_ones() as usize;
            let packed = _mm512_maskz_compress_epi32(miss, w);
            let pos = 4 * counts.misses;
            if let Some(dst) = miss_area.get_mut(pos..pos + 64) {
                // SAFETY: `dst` is 64 writable bytes; the store is unaligned.
                unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), packed) };
            } else {
                let mut tmp = [0u32; 16];
                // SAFETY: `tmp` is 64 writable bytes; the store is unaligned.
                unsafe { _mm512_storeu_si512(tmp.as_mut_ptr().cast(), packed) };
                format::put_words(miss_area.get_mut(pos..pos + 4 * n)?, &tmp);
            }
            counts.misses += n;

            // Indices of the exact and partial words, compacted bytes.
            let dst = idx_s.get_mut(counts.indices..counts.indices + 16)?;
            // SAFETY: `dst` is 16 writable bytes; the store is unaligned.
            unsafe {
                _mm_storeu_si128(dst.as_mut_ptr().cast(), _mm_maskz_compress_epi8(upper, sb));
            }
            counts.indices += (b0 ^ b1).count_ones() as usize;

            // Low 16 bits of the partial words, compacted.
            let dst = low_s.get_mut(counts.partials..counts.partials + 16)?;
            let low = _mm256_maskz_compress_epi16(partial, _mm512_cvtepi32_epi16(w));
            // SAFETY: `dst` is 32 writable bytes; the store is unaligned.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), low) };
            counts.partials += p.count_ones() as usize;

            if counts.min_len(words) > budget {
                return None;
            }
        }
        if counts.forecast_passes(words, N / 4 * (q + 1), forecast) {
            return None;
        }
    }
    finish(out, words, counts, budget, &mut idx_s, &mut low_s)
}

/// Writes the header and the index, low-8 and low-2 streams of a compressed page whose tags
/// and misses are in place, from the index bytes and low 16-bit parts the compressor
/// gathered (`N + 32` entries each). Returns the encoded length, or `None` when it passes
/// `budget`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,bmi1,bmi2")]
fn finish<const P: usize>(
    out: &mut [u8],
    words: usize,
    counts: Counts,
    budget: usize,
    idx_s: &mut [u8; P],
    low_s: &mut [u16; P],
) -> Option<usize> {
    let format::StreamAreas {
        index: idx_out,
        low8: low8_out,
        low2: low2_out,
        total,
    } = format::stream_areas(out, words, counts, budget)?;
    // Unused halves of the last index byte and bits of the last low-2 byte are zero.
    idx_s.get_mut(counts.indices..counts.indices + 1)?.fill(0);
    low_s.get_mut(counts.partials..counts.partials + 3)?.fill(0);

    // Index nibbles: 64 index bytes to 32 bytes, byte `2j` in the low nibble.
    let nib_pairs = _mm512_set1_epi16(0x1001);
    for (i, d) in idx_out.chunks_mut(32).enumerate() {
        let src = idx_s.get(64 * i..64 * i + 64)?;
        // SAFETY: `src` is 64 readable bytes; the load is unaligned.
        let v = unsafe { _mm512_loadu_si512(src.as_ptr().cast()) };
        let packed = _mm512_cvtepi16_epi8(_mm512_maddubs_epi16(v, nib_pairs));
        store_prefix32(d, packed);
    }
    // Low 8 bits: 32 words to 32 bytes.
    for (i, d) in low8_out.chunks_mut(32).enumerate() {
        let src = low_s.get(32 * i..32 * i + 32)?;
        // SAFETY: `src` is 64 readable bytes; the load is unaligned.
        let v = unsafe { _mm512_loadu_si512(src.as_ptr().cast()) };
        store_prefix32(d, _mm512_cvtepi16_epi8(v));
    }
    // Bits 8 and 9: four words to a byte.
    for (i, d) in low2_out.iter_mut().enumerate() {
        let src = low_s.get(4 * i..4 * i + 4)?;
        let q = u64::from(src[0])
            | u64::from(src[1]) << 16
            | u64::from(src[2]) << 32
            | u64::from(src[3]) << 48;
        *d = _pext_u64(q, 0x0300_0300_0300_0300) as u8;
    }
    Some(total)
}

/// Stores the first `d.len()` (at most 32) bytes of `v` into `d`.
#[inline]
#[target_feature(enable = "avx2")]
fn store_prefix32(d: &mut [u8], v: __m256i) {
    if let Some(d) = d.first_chunk_mut::<32>() {
        // SAFETY: `d` is 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), v) };
    } else {
        let mut tmp = [0u8; 32];
        // SAFETY: `tmp` is 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(tmp.as_mut_ptr().cast(), v) };
        let n = d.len();
        if let Some(src) = tmp.get(..n) {
            d.copy_from_slice(src);
        }
    }
}

/// The 64 bytes at `at` of the page as a vector (see [`format::Reader`]).
#[inline]
#[target_feature(enable = "avx512f")]
fn load64(reader: &format::Reader<'_>, at: usize) -> __m512i {
    let bytes = reader.bytes::<64>(at);
    // SAFETY: `bytes` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
}

/// Entries of the decoder's scratch windows: a 4 KiB page's worth and a chunk more.
const WINDOW: usize = 1024 + 64;

/// Spreads the index nibbles `base..` (`base` even) of the stream to one byte each in `win`,
/// as many of the `count` indices as fit (in chunks of 64; past `count` the bytes are the
/// next area's or zero, which only a stream whose tags disagree with its counts reaches).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn fill_indices(
    reader: &format::Reader<'_>,
    at: usize,
    base: usize,
    count: usize,
    win: &mut [u8; WINDOW],
) {
    let n = count.saturating_sub(base).min(WINDOW);
    let nibbles = _mm512_set1_epi16(0x0F0F);
    for (i, d) in win.chunks_exact_mut(64).take(n.div_ceil(64)).enumerate() {
        let src = reader.bytes::<32>(at + base / 2 + 32 * i);
        // SAFETY: `src` is 32 readable bytes; the load is unaligned.
        let v = _mm512_cvtepu8_epi16(unsafe { _mm256_loadu_si256(src.as_ptr().cast()) });
        // Word `j`: the low nibble of byte `j` in its low byte, the high nibble in its high byte.
        let v = _mm512_and_si512(_mm512_or_si512(v, _mm512_slli_epi16::<4>(v)), nibbles);
        // SAFETY: `d` is 64 writable bytes; the store is unaligned.
        unsafe { _mm512_storeu_si512(d.as_mut_ptr().cast(), v) };
    }
}

/// Merges the low-8 and low-2 streams from partial word `base` on (`base` a multiple of 4)
/// into one 10-bit value each in `win`, as many of the `count` as fit (as
/// [`fill_indices`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn fill_lows(
    reader: &format::Reader<'_>,
    (low8_at, low2_at): (usize, usize),
    base: usize,
    count: usize,
    win: &mut [u16; WINDOW],
) {
    let n = count.saturating_sub(base).min(WINDOW);
    // 32 low-8 bytes and 8 low-2 bytes to 32 values: word `j` of each 128-bit lane `l` takes
    // low-2 byte `2l + j / 4`, shifted so that its bits `2 (j % 4)` land in bits 8 and 9.
    let spread = _mm512_set_epi8(
        -128, 7, -128, 7, -128, 7, -128, 7, -128, 6, -128, 6, -128, 6, -128, 6, //
        -128, 5, -128, 5, -128, 5, -128, 5, -128, 4, -128, 4, -128, 4, -128, 4, //
        -128, 3, -128, 3, -128, 3, -128, 3, -128, 2, -128, 2, -128, 2, -128, 2, //
        -128, 1, -128, 1, -128, 1, -128, 1, -128, 0, -128, 0, -128, 0, -128, 0,
    );
    let shifts = _mm512_set_epi16(
        2, 4, 6, 8, 2, 4, 6, 8, 2, 4, 6, 8, 2, 4, 6, 8, 2, 4, 6, 8, 2, 4, 6, 8, 2, 4, 6, 8, 2, 4,
        6, 8,
    );
    let bits89 = _mm512_set1_epi16(0x300);
    for (i, d) in win.chunks_exact_mut(32).take(n.div_ceil(32)).enumerate() {
        let low8 = reader.bytes::<32>(low8_at + base + 32 * i);
        // SAFETY: `low8` is 32 readable bytes; the load is unaligned.
        let low8 = _mm512_cvtepu8_epi16(unsafe { _mm256_loadu_si256(low8.as_ptr().cast()) });
        let low2 = u64::from_le_bytes(reader.bytes::<8>(low2_at + base / 4 + 8 * i));
        let low2 = _mm512_sllv_epi16(
            _mm512_shuffle_epi8(_mm512_set1_epi64(low2 as i64), spread),
            shifts,
        );
        // (low2 & 0x300) | low8
        let v = _mm512_ternarylogic_epi32::<0xF8>(low8, low2, bits89);
        // SAFETY: `d` is 64 writable bytes; the store is unaligned.
        unsafe { _mm512_storeu_si512(d.as_mut_ptr().cast(), v) };
    }
}

/// Decodes with AVX-512, one block of 16 words per step (see the module docs).
///
/// The index nibbles are spread to one byte each and the two low-part streams merged into
/// 16-bit values in scratch windows first: the whole of a 4 KiB page's at once, a 16 KiB
/// page's refilled from the block's cursor whenever a block would read past the window.
#[target_feature(
    enable = "avx512f,avx512bw,avx512cd,avx512vl,avx512vbmi2,gfni,avx2,bmi1,bmi2,popcnt,lzcnt"
)]
fn decompress_impl(areas: &format::Areas<'_>, out: &mut [u32]) -> bool {
    // The streams are read out of order (the index and low-part areas first, the misses
    // block by block), so all their cache lines are requested at once.
    for at in (0..areas.input.len()).step_by(64) {
        // A prefetch never faults; the address is inside `input`.
        _mm_prefetch::<_MM_HINT_T0>(areas.input.as_ptr().wrapping_add(at).cast());
    }
    let reader = format::Reader::new(areas.input);
    let c = areas.counts;
    let lows_at = (areas.low8_at, areas.low2_at);
    let (mut idx_s, mut low_s) = ([0u8; WINDOW], [0u16; WINDOW]);
    let (mut idx_base, mut low_base) = (0usize, 0usize);
    fill_indices(&reader, areas.indices_at, 0, c.indices, &mut idx_s);
    fill_lows(&reader, lows_at, 0, c.partials, &mut low_s);

    let high = _mm512_set1_epi32(!LOW_MASK as i32);
    // Lane `i` of the tags: bit `2i`, bit `2i + 1`.
    let tag_bit0 = _mm512_setr_epi32(
        1,
        1 << 2,
        1 << 4,
        1 << 6,
        1 << 8,
        1 << 10,
        1 << 12,
        1 << 14,
        1 << 16,
        1 << 18,
        1 << 20,
        1 << 22,
        1 << 24,
        1 << 26,
        1 << 28,
        1 << 30,
    );
    let tag_bit1 = _mm512_slli_epi32::<1>(tag_bit0);
    let mut dict = _mm512_setzero_si512();
    let (mut ic, mut pc, mut mc) = (0usize, 0usize, 0usize);
    for (block, tags) in out.chunks_exact_mut(16).zip(areas.tags.chunks_exact(4)) {
        let Ok(block) = <&mut [u32; 16]>::try_from(block) else {
            return false;
        };
        let tags = u32::from_le_bytes([tags[0], tags[1], tags[2], tags[3]]);
        if tags == 0 {
            *block = [0; 16];
            continue;
        }
        let tv = _mm512_set1_epi32(tags as i32);
        let (b0, b1) = (
            _mm512_test_epi32_mask(tv, tag_bit0),
            _mm512_test_epi32_mask(tv, tag_bit1),
        );
        let (exact, partial, miss) = (b0 & !b1, b1 & !b0, b0 & b1);
        let (midx, writes, nz) = (b0 ^ b1, b1, b0 | b1);

        // Stored indices, low parts and miss words, spread to their lanes.
        if ic + 16 > idx_base + WINDOW {
            idx_base = ic & !1;
            fill_indices(&reader, areas.indices_at, idx_base, c.indices, &mut idx_s);
        }
        if pc + 16 > low_base + WINDOW {
            low_base = pc & !3;
            fill_lows(&reader, lows_at, low_base, c.partials, &mut low_s);
        }
        let (Some(idx), Some(low)) = (
            idx_s.get(ic - idx_base..ic - idx_base + 16),
            low_s.get(pc - low_base..pc - low_base + 16),
        ) else {
            return false;
        };
        // SAFETY: `idx` is 16 readable bytes; the load is unaligned.
        let vidx = _mm512_cvtepu8_epi32(_mm_maskz_expand_epi8(midx, unsafe {
            _mm_loadu_si128(idx.as_ptr().cast())
        }));
        // SAFETY: `low` is 32 readable bytes; the load is unaligned.
        let vlow = _mm512_cvtepu16_epi32(_mm256_maskz_expand_epi16(partial, unsafe {
            _mm256_loadu_si256(low.as_ptr().cast())
        }));
        let vmiss = _mm512_maskz_expand_epi32(miss, load64(&reader, areas.misses_at + 4 * mc));
        let s = _mm512_mask_mov_epi32(vidx, miss, slots(vmiss));

        // The earlier writes (partial or miss) and misses of each lane's slot.
        let conf = _mm512_conflict_epi32(s);
        let before_w = _mm512_and_si512(conf, _mm512_broadcastmw_epi32(writes));
        let before_m = _mm512_and_si512(conf, _mm512_broadcastmw_epi32(miss));
        let from_dict = _mm512_permutexvar_epi32(s, dict);
        // The upper 22 bits: the last earlier miss's, else the dictionary's.
        let upper = _mm512_mask_permutexvar_epi32(
            from_dict,
            _mm512_test_epi32_mask(before_m, before_m),
            last_lane(before_m),
            vmiss,
        );
        // Writes: (upper & high) | low part, or the miss word.
        let written = _mm512_mask_mov_epi32(
            _mm512_ternarylogic_epi32::<0xF8>(vlow, upper, high),
            miss,
            vmiss,
        );
        // Exact matches: the last earlier write's word, else the dictionary's.
        let word = _mm512_mask_permutexvar_epi32(
            _mm512_mask_mov_epi32(written, exact, from_dict),
            exact & _mm512_test_epi32_mask(before_w, before_w),
            last_lane(before_w),
            written,
        );
        let word = _mm512_maskz_mov_epi32(nz, word);
        // SAFETY: `block` is 16 writable words; the store is unaligned.
        unsafe { _mm512_storeu_si512(block.as_mut_ptr().cast(), word) };

        // The dictionary after the block: each written slot's last word (see
        // `compress_impl`).
        let r = rows_reversed(_mm512_mask_cvtepi32_epi8(_mm_set1_epi8(-128), writes, s));
        let lowest = _mm512_and_si512(r, _mm512_sub_epi32(_mm512_setzero_si512(), r));
        dict = _mm512_mask_permutexvar_epi32(
            dict,
            _mm512_test_epi32_mask(r, r),
            _mm512_lzcnt_epi32(lowest),
            written,
        );
        let (t0, t1) = (_pext_u32(tags, 0x5555_5555), _pext_u32(tags, 0xAAAA_AAAA));
        ic += (t0 ^ t1).count_ones() as usize;
        pc += (t1 & !t0).count_ones() as usize;
        mc += (t0 & t1).count_ones() as usize;
    }
    ic == c.indices && pc == c.partials && mc == c.misses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_features() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512cd")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vbmi2")
            && std::is_x86_feature_detected!("gfni")
            && std::is_x86_feature_detected!("bmi2")
            && std::is_x86_feature_detected!("lzcnt")
    }

    #[test]
    fn rows_transpose_the_slots() {
        if cfg!(miri) || !has_features() {
            std::println!("note: no AVX-512 here; skipped");
            return;
        }
        let cases: [[u8; 16]; 4] = [
            [3, 0x80, 3, 0, 15, 7, 7, 7, 0x80, 1, 2, 3, 15, 0, 9, 9],
            [5; 16],
            [0x80; 16],
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        ];
        for slots in cases {
            let mut got = [0u32; 16];
            // SAFETY: the features were detected above; `slots` is 16 bytes, `got` 16 words.
            unsafe {
                let v = _mm_loadu_si128(slots.as_ptr().cast());
                _mm512_storeu_si512(got.as_mut_ptr().cast(), rows_for_test(v));
            }
            for (k, &row) in got.iter().enumerate() {
                let want = slots
                    .iter()
                    .enumerate()
                    .filter(|&(_, &s)| usize::from(s) == k)
                    .fold(0u32, |acc, (i, _)| acc | 1 << (15 - i));
                assert_eq!(row, want, "slot {k} of {slots:?}");
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,gfni")]
    fn rows_for_test(v: __m128i) -> __m512i {
        rows_reversed(v)
    }
}
