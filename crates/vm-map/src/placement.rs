//! Where "anywhere" mappings go: the `Placement` hook and its default, first fit.

use machvm_addr::VirtAddr;

/// A free range `[start, end)` of a map, already shrunk by the request's guard gap (a
/// mapping may start anywhere in it, subject to alignment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The lowest usable start address.
    pub start: VirtAddr,
    /// The end of the free range (exclusive).
    pub end: VirtAddr,
}

impl Gap {
    /// The lowest `align`-aligned start in the gap where `size` bytes fit, if any.
    #[must_use]
    pub fn fit(&self, size: u64, align: u64) -> Option<u64> {
        let mask = align.checked_sub(1)?;
        let start = self.start.as_u64().checked_add(mask)? & !mask;
        let end = start.checked_add(size)?;
        (end <= self.end.as_u64()).then_some(start)
    }

    /// How many `align`-aligned starts in the gap can hold `size` bytes.
    #[must_use]
    pub fn slots(&self, size: u64, align: u64) -> u64 {
        let Some(first) = self.fit(size, align) else {
            return 0;
        };
        let last = self.end.as_u64() - size;
        (last - first) / align + 1
    }
}

/// Chooses the start of an "anywhere" mapping among the free ranges of a map (XNU's
/// `vm_map_locate_space_anywhere` with random placement as the pluggable part). The
/// `machvm-aslr` crate implements it with random placement.
///
/// The map checks the answer: it must be `align`-aligned and `[start, start + size)` must
/// lie inside one of `gaps`; anything else fails the request with
/// [`MapError::BadPlacement`](crate::MapError::BadPlacement).
pub trait Placement {
    /// Picks a start address for `size` bytes aligned to `align` (a power of two, at least
    /// the page size) in one of `gaps` (ascending, disjoint), or `None` when none fits.
    fn place(&mut self, gaps: &[Gap], size: u64, align: u64) -> Option<VirtAddr>;
}

/// The default placement: the lowest address that fits (first fit).
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstFit;

impl Placement for FirstFit {
    fn place(&mut self, gaps: &[Gap], size: u64, align: u64) -> Option<VirtAddr> {
        gaps.iter()
            .find_map(|g| g.fit(size, align))
            .and_then(|a| VirtAddr::try_new(a).ok())
    }
}
