//! The physical pages objects are made of: allocation, zeroing, copying and access.

use core::fmt;

use alloc::sync::Weak;

use machvm_addr::PhysAddr;

use crate::{ObjectError, PageFlags, VmObject};

/// Physical page memory for VM objects: the kernel's page allocator and a way to touch a
/// frame's bytes. Objects hold their provider (`Arc<dyn PageMemory>`) and return every frame
/// they own to it when they are dropped.
///
/// Implementations are shared between CPUs (`&self`).
pub trait PageMemory: Send + Sync + fmt::Debug {
    /// The page size in bytes (4096 or 16384), the granule of every object using this memory.
    fn page_size(&self) -> u64;

    /// Allocates one frame of [`page_size`](Self::page_size) bytes (contents unspecified).
    ///
    /// # Errors
    ///
    /// [`ObjectError::NoMemory`] when no frame is free.
    fn alloc_page(&self) -> Result<PhysAddr, ObjectError>;

    /// Returns a frame that came from [`alloc_page`](Self::alloc_page) and is no longer used
    /// (no object holds it, no mapping points at it).
    fn free_page(&self, frame: PhysAddr);

    /// Runs `f` on the bytes of `frame`. The VM system guarantees that nobody else writes the
    /// frame meanwhile (a page being filled is busy).
    fn with_page(&self, frame: PhysAddr, f: &mut dyn FnMut(&mut [u8]));

    /// Fills `frame` with zeros.
    fn zero_page(&self, frame: PhysAddr) {
        self.with_page(frame, &mut |bytes| bytes.fill(0));
    }

    /// Copies the page in `src` to `dst` (two different frames).
    fn copy_page(&self, src: PhysAddr, dst: PhysAddr);

    /// Called whenever `frame` becomes the resident page at `offset` of `object`, with the
    /// page's state bits (a read-ahead page is [`PageFlags::SPECULATIVE`]): zero fill,
    /// copy on write, page-in, a push into a delayed copy, a page moved up by a collapse, and
    /// [`VmObject::insert_page`]. A VM system's frame table records it to find a page's
    /// owner when it pages the frame out (XNU's `vm_page` object / offset fields); the
    /// record is only a hint: the owner must be checked (its page at `offset` is still
    /// `frame`) before use, since pages also leave objects without passing through here.
    ///
    /// Called with the object's lock held: implementations must not call into any object.
    /// The default does nothing.
    fn page_owned(&self, frame: PhysAddr, object: &Weak<VmObject>, offset: u64, flags: PageFlags) {
        let _ = (frame, object, offset, flags);
    }
}

#[cfg(feature = "std")]
mod sim {
    use alloc::vec;

    use machvm_addr::{FrameRequest, PageSize, PhysAddr, SimPhysMemory};

    use super::PageMemory;
    use crate::ObjectError;

    /// Page memory over a [`SimPhysMemory`] (host tests and simulators): frames of 4 KiB or
    /// 16 KiB from its allocator, bytes copied in and out of its buffer.
    #[derive(Debug)]
    pub struct SimPageMemory {
        memory: SimPhysMemory,
        size: PageSize,
    }

    impl SimPageMemory {
        /// Page memory with pages of `size` (4 KiB or 16 KiB) over `memory`.
        ///
        /// # Errors
        ///
        /// [`ObjectError::PageSizeMismatch`] for any other page size.
        pub fn new(memory: SimPhysMemory, size: PageSize) -> Result<Self, ObjectError> {
            match size {
                PageSize::Size4KiB | PageSize::Size16KiB => Ok(Self { memory, size }),
                _ => Err(ObjectError::PageSizeMismatch),
            }
        }

        /// The simulated physical memory (frame counts, raw reads).
        #[must_use]
        pub fn memory(&self) -> &SimPhysMemory {
            &self.memory
        }
    }

    impl PageMemory for SimPageMemory {
        fn page_size(&self) -> u64 {
            self.size.bytes()
        }

        fn alloc_page(&self) -> Result<PhysAddr, ObjectError> {
            self.memory
                .allocate(FrameRequest::single(self.size))
                .map_err(|_| ObjectError::NoMemory)
        }

        fn free_page(&self, frame: PhysAddr) {
            // SAFETY: the VM system frees a frame only when nothing uses it any more, and
            // every frame it frees came from `alloc_page` with this request.
            let _ = unsafe {
                self.memory
                    .deallocate(frame, FrameRequest::single(self.size))
            };
        }

        fn with_page(&self, frame: PhysAddr, f: &mut dyn FnMut(&mut [u8])) {
            let mut buf = vec![0u8; self.size.bytes() as usize];
            if self.memory.read_bytes(frame, &mut buf).is_ok() {
                f(&mut buf);
                let _ = self.memory.write_bytes(frame, &buf);
            }
        }

        fn copy_page(&self, src: PhysAddr, dst: PhysAddr) {
            let mut buf = vec![0u8; self.size.bytes() as usize];
            if self.memory.read_bytes(src, &mut buf).is_ok() {
                let _ = self.memory.write_bytes(dst, &buf);
            }
        }
    }
}

#[cfg(feature = "std")]
pub use sim::SimPageMemory;
