//! Swap files in a host directory (feature `std`).

use alloc::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::backing::SwapBacking;
use crate::BackingError;

/// Swap files `swapfile0`, `swapfile1`, … as real files in a directory (feature `std`), like
/// macOS's `/System/Volumes/VM/swapfileN`.
///
/// Files are created with `set_len` (sparse where the file system allows), written and read
/// at offsets, and removed when the swap deletes them or the backing is dropped.
///
/// # Examples (needs `std`)
///
/// ```
/// use machvm_pager::{FsSwapBacking, SwapBacking};
///
/// let dir = std::env::temp_dir().join(format!("machvm-doc-swap-{}", std::process::id()));
/// let backing = FsSwapBacking::new(&dir).unwrap();
/// backing.create(0, 8192).unwrap();
/// assert!(dir.join("swapfile0").is_file());
/// backing.write(0, 4096, b"record").unwrap();
/// drop(backing); // removes the swap files
/// assert!(!dir.join("swapfile0").exists());
/// # std::fs::remove_dir(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct FsSwapBacking {
    dir: PathBuf,
    files: Mutex<BTreeMap<u32, File>>,
}

fn io(e: &std::io::Error) -> BackingError {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            BackingError::NoSpace
        }
        _ => BackingError::Io,
    }
}

impl FsSwapBacking {
    /// A backing over `dir`, created if missing.
    ///
    /// # Errors
    ///
    /// [`BackingError::Io`] when the directory cannot be created.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, BackingError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io(&e))?;
        Ok(Self {
            dir,
            files: Mutex::new(BTreeMap::new()),
        })
    }

    /// The directory holding the swap files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of file `index` (`<dir>/swapfile<index>`).
    #[must_use]
    pub fn path(&self, index: u32) -> PathBuf {
        self.dir.join(std::format!("swapfile{index}"))
    }

    fn files(&self) -> MutexGuard<'_, BTreeMap<u32, File>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn at(file: &mut File, offset: u64) -> Result<(), BackingError> {
        file.seek(SeekFrom::Start(offset))
            .map(drop)
            .map_err(|e| io(&e))
    }

    fn check(file: &File, offset: u64, len: usize) -> Result<(), BackingError> {
        let size = file.metadata().map_err(|e| io(&e))?.len();
        let bad = BackingError::OutOfRange {
            offset,
            len: len as u64,
        };
        let end = offset.checked_add(len as u64).ok_or(bad)?;
        if end > size {
            return Err(bad);
        }
        Ok(())
    }
}

impl SwapBacking for FsSwapBacking {
    fn create(&self, index: u32, len_bytes: u64) -> Result<(), BackingError> {
        let mut files = self.files();
        if files.contains_key(&index) {
            return Err(BackingError::FileExists { index });
        }
        let path = self.path(index);
        // A stale swap file from an earlier run is useless (its key is gone): replace it.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io(&e))?;
        if let Err(e) = file.set_len(len_bytes) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(io(&e));
        }
        files.insert(index, file);
        Ok(())
    }

    fn grow(&self, index: u32, len_bytes: u64) -> Result<(), BackingError> {
        let files = self.files();
        let file = files
            .get(&index)
            .ok_or(BackingError::NoSuchFile { index })?;
        let old = file.metadata().map_err(|e| io(&e))?.len();
        if len_bytes <= old {
            return Ok(());
        }
        if let Err(e) = file.set_len(len_bytes) {
            let _ = file.set_len(old);
            return Err(io(&e));
        }
        Ok(())
    }

    fn read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        let mut files = self.files();
        let file = files
            .get_mut(&index)
            .ok_or(BackingError::NoSuchFile { index })?;
        Self::check(file, offset, buf.len())?;
        Self::at(file, offset)?;
        file.read_exact(buf).map_err(|e| io(&e))
    }

    fn write(&self, index: u32, offset: u64, buf: &[u8]) -> Result<(), BackingError> {
        let mut files = self.files();
        let file = files
            .get_mut(&index)
            .ok_or(BackingError::NoSuchFile { index })?;
        Self::check(file, offset, buf.len())?;
        Self::at(file, offset)?;
        file.write_all(buf).map_err(|e| io(&e))
    }

    fn delete(&self, index: u32) -> Result<(), BackingError> {
        let mut files = self.files();
        let file = files
            .remove(&index)
            .ok_or(BackingError::NoSuchFile { index })?;
        drop(file);
        std::fs::remove_file(self.path(index)).map_err(|e| io(&e))
    }
}

impl Drop for FsSwapBacking {
    fn drop(&mut self) {
        let files = core::mem::take(&mut *self.files());
        for (index, file) in files {
            drop(file);
            let _ = std::fs::remove_file(self.path(index));
        }
    }
}
