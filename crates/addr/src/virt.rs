//! Virtual addresses and the width of a virtual address space.

use core::fmt;

use crate::error::AddrError;
use crate::size::PageSize;

/// Describes the size, in bits, of each half of a virtual address space.
///
/// With `bits = h`, the lower half is `[0, 2^h)` and the upper half is `[2^64 - 2^h, 2^64)`; an
/// address is canonical for the width when bits `h..=63` are all equal. This covers:
///
/// - `x86_64` 4-level paging ("48-bit canonical"): `h = 47` ([`VaWidth::X86_64_4LEVEL`]),
///   Intel SDM Vol. 3A §4.5;
/// - `x86_64` 5-level paging (LA57): `h = 56` ([`VaWidth::X86_64_5LEVEL`]);
/// - aarch64 with `TxSZ = 64 - h`, TTBR0 mapping the lower half and TTBR1 the upper half:
///   `h = 39, 48, 52` ([`VaWidth::AARCH64_39`], [`VaWidth::AARCH64_48`],
///   [`VaWidth::AARCH64_52`]), Arm ARM D8.2. Top-byte-ignore tagging is not modelled.
///
/// Valid widths are `16..=56` bits: 16 is the smallest aarch64 region (`TxSZ = 48` with
/// `FEAT_TTST`), 56 the largest half on either architecture.
///
/// # Examples
///
/// ```
/// use machvm_addr::VaWidth;
///
/// assert_eq!(VaWidth::X86_64_4LEVEL.bits(), 47);
/// assert_eq!(VaWidth::X86_64_4LEVEL.half_size(), 1 << 47);
/// assert_eq!(VaWidth::new(39), Ok(VaWidth::AARCH64_39));
/// assert!(VaWidth::new(57).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VaWidth(u8);

impl VaWidth {
    /// The smallest supported half width, in bits (aarch64 `TxSZ = 48`).
    pub const MIN_BITS: u8 = 16;
    /// The largest supported half width, in bits (`x86_64` LA57).
    pub const MAX_BITS: u8 = 56;
    /// `x86_64` 4-level paging: 47-bit halves (48-bit canonical addresses).
    pub const X86_64_4LEVEL: Self = Self(47);
    /// `x86_64` 5-level paging (LA57): 56-bit halves (57-bit canonical addresses).
    pub const X86_64_5LEVEL: Self = Self(56);
    /// aarch64 with `TxSZ = 25`: 39-bit regions under TTBR0 and TTBR1.
    pub const AARCH64_39: Self = Self(39);
    /// aarch64 with `TxSZ = 16`: 48-bit regions under TTBR0 and TTBR1.
    pub const AARCH64_48: Self = Self(48);
    /// aarch64 with `TxSZ = 12` (`FEAT_LVA` / `FEAT_LPA2`): 52-bit regions under TTBR0 and TTBR1.
    pub const AARCH64_52: Self = Self(52);
    /// The widest supported width (56-bit halves); [`VirtAddr`] is canonical in it.
    pub const WIDEST: Self = Self(Self::MAX_BITS);

    /// Returns the width with `bits`-bit halves.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::{AddrError, VaWidth};
    ///
    /// assert_eq!(VaWidth::new(47), Ok(VaWidth::X86_64_4LEVEL));
    /// assert_eq!(VaWidth::new(64), Err(AddrError::BadWidth { bits: 64 }));
    /// ```
    ///
    /// # Errors
    ///
    /// - [`AddrError::BadWidth`] if `bits` is outside
    ///   [`MIN_BITS`](Self::MIN_BITS)`..=`[`MAX_BITS`](Self::MAX_BITS).
    #[inline]
    pub const fn new(bits: u8) -> Result<Self, AddrError> {
        if bits >= Self::MIN_BITS && bits <= Self::MAX_BITS {
            Ok(Self(bits))
        } else {
            Err(AddrError::BadWidth { bits })
        }
    }

    /// Returns the number of bits in each half.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Returns the size of each half in bytes (`2^bits`).
    #[inline]
    pub const fn half_size(self) -> u64 {
        1 << self.0
    }

    /// Returns whether `raw` is canonical for this width.
    #[inline]
    pub(crate) const fn is_canonical(self, raw: u64) -> bool {
        // Canonical exactly when sign-extending from bit `bits` changes nothing; one compare.
        self.sign_extend(raw) == raw
    }

    /// Sign-extends `raw` from bit `bits` (the lowest bit that must match the ones above it).
    #[inline]
    pub(crate) const fn sign_extend(self, raw: u64) -> u64 {
        let shift = 63 - self.0 as u32;
        (((raw << shift) as i64) >> shift) as u64
    }
}

impl fmt::Display for VaWidth {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-bit halves", self.0)
    }
}

/// A canonical 64-bit virtual address.
///
/// Invariant: the address is canonical for [`VaWidth::WIDEST`] (56-bit halves, the LA57 form),
/// so every address that is canonical for a narrower width is a valid `VirtAddr`. Use
/// [`try_new_in`](Self::try_new_in) or [`is_canonical_in`](Self::is_canonical_in) to check
/// against the width a particular address space really uses.
///
/// There are no `+`/`-` operators: arithmetic is `checked_*` and returns `None` instead of
/// wrapping or leaving canonical space.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, VaWidth, VirtAddr};
///
/// const KERNEL_BASE: VirtAddr = VirtAddr::new(0xffff_8000_0000_0000);
/// assert!(KERNEL_BASE.is_upper_half(VaWidth::X86_64_4LEVEL));
///
/// let a = VirtAddr::try_new(0x1234_5678)?;
/// assert_eq!(a.align_down_to(PageSize::Size4KiB), VirtAddr::new(0x1234_5000));
/// assert_eq!(a.checked_add(0x10), Some(VirtAddr::new(0x1234_5688)));
/// assert!(VirtAddr::try_new_in(0x0000_8000_0000_0000, VaWidth::X86_64_4LEVEL).is_err());
/// assert_eq!(format!("{a:?}"), "VirtAddr(0x12345678)");
/// # Ok::<(), machvm_addr::AddrError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(u64);

impl VirtAddr {
    /// Returns the address `raw`.
    ///
    /// Usable in constants; use [`try_new`](Self::try_new) for addresses that come from input.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::VirtAddr;
    ///
    /// const A: VirtAddr = VirtAddr::new(0xffff_ffff_ffff_f000);
    /// assert_eq!(A.as_u64(), 0xffff_ffff_ffff_f000);
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `raw` is not canonical for [`VaWidth::WIDEST`].
    #[track_caller]
    #[inline]
    pub const fn new(raw: u64) -> Self {
        match Self::try_new(raw) {
            Ok(addr) => addr,
            Err(_) => panic!("virtual address is not canonical for 56-bit halves"),
        }
    }

    /// Returns the address `raw` if it is canonical for [`VaWidth::WIDEST`].
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::VirtAddr;
    ///
    /// assert!(VirtAddr::try_new(0x00ff_ffff_ffff_ffff).is_ok());
    /// assert!(VirtAddr::try_new(0x0100_0000_0000_0000).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// - [`AddrError::NotCanonical`] if `raw` lies in the non-canonical hole.
    #[inline]
    pub const fn try_new(raw: u64) -> Result<Self, AddrError> {
        Self::try_new_in(raw, VaWidth::WIDEST)
    }

    /// Returns the address `raw` if it is canonical for `width`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::{VaWidth, VirtAddr};
    ///
    /// assert!(VirtAddr::try_new_in(0x7fff_ffff_ffff, VaWidth::X86_64_4LEVEL).is_ok());
    /// assert!(VirtAddr::try_new_in(0x8000_0000_0000, VaWidth::X86_64_4LEVEL).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// - [`AddrError::NotCanonical`] if `raw` is not canonical for `width`.
    #[inline]
    pub const fn try_new_in(raw: u64, width: VaWidth) -> Result<Self, AddrError> {
        if width.is_canonical(raw) {
            Ok(Self(raw))
        } else {
            Err(AddrError::NotCanonical { addr: raw, width })
        }
    }

    /// Returns `raw` made canonical for `width` by sign-extending from bit `width.bits()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::{VaWidth, VirtAddr};
    ///
    /// let a = VirtAddr::new_truncate(0x0000_8000_0000_1000, VaWidth::X86_64_4LEVEL);
    /// assert_eq!(a.as_u64(), 0xffff_8000_0000_1000);
    /// ```
    #[inline]
    pub const fn new_truncate(raw: u64, width: VaWidth) -> Self {
        Self(width.sign_extend(raw))
    }

    /// Returns the address from a trusted raw value; callers inside the crate guarantee
    /// canonicality.
    #[inline]
    pub(crate) const fn from_raw_unchecked(raw: u64) -> Self {
        Self(raw)
    }

    /// Returns the null address.
    #[inline]
    pub const fn zero() -> Self {
        Self(0)
    }

    /// Returns the address as a `u64`.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Returns the address of `ptr`.
    ///
    /// This is fallible because tagged pointers (aarch64 top-byte-ignore, MTE) need not be
    /// canonical.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::VirtAddr;
    ///
    /// let x = 5u32;
    /// let a = VirtAddr::try_from_ptr(&raw const x)?;
    /// assert!(a.is_aligned(4));
    /// # Ok::<(), machvm_addr::AddrError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// - [`AddrError::NotCanonical`] if the pointer's address is not canonical.
    #[inline]
    pub fn try_from_ptr<T: ?Sized>(ptr: *const T) -> Result<Self, AddrError> {
        Self::try_new(ptr.cast::<u8>().expose_provenance() as u64)
    }

    /// Returns a raw pointer to the address (with exposed provenance).
    #[inline]
    pub fn as_ptr<T>(self) -> *const T {
        core::ptr::with_exposed_provenance(self.0 as usize)
    }

    /// Returns a raw mutable pointer to the address (with exposed provenance).
    #[inline]
    pub fn as_mut_ptr<T>(self) -> *mut T {
        core::ptr::with_exposed_provenance_mut(self.0 as usize)
    }

    /// Returns whether the address is canonical for `width` (every `VirtAddr` is canonical for
    /// [`VaWidth::WIDEST`]).
    #[inline]
    pub const fn is_canonical_in(self, width: VaWidth) -> bool {
        width.is_canonical(self.0)
    }

    /// Returns whether the address is in the lower half `[0, 2^bits)` of `width`.
    #[inline]
    pub const fn is_lower_half(self, width: VaWidth) -> bool {
        self.0 < width.half_size()
    }

    /// Returns whether the address is in the upper half `[2^64 - 2^bits, 2^64)` of `width`.
    #[inline]
    pub const fn is_upper_half(self, width: VaWidth) -> bool {
        self.0 >= width.half_size().wrapping_neg()
    }

    /// Returns whether the address is zero.
    #[inline]
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }

    /// Returns the address rounded down to a multiple of `align`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::VirtAddr;
    ///
    /// assert_eq!(VirtAddr::new(0x1fff).align_down(0x1000), Ok(VirtAddr::new(0x1000)));
    /// ```
    ///
    /// # Errors
    ///
    /// - [`AddrError::BadAlignment`] if `align` is not a power of two.
    /// - [`AddrError::Overflow`] if the result falls into the non-canonical hole (only for
    ///   upper-half addresses and alignments above `2^56`).
    #[inline]
    pub const fn align_down(self, align: u64) -> Result<Self, AddrError> {
        if !align.is_power_of_two() {
            return Err(AddrError::BadAlignment { align });
        }
        let raw = self.0 & !(align - 1);
        if VaWidth::WIDEST.is_canonical(raw) {
            Ok(Self(raw))
        } else {
            Err(AddrError::Overflow)
        }
    }

    /// Returns the address rounded up to a multiple of `align`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::{AddrError, VirtAddr};
    ///
    /// assert_eq!(VirtAddr::new(0x1001).align_up(0x1000), Ok(VirtAddr::new(0x2000)));
    /// assert_eq!(VirtAddr::new(u64::MAX).align_up(0x1000), Err(AddrError::Overflow));
    /// ```
    ///
    /// # Errors
    ///
    /// - [`AddrError::BadAlignment`] if `align` is not a power of two.
    /// - [`AddrError::Overflow`] if the result would pass `2^64` or fall into the
    ///   non-canonical hole.
    #[inline]
    pub const fn align_up(self, align: u64) -> Result<Self, AddrError> {
        // Computed without early exits so the valid case is a few ALU ops and one branch;
        // the error path is classified out of line.
        let mask = align.wrapping_sub(1);
        let (bumped, carry) = self.0.overflowing_add(mask);
        let raw = bumped & !mask;
        if align.is_power_of_two() & !carry & VaWidth::WIDEST.is_canonical(raw) {
            Ok(Self(raw))
        } else {
            Err(Self::align_up_error(align))
        }
    }

    #[cold]
    #[inline]
    const fn align_up_error(align: u64) -> AddrError {
        if align.is_power_of_two() {
            AddrError::Overflow
        } else {
            AddrError::BadAlignment { align }
        }
    }

    /// Returns whether the address is a multiple of `align`; `false` if `align` is not a power
    /// of two.
    #[inline]
    pub const fn is_aligned(self, align: u64) -> bool {
        align.is_power_of_two() && self.0 & (align - 1) == 0
    }

    /// Returns the address rounded down to a `size` boundary (never fails: page sizes are far
    /// below the half size).
    #[inline]
    pub const fn align_down_to(self, size: PageSize) -> Self {
        Self(self.0 & !size.mask())
    }

    /// Returns the address rounded up to a `size` boundary, or `None` if that would overflow
    /// (see [`align_up`](Self::align_up)).
    #[inline]
    pub const fn align_up_to(self, size: PageSize) -> Option<Self> {
        match self.align_up(size.bytes()) {
            Ok(addr) => Some(addr),
            Err(_) => None,
        }
    }

    /// Returns the offset of the address inside its `size` page.
    #[inline]
    pub const fn page_offset(self, size: PageSize) -> u64 {
        self.0 & size.mask()
    }

    /// Returns `self + bytes`, or `None` if the sum passes `2^64` or is not canonical.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::VirtAddr;
    ///
    /// assert_eq!(VirtAddr::new(0x1000).checked_add(0x1000), Some(VirtAddr::new(0x2000)));
    /// assert_eq!(VirtAddr::new(0x00ff_ffff_ffff_ffff).checked_add(1), None);
    /// ```
    #[inline]
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(raw) if VaWidth::WIDEST.is_canonical(raw) => Some(Self(raw)),
            _ => None,
        }
    }

    /// Returns `self - bytes`, or `None` if the difference is below zero or not canonical.
    #[inline]
    pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
        match self.0.checked_sub(bytes) {
            Some(raw) if VaWidth::WIDEST.is_canonical(raw) => Some(Self(raw)),
            _ => None,
        }
    }

    /// Returns `self - other` in bytes, or `None` if `other` is above `self`.
    #[inline]
    pub const fn checked_offset_from(self, other: Self) -> Option<u64> {
        self.0.checked_sub(other.0)
    }
}

impl TryFrom<u64> for VirtAddr {
    type Error = AddrError;

    #[inline]
    fn try_from(raw: u64) -> Result<Self, AddrError> {
        Self::try_new(raw)
    }
}

impl From<VirtAddr> for u64 {
    #[inline]
    fn from(addr: VirtAddr) -> Self {
        addr.0
    }
}

impl fmt::Debug for VirtAddr {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

impl fmt::Display for VirtAddr {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for VirtAddr {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl fmt::UpperHex for VirtAddr {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::UpperHex::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;

    use super::*;

    const ALL_WIDTHS: [VaWidth; 5] = [
        VaWidth::X86_64_4LEVEL,
        VaWidth::X86_64_5LEVEL,
        VaWidth::AARCH64_39,
        VaWidth::AARCH64_48,
        VaWidth::AARCH64_52,
    ];

    #[test]
    fn canonical_boundaries_for_every_width() {
        for w in ALL_WIDTHS {
            let h = w.half_size();
            assert!(VirtAddr::try_new_in(h - 1, w).is_ok(), "{w}");
            assert_eq!(
                VirtAddr::try_new_in(h, w),
                Err(AddrError::NotCanonical { addr: h, width: w })
            );
            assert!(VirtAddr::try_new_in(h.wrapping_neg() - 1, w).is_err());
            assert!(VirtAddr::try_new_in(h.wrapping_neg(), w).is_ok());
            assert!(VirtAddr::try_new_in(u64::MAX, w).is_ok());
            assert!(VirtAddr::new(h - 1).is_lower_half(w));
            assert!(VirtAddr::new(h.wrapping_neg()).is_upper_half(w));
        }
    }

    #[test]
    fn narrower_canonical_implies_widest() {
        for w in ALL_WIDTHS {
            for raw in [0, w.half_size() - 1, w.half_size().wrapping_neg(), u64::MAX] {
                assert!(VirtAddr::try_new_in(raw, w).is_ok());
                assert!(VirtAddr::try_new(raw).is_ok());
            }
        }
    }

    #[test]
    fn width_new_rejects_out_of_bounds() {
        assert_eq!(VaWidth::new(15), Err(AddrError::BadWidth { bits: 15 }));
        assert_eq!(VaWidth::new(16).map(VaWidth::bits), Ok(16));
        assert_eq!(VaWidth::new(56), Ok(VaWidth::WIDEST));
        assert!(VaWidth::new(57).is_err());
    }

    #[test]
    fn new_truncate_sign_extends() {
        let w = VaWidth::X86_64_4LEVEL;
        assert_eq!(
            VirtAddr::new_truncate(0x0000_7fff_ffff_ffff, w).as_u64(),
            0x7fff_ffff_ffff
        );
        assert_eq!(
            VirtAddr::new_truncate(0x0000_8000_0000_0000, w).as_u64(),
            0xffff_8000_0000_0000
        );
        assert_eq!(
            VirtAddr::new_truncate(0x1234_0000_0000_1000, w).as_u64(),
            0x1000
        );
        let w = VaWidth::WIDEST;
        assert_eq!(
            VirtAddr::new_truncate(0x0100_0000_0000_0000, w).as_u64(),
            0xff00_0000_0000_0000
        );
    }

    #[test]
    #[should_panic(expected = "not canonical")]
    fn new_panics_on_hole_address() {
        let _ = VirtAddr::new(0x0100_0000_0000_0000);
    }

    #[test]
    fn align_up_reports_overflow_and_bad_alignment() {
        let a = VirtAddr::new(0x1001);
        assert_eq!(a.align_up(0x1000), Ok(VirtAddr::new(0x2000)));
        assert_eq!(a.align_up(3), Err(AddrError::BadAlignment { align: 3 }));
        assert_eq!(a.align_up(0), Err(AddrError::BadAlignment { align: 0 }));
        assert_eq!(
            VirtAddr::new(0x00ff_ffff_ffff_f001).align_up(0x1000),
            Err(AddrError::Overflow)
        );
        assert_eq!(
            VirtAddr::new(u64::MAX).align_up(2),
            Err(AddrError::Overflow)
        );
        assert_eq!(
            VirtAddr::new(u64::MAX).align_up(1),
            Ok(VirtAddr::new(u64::MAX))
        );
        assert_eq!(
            VirtAddr::new(u64::MAX).align_up_to(PageSize::Size4KiB),
            None
        );
    }

    #[test]
    fn align_down_into_hole_is_overflow() {
        let a = VirtAddr::new(0xff00_0000_0000_0000);
        assert_eq!(a.align_down(1 << 57), Err(AddrError::Overflow));
        assert_eq!(a.align_down(1 << 56), Ok(a));
        assert_eq!(
            VirtAddr::new(0xffff_ffff_ffff_ffff)
                .align_down_to(PageSize::Size1GiB)
                .as_u64(),
            0xffff_ffff_c000_0000
        );
    }

    #[test]
    fn is_aligned_is_false_for_bad_alignment() {
        assert!(VirtAddr::new(0x2000).is_aligned(0x1000));
        assert!(!VirtAddr::new(0x2000).is_aligned(0x3000));
        assert!(!VirtAddr::new(0).is_aligned(0));
        assert_eq!(VirtAddr::new(0x2345).page_offset(PageSize::Size4KiB), 0x345);
    }

    #[test]
    fn checked_arithmetic_stays_canonical() {
        let top_low = VirtAddr::new(0x00ff_ffff_ffff_ffff);
        assert_eq!(top_low.checked_add(1), None);
        assert_eq!(VirtAddr::new(u64::MAX).checked_add(1), None);
        assert_eq!(VirtAddr::new(0xff00_0000_0000_0000).checked_sub(1), None);
        assert_eq!(VirtAddr::zero().checked_sub(1), None);
        assert_eq!(
            VirtAddr::new(0x3000).checked_offset_from(VirtAddr::new(0x1000)),
            Some(0x2000)
        );
        assert_eq!(
            VirtAddr::new(0x1000).checked_offset_from(VirtAddr::new(0x3000)),
            None
        );
    }

    #[test]
    fn formatting_shows_hex() {
        let a = VirtAddr::new(0xffff_8000_0000_1000);
        assert_eq!(format!("{a:?}"), "VirtAddr(0xffff800000001000)");
        assert_eq!(format!("{a}"), "0xffff800000001000");
        assert_eq!(format!("{a:#x}"), "0xffff800000001000");
        assert_eq!(format!("{a:X}"), "FFFF800000001000");
    }

    #[test]
    fn pointer_round_trip() {
        let x = 7u64;
        let a = VirtAddr::try_from_ptr(&raw const x).unwrap();
        assert_eq!(a.as_ptr::<u64>(), &raw const x);
        assert!(!a.is_null());
        assert!(VirtAddr::zero().is_null());
        assert_eq!(VirtAddr::default(), VirtAddr::zero());
    }
}
