//! Byte ranges of virtual addresses: windows, free gaps, placed regions.

use core::fmt;

use machvm_addr::{VaWidth, VirtAddr};

use crate::AslrError;

/// A non-empty range of virtual addresses `[start, start + len)`, in bytes.
///
/// Invariant: `len > 0`, the last byte `start + len - 1` does not overflow, and the whole range
/// lies in one canonical half of the widest address space ([`VaWidth::WIDEST`]), so it never
/// crosses the non-canonical hole. The range may end at the top of the address space
/// (`start + len == 2^64`), which is why it is stored as a start and a length.
///
/// # Examples
///
/// ```
/// use machvm_addr::VirtAddr;
/// use machvm_aslr::VaRange;
///
/// let r = VaRange::new(VirtAddr::new(0x1000), 0x3000)?;
/// assert_eq!(r.last().as_u64(), 0x3fff);
/// assert_eq!(r.end(), Some(VirtAddr::new(0x4000)));
/// // The top 2 GiB of the upper half: its end (2^64) is not an address.
/// let top = VaRange::new(VirtAddr::new(0xffff_ffff_8000_0000), 1 << 31)?;
/// assert_eq!(top.end(), None);
/// assert!(VaRange::new(VirtAddr::new(0x1000), 0).is_err());
/// # Ok::<(), machvm_aslr::AslrError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VaRange {
    start: u64,
    len: u64,
}

impl VaRange {
    /// Returns the range of `len` bytes from `start`.
    ///
    /// # Errors
    ///
    /// - [`AslrError::BadRange`] if `len` is zero, `start + len - 1` overflows, or the last byte
    ///   is not canonical or is in the other half than `start`.
    #[inline]
    pub const fn new(start: VirtAddr, len: u64) -> Result<Self, AslrError> {
        let s = start.as_u64();
        Self::from_raw(s, len)
    }

    /// Returns the range `[start, end)`.
    ///
    /// # Errors
    ///
    /// - [`AslrError::BadRange`] if `end <= start` or the range is not inside one canonical
    ///   half.
    #[inline]
    pub const fn from_bounds(start: VirtAddr, end: VirtAddr) -> Result<Self, AslrError> {
        let (s, e) = (start.as_u64(), end.as_u64());
        if e <= s {
            return Err(AslrError::BadRange {
                start: s,
                len: e.wrapping_sub(s),
            });
        }
        Self::from_raw(s, e - s)
    }

    /// Validates raw values (used inside the crate, where windows are computed in `u64`).
    pub(crate) const fn from_raw(start: u64, len: u64) -> Result<Self, AslrError> {
        let bad = AslrError::BadRange { start, len };
        if len == 0 {
            return Err(bad);
        }
        let Some(last) = start.checked_add(len - 1) else {
            return Err(bad);
        };
        let (Ok(s), Ok(l)) = (VirtAddr::try_new(start), VirtAddr::try_new(last)) else {
            return Err(bad);
        };
        if s.is_lower_half(VaWidth::WIDEST) != l.is_lower_half(VaWidth::WIDEST) {
            return Err(bad);
        }
        Ok(Self { start, len })
    }

    /// Builds a range whose invariant the caller has established (a sub-range of a valid
    /// range, or a base and size checked against one).
    #[inline]
    pub(crate) const fn from_raw_unchecked(start: u64, len: u64) -> Self {
        debug_assert!(len > 0);
        Self { start, len }
    }

    /// Returns the first address.
    #[inline]
    pub const fn start(self) -> VirtAddr {
        VirtAddr::new(self.start)
    }

    /// Returns the length in bytes (never zero).
    #[inline]
    pub const fn len(self) -> u64 {
        self.len
    }

    /// Returns `false`: ranges are never empty (provided for API symmetry with collections).
    #[inline]
    pub const fn is_empty(self) -> bool {
        false
    }

    /// Returns the last address (`start + len - 1`).
    #[inline]
    pub const fn last(self) -> VirtAddr {
        VirtAddr::new(self.start + (self.len - 1))
    }

    /// Returns the exclusive end `start + len`, or `None` when that is `2^64` or not canonical
    /// (a range that ends exactly at the end of the lower half of the widest width).
    #[inline]
    pub const fn end(self) -> Option<VirtAddr> {
        match self.start.checked_add(self.len) {
            Some(e) => match VirtAddr::try_new(e) {
                Ok(a) => Some(a),
                Err(_) => None,
            },
            None => None,
        }
    }

    /// Returns whether `addr` is inside the range.
    #[inline]
    pub const fn contains(self, addr: VirtAddr) -> bool {
        let a = addr.as_u64();
        a >= self.start && a - self.start < self.len
    }

    /// Returns whether `other` lies entirely inside `self`.
    #[inline]
    pub const fn contains_range(self, other: Self) -> bool {
        other.start >= self.start && other.raw_last() <= self.raw_last()
    }

    /// Returns whether the two ranges share at least one byte.
    #[inline]
    pub const fn overlaps(self, other: Self) -> bool {
        self.start <= other.raw_last() && other.start <= self.raw_last()
    }

    /// Returns the last address as a raw value.
    #[inline]
    pub(crate) const fn raw_last(self) -> u64 {
        self.start + (self.len - 1)
    }

    /// Returns the start as a raw value.
    #[inline]
    pub(crate) const fn raw_start(self) -> u64 {
        self.start
    }
}

impl fmt::Debug for VaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaRange({:#x}..={:#x})", self.start, self.raw_last())
    }
}

impl fmt::Display for VaRange {
    /// Writes `start-end` in hex with an exclusive end, as vmmap does (`2^64` shows as
    /// `10000000000000000`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = u128::from(self.start) + u128::from(self.len);
        write!(f, "{:016x}-{:016x}", self.start, end)
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn ranges_cannot_cross_the_hole_or_wrap() {
        assert!(VaRange::from_raw(0x00ff_ffff_ffff_f000, 0x2000).is_err());
        assert!(VaRange::from_raw(u64::MAX, 2).is_err());
        assert!(VaRange::from_raw(0xff00_0000_0000_0000, 1 << 56).is_ok());
        assert!(VaRange::from_raw(0x0100_0000_0000_0000, 1).is_err());
        assert!(VaRange::from_raw(0, 1 << 56).is_ok());
        assert!(VaRange::from_raw(0, (1 << 56) + 1).is_err());
    }

    #[test]
    fn overlap_and_containment() {
        let a = VaRange::from_raw(0x1000, 0x1000).unwrap();
        let b = VaRange::from_raw(0x1fff, 0x10).unwrap();
        let c = VaRange::from_raw(0x2000, 0x10).unwrap();
        assert!(a.overlaps(b) && b.overlaps(a));
        assert!(!a.overlaps(c));
        assert!(VaRange::from_raw(0, 0x3000).unwrap().contains_range(a));
        assert!(!a.contains_range(b));
        assert!(a.contains(VirtAddr::new(0x1fff)) && !a.contains(VirtAddr::new(0x2000)));
    }

    #[test]
    fn display_is_vmmap_style() {
        let top = VaRange::from_raw(0xffff_ffff_8000_0000, 1 << 31).unwrap();
        assert_eq!(top.to_string(), "ffffffff80000000-10000000000000000");
        assert_eq!(
            VaRange::from_bounds(VirtAddr::new(0x1000), VirtAddr::new(0x1000)),
            Err(AslrError::BadRange {
                start: 0x1000,
                len: 0
            })
        );
    }
}
