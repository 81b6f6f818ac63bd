//! Randomised "anywhere" mappings: `machvm-aslr`'s random fit as vm-map's [`Placement`].
//!
//! An address map asks its [`Placement`] where a mapping without a fixed address goes, passing
//! the free gaps that can hold it. [`RandomFit`] answers with a position drawn uniformly among
//! every aligned position of every gap ([`FitRequest::place`]): each position has the same
//! probability, so a large gap is chosen in proportion to its size, and the entropy of the
//! answer is `log2` of the number of positions ([`RandomFit::last_entropy`]).
//! [`VmSystem::set_mmap_randomisation`](crate::VmSystem::set_mmap_randomisation) makes every
//! `mmap` of a system use it.

use machvm_addr::VirtAddr;
use machvm_aslr::{AslrRng, EntropyBits, FitRequest, VaRange};
use machvm_vm_map::{Gap, Placement};

/// Random placement for [`VmMap::enter_with`](machvm_vm_map::VmMap::enter_with): uniform over
/// the aligned positions of the free gaps, optionally restricted to a window.
///
/// # Examples
///
/// ```
/// use machvm::placement::RandomFit;
/// use machvm_aslr::AslrRng;
/// use machvm_vm_map::{Gap, Placement};
/// use machvm::addr::VirtAddr;
///
/// let gaps = [
///     Gap { start: VirtAddr::new(0x10_0000), end: VirtAddr::new(0x10_4000) },
///     Gap { start: VirtAddr::new(0x40_0000), end: VirtAddr::new(0x50_0000) },
/// ];
/// let mut rng = AslrRng::from_seed([7; 32]);
/// let mut fit = RandomFit::new(&mut rng);
/// let at = fit.place(&gaps, 0x4000, 0x1000).unwrap();
/// assert!(gaps.iter().any(|g| at >= g.start && at.as_u64() + 0x4000 <= g.end.as_u64()));
/// // 1 position in the first gap and 253 in the second: log2(254) bits.
/// assert_eq!(fit.last_entropy().unwrap().whole_bits(), 7);
/// ```
#[derive(Debug)]
pub struct RandomFit<'r> {
    rng: &'r mut AslrRng,
    window: Option<VaRange>,
    last: Option<EntropyBits>,
}

impl<'r> RandomFit<'r> {
    /// Random placement anywhere in the map, drawing from `rng`.
    #[must_use]
    pub fn new(rng: &'r mut AslrRng) -> Self {
        Self {
            rng,
            window: None,
            last: None,
        }
    }

    /// Restricts placements to `window` (a mapping must lie wholly inside it).
    #[must_use]
    pub const fn within(mut self, window: VaRange) -> Self {
        self.window = Some(window);
        self
    }

    /// The entropy of the last successful placement (`log2` of the positions it was drawn
    /// from), or `None` before the first one.
    #[must_use]
    pub const fn last_entropy(&self) -> Option<EntropyBits> {
        self.last
    }
}

impl Placement for RandomFit<'_> {
    fn place(&mut self, gaps: &[Gap], size: u64, align: u64) -> Option<VirtAddr> {
        let mut request = FitRequest::new(size, align).ok()?;
        if let Some(window) = self.window {
            request = request.within(window);
        }
        // Empty gaps (start == end) cannot be ranges and hold nothing: skip them.
        let ranges = gaps
            .iter()
            .filter_map(|g| VaRange::from_bounds(g.start, g.end).ok());
        let placed = request.place(ranges, &mut *self.rng).ok()?;
        self.last = Some(placed.bits());
        Some(placed.base())
    }
}
