//! Where swap encryption keys come from: the [`KeySource`] trait.
//!
//! The swap asks its key source for 64 bytes once, when it is created: the two AES-256 keys of
//! AES-XTS (XNU generates its swap keys on first use the same way). The key lives only in the
//! cipher's round keys in memory; it is never written to a swap file, so swapped-out data is
//! unreadable after a restart, by design.

use crate::PagingError;

/// Bytes of key material a [`Swap`](crate::Swap) asks for: two AES-256 keys.
pub const KEY_MATERIAL_BYTES: usize = 64;

/// A source of fresh secret key material (a kernel's entropy pool, a hardware RNG, the host's
/// random device).
///
/// `machvm-aslr`'s entropy sources fit behind this trait; the pager does not depend on them so
/// that any source can be used.
///
/// # Examples
///
/// ```
/// use machvm_pager::{KeySource, PagingError};
///
/// /// Fills keys from a generator the kernel already has.
/// struct KernelRng(u64);
///
/// impl KeySource for KernelRng {
///     fn fill_key(&mut self, key: &mut [u8; 64]) -> Result<(), PagingError> {
///         for b in key.iter_mut() {
///             // A real source would draw from its CSPRNG here.
///             self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
///             *b = (self.0 >> 56) as u8;
///         }
///         Ok(())
///     }
/// }
/// # let mut k = [0u8; 64];
/// # KernelRng(1).fill_key(&mut k).unwrap();
/// # assert!(k.iter().any(|b| *b != 0));
/// ```
pub trait KeySource {
    /// Fills `key` with fresh secret random bytes.
    ///
    /// # Errors
    ///
    /// [`PagingError::Entropy`] when the source cannot produce them.
    fn fill_key(&mut self, key: &mut [u8; KEY_MATERIAL_BYTES]) -> Result<(), PagingError>;
}

impl<K: KeySource + ?Sized> KeySource for &mut K {
    fn fill_key(&mut self, key: &mut [u8; KEY_MATERIAL_BYTES]) -> Result<(), PagingError> {
        (**self).fill_key(key)
    }
}

/// Key material the caller already holds (a seed from the boot loader, or a fixed key in
/// tests). Never use a constant key outside tests: anyone who knows it reads the swap files.
#[derive(Clone)]
pub struct FixedKey([u8; KEY_MATERIAL_BYTES]);

impl FixedKey {
    /// Key material `bytes` (the first 32 bytes key the data cipher, the last 32 the tweak
    /// cipher; they must differ).
    #[must_use]
    pub const fn new(bytes: [u8; KEY_MATERIAL_BYTES]) -> Self {
        Self(bytes)
    }
}

impl core::fmt::Debug for FixedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FixedKey(..)")
    }
}

impl KeySource for FixedKey {
    fn fill_key(&mut self, key: &mut [u8; KEY_MATERIAL_BYTES]) -> Result<(), PagingError> {
        key.copy_from_slice(&self.0);
        Ok(())
    }
}

impl Drop for FixedKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites key material (best effort: the writes go through `black_box` so they are not
/// dropped as dead stores).
pub(crate) fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        *b = 0;
    }
    core::hint::black_box(bytes);
}

#[cfg(feature = "std")]
mod os {
    use std::io::Read as _;

    use super::{KEY_MATERIAL_BYTES, KeySource};
    use crate::PagingError;

    /// Key material from the operating system's random device (`/dev/urandom`; feature `std`,
    /// Unix hosts).
    #[derive(Clone, Copy, Debug, Default)]
    pub struct OsEntropy;

    impl OsEntropy {
        /// The source.
        #[must_use]
        pub const fn new() -> Self {
            Self
        }
    }

    impl KeySource for OsEntropy {
        fn fill_key(&mut self, key: &mut [u8; KEY_MATERIAL_BYTES]) -> Result<(), PagingError> {
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(key))
                .map_err(|_| PagingError::Entropy)
        }
    }
}

#[cfg(feature = "std")]
pub use os::OsEntropy;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_key_hands_out_its_bytes() {
        let mut k = [0u8; KEY_MATERIAL_BYTES];
        FixedKey::new([9; KEY_MATERIAL_BYTES])
            .fill_key(&mut k)
            .unwrap();
        assert_eq!(k, [9; KEY_MATERIAL_BYTES]);
        assert_eq!(
            alloc::format!("{:?}", FixedKey::new([1; 64])),
            "FixedKey(..)"
        );
    }

    #[cfg(all(feature = "std", unix, not(miri)))]
    #[test]
    fn os_entropy_differs_between_draws() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        OsEntropy.fill_key(&mut a).unwrap();
        OsEntropy.fill_key(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
