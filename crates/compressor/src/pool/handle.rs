//! Page handles and the handle table: the indirection that lets compaction move pages.
//!
//! A [`Handle`] names an entry of the pool's handle table, never a segment directly. The entry
//! holds where the page is now (segment number and slot, or a value-table index for a
//! single-value page) and a generation that changes every time the entry is freed, so a stale
//! handle is refused instead of reading another page. Compaction rewrites entries; handles the
//! caller holds stay valid.

use core::fmt;
use core::num::NonZeroU64;

use super::table::Table;

/// Largest handle-table index (entries are numbered from 0).
pub(crate) const MAX_HANDLES: usize = u32::MAX as usize;
/// Generations are 31 bits; generation 0 is never issued.
const GEN_MASK: u32 = 0x7fff_ffff;
const SINGLE_BIT: u64 = 1 << 63;
const NO_NEXT: u32 = u32::MAX;

/// The handle of one stored page (8 bytes, `Copy`; `Option<Handle>` is 8 bytes too).
///
/// Bits 0–31 are the handle-table index, bits 32–62 the entry's generation (never 0), bit 63
/// says the page is a single-value page kept in the value table (no segment space).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(NonZeroU64);

impl Handle {
    fn new(index: u32, generation: u32, single: bool) -> Self {
        let raw = u64::from(index)
            | (u64::from(generation & GEN_MASK) << 32)
            | if single { SINGLE_BIT } else { 0 };
        // Generations are never 0 (see `next_generation`), so bits 32..63 are not all zero.
        Self(NonZeroU64::new(raw).unwrap_or(NonZeroU64::MIN))
    }

    /// Returns the handle's 64-bit representation (for storing it in a pager's slot map).
    #[must_use]
    pub const fn to_bits(self) -> u64 {
        self.0.get()
    }

    /// Rebuilds a handle from [`to_bits`](Self::to_bits); `None` for 0 (never a handle).
    /// Any other value is accepted here and checked by the pool when used.
    #[must_use]
    pub const fn from_bits(bits: u64) -> Option<Self> {
        match NonZeroU64::new(bits) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// Says whether the page is a single-value page (kept in the value table, no segment
    /// space).
    #[must_use]
    pub const fn is_single_value(self) -> bool {
        self.0.get() & SINGLE_BIT != 0
    }

    pub(crate) const fn index(self) -> u32 {
        self.0.get() as u32
    }

    const fn generation(self) -> u32 {
        ((self.0.get() >> 32) as u32) & GEN_MASK
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({self})")
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}#{}{}",
            self.index(),
            self.generation(),
            if self.is_single_value() { "sv" } else { "" }
        )
    }
}

/// Where a live handle's page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// In slot `slot` of segment `segment`, `len` compressed bytes.
    Slot { segment: u32, slot: u16, len: u16 },
    /// In entry `index` of the value table.
    Single { index: u16 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free { next: u32 },
    Live(Location),
}

/// One entry of a handle table (opaque). Tables the caller provides start as
/// [`HandleSlot::EMPTY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleSlot {
    generation: u32,
    state: State,
}

impl HandleSlot {
    /// An unused entry.
    pub const EMPTY: Self = Self {
        generation: 1,
        state: State::Free { next: NO_NEXT },
    };
}

impl Default for HandleSlot {
    fn default() -> Self {
        Self::EMPTY
    }
}

fn next_generation(g: u32) -> u32 {
    let n = g.wrapping_add(1) & GEN_MASK;
    if n == 0 { 1 } else { n }
}

/// The handle table: entries, a free list through freed entries, and a high-water mark
/// (entries at or past it were never used, so the table needs no initialisation pass).
#[derive(Debug)]
pub(crate) struct HandleTable<'a> {
    slots: Table<'a, HandleSlot>,
    free_head: u32,
    high_water: u32,
    live: usize,
}

impl<'a> HandleTable<'a> {
    pub(crate) fn new(mut slots: Table<'a, HandleSlot>) -> Self {
        // A borrowed table may hold anything; everything past the high-water mark is reset
        // when first used, but generations are taken from the entry, so start clean.
        for s in slots.iter_mut() {
            *s = HandleSlot::EMPTY;
        }
        Self {
            slots,
            free_head: NO_NEXT,
            high_water: 0,
            live: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len().min(MAX_HANDLES)
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    pub(crate) fn is_full(&self) -> bool {
        self.free_head == NO_NEXT && self.high_water as usize >= self.capacity()
    }

    /// Issues a handle for `loc`; `None` when the table is full (nothing changed).
    pub(crate) fn insert(&mut self, loc: Location) -> Option<Handle> {
        let index = if self.free_head != NO_NEXT {
            self.free_head
        } else if (self.high_water as usize) < self.capacity() {
            self.high_water
        } else {
            return None;
        };
        let slot = self.slots.get_mut(index as usize)?;
        let State::Free { next } = slot.state else {
            return None;
        };
        slot.state = State::Live(loc);
        let generation = slot.generation;
        if index == self.free_head {
            self.free_head = next;
        } else {
            self.high_water += 1;
        }
        self.live += 1;
        Some(Handle::new(
            index,
            generation,
            matches!(loc, Location::Single { .. }),
        ))
    }

    /// Where `h`'s page is, if `h` is live.
    pub(crate) fn get(&self, h: Handle) -> Option<Location> {
        let slot = self.slots.get(h.index() as usize)?;
        match slot.state {
            State::Live(loc)
                if slot.generation == h.generation()
                    && matches!(loc, Location::Single { .. }) == h.is_single_value() =>
            {
                Some(loc)
            }
            _ => None,
        }
    }

    /// The location of entry `index` if it is live (compaction's back-pointer check).
    pub(crate) fn location_of_index(&self, index: u32) -> Option<Location> {
        match self.slots.get(index as usize)?.state {
            State::Live(loc) => Some(loc),
            State::Free { .. } => None,
        }
    }

    /// Moves live entry `index` to `loc` (compaction). Returns false if it is not live.
    pub(crate) fn relocate(&mut self, index: u32, loc: Location) -> bool {
        match self.slots.get_mut(index as usize) {
            Some(slot) if matches!(slot.state, State::Live(_)) => {
                slot.state = State::Live(loc);
                true
            }
            _ => false,
        }
    }

    /// Frees `h`; the caller checked it is live.
    pub(crate) fn remove(&mut self, h: Handle) {
        let head = self.free_head;
        if let Some(slot) = self.slots.get_mut(h.index() as usize) {
            if matches!(slot.state, State::Live(_)) {
                slot.state = State::Free { next: head };
                slot.generation = next_generation(slot.generation);
                self.free_head = h.index();
                self.live -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_through_bits_and_keep_the_single_value_flag() {
        let h = Handle::new(7, 3, true);
        assert!(h.is_single_value());
        assert_eq!(Handle::from_bits(h.to_bits()), Some(h));
        assert_eq!(Handle::from_bits(0), None);
        assert_eq!(size_of::<Option<Handle>>(), 8);
    }

    #[test]
    fn a_freed_handle_is_refused_after_its_entry_is_reused() {
        let mut store = [HandleSlot::EMPTY; 2];
        let mut t = HandleTable::new(Table::Borrowed(&mut store));
        let a = t
            .insert(Location::Slot {
                segment: 0,
                slot: 0,
                len: 9,
            })
            .unwrap();
        let b = t.insert(Location::Single { index: 4 }).unwrap();
        assert!(t.insert(Location::Single { index: 1 }).is_none());
        assert!(t.is_full());
        t.remove(a);
        assert_eq!(t.get(a), None);
        let c = t
            .insert(Location::Slot {
                segment: 1,
                slot: 2,
                len: 9,
            })
            .unwrap();
        assert_eq!(c.index(), a.index());
        assert_ne!(c, a);
        assert_eq!(t.get(a), None);
        assert_eq!(
            t.get(c),
            Some(Location::Slot {
                segment: 1,
                slot: 2,
                len: 9
            })
        );
        assert_eq!(t.get(b), Some(Location::Single { index: 4 }));
        assert_eq!(t.live(), 2);
    }

    #[test]
    fn generations_wrap_without_reaching_zero() {
        assert_eq!(next_generation(GEN_MASK), 1);
        assert_eq!(next_generation(1), 2);
    }
}
