//! The frame table: every frame the kernel donated, the page queue each one is on, the VM
//! object page it holds and the translations that map it (XNU's `vm_page` array, page
//! queues and pv lists in one structure).
//!
//! [`FramePool`] is the [`PageMemory`] every VM object of a [`VmSystem`](crate::VmSystem)
//! allocates from: VM objects tell it which page a frame holds
//! ([`PageMemory::page_owned`]), the pmaps tell it which translations map a frame (through
//! [`FramePool::mapped`] / [`FramePool::unmapped`]), and the pageout daemon walks its queues.

use alloc::sync::Weak;
use alloc::vec::Vec;
use core::fmt;

use machvm_addr::{PhysAddr, PhysMapper, VirtAddr};
use machvm_sync::Mutex;
use machvm_vm_object::{ObjectError, PageFlags, PageMemory, VmObject};

/// The id of an address space in a [`VmSystem`](crate::VmSystem).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpaceId(pub(crate) u32);

impl SpaceId {
    /// The id as a number (unique among the live spaces of one system).
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for SpaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "space {}", self.0)
    }
}

/// The queue a frame is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PageQueue {
    /// Not in use.
    Free,
    /// In use and recently referenced.
    Active,
    /// In use, not referenced since it was deactivated: the next to be reclaimed.
    Inactive,
    /// Read ahead and not used yet: reclaimed first.
    Speculative,
    /// Waiting for a pager that cannot take more pages now.
    Throttled,
    /// Mapped wired: never reclaimed.
    Wired,
}

impl PageQueue {
    const fn index(self) -> usize {
        match self {
            Self::Free => 0,
            Self::Active => 1,
            Self::Inactive => 2,
            Self::Speculative => 3,
            Self::Throttled => 4,
            Self::Wired => 5,
        }
    }
}

/// Pages on each queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueCounts {
    /// Free frames.
    pub free: u64,
    /// Active pages.
    pub active: u64,
    /// Inactive pages.
    pub inactive: u64,
    /// Speculative pages.
    pub speculative: u64,
    /// Throttled pages.
    pub throttled: u64,
    /// Wired pages.
    pub wired: u64,
}

impl QueueCounts {
    /// Every managed frame.
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.free + self.active + self.inactive + self.speculative + self.throttled + self.wired
    }
}

/// Why frames could not be donated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The start is not aligned to the page size, or the count is zero.
    Unaligned {
        /// The start given.
        start: u64,
    },
    /// The range overlaps frames donated before, or wraps around.
    Overlap {
        /// The start given.
        start: u64,
    },
    /// The mapper cannot reach the range.
    Unreachable {
        /// The start given.
        start: u64,
    },
    /// More than `u32::MAX - 1` frames in one pool.
    TooMany,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unaligned { start } => {
                write!(f, "frames at {start:#x}: unaligned start or no frames")
            }
            Self::Overlap { start } => write!(f, "frames at {start:#x} overlap donated frames"),
            Self::Unreachable { start } => write!(f, "frames at {start:#x} are not mapped"),
            Self::TooMany => f.write_str("too many frames for one pool"),
        }
    }
}

impl core::error::Error for FrameError {}

/// No frame (list end).
const NIL: u32 = u32::MAX;

/// The translations of one frame.
#[derive(Clone, Debug, Default)]
enum Maps {
    #[default]
    None,
    One(SpaceId, VirtAddr),
    Many(Vec<(SpaceId, VirtAddr)>),
}

impl Maps {
    fn add(&mut self, space: SpaceId, va: VirtAddr) {
        *self = match core::mem::take(self) {
            Self::None => Self::One(space, va),
            Self::One(s, v) => Self::Many(alloc::vec![(s, v), (space, va)]),
            Self::Many(mut v) => {
                v.push((space, va));
                Self::Many(v)
            }
        };
    }

    fn remove(&mut self, space: SpaceId, va: VirtAddr) {
        match self {
            Self::None => {}
            Self::One(s, v) => {
                if (*s, *v) == (space, va) {
                    *self = Self::None;
                }
            }
            Self::Many(list) => {
                if let Some(i) = list.iter().position(|&m| m == (space, va)) {
                    list.swap_remove(i);
                }
                if list.len() == 1 {
                    *self = Self::One(list[0].0, list[0].1);
                }
            }
        }
    }

    fn to_vec(&self) -> Vec<(SpaceId, VirtAddr)> {
        match self {
            Self::None => Vec::new(),
            Self::One(s, v) => alloc::vec![(*s, *v)],
            Self::Many(list) => list.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Self::None)
    }
}

/// What the table knows about one frame.
#[derive(Debug)]
struct Info {
    queue: PageQueue,
    prev: u32,
    next: u32,
    owner: Option<(Weak<VmObject>, u64)>,
    maps: Maps,
    /// Wired translations of the frame.
    wired_maps: u32,
    /// Software reference bit: set when the page is allocated or faulted in, cleared by the
    /// pageout scan (the hardware accessed bits of its translations are harvested with it).
    referenced: bool,
    /// A translation allowed writes (or hardware recorded one) since the frame was
    /// allocated: the page may differ from any copy its pager holds.
    modified: bool,
}

/// A run of donated frames.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: u64,
    first: u32,
    count: u32,
}

#[derive(Debug, Default)]
struct Table {
    /// Runs by address.
    runs: Vec<Run>,
    /// Runs by first index.
    by_index: Vec<Run>,
    info: Vec<Info>,
    heads: [u32; 6],
    tails: [u32; 6],
    counts: [u64; 6],
}

impl Table {
    fn index_of(&self, pa: u64, page: u64) -> Option<u32> {
        let i = self
            .runs
            .partition_point(|r| r.start <= pa)
            .checked_sub(1)?;
        let run = self.runs[i];
        let n = (pa - run.start) / page;
        (n < u64::from(run.count) && pa % page == 0).then(|| run.first + n as u32)
    }

    fn addr_of(&self, index: u32, page: u64) -> u64 {
        let i = self.by_index.partition_point(|r| r.first <= index) - 1;
        let run = self.by_index[i];
        run.start + u64::from(index - run.first) * page
    }

    fn unlink(&mut self, i: u32) {
        let (q, prev, next) = {
            let e = &self.info[i as usize];
            (e.queue.index(), e.prev, e.next)
        };
        if prev == NIL {
            self.heads[q] = next;
        } else {
            self.info[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[q] = prev;
        } else {
            self.info[next as usize].prev = prev;
        }
        self.counts[q] -= 1;
    }

    fn push_tail(&mut self, i: u32, queue: PageQueue) {
        let q = queue.index();
        let tail = self.tails[q];
        {
            let e = &mut self.info[i as usize];
            e.queue = queue;
            e.prev = tail;
            e.next = NIL;
        }
        if tail == NIL {
            self.heads[q] = i;
        } else {
            self.info[tail as usize].next = i;
        }
        self.tails[q] = i;
        self.counts[q] += 1;
    }

    fn move_to(&mut self, i: u32, queue: PageQueue) {
        self.unlink(i);
        self.push_tail(i, queue);
    }
}

/// A snapshot of one frame for the pageout daemon.
#[derive(Debug, Clone)]
pub struct FrameState {
    /// The frame.
    pub frame: PhysAddr,
    /// Its queue.
    pub queue: PageQueue,
    /// The object page it holds, if known (a hint: check it before use).
    pub owner: Option<(Weak<VmObject>, u64)>,
    /// The translations that map it.
    pub mappings: Vec<(SpaceId, VirtAddr)>,
    /// Its software reference bit.
    pub referenced: bool,
    /// Whether it may have been written through a translation since it was allocated.
    pub modified: bool,
}

/// The frames of a VM system (see the [module documentation](self)).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use machvm::frames::{FramePool, PageQueue};
/// use machvm_addr::{PhysAddr, SimPhysMemory};
/// use machvm_vm_object::PageMemory;
///
/// let sim: &'static SimPhysMemory =
///     Box::leak(Box::new(SimPhysMemory::builder().size_bytes(1 << 20).build()?));
/// let pool = Arc::new(FramePool::new(sim, 4096));
/// pool.donate(PhysAddr::new(0x1_0000), 16)?;
/// let frame = pool.alloc_page()?;
/// assert_eq!(pool.queue_of(frame), Some(PageQueue::Active));
/// assert_eq!(pool.counts().free, 15);
/// pool.free_page(frame);
/// assert_eq!(pool.counts().free, 16);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FramePool<M: PhysMapper> {
    mapper: M,
    page: u64,
    table: Mutex<Table>,
}

impl<M: PhysMapper> fmt::Debug for FramePool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramePool")
            .field("page_size", &self.page)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl<M: PhysMapper> FramePool<M> {
    /// An empty pool of `page_size`-byte frames (4096 or 16384) reached through `mapper`.
    pub fn new(mapper: M, page_size: u64) -> Self {
        Self {
            mapper,
            page: page_size,
            table: Mutex::new(Table {
                heads: [NIL; 6],
                tails: [NIL; 6],
                ..Table::default()
            }),
        }
    }

    /// Adds `count` frames starting at `start` to the free queue.
    ///
    /// # Errors
    ///
    /// [`FrameError::Unaligned`], [`FrameError::Overlap`], [`FrameError::Unreachable`] (the
    /// mapper cannot reach the whole range), [`FrameError::TooMany`]. Nothing is added then.
    pub fn donate(&self, start: PhysAddr, count: u32) -> Result<(), FrameError> {
        let s = start.as_u64();
        if count == 0 || s % self.page != 0 {
            return Err(FrameError::Unaligned { start: s });
        }
        let bytes = u64::from(count) * self.page;
        let end = s
            .checked_add(bytes)
            .ok_or(FrameError::Overlap { start: s })?;
        let len = usize::try_from(bytes).map_err(|_| FrameError::Unreachable { start: s })?;
        self.mapper
            .phys_to_ptr(start, len)
            .map_err(|_| FrameError::Unreachable { start: s })?;
        let mut t = self.table.lock();
        if t.runs
            .iter()
            .any(|r| s < r.start + u64::from(r.count) * self.page && r.start < end)
        {
            return Err(FrameError::Overlap { start: s });
        }
        let first = u32::try_from(t.info.len()).map_err(|_| FrameError::TooMany)?;
        if first.checked_add(count).is_none_or(|n| n == NIL) {
            return Err(FrameError::TooMany);
        }
        for _ in 0..count {
            t.info.push(Info {
                queue: PageQueue::Free,
                prev: NIL,
                next: NIL,
                owner: None,
                maps: Maps::None,
                wired_maps: 0,
                referenced: false,
                modified: false,
            });
        }
        for i in first..first + count {
            t.push_tail(i, PageQueue::Free);
        }
        let run = Run {
            start: s,
            first,
            count,
        };
        let at = t.runs.partition_point(|r| r.start < s);
        t.runs.insert(at, run);
        // Indices grow with donation order: `by_index` stays sorted by `first`.
        t.by_index.push(run);
        Ok(())
    }

    /// The page size.
    #[must_use]
    pub fn page_bytes(&self) -> u64 {
        self.page
    }

    /// Pages on each queue.
    #[must_use]
    pub fn counts(&self) -> QueueCounts {
        let t = self.table.lock();
        let c = |q: PageQueue| t.counts[q.index()];
        QueueCounts {
            free: c(PageQueue::Free),
            active: c(PageQueue::Active),
            inactive: c(PageQueue::Inactive),
            speculative: c(PageQueue::Speculative),
            throttled: c(PageQueue::Throttled),
            wired: c(PageQueue::Wired),
        }
    }

    /// The queue `frame` is on, or `None` if the pool does not manage it.
    #[must_use]
    pub fn queue_of(&self, frame: PhysAddr) -> Option<PageQueue> {
        let t = self.table.lock();
        let i = t.index_of(frame.as_u64(), self.page)?;
        Some(t.info[i as usize].queue)
    }

    /// Whether the pool manages `frame`.
    #[must_use]
    pub fn manages(&self, frame: PhysAddr) -> bool {
        self.queue_of(frame).is_some()
    }

    /// Records that `space` maps `frame` at `va` (`wired`: the translation is wired).
    /// Frames the pool does not manage are ignored.
    pub fn mapped(&self, frame: PhysAddr, space: SpaceId, va: VirtAddr, wired: bool) {
        let mut t = self.table.lock();
        let Some(i) = t.index_of(frame.as_u64(), self.page) else {
            return;
        };
        let e = &mut t.info[i as usize];
        e.maps.add(space, va);
        e.referenced = true;
        if wired {
            e.wired_maps += 1;
            if e.wired_maps == 1 && e.queue != PageQueue::Free {
                t.move_to(i, PageQueue::Wired);
            }
        }
    }

    /// Records that `space` no longer maps `frame` at `va`.
    pub fn unmapped(&self, frame: PhysAddr, space: SpaceId, va: VirtAddr, wired: bool) {
        let mut t = self.table.lock();
        let Some(i) = t.index_of(frame.as_u64(), self.page) else {
            return;
        };
        let e = &mut t.info[i as usize];
        e.maps.remove(space, va);
        if wired {
            self::unwire_one(&mut t, i);
        }
    }

    /// Records that a translation of `frame` became wired or pageable.
    pub fn wiring(&self, frame: PhysAddr, wired: bool) {
        let mut t = self.table.lock();
        let Some(i) = t.index_of(frame.as_u64(), self.page) else {
            return;
        };
        if wired {
            let e = &mut t.info[i as usize];
            e.wired_maps += 1;
            if e.wired_maps == 1 && e.queue != PageQueue::Free {
                t.move_to(i, PageQueue::Wired);
            }
        } else {
            unwire_one(&mut t, i);
        }
    }

    /// Up to `max` frames from the head of `queue` (the oldest first), as snapshots.
    #[must_use]
    pub fn oldest(&self, queue: PageQueue, max: usize) -> Vec<FrameState> {
        let t = self.table.lock();
        let mut out = Vec::new();
        let mut i = t.heads[queue.index()];
        while i != NIL && out.len() < max {
            let e = &t.info[i as usize];
            out.push(FrameState {
                frame: PhysAddr::new(t.addr_of(i, self.page)),
                queue: e.queue,
                owner: e.owner.clone(),
                mappings: e.maps.to_vec(),
                referenced: e.referenced,
                modified: e.modified,
            });
            i = e.next;
        }
        out
    }

    /// A snapshot of `frame`, or `None` if the pool does not manage it.
    #[must_use]
    pub fn state(&self, frame: PhysAddr) -> Option<FrameState> {
        let t = self.table.lock();
        let i = t.index_of(frame.as_u64(), self.page)?;
        let e = &t.info[i as usize];
        Some(FrameState {
            frame,
            queue: e.queue,
            owner: e.owner.clone(),
            mappings: e.maps.to_vec(),
            referenced: e.referenced,
            modified: e.modified,
        })
    }

    /// Moves `frame` to the tail of `queue` (not to or from [`PageQueue::Free`], and not
    /// out of [`PageQueue::Wired`] while it has wired translations). Returns whether it moved.
    pub fn requeue(&self, frame: PhysAddr, queue: PageQueue) -> bool {
        let mut t = self.table.lock();
        let Some(i) = t.index_of(frame.as_u64(), self.page) else {
            return false;
        };
        let e = &t.info[i as usize];
        if queue == PageQueue::Free || e.queue == PageQueue::Free || e.wired_maps > 0 {
            return false;
        }
        t.move_to(i, queue);
        true
    }

    /// Records that `frame` may be written through a translation.
    pub fn mark_modified(&self, frame: PhysAddr) {
        let mut t = self.table.lock();
        if let Some(i) = t.index_of(frame.as_u64(), self.page) {
            t.info[i as usize].modified = true;
        }
    }

    /// Sets the software reference bit of `frame` and returns its old value.
    pub fn set_referenced(&self, frame: PhysAddr, referenced: bool) -> bool {
        let mut t = self.table.lock();
        let Some(i) = t.index_of(frame.as_u64(), self.page) else {
            return false;
        };
        core::mem::replace(&mut t.info[i as usize].referenced, referenced)
    }

    /// The address of `frame`'s bytes through the mapper, if it can reach them.
    fn frame_ptr(&self, frame: PhysAddr) -> Option<*mut u8> {
        let len = usize::try_from(self.page).ok()?;
        Some(self.mapper.phys_to_ptr(frame, len).ok()?.as_ptr())
    }
}

fn unwire_one(t: &mut Table, i: u32) {
    let e = &mut t.info[i as usize];
    if e.wired_maps == 0 {
        return;
    }
    e.wired_maps -= 1;
    if e.wired_maps == 0 && e.queue == PageQueue::Wired {
        e.referenced = true;
        t.move_to(i, PageQueue::Active);
    }
}

impl<M: PhysMapper + Send + Sync> PageMemory for FramePool<M> {
    fn page_size(&self) -> u64 {
        self.page
    }

    fn alloc_page(&self) -> Result<PhysAddr, ObjectError> {
        let mut t = self.table.lock();
        let i = t.heads[PageQueue::Free.index()];
        if i == NIL {
            return Err(ObjectError::NoMemory);
        }
        t.move_to(i, PageQueue::Active);
        t.info[i as usize].referenced = true;
        Ok(PhysAddr::new(t.addr_of(i, self.page)))
    }

    fn free_page(&self, frame: PhysAddr) {
        let mut t = self.table.lock();
        let Some(i) = t.index_of(frame.as_u64(), self.page) else {
            return;
        };
        if t.info[i as usize].queue == PageQueue::Free {
            return;
        }
        {
            let e = &mut t.info[i as usize];
            e.owner = None;
            debug_assert!(e.maps.is_empty(), "a freed frame is still mapped");
            e.maps = Maps::None;
            e.wired_maps = 0;
            e.referenced = false;
            e.modified = false;
        }
        t.move_to(i, PageQueue::Free);
    }

    fn with_page(&self, frame: PhysAddr, f: &mut dyn FnMut(&mut [u8])) {
        let (Some(ptr), Ok(len)) = (self.frame_ptr(frame), usize::try_from(self.page)) else {
            return;
        };
        // SAFETY: the mapper made `len` bytes at `ptr` valid for reads and writes; objects
        // call this only for frames they own, under their busy protocol, so nothing else
        // accesses the bytes while `f` runs.
        f(unsafe { core::slice::from_raw_parts_mut(ptr, len) });
    }

    fn copy_page(&self, src: PhysAddr, dst: PhysAddr) {
        if src == dst {
            return;
        }
        let (Some(from), Some(to), Ok(len)) = (
            self.frame_ptr(src),
            self.frame_ptr(dst),
            usize::try_from(self.page),
        ) else {
            return;
        };
        // SAFETY: both ranges are `len` valid bytes (the mapper checked them); two different
        // page-aligned frames of one page each do not overlap; the caller owns both frames
        // for the copy.
        unsafe { core::ptr::copy_nonoverlapping(from, to, len) };
    }

    fn page_owned(&self, frame: PhysAddr, object: &Weak<VmObject>, offset: u64, flags: PageFlags) {
        let mut t = self.table.lock();
        if let Some(i) = t.index_of(frame.as_u64(), self.page) {
            t.info[i as usize].owner = Some((object.clone(), offset));
            // Read ahead and not used yet: the first to go.
            if flags.contains(PageFlags::SPECULATIVE)
                && t.info[i as usize].queue == PageQueue::Active
            {
                t.info[i as usize].referenced = false;
                t.move_to(i, PageQueue::Speculative);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_lists_stay_consistent() {
        let mut t = Table {
            heads: [NIL; 6],
            tails: [NIL; 6],
            ..Table::default()
        };
        for _ in 0..4 {
            t.info.push(Info {
                queue: PageQueue::Free,
                prev: NIL,
                next: NIL,
                owner: None,
                maps: Maps::None,
                wired_maps: 0,
                referenced: false,
                modified: false,
            });
        }
        for i in 0..4 {
            t.push_tail(i, PageQueue::Free);
        }
        t.move_to(2, PageQueue::Active);
        t.move_to(0, PageQueue::Active);
        assert_eq!(t.counts[0], 2);
        assert_eq!(t.counts[1], 2);
        assert_eq!((t.heads[1], t.tails[1]), (2, 0));
        assert_eq!((t.heads[0], t.tails[0]), (1, 3));
        t.move_to(2, PageQueue::Free);
        assert_eq!((t.heads[1], t.tails[1]), (0, 0));
        assert_eq!(t.tails[0], 2);
    }
}
