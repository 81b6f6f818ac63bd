//! The device pager: VM objects over physical ranges that are not RAM (MMIO registers, frame
//! buffers), XNU's `device_vm`.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use machvm_addr::{PageSize, PhysAddr, VmProt};
use machvm_vm_object::{
    CopyStrategy, MemoryObject, ObjectError, ObjectRef, PageFlags, PageIn, PageMemory, PageOutKind,
    PagerError, VmObject,
};

use crate::PagingError;

/// How a device range must be mapped (the pmap turns it into the architecture's memory type:
/// a MAIR index on aarch64, PAT/PCD/PWT bits on `x86_64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemAttr {
    /// Device registers: uncached, no gathering, no reordering, no early write
    /// acknowledgement (Arm `Device-nGnRnE`, x86 UC).
    Device,
    /// Device memory that may gather writes (frame buffers; Arm `Normal-NC`, x86 WC).
    WriteCombining,
    /// Cached, written through (x86 WT, Arm `Normal-WT`).
    WriteThrough,
    /// Cached, written back (RAM-like memory behind a device: Arm `Normal-WB`, x86 WB).
    WriteBack,
}

/// One physical range of a device object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRange {
    /// First byte (page-aligned).
    pub start: PhysAddr,
    /// Length in bytes (a non-zero multiple of the page size).
    pub len_bytes: u64,
}

/// The page memory of device objects: hands out no frames and frees none.
///
/// A device object's pages are the device's own physical pages, installed once and wired;
/// they are never RAM, so they must never be returned to a page allocator, zero-filled or
/// copied. Every allocation fails, which is also what makes copy-on-write of device memory
/// fail: an eager copy, a shadow's copy-up or a zero fill all need a frame from here.
#[derive(Clone, Copy, Debug)]
pub struct DeviceMemory {
    page_size: u64,
}

impl PageMemory for DeviceMemory {
    fn page_size(&self) -> u64 {
        self.page_size
    }

    fn alloc_page(&self) -> Result<PhysAddr, ObjectError> {
        Err(ObjectError::NoMemory)
    }

    fn free_page(&self, _frame: PhysAddr) {
        // Device pages are not RAM: nothing to give back.
    }

    /// Hands `f` an empty slice: the VM system never reads or writes device memory itself
    /// (a read of a device register can have side effects). The device pager ignores the
    /// bytes of the pages returned to it.
    fn with_page(&self, _frame: PhysAddr, f: &mut dyn FnMut(&mut [u8])) {
        f(&mut []);
    }

    fn copy_page(&self, _src: PhysAddr, _dst: PhysAddr) {}
}

/// The pager of a device object: maps physical ranges with a memory attribute, pages never
/// paged out, copy-on-write refused.
///
/// [`object`](Self::object) builds the object with every page of every range resident and
/// wired (XNU populates device objects with private pages up front), over [`DeviceMemory`],
/// with [`CopyStrategy::None`]. A page-out is refused with [`PagerError::Unsupported`], a copy
/// of the object and a private (copy-on-write) mapping's first write fail for want of a frame.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use machvm_addr::{PageSize, PhysAddr, VmProt};
/// use machvm_pager::{DevicePager, DeviceRange, MemAttr};
/// use machvm_vm_object::VmObject;
///
/// let uart = DeviceRange { start: PhysAddr::new(0x0900_0000), len_bytes: 0x1000 };
/// let pager = DevicePager::new(&[uart], MemAttr::Device, PageSize::Size4KiB)?;
/// let object = pager.object()?;
/// let page = VmObject::resolve(&object, 0, VmProt::READ | VmProt::WRITE)?;
/// assert_eq!(page.frame, PhysAddr::new(0x0900_0000));
/// assert!(object.page_out(0).is_err()); // wired: never paged out
/// # Ok(()) }
/// ```
pub struct DevicePager {
    /// `(object offset, range)` in object-offset order.
    ranges: Vec<(u64, DeviceRange)>,
    attr: MemAttr,
    page_size: u64,
    size: u64,
}

impl fmt::Debug for DevicePager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePager")
            .field("ranges", &self.ranges.len())
            .field("attr", &self.attr)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl DevicePager {
    /// A pager for `ranges`, laid out one after another in the object, to be mapped with
    /// `attr`, in pages of `page_size` (4 or 16 KiB).
    ///
    /// # Errors
    ///
    /// [`PagingError::PageSizeMismatch`] for another page size; [`PagingError::BadRange`] for
    /// no range, an empty one, one that wraps, or two that overlap;
    /// [`PagingError::Unaligned`] for a start or length that is not page-aligned;
    /// [`PagingError::OutOfMemory`].
    pub fn new(
        ranges: &[DeviceRange],
        attr: MemAttr,
        page_size: PageSize,
    ) -> Result<Arc<Self>, PagingError> {
        let ps = page_size.bytes();
        if !matches!(page_size, PageSize::Size4KiB | PageSize::Size16KiB) {
            return Err(PagingError::PageSizeMismatch {
                expected: 4096,
                actual: ps,
            });
        }
        if ranges.is_empty() {
            return Err(PagingError::BadRange { start: 0, len: 0 });
        }
        let mut laid = Vec::new();
        laid.try_reserve_exact(ranges.len())
            .map_err(|_| PagingError::OutOfMemory)?;
        let mut size: u64 = 0;
        for r in ranges {
            let start = r.start.as_u64();
            let bad = PagingError::BadRange {
                start,
                len: r.len_bytes,
            };
            if r.len_bytes == 0 {
                return Err(bad);
            }
            for value in [start, r.len_bytes] {
                if value % ps != 0 {
                    return Err(PagingError::Unaligned { value });
                }
            }
            let end = start.checked_add(r.len_bytes).ok_or(bad)?;
            if PhysAddr::try_new(end - 1).is_err() {
                return Err(bad);
            }
            let overlaps = laid.iter().any(|(_, o): &(u64, DeviceRange)| {
                let (os, oe) = (o.start.as_u64(), o.start.as_u64() + o.len_bytes);
                start < oe && os < end
            });
            if overlaps {
                return Err(bad);
            }
            laid.push((size, *r));
            size = size.checked_add(r.len_bytes).ok_or(bad)?;
        }
        Ok(Arc::new(Self {
            ranges: laid,
            attr,
            page_size: ps,
            size,
        }))
    }

    /// The memory attribute mappings of the object must use.
    #[must_use]
    pub fn attributes(&self) -> MemAttr {
        self.attr
    }

    /// The object's size in bytes (the ranges' lengths added).
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The device frame at `offset` of the object, if it lies inside.
    #[must_use]
    pub fn frame_at(&self, offset: u64) -> Option<PhysAddr> {
        let ps = self.page_size;
        if offset % ps != 0 {
            return None;
        }
        self.ranges.iter().find_map(|(base, r)| {
            let rel = offset.checked_sub(*base)?;
            (rel < r.len_bytes)
                .then(|| r.start.checked_add(rel))
                .flatten()
        })
    }

    /// Builds the device object: every page resident (the device's frame) and wired, copy
    /// strategy [`CopyStrategy::None`], over [`DeviceMemory`].
    ///
    /// # Errors
    ///
    /// [`PagingError::Object`] when the object cannot be built.
    pub fn object(self: &Arc<Self>) -> Result<ObjectRef, PagingError> {
        let memory: Arc<dyn PageMemory> = Arc::new(DeviceMemory {
            page_size: self.page_size,
        });
        let pager: Arc<dyn MemoryObject> = self.clone();
        let object = VmObject::builder(self.size, memory)
            .pager(pager)
            .strategy(CopyStrategy::None)
            .build()?;
        for (base, r) in &self.ranges {
            let mut rel = 0;
            while rel < r.len_bytes {
                let frame = r.start.checked_add(rel).ok_or(PagingError::BadRange {
                    start: r.start.as_u64(),
                    len: r.len_bytes,
                })?;
                object.insert_page(base + rel, frame, PageFlags::empty())?;
                object.wire_page(base + rel)?;
                rel += self.page_size;
            }
        }
        Ok(object)
    }
}

impl MemoryObject for DevicePager {
    /// Device pages are resident from the start; a request means the page was removed,
    /// which a device object does not allow.
    fn data_request(
        &self,
        _offset: u64,
        _page: &mut [u8],
        _access: VmProt,
    ) -> Result<PageIn, PagerError> {
        Err(PagerError::Unsupported)
    }

    /// Refuses eviction (device memory is never paged out); a clean-up is a no-op (the
    /// device's memory is its own backing store).
    fn data_return(&self, _offset: u64, _page: &[u8], kind: PageOutKind) -> Result<(), PagerError> {
        match kind {
            PageOutKind::Clean => Ok(()),
            _ => Err(PagerError::Unsupported),
        }
    }

    /// Always false: the pager keeps no copy, the resident device page is the only one. So
    /// even an unwired clean page is never dropped: its page-out asks
    /// [`data_return`](MemoryObject::data_return), which refuses.
    fn has_page(&self, _offset: u64) -> bool {
        false
    }
}
