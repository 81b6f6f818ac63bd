//! Reference models for tests and fuzz targets (feature `test-util`, host only).
//!
//! [`AllocModel`] is the plain model [`SimPhysMemory`](crate::SimPhysMemory)'s frame allocator is
//! checked against: a map of live allocations, the first-fit rule and the counters. The
//! property tests of this crate and the `sim_frames` fuzz target both drive it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::frame_alloc::FrameRequest;

/// A reference model of a first-fit frame allocator over `[base, base + size)`.
///
/// Callers update the public fields as their operations succeed; [`first_fit`](Self::first_fit)
/// says where the next allocation must land.
///
/// # Examples (needs `test-util`)
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use machvm_addr::{FrameRequest, PageSize, testing::AllocModel};
///
/// let mut m = AllocModel::new(0x10_0000, 1 << 20);
/// let req = FrameRequest::single(PageSize::Size64KiB);
/// assert_eq!(m.first_fit(req), Some(0x10_0000));
/// m.live.insert(0x10_0000, req);
/// assert_eq!(m.first_fit(req), Some(0x11_0000));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocModel {
    /// First physical address of the modelled memory.
    pub base: u64,
    /// Size of the modelled memory in bytes.
    pub size: u64,
    /// Live allocations: start -> request.
    pub live: BTreeMap<u64, FrameRequest>,
    /// Allocations freed so far (for double-free attempts).
    pub freed: Vec<(u64, FrameRequest)>,
    /// 4 KiB frames in use.
    pub in_use: u64,
    /// Most 4 KiB frames ever in use at once.
    pub peak: u64,
    /// Successful allocations.
    pub allocations: u64,
    /// Successful deallocations.
    pub deallocations: u64,
    /// Allocations left before injected failures (`fail_after`), if armed.
    pub budget: Option<u64>,
}

impl AllocModel {
    /// Returns an empty model of `[base, base + size)`.
    pub fn new(base: u64, size: u64) -> Self {
        Self {
            base,
            size,
            live: BTreeMap::new(),
            freed: Vec::new(),
            in_use: 0,
            peak: 0,
            allocations: 0,
            deallocations: 0,
            budget: None,
        }
    }

    /// Returns whether `[start, start + bytes)` overlaps a live allocation.
    pub fn overlaps(&self, start: u64, bytes: u64) -> bool {
        self.live
            .iter()
            .any(|(&s, r)| s < start + bytes && start < s + r.bytes())
    }

    /// Returns the first-fit answer for `req`: the lowest start aligned to `req.align()`
    /// whose run is free and inside the memory, or `None`.
    pub fn first_fit(&self, req: FrameRequest) -> Option<u64> {
        let align = req.align().bytes();
        let mut s = self.base.div_ceil(align) * align;
        while s + req.bytes() <= self.base + self.size {
            if !self.overlaps(s, req.bytes()) {
                return Some(s);
            }
            s += align;
        }
        None
    }
}
