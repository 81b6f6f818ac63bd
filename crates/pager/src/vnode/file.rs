//! What a vnode pager reads and writes: the [`FileBacking`] trait and an in-memory file.

use alloc::vec::Vec;
use core::fmt;

use machvm_sync::Mutex;

use crate::BackingError;

/// A file as the vnode pager sees it (a file system's `VNOP_PAGEIN` / `VNOP_PAGEOUT` side):
/// its size, reads and writes at byte offsets, and a flush to stable storage.
///
/// Calls come without any VM lock held; implementations may block for I/O.
///
/// # Examples
///
/// ```
/// use machvm_pager::{FileBacking, MemoryFile};
///
/// let file = MemoryFile::new(b"hello".to_vec());
/// let mut buf = [0xff; 8];
/// assert_eq!(file.read_at(0, &mut buf).unwrap(), 5); // short read at the end
/// file.write_at(1, b"EL").unwrap();
/// assert_eq!(file.contents(), b"hELlo");
/// ```
pub trait FileBacking: Send + Sync {
    /// The file's size in bytes.
    ///
    /// # Errors
    ///
    /// [`BackingError::Io`] when it cannot be read.
    fn size(&self) -> Result<u64, BackingError>;

    /// Reads into `buf` from `offset`; returns the bytes read, fewer than `buf.len()` only at
    /// the end of the file (0 at or past it). Bytes of `buf` past what was read are left as
    /// they were.
    ///
    /// # Errors
    ///
    /// [`BackingError::Io`] when the device fails (no partial result is used then).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, BackingError>;

    /// Writes `buf` at `offset` (the pager never writes past the end of the file).
    ///
    /// # Errors
    ///
    /// [`BackingError::Io`], [`BackingError::NoSpace`], or [`BackingError::Unsupported`] for
    /// a read-only file.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BackingError>;

    /// Makes everything written so far durable (`fsync`).
    ///
    /// # Errors
    ///
    /// [`BackingError::Io`] when the device fails.
    fn sync(&self) -> Result<(), BackingError>;
}

impl<F: FileBacking + ?Sized> FileBacking for alloc::sync::Arc<F> {
    fn size(&self) -> Result<u64, BackingError> {
        (**self).size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, BackingError> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BackingError> {
        (**self).write_at(offset, buf)
    }
    fn sync(&self) -> Result<(), BackingError> {
        (**self).sync()
    }
}

/// Which operations of a [`MemoryFile`] fail with [`BackingError::Io`] (fault injection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileFaults {
    /// `read_at` fails.
    pub reads: bool,
    /// `write_at` fails.
    pub writes: bool,
    /// `sync` fails.
    pub syncs: bool,
}

#[derive(Debug, Default)]
struct State {
    data: Vec<u8>,
    faults: FileFaults,
    reads: u64,
    writes: u64,
    syncs: u64,
}

/// A file held in memory (for tests and simulators), with I/O counters and fault injection.
#[derive(Default)]
pub struct MemoryFile {
    state: Mutex<State>,
}

impl fmt::Debug for MemoryFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryFile")
            .field("len", &self.state.lock().data.len())
            .finish_non_exhaustive()
    }
}

impl MemoryFile {
    /// A file holding `data`.
    #[must_use]
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            state: Mutex::new(State {
                data,
                ..State::default()
            }),
        }
    }

    /// A copy of the file's bytes.
    pub fn contents(&self) -> Vec<u8> {
        self.state.lock().data.clone()
    }

    /// Sets which operations fail from now on.
    pub fn set_faults(&self, faults: FileFaults) {
        self.state.lock().faults = faults;
    }

    /// Successful `(reads, writes, syncs)` so far.
    pub fn io_counts(&self) -> (u64, u64, u64) {
        let st = self.state.lock();
        (st.reads, st.writes, st.syncs)
    }
}

impl FileBacking for MemoryFile {
    fn size(&self) -> Result<u64, BackingError> {
        Ok(self.state.lock().data.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, BackingError> {
        let mut st = self.state.lock();
        if st.faults.reads {
            return Err(BackingError::Io);
        }
        let start = usize::try_from(offset).map_or(st.data.len(), |o| o.min(st.data.len()));
        let src = st.data.get(start..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        st.reads += 1;
        Ok(n)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BackingError> {
        let mut st = self.state.lock();
        if st.faults.writes {
            return Err(BackingError::Io);
        }
        let bad = BackingError::OutOfRange {
            offset,
            len: buf.len() as u64,
        };
        let start = usize::try_from(offset).map_err(|_| bad)?;
        let end = start.checked_add(buf.len()).ok_or(bad)?;
        let len = st.data.len();
        if end > len {
            st.data
                .try_reserve(end - len)
                .map_err(|_| BackingError::NoSpace)?;
            st.data.resize(end, 0);
        }
        if let Some(dst) = st.data.get_mut(start..end) {
            dst.copy_from_slice(buf);
        }
        st.writes += 1;
        Ok(())
    }

    fn sync(&self) -> Result<(), BackingError> {
        let mut st = self.state.lock();
        if st.faults.syncs {
            return Err(BackingError::Io);
        }
        st.syncs += 1;
        Ok(())
    }
}
