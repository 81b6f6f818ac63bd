//! Exact entropy accounting: `log2` of a number of equally likely positions, in fixed point.

use core::fmt;

/// The entropy of a uniformly chosen position: `log2(positions)` bits, in unsigned 16.16 fixed
/// point (units of 1/65536 bit), rounded down.
///
/// A slide chosen uniformly among `n` positions carries exactly `log2(n)` bits; this type keeps
/// that value without floating point, so it works in `no_std` kernels and compares the same way
/// on every target. The whole-bit part is exact (it is the index of the highest set bit of `n`);
/// the fraction is computed bit by bit (repeated squaring of the mantissa) and truncated, so it
/// is at most 2^-16 bit below the true value and exactly zero for powers of two. Comparisons
/// against whole-bit policy floors are therefore exact: `EntropyBits::from_positions(n) >=
/// EntropyBits::whole(k)` holds exactly when `n >= 2^k`.
///
/// # Examples
///
/// ```
/// use machvm_aslr::EntropyBits;
///
/// let bits = EntropyBits::from_positions(1 << 28);
/// assert_eq!(bits, EntropyBits::whole(28));
/// assert_eq!(bits.to_string(), "28.00");
/// // 752 positions (a 1.5 GiB window of 2 MiB slots minus a 32 MiB image): 9.55 bits.
/// let k = EntropyBits::from_positions(752);
/// assert!((k.as_f64() - 752f64.log2()).abs() < 1.0 / 65536.0);
/// assert_eq!(k.to_string(), "9.55");
/// assert_eq!(EntropyBits::from_positions(1), EntropyBits::ZERO);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntropyBits(u32);

impl EntropyBits {
    /// No entropy: one possible position (an unrandomised region).
    pub const ZERO: Self = Self(0);
    /// Fraction bits of the fixed-point representation.
    pub const FRACTION_BITS: u32 = 16;

    /// Returns `bits` whole bits.
    #[inline]
    pub const fn whole(bits: u8) -> Self {
        Self((bits as u32) << Self::FRACTION_BITS)
    }

    /// Returns the entropy of a uniform choice among `positions` positions, `log2(positions)`
    /// rounded down to 1/65536 bit. Zero or one position carries no entropy.
    pub const fn from_positions(positions: u64) -> Self {
        if positions <= 1 {
            return Self::ZERO;
        }
        let int = 63 - positions.leading_zeros();
        // Mantissa in [1, 2) with 62 fraction bits: its square stays below 2^126.
        let mut x: u128 = if int >= 62 {
            (positions as u128) >> (int - 62)
        } else {
            (positions as u128) << (62 - int)
        };
        let two: u128 = 1 << 63;
        let mut frac = 0u32;
        let mut i = 0;
        while i < Self::FRACTION_BITS {
            x = (x * x) >> 62;
            frac <<= 1;
            if x >= two {
                frac |= 1;
                x >>= 1;
            }
            i += 1;
        }
        Self((int << Self::FRACTION_BITS) | frac)
    }

    /// Returns the raw 16.16 fixed-point value (units of 1/65536 bit).
    #[inline]
    pub const fn to_fixed(self) -> u32 {
        self.0
    }

    /// Returns the value built from a raw 16.16 fixed-point value.
    #[inline]
    pub const fn from_fixed(raw: u32) -> Self {
        Self(raw)
    }

    /// Returns the whole bits, rounded down.
    #[inline]
    pub const fn whole_bits(self) -> u32 {
        self.0 >> Self::FRACTION_BITS
    }

    /// Returns the value as an `f64` (exact: 16.16 fixed point fits an `f64` mantissa).
    #[inline]
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(1u32 << Self::FRACTION_BITS)
    }
}

impl fmt::Display for EntropyBits {
    /// Writes the value with two decimals, rounded down (`27.99`, never a rounded-up `28.00`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frac = u64::from(self.0 & 0xffff);
        let hundredths = (frac * 100) >> Self::FRACTION_BITS;
        let text_len = if self.whole_bits() >= 10 { 5 } else { 4 };
        if let Some(width) = f.width() {
            for _ in text_len..width {
                f.write_str(" ")?;
            }
        }
        write!(f, "{}.{hundredths:02}", self.whole_bits())
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn powers_of_two_are_exact() {
        for k in 0..64u8 {
            assert_eq!(EntropyBits::from_positions(1 << k), EntropyBits::whole(k));
        }
    }

    #[test]
    fn fraction_is_within_one_ulp_below() {
        for n in [3u64, 5, 7, 752, 1000, 65_535, (1 << 40) + 12_345, u64::MAX] {
            let got = EntropyBits::from_positions(n).as_f64();
            let want = (n as f64).log2();
            assert!(got <= want + 1e-12, "{n}: {got} > {want}");
            assert!(want - got < 2.0 / 65536.0, "{n}: {got} vs {want}");
        }
    }

    #[test]
    fn floor_comparison_is_exact_at_the_boundary() {
        let floor = EntropyBits::whole(28);
        assert!(EntropyBits::from_positions((1 << 28) - 1) < floor);
        assert!(EntropyBits::from_positions(1 << 28) >= floor);
    }

    #[test]
    fn display_rounds_down_and_pads() {
        assert_eq!(
            EntropyBits::from_positions((1 << 28) - 1).to_string(),
            "27.99"
        );
        assert_eq!(format!("{:>6}", EntropyBits::whole(9)), "  9.00");
        assert_eq!(EntropyBits::ZERO.to_string(), "0.00");
    }
}
