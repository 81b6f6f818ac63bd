//! The default pager: anonymous memory paged out into the compressor, and from there, a whole
//! segment at a time, into encrypted swap (XNU's compressor pager over `vm_compressor`).

use alloc::sync::Arc;
use core::fmt;

use machvm_addr::VmProt;
use machvm_compressor::codec::{Hybrid, PageCodec};
use machvm_compressor::pool::{HeapMemory, PoolConfig, StoreError, SwapHeader, SwapKey};
use machvm_compressor::{Handle, Pool, PoolError, PoolPressure, PoolStats, SegmentStore};
use machvm_sync::Mutex;
use machvm_sync::atomic::{AtomicBool, AtomicU64, Ordering};
use machvm_vm_object::{
    MemoryObject, ObjectKind, ObjectRef, PageIn, PageOutKind, PageOutOutcome, PagerError,
};

use crate::PagingError;
use crate::slot_map::SlotMap;
use crate::swap::record::record_len;
use crate::swap::{MemorySwapBacking, ReclaimReport, Swap, SwapBacking, SwapStats, SwapUsage};
use crate::words::{to_bytes, to_words, with_words};

/// The compressor pool's segment store: the swap when there is one, else nothing (segments
/// then never leave memory).
pub struct SwapStore<B: SwapBacking>(Option<Arc<Swap<B>>>);

impl<B: SwapBacking> fmt::Debug for SwapStore<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SwapStore").field(&self.0.is_some()).finish()
    }
}

impl<B: SwapBacking> SegmentStore for SwapStore<B> {
    fn write(&self, header: &SwapHeader, image: &[u8]) -> Result<SwapKey, StoreError> {
        match &self.0 {
            Some(swap) => swap.write(header, image),
            None => Err(StoreError::Unsupported),
        }
    }

    fn read(&self, key: SwapKey, out: &mut [u8]) -> Result<SwapHeader, StoreError> {
        match &self.0 {
            Some(swap) => swap.read(key, out),
            None => Err(StoreError::NotFound),
        }
    }

    fn free(&self, key: SwapKey) {
        if let Some(swap) = &self.0 {
            swap.free(key);
        }
    }
}

/// The pool type of a [`DefaultPager`].
pub type DefaultPool<B, C> = Pool<'static, C, HeapMemory, SwapStore<B>>;

#[derive(Debug, Default)]
struct Counters {
    page_outs: AtomicU64,
    page_ins: AtomicU64,
    page_out_errors: AtomicU64,
    page_in_errors: AtomicU64,
    room_swap_outs: AtomicU64,
}

fn bump(c: &AtomicU64) {
    // Statistics only: nothing is ordered by them.
    c.fetch_add(1, Ordering::Relaxed);
}

/// Counters and pool figures of a [`DefaultPager`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct DefaultPagerStats {
    /// The compressor pool's statistics.
    pub pool: PoolStats,
    /// The swap's counters, when there is a swap.
    pub swap: Option<SwapStats>,
    /// Pages stored by page-outs (and clean-ups) since creation.
    pub page_outs: u64,
    /// Pages brought back by page-ins since creation.
    pub page_ins: u64,
    /// Page-outs that failed (the page stayed resident).
    pub page_out_errors: u64,
    /// Page-ins that failed (the page stayed in the compressor or swap; the fault failed).
    pub page_in_errors: u64,
    /// Segments swapped out to make room for a page-out or a swap-in.
    pub room_swap_outs: u64,
}

/// The system-wide default pager: one compressor pool (and optionally one [`Swap`]) shared by
/// the [`CompressorPager`] of every anonymous object.
///
/// A page-out compresses the page into the pool and keeps the handle in the object's slot
/// map; when the pool is at its in-core limit, its oldest sealed segments go to swap whole
/// (and with `proactive_swap`, as soon as the pool nears its limit, as XNU does). A page-in
/// decompresses the page (the pool swaps its segment back in first when it is on disk) and
/// frees the slot. Destroying an object frees its slots.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use machvm_addr::{PageSize, SimPhysMemory, VmProt};
/// use machvm_compressor::codec::{Hybrid, PageSize as CPageSize, VectorPolicy};
/// use machvm_compressor::pool::{PoolConfig, SegmentSize};
/// use machvm_pager::{DefaultPager, MemorySwapBacking};
/// use machvm_vm_object::{FaultKind, SimPageMemory, VmObject};
///
/// let phys = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let memory = Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB)?);
/// let codec = Hybrid::new(CPageSize::Size4K, VectorPolicy::Portable);
/// let pager = DefaultPager::<MemorySwapBacking>::new(PoolConfig::new(SegmentSize::K64), codec, None)?;
///
/// let object = VmObject::anonymous(4 * 4096, memory.clone())?;
/// let page = VmObject::resolve(&object, 0, VmProt::WRITE)?;
/// memory.memory().write_bytes(page.frame, &[0x5a; 4096])?;
///
/// pager.page_out(&object, 0)?; // compressed; the frame is free again
/// assert_eq!(object.page_counts().resident, 0);
/// assert_eq!(pager.stats().pool.pages_stored, 1);
///
/// let back = VmObject::resolve(&object, 0, VmProt::READ)?; // decompressed, slot freed
/// assert_eq!(back.kind, FaultKind::PageIn);
/// let mut bytes = [0u8; 4096];
/// memory.memory().read_bytes(back.frame, &mut bytes)?;
/// assert_eq!(bytes, [0x5a; 4096]);
/// assert_eq!(pager.stats().pool.pages_stored, 0);
/// # Ok(()) }
/// ```
pub struct DefaultPager<B: SwapBacking = MemorySwapBacking, C: PageCodec = Hybrid> {
    pool: DefaultPool<B, C>,
    swap: Option<Arc<Swap<B>>>,
    page_size: u64,
    proactive_swap: AtomicBool,
    counters: Counters,
}

impl<B: SwapBacking, C: PageCodec> fmt::Debug for DefaultPager<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultPager")
            .field("page_size", &self.page_size)
            .field("pool", &self.pool)
            .field("swap", &self.swap)
            .finish_non_exhaustive()
    }
}

impl<B: SwapBacking, C: PageCodec> DefaultPager<B, C> {
    /// A default pager whose pool is sized by `pool` and compresses with `codec` (its page
    /// size is the page size of every object it backs), swapping segments to `swap` when
    /// given. Proactive swapping is on when there is a swap.
    ///
    /// # Errors
    ///
    /// [`PagingError::BadConfig`] when a swap slot cannot hold one of the pool's segments, or
    /// with a swap, when fewer than 2 segments may be in core (the filling segment is never
    /// swapped out, so a second one is needed to make room);
    /// [`PagingError::Pool`] when the pool cannot be built ([`PoolError::BadConfig`],
    /// [`PoolError::OutOfMemory`]).
    pub fn new(
        pool: PoolConfig,
        codec: C,
        swap: Option<Arc<Swap<B>>>,
    ) -> Result<Arc<Self>, PagingError> {
        if let Some(s) = &swap {
            // The filling segment is never swapped out: swapping needs a sealed one beside it.
            if pool.max_in_core_segments < 2 {
                return Err(PagingError::BadConfig {
                    what: "max_in_core_segments (at least 2 with swap)",
                });
            }
            if record_len(pool.segment_size.bytes()) as u64 > s.config().slot_bytes {
                return Err(PagingError::BadConfig {
                    what: "swap slot_bytes (smaller than a sealed segment)",
                });
            }
        }
        let page_size = codec.page_size().bytes() as u64;
        let proactive_swap = swap.is_some();
        let pool = Pool::new(pool, codec, HeapMemory::new(), SwapStore(swap.clone()))?;
        Ok(Arc::new(Self {
            pool,
            swap,
            page_size,
            proactive_swap: AtomicBool::new(proactive_swap),
            counters: Counters::default(),
        }))
    }

    /// Turns proactive swapping on or off (it is on when there is a swap): with it, a
    /// page-out that leaves the pool near its limit ([`PoolPressure::NearingLimit`] or worse)
    /// swaps the oldest sealed segment out at once, instead of waiting for a page-out that
    /// finds the pool full.
    pub fn set_proactive_swap(&self, on: bool) {
        // A policy switch: nothing else is ordered by it.
        self.proactive_swap
            .store(on && self.swap.is_some(), Ordering::Relaxed);
    }

    /// The page size of the objects it backs, in bytes.
    #[must_use]
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The compressor pool.
    #[must_use]
    pub fn pool(&self) -> &DefaultPool<B, C> {
        &self.pool
    }

    /// The swap, if any.
    #[must_use]
    pub fn swap(&self) -> Option<&Arc<Swap<B>>> {
        self.swap.as_ref()
    }

    /// `vm.swapusage`, when there is a swap.
    #[must_use]
    pub fn swap_usage(&self) -> Option<SwapUsage> {
        self.swap.as_ref().map(|s| s.usage())
    }

    /// Counters and the pool's statistics.
    #[must_use]
    pub fn stats(&self) -> DefaultPagerStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DefaultPagerStats {
            pool: self.pool.stats(),
            swap: self.swap.as_ref().map(|s| s.stats()),
            page_outs: load(&self.counters.page_outs),
            page_ins: load(&self.counters.page_ins),
            page_out_errors: load(&self.counters.page_out_errors),
            page_in_errors: load(&self.counters.page_in_errors),
            room_swap_outs: load(&self.counters.room_swap_outs),
        }
    }

    /// Swaps sealed segments out, oldest first, until the pool is below
    /// [`PoolPressure::NearingLimit`]; returns how many went out.
    ///
    /// # Errors
    ///
    /// [`PagingError::Pool`] when a swap-out fails (for example [`PoolError::Store`] with a
    /// full swap); segments swapped out before stay out.
    pub fn relieve_pressure(&self) -> Result<u32, PagingError> {
        let mut n = 0;
        while self.swap.is_some() && self.pool.pressure() >= PoolPressure::NearingLimit {
            match self.pool.swap_out_oldest()? {
                Some(_) => n += 1,
                None => break,
            }
        }
        Ok(n)
    }

    /// Lazily reclaims swap space (see [`Swap::reclaim`]); an empty report without a swap.
    pub fn reclaim_swap(&self) -> ReclaimReport {
        self.swap
            .as_ref()
            .map_or_else(ReclaimReport::default, |s| s.reclaim())
    }

    /// Frees room in the pool for a store (`for_store`) or a swap-in: swaps the oldest sealed
    /// segment out, else merges sparse segments. Returns whether anything was freed.
    fn make_room(&self, for_store: bool) -> bool {
        let st = self.pool.stats();
        let cfg = self.pool.config();
        if for_store && st.pages_stored >= cfg.max_pages as u64 {
            // The handle table is full: only freeing pages helps.
            return false;
        }
        // A store that needs a new segment descriptor is not helped by a swap-out (swapped
        // segments keep theirs); a swap-in only needs in-core room.
        let table_full =
            for_store && st.segments_in_core + st.segments_swapped >= cfg.max_segments as u64;
        if self.swap.is_some() && !table_full {
            if let Ok(Some(_)) = self.pool.swap_out_oldest() {
                bump(&self.counters.room_swap_outs);
                return true;
            }
        }
        self.pool.compact_major().segments > 0
    }

    fn tries(&self) -> usize {
        self.pool.config().max_in_core_segments.saturating_add(2)
    }

    /// Stores one page, making room as needed.
    ///
    /// Concurrent page-outs race for the room one of them makes, and a swap-out can find
    /// no sealed segment while another page-out is swapping the last one: with a swap, a
    /// store that cannot make room retries (a bounded number of times) before it reports
    /// `NoSpace`, so only a swap that is really full (or a full segment table) refuses.
    fn store(&self, words: &[u32]) -> Result<Handle, PagerError> {
        let rounds = self
            .tries()
            .saturating_mul(if self.swap.is_some() { 16 } else { 1 });
        for _ in 0..rounds {
            match self.pool.store(words) {
                Ok(h) => return Ok(h),
                Err(PoolError::Exhausted | PoolError::OutOfMemory) => {
                    if !self.make_room(true) {
                        if self.swap.is_none() {
                            return Err(PagerError::NoSpace);
                        }
                        core::hint::spin_loop();
                    }
                }
                Err(PoolError::Store(StoreError::NoSpace)) => return Err(PagerError::NoSpace),
                Err(_) => return Err(PagerError::Io),
            }
        }
        Err(PagerError::NoSpace)
    }

    /// Loads one page, making room for a swap-in as needed. `Ok(false)` when the handle is no
    /// longer live (the page was discarded meanwhile).
    ///
    /// Like [`store`](Self::store), a swap-in that loses the race for the room it made
    /// retries a bounded number of times.
    fn load(&self, handle: Handle, words: &mut [u32]) -> Result<bool, PagerError> {
        let rounds = self
            .tries()
            .saturating_mul(if self.swap.is_some() { 16 } else { 1 });
        for _ in 0..rounds {
            match self.pool.load(handle, words) {
                Ok(()) => return Ok(true),
                Err(PoolError::InvalidHandle(_)) => return Ok(false),
                Err(PoolError::Exhausted | PoolError::OutOfMemory) => {
                    if !self.make_room(false) {
                        if self.swap.is_none() {
                            return Err(PagerError::NoSpace);
                        }
                        core::hint::spin_loop();
                    }
                }
                // A damaged slot or segment, a failed swap read: the page stays where it is
                // and the fault that needs it fails.
                Err(_) => return Err(PagerError::Io),
            }
        }
        Err(PagerError::NoSpace)
    }

    fn after_store(&self) {
        if self.proactive_swap.load(Ordering::Relaxed)
            && self.pool.pressure() >= PoolPressure::NearingLimit
        {
            // Best effort: a full swap leaves the segment in core.
            let _ = self.pool.swap_out_oldest();
        }
    }
}

impl<B, C> DefaultPager<B, C>
where
    B: SwapBacking + 'static,
    C: PageCodec + Send + Sync + 'static,
{
    /// Makes a [`CompressorPager`] for `object` and gives it to the object (XNU creates the
    /// compressor pager of an anonymous object on its first page-out).
    ///
    /// # Errors
    ///
    /// [`PagingError::WrongObjectKind`] for an external object;
    /// [`PagingError::PageSizeMismatch`] when the object's page size is not the pool's;
    /// [`PagingError::Object`] with [`ObjectError::HasPager`](machvm_vm_object::ObjectError)
    /// when the object has a pager already; [`PagingError::OutOfMemory`].
    pub fn attach(
        self: &Arc<Self>,
        object: &ObjectRef,
    ) -> Result<Arc<CompressorPager<B, C>>, PagingError> {
        if object.kind() != ObjectKind::Internal {
            return Err(PagingError::WrongObjectKind);
        }
        if object.page_size() != self.page_size {
            return Err(PagingError::PageSizeMismatch {
                expected: self.page_size,
                actual: object.page_size(),
            });
        }
        let size = object.size();
        let map = SlotMap::new(size / self.page_size).ok_or(PagingError::OutOfMemory)?;
        let pager = Arc::new(CompressorPager {
            system: self.clone(),
            size,
            map: Mutex::new(map),
            requests: AtomicU64::new(0),
            terminated: AtomicBool::new(false),
        });
        object.set_pager(pager.clone())?;
        Ok(pager)
    }

    /// Pages out the resident page at `offset` of the anonymous `object` (giving the object
    /// its compressor pager first if it has none): `VmObject::page_out` through this pager.
    /// The caller removes the page's mappings first.
    ///
    /// # Errors
    ///
    /// As for [`attach`](Self::attach) (except `HasPager`), and [`PagingError::Object`] for
    /// the page-out itself: [`ObjectError::NotResident`](machvm_vm_object::ObjectError),
    /// `PageBusy`, `PageWired`, or `Pager(NoSpace)` when neither the pool nor the swap can
    /// take the page (it stays resident, unchanged).
    pub fn page_out(
        self: &Arc<Self>,
        object: &ObjectRef,
        offset: u64,
    ) -> Result<PageOutOutcome, PagingError> {
        if object.kind() != ObjectKind::Internal {
            return Err(PagingError::WrongObjectKind);
        }
        if object.pager().is_none() {
            match self.attach(object) {
                Ok(_) | Err(PagingError::Object(machvm_vm_object::ObjectError::HasPager)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(object.page_out(offset)?)
    }
}

/// The compressor pager of one anonymous object: a slot map from the object's pages to
/// compressor handles, over the shared [`DefaultPager`]. Made by [`DefaultPager::attach`].
pub struct CompressorPager<B: SwapBacking = MemorySwapBacking, C: PageCodec = Hybrid> {
    system: Arc<DefaultPager<B, C>>,
    size: u64,
    map: Mutex<SlotMap>,
    requests: AtomicU64,
    terminated: AtomicBool,
}

impl<B: SwapBacking, C: PageCodec> fmt::Debug for CompressorPager<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompressorPager")
            .field("size", &self.size)
            .field("slots_in_use", &self.slots_in_use())
            .finish_non_exhaustive()
    }
}

impl<B: SwapBacking, C: PageCodec> CompressorPager<B, C> {
    /// The size of the object it backs, in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Pages held in the compressor (or swap) for the object now.
    #[must_use]
    pub fn slots_in_use(&self) -> u64 {
        self.map.lock().used()
    }

    /// Slot-map chunks allocated now (0 for objects of up to two pages, whose slots live
    /// inline, and for maps whose pages are all resident).
    #[must_use]
    pub fn slot_map_allocations(&self) -> usize {
        self.map.lock().allocations()
    }

    /// `data_request` calls that found a page to decompress, since creation.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The default pager it uses.
    #[must_use]
    pub fn system(&self) -> &Arc<DefaultPager<B, C>> {
        &self.system
    }

    /// The slot of `offset`, checked against the object and the page length.
    fn index(&self, offset: u64, len: usize) -> Result<u64, PagerError> {
        let ps = self.system.page_size;
        if offset % ps != 0 || offset >= self.size || len as u64 != ps {
            return Err(PagerError::OutOfRange);
        }
        if self.terminated.load(Ordering::Acquire) {
            return Err(PagerError::Terminated);
        }
        Ok(offset / ps)
    }

    fn release_all(&self) {
        let mut handles = alloc::vec::Vec::new();
        self.map.lock().drain(|h| {
            if handles.try_reserve(1).is_ok() {
                handles.push(h);
            }
        });
        for h in handles {
            let _ = self.system.pool.free(h);
        }
    }
}

impl<B, C> MemoryObject for CompressorPager<B, C>
where
    B: SwapBacking + 'static,
    C: PageCodec + Send + Sync + 'static,
{
    fn data_request(
        &self,
        offset: u64,
        page: &mut [u8],
        _access: VmProt,
    ) -> Result<PageIn, PagerError> {
        let index = self.index(offset, page.len())?;
        let Some(handle) = self.map.lock().get(index) else {
            return Ok(PageIn::Absent);
        };
        bump(&self.requests);
        let words = page.len() / 4;
        let loaded = with_words(words, |w| {
            let live = self.system.load(handle, w)?;
            if live {
                to_bytes(w, page);
            }
            Ok(live)
        })
        .unwrap_or(Err(PagerError::NoSpace));
        match loaded {
            Ok(true) => {}
            // Discarded while we looked: the page reads as if never paged out.
            Ok(false) => return Ok(PageIn::Absent),
            Err(e) => {
                bump(&self.system.counters.page_in_errors);
                return Err(e);
            }
        }
        // The resident page is the only copy from now on: free the slot.
        if self.map.lock().take_if(index, handle) {
            let _ = self.system.pool.free(handle);
        }
        bump(&self.system.counters.page_ins);
        Ok(PageIn::Filled)
    }

    fn data_return(&self, offset: u64, page: &[u8], _kind: PageOutKind) -> Result<(), PagerError> {
        let index = self.index(offset, page.len())?;
        let stored = with_words(page.len() / 4, |w| {
            to_words(page, w);
            self.system.store(w)
        })
        .unwrap_or(Err(PagerError::NoSpace));
        let handle = match stored {
            Ok(h) => h,
            Err(e) => {
                bump(&self.system.counters.page_out_errors);
                return Err(e);
            }
        };
        let old = self.map.lock().set(index, handle);
        match old {
            Ok(Some(old)) => {
                let _ = self.system.pool.free(old);
            }
            Ok(None) => {}
            Err(()) => {
                let _ = self.system.pool.free(handle);
                bump(&self.system.counters.page_out_errors);
                return Err(PagerError::NoSpace);
            }
        }
        bump(&self.system.counters.page_outs);
        self.system.after_store();
        Ok(())
    }

    fn has_page(&self, offset: u64) -> bool {
        let ps = self.system.page_size;
        offset % ps == 0 && self.map.lock().get(offset / ps).is_some()
    }

    fn data_discard(&self, offset: u64) {
        let ps = self.system.page_size;
        if offset % ps != 0 {
            return;
        }
        let taken = self.map.lock().take(offset / ps);
        if let Some(h) = taken {
            let _ = self.system.pool.free(h);
        }
    }

    fn terminate(&self) {
        self.terminated.store(true, Ordering::Release);
        self.release_all();
    }
}

impl<B: SwapBacking, C: PageCodec> Drop for CompressorPager<B, C> {
    fn drop(&mut self) {
        self.release_all();
    }
}
