//! XXH64, the checksum of slots and of swapped-out segments.
//!
//! Written from the published xxHash specification (Yann Collet, `doc/xxhash_spec.md`,
//! "XXH64 algorithm description"): four 64-bit accumulators over 32-byte stripes, then the
//! tail in 8-, 4- and 1-byte steps, then a final avalanche. It runs at several bytes per cycle
//! in portable Rust, so checksumming a stored page costs a small fraction of compressing it.
//!
//! Every step of a stripe round is a bijection of the accumulator for a fixed input word and
//! of the input word for a fixed accumulator, so a change confined to one 8-byte word of the
//! input always changes the result; other changes go unnoticed with a probability of about
//! 2⁻⁶⁴ (2⁻³² for the 32-bit slot checksums, which keep the low half).

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

#[inline(always)]
fn le64(bytes: &[u8]) -> u64 {
    let mut b = [0_u8; 8];
    b.copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

#[inline(always)]
fn le32(bytes: &[u8]) -> u32 {
    let mut b = [0_u8; 4];
    b.copy_from_slice(bytes);
    u32::from_le_bytes(b)
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
            v[0] = round(v[0], le64(&stripe[0..8]));
            v[1] = round(v[1], le64(&stripe[8..16]));
            v[2] = round(v[2], le64(&stripe[16..24]));
            v[3] = round(v[3], le64(&stripe[24..32]));
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
        acc ^= round(0, le64(w));
        acc = acc.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    }
    rest = words.remainder();
    if rest.len() >= 4 {
        acc ^= u64::from(le32(&rest[..4])).wrapping_mul(P1);
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

#[cfg(test)]
mod tests {
    use super::xxh64;

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
