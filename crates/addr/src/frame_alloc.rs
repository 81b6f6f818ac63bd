//! The frame-allocator trait and the request it serves.

use crate::error::AddrError;
use crate::page::Frame;
use crate::phys::PhysAddr;
use crate::size::{FixedPageSize, PageSize};

/// A request for `count` physically contiguous frames of `size`, starting at a physical address
/// aligned to `align` (at least `size`).
///
/// # Examples
///
/// ```
/// use machvm_addr::{FrameRequest, PageSize};
///
/// let req = FrameRequest::new(PageSize::Size4KiB, 16)?.with_align(PageSize::Size64KiB)?;
/// assert_eq!(req.bytes(), 0x1_0000);
/// assert_eq!(req.align(), PageSize::Size64KiB);
/// assert!(FrameRequest::new(PageSize::Size4KiB, 0).is_err());
/// # Ok::<(), machvm_addr::AddrError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameRequest {
    size: PageSize,
    count: u64,
    align: PageSize,
}

impl FrameRequest {
    /// Returns a request for one frame of `size`, aligned to `size`.
    pub const fn single(size: PageSize) -> Self {
        Self {
            size,
            count: 1,
            align: size,
        }
    }

    /// Returns a request for `count` contiguous frames of `size`, aligned to `size`.
    ///
    /// # Errors
    ///
    /// - [`AddrError::BadSize`] if `count` is zero.
    /// - [`AddrError::Overflow`] if the request is `2^52` bytes or more.
    pub const fn new(size: PageSize, count: u64) -> Result<Self, AddrError> {
        if count == 0 {
            return Err(AddrError::BadSize { size: 0 });
        }
        if count >= (1 << PhysAddr::MAX_BITS) >> size.shift() {
            return Err(AddrError::Overflow);
        }
        Ok(Self {
            size,
            count,
            align: size,
        })
    }

    /// Returns the request with its start aligned to `align` instead.
    ///
    /// # Errors
    ///
    /// - [`AddrError::BadAlignment`] if `align` is smaller than the frame size.
    pub const fn with_align(self, align: PageSize) -> Result<Self, AddrError> {
        if align.bytes() < self.size.bytes() {
            return Err(AddrError::BadAlignment {
                align: align.bytes(),
            });
        }
        Ok(Self { align, ..self })
    }

    /// Returns the frame size.
    pub const fn size(self) -> PageSize {
        self.size
    }

    /// Returns the number of frames.
    pub const fn count(self) -> u64 {
        self.count
    }

    /// Returns the alignment of the first frame.
    pub const fn align(self) -> PageSize {
        self.align
    }

    /// Returns the total size in bytes (below `2^52`).
    pub const fn bytes(self) -> u64 {
        self.count << self.size.shift()
    }
}

/// Hands out physically contiguous runs of frames.
///
/// # Safety
///
/// Implementers promise that every `Ok(start)` returned by [`allocate`](Self::allocate):
///
/// - starts at a multiple of `request.align()` and covers `request.bytes()` bytes of physical
///   memory that exists and that nothing else uses;
/// - is not returned again, in whole or in part, until it is passed to
///   [`deallocate`](Self::deallocate);
/// - is filled with zeros whenever [`zeroes_frames`](Self::zeroes_frames) returns `true`.
///
/// Callers (page-table code, zone allocators) rely on this to write to the frames without
/// further checks.
///
/// # Examples
///
/// ```
/// use machvm_addr::{AddrError, FrameAllocator, FrameRequest, PageSize, PhysAddr};
///
/// /// Hands out 4 KiB frames from a fixed region and never reuses them.
/// #[derive(Debug)]
/// struct Bump { next: u64, end: u64 }
///
/// // SAFETY: frames come from `next..end`, which the allocator owns, and `next` only grows, so no
/// // frame is returned twice; starts are aligned up to the request's alignment.
/// unsafe impl FrameAllocator for Bump {
///     fn allocate(&mut self, request: FrameRequest) -> Result<PhysAddr, AddrError> {
///         let start = PhysAddr::try_new(self.next)?.align_up(request.align().bytes())?;
///         let end = start.checked_add(request.bytes()).ok_or(AddrError::OutOfFrames)?;
///         if end.as_u64() > self.end {
///             return Err(AddrError::OutOfFrames);
///         }
///         self.next = end.as_u64();
///         Ok(start)
///     }
///
///     unsafe fn deallocate(&mut self, _: PhysAddr, _: FrameRequest) -> Result<(), AddrError> {
///         Ok(()) // leaks
///     }
/// }
///
/// let mut bump = Bump { next: 0x1000, end: 0x10_0000 };
/// let frame = bump.allocate_frame::<machvm_addr::Size4KiB>()?;
/// assert_eq!(frame.start_address(), PhysAddr::new(0x1000));
/// # Ok::<(), AddrError>(())
/// ```
pub unsafe trait FrameAllocator {
    /// Allocates the frames `request` describes and returns the first physical address.
    ///
    /// # Errors
    ///
    /// - [`AddrError::OutOfFrames`] if no free run satisfies the request.
    /// - Implementations may return other variants (such as [`AddrError::InjectedFailure`]) and
    ///   document them.
    fn allocate(&mut self, request: FrameRequest) -> Result<PhysAddr, AddrError>;

    /// Returns the frames starting at `start` that an earlier `allocate(request)` handed out.
    ///
    /// # Errors
    ///
    /// Implementations that track allocations return [`AddrError::NotAllocated`] for frames that
    /// are not a live allocation of `request`, and [`AddrError::Misaligned`] for a misaligned
    /// `start`; the allocator is unchanged then.
    ///
    /// # Safety
    ///
    /// - Nothing uses the frames after this call (no mappings, pointers or references into them
    ///   remain).
    unsafe fn deallocate(
        &mut self,
        start: PhysAddr,
        request: FrameRequest,
    ) -> Result<(), AddrError>;

    /// Returns whether every frame [`allocate`](Self::allocate) hands out is filled with
    /// zeros, so callers that need zeroed frames (page tables) can skip clearing them.
    ///
    /// The default is `false`; an implementation that returns `true` promises it as part of
    /// the trait's safety contract.
    fn zeroes_frames(&self) -> bool {
        false
    }

    /// Allocates one frame of the typed size `S`.
    ///
    /// # Errors
    ///
    /// - Whatever [`allocate`](Self::allocate) returns.
    fn allocate_frame<S: FixedPageSize>(&mut self) -> Result<Frame<S>, AddrError> {
        let start = self.allocate(FrameRequest::single(S::SIZE))?;
        Frame::from_start_address(start)
    }

    /// Returns one frame that [`allocate_frame`](Self::allocate_frame) handed out.
    ///
    /// # Errors
    ///
    /// - Whatever [`deallocate`](Self::deallocate) returns.
    ///
    /// # Safety
    ///
    /// - Nothing uses the frame after this call.
    unsafe fn deallocate_frame<S: FixedPageSize>(
        &mut self,
        frame: Frame<S>,
    ) -> Result<(), AddrError> {
        // SAFETY: the caller promises nothing uses the frame any more, which is `deallocate`'s
        // only obligation.
        unsafe { self.deallocate(frame.start_address(), FrameRequest::single(S::SIZE)) }
    }
}

// SAFETY: every call is forwarded to `A`, whose implementation keeps the trait's promises.
unsafe impl<A: FrameAllocator + ?Sized> FrameAllocator for &mut A {
    fn allocate(&mut self, request: FrameRequest) -> Result<PhysAddr, AddrError> {
        (**self).allocate(request)
    }

    unsafe fn deallocate(
        &mut self,
        start: PhysAddr,
        request: FrameRequest,
    ) -> Result<(), AddrError> {
        // SAFETY: forwarded; our caller upholds `deallocate`'s contract.
        unsafe { (**self).deallocate(start, request) }
    }

    fn zeroes_frames(&self) -> bool {
        (**self).zeroes_frames()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_validates_count_and_alignment() {
        assert_eq!(
            FrameRequest::new(PageSize::Size4KiB, 0),
            Err(AddrError::BadSize { size: 0 })
        );
        assert_eq!(
            FrameRequest::new(PageSize::Size4KiB, 1 << 40),
            Err(AddrError::Overflow)
        );
        let max = FrameRequest::new(PageSize::Size4KiB, (1 << 40) - 1).unwrap();
        assert_eq!(max.bytes(), (1 << 52) - 0x1000);
        let r = FrameRequest::single(PageSize::Size2MiB);
        assert_eq!(
            r.with_align(PageSize::Size4KiB),
            Err(AddrError::BadAlignment { align: 0x1000 })
        );
        let r = r.with_align(PageSize::Size1GiB).unwrap();
        assert_eq!(
            (r.size(), r.count(), r.align()),
            (PageSize::Size2MiB, 1, PageSize::Size1GiB)
        );
    }
}
