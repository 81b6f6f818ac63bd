//! The crate's CSPRNG: `ChaCha20` seeded from entropy sources.

use core::convert::Infallible;
use core::fmt;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, TryCryptoRng, TryRng};

use crate::{AslrError, EntropySource, SEED_LEN, Seed};

/// The random generator every slide comes from: `rand_chacha`'s `ChaCha20` with a 256-bit key.
///
/// Seed it from an [`EntropySource`] (or several) in a kernel; seed it with a fixed key for
/// tests and reproducible layouts ([`from_seed`](Self::from_seed)). It implements
/// `rand_core`'s [`TryRng`] and [`TryCryptoRng`] (so [`Rng`] and
/// [`CryptoRng`](rand_core::CryptoRng)), and its `Debug` output does not reveal the state.
///
/// # Examples
///
/// ```
/// use machvm_aslr::{AslrRng, BootSeed};
/// use rand_core::Rng;
///
/// // Reproducible: the same key gives the same stream.
/// let (mut a, mut b) = (AslrRng::from_seed([42; 32]), AslrRng::from_seed([42; 32]));
/// assert_eq!(a.next_u64(), b.next_u64());
///
/// // Seeded from the bootloader's seed (and any other sources there are).
/// let mut boot = BootSeed::new(b"from the EFI RNG protocol")?;
/// let (rng, used) = AslrRng::from_sources(&mut [&mut boot])?;
/// assert_eq!(used, 1);
/// # Ok::<(), machvm_aslr::AslrError>(())
/// ```
#[derive(Clone)]
pub struct AslrRng {
    inner: ChaCha20Rng,
}

impl AslrRng {
    /// Returns a generator keyed with `seed`: deterministic, for tests and reproducible
    /// layouts. Never use a constant key for real address spaces.
    #[inline]
    pub fn from_seed(seed: [u8; SEED_LEN]) -> Self {
        Self {
            inner: ChaCha20Rng::from_seed(seed),
        }
    }

    /// Returns a generator keyed with a seed from `source`.
    ///
    /// # Errors
    ///
    /// - The source's error ([`AslrError::NoEntropy`], [`AslrError::EntropyHealth`]).
    pub fn from_source<S: EntropySource + ?Sized>(source: &mut S) -> Result<Self, AslrError> {
        let seed = source.seed()?;
        Ok(Self::from_seed(seed.into_bytes()))
    }

    /// Returns a generator keyed with the XOR of the seeds of every source that delivered one,
    /// and how many did. The key is as unpredictable as the best source that contributed.
    ///
    /// # Errors
    ///
    /// - The first source's error if no source delivered a seed (with no sources at all,
    ///   [`AslrError::NoEntropy`] naming an external source).
    pub fn from_sources(
        sources: &mut [&mut dyn EntropySource],
    ) -> Result<(Self, usize), AslrError> {
        let mut key = Seed::new([0; SEED_LEN]);
        let mut used = 0;
        let mut first_error = None;
        for source in sources.iter_mut() {
            match source.seed() {
                Ok(seed) => {
                    key.mix(&seed);
                    used += 1;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if used == 0 {
            return Err(first_error.unwrap_or(AslrError::NoEntropy {
                source: crate::SourceKind::External,
            }));
        }
        Ok((Self::from_seed(key.into_bytes()), used))
    }

    /// Mixes a fresh seed from `source` into the generator: the new key is the XOR of the
    /// seed and 32 bytes of the current output. On error the generator is unchanged.
    ///
    /// # Errors
    ///
    /// - The source's error ([`AslrError::NoEntropy`], [`AslrError::EntropyHealth`]).
    pub fn reseed<S: EntropySource + ?Sized>(&mut self, source: &mut S) -> Result<(), AslrError> {
        let fresh = source.seed()?;
        let mut key = [0u8; SEED_LEN];
        self.inner.fill_bytes(&mut key);
        let mut key = Seed::new(key);
        key.mix(&fresh);
        self.inner = ChaCha20Rng::from_seed(key.into_bytes());
        Ok(())
    }
}

impl fmt::Debug for AslrRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AslrRng { .. }")
    }
}

impl TryRng for AslrRng {
    type Error = Infallible;

    #[inline]
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.inner.next_u32())
    }

    #[inline]
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.inner.next_u64())
    }

    #[inline]
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.fill_bytes(dst);
        Ok(())
    }
}

impl TryCryptoRng for AslrRng {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BootSeed, SourceKind};

    #[test]
    fn matches_chacha20_for_the_same_key() {
        let mut a = AslrRng::from_seed([1; 32]);
        let mut b = ChaCha20Rng::from_seed([1; 32]);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn sources_are_mixed_and_failures_skipped() {
        let mut s1 = BootSeed::new(b"first seed").unwrap();
        let mut s2 = BootSeed::new(b"second seed").unwrap();
        let mut spent = BootSeed::new(b"third seed").unwrap();
        spent.seed().unwrap();
        let (mut a, used) = AslrRng::from_sources(&mut [&mut s1, &mut spent, &mut s2]).unwrap();
        assert_eq!(used, 2);
        let mut k = BootSeed::new(b"first seed").unwrap().seed().unwrap();
        k.mix(&BootSeed::new(b"second seed").unwrap().seed().unwrap());
        let mut b = AslrRng::from_seed(k.into_bytes());
        assert_eq!(a.next_u64(), b.next_u64());
        // Everything spent: the first error, no generator.
        assert_eq!(
            AslrRng::from_sources(&mut [&mut s1, &mut s2]).unwrap_err(),
            AslrError::NoEntropy {
                source: SourceKind::BootSeed
            }
        );
        assert!(AslrRng::from_sources(&mut []).is_err());
    }

    #[test]
    fn failed_reseed_changes_nothing() {
        let mut a = AslrRng::from_seed([2; 32]);
        let mut b = a.clone();
        let mut spent = BootSeed::new(b"spent seed").unwrap();
        spent.seed().unwrap();
        assert!(a.reseed(&mut spent).is_err());
        assert_eq!(a.next_u64(), b.next_u64());
        a.reseed(&mut BootSeed::new(b"fresh seed").unwrap())
            .unwrap();
        assert_ne!(a.next_u64(), b.next_u64());
        assert_eq!(alloc::format!("{a:?}"), "AslrRng { .. }");
    }
}
