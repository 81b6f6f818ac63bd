//! Uniform, aligned, non-zero slides of a region inside a window.

use machvm_addr::VirtAddr;
use rand_core::Rng;

use crate::{AslrError, EntropyBits, VaRange};

/// The most draws [`uniform_below`] makes before giving up on a generator.
///
/// A working generator is rejected with probability below `n / 2^64` per draw; with every
/// count this crate can produce (`n <= 2^57`) 64 rejections in a row have probability below
/// 2^-448. Reaching the bound means the generator is stuck, which is reported as
/// [`AslrError::RngStuck`] instead of looping forever.
pub const MAX_REJECTIONS: u32 = 64;

/// Returns a uniformly distributed value in `0..n` (Lemire's multiply-and-reject method: the
/// high half of `x * n` for a random 64-bit `x`, redrawn when the low half falls in the
/// `2^64 mod n` biased zone, so every value has exactly the same number of preimages).
///
/// # Errors
///
/// - [`AslrError::RngStuck`] if `n` is zero or [`MAX_REJECTIONS`] draws in a row were rejected.
#[inline]
pub fn uniform_below<R: Rng + ?Sized>(rng: &mut R, n: u64) -> Result<u64, AslrError> {
    if n == 0 {
        return Err(AslrError::RngStuck);
    }
    let n128 = u128::from(n);
    let mut m = u128::from(rng.next_u64()) * n128;
    if (m as u64) < n {
        // Only now pay for the division: the rejection threshold `2^64 mod n`.
        let threshold = n.wrapping_neg() % n;
        let mut draws = 1;
        while (m as u64) < threshold {
            if draws >= MAX_REJECTIONS {
                return Err(AslrError::RngStuck);
            }
            m = u128::from(rng.next_u64()) * n128;
            draws += 1;
        }
    }
    Ok((m >> 64) as u64)
}

/// Checks that `align` is a non-zero power of two.
#[inline]
pub(crate) const fn check_align(align: u64) -> Result<(), AslrError> {
    if align.is_power_of_two() {
        Ok(())
    } else {
        Err(AslrError::BadAlignment { align })
    }
}

/// Returns the number of `align`-aligned bases `b` with `[b, b + size)` inside
/// `[first, last]` (all raw, `align` a power of two, `size > 0`), and the lowest such base.
#[inline]
pub(crate) const fn positions_in(first: u64, last: u64, size: u64, align: u64) -> (u64, u64) {
    let mask = align - 1;
    let Some(bumped) = first.checked_add(mask) else {
        return (0, 0);
    };
    let lo = bumped & !mask;
    // Highest allowed base: last - (size - 1).
    let Some(hi) = last.checked_sub(size - 1) else {
        return (0, 0);
    };
    if lo > hi || lo < first {
        return (0, 0);
    }
    (((hi - lo) >> align.trailing_zeros()) + 1, lo)
}

/// A precomputed slide: a region of `size` bytes, aligned to `align`, to be placed in a window.
///
/// The *unslid* base is the lowest `align`-aligned address in the window (slide zero, what an
/// unrandomised or "no randomise" layout uses). A slide is `k * align` for `k` uniform in
/// `1..=positions`, so it is never zero and the region always ends inside the window; the
/// entropy is exactly `log2(positions)` bits. Build it once (validation and the position count)
/// and call [`slide`](Self::slide) as often as needed: that is one 64-bit draw, one multiply
/// and one add in the common case.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, VirtAddr};
/// use machvm_aslr::{AslrRng, SlideRequest, VaRange};
///
/// // A 64 MiB executable in a 1 TiB + 64 MiB window, 4 KiB aligned: 2^28 slides.
/// let window = VaRange::new(VirtAddr::new(0x1_0000_0000), (1 << 40) + (64 << 20))?;
/// let req = SlideRequest::new(window, 64 << 20, PageSize::Size4KiB.bytes())?;
/// assert_eq!(req.positions(), 1 << 28);
///
/// let mut rng = AslrRng::from_seed([7; 32]);
/// let s = req.slide(&mut rng)?;
/// assert!(s.offset() > 0 && s.offset() % 4096 == 0);
/// assert!(window.contains_range(s.range()));
/// assert_eq!(s.bits().whole_bits(), 28);
/// # Ok::<(), machvm_aslr::AslrError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlideRequest {
    window: VaRange,
    size: u64,
    align: u64,
    unslid: u64,
    positions: u64,
}

impl SlideRequest {
    /// Prepares slides of a `size`-byte region aligned to `align` bytes inside `window`.
    ///
    /// # Errors
    ///
    /// - [`AslrError::BadAlignment`] if `align` is not a power of two.
    /// - [`AslrError::ZeroSize`] if `size` is zero.
    /// - [`AslrError::NoRoom`] if no non-zero slide keeps the region inside the window.
    pub const fn new(window: VaRange, size: u64, align: u64) -> Result<Self, AslrError> {
        if let Err(e) = check_align(align) {
            return Err(e);
        }
        if size == 0 {
            return Err(AslrError::ZeroSize);
        }
        let (count, lo) = positions_in(window.raw_start(), window.raw_last(), size, align);
        // The lowest base is the unslid one; the others are the slides.
        if count < 2 {
            return Err(AslrError::NoRoom {
                size,
                align,
                window_len: window.len(),
            });
        }
        Ok(Self {
            window,
            size,
            align,
            unslid: lo,
            positions: count - 1,
        })
    }

    /// Returns the window.
    #[inline]
    pub const fn window(&self) -> VaRange {
        self.window
    }

    /// Returns the region size in bytes.
    #[inline]
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// Returns the alignment in bytes.
    #[inline]
    pub const fn align(&self) -> u64 {
        self.align
    }

    /// Returns the number of possible (non-zero) slides.
    #[inline]
    pub const fn positions(&self) -> u64 {
        self.positions
    }

    /// Returns the entropy of a slide, `log2(positions)`.
    #[inline]
    pub const fn bits(&self) -> EntropyBits {
        EntropyBits::from_positions(self.positions)
    }

    /// Returns the unslid base: the lowest aligned address of the window.
    #[inline]
    pub const fn unslid_base(&self) -> VirtAddr {
        VirtAddr::new(self.unslid)
    }

    /// Returns a uniformly distributed non-zero slide.
    ///
    /// # Errors
    ///
    /// - [`AslrError::RngStuck`] if the generator produced [`MAX_REJECTIONS`] rejected values
    ///   in a row (a broken generator; a working one never does).
    #[inline]
    pub fn slide<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Slide, AslrError> {
        let k = uniform_below(rng, self.positions)? + 1;
        // k <= positions, so the base stays inside the window: no overflow.
        let offset = k << self.align.trailing_zeros();
        Ok(Slide {
            base: self.unslid + offset,
            offset,
            size: self.size,
            positions: self.positions,
        })
    }

    /// Returns the zero slide (a "no randomise" personality): the unslid base, 0 bits.
    #[inline]
    pub const fn unslid(&self) -> Slide {
        Slide {
            base: self.unslid,
            offset: 0,
            size: self.size,
            positions: 1,
        }
    }
}

/// Returns a uniform, aligned, non-zero slide of a `size`-byte region inside `window`: a
/// one-shot [`SlideRequest`].
///
/// # Errors
///
/// - [`AslrError::BadAlignment`], [`AslrError::ZeroSize`], [`AslrError::NoRoom`]: as
///   [`SlideRequest::new`].
/// - [`AslrError::RngStuck`]: as [`SlideRequest::slide`].
#[inline]
pub fn slide<R: Rng + ?Sized>(
    window: VaRange,
    size: u64,
    align: u64,
    rng: &mut R,
) -> Result<Slide, AslrError> {
    SlideRequest::new(window, size, align)?.slide(rng)
}

/// A chosen slide: where the region starts, how far that is from the unslid base, and how many
/// positions it was chosen from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slide {
    base: u64,
    offset: u64,
    size: u64,
    positions: u64,
}

impl Slide {
    /// Returns the slid base address of the region.
    #[inline]
    pub const fn base(&self) -> VirtAddr {
        VirtAddr::new(self.base)
    }

    /// Returns the slide: bytes from the unslid base (zero only for [`SlideRequest::unslid`]).
    #[inline]
    pub const fn offset(&self) -> u64 {
        self.offset
    }

    /// Returns the placed region `[base, base + size)`.
    #[inline]
    pub const fn range(&self) -> VaRange {
        // Inside the window by construction, so the range invariant holds.
        VaRange::from_raw_unchecked(self.base, self.size)
    }

    /// Returns the number of positions the slide was chosen from (1 when unslid).
    #[inline]
    pub const fn positions(&self) -> u64 {
        self.positions
    }

    /// Returns the entropy of the slide, `log2(positions)` (0 when unslid).
    #[inline]
    pub const fn bits(&self) -> EntropyBits {
        EntropyBits::from_positions(self.positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AslrRng;

    /// A generator that returns one value forever.
    struct Stuck(u64);
    impl rand_core::TryRng for Stuck {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok(self.0 as u32)
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            Ok(self.0)
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            dst.fill(self.0 as u8);
            Ok(())
        }
    }

    fn window(start: u64, len: u64) -> VaRange {
        VaRange::from_raw(start, len).unwrap()
    }

    #[test]
    fn positions_exclude_the_zero_slide() {
        let req = SlideRequest::new(window(0x10_0000, 0x10_0000), 0x1000, 0x1000).unwrap();
        assert_eq!(req.positions(), 255);
        assert_eq!(req.unslid_base(), VirtAddr::new(0x10_0000));
        // An unaligned window start rounds the unslid base up.
        let req = SlideRequest::new(window(0x10_0001, 0x10_0000), 0x1000, 0x1000).unwrap();
        assert_eq!(req.unslid_base(), VirtAddr::new(0x10_1000));
        assert_eq!(req.positions(), 254);
    }

    #[test]
    fn window_with_one_position_is_no_room() {
        assert_eq!(
            SlideRequest::new(window(0x1000, 0x1fff), 0x1000, 0x1000),
            Err(AslrError::NoRoom {
                size: 0x1000,
                align: 0x1000,
                window_len: 0x1fff
            })
        );
        assert!(SlideRequest::new(window(0x1000, 0x2000), 0x1000, 0x1000).is_ok());
    }

    #[test]
    fn bad_arguments_are_errors() {
        let w = window(0, 1 << 30);
        assert_eq!(SlideRequest::new(w, 0, 0x1000), Err(AslrError::ZeroSize));
        assert_eq!(
            SlideRequest::new(w, 1, 0x3000),
            Err(AslrError::BadAlignment { align: 0x3000 })
        );
        assert_eq!(
            SlideRequest::new(w, 1, 0),
            Err(AslrError::BadAlignment { align: 0 })
        );
    }

    #[test]
    fn slides_at_the_top_of_the_address_space_do_not_overflow() {
        let w = window(0xffff_ffff_8000_0000, 1 << 31);
        let req = SlideRequest::new(w, 32 << 20, 2 << 20).unwrap();
        assert_eq!(req.positions(), 1024 - 16);
        let mut rng = AslrRng::from_seed([1; 32]);
        for _ in 0..if cfg!(miri) { 50 } else { 1000 } {
            let s = req.slide(&mut rng).unwrap();
            assert!(w.contains_range(s.range()));
        }
        // The extreme draws: k = 1 (x * n < 2^64 above the rejection zone) and k = positions.
        let lo = req.slide(&mut Stuck(1 << 54)).unwrap();
        assert_eq!(lo.offset(), 2 << 20);
        let hi = req.slide(&mut Stuck(u64::MAX)).unwrap();
        assert_eq!(hi.range().last().as_u64(), u64::MAX);
    }

    #[test]
    fn stuck_generator_is_reported_not_looped_on() {
        // n = 3: threshold = 2^64 mod 3 = 1; x = 0 gives low half 0 < 1, rejected forever.
        assert_eq!(uniform_below(&mut Stuck(0), 3), Err(AslrError::RngStuck));
        assert_eq!(uniform_below(&mut Stuck(0), 0), Err(AslrError::RngStuck));
        assert_eq!(uniform_below(&mut Stuck(u64::MAX), 3), Ok(2));
    }

    #[test]
    fn unslid_has_zero_bits() {
        let req = SlideRequest::new(window(0x4000, 0x10_0000), 0x4000, 0x4000).unwrap();
        let u = req.unslid();
        assert_eq!((u.offset(), u.positions()), (0, 1));
        assert_eq!(u.bits(), EntropyBits::ZERO);
        assert_eq!(u.base(), VirtAddr::new(0x4000));
    }
}
