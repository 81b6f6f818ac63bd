//! aarch64 `TLBI` operand encoding and the range-invalidation plan (host-testable).
//!
//! Facts used (Arm Architecture Reference Manual for A-profile, system instruction pages
//! `TLBI VAE1IS`, `TLBI VALE1IS`, `TLBI ASIDE1IS`, `TLBI RVAE1IS`, `TLBI RVALE1IS`, and the
//! `ID_AA64ISAR0_EL1`, `ID_AA64MMFR0_EL1`, `ID_AA64MMFR2_EL1` register pages):
//!
//! - By-VA operand: ASID in bits \[63:48\], `TTL` in \[47:44\] (`FEAT_TTL`), and VA\[55:12\] in
//!   \[43:0\]. The address is in **4 KiB units for every granule**; with 16K/64K granules the low
//!   2/4 bits of the field are simply zero for an aligned address.
//! - `TTL`: \[3:2\] the granule (`0b00` = no hint, `0b01` 4K, `0b10` 16K, `0b11` 64K), \[1:0\] the
//!   level holding the leaf entry.
//! - Range operand: ASID \[63:48\], `TG` \[47:46\], `SCALE` \[45:44\], `NUM` \[43:39\], `TTL`
//!   \[38:37\] (level only, `0b00` = any), `BaseADDR` \[36:0\] **in units of the granule**
//!   (VA\[48:12\], VA\[50:14\] or VA\[52:16\]); with `TCR_EL1.DS == 1` (`FEAT_LPA2`, 4K/16K
//!   granules) `BaseADDR` is VA\[52:16\], so the base must be 64 KiB aligned. The range is
//!   `BaseADDR <= VA < BaseADDR + (NUM + 1) * 2^(5 * SCALE + 1) * granule`, so one operation
//!   covers an even number of pages, from 2 to 32 * 2^16.
//! - With a `TTL` level hint, the range is UNPREDICTABLE unless `BaseADDR` is aligned to the
//!   block size of that level.

use core::iter::FusedIterator;

use machvm_addr::{PageSize, VaWidth, VirtAddr};

use super::{ArchError, Granule};
use crate::Asid;

/// Mask of the VA\[55:12\] field of by-VA operands (bits \[43:0\]).
const VA_FIELD_MASK: u64 = (1 << 44) - 1;
/// Position of the ASID field in every `TLBI` operand that takes one.
const ASID_SHIFT: u32 = 48;
/// Position of the 4-bit `TTL` field of by-VA operands.
const VA_TTL_SHIFT: u32 = 44;
/// Mask of the 37-bit `BaseADDR` field of range operands.
const BADDR_MASK: u64 = (1 << 37) - 1;
/// Position of the 2-bit `TTL` field of range operands.
const RANGE_TTL_SHIFT: u32 = 37;
/// Position of the 5-bit `NUM` field of range operands.
const NUM_SHIFT: u32 = 39;
/// Position of the 2-bit `SCALE` field of range operands.
const SCALE_SHIFT: u32 = 44;
/// Position of the 2-bit `TG` field of range operands.
const TG_SHIFT: u32 = 46;
/// Largest `NUM` (5 bits).
const NUM_MAX: u8 = 31;
/// Largest `SCALE` (2 bits).
const SCALE_MAX: u8 = 3;
/// Base alignment of range operations under `FEAT_LPA2` (`BaseADDR` is VA\[52:16\]).
const LPA2_BASE_SHIFT: u32 = 16;

/// The most pages (of the granule) one range `TLBI` can cover: `(31 + 1) * 2^(5 * 3 + 1)`.
///
/// Longer ranges take several operations; [`TlbiPlan`] splits them.
pub const MAX_RANGE_PAGES_PER_OP: u64 = range_pages(NUM_MAX, SCALE_MAX);

/// Returns the pages one range operation with `num` and `scale` covers (Arm ARM formula).
const fn range_pages(num: u8, scale: u8) -> u64 {
    ((num as u64) + 1) << (5 * (scale as u32) + 1)
}

/// A `FEAT_TTL` hint: the translation level that holds the leaf entries being invalidated.
///
/// Built from the granule and the leaf (page or block) size, so only levels that exist for the
/// granule can be expressed: 4K granule: 4 KiB (level 3), 2 MiB (2), 1 GiB (1); 16K granule:
/// 16 KiB (3), 32 MiB (2); 64K granule: 64 KiB (3), 512 MiB (2).
///
/// A hint is a promise: if the leaf is at another level, the CPU may keep the stale entry. Use
/// one only when every entry being invalidated is known to be a leaf of exactly that size.
///
/// # Examples
///
/// ```
/// use machvm_addr::PageSize;
/// use machvm_tlb::arch::{Granule, TtlHint};
///
/// let hint = TtlHint::for_leaf(Granule::Size4KiB, PageSize::Size2MiB)?;
/// assert_eq!(hint.level(), 2);
/// assert_eq!(hint.va_field(), 0b0110); // TTL[3:2] = 4K, TTL[1:0] = level 2
/// assert!(TtlHint::for_leaf(Granule::Size16KiB, PageSize::Size2MiB).is_err());
/// # Ok::<(), machvm_tlb::arch::ArchError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TtlHint {
    granule: Granule,
    level: u8,
}

impl TtlHint {
    /// Returns the hint for leaves of `leaf` bytes under `granule`.
    ///
    /// # Errors
    ///
    /// - [`ArchError::BadLeafSize`] if `leaf` is not a page or block size of `granule`.
    pub const fn for_leaf(granule: Granule, leaf: PageSize) -> Result<Self, ArchError> {
        let level = match (granule, leaf) {
            (Granule::Size4KiB, PageSize::Size4KiB)
            | (Granule::Size16KiB, PageSize::Size16KiB)
            | (Granule::Size64KiB, PageSize::Size64KiB) => 3,
            (Granule::Size4KiB, PageSize::Size2MiB)
            | (Granule::Size16KiB, PageSize::Size32MiB)
            | (Granule::Size64KiB, PageSize::Size512MiB) => 2,
            (Granule::Size4KiB, PageSize::Size1GiB) => 1,
            _ => {
                return Err(ArchError::BadLeafSize {
                    granule,
                    size: leaf,
                });
            }
        };
        Ok(Self { granule, level })
    }

    /// Returns the granule the hint was made for.
    #[inline]
    pub const fn granule(self) -> Granule {
        self.granule
    }

    /// Returns the translation level of the leaves (1, 2 or 3).
    #[inline]
    pub const fn level(self) -> u8 {
        self.level
    }

    /// Returns the size of the leaves the hint describes.
    pub const fn leaf_size(self) -> PageSize {
        match (self.granule, self.level) {
            (Granule::Size4KiB, 1) => PageSize::Size1GiB,
            (Granule::Size4KiB, 2) => PageSize::Size2MiB,
            (Granule::Size16KiB, 2) => PageSize::Size32MiB,
            (Granule::Size64KiB, 2) => PageSize::Size512MiB,
            // Level 3 (the only other level `for_leaf` produces) is the granule itself.
            _ => self.granule.page_size(),
        }
    }

    /// Returns the 4-bit `TTL` field of by-VA operands: granule code in \[3:2\], level in
    /// \[1:0\].
    #[inline]
    pub const fn va_field(self) -> u64 {
        (self.granule.tg_code() << 2) | self.level as u64
    }

    /// Returns the 2-bit `TTL` field of range operands (the level; the granule is in `TG`).
    #[inline]
    pub const fn range_field(self) -> u64 {
        self.level as u64
    }
}

/// What the hardware reports about its aarch64 TLB maintenance, decoded from ID registers.
///
/// Decoding is a pure function ([`from_id_regs`](Self::from_id_regs)) so it is host-tested;
/// reading the registers is `A64Features::detect` on aarch64 builds.
///
/// # Examples
///
/// ```
/// use machvm_tlb::arch::A64Features;
///
/// // ID_AA64ISAR0_EL1.TLB = 0b0010 (range), ID_AA64MMFR0_EL1.ASIDBits = 0b0010 (16 bits).
/// let f = A64Features::from_id_regs(0b0010 << 56, 0b0010 << 4, 0);
/// assert!(f.has_range());
/// assert_eq!(f.max_asid_bits(), 16);
/// assert!(!f.has_ttl());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct A64Features {
    range: bool,
    asid16: bool,
    ttl: bool,
}

impl A64Features {
    /// Returns features given one by one (for kernels that know their CPU, and for tests).
    #[inline]
    pub const fn new(range: bool, asid16: bool, ttl: bool) -> Self {
        Self { range, asid16, ttl }
    }

    /// Decodes the ID registers:
    ///
    /// - `ID_AA64ISAR0_EL1.TLB`, bits \[59:56\]: `0b0010` or above means `FEAT_TLBIRANGE`
    ///   (range `TLBI`s; `0b0001` is outer-shareable `TLBI`s only);
    /// - `ID_AA64MMFR0_EL1.ASIDBits`, bits \[7:4\]: `0b0010` means 16-bit ASIDs, `0b0000` 8-bit;
    /// - `ID_AA64MMFR2_EL1.TTL`, bits \[51:48\]: `0b0001` or above means `FEAT_TTL`.
    pub const fn from_id_regs(isar0: u64, mmfr0: u64, mmfr2: u64) -> Self {
        Self {
            range: (isar0 >> 56) & 0xf >= 0b0010,
            asid16: (mmfr0 >> 4) & 0xf == 0b0010,
            ttl: (mmfr2 >> 48) & 0xf >= 0b0001,
        }
    }

    /// Returns whether range `TLBI`s (`FEAT_TLBIRANGE`) are implemented.
    #[inline]
    pub const fn has_range(self) -> bool {
        self.range
    }

    /// Returns whether 16-bit ASIDs are implemented (they are used only once the kernel sets
    /// `TCR_EL1.AS`).
    #[inline]
    pub const fn has_asid16(self) -> bool {
        self.asid16
    }

    /// Returns whether `TTL` level hints (`FEAT_TTL`) are implemented.
    #[inline]
    pub const fn has_ttl(self) -> bool {
        self.ttl
    }

    /// Returns the widest ASID the hardware supports (16 or 8 bits).
    #[inline]
    pub const fn max_asid_bits(self) -> u8 {
        if self.asid16 { 16 } else { 8 }
    }
}

/// Encodes aarch64 `TLBI` operands for one translation regime: its granule, its ASID width,
/// and whether `TCR_EL1.DS` (`FEAT_LPA2`) changes the range base units.
///
/// All methods are pure; [`A64Tlb`](crate::arch) feeds their results to the instructions.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, VirtAddr};
/// use machvm_tlb::Asid;
/// use machvm_tlb::arch::{Granule, TlbiEncoder, TlbiStepKind};
///
/// let enc = TlbiEncoder::new(Granule::Size4KiB, 16)?;
/// // TLBI VAE1IS operand: ASID in [63:48], VA[55:12] in [43:0].
/// assert_eq!(enc.va_operand(Asid::new(3), VirtAddr::new(0x7fff_1234_5000))?, (3 << 48) | 0x7_fff1_2345);
///
/// // 3 pages with range TLBIs: one range op for 2 pages, one by-VA op for the last page.
/// let steps: Vec<_> = enc
///     .plan(Asid::new(3), VirtAddr::new(0x10_0000), 0x3000, PageSize::Size4KiB, true)?
///     .collect();
/// assert_eq!(steps.len(), 2);
/// assert_eq!((steps[0].kind(), steps[0].pages()), (TlbiStepKind::Range, 2));
/// assert_eq!((steps[1].kind(), steps[1].pages()), (TlbiStepKind::Va, 1));
/// # Ok::<(), machvm_tlb::arch::ArchError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlbiEncoder {
    granule: Granule,
    asid_bits: u8,
    lpa2: bool,
}

impl TlbiEncoder {
    /// Returns an encoder for `granule` and ASIDs of `asid_bits` bits (`FEAT_LPA2` off).
    ///
    /// # Errors
    ///
    /// - [`ArchError::BadAsidWidth`] if `asid_bits` is not 8 or 16.
    pub const fn new(granule: Granule, asid_bits: u8) -> Result<Self, ArchError> {
        if asid_bits != 8 && asid_bits != 16 {
            return Err(ArchError::BadAsidWidth { bits: asid_bits });
        }
        Ok(Self {
            granule,
            asid_bits,
            lpa2: false,
        })
    }

    /// Returns the encoder with `TCR_EL1.DS` (`FEAT_LPA2` 52-bit addressing with 4K/16K
    /// granules) set to `lpa2`: range bases are then in 64 KiB units and must be 64 KiB
    /// aligned. With the 64K granule the flag changes nothing.
    #[inline]
    #[must_use]
    pub const fn with_lpa2(self, lpa2: bool) -> Self {
        Self { lpa2, ..self }
    }

    /// Returns the granule.
    #[inline]
    pub const fn granule(self) -> Granule {
        self.granule
    }

    /// Returns the ASID width in bits (8 or 16).
    #[inline]
    pub const fn asid_bits(self) -> u8 {
        self.asid_bits
    }

    /// Returns whether range bases use the `FEAT_LPA2` 64 KiB units.
    #[inline]
    pub const fn is_lpa2(self) -> bool {
        self.lpa2
    }

    /// Returns whether `asid` fits in the configured width.
    #[inline]
    pub const fn fits(self, asid: Asid) -> bool {
        (asid.as_u16() as u32) >> self.asid_bits == 0
    }

    /// Returns `asid` placed in bits \[63:48\]: the operand of `TLBI ASIDE1IS`.
    ///
    /// # Errors
    ///
    /// - [`ArchError::AsidTooWide`] if `asid` does not fit in the configured width (with 8-bit
    ///   ASIDs, bits \[63:56\] of the operand are RES0).
    pub const fn asid_operand(self, asid: Asid) -> Result<u64, ArchError> {
        if !self.fits(asid) {
            return Err(ArchError::AsidTooWide {
                asid,
                bits: self.asid_bits,
            });
        }
        Ok((asid.as_u16() as u64) << ASID_SHIFT)
    }

    /// Returns the operand of `TLBI VAE1IS` / `VALE1IS` for the page at `va` in `asid`, with no
    /// level hint.
    ///
    /// The address field is VA\[55:12\], in 4 KiB units whatever the granule.
    ///
    /// # Errors
    ///
    /// - [`ArchError::AsidTooWide`] if `asid` does not fit in the configured width.
    /// - [`ArchError::Misaligned`] if `va` is not aligned to the granule.
    pub const fn va_operand(self, asid: Asid, va: VirtAddr) -> Result<u64, ArchError> {
        let asid = match self.asid_operand(asid) {
            Ok(field) => field,
            Err(e) => return Err(e),
        };
        if !va.is_aligned(self.granule.bytes()) {
            return Err(ArchError::Misaligned {
                addr: va.as_u64(),
                align: self.granule.bytes(),
            });
        }
        Ok(asid | va_field(va.as_u64()))
    }

    /// Returns the operand of `TLBI VAE1IS` / `VALE1IS` with a `FEAT_TTL` level hint in bits
    /// \[47:44\]. Only use it on CPUs with `FEAT_TTL` (elsewhere the bits are RES0).
    ///
    /// # Errors
    ///
    /// - [`ArchError::GranuleMismatch`] if `ttl` was made for another granule.
    /// - [`ArchError::AsidTooWide`] if `asid` does not fit in the configured width.
    /// - [`ArchError::Misaligned`] if `va` is not aligned to the granule.
    pub const fn va_operand_with_ttl(
        self,
        asid: Asid,
        va: VirtAddr,
        ttl: TtlHint,
    ) -> Result<u64, ArchError> {
        if !granule_eq(ttl.granule, self.granule) {
            return Err(ArchError::GranuleMismatch {
                expected: self.granule,
                found: ttl.granule,
            });
        }
        match self.va_operand(asid, va) {
            Ok(op) => Ok(op | (ttl.va_field() << VA_TTL_SHIFT)),
            Err(e) => Err(e),
        }
    }

    /// Returns the operand of one range `TLBI` (`RVAE1IS` / `RVALE1IS`) covering
    /// `(num + 1) * 2^(5 * scale + 1)` pages from `base`.
    ///
    /// # Errors
    ///
    /// - [`ArchError::RangeField`] if `num > 31` or `scale > 3`.
    /// - [`ArchError::GranuleMismatch`] if `ttl` was made for another granule.
    /// - [`ArchError::AsidTooWide`] if `asid` does not fit in the configured width.
    /// - [`ArchError::Misaligned`] if `base` is not aligned to the granule, to 64 KiB under
    ///   `FEAT_LPA2`, or to the leaf size of `ttl`.
    pub const fn range_operand(
        self,
        asid: Asid,
        base: VirtAddr,
        num: u8,
        scale: u8,
        ttl: Option<TtlHint>,
    ) -> Result<u64, ArchError> {
        if num > NUM_MAX || scale > SCALE_MAX {
            return Err(ArchError::RangeField { num, scale });
        }
        let asid = match self.asid_operand(asid) {
            Ok(field) => field,
            Err(e) => return Err(e),
        };
        let mut align = self.granule.bytes();
        if self.lpa2 && align < (1 << LPA2_BASE_SHIFT) {
            align = 1 << LPA2_BASE_SHIFT;
        }
        let ttl_field = match ttl {
            Some(hint) => {
                if !granule_eq(hint.granule, self.granule) {
                    return Err(ArchError::GranuleMismatch {
                        expected: self.granule,
                        found: hint.granule,
                    });
                }
                if hint.leaf_size().bytes() > align {
                    align = hint.leaf_size().bytes();
                }
                hint.range_field()
            }
            None => 0,
        };
        if !base.is_aligned(align) {
            return Err(ArchError::Misaligned {
                addr: base.as_u64(),
                align,
            });
        }
        Ok(self.range_bits(asid, base.as_u64(), num, scale, ttl_field))
    }

    /// Returns a plan that invalidates `[start, start + len)`, made of leaves of at least
    /// `stride`, in `asid`: range operations when `use_range` (the CPU has
    /// `FEAT_TLBIRANGE`), else one by-VA operation per `stride`.
    ///
    /// A `stride` below the granule counts as the granule. The plan covers exactly the pages
    /// of the range, never more and never fewer; see [`TlbiPlan`].
    ///
    /// # Errors
    ///
    /// - [`ArchError::AsidTooWide`] if `asid` does not fit in the configured width.
    /// - [`ArchError::Misaligned`] if `start` or `len` is not a multiple of the stride.
    /// - [`ArchError::RangeOverflow`] if the range wraps around `2^64` or leaves canonical
    ///   space.
    pub fn plan(
        self,
        asid: Asid,
        start: VirtAddr,
        len: u64,
        stride: PageSize,
        use_range: bool,
    ) -> Result<TlbiPlan, ArchError> {
        self.plan_inner(asid, start, len, stride.bytes(), None, use_range)
    }

    /// Returns a plan like [`plan`](Self::plan) whose operations carry the `FEAT_TTL` hint
    /// `ttl` (the stride is the hint's leaf size). Only use it on CPUs with `FEAT_TTL`, and
    /// only when every entry in the range is a leaf of that size.
    ///
    /// # Errors
    ///
    /// - [`ArchError::GranuleMismatch`] if `ttl` was made for another granule.
    /// - the errors of [`plan`](Self::plan).
    pub fn plan_with_ttl(
        self,
        asid: Asid,
        start: VirtAddr,
        len: u64,
        ttl: TtlHint,
        use_range: bool,
    ) -> Result<TlbiPlan, ArchError> {
        if ttl.granule != self.granule {
            return Err(ArchError::GranuleMismatch {
                expected: self.granule,
                found: ttl.granule,
            });
        }
        self.plan_inner(
            asid,
            start,
            len,
            ttl.leaf_size().bytes(),
            Some(ttl),
            use_range,
        )
    }

    fn plan_inner(
        self,
        asid: Asid,
        start: VirtAddr,
        len: u64,
        stride: u64,
        ttl: Option<TtlHint>,
        use_range: bool,
    ) -> Result<TlbiPlan, ArchError> {
        let asid_field = self.asid_operand(asid)?;
        let step = if stride > self.granule.bytes() {
            stride
        } else {
            self.granule.bytes()
        };
        if !start.is_aligned(step) {
            return Err(ArchError::Misaligned {
                addr: start.as_u64(),
                align: step,
            });
        }
        if len % step != 0 {
            return Err(ArchError::Misaligned {
                addr: len,
                align: step,
            });
        }
        if len != 0 {
            let overflow = ArchError::RangeOverflow {
                start: start.as_u64(),
                len,
            };
            let last = start.as_u64().checked_add(len - 1).ok_or(overflow)?;
            // Both ends canonical and in the same half: every address between is canonical.
            if VirtAddr::try_new(last).is_err() {
                return Err(overflow);
            }
            if (start.as_u64() ^ last) >> 63 != 0 {
                return Err(overflow);
            }
        }
        let shift = self.granule.shift();
        Ok(TlbiPlan {
            enc: self,
            asid_field,
            next: start.as_u64() >> shift,
            remaining: len >> shift,
            single: step >> shift,
            ttl,
            use_range,
        })
    }

    /// Assembles a range operand from checked fields.
    const fn range_bits(self, asid_field: u64, base: u64, num: u8, scale: u8, ttl: u64) -> u64 {
        let base_shift = if self.lpa2 && self.granule.shift() < LPA2_BASE_SHIFT {
            LPA2_BASE_SHIFT
        } else {
            self.granule.shift()
        };
        asid_field
            | (self.granule.tg_code() << TG_SHIFT)
            | ((scale as u64) << SCALE_SHIFT)
            | ((num as u64) << NUM_SHIFT)
            | (ttl << RANGE_TTL_SHIFT)
            | ((base >> base_shift) & BADDR_MASK)
    }
}

/// Returns VA\[55:12\] in bits \[43:0\]: the address field of by-VA operands.
const fn va_field(raw: u64) -> u64 {
    (raw >> 12) & VA_FIELD_MASK
}

/// `Granule` equality usable in `const fn` (trait `PartialEq` is not const on the MSRV).
const fn granule_eq(a: Granule, b: Granule) -> bool {
    a.tg_code() == b.tg_code()
}

/// Which instruction a [`TlbiStep`] is for.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlbiStepKind {
    /// A by-VA invalidation (`TLBI VAE1IS`, or `VALE1IS` for last-level only) of the page or
    /// block containing the address.
    Va,
    /// A range invalidation (`TLBI RVAE1IS`, or `RVALE1IS`), needs `FEAT_TLBIRANGE`.
    Range,
}

/// One `TLBI` of a [`TlbiPlan`]: the instruction kind, its operand, and (for checking and
/// tracing) the pages it covers.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, VirtAddr};
/// use machvm_tlb::Asid;
/// use machvm_tlb::arch::{Granule, TlbiEncoder, TlbiStepKind};
///
/// let enc = TlbiEncoder::new(Granule::Size16KiB, 16)?;
/// let step = enc
///     .plan(Asid::new(1), VirtAddr::new(0x4000), 0x4000, PageSize::Size16KiB, false)?
///     .next()
///     .unwrap();
/// assert_eq!(step.kind(), TlbiStepKind::Va);
/// assert_eq!(step.operand(), (1 << 48) | 0x4); // 0x4000 in 4 KiB units
/// assert_eq!(step.len_bytes(), 0x4000);
/// # Ok::<(), machvm_tlb::arch::ArchError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlbiStep {
    kind: TlbiStepKind,
    operand: u64,
    start: VirtAddr,
    pages: u64,
    granule: Granule,
}

impl TlbiStep {
    /// Returns which instruction takes [`operand`](Self::operand).
    #[inline]
    pub const fn kind(self) -> TlbiStepKind {
        self.kind
    }

    /// Returns the 64-bit operand register value.
    #[inline]
    pub const fn operand(self) -> u64 {
        self.operand
    }

    /// Returns the first address the step invalidates.
    #[inline]
    pub const fn start(self) -> VirtAddr {
        self.start
    }

    /// Returns the number of granule-sized pages the step invalidates.
    #[inline]
    pub const fn pages(self) -> u64 {
        self.pages
    }

    /// Returns the number of bytes the step invalidates.
    #[inline]
    pub const fn len_bytes(self) -> u64 {
        self.pages << self.granule.shift()
    }
}

/// The `TLBI`s that invalidate one address range, produced by [`TlbiEncoder::plan`].
///
/// With range operations, the plan takes, at each step, the largest `SCALE` whose smallest
/// range fits in what is left and as many units of it as fit (up to `NUM + 1 = 32`): at most
/// `ceil(pages / MAX_RANGE_PAGES_PER_OP)` operations at `SCALE = 3`, then at most one at each
/// lower scale, then at most one by-VA operation for a last odd page. Under `FEAT_LPA2` it
/// first issues by-VA operations until the base is 64 KiB aligned (at most 15). Every range
/// base stays aligned to the leaf size of a TTL hint, since every earlier operation covered
/// a multiple of it.
///
/// Without range operations it issues one by-VA operation per stride.
///
/// The plan has no ceiling: a long range without `FEAT_TLBIRANGE` yields one step per page.
/// Callers that prefer one `TLBI ASIDE1IS` beyond some size (the flush gather does) decide
/// that before asking for a plan.
#[derive(Debug, Clone)]
pub struct TlbiPlan {
    enc: TlbiEncoder,
    asid_field: u64,
    /// Next page number (address >> granule shift).
    next: u64,
    /// Granule pages still to cover.
    remaining: u64,
    /// Granule pages per by-VA step without range operations (the stride).
    single: u64,
    ttl: Option<TtlHint>,
    use_range: bool,
}

impl TlbiPlan {
    /// Returns the number of granule pages the remaining steps cover.
    #[inline]
    pub const fn remaining_pages(&self) -> u64 {
        self.remaining
    }

    /// Returns whether every step has been taken.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl Iterator for TlbiPlan {
    type Item = TlbiStep;

    fn next(&mut self) -> Option<TlbiStep> {
        if self.remaining == 0 {
            return None;
        }
        let granule = self.enc.granule;
        // `next` is below 2^(64 - shift), so the shift loses nothing.
        let addr = self.next << granule.shift();
        let start = VirtAddr::new_truncate(addr, VaWidth::WIDEST);
        let lpa2_unaligned = self.enc.lpa2 && addr & ((1 << LPA2_BASE_SHIFT) - 1) != 0;
        let step = if self.use_range && self.remaining >= 2 && !lpa2_unaligned {
            let mut scale: u8 = SCALE_MAX;
            while scale > 0 && range_pages(0, scale) > self.remaining {
                scale -= 1;
            }
            let units = self.remaining >> (5 * scale as u32 + 1);
            let count = if units > (NUM_MAX as u64) + 1 {
                (NUM_MAX as u64) + 1
            } else {
                units
            };
            // `count` is 1..=32 because `remaining >= 2 = range_pages(0, 0)`.
            let num = (count - 1) as u8;
            let ttl = match self.ttl {
                Some(hint) => hint.range_field(),
                None => 0,
            };
            TlbiStep {
                kind: TlbiStepKind::Range,
                operand: self.enc.range_bits(self.asid_field, addr, num, scale, ttl),
                start,
                pages: range_pages(num, scale),
                granule,
            }
        } else {
            let pages = if self.use_range {
                1
            } else if self.single < self.remaining {
                self.single
            } else {
                self.remaining
            };
            let ttl = match self.ttl {
                Some(hint) => hint.va_field() << VA_TTL_SHIFT,
                None => 0,
            };
            TlbiStep {
                kind: TlbiStepKind::Va,
                operand: self.asid_field | ttl | va_field(addr),
                start,
                pages,
                granule,
            }
        };
        self.next += step.pages;
        self.remaining -= step.pages;
        Some(step)
    }
}

impl FusedIterator for TlbiPlan {}

#[cfg(test)]
mod tests;
