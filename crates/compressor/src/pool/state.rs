//! The pool's state and every operation on it; all of it runs under the pool lock.

use super::checksum::xxh3_64;
use super::error::PoolError;
use super::handle::{Handle, HandleTable, Location};
use super::memory::SegmentMemory;
use super::segment::{
    KIND_SINGLE, SLOT_RECORD_BYTES, SegmentEntry, SegmentState, clear_record, read_record,
    slot_checksum,
};
use super::stats::{PoolPressure, PoolStats, SegmentInfo};
use super::store::{NoStore, SegmentStore, SwapHeader};
use super::table::Table;
use super::value_table::ValueTable;
use crate::codec::CodecKind;

/// Limits fixed at construction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Segment buffer bytes.
    pub(crate) cap: usize,
    /// Directory entries per segment.
    pub(crate) max_slots: usize,
    /// Segments in core at once.
    pub(crate) max_in_core: usize,
    /// Bytes of one page.
    pub(crate) page_bytes: usize,
}

/// Running counters (see [`PoolStats`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) stores: u64,
    pub(crate) sv_hits: u64,
    pub(crate) sv_misses: u64,
    pub(crate) incompressible: u64,
    pub(crate) loads: u64,
    pub(crate) frees: u64,
    pub(crate) swap_outs: u64,
    pub(crate) swap_ins: u64,
    pub(crate) minor: u64,
    pub(crate) major: u64,
    pub(crate) corruptions: u64,
}

/// What a load found under the lock; the slow part (checksum, decoding) runs after it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fetched {
    /// A single-value page.
    Value(u64),
    /// `len` bytes of a slot were copied to the start of the scratch buffer.
    Slot { kind: u8, len: usize, checksum: u32 },
}

#[derive(Debug)]
pub(crate) struct State<'a, B> {
    pub(crate) segments: Table<'a, SegmentEntry<B>>,
    pub(crate) handles: HandleTable<'a>,
    pub(crate) values: ValueTable,
    /// The segment taking new pages.
    pub(crate) filling: Option<u32>,
    /// Segments with a buffer in core.
    pub(crate) in_core: usize,
    /// Descriptors in use (in core or swapped out).
    pub(crate) allocated: usize,
    /// Ageing sequence: bumped each time a segment is sealed.
    pub(crate) seq: u64,
    pub(crate) counters: Counters,
}

impl<'a, B: AsRef<[u8]> + AsMut<[u8]>> State<'a, B> {
    pub(crate) fn new(mut segments: Table<'a, SegmentEntry<B>>, handles: HandleTable<'a>) -> Self {
        for s in segments.iter_mut() {
            *s = SegmentEntry::new();
        }
        Self {
            segments,
            handles,
            values: ValueTable::new(),
            filling: None,
            in_core: 0,
            allocated: 0,
            seq: 0,
            counters: Counters::default(),
        }
    }

    pub(crate) fn segment(&self, segment: u32) -> Option<&SegmentEntry<B>> {
        self.segments.get(segment as usize)
    }

    fn segment_mut(&mut self, segment: u32) -> Option<&mut SegmentEntry<B>> {
        self.segments.get_mut(segment as usize)
    }

    // -----------------------------------------------------------------------------------------
    // Storing.

    /// Places compressed bytes in a segment and issues their handle.
    pub(crate) fn place<M: SegmentMemory<Buffer = B>>(
        &mut self,
        lim: &Limits,
        mem: &M,
        bytes: &[u8],
        kind: u8,
        checksum: u32,
    ) -> Result<Handle, PoolError> {
        if self.handles.is_full() {
            return Err(PoolError::Exhausted);
        }
        let (segment, slot) = self.slot_for(lim, mem, bytes.len())?;
        let len = bytes.len() as u16;
        let handle = self
            .handles
            .insert(Location::Slot { segment, slot, len })
            .ok_or(PoolError::Exhausted)?;
        if let Some(seg) = self.segment_mut(segment) {
            seg.place(slot, bytes, kind, checksum, handle.index());
        }
        self.counters.stores += 1;
        if kind == CodecKind::Raw as u8 {
            self.counters.incompressible += 1;
        }
        Ok(handle)
    }

    /// Stores a single-value page: in the value table, or as an 8-byte slot when the table has
    /// no room for the value.
    pub(crate) fn place_single<M: SegmentMemory<Buffer = B>>(
        &mut self,
        lim: &Limits,
        mem: &M,
        value: u64,
    ) -> Result<Handle, PoolError> {
        if self.handles.is_full() {
            return Err(PoolError::Exhausted);
        }
        match self.values.slot_for(value) {
            Some(index) => {
                let handle = self
                    .handles
                    .insert(Location::Single { index })
                    .ok_or(PoolError::Exhausted)?;
                self.values.acquire(index, value);
                self.counters.stores += 1;
                self.counters.sv_hits += 1;
                Ok(handle)
            }
            None => {
                let bytes = value.to_le_bytes();
                let checksum = slot_checksum(KIND_SINGLE, &bytes);
                let h = self.place(lim, mem, &bytes, KIND_SINGLE, checksum)?;
                self.counters.sv_misses += 1;
                Ok(h)
            }
        }
    }

    /// Finds room for `len` bytes: in the filling segment, else in a new one (sealing the
    /// filling one only once the new one exists, so a failure changes nothing).
    fn slot_for<M: SegmentMemory<Buffer = B>>(
        &mut self,
        lim: &Limits,
        mem: &M,
        len: usize,
    ) -> Result<(u32, u16), PoolError> {
        if let Some(f) = self.filling {
            let seg = self.segment_mut(f).ok_or(PoolError::BadConfig)?;
            if let Some(slot) = seg.slot_for(lim.cap, len, lim.max_slots) {
                return Ok((f, slot));
            }
            // Holes worth a quarter of the segment: close them and try again.
            if seg.unused_bytes() >= lim.cap / 4 && seg.compact().is_some() {
                self.counters.minor += 1;
                let seg = self.segment_mut(f).ok_or(PoolError::BadConfig)?;
                if let Some(slot) = seg.slot_for(lim.cap, len, lim.max_slots) {
                    return Ok((f, slot));
                }
            }
        }
        let new = self.open_segment(lim, mem)?;
        if let Some(old) = self.filling.replace(new) {
            self.seal(old, lim, mem);
        }
        let seg = self.segment_mut(new).ok_or(PoolError::BadConfig)?;
        let slot = seg
            .slot_for(lim.cap, len, lim.max_slots)
            .ok_or(PoolError::BadConfig)?;
        Ok((new, slot))
    }

    /// Takes an unused descriptor and a buffer for a new filling segment.
    fn open_segment<M: SegmentMemory<Buffer = B>>(
        &mut self,
        lim: &Limits,
        mem: &M,
    ) -> Result<u32, PoolError> {
        if self.in_core >= lim.max_in_core {
            return Err(PoolError::Exhausted);
        }
        let index = self
            .segments
            .iter()
            .position(|s| s.state == SegmentState::Empty)
            .ok_or(PoolError::Exhausted)?;
        let buf = mem.allocate(lim.cap).ok_or(PoolError::OutOfMemory)?;
        if buf.as_ref().len() != lim.cap {
            mem.release(buf);
            return Err(PoolError::OutOfMemory);
        }
        let seg = self.segments.get_mut(index).ok_or(PoolError::BadConfig)?;
        *seg = SegmentEntry::new();
        seg.buf = Some(buf);
        seg.state = SegmentState::Filling;
        self.in_core += 1;
        self.allocated += 1;
        Ok(index as u32)
    }

    /// Closes the filling segment `segment`: it starts ageing, or is released if empty.
    fn seal<M: SegmentMemory<Buffer = B>>(&mut self, segment: u32, _lim: &Limits, mem: &M) {
        self.seq += 1;
        let seq = self.seq;
        let empty = match self.segment_mut(segment) {
            Some(seg) => {
                seg.state = SegmentState::Sealed;
                seg.sealed_seq = seq;
                seg.live_slots == 0
            }
            None => false,
        };
        if empty {
            self.release_segment::<M, NoStore>(segment, mem, None);
        }
    }

    /// Returns a descriptor to unused, its buffer to the memory and its record to the store.
    pub(crate) fn release_segment<M: SegmentMemory<Buffer = B>, S: SegmentStore>(
        &mut self,
        segment: u32,
        mem: &M,
        store: Option<&S>,
    ) {
        if self.filling == Some(segment) {
            self.filling = None;
        }
        let Some(seg) = self.segment_mut(segment) else {
            return;
        };
        let was_in_core = seg.state.is_in_core();
        let (buf, key) = seg.clear();
        if let Some(buf) = buf {
            mem.release(buf);
        }
        if let (Some(key), Some(store)) = (key, store) {
            store.free(key);
        }
        if was_in_core {
            self.in_core -= 1;
        }
        self.allocated -= 1;
    }

    // -----------------------------------------------------------------------------------------
    // Loading and freeing.

    /// Finds `h`'s page, swapping its segment in if needed, and copies its bytes to `scratch`.
    pub(crate) fn fetch<M: SegmentMemory<Buffer = B>, S: SegmentStore>(
        &mut self,
        lim: &Limits,
        mem: &M,
        store: &S,
        h: Handle,
        scratch: &mut [u8],
    ) -> Result<Fetched, PoolError> {
        let loc = self.handles.get(h).ok_or(PoolError::InvalidHandle(h))?;
        let (segment, slot, len) = match loc {
            Location::Single { index } => {
                let v = self.values.value(index).ok_or(PoolError::SlotCorrupt(h));
                self.counters.loads += u64::from(v.is_ok());
                return v.map(Fetched::Value);
            }
            Location::Slot { segment, slot, len } => (segment, slot, len),
        };
        if self
            .segment(segment)
            .is_some_and(|s| s.state.is_swapped_out())
        {
            self.swap_in(lim, mem, store, segment)?;
        }
        let scratch_len = scratch.len();
        let found = self.segments.get(segment as usize).and_then(|seg| {
            let rec = seg.record(slot)?;
            (rec.len == len && rec.handle == h.index())
                .then(|| seg.bytes_of(rec).map(|b| (rec, b)))
                .flatten()
        });
        let Some((rec, bytes)) = found else {
            self.counters.corruptions += 1;
            return Err(PoolError::SlotCorrupt(h));
        };
        let n = bytes.len();
        let dst = scratch.get_mut(..n).ok_or(PoolError::ScratchTooSmall {
            needed: n,
            actual: scratch_len,
        })?;
        dst.copy_from_slice(bytes);
        self.counters.loads += 1;
        Ok(Fetched::Slot {
            kind: rec.kind,
            len: n,
            checksum: rec.checksum,
        })
    }

    /// Frees `h`'s page.
    pub(crate) fn free<M: SegmentMemory<Buffer = B>, S: SegmentStore>(
        &mut self,
        mem: &M,
        store: &S,
        h: Handle,
    ) -> Result<(), PoolError> {
        let loc = self.handles.get(h).ok_or(PoolError::InvalidHandle(h))?;
        match loc {
            Location::Single { index } => self.values.release(index),
            Location::Slot { segment, slot, len } => {
                let filling = self.filling == Some(segment);
                let now_empty = match self.segment_mut(segment) {
                    Some(seg) => {
                        seg.free_slot(slot, len);
                        seg.live_slots == 0
                    }
                    None => false,
                };
                if now_empty && !filling {
                    self.release_segment(segment, mem, Some(store));
                }
            }
        }
        self.handles.remove(h);
        self.counters.frees += 1;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Swapping.

    /// Writes sealed segment `segment` to the store and releases its buffer.
    pub(crate) fn swap_out<M: SegmentMemory<Buffer = B>, S: SegmentStore>(
        &mut self,
        lim: &Limits,
        mem: &M,
        store: &S,
        segment: u32,
    ) -> Result<(), PoolError> {
        let seg = self
            .segments
            .get_mut(segment as usize)
            .filter(|s| s.state == SegmentState::Sealed)
            .ok_or(PoolError::BadSegment { segment })?;
        // No holes go to swap; the slots keep their indices, so no handle changes.
        if seg.unused_bytes() > 0 {
            if seg.compact().is_none() {
                self.counters.corruptions += 1;
                return Err(PoolError::SegmentCorrupt { segment });
            }
            self.counters.minor += 1;
        }
        let seg = self
            .segments
            .get_mut(segment as usize)
            .ok_or(PoolError::BadSegment { segment })?;
        let data_len = seg.data_end as usize;
        let slots = seg.slots;
        let dir_len = slots as usize * SLOT_RECORD_BYTES;
        let image_len = data_len + dir_len;
        let buf = seg
            .buf
            .as_mut()
            .ok_or(PoolError::BadSegment { segment })?
            .as_mut();
        // The image is the data area followed by the directory: move the directory down.
        let dir_at = lim.cap - dir_len;
        buf.copy_within(dir_at..lim.cap, data_len);
        let image = buf.get(..image_len).ok_or(PoolError::BadConfig)?;
        let header = SwapHeader {
            version: SwapHeader::VERSION,
            segment,
            image_len: image_len as u32,
            data_len: data_len as u32,
            slots,
            checksum: xxh3_64(image, u64::from(segment)),
        };
        match store.write(&header, image) {
            Ok(key) => {
                if let Some(buf) = seg.buf.take() {
                    mem.release(buf);
                }
                seg.swap = Some((key, header));
                seg.state = SegmentState::SwappedOut;
                self.in_core -= 1;
                self.counters.swap_outs += 1;
                Ok(())
            }
            Err(e) => {
                buf.copy_within(data_len..image_len, dir_at);
                Err(PoolError::Store(e))
            }
        }
    }

    /// Reads swapped-out segment `segment` back, checks it and drops the slots freed while it
    /// was out. An in-core segment is left alone.
    pub(crate) fn swap_in<M: SegmentMemory<Buffer = B>, S: SegmentStore>(
        &mut self,
        lim: &Limits,
        mem: &M,
        store: &S,
        segment: u32,
    ) -> Result<(), PoolError> {
        let seg = self
            .segment(segment)
            .filter(|s| s.state != SegmentState::Empty)
            .ok_or(PoolError::BadSegment { segment })?;
        if seg.state.is_in_core() {
            return Ok(());
        }
        let (key, header) = seg.swap.ok_or(PoolError::BadSegment { segment })?;
        if self.in_core >= lim.max_in_core {
            return Err(PoolError::Exhausted);
        }
        let mut buf = mem.allocate(lim.cap).ok_or(PoolError::OutOfMemory)?;
        let image_len = header.image_len as usize;
        let data_len = header.data_len as usize;
        let dir_len = header.slots as usize * SLOT_RECORD_BYTES;
        let checked = (|| {
            let b = buf.as_mut();
            if b.len() != lim.cap {
                return Err(PoolError::OutOfMemory);
            }
            if data_len + dir_len != image_len || image_len > lim.cap {
                return Err(PoolError::SegmentCorrupt { segment });
            }
            let image = b
                .get_mut(..image_len)
                .ok_or(PoolError::SegmentCorrupt { segment })?;
            let got = store.read(key, image)?;
            if got != header || xxh3_64(image, u64::from(segment)) != header.checksum {
                return Err(PoolError::SegmentCorrupt { segment });
            }
            b.copy_within(data_len..image_len, lim.cap - dir_len);
            Ok(())
        })();
        if let Err(e) = checked {
            mem.release(buf);
            if matches!(e, PoolError::SegmentCorrupt { .. }) {
                self.counters.corruptions += 1;
            }
            return Err(e);
        }
        // Drop the records of pages freed while the segment was out: their handle-table entry
        // no longer points here.
        let b = buf.as_mut();
        let mut live_slots = 0_u16;
        let mut live_bytes = 0_u32;
        let mut slots = 0_u16;
        let mut free_hint = header.slots;
        for i in 0..header.slots {
            let Some(rec) = read_record(b, i as usize) else {
                continue;
            };
            if rec.len == 0 {
                free_hint = free_hint.min(i);
                continue;
            }
            let owner = self.handles.location_of_index(rec.handle);
            if owner
                == Some(Location::Slot {
                    segment,
                    slot: i,
                    len: rec.len,
                })
            {
                live_slots += 1;
                live_bytes += u32::from(rec.len);
                slots = i + 1;
            } else {
                clear_record(b, i as usize);
                free_hint = free_hint.min(i);
            }
        }
        store.free(key);
        let seg = self
            .segments
            .get_mut(segment as usize)
            .ok_or(PoolError::BadSegment { segment })?;
        seg.buf = Some(buf);
        seg.swap = None;
        seg.state = SegmentState::Sealed;
        seg.data_end = header.data_len;
        seg.slots = slots;
        seg.live_slots = live_slots;
        seg.live_bytes = live_bytes;
        seg.free_hint = free_hint.min(slots);
        self.in_core += 1;
        self.counters.swap_ins += 1;
        if live_slots == 0 {
            self.release_segment(segment, mem, None::<&S>);
        }
        Ok(())
    }

    /// References to `h`'s value-table entry.
    pub(crate) fn single_value_refs(&self, h: Handle) -> Result<u32, PoolError> {
        match self.handles.get(h) {
            Some(Location::Single { index }) => Ok(self.values.refs(index)),
            _ => Err(PoolError::InvalidHandle(h)),
        }
    }

    /// The oldest sealed in-core segment.
    pub(crate) fn oldest_sealed(&self) -> Option<u32> {
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == SegmentState::Sealed)
            .min_by_key(|(_, s)| s.sealed_seq)
            .map(|(i, _)| i as u32)
    }

    // -----------------------------------------------------------------------------------------
    // Reporting.

    pub(crate) fn info(&self, segment: u32) -> Option<SegmentInfo> {
        let s = self.segment(segment)?;
        (s.state != SegmentState::Empty).then(|| SegmentInfo {
            segment,
            state: s.state,
            live_slots: u32::from(s.live_slots),
            slots: u32::from(s.slots),
            live_bytes: u64::from(s.live_bytes),
            bytes_used: s.used_bytes() as u64,
            bytes_unused: s.unused_bytes() as u64,
            sealed_seq: s.sealed_seq,
        })
    }

    pub(crate) fn stats(&self, lim: &Limits) -> PoolStats {
        let mut st = PoolStats::default();
        let c = &self.counters;
        st.pages_stored = self.handles.live() as u64;
        st.input_bytes = st.pages_stored * lim.page_bytes as u64;
        st.single_values = self.values.in_use() as u64;
        let mut slot_pages = 0_u64;
        for s in self.segments.iter() {
            slot_pages += u64::from(s.live_slots);
            st.compressed_bytes += u64::from(s.live_bytes);
            if s.state.is_in_core() {
                st.segments_in_core += 1;
                st.bytes_used += s.used_bytes() as u64;
                st.bytes_unused += s.unused_bytes() as u64;
            } else if s.state.is_swapped_out() {
                st.segments_swapped += 1;
                st.swapped_bytes += s.swap.map_or(0, |(_, h)| u64::from(h.image_len));
            }
        }
        st.single_value_pages = st.pages_stored - slot_pages.min(st.pages_stored);
        st.in_core_capacity = st.segments_in_core * lim.cap as u64;
        st.stores = c.stores;
        st.single_value_hits = c.sv_hits;
        st.single_value_misses = c.sv_misses;
        st.incompressible_pages = c.incompressible;
        st.loads = c.loads;
        st.frees = c.frees;
        st.swap_outs = c.swap_outs;
        st.swap_ins = c.swap_ins;
        st.minor_compactions = c.minor;
        st.major_compactions = c.major;
        st.corruptions = c.corruptions;
        st
    }

    pub(crate) fn pressure(&self, lim: &Limits) -> PoolPressure {
        let levels = [
            (self.in_core, lim.max_in_core),
            (self.allocated, self.segments.len()),
            (self.handles.live(), self.handles.capacity()),
        ];
        if levels.iter().any(|&(used, cap)| used >= cap) {
            PoolPressure::Exhausted
        } else if levels
            .iter()
            .any(|&(used, cap)| used.saturating_mul(100) >= cap.saturating_mul(98))
        {
            PoolPressure::NearingLimit
        } else {
            PoolPressure::Normal
        }
    }

    /// Gives every buffer back to the memory and every record back to the store.
    pub(crate) fn release_all<M: SegmentMemory<Buffer = B>, S: SegmentStore>(
        &mut self,
        mem: &M,
        store: &S,
    ) {
        for i in 0..self.segments.len() {
            if self
                .segments
                .get(i)
                .is_some_and(|s| s.state != SegmentState::Empty)
            {
                self.release_segment(i as u32, mem, Some(store));
            }
        }
    }
}
