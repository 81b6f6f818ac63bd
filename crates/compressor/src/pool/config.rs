//! Pool configuration and the metadata tables a pool runs on.

use super::handle::HandleSlot;
use super::segment::{MAX_SLOTS, SegmentEntry, SegmentSize};
use super::table::Table;

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// How a pool is sized.
///
/// The limits behind [`PoolPressure`](super::PoolPressure): `max_in_core_segments` bounds the
/// memory the pool takes from its [`SegmentMemory`](super::SegmentMemory) (its *pool size
/// limit*, `max_in_core_segments × segment_size` bytes); the segment table bounds segments in
/// core plus swapped out; the handle table bounds the pages stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Size of each segment buffer.
    pub segment_size: SegmentSize,
    /// Most slots (pages) per segment, 1 to [`MAX_SLOTS`].
    pub max_slots: usize,
    /// Most segments in core at once.
    pub max_in_core_segments: usize,
    /// Segment-table entries [`Pool::new`](super::Pool::new) allocates (segments in core plus
    /// swapped out).
    pub max_segments: usize,
    /// Handle-table entries [`Pool::new`](super::Pool::new) allocates (pages stored at once).
    pub max_pages: usize,
}

impl PoolConfig {
    /// A configuration with `segment_size` segments, 1024 slots per segment, 64 segments in
    /// core, 256 segments in all and 65,536 pages.
    #[must_use]
    pub const fn new(segment_size: SegmentSize) -> Self {
        Self {
            segment_size,
            max_slots: MAX_SLOTS,
            max_in_core_segments: 64,
            max_segments: 256,
            max_pages: 65_536,
        }
    }

    /// Sets [`max_slots`](Self::max_slots).
    #[must_use]
    pub const fn max_slots(mut self, slots: usize) -> Self {
        self.max_slots = slots;
        self
    }

    /// Sets [`max_in_core_segments`](Self::max_in_core_segments).
    #[must_use]
    pub const fn max_in_core_segments(mut self, segments: usize) -> Self {
        self.max_in_core_segments = segments;
        self
    }

    /// Sets [`max_segments`](Self::max_segments).
    #[must_use]
    pub const fn max_segments(mut self, segments: usize) -> Self {
        self.max_segments = segments;
        self
    }

    /// Sets [`max_pages`](Self::max_pages).
    #[must_use]
    pub const fn max_pages(mut self, pages: usize) -> Self {
        self.max_pages = pages;
        self
    }

    /// The pool size limit in bytes: segments in core × segment size.
    #[must_use]
    pub const fn limit_bytes(&self) -> usize {
        self.max_in_core_segments
            .saturating_mul(self.segment_size.bytes())
    }
}

/// The metadata tables of a pool: one [`SegmentEntry`] per segment (in core or swapped out)
/// and one [`HandleSlot`] per page stored. Borrowed from the caller (no heap needed), or
/// allocated with [`Tables::heap`] (feature `alloc`).
#[derive(Debug)]
pub struct Tables<'a, B> {
    pub(crate) segments: Table<'a, SegmentEntry<B>>,
    pub(crate) handles: Table<'a, HandleSlot>,
}

impl<'a, B> Tables<'a, B> {
    /// Tables over caller storage, for example statics:
    /// `[const { SegmentEntry::new() }; 64]` and `[HandleSlot::EMPTY; 4096]`. Their previous
    /// contents are overwritten.
    pub fn borrowed(segments: &'a mut [SegmentEntry<B>], handles: &'a mut [HandleSlot]) -> Self {
        Self {
            segments: Table::Borrowed(segments),
            handles: Table::Borrowed(handles),
        }
    }

    /// Tables on the heap with room for `segments` segments and `pages` pages; `None` when the
    /// allocation fails.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn heap(segments: usize, pages: usize) -> Option<Tables<'static, B>> {
        let mut s = Vec::new();
        s.try_reserve_exact(segments).ok()?;
        s.resize_with(segments, SegmentEntry::new);
        let mut h = Vec::new();
        h.try_reserve_exact(pages).ok()?;
        h.resize(pages, HandleSlot::EMPTY);
        Some(Tables {
            segments: Table::Owned(s.into_boxed_slice()),
            handles: Table::Owned(h.into_boxed_slice()),
        })
    }
}
