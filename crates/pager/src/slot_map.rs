//! The compressor pager's slot map: one compressor handle per page of an object, stored
//! compactly (XNU's `compressor_pager` slot arrays).
//!
//! Small objects keep their slots inline (up to [`EMBEDDED_SLOTS`]); objects of up to
//! [`CHUNK_SLOTS`] pages a direct array allocated on the first page-out; bigger objects an
//! indirect array of chunks of [`CHUNK_SLOTS`] slots, each allocated when a page of it is first
//! paged out and freed when its last slot empties. A slot is an `Option<Handle>` (8 bytes: the
//! handle is non-zero).

use alloc::boxed::Box;
use alloc::vec::Vec;

use machvm_compressor::Handle;

/// Slots kept inline in the map itself.
pub const EMBEDDED_SLOTS: u64 = 2;
/// Slots per chunk of an indirect map (and the largest direct map).
pub const CHUNK_SLOTS: u64 = 128;

type Slot = Option<Handle>;

#[derive(Debug)]
struct Chunk {
    used: u32,
    slots: Box<[Slot]>,
}

#[derive(Debug)]
enum Repr {
    Embedded([Slot; EMBEDDED_SLOTS as usize]),
    Direct(Option<Box<[Slot]>>),
    Indirect(Vec<Option<Chunk>>),
}

/// One handle slot per page of an object.
#[derive(Debug)]
pub(crate) struct SlotMap {
    pages: u64,
    used: u64,
    repr: Repr,
}

fn boxed(len: usize) -> Option<Box<[Slot]>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, None);
    Some(v.into_boxed_slice())
}

impl SlotMap {
    /// A map for `pages` pages; `None` when the chunk table of a large map cannot be
    /// allocated.
    pub(crate) fn new(pages: u64) -> Option<Self> {
        let repr = if pages <= EMBEDDED_SLOTS {
            Repr::Embedded([None; EMBEDDED_SLOTS as usize])
        } else if pages <= CHUNK_SLOTS {
            Repr::Direct(None)
        } else {
            let chunks = usize::try_from(pages.div_ceil(CHUNK_SLOTS)).ok()?;
            let mut v = Vec::new();
            v.try_reserve_exact(chunks).ok()?;
            v.resize_with(chunks, || None);
            Repr::Indirect(v)
        };
        Some(Self {
            pages,
            used: 0,
            repr,
        })
    }

    /// Slots holding a handle.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// The handle of page `page`, if any.
    pub(crate) fn get(&self, page: u64) -> Option<Handle> {
        if page >= self.pages {
            return None;
        }
        match &self.repr {
            Repr::Embedded(s) => s.get(page as usize).copied().flatten(),
            Repr::Direct(s) => s.as_ref()?.get(page as usize).copied().flatten(),
            Repr::Indirect(chunks) => {
                let c = chunks.get((page / CHUNK_SLOTS) as usize)?.as_ref()?;
                c.slots
                    .get((page % CHUNK_SLOTS) as usize)
                    .copied()
                    .flatten()
            }
        }
    }

    /// Stores `handle` for page `page`; returns the handle it replaces. `Err(())` when the
    /// page is outside the map or the slot's memory cannot be allocated (nothing changes).
    pub(crate) fn set(&mut self, page: u64, handle: Handle) -> Result<Option<Handle>, ()> {
        let slot = self.slot_mut(page, true).ok_or(())?;
        let old = slot.replace(handle);
        if old.is_none() {
            self.used += 1;
            self.chunk_used(page, 1);
        }
        Ok(old)
    }

    /// Removes and returns the handle of page `page`, if any.
    pub(crate) fn take(&mut self, page: u64) -> Option<Handle> {
        let old = self.slot_mut(page, false)?.take()?;
        self.used -= 1;
        self.chunk_used(page, -1);
        Some(old)
    }

    /// Removes and returns the handle of page `page` if it is still `handle`.
    pub(crate) fn take_if(&mut self, page: u64, handle: Handle) -> bool {
        if self.get(page) == Some(handle) {
            self.take(page);
            true
        } else {
            false
        }
    }

    /// Empties the map, calling `f` with every handle it held.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(Handle)) {
        let repr = core::mem::replace(&mut self.repr, Repr::Direct(None));
        let mut each = |s: &[Slot]| s.iter().flatten().for_each(|h| f(*h));
        match &repr {
            Repr::Embedded(s) => each(s),
            Repr::Direct(s) => each(s.as_deref().unwrap_or(&[])),
            Repr::Indirect(chunks) => chunks.iter().flatten().for_each(|c| each(&c.slots)),
        }
        self.repr = match repr {
            Repr::Embedded(_) => Repr::Embedded([None; EMBEDDED_SLOTS as usize]),
            Repr::Direct(_) => Repr::Direct(None),
            Repr::Indirect(mut chunks) => {
                chunks.iter_mut().for_each(|c| *c = None);
                Repr::Indirect(chunks)
            }
        };
        self.used = 0;
    }

    /// Chunks (or direct arrays) allocated now: a measure of the map's memory.
    pub(crate) fn allocations(&self) -> usize {
        match &self.repr {
            Repr::Embedded(_) => 0,
            Repr::Direct(s) => usize::from(s.is_some()),
            Repr::Indirect(chunks) => chunks.iter().flatten().count(),
        }
    }

    fn slot_mut(&mut self, page: u64, create: bool) -> Option<&mut Slot> {
        if page >= self.pages {
            return None;
        }
        match &mut self.repr {
            Repr::Embedded(s) => s.get_mut(page as usize),
            Repr::Direct(s) => {
                if s.is_none() && create {
                    *s = Some(boxed(self.pages as usize)?);
                }
                s.as_mut()?.get_mut(page as usize)
            }
            Repr::Indirect(chunks) => {
                let c = chunks.get_mut((page / CHUNK_SLOTS) as usize)?;
                if c.is_none() && create {
                    *c = Some(Chunk {
                        used: 0,
                        slots: boxed(CHUNK_SLOTS as usize)?,
                    });
                }
                c.as_mut()?.slots.get_mut((page % CHUNK_SLOTS) as usize)
            }
        }
    }

    /// Counts a slot in or out of its chunk, freeing a chunk (or direct array) left empty.
    fn chunk_used(&mut self, page: u64, delta: i32) {
        match &mut self.repr {
            Repr::Embedded(_) => {}
            Repr::Direct(s) => {
                if self.used == 0 {
                    *s = None;
                }
            }
            Repr::Indirect(chunks) => {
                if let Some(slot) = chunks.get_mut((page / CHUNK_SLOTS) as usize) {
                    if let Some(c) = slot {
                        c.used = c.used.saturating_add_signed(delta);
                        if c.used == 0 {
                            *slot = None;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64) -> Handle {
        Handle::from_bits(n).unwrap()
    }

    #[test]
    fn each_representation_stores_and_frees() {
        for pages in [1, 2, 3, 128, 129, 1000] {
            let mut m = SlotMap::new(pages).unwrap();
            let last = pages - 1;
            assert_eq!(m.allocations(), 0);
            assert_eq!(m.set(0, h(1)), Ok(None));
            assert_eq!(
                m.set(last, h(2)),
                Ok(if last == 0 { Some(h(1)) } else { None })
            );
            assert_eq!(m.get(last), Some(h(2)));
            assert_eq!(m.set(pages, h(3)), Err(()));
            assert!(m.take_if(last, h(2)));
            assert!(!m.take_if(last, h(2)));
            if last != 0 {
                assert_eq!(m.take(0), Some(h(1)));
            }
            assert_eq!(m.used(), 0);
            assert_eq!(m.allocations(), 0, "{pages} pages: empty chunks are freed");
        }
    }

    #[test]
    fn indirect_maps_allocate_only_touched_chunks_and_drain() {
        let mut m = SlotMap::new(10 * CHUNK_SLOTS).unwrap();
        m.set(5, h(1)).unwrap();
        m.set(3 * CHUNK_SLOTS + 1, h(2)).unwrap();
        m.set(3 * CHUNK_SLOTS + 2, h(3)).unwrap();
        assert_eq!((m.used(), m.allocations()), (3, 2));
        let mut seen = alloc::vec::Vec::new();
        m.drain(|x| seen.push(x));
        seen.sort();
        assert_eq!(seen, [h(1), h(2), h(3)]);
        assert_eq!((m.used(), m.allocations()), (0, 0));
        assert_eq!(m.get(5), None);
    }
}
