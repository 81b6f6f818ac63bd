//! Address-space layouts: windows per region, slides inside them, reserved ranges, policy
//! floors and the report.
//!
//! # Design
//!
//! - Windows are deterministic and disjoint (see [`LayoutConfig::windows`]), separated by
//!   guard gaps, so regions can never overlap whatever the slides are.
//! - Each region is placed with [`FitRequest`] over its window minus the caller's reserved
//!   ranges, minus the window's lowest aligned position (the zero slide): the placement is
//!   uniform over every position left, and its entropy is counted exactly. Without reserved
//!   ranges this is the same distribution as [`SlideRequest`](crate::SlideRequest).
//! - The draws happen in a fixed order (kernel text, direct map, executable, shared cache,
//!   mmap, thread stacks, main stack), so a seeded generator reproduces a layout.
//! - The policy is checked after placement: a layout below a floor is an error and is not
//!   returned.

mod config;
mod report;

use core::slice;

use machvm_addr::VirtAddr;
use rand_core::CryptoRng;

pub use config::{
    Arch, KERNEL_TOP_RESERVE, LayoutConfig, MAX_DESIGN_BITS, Policy, REGION_COUNT, RegionKind,
    RegionSpec, SUPPORTED, USER_FLOOR, X86_64_KERNEL_TEXT_FLOOR,
};

use crate::{AslrError, EntropyBits, FitRequest, VaRange};

/// The most reserved ranges a [`LayoutBuilder`] takes.
pub const MAX_RESERVED: usize = 16;

/// Whether a user address space is randomised (Linux `personality(ADDR_NO_RANDOMIZE)`, XNU's
/// `_POSIX_SPAWN_DISABLE_ASLR`).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Personality {
    /// Every user region is slid.
    #[default]
    Randomize,
    /// Every user region sits at its window's lowest free aligned position: slide zero,
    /// 0 bits. The kernel half is governed by [`LayoutBuilder::kaslr`].
    NoRandomize,
}

/// Builds [`Layout`]s: a configuration, reserved ranges, a personality and a policy.
///
/// # Examples
///
/// ```
/// use machvm_addr::{VaWidth, VirtAddr};
/// use machvm_aslr::{AslrRng, LayoutBuilder, LayoutConfig, Personality, RegionKind, VaRange};
///
/// let config = LayoutConfig::x86_64(VaWidth::X86_64_4LEVEL)?;
/// // Keep the first 64 GiB above the null guard free for something else.
/// let builder = LayoutBuilder::new(config)
///     .reserve(VaRange::new(VirtAddr::new(4 << 30), 64 << 30)?)?;
/// let mut rng = AslrRng::from_seed([1; 32]);
/// let layout = builder.build(&mut rng)?;
/// let exe = layout.region(RegionKind::Executable);
/// assert!(exe.range().start().as_u64() >= (68 << 30));
/// assert!(exe.bits().whole_bits() >= 27);
///
/// let plain = builder.personality(Personality::NoRandomize).build(&mut rng)?;
/// assert_eq!(plain.region(RegionKind::Executable).bits().whole_bits(), 0);
/// # Ok::<(), machvm_aslr::AslrError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutBuilder {
    config: LayoutConfig,
    reserved: [VaRange; MAX_RESERVED],
    reserved_len: usize,
    personality: Personality,
    kaslr: bool,
    policy: Policy,
}

impl LayoutBuilder {
    /// Returns a builder for `config` with no reserved ranges, randomisation on in both halves
    /// and the default policy ([`Policy::default_for`]).
    pub const fn new(config: LayoutConfig) -> Self {
        Self {
            config,
            reserved: [VaRange::from_raw_unchecked(0, 1); MAX_RESERVED],
            reserved_len: 0,
            personality: Personality::Randomize,
            kaslr: true,
            policy: Policy::default_for(&config),
        }
    }

    /// Adds a range no region may overlap (firmware, a fixed mapping, an existing image).
    /// Ranges may overlap each other.
    ///
    /// # Errors
    ///
    /// - [`AslrError::TooManyReserved`] if [`MAX_RESERVED`] ranges are already reserved.
    pub fn reserve(mut self, range: VaRange) -> Result<Self, AslrError> {
        if self.reserved_len == MAX_RESERVED {
            return Err(AslrError::TooManyReserved { max: MAX_RESERVED });
        }
        // Insertion sort by start: the free-gap walk needs them in order.
        let mut i = self.reserved_len;
        while i > 0 && self.reserved[i - 1].raw_start() > range.raw_start() {
            self.reserved[i] = self.reserved[i - 1];
            i -= 1;
        }
        self.reserved[i] = range;
        self.reserved_len += 1;
        Ok(self)
    }

    /// Sets the user personality.
    #[inline]
    #[must_use]
    pub const fn personality(mut self, personality: Personality) -> Self {
        self.personality = personality;
        self
    }

    /// Switches kernel randomisation (kernel text and direct map) on or off (a `nokaslr` boot).
    #[inline]
    #[must_use]
    pub const fn kaslr(mut self, on: bool) -> Self {
        self.kaslr = on;
        self
    }

    /// Sets the policy the layout is checked against.
    #[inline]
    #[must_use]
    pub const fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Returns the configuration.
    #[inline]
    pub const fn config(&self) -> &LayoutConfig {
        &self.config
    }

    /// Returns the reserved ranges, sorted by start.
    #[inline]
    pub fn reserved(&self) -> &[VaRange] {
        self.reserved.get(..self.reserved_len).unwrap_or(&[])
    }

    /// Returns whether region `kind` is randomised under this builder's settings.
    #[inline]
    const fn randomizes(&self, kind: RegionKind) -> bool {
        if kind.is_kernel() {
            self.kaslr
        } else {
            matches!(self.personality, Personality::Randomize)
        }
    }

    /// Builds a layout, drawing every slide from `rng`.
    ///
    /// # Errors
    ///
    /// - [`AslrError::LayoutDoesNotFit`] if the configuration's windows do not fit.
    /// - [`AslrError::RegionBlocked`] if reserved ranges leave no room for a region in its
    ///   window.
    /// - [`AslrError::BelowPolicy`] if a randomised region has fewer positions than its
    ///   floor (reserved ranges can take positions away).
    /// - [`AslrError::RngStuck`] if the generator is broken.
    pub fn build<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Result<Layout, AslrError> {
        let windows = self.config.windows()?;
        let mut regions = [Region::EMPTY; REGION_COUNT];
        for kind in RegionKind::ALL {
            let i = kind.index();
            regions[i] = self.place(kind, windows[i], rng)?;
        }
        let layout = Layout {
            config: self.config,
            regions,
        };
        layout.check(&self.policy)?;
        Ok(layout)
    }

    /// Places one region in its window.
    fn place<R: CryptoRng + ?Sized>(
        &self,
        kind: RegionKind,
        window: VaRange,
        rng: &mut R,
    ) -> Result<Region, AslrError> {
        let spec = self.config.spec(kind);
        let footprint = self.config.footprint(kind);
        let align = spec.align();
        let blocked = AslrError::RegionBlocked { region: kind };
        // Windows start aligned, so the zero slide is the window start.
        let unslid = window.raw_start();
        let randomized = self.randomizes(kind);
        let req = FitRequest::new(footprint, align)?;
        let placement = if randomized {
            let first = unslid.checked_add(align).ok_or(blocked)?;
            let gaps = FreeIn::new(first, window.raw_last(), self.reserved());
            req.place(gaps, rng)
        } else {
            let gaps = FreeIn::new(unslid, window.raw_last(), self.reserved());
            req.place_first(gaps)
        };
        let placement = placement.map_err(|e| match e {
            AslrError::NoFit { .. } => blocked,
            other => other,
        })?;
        let base = placement.base().as_u64();
        let slot = (base - unslid) >> align.trailing_zeros();
        let (range, anchor) = if kind == RegionKind::MainStack {
            // Top = base + footprint - page, 16-byte aligned; the mapping ends at the top's
            // page boundary and holds the stack and its guard below: inside [base, base +
            // footprint) by construction.
            let page = self.config.page().bytes();
            let top = base + footprint - page;
            let map_end = (top + page - 1) & !(page - 1);
            let map_start = map_end - spec.size();
            (VaRange::from_raw_unchecked(map_start, spec.size()), top)
        } else {
            (placement.range(), base)
        };
        Ok(Region {
            kind,
            range,
            window,
            align,
            anchor,
            slot,
            positions: if randomized { placement.positions() } else { 1 },
            randomized,
        })
    }
}

/// The free parts of `[first, last]` around sorted reserved ranges, in address order.
#[derive(Clone, Debug)]
struct FreeIn<'a> {
    cursor: Option<u64>,
    last: u64,
    reserved: slice::Iter<'a, VaRange>,
}

impl<'a> FreeIn<'a> {
    fn new(first: u64, last: u64, reserved: &'a [VaRange]) -> Self {
        Self {
            cursor: (first <= last).then_some(first),
            last,
            reserved: reserved.iter(),
        }
    }
}

impl Iterator for FreeIn<'_> {
    type Item = VaRange;

    fn next(&mut self) -> Option<VaRange> {
        loop {
            let c = self.cursor?;
            let Some(r) = self.reserved.next() else {
                self.cursor = None;
                return Some(VaRange::from_raw_unchecked(c, self.last - c + 1));
            };
            if r.raw_last() < c {
                continue;
            }
            if r.raw_start() > self.last {
                self.cursor = None;
                return Some(VaRange::from_raw_unchecked(c, self.last - c + 1));
            }
            // The free part resumes after `r` (if anything is left of the window).
            self.cursor = r
                .raw_last()
                .checked_add(1)
                .filter(|&next| next <= self.last);
            if r.raw_start() > c {
                return Some(VaRange::from_raw_unchecked(c, r.raw_start() - c));
            }
        }
    }
}

/// One placed region of a [`Layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    kind: RegionKind,
    range: VaRange,
    window: VaRange,
    align: u64,
    anchor: u64,
    slot: u64,
    positions: u64,
    randomized: bool,
}

impl Region {
    const EMPTY: Self = Self {
        kind: RegionKind::KernelText,
        range: VaRange::from_raw_unchecked(0, 1),
        window: VaRange::from_raw_unchecked(0, 1),
        align: 1,
        anchor: 0,
        slot: 0,
        positions: 1,
        randomized: false,
    };

    /// Returns the kind of region.
    #[inline]
    pub const fn kind(&self) -> RegionKind {
        self.kind
    }

    /// Returns the region's addresses (for the main stack: the mapping below the top, guard
    /// included).
    #[inline]
    pub const fn range(&self) -> VaRange {
        self.range
    }

    /// Returns the window the region was placed in.
    #[inline]
    pub const fn window(&self) -> VaRange {
        self.window
    }

    /// Returns the alignment of the randomised address (the base; the top for the main stack).
    #[inline]
    pub const fn align(&self) -> u64 {
        self.align
    }

    /// Returns the randomised address: the base, or the stack top for the main stack.
    #[inline]
    pub const fn anchor(&self) -> VirtAddr {
        VirtAddr::new(self.anchor)
    }

    /// Returns the chosen position in `align` steps from the window's unslid position (0 =
    /// unslid; `1..=positions` for a slide in a window without reserved ranges).
    #[inline]
    pub const fn slot(&self) -> u64 {
        self.slot
    }

    /// Returns the number of positions the region was chosen from (1 when unrandomised).
    #[inline]
    pub const fn positions(&self) -> u64 {
        self.positions
    }

    /// Returns the entropy, `log2(positions)`.
    #[inline]
    pub const fn bits(&self) -> EntropyBits {
        EntropyBits::from_positions(self.positions)
    }

    /// Returns whether the region was randomised (false under "no randomise" or `nokaslr`).
    #[inline]
    pub const fn is_randomized(&self) -> bool {
        self.randomized
    }
}

/// A randomised address space: every region's placement and entropy.
///
/// `Display` prints a report in the style of macOS `vmmap`; see the crate README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    config: LayoutConfig,
    regions: [Region; REGION_COUNT],
}

impl Layout {
    /// Returns the configuration the layout was built from.
    #[inline]
    pub const fn config(&self) -> &LayoutConfig {
        &self.config
    }

    /// Returns every region, in [`RegionKind::ALL`] order.
    #[inline]
    pub const fn regions(&self) -> &[Region; REGION_COUNT] {
        &self.regions
    }

    /// Returns region `kind`.
    #[inline]
    pub const fn region(&self, kind: RegionKind) -> &Region {
        &self.regions[kind.index()]
    }

    /// Returns the main thread's initial stack pointer (16-byte aligned).
    #[inline]
    pub const fn stack_top(&self) -> VirtAddr {
        self.regions[RegionKind::MainStack.index()].anchor()
    }

    /// Returns thread stack `index` (its usable part; the guard gap is just below it), or
    /// `None` if `index` is not below the configured count.
    pub fn thread_stack(&self, index: u32) -> Option<VaRange> {
        let (count, stack, guard) = self.config.threads();
        if index >= count {
            return None;
        }
        let area = self.regions[RegionKind::ThreadStacks.index()].range;
        let offset = u64::from(index) * (stack + guard) + guard;
        Some(VaRange::from_raw_unchecked(
            area.raw_start() + offset,
            stack,
        ))
    }

    /// Checks every randomised region against `policy`.
    ///
    /// # Errors
    ///
    /// - [`AslrError::BelowPolicy`] for the first region (in [`RegionKind::ALL`] order) with
    ///   fewer than `2^floor` positions.
    pub fn check(&self, policy: &Policy) -> Result<(), AslrError> {
        for r in &self.regions {
            let Some(floor) = policy.floor(r.kind) else {
                continue;
            };
            if r.randomized && r.positions < 1u64 << floor {
                return Err(AslrError::BelowPolicy {
                    region: r.kind,
                    bits: r.bits(),
                    floor,
                });
            }
        }
        Ok(())
    }

    /// Returns the least entropy of the randomised user regions and of the randomised kernel
    /// regions (`None` for a half with none).
    pub fn min_bits(&self) -> (Option<EntropyBits>, Option<EntropyBits>) {
        let mut user: Option<EntropyBits> = None;
        let mut kernel: Option<EntropyBits> = None;
        for r in self.regions.iter().filter(|r| r.randomized) {
            let slot = if r.kind.is_kernel() {
                &mut kernel
            } else {
                &mut user
            };
            *slot = Some(slot.map_or(r.bits(), |b| b.min(r.bits())));
        }
        (user, kernel)
    }
}

#[cfg(test)]
mod tests;
