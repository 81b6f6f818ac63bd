//! A seed handed over by the bootloader.

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::{EntropySource, SEED_LEN, Seed, SourceKind};
use crate::AslrError;

/// A seed handed over by the bootloader: an EFI `RNG` protocol result, a device-tree
/// `/chosen/kaslr-seed` property (64 bits), or any other bytes the loader gathered.
///
/// The bytes are condensed into a 256-bit key when the source is made (each 32-byte chunk is
/// XOR-ed into the key, which is then replaced by the first 32 bytes of `ChaCha20` keyed with it
/// on the stream numbered by the total length), and the source gives out one [`Seed`]: the
/// first 32 bytes of `ChaCha20` keyed with the condensed key, on the same stream. After that it is empty and returns
/// [`AslrError::NoEntropy`], so one boot seed never seeds two generators the same way. The
/// entropy is what the loader put in (64 bits for a `kaslr-seed`), not more: combine it with
/// a hardware source where one exists.
///
/// # Examples
///
/// ```
/// use machvm_aslr::{AslrError, AslrRng, BootSeed, EntropySource, SourceKind};
///
/// // The device tree's /chosen/kaslr-seed: a 64-bit value (big-endian cells).
/// let mut seed = BootSeed::from_kaslr_seed(0x1234_5678_9abc_def0)?;
/// let rng = AslrRng::from_source(&mut seed)?;
/// assert_eq!(seed.seed(), Err(AslrError::NoEntropy { source: SourceKind::BootSeed }));
/// // A zero kaslr-seed means the loader did not provide one.
/// assert_eq!(BootSeed::from_kaslr_seed(0).unwrap_err(), AslrError::WeakSeed);
/// # Ok::<(), AslrError>(())
/// ```
pub struct BootSeed {
    key: Option<[u8; SEED_LEN]>,
    stream: u64,
}

impl BootSeed {
    /// The fewest bytes accepted: 64 bits, the size of a device-tree `kaslr-seed`.
    pub const MIN_LEN: usize = 8;

    /// Condenses `bytes` from the bootloader into a one-shot source.
    ///
    /// # Errors
    ///
    /// - [`AslrError::SeedTooShort`] if `bytes` has fewer than [`MIN_LEN`](Self::MIN_LEN)
    ///   bytes.
    /// - [`AslrError::WeakSeed`] if every byte is `0x00` or every byte is `0xff` (an
    ///   unfilled property or erased flash, not entropy).
    pub fn new(bytes: &[u8]) -> Result<Self, AslrError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(AslrError::SeedTooShort {
                len: bytes.len(),
                min: Self::MIN_LEN,
            });
        }
        if bytes.iter().all(|&b| b == 0) || bytes.iter().all(|&b| b == 0xff) {
            return Err(AslrError::WeakSeed);
        }
        let stream = bytes.len() as u64;
        let mut key = [0u8; SEED_LEN];
        for chunk in bytes.chunks(SEED_LEN) {
            for (k, b) in key.iter_mut().zip(chunk) {
                *k ^= *b;
            }
            let mut c = ChaCha20Rng::from_seed(key);
            c.set_stream(stream);
            c.fill_bytes(&mut key);
        }
        Ok(Self {
            key: Some(key),
            stream,
        })
    }

    /// Makes a source from the device-tree `/chosen/kaslr-seed` value.
    ///
    /// # Errors
    ///
    /// - [`AslrError::WeakSeed`] if `value` is zero (no seed provided) or all ones.
    pub fn from_kaslr_seed(value: u64) -> Result<Self, AslrError> {
        Self::new(&value.to_be_bytes())
    }

    /// Returns whether the seed has not been used yet.
    #[inline]
    pub const fn is_available(&self) -> bool {
        self.key.is_some()
    }
}

impl core::fmt::Debug for BootSeed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BootSeed")
            .field("available", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl EntropySource for BootSeed {
    fn kind(&self) -> SourceKind {
        SourceKind::BootSeed
    }

    fn seed(&mut self) -> Result<Seed, AslrError> {
        let key = self.key.take().ok_or(AslrError::NoEntropy {
            source: SourceKind::BootSeed,
        })?;
        let mut c = ChaCha20Rng::from_seed(key);
        c.set_stream(self.stream);
        let mut out = [0u8; SEED_LEN];
        c.fill_bytes(&mut out);
        Ok(Seed::new(out))
    }
}
