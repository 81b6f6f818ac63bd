//! Minor and major compaction (XNU's `c_seg_minor_compaction_and_unlock` and
//! `c_seg_major_compact`, in our own terms).
//!
//! - **Minor**: inside one segment, slide the live slots down over the holes that frees left.
//!   Slot indices do not change, so no handle-table entry does.
//! - **Major**: move every live slot of a sparse sealed segment into another sealed segment
//!   with room, then release the emptied segment's buffer. Each moved slot's owner is found
//!   through the slot's back-pointer and its handle-table entry rewritten, so the handles the
//!   caller holds keep working.
//!
//! Both check a segment's directory before moving anything and leave a segment whose records
//! are inconsistent alone (counted in [`CompactionReport::skipped_corrupt`]).

use super::handle::Location;
use super::memory::SegmentMemory;
use super::segment::{SLOT_RECORD_BYTES, SegmentState};
use super::state::{Limits, State};
use super::stats::CompactionReport;
use super::store::NoStore;

/// Mutable references to two distinct elements.
fn two_mut<T>(s: &mut [T], a: usize, b: usize) -> Option<(&mut T, &mut T)> {
    if a == b {
        return None;
    }
    if a < b {
        let (lo, hi) = s.split_at_mut(b);
        Some((lo.get_mut(a)?, hi.first_mut()?))
    } else {
        let (lo, hi) = s.split_at_mut(a);
        let (x, y) = (hi.first_mut()?, lo.get_mut(b)?);
        Some((x, y))
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> State<'_, B> {
    /// Minor-compacts every in-core segment whose holes reach a quarter of its size.
    pub(crate) fn compact_minor(&mut self, lim: &Limits) -> CompactionReport {
        let mut report = CompactionReport::default();
        for seg in self.segments.iter_mut() {
            if !seg.state.is_in_core() || seg.unused_bytes() < lim.cap / 4 {
                continue;
            }
            match seg.compact() {
                Some(bytes) => {
                    report.segments += 1;
                    report.bytes_reclaimed += bytes as u64;
                }
                None => report.skipped_corrupt += 1,
            }
        }
        self.counters.minor += u64::from(report.segments);
        self.counters.corruptions += u64::from(report.skipped_corrupt);
        report
    }

    /// Merges sparse sealed segments into others and releases them.
    pub(crate) fn compact_major<M: SegmentMemory<Buffer = B>>(
        &mut self,
        lim: &Limits,
        mem: &M,
    ) -> CompactionReport {
        let mut report = CompactionReport::default();
        let n = self.segments.len();
        // Each round merges a source away or marks it tried, so `n` rounds suffice.
        for _round in 0..n {
            // The sparsest sealed segment not yet tried: at most half full of live data.
            let src = self
                .segments
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.state == SegmentState::Sealed
                        && s.live_footprint() <= lim.cap / 2
                        && !s.major_tried
                })
                .min_by_key(|(_, s)| s.live_footprint())
                .map(|(i, _)| i);
            let Some(src) = src else {
                break;
            };
            match self.merge_away(src, lim, mem) {
                Merge::Done { slots, freed } => {
                    report.segments += 1;
                    report.slots_moved += slots;
                    report.bytes_reclaimed += freed as u64;
                }
                Merge::NoDestination => self.mark_tried(src),
                Merge::Corrupt => {
                    report.skipped_corrupt += 1;
                    self.mark_tried(src);
                }
            }
        }
        self.clear_tried();
        self.counters.major += u64::from(report.segments);
        self.counters.corruptions += u64::from(report.skipped_corrupt);
        report
    }

    fn mark_tried(&mut self, i: usize) {
        if let Some(s) = self.segments.get_mut(i) {
            s.major_tried = true;
        }
    }

    fn clear_tried(&mut self) {
        for s in self.segments.iter_mut() {
            s.major_tried = false;
        }
    }

    /// Moves every live slot of `src` into the fullest other sealed segment they fit in, then
    /// releases `src`.
    fn merge_away<M: SegmentMemory<Buffer = B>>(
        &mut self,
        src: usize,
        lim: &Limits,
        mem: &M,
    ) -> Merge {
        let Some(s) = self.segments.get(src) else {
            return Merge::NoDestination;
        };
        let (need_bytes, need_slots) = (s.live_bytes as usize, s.live_slots as usize);
        let dst = self
            .segments
            .iter()
            .enumerate()
            .filter(|&(i, d)| {
                i != src
                    && d.state == SegmentState::Sealed
                    && d.slots as usize + need_slots <= lim.max_slots
                    && d.live_bytes as usize
                        + need_bytes
                        + (d.slots as usize + need_slots) * SLOT_RECORD_BYTES
                        <= lim.cap
            })
            .max_by_key(|(_, d)| d.live_footprint())
            .map(|(i, _)| i);
        let Some(dst) = dst else {
            return Merge::NoDestination;
        };
        if !self.source_is_consistent(src) {
            return Merge::Corrupt;
        }
        let Some((_, d)) = two_mut(&mut self.segments, src, dst) else {
            return Merge::NoDestination;
        };
        // Make the destination's free space one block at the end.
        if d.unused_bytes() > 0 {
            if d.compact().is_none() {
                return Merge::Corrupt;
            }
            self.counters.minor += 1;
        }
        let Some((s, d)) = two_mut(&mut self.segments, src, dst) else {
            return Merge::NoDestination;
        };
        let mut moved = 0_u32;
        for i in 0..s.slots {
            let Some(rec) = s.record(i) else { continue };
            if rec.len == 0 {
                continue;
            }
            let (Some(bytes), Some(slot)) = (
                s.bytes_of(rec),
                d.slot_for(lim.cap, rec.len as usize, lim.max_slots),
            ) else {
                // Checked above: every record is in bounds and the space suffices.
                continue;
            };
            d.place(slot, bytes, rec.kind, rec.checksum, rec.handle);
            self.handles.relocate(
                rec.handle,
                Location::Slot {
                    segment: dst as u32,
                    slot,
                    len: rec.len,
                },
            );
            moved += 1;
        }
        let freed = lim.cap;
        self.release_for_merge(src, mem);
        Merge::Done {
            slots: moved,
            freed,
        }
    }

    /// Checks every live record of `src`: inside the data area, and owned (back-pointer) by a
    /// handle that points right back at it.
    fn source_is_consistent(&self, src: usize) -> bool {
        let Some(s) = self.segments.get(src) else {
            return false;
        };
        let mut live = 0_u16;
        for i in 0..s.slots {
            let Some(rec) = s.record(i) else {
                return false;
            };
            if rec.len == 0 {
                continue;
            }
            let owner = self.handles.location_of_index(rec.handle);
            let expected = Location::Slot {
                segment: src as u32,
                slot: i,
                len: rec.len,
            };
            if rec.range(s.data_end).is_none() || owner != Some(expected) {
                return false;
            }
            live += 1;
        }
        live == s.live_slots
    }

    fn release_for_merge<M: SegmentMemory<Buffer = B>>(&mut self, src: usize, mem: &M) {
        if let Some(s) = self.segments.get_mut(src) {
            // Every slot moved: nothing is live here any more.
            s.live_slots = 0;
            s.live_bytes = 0;
        }
        self.release_segment::<M, NoStore>(src as u32, mem, None);
    }
}

enum Merge {
    Done { slots: u32, freed: usize },
    NoDestination,
    Corrupt,
}
