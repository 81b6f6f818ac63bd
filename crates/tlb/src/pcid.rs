//! A per-CPU cache of x86_64 PCIDs: a few dynamic PCIDs per CPU, least recently used first out.
//!
//! # Design
//!
//! x86_64 tags TLB entries with a 12-bit process-context identifier (PCID, CR3 bits 11:0 when
//! CR4.PCIDE = 1; Intel SDM Vol. 3A §4.10.1). Loading CR3 with bit 63 set keeps the entries of
//! the new PCID; with bit 63 clear it invalidates them first (§4.10.4.1). Unlike aarch64,
//! invalidations are local to a CPU, so there is no reason to give an address space the same
//! tag on every CPU. Following the Linux x86 design, each CPU instead keeps a small cache of
//! the address spaces it ran last, each in a *slot* that owns one PCID:
//!
//! - A [`PcidCache<N>`] has `N` slots (6 by default, [`DEFAULT_DYN_PCIDS`]); slot `i` always
//!   uses PCID `i + 1`, so PCID 0 ([`Asid::KERNEL`]) is never handed out and bit 11 stays clear
//!   for a kernel that pairs each PCID with a user PCID (page-table isolation).
//! - An address space is named by a [`SpaceId`], unique for the life of the system (never
//!   reused, so a stale slot can never be mistaken for a new space; [`SpaceIdSource`] hands
//!   them out), and has a *TLB generation*: a counter the kernel bumps each time the space's
//!   translations must be invalidated.
//! - Each slot records the space it holds and the TLB generation this CPU's entries for that
//!   PCID are up to date with. [`PcidCache::switch_to`] returns a [`PcidSwitch`]:
//!   - **hit, up to date**: load the slot's PCID keeping its entries;
//!   - **hit, older generation**: the space was flushed while it was not running here (a
//!     *lazy* flush: other CPUs did not interrupt this one for a space it was not running), so
//!     load the PCID and flush it;
//!   - **miss**: take a free slot or evict the least recently used one, load its PCID and flush
//!     it (it may hold the evicted space's entries).
//! - While a space runs, flushes reach this CPU directly (shootdown); record them with
//!   [`PcidCache::mark_flushed`] so the next switch back does not flush again.
//!
//! The cache belongs to one CPU and is not shared: keep one per CPU in a
//! [`PerCpuCell`](machvm_sync::PerCpuCell) and use it with preemption disabled. It only
//! decides; loading CR3 and flushing are the caller's.
//!
//! The caller must read the space's TLB generation *before* loading CR3: a flush requested
//! after the read bumps the generation and reaches the CPU by shootdown or, if it was missed,
//! by the next switch, which sees the newer generation.

use core::fmt;
use core::num::NonZeroU64;

use machvm_sync::atomic::{AtomicU64, Ordering};

use crate::ops::Asid;

/// The number of dynamic PCIDs per CPU Linux uses (`TLB_NR_DYN_ASIDS`): a good default for `N`.
pub const DEFAULT_DYN_PCIDS: usize = 6;

/// The most slots a [`PcidCache`] can have: PCIDs `1..=2047`, leaving bit 11 free for a user
/// PCID under page-table isolation.
pub const MAX_DYN_PCIDS: usize = 2047;

/// The identity of an address space for PCID caching: non-zero and never reused.
///
/// # Examples
///
/// ```
/// use machvm_tlb::pcid::SpaceId;
///
/// let id = SpaceId::new(7).unwrap();
/// assert_eq!(id.as_u64(), 7);
/// assert!(SpaceId::new(0).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpaceId(NonZeroU64);

impl SpaceId {
    /// Wraps `raw`, or returns `None` if it is 0. The caller promises never to give two
    /// address spaces the same id; [`SpaceIdSource`] does that.
    #[inline]
    #[must_use]
    pub const fn new(raw: u64) -> Option<Self> {
        match NonZeroU64::new(raw) {
            Some(id) => Some(Self(id)),
            None => None,
        }
    }

    /// Returns the raw id.
    #[inline]
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0.get()
    }
}

/// Hands out [`SpaceId`]s 1, 2, 3, ..., never the same one twice.
///
/// # Examples
///
/// ```
/// use machvm_tlb::pcid::SpaceIdSource;
///
/// let ids = SpaceIdSource::new();
/// let a = ids.next_id().unwrap();
/// let b = ids.next_id().unwrap();
/// assert_ne!(a, b);
/// ```
#[derive(Debug)]
pub struct SpaceIdSource {
    /// The last id handed out.
    last: AtomicU64,
}

impl SpaceIdSource {
    /// Returns a source whose first id is 1.
    #[cfg(not(loom))]
    #[must_use]
    pub const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
        }
    }

    /// Returns a source whose first id is 1 (not `const` under loom).
    #[cfg(loom)]
    #[must_use]
    pub fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
        }
    }

    /// Returns a new id, or `None` once all 2^64 - 1 ids are used (ids are never reused).
    #[must_use]
    pub fn next_id(&self) -> Option<SpaceId> {
        // Relaxed: only uniqueness matters, which the read-modify-write gives.
        self.last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                last.checked_add(1)
            })
            .ok()
            .and_then(|last| SpaceId::new(last.wrapping_add(1)))
    }
}

impl Default for SpaceIdSource {
    fn default() -> Self {
        Self::new()
    }
}

/// What a CPU must do to run an address space: returned by [`PcidCache::switch_to`].
///
/// # Examples
///
/// ```
/// use machvm_tlb::pcid::{PcidCache, SpaceId};
///
/// let mut cache = PcidCache::<6>::new();
/// let s = cache.switch_to(SpaceId::new(1).unwrap(), 0);
/// let noflush = if s.needs_flush() { 0 } else { 1 << 63 };
/// let cr3 = 0x1000_u64 | u64::from(s.pcid().as_u16()) | noflush; // page-table root | PCID
/// assert_eq!(cr3, 0x1001); // first use of a PCID: flush it
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the PCID must be loaded, with a flush of it when `needs_flush` is set"]
pub struct PcidSwitch {
    pcid: Asid,
    needs_flush: bool,
    hit: bool,
}

impl PcidSwitch {
    /// Returns the PCID to load (1 to `N`; never [`Asid::KERNEL`]).
    #[inline]
    pub const fn pcid(self) -> Asid {
        self.pcid
    }

    /// Returns whether the PCID's entries must be invalidated when it is loaded (CR3 bit 63
    /// clear): the slot was taken from another space, or this space was flushed since this
    /// CPU last ran it.
    #[inline]
    pub const fn needs_flush(self) -> bool {
        self.needs_flush
    }

    /// Returns whether the space already had a slot on this CPU.
    #[inline]
    pub const fn hit(self) -> bool {
        self.hit
    }
}

/// One PCID of a CPU: which space it holds and how fresh its entries are.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The space whose translations the PCID holds, or `None` if unused.
    space: Option<SpaceId>,
    /// The space's TLB generation this CPU's entries for the PCID are up to date with.
    tlb_gen: u64,
    /// The switch count at the last use (for LRU).
    last_used: u64,
}

impl Slot {
    /// An unused slot.
    const EMPTY: Self = Self {
        space: None,
        tlb_gen: 0,
        last_used: 0,
    };
}

/// One CPU's cache of `N` dynamic PCIDs (see the [module docs](self) for the design).
///
/// `N` must be 1 to [`MAX_DYN_PCIDS`]; other values fail to compile.
///
/// # Examples
///
/// ```
/// use machvm_tlb::pcid::{PcidCache, SpaceIdSource};
///
/// let ids = SpaceIdSource::new();
/// let (a, b) = (ids.next_id().unwrap(), ids.next_id().unwrap());
/// let mut cache = PcidCache::<2>::new();
///
/// let first = cache.switch_to(a, 0);
/// assert!(first.needs_flush() && !first.hit());
/// let other = cache.switch_to(b, 0);
/// assert_ne!(other.pcid(), first.pcid());
///
/// // Back to `a`: still cached and not flushed since, so no flush.
/// let back = cache.switch_to(a, 0);
/// assert_eq!(back.pcid(), first.pcid());
/// assert!(back.hit() && !back.needs_flush());
///
/// // `b` was flushed (its TLB generation moved to 1) while it ran elsewhere: lazy flush here.
/// let lazy = cache.switch_to(b, 1);
/// assert!(lazy.hit() && lazy.needs_flush());
/// ```
///
/// One cache per CPU, reached through a [`PerCpuCell`](machvm_sync::PerCpuCell):
///
/// ```
/// use machvm_sync::{CpuId, CpuIndex, PerCpuCell};
/// use machvm_tlb::pcid::{PcidCache, SpaceId};
///
/// struct Boot;
/// // SAFETY: the example runs on one thread, which is CPU 0.
/// unsafe impl CpuId for Boot {
///     fn current_cpu(&self) -> CpuIndex {
///         CpuIndex::new(0)
///     }
/// }
///
/// static PCIDS: PerCpuCell<PcidCache, 4> = PerCpuCell::new([const { PcidCache::new() }; 4]);
///
/// // SAFETY: single thread, no interrupts, no re-entrancy: CPU 0's slot is ours alone.
/// let switch = unsafe { PCIDS.with_current_mut(&Boot, |c| c.switch_to(SpaceId::new(9).unwrap(), 0)) };
/// assert!(switch.unwrap().needs_flush());
/// ```
pub struct PcidCache<const N: usize = DEFAULT_DYN_PCIDS> {
    slots: [Slot; N],
    /// The slot loaded on the CPU, if any.
    current: Option<usize>,
    /// Switches so far (wraps after 2^64, which only skews one LRU decision).
    clock: u64,
}

impl<const N: usize> PcidCache<N> {
    /// Returns an empty cache: the first switch to any space misses and flushes.
    #[must_use]
    pub const fn new() -> Self {
        const {
            assert!(
                N >= 1 && N <= MAX_DYN_PCIDS,
                "PcidCache: N must be 1..=MAX_DYN_PCIDS"
            );
        }
        Self {
            slots: [Slot::EMPTY; N],
            current: None,
            clock: 0,
        }
    }

    /// Returns the number of slots, `N`.
    #[must_use]
    pub const fn len(&self) -> usize {
        N
    }

    /// Returns `false`: a cache always has at least one slot.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// The PCID of slot `index`.
    fn pcid(index: usize) -> Asid {
        // `index < N <= MAX_DYN_PCIDS`, so `index + 1` fits in 12 bits.
        Asid::new(u16::try_from(index + 1).unwrap_or(u16::MAX))
    }

    /// The slot holding `space`.
    fn find(&self, space: SpaceId) -> Option<usize> {
        self.slots.iter().position(|s| s.space == Some(space))
    }

    /// Picks the PCID for running `space`, whose TLB generation (read before this call) is
    /// `tlb_gen`, and makes it the current one.
    ///
    /// A hit keeps the space's PCID and needs a flush only if the space was flushed
    /// (`tlb_gen` moved past what this CPU recorded) since this CPU last ran it. A miss takes
    /// a free slot or the least recently used one, and always needs a flush. Either way the
    /// slot is then recorded as up to date with `tlb_gen`: the caller must perform the flush
    /// it is told to.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_tlb::pcid::{PcidCache, SpaceId};
    ///
    /// let id = |n| SpaceId::new(n).unwrap();
    /// let mut cache = PcidCache::<2>::new();
    /// let a = cache.switch_to(id(1), 0).pcid();
    /// let _ = cache.switch_to(id(2), 0);
    /// let _ = cache.switch_to(id(1), 0); // space 2 is now the least recently used
    /// let c = cache.switch_to(id(3), 0);
    /// assert!(!c.hit() && c.needs_flush());
    /// assert_eq!(cache.pcid_of(id(2)), None); // evicted
    /// assert_eq!(cache.pcid_of(id(1)), Some(a));
    /// ```
    pub fn switch_to(&mut self, space: SpaceId, tlb_gen: u64) -> PcidSwitch {
        self.clock = self.clock.wrapping_add(1);
        let clock = self.clock;
        if let Some(index) = self.find(space) {
            let mut needs_flush = false;
            if let Some(slot) = self.slots.get_mut(index) {
                slot.last_used = clock;
                if slot.tlb_gen < tlb_gen {
                    slot.tlb_gen = tlb_gen;
                    needs_flush = true;
                }
            }
            self.current = Some(index);
            return PcidSwitch {
                pcid: Self::pcid(index),
                needs_flush,
                hit: true,
            };
        }

        let victim = self
            .slots
            .iter()
            .position(|s| s.space.is_none())
            .or_else(|| {
                self.slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(i, _)| i)
            })
            .unwrap_or(0);
        if let Some(slot) = self.slots.get_mut(victim) {
            *slot = Slot {
                space: Some(space),
                tlb_gen,
                last_used: clock,
            };
        }
        self.current = Some(victim);
        PcidSwitch {
            pcid: Self::pcid(victim),
            needs_flush: true,
            hit: false,
        }
    }

    /// Records that this CPU's entries for `space` are up to date with TLB generation
    /// `tlb_gen` (it flushed them, e.g. in a shootdown while `space` was running). Returns
    /// `false` if `space` has no slot here. The recorded generation never moves backwards.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_tlb::pcid::{PcidCache, SpaceId};
    ///
    /// let id = SpaceId::new(1).unwrap();
    /// let mut cache = PcidCache::<2>::new();
    /// let _ = cache.switch_to(id, 0);
    /// assert!(cache.mark_flushed(id, 3)); // a shootdown flushed it here at generation 3
    /// assert!(!cache.switch_to(id, 3).needs_flush());
    /// ```
    pub fn mark_flushed(&mut self, space: SpaceId, tlb_gen: u64) -> bool {
        match self.find(space).and_then(|i| self.slots.get_mut(i)) {
            Some(slot) => {
                slot.tlb_gen = slot.tlb_gen.max(tlb_gen);
                true
            }
            None => false,
        }
    }

    /// Drops `space`'s slot (e.g. when the space is destroyed, to free the slot before LRU
    /// would) and returns the PCID it had. If it was the current space, no space is current
    /// afterwards; a later switch to it misses and flushes.
    pub fn forget(&mut self, space: SpaceId) -> Option<Asid> {
        let index = self.find(space)?;
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Slot::EMPTY;
        }
        if self.current == Some(index) {
            self.current = None;
        }
        Some(Self::pcid(index))
    }

    /// Drops every slot, so every next switch misses and flushes: for when the CPU's TLB
    /// state is unknown (resume, a CPU brought back online).
    pub fn forget_all(&mut self) {
        self.slots = [Slot::EMPTY; N];
        self.current = None;
    }

    /// Returns the PCID `space` has on this CPU, if cached.
    #[must_use]
    pub fn pcid_of(&self, space: SpaceId) -> Option<Asid> {
        self.find(space).map(Self::pcid)
    }

    /// Returns the TLB generation this CPU's entries for `space` are up to date with, if
    /// cached.
    #[must_use]
    pub fn tlb_gen_of(&self, space: SpaceId) -> Option<u64> {
        self.find(space)
            .and_then(|i| self.slots.get(i))
            .map(|s| s.tlb_gen)
    }

    /// Returns the space last switched to and its PCID, unless it was forgotten since.
    #[must_use]
    pub fn current(&self) -> Option<(SpaceId, Asid)> {
        let index = self.current?;
        let space = self.slots.get(index)?.space?;
        Some((space, Self::pcid(index)))
    }
}

impl<const N: usize> Default for PcidCache<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for PcidCache<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Slots<'a>(&'a [Slot]);
        impl fmt::Debug for Slots<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().enumerate().filter_map(|(i, s)| {
                        s.space.map(|space| (i + 1, (space.as_u64(), s.tlb_gen)))
                    }))
                    .finish()
            }
        }
        f.debug_struct("PcidCache")
            .field("slots", &N)
            .field("current", &self.current())
            .field("cached", &Slots(&self.slots))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use alloc::format;
    use alloc::vec::Vec;

    use super::*;

    fn id(n: u64) -> SpaceId {
        SpaceId::new(n).unwrap()
    }

    #[test]
    fn first_use_of_each_slot_flushes_and_pcids_start_at_one() {
        let mut c = PcidCache::<3>::new();
        let got: Vec<(u16, bool, bool)> = (1..=3)
            .map(|n| {
                let s = c.switch_to(id(n), 0);
                (s.pcid().as_u16(), s.needs_flush(), s.hit())
            })
            .collect();
        assert_eq!(got, [(1, true, false), (2, true, false), (3, true, false)]);
    }

    #[test]
    fn hit_without_a_newer_generation_needs_no_flush() {
        let mut c = PcidCache::<2>::new();
        let a = c.switch_to(id(1), 5);
        let _ = c.switch_to(id(2), 0);
        let back = c.switch_to(id(1), 5);
        assert_eq!(
            back,
            PcidSwitch {
                pcid: a.pcid(),
                needs_flush: false,
                hit: true
            }
        );
        assert_eq!(c.current(), Some((id(1), a.pcid())));
    }

    #[test]
    fn hit_with_a_newer_generation_flushes_once() {
        let mut c = PcidCache::<2>::new();
        let _ = c.switch_to(id(1), 0);
        let _ = c.switch_to(id(2), 0);
        assert!(c.switch_to(id(1), 2).needs_flush());
        assert_eq!(c.tlb_gen_of(id(1)), Some(2));
        assert!(!c.switch_to(id(1), 2).needs_flush());
        // An older generation (a stale read) never un-flushes.
        assert!(!c.switch_to(id(1), 1).needs_flush());
        assert_eq!(c.tlb_gen_of(id(1)), Some(2));
    }

    #[test]
    fn miss_evicts_the_least_recently_used() {
        let mut c = PcidCache::<3>::new();
        for n in 1..=3 {
            let _ = c.switch_to(id(n), 0);
        }
        // Use order now 1, 2, 3; touch 1 so 2 becomes the oldest.
        let _ = c.switch_to(id(1), 0);
        let p2 = c.pcid_of(id(2)).unwrap();
        let s4 = c.switch_to(id(4), 0);
        assert_eq!(s4.pcid(), p2);
        assert!(s4.needs_flush() && !s4.hit());
        assert_eq!(c.pcid_of(id(2)), None);
        // Next oldest is 3.
        let p3 = c.pcid_of(id(3)).unwrap();
        assert_eq!(c.switch_to(id(5), 0).pcid(), p3);
        // A space that comes back after eviction misses and flushes.
        let back = c.switch_to(id(2), 0);
        assert!(!back.hit() && back.needs_flush());
    }

    #[test]
    fn a_single_slot_cache_flushes_on_every_change() {
        let mut c = PcidCache::<1>::new();
        assert!(c.switch_to(id(1), 0).needs_flush());
        assert!(!c.switch_to(id(1), 0).needs_flush());
        assert!(c.switch_to(id(2), 0).needs_flush());
        assert!(c.switch_to(id(1), 0).needs_flush());
        assert_eq!(c.switch_to(id(1), 0).pcid(), Asid::new(1));
    }

    #[test]
    fn mark_flushed_only_moves_forward_and_only_for_cached_spaces() {
        let mut c = PcidCache::<2>::new();
        let _ = c.switch_to(id(1), 3);
        assert!(c.mark_flushed(id(1), 7));
        assert!(c.mark_flushed(id(1), 4));
        assert_eq!(c.tlb_gen_of(id(1)), Some(7));
        assert!(!c.mark_flushed(id(2), 1));
        assert!(!c.switch_to(id(1), 7).needs_flush());
    }

    #[test]
    fn forget_frees_the_slot_first_and_clears_current() {
        let mut c = PcidCache::<2>::new();
        let p1 = c.switch_to(id(1), 0).pcid();
        let _ = c.switch_to(id(2), 0);
        assert_eq!(c.forget(id(2)), Some(Asid::new(2)));
        assert_eq!(c.current(), None);
        assert_eq!(c.forget(id(2)), None);
        // The free slot is used before evicting space 1.
        let s3 = c.switch_to(id(3), 0);
        assert_eq!(s3.pcid(), Asid::new(2));
        assert_eq!(c.pcid_of(id(1)), Some(p1));
        c.forget_all();
        assert_eq!(c.current(), None);
        assert!(!c.switch_to(id(1), 0).hit());
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "2047 switches over a 2047-entry LRU are quadratic: minutes under miri"
    )]
    fn pcids_stay_below_the_user_bit() {
        let mut c = PcidCache::<MAX_DYN_PCIDS>::new();
        let mut last = Asid::KERNEL;
        for n in 1..=MAX_DYN_PCIDS as u64 {
            last = c.switch_to(id(n), 0).pcid();
        }
        assert_eq!(last.as_u16(), 2047);
        assert_eq!(last.as_u16() & 0x800, 0);
    }

    #[test]
    fn space_ids_are_unique_and_end_without_wrapping() {
        let ids = SpaceIdSource::new();
        assert_eq!(ids.next_id(), Some(id(1)));
        assert_eq!(ids.next_id(), Some(id(2)));
        ids.last.store(u64::MAX - 1, Ordering::Relaxed);
        assert_eq!(ids.next_id(), Some(id(u64::MAX)));
        assert_eq!(ids.next_id(), None);
        assert_eq!(ids.next_id(), None);
    }

    #[test]
    fn debug_lists_cached_spaces() {
        let mut c = PcidCache::<2>::new();
        let _ = c.switch_to(id(4), 1);
        assert_eq!(
            format!("{c:?}"),
            "PcidCache { slots: 2, current: Some((SpaceId(4), Asid(1))), cached: {1: (4, 1)} }"
        );
    }
}
