//! Which CPUs may hold an address space's translations, with lazy catch-up for CPUs that
//! switched away.
//!
//! A CPU that switches away from an address space keeps that space's entries in its TLB when
//! they are tagged (ASIDs, PCIDs); they cannot be used until the CPU switches back, so
//! interrupting it for every later change is wasted work. [`SpaceCpus`] therefore tracks two
//! things per address space:
//!
//! - the CPUs **running** it now: a shootdown interrupts only these;
//! - a **flush generation**, bumped by every shootdown, and per CPU the generation up to which
//!   that CPU's TLB is known to be clean. A CPU that switched away ("lazy") misses later
//!   shootdowns; when it switches back, [`SpaceCpus::switch_in`] sees that it is behind and
//!   has it flush the space's ASID before it runs the space again.
//!
//! # The protocol
//!
//! An initiator, after writing the page table, increments the generation and then reads the
//! running set; a CPU switching in adds itself to the running set and then reads the
//! generation, with a sequentially consistent fence between the write and the read on both
//! sides (the store-buffering pattern; without the fences loom finds the interleaving in which
//! neither side sees the other). So for any shootdown and any switch-in at least one side sees
//! the other: either the initiator interrupts the CPU, or the CPU sees
//! the new generation and flushes. A CPU's clean generation advances from `g - 1` to `g` only
//! when it acknowledged shootdown `g` (a compare-and-swap, so a CPU that missed an earlier
//! shootdown never skips it), or to the current generation when it flushed its whole ASID at a
//! switch-in. The loom model `lazy_cpu_catches_up_after_a_missed_shootdown` checks the race.
//!
//! With broadcast invalidation (aarch64 `TLBI …IS`) every CPU's TLB is reached by the
//! initiator's own instruction, so [`Shootdown::shootdown_space`](crate::Shootdown::shootdown_space)
//! skips all of this.

use machvm_sync::CpuIndex;
use machvm_sync::atomic::{AtomicU64, Ordering, fence};

use crate::ops::{Asid, TlbOps};
use crate::shootdown::{CpuMask, CpuSet, ShootdownError};

/// A CPU's clean generation before it ever ran the space: it holds none of its entries.
const NEVER_RAN: u64 = 0;

/// The first flush generation (so that every real generation differs from [`NEVER_RAN`]).
const FIRST_GENERATION: u64 = 1;

/// The CPUs of one address space: which run it now, and which may hold translations that a
/// shootdown they missed made stale (see the [module documentation](self)).
///
/// `CPUS` is the number of CPUs (at most 64), the same as the [`Shootdown`](crate::Shootdown)
/// engine's.
///
/// # Examples
///
/// ```
/// use machvm_sync::CpuIndex;
/// use machvm_tlb::SpaceCpus;
///
/// let space = SpaceCpus::<4>::new();
/// let cpu = CpuIndex::new(2);
/// // First switch-in: the CPU never ran the space, nothing to flush.
/// assert!(!space.switch_in(cpu)?.is_needed());
/// space.switch_out(cpu)?;
/// // A shootdown while the CPU is away does not interrupt it…
/// let (_generation, targets) = space.begin_shootdown();
/// assert!(targets.is_empty());
/// // …so it flushes the space's ASID when it comes back.
/// assert!(space.switch_in(cpu)?.is_needed());
/// # Ok::<(), machvm_tlb::ShootdownError>(())
/// ```
#[derive(Debug)]
pub struct SpaceCpus<const CPUS: usize> {
    running: CpuSet,
    generation: AtomicU64,
    /// Per CPU: the generation its TLB is clean up to ([`NEVER_RAN`] if it never ran here).
    clean: [AtomicU64; CPUS],
}

impl<const CPUS: usize> Default for SpaceCpus<CPUS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize> SpaceCpus<CPUS> {
    /// Returns the state of a new address space: no CPU runs it or ever ran it.
    pub fn new() -> Self {
        Self {
            running: CpuSet::new(),
            generation: AtomicU64::new(FIRST_GENERATION),
            clean: core::array::from_fn(|_| AtomicU64::new(NEVER_RAN)),
        }
    }

    fn clean_of(&self, cpu: CpuIndex) -> Result<&AtomicU64, ShootdownError> {
        self.clean
            .get(cpu.as_usize())
            .ok_or(ShootdownError::CpuOutOfRange { cpu })
    }

    /// Records that `cpu` now runs the space (call it after loading the space's page table and
    /// ASID, before the CPU touches the space's memory). The result says whether the CPU
    /// missed a shootdown while it was away and must flush the space's ASID first.
    ///
    /// # Errors
    ///
    /// [`ShootdownError::CpuOutOfRange`] if `cpu` is not below `CPUS` (nothing changes).
    pub fn switch_in(&self, cpu: CpuIndex) -> Result<CatchUp, ShootdownError> {
        let clean = self.clean_of(cpu)?;
        // Join the running set before reading the generation: see the module documentation.
        self.running.insert(cpu)?;
        fence(Ordering::SeqCst);
        let now = self.generation.load(Ordering::SeqCst);
        let was = clean.load(Ordering::Acquire);
        // Initiators that interrupt this CPU from now on may advance `clean` concurrently; a
        // maximum keeps whichever is newer.
        clean.fetch_max(now, Ordering::AcqRel);
        Ok(CatchUp {
            needed: was != NEVER_RAN && was < now,
        })
    }

    /// Records that `cpu` no longer runs the space. Its TLB may keep the space's entries; it
    /// is not interrupted by later shootdowns and catches up at its next
    /// [`switch_in`](Self::switch_in).
    ///
    /// # Errors
    ///
    /// [`ShootdownError::CpuOutOfRange`] if `cpu` is not below `CPUS` (nothing changes).
    pub fn switch_out(&self, cpu: CpuIndex) -> Result<(), ShootdownError> {
        self.clean_of(cpu)?;
        self.running.remove(cpu)
    }

    /// Returns the CPUs running the space now.
    pub fn running(&self) -> CpuMask {
        self.running.snapshot()
    }

    /// Returns the number of shootdowns begun so far plus one (the first generation is 1).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Returns whether `cpu` ran the space and missed a shootdown since its TLB was last known
    /// clean (it will flush at its next switch-in); `false` for CPUs out of range.
    pub fn is_behind(&self, cpu: CpuIndex) -> bool {
        self.clean_of(cpu).is_ok_and(|c| {
            let clean = c.load(Ordering::Acquire);
            clean != NEVER_RAN && clean < self.generation()
        })
    }

    /// Starts a shootdown: call it after the page-table change is written. Returns the
    /// shootdown's generation and the CPUs that must be interrupted (those running the space);
    /// every other CPU that ran the space is now behind and flushes when it switches back.
    ///
    /// [`Shootdown::shootdown_space`](crate::Shootdown::shootdown_space) calls this and
    /// [`acknowledged`](Self::acknowledged) for you.
    pub fn begin_shootdown(&self) -> (u64, CpuMask) {
        // Bump first, then read who runs: see the module documentation.
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        fence(Ordering::SeqCst);
        (generation, self.running.snapshot())
    }

    /// Records that `cpu` completed the flush of shootdown `generation`: if its TLB was clean
    /// up to the generation before, it is now clean up to this one. (If it missed an earlier
    /// shootdown it stays behind and flushes its whole ASID at its next switch-in.)
    pub fn acknowledged(&self, cpu: CpuIndex, generation: u64) {
        if let Ok(clean) = self.clean_of(cpu) {
            let _ = clean.compare_exchange(
                generation.wrapping_sub(1),
                generation,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }
}

/// What a CPU must do when it switches back to an address space (from
/// [`SpaceCpus::switch_in`]).
#[must_use = "a CPU that missed a shootdown must flush the space's ASID before using it"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    needed: bool,
}

impl CatchUp {
    /// Returns whether the CPU must invalidate the space's ASID before using the space.
    ///
    /// A CPU whose switch flushes anyway (x86_64 without PCIDs, a PCID slot being recycled,
    /// an ASID rollover flush) may ignore it.
    #[inline]
    pub const fn is_needed(self) -> bool {
        self.needed
    }

    /// Invalidates `asid` (the space's current ASID) through the local `ops` if needed;
    /// returns whether it did.
    pub fn apply<T: TlbOps + ?Sized>(self, asid: Asid, ops: &T) -> bool {
        if self.needed {
            ops.sync();
            ops.invalidate_asid(asid);
            ops.complete();
        }
        self.needed
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn cpu(i: u32) -> CpuIndex {
        CpuIndex::new(i)
    }

    #[test]
    fn running_cpus_are_targets_and_lazy_ones_catch_up() {
        let space = SpaceCpus::<4>::new();
        assert!(!space.switch_in(cpu(0)).unwrap().is_needed());
        assert!(!space.switch_in(cpu(1)).unwrap().is_needed());
        space.switch_out(cpu(1)).unwrap();

        let (generation, targets) = space.begin_shootdown();
        assert_eq!(targets, CpuMask::from_bits(0b01));
        assert_eq!(generation, 2);
        space.acknowledged(cpu(0), generation);
        assert!(!space.is_behind(cpu(0)));
        assert!(space.is_behind(cpu(1)));
        // CPU 2 never ran the space: never behind, nothing to flush.
        assert!(!space.is_behind(cpu(2)));
        assert!(!space.switch_in(cpu(2)).unwrap().is_needed());

        let catch_up = space.switch_in(cpu(1)).unwrap();
        assert!(catch_up.is_needed());
        assert!(!space.is_behind(cpu(1)));
        // Once caught up, a later switch-in needs nothing.
        space.switch_out(cpu(1)).unwrap();
        assert!(!space.switch_in(cpu(1)).unwrap().is_needed());
    }

    #[test]
    fn a_missed_shootdown_is_never_skipped_by_a_later_acknowledgement() {
        let space = SpaceCpus::<2>::new();
        let _ = space.switch_in(cpu(1)).unwrap();
        space.switch_out(cpu(1)).unwrap();
        let (missed, targets) = space.begin_shootdown();
        assert!(targets.is_empty());
        // CPU 1 comes back, but is raced: a later shootdown acknowledged by it must not mark
        // it clean past the one it missed, unless its switch-in flushed.
        space.running.insert(cpu(1)).unwrap();
        let (later, targets) = space.begin_shootdown();
        assert_eq!((missed + 1, targets), (later, CpuMask::from_bits(0b10)));
        space.acknowledged(cpu(1), later);
        assert!(space.is_behind(cpu(1)));
    }

    #[test]
    fn acknowledgements_in_order_keep_a_running_cpu_clean() {
        let space = SpaceCpus::<2>::new();
        let _ = space.switch_in(cpu(0)).unwrap();
        for _ in 0..5 {
            let (g, targets) = space.begin_shootdown();
            assert!(targets.contains(cpu(0)));
            space.acknowledged(cpu(0), g);
        }
        space.switch_out(cpu(0)).unwrap();
        assert!(!space.switch_in(cpu(0)).unwrap().is_needed());
    }

    #[test]
    fn out_of_range_cpus_change_nothing() {
        let space = SpaceCpus::<2>::new();
        assert_eq!(
            space.switch_in(cpu(2)).unwrap_err(),
            ShootdownError::CpuOutOfRange { cpu: cpu(2) }
        );
        assert!(space.switch_out(cpu(5)).is_err());
        assert!(space.running().is_empty());
        assert!(!space.is_behind(cpu(9)));
        space.acknowledged(cpu(9), 2);
    }
}
