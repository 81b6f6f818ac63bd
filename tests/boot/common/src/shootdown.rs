//! A `FlushHook` that flushes through `machvm-tlb`'s cross-CPU [`Shootdown`] engine.
//!
//! [`TlbFlush`](machvm_tlb::TlbFlush) flushes the executing CPU (and, on aarch64, everyone,
//! because its `TLBI`s are broadcast). A kernel with CPUs that cannot reach each other's TLBs
//! (x86_64) needs the shootdown: post the request to every CPU in the address space's set,
//! interrupt them, flush locally, wait for their acknowledgements. This hook does that for
//! page-table operations; with broadcasting TLB operations the engine sends no IPI at all.

use machvm_page_table::{FlushHook, FlushRange};
use machvm_sync::CpuIndex;
use machvm_tlb::gather::FlushRecord;
use machvm_tlb::{Asid, CpuMask, IpiSender, Shootdown, ShootdownError, TlbOps};

/// Flushes page-table changes on every CPU of `targets` through a [`Shootdown`] engine.
#[derive(Debug)]
pub struct ShootdownFlush<'a, T: TlbOps, I: IpiSender, const CPUS: usize> {
    /// The engine shared by all CPUs.
    pub engine: &'a Shootdown<CPUS>,
    /// The executing CPU.
    pub me: CpuIndex,
    /// The CPUs that may cache the address space's translations.
    pub targets: CpuMask,
    /// The address space.
    pub asid: Asid,
    /// The executing CPU's TLB operations.
    pub ops: &'a T,
    /// How to interrupt another CPU.
    pub ipi: &'a I,
    /// The first shootdown error, if any (a `FlushHook` cannot return one).
    pub error: Option<ShootdownError>,
    /// Shootdowns issued.
    pub shootdowns: u64,
}

impl<T: TlbOps, I: IpiSender, const CPUS: usize> FlushHook for ShootdownFlush<'_, T, I, CPUS> {
    fn sync(&mut self) {
        // Only new entries: no other CPU can cache them, a local barrier is enough.
        self.ops.sync();
        self.ops.complete();
    }

    fn invalidate(&mut self, range: &FlushRange) {
        self.shootdowns += 1;
        let record = FlushRecord::from(range);
        if let Err(e) =
            self.engine
                .shootdown(self.me, self.targets, self.asid, record, self.ops, self.ipi)
        {
            self.error.get_or_insert(e);
        }
    }
}
