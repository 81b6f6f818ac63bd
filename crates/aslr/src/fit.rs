//! Random-fit placement: a uniform choice among every aligned position in every free gap.

use machvm_addr::VirtAddr;
use rand_core::Rng;

use crate::slide::{check_align, uniform_below};
use crate::{AslrError, EntropyBits, VaRange};

/// A request to place `size` bytes aligned to `align` in the free gaps of an address map,
/// optionally only inside a window.
///
/// [`place`](Self::place) is what an address map's find-space calls for a randomised "anywhere"
/// mapping: it counts the aligned positions of every gap that fits (pass one), draws one
/// position uniformly (so a gap is chosen with probability proportional to its number of
/// positions, and every position has the same probability), and walks to it (pass two). The
/// cost is two linear passes over the gaps, no allocation and one random draw; the map's own
/// gap iterator is simply cloned for the second pass.
///
/// # Examples
///
/// ```
/// use machvm_addr::VirtAddr;
/// use machvm_aslr::{AslrRng, FitRequest, VaRange};
///
/// // Two free gaps of a map: 16 KiB and 1 MiB.
/// let gaps = [
///     VaRange::new(VirtAddr::new(0x10_0000), 0x4000)?,
///     VaRange::new(VirtAddr::new(0x40_0000), 0x10_0000)?,
/// ];
/// let req = FitRequest::new(0x4000, 0x1000)?;
/// let mut rng = AslrRng::from_seed([3; 32]);
/// let p = req.place(gaps.iter().copied(), &mut rng)?;
/// // 1 position in the first gap, 253 in the second.
/// assert_eq!(p.positions(), 254);
/// assert!(gaps.iter().any(|g| g.contains_range(p.range())));
/// # Ok::<(), machvm_aslr::AslrError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FitRequest {
    size: u64,
    align: u64,
    within: Option<VaRange>,
}

impl FitRequest {
    /// Returns a request for `size` bytes aligned to `align`.
    ///
    /// # Errors
    ///
    /// - [`AslrError::BadAlignment`] if `align` is not a power of two.
    /// - [`AslrError::ZeroSize`] if `size` is zero.
    pub const fn new(size: u64, align: u64) -> Result<Self, AslrError> {
        if let Err(e) = check_align(align) {
            return Err(e);
        }
        if size == 0 {
            return Err(AslrError::ZeroSize);
        }
        Ok(Self {
            size,
            align,
            within: None,
        })
    }

    /// Restricts the placement to `window` (each gap is clipped to it).
    #[inline]
    #[must_use]
    pub const fn within(mut self, window: VaRange) -> Self {
        self.within = Some(window);
        self
    }

    /// Returns the region size in bytes.
    #[inline]
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// Returns the alignment in bytes.
    #[inline]
    pub const fn align(&self) -> u64 {
        self.align
    }

    /// Returns the window the placement is restricted to, if any.
    #[inline]
    pub const fn window(&self) -> Option<VaRange> {
        self.within
    }

    /// Returns the per-gap counting parameters of this request.
    #[inline]
    fn kernel(&self) -> Kernel {
        let (lo_clip, hi_clip) = match self.within {
            Some(w) => (w.raw_start(), w.raw_last()),
            None => (0, u64::MAX),
        };
        Kernel {
            lo_clip,
            hi_clip,
            mask: self.align - 1,
            need: self.size - 1,
            shift: self.align.trailing_zeros(),
        }
    }

    /// Counts the positions of all gaps, checking that they are sorted and disjoint.
    #[inline]
    fn count<I: Iterator<Item = VaRange>>(&self, gaps: I) -> Result<(u64, Index), AslrError> {
        let k = self.kernel();
        let mut total: u64 = 0;
        let mut index = Index::new();
        // The lowest start the next gap may have; `ended` once a gap reached 2^64 - 1.
        let mut next = 0u64;
        let mut ended = false;
        // Whether a gap was out of order, and the start of the first such gap, kept with
        // flag operations and a conditional move: no branch in the hot loop.
        let mut unsorted = false;
        let mut first_unsorted = 0u64;
        let mut until_block = 0usize;
        for gap in gaps {
            if until_block == 0 {
                until_block = index.record(total);
            }
            until_block -= 1;
            let (start, last) = (gap.raw_start(), gap.raw_last());
            let out_of_order = ended | (start < next);
            first_unsorted = if out_of_order & !unsorted {
                start
            } else {
                first_unsorted
            };
            unsorted |= out_of_order;
            next = last.wrapping_add(1);
            ended |= last == u64::MAX;
            // Sorted, disjoint canonical gaps hold at most 2^57 bytes, hence at most 2^57
            // positions: the sum cannot wrap (and is discarded if the gaps are not sorted).
            total = total.wrapping_add(k.positions(start, last).0);
        }
        if unsorted {
            return Err(AslrError::UnsortedGaps {
                start: first_unsorted,
            });
        }
        Ok((total, index))
    }

    /// Returns the number of positions a placement among `gaps` chooses from.
    ///
    /// # Errors
    ///
    /// - [`AslrError::UnsortedGaps`] if the gaps are not sorted by address and disjoint.
    pub fn positions<I: IntoIterator<Item = VaRange>>(&self, gaps: I) -> Result<u64, AslrError> {
        self.count(gaps.into_iter()).map(|(total, _)| total)
    }

    /// Places the region uniformly among every aligned position of every gap that fits.
    ///
    /// `gaps` must be sorted by address and disjoint (an address map's free gaps always are),
    /// and its iterator must yield the same gaps when cloned.
    ///
    /// # Errors
    ///
    /// - [`AslrError::UnsortedGaps`] if the gaps are not sorted and disjoint.
    /// - [`AslrError::NoFit`] if no gap (clipped to the window) can hold the region.
    /// - [`AslrError::InconsistentGaps`] if the cloned iterator yielded fewer positions than
    ///   the first pass counted.
    /// - [`AslrError::RngStuck`] if the generator is broken (see
    ///   [`MAX_REJECTIONS`](crate::slide::MAX_REJECTIONS)).
    pub fn place<I, R>(&self, gaps: I, rng: &mut R) -> Result<Placement, AslrError>
    where
        I: IntoIterator<Item = VaRange>,
        I::IntoIter: Clone,
        R: Rng + ?Sized,
    {
        let iter = gaps.into_iter();
        let (total, index) = self.count(iter.clone())?;
        if total == 0 {
            return Err(AslrError::NoFit {
                size: self.size,
                align: self.align,
            });
        }
        let pick = uniform_below(rng, total)?;
        self.locate(iter, &index, pick, total)
    }

    /// Places the region at the lowest position of the lowest gap that fits (first fit): the
    /// unrandomised placement a "no randomise" personality uses.
    ///
    /// # Errors
    ///
    /// - [`AslrError::UnsortedGaps`] if the gaps are not sorted and disjoint.
    /// - [`AslrError::NoFit`] if no gap can hold the region.
    pub fn place_first<I>(&self, gaps: I) -> Result<Placement, AslrError>
    where
        I: IntoIterator<Item = VaRange>,
        I::IntoIter: Clone,
    {
        let iter = gaps.into_iter();
        let (total, index) = self.count(iter.clone())?;
        if total == 0 {
            return Err(AslrError::NoFit {
                size: self.size,
                align: self.align,
            });
        }
        let p = self.locate(iter, &index, 0, 1)?;
        Ok(p)
    }

    /// Returns the `pick`-th position (0-based, in address order) as a placement among `total`.
    fn locate<I: Iterator<Item = VaRange>>(
        &self,
        mut gaps: I,
        index: &Index,
        pick: u64,
        total: u64,
    ) -> Result<Placement, AslrError> {
        // Skip the blocks of gaps that lie wholly before the pick.
        let (skip, before) = index.block_of(pick);
        if skip > 0 && gaps.nth(skip - 1).is_none() {
            return Err(AslrError::InconsistentGaps);
        }
        let mut pick = pick - before;
        let k = self.kernel();
        for gap in gaps {
            let (n, lo) = k.positions(gap.raw_start(), gap.raw_last());
            if pick < n {
                let base = lo + (pick << self.align.trailing_zeros());
                return Ok(Placement {
                    range: VaRange::from_raw_unchecked(base, self.size),
                    positions: total,
                });
            }
            pick -= n;
        }
        Err(AslrError::InconsistentGaps)
    }
}

/// Checkpoints of the first pass: the running total of positions before every `2^shift`-th
/// gap, so the second pass starts at the right block instead of at the first gap. The block
/// size doubles when the checkpoints fill up, so the index has a fixed size and the second
/// pass walks at most `2 * gaps / CHECKPOINTS` gaps (plus an `nth`, which is O(1) for slices).
#[derive(Clone, Copy, Debug)]
struct Index {
    shift: u32,
    len: usize,
    totals: [u64; CHECKPOINTS],
}

/// Checkpoints kept by the first pass.
const CHECKPOINTS: usize = 64;

impl Index {
    const fn new() -> Self {
        Self {
            shift: 3,
            len: 0,
            totals: [0; CHECKPOINTS],
        }
    }

    /// Records `total` (the positions before the gap that starts a block) and returns the
    /// number of gaps until the next block starts. Called once per block, out of line.
    #[cold]
    #[inline(never)]
    fn record(&mut self, total: u64) -> usize {
        if self.len == CHECKPOINTS {
            // Keep every other checkpoint: blocks twice as long. The current gap is the
            // `CHECKPOINTS`-th block start, so it starts a block of the new size too.
            for j in 0..CHECKPOINTS / 2 {
                self.totals[j] = self.totals[2 * j];
            }
            self.len = CHECKPOINTS / 2;
            self.shift += 1;
        }
        self.totals[self.len] = total;
        self.len += 1;
        1 << self.shift
    }

    /// Returns the number of gaps before the block holding position `pick`, and the
    /// positions before that block.
    #[inline]
    fn block_of(&self, pick: u64) -> (usize, u64) {
        let mut j = 0;
        while j + 1 < self.len && self.totals[j + 1] <= pick {
            j += 1;
        }
        (
            j << self.shift,
            if self.len == 0 { 0 } else { self.totals[j] },
        )
    }
}

/// The per-gap arithmetic of a request, hoisted out of the loops: clip to the window, round
/// the start up, count the bases, without branches that depend on the request.
#[derive(Clone, Copy)]
struct Kernel {
    lo_clip: u64,
    hi_clip: u64,
    mask: u64,
    need: u64,
    shift: u32,
}

impl Kernel {
    /// Returns the number of aligned bases `b` with `[b, b + size)` inside `[start, last]`
    /// clipped to the window, and the lowest one.
    #[inline(always)]
    fn positions(&self, start: u64, last: u64) -> (u64, u64) {
        let first = start.max(self.lo_clip);
        let last = last.min(self.hi_clip);
        let lo = first.wrapping_add(self.mask) & !self.mask;
        let hi = last.wrapping_sub(self.need);
        // `lo >= first`: rounding did not wrap; `last >= need`: `hi` did not wrap; then
        // `lo <= hi` means the region fits (and implies `first <= last`). Computed without a
        // branch: whether a gap fits is data-dependent and would mispredict often.
        let fits = (lo >= first) & (last >= self.need) & (lo <= hi);
        let keep = u64::from(fits).wrapping_neg();
        let n = (hi.wrapping_sub(lo) >> self.shift).wrapping_add(1);
        (n & keep, lo & keep)
    }
}

/// Where a [`FitRequest`] placed a region, and how many positions it was chosen from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    range: VaRange,
    positions: u64,
}

impl Placement {
    /// Returns the placed region.
    #[inline]
    pub const fn range(&self) -> VaRange {
        self.range
    }

    /// Returns the first address of the placed region.
    #[inline]
    pub const fn base(&self) -> VirtAddr {
        self.range.start()
    }

    /// Returns the number of positions the placement was chosen from (1 for first fit).
    #[inline]
    pub const fn positions(&self) -> u64 {
        self.positions
    }

    /// Returns the entropy of the placement, `log2(positions)`.
    #[inline]
    pub const fn bits(&self) -> EntropyBits {
        EntropyBits::from_positions(self.positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AslrRng;

    fn r(start: u64, len: u64) -> VaRange {
        VaRange::from_raw(start, len).unwrap()
    }

    #[test]
    fn counts_positions_per_gap() {
        let req = FitRequest::new(0x2000, 0x1000).unwrap();
        // 0x3000 bytes: bases 0x0, 0x1000 -> 2; unaligned 0x5800..0x8800: 0x6000 only -> 1.
        let gaps = [r(0, 0x3000), r(0x5800, 0x3000), r(0x10000, 0x1000)];
        assert_eq!(req.positions(gaps), Ok(3));
    }

    #[test]
    fn every_position_is_reachable_and_nothing_else() {
        let req = FitRequest::new(0x1000, 0x1000).unwrap();
        let gaps = [r(0x1000, 0x2000), r(0x8000, 0x1000), r(0xa000, 0x3000)];
        let mut seen = alloc::collections::BTreeSet::new();
        let mut rng = AslrRng::from_seed([9; 32]);
        // Six positions: all are seen within 200 seeded draws (miri runs the short version).
        for _ in 0..if cfg!(miri) { 200 } else { 2000 } {
            let p = req.place(gaps, &mut rng).unwrap();
            assert_eq!(p.positions(), 6);
            seen.insert(p.base().as_u64());
        }
        let want: alloc::collections::BTreeSet<u64> =
            [0x1000, 0x2000, 0x8000, 0xa000, 0xb000, 0xc000].into();
        assert_eq!(seen, want);
    }

    #[test]
    fn window_clips_gaps() {
        let req = FitRequest::new(0x1000, 0x1000)
            .unwrap()
            .within(r(0x2000, 0x2000));
        let gaps = [r(0, 0x10000)];
        assert_eq!(req.positions(gaps), Ok(2));
        assert_eq!(req.place_first(gaps).unwrap().base(), VirtAddr::new(0x2000));
    }

    #[test]
    fn unsorted_or_overlapping_gaps_are_refused() {
        let req = FitRequest::new(0x1000, 0x1000).unwrap();
        let mut rng = AslrRng::from_seed([0; 32]);
        assert_eq!(
            req.place([r(0x5000, 0x1000), r(0x1000, 0x1000)], &mut rng),
            Err(AslrError::UnsortedGaps { start: 0x1000 })
        );
        assert_eq!(
            req.place([r(0x1000, 0x2000), r(0x2000, 0x1000)], &mut rng),
            Err(AslrError::UnsortedGaps { start: 0x2000 })
        );
        // The first gap out of order is named, not a later one.
        assert_eq!(
            req.positions([r(0x9000, 0x1000), r(0x4000, 0x1000), r(0x2000, 0x1000)]),
            Err(AslrError::UnsortedGaps { start: 0x4000 })
        );
        // A gap ending at 2^64 followed by anything.
        assert_eq!(
            req.positions([r(0xffff_ffff_ffff_0000, 0x1_0000), r(0, 0x1000)]),
            Err(AslrError::UnsortedGaps { start: 0 })
        );
    }

    #[test]
    fn nothing_fits_is_no_fit() {
        let req = FitRequest::new(0x4000, 0x1000).unwrap();
        let mut rng = AslrRng::from_seed([0; 32]);
        assert_eq!(
            req.place([r(0x1000, 0x3000)], &mut rng),
            Err(AslrError::NoFit {
                size: 0x4000,
                align: 0x1000
            })
        );
        assert_eq!(
            req.place(core::iter::empty(), &mut rng),
            Err(AslrError::NoFit {
                size: 0x4000,
                align: 0x1000
            })
        );
    }

    #[test]
    fn checkpoints_find_every_pick_across_compactions() {
        // 5000 one-position gaps: the index compacts several times (blocks of 8 up to 128).
        let req = FitRequest::new(0x1000, 0x1000).unwrap();
        let gaps: alloc::vec::Vec<VaRange> = (0..5000u64)
            .map(|i| r(0x10_0000 + i * 0x3000, 0x1000))
            .collect();
        let (total, index) = req.count(gaps.iter().copied()).unwrap();
        assert_eq!(total, 5000);
        assert!(index.shift > 3 && index.len <= CHECKPOINTS);
        for pick in [
            0u64, 1, 7, 8, 9, 511, 512, 513, 1023, 1024, 4095, 4096, 4999,
        ] {
            let p = req
                .locate(gaps.iter().copied(), &index, pick, total)
                .unwrap();
            assert_eq!(p.base().as_u64(), 0x10_0000 + pick * 0x3000, "pick {pick}");
        }
        // Gaps without positions inside blocks do not confuse the skip.
        let mixed: alloc::vec::Vec<VaRange> = (0..3000u64)
            .map(|i| {
                r(
                    0x10_0000 + i * 0x3000,
                    if i % 3 == 0 { 0x1000 } else { 0x800 },
                )
            })
            .collect();
        let (total, index) = req.count(mixed.iter().copied()).unwrap();
        assert_eq!(total, 1000);
        for pick in [0u64, 1, 499, 998, 999] {
            let p = req
                .locate(mixed.iter().copied(), &index, pick, total)
                .unwrap();
            assert_eq!(
                p.base().as_u64(),
                0x10_0000 + pick * 3 * 0x3000,
                "pick {pick}"
            );
        }
    }

    #[test]
    fn gap_at_the_top_of_the_address_space() {
        let req = FitRequest::new(0x1000, 0x1000).unwrap();
        let top = r(0xffff_ffff_ffff_c000, 0x4000);
        let mut rng = AslrRng::from_seed([5; 32]);
        for _ in 0..if cfg!(miri) { 10 } else { 100 } {
            let p = req.place([top], &mut rng).unwrap();
            assert!(top.contains_range(p.range()));
        }
    }
}
