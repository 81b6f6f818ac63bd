//! Where segment buffers come from: the [`SegmentMemory`] trait and two sources.
//!
//! Segments are the bulk of the pool's memory (XNU carves them from a dedicated submap); the
//! pool asks its [`SegmentMemory`] for one buffer of exactly the segment size when it opens a
//! segment or swaps one in, and gives it back when a segment empties, is merged away by major
//! compaction, or is swapped out. The pool's small metadata tables are separate (see
//! [`Tables`](super::Tables)).

use machvm_sync::Mutex;

#[cfg(feature = "alloc")]
use alloc::{boxed::Box, vec::Vec};

/// A source of segment buffers.
///
/// The pool calls it while holding its lock, so both methods must not block for long and must
/// not call back into the pool. Buffers need not be zeroed: the pool never reads a byte it did
/// not write.
pub trait SegmentMemory {
    /// One segment buffer.
    type Buffer: AsRef<[u8]> + AsMut<[u8]>;

    /// Returns a buffer of exactly `len` bytes, or `None` when there is no memory for one.
    fn allocate(&self, len: usize) -> Option<Self::Buffer>;

    /// Takes back a buffer from [`allocate`](Self::allocate).
    fn release(&self, buffer: Self::Buffer);
}

impl<M: SegmentMemory + ?Sized> SegmentMemory for &M {
    type Buffer = M::Buffer;

    fn allocate(&self, len: usize) -> Option<Self::Buffer> {
        (**self).allocate(len)
    }

    fn release(&self, buffer: Self::Buffer) {
        (**self).release(buffer);
    }
}

/// Segment buffers from the global allocator (feature `alloc`).
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapMemory;

#[cfg(feature = "alloc")]
impl HeapMemory {
    /// Creates the source.
    #[must_use]
    pub const fn new() -> Self {
        Self
    }
}

#[cfg(feature = "alloc")]
impl SegmentMemory for HeapMemory {
    type Buffer = Box<[u8]>;

    fn allocate(&self, len: usize) -> Option<Box<[u8]>> {
        let mut v = Vec::new();
        v.try_reserve_exact(len).ok()?;
        v.resize(len, 0);
        Some(v.into_boxed_slice())
    }

    fn release(&self, buffer: Box<[u8]>) {
        drop(buffer);
    }
}

/// Segment buffers carved from one caller-owned region, for pools without a heap.
///
/// The region is cut into at most `N` chunks of `chunk_len` bytes when the source is created;
/// [`allocate`](SegmentMemory::allocate) hands out a free chunk when `len == chunk_len`.
#[derive(Debug)]
pub struct SliceMemory<'a, const N: usize> {
    chunk_len: usize,
    free: Mutex<[Option<&'a mut [u8]>; N]>,
}

impl<'a, const N: usize> SliceMemory<'a, N> {
    /// Cuts `region` into chunks of `chunk_len` bytes (at most `N`; the rest of the region is
    /// not used). A `chunk_len` of 0 gives a source with no chunks.
    #[must_use]
    pub fn new(region: &'a mut [u8], chunk_len: usize) -> Self {
        let mut free: [Option<&'a mut [u8]>; N] = core::array::from_fn(|_| None);
        if chunk_len > 0 {
            for (slot, chunk) in free.iter_mut().zip(region.chunks_exact_mut(chunk_len)) {
                *slot = Some(chunk);
            }
        }
        Self {
            chunk_len,
            free: Mutex::new(free),
        }
    }

    /// Chunks currently free.
    pub fn free_chunks(&self) -> usize {
        self.free.lock().iter().filter(|c| c.is_some()).count()
    }
}

impl<'a, const N: usize> SegmentMemory for SliceMemory<'a, N> {
    type Buffer = &'a mut [u8];

    fn allocate(&self, len: usize) -> Option<&'a mut [u8]> {
        if len != self.chunk_len {
            return None;
        }
        self.free.lock().iter_mut().find_map(Option::take)
    }

    fn release(&self, buffer: &'a mut [u8]) {
        let mut free = self.free.lock();
        if let Some(slot) = free.iter_mut().find(|c| c.is_none()) {
            *slot = Some(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_memory_hands_out_each_chunk_once_and_takes_it_back() {
        let mut region = [0_u8; 100];
        let mem: SliceMemory<'_, 4> = SliceMemory::new(&mut region, 32);
        assert_eq!(mem.free_chunks(), 3);
        assert!(mem.allocate(16).is_none());
        let a = mem.allocate(32).unwrap();
        let b = mem.allocate(32).unwrap();
        let c = mem.allocate(32).unwrap();
        assert!(mem.allocate(32).is_none());
        assert_eq!((a.len(), b.len(), c.len()), (32, 32, 32));
        mem.release(b);
        assert_eq!(mem.free_chunks(), 1);
        assert!(mem.allocate(32).is_some());
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn heap_memory_gives_buffers_of_the_length_asked() {
        let b = HeapMemory::new().allocate(65536).unwrap();
        assert_eq!(b.len(), 65536);
        HeapMemory.release(b);
    }
}
