//! The x86_64 AVX-512 WKdm path (F, BW, CD, VL, VBMI2, with AVX2, BMI2, POPCNT and LZCNT). Same
//! format and results as the portable path. Compiled only by Rust 1.89 or later
//! (`cfg(machvm_avx512)`, set by `build.rs`).
//!
//! # Design
//!
//! The 16-entry dictionary lives in one `zmm` register and each block of 16 words is handled
//! in vector registers; no scalar pass over the words remains.
//!
//! For a block, the *slot rows* are computed first: lane `s` (0..16) of a vector holds the
//! 16-bit mask of the block's lanes that use slot `s` (`rows`, a transposition through byte
//! compares). From them, with `vplzcntd`:
//! - the last earlier lane of the block with the same slot, for each lane (the rows permuted
//!   by the lane's slot, masked to the earlier lanes, then the highest set bit), so a word's
//!   dictionary entry is that lane's word, or the dictionary before the block when there is
//!   none;
//! - the last lane of each slot, so the dictionary after the block is the block's words
//!   permuted by those lanes, blended into the old dictionary where the slot was used.
//!
//! So the only dependency from block to block is one masked blend of the dictionary; the rest
//! of each block (classification, tags through `pdep`, misses compacted with `vpcompressd`
//! and low bytes with `vpcompressb`, low 2-bit parts and index nibbles through `pext`)
//! overlaps with its neighbours.
//!
//! Decompression is the same in reverse: tags become lane masks, the miss words and low
//! parts are spread to their lanes with `vpexpandd`, a miss's slot is its hash and a match's
//! slot its stored index. A lane's upper 22 bits come from the last earlier miss of its slot
//! in the block (partial matches keep the upper bits), its low bits from the last earlier
//! write (miss or partial), each from the dictionary before the block when there is none.
//!
//! Every read of the stream goes through [`format::Reader`] (bounded, zeros past the end);
//! every write goes to a bounds-checked slice.
//!
//! Only reached when the codec was built with a [`VectorPolicy`](crate::codec::VectorPolicy)
//! that found or was promised these features.

use core::arch::x86_64::{
    __m512i, __mmask16, _mm_and_si128, _mm_cvtsi64_si128, _mm_cvtsi128_si64, _mm_loadu_si128,
    _mm_maddubs_epi16, _mm_maskz_compress_epi8, _mm_packus_epi16, _mm_set1_epi8, _mm_set1_epi16,
    _mm_storeu_si128, _mm256_setr_epi64x, _mm512_and_si512, _mm512_andnot_si512,
    _mm512_broadcast_i32x4, _mm512_castsi128_si512, _mm512_cmpeq_epi8_mask, _mm512_cvtepi32_epi8,
    _mm512_cvtepu8_epi32, _mm512_cvtepu16_epi32, _mm512_loadu_si512, _mm512_lzcnt_epi32,
    _mm512_mask_mov_epi32, _mm512_mask_permutexvar_epi32, _mm512_maskz_compress_epi32,
    _mm512_maskz_expand_epi32, _mm512_maskz_mov_epi32, _mm512_maskz_permutexvar_epi32,
    _mm512_mullo_epi32, _mm512_or_si512, _mm512_permutexvar_epi32, _mm512_set1_epi32,
    _mm512_setr_epi32, _mm512_setzero_si512, _mm512_slli_epi32, _mm512_srli_epi32,
    _mm512_srlv_epi32, _mm512_storeu_si512, _mm512_sub_epi32, _mm512_ternarylogic_epi32,
    _mm512_test_epi32_mask, _mm512_testn_epi32_mask, _mm512_xor_si512, _pdep_u32, _pdep_u64,
    _pext_u32, _pext_u64,
};

use super::format::{self, Counts, HEADER_LEN, LOW_MASK};
use crate::codec::PageSize;

/// Compresses with AVX-512; same contract as the portable `compress`.
pub fn compress(page_size: PageSize, page: &[u32], out: &mut [u8], budget: usize) -> Option<usize> {
    // SAFETY: this module is only called with `CodePath::X86Avx512`, which `VectorPolicy`
    // resolves only after run-time detection of every feature `compress_impl` enables, or
    // the caller's `unsafe` promise of them (`CpuFeatures::with_x86_avx512`).
    unsafe {
        match page_size {
            PageSize::Size4K => compress_impl::<1024, 1040, 65>(page, out, budget),
            _ => compress_impl::<4096, 4112, 257>(page, out, budget),
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

/// Lane `i` holds `(1 << i) - 1`: the lanes before it.
#[inline]
#[target_feature(enable = "avx512f")]
fn earlier_lanes() -> __m512i {
    _mm512_setr_epi32(
        0, 0x1, 0x3, 0x7, 0xF, 0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF,
        0x7FFF,
    )
}

/// The slot of each word (`format::slot`, vectorised).
#[inline]
#[target_feature(enable = "avx512f")]
fn slots(w: __m512i) -> __m512i {
    _mm512_srli_epi32::<28>(_mm512_mullo_epi32(
        _mm512_srli_epi32::<10>(w),
        _mm512_set1_epi32(SLOT_MUL as i32),
    ))
}

/// The slot rows of `s` (slots 0..16 in lanes, 16 for lanes to ignore): lane `k` of the
/// result holds the mask of the lanes of `s` equal to `k`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn rows(s: __m512i) -> __m512i {
    // Four copies of the 16 slot bytes; compare 4 slots at a time, one per copy.
    let bytes = _mm512_broadcast_i32x4(_mm512_cvtepi32_epi8(s));
    let probe = |k: i32| {
        let q = 0x0101_0101 * (4 * k);
        _mm512_setr_epi32(
            q,
            q,
            q,
            q,
            q + 0x0101_0101,
            q + 0x0101_0101,
            q + 0x0101_0101,
            q + 0x0101_0101,
            q + 0x0202_0202,
            q + 0x0202_0202,
            q + 0x0202_0202,
            q + 0x0202_0202,
            q + 0x0303_0303,
            q + 0x0303_0303,
            q + 0x0303_0303,
            q + 0x0303_0303,
        )
    };
    let m0 = _mm512_cmpeq_epi8_mask(bytes, probe(0));
    let m1 = _mm512_cmpeq_epi8_mask(bytes, probe(1));
    let m2 = _mm512_cmpeq_epi8_mask(bytes, probe(2));
    let m3 = _mm512_cmpeq_epi8_mask(bytes, probe(3));
    _mm512_cvtepu16_epi32(_mm256_setr_epi64x(
        m0 as i64, m1 as i64, m2 as i64, m3 as i64,
    ))
}

/// The highest set bit of each lane (`-1` for a zero lane).
#[inline]
#[target_feature(enable = "avx512f,avx512cd")]
fn last_lane(masks: __m512i) -> __m512i {
    _mm512_sub_epi32(_mm512_set1_epi32(31), _mm512_lzcnt_epi32(masks))
}

/// The low nibble of each of the 16 slot bytes of `s`, packed into a `u64` (lane 0 in the
/// low nibble).
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx2")]
fn nibbles(s: __m512i) -> u64 {
    let b = _mm_and_si128(_mm512_cvtepi32_epi8(s), _mm_set1_epi8(15));
    let pairs = _mm_maddubs_epi16(b, _mm_set1_epi16(0x1001));
    _mm_cvtsi128_si64(_mm_packus_epi16(pairs, pairs)) as u64
}

/// Spreads the 16 bits of `m` to one all-ones nibble per bit.
#[inline]
#[target_feature(enable = "bmi2")]
fn nibble_mask(m: u32) -> u64 {
    _pdep_u64(u64::from(m), 0x1111_1111_1111_1111) * 0xF
}

/// Compresses a page of `N` words with AVX-512 (`L8` = `N + 16`, the low-8 scratch bytes;
/// `S` = `N / 16 + 1`, the index and low-2 scratch words).
#[target_feature(
    enable = "avx512f,avx512bw,avx512cd,avx512vl,avx512vbmi2,avx2,bmi1,bmi2,popcnt,lzcnt"
)]
fn compress_impl<const N: usize, const L8: usize, const S: usize>(
    page: &[u32],
    out: &mut [u8],
    budget: usize,
) -> Option<usize> {
    let words = N;
    let budget = budget.min(out.len());
    let tag_len = words / 4;
    if page.len() != words || budget < HEADER_LEN + tag_len {
        return None;
    }
    let mut idx_s = [0u64; S];
    let mut low8_s = [0u8; L8];
    let mut low2_s = [0u32; S];
    let (_, body) = out.split_at_mut(HEADER_LEN);
    let (tag_area, miss_area) = body.split_at_mut(tag_len);

    let mut counts = Counts {
        misses: 0,
        indices: 0,
        partials: 0,
    };
    let (mut idx_acc, mut idx_bits, mut idx_pos) = (0u128, 0u32, 0usize);
    let (mut low2_acc, mut low2_bits, mut low2_pos) = (0u64, 0u32, 0usize);
    let earlier = earlier_lanes();
    let mut dict = _mm512_setzero_si512();
    // Per run of 16 blocks: first the dictionary pass and classification of every block
    // (their only dependency is the dictionary blend, so blocks overlap), then the
    // compaction of the streams, which needs the classes only.
    for (run, run_tags) in page.chunks_exact(256).zip(tag_area.chunks_exact_mut(64)) {
        // Per block: exact, partial and miss masks in bits 0, 16 and 32; the index nibbles.
        let mut classes = [0u64; 16];
        let mut block_nibbles = [0u64; 16];
        for ((block, tag_out), (class, nib)) in run
            .chunks_exact(16)
            .zip(run_tags.chunks_exact_mut(4))
            .zip(classes.iter_mut().zip(block_nibbles.iter_mut()))
        {
            let block = <&[u32; 16]>::try_from(block).ok()?;
            // SAFETY: `block` is 16 readable words; the load is unaligned.
            let w = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
            let nz = _mm512_test_epi32_mask(w, w);
            // Zero words take slot 16, which no other lane has.
            let s = _mm512_mask_mov_epi32(_mm512_set1_epi32(16), nz, slots(w));
            let r = rows(s);
            // Each word's dictionary entry: the last earlier word of the block with its
            // slot, else the dictionary's.
            let before = _mm512_and_si512(_mm512_permutexvar_epi32(s, r), earlier);
            let pred = _mm512_mask_permutexvar_epi32(
                _mm512_permutexvar_epi32(s, dict),
                _mm512_test_epi32_mask(before, before),
                last_lane(before),
                w,
            );
            // The dictionary after the block: each used slot's last word.
            dict = _mm512_mask_mov_epi32(
                dict,
                _mm512_test_epi32_mask(r, r),
                _mm512_permutexvar_epi32(last_lane(r), w),
            );
            let x = _mm512_xor_si512(w, pred);
            let exact = _mm512_testn_epi32_mask(x, x) & nz;
            let upper = _mm512_testn_epi32_mask(x, _mm512_set1_epi32(!LOW_MASK as i32)) & nz;
            let partial = upper & !exact;
            let miss = nz & !upper;
            let (e, p, m) = (u32::from(exact), u32::from(partial), u32::from(miss));
            let tags = _pdep_u32(e | m, 0x5555_5555) | _pdep_u32(p | m, 0xAAAA_AAAA);
            tag_out.copy_from_slice(&tags.to_le_bytes());
            *class = u64::from(e) | u64::from(p) << 16 | u64::from(m) << 32;
            *nib = nibbles(s);
        }
        for ((block, &class), &nib) in run.chunks_exact(16).zip(&classes).zip(&block_nibbles) {
            let block = <&[u32; 16]>::try_from(block).ok()?;
            // SAFETY: `block` is 16 readable words; the load is unaligned.
            let w = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
            let (e, p, m) = (
                class as u32 & 0xFFFF,
                (class >> 16) as u32 & 0xFFFF,
                (class >> 32) as u32,
            );
            let (partial, miss) = (p as __mmask16, m as __mmask16);

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
                let dst = miss_area.get_mut(pos..pos + 4 * n)?;
                for (d, w) in dst.chunks_exact_mut(4).zip(tmp) {
                    d.copy_from_slice(&w.to_le_bytes());
                }
            }
            counts.misses += n;

            // Low parts of the partial words: the low bytes compacted, bits 8 and 9 through
            // `pext`.
            // (Compacted as bytes: a truncation stored straight to memory, `vpmovdb m128`, is
            // slow on some CPUs.)
            let low8 = _mm_maskz_compress_epi8(partial, _mm512_cvtepi32_epi8(w));
            let pc = counts.partials;
            let dst = low8_s.get_mut(pc..pc + 16)?;
            // SAFETY: `dst` is 16 writable bytes; the store is unaligned.
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), low8) };
            let b8 = u32::from(_mm512_test_epi32_mask(w, _mm512_set1_epi32(0x100)));
            let b9 = u32::from(_mm512_test_epi32_mask(w, _mm512_set1_epi32(0x200)));
            let low2_all = _pdep_u32(b8, 0x5555_5555) | _pdep_u32(b9, 0xAAAA_AAAA);
            let low2 = _pext_u32(low2_all, _pdep_u32(p, 0x5555_5555) * 3);
            low2_acc |= u64::from(low2) << low2_bits;
            low2_bits += 2 * p.count_ones();
            counts.partials += p.count_ones() as usize;
            *low2_s.get_mut(low2_pos)? = low2_acc as u32;
            let full = (low2_bits >> 5) as usize;
            low2_pos += full;
            low2_acc >>= 32 * full as u32;
            low2_bits &= 31;
            *low2_s.get_mut(low2_pos)? = low2_acc as u32;

            // Index nibbles of exact and partial words.
            let midx = e | p;
            let packed = _pext_u64(nib, nibble_mask(midx));
            idx_acc |= u128::from(packed) << idx_bits;
            idx_bits += 4 * midx.count_ones();
            counts.indices += midx.count_ones() as usize;
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
    }
    format::write_streams(
        out,
        words,
        counts,
        budget,
        &idx_s,
        format::LowParts::Split {
            low8: &low8_s,
            low2: &low2_s,
        },
    )
}

/// The 64 bytes at `at` of the page as a vector (see [`format::Reader`]).
#[inline]
#[target_feature(enable = "avx512f")]
fn load64(reader: &format::Reader<'_>, at: usize) -> __m512i {
    let bytes = reader.bytes::<64>(at);
    // SAFETY: `bytes` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
}

/// Decodes with AVX-512, one block of 16 words per step (see the module docs).
#[target_feature(enable = "avx512f,avx512bw,avx512cd,avx512vl,avx2,bmi1,bmi2,popcnt,lzcnt")]
fn decompress_impl(areas: &format::Areas<'_>, out: &mut [u32]) -> bool {
    let reader = format::Reader::new(areas.input);
    let earlier = earlier_lanes();
    let low_mask = _mm512_set1_epi32(LOW_MASK as i32);
    // Lanes 0..8 take the low half of a u64, lanes 8..16 the high half.
    let halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let shifts4 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    let shifts2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
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
        let bit0 = _pext_u32(tags, 0x5555_5555);
        let bit1 = _pext_u32(tags, 0xAAAA_AAAA);
        let (e, p, m) = (bit0 & !bit1, bit1 & !bit0, bit0 & bit1);
        let midx = e | p;
        let (partial, miss) = (p as __mmask16, m as __mmask16);

        // Stored indices, spread to the exact and partial lanes.
        let idx_win = (u128::from_le_bytes(reader.bytes::<16>(areas.indices_at + ic / 2))
            >> (4 * (ic % 2))) as u64;
        let idx_spread = _pdep_u64(idx_win, nibble_mask(midx));
        let vidx = _mm512_and_si512(
            _mm512_srlv_epi32(
                _mm512_permutexvar_epi32(
                    halves,
                    _mm512_castsi128_si512(_mm_cvtsi64_si128(idx_spread as i64)),
                ),
                shifts4,
            ),
            _mm512_set1_epi32(15),
        );
        // Low parts, spread to the partial lanes.
        let low8_bytes = reader.bytes::<16>(areas.low8_at + pc);
        // SAFETY: `low8_bytes` is 16 readable bytes; the load is unaligned.
        let low8 = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(low8_bytes.as_ptr().cast()) });
        let low2_win = (u64::from_le_bytes(reader.bytes::<8>(areas.low2_at + pc / 4))
            >> (2 * (pc % 4))) as u32;
        let low2 = _mm512_and_si512(
            _mm512_srlv_epi32(_mm512_set1_epi32(low2_win as i32), shifts2),
            _mm512_set1_epi32(3),
        );
        let vlow =
            _mm512_maskz_expand_epi32(partial, _mm512_or_si512(low8, _mm512_slli_epi32::<8>(low2)));
        // Miss words, spread to the miss lanes.
        let vmiss = _mm512_maskz_expand_epi32(miss, load64(&reader, areas.misses_at + 4 * mc));

        let s = _mm512_mask_mov_epi32(vidx, miss, slots(vmiss));
        // Rows of the writing lanes (partial and miss); zero and exact lanes take slot 16.
        let writes = partial | miss;
        let r = rows(_mm512_mask_mov_epi32(_mm512_set1_epi32(16), writes, s));
        let before_w = _mm512_and_si512(_mm512_permutexvar_epi32(s, r), earlier);
        let before_m = _mm512_and_si512(before_w, _mm512_set1_epi32(m as i32));
        // Each word is `a | (old & b)`: `a` the bits the block determines, `b` the bits
        // that come from the dictionary before the block (`old`, the word's slot there).
        let from_miss = _mm512_test_epi32_mask(before_m, before_m);
        let from_write = _mm512_test_epi32_mask(before_w, before_w);
        let upper = _mm512_maskz_permutexvar_epi32(from_miss, last_lane(before_m), vmiss);
        let low = _mm512_maskz_permutexvar_epi32(
            from_write,
            last_lane(before_w),
            _mm512_mask_mov_epi32(vlow, miss, vmiss),
        );
        let low = _mm512_mask_mov_epi32(_mm512_and_si512(low, low_mask), partial, vlow);
        let a = _mm512_or_si512(_mm512_andnot_si512(low_mask, upper), low);
        let a = _mm512_mask_mov_epi32(_mm512_maskz_mov_epi32(midx as __mmask16, a), miss, vmiss);
        let b = _mm512_or_si512(
            _mm512_maskz_mov_epi32(
                midx as __mmask16 & !from_miss,
                _mm512_set1_epi32(!LOW_MASK as i32),
            ),
            _mm512_maskz_mov_epi32(e as __mmask16 & !from_write, low_mask),
        );
        // a | (old & b)
        let word = _mm512_ternarylogic_epi32::<0xF8>(a, _mm512_permutexvar_epi32(s, dict), b);
        // SAFETY: `block` is 16 writable words; the store is unaligned.
        unsafe { _mm512_storeu_si512(block.as_mut_ptr().cast(), word) };
        // The dictionary after the block: each written slot's last word, taken apart the
        // same way so that only one permutation of the dictionary is on the chain from
        // block to block.
        let last = last_lane(r);
        let old_last = _mm512_permutexvar_epi32(_mm512_permutexvar_epi32(last, s), dict);
        dict = _mm512_mask_mov_epi32(
            dict,
            _mm512_test_epi32_mask(r, r),
            _mm512_ternarylogic_epi32::<0xF8>(
                _mm512_permutexvar_epi32(last, a),
                old_last,
                _mm512_permutexvar_epi32(last, b),
            ),
        );
        ic += midx.count_ones() as usize;
        pc += p.count_ones() as usize;
        mc += m.count_ones() as usize;
    }
    let c = areas.counts;
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
            && std::is_x86_feature_detected!("bmi2")
            && std::is_x86_feature_detected!("lzcnt")
    }

    #[test]
    fn rows_transpose_the_slots() {
        if cfg!(miri) || !has_features() {
            std::println!("note: no AVX-512 here; skipped");
            return;
        }
        let slots: [u32; 16] = [3, 16, 3, 0, 15, 7, 7, 7, 16, 1, 2, 3, 15, 0, 9, 9];
        let mut got = [0u32; 16];
        // SAFETY: the features were detected above; `slots` and `got` are 16 words each.
        unsafe {
            let v = _mm512_loadu_si512(slots.as_ptr().cast());
            _mm512_storeu_si512(got.as_mut_ptr().cast(), rows_for_test(v));
        }
        for (k, &row) in got.iter().enumerate() {
            let want = slots
                .iter()
                .enumerate()
                .filter(|&(_, &s)| s as usize == k)
                .fold(0u32, |acc, (i, _)| acc | 1 << i);
            assert_eq!(row, want, "slot {k}");
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
    fn rows_for_test(v: __m512i) -> __m512i {
        rows(v)
    }
}
