//! Page sizes: the runtime [`PageSize`] and the typed sizes behind [`FixedPageSize`].

use core::fmt;
use core::hash::Hash;

/// A page or block size used by an `x86_64` or aarch64 translation format.
///
/// Ordered by size. `#[non_exhaustive]` because aarch64 `FEAT_LPA`/`FEAT_LPA2` add larger
/// level-0/level-1 blocks (64 GiB, 512 GiB, 4 TiB) that may be added later.
///
/// # Examples
///
/// ```
/// use machvm_addr::PageSize;
///
/// assert_eq!(PageSize::Size2MiB.bytes(), 0x20_0000);
/// assert_eq!(PageSize::Size2MiB.shift(), 21);
/// assert_eq!(PageSize::from_bytes(0x4000), Some(PageSize::Size16KiB));
/// assert!(PageSize::Size4KiB < PageSize::Size1GiB);
/// assert_eq!(PageSize::Size64KiB.to_string(), "64KiB");
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB: `x86_64` pages (Intel SDM Vol. 3A §4.5) and aarch64 4K-granule pages (Arm ARM D8.2).
    Size4KiB,
    /// 16 KiB: aarch64 16K-granule pages (Arm ARM D8.2).
    Size16KiB,
    /// 64 KiB: aarch64 64K-granule pages (Arm ARM D8.2).
    Size64KiB,
    /// 2 MiB: `x86_64` PDE large pages and aarch64 4K-granule level-2 blocks.
    Size2MiB,
    /// 32 MiB: aarch64 16K-granule level-2 blocks.
    Size32MiB,
    /// 512 MiB: aarch64 64K-granule level-2 blocks.
    Size512MiB,
    /// 1 GiB: `x86_64` PDPTE huge pages and aarch64 4K-granule level-1 blocks.
    Size1GiB,
}

impl PageSize {
    /// Every page size, smallest first.
    pub const ALL: [Self; 7] = [
        Self::Size4KiB,
        Self::Size16KiB,
        Self::Size64KiB,
        Self::Size2MiB,
        Self::Size32MiB,
        Self::Size512MiB,
        Self::Size1GiB,
    ];

    /// Returns the size in bytes.
    #[inline]
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// Returns log2 of the size in bytes.
    #[inline]
    pub const fn shift(self) -> u32 {
        match self {
            Self::Size4KiB => 12,
            Self::Size16KiB => 14,
            Self::Size64KiB => 16,
            Self::Size2MiB => 21,
            Self::Size32MiB => 25,
            Self::Size512MiB => 29,
            Self::Size1GiB => 30,
        }
    }

    /// Returns `bytes() - 1`, the mask of the offset inside a page.
    #[inline]
    pub const fn mask(self) -> u64 {
        self.bytes() - 1
    }

    /// Returns the page size of exactly `bytes` bytes, if there is one.
    #[inline]
    pub const fn from_bytes(bytes: u64) -> Option<Self> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i].bytes() == bytes {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// Returns whether `value` is a multiple of this size.
    #[inline]
    pub const fn is_aligned(self, value: u64) -> bool {
        value & self.mask() == 0
    }
}

impl fmt::Display for PageSize {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = match self.shift() {
            s @ 10..20 => (1u64 << (s - 10), "KiB"),
            s @ 20..30 => (1u64 << (s - 20), "MiB"),
            s => (1u64 << (s - 30), "GiB"),
        };
        write!(f, "{n}{unit}")
    }
}

mod sealed {
    /// Keeps [`FixedPageSize`](super::FixedPageSize) implementable only by this crate.
    pub trait Sealed {}
}

/// A page size known at compile time, used as the `S` of [`Page`](crate::Page) and
/// [`Frame`](crate::Frame) so pages of different sizes cannot be mixed up.
///
/// Sealed: implemented only by the uninhabited marker types of this module ([`Size4KiB`] ...).
///
/// # Examples
///
/// ```
/// use machvm_addr::{FixedPageSize, PageSize, Size2MiB};
///
/// assert_eq!(Size2MiB::SIZE, PageSize::Size2MiB);
/// assert_eq!(Size2MiB::BYTES, 2 << 20);
/// ```
///
/// Mixing sizes does not compile:
///
/// ```compile_fail
/// use machvm_addr::{Page, Size2MiB, Size4KiB, VirtAddr};
///
/// let small: Page<Size4KiB> = Page::containing_address(VirtAddr::new(0x1000));
/// let big: Page<Size2MiB> = small;
/// ```
pub trait FixedPageSize:
    sealed::Sealed + Copy + Eq + Ord + Hash + fmt::Debug + Send + Sync + 'static
{
    /// The runtime page size.
    const SIZE: PageSize;
    /// The size in bytes.
    const BYTES: u64 = Self::SIZE.bytes();
}

macro_rules! fixed_sizes {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[allow(clippy::exhaustive_enums)] // Uninhabited type-level marker: it has no variants to add.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {}

        impl sealed::Sealed for $name {}

        impl FixedPageSize for $name {
            const SIZE: PageSize = PageSize::$name;
        }
    )*};
}

fixed_sizes! {
    /// The 4 KiB page size as a type ([`PageSize::Size4KiB`]).
    Size4KiB;
    /// The 16 KiB page size as a type ([`PageSize::Size16KiB`]).
    Size16KiB;
    /// The 64 KiB page size as a type ([`PageSize::Size64KiB`]).
    Size64KiB;
    /// The 2 MiB page size as a type ([`PageSize::Size2MiB`]).
    Size2MiB;
    /// The 32 MiB block size as a type ([`PageSize::Size32MiB`]).
    Size32MiB;
    /// The 512 MiB block size as a type ([`PageSize::Size512MiB`]).
    Size512MiB;
    /// The 1 GiB page size as a type ([`PageSize::Size1GiB`]).
    Size1GiB;
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn sizes_are_ascending_powers_of_two() {
        let expected = [
            0x1000,
            0x4000,
            0x1_0000,
            0x20_0000,
            0x200_0000,
            0x2000_0000,
            0x4000_0000,
        ];
        for (size, bytes) in PageSize::ALL.into_iter().zip(expected) {
            assert_eq!(size.bytes(), bytes);
            assert_eq!(size.mask(), bytes - 1);
            assert_eq!(PageSize::from_bytes(bytes), Some(size));
        }
        assert!(PageSize::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(PageSize::from_bytes(0x2000), None);
        assert_eq!(PageSize::from_bytes(0), None);
    }

    #[test]
    fn display_uses_binary_units() {
        let names: [&str; 7] = ["4KiB", "16KiB", "64KiB", "2MiB", "32MiB", "512MiB", "1GiB"];
        for (size, name) in PageSize::ALL.into_iter().zip(names) {
            assert_eq!(size.to_string(), name);
        }
    }

    #[test]
    fn fixed_sizes_match_runtime_sizes() {
        assert_eq!(Size4KiB::BYTES, 0x1000);
        assert_eq!(Size16KiB::SIZE, PageSize::Size16KiB);
        assert_eq!(Size64KiB::BYTES, 0x1_0000);
        assert_eq!(Size32MiB::BYTES, 32 << 20);
        assert_eq!(Size512MiB::BYTES, 512 << 20);
        assert_eq!(Size1GiB::BYTES, 1 << 30);
        assert!(PageSize::Size2MiB.is_aligned(0x40_0000));
        assert!(!PageSize::Size2MiB.is_aligned(0x40_1000));
    }
}
