//! Dynamic, encrypted swap: swap files created on demand, grown as pressure requires, drained
//! and deleted lazily when usage falls; whole compressor segments sealed with AES-256-XTS and a
//! checksum (XNU's `vm_compressor_backing_store` design).
//!
//! A [`Swap`] implements the compressor's [`SegmentStore`]: the pool hands it a segment image,
//! it picks a slot (one bit of a file's bitmap), seals the image into a record (see
//! [`record`](self) layout below) and writes it whole; reads open and check the record before
//! a byte of it reaches the pool. Keys the pool keeps name an entry of the swap's own table, so
//! reclaim can move records between files without the pool noticing.
//!
//! # Examples
//!
//! ```
//! use machvm_compressor::pool::{SegmentSize, SegmentStore, SwapHeader};
//! use machvm_pager::{FixedKey, MemorySwapBacking, Swap, SwapConfig};
//!
//! let config = SwapConfig::new(SegmentSize::K64).file_slots(2, 8).max_files(4);
//! // Tests use a fixed key; a kernel passes its entropy source (`KeySource`).
//! let mut keys = FixedKey::new(core::array::from_fn(|i| i as u8));
//! let swap = Swap::new(MemorySwapBacking::new(), config, &mut keys).unwrap();
//! assert_eq!(swap.usage().total_bytes, 0); // no file until the first write
//!
//! let image = [0xab_u8; 1000];
//! let header = SwapHeader { version: 1, segment: 0, image_len: 1000, data_len: 1000, slots: 0, checksum: 0 };
//! let key = swap.write(&header, &image).unwrap();
//! assert_eq!(swap.file_indices(), [0]); // swapfile0 appeared
//!
//! let mut back = [0_u8; 1000];
//! assert_eq!(swap.read(key, &mut back).unwrap(), header);
//! assert_eq!(back, image);
//! swap.free(key);
//! swap.reclaim(); // usage fell to zero: swapfile0 is deleted
//! assert!(swap.file_indices().is_empty());
//! ```

mod backing;
mod bitmap;
#[cfg(feature = "std")]
mod fs;
pub(crate) mod record;
mod usage;

pub use backing::{Faults, MemorySwapBacking, SwapBacking};
#[cfg(feature = "std")]
pub use fs::FsSwapBacking;
pub use record::{RECORD_PREFIX_BYTES, SECTOR_BYTES};
pub use usage::SwapUsage;

use alloc::vec::Vec;
use core::fmt;

use machvm_compressor::pool::{SegmentSize, SegmentStore, StoreError, SwapHeader, SwapKey};
use machvm_sync::Mutex;

use crate::key::KeySource;
use crate::{BackingError, PagingError};
use bitmap::Bitmap;
use record::{Cipher, Meta, Place, record_len};

/// How a [`Swap`] sizes its files.
///
/// Files hold whole slots of `slot_bytes`; a new file gets `file_min_slots` slots and grows
/// (doubling) up to `file_max_slots`; at most `max_files` files exist at once, so the swap's
/// limit is `max_files × file_max_slots × slot_bytes` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwapConfig {
    /// Bytes of one slot: a whole sealed segment (segment size plus the record prefix,
    /// rounded up to [`SECTOR_BYTES`]). A multiple of [`SECTOR_BYTES`].
    pub slot_bytes: u64,
    /// Slots of a newly created file (at least 1).
    pub file_min_slots: u32,
    /// Slots a file may grow to (at least `file_min_slots`).
    pub file_max_slots: u32,
    /// Most files at once (at least 1).
    pub max_files: u32,
    /// Free slots reclaim leaves in the remaining files after draining one (hysteresis, so
    /// the next writes do not create the file again at once).
    pub reclaim_slack_slots: u32,
}

impl SwapConfig {
    /// A configuration for segments of `segment`: slots hold one sealed segment, files of 16
    /// to 256 slots (1 to 16 MiB for 64 KiB segments), at most 16 files, a reclaim slack of
    /// 8 slots.
    #[must_use]
    pub const fn new(segment: SegmentSize) -> Self {
        Self {
            slot_bytes: record_len(segment.bytes()) as u64,
            file_min_slots: 16,
            file_max_slots: 256,
            max_files: 16,
            reclaim_slack_slots: 8,
        }
    }

    /// Sets [`file_min_slots`](Self::file_min_slots) and
    /// [`file_max_slots`](Self::file_max_slots).
    #[must_use]
    pub const fn file_slots(mut self, min: u32, max: u32) -> Self {
        self.file_min_slots = min;
        self.file_max_slots = max;
        self
    }

    /// Sets [`max_files`](Self::max_files).
    #[must_use]
    pub const fn max_files(mut self, files: u32) -> Self {
        self.max_files = files;
        self
    }

    /// Sets [`reclaim_slack_slots`](Self::reclaim_slack_slots).
    #[must_use]
    pub const fn reclaim_slack_slots(mut self, slots: u32) -> Self {
        self.reclaim_slack_slots = slots;
        self
    }

    /// The largest segment image a slot holds, in bytes.
    #[must_use]
    pub const fn max_image_bytes(&self) -> u64 {
        self.slot_bytes.saturating_sub(RECORD_PREFIX_BYTES as u64)
    }

    /// The swap's size limit in bytes (every file at its largest).
    #[must_use]
    pub const fn limit_bytes(&self) -> u64 {
        (self.max_files as u64)
            .saturating_mul(self.file_max_slots as u64)
            .saturating_mul(self.slot_bytes)
    }

    fn check(&self) -> Result<(), PagingError> {
        let bad = |what| Err(PagingError::BadConfig { what });
        if self.slot_bytes < 2 * SECTOR_BYTES as u64 || self.slot_bytes % SECTOR_BYTES as u64 != 0 {
            return bad("slot_bytes");
        }
        if self.slot_bytes > u64::from(u32::MAX) {
            return bad("slot_bytes");
        }
        if self.file_min_slots == 0 || self.file_max_slots < self.file_min_slots {
            return bad("file_min_slots/file_max_slots");
        }
        if self.max_files == 0 {
            return bad("max_files");
        }
        if u64::from(self.file_max_slots)
            .checked_mul(self.slot_bytes)
            .is_none()
        {
            return bad("file_max_slots");
        }
        Ok(())
    }
}

/// Counters of a [`Swap`] since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwapStats {
    /// Files now.
    pub files: u32,
    /// Most files at once.
    pub peak_files: u32,
    /// Files created.
    pub files_created: u64,
    /// Times a file grew.
    pub files_grown: u64,
    /// Files deleted by reclaim.
    pub files_deleted: u64,
    /// Records (swapped-out segments) stored now.
    pub records: u64,
    /// Records written.
    pub writes: u64,
    /// Records read.
    pub reads: u64,
    /// Records freed.
    pub frees: u64,
    /// Records moved to another file by reclaim.
    pub records_moved: u64,
    /// Record bytes written (moves included).
    pub bytes_written: u64,
    /// Record bytes read (moves included).
    pub bytes_read: u64,
    /// Records that failed their integrity check (tampering or a bad read), never returned.
    pub integrity_failures: u64,
    /// Backing operations that failed.
    pub io_errors: u64,
}

/// What one [`Swap::reclaim`] pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReclaimReport {
    /// Files drained and deleted.
    pub files_deleted: u32,
    /// Records moved out of drained files.
    pub records_moved: u32,
    /// Records that could not be read back or failed their integrity check while draining
    /// (their file is kept, and the record stays where it was).
    pub unreadable_records: u32,
    /// Backing writes or deletes that failed (the pass stopped there; nothing was lost).
    pub io_errors: u32,
}

/// Where a stored record is (for reports and for tests that damage records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordInfo {
    /// The key the pool holds.
    pub key: SwapKey,
    /// The swap file index (`swapfile<file>`).
    pub file: u32,
    /// The slot in the file.
    pub slot: u32,
    /// Byte offset of the record in the file.
    pub offset_bytes: u64,
    /// Bytes of the record (whole sectors).
    pub len_bytes: u64,
}

const NO_OWNER: u32 = u32::MAX;

#[derive(Debug)]
struct SwapFile {
    index: u32,
    slots: u32,
    used: u32,
    bitmap: Bitmap,
    /// The entry whose record occupies each slot (XNU's back pointers), `NO_OWNER` if free.
    owners: Vec<u32>,
}

impl SwapFile {
    fn new(index: u32, slots: u32) -> Option<Self> {
        let mut owners = Vec::new();
        owners.try_reserve_exact(slots as usize).ok()?;
        owners.resize(slots as usize, NO_OWNER);
        Some(Self {
            index,
            slots,
            used: 0,
            bitmap: Bitmap::new(slots)?,
            owners,
        })
    }

    fn free_slots(&self) -> u32 {
        self.slots - self.used
    }

    fn take(&mut self, slot: u32, owner: u32) {
        if !self.bitmap.get(slot) {
            self.bitmap.set(slot, true);
            self.used += 1;
        }
        if let Some(o) = self.owners.get_mut(slot as usize) {
            *o = owner;
        }
    }

    fn release(&mut self, slot: u32) {
        if self.bitmap.get(slot) {
            self.bitmap.set(slot, false);
            self.used -= 1;
        }
        if let Some(o) = self.owners.get_mut(slot as usize) {
            *o = NO_OWNER;
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Live {
    file: u32,
    slot: u32,
    image_len: u32,
    seq: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct EntrySlot {
    generation: u32,
    live: Option<Live>,
}

struct State {
    /// Files in index order.
    files: Vec<SwapFile>,
    entries: Vec<EntrySlot>,
    free_entries: Vec<u32>,
    next_seq: u64,
    /// One slot's worth of bytes for sealing and opening records.
    scratch: Vec<u8>,
    stats: SwapStats,
}

impl State {
    fn file(&self, index: u32) -> Option<&SwapFile> {
        self.files.iter().find(|f| f.index == index)
    }

    fn file_mut(&mut self, index: u32) -> Option<&mut SwapFile> {
        self.files.iter_mut().find(|f| f.index == index)
    }

    fn live(&self, key: SwapKey) -> Option<(u32, Live)> {
        let (index, generation) = split_key(key)?;
        let e = self.entries.get(index as usize)?;
        (e.generation == generation)
            .then_some(e.live)
            .flatten()
            .map(|l| (index, l))
    }

    /// A free slot in the fullest file that has one (packing records keeps other files
    /// emptying, which is what reclaim needs), skipping file `except`.
    fn free_slot(&self, except: Option<u32>) -> Option<(u32, u32)> {
        self.files
            .iter()
            .filter(|f| Some(f.index) != except && f.used < f.slots)
            .max_by(|a, b| a.used.cmp(&b.used).then(b.index.cmp(&a.index)))
            .and_then(|f| f.bitmap.first_clear().map(|s| (f.index, s)))
    }
}

fn key_of(index: u32, generation: u32) -> SwapKey {
    SwapKey((u64::from(generation) << 32) | (u64::from(index) + 1))
}

fn split_key(key: SwapKey) -> Option<(u32, u32)> {
    let low = (key.0 & 0xffff_ffff) as u32;
    Some((low.checked_sub(1)?, (key.0 >> 32) as u32))
}

/// Encrypted swap over a [`SwapBacking`]: the compressor pool's [`SegmentStore`].
///
/// Files `swapfile0`, `swapfile1`, … are created when a write finds no free slot, grown
/// (doubling, up to [`SwapConfig::file_max_slots`]) before new ones are made, and deleted by
/// [`reclaim`](Self::reclaim) once usage has fallen: the emptiest file is drained into the
/// others and deleted. Every record is sealed: AES-256-XTS with a per-sector tweak derived from
/// its slot (unless made with [`new_unencrypted`](Self::new_unencrypted)) over a checksum and a
/// write sequence number, so a damaged, tampered, misplaced or replayed record is reported as
/// an error and never returned as data.
///
/// All state sits behind one lock, held across backing I/O (the pool already calls its store
/// under its own lock).
pub struct Swap<B: SwapBacking> {
    backing: B,
    config: SwapConfig,
    cipher: Option<Cipher>,
    state: Mutex<State>,
}

impl<B: SwapBacking> fmt::Debug for Swap<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Swap")
            .field("config", &self.config)
            .field("encrypted", &self.cipher.is_some())
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

impl<B: SwapBacking> Swap<B> {
    /// An encrypted swap over `backing`, keyed with 64 bytes from `keys` (drawn once, never
    /// stored). No file exists until the first write.
    ///
    /// # Errors
    ///
    /// [`PagingError::BadConfig`] for an invalid configuration; [`PagingError::Entropy`] when
    /// `keys` fails; [`PagingError::WeakKey`] when its two halves are equal;
    /// [`PagingError::OutOfMemory`] when the scratch buffer cannot be allocated.
    pub fn new(
        backing: B,
        config: SwapConfig,
        keys: &mut dyn KeySource,
    ) -> Result<Self, PagingError> {
        config.check()?;
        let cipher = Cipher::from_source(keys)?;
        Self::build(backing, config, Some(cipher))
    }

    /// A swap that writes records in the clear (still checksummed). For measurements and
    /// debugging; swap contents are readable by anyone with the device.
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new), without the key errors.
    pub fn new_unencrypted(backing: B, config: SwapConfig) -> Result<Self, PagingError> {
        config.check()?;
        Self::build(backing, config, None)
    }

    fn build(backing: B, config: SwapConfig, cipher: Option<Cipher>) -> Result<Self, PagingError> {
        let mut scratch = Vec::new();
        let len = usize::try_from(config.slot_bytes).map_err(|_| PagingError::OutOfMemory)?;
        scratch
            .try_reserve_exact(len)
            .map_err(|_| PagingError::OutOfMemory)?;
        scratch.resize(len, 0);
        Ok(Self {
            backing,
            config,
            cipher,
            state: Mutex::new(State {
                files: Vec::new(),
                entries: Vec::new(),
                free_entries: Vec::new(),
                next_seq: 1,
                scratch,
                stats: SwapStats::default(),
            }),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SwapConfig {
        &self.config
    }

    /// The backing.
    #[must_use]
    pub fn backing(&self) -> &B {
        &self.backing
    }

    /// Returns whether records are encrypted.
    #[must_use]
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// `vm.swapusage`: total, used and free bytes of the swap files, and whether they are
    /// encrypted.
    #[must_use]
    pub fn usage(&self) -> SwapUsage {
        let st = self.state.lock();
        let (slots, used) = st.files.iter().fold((0u64, 0u64), |(s, u), f| {
            (s + u64::from(f.slots), u + u64::from(f.used))
        });
        let total = slots.saturating_mul(self.config.slot_bytes);
        let used = used.saturating_mul(self.config.slot_bytes);
        SwapUsage {
            total_bytes: total,
            used_bytes: used,
            free_bytes: total - used,
            encrypted: self.cipher.is_some(),
        }
    }

    /// Counters since creation.
    #[must_use]
    pub fn stats(&self) -> SwapStats {
        let st = self.state.lock();
        let mut s = st.stats;
        s.files = st.files.len() as u32;
        s
    }

    /// The indices of the swap files that exist now, in order.
    #[must_use]
    pub fn file_indices(&self) -> Vec<u32> {
        self.state.lock().files.iter().map(|f| f.index).collect()
    }

    /// Where each stored record is, in key order.
    #[must_use]
    pub fn records(&self) -> Vec<RecordInfo> {
        let st = self.state.lock();
        st.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let l = e.live?;
                Some(RecordInfo {
                    key: key_of(i as u32, e.generation),
                    file: l.file,
                    slot: l.slot,
                    offset_bytes: u64::from(l.slot) * self.config.slot_bytes,
                    len_bytes: record_len(l.image_len as usize) as u64,
                })
            })
            .collect()
    }

    fn place(&self, file: u32, slot: u32) -> Place {
        Place {
            file,
            slot,
            sectors_per_slot: self.config.slot_bytes / SECTOR_BYTES as u64,
        }
    }

    /// Makes room for one more record: grows a file, else creates one.
    fn add_space(&self, st: &mut State) -> Result<(), StoreError> {
        let grow = st
            .files
            .iter()
            .filter(|f| f.slots < self.config.file_max_slots)
            .map(|f| (f.index, f.slots))
            .next();
        if let Some((index, slots)) = grow {
            let new = slots.saturating_mul(2).min(self.config.file_max_slots);
            let bytes = u64::from(new) * self.config.slot_bytes;
            // Reserve the bigger tables first: after the file grew nothing may fail.
            let reserved = st.file_mut(index).is_some_and(|f| {
                f.bitmap.reserve(new).is_some()
                    && f.owners.try_reserve_exact((new - slots) as usize).is_ok()
            });
            if !reserved {
                return Err(StoreError::NoSpace);
            }
            match self.backing.grow(index, bytes) {
                Ok(()) => {
                    if let Some(f) = st.file_mut(index) {
                        let _ = f.bitmap.grow(new);
                        f.owners.resize(new as usize, NO_OWNER);
                        f.slots = new;
                    }
                    st.stats.files_grown += 1;
                    return Ok(());
                }
                Err(BackingError::NoSpace) => {}
                Err(_) => {
                    st.stats.io_errors += 1;
                    return Err(StoreError::Io);
                }
            }
        }
        if st.files.len() as u32 >= self.config.max_files {
            return Err(StoreError::NoSpace);
        }
        let index = (0..).find(|i| st.file(*i).is_none()).unwrap_or(0);
        let slots = self.config.file_min_slots;
        let file = SwapFile::new(index, slots).ok_or(StoreError::NoSpace)?;
        st.files.try_reserve(1).map_err(|_| StoreError::NoSpace)?;
        match self
            .backing
            .create(index, u64::from(slots) * self.config.slot_bytes)
        {
            Ok(()) => {}
            Err(BackingError::NoSpace) => return Err(StoreError::NoSpace),
            Err(_) => {
                st.stats.io_errors += 1;
                return Err(StoreError::Io);
            }
        }
        let at = st.files.partition_point(|f| f.index < index);
        st.files.insert(at, file);
        st.stats.files_created += 1;
        st.stats.peak_files = st.stats.peak_files.max(st.files.len() as u32);
        Ok(())
    }

    /// Seals the image at `scratch[RECORD_PREFIX_BYTES..]` for `place` and writes it.
    fn write_record(
        &self,
        st: &mut State,
        meta: &Meta,
        place: Place,
        len: usize,
    ) -> Result<(), BackingError> {
        let record = st.scratch.get_mut(..len).ok_or(BackingError::Io)?;
        record::seal(record, meta, place, self.cipher.as_ref());
        let offset = u64::from(place.slot) * self.config.slot_bytes;
        match self.backing.write(place.file, offset, record) {
            Ok(()) => {
                st.stats.bytes_written += len as u64;
                Ok(())
            }
            Err(e) => {
                st.stats.io_errors += 1;
                Err(e)
            }
        }
    }

    /// Reads and opens the record of `live` into `scratch`; the image is at
    /// `scratch[RECORD_PREFIX_BYTES..]`.
    fn read_record(&self, st: &mut State, entry: u32, live: Live) -> Result<Meta, PagingError> {
        let len = record_len(live.image_len as usize);
        let place = self.place(live.file, live.slot);
        let record = st.scratch.get_mut(..len).ok_or(PagingError::OutOfMemory)?;
        let offset = u64::from(live.slot) * self.config.slot_bytes;
        if let Err(e) = self.backing.read(live.file, offset, record) {
            st.stats.io_errors += 1;
            return Err(e.into());
        }
        st.stats.bytes_read += len as u64;
        let meta = record::open(record, live.seq, place, self.cipher.as_ref())
            .filter(|m| m.entry == entry && m.header.image_len == live.image_len);
        meta.ok_or_else(|| {
            st.stats.integrity_failures += 1;
            PagingError::Corrupt {
                file: live.file,
                slot: live.slot,
            }
        })
    }

    /// Drains the emptiest file into the others and deletes it, as long as usage allows
    /// (lazy reclaim, XNU's swap-file GC). A file is drained only when the other files can
    /// take its records and keep [`SwapConfig::reclaim_slack_slots`] free slots; an empty file
    /// is deleted when the others keep that slack or nothing is stored at all.
    ///
    /// Records are read back, checked, resealed for their new slot and written before the old
    /// slot is released; a record that cannot be read or fails its check stays where it was
    /// and keeps its file. Never fails: problems are counted in the report.
    pub fn reclaim(&self) -> ReclaimReport {
        let mut report = ReclaimReport::default();
        let mut st = self.state.lock();
        loop {
            let total_used: u64 = st.files.iter().map(|f| u64::from(f.used)).sum();
            let Some(victim) = st
                .files
                .iter()
                .min_by(|a, b| a.used.cmp(&b.used).then(b.index.cmp(&a.index)))
                .map(|f| (f.index, f.used))
            else {
                break;
            };
            let (index, used) = victim;
            let others_free: u64 = st
                .files
                .iter()
                .filter(|f| f.index != index)
                .map(|f| u64::from(f.free_slots()))
                .sum();
            let slack = u64::from(self.config.reclaim_slack_slots);
            let go = if used == 0 {
                total_used == 0 || others_free >= slack
            } else {
                others_free >= u64::from(used) + slack
            };
            if !go {
                break;
            }
            if !self.drain(&mut st, index, &mut report) {
                break;
            }
            match self.backing.delete(index) {
                Ok(()) => {
                    st.files.retain(|f| f.index != index);
                    st.stats.files_deleted += 1;
                    report.files_deleted += 1;
                }
                Err(_) => {
                    st.stats.io_errors += 1;
                    report.io_errors += 1;
                    break;
                }
            }
        }
        report
    }

    /// Moves every record out of file `index`; false when one could not be moved.
    fn drain(&self, st: &mut State, index: u32, report: &mut ReclaimReport) -> bool {
        let slots: Vec<(u32, u32)> = match st.file(index) {
            Some(f) => f
                .bitmap
                .ones()
                .filter_map(|s| f.owners.get(s as usize).map(|o| (s, *o)))
                .collect(),
            None => return false,
        };
        for (slot, owner) in slots {
            let Some(live) = st
                .entries
                .get(owner as usize)
                .and_then(|e| e.live)
                .filter(|l| l.file == index && l.slot == slot)
            else {
                // A slot without a live owner: nothing to keep.
                if let Some(f) = st.file_mut(index) {
                    f.release(slot);
                }
                continue;
            };
            let Ok(meta) = self.read_record(st, owner, live) else {
                report.unreadable_records += 1;
                return false;
            };
            let Some((to_file, to_slot)) = st.free_slot(Some(index)) else {
                return false;
            };
            let seq = st.next_seq;
            st.next_seq += 1;
            let moved = Meta { seq, ..meta };
            let len = record_len(live.image_len as usize);
            if self
                .write_record(st, &moved, self.place(to_file, to_slot), len)
                .is_err()
            {
                report.io_errors += 1;
                return false;
            }
            if let Some(f) = st.file_mut(to_file) {
                f.take(to_slot, owner);
            }
            if let Some(f) = st.file_mut(index) {
                f.release(slot);
            }
            if let Some(e) = st.entries.get_mut(owner as usize) {
                e.live = Some(Live {
                    file: to_file,
                    slot: to_slot,
                    seq,
                    ..live
                });
            }
            st.stats.records_moved += 1;
            report.records_moved += 1;
        }
        true
    }
}

impl<B: SwapBacking> SegmentStore for Swap<B> {
    /// Seals `image` into a free slot (creating or growing a file when none is free) and
    /// writes it whole.
    ///
    /// # Errors
    ///
    /// [`StoreError::NoSpace`] when the swap is at its limit, the device is full, or the image
    /// does not fit a slot ([`SwapConfig::max_image_bytes`]); [`StoreError::Io`] when the
    /// backing fails. A file may have grown even when the write then failed; no record is
    /// stored then.
    fn write(&self, header: &SwapHeader, image: &[u8]) -> Result<SwapKey, StoreError> {
        let len = record_len(image.len());
        if len as u64 > self.config.slot_bytes || image.len() > u32::MAX as usize {
            return Err(StoreError::NoSpace);
        }
        let mut st = self.state.lock();
        let (file, slot) = match st.free_slot(None) {
            Some(found) => found,
            None => {
                self.add_space(&mut st)?;
                st.free_slot(None).ok_or(StoreError::NoSpace)?
            }
        };
        // Reserve everything that can fail to allocate before the write, so a failed write
        // leaves the tables as they were.
        st.free_entries
            .try_reserve(1)
            .map_err(|_| StoreError::NoSpace)?;
        let entry = match st.free_entries.pop() {
            Some(e) => e,
            None => {
                let n = st.entries.len();
                if n >= u32::MAX as usize - 1 {
                    return Err(StoreError::NoSpace);
                }
                st.entries.try_reserve(1).map_err(|_| StoreError::NoSpace)?;
                st.entries.push(EntrySlot::default());
                n as u32
            }
        };
        let generation = st.entries.get(entry as usize).map_or(0, |e| e.generation);
        let seq = st.next_seq;
        st.next_seq += 1;
        if let Some(body) = st.scratch.get_mut(RECORD_PREFIX_BYTES..len) {
            let (img, pad) = body.split_at_mut(image.len());
            img.copy_from_slice(image);
            pad.fill(0);
        }
        let meta = Meta {
            seq,
            entry,
            header: *header,
        };
        if let Err(e) = self.write_record(&mut st, &meta, self.place(file, slot), len) {
            st.free_entries.push(entry);
            return Err(match e {
                BackingError::NoSpace => StoreError::NoSpace,
                _ => StoreError::Io,
            });
        }
        if let Some(f) = st.file_mut(file) {
            f.take(slot, entry);
        }
        if let Some(e) = st.entries.get_mut(entry as usize) {
            e.live = Some(Live {
                file,
                slot,
                image_len: image.len() as u32,
                seq,
            });
        }
        st.stats.writes += 1;
        st.stats.records += 1;
        Ok(key_of(entry, generation))
    }

    /// Reads the record of `key`, checks it and copies its image into `out`.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for a key that is not stored; [`StoreError::LengthMismatch`]
    /// when `out` is not the image's length; [`StoreError::Io`] when the backing fails or the
    /// record fails its integrity check (nothing is copied then).
    fn read(&self, key: SwapKey, out: &mut [u8]) -> Result<SwapHeader, StoreError> {
        let mut st = self.state.lock();
        let (entry, live) = st.live(key).ok_or(StoreError::NotFound)?;
        if out.len() != live.image_len as usize {
            return Err(StoreError::LengthMismatch {
                stored: live.image_len as usize,
                asked: out.len(),
            });
        }
        let meta = self
            .read_record(&mut st, entry, live)
            .map_err(|e| match e {
                PagingError::NoSpace => StoreError::NoSpace,
                _ => StoreError::Io,
            })?;
        let image = st
            .scratch
            .get(RECORD_PREFIX_BYTES..RECORD_PREFIX_BYTES + out.len())
            .ok_or(StoreError::Io)?;
        out.copy_from_slice(image);
        st.stats.reads += 1;
        Ok(meta.header)
    }

    /// Releases the slot of `key` (unknown keys are ignored). The file keeps its size until
    /// [`Swap::reclaim`] deletes it.
    fn free(&self, key: SwapKey) {
        let mut st = self.state.lock();
        let Some((entry, live)) = st.live(key) else {
            return;
        };
        if let Some(f) = st.file_mut(live.file) {
            f.release(live.slot);
        }
        if let Some(e) = st.entries.get_mut(entry as usize) {
            e.live = None;
            e.generation = e.generation.wrapping_add(1);
        }
        if st.free_entries.try_reserve(1).is_ok() {
            st.free_entries.push(entry);
        }
        st.stats.frees += 1;
        st.stats.records = st.stats.records.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_index_and_generation() {
        assert_eq!(split_key(key_of(5, 9)), Some((5, 9)));
        assert_eq!(split_key(SwapKey(0)), None);
    }

    #[test]
    fn config_checks_reject_nonsense() {
        let base = SwapConfig::new(SegmentSize::K64);
        assert_eq!(base.slot_bytes, 65536 + 512);
        assert!(base.check().is_ok());
        assert!(base.file_slots(0, 1).check().is_err());
        assert!(base.file_slots(4, 2).check().is_err());
        assert!(base.max_files(0).check().is_err());
        let odd = SwapConfig {
            slot_bytes: 1000,
            ..base
        };
        assert!(odd.check().is_err());
        assert_eq!(
            base.max_files(2).file_slots(1, 4).limit_bytes(),
            8 * (65536 + 512)
        );
    }
}
