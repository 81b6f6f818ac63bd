//! The choice between the portable code path and the vector ones.
//!
//! Vector registers are not free in every context: a kernel must save and restore them around
//! code that uses them, and some kernels do not use them at all. So the codecs use them only
//! when the caller says so through a [`VectorPolicy`]; the portable path (safe Rust, `core`
//! only) is the default. Every path produces the same bytes.
//!
//! Under miri the portable path is always taken (miri does not run vendor intrinsics).

/// CPU features a caller asserts (kernels, which cannot ask the OS): built empty, then
/// extended through `unsafe` methods whose contract is that the features are present and
/// usable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuFeatures {
    bits: u32,
}

impl CpuFeatures {
    const X86_AVX2_BMI2: u32 = 1 << 0;
    const X86_AVX512: u32 = 1 << 1;

    /// No feature beyond the target's baseline.
    #[must_use]
    pub const fn none() -> Self {
        Self { bits: 0 }
    }

    /// Adds AVX2, BMI2 and POPCNT (x86_64; every CPU with AVX2 has POPCNT).
    ///
    /// # Safety
    /// - Every CPU that runs a codec built with these features supports AVX2, BMI2 and POPCNT
    ///   (CPUID leaf 7 EBX bits 5 and 8, leaf 1 ECX bit 23), and the OS or kernel enabled the
    ///   AVX state in XCR0.
    /// - The vector registers may be clobbered where the codec runs (a kernel saves the user's
    ///   vector state first, or runs codecs only where that state is already saved).
    #[must_use]
    pub const unsafe fn with_x86_avx2_bmi2(self) -> Self {
        Self {
            bits: self.bits | Self::X86_AVX2_BMI2,
        }
    }

    /// Returns whether AVX2, BMI2 and POPCNT are asserted.
    #[must_use]
    pub const fn has_x86_avx2_bmi2(self) -> bool {
        self.bits & Self::X86_AVX2_BMI2 != 0
    }

    /// Adds AVX-512 (F, BW, CD, VL, VBMI2) and GFNI together with AVX2, BMI2, POPCNT and
    /// LZCNT (x86_64).
    ///
    /// The AVX-512 path is compiled only by Rust 1.89 or later (whose `core` has the
    /// AVX-512 intrinsics); with an older compiler these features select the AVX2 path.
    ///
    /// # Safety
    /// - Every CPU that runs a codec built with these features supports AVX-512F, AVX-512BW,
    ///   AVX-512CD, AVX-512VL (CPUID leaf 7 EBX bits 16, 30, 28 and 31) and AVX-512 VBMI2
    ///   (leaf 7 ECX bit 6), GFNI (leaf 7 ECX bit 8), AVX2, BMI2,
    ///   POPCNT and LZCNT (leaf 7 EBX bits 5 and 8, leaf 1 ECX bit 23, leaf `0x8000_0001` ECX
    ///   bit 5), and the OS or kernel enabled the AVX and AVX-512 state (opmask, upper
    ///   ZMM halves, ZMM16-31) in XCR0.
    /// - The vector and opmask registers may be clobbered where the codec runs (a kernel
    ///   saves the user's vector state first, or runs codecs only where that state is already
    ///   saved).
    ///
    /// # Examples
    /// ```
    /// use machvm_compressor::codec::{CpuFeatures, VectorPolicy};
    /// // SAFETY: the value is only inspected here; a kernel asserts this only after checking
    /// // CPUID and enabling the AVX-512 state.
    /// let features = unsafe { CpuFeatures::none().with_x86_avx512() };
    /// assert!(features.has_x86_avx512() && features.has_x86_avx2_bmi2());
    /// let _policy = VectorPolicy::Assume(features);
    /// ```
    #[must_use]
    pub const unsafe fn with_x86_avx512(self) -> Self {
        Self {
            bits: self.bits | Self::X86_AVX512 | Self::X86_AVX2_BMI2,
        }
    }

    /// Returns whether AVX-512 (F, BW, CD, VL, VBMI2, with GFNI, AVX2, BMI2, POPCNT and LZCNT)
    /// is asserted.
    #[must_use]
    pub const fn has_x86_avx512(self) -> bool {
        self.bits & Self::X86_AVX512 != 0
    }
}

/// Whether a codec may use vector registers, and how it learns which ones exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VectorPolicy {
    /// The portable path only (safe Rust, no vector registers beyond what the compiler's
    /// baseline target uses on its own). The default.
    #[default]
    Portable,
    /// Ask the CPU at run time (`std`'s feature detection); without the `std` feature this is
    /// [`Portable`](Self::Portable).
    Detect,
    /// Use the features the caller asserts (see [`CpuFeatures`]).
    Assume(CpuFeatures),
}

/// The code path a codec runs, resolved once from a [`VectorPolicy`] when it is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CodePath {
    /// Safe Rust, `core` only.
    Portable,
    /// x86_64 AVX2 + BMI2 + POPCNT.
    X86Avx2,
    /// x86_64 AVX-512 (F, BW, CD, VL, VBMI2) + GFNI + AVX2 + BMI2 + POPCNT + LZCNT (built by
    /// Rust 1.89 or later only; codecs without an AVX-512 variant run their AVX2 one).
    X86Avx512,
}

impl VectorPolicy {
    /// Returns the code path this policy selects on this CPU (always
    /// [`CodePath::Portable`] under miri).
    #[must_use]
    pub fn resolve(self) -> CodePath {
        if cfg!(miri) {
            return CodePath::Portable;
        }
        match self {
            Self::Portable => CodePath::Portable,
            Self::Detect => detect(),
            Self::Assume(features) => from_features(features),
        }
    }
}

/// Whether the x86_64 vector path is compiled in: not on soft-float targets such as
/// `x86_64-unknown-none`, whose code generator cannot emit vector code in any function (a
/// kernel that wants the path builds for a target with SSE enabled and saves vector state).
const X86_VECTOR_BUILT: bool = cfg!(all(target_arch = "x86_64", target_feature = "sse2"));

/// Whether the AVX-512 path is compiled in too (it needs Rust 1.89; see `build.rs`).
const X86_AVX512_BUILT: bool = X86_VECTOR_BUILT && cfg!(machvm_avx512);

fn from_features(features: CpuFeatures) -> CodePath {
    if X86_AVX512_BUILT && features.has_x86_avx512() {
        return CodePath::X86Avx512;
    }
    if X86_VECTOR_BUILT && features.has_x86_avx2_bmi2() {
        return CodePath::X86Avx2;
    }
    CodePath::Portable
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
fn detect() -> CodePath {
    if X86_AVX512_BUILT
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512cd")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vbmi2")
        && std::is_x86_feature_detected!("gfni")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("bmi2")
        && std::is_x86_feature_detected!("popcnt")
        && std::is_x86_feature_detected!("lzcnt")
    {
        return CodePath::X86Avx512;
    }
    if X86_VECTOR_BUILT
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("bmi2")
        && std::is_x86_feature_detected!("popcnt")
    {
        CodePath::X86Avx2
    } else {
        CodePath::Portable
    }
}

#[cfg(not(all(feature = "std", target_arch = "x86_64")))]
fn detect() -> CodePath {
    CodePath::Portable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_and_empty_assumptions_resolve_to_portable() {
        assert_eq!(VectorPolicy::Portable.resolve(), CodePath::Portable);
        assert_eq!(
            VectorPolicy::Assume(CpuFeatures::none()).resolve(),
            CodePath::Portable
        );
        assert_eq!(VectorPolicy::default(), VectorPolicy::Portable);
    }

    #[test]
    fn asserted_features_are_remembered() {
        // SAFETY: the value is only inspected, never used to run a codec.
        let f = unsafe { CpuFeatures::none().with_x86_avx2_bmi2() };
        assert!(f.has_x86_avx2_bmi2());
        assert!(!CpuFeatures::none().has_x86_avx2_bmi2());
        // SAFETY: as above.
        let f = unsafe { CpuFeatures::none().with_x86_avx512() };
        assert!(f.has_x86_avx512() && f.has_x86_avx2_bmi2());
        assert!(!CpuFeatures::none().has_x86_avx512());
    }
}
