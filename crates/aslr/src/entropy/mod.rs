//! Entropy sources: the [`EntropySource`] trait, the hardware source with health checks and
//! bounded retries ([`HwEntropy`]), and the boot-provided seed ([`BootSeed`]).
//!
//! # Design
//!
//! - A source either returns a full 256-bit [`Seed`] or an error; it never pads a short read
//!   and never falls back to something weaker (a timer, a counter) by itself. "No entropy" is
//!   an explicit [`AslrError::NoEntropy`], so the caller decides: boot without KASLR and say
//!   so, or halt.
//! - Several sources can be combined with [`AslrRng::from_sources`](crate::AslrRng::from_sources)
//!   (XOR of every seed that succeeded: as strong as the best of them).
//! - Health checks are latched: an instruction that returned a stuck value (all zeros, all
//!   ones, or its previous output again) is not used again by that [`HwEntropy`].

mod boot;

use core::fmt;

pub use boot::BootSeed;

use crate::AslrError;
use crate::arch::{HwRng, RngIsa};

/// Bytes in a [`Seed`]: one `ChaCha20` key.
pub const SEED_LEN: usize = 32;

/// 256 bits of seed material: a `ChaCha20` key.
///
/// `Debug` does not print the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed([u8; SEED_LEN]);

impl Seed {
    /// Wraps `bytes`.
    #[inline]
    pub const fn new(bytes: [u8; SEED_LEN]) -> Self {
        Self(bytes)
    }

    /// Returns the bytes.
    #[inline]
    pub const fn as_bytes(&self) -> &[u8; SEED_LEN] {
        &self.0
    }

    /// Returns the bytes, consuming the seed.
    #[inline]
    pub const fn into_bytes(self) -> [u8; SEED_LEN] {
        self.0
    }

    /// XORs `other` into this seed (combining independent sources).
    #[inline]
    pub fn mix(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a ^= *b;
        }
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(..)")
    }
}

/// Where seed material came from.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// `x86_64` `RDSEED` (conditioned entropy, Intel SDM Vol. 2B `RDSEED`).
    Rdseed,
    /// `x86_64` `RDRAND` (hardware DRBG output, Intel SDM Vol. 2B `RDRAND`).
    Rdrand,
    /// aarch64 `RNDRRS` (`FEAT_RNG`, reseeded before the read).
    Rndrrs,
    /// aarch64 `RNDR` (`FEAT_RNG`).
    Rndr,
    /// Bytes handed over by the bootloader (an EFI RNG result, a device-tree `kaslr-seed`).
    BootSeed,
    /// A source outside this crate.
    External,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rdseed => "RDSEED",
            Self::Rdrand => "RDRAND",
            Self::Rndrrs => "RNDRRS",
            Self::Rndr => "RNDR",
            Self::BootSeed => "boot seed",
            Self::External => "external source",
        })
    }
}

/// Which health check a hardware output failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthFailure {
    /// The instruction reported success with an all-zero value.
    AllZeros,
    /// The instruction reported success with an all-ones value (the signature of CPUs whose
    /// `RDRAND` broke after a suspend/resume cycle).
    AllOnes,
    /// The instruction returned the same value twice in a row (a stuck generator; a working
    /// 64-bit generator repeats with probability 2^-64).
    Repeated,
}

impl fmt::Display for HealthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AllZeros => "all-zero output",
            Self::AllOnes => "all-ones output",
            Self::Repeated => "repeated output",
        })
    }
}

/// A source of seed material for [`AslrRng`](crate::AslrRng).
///
/// Implementations return a full [`Seed`] or an error, never a partial or weakened seed. A
/// failed call returns no material; it may update the source's own health state (a latched
/// failure) so later calls fail fast.
pub trait EntropySource {
    /// Returns the kind of source (for reports and errors).
    fn kind(&self) -> SourceKind;

    /// Returns 256 bits of seed material.
    ///
    /// # Errors
    ///
    /// - [`AslrError::NoEntropy`] if the source has nothing to give (instruction absent,
    ///   retries exhausted, boot seed missing or already used).
    /// - [`AslrError::EntropyHealth`] if the source's output failed a health check.
    fn seed(&mut self) -> Result<Seed, AslrError>;
}

impl<S: EntropySource + ?Sized> EntropySource for &mut S {
    #[inline]
    fn kind(&self) -> SourceKind {
        (**self).kind()
    }

    #[inline]
    fn seed(&mut self) -> Result<Seed, AslrError> {
        (**self).seed()
    }
}

/// Attempts of the DRBG instruction per 64-bit word: Intel's guidance for `RDRAND` is to retry
/// ten times, after which a failure means the hardware is broken, not busy.
pub const RAND_RETRIES: u32 = 10;
/// Attempts of the seed instruction per 64-bit word. `RDSEED`/`RNDRRS` may legitimately run dry
/// under load (the conditioner is slower than the DRBG), so they get more attempts, with a
/// spin-loop hint between them; after this the source falls back to the DRBG instruction.
pub const SEED_RETRIES: u32 = 100;

/// Index of the seed instruction in the per-instruction state arrays.
const SEED: usize = 0;
/// Index of the DRBG instruction.
const RAND: usize = 1;

/// A hardware entropy source: the CPU's random-number instructions with bounded retries and
/// health checks.
///
/// For each 64-bit word of a seed it tries the seed instruction (`RDSEED`/`RNDRRS`, up to
/// [`SEED_RETRIES`] attempts), then the DRBG instruction (`RDRAND`/`RNDR`, up to
/// [`RAND_RETRIES`] attempts). Every value is checked: all zeros, all ones, or the
/// instruction's previous value disable that instruction for good (latched). When neither
/// instruction exists, is healthy, or delivers within its retries, the seed fails with
/// [`AslrError::NoEntropy`] or [`AslrError::EntropyHealth`]; there is no software fallback.
///
/// # Examples
///
/// A mocked CPU with a working `RDRAND` and no `RDSEED`:
///
/// ```
/// use machvm_aslr::arch::{HwRng, RngFeatures, RngIsa};
/// use machvm_aslr::{EntropySource, HwEntropy, SourceKind};
///
/// struct Mock(u64);
/// impl HwRng for Mock {
///     fn features(&self) -> RngFeatures { RngFeatures::new(RngIsa::X86_64, false, true) }
///     fn seed_attempt(&mut self) -> Option<u64> { None }
///     fn rand_attempt(&mut self) -> Option<u64> {
///         self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
///         Some(self.0)
///     }
/// }
///
/// let mut hw = HwEntropy::new(Mock(1));
/// assert!(hw.seed().is_ok());
/// assert_eq!(hw.last_used(), Some(SourceKind::Rdrand));
/// ```
#[derive(Debug)]
pub struct HwEntropy<H> {
    hw: H,
    retries: [u32; 2],
    previous: [Option<u64>; 2],
    failed: [Option<HealthFailure>; 2],
    last_used: Option<SourceKind>,
}

impl<H: HwRng> HwEntropy<H> {
    /// Wraps a CPU's instructions with the default retry bounds ([`SEED_RETRIES`],
    /// [`RAND_RETRIES`]).
    #[inline]
    pub const fn new(hw: H) -> Self {
        Self {
            hw,
            retries: [SEED_RETRIES, RAND_RETRIES],
            previous: [None, None],
            failed: [None, None],
            last_used: None,
        }
    }

    /// Sets the attempts per word of the seed and DRBG instructions (at least one each).
    #[inline]
    #[must_use]
    pub const fn with_retries(mut self, seed: u32, rand: u32) -> Self {
        self.retries = [
            if seed == 0 { 1 } else { seed },
            if rand == 0 { 1 } else { rand },
        ];
        self
    }

    /// Returns the wrapped CPU.
    #[inline]
    pub const fn hw(&self) -> &H {
        &self.hw
    }

    /// Returns the instruction that produced the last word of the last successful seed.
    #[inline]
    pub const fn last_used(&self) -> Option<SourceKind> {
        self.last_used
    }

    /// Returns the health failure latched for the seed and DRBG instructions, if any.
    #[inline]
    pub const fn health(&self) -> [Option<HealthFailure>; 2] {
        self.failed
    }

    /// Returns the kind of instruction `which` on this CPU.
    fn kind_of(&self, which: usize) -> SourceKind {
        match (self.hw.features().isa(), which) {
            (RngIsa::X86_64, SEED) => SourceKind::Rdseed,
            (RngIsa::X86_64, _) => SourceKind::Rdrand,
            (RngIsa::Aarch64, SEED) => SourceKind::Rndrrs,
            (RngIsa::Aarch64, _) => SourceKind::Rndr,
        }
    }

    /// Tries instruction `which` for one word; `Ok(None)` if it did not deliver in time.
    fn try_word(&mut self, which: usize) -> Result<Option<u64>, HealthFailure> {
        for attempt in 0..self.retries[which] {
            let got = if which == SEED {
                self.hw.seed_attempt()
            } else {
                self.hw.rand_attempt()
            };
            let Some(v) = got else {
                if which == SEED && attempt + 1 < self.retries[which] {
                    core::hint::spin_loop();
                }
                continue;
            };
            let failure = if v == 0 {
                Some(HealthFailure::AllZeros)
            } else if v == u64::MAX {
                Some(HealthFailure::AllOnes)
            } else if self.previous[which] == Some(v) {
                Some(HealthFailure::Repeated)
            } else {
                None
            };
            if let Some(f) = failure {
                return Err(f);
            }
            self.previous[which] = Some(v);
            return Ok(Some(v));
        }
        Ok(None)
    }

    /// Returns one healthy word from the best instruction that delivers.
    fn word(&mut self) -> Result<(u64, usize), AslrError> {
        let features = self.hw.features();
        let present = [features.has_seed(), features.has_rand()];
        let mut health: Option<(usize, HealthFailure)> = None;
        for which in [SEED, RAND] {
            if !present[which] {
                continue;
            }
            if let Some(f) = self.failed[which] {
                health.get_or_insert((which, f));
                continue;
            }
            match self.try_word(which) {
                Ok(Some(v)) => return Ok((v, which)),
                Ok(None) => {}
                Err(f) => {
                    self.failed[which] = Some(f);
                    health.get_or_insert((which, f));
                }
            }
        }
        Err(match health {
            Some((which, failure)) => AslrError::EntropyHealth {
                source: self.kind_of(which),
                failure,
            },
            None => AslrError::NoEntropy {
                source: self.kind_of(if present[SEED] { SEED } else { RAND }),
            },
        })
    }
}

impl<H: HwRng> EntropySource for HwEntropy<H> {
    fn kind(&self) -> SourceKind {
        let f = self.hw.features();
        self.kind_of(if f.has_seed() && self.failed[SEED].is_none() {
            SEED
        } else {
            RAND
        })
    }

    fn seed(&mut self) -> Result<Seed, AslrError> {
        let mut out = [0u8; SEED_LEN];
        let mut used = RAND;
        for chunk in out.chunks_exact_mut(8) {
            let (v, which) = self.word()?;
            chunk.copy_from_slice(&v.to_le_bytes());
            used = which;
        }
        self.last_used = Some(self.kind_of(used));
        Ok(Seed::new(out))
    }
}

#[cfg(test)]
mod tests;
