//! Where zones get their memory: the [`PageSource`] trait and its host implementations.

use core::ptr::NonNull;

/// Why a [`PageSource`] could not provide memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageSourceError {
    /// The source has no memory left for the request.
    Exhausted,
    /// The request is malformed: a size that is zero or not a multiple of the page size, or an
    /// alignment that is not a power of two at least the page size.
    BadRequest {
        /// The requested size in bytes.
        bytes: usize,
        /// The requested alignment in bytes.
        align: usize,
    },
    /// The source cannot do this (for example guard pages from a source without a page table).
    Unsupported,
}

impl core::fmt::Display for PageSourceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Exhausted => f.write_str("page source exhausted"),
            Self::BadRequest { bytes, align } => {
                write!(
                    f,
                    "bad page request: {bytes:#x} bytes aligned to {align:#x}"
                )
            }
            Self::Unsupported => f.write_str("operation not supported by the page source"),
        }
    }
}

impl core::error::Error for PageSourceError {}

/// The access [`PageSource::protect`] gives pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageAccess {
    /// No access: a guard page.
    None,
    /// Reads only: read-only zone elements.
    ReadOnly,
    /// Reads and writes (the state of fresh memory).
    ReadWrite,
}

/// Hands out page-aligned, writable memory to zones (XNU's zone map / `kmem`).
///
/// A kernel implements it over its page allocator and kernel page table (the `machvm` facade
/// supplies one); host programs use [`SystemPages`] (feature `std`).
///
/// # Safety
///
/// Implementers promise that a successful [`allocate`](Self::allocate) returns `bytes` bytes
/// of readable and writable memory, aligned to `align`, that nothing else uses until it is
/// passed back to [`deallocate`](Self::deallocate). Zones build raw pointers into it and
/// rely on this.
pub unsafe trait PageSource {
    /// The page size the source works in (a power of two, at least 4096).
    fn page_size(&self) -> usize;

    /// Allocates `bytes` (a non-zero multiple of the page size) aligned to `align` (a power of
    /// two, at least the page size). The memory need not be zeroed.
    ///
    /// # Errors
    ///
    /// [`PageSourceError::Exhausted`] when out of memory, [`PageSourceError::BadRequest`] for a
    /// malformed request.
    fn allocate(&self, bytes: usize, align: usize) -> Result<NonNull<u8>, PageSourceError>;

    /// Gives memory back.
    ///
    /// # Safety
    ///
    /// `ptr`, `bytes` and `align` are exactly those of one earlier successful
    /// [`allocate`](Self::allocate) on this source that was not given back yet, and the memory
    /// is not used afterwards.
    unsafe fn deallocate(&self, ptr: NonNull<u8>, bytes: usize, align: usize);

    /// Returns whether [`protect`](Self::protect) works (the source controls the page table
    /// of its memory). The default: no.
    fn can_protect(&self) -> bool {
        false
    }

    /// Sets the access of `[ptr, ptr + bytes)` — whole pages inside one allocation — and
    /// flushes the stale translations, so that a guard page faults on any access and a
    /// read-only page on writes. Zones restore [`PageAccess::ReadWrite`] before giving memory
    /// back.
    ///
    /// # Errors
    ///
    /// [`PageSourceError::Unsupported`] if the source cannot (the default), or
    /// [`PageSourceError::BadRequest`] for a range that is not whole pages of one allocation.
    fn protect(
        &self,
        ptr: NonNull<u8>,
        bytes: usize,
        access: PageAccess,
    ) -> Result<(), PageSourceError> {
        let _ = (ptr, bytes, access);
        Err(PageSourceError::Unsupported)
    }
}

// SAFETY: forwards to `S`, which makes the promises.
unsafe impl<S: PageSource + ?Sized> PageSource for &S {
    #[inline]
    fn page_size(&self) -> usize {
        (**self).page_size()
    }

    #[inline]
    fn allocate(&self, bytes: usize, align: usize) -> Result<NonNull<u8>, PageSourceError> {
        (**self).allocate(bytes, align)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, bytes: usize, align: usize) {
        // SAFETY: the caller's contract is `S::deallocate`'s.
        unsafe { (**self).deallocate(ptr, bytes, align) }
    }

    fn can_protect(&self) -> bool {
        (**self).can_protect()
    }

    fn protect(
        &self,
        ptr: NonNull<u8>,
        bytes: usize,
        access: PageAccess,
    ) -> Result<(), PageSourceError> {
        (**self).protect(ptr, bytes, access)
    }
}

/// Checks a request against the rules of [`PageSource::allocate`].
#[cfg(feature = "std")]
fn check_request(bytes: usize, align: usize, page: usize) -> Result<(), PageSourceError> {
    if bytes == 0 || bytes % page != 0 || !align.is_power_of_two() || align < page {
        return Err(PageSourceError::BadRequest { bytes, align });
    }
    Ok(())
}

#[cfg(feature = "std")]
pub use host::SystemPages;

#[cfg(feature = "std")]
mod host {
    use core::alloc::GlobalAlloc;
    use core::ptr::NonNull;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use std::alloc::System;

    use super::{PageSource, PageSourceError, check_request};

    /// A [`PageSource`] over the host's system allocator (`std::alloc::System`, feature
    /// `std`), with an optional limit in bytes, for tests and host programs. It never goes
    /// through the `#[global_allocator]`, so it can back one.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_zone_alloc::{PageSource, SystemPages};
    ///
    /// let pages = SystemPages::with_limit(1 << 20);
    /// let p = pages.allocate(0x4000, 0x4000)?;
    /// assert_eq!(p.as_ptr() as usize % 0x4000, 0);
    /// assert_eq!(pages.in_use(), 0x4000);
    /// // SAFETY: `p` came from `allocate` with these arguments and is not used again.
    /// unsafe { pages.deallocate(p, 0x4000, 0x4000) };
    /// # Ok::<(), machvm_zone_alloc::PageSourceError>(())
    /// ```
    #[derive(Debug)]
    pub struct SystemPages {
        limit: usize,
        in_use: AtomicUsize,
        peak: AtomicUsize,
    }

    impl Default for SystemPages {
        fn default() -> Self {
            Self::new()
        }
    }

    impl SystemPages {
        /// The page size it works in.
        pub const PAGE_SIZE: usize = 4096;

        /// Returns a source without a limit.
        pub const fn new() -> Self {
            Self::with_limit(usize::MAX)
        }

        /// Returns a source that refuses to hold more than `limit` bytes at a time.
        pub const fn with_limit(limit: usize) -> Self {
            Self {
                limit,
                in_use: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }
        }

        /// Returns the bytes handed out and not given back.
        pub fn in_use(&self) -> usize {
            self.in_use.load(Ordering::Relaxed)
        }

        /// Returns the largest [`in_use`](Self::in_use) seen.
        pub fn peak(&self) -> usize {
            self.peak.load(Ordering::Relaxed)
        }
    }

    // SAFETY: memory comes from `System.alloc` with the requested size and alignment and goes
    // back through `System.dealloc` with the same layout; it is used by no one else meanwhile.
    unsafe impl PageSource for SystemPages {
        fn page_size(&self) -> usize {
            Self::PAGE_SIZE
        }

        fn allocate(&self, bytes: usize, align: usize) -> Result<NonNull<u8>, PageSourceError> {
            check_request(bytes, align, Self::PAGE_SIZE)?;
            let layout = core::alloc::Layout::from_size_align(bytes, align)
                .map_err(|_| PageSourceError::BadRequest { bytes, align })?;
            let mut used = self.in_use.load(Ordering::Relaxed);
            loop {
                let next = used
                    .checked_add(bytes)
                    .filter(|&n| n <= self.limit)
                    .ok_or(PageSourceError::Exhausted)?;
                match self.in_use.compare_exchange_weak(
                    used,
                    next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.peak.fetch_max(next, Ordering::Relaxed);
                        break;
                    }
                    Err(now) => used = now,
                }
            }
            // SAFETY: `layout` has a non-zero size (checked above).
            let ptr = unsafe { System.alloc(layout) };
            NonNull::new(ptr).ok_or_else(|| {
                self.in_use.fetch_sub(bytes, Ordering::Relaxed);
                PageSourceError::Exhausted
            })
        }

        unsafe fn deallocate(&self, ptr: NonNull<u8>, bytes: usize, align: usize) {
            // The caller passes what `allocate` accepted, so the layout is valid.
            if let Ok(layout) = core::alloc::Layout::from_size_align(bytes, align) {
                self.in_use.fetch_sub(bytes, Ordering::Relaxed);
                // SAFETY: the caller guarantees `ptr` came from `allocate` with this layout
                // and is not used again.
                unsafe { System.dealloc(ptr.as_ptr(), layout) };
            }
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_and_the_limit_holds() {
        let pages = SystemPages::with_limit(0x8000);
        assert_eq!(
            pages.allocate(0x1001, 0x1000),
            Err(PageSourceError::BadRequest {
                bytes: 0x1001,
                align: 0x1000
            })
        );
        assert!(pages.allocate(0x1000, 0x800).is_err());
        let a = pages.allocate(0x8000, 0x8000).unwrap();
        assert_eq!(
            pages.allocate(0x1000, 0x1000),
            Err(PageSourceError::Exhausted)
        );
        // SAFETY: `a` came from `allocate` with these arguments.
        unsafe { pages.deallocate(a, 0x8000, 0x8000) };
        assert_eq!((pages.in_use(), pages.peak()), (0, 0x8000));
        assert!(!pages.can_protect());
        assert_eq!(
            pages.protect(a, 0x1000, PageAccess::None),
            Err(PageSourceError::Unsupported)
        );
    }
}
