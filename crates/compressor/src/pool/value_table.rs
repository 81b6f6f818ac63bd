//! The single-value table: pages that are one repeated value, kept as a refcounted value
//! instead of segment space.
//!
//! A small open-addressed hash of [`VALUE_TABLE_ENTRIES`] entries, probed linearly for at
//! most [`VALUE_TABLE_PROBES`] entries from the value's home. A value that finds neither its
//! entry nor a free one within the probe window (or whose refcount would overflow) goes to a
//! segment slot instead, as an 8-byte record.

/// Entries in the single-value table.
pub const VALUE_TABLE_ENTRIES: usize = 256;
/// Entries probed from a value's home entry before giving up.
pub const VALUE_TABLE_PROBES: usize = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    value: u64,
    /// Handles that refer to this entry; 0 = free.
    refs: u32,
}

#[derive(Debug)]
pub(crate) struct ValueTable {
    entries: [Entry; VALUE_TABLE_ENTRIES],
    in_use: usize,
}

fn home(value: u64) -> usize {
    // Fibonacci hashing of both halves: zero and small repeated values spread out.
    ((value ^ (value >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize
        % VALUE_TABLE_ENTRIES
}

impl ValueTable {
    pub(crate) const fn new() -> Self {
        Self {
            entries: [Entry { value: 0, refs: 0 }; VALUE_TABLE_ENTRIES],
            in_use: 0,
        }
    }

    /// Entries with at least one reference.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    /// Finds the index `value` would take (its own entry, or the first free one in the probe
    /// window), without changing anything; `None` when the window is full of other values.
    pub(crate) fn slot_for(&self, value: u64) -> Option<u16> {
        let start = home(value);
        let mut free = None;
        for i in 0..VALUE_TABLE_PROBES {
            let idx = (start + i) % VALUE_TABLE_ENTRIES;
            let e = self.entries.get(idx)?;
            if e.refs != 0 && e.value == value {
                return (e.refs < u32::MAX).then_some(idx as u16);
            }
            if e.refs == 0 && free.is_none() {
                free = Some(idx as u16);
            }
        }
        free
    }

    /// Adds a reference to `value` at `index` (from [`slot_for`](Self::slot_for)).
    pub(crate) fn acquire(&mut self, index: u16, value: u64) {
        if let Some(e) = self.entries.get_mut(index as usize) {
            if e.refs == 0 {
                *e = Entry { value, refs: 1 };
                self.in_use += 1;
            } else {
                e.refs = e.refs.saturating_add(1);
            }
        }
    }

    /// The value at `index` if the entry is in use.
    pub(crate) fn value(&self, index: u16) -> Option<u64> {
        self.entries
            .get(index as usize)
            .filter(|e| e.refs != 0)
            .map(|e| e.value)
    }

    /// The reference count at `index` (0 = free).
    pub(crate) fn refs(&self, index: u16) -> u32 {
        self.entries.get(index as usize).map_or(0, |e| e.refs)
    }

    /// Drops one reference at `index`.
    pub(crate) fn release(&mut self, index: u16) {
        if let Some(e) = self.entries.get_mut(index as usize) {
            if e.refs > 0 {
                e.refs -= 1;
                if e.refs == 0 {
                    self.in_use -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_refcounted_entry() {
        let mut t = ValueTable::new();
        let i = t.slot_for(0).unwrap();
        t.acquire(i, 0);
        assert_eq!(t.slot_for(0), Some(i));
        t.acquire(i, 0);
        assert_eq!((t.refs(i), t.in_use()), (2, 1));
        t.release(i);
        assert_eq!(t.value(i), Some(0));
        t.release(i);
        assert_eq!((t.value(i), t.in_use()), (None, 0));
    }

    #[test]
    fn a_full_probe_window_refuses_new_values() {
        let mut t = ValueTable::new();
        let mut placed = 0;
        let mut refused = 0;
        for v in 0..(VALUE_TABLE_ENTRIES as u64 * 2) {
            match t.slot_for(v * 0x1_0001) {
                Some(i) => {
                    t.acquire(i, v * 0x1_0001);
                    placed += 1;
                }
                None => refused += 1,
            }
        }
        assert!(placed <= VALUE_TABLE_ENTRIES);
        assert!(refused >= VALUE_TABLE_ENTRIES);
        assert_eq!(t.in_use(), placed);
    }
}
