//! The compressed-page pool: segments, handles, compaction and swap (XNU's `c_segment` design).
//!
//! A [`Pool`] compresses pages with a [`PageCodec`] and packs the results into fixed-size
//! segments ([`SegmentSize`]: 64 or 256 KiB, up to [`MAX_SLOTS`] pages each). Every stored page
//! gets a [`Handle`]; single-value pages (a page of one repeated value) take no segment space
//! but an entry in a small refcounted value table, and their handle says so
//! ([`Handle::is_single_value`]).
//!
//! # Examples (needs `alloc`)
//!
//! ```
//! # #[cfg(feature = "alloc")] {
//! use machvm_compressor::codec::{Hybrid, PageSize, VectorPolicy};
//! use machvm_compressor::pool::{HeapMemory, MemoryStore, Pool, PoolConfig, SegmentSize};
//!
//! let config = PoolConfig::new(SegmentSize::K64).max_in_core_segments(8);
//! let codec = Hybrid::new(PageSize::Size4K, VectorPolicy::Portable);
//! let pool = Pool::new(config, codec, HeapMemory::new(), MemoryStore::new()).unwrap();
//!
//! let mut page = [0_u32; 1024];
//! for (i, w) in page.iter_mut().enumerate() {
//!     *w = (i as u32 % 7) * 0x100;
//! }
//! let handle = pool.store(&page).unwrap();
//! let zeros = pool.store(&[0; 1024]).unwrap();
//! assert!(zeros.is_single_value() && !handle.is_single_value());
//!
//! let mut out = [0_u32; 1024];
//! pool.take(handle, &mut out).unwrap();
//! assert_eq!(out, page);
//! assert_eq!(pool.stats().pages_stored, 1);
//! # }
//! ```
//!
//! # Design
//!
//! - **Handles and indirection.** A handle names an entry of the pool's handle table, which
//!   says where the page is now (segment and slot, or value-table entry) and carries a
//!   generation, so stale handles are refused. Each slot records the index of the entry that
//!   owns it (XNU's back-pointer); compaction uses it to rewrite the entry when it moves the
//!   slot, and loads use it as a consistency check. See [`handle`](Handle).
//! - **Segment layout.** Data from the start of the buffer, the slot directory (16-byte
//!   records with offset, length, codec, checksum, owner) from the end; see [`SegmentEntry`].
//!   States follow XNU's: [`SegmentState`].
//! - **Checksums.** Each slot carries the low half of an XXH3-64 of its bytes, checked on
//!   every load before the codec sees the bytes; a swapped-out segment's image carries a full
//!   XXH3-64 kept in core, checked on swap-in. Damage is reported ([`PoolError::SlotCorrupt`],
//!   [`PoolError::SegmentCorrupt`]), never returned as data.
//! - **Locking.** One [`machvm_sync::Mutex`] guards all of the pool's state. A store compresses
//!   and checksums outside it and takes it only to place the bytes; a load copies the slot's
//!   bytes out under it and checks and decodes them outside. Swap I/O and compaction run under
//!   it.
//! - **Memory.** Segment buffers come from a [`SegmentMemory`] (a caller's region with
//!   [`SliceMemory`], the heap with [`HeapMemory`]); metadata tables from [`Tables`] (caller
//!   storage, or the heap).
//! - **Swap.** Whole segments go to a [`SegmentStore`]. Loading a page of a swapped-out segment
//!   swaps the segment in first (which fails with [`PoolError::Exhausted`] when the in-core
//!   limit is reached: swap another segment out and retry).
//! - **Limits.** See [`PoolConfig`] and [`PoolPressure`]. A store that would pass a limit fails
//!   and changes nothing.

mod checksum;
mod compact;
mod config;
mod error;
mod handle;
mod memory;
mod segment;
mod state;
mod stats;
mod store;
mod table;
mod value_table;

pub use checksum::{xxh3_64, xxh64};
pub use config::{PoolConfig, Tables};
pub use error::{PoolError, StoreError};
pub use handle::{Handle, HandleSlot};
#[cfg(feature = "alloc")]
pub use memory::HeapMemory;
pub use memory::{SegmentMemory, SliceMemory};
pub use segment::{MAX_SLOTS, SLOT_RECORD_BYTES, SegmentEntry, SegmentSize, SegmentState};
pub use stats::{CompactionReport, PoolPressure, PoolStats, SegmentInfo};
#[cfg(feature = "alloc")]
pub use store::MemoryStore;
pub use store::{NoStore, SegmentStore, SwapHeader, SwapKey};
pub use value_table::{VALUE_TABLE_ENTRIES, VALUE_TABLE_PROBES};

use core::fmt;

use machvm_sync::Mutex;

use crate::codec::{CodecKind, CompressError, Encoded, PageCodec, SingleValue};
use segment::{KIND_SINGLE, slot_checksum};
use state::{Fetched, Limits, State};

/// Scratch bytes [`Pool::store`] and [`Pool::load`] keep on the stack when the codec's largest
/// output fits (4 KiB pages: a page plus an LZ4 worst case).
pub const STACK_SCRATCH_SMALL: usize = 2 * 4096 + 512;
/// Scratch bytes they keep on the stack otherwise (16 KiB pages); codecs needing more must go
/// through [`Pool::store_with_scratch`] and [`Pool::load_with_scratch`].
pub const STACK_SCRATCH_LARGE: usize = 2 * 16384 + 2048;

/// A pool of compressed pages, shared between CPUs (`&self` everywhere).
///
/// `C` compresses pages, `M` provides segment buffers, `S` takes swapped-out segments
/// ([`NoStore`] for a pool that never swaps).
pub struct Pool<'a, C, M: SegmentMemory, S: SegmentStore = NoStore> {
    codec: C,
    memory: M,
    store: S,
    config: PoolConfig,
    limits: Limits,
    state: Mutex<State<'a, M::Buffer>>,
    /// The pool's own compression scratch for 4 KiB pages, used by whichever `store` finds it
    /// free (the others compress into zeroed stack scratch): zeroing 8.5 KB is a tenth of a
    /// store. Reusing it is sound because a codec's output never depends on what its buffer
    /// held (`tests/codec.rs` checks every codec for that).
    scratch: Mutex<[u8; STACK_SCRATCH_SMALL]>,
}

#[cfg(feature = "alloc")]
impl<C: PageCodec, M: SegmentMemory, S: SegmentStore> Pool<'static, C, M, S> {
    /// Creates a pool whose tables are allocated on the heap
    /// (`config.max_segments` segments, `config.max_pages` pages).
    ///
    /// # Errors
    /// [`PoolError::BadConfig`] for an invalid configuration (see
    /// [`with_tables`](Pool::with_tables)); [`PoolError::OutOfMemory`] when the tables cannot
    /// be allocated.
    pub fn new(config: PoolConfig, codec: C, memory: M, store: S) -> Result<Self, PoolError> {
        let tables =
            Tables::heap(config.max_segments, config.max_pages).ok_or(PoolError::OutOfMemory)?;
        Self::with_tables(config, codec, memory, store, tables)
    }
}

impl<'a, C: PageCodec, M: SegmentMemory, S: SegmentStore> Pool<'a, C, M, S> {
    /// Creates a pool over caller-provided `tables` (no heap needed).
    ///
    /// # Errors
    /// [`PoolError::BadConfig`] when `config.max_slots` is 0 or above [`MAX_SLOTS`],
    /// `config.max_in_core_segments` is 0, a table is empty, or the codec's largest output
    /// (plus a slot record) does not fit a segment or a slot's 16-bit length.
    pub fn with_tables(
        config: PoolConfig,
        codec: C,
        memory: M,
        store: S,
        tables: Tables<'a, M::Buffer>,
    ) -> Result<Self, PoolError> {
        let cap = config.segment_size.bytes();
        let max_out = codec.max_encoded_len();
        if config.max_slots == 0
            || config.max_slots > MAX_SLOTS
            || config.max_in_core_segments == 0
            || tables.segments.is_empty()
            || tables.handles.is_empty()
            || max_out > usize::from(u16::MAX)
            || max_out + SLOT_RECORD_BYTES > cap
        {
            return Err(PoolError::BadConfig);
        }
        let limits = Limits {
            cap,
            max_slots: config.max_slots,
            max_in_core: config.max_in_core_segments,
            page_bytes: codec.page_size().bytes(),
        };
        let state = State::new(tables.segments, handle::HandleTable::new(tables.handles));
        Ok(Self {
            codec,
            memory,
            store,
            config,
            limits,
            state: Mutex::new(state),
            scratch: Mutex::new([0; STACK_SCRATCH_SMALL]),
        })
    }

    /// The configuration the pool was created with.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The pool's codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The pool's segment memory.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// The pool's segment store.
    pub fn segment_store(&self) -> &S {
        &self.store
    }

    // -----------------------------------------------------------------------------------------
    // Store, load, free.

    /// Compresses `page` and stores it, returning its handle.
    ///
    /// Compression runs outside the pool lock: for 4 KiB pages into the pool's own scratch
    /// buffer when no other store is using it, else (and for 16 KiB pages) into a scratch
    /// buffer on the stack of [`STACK_SCRATCH_SMALL`] or [`STACK_SCRATCH_LARGE`] bytes
    /// ([`store_with_scratch`](Self::store_with_scratch) takes the caller's instead, which a
    /// kernel with small stacks should use, with a per-CPU buffer).
    ///
    /// # Errors
    /// [`PoolError::BadPageLength`] when `page` is not one page of the codec's size;
    /// [`PoolError::ScratchTooSmall`] for a codec whose output needs more than
    /// [`STACK_SCRATCH_LARGE`] bytes (use `store_with_scratch`); [`PoolError::Exhausted`] at a limit;
    /// [`PoolError::OutOfMemory`] when the segment memory has no buffer for a new segment;
    /// [`PoolError::Compress`] if the codec fails. Nothing changes on error.
    pub fn store(&self, page: &[u32]) -> Result<Handle, PoolError> {
        if self.codec.max_encoded_len() <= STACK_SCRATCH_SMALL {
            if let Some(mut scratch) = self.scratch.try_lock() {
                return self.store_with_scratch(page, &mut *scratch);
            }
            self.store_small(page)
        } else {
            self.store_large(page)
        }
    }

    #[inline(never)]
    fn store_small(&self, page: &[u32]) -> Result<Handle, PoolError> {
        let mut scratch = [0_u8; STACK_SCRATCH_SMALL];
        self.store_with_scratch(page, &mut scratch)
    }

    #[inline(never)]
    fn store_large(&self, page: &[u32]) -> Result<Handle, PoolError> {
        let mut scratch = [0_u8; STACK_SCRATCH_LARGE];
        self.store_with_scratch(page, &mut scratch)
    }

    /// Like [`store`](Self::store), compressing into `scratch` (at least
    /// [`PageCodec::max_encoded_len`] bytes).
    ///
    /// # Errors
    /// As [`store`](Self::store); [`PoolError::ScratchTooSmall`] when `scratch` is too short.
    pub fn store_with_scratch(
        &self,
        page: &[u32],
        scratch: &mut [u8],
    ) -> Result<Handle, PoolError> {
        let words = self.codec.page_size().words();
        if page.len() != words {
            return Err(PoolError::BadPageLength {
                expected: words,
                actual: page.len(),
            });
        }
        let need = self.codec.max_encoded_len();
        if scratch.len() < need {
            return Err(PoolError::ScratchTooSmall {
                needed: need,
                actual: scratch.len(),
            });
        }
        let encoded = self.codec.compress(page, scratch).map_err(|e| match e {
            CompressError::BadPageLength { expected, actual } => {
                PoolError::BadPageLength { expected, actual }
            }
            e => PoolError::Compress(e),
        })?;
        match encoded {
            Encoded::SingleValue(SingleValue { value }) => {
                self.state
                    .lock()
                    .place_single(&self.limits, &self.memory, value)
            }
            Encoded::Stored { kind, len } => {
                let bytes = scratch.get(..len).ok_or(PoolError::Compress(
                    CompressError::OutputTooSmall {
                        needed: len,
                        actual: scratch.len(),
                    },
                ))?;
                if len == 0 || len > need {
                    return Err(PoolError::Compress(CompressError::OutputTooSmall {
                        needed: len,
                        actual: need,
                    }));
                }
                let checksum = slot_checksum(kind as u8, bytes);
                self.state
                    .lock()
                    .place(&self.limits, &self.memory, bytes, kind as u8, checksum)
            }
            // A future kind of output this pool does not know how to keep.
            #[allow(unreachable_patterns)]
            _ => Err(PoolError::BadConfig),
        }
    }

    /// Decompresses `handle`'s page into `out` (one page of words). The page stays stored.
    ///
    /// A page of a swapped-out segment swaps the segment in first.
    ///
    /// # Errors
    /// [`PoolError::BadPageLength`] when `out` is not one page; [`PoolError::InvalidHandle`]
    /// for a handle that is not live; [`PoolError::SlotCorrupt`] when the slot fails its
    /// checksum or consistency checks; [`PoolError::Decode`] when the codec cannot decode it;
    /// when a swap-in is needed: [`PoolError::Exhausted`] (in-core limit),
    /// [`PoolError::OutOfMemory`], [`PoolError::Store`] or [`PoolError::SegmentCorrupt`].
    /// `out`'s contents are unspecified after an error, but never hold another page's data.
    pub fn load(&self, handle: Handle, out: &mut [u32]) -> Result<(), PoolError> {
        if self.codec.max_encoded_len() <= STACK_SCRATCH_SMALL {
            let mut scratch = [0_u8; STACK_SCRATCH_SMALL];
            self.load_with_scratch(handle, out, &mut scratch)
        } else {
            self.load_large(handle, out)
        }
    }

    #[inline(never)]
    fn load_large(&self, handle: Handle, out: &mut [u32]) -> Result<(), PoolError> {
        let mut scratch = [0_u8; STACK_SCRATCH_LARGE];
        self.load_with_scratch(handle, out, &mut scratch)
    }

    /// Like [`load`](Self::load), copying the compressed bytes into `scratch` (at least
    /// [`PageCodec::max_encoded_len`] bytes) before decoding them outside the lock.
    ///
    /// # Errors
    /// As [`load`](Self::load); [`PoolError::ScratchTooSmall`] when `scratch` cannot hold the
    /// slot.
    pub fn load_with_scratch(
        &self,
        handle: Handle,
        out: &mut [u32],
        scratch: &mut [u8],
    ) -> Result<(), PoolError> {
        let words = self.codec.page_size().words();
        if out.len() != words {
            return Err(PoolError::BadPageLength {
                expected: words,
                actual: out.len(),
            });
        }
        let fetched =
            self.state
                .lock()
                .fetch(&self.limits, &self.memory, &self.store, handle, scratch)?;
        self.decode(handle, fetched, scratch, out)
    }

    fn decode(
        &self,
        handle: Handle,
        fetched: Fetched,
        scratch: &[u8],
        out: &mut [u32],
    ) -> Result<(), PoolError> {
        let (kind, len, checksum) = match fetched {
            Fetched::Value(value) => {
                SingleValue { value }.fill(out);
                return Ok(());
            }
            Fetched::Slot {
                kind,
                len,
                checksum,
            } => (kind, len, checksum),
        };
        let bytes = scratch.get(..len).ok_or(PoolError::SlotCorrupt(handle))?;
        if slot_checksum(kind, bytes) != checksum {
            self.state.lock().counters.corruptions += 1;
            return Err(PoolError::SlotCorrupt(handle));
        }
        if kind == KIND_SINGLE {
            let v: [u8; 8] = bytes
                .try_into()
                .map_err(|_| PoolError::SlotCorrupt(handle))?;
            SingleValue {
                value: u64::from_le_bytes(v),
            }
            .fill(out);
            return Ok(());
        }
        let kind = CodecKind::from_u8(kind).ok_or(PoolError::SlotCorrupt(handle))?;
        self.codec
            .decompress(kind, bytes, out)
            .map_err(PoolError::Decode)
    }

    /// Frees `handle`'s page. A segment left without pages is released (its buffer goes back
    /// to the memory, or its record to the store); the filling segment is kept.
    ///
    /// # Errors
    /// [`PoolError::InvalidHandle`] for a handle that is not live (nothing changes).
    pub fn free(&self, handle: Handle) -> Result<(), PoolError> {
        self.state.lock().free(&self.memory, &self.store, handle)
    }

    /// Loads `handle`'s page into `out` and frees it. If the load fails the page stays stored.
    ///
    /// # Errors
    /// As [`load`](Self::load); [`PoolError::InvalidHandle`] also when another thread freed
    /// the handle between the load and the free (`out` then holds the page).
    pub fn take(&self, handle: Handle, out: &mut [u32]) -> Result<(), PoolError> {
        self.load(handle, out)?;
        self.free(handle)
    }

    // -----------------------------------------------------------------------------------------
    // Compaction and swap.

    /// Minor compaction: slides the live slots of every in-core segment whose holes reach a
    /// quarter of its size down over the holes. Handles are unaffected.
    pub fn compact_minor(&self) -> CompactionReport {
        self.state.lock().compact_minor(&self.limits)
    }

    /// Major compaction: moves the pages of sparse sealed segments (at most half full) into
    /// other sealed segments with room and releases the emptied segments' buffers. Handles
    /// keep working: the handle table follows every moved page.
    pub fn compact_major(&self) -> CompactionReport {
        self.state.lock().compact_major(&self.limits, &self.memory)
    }

    /// Writes sealed segment `segment` to the store and releases its buffer. Its holes are
    /// closed first (minor compaction), so the image holds only live pages.
    ///
    /// # Errors
    /// [`PoolError::BadSegment`] unless `segment` is sealed and in core (the filling segment
    /// is never swapped out); [`PoolError::Store`] when the store refuses the write (the
    /// segment stays in core); [`PoolError::SegmentCorrupt`] when its directory is
    /// inconsistent.
    pub fn swap_out(&self, segment: u32) -> Result<(), PoolError> {
        self.state
            .lock()
            .swap_out(&self.limits, &self.memory, &self.store, segment)
    }

    /// Swaps out the oldest sealed in-core segment; returns its number, or `None` when no
    /// segment can be swapped out.
    ///
    /// # Errors
    /// As [`swap_out`](Self::swap_out).
    pub fn swap_out_oldest(&self) -> Result<Option<u32>, PoolError> {
        let mut st = self.state.lock();
        let Some(segment) = st.oldest_sealed() else {
            return Ok(None);
        };
        st.swap_out(&self.limits, &self.memory, &self.store, segment)?;
        Ok(Some(segment))
    }

    /// Reads swapped-out segment `segment` back into core (a no-op for an in-core segment).
    ///
    /// # Errors
    /// [`PoolError::BadSegment`] when `segment` is not in use; [`PoolError::Exhausted`] at
    /// the in-core limit; [`PoolError::OutOfMemory`]; [`PoolError::Store`] when the store
    /// cannot read it; [`PoolError::SegmentCorrupt`] when what it returns fails the checks.
    /// The segment stays swapped out on error.
    pub fn swap_in(&self, segment: u32) -> Result<(), PoolError> {
        self.state
            .lock()
            .swap_in(&self.limits, &self.memory, &self.store, segment)
    }

    // -----------------------------------------------------------------------------------------
    // Reporting.

    /// A snapshot of the pool's statistics.
    pub fn stats(&self) -> PoolStats {
        self.state.lock().stats(&self.limits)
    }

    /// How close the pool is to its limits.
    pub fn pressure(&self) -> PoolPressure {
        self.state.lock().pressure(&self.limits)
    }

    /// The number of live handles sharing `handle`'s single-value table entry.
    ///
    /// # Errors
    /// [`PoolError::InvalidHandle`] for a handle that is not live or whose page is not in the
    /// value table (single-value pages that did not fit the table live in a segment).
    pub fn single_value_refs(&self, handle: Handle) -> Result<u32, PoolError> {
        self.state.lock().single_value_refs(handle)
    }

    /// The segment currently taking new pages, if any.
    pub fn filling_segment(&self) -> Option<u32> {
        self.state.lock().filling
    }

    /// A description of segment `segment`, or `None` if it is not in use.
    pub fn segment(&self, segment: u32) -> Option<SegmentInfo> {
        self.state.lock().info(segment)
    }

    /// Calls `f` with every segment in use, in segment-number order, under the pool lock (`f`
    /// must not call back into the pool).
    pub fn for_each_segment(&self, mut f: impl FnMut(SegmentInfo)) {
        let st = self.state.lock();
        for i in 0..st.segments.len() {
            if let Some(info) = st.info(i as u32) {
                f(info);
            }
        }
    }
}

impl<C, M: SegmentMemory, S: SegmentStore> Drop for Pool<'_, C, M, S> {
    fn drop(&mut self) {
        self.state.get_mut().release_all(&self.memory, &self.store);
    }
}

impl<C, M: SegmentMemory, S: SegmentStore> fmt::Debug for Pool<'_, C, M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
