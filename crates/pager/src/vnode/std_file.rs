//! A [`FileBacking`] over a host file (feature `std`).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::FileBacking;
use crate::BackingError;

/// A host file as a vnode pager's backing (feature `std`): reads and writes at offsets through
/// one `std::fs::File`, `sync` is `File::sync_all`.
///
/// # Examples (needs `std`)
///
/// ```
/// use machvm_pager::{FileBacking, StdFile};
///
/// let path = std::env::temp_dir().join(format!("machvm-doc-stdfile-{}", std::process::id()));
/// std::fs::write(&path, b"0123456789").unwrap();
/// let file = StdFile::open(&path).unwrap();
/// assert_eq!(file.size().unwrap(), 10);
/// file.write_at(2, b"ab").unwrap();
/// file.sync().unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"01ab456789");
/// # std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug)]
pub struct StdFile {
    file: Mutex<File>,
}

fn io(e: &std::io::Error) -> BackingError {
    match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => BackingError::NoSpace,
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => BackingError::Unsupported,
        _ => BackingError::Io,
    }
}

impl StdFile {
    /// Opens `path` for reading and writing.
    ///
    /// # Errors
    ///
    /// [`BackingError::Io`] (or `Unsupported` when permission is denied) if it cannot be
    /// opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BackingError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io(&e))?;
        Ok(Self::from_file(file))
    }

    /// Wraps an open file (opened for writing too if pages are to be written back).
    #[must_use]
    pub fn from_file(file: File) -> Self {
        Self {
            file: Mutex::new(file),
        }
    }

    fn file(&self) -> MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FileBacking for StdFile {
    fn size(&self) -> Result<u64, BackingError> {
        Ok(self.file().metadata().map_err(|e| io(&e))?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, BackingError> {
        let mut file = self.file();
        file.seek(SeekFrom::Start(offset)).map_err(|e| io(&e))?;
        let mut done = 0;
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            match file.read(rest) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io(&e)),
            }
        }
        Ok(done)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BackingError> {
        let mut file = self.file();
        file.seek(SeekFrom::Start(offset)).map_err(|e| io(&e))?;
        file.write_all(buf).map_err(|e| io(&e))
    }

    fn sync(&self) -> Result<(), BackingError> {
        self.file().sync_all().map_err(|e| io(&e))
    }
}
