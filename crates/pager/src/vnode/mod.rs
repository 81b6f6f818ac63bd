//! The vnode pager: VM objects backed by files, with clustered read-ahead, write-back of dirty
//! pages and the object's resident pages as the file's cache (XNU's vnode pager over the
//! unified buffer cache).

mod file;
#[cfg(feature = "std")]
mod std_file;

pub use file::{FileBacking, FileFaults, MemoryFile};
#[cfg(feature = "std")]
pub use std_file::StdFile;

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::fmt;

use machvm_addr::VmProt;
use machvm_sync::Mutex;
use machvm_sync::atomic::{AtomicU64, Ordering};
use machvm_vm_object::{
    MemoryObject, ObjectRef, PageFlags, PageIn, PageMemory, PageOutKind, PagerError, VmObject,
};

use crate::{BackingError, PagingError};

/// Pages read around a faulting page by default (32 KiB clusters with 4 KiB pages).
pub const DEFAULT_CLUSTER_PAGES: u32 = 8;

#[derive(Debug, Default)]
struct Counters {
    page_ins: AtomicU64,
    read_ahead: AtomicU64,
    cluster_reads: AtomicU64,
    pages_written: AtomicU64,
    past_eof_dropped: AtomicU64,
    syncs: AtomicU64,
    read_errors: AtomicU64,
    write_errors: AtomicU64,
}

/// Counters of a [`VnodePager`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VnodeStats {
    /// Pages read for faults.
    pub page_ins: u64,
    /// Neighbouring pages read ahead and inserted as speculative pages.
    pub read_ahead: u64,
    /// Read I/Os (one per fault: the faulting page and its cluster together).
    pub cluster_reads: u64,
    /// Pages written back (page-outs and clean-ups).
    pub pages_written: u64,
    /// Page-outs of pages wholly past the end of the file (dropped, never written).
    pub past_eof_dropped: u64,
    /// `sync` calls passed to the file.
    pub syncs: u64,
    /// Reads that failed (the faults failed).
    pub read_errors: u64,
    /// Writes that failed (the pages stayed resident and dirty).
    pub write_errors: u64,
}

fn bump(c: &AtomicU64, n: u64) {
    // Statistics only: nothing is ordered by them.
    c.fetch_add(n, Ordering::Relaxed);
}

/// The pager of one file: pages come from a [`FileBacking`], dirty pages go back to it.
///
/// - **Clustered page-in**: a fault reads the faulting page and the non-resident pages of its
///   aligned cluster ([`cluster_pages`](Self::cluster_pages)) in one I/O; the neighbours are
///   inserted into the object as clean, speculative pages (aged out first).
/// - **End of file**: pages past the end read as zeros; a page-out never writes past the end
///   (the tail of the last page is cut, pages wholly past it are dropped), so mapping a file
///   never grows it.
/// - **Write-back**: page-outs (eviction) and `VmObject::synchronize` (`msync`) write dirty
///   pages; synchronize then makes them durable with [`FileBacking::sync`].
/// - **Unified buffer cache**: [`object`](Self::object) hands every mapping the same VM
///   object while one lives, so its resident pages are the file's cache and every mapping
///   sees the same pages. `MAP_PRIVATE` mappings copy on write over it (delayed copies), so
///   their changes never reach the file.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use machvm_addr::{PageSize, SimPhysMemory, VmProt};
/// use machvm_pager::{MemoryFile, VnodePager};
/// use machvm_vm_object::{PageFlags, SimPageMemory, VmObject};
///
/// let phys = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let memory = Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB)?);
/// let file = MemoryFile::new((0..6 * 4096).map(|i| (i / 4096) as u8).collect());
/// let vnode = VnodePager::new(file, memory.clone())?;
///
/// let object = vnode.object()?;
/// let page = VmObject::resolve(&object, 4096, VmProt::READ)?;
/// let mut bytes = [0u8; 4096];
/// memory.memory().read_bytes(page.frame, &mut bytes)?;
/// assert_eq!(bytes, [1; 4096]);
/// // The rest of the cluster came in with it, speculatively.
/// assert_eq!(object.page(0)?.unwrap().flags, PageFlags::SPECULATIVE);
/// assert_eq!(vnode.stats().cluster_reads, 1);
///
/// // Another mapping of the file gets the same object: the same pages.
/// assert!(Arc::ptr_eq(&vnode.object()?, &object));
/// # Ok(()) }
/// ```
pub struct VnodePager<F: FileBacking> {
    file: F,
    memory: Arc<dyn PageMemory>,
    page_size: u64,
    cluster_pages: u32,
    size: AtomicU64,
    object: Mutex<Weak<VmObject>>,
    /// Serialises file reads that insert read-ahead pages with write-backs, so a page read
    /// ahead is never older than a write-back that finished before it was inserted.
    io: Mutex<()>,
    counters: Counters,
}

impl<F: FileBacking> fmt::Debug for VnodePager<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VnodePager")
            .field("size", &self.size.load(Ordering::Relaxed))
            .field("page_size", &self.page_size)
            .field("cluster_pages", &self.cluster_pages)
            .finish_non_exhaustive()
    }
}

impl<F: FileBacking> VnodePager<F> {
    /// The pager of `file`, reading pages into frames of `memory` (the page memory of the
    /// objects it backs), with clusters of [`DEFAULT_CLUSTER_PAGES`].
    ///
    /// # Errors
    ///
    /// [`PagingError::Backing`] when the file's size cannot be read;
    /// [`PagingError::PageSizeMismatch`] when `memory`'s page size is not 4 or 16 KiB.
    pub fn new(file: F, memory: Arc<dyn PageMemory>) -> Result<Arc<Self>, PagingError> {
        Self::with_cluster(file, memory, DEFAULT_CLUSTER_PAGES)
    }

    /// Like [`new`](Self::new) with clusters of `cluster_pages` pages (1: no read-ahead).
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new), and [`PagingError::BadConfig`] for a cluster of 0 pages.
    pub fn with_cluster(
        file: F,
        memory: Arc<dyn PageMemory>,
        cluster_pages: u32,
    ) -> Result<Arc<Self>, PagingError> {
        if cluster_pages == 0 {
            return Err(PagingError::BadConfig {
                what: "cluster_pages",
            });
        }
        let page_size = memory.page_size();
        if page_size != 4096 && page_size != 16384 {
            return Err(PagingError::PageSizeMismatch {
                expected: 4096,
                actual: page_size,
            });
        }
        let size = file.size()?;
        Ok(Arc::new(Self {
            file,
            memory,
            page_size,
            cluster_pages,
            size: AtomicU64::new(size),
            object: Mutex::new(Weak::new()),
            io: Mutex::new(()),
            counters: Counters::default(),
        }))
    }

    /// The file.
    #[must_use]
    pub fn file(&self) -> &F {
        &self.file
    }

    /// The file size the pager works with, in bytes.
    #[must_use]
    pub fn file_size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Pages per read cluster.
    #[must_use]
    pub fn cluster_pages(&self) -> u32 {
        self.cluster_pages
    }

    /// Rereads the file's size (after it was truncated or extended through the file system;
    /// XNU's `ubc_setsize`). Pages already resident are not touched.
    ///
    /// # Errors
    ///
    /// [`PagingError::Backing`] when the size cannot be read.
    pub fn refresh_size(&self) -> Result<u64, PagingError> {
        let size = self.file.size()?;
        // Release: a fault that sees the new size sees the file as it was when it was read.
        self.size.store(size, Ordering::Release);
        Ok(size)
    }

    /// Counters since creation.
    #[must_use]
    pub fn stats(&self) -> VnodeStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VnodeStats {
            page_ins: load(&c.page_ins),
            read_ahead: load(&c.read_ahead),
            cluster_reads: load(&c.cluster_reads),
            pages_written: load(&c.pages_written),
            past_eof_dropped: load(&c.past_eof_dropped),
            syncs: load(&c.syncs),
            read_errors: load(&c.read_errors),
            write_errors: load(&c.write_errors),
        }
    }

    fn rounded_size(&self) -> u64 {
        let ps = self.page_size;
        self.file_size().div_ceil(ps).saturating_mul(ps).max(ps)
    }

    /// The non-resident pages of `offset`'s cluster in `object` (the faulting page excluded),
    /// and the span `[lo, hi)` to read.
    fn cluster(&self, object: Option<&ObjectRef>, offset: u64) -> (Vec<u64>, u64, u64) {
        let ps = self.page_size;
        let mut around = Vec::new();
        let Some(object) = object.filter(|_| self.cluster_pages > 1) else {
            return (around, offset, offset + ps);
        };
        let cluster = u64::from(self.cluster_pages) * ps;
        let start = offset - offset % cluster;
        let end = start
            .saturating_add(cluster)
            .min(self.rounded_size())
            .min(object.size());
        let (mut lo, mut hi) = (offset, offset + ps);
        let mut at = start;
        while at < end {
            if at != offset && matches!(object.page(at), Ok(None)) && around.try_reserve(1).is_ok()
            {
                around.push(at);
                lo = lo.min(at);
                hi = hi.max(at + ps);
            }
            at += ps;
        }
        (around, lo, hi)
    }

    /// Inserts the read-ahead page at `off` (its bytes in `data`) into `object` as a clean,
    /// speculative page; false when no frame is left (stop reading ahead).
    fn insert_ahead(&self, object: &ObjectRef, off: u64, data: &[u8]) -> bool {
        let Ok(frame) = self.memory.alloc_page() else {
            return false;
        };
        self.memory.with_page(frame, &mut |bytes| {
            bytes.copy_from_slice(data);
        });
        match object.insert_page(off, frame, PageFlags::SPECULATIVE) {
            Ok(()) => bump(&self.counters.read_ahead, 1),
            // Faulted in meanwhile: theirs is the page.
            Err(_) => self.memory.free_page(frame),
        }
        true
    }
}

impl<F: FileBacking + 'static> VnodePager<F> {
    /// The file's VM object: the live one if any mapping still holds it (the cache), else a
    /// new external object of the file's size rounded up to whole pages (delayed copies, so
    /// `MAP_PRIVATE` copies on write over it).
    ///
    /// # Errors
    ///
    /// [`PagingError::Object`] when the object cannot be built.
    pub fn object(self: &Arc<Self>) -> Result<ObjectRef, PagingError> {
        let mut slot = self.object.lock();
        if let Some(object) = slot.upgrade() {
            return Ok(object);
        }
        let pager: Arc<dyn MemoryObject> = self.clone();
        let object = VmObject::builder(self.rounded_size(), self.memory.clone())
            .pager(pager)
            .build()?;
        *slot = Arc::downgrade(&object);
        Ok(object)
    }
}

fn io_error(e: BackingError) -> PagerError {
    match e {
        BackingError::NoSpace => PagerError::NoSpace,
        BackingError::Unsupported => PagerError::Unsupported,
        _ => PagerError::Io,
    }
}

impl<F: FileBacking + 'static> MemoryObject for VnodePager<F> {
    fn data_request(
        &self,
        offset: u64,
        page: &mut [u8],
        _access: VmProt,
    ) -> Result<PageIn, PagerError> {
        let ps = self.page_size;
        if offset % ps != 0 || page.len() as u64 != ps {
            return Err(PagerError::OutOfRange);
        }
        if offset >= self.file_size() {
            // A hole past the end of the file: the object zero-fills it.
            return Ok(PageIn::Absent);
        }
        let object = self.object.lock().upgrade();
        let _io = self.io.lock();
        let (around, lo, hi) = self.cluster(object.as_ref(), offset);
        let Ok(len) = usize::try_from(hi - lo) else {
            return Err(PagerError::OutOfRange);
        };
        let mut buf = Vec::new();
        if buf.try_reserve_exact(len).is_err() {
            return Err(PagerError::NoSpace);
        }
        buf.resize(len, 0);
        if let Err(e) = self.file.read_at(lo, &mut buf) {
            bump(&self.counters.read_errors, 1);
            return Err(io_error(e));
        }
        bump(&self.counters.cluster_reads, 1);
        // Bytes past the end of the file stay zero (the buffer was zeroed).
        let at = (offset - lo) as usize;
        let Some(mine) = buf.get(at..at + page.len()) else {
            return Err(PagerError::OutOfRange);
        };
        page.copy_from_slice(mine);
        bump(&self.counters.page_ins, 1);
        if let Some(object) = &object {
            for off in around {
                let at = (off - lo) as usize;
                let Some(data) = buf.get(at..at + page.len()) else {
                    break;
                };
                if !self.insert_ahead(object, off, data) {
                    break;
                }
            }
        }
        Ok(PageIn::Filled)
    }

    fn data_return(&self, offset: u64, page: &[u8], _kind: PageOutKind) -> Result<(), PagerError> {
        let ps = self.page_size;
        if offset % ps != 0 || page.len() as u64 != ps {
            return Err(PagerError::OutOfRange);
        }
        let _io = self.io.lock();
        let size = self.file_size();
        if offset >= size {
            bump(&self.counters.past_eof_dropped, 1);
            return Ok(());
        }
        let len = usize::try_from(size - offset).map_or(page.len(), |n| n.min(page.len()));
        let data = page.get(..len).unwrap_or(page);
        if let Err(e) = self.file.write_at(offset, data) {
            bump(&self.counters.write_errors, 1);
            return Err(io_error(e));
        }
        bump(&self.counters.pages_written, 1);
        Ok(())
    }

    fn has_page(&self, offset: u64) -> bool {
        offset < self.rounded_size()
    }

    fn synchronize(&self, _offset: u64, _length: u64) -> Result<(), PagerError> {
        bump(&self.counters.syncs, 1);
        self.file.sync().map_err(io_error)
    }

    fn terminate(&self) {
        // The object went away. Forget it unless a new one already took its place.
        let mut slot = self.object.lock();
        if slot.upgrade().is_none() {
            *slot = Weak::new();
        }
    }
}
