//! A slot bitmap: one bit per swap slot of a file.

use alloc::vec::Vec;

/// One bit per slot, set when the slot holds a record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    len: u32,
}

impl Bitmap {
    /// A bitmap of `len` clear bits; `None` when the memory cannot be allocated.
    pub(crate) fn new(len: u32) -> Option<Self> {
        let mut b = Self::default();
        b.grow(len)?;
        Some(b)
    }

    /// Grows to `len` bits (new bits clear); `None` when the memory cannot be allocated
    /// (nothing changes then).
    pub(crate) fn grow(&mut self, len: u32) -> Option<()> {
        if len <= self.len {
            return Some(());
        }
        let words = (len as usize).div_ceil(64);
        self.words
            .try_reserve_exact(words.saturating_sub(self.words.len()))
            .ok()?;
        self.words.resize(words, 0);
        self.len = len;
        Some(())
    }

    /// Reserves memory for `len` bits, so a later [`grow`](Self::grow) to `len` cannot fail;
    /// `None` when the memory cannot be allocated.
    pub(crate) fn reserve(&mut self, len: u32) -> Option<()> {
        let words = (len as usize).div_ceil(64);
        self.words
            .try_reserve_exact(words.saturating_sub(self.words.len()))
            .ok()
    }

    /// Whether bit `i` is set (false past the end).
    pub(crate) fn get(&self, i: u32) -> bool {
        self.words
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i` to `on` (ignored past the end).
    pub(crate) fn set(&mut self, i: u32, on: bool) {
        if i >= self.len {
            return;
        }
        if let Some(w) = self.words.get_mut(i as usize / 64) {
            if on {
                *w |= 1 << (i % 64);
            } else {
                *w &= !(1 << (i % 64));
            }
        }
    }

    /// The first clear bit, if any.
    pub(crate) fn first_clear(&self) -> Option<u32> {
        self.words.iter().enumerate().find_map(|(wi, w)| {
            if *w == u64::MAX {
                return None;
            }
            let i = wi as u32 * 64 + w.trailing_ones();
            (i < self.len).then_some(i)
        })
    }

    /// The set bits, in order.
    pub(crate) fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|i| self.get(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_clear_bits_and_grows() {
        let mut b = Bitmap::new(70).unwrap();
        assert_eq!(b.first_clear(), Some(0));
        for i in 0..70 {
            b.set(i, true);
        }
        assert_eq!(b.first_clear(), None);
        b.set(65, false);
        assert_eq!(b.first_clear(), Some(65));
        b.set(65, true);
        b.grow(130).unwrap();
        assert_eq!(b.first_clear(), Some(70));
        assert!(b.get(69) && !b.get(70) && !b.get(500));
        b.set(500, true); // past the end: ignored
        assert_eq!(b.ones().count(), 70);
    }
}
