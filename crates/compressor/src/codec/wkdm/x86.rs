//! The x86_64 AVX2 + BMI2 WKdm path. Same format and results as the portable path.
//!
//! Compression works in runs of 256 words: the slots of the next run are computed with
//! vectors while the current one is processed; a scalar pass over the run does the one
//! serial step (each word's dictionary entry before it, and the update); then each block of
//! 16 words is classified, packed and compacted 8 words at a time: tags and stream
//! compaction through BMI2 `pdep`/`pext`, miss words through a `vpermd` whose indices `pext`
//! computes.
//!
//! Decompression expands the streams to per-word dictionary operands the same way, one
//! block ahead, and feeds them to the dictionary pass of the portable decoder
//! (`decode::dict_block`).
//!
//! Every array a scalar loop reads was written by vector stores at least one block (or run)
//! earlier: a load that needs part of a recent vector store cannot take the data from it and
//! waits for the store to reach the cache.
//!
//! Only reached when the codec was built with a [`VectorPolicy`](crate::codec::VectorPolicy)
//! that found or was promised AVX2, BMI2 and POPCNT.

use core::arch::x86_64::{
    __m128i, __m256i, _mm_and_si128, _mm_cvtsi64_si128, _mm_cvtsi128_si64, _mm_loadu_si128,
    _mm_maddubs_epi16, _mm_packus_epi16, _mm_set1_epi8, _mm_set1_epi16, _mm_storeu_si128,
    _mm_unpacklo_epi64, _mm256_and_si256, _mm256_andnot_si256, _mm256_castsi256_ps,
    _mm256_castsi256_si128, _mm256_cmpeq_epi32, _mm256_cvtepu8_epi32, _mm256_extracti128_si256,
    _mm256_loadu_si256, _mm256_movemask_ps, _mm256_mullo_epi32, _mm256_or_si256,
    _mm256_packus_epi16, _mm256_packus_epi32, _mm256_permute2x128_si256, _mm256_permute4x64_epi64,
    _mm256_permutevar8x32_epi32, _mm256_set1_epi32, _mm256_setr_epi8, _mm256_setr_epi32,
    _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_slli_epi32, _mm256_srli_epi32,
    _mm256_srlv_epi32, _mm256_store_si256, _mm256_storeu_si256, _mm256_unpackhi_epi32,
    _mm256_unpacklo_epi32, _mm256_xor_si256, _pdep_u32, _pdep_u64, _pext_u32, _pext_u64,
};

use super::decode::{DICT_BYTES, EXACT_UNITS, ZERO_UNITS, dict_block};
use super::format::{self, Counts, HEADER_LEN, LOW_MASK};
use crate::codec::PageSize;

/// Compresses with AVX2 + BMI2; same contract as the portable `compress`.
pub fn compress(
    page_size: PageSize,
    page: &[u32],
    out: &mut [u8],
    budget: usize,
    forecast: usize,
) -> Option<usize> {
    // SAFETY: this module is only called with `CodePath::X86Avx2`, which `VectorPolicy`
    // resolves only after run-time detection of AVX2, BMI2 and POPCNT or the caller's
    // `unsafe` promise of them (`CpuFeatures::with_x86_avx2_bmi2`).
    unsafe {
        match page_size {
            PageSize::Size4K => compress_impl::<1024, 1032>(page, out, budget, forecast),
            _ => compress_impl::<4096, 4104>(page, out, budget, forecast),
        }
    }
}

/// Decodes checked areas with AVX2 + BMI2; same contract as the portable `decompress`.
pub fn decompress(areas: &format::Areas<'_>, out: &mut [u32]) -> bool {
    // SAFETY: as in `compress`: the path is chosen only when AVX2, BMI2 and POPCNT are
    // present.
    unsafe { decompress_impl(areas, out) }
}

/// `pdep` on 32 bits.
///
/// # Safety
/// BMI2 is available.
#[inline(always)]
unsafe fn pdep32(a: u32, m: u32) -> u32 {
    // SAFETY: BMI2 is available (this function's contract).
    unsafe { _pdep_u32(a, m) }
}

/// `pdep` on 64 bits.
///
/// # Safety
/// BMI2 is available.
#[inline(always)]
unsafe fn pdep64(a: u64, m: u64) -> u64 {
    // SAFETY: BMI2 is available (this function's contract).
    unsafe { _pdep_u64(a, m) }
}

/// `pext` on 32 bits.
///
/// # Safety
/// BMI2 is available.
#[inline(always)]
unsafe fn pext32(a: u32, m: u32) -> u32 {
    // SAFETY: BMI2 is available (this function's contract).
    unsafe { _pext_u32(a, m) }
}

/// `pext` on 64 bits.
///
/// # Safety
/// BMI2 is available.
#[inline(always)]
unsafe fn pext64(a: u64, m: u64) -> u64 {
    // SAFETY: BMI2 is available (this function's contract).
    unsafe { _pext_u64(a, m) }
}

/// An all-zero vector.
///
/// # Safety
/// AVX is available.
#[inline(always)]
unsafe fn zero256() -> __m256i {
    // SAFETY: AVX is available (this function's contract).
    unsafe { _mm256_setzero_si256() }
}

/// Spreads the low bits of `m` to one all-ones nibble per bit.
///
/// # Safety
/// BMI2 is available.
#[inline(always)]
unsafe fn nibble_mask(m: u32) -> u64 {
    // SAFETY: BMI2 is available (this function's contract).
    unsafe { pdep64(u64::from(m), 0x1111_1111_1111_1111) * 0xF }
}

/// Spreads the low 8 bits of `m` to one all-ones byte per bit.
///
/// # Safety
/// BMI2 is available.
#[inline(always)]
unsafe fn byte_mask(m: u32) -> u64 {
    // SAFETY: BMI2 is available (this function's contract).
    unsafe { pdep64(u64::from(m & 0xFF), 0x0101_0101_0101_0101) * 0xFF }
}

/// The `vpermd` indices that move the lanes selected by `m` (8 bits) to the front, in order.
#[inline(always)]
unsafe fn compact_indices(m: u32) -> __m256i {
    // SAFETY: AVX2 and BMI2 are enabled in every caller.
    unsafe {
        let nibbles = _pext_u32(0x7654_3210, nibble_mask(m) as u32);
        _mm256_srlv_epi32(
            _mm256_set1_epi32(nibbles as i32),
            _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28),
        )
    }
}

/// The `vpermd` indices that spread the first lanes to the lanes selected by `m` (8 bits).
#[inline(always)]
unsafe fn expand_indices(m: u32) -> __m256i {
    // SAFETY: AVX2 and BMI2 are enabled in every caller.
    unsafe {
        let nibbles = _pdep_u32(0x7654_3210, nibble_mask(m) as u32);
        _mm256_srlv_epi32(
            _mm256_set1_epi32(nibbles as i32),
            _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28),
        )
    }
}

/// Byte 0 and byte 1 of each of 8 words: `(low bytes, second bytes)`, word j in byte j.
#[inline(always)]
unsafe fn low_bytes(w: __m256i) -> (u64, u64) {
    // SAFETY: AVX2 is enabled in every caller.
    unsafe {
        let shuf = _mm256_setr_epi8(
            0, 4, 8, 12, 1, 5, 9, 13, -1, -1, -1, -1, -1, -1, -1, -1, //
            0, 4, 8, 12, 1, 5, 9, 13, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let s = _mm256_shuffle_epi8(w, shuf);
        let q0 = _mm_cvtsi128_si64(_mm256_castsi256_si128(s)) as u64;
        let q1 = _mm_cvtsi128_si64(_mm256_extracti128_si256::<1>(s)) as u64;
        (
            (q0 & 0xFFFF_FFFF) | (q1 << 32),
            (q0 >> 32) | (q1 & 0xFFFF_FFFF_0000_0000),
        )
    }
}

/// The compressor's dictionary, cache-line aligned.
#[repr(C, align(64))]
struct Dict([u32; 256]);

/// Words per run of the compressor (16 blocks).
const RUN: usize = 256;

/// The slots of 8 words (zero words take slot 16), one per 32-bit lane.
///
/// # Safety
/// AVX2 is available.
#[inline(always)]
unsafe fn slots8(w: __m256i) -> __m256i {
    // SAFETY: AVX2 is enabled in every caller.
    unsafe {
        let h = _mm256_srli_epi32::<28>(_mm256_mullo_epi32(
            _mm256_srli_epi32::<10>(w),
            _mm256_set1_epi32(0x9E37_79B1_u32 as i32),
        ));
        let z = _mm256_cmpeq_epi32(w, _mm256_setzero_si256());
        _mm256_or_si256(
            _mm256_andnot_si256(z, h),
            _mm256_and_si256(z, _mm256_set1_epi32(16)),
        )
    }
}

/// Stores the slots of `run` (zero words 16) as bytes into `dst`.
///
/// # Safety
/// AVX2 is available.
#[inline(always)]
unsafe fn run_slots(run: &[u32; RUN], dst: &mut [u8; RUN]) {
    for (words, d) in run.chunks_exact(16).zip(dst.chunks_exact_mut(16)) {
        // SAFETY: AVX2 is enabled in every caller; `words` holds 16 words and `d` 16 bytes.
        unsafe {
            let h0 = slots8(_mm256_loadu_si256(words.as_ptr().cast()));
            let h1 = slots8(_mm256_loadu_si256(words.as_ptr().add(8).cast()));
            _mm_storeu_si128(d.as_mut_ptr().cast(), pack_bytes(h0, h1));
        }
    }
}

/// Packs the 16 lanes of `a` and `b` (each below 256) into 16 bytes, in order.
///
/// # Safety
/// AVX2 is available.
#[inline(always)]
unsafe fn pack_bytes(a: __m256i, b: __m256i) -> __m128i {
    // SAFETY: AVX2 is enabled in every caller.
    unsafe {
        // [a0-3 b0-3 | a4-7 b4-7] as 16-bit lanes, then in order.
        let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b));
        let bytes = _mm256_packus_epi16(w, w);
        _mm_unpacklo_epi64(
            _mm256_castsi256_si128(bytes),
            _mm256_extracti128_si256::<1>(bytes),
        )
    }
}

/// The low nibbles of 16 bytes as a `u64`, byte j's in bits 4j..4j+4.
///
/// # Safety
/// SSSE3 is available (every AVX2 processor has it).
#[inline(always)]
unsafe fn nibbles16(bytes: __m128i) -> u64 {
    // SAFETY: SSSE3 and SSE4.1 (part of AVX2) are enabled in every caller.
    unsafe {
        let low = _mm_and_si128(bytes, _mm_set1_epi8(15));
        // Each pair of bytes (even, odd) to even + 16 * odd.
        let pairs = _mm_maddubs_epi16(low, _mm_set1_epi16(0x1001));
        _mm_cvtsi128_si64(_mm_packus_epi16(pairs, pairs)) as u64
    }
}

#[target_feature(enable = "avx2,bmi2,popcnt")]
unsafe fn compress_impl<const N: usize, const LOW8: usize>(
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
    let mut idx_s = [0u64; 1024 / 16 * 4 + 1];
    let idx_s = idx_s.get_mut(..N / 16 + 1)?;
    let mut low8_s = [0u8; LOW8];
    let mut low2_s = [0u32; 1024 / 16 * 4 + 1];
    let low2_s = low2_s.get_mut(..N / 16 + 1)?;

    let (_, body) = out.split_at_mut(HEADER_LEN);
    let (tag_area, miss_area) = body.split_at_mut(tag_len);
    // Slot 16 takes zero words; 256 entries need no bound check for a `u8` slot. Slots
    // 0..16 share one cache line.
    let mut dict = Dict([0u32; 256]);
    let mut counts = Counts {
        misses: 0,
        indices: 0,
        partials: 0,
    };
    let (mut idx_acc, mut idx_bits, mut idx_pos) = (0u128, 0u32, 0usize);
    let (mut low2_acc, mut low2_bits, mut low2_pos) = (0u64, 0u32, 0usize);

    // Runs of 16 blocks: first the slots of the run (vector), then the serial dictionary
    // pass over the whole run (only loads and two stores per word, at addresses known in
    // advance), then the vector classification and packing of each block. The vector loads
    // then read stores that have long completed.
    // Slots are computed one run ahead (double-buffered), so the serial pass never reads a
    // vector store that is still in flight.
    let mut slot_bufs = [[0u8; RUN]; 2];
    let mut preds = [0u32; RUN];
    let runs = N / RUN;
    if let (Some(first), Some(dst)) = (page.first_chunk::<RUN>(), slot_bufs.first_mut()) {
        // SAFETY: AVX2 is enabled (target_feature of this function).
        unsafe { run_slots(first, dst) };
    }
    for (r, (run, run_tags)) in page
        .chunks_exact(RUN)
        .zip(tag_area.chunks_exact_mut(RUN / 4))
        .enumerate()
    {
        let Ok(run) = <&[u32; RUN]>::try_from(run) else {
            return None;
        };
        if r + 1 < runs {
            let next = page.get(RUN * (r + 1)..)?.first_chunk::<RUN>()?;
            // SAFETY: AVX2 is enabled (target_feature of this function).
            unsafe { run_slots(next, &mut slot_bufs[(r + 1) % 2]) };
        }
        let slots = &slot_bufs[r % 2];
        // Two words at a time, so that their dictionary stores and their prediction stores
        // are adjacent: two stores in a row to one cache line take one cycle.
        for ((w, h), p) in run
            .chunks_exact(2)
            .zip(slots.chunks_exact(2))
            .zip(preds.chunks_exact_mut(2))
        {
            let (h0, h1) = (usize::from(h[0]), usize::from(h[1]));
            let d0 = dict.0[h0];
            dict.0[h0] = w[0];
            let d1 = dict.0[h1];
            dict.0[h1] = w[1];
            p[0] = d0;
            p[1] = d1;
        }
        for ((block, tag_out), (block_slots, pred)) in run
            .chunks_exact(16)
            .zip(run_tags.chunks_exact_mut(4))
            .zip(slots.chunks_exact(16).zip(preds.chunks_exact(16)))
        {
            let (Ok(block), Ok(pred)) =
                (<&[u32; 16]>::try_from(block), <&[u32; 16]>::try_from(pred))
            else {
                return None;
            };
            // SAFETY: SSSE3 (part of AVX2) is enabled; `block_slots` is 16 readable bytes.
            let nibbles = unsafe { nibbles16(_mm_loadu_si128(block_slots.as_ptr().cast())) };
            let mut me = 0u32;
            let mut mp = 0u32;
            let mut mm = 0u32;
            // SAFETY: AVX2 is enabled (target_feature of this function).
            let mut vw = [unsafe { zero256() }; 2];
            for (half, v) in vw.iter_mut().enumerate() {
                // SAFETY: AVX2 is enabled; `block` and `pred` hold 16 words, so words
                // 8 * half .. 8 * half + 8 are in bounds for the unaligned loads.
                let (z, e, pe, w) = unsafe {
                    let w = _mm256_loadu_si256(block.as_ptr().add(8 * half).cast());
                    let d = _mm256_loadu_si256(pred.as_ptr().add(8 * half).cast());
                    let z = _mm256_cmpeq_epi32(w, _mm256_setzero_si256());
                    let e = _mm256_cmpeq_epi32(w, d);
                    let pe = _mm256_cmpeq_epi32(
                        _mm256_srli_epi32::<10>(_mm256_xor_si256(w, d)),
                        _mm256_setzero_si256(),
                    );
                    (
                        _mm256_movemask_ps(_mm256_castsi256_ps(z)) as u32,
                        _mm256_movemask_ps(_mm256_castsi256_ps(e)) as u32,
                        _mm256_movemask_ps(_mm256_castsi256_ps(pe)) as u32,
                        w,
                    )
                };
                let e = e & !z;
                let pe = pe & !z;
                me |= e << (8 * half);
                mp |= (pe & !e) << (8 * half);
                mm |= (!z & !pe & 0xFF) << (8 * half);
                *v = w;
            }
            // SAFETY: BMI2 is enabled (target_feature of this function).
            let tags = unsafe { pdep32(me | mm, 0x5555_5555) | pdep32(mp | mm, 0xAAAA_AAAA) };
            tag_out.copy_from_slice(&tags.to_le_bytes());

            // Misses, compacted 8 at a time.
            for (half, &w) in vw.iter().enumerate() {
                let m = (mm >> (8 * half)) & 0xFF;
                let n = m.count_ones() as usize;
                let pos = 4 * counts.misses;
                // SAFETY: AVX2 and BMI2 are enabled.
                let packed = unsafe { _mm256_permutevar8x32_epi32(w, compact_indices(m)) };
                if let Some(dst) = miss_area.get_mut(pos..pos + 32) {
                    // SAFETY: `dst` is 32 writable bytes; the store is unaligned.
                    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), packed) };
                } else {
                    let mut tmp = [0u32; 8];
                    // SAFETY: `tmp` is 32 writable bytes; the store is unaligned.
                    unsafe { _mm256_storeu_si256(tmp.as_mut_ptr().cast(), packed) };
                    format::put_words(miss_area.get_mut(pos..pos + 4 * n)?, &tmp);
                }
                counts.misses += n;

                // Low parts of the partial words of this half.
                let mph = (mp >> (8 * half)) & 0xFF;
                // SAFETY: AVX2 is enabled.
                let (b0, b1) = unsafe { low_bytes(w) };
                // SAFETY: BMI2 is enabled (target_feature of this function).
                let (low8, low2) = unsafe {
                    let bytes = byte_mask(mph);
                    (pext64(b0, bytes), pext64(b1, bytes & 0x0303_0303_0303_0303))
                };
                let p = counts.partials;
                let dst = low8_s.get_mut(p..p + 8)?;
                dst.copy_from_slice(&low8.to_le_bytes());
                low2_acc |= low2 << low2_bits;
                low2_bits += 2 * mph.count_ones();
                counts.partials += mph.count_ones() as usize;
            }

            // Index nibbles of exact and partial words.
            let midx = me | mp;
            // SAFETY: BMI2 is enabled (target_feature of this function).
            let packed = unsafe { pext64(nibbles, nibble_mask(midx)) };
            idx_acc |= u128::from(packed) << idx_bits;
            idx_bits += 4 * midx.count_ones();
            counts.indices += midx.count_ones() as usize;
            *idx_s.get_mut(idx_pos)? = idx_acc as u64;
            let full = (idx_bits >> 6) as usize;
            idx_pos += full;
            idx_acc >>= 64 * full as u32;
            idx_bits &= 63;
            *idx_s.get_mut(idx_pos)? = idx_acc as u64;

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
        if counts.forecast_passes(words, RUN * (r + 1), forecast) {
            return None;
        }
    }
    format::write_streams(
        out,
        words,
        counts,
        budget,
        idx_s,
        format::LowParts::Split {
            low8: &low8_s,
            low2: low2_s,
        },
    )
}

/// The 32 bytes at `at` of the page (see [`format::Reader`]).
///
/// # Safety
/// AVX is available.
#[inline(always)]
unsafe fn load32(reader: &format::Reader<'_>, at: usize) -> __m256i {
    let bytes = reader.bytes::<32>(at);
    // SAFETY: AVX2 is enabled in every caller; `bytes` is 32 readable bytes.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

/// One block's per-word operands for the dictionary pass (see `decode::dict_word`): the
/// store and read units (`w | r << 8`) and the 8 bytes to store.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Ops {
    units: [u32; 16],
    data: [u64; 16],
}

/// Stream positions (items) at the start of a block.
#[derive(Clone, Copy)]
struct Cursor {
    index: usize,
    partial: usize,
    miss: usize,
}

/// Expands the streams for the block with tag word `tags` at `cur` into `ops`, and returns
/// the cursor after the block.
///
/// # Safety
/// AVX2 and BMI2 are available.
#[inline(always)]
unsafe fn block_ops(
    areas: &format::Areas<'_>,
    reader: &format::Reader<'_>,
    tags: u32,
    cur: Cursor,
    ops: &mut Ops,
) -> Cursor {
    // SAFETY: BMI2 is enabled in every caller.
    let (bit0, bit1) = unsafe { (pext32(tags, 0x5555_5555), pext32(tags, 0xAAAA_AAAA)) };
    let me = bit0 & !bit1;
    let mp = bit1 & !bit0;
    let mm = bit0 & bit1;
    let midx = me | mp;

    // Reads past an area return the next area's bytes, which go unused.
    let idx_win = (u128::from_le_bytes(reader.bytes::<16>(areas.indices_at + cur.index / 2))
        >> (4 * (cur.index % 2))) as u64;
    // SAFETY: BMI2 is enabled in every caller.
    let idx_spread = unsafe { pdep64(idx_win, nibble_mask(midx)) };
    let low8_win = u128::from_le_bytes(reader.bytes::<16>(areas.low8_at + cur.partial));
    let low2_win = u64::from_le_bytes(reader.bytes::<8>(areas.low2_at + cur.partial / 4))
        >> (2 * (cur.partial % 4));
    // SAFETY: BMI2 is enabled in every caller.
    let low2_spread = unsafe { pdep32(low2_win as u32, pdep32(mp, 0x5555_5555) * 3) };
    let mut low8_used = 0u32;
    let mut miss_used = 0usize;
    for half in 0..2usize {
        let sh = 8 * half as u32;
        let (p, m) = ((mp >> sh) & 0xFF, (mm >> sh) & 0xFF);
        // SAFETY: BMI2 is enabled in every caller.
        let low8 = unsafe { pdep64((low8_win >> (8 * low8_used)) as u64, byte_mask(p)) };
        low8_used += p.count_ones();
        let low2 = (low2_spread >> (2 * sh)) & 0xFFFF;
        // SAFETY: AVX2 is enabled in every caller.
        let miss_win = unsafe { load32(reader, areas.misses_at + 4 * (cur.miss + miss_used)) };
        miss_used += m.count_ones() as usize;
        let nib = (idx_spread >> (4 * sh)) as u32;
        // SAFETY: AVX2 and BMI2 are enabled in every caller; the aligned stores write 32
        // bytes at offsets 32 * half (units) and 64 * half, 64 * half + 32 (data) of the
        // 16-entry arrays of `ops`, which is 32-byte aligned with both arrays at multiples of
        // 32 bytes.
        unsafe {
            let shifts4 = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
            let shifts2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
            let vidx = _mm256_and_si256(
                _mm256_srlv_epi32(_mm256_set1_epi32(nib as i32), shifts4),
                _mm256_set1_epi32(15),
            );
            let vlow = _mm256_or_si256(
                _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(low8 as i64)),
                _mm256_slli_epi32::<8>(_mm256_and_si256(
                    _mm256_srlv_epi32(_mm256_set1_epi32(low2 as i32), shifts2),
                    _mm256_set1_epi32(3),
                )),
            );
            let vmiss = _mm256_permutevar8x32_epi32(miss_win, expand_indices(m));
            // Each lane's tag, then one mask per tag.
            let tv = _mm256_and_si256(
                _mm256_srlv_epi32(_mm256_set1_epi32((tags >> (2 * sh)) as i32), shifts2),
                _mm256_set1_epi32(3),
            );
            let lz = _mm256_cmpeq_epi32(tv, _mm256_setzero_si256());
            let le = _mm256_cmpeq_epi32(tv, _mm256_set1_epi32(1));
            let lp = _mm256_cmpeq_epi32(tv, _mm256_set1_epi32(2));
            let lm = _mm256_cmpeq_epi32(tv, _mm256_set1_epi32(3));
            // slot(miss) times 4: the same multiplicative hash as `format::slot`.
            let vslot4 = _mm256_slli_epi32::<2>(_mm256_srli_epi32::<28>(_mm256_mullo_epi32(
                _mm256_srli_epi32::<10>(vmiss),
                _mm256_set1_epi32(0x9E37_79B1_u32 as i32),
            )));
            let sel = _mm256_or_si256(
                _mm256_and_si256(lm, vslot4),
                _mm256_and_si256(_mm256_or_si256(le, lp), _mm256_slli_epi32::<2>(vidx)),
            );
            let zero_units = _mm256_and_si256(lz, _mm256_set1_epi32(ZERO_UNITS as i32));
            let units = _mm256_or_si256(
                _mm256_or_si256(zero_units, _mm256_and_si256(lp, _mm256_set1_epi32(1))),
                _mm256_and_si256(le, _mm256_set1_epi32(EXACT_UNITS as i32)),
            );
            let w = _mm256_or_si256(sel, units);
            let r = _mm256_or_si256(sel, zero_units);
            let wr = _mm256_or_si256(w, _mm256_slli_epi32::<8>(r));
            _mm256_store_si256(ops.units.as_mut_ptr().add(8 * half).cast(), wr);
            // Data: partial words their low part; misses [upper 22 bits][low 10 bits].
            let low_mask = _mm256_set1_epi32(LOW_MASK as i32);
            let lo32 = _mm256_or_si256(
                _mm256_and_si256(lp, vlow),
                _mm256_and_si256(lm, _mm256_andnot_si256(low_mask, vmiss)),
            );
            let hi32 = _mm256_and_si256(lm, _mm256_and_si256(low_mask, vmiss));
            let q01 = _mm256_unpacklo_epi32(lo32, hi32);
            let q23 = _mm256_unpackhi_epi32(lo32, hi32);
            _mm256_store_si256(
                ops.data.as_mut_ptr().add(8 * half).cast(),
                _mm256_permute2x128_si256::<0x20>(q01, q23),
            );
            _mm256_store_si256(
                ops.data.as_mut_ptr().add(8 * half + 4).cast(),
                _mm256_permute2x128_si256::<0x31>(q01, q23),
            );
        }
    }
    Cursor {
        index: cur.index + midx.count_ones() as usize,
        partial: cur.partial + mp.count_ones() as usize,
        miss: cur.miss + mm.count_ones() as usize,
    }
}

/// Decodes with AVX2 + BMI2: the streams are expanded to per-word operands 16 words at a
/// time, one block ahead of the dictionary pass of the portable decoder (so the pass reads
/// operands whose vector stores have long completed).
#[target_feature(enable = "avx2,bmi2,popcnt")]
unsafe fn decompress_impl(areas: &format::Areas<'_>, out: &mut [u32]) -> bool {
    let reader = format::Reader::new(areas.input);
    let mut dict = [0u8; DICT_BYTES];
    let mut ops = [Ops {
        units: [0; 16],
        data: [0; 16],
    }; 2];
    let tag_word = |b: usize| -> u32 {
        areas
            .tags
            .get(4 * b..4 * b + 4)
            .and_then(|t| <[u8; 4]>::try_from(t).ok())
            .map_or(0, u32::from_le_bytes)
    };
    let blocks = out.len() / 16;
    let mut cur = Cursor {
        index: 0,
        partial: 0,
        miss: 0,
    };
    // SAFETY: AVX2 and BMI2 are enabled (target_feature of this function).
    cur = unsafe { block_ops(areas, &reader, tag_word(0), cur, &mut ops[0]) };
    for (b, block) in out.chunks_exact_mut(16).enumerate() {
        if b + 1 < blocks {
            // SAFETY: as above.
            cur = unsafe { block_ops(areas, &reader, tag_word(b + 1), cur, &mut ops[(b + 1) % 2]) };
        }
        if tag_word(b) == 0 {
            block.fill(0);
            continue;
        }
        let (o, Ok(block)) = (&ops[b % 2], <&mut [u32; 16]>::try_from(block)) else {
            return false;
        };
        dict_block(&mut dict, &o.units, &o.data, block);
    }
    let c = areas.counts;
    cur.index == c.indices && cur.partial == c.partials && cur.miss == c.misses
}
