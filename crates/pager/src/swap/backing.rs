//! Where swap files live: the [`SwapBacking`] trait and an in-memory backing.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use machvm_sync::Mutex;

use crate::BackingError;

/// Storage for swap files `swapfile0`, `swapfile1`, …, named by index.
///
/// The swap creates files on demand, grows them as pressure requires, reads and writes whole
/// records at offsets inside them and deletes files it has drained. Everything it writes is
/// already sealed (checksummed and, by default, encrypted), so a backing needs no security of
/// its own. Calls come with the swap's lock held: implementations may block for I/O but must
/// not call back into the swap.
///
/// # Examples
///
/// ```
/// use machvm_pager::{MemorySwapBacking, SwapBacking};
///
/// let backing = MemorySwapBacking::new();
/// backing.create(0, 4096).unwrap();
/// backing.write(0, 512, b"sealed record").unwrap();
/// let mut out = [0u8; 13];
/// backing.read(0, 512, &mut out).unwrap();
/// assert_eq!(&out, b"sealed record");
/// backing.delete(0).unwrap();
/// ```
pub trait SwapBacking: Send + Sync {
    /// Creates file `index` with `len_bytes` bytes (contents unspecified).
    ///
    /// # Errors
    ///
    /// [`BackingError::FileExists`] if it exists, [`BackingError::NoSpace`] when the device
    /// cannot hold it, [`BackingError::Io`] on device failure (no file is left behind).
    fn create(&self, index: u32, len_bytes: u64) -> Result<(), BackingError>;

    /// Grows file `index` to `len_bytes` bytes, keeping its contents.
    ///
    /// # Errors
    ///
    /// [`BackingError::NoSuchFile`], [`BackingError::NoSpace`] (the file keeps its old size),
    /// [`BackingError::Io`].
    fn grow(&self, index: u32, len_bytes: u64) -> Result<(), BackingError>;

    /// Reads `buf.len()` bytes at `offset` of file `index`.
    ///
    /// # Errors
    ///
    /// [`BackingError::NoSuchFile`], [`BackingError::OutOfRange`] past the file's end,
    /// [`BackingError::Io`].
    fn read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), BackingError>;

    /// Writes `buf` at `offset` of file `index`.
    ///
    /// # Errors
    ///
    /// [`BackingError::NoSuchFile`], [`BackingError::OutOfRange`] past the file's end,
    /// [`BackingError::Io`].
    fn write(&self, index: u32, offset: u64, buf: &[u8]) -> Result<(), BackingError>;

    /// Deletes file `index`.
    ///
    /// # Errors
    ///
    /// [`BackingError::NoSuchFile`], [`BackingError::Io`].
    fn delete(&self, index: u32) -> Result<(), BackingError>;
}

impl<B: SwapBacking + ?Sized> SwapBacking for &B {
    fn create(&self, index: u32, len_bytes: u64) -> Result<(), BackingError> {
        (**self).create(index, len_bytes)
    }
    fn grow(&self, index: u32, len_bytes: u64) -> Result<(), BackingError> {
        (**self).grow(index, len_bytes)
    }
    fn read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        (**self).read(index, offset, buf)
    }
    fn write(&self, index: u32, offset: u64, buf: &[u8]) -> Result<(), BackingError> {
        (**self).write(index, offset, buf)
    }
    fn delete(&self, index: u32) -> Result<(), BackingError> {
        (**self).delete(index)
    }
}

impl<B: SwapBacking + ?Sized> SwapBacking for alloc::sync::Arc<B> {
    fn create(&self, index: u32, len_bytes: u64) -> Result<(), BackingError> {
        (**self).create(index, len_bytes)
    }
    fn grow(&self, index: u32, len_bytes: u64) -> Result<(), BackingError> {
        (**self).grow(index, len_bytes)
    }
    fn read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        (**self).read(index, offset, buf)
    }
    fn write(&self, index: u32, offset: u64, buf: &[u8]) -> Result<(), BackingError> {
        (**self).write(index, offset, buf)
    }
    fn delete(&self, index: u32) -> Result<(), BackingError> {
        (**self).delete(index)
    }
}

/// Which operations of a [`MemorySwapBacking`] fail (fault injection for tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// `read` fails with [`BackingError::Io`].
    pub reads: bool,
    /// `write` fails with [`BackingError::Io`].
    pub writes: bool,
    /// `create` and `grow` fail with [`BackingError::NoSpace`].
    pub allocation: bool,
    /// `delete` fails with [`BackingError::Io`].
    pub deletes: bool,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<u32, Vec<u8>>,
    faults: Faults,
    capacity: Option<u64>,
    reads: u64,
    writes: u64,
}

impl MemState {
    fn total(&self) -> u64 {
        self.files.values().map(|f| f.len() as u64).sum()
    }

    fn fits(&self, extra: u64) -> bool {
        self.capacity
            .is_none_or(|cap| self.total().checked_add(extra).is_some_and(|t| t <= cap))
    }

    fn range(
        file: &[u8],
        offset: u64,
        len: usize,
    ) -> Result<core::ops::Range<usize>, BackingError> {
        let bad = BackingError::OutOfRange {
            offset,
            len: len as u64,
        };
        let start = usize::try_from(offset).map_err(|_| bad)?;
        let end = start.checked_add(len).ok_or(bad)?;
        if end > file.len() {
            return Err(bad);
        }
        Ok(start..end)
    }
}

/// Swap files kept in memory (for tests, simulators and hosts without a disk), with a device
/// capacity and fault injection.
///
/// [`with_file_mut`](Self::with_file_mut) gives tests the raw bytes of a file, to damage
/// records the way a failing disk or an attacker would.
#[derive(Default)]
pub struct MemorySwapBacking {
    state: Mutex<MemState>,
}

impl fmt::Debug for MemorySwapBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("MemorySwapBacking")
            .field("files", &st.files.len())
            .field("bytes", &st.total())
            .finish_non_exhaustive()
    }
}

impl MemorySwapBacking {
    /// An empty backing without a capacity limit.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty backing whose files may total at most `bytes` bytes (creating or growing past
    /// it fails with [`BackingError::NoSpace`], like a full disk).
    #[must_use]
    pub fn with_capacity(bytes: u64) -> Self {
        let b = Self::default();
        b.state.lock().capacity = Some(bytes);
        b
    }

    /// Sets which operations fail from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().faults = faults;
    }

    /// The indices of the files that exist, in order.
    pub fn files(&self) -> Vec<u32> {
        self.state.lock().files.keys().copied().collect()
    }

    /// The size of file `index`, if it exists.
    pub fn file_len(&self, index: u32) -> Option<u64> {
        self.state.lock().files.get(&index).map(|f| f.len() as u64)
    }

    /// Reads and writes done so far (successful ones).
    pub fn io_counts(&self) -> (u64, u64) {
        let st = self.state.lock();
        (st.reads, st.writes)
    }

    /// Runs `f` on the bytes of file `index` (to damage them in tests); `None` if there is no
    /// such file.
    pub fn with_file_mut<R>(&self, index: u32, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        self.state.lock().files.get_mut(&index).map(|v| f(v))
    }
}

impl SwapBacking for MemorySwapBacking {
    fn create(&self, index: u32, len_bytes: u64) -> Result<(), BackingError> {
        let mut st = self.state.lock();
        if st.files.contains_key(&index) {
            return Err(BackingError::FileExists { index });
        }
        if st.faults.allocation || !st.fits(len_bytes) {
            return Err(BackingError::NoSpace);
        }
        let len = usize::try_from(len_bytes).map_err(|_| BackingError::NoSpace)?;
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| BackingError::NoSpace)?;
        v.resize(len, 0);
        st.files.insert(index, v);
        Ok(())
    }

    fn grow(&self, index: u32, len_bytes: u64) -> Result<(), BackingError> {
        let mut st = self.state.lock();
        let old = st
            .files
            .get(&index)
            .map(|f| f.len() as u64)
            .ok_or(BackingError::NoSuchFile { index })?;
        if len_bytes <= old {
            return Ok(());
        }
        if st.faults.allocation || !st.fits(len_bytes - old) {
            return Err(BackingError::NoSpace);
        }
        let len = usize::try_from(len_bytes).map_err(|_| BackingError::NoSpace)?;
        let file = st
            .files
            .get_mut(&index)
            .ok_or(BackingError::NoSuchFile { index })?;
        file.try_reserve_exact(len - file.len())
            .map_err(|_| BackingError::NoSpace)?;
        file.resize(len, 0);
        Ok(())
    }

    fn read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        let mut st = self.state.lock();
        if st.faults.reads {
            return Err(BackingError::Io);
        }
        let file = st
            .files
            .get(&index)
            .ok_or(BackingError::NoSuchFile { index })?;
        let range = MemState::range(file, offset, buf.len())?;
        buf.copy_from_slice(&file[range]);
        st.reads += 1;
        Ok(())
    }

    fn write(&self, index: u32, offset: u64, buf: &[u8]) -> Result<(), BackingError> {
        let mut st = self.state.lock();
        if st.faults.writes {
            return Err(BackingError::Io);
        }
        let file = st
            .files
            .get_mut(&index)
            .ok_or(BackingError::NoSuchFile { index })?;
        let range = MemState::range(file, offset, buf.len())?;
        file[range].copy_from_slice(buf);
        st.writes += 1;
        Ok(())
    }

    fn delete(&self, index: u32) -> Result<(), BackingError> {
        let mut st = self.state.lock();
        if st.faults.deletes {
            return Err(BackingError::Io);
        }
        st.files
            .remove(&index)
            .map(drop)
            .ok_or(BackingError::NoSuchFile { index })
    }
}
