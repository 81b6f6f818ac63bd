//! Segments (XNU's `c_segments`): fixed-size buffers of compressed pages and their slot
//! directories.
//!
//! # Layout
//!
//! A segment buffer holds the pages' bytes from the start upwards (the *data area*, packed
//! without padding) and its *slot directory* from the end downwards: slot `i` is the 16-byte
//! record at `len - 16 × (i + 1)`. Both live in the buffer so a segment is self-describing:
//! swapping it out writes the data area followed by the directory, and nothing else is needed
//! to read it back.
//!
//! A slot record (little-endian) is `offset: u32` (into the data area), `len: u16` (0 = the
//! slot is empty), `kind: u8` (a [`CodecKind`](crate::codec::CodecKind) byte, or
//! [`KIND_SINGLE`] for a single-value page that did not fit the value table), a reserved byte,
//! `checksum: u32` (low half of the XXH3-64 of the slot's bytes, seeded with its kind and
//! length), and `handle: u32` (the handle-table index that owns the slot: the back-pointer
//! compaction uses to update the owner, and a consistency check on every load).

use core::fmt;

use super::store::{SwapHeader, SwapKey};

/// Bytes of one slot record in the directory.
pub const SLOT_RECORD_BYTES: usize = 16;
/// Most slots a segment can hold (XNU's 1024-slot limit).
pub const MAX_SLOTS: usize = 1024;
/// Slot kind of a single-value page stored in a segment (8 bytes, the value little-endian).
pub(crate) const KIND_SINGLE: u8 = 0xF0;

/// The size of a segment buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SegmentSize {
    /// 64 KiB (XNU on arm64 macOS and embedded systems with app swap).
    K64,
    /// 256 KiB (XNU's default elsewhere).
    K256,
}

impl SegmentSize {
    /// The size in bytes.
    #[must_use]
    pub const fn bytes(self) -> usize {
        match self {
            Self::K64 => 64 * 1024,
            Self::K256 => 256 * 1024,
        }
    }
}

/// The state of a segment (XNU's `c_state`, without the queues).
///
/// Swap I/O runs under the pool lock, so the transient states XNU has (swap-out queued, I/O in
/// flight) are never observable here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SegmentState {
    /// The descriptor is unused.
    Empty,
    /// In core, taking new pages (XNU's `C_IS_FILLING`); the pool has at most one.
    Filling,
    /// In core, full or closed, ageing (XNU's `C_ON_AGE_Q`); pages are loaded and freed, and
    /// compaction may move pages in or out.
    Sealed,
    /// Written to the segment store, buffer released (XNU's `C_ON_SWAPPEDOUT_Q`).
    SwappedOut,
    /// Swapped out, and some of its pages were freed since (XNU's
    /// `C_ON_SWAPPEDOUTSPARSE_Q`).
    SwappedOutSparse,
}

impl SegmentState {
    /// Says whether the segment's buffer is in core.
    #[must_use]
    pub const fn is_in_core(self) -> bool {
        matches!(self, Self::Filling | Self::Sealed)
    }

    /// Says whether the segment is in the segment store.
    #[must_use]
    pub const fn is_swapped_out(self) -> bool {
        matches!(self, Self::SwappedOut | Self::SwappedOutSparse)
    }
}

/// One decoded slot record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotRecord {
    pub(crate) offset: u32,
    pub(crate) len: u16,
    pub(crate) kind: u8,
    pub(crate) checksum: u32,
    pub(crate) handle: u32,
}

impl SlotRecord {
    const EMPTY: Self = Self {
        offset: 0,
        len: 0,
        kind: 0,
        checksum: 0,
        handle: 0,
    };

    fn encode(self) -> [u8; SLOT_RECORD_BYTES] {
        let mut b = [0_u8; SLOT_RECORD_BYTES];
        b[0..4].copy_from_slice(&self.offset.to_le_bytes());
        b[4..6].copy_from_slice(&self.len.to_le_bytes());
        b[6] = self.kind;
        b[8..12].copy_from_slice(&self.checksum.to_le_bytes());
        b[12..16].copy_from_slice(&self.handle.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; SLOT_RECORD_BYTES] = b.try_into().ok()?;
        Some(Self {
            offset: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            len: u16::from_le_bytes([b[4], b[5]]),
            kind: b[6],
            checksum: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            handle: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// The record's data range if it lies inside a data area of `data_end` bytes.
    pub(crate) fn range(self, data_end: u32) -> Option<core::ops::Range<usize>> {
        let end = self.offset.checked_add(u32::from(self.len))?;
        (self.len > 0 && end <= data_end).then_some(self.offset as usize..end as usize)
    }
}

/// The slot checksum: low half of XXH3-64 over the bytes, seeded with kind and length.
pub(crate) fn slot_checksum(kind: u8, bytes: &[u8]) -> u32 {
    let seed = u64::from(kind) | ((bytes.len() as u64) << 8);
    super::checksum::xxh3_64(bytes, seed) as u32
}

/// Byte range of directory entry `slot` in a buffer of `cap` bytes.
fn record_range(cap: usize, slot: usize) -> Option<core::ops::Range<usize>> {
    let end = cap.checked_sub(slot.checked_mul(SLOT_RECORD_BYTES)?)?;
    Some(end.checked_sub(SLOT_RECORD_BYTES)?..end)
}

pub(crate) fn read_record(buf: &[u8], slot: usize) -> Option<SlotRecord> {
    SlotRecord::decode(buf.get(record_range(buf.len(), slot)?)?)
}

/// Marks directory entry `slot` empty.
pub(crate) fn clear_record(buf: &mut [u8], slot: usize) {
    write_record(buf, slot, SlotRecord::EMPTY);
}

fn write_record(buf: &mut [u8], slot: usize, rec: SlotRecord) {
    if let Some(r) = record_range(buf.len(), slot) {
        if let Some(dst) = buf.get_mut(r) {
            dst.copy_from_slice(&rec.encode());
        }
    }
}

/// A segment descriptor: one entry of the pool's segment table (opaque). Tables the caller
/// provides start as [`SegmentEntry::new`].
pub struct SegmentEntry<B> {
    pub(crate) state: SegmentState,
    pub(crate) buf: Option<B>,
    /// End of the data area.
    pub(crate) data_end: u32,
    /// Directory entries (live or empty) at the end of the buffer.
    pub(crate) slots: u16,
    /// Directory entries in use.
    pub(crate) live_slots: u16,
    /// Data bytes of the live slots.
    pub(crate) live_bytes: u32,
    /// No empty directory entry below this index.
    pub(crate) free_hint: u16,
    /// When the segment was sealed (pool-wide sequence number): its age.
    pub(crate) sealed_seq: u64,
    /// Where the segment is while swapped out.
    pub(crate) swap: Option<(SwapKey, SwapHeader)>,
    /// Major compaction found no destination for it in the current pass.
    pub(crate) major_tried: bool,
}

impl<B> SegmentEntry<B> {
    /// An unused descriptor.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            state: SegmentState::Empty,
            buf: None,
            data_end: 0,
            slots: 0,
            live_slots: 0,
            live_bytes: 0,
            free_hint: 0,
            sealed_seq: 0,
            swap: None,
            major_tried: false,
        }
    }

    /// Resets the descriptor to unused, returning its buffer and swap record (if any).
    pub(crate) fn clear(&mut self) -> (Option<B>, Option<SwapKey>) {
        let buf = self.buf.take();
        let key = self.swap.take().map(|(k, _)| k);
        *self = Self::new();
        (buf, key)
    }

    /// Bytes of the buffer in use: data area plus directory.
    pub(crate) fn used_bytes(&self) -> usize {
        self.data_end as usize + self.slots as usize * SLOT_RECORD_BYTES
    }

    /// Bytes inside the used region that belong to no live slot (holes left by frees).
    pub(crate) fn unused_bytes(&self) -> usize {
        self.used_bytes() - self.live_footprint()
    }

    /// Bytes the live slots need: data plus one directory record each.
    pub(crate) fn live_footprint(&self) -> usize {
        self.live_bytes as usize + self.live_slots as usize * SLOT_RECORD_BYTES
    }
}

impl<B> Default for SegmentEntry<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> fmt::Debug for SegmentEntry<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentEntry")
            .field("state", &self.state)
            .field("data_end", &self.data_end)
            .field("slots", &self.slots)
            .field("live_slots", &self.live_slots)
            .field("live_bytes", &self.live_bytes)
            .field("swap", &self.swap)
            .finish_non_exhaustive()
    }
}

/// In-core operations on a segment's buffer.
impl<B: AsRef<[u8]> + AsMut<[u8]>> SegmentEntry<B> {
    /// The directory index a new slot would take, if `len` more data bytes fit (with
    /// `max_slots` directory entries at most).
    pub(crate) fn slot_for(&self, cap: usize, len: usize, max_slots: usize) -> Option<u16> {
        let buf = self.buf.as_ref()?.as_ref();
        let mut index = self.slots as usize;
        for i in self.free_hint as usize..self.slots as usize {
            if read_record(buf, i).is_some_and(|r| r.len == 0) {
                index = i;
                break;
            }
        }
        let slots = (self.slots as usize).max(index + 1);
        let need = (self.data_end as usize)
            .checked_add(len)?
            .checked_add(slots.checked_mul(SLOT_RECORD_BYTES)?)?;
        (slots <= max_slots && need <= cap).then_some(index as u16)
    }

    /// Appends `bytes` to the data area in slot `slot` (from [`slot_for`](Self::slot_for)).
    pub(crate) fn place(&mut self, slot: u16, bytes: &[u8], kind: u8, checksum: u32, handle: u32) {
        let Some(buf) = self.buf.as_mut() else {
            return;
        };
        let buf = buf.as_mut();
        let start = self.data_end as usize;
        let Some(dst) = buf.get_mut(start..start + bytes.len()) else {
            return;
        };
        dst.copy_from_slice(bytes);
        write_record(
            buf,
            slot as usize,
            SlotRecord {
                offset: start as u32,
                len: bytes.len() as u16,
                kind,
                checksum,
                handle,
            },
        );
        self.data_end += bytes.len() as u32;
        self.slots = self.slots.max(slot + 1);
        self.live_slots += 1;
        self.live_bytes += bytes.len() as u32;
        self.free_hint = slot + 1;
    }

    /// The record of directory entry `slot`, if the segment is in core.
    pub(crate) fn record(&self, slot: u16) -> Option<SlotRecord> {
        if slot >= self.slots {
            return None;
        }
        read_record(self.buf.as_ref()?.as_ref(), slot as usize)
    }

    /// The bytes of a record (checked against the data area).
    pub(crate) fn bytes_of(&self, rec: SlotRecord) -> Option<&[u8]> {
        self.buf.as_ref()?.as_ref().get(rec.range(self.data_end)?)
    }

    /// Forgets slot `slot` of `len` bytes (its bytes become a hole).
    pub(crate) fn free_slot(&mut self, slot: u16, len: u16) {
        self.live_slots = self.live_slots.saturating_sub(1);
        self.live_bytes = self.live_bytes.saturating_sub(u32::from(len));
        if self.state.is_swapped_out() {
            // The directory is in the store; swap-in drops records whose owner is gone.
            self.state = SegmentState::SwappedOutSparse;
            return;
        }
        let slots = self.slots;
        if let Some(buf) = self.buf.as_mut() {
            let buf = buf.as_mut();
            write_record(buf, slot as usize, SlotRecord::EMPTY);
            self.free_hint = self.free_hint.min(slot);
            if slot + 1 == slots {
                let mut n = slots - 1;
                while n > 0 && read_record(buf, n as usize - 1).is_some_and(|r| r.len == 0) {
                    n -= 1;
                }
                self.slots = n;
                self.free_hint = self.free_hint.min(n);
            }
        }
        if self.live_slots == 0 {
            // Nothing live: the data area is empty again.
            self.data_end = 0;
            self.slots = 0;
            self.free_hint = 0;
        }
    }

    /// Slides the live slots down over the holes (minor compaction). Returns the bytes
    /// reclaimed, or `None` (and changes nothing) when the directory is inconsistent: a record
    /// outside the data area, or two that overlap.
    pub(crate) fn compact(&mut self) -> Option<usize> {
        let before = self.used_bytes();
        let slots = self.slots as usize;
        let data_end = self.data_end;
        let buf = self.buf.as_mut()?.as_mut();
        // (offset << 10 | slot) of every live slot: offsets are below 2^18 (256 KiB).
        let mut order = [0_u32; MAX_SLOTS];
        let mut n = 0;
        for i in 0..slots {
            let rec = read_record(buf, i)?;
            if rec.len == 0 {
                continue;
            }
            rec.range(data_end)?;
            *order.get_mut(n)? = (rec.offset << 10) | i as u32;
            n += 1;
        }
        let order = order.get_mut(..n)?;
        order.sort_unstable();
        let mut prev_end = 0_usize;
        for &key in order.iter() {
            let rec = read_record(buf, (key & 0x3ff) as usize)?;
            let r = rec.range(data_end)?;
            if r.start < prev_end {
                return None;
            }
            prev_end = r.end;
        }
        let mut cursor = 0_u32;
        for &key in order.iter() {
            let slot = (key & 0x3ff) as usize;
            let mut rec = read_record(buf, slot)?;
            let r = rec.range(data_end)?;
            if r.start != cursor as usize {
                buf.copy_within(r, cursor as usize);
                rec.offset = cursor;
                write_record(buf, slot, rec);
            }
            cursor += u32::from(rec.len);
        }
        let mut live_slots = slots;
        while live_slots > 0 && read_record(buf, live_slots - 1).is_some_and(|r| r.len == 0) {
            live_slots -= 1;
        }
        self.slots = live_slots as u16;
        self.data_end = cursor;
        self.live_bytes = cursor;
        self.free_hint = self.free_hint.min(self.slots);
        Some(before - self.used_bytes())
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec;

    fn seg() -> SegmentEntry<Box<[u8]>> {
        let mut s = SegmentEntry::new();
        s.buf = Some(vec![0_u8; 1024].into_boxed_slice());
        s.state = SegmentState::Filling;
        s
    }

    fn put(s: &mut SegmentEntry<Box<[u8]>>, fill: u8, len: usize, h: u32) -> u16 {
        let slot = s.slot_for(1024, len, 8).unwrap();
        let bytes = vec![fill; len];
        s.place(slot, &bytes, 3, slot_checksum(3, &bytes), h);
        slot
    }

    #[test]
    fn records_round_trip() {
        let r = SlotRecord {
            offset: 0x1_2345,
            len: 4100,
            kind: 2,
            checksum: 0xdead_beef,
            handle: 77,
        };
        assert_eq!(SlotRecord::decode(&r.encode()), Some(r));
    }

    #[test]
    fn compaction_slides_live_slots_down_and_keeps_their_indices() {
        let mut s = seg();
        let a = put(&mut s, 1, 100, 10);
        let b = put(&mut s, 2, 200, 11);
        let c = put(&mut s, 3, 50, 12);
        s.free_slot(b, 200);
        assert_eq!(s.unused_bytes(), 200 + SLOT_RECORD_BYTES);
        // The freed index is reused before the directory grows.
        assert_eq!(s.slot_for(1024, 10, 8), Some(b));
        assert_eq!(s.compact(), Some(200));
        assert_eq!((s.data_end, s.live_bytes, s.slots), (150, 150, 3));
        let rc = s.record(c).unwrap();
        assert_eq!(rc.offset, 100);
        assert!(s.bytes_of(rc).unwrap().iter().all(|&x| x == 3));
        assert!(
            s.bytes_of(s.record(a).unwrap())
                .unwrap()
                .iter()
                .all(|&x| x == 1)
        );
    }

    #[test]
    fn a_full_segment_or_directory_refuses_a_slot() {
        let mut s = seg();
        assert_eq!(s.slot_for(1024, 1024 - 16, 8), Some(0));
        assert_eq!(s.slot_for(1024, 1024 - 15, 8), None);
        for i in 0..8 {
            put(&mut s, i as u8, 1, i);
        }
        assert_eq!(s.slot_for(1024, 1, 8), None);
    }

    #[test]
    fn compaction_refuses_overlapping_records() {
        let mut s = seg();
        put(&mut s, 1, 100, 1);
        put(&mut s, 2, 100, 2);
        let buf = s.buf.as_mut().unwrap();
        let mut rec = read_record(buf, 1).unwrap();
        rec.offset = 50;
        write_record(buf, 1, rec);
        assert_eq!(s.compact(), None);
    }
}
