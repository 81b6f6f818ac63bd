//! The x86_64 AVX2 + BMI2 WKdm path. Same format and results as the portable path.
//!
//! Compression keeps the one serial step (dictionary lookup and update) scalar and minimal,
//! and classifies, packs and compacts 8 words at a time: tags and stream compaction through
//! BMI2 `pdep`/`pext`, miss words through a `vpermd` whose indices `pext` computes.
//! Decompression expands the streams to per-word operands the same way, then a short scalar
//! loop over the split dictionary of the portable decoder (no chain between words) rebuilds
//! the page.
//!
//! Only reached when the codec was built with a [`VectorPolicy`](crate::codec::VectorPolicy)
//! that found or was promised AVX2, BMI2 and POPCNT.

use core::arch::x86_64::{
    __m256i, _mm_cvtsi64_si128, _mm_cvtsi128_si64, _mm256_and_si256, _mm256_andnot_si256,
    _mm256_castsi256_ps, _mm256_castsi256_si128, _mm256_cmpeq_epi32, _mm256_cvtepu8_epi32,
    _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_movemask_ps, _mm256_mullo_epi32,
    _mm256_or_si256, _mm256_permutevar8x32_epi32, _mm256_set1_epi32, _mm256_setr_epi8,
    _mm256_setr_epi32, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_slli_epi32,
    _mm256_srli_epi32, _mm256_srlv_epi32, _mm256_storeu_si256, _mm256_xor_si256, _pdep_u32,
    _pdep_u64, _pext_u32, _pext_u64,
};

use super::format::{self, Counts, HEADER_LEN, LOW_MASK, window_u64, window_u128};
use crate::codec::PageSize;

/// Compresses with AVX2 + BMI2; same contract as the portable `compress`.
pub fn compress(page_size: PageSize, page: &[u32], out: &mut [u8], budget: usize) -> Option<usize> {
    // SAFETY: this module is only called with `CodePath::X86Avx2`, which `VectorPolicy`
    // resolves only after run-time detection of AVX2, BMI2 and POPCNT or the caller's
    // `unsafe` promise of them (`CpuFeatures::with_x86_avx2_bmi2`).
    unsafe {
        match page_size {
            PageSize::Size4K => compress_impl::<1024, 1032>(page, out, budget),
            _ => compress_impl::<4096, 4104>(page, out, budget),
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

/// Lane masks (all ones where bit j of `m` is set) for 8 lanes.
#[inline(always)]
unsafe fn lanes(m: u32) -> __m256i {
    // SAFETY: AVX2 is enabled in every caller.
    unsafe {
        let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m as i32), bits), bits)
    }
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

#[target_feature(enable = "avx2,bmi2,popcnt")]
unsafe fn compress_impl<const N: usize, const LOW8: usize>(
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
    let mut idx_s = [0u64; 1024 / 16 * 4 + 1];
    let idx_s = idx_s.get_mut(..N / 16 + 1)?;
    let mut low8_s = [0u8; LOW8];
    let mut low2_s = [0u32; 1024 / 16 * 4 + 1];
    let low2_s = low2_s.get_mut(..N / 16 + 1)?;

    let (_, body) = out.split_at_mut(HEADER_LEN);
    let (tag_area, miss_area) = body.split_at_mut(tag_len);
    // Slot 16 takes zero words; 32 entries so `& 31` bounds every index.
    let mut dict = [0u32; 32];
    let mut counts = Counts {
        misses: 0,
        indices: 0,
        partials: 0,
    };
    let (mut idx_acc, mut idx_bits, mut idx_pos) = (0u128, 0u32, 0usize);
    let (mut low2_acc, mut low2_bits, mut low2_pos) = (0u64, 0u32, 0usize);

    for (block, tag_out) in page.chunks_exact(16).zip(tag_area.chunks_exact_mut(4)) {
        let Ok(block) = <&[u32; 16]>::try_from(block) else {
            return None;
        };
        // The serial step: each word's dictionary word before it, and its slot.
        // Slots first, 8 at a time (zero words take the unused slot 16).
        let mut slots = [0u32; 16];
        for half in 0..2 {
            // SAFETY: AVX2 is enabled; words 8 * half .. 8 * half + 8 of the 16-word `block`
            // and `slots` are in bounds for the unaligned load and store.
            unsafe {
                let w = _mm256_loadu_si256(block.as_ptr().add(8 * half).cast());
                let h = _mm256_srli_epi32::<28>(_mm256_mullo_epi32(
                    _mm256_srli_epi32::<10>(w),
                    _mm256_set1_epi32(0x9E37_79B1_u32 as i32),
                ));
                let z = _mm256_cmpeq_epi32(w, _mm256_setzero_si256());
                let h = _mm256_or_si256(
                    _mm256_andnot_si256(z, h),
                    _mm256_and_si256(z, _mm256_set1_epi32(16)),
                );
                _mm256_storeu_si256(slots.as_mut_ptr().add(8 * half).cast(), h);
            }
        }
        let mut pred = [0u32; 16];
        let mut nibbles = 0u64;
        for (j, ((&w, &h), p)) in block.iter().zip(&slots).zip(pred.iter_mut()).enumerate() {
            let h = h as usize & 31;
            *p = dict[h];
            dict[h] = w;
            nibbles |= ((h & 15) as u64) << (4 * j);
        }
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
                let dst = miss_area.get_mut(pos..pos + 4 * n)?;
                for (d, w) in dst.chunks_exact_mut(4).zip(tmp) {
                    d.copy_from_slice(&w.to_le_bytes());
                }
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

/// The 8 miss words from word `index` of the miss area (zero past its end).
#[inline(always)]
unsafe fn miss_words(area: &[u8], index: usize) -> __m256i {
    if let Some(bytes) = area.get(4 * index..4 * index + 32) {
        // SAFETY: AVX2 is enabled in every caller; `bytes` is 32 readable bytes.
        return unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) };
    }
    let words = format::miss_window(area, index);
    // SAFETY: AVX2 is enabled in every caller; `words` is 64 readable bytes.
    unsafe { _mm256_loadu_si256(words.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,bmi2,popcnt")]
unsafe fn decompress_impl(areas: &format::Areas<'_>, out: &mut [u32]) -> bool {
    // The split dictionary of the portable decoder; slot 16 takes the words that leave a half
    // unchanged, and 32 entries let `& 31` bound every index.
    let mut upper = [0u32; 32];
    let mut lower = [0u32; 32];
    let (mut indices, mut partials, mut misses) = (0usize, 0usize, 0usize);
    for (block, tag_bytes) in out.chunks_exact_mut(16).zip(areas.tags.chunks_exact(4)) {
        let Ok(tag_bytes) = <[u8; 4]>::try_from(tag_bytes) else {
            return false;
        };
        let tags = u32::from_le_bytes(tag_bytes);
        // SAFETY: BMI2 is enabled (target_feature of this function).
        let (bit0, bit1) = unsafe { (pext32(tags, 0x5555_5555), pext32(tags, 0xAAAA_AAAA)) };
        let me = bit0 & !bit1;
        let mp = bit1 & !bit0;
        let mm = bit0 & bit1;
        let midx = me | mp;

        // Per-word operands for the split dictionary (see the portable decoder): `ctl` packs
        // the index (bits 0..4), the upper-half store slot (8..13), the lower-half store slot
        // (16..21), "exact" (bit 24) and "exact or partial" (bit 25); `add` is the stored low
        // part of a partial word or the miss word.
        let idx_win = (window_u128(areas.indices, indices / 2) >> (4 * (indices % 2))) as u64;
        // SAFETY: BMI2 is enabled (target_feature of this function).
        let idx_spread = unsafe { pdep64(idx_win, nibble_mask(midx)) };
        let low8_win = window_u128(areas.low8, partials);
        let low2_win = window_u64(areas.low2, partials / 4) >> (2 * (partials % 4));
        // SAFETY: BMI2 is enabled (target_feature of this function).
        let low2_spread = unsafe { pdep32(low2_win as u32, pdep32(mp, 0x5555_5555) * 3) };
        let mut ctl = [0u32; 16];
        let mut add = [0u32; 16];
        let mut low8_used = 0u32;
        let mut miss_used = 0usize;
        for half in 0..2usize {
            let sh = 8 * half as u32;
            let (e, p, m) = ((me >> sh) & 0xFF, (mp >> sh) & 0xFF, (mm >> sh) & 0xFF);
            // SAFETY: BMI2 is enabled (target_feature of this function).
            let low8 = unsafe { pdep64((low8_win >> (8 * low8_used)) as u64, byte_mask(p)) };
            low8_used += p.count_ones();
            let low2 = (low2_spread >> (2 * sh)) & 0xFFFF;
            // SAFETY: AVX2 is enabled (target_feature of this function).
            let miss_win = unsafe { miss_words(areas.misses, misses + miss_used) };
            miss_used += m.count_ones() as usize;
            let nib = (idx_spread >> (4 * sh)) as u32;
            // SAFETY: AVX2 and BMI2 are enabled; the stores write 8 words at offset 8 * half
            // of 16-word arrays.
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
                let le = lanes(e);
                let lp = lanes(p);
                let lm = lanes(m);
                let vadd = _mm256_or_si256(_mm256_and_si256(lp, vlow), _mm256_and_si256(lm, vmiss));
                // slot(miss): the same multiplicative hash as `format::slot`.
                let vslot = _mm256_srli_epi32::<28>(_mm256_mullo_epi32(
                    _mm256_srli_epi32::<10>(vmiss),
                    _mm256_set1_epi32(0x9E37_79B1_u32 as i32),
                ));
                let sixteen = _mm256_set1_epi32(16);
                let upper_slot = _mm256_or_si256(
                    _mm256_and_si256(lm, vslot),
                    _mm256_andnot_si256(lm, sixteen),
                );
                let lower_slot = _mm256_or_si256(
                    _mm256_or_si256(_mm256_and_si256(lp, vidx), _mm256_and_si256(lm, vslot)),
                    _mm256_andnot_si256(_mm256_or_si256(lp, lm), sixteen),
                );
                let flags = _mm256_or_si256(
                    _mm256_and_si256(le, _mm256_set1_epi32(1 << 24)),
                    _mm256_and_si256(_mm256_or_si256(le, lp), _mm256_set1_epi32(1 << 25)),
                );
                let vctl = _mm256_or_si256(
                    _mm256_or_si256(vidx, _mm256_slli_epi32::<8>(upper_slot)),
                    _mm256_or_si256(_mm256_slli_epi32::<16>(lower_slot), flags),
                );
                _mm256_storeu_si256(ctl.as_mut_ptr().add(8 * half).cast(), vctl);
                _mm256_storeu_si256(add.as_mut_ptr().add(8 * half).cast(), vadd);
            }
        }
        for ((o, &c), &a) in block.iter_mut().zip(&ctl).zip(&add) {
            let idx = (c & 15) as usize;
            let keep_upper = 0u32.wrapping_sub((c >> 25) & 1) & !LOW_MASK;
            let keep_lower = 0u32.wrapping_sub((c >> 24) & 1) & LOW_MASK;
            *o = (upper[idx] & keep_upper) | (lower[idx] & keep_lower) | a;
            upper[((c >> 8) & 31) as usize] = a;
            lower[((c >> 16) & 31) as usize] = a & LOW_MASK;
        }
        indices += midx.count_ones() as usize;
        partials += mp.count_ones() as usize;
        misses += mm.count_ones() as usize;
    }
    let c = areas.counts;
    indices == c.indices && partials == c.partials && misses == c.misses
}
