//! Pointer authentication (Armv8.3 `FEAT_PAuth`) for freelist links on aarch64.
//!
//! A zone configured with [`ZoneConfig::pac_freelist`](crate::ZoneConfig::pac_freelist) signs
//! every freelist link with `PACDA` (data key A), using the link's slot address mixed with the
//! zone secret as the modifier, and checks it when the link is read: the stored value is
//! stripped with `XPACD` and signed again, and a link whose signature does not match is a
//! corrupt freelist (reported as [`ViolationKind::FreelistCorrupted`](crate::ViolationKind)),
//! without relying on `FEAT_FPAC` traps. Where pointer authentication is absent the software
//! encoding (XOR with the secret and the slot address) is used instead.
//!
//! The kernel enables the key (`SCTLR_EL1.EnDA`, `APDAKey{Hi,Lo}_EL1`); with the key
//! disabled `PACDA` leaves the value unsigned, so links are stored plain.

/// Proof that the CPU implements address authentication (`FEAT_PAuth`), so `PACDA` and `XPACD`
/// can be executed. Obtained from [`PacKeys::detect`] or, when the caller knows,
/// [`PacKeys::assume_present`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacKeys(());

impl PacKeys {
    /// Detects address authentication from `ID_AA64ISAR1_EL1` (fields APA, API) and
    /// `ID_AA64ISAR2_EL1` (APA3). Returns `None` on other architectures, or when absent.
    ///
    /// Reading the ID registers needs EL1 (or an operating system that emulates the read
    /// for EL0, as Linux does).
    #[must_use]
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "aarch64")]
        {
            let isar1: u64;
            let isar2: u64;
            // SAFETY: reading ID registers has no side effects (at EL0 the OS emulates them).
            unsafe {
                core::arch::asm!(
                    "mrs {a}, ID_AA64ISAR1_EL1",
                    "mrs {b}, ID_AA64ISAR2_EL1",
                    a = out(reg) isar1,
                    b = out(reg) isar2,
                    options(nomem, nostack, preserves_flags)
                );
            }
            let apa = (isar1 >> 4) & 0xf;
            let api = (isar1 >> 8) & 0xf;
            let apa3 = (isar2 >> 12) & 0xf;
            if apa != 0 || api != 0 || apa3 != 0 {
                return Some(Self(()));
            }
        }
        None
    }

    /// The caller's word that the CPU implements `FEAT_PAuth`.
    ///
    /// # Safety
    ///
    /// The code runs on aarch64 CPUs that implement address authentication; elsewhere the
    /// signing instructions are undefined and trap. (On other architectures the token is
    /// ignored.)
    #[must_use]
    pub const unsafe fn assume_present() -> Self {
        Self(())
    }
}

/// Signs `value` with the data key A and `modifier`.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub(crate) fn sign(value: usize, modifier: usize) -> usize {
    let mut v = value;
    // SAFETY: `PACDA x0, x1` (encoded directly, so no assembler feature is needed) only
    // computes a value; a zone reaches it only with a `PacKeys` token, which proves the
    // instruction exists.
    unsafe {
        core::arch::asm!(
            ".inst 0xdac10820", // pacda x0, x1
            inout("x0") v,
            in("x1") modifier,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    v
}

/// Strips the authentication code from `value`.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub(crate) fn strip(value: usize) -> usize {
    let mut v = value;
    // SAFETY: `XPACD x0` only computes a value (see `sign`).
    unsafe {
        core::arch::asm!(
            ".inst 0xdac147e0", // xpacd x0
            inout("x0") v,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    v
}
