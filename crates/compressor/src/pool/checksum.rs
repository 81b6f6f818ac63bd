//! XXH64 and XXH3-64, the checksums of slots and of swapped-out segments.
//!
//! Both are written from the published xxHash specification (Yann Collet,
//! `doc/xxhash_spec.md`: "XXH64 algorithm description" and, since version 0.2.0 of the
//! document, the XXH3 sections by Adrien Wu).
//!
//! - **XXH64**: four 64-bit accumulators over 32-byte stripes, then the tail in 8-, 4- and
//!   1-byte steps, then a final avalanche. Two 64-bit multiplications per 8 input bytes.
//! - **XXH3-64**, which the pool uses: a separate algorithm for each of 0, 1–3, 4–8, 9–16,
//!   17–128 and 129–240 bytes, and for longer inputs eight accumulators over 64-byte stripes
//!   mixed with a 192-byte secret, one 32×32→64-bit multiplication per 8 input bytes (a
//!   loop the compiler vectorizes), the accumulators scrambled after each 1 KiB block. It
//!   checksums a 1.5 KB slot in about two thirds of XXH64's time (73 against 114 ns on the
//!   baseline x86_64 target).
//!
//! In XXH64 each step that consumes an input word is a bijection of that word for fixed
//! state, so a change confined to one 8-byte word always changes the result. XXH3 folds
//! 128-bit products at its end, so it has no such guarantee. In both, a change goes
//! unnoticed with a probability of about 2⁻⁶⁴ (2⁻³² for the 32-bit slot checksums, which
//! keep the low half).

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

#[inline(always)]
fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

#[inline(always)]
fn merge(acc: u64, v: u64) -> u64 {
    (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
}

/// Returns the XXH64 hash of `data` with `seed`.
#[must_use]
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let len = data.len() as u64;
    let mut rest = data;
    let mut acc = if data.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        let mut stripes = rest.chunks_exact(32);
        for stripe in &mut stripes {
            v[0] = round(v[0], le64_at(stripe, 0));
            v[1] = round(v[1], le64_at(stripe, 8));
            v[2] = round(v[2], le64_at(stripe, 16));
            v[3] = round(v[3], le64_at(stripe, 24));
        }
        rest = stripes.remainder();
        let mut acc = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for lane in v {
            acc = merge(acc, lane);
        }
        acc
    } else {
        seed.wrapping_add(P5)
    };
    acc = acc.wrapping_add(len);
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        acc ^= round(0, le64_at(w, 0));
        acc = acc.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    }
    rest = words.remainder();
    if rest.len() >= 4 {
        acc ^= u64::from(le32_at(rest, 0)).wrapping_mul(P1);
        acc = acc.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        acc ^= u64::from(b).wrapping_mul(P5);
        acc = acc.rotate_left(11).wrapping_mul(P1);
    }
    acc ^= acc >> 33;
    acc = acc.wrapping_mul(P2);
    acc ^= acc >> 29;
    acc = acc.wrapping_mul(P3);
    acc ^= acc >> 32;
    acc
}

const PRIME32_1: u64 = 0x9E37_79B1;
const PRIME32_2: u64 = 0x85EB_CA77;
const PRIME32_3: u64 = 0xC2B2_AE3D;
const PRIME_MX1: u64 = 0x1656_6791_9E37_79F9;
const PRIME_MX2: u64 = 0x9FB2_1C65_1E98_DF25;

/// XXH3's default secret (the specification's `defaultSecret`).
const SECRET: [u8; SECRET_LEN] = [
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
];
const SECRET_LEN: usize = 192;
/// Bytes of a stripe (8 lanes of 8 bytes).
const STRIPE: usize = 64;
/// Stripes of a block with the 192-byte secret, and the block's length.
const STRIPES_PER_BLOCK: usize = (SECRET_LEN - STRIPE) / 8;
const BLOCK: usize = STRIPE * STRIPES_PER_BLOCK;

/// The `N` bytes of `bytes` at `at` (zeros past the end, which no caller reaches).
#[inline(always)]
fn bytes_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes
        .get(at..)
        .and_then(|b| b.first_chunk::<N>())
        .map_or([0; N], |b| *b)
}

/// The little-endian `u64` at `at`.
#[inline(always)]
fn le64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes_at(bytes, at))
}

/// The little-endian `u32` at `at`.
#[inline(always)]
fn le32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes_at(bytes, at))
}

/// XXH3's `avalanche`.
#[inline(always)]
fn avalanche3(mut x: u64) -> u64 {
    x ^= x >> 37;
    x = x.wrapping_mul(PRIME_MX1);
    x ^ (x >> 32)
}

/// XXH64's final mix, which XXH3 uses for its smallest inputs.
#[inline(always)]
fn avalanche64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(P2);
    x ^= x >> 29;
    x = x.wrapping_mul(P3);
    x ^ (x >> 32)
}

/// The XOR of the two halves of the 128-bit product of `a` and `b`.
#[inline(always)]
fn mul128_fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

/// XXH3's `mixStep`: 16 bytes of `data` at `at` with 16 bytes of the secret at `secret_at`.
#[inline(always)]
fn mix16(data: &[u8], at: usize, secret_at: usize, seed: u64) -> u64 {
    mul128_fold(
        le64_at(data, at) ^ le64_at(&SECRET, secret_at).wrapping_add(seed),
        le64_at(data, at + 8) ^ le64_at(&SECRET, secret_at + 8).wrapping_sub(seed),
    )
}

/// Returns the XXH3-64 hash of `data` with `seed`.
///
/// # Examples
/// ```
/// use machvm_compressor::pool::xxh3_64;
/// assert_eq!(xxh3_64(b"abc", 0), 0x78af_5f94_892f_3950);
/// ```
#[must_use]
pub fn xxh3_64(data: &[u8], seed: u64) -> u64 {
    let len = data.len();
    let n = len as u64;
    match len {
        0 => avalanche64(seed ^ le64_at(&SECRET, 56) ^ le64_at(&SECRET, 64)),
        1..=3 => {
            let byte = |i: usize| u32::from(data.get(i).copied().unwrap_or(0));
            let combined = byte(len - 1) | (len as u32) << 8 | byte(0) << 16 | byte(len >> 1) << 24;
            let key = u64::from(le32_at(&SECRET, 0) ^ le32_at(&SECRET, 4));
            avalanche64(key.wrapping_add(seed) ^ u64::from(combined))
        }
        4..=8 => {
            let first = u64::from(le32_at(data, 0));
            let last = u64::from(le32_at(data, len - 4));
            let seed = seed ^ (u64::from((seed as u32).swap_bytes()) << 32);
            let key = le64_at(&SECRET, 8) ^ le64_at(&SECRET, 16);
            let mut v = key.wrapping_sub(seed) ^ (last | first << 32);
            v ^= v.rotate_left(49) ^ v.rotate_left(24);
            v = v.wrapping_mul(PRIME_MX2);
            v ^= (v >> 35).wrapping_add(n);
            v = v.wrapping_mul(PRIME_MX2);
            v ^ (v >> 28)
        }
        9..=16 => {
            let low =
                (le64_at(&SECRET, 24) ^ le64_at(&SECRET, 32)).wrapping_add(seed) ^ le64_at(data, 0);
            let high = (le64_at(&SECRET, 40) ^ le64_at(&SECRET, 48)).wrapping_sub(seed)
                ^ le64_at(data, len - 8);
            avalanche3(
                n.wrapping_add(low.swap_bytes())
                    .wrapping_add(high)
                    .wrapping_add(mul128_fold(low, high)),
            )
        }
        17..=128 => {
            let mut acc = n.wrapping_mul(P1);
            for i in (0..=(len - 1) / 32).rev() {
                acc = acc.wrapping_add(mix16(data, 16 * i, 32 * i, seed));
                acc = acc.wrapping_add(mix16(data, len - 16 * i - 16, 32 * i + 16, seed));
            }
            avalanche3(acc)
        }
        129..=240 => {
            let mut acc = n.wrapping_mul(P1);
            for i in 0..8 {
                acc = acc.wrapping_add(mix16(data, 16 * i, 16 * i, seed));
            }
            acc = avalanche3(acc);
            for i in 8..len / 16 {
                acc = acc.wrapping_add(mix16(data, 16 * i, 16 * (i - 8) + 3, seed));
            }
            avalanche3(acc.wrapping_add(mix16(data, len - 16, 119, seed)))
        }
        _ => xxh3_long(data, &derive_secret(seed)),
    }
}

/// The secret for inputs over 240 bytes with `seed`: the default secret read as 24 `u64`s,
/// `seed` added to the even ones and subtracted from the odd ones.
fn derive_secret(seed: u64) -> [u8; SECRET_LEN] {
    let mut secret = SECRET;
    for (i, word) in secret.chunks_exact_mut(8).enumerate() {
        let v = le64_at(word, 0);
        let v = if i % 2 == 0 {
            v.wrapping_add(seed)
        } else {
            v.wrapping_sub(seed)
        };
        word.copy_from_slice(&v.to_le_bytes());
    }
    secret
}

/// One accumulation step: a 64-byte stripe with the 64 secret bytes at `secret_at`.
///
/// Written as whole-array steps so that the compiler turns them into vector code (a
/// 32×32→64-bit vector multiplication, `pmuludq` on x86_64 and `umull` on aarch64).
#[inline(always)]
fn accumulate(acc: &mut [u64; 8], stripe: &[u8; STRIPE], secret: &[u8; SECRET_LEN], at: usize) {
    let Some(key) = secret.get(at..).and_then(|k| k.first_chunk::<STRIPE>()) else {
        return; // (every caller's `at` is at most `SECRET_LEN - STRIPE`)
    };
    let data: [u64; 8] = core::array::from_fn(|i| le64_at(stripe, 8 * i));
    let mixed: [u64; 8] = core::array::from_fn(|i| data[i] ^ le64_at(key, 8 * i));
    // The product of each mixed lane's halves into its own accumulator, the lane itself
    // into its neighbour's.
    let swapped: [u64; 8] = core::array::from_fn(|i| data[i ^ 1]);
    let product: [u64; 8] =
        core::array::from_fn(|i| (mixed[i] & 0xFFFF_FFFF).wrapping_mul(mixed[i] >> 32));
    *acc = core::array::from_fn(|i| acc[i].wrapping_add(product[i]).wrapping_add(swapped[i]));
}

/// Accumulates the first `count` whole stripes of `bytes`, stripe `n` with the secret bytes
/// at `8n`.
#[inline(always)]
fn accumulate_stripes(acc: &mut [u64; 8], bytes: &[u8], count: usize, secret: &[u8; SECRET_LEN]) {
    for (n, stripe) in bytes.chunks_exact(STRIPE).take(count).enumerate() {
        if let Some(stripe) = stripe.first_chunk::<STRIPE>() {
            accumulate(acc, stripe, secret, 8 * n);
        }
    }
}

/// XXH3-64 of an input over 240 bytes with `secret`.
fn xxh3_long(data: &[u8], secret: &[u8; SECRET_LEN]) -> u64 {
    let mut acc = [PRIME32_3, P1, P2, P3, P4, PRIME32_2, P5, PRIME32_1];
    // Whole blocks but the last (kept for the final step even when whole).
    let blocks = (data.len() - 1) / BLOCK;
    let (full, last) = data.split_at(blocks * BLOCK);
    for block in full.chunks_exact(BLOCK) {
        accumulate_stripes(&mut acc, block, STRIPES_PER_BLOCK, secret);
        for (i, a) in acc.iter_mut().enumerate() {
            *a ^= *a >> 47;
            *a ^= le64_at(secret, SECRET_LEN - STRIPE + 8 * i);
            *a = a.wrapping_mul(PRIME32_1);
        }
    }
    // The last block's whole stripes but its last, then the input's last 64 bytes.
    accumulate_stripes(&mut acc, last, (last.len() - 1) / STRIPE, secret);
    if let Some(stripe) = data.last_chunk::<STRIPE>() {
        accumulate(&mut acc, stripe, secret, SECRET_LEN - STRIPE - 7);
    }
    let mut result = (data.len() as u64).wrapping_mul(P1);
    for i in 0..4 {
        result = result.wrapping_add(mul128_fold(
            acc[2 * i] ^ le64_at(secret, 11 + 16 * i),
            acc[2 * i + 1] ^ le64_at(secret, 11 + 16 * i + 8),
        ));
    }
    avalanche3(result)
}

#[cfg(test)]
mod tests {
    use super::{xxh3_64, xxh64};

    fn seq(n: usize) -> [u8; 256] {
        let mut b = [0_u8; 256];
        for (i, x) in b.iter_mut().enumerate().take(n) {
            *x = i as u8;
        }
        b
    }

    // Reference values computed with the reference C library (libxxhash 0.8.1, `XXH64`).
    #[test]
    fn matches_the_reference_implementation() {
        assert_eq!(xxh64(b"", 0), 0xef46_db37_51d8_e999);
        assert_eq!(xxh64(b"a", 0), 0xd24e_c4f1_a98c_6e5b);
        assert_eq!(xxh64(b"abc", 0), 0x44bc_2cf5_ad77_0999);
        assert_eq!(xxh64(b"abcd", 0), 0xde03_27b0_d25d_92cc);
        assert_eq!(xxh64(&seq(40)[..40], 0), 0xf5da_40f1_b117_41e9);
        assert_eq!(xxh64(&seq(100)[..100], 7), 0x8065_3e7e_9b88_7cdd);
        assert_eq!(xxh64(b"machvm segment checksum", 0), 0xe064_17f1_413c_e155);
        let mut kib = [0_u8; 1024];
        for (i, b) in kib.iter_mut().enumerate() {
            *b = i as u8;
        }
        assert_eq!(xxh64(&kib, 0x1234), 0x8ca9_9dad_c837_70fa);
    }

    /// `n` bytes `(7i + 3) mod 256`.
    fn pattern(n: usize) -> alloc::vec::Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    // Reference values computed with python-xxhash 4.1.0 (libxxhash 0.8.4,
    // `xxh3_64_intdigest`), one or more per length class of the algorithm.
    #[test]
    fn xxh3_matches_the_reference_implementation() {
        let cases: [(&[u8], u64, u64); 16] = [
            (b"", 0, 0x2d06_8005_38d3_94c2),
            (b"a", 0, 0xe6c6_32b6_1e96_4e1f),
            (b"abc", 0, 0x78af_5f94_892f_3950),
            (b"abcd", 0, 0x6497_a96f_53a8_9890),
            (b"abcdefgh", 5, 0xde3b_a861_28b5_29bd),
            (&seq(9)[..9], 0, 0xe961_2598_145b_b9dc),
            (&seq(16)[..16], 0x1234, 0x1930_096f_52f2_1682),
            (&seq(17)[..17], 0, 0x9ef3_41a9_9de3_7328),
            (&seq(40)[..40], 0, 0xcdb0_9983_1361_923c),
            (&seq(100)[..100], 7, 0xf99b_7990_5a88_dc51),
            (&seq(128)[..128], 0, 0x85c6_174c_7ff4_c46b),
            (&seq(129)[..129], 0, 0xec76_42b4_31ba_3e5a),
            (&seq(200)[..200], 9, 0x5313_50aa_f806_fdde),
            (&seq(240)[..240], 0, 0x375a_384d_957f_e865),
            (&seq(241)[..241], 0, 0x02e8_cd95_421c_6d02),
            (b"machvm segment checksum", 0, 0x0e72_fc09_2e00_37a0),
        ];
        for (data, seed, expected) in cases {
            assert_eq!(xxh3_64(data, seed), expected, "{} bytes", data.len());
        }
        let long: [(usize, u64, u64); 5] = [
            (1024, 0, 0x9b81_661c_641c_72b1),
            (1025, 0x1234, 0x5ba4_ac2f_6007_b433),
            (1500, 3, 0x3d2f_25d0_ed7c_eea1),
            (4096, 0xdead, 0x41fa_0de3_d844_6f42),
            (65536, 17, 0x0b4c_eec2_e75d_c583),
        ];
        // (Under miri, where 64 KiB take most of the test's time, the inputs up to 4 KiB.)
        for (len, seed, expected) in long {
            if !cfg!(miri) || len <= 4096 {
                assert_eq!(xxh3_64(&pattern(len), seed), expected, "{len} bytes");
            }
        }
    }

    #[test]
    fn xxh3_sees_every_single_bit_change() {
        // A medium and a long input (the long one crosses a block); under miri a sample of
        // the bytes.
        let step = if cfg!(miri) { 331 } else { 1 };
        for len in [200, 1500] {
            let mut data = pattern(len);
            let base = xxh3_64(&data, 3);
            for i in (0..len).step_by(step) {
                for bit in 0..8 {
                    data[i] ^= 1 << bit;
                    assert_ne!(xxh3_64(&data, 3), base, "{len} bytes: byte {i} bit {bit}");
                    data[i] ^= 1 << bit;
                }
            }
        }
    }

    #[test]
    fn every_single_byte_change_changes_the_hash() {
        let mut data = seq(200);
        let base = xxh64(&data[..200], 3);
        for i in 0..200 {
            for bit in 0..8 {
                data[i] ^= 1 << bit;
                assert_ne!(xxh64(&data[..200], 3), base, "byte {i} bit {bit}");
                data[i] ^= 1 << bit;
            }
        }
    }
}
