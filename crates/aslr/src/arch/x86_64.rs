//! `x86_64` random-number instructions: `CPUID` detection, `RDSEED` and `RDRAND`.
//!
//! `RDRAND` and `RDSEED` work at every privilege level, so [`X86Rng`] is safe to construct
//! anywhere; it executes each instruction only when `CPUID` reported it.

use core::arch::x86_64::{__cpuid_count, _rdrand64_step, _rdseed64_step};

use super::{HwRng, RngFeatures};

/// Returns `[EAX, EBX, ECX, EDX]` of `CPUID` leaf `leaf`, subleaf `subleaf`.
fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    // `__cpuid_count` is an `unsafe fn` up to Rust 1.86 and safe since; the block is needed on
    // the MSRV and redundant on newer compilers.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU, works at any privilege level and only writes
    // EAX..EDX.
    let r = unsafe { __cpuid_count(leaf, subleaf) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Makes one `RDSEED` attempt.
///
/// # Safety
///
/// - The CPU implements `RDSEED` (`CPUID.(EAX=07H, ECX=0):EBX[18]`).
#[target_feature(enable = "rdseed")]
unsafe fn rdseed_step() -> Option<u64> {
    let mut value = 0u64;
    // Unsafe up to Rust 1.86, safe inside a `rdseed` function since.
    #[allow(unused_unsafe)]
    // SAFETY: the caller guarantees RDSEED exists; the intrinsic only writes `value`.
    let ok = unsafe { _rdseed64_step(&mut value) };
    (ok == 1).then_some(value)
}

/// Makes one `RDRAND` attempt.
///
/// # Safety
///
/// - The CPU implements `RDRAND` (`CPUID.01H:ECX[30]`).
#[target_feature(enable = "rdrand")]
unsafe fn rdrand_step() -> Option<u64> {
    let mut value = 0u64;
    // Unsafe up to Rust 1.86, safe inside a `rdrand` function since.
    #[allow(unused_unsafe)]
    // SAFETY: the caller guarantees RDRAND exists; the intrinsic only writes `value`.
    let ok = unsafe { _rdrand64_step(&mut value) };
    (ok == 1).then_some(value)
}

/// The `RDSEED`/`RDRAND` instructions of the executing `x86_64` CPU.
///
/// # Examples
///
/// ```no_run
/// # #[cfg(target_arch = "x86_64")] {
/// use machvm_aslr::arch::X86Rng;
/// use machvm_aslr::{AslrRng, HwEntropy};
///
/// let mut hw = HwEntropy::new(X86Rng::detect());
/// let rng = AslrRng::from_source(&mut hw)?; // NoEntropy on a CPU without RDSEED and RDRAND
/// # }
/// # Ok::<(), machvm_aslr::AslrError>(())
/// ```
#[derive(Debug)]
pub struct X86Rng {
    features: RngFeatures,
}

impl X86Rng {
    /// Detects `RDSEED` and `RDRAND` with `CPUID` (unprivileged; under a hypervisor this is
    /// what the hypervisor exposes).
    pub fn detect() -> Self {
        let [max_leaf, ..] = cpuid(0, 0);
        let leaf1_ecx = if max_leaf >= 1 { cpuid(1, 0)[2] } else { 0 };
        let leaf7_ebx = if max_leaf >= 7 { cpuid(7, 0)[1] } else { 0 };
        Self {
            features: RngFeatures::from_cpuid(max_leaf, leaf1_ecx, leaf7_ebx),
        }
    }
}

impl HwRng for X86Rng {
    #[inline]
    fn features(&self) -> RngFeatures {
        self.features
    }

    #[inline]
    fn seed_attempt(&mut self) -> Option<u64> {
        if !self.features.has_seed() {
            return None;
        }
        // SAFETY: `features` came from CPUID in `detect` (the only constructor) and says
        // RDSEED exists.
        unsafe { rdseed_step() }
    }

    #[inline]
    fn rand_attempt(&mut self) -> Option<u64> {
        if !self.features.has_rand() {
            return None;
        }
        // SAFETY: `features` came from CPUID in `detect` and says RDRAND exists.
        unsafe { rdrand_step() }
    }
}
