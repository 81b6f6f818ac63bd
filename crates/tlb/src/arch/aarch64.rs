//! aarch64 TLB instructions: `TLBI …E1IS` and the `DSB`/`ISB` barriers around them.
//!
//! Every `TLBI` here is inner-shareable, so it reaches every CPU of the system by itself
//! ([`TlbCaps::broadcast`]). A flush is `sync` (`DSB ISHST`: the page-table stores are visible
//! to every walker before the invalidation), the invalidations, then `complete` (`DSB ISH`:
//! they have finished on every CPU; `ISB`: this CPU refetches with the new translations).
//! Tests never reach this code: the operands are built and tested in `tlbi.rs`.

use core::arch::asm;

use machvm_addr::{PageSize, VirtAddr};

use super::tlbi::{A64Features, TlbiEncoder, TlbiStepKind};
use super::{ArchError, Granule};
use crate::{Asid, TlbCaps, TlbOps};

impl A64Features {
    /// Reads `ID_AA64ISAR0_EL1`, `ID_AA64MMFR0_EL1` and `ID_AA64MMFR2_EL1` and decodes them
    /// with [`from_id_regs`](Self::from_id_regs).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use machvm_tlb::arch::A64Features;
    ///
    /// // SAFETY: runs at EL1.
    /// let f = unsafe { A64Features::detect() };
    /// let _range = f.has_range();
    /// ```
    ///
    /// # Safety
    ///
    /// - The caller runs at EL1 or higher (at EL0 the reads trap unless the OS emulates them).
    pub unsafe fn detect() -> Self {
        let isar0: u64;
        let mmfr0: u64;
        let mmfr2: u64;
        // SAFETY: the caller runs at EL1 or higher, where the ID registers are readable; the
        // reads have no side effects. MMFR2 is named by its encoding (op0=3, op1=0, CRn=0,
        // CRm=7, op2=2) so that assemblers targeting Armv8.0 accept it; it reads as zero on
        // CPUs that predate it.
        unsafe {
            asm!(
                "mrs {isar0}, ID_AA64ISAR0_EL1",
                "mrs {mmfr0}, ID_AA64MMFR0_EL1",
                "mrs {mmfr2}, S3_0_C0_C7_2",
                isar0 = out(reg) isar0,
                mmfr0 = out(reg) mmfr0,
                mmfr2 = out(reg) mmfr2,
                options(nomem, nostack, preserves_flags),
            );
        }
        Self::from_id_regs(isar0, mmfr0, mmfr2)
    }
}

/// `DSB ISHST`: page-table stores before it are visible to every walker in the inner-shareable
/// domain before any later `TLBI` takes effect.
#[inline]
fn dsb_ishst() {
    // SAFETY: DSB is allowed at every exception level and only orders memory accesses. The
    // asm is a compiler barrier (no `nomem`), so the page-table stores stay before it.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// `DSB ISH` + `ISB`: earlier `TLBI`s have completed on every CPU of the inner-shareable
/// domain, and this CPU's later instructions are fetched and translated afresh.
#[inline]
fn dsb_ish_isb() {
    // SAFETY: DSB and ISB are allowed at every exception level and only order execution. The
    // asm is a compiler barrier (no `nomem`), so later accesses are not hoisted above it.
    unsafe { asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
}

/// `TLBI VAE1IS`: entries of every level for the VA and ASID in `op`, and global ones.
///
/// # Safety
///
/// - The caller runs at EL1 or higher.
#[inline]
unsafe fn tlbi_vae1is(op: u64) {
    // SAFETY: the caller runs at EL1+; TLBI only drops cached translations.
    unsafe { asm!("tlbi vae1is, {}", in(reg) op, options(nostack, preserves_flags)) };
}

/// `TLBI VALE1IS`: last-level entries for the VA and ASID in `op`, and global ones.
///
/// # Safety
///
/// - The caller runs at EL1 or higher.
#[inline]
unsafe fn tlbi_vale1is(op: u64) {
    // SAFETY: the caller runs at EL1+; TLBI only drops cached translations.
    unsafe { asm!("tlbi vale1is, {}", in(reg) op, options(nostack, preserves_flags)) };
}

/// `TLBI RVAE1IS`: entries of every level in the range in `op`.
///
/// # Safety
///
/// - The caller runs at EL1 or higher on a CPU with `FEAT_TLBIRANGE` (the instruction is
///   UNDEFINED elsewhere).
#[inline]
unsafe fn tlbi_rvae1is(op: u64) {
    // SAFETY: the caller's contract; TLBI only drops cached translations. Written as the SYS
    // encoding of TLBI RVAE1IS (op1=0, CRn=C8, CRm=C2, op2=1) so the assembler does not need
    // the Armv8.4 `tlb-rmi` extension enabled for the whole crate.
    unsafe { asm!("sys #0, c8, c2, #1, {}", in(reg) op, options(nostack, preserves_flags)) };
}

/// `TLBI RVALE1IS`: last-level entries in the range in `op`.
///
/// # Safety
///
/// - The caller runs at EL1 or higher on a CPU with `FEAT_TLBIRANGE`.
#[inline]
unsafe fn tlbi_rvale1is(op: u64) {
    // SAFETY: the caller's contract; TLBI only drops cached translations. SYS encoding of
    // TLBI RVALE1IS (op1=0, CRn=C8, CRm=C2, op2=5), as for `tlbi_rvae1is`.
    unsafe { asm!("sys #0, c8, c2, #5, {}", in(reg) op, options(nostack, preserves_flags)) };
}

/// `TLBI ASIDE1IS`: every non-global entry of the ASID in `op`.
///
/// # Safety
///
/// - The caller runs at EL1 or higher.
#[inline]
unsafe fn tlbi_aside1is(op: u64) {
    // SAFETY: the caller runs at EL1+; TLBI only drops cached translations.
    unsafe { asm!("tlbi aside1is, {}", in(reg) op, options(nostack, preserves_flags)) };
}

/// `TLBI VMALLE1IS`: every stage-1 EL1&0 entry, global ones included.
///
/// # Safety
///
/// - The caller runs at EL1 or higher.
#[inline]
unsafe fn tlbi_vmalle1is() {
    // SAFETY: the caller runs at EL1+; TLBI only drops cached translations.
    unsafe { asm!("tlbi vmalle1is", options(nostack, preserves_flags)) };
}

/// TLB maintenance for the aarch64 EL1&0 regime: [`TlbOps`] over inner-shareable `TLBI`s.
///
/// | operation | instruction |
/// |---|---|
/// | `sync` | `DSB ISHST` |
/// | `invalidate_page` | `TLBI VALE1IS` (`leaf_only`) or `VAE1IS` |
/// | `invalidate_range` | `TLBI RVALE1IS`/`RVAE1IS` with `FEAT_TLBIRANGE`, else one by-VA `TLBI` per stride |
/// | `invalidate_asid` | `TLBI ASIDE1IS` |
/// | `invalidate_all` | `TLBI VMALLE1IS` |
/// | `complete` | `DSB ISH` + `ISB` |
///
/// Operands come from a [`TlbiEncoder`], so VA operands are in 4 KiB units and range bases in
/// granule units for every granule. A request the encoder refuses (an ASID wider than the
/// configured width, a range that leaves canonical space) falls back to `TLBI VMALLE1IS`.
/// `invalidate_range` has no ceiling: without range instructions a long range is one `TLBI`
/// per stride, and callers switch to `invalidate_asid` beyond the size they choose. No
/// `FEAT_TTL` hints are used (the trait's stride is only a lower bound on the leaf size).
///
/// # Examples
///
/// ```no_run
/// use machvm_addr::{PageSize, VirtAddr};
/// use machvm_tlb::arch::{A64Features, A64Tlb, Granule};
/// use machvm_tlb::{Asid, TlbOps};
///
/// // SAFETY: runs at EL1.
/// let features = unsafe { A64Features::detect() };
/// // SAFETY: at EL1 with the MMU on, 4K granule in both halves, TCR_EL1.AS = 1, DS = 0.
/// let tlb = unsafe { A64Tlb::new(Granule::Size4KiB, 16, features.has_range())? };
/// tlb.sync();
/// tlb.invalidate_range(Asid::new(3), VirtAddr::new(0x40_0000), 0x10_0000, PageSize::Size4KiB, true);
/// tlb.complete();
/// # Ok::<(), machvm_tlb::arch::ArchError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct A64Tlb {
    enc: TlbiEncoder,
    range: bool,
}

impl A64Tlb {
    /// Returns the TLB operations for the EL1&0 regime with `granule`, ASIDs of `asid_bits`
    /// bits, and range `TLBI`s if `range` (`FEAT_LPA2` off; see
    /// [`with_encoder`](Self::with_encoder)).
    ///
    /// # Errors
    ///
    /// - [`ArchError::BadAsidWidth`] if `asid_bits` is not 8 or 16.
    ///
    /// # Safety
    ///
    /// The [`with_encoder`](Self::with_encoder) contract.
    pub unsafe fn new(granule: Granule, asid_bits: u8, range: bool) -> Result<Self, ArchError> {
        let enc = TlbiEncoder::new(granule, asid_bits)?;
        // SAFETY: the caller's contract is the one `with_encoder` needs.
        Ok(unsafe { Self::with_encoder(enc, range) })
    }

    /// Returns the TLB operations for the regime `enc` describes, with range `TLBI`s if
    /// `range`.
    ///
    /// # Safety
    ///
    /// - Every use of the value runs at EL1 (or at EL2 with `HCR_EL2.{E2H, TGE}` = {1, 1},
    ///   where the EL1 operations apply to the EL2&0 regime).
    /// - `enc` matches `TCR_EL1` for every address invalidated through it: the granule is
    ///   `TG0`/`TG1` of the half the address is in, the ASID width is 16 only if `AS` = 1,
    ///   and `FEAT_LPA2` is on exactly when `DS` = 1.
    /// - `range` is true only if the CPU has `FEAT_TLBIRANGE` ([`A64Features::has_range`]);
    ///   the range instructions are UNDEFINED elsewhere.
    pub const unsafe fn with_encoder(enc: TlbiEncoder, range: bool) -> Self {
        Self { enc, range }
    }

    /// Returns the encoder the operands are built with.
    #[inline]
    pub fn encoder(&self) -> TlbiEncoder {
        self.enc
    }

    /// Returns whether range `TLBI`s are used.
    #[inline]
    pub fn has_range(&self) -> bool {
        self.range
    }
}

impl TlbOps for A64Tlb {
    fn caps(&self) -> TlbCaps {
        TlbCaps::new(true, self.range, true, self.enc.asid_bits())
    }

    fn sync(&self) {
        dsb_ishst();
    }

    fn invalidate_page(&self, asid: Asid, va: VirtAddr, leaf_only: bool) {
        let page = va.align_down_to(self.enc.granule().page_size());
        match self.enc.va_operand(asid, page) {
            // SAFETY: EL1 by the constructor's contract.
            Ok(op) if leaf_only => unsafe { tlbi_vale1is(op) },
            // SAFETY: EL1 by the constructor's contract.
            Ok(op) => unsafe { tlbi_vae1is(op) },
            // The ASID cannot be encoded: invalidate more rather than less.
            Err(_) => self.invalidate_all(),
        }
    }

    /// Invalidates every page touching `[start, start + len)` (the range is widened to
    /// stride boundaries) with the steps of a [`TlbiEncoder::plan`].
    fn invalidate_range(
        &self,
        asid: Asid,
        start: VirtAddr,
        len: u64,
        stride: PageSize,
        leaf_only: bool,
    ) {
        if len == 0 {
            return;
        }
        let granule = self.enc.granule().page_size();
        let step = if stride.bytes() < granule.bytes() {
            granule
        } else {
            stride
        };
        let first = start.align_down_to(step);
        // Last byte of the widened range; `None` if the request wraps around 2^64.
        let widened = start
            .as_u64()
            .checked_add(len - 1)
            .map(|last| last | step.mask())
            .and_then(|last| (last - first.as_u64()).checked_add(1));
        let Some(widened_len) = widened else {
            self.invalidate_all();
            return;
        };
        let Ok(plan) = self.enc.plan(asid, first, widened_len, step, self.range) else {
            // ASID too wide or the range leaves canonical space: invalidate more, not less.
            self.invalidate_all();
            return;
        };
        for s in plan {
            match (s.kind(), leaf_only) {
                // SAFETY: EL1 by the constructor's contract.
                (TlbiStepKind::Va, true) => unsafe { tlbi_vale1is(s.operand()) },
                // SAFETY: EL1 by the constructor's contract.
                (TlbiStepKind::Va, false) => unsafe { tlbi_vae1is(s.operand()) },
                // SAFETY: EL1 and FEAT_TLBIRANGE by the constructor's contract (the plan only
                // has range steps when `self.range`).
                (TlbiStepKind::Range, true) => unsafe { tlbi_rvale1is(s.operand()) },
                // SAFETY: as above.
                (TlbiStepKind::Range, false) => unsafe { tlbi_rvae1is(s.operand()) },
            }
        }
    }

    fn invalidate_asid(&self, asid: Asid) {
        match self.enc.asid_operand(asid) {
            // SAFETY: EL1 by the constructor's contract.
            Ok(op) => unsafe { tlbi_aside1is(op) },
            Err(_) => self.invalidate_all(),
        }
    }

    fn invalidate_all(&self) {
        // SAFETY: EL1 by the constructor's contract.
        unsafe { tlbi_vmalle1is() };
    }

    fn complete(&self) {
        dsb_ish_isb();
    }
}
