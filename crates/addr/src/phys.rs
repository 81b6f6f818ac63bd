//! Physical addresses.

use core::fmt;

use crate::error::AddrError;
use crate::size::PageSize;

/// A physical address below `2^52`.
///
/// Invariant: the address is below `2^52` ([`PhysAddr::MAX_BITS`]), the widest physical
/// address either architecture defines (`x86_64` MAXPHYADDR is at most 52, Intel SDM Vol. 3A
/// §4.1.4; aarch64 `FEAT_LPA`/`FEAT_LPA2` give 52-bit output addresses, Arm ARM D8.2).
/// A particular machine may support fewer bits; that check belongs to the page-table format.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, PhysAddr};
///
/// let pa = PhysAddr::try_new(0x4000_1234)?;
/// assert_eq!(pa.align_down_to(PageSize::Size4KiB), PhysAddr::new(0x4000_1000));
/// assert_eq!(pa.page_offset(PageSize::Size4KiB), 0x234);
/// assert!(PhysAddr::try_new(1 << 52).is_err());
/// assert_eq!(PhysAddr::new_truncate(u64::MAX), PhysAddr::MAX);
/// # Ok::<(), machvm_addr::AddrError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// The number of physical address bits.
    pub const MAX_BITS: u32 = 52;
    /// The highest physical address, `2^52 - 1`.
    pub const MAX: Self = Self(Self::LIMIT - 1);
    /// One past the highest physical address.
    const LIMIT: u64 = 1 << Self::MAX_BITS;

    /// Returns the address `raw`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::PhysAddr;
    ///
    /// const RAM_BASE: PhysAddr = PhysAddr::new(0x4000_0000);
    /// assert_eq!(RAM_BASE.as_u64(), 0x4000_0000);
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `raw` is `2^52` or above.
    #[track_caller]
    #[inline]
    pub const fn new(raw: u64) -> Self {
        match Self::try_new(raw) {
            Ok(addr) => addr,
            Err(_) => panic!("physical address does not fit in 52 bits"),
        }
    }

    /// Returns the address `raw` if it is below `2^52`.
    ///
    /// # Errors
    ///
    /// - [`AddrError::PhysTooWide`] if `raw >= 2^52`.
    #[inline]
    pub const fn try_new(raw: u64) -> Result<Self, AddrError> {
        if raw < Self::LIMIT {
            Ok(Self(raw))
        } else {
            Err(AddrError::PhysTooWide { addr: raw })
        }
    }

    /// Returns `raw` with the bits at and above bit 52 cleared.
    #[inline]
    pub const fn new_truncate(raw: u64) -> Self {
        Self(raw & (Self::LIMIT - 1))
    }

    /// Returns the address from a trusted raw value; callers inside the crate guarantee the
    /// invariant.
    #[inline]
    pub(crate) const fn from_raw_unchecked(raw: u64) -> Self {
        Self(raw)
    }

    /// Returns physical address zero.
    #[inline]
    pub const fn zero() -> Self {
        Self(0)
    }

    /// Returns the address as a `u64`.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Returns whether the address is zero.
    #[inline]
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }

    /// Returns the address rounded down to a multiple of `align`.
    ///
    /// # Errors
    ///
    /// - [`AddrError::BadAlignment`] if `align` is not a power of two.
    #[inline]
    pub const fn align_down(self, align: u64) -> Result<Self, AddrError> {
        if !align.is_power_of_two() {
            return Err(AddrError::BadAlignment { align });
        }
        Ok(Self(self.0 & !(align - 1)))
    }

    /// Returns the address rounded up to a multiple of `align`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::{AddrError, PhysAddr};
    ///
    /// assert_eq!(PhysAddr::new(0x1001).align_up(0x1000), Ok(PhysAddr::new(0x2000)));
    /// assert_eq!(PhysAddr::MAX.align_up(0x1000), Err(AddrError::Overflow));
    /// ```
    ///
    /// # Errors
    ///
    /// - [`AddrError::BadAlignment`] if `align` is not a power of two.
    /// - [`AddrError::Overflow`] if the result would be `2^52` or above.
    #[inline]
    pub const fn align_up(self, align: u64) -> Result<Self, AddrError> {
        if !align.is_power_of_two() {
            return Err(AddrError::BadAlignment { align });
        }
        let Some(bumped) = self.0.checked_add(align - 1) else {
            return Err(AddrError::Overflow);
        };
        let raw = bumped & !(align - 1);
        if raw < Self::LIMIT {
            Ok(Self(raw))
        } else {
            Err(AddrError::Overflow)
        }
    }

    /// Returns whether the address is a multiple of `align`; `false` if `align` is not a power
    /// of two.
    #[inline]
    pub const fn is_aligned(self, align: u64) -> bool {
        align.is_power_of_two() && self.0 & (align - 1) == 0
    }

    /// Returns the address rounded down to a `size` boundary.
    #[inline]
    pub const fn align_down_to(self, size: PageSize) -> Self {
        Self(self.0 & !size.mask())
    }

    /// Returns the address rounded up to a `size` boundary, or `None` if that reaches `2^52`.
    #[inline]
    pub const fn align_up_to(self, size: PageSize) -> Option<Self> {
        match self.align_up(size.bytes()) {
            Ok(addr) => Some(addr),
            Err(_) => None,
        }
    }

    /// Returns the offset of the address inside its `size` frame.
    #[inline]
    pub const fn page_offset(self, size: PageSize) -> u64 {
        self.0 & size.mask()
    }

    /// Returns `self + bytes`, or `None` if the sum is `2^52` or above.
    #[inline]
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(raw) if raw < Self::LIMIT => Some(Self(raw)),
            _ => None,
        }
    }

    /// Returns `self - bytes`, or `None` if that is below zero.
    #[inline]
    pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
        match self.0.checked_sub(bytes) {
            Some(raw) => Some(Self(raw)),
            None => None,
        }
    }

    /// Returns `self - other` in bytes, or `None` if `other` is above `self`.
    #[inline]
    pub const fn checked_offset_from(self, other: Self) -> Option<u64> {
        self.0.checked_sub(other.0)
    }
}

impl TryFrom<u64> for PhysAddr {
    type Error = AddrError;

    #[inline]
    fn try_from(raw: u64) -> Result<Self, AddrError> {
        Self::try_new(raw)
    }
}

impl From<PhysAddr> for u64 {
    #[inline]
    fn from(addr: PhysAddr) -> Self {
        addr.0
    }
}

impl fmt::Debug for PhysAddr {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for PhysAddr {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl fmt::UpperHex for PhysAddr {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::UpperHex::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;

    use super::*;

    #[test]
    fn boundary_at_2_pow_52() {
        assert!(PhysAddr::try_new((1 << 52) - 1).is_ok());
        assert_eq!(
            PhysAddr::try_new(1 << 52),
            Err(AddrError::PhysTooWide { addr: 1 << 52 })
        );
        assert_eq!(PhysAddr::new_truncate((1 << 52) | 0x1234).as_u64(), 0x1234);
    }

    #[test]
    #[should_panic(expected = "52 bits")]
    fn new_panics_when_too_wide() {
        let _ = PhysAddr::new(u64::MAX);
    }

    #[test]
    fn alignment_and_arithmetic() {
        let a = PhysAddr::new(0x20_1000);
        assert_eq!(a.align_down(0x20_0000), Ok(PhysAddr::new(0x20_0000)));
        assert_eq!(a.align_up(0x20_0000), Ok(PhysAddr::new(0x40_0000)));
        assert_eq!(a.align_down(6), Err(AddrError::BadAlignment { align: 6 }));
        assert_eq!(
            a.align_up_to(PageSize::Size2MiB),
            Some(PhysAddr::new(0x40_0000))
        );
        assert_eq!(PhysAddr::MAX.align_up_to(PageSize::Size4KiB), None);
        assert!(a.is_aligned(0x1000));
        assert!(!a.is_aligned(0x2000));
        assert_eq!(PhysAddr::MAX.checked_add(1), None);
        assert_eq!(PhysAddr::zero().checked_sub(1), None);
        assert_eq!(
            a.checked_offset_from(PhysAddr::new(0x1000)),
            Some(0x20_0000)
        );
    }

    #[test]
    fn formatting_shows_hex() {
        let a = PhysAddr::new(0x4000_0000);
        assert_eq!(format!("{a:?}"), "PhysAddr(0x40000000)");
        assert_eq!(format!("{a}"), "0x40000000");
        assert_eq!(format!("{a:x}"), "40000000");
    }
}
