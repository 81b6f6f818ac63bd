//! Invalidation in the software TLB: what an invalidation removes, the per-CPU and broadcast
//! operations, the [`TlbOps`] handles and update windows.

use machvm_addr::{PageSize, VirtAddr};
use machvm_sync::CpuIndex;

use super::types::Cached;
use super::{CpuTlb, Lock, SoftTlb, SoftTlbError, Window};
use crate::ops::{Asid, TlbCaps, TlbOps};

/// Which entries an invalidation removes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    /// Entries of `asid` (or global) containing `va`.
    Page(Asid, VirtAddr),
    /// Entries of `asid` (or global) overlapping the inclusive byte range.
    Range(Asid, u64, u64),
    /// Non-global entries of `asid`.
    Asid(Asid),
    /// Every entry.
    All,
}

impl Target {
    /// Returns the target for `[start, start + len)`, or `None` if `len` is zero.
    pub(super) fn range(asid: Asid, start: VirtAddr, len: u64) -> Option<Self> {
        let first = start.as_u64();
        let last = first.saturating_add(len.checked_sub(1)?);
        Some(Self::Range(asid, first, last))
    }

    pub(super) fn hits(self, c: &Cached) -> bool {
        match self {
            Self::Page(asid, va) => c.serves(asid, va),
            Self::Range(asid, first, last) => {
                (c.global || c.asid == asid) && c.overlaps(first, last)
            }
            Self::Asid(asid) => !c.global && c.asid == asid,
            Self::All => true,
        }
    }
}

impl SoftTlb {
    /// Removes the entries `target` hits from one CPU and returns how many.
    fn invalidate_on(&self, lock: &Lock<CpuTlb>, target: Option<Target>) -> usize {
        let mut tlb = lock.lock();
        let mut removed = 0;
        if let Some(target) = target {
            for slot in &mut tlb.slots {
                if slot.is_some_and(|e| target.hits(&e.cached)) {
                    *slot = None;
                    removed += 1;
                }
            }
        }
        tlb.last_invalidation = self.tick();
        tlb.stats.invalidations += 1;
        tlb.stats.entries_invalidated += removed as u64;
        removed
    }

    /// Removes the entries `target` hits from every CPU and returns how many.
    fn invalidate_everywhere(&self, target: Option<Target>) -> usize {
        self.cpus
            .iter()
            .map(|lock| self.invalidate_on(lock, target))
            .sum()
    }

    /// Invalidates on `cpu` the entries of `asid`, and global ones, containing `va`; returns
    /// how many were removed.
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpu`] if `cpu` is out of range.
    pub fn invalidate_page(
        &self,
        cpu: CpuIndex,
        asid: Asid,
        va: VirtAddr,
    ) -> Result<usize, SoftTlbError> {
        Ok(self.invalidate_on(self.cpu_tlb(cpu)?, Some(Target::Page(asid, va))))
    }

    /// Invalidates on `cpu` the entries of `asid`, and global ones, overlapping
    /// `[start, start + len)` (saturating at the top of the address space); returns how many
    /// were removed. Exact, like a range instruction without a level hint.
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpu`] if `cpu` is out of range.
    pub fn invalidate_range(
        &self,
        cpu: CpuIndex,
        asid: Asid,
        start: VirtAddr,
        len: u64,
    ) -> Result<usize, SoftTlbError> {
        Ok(self.invalidate_on(self.cpu_tlb(cpu)?, Target::range(asid, start, len)))
    }

    /// Invalidates on `cpu` every non-global entry of `asid`; returns how many were removed.
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpu`] if `cpu` is out of range.
    pub fn invalidate_asid(&self, cpu: CpuIndex, asid: Asid) -> Result<usize, SoftTlbError> {
        Ok(self.invalidate_on(self.cpu_tlb(cpu)?, Some(Target::Asid(asid))))
    }

    /// Invalidates every entry of `cpu`, global ones included; returns how many were removed.
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpu`] if `cpu` is out of range.
    pub fn invalidate_all(&self, cpu: CpuIndex) -> Result<usize, SoftTlbError> {
        Ok(self.invalidate_on(self.cpu_tlb(cpu)?, Some(Target::All)))
    }

    /// Does [`invalidate_page`](Self::invalidate_page) on every CPU; returns the total removed.
    pub fn broadcast_invalidate_page(&self, asid: Asid, va: VirtAddr) -> usize {
        self.invalidate_everywhere(Some(Target::Page(asid, va)))
    }

    /// Does [`invalidate_range`](Self::invalidate_range) on every CPU; returns the total
    /// removed.
    pub fn broadcast_invalidate_range(&self, asid: Asid, start: VirtAddr, len: u64) -> usize {
        self.invalidate_everywhere(Target::range(asid, start, len))
    }

    /// Does [`invalidate_asid`](Self::invalidate_asid) on every CPU; returns the total removed.
    pub fn broadcast_invalidate_asid(&self, asid: Asid) -> usize {
        self.invalidate_everywhere(Some(Target::Asid(asid)))
    }

    /// Does [`invalidate_all`](Self::invalidate_all) on every CPU; returns the total removed.
    pub fn broadcast_invalidate_all(&self) -> usize {
        self.invalidate_everywhere(Some(Target::All))
    }

    /// Returns a [`TlbOps`] handle whose invalidations reach only `cpu` (like `x86_64`
    /// `INVLPG`/`INVPCID`).
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpu`] if `cpu` is out of range.
    pub fn cpu(&self, cpu: CpuIndex) -> Result<SoftTlbCpu<'_>, SoftTlbError> {
        self.cpu_tlb(cpu)?;
        Ok(SoftTlbCpu { tlb: self, cpu })
    }

    /// Returns a [`TlbOps`] handle, issued by `issuer`, whose invalidations reach every CPU
    /// (like aarch64 `TLBI …IS`).
    ///
    /// # Errors
    ///
    /// - [`SoftTlbError::BadCpu`] if `issuer` is out of range.
    pub fn broadcast(&self, issuer: CpuIndex) -> Result<SoftTlbBroadcast<'_>, SoftTlbError> {
        self.cpu_tlb(issuer)?;
        Ok(SoftTlbBroadcast { tlb: self, issuer })
    }

    /// Opens an update window for `asid` over `[start, start + len)`: until the returned guard
    /// is dropped, [`translate`](Self::translate) serves stale entries of `asid` (or global ones)
    /// overlapping the range from the cache instead of reporting them, and counts them in
    /// [`SoftTlbStats::stale_tolerated`](super::SoftTlbStats::stale_tolerated).
    ///
    /// Open it before writing the page table and close it once the shootdown has completed: it
    /// models the time during which other CPUs may legally still use the old translation. Any
    /// use of a stale entry after the window closes is reported. Windows may overlap.
    pub fn begin_update(&self, asid: Asid, start: VirtAddr, len: u64) -> UpdateWindow<'_> {
        let mut windows = self.windows.lock();
        let id = windows.1;
        windows.1 = id.wrapping_add(1);
        if let Some(Target::Range(_, first, last)) = Target::range(asid, start, len) {
            windows.0.push(Window {
                id,
                asid,
                first,
                last,
            });
        }
        UpdateWindow { tlb: self, id }
    }

    /// Records a `sync` through a handle of `issuer`.
    fn record_sync(&self, issuer: CpuIndex) {
        if let Ok(lock) = self.cpu_tlb(issuer) {
            let mut tlb = lock.lock();
            tlb.stats.syncs += 1;
            tlb.in_flush = true;
        }
    }

    /// Records a `complete` through a handle of `issuer`.
    fn record_complete(&self, issuer: CpuIndex) {
        if let Ok(lock) = self.cpu_tlb(issuer) {
            let mut tlb = lock.lock();
            tlb.stats.completes += 1;
            if !tlb.in_flush {
                tlb.stats.unsynced_invalidations += 1;
            }
            tlb.in_flush = false;
        }
    }

    /// Counts an invalidation through a handle of `issuer` made outside `sync … complete`.
    fn record_invalidation(&self, issuer: CpuIndex) {
        if let Ok(lock) = self.cpu_tlb(issuer) {
            let mut tlb = lock.lock();
            if !tlb.in_flush {
                tlb.stats.unsynced_invalidations += 1;
            }
        }
    }
}

/// A [`TlbOps`] handle whose invalidations reach one CPU of a [`SoftTlb`] (from
/// [`SoftTlb::cpu`]).
///
/// Capabilities: not broadcast, range invalidation (exact), tagged with 16-bit ASIDs.
/// `leaf_only` is ignored (walk caches are not modelled).
#[derive(Debug, Clone, Copy)]
pub struct SoftTlbCpu<'a> {
    tlb: &'a SoftTlb,
    cpu: CpuIndex,
}

impl SoftTlbCpu<'_> {
    /// Returns the CPU this handle invalidates.
    #[inline]
    pub const fn cpu_index(&self) -> CpuIndex {
        self.cpu
    }

    /// Applies `target` to this handle's CPU.
    fn apply(&self, target: Option<Target>) {
        self.tlb.record_invalidation(self.cpu);
        if let Ok(lock) = self.tlb.cpu_tlb(self.cpu) {
            self.tlb.invalidate_on(lock, target);
        }
    }
}

/// Implements [`TlbOps`] for a handle type with an `apply(Option<Target>)` method; `$cpu` is
/// the field naming the CPU that issues the operations.
macro_rules! soft_tlb_ops {
    ($handle:ident, $cpu:ident, broadcast: $broadcast:expr) => {
        impl TlbOps for $handle<'_> {
            fn caps(&self) -> TlbCaps {
                TlbCaps::new($broadcast, true, true, 16)
            }

            fn sync(&self) {
                self.tlb.record_sync(self.$cpu);
            }

            fn invalidate_page(&self, asid: Asid, va: VirtAddr, _leaf_only: bool) {
                self.apply(Some(Target::Page(asid, va)));
            }

            fn invalidate_range(
                &self,
                asid: Asid,
                start: VirtAddr,
                len: u64,
                _stride: PageSize,
                _leaf_only: bool,
            ) {
                self.apply(Target::range(asid, start, len));
            }

            fn invalidate_asid(&self, asid: Asid) {
                self.apply(Some(Target::Asid(asid)));
            }

            fn invalidate_all(&self) {
                self.apply(Some(Target::All));
            }

            fn complete(&self) {
                self.tlb.record_complete(self.$cpu);
            }
        }
    };
}

soft_tlb_ops!(SoftTlbCpu, cpu, broadcast: false);

/// A [`TlbOps`] handle whose invalidations reach every CPU of a [`SoftTlb`] (from
/// [`SoftTlb::broadcast`]), like aarch64 `TLBI …IS`.
///
/// Capabilities: broadcast, range invalidation (exact), tagged with 16-bit ASIDs.
/// `sync`/`complete` are recorded on the issuing CPU; `leaf_only` is ignored.
#[derive(Debug, Clone, Copy)]
pub struct SoftTlbBroadcast<'a> {
    tlb: &'a SoftTlb,
    issuer: CpuIndex,
}

impl SoftTlbBroadcast<'_> {
    /// Returns the CPU that issues this handle's operations.
    #[inline]
    pub const fn issuer(&self) -> CpuIndex {
        self.issuer
    }

    /// Applies `target` to every CPU.
    fn apply(&self, target: Option<Target>) {
        self.tlb.record_invalidation(self.issuer);
        self.tlb.invalidate_everywhere(target);
    }
}

soft_tlb_ops!(SoftTlbBroadcast, issuer, broadcast: true);

/// An open update window of a [`SoftTlb`] (from [`SoftTlb::begin_update`]); closed when
/// dropped.
#[must_use = "the window closes as soon as it is dropped"]
#[derive(Debug)]
pub struct UpdateWindow<'a> {
    tlb: &'a SoftTlb,
    id: u64,
}

impl UpdateWindow<'_> {
    /// Closes the window (the same as dropping it).
    #[inline]
    pub fn close(self) {}
}

impl Drop for UpdateWindow<'_> {
    fn drop(&mut self) {
        let mut windows = self.tlb.windows.lock();
        windows.0.retain(|w| w.id != self.id);
    }
}
