//! A software TLB for host tests (`std` feature): [`SoftTlb`] remembers the translations each
//! simulated CPU used and reports any later use of one that should have been invalidated.
//!
//! # Design
//!
//! - **One TLB per CPU**, each a set-associative array of `sets × ways` entries behind its own
//!   host lock, so host threads playing different CPUs do not contend. The lock is a
//!   `std::sync::Mutex`: it parks instead of spinning, so simulating more CPUs than there are
//!   host cores stays cheap. An entry of page size `S` lives in set `(va >> S.shift()) % sets`;
//!   a lookup probes the set of every [`PageSize`]. Replacement inside a set is
//!   least-recently-used.
//! - **Tagged like the hardware**: an entry carries the [`Asid`] of the access that filled it
//!   and a global bit. A non-global entry serves only its ASID, a global one every ASID
//!   (aarch64 `nG = 0`, `x86_64` PTE.G with PCIDs).
//! - **Every translation is checked**: [`SoftTlb::translate`] always calls the caller's
//!   page-table walk, hit or miss. On a hit it compares the cached entry with what the page
//!   table says *now*; if the entry allows something the page table no longer does (the page is
//!   unmapped, maps another frame or another page size, lost write, execute or global
//!   permission), the use is a missed invalidation and `translate` returns
//!   [`SoftTlbError::Stale`] with the CPU, ASID, address and both translations. Entries whose
//!   translation is unchanged, or that are *less* permissive than the page table (a permission
//!   upgrade needs no flush), are fine: TLBs may keep them.
//! - **Epochs**: one global counter ticks at every fill, invalidation and translation. Each
//!   entry records the epoch it was filled at ([`Cached::filled_at`]), and each CPU the epoch of
//!   its last invalidation. `translate` never holds a lock while walking; the epochs decide
//!   afterwards what the walk can be compared with: only entries filled before the walk began
//!   are checked for staleness, and a walk that overlapped an invalidation of the same CPU is
//!   used once but not cached (hardware guarantees that a completed TLBI also removes the
//!   results of walks that were in flight).
//! - **Invalidation mirrors the hardware**: per CPU ([`invalidate_page`](SoftTlb::invalidate_page),
//!   [`invalidate_range`](SoftTlb::invalidate_range), [`invalidate_asid`](SoftTlb::invalidate_asid),
//!   [`invalidate_all`](SoftTlb::invalidate_all)) and to every CPU (`broadcast_*`). The
//!   [`TlbOps`](crate::TlbOps) implementations are handles: [`SoftTlbCpu`] (local, like `x86_64` `INVLPG`) and
//!   [`SoftTlbBroadcast`] (every CPU, like aarch64 `TLBI …IS`). Invalidations take effect
//!   immediately; `sync`/`complete` are counted, and invalidations issued through a handle
//!   outside a `sync … complete` bracket are counted in
//!   [`SoftTlbStats::unsynced_invalidations`].
//! - **Update windows**: on real machines another CPU may legally use an old translation between
//!   the page-table write and the end of the shootdown. A concurrent simulation marks that window
//!   with [`SoftTlb::begin_update`]; stale hits inside it are served from the cached entry (as the
//!   hardware would) and counted, not reported. Any use after the window closes is reported.
//!
//! Not modelled: walk caches and intermediate entries (`leaf_only` is ignored, every
//! invalidation removes whole translations), deferred completion (a `TLBI` not yet followed by a
//! `DSB`), TLB conflict aborts, user/privileged permissions and access/dirty bits.

mod invalidate;
mod types;

use alloc::vec::Vec;
use core::fmt;

use machvm_addr::{PageSize, VirtAddr};
use machvm_sync::CpuIndex;
use machvm_sync::atomic::{AtomicU64, Ordering};

use crate::ops::Asid;

use invalidate::Target;
pub use invalidate::{SoftTlbBroadcast, SoftTlbCpu, UpdateWindow};
pub use types::{
    Access, Cached, FaultKind, SoftTlbError, SoftTlbStats, Source, Translated, Walked,
};

/// A host lock that parks waiters (a spinlock would burn whole time slices when simulated CPUs
/// outnumber host cores) and has no poisoning.
#[derive(Debug, Default)]
struct Lock<T>(std::sync::Mutex<T>);

impl<T> Lock<T> {
    fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }

    /// Locks, recovering the guard if a panicking thread poisoned the lock: no code of this
    /// module panics while holding one, and the data is valid after every statement anyway.
    fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A cached entry and its LRU stamp.
#[derive(Debug, Clone, Copy)]
struct Entry {
    cached: Cached,
    /// Epoch of the last translation that used the entry.
    last_used: u64,
}

/// The TLB of one CPU.
#[derive(Debug)]
struct CpuTlb {
    /// `sets × ways` slots, set-major: slot `set * ways + way`.
    slots: Vec<Option<Entry>>,
    /// Epoch of the last invalidation applied to this CPU (0: none).
    last_invalidation: u64,
    /// A `sync` was issued through a handle of this CPU and no `complete` yet.
    in_flush: bool,
    stats: SoftTlbStats,
}

/// An open [`UpdateWindow`].
#[derive(Debug, Clone, Copy)]
struct Window {
    id: u64,
    asid: Asid,
    /// First byte of the range.
    first: u64,
    /// Last byte of the range (inclusive).
    last: u64,
}
/// A per-CPU, ASID-tagged, set-associative software TLB that reports stale translations.
///
/// Shared between host threads (`Sync`): each CPU's entries sit behind their own lock. See the
/// [module documentation](self) for the model and what it leaves out.
///
/// # Examples (needs `std`)
///
/// ```
/// use machvm_addr::{PageSize, PhysAddr, VirtAddr};
/// use machvm_sync::CpuIndex;
/// use machvm_tlb::Asid;
/// use machvm_tlb::soft::{Access, SoftTlb, Source, Walked};
///
/// let tlb = SoftTlb::new(2, 16, 4)?;
/// let (cpu, asid, va) = (CpuIndex::new(0), Asid::new(1), VirtAddr::new(0x4000));
/// let mut page_table = Some(Walked::new(PhysAddr::new(0x9000), PageSize::Size4KiB));
///
/// // A miss fills the entry, the next access hits it.
/// let t = tlb.translate(cpu, asid, va, Access::Read, |_| page_table)?;
/// assert_eq!((t.pa, t.source), (PhysAddr::new(0x9000), Source::Filled));
/// assert!(tlb.translate(cpu, asid, va, Access::Read, |_| page_table)?.is_hit());
///
/// // Unmapping without invalidating: the next use is reported.
/// page_table = None;
/// let err = tlb.translate(cpu, asid, va, Access::Read, |_| page_table).unwrap_err();
/// assert!(err.is_stale());
///
/// // After the invalidation the access faults, as it should.
/// tlb.invalidate_page(cpu, asid, va)?;
/// let err = tlb.translate(cpu, asid, va, Access::Read, |_| page_table).unwrap_err();
/// assert!(err.is_fault());
/// # Ok::<(), machvm_tlb::soft::SoftTlbError>(())
/// ```
pub struct SoftTlb {
    cpus: Vec<Lock<CpuTlb>>,
    sets: usize,
    ways: usize,
    /// The epoch counter (see [`SoftTlb::epoch`]).
    clock: AtomicU64,
    /// Open update windows and the id of the next one.
    windows: Lock<(Vec<Window>, u64)>,
}

impl fmt::Debug for SoftTlb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftTlb")
            .field("cpus", &self.cpus.len())
            .field("sets", &self.sets)
            .field("ways", &self.ways)
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

/// Checks that a walk's frame is aligned to its page size.
fn check_walk(va: VirtAddr, current: Option<&Walked>) -> Result<(), SoftTlbError> {
    match current {
        Some(w) if !w.pa.is_aligned(w.size.bytes()) => {
            Err(SoftTlbError::BadWalk { va, walked: *w })
        }
        _ => Ok(()),
    }
}

impl SoftTlb {
    /// The largest CPU count.
    pub const MAX_CPUS: usize = 1024;
    /// The largest set count (sets are a power of two).
    pub const MAX_SETS: usize = 1 << 16;
    /// The largest associativity.
    pub const MAX_WAYS: usize = 64;
    /// The largest total number of entries over all CPUs (`cpus × sets × ways`).
    pub const MAX_ENTRIES: usize = 1 << 22;

    /// Returns an empty TLB for `cpus` CPUs, each with `sets` sets of `ways` entries.
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpuCount`] if `cpus` is 0 or above [`MAX_CPUS`](Self::MAX_CPUS).
    /// - [`SoftTlbError::BadSetCount`] if `sets` is 0, not a power of two or above
    ///   [`MAX_SETS`](Self::MAX_SETS).
    /// - [`SoftTlbError::BadWayCount`] if `ways` is 0 or above [`MAX_WAYS`](Self::MAX_WAYS).
    /// - [`SoftTlbError::TooLarge`] if `cpus × sets × ways` is above
    ///   [`MAX_ENTRIES`](Self::MAX_ENTRIES).
    pub fn new(cpus: usize, sets: usize, ways: usize) -> Result<Self, SoftTlbError> {
        if cpus == 0 || cpus > Self::MAX_CPUS {
            return Err(SoftTlbError::BadCpuCount { cpus });
        }
        if !sets.is_power_of_two() || sets > Self::MAX_SETS {
            return Err(SoftTlbError::BadSetCount { sets });
        }
        if ways == 0 || ways > Self::MAX_WAYS {
            return Err(SoftTlbError::BadWayCount { ways });
        }
        let per_cpu = sets * ways;
        let entries = per_cpu.saturating_mul(cpus);
        if entries > Self::MAX_ENTRIES {
            return Err(SoftTlbError::TooLarge { entries });
        }
        let cpus = (0..cpus)
            .map(|_| {
                Lock::new(CpuTlb {
                    slots: alloc::vec![None; per_cpu],
                    last_invalidation: 0,
                    in_flush: false,
                    stats: SoftTlbStats::default(),
                })
            })
            .collect();
        Ok(Self {
            cpus,
            sets,
            ways,
            clock: AtomicU64::new(0),
            windows: Lock::new((Vec::new(), 0)),
        })
    }

    /// Returns the number of CPUs.
    #[inline]
    pub fn cpus(&self) -> usize {
        self.cpus.len()
    }

    /// Returns the number of sets per CPU.
    #[inline]
    pub const fn sets(&self) -> usize {
        self.sets
    }

    /// Returns the number of ways (entries per set).
    #[inline]
    pub const fn ways(&self) -> usize {
        self.ways
    }

    /// Returns the current epoch: a counter that advances at every translation, fill and
    /// invalidation, so [`Cached::filled_at`] values order entries against events.
    #[inline]
    pub fn epoch(&self) -> u64 {
        // Acquire pairs with the AcqRel ticks: a caller that sees epoch `e` sees every event
        // stamped below `e`.
        self.clock.load(Ordering::Acquire)
    }

    /// Advances the epoch and returns the new value.
    fn tick(&self) -> u64 {
        // AcqRel: the ticks form one release sequence. A translation ticks before walking and an
        // invalidation ticks after the caller wrote the page table; if the invalidation's tick
        // is the earlier one, the walk's tick reads from it, so the page-table write happens
        // before the walk. That is what lets `translate` cache a walk that started after every
        // invalidation of its CPU.
        self.clock.fetch_add(1, Ordering::AcqRel).wrapping_add(1)
    }

    /// Returns the lock of `cpu`'s TLB.
    fn cpu_tlb(&self, cpu: CpuIndex) -> Result<&Lock<CpuTlb>, SoftTlbError> {
        self.cpus.get(cpu.as_usize()).ok_or(SoftTlbError::BadCpu {
            cpu,
            cpus: self.cpus.len(),
        })
    }

    /// Returns the first slot of the set an entry of `size` containing `va` lives in.
    fn set_base(&self, va: VirtAddr, size: PageSize) -> usize {
        // Truncating the page number is fine: only its low bits select the set.
        let page = (va.as_u64() >> size.shift()) as usize;
        (page & (self.sets - 1)) * self.ways
    }

    /// Calls `f` with the slot index and entry of every entry of `tlb` that serves `asid` at
    /// `va`.
    fn for_each_match(
        &self,
        tlb: &CpuTlb,
        asid: Asid,
        va: VirtAddr,
        mut f: impl FnMut(usize, &Entry),
    ) {
        for size in PageSize::ALL {
            let base = self.set_base(va, size);
            let Some(set) = tlb.slots.get(base..base + self.ways) else {
                continue;
            };
            for (way, slot) in set.iter().enumerate() {
                if let Some(entry) = slot {
                    // The size test makes each entry count once when sizes share a set.
                    if entry.cached.size == size && entry.cached.serves(asid, va) {
                        f(base + way, entry);
                    }
                }
            }
        }
    }

    /// Returns whether a stale `cached` entry lies inside an open update window.
    fn tolerated(&self, cached: &Cached) -> bool {
        let windows = self.windows.lock();
        windows
            .0
            .iter()
            .any(|w| (cached.global || cached.asid == w.asid) && cached.overlaps(w.first, w.last))
    }

    /// Stores `cached` in its set, in an empty way or over the least recently used one.
    fn fill(&self, tlb: &mut CpuTlb, cached: Cached, now: u64) {
        let base = self.set_base(cached.va, cached.size);
        let Some(set) = tlb.slots.get_mut(base..base + self.ways) else {
            return;
        };
        let victim = match set.iter().position(Option::is_none) {
            Some(way) => way,
            None => {
                tlb.stats.evictions += 1;
                set.iter()
                    .enumerate()
                    .min_by_key(|(_, slot)| slot.map_or(0, |e| e.last_used))
                    .map_or(0, |(way, _)| way)
            }
        };
        if let Some(slot) = set.get_mut(victim) {
            *slot = Some(Entry {
                cached,
                last_used: now,
            });
            tlb.stats.fills += 1;
        }
    }

    /// Translates an access of `cpu` in address space `asid` to `va`, checking any cached
    /// entry against the page table.
    ///
    /// `walk` is the page-table walk of the address space: it returns what the page table maps
    /// at the address it is given (always `va`) *now*, or `None`. It is called exactly once,
    /// hit or miss, with no lock held, so it may lock the simulated page table.
    ///
    /// - **Hit** (an entry of `asid`, or a global one, contains `va`): every such entry that
    ///   existed before the walk must still agree with it (see [`Cached::is_stale_against`]),
    ///   else the result is [`SoftTlbError::Stale`]. The most recently used entry serves the
    ///   access; if it lacks the permission and the page table now grants it, it is refilled
    ///   ([`Source::Upgraded`]).
    /// - **Miss**: the walk's translation is cached (evicting the least recently used entry of
    ///   its set if full) and used. A walk that overlapped an invalidation of `cpu` is used but
    ///   not cached ([`Source::Uncached`]).
    ///
    /// A walk that maps `va` without the needed permission is still cached (both architectures
    /// may cache translations that fault on permissions), then the access faults.
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpu`] if `cpu` is out of range.
    /// - [`SoftTlbError::BadWalk`] if the walk's `pa` is not a multiple of its `size`.
    /// - [`SoftTlbError::Fault`] with [`FaultKind::NotMapped`] on a miss where the walk
    ///   returned `None`; with [`FaultKind::Permission`] if the translation used (the cached
    ///   entry, or the walk on a miss) does not allow `access` and the page table grants no
    ///   upgrade.
    /// - [`SoftTlbError::Stale`] if a cached entry serving the access no longer matches the page
    ///   table and no [`UpdateWindow`] covers it: a missed invalidation.
    pub fn translate(
        &self,
        cpu: CpuIndex,
        asid: Asid,
        va: VirtAddr,
        access: Access,
        walk: impl FnOnce(VirtAddr) -> Option<Walked>,
    ) -> Result<Translated, SoftTlbError> {
        let lock = self.cpu_tlb(cpu)?;
        let start = self.tick();
        let current = walk(va);
        check_walk(va, current.as_ref())?;
        let fault = |kind| SoftTlbError::Fault {
            cpu,
            asid,
            va,
            access,
            kind,
        };

        let mut tlb = lock.lock();
        let raced = tlb.last_invalidation > start;
        // Pick the most recently used match; check every match that was cached before the walk
        // started (a later fill may come from a newer page table than the walk saw).
        let mut chosen: Option<(usize, Entry, bool)> = None;
        let mut stale: Option<Cached> = None;
        self.for_each_match(&tlb, asid, va, |idx, entry| {
            if stale.is_some() {
                return;
            }
            let is_stale =
                entry.cached.filled_at < start && entry.cached.is_stale_against(current.as_ref());
            if is_stale && !self.tolerated(&entry.cached) {
                stale = Some(entry.cached);
                return;
            }
            if chosen.is_none_or(|(_, best, _)| best.last_used < entry.last_used) {
                chosen = Some((idx, *entry, is_stale));
            }
        });
        if let Some(cached) = stale {
            tlb.stats.stale_reports += 1;
            return Err(SoftTlbError::Stale {
                cpu,
                asid,
                va,
                cached,
                current,
            });
        }

        let Some((idx, entry, is_stale)) = chosen else {
            // Miss.
            tlb.stats.misses += 1;
            let Some(w) = current else {
                tlb.stats.faults += 1;
                return Err(fault(FaultKind::NotMapped));
            };
            let now = self.tick();
            let cached = cached_from_walk(asid, va, w, now);
            let source = if raced {
                tlb.stats.uncached_walks += 1;
                Source::Uncached
            } else {
                self.fill(&mut tlb, cached, now);
                Source::Filled
            };
            if !w.permits(access) {
                tlb.stats.faults += 1;
                return Err(fault(FaultKind::Permission));
            }
            return translated(va, cached, source).ok_or(SoftTlbError::BadWalk { va, walked: w });
        };

        // Hit.
        if let Some(Some(slot)) = tlb.slots.get_mut(idx) {
            slot.last_used = start;
        }
        if is_stale {
            tlb.stats.hits += 1;
            tlb.stats.stale_tolerated += 1;
            if !entry.cached.permits(access) {
                tlb.stats.faults += 1;
                return Err(fault(FaultKind::Permission));
            }
            return translated(va, entry.cached, Source::StaleTolerated).ok_or(
                SoftTlbError::BadWalk {
                    va,
                    walked: entry.cached.walked(),
                },
            );
        }
        if entry.cached.permits(access) {
            tlb.stats.hits += 1;
            return translated(va, entry.cached, Source::Hit).ok_or(SoftTlbError::BadWalk {
                va,
                walked: entry.cached.walked(),
            });
        }
        match current {
            Some(w) if w.permits(access) && !entry.cached.is_stale_against(Some(&w)) => {
                // Permission upgrade: re-walk instead of faulting.
                tlb.stats.misses += 1;
                let now = self.tick();
                let cached = cached_from_walk(asid, va, w, now);
                let source = if raced {
                    tlb.stats.uncached_walks += 1;
                    Source::Uncached
                } else {
                    if let Some(slot) = tlb.slots.get_mut(idx) {
                        *slot = Some(Entry {
                            cached,
                            last_used: now,
                        });
                    }
                    tlb.stats.fills += 1;
                    tlb.stats.upgrades += 1;
                    Source::Upgraded
                };
                translated(va, cached, source).ok_or(SoftTlbError::BadWalk { va, walked: w })
            }
            _ => {
                tlb.stats.hits += 1;
                tlb.stats.faults += 1;
                Err(fault(FaultKind::Permission))
            }
        }
    }

    /// Returns the entry `cpu` would use for an access of `asid` to `va` (the most recently used
    /// one that serves it), without walking, checking or touching the LRU order.
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpu`] if `cpu` is out of range.
    pub fn cached(
        &self,
        cpu: CpuIndex,
        asid: Asid,
        va: VirtAddr,
    ) -> Result<Option<Cached>, SoftTlbError> {
        let tlb = self.cpu_tlb(cpu)?.lock();
        let mut best: Option<Entry> = None;
        self.for_each_match(&tlb, asid, va, |_, entry| {
            if best.is_none_or(|b| b.last_used < entry.last_used) {
                best = Some(*entry);
            }
        });
        Ok(best.map(|e| e.cached))
    }

    /// Returns every entry `cpu` holds, in slot order.
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpu`] if `cpu` is out of range.
    pub fn entries(&self, cpu: CpuIndex) -> Result<Vec<Cached>, SoftTlbError> {
        let tlb = self.cpu_tlb(cpu)?.lock();
        Ok(tlb.slots.iter().flatten().map(|e| e.cached).collect())
    }

    /// Checks that no CPU holds an entry serving `asid` at `va` that disagrees with the page
    /// table's current translation `walk(va)` (called once). Use it after a shootdown: it finds
    /// stale entries before any CPU uses them.
    ///
    /// Unlike [`translate`](Self::translate) it ignores [`UpdateWindow`]s, and it reports
    /// entries that a correct kernel may still legally hold if it flushes lazily (for example
    /// entries of an ASID that will be invalidated before reuse).
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadWalk`] if the walk's `pa` is not a multiple of its `size`.
    /// - [`SoftTlbError::Stale`] for the first CPU (lowest index) holding a stale entry.
    pub fn check_no_stale(
        &self,
        asid: Asid,
        va: VirtAddr,
        walk: impl FnOnce(VirtAddr) -> Option<Walked>,
    ) -> Result<(), SoftTlbError> {
        let candidates = self.collect(|tlb, out| {
            self.for_each_match(tlb, asid, va, |idx, e| out.push((idx, e.cached)));
        });
        let current = walk(va);
        check_walk(va, current.as_ref())?;
        for (cpu, idx, cached) in candidates {
            self.report_stale(cpu, idx, cached, asid, va, current)?;
        }
        Ok(())
    }

    /// Checks that no CPU holds an entry of `asid` (or a global one) overlapping
    /// `[start, start + len)` that disagrees with the page table. `walk` is called once per
    /// such entry, at the entry's first address inside the range.
    ///
    /// The same caveats as [`check_no_stale`](Self::check_no_stale) apply.
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadWalk`] if a walk's `pa` is not a multiple of its `size`.
    /// - [`SoftTlbError::Stale`] for the first stale entry found (CPUs in index order).
    pub fn check_range_no_stale(
        &self,
        asid: Asid,
        start: VirtAddr,
        len: u64,
        mut walk: impl FnMut(VirtAddr) -> Option<Walked>,
    ) -> Result<(), SoftTlbError> {
        let Some(target) = Target::range(asid, start, len) else {
            return Ok(());
        };
        let candidates = self.collect(|tlb, out| {
            for (idx, slot) in tlb.slots.iter().enumerate() {
                if let Some(e) = slot {
                    if target.hits(&e.cached) {
                        out.push((idx, e.cached));
                    }
                }
            }
        });
        for (cpu, idx, cached) in candidates {
            let va = if cached.va < start { start } else { cached.va };
            let current = walk(va);
            check_walk(va, current.as_ref())?;
            self.report_stale(cpu, idx, cached, asid, va, current)?;
        }
        Ok(())
    }

    /// Runs `f` on each CPU's TLB under its lock and returns what it pushed, tagged with the
    /// CPU.
    fn collect(
        &self,
        mut f: impl FnMut(&CpuTlb, &mut Vec<(usize, Cached)>),
    ) -> Vec<(CpuIndex, usize, Cached)> {
        let mut all = Vec::new();
        let mut found = Vec::new();
        for (cpu, lock) in self.cpu_indices() {
            found.clear();
            f(&lock.lock(), &mut found);
            all.extend(found.iter().map(|&(idx, c)| (cpu, idx, c)));
        }
        all
    }

    /// Returns whether `cpu` still holds `cached` in slot `idx` (it did before the caller's
    /// walk, so it held it throughout). Fill epochs are unique, so they identify the entry.
    /// Reports `cached` (slot `idx` of `cpu`) as stale if it disagrees with `current`, the
    /// page table's translation of `va`, and the CPU still holds it.
    fn report_stale(
        &self,
        cpu: CpuIndex,
        idx: usize,
        cached: Cached,
        asid: Asid,
        va: VirtAddr,
        current: Option<Walked>,
    ) -> Result<(), SoftTlbError> {
        if cached.is_stale_against(current.as_ref()) && self.still_holds(cpu, idx, &cached) {
            return Err(SoftTlbError::Stale {
                cpu,
                asid,
                va,
                cached,
                current,
            });
        }
        Ok(())
    }

    fn still_holds(&self, cpu: CpuIndex, idx: usize, cached: &Cached) -> bool {
        self.cpu_tlb(cpu).is_ok_and(
            |lock| matches!(lock.lock().slots.get(idx), Some(Some(e)) if e.cached == *cached),
        )
    }

    /// Iterates over the CPUs with their index.
    fn cpu_indices(&self) -> impl Iterator<Item = (CpuIndex, &Lock<CpuTlb>)> {
        // `new` caps the count at `MAX_CPUS`, so every index fits in a `u32`.
        self.cpus
            .iter()
            .enumerate()
            .map(|(i, lock)| (CpuIndex::new(i as u32), lock))
    }

    /// Returns the counters summed over every CPU.
    pub fn stats(&self) -> SoftTlbStats {
        let mut sum = SoftTlbStats::default();
        for lock in &self.cpus {
            sum.add(&lock.lock().stats);
        }
        sum
    }

    /// Returns the counters of `cpu`.
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpu`] if `cpu` is out of range.
    pub fn cpu_stats(&self, cpu: CpuIndex) -> Result<SoftTlbStats, SoftTlbError> {
        Ok(self.cpu_tlb(cpu)?.lock().stats)
    }

    /// Sets every counter of every CPU to zero (entries stay).
    pub fn reset_stats(&self) {
        for lock in &self.cpus {
            lock.lock().stats = SoftTlbStats::default();
        }
    }
}

/// Returns the entry a walk of `va` in `asid` fills.
fn cached_from_walk(asid: Asid, va: VirtAddr, w: Walked, filled_at: u64) -> Cached {
    Cached {
        asid,
        global: w.global,
        va: va.align_down_to(w.size),
        size: w.size,
        pa: w.pa,
        writable: w.writable,
        executable: w.executable,
        filled_at,
    }
}

/// Returns the translation of `va` through `cached`, or `None` if the physical address
/// overflows.
fn translated(va: VirtAddr, cached: Cached, source: Source) -> Option<Translated> {
    Some(Translated {
        pa: cached.pa.checked_add(va.page_offset(cached.size))?,
        entry: cached,
        source,
    })
}
