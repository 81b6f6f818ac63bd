//! The `machvm-page-table` flush hook (feature `page-table`).
//!
//! [`TlbFlush`] performs the flushes page-table operations owe through any [`TlbOps`], so
//! break-before-make inside an operation and "free the unlinked tables after the flush" in
//! [`PageTable::finish`](machvm_page_table::PageTable::finish) work end to end. To flush
//! several operations once, merge their `PendingFlush` records with
//! [`PageTable::merge_pending`](machvm_page_table::PageTable::merge_pending) and finish the
//! merged record: one flush, sized by the same rules as a [`FlushGather`].
//!
//! [`ShootdownFlush`] is the SMP version: every flush is a
//! [`Shootdown::shootdown_space`] to the CPUs running the address space, and it returns only
//! once they all acknowledged, so tables are freed after every CPU dropped them.

use machvm_page_table::{FlushHook, FlushRange};

use machvm_sync::CpuIndex;

use crate::gather::{DEFAULT_CEILING, FlushGather, FlushRecord};
use crate::ops::{Asid, TlbOps};
use crate::shootdown::{IpiSender, Shootdown, ShootdownError};
use crate::space::SpaceCpus;

impl From<&FlushRange> for FlushRecord {
    fn from(range: &FlushRange) -> Self {
        Self::new(range.start, range.len, range.stride).leaf_only(range.leaf_only)
    }
}

/// A [`FlushHook`] that flushes one address space through `T`.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_page_table::{PageAttrs, PageTable, Region, X86Pml4};
/// use machvm_tlb::soft::SoftTlb;
/// use machvm_tlb::{Asid, TlbFlush};
/// use machvm_sync::CpuIndex;
///
/// let sim = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let mut alloc = sim.frame_allocator();
/// let mut pt = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc)?;
/// let va = VirtAddr::new(0x4000_0000);
/// let attrs = PageAttrs::new(VmProt::READ | VmProt::WRITE);
/// let tlb = SoftTlb::new(1, 16, 4)?;
/// let cpu0 = tlb.cpu(CpuIndex::new(0))?;
/// let mut hook = TlbFlush::new(&cpu0, Asid::new(5));
///
/// let done = pt.map_range(va, PhysAddr::new(0x10_0000), 0x4000, &attrs, PageSize::Size4KiB, &mut alloc)?;
/// pt.finish(done, &mut hook, &mut alloc)?;
/// let done = pt.unmap_range(va, 0x1000, &mut hook, &mut alloc)?;
/// pt.finish(done, &mut hook, &mut alloc)?; // one page: one invalidation
/// assert_eq!(hook.outcome().pages, 1);
/// let done = pt.unmap_range(va, 0x4000, &mut hook, &mut alloc)?;
/// // The rest, and the leaf table they leave empty: its whole 2 MiB span is invalidated
/// // (one range operation, the soft TLB has them), then the table frames are freed.
/// pt.finish(done, &mut hook, &mut alloc)?;
/// assert_eq!(hook.outcome().ranges, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TlbFlush<'a, T: TlbOps + ?Sized> {
    ops: &'a T,
    asid: Asid,
    ceiling: u64,
    outcome: crate::gather::FlushOutcome,
}

impl<'a, T: TlbOps + ?Sized> TlbFlush<'a, T> {
    /// Returns a hook flushing address space `asid` through `ops`, page by page up to
    /// [`DEFAULT_CEILING`] pages.
    pub const fn new(ops: &'a T, asid: Asid) -> Self {
        Self::with_ceiling(ops, asid, DEFAULT_CEILING)
    }

    /// Returns a hook that invalidates page by page up to `ceiling` pages.
    pub const fn with_ceiling(ops: &'a T, asid: Asid, ceiling: u64) -> Self {
        Self {
            ops,
            asid,
            ceiling,
            outcome: crate::gather::FlushOutcome {
                pages: 0,
                ranges: 0,
                full: 0,
                synced: false,
            },
        }
    }

    /// Returns the invalidations issued so far (summed over every flush).
    pub const fn outcome(&self) -> crate::gather::FlushOutcome {
        self.outcome
    }
}

impl<T: TlbOps + ?Sized> FlushHook for TlbFlush<'_, T> {
    fn sync(&mut self) {
        // New entries only: make them visible to the walkers and to this CPU's next fetch.
        self.ops.sync();
        self.ops.complete();
        self.outcome.synced = true;
    }

    fn invalidate(&mut self, range: &FlushRange) {
        let mut gather = FlushGather::with_ceiling(self.asid, self.ceiling);
        gather.add(FlushRecord::from(range));
        let done = gather.flush(self.ops);
        self.outcome.pages += done.pages;
        self.outcome.ranges += done.ranges;
        self.outcome.full += done.full;
        self.outcome.synced |= done.synced;
    }
}

/// A [`FlushHook`] that flushes one address space on every CPU that runs it, through a
/// [`Shootdown`] engine and the space's [`SpaceCpus`].
///
/// `invalidate` returns only when every CPU running the space has flushed: a target that
/// misses the engine's spin budget is waited for without limit (counted in
/// [`ShootdownFlushStats::late`]), because the page-table crate frees unlinked tables as soon
/// as the hook returns. A kernel that wants a watchdog instead calls
/// [`Shootdown::shootdown_space`] itself and decides what a timeout means.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_page_table::{PageAttrs, PageTable, Region, X86Pml4};
/// use machvm_sync::CpuIndex;
/// use machvm_tlb::shootdown::{IpiSender, Shootdown};
/// use machvm_tlb::soft::SoftTlb;
/// use machvm_tlb::{Asid, ShootdownFlush, SpaceCpus};
///
/// struct NoOtherCpu;
/// impl IpiSender for NoOtherCpu {
///     fn send(&self, _: CpuIndex) { unreachable!("only CPU 0 runs the space") }
/// }
///
/// let sim = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let mut alloc = sim.frame_allocator();
/// let mut pt = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc)?;
/// let (engine, space, tlb) = (Shootdown::<2>::new(1 << 20), SpaceCpus::<2>::new(), SoftTlb::new(2, 16, 4)?);
/// let me = CpuIndex::new(0);
/// let _ = space.switch_in(me)?;
/// let local = tlb.cpu(me)?;
/// let mut hook = ShootdownFlush::new(&engine, &space, me, Asid::new(3), &local, &NoOtherCpu)?;
///
/// let va = VirtAddr::new(0x4000_0000);
/// let attrs = PageAttrs::new(VmProt::READ | VmProt::WRITE);
/// let done = pt.map_range(va, PhysAddr::new(0x10_0000), 0x2000, &attrs, PageSize::Size4KiB, &mut alloc)?;
/// pt.finish(done, &mut hook, &mut alloc)?;
/// let done = pt.unmap_range(va, 0x2000, &mut hook, &mut alloc)?;
/// pt.finish(done, &mut hook, &mut alloc)?;
/// assert_eq!(hook.stats().shootdowns, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ShootdownFlush<'a, T: TlbOps + ?Sized, I: IpiSender + ?Sized, const CPUS: usize> {
    engine: &'a Shootdown<CPUS>,
    space: &'a SpaceCpus<CPUS>,
    me: CpuIndex,
    asid: Asid,
    local: &'a T,
    ipi: &'a I,
    stats: ShootdownFlushStats,
}

/// What a [`ShootdownFlush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShootdownFlushStats {
    /// Shootdowns issued (one per `invalidate`).
    pub shootdowns: u64,
    /// Shootdowns in which some CPU missed the engine's spin budget and was waited for.
    pub late: u64,
}

impl<'a, T: TlbOps + ?Sized, I: IpiSender + ?Sized, const CPUS: usize>
    ShootdownFlush<'a, T, I, CPUS>
{
    /// Returns a hook with which CPU `me` flushes the address space `space` (ASID `asid`)
    /// through its `local` operations and the `engine`, interrupting others through `ipi`.
    ///
    /// # Errors
    ///
    /// [`ShootdownError::CpuOutOfRange`] if `me` is not below `CPUS`.
    pub fn new(
        engine: &'a Shootdown<CPUS>,
        space: &'a SpaceCpus<CPUS>,
        me: CpuIndex,
        asid: Asid,
        local: &'a T,
        ipi: &'a I,
    ) -> Result<Self, ShootdownError> {
        if me.as_usize() >= CPUS {
            return Err(ShootdownError::CpuOutOfRange { cpu: me });
        }
        Ok(Self {
            engine,
            space,
            me,
            asid,
            local,
            ipi,
            stats: ShootdownFlushStats::default(),
        })
    }

    /// Returns what the hook did so far.
    pub const fn stats(&self) -> ShootdownFlushStats {
        self.stats
    }
}

impl<T: TlbOps + ?Sized, I: IpiSender + ?Sized, const CPUS: usize> FlushHook
    for ShootdownFlush<'_, T, I, CPUS>
{
    fn sync(&mut self) {
        self.local.sync();
        self.local.complete();
    }

    fn invalidate(&mut self, range: &FlushRange) {
        self.stats.shootdowns += 1;
        let record = FlushRecord::from(range);
        let result = self
            .engine
            .shootdown_space(self.me, self.space, self.asid, record, self.local, self.ipi);
        if let Err(ShootdownError::Timeout { cpus }) = result {
            self.stats.late += 1;
            // `new` checked `me` and the late CPUs come from `space`, so `wait` cannot fail.
            let _ = self.engine.wait(self.me, cpus, self.local);
        }
    }
}
