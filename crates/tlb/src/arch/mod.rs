//! Architecture-specific TLB instructions behind [`TlbOps`](crate::TlbOps).
//!
//! Two kinds of code live here:
//!
//! - **Encoders** (every target, host-tested): the aarch64 `TLBI` operands ([`TlbiEncoder`],
//!   [`TtlHint`], the range decomposition [`TlbiPlan`]), the ID-register decoding
//!   ([`A64Features`]), and the `x86_64` register and descriptor layouts ([`Cr3`],
//!   [`InvpcidDescriptor`], [`X86Features`]) plus the stale-PCID set ([`StalePcids`]). They are
//!   plain functions over integers, so the bit layouts are checked by unit tests (and miri) on
//!   any host.
//! - **Instructions** (one target each): `X86Tlb` (`x86_64` only: `invlpg`, `INVPCID`, CR3 and
//!   CR4 writes) and `A64Tlb` (aarch64 only: `TLBI …IS` and the `DSB`/`ISB` barriers). Both
//!   implement [`TlbOps`](crate::TlbOps) and have `unsafe` constructors whose contract is that
//!   the code runs privileged (CPL0 / EL1) with the MMU on; every trait method is then safe.
//!   [`NativeTlb`] names the one for the target being built.
//!
//! # Examples
//!
//! The aarch64 `TLBI VAE1IS` operand of a 64 KiB page holds the address in 4 KiB units,
//! whatever the granule:
//!
//! ```
//! use machvm_addr::VirtAddr;
//! use machvm_tlb::Asid;
//! use machvm_tlb::arch::{Granule, TlbiEncoder};
//!
//! let enc = TlbiEncoder::new(Granule::Size64KiB, 16)?;
//! let op = enc.va_operand(Asid::new(7), VirtAddr::new(0x3_0000))?;
//! assert_eq!(op, (7 << 48) | 0x30);
//! # Ok::<(), machvm_tlb::arch::ArchError>(())
//! ```
//!
//! # Design
//!
//! - Nothing in this module panics on input: bad parameters give an [`ArchError`], and the
//!   [`TlbOps`](crate::TlbOps) implementations (which cannot return errors) fall back to a
//!   *wider* invalidation when a request cannot be encoded (an ASID wider than the configured
//!   width, an address range that leaves canonical space). Invalidating too much only costs
//!   refills; invalidating too little would be a stale translation.
//! - Non-goals: stage-2 (`IPAS2E1IS`) and EL2 invalidation, `x86_64` `INVLPGB`/`TLBSYNC`
//!   broadcast, and aarch64 `FEAT_TTL` hints inside [`TlbOps`](crate::TlbOps) (the trait's
//!   stride is only a lower bound on the leaf size, so no level can be promised; the encoders
//!   do support hints for callers that know the level).

use core::fmt;

use machvm_addr::PageSize;

use crate::Asid;

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod tlbi;
#[cfg(target_arch = "x86_64")]
mod x86_64;
mod x86_regs;

#[cfg(target_arch = "aarch64")]
pub use aarch64::A64Tlb;
pub use tlbi::{
    A64Features, MAX_RANGE_PAGES_PER_OP, TlbiEncoder, TlbiPlan, TlbiStep, TlbiStepKind, TtlHint,
};
#[cfg(target_arch = "x86_64")]
pub use x86_64::{X86Tlb, enable_pcid, read_cr3, read_cr4, write_cr3};
pub use x86_regs::{
    CR3_NO_FLUSH, CR3_PCID_MASK, CR4_LA57, CR4_PCIDE, CR4_PGE, Cr3, InvpcidDescriptor, InvpcidKind,
    PCID_BITS, PCID_COUNT, StalePcids, X86Features,
};

/// The [`TlbOps`](crate::TlbOps) implementation of the target being built: `X86Tlb` on
/// `x86_64`, `A64Tlb` on aarch64.
#[cfg(target_arch = "x86_64")]
pub type NativeTlb = X86Tlb;

/// The [`TlbOps`](crate::TlbOps) implementation of the target being built: `X86Tlb` on
/// `x86_64`, `A64Tlb` on aarch64.
#[cfg(target_arch = "aarch64")]
pub type NativeTlb = A64Tlb;

/// An aarch64 translation granule: the page size of the last translation level (Arm ARM D8.2,
/// `TCR_EL1.TG0`/`TG1`).
///
/// # Examples
///
/// ```
/// use machvm_addr::PageSize;
/// use machvm_tlb::arch::Granule;
///
/// assert_eq!(Granule::try_from(PageSize::Size16KiB), Ok(Granule::Size16KiB));
/// assert!(Granule::try_from(PageSize::Size2MiB).is_err());
/// assert_eq!(Granule::Size64KiB.bytes(), 0x1_0000);
/// ```
// Exhaustive on purpose: the architecture defines exactly these three granules (Arm ARM D8.2),
// and the `TG` field of the range `TLBI` operand has no room for a fourth.
#[allow(clippy::exhaustive_enums)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granule {
    /// 4 KiB pages (`TG` = `0b01` in range `TLBI` operands).
    Size4KiB,
    /// 16 KiB pages (`TG` = `0b10`).
    Size16KiB,
    /// 64 KiB pages (`TG` = `0b11`).
    Size64KiB,
}

impl Granule {
    /// Returns the granule as a [`PageSize`].
    #[inline]
    pub const fn page_size(self) -> PageSize {
        match self {
            Self::Size4KiB => PageSize::Size4KiB,
            Self::Size16KiB => PageSize::Size16KiB,
            Self::Size64KiB => PageSize::Size64KiB,
        }
    }

    /// Returns log2 of the granule size in bytes (12, 14 or 16).
    #[inline]
    pub const fn shift(self) -> u32 {
        self.page_size().shift()
    }

    /// Returns the granule size in bytes.
    #[inline]
    pub const fn bytes(self) -> u64 {
        self.page_size().bytes()
    }

    /// Returns the granule of `size`.
    ///
    /// # Errors
    ///
    /// - [`ArchError::BadGranule`] if `size` is not 4, 16 or 64 KiB.
    #[inline]
    pub const fn try_from_page_size(size: PageSize) -> Result<Self, ArchError> {
        match size {
            PageSize::Size4KiB => Ok(Self::Size4KiB),
            PageSize::Size16KiB => Ok(Self::Size16KiB),
            PageSize::Size64KiB => Ok(Self::Size64KiB),
            _ => Err(ArchError::BadGranule { size }),
        }
    }

    /// Returns the 2-bit translation-granule code used by the `TG` field of range `TLBI`
    /// operands and by `TTL[3:2]` (Arm ARM, `TLBI RVAE1IS` and `TLBI VAE1IS` field
    /// descriptions): `0b01` 4K, `0b10` 16K, `0b11` 64K.
    #[inline]
    pub const fn tg_code(self) -> u64 {
        match self {
            Self::Size4KiB => 0b01,
            Self::Size16KiB => 0b10,
            Self::Size64KiB => 0b11,
        }
    }
}

impl TryFrom<PageSize> for Granule {
    type Error = ArchError;

    #[inline]
    fn try_from(size: PageSize) -> Result<Self, ArchError> {
        Self::try_from_page_size(size)
    }
}

impl fmt::Display for Granule {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} granule", self.page_size())
    }
}

/// Describes why an architecture-level encoding or register operation was refused.
///
/// Every variant is a caller mistake or a missing hardware feature: retrying the same call
/// fails again. A call that returns an error has changed nothing (no register written, no
/// instruction issued).
///
/// # Examples
///
/// ```
/// use machvm_tlb::Asid;
/// use machvm_tlb::arch::{ArchError, Granule, TlbiEncoder};
///
/// let enc = TlbiEncoder::new(Granule::Size4KiB, 8)?;
/// let err = enc.asid_operand(Asid::new(300)).unwrap_err();
/// assert_eq!(err, ArchError::AsidTooWide { asid: Asid::new(300), bits: 8 });
/// assert_eq!(err.to_string(), "asid 300 does not fit in 8 bits");
/// # Ok::<(), ArchError>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchError {
    /// A page size that is not an aarch64 translation granule (4, 16 or 64 KiB) was given
    /// where a granule is required.
    BadGranule {
        /// The rejected size.
        size: PageSize,
    },
    /// An ASID width other than 8 or 16 bits was requested (aarch64 `ID_AA64MMFR0_EL1.ASIDBits`
    /// and `TCR_EL1.AS` allow only those two).
    BadAsidWidth {
        /// The rejected width.
        bits: u8,
    },
    /// An address-space identifier does not fit in the configured width (8 or 16 bits on
    /// aarch64, 12 bits for an `x86_64` PCID).
    AsidTooWide {
        /// The rejected identifier.
        asid: Asid,
        /// The width it had to fit in.
        bits: u8,
    },
    /// An address or length is not a multiple of the alignment the operation needs (the
    /// granule, the stride, the leaf size of a TTL hint, 64 KiB for `FEAT_LPA2` range bases,
    /// 4 KiB for a page-table root).
    Misaligned {
        /// The rejected address or length.
        addr: u64,
        /// The alignment it had to have, in bytes.
        align: u64,
    },
    /// A range `[start, start + len)` wraps around `2^64` or leaves canonical space (crosses
    /// from the lower half into the upper half).
    RangeOverflow {
        /// The start of the range.
        start: u64,
        /// The length of the range, in bytes.
        len: u64,
    },
    /// A leaf size that is not a page or block size of the granule was given for a TTL hint.
    BadLeafSize {
        /// The granule of the translation regime.
        granule: Granule,
        /// The rejected leaf size.
        size: PageSize,
    },
    /// A TTL hint made for another granule than the encoder's was given.
    GranuleMismatch {
        /// The encoder's granule.
        expected: Granule,
        /// The hint's granule.
        found: Granule,
    },
    /// A range `TLBI` field is out of its architectural bounds (`NUM` is 5 bits, 0..=31;
    /// `SCALE` is 2 bits, 0..=3).
    RangeField {
        /// The rejected `NUM`.
        num: u8,
        /// The rejected `SCALE`.
        scale: u8,
    },
    /// The operation needs a hardware feature the CPU does not report (for example enabling
    /// PCIDs without CPUID.01H:ECX.PCID).
    Unsupported {
        /// The missing feature, as the manuals name it.
        feature: &'static str,
    },
    /// CR4.PCIDE cannot be set because CR3 holds a nonzero PCID field (Intel SDM Vol. 3A
    /// §4.10.1: setting PCIDE needs CR3\[11:0\] = 000H).
    PcidFieldNotZero {
        /// The value of CR3\[11:0\].
        field: u16,
    },
}

impl fmt::Display for ArchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadGranule { size } => {
                write!(
                    f,
                    "{size} is not a translation granule (4KiB, 16KiB or 64KiB)"
                )
            }
            Self::BadAsidWidth { bits } => write!(f, "asid width {bits} is not 8 or 16 bits"),
            Self::AsidTooWide { asid, bits } => {
                write!(f, "asid {} does not fit in {bits} bits", asid.as_u16())
            }
            Self::Misaligned { addr, align } => {
                write!(f, "{addr:#x} is not aligned to {align:#x}")
            }
            Self::RangeOverflow { start, len } => write!(
                f,
                "range {start:#x} + {len:#x} wraps or leaves canonical space"
            ),
            Self::BadLeafSize { granule, size } => {
                write!(f, "{size} is not a leaf size of the {granule}")
            }
            Self::GranuleMismatch { expected, found } => {
                write!(f, "ttl hint for the {found} used with the {expected}")
            }
            Self::RangeField { num, scale } => write!(
                f,
                "range tlbi field out of bounds: num {num} (max 31), scale {scale} (max 3)"
            ),
            Self::Unsupported { feature } => write!(f, "cpu does not support {feature}"),
            Self::PcidFieldNotZero { field } => {
                write!(f, "cr3 pcid field is {field:#x}, must be 0 to enable pcids")
            }
        }
    }
}

impl core::error::Error for ArchError {}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn granule_codes_match_the_tg_field() {
        // Arm ARM, TLBI RVAE1IS: TG 0b01 = 4K, 0b10 = 16K, 0b11 = 64K (0b00 reserved).
        assert_eq!(Granule::Size4KiB.tg_code(), 0b01);
        assert_eq!(Granule::Size16KiB.tg_code(), 0b10);
        assert_eq!(Granule::Size64KiB.tg_code(), 0b11);
        assert_eq!(Granule::Size4KiB.shift(), 12);
        assert_eq!(Granule::Size16KiB.shift(), 14);
        assert_eq!(Granule::Size64KiB.shift(), 16);
    }

    #[test]
    fn granule_from_page_size_rejects_blocks() {
        for size in PageSize::ALL {
            let res = Granule::try_from(size);
            match size {
                PageSize::Size4KiB | PageSize::Size16KiB | PageSize::Size64KiB => {
                    assert_eq!(res.map(Granule::page_size), Ok(size));
                }
                _ => assert_eq!(res, Err(ArchError::BadGranule { size })),
            }
        }
    }

    #[test]
    fn errors_display_lowercase_with_values() {
        let cases = [
            (
                ArchError::Misaligned {
                    addr: 0x1234,
                    align: 0x1000,
                },
                "0x1234 is not aligned to 0x1000",
            ),
            (
                ArchError::BadAsidWidth { bits: 12 },
                "asid width 12 is not 8 or 16 bits",
            ),
            (
                ArchError::BadGranule {
                    size: PageSize::Size2MiB,
                },
                "2MiB is not a translation granule (4KiB, 16KiB or 64KiB)",
            ),
            (
                ArchError::Unsupported { feature: "PCID" },
                "cpu does not support PCID",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }
}
