//! [`allocator_api2::alloc::Allocator`] for a kalloc heap and for a zone (feature
//! `allocator-api2`), so allocator-aware collections (`allocator_api2::vec::Vec`,
//! `allocator_api2::boxed::Box`, hashbrown's tables) can live in them.
//!
//! - [`Kalloc`] serves any [`Layout`] (zone classes, larger blocks from the page source);
//!   growing or shrinking within one class stays in place.
//! - [`Zone`] serves a layout that fits one element (size at most the element size,
//!   alignment at most what every element has) and refuses others with [`AllocError`]; a
//!   read-only zone refuses everything (its elements change only through
//!   [`Zone::mutate`]).
//!
//! Both return blocks of exactly `layout.size()` bytes. Use them by reference
//! (`Vec::new_in(&heap)`): allocator-api2 implements the trait for `&A`.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use allocator_api2::alloc::{AllocError, Allocator};

use crate::cpu::CpuLocal;
use crate::kalloc::Kalloc;
use crate::source::PageSource;
use crate::zone::{Zone, ZoneFlags};

/// Returns the block `[ptr, ptr + len)` as a slice pointer.
#[inline(always)]
fn block(ptr: NonNull<u8>, len: usize) -> NonNull<[u8]> {
    NonNull::slice_from_raw_parts(ptr, len)
}

// SAFETY: a block `allocate` returns is `layout.size()` bytes of a live zone element or large
// block aligned to `layout.align()` (`Kalloc::alloc`'s guarantee), used by nothing else until
// it is given back through `deallocate`, `grow` or `shrink` (the caller's contract, passed on to
// `Kalloc::free` / `Kalloc::realloc`), and it stays valid while the heap lives: its memory
// belongs to the page source, so moving the heap does not move it (`Kalloc` is not `Clone`).
// A layout of size 0 gets a 16-byte element like any other small request.
unsafe impl<S: PageSource, C: CpuLocal, const CPUS: usize> Allocator for Kalloc<'_, S, C, CPUS> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.alloc(layout)
            .map(|p| block(p, layout.size()))
            .map_err(|_| AllocError)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the trait's contract: `ptr` is a block of this heap allocated with `layout`
        // (its size between the requested one and the returned length, which are equal here).
        unsafe { self.free(ptr, layout) };
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the trait's contract (`ptr` is a live block of `old_layout`, the new size is
        // at least the old one).
        unsafe { self.resize(ptr, old_layout, new_layout) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the trait's contract (`ptr` is a live block of `old_layout`, the new size is
        // at most the old one).
        unsafe { self.resize(ptr, old_layout, new_layout) }
    }
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize> Kalloc<'_, S, C, CPUS> {
    /// `grow` and `shrink`: [`realloc`](Self::realloc) (in place within a class) when the
    /// alignment stays, else a new block, a copy and a free.
    ///
    /// # Safety
    ///
    /// `ptr` is a live block of this heap allocated with `old`; after success only the
    /// returned block may be used.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.align() == new.align() {
            // SAFETY: the caller's contract.
            let p = unsafe { self.realloc(ptr, old, new.size()) }.map_err(|_| AllocError)?;
            return Ok(block(p, new.size()));
        }
        let p = self.alloc(new).map_err(|_| AllocError)?;
        // SAFETY: both blocks are live and distinct, and each spans at least the bytes copied;
        // the old block is not used after it is freed (the caller's contract).
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), p.as_ptr(), old.size().min(new.size()));
            self.free(ptr, old);
        }
        Ok(block(p, new.size()))
    }
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize> Zone<S, C, CPUS> {
    /// Returns whether an element of this zone can hold a block of `layout` for a caller that
    /// writes to it (not a read-only zone, size and alignment fit).
    fn fits(&self, layout: Layout) -> bool {
        !self.flags().contains(ZoneFlags::READ_ONLY)
            && layout.size() <= self.element_size()
            && layout.align() <= self.element_align()
    }
}

// SAFETY: a block `allocate` returns is `layout.size()` bytes (at most the element size) of a
// live element of this zone, aligned to `layout.align()` (at most the alignment every element
// has, checked by `fits`), used by nothing else until `deallocate` gives it back (the caller's
// contract, passed on to `Zone::free_sized` with the caller's size, so the zone writes no byte
// beyond what the caller's pointer covers); chunk memory belongs to the page source, so moving
// the zone does not invalidate a block, and `Zone` is not `Clone`. Read-only zones and layouts
// that do not fit get `AllocError`.
unsafe impl<S: PageSource, C: CpuLocal, const CPUS: usize> Allocator for Zone<S, C, CPUS> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !self.fits(layout) {
            return Err(AllocError);
        }
        self.alloc()
            .map(|p| block(p, layout.size()))
            .map_err(|_| AllocError)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // A violation was reported to the zone's handler; the element is left alone.
        // SAFETY: the trait's contract: `ptr` is a live element of this zone handed out for
        // `layout`, whose size is at most the element size.
        let _ = unsafe { self.free_sized(ptr, layout.size()) };
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // Every block is a whole element: a layout that still fits keeps it (`fits` checks
        // the alignment against the one every element has).
        if self.fits(new_layout) {
            return Ok(block(ptr, new_layout.size()));
        }
        let _ = old_layout;
        Err(AllocError)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if ptr.as_ptr().addr() % new_layout.align() == 0 {
            return Ok(block(ptr, new_layout.size()));
        }
        let _ = old_layout;
        Err(AllocError)
    }
}
