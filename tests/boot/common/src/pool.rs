//! A frame allocator over a fixed pool of physical memory.
//!
//! Single frames of the pool's granule (what page tables and the checks ask for) are recycled
//! through a free list threaded through the free frames themselves; anything else is carved
//! off the end of the pool and never reused. Good enough for a test kernel, and short enough
//! to read as an example of implementing [`FrameAllocator`].

use machvm_addr::{AddrError, FrameAllocator, FrameRequest, PageSize, PhysAddr};

/// A frame allocator over `[start, end)`, which must be reachable at equal virtual addresses.
#[derive(Debug)]
pub struct FramePool {
    next: u64,
    end: u64,
    granule: PageSize,
    /// Physical address of the first free recycled frame (0: none).
    free: u64,
    in_use: u64,
}

impl FramePool {
    /// Returns a pool over `[start, end)` that recycles frames of `granule`.
    ///
    /// # Safety
    ///
    /// - `[start, end)` is RAM that nothing else uses, readable and writable at the same
    ///   virtual addresses whenever the pool is used (the MMU is off or identity-maps it).
    pub const unsafe fn new(start: u64, end: u64, granule: PageSize) -> Self {
        Self {
            next: start,
            end,
            granule,
            free: 0,
            in_use: 0,
        }
    }

    /// Returns the number of frames handed out and not returned.
    pub const fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Returns the bytes never handed out yet.
    pub const fn untouched_bytes(&self) -> u64 {
        self.end.saturating_sub(self.next)
    }

    fn is_recyclable(&self, request: FrameRequest) -> bool {
        request.count() == 1 && request.size() == self.granule && request.align() == self.granule
    }
}

// SAFETY: frames come from the pool `new`'s caller gave us exclusively; a frame is either on the
// free list or handed out, never both (popped before being returned, pushed only when given
// back); bump allocations are aligned up to the request and `next` only grows.
unsafe impl FrameAllocator for FramePool {
    fn allocate(&mut self, request: FrameRequest) -> Result<PhysAddr, AddrError> {
        if self.is_recyclable(request) && self.free != 0 {
            let frame = self.free;
            // SAFETY: `frame` is a free frame of this pool (identity-accessible by `new`'s
            // contract); its first word holds the next free frame.
            self.free = unsafe { core::ptr::read_volatile(frame as *const u64) };
            self.in_use += request.count();
            return PhysAddr::try_new(frame);
        }
        let align = request.align().bytes();
        let start = self
            .next
            .checked_add(align - 1)
            .ok_or(AddrError::OutOfFrames)?
            & !(align - 1);
        let end = start
            .checked_add(request.bytes())
            .ok_or(AddrError::OutOfFrames)?;
        if end > self.end {
            return Err(AddrError::OutOfFrames);
        }
        self.next = end;
        self.in_use += request.count();
        PhysAddr::try_new(start)
    }

    unsafe fn deallocate(
        &mut self,
        start: PhysAddr,
        request: FrameRequest,
    ) -> Result<(), AddrError> {
        self.in_use = self.in_use.saturating_sub(request.count());
        if self.is_recyclable(request) {
            let frame = start.as_u64();
            // SAFETY: the caller gives the frame back (nothing uses it any more), and it is an
            // identity-accessible frame of this pool; its first word becomes the list link.
            unsafe { core::ptr::write_volatile(frame as *mut u64, self.free) };
            self.free = frame;
        }
        Ok(())
    }
}
