//! aarch64 random-number instructions (`FEAT_RNG`): `ID_AA64ISAR0_EL1`, `RNDRRS` and `RNDR`.
//!
//! `RNDR` and `RNDRRS` are readable at EL0 when implemented, but they are UNDEFINED without
//! `FEAT_RNG`, and reading `ID_AA64ISAR0_EL1` at EL0 traps unless the operating system emulates
//! it; hence [`A64Rng::detect`] is `unsafe` and states where it may run.

use core::arch::asm;

use super::{HwRng, RngFeatures};

/// Reads `ID_AA64ISAR0_EL1`.
///
/// # Safety
///
/// - The code runs at EL1 or higher, or at EL0 under an OS that emulates ID register reads
///   (Linux with `HWCAP_CPUID`).
unsafe fn read_id_aa64isar0() -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees the register is readable here; reading it has no side
    // effect.
    unsafe {
        asm!("mrs {}, ID_AA64ISAR0_EL1", out(reg) value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// The `RNDRRS`/`RNDR` instructions of the executing aarch64 CPU.
#[derive(Debug)]
pub struct A64Rng {
    features: RngFeatures,
}

impl A64Rng {
    /// Detects `FEAT_RNG` from `ID_AA64ISAR0_EL1.RNDR`.
    ///
    /// # Safety
    ///
    /// - The code runs at EL1 or higher, or at EL0 under an OS that emulates ID register reads
    ///   (Linux with `HWCAP_CPUID`); otherwise the read traps.
    pub unsafe fn detect() -> Self {
        // SAFETY: forwarded from this function's contract.
        let isar0 = unsafe { read_id_aa64isar0() };
        Self {
            features: RngFeatures::from_id_aa64isar0(isar0),
        }
    }
}

impl HwRng for A64Rng {
    #[inline]
    fn features(&self) -> RngFeatures {
        self.features
    }

    #[inline]
    fn seed_attempt(&mut self) -> Option<u64> {
        if !self.features.has_seed() {
            return None;
        }
        let value: u64;
        let ok: u64;
        // SAFETY: `features` came from ID_AA64ISAR0_EL1 in `detect` (the only constructor) and
        // says FEAT_RNG is implemented, so RNDRRS (s3_3_c2_c4_1) is defined at every EL. It
        // writes the value and NZCV (0b0000 on success, 0b0100 on failure), nothing else.
        unsafe {
            asm!(
                "mrs {v}, s3_3_c2_c4_1",
                "cset {ok}, ne",
                v = out(reg) value,
                ok = out(reg) ok,
                options(nomem, nostack),
            );
        }
        (ok == 1).then_some(value)
    }

    #[inline]
    fn rand_attempt(&mut self) -> Option<u64> {
        if !self.features.has_rand() {
            return None;
        }
        let value: u64;
        let ok: u64;
        // SAFETY: as in `seed_attempt`; RNDR is s3_3_c2_c4_0 and reports through NZCV the same
        // way.
        unsafe {
            asm!(
                "mrs {v}, s3_3_c2_c4_0",
                "cset {ok}, ne",
                v = out(reg) value,
                ok = out(reg) ok,
                options(nomem, nostack),
            );
        }
        (ok == 1).then_some(value)
    }
}
