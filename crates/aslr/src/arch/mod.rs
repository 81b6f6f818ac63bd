//! CPU random-number instructions behind the [`HwRng`] trait.
//!
//! Two kinds of code live here:
//!
//! - **Feature decoding** (every target, host-tested): [`RngFeatures`] from the raw `CPUID`
//!   leaves (`x86_64`) or the `ID_AA64ISAR0_EL1` value (aarch64).
//! - **Instructions** (one target each): `X86Rng` (`x86_64` only: `CPUID`, `RDSEED`, `RDRAND`)
//!   and `A64Rng` (aarch64 only: `ID_AA64ISAR0_EL1`, `RNDRRS`, `RNDR`). Each executes an
//!   instruction only after its feature bit said the instruction exists; these are the only
//!   `unsafe` code of the crate. [`NativeHwRng`] names the one for the target being built.
//!
//! The retry bounds and health checks are not here: they live in
//! [`HwEntropy`](crate::HwEntropy), which drives any [`HwRng`], so tests run them against a
//! mocked CPU (a [`HwRng`] with scripted outputs and feature bits) and never execute the real
//! instructions (which miri cannot interpret either).

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::A64Rng;
#[cfg(target_arch = "x86_64")]
pub use x86_64::X86Rng;

/// The [`HwRng`] of the target being built: `X86Rng` on `x86_64`.
#[cfg(target_arch = "x86_64")]
pub type NativeHwRng = X86Rng;

/// The [`HwRng`] of the target being built: `A64Rng` on aarch64.
#[cfg(target_arch = "aarch64")]
pub type NativeHwRng = A64Rng;

/// The instruction set whose random-number instructions a [`RngFeatures`] describes.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RngIsa {
    /// `x86_64`: `RDSEED` (seed grade) and `RDRAND` (DRBG output).
    X86_64,
    /// aarch64 `FEAT_RNG`: `RNDRRS` (reseeded before each read) and `RNDR`.
    Aarch64,
}

/// Which random-number instructions a CPU implements.
///
/// *Seed* instructions (`RDSEED`, `RNDRRS`) return output of a freshly reseeded generator
/// (conditioned entropy) and are preferred for seeding; *rand* instructions (`RDRAND`, `RNDR`)
/// return the output of the hardware DRBG, which is itself reseeded from the entropy source.
///
/// # Examples
///
/// ```
/// use machvm_aslr::arch::{RngFeatures, RngIsa};
///
/// // CPUID.01H:ECX bit 30 (RDRAND) set, CPUID.07H:EBX bit 18 (RDSEED) clear.
/// let f = RngFeatures::from_cpuid(0xd, 1 << 30, 0);
/// assert_eq!((f.isa(), f.has_seed(), f.has_rand()), (RngIsa::X86_64, false, true));
/// // ID_AA64ISAR0_EL1.RNDR (bits 63:60) = 0b0001: RNDR and RNDRRS.
/// let f = RngFeatures::from_id_aa64isar0(1 << 60);
/// assert!(f.has_seed() && f.has_rand());
/// assert!(!RngFeatures::from_id_aa64isar0(0).has_rand());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RngFeatures {
    isa: RngIsa,
    seed: bool,
    rand: bool,
}

/// `CPUID.01H:ECX` bit of `RDRAND` (Intel SDM Vol. 2A, `CPUID` instruction reference).
pub const CPUID_01_ECX_RDRAND: u32 = 1 << 30;
/// `CPUID.(EAX=07H, ECX=0):EBX` bit of `RDSEED` (Intel SDM Vol. 2A, `CPUID` instruction reference).
pub const CPUID_07_EBX_RDSEED: u32 = 1 << 18;
/// Shift of `ID_AA64ISAR0_EL1.RNDR`, bits \[63:60\] (Arm ARM, the `ID_AA64ISAR0_EL1` register description):
/// `0b0001` means `FEAT_RNG` (`RNDR` and `RNDRRS` are implemented).
pub const ID_AA64ISAR0_RNDR_SHIFT: u32 = 60;

impl RngFeatures {
    /// Returns the features of a CPU without random-number instructions of `isa`.
    #[inline]
    pub const fn none(isa: RngIsa) -> Self {
        Self {
            isa,
            seed: false,
            rand: false,
        }
    }

    /// Returns an explicit feature set (for mocked CPUs in tests and simulators).
    #[inline]
    pub const fn new(isa: RngIsa, seed: bool, rand: bool) -> Self {
        Self { isa, seed, rand }
    }

    /// Decodes the `x86_64` features from `CPUID`: `max_leaf` = `CPUID.00H:EAX`,
    /// `leaf1_ecx` = `CPUID.01H:ECX`, `leaf7_ebx` = `CPUID.(EAX=07H, ECX=0):EBX` (ignored when
    /// `max_leaf < 7`, as the leaf does not exist then).
    #[inline]
    pub const fn from_cpuid(max_leaf: u32, leaf1_ecx: u32, leaf7_ebx: u32) -> Self {
        Self {
            isa: RngIsa::X86_64,
            seed: max_leaf >= 7 && leaf7_ebx & CPUID_07_EBX_RDSEED != 0,
            rand: max_leaf >= 1 && leaf1_ecx & CPUID_01_ECX_RDRAND != 0,
        }
    }

    /// Decodes the aarch64 features from `ID_AA64ISAR0_EL1`: `FEAT_RNG` when the `RNDR` field
    /// is `0b0001` (other non-zero values are reserved and treated as absent, so an unknown
    /// encoding never leads to executing an undefined instruction).
    #[inline]
    pub const fn from_id_aa64isar0(value: u64) -> Self {
        let rng = (value >> ID_AA64ISAR0_RNDR_SHIFT) & 0xf == 1;
        Self {
            isa: RngIsa::Aarch64,
            seed: rng,
            rand: rng,
        }
    }

    /// Returns the instruction set.
    #[inline]
    pub const fn isa(self) -> RngIsa {
        self.isa
    }

    /// Returns whether the seed-grade instruction (`RDSEED` / `RNDRRS`) exists.
    #[inline]
    pub const fn has_seed(self) -> bool {
        self.seed
    }

    /// Returns whether the DRBG instruction (`RDRAND` / `RNDR`) exists.
    #[inline]
    pub const fn has_rand(self) -> bool {
        self.rand
    }
}

/// A CPU's random-number instructions, one attempt at a time.
///
/// Implementations execute an instruction only if [`features`](Self::features) says it exists,
/// and return `None` otherwise or when the hardware reports that no random value was available
/// (`CF = 0` after `RDRAND`/`RDSEED`, `NZCV = 0b0100` after `RNDR`/`RNDRRS`). Retrying,
/// health checks and the choice between the two instructions belong to
/// [`HwEntropy`](crate::HwEntropy).
pub trait HwRng {
    /// Returns the instructions this CPU implements.
    fn features(&self) -> RngFeatures;

    /// Makes one attempt at the seed-grade instruction (`RDSEED` / `RNDRRS`).
    fn seed_attempt(&mut self) -> Option<u64>;

    /// Makes one attempt at the DRBG instruction (`RDRAND` / `RNDR`).
    fn rand_attempt(&mut self) -> Option<u64>;
}

impl<H: HwRng + ?Sized> HwRng for &mut H {
    #[inline]
    fn features(&self) -> RngFeatures {
        (**self).features()
    }

    #[inline]
    fn seed_attempt(&mut self) -> Option<u64> {
        (**self).seed_attempt()
    }

    #[inline]
    fn rand_attempt(&mut self) -> Option<u64> {
        (**self).rand_attempt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_bits_are_decoded() {
        let f = RngFeatures::from_cpuid(7, CPUID_01_ECX_RDRAND, CPUID_07_EBX_RDSEED);
        assert!(f.has_seed() && f.has_rand());
        // Leaf 7 ignored below max leaf 7.
        let f = RngFeatures::from_cpuid(6, 0, CPUID_07_EBX_RDSEED);
        assert!(!f.has_seed() && !f.has_rand());
        let f = RngFeatures::from_cpuid(0x20, !CPUID_01_ECX_RDRAND, !CPUID_07_EBX_RDSEED);
        assert!(!f.has_seed() && !f.has_rand());
    }

    #[test]
    fn isar0_field_is_decoded_strictly() {
        assert!(RngFeatures::from_id_aa64isar0(0x1000_0000_0000_0000).has_rand());
        // Other fields set, RNDR clear.
        assert!(!RngFeatures::from_id_aa64isar0(0x0fff_ffff_ffff_ffff).has_rand());
        // Reserved encodings are not trusted.
        assert!(!RngFeatures::from_id_aa64isar0(0x2000_0000_0000_0000).has_seed());
        assert!(!RngFeatures::from_id_aa64isar0(u64::MAX).has_rand());
    }
}
