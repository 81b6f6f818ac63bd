//! Swapping segments out: the [`SegmentStore`] trait and two stores.
//!
//! The unit of swap is one whole segment (as in XNU). The pool writes a segment's image (its
//! data area followed by its slot directory) together with a [`SwapHeader`], keeps the header
//! in core, and on swap-in checks that the store gives back the same header and an image with
//! the same checksum. The pager crate's encrypted swap implements this trait.

use super::error::StoreError;

#[cfg(feature = "alloc")]
use alloc::vec::Vec;
#[cfg(feature = "alloc")]
use machvm_sync::Mutex;

/// The key a store returns for a written segment (opaque to the pool).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SwapKey(pub u64);

/// What the pool writes next to a swapped-out segment's image and expects back unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SwapHeader {
    /// Format version of the image ([`SwapHeader::VERSION`]).
    pub version: u16,
    /// Segment number in the pool.
    pub segment: u32,
    /// Bytes in the image (`data_len` + 16 × `slots`).
    pub image_len: u32,
    /// Bytes of the data area at the start of the image.
    pub data_len: u32,
    /// Entries of the slot directory that follows the data area.
    pub slots: u16,
    /// XXH3-64 of the image, seeded with the segment number.
    pub checksum: u64,
}

impl SwapHeader {
    /// The image format this pool writes.
    pub const VERSION: u16 = 1;
}

/// Backing storage for swapped-out segments.
///
/// The pool calls it while holding its lock (a store that does slow I/O should queue work and
/// return). Implementations must return the header and bytes written for a key until it is
/// freed; the pool detects any that do not (checksums) but cannot repair them.
pub trait SegmentStore {
    /// Writes a segment image and its header; returns the key to read or free it with.
    ///
    /// # Errors
    /// A [`StoreError`], typically [`StoreError::NoSpace`] or [`StoreError::Io`].
    fn write(&self, header: &SwapHeader, image: &[u8]) -> Result<SwapKey, StoreError>;

    /// Reads the image stored under `key` into `out` (exactly the image's length) and returns
    /// its header.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown key, [`StoreError::LengthMismatch`] when `out`
    /// is not the image's length, [`StoreError::Io`] for device failures.
    fn read(&self, key: SwapKey, out: &mut [u8]) -> Result<SwapHeader, StoreError>;

    /// Frees the record under `key` (unknown keys are ignored).
    fn free(&self, key: SwapKey);
}

impl<S: SegmentStore + ?Sized> SegmentStore for &S {
    fn write(&self, header: &SwapHeader, image: &[u8]) -> Result<SwapKey, StoreError> {
        (**self).write(header, image)
    }

    fn read(&self, key: SwapKey, out: &mut [u8]) -> Result<SwapHeader, StoreError> {
        (**self).read(key, out)
    }

    fn free(&self, key: SwapKey) {
        (**self).free(key);
    }
}

#[cfg(feature = "alloc")]
impl<S: SegmentStore + ?Sized> SegmentStore for alloc::sync::Arc<S> {
    fn write(&self, header: &SwapHeader, image: &[u8]) -> Result<SwapKey, StoreError> {
        (**self).write(header, image)
    }

    fn read(&self, key: SwapKey, out: &mut [u8]) -> Result<SwapHeader, StoreError> {
        (**self).read(key, out)
    }

    fn free(&self, key: SwapKey) {
        (**self).free(key);
    }
}

/// A store for pools that never swap: every write fails with [`StoreError::Unsupported`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStore;

impl SegmentStore for NoStore {
    fn write(&self, _: &SwapHeader, _: &[u8]) -> Result<SwapKey, StoreError> {
        Err(StoreError::Unsupported)
    }

    fn read(&self, _: SwapKey, _: &mut [u8]) -> Result<SwapHeader, StoreError> {
        Err(StoreError::NotFound)
    }

    fn free(&self, _: SwapKey) {}
}

#[cfg(feature = "alloc")]
#[derive(Debug)]
struct Record {
    header: SwapHeader,
    image: Vec<u8>,
}

/// An in-memory [`SegmentStore`] (feature `alloc`), for tests and hosts without swap.
///
/// [`with_record_mut`](Self::with_record_mut) gives tests direct access to stored records, to
/// simulate a damaged swap device.
#[cfg(feature = "alloc")]
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<Vec<Option<Record>>>,
    limit: Option<usize>,
}

#[cfg(feature = "alloc")]
impl MemoryStore {
    /// Creates an empty store without a record limit.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty store that holds at most `records` segments (more writes fail with
    /// [`StoreError::NoSpace`]).
    #[must_use]
    pub fn with_limit(records: usize) -> Self {
        Self {
            records: Mutex::new(Vec::new()),
            limit: Some(records),
        }
    }

    /// Records currently stored.
    pub fn len(&self) -> usize {
        self.records.lock().iter().filter(|r| r.is_some()).count()
    }

    /// Says whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys of the records currently stored, oldest slot first.
    pub fn keys(&self) -> Vec<SwapKey> {
        self.records
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_some())
            .map(|(i, _)| SwapKey(i as u64 + 1))
            .collect()
    }

    /// Runs `f` on the header and image stored under `key` (to damage them in tests); returns
    /// `None` for an unknown key.
    pub fn with_record_mut<R>(
        &self,
        key: SwapKey,
        f: impl FnOnce(&mut SwapHeader, &mut [u8]) -> R,
    ) -> Option<R> {
        let mut records = self.records.lock();
        let r = usize::try_from(key.0)
            .ok()
            .and_then(|k| k.checked_sub(1))
            .and_then(|i| records.get_mut(i))
            .and_then(Option::as_mut)?;
        Some(f(&mut r.header, &mut r.image))
    }
}

#[cfg(feature = "alloc")]
impl SegmentStore for MemoryStore {
    fn write(&self, header: &SwapHeader, image: &[u8]) -> Result<SwapKey, StoreError> {
        let mut records = self.records.lock();
        let used = records.iter().filter(|r| r.is_some()).count();
        if self.limit.is_some_and(|l| used >= l) {
            return Err(StoreError::NoSpace);
        }
        let mut copy = Vec::new();
        copy.try_reserve_exact(image.len())
            .map_err(|_| StoreError::NoSpace)?;
        copy.extend_from_slice(image);
        let record = Record {
            header: *header,
            image: copy,
        };
        let index = if let Some(i) = records.iter().position(Option::is_none) {
            if let Some(slot) = records.get_mut(i) {
                *slot = Some(record);
            }
            i
        } else {
            records.try_reserve(1).map_err(|_| StoreError::NoSpace)?;
            records.push(Some(record));
            records.len() - 1
        };
        Ok(SwapKey(index as u64 + 1))
    }

    fn read(&self, key: SwapKey, out: &mut [u8]) -> Result<SwapHeader, StoreError> {
        self.with_record_mut(key, |header, image| {
            if image.len() != out.len() {
                return Err(StoreError::LengthMismatch {
                    stored: image.len(),
                    asked: out.len(),
                });
            }
            out.copy_from_slice(image);
            Ok(*header)
        })
        .unwrap_or(Err(StoreError::NotFound))
    }

    fn free(&self, key: SwapKey) {
        let mut records = self.records.lock();
        if let Some(slot) = usize::try_from(key.0)
            .ok()
            .and_then(|k| k.checked_sub(1))
            .and_then(|i| records.get_mut(i))
        {
            *slot = None;
        }
    }
}
