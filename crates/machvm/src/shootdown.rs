//! [`ShootdownTlbs`]: the [`FlushProvider`] of an SMP kernel — every flush of a space is a
//! TLB shootdown (through `machvm-tlb`'s [`Shootdown`] engine) to the CPUs that run it, and
//! a CPU that switches a space in catches up on the shootdowns it missed while away.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use machvm_addr::VirtAddr;
use machvm_page_table::{FlushHook, FlushRange};
use machvm_sync::{CpuId, CpuIndex};
use machvm_tlb::shootdown::{IpiSender, Shootdown};
use machvm_tlb::{Asid, ShootdownFlush, SpaceCpus, TlbOps};

use crate::system::FlushProvider;

/// The kernel's TLB machinery a [`ShootdownTlbs`] drives: all `'static` (a kernel keeps
/// them in statics).
pub struct ShootdownParts<T, I, C, const CPUS: usize>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
    /// The shootdown engine (its IPI handler runs [`Shootdown::handle`]).
    pub engine: &'static Shootdown<CPUS>,
    /// This CPU's TLB operations (`invlpg` / `tlbi`).
    pub local: &'static T,
    /// How to interrupt another CPU.
    pub ipi: &'static I,
    /// Which CPU the caller runs on.
    pub cpu: &'static C,
}

impl<T, I, C, const CPUS: usize> fmt::Debug for ShootdownParts<T, I, C, CPUS>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShootdownParts")
            .field("cpus", &CPUS)
            .finish_non_exhaustive()
    }
}

impl<T, I, C, const CPUS: usize> Clone for ShootdownParts<T, I, C, CPUS>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, I, C, const CPUS: usize> Copy for ShootdownParts<T, I, C, CPUS>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
}

/// A [`FlushProvider`] for SMP kernels (see the [module documentation](self)): one
/// [`SpaceCpus`] per ASID records which CPUs run the space and which missed shootdowns.
///
/// # Examples
///
/// ```
/// use machvm::shootdown::{ShootdownParts, ShootdownTlbs};
/// use machvm::FlushProvider;
/// use machvm_sync::{CpuId, CpuIndex};
/// use machvm_tlb::shootdown::{IpiSender, Shootdown};
/// use machvm_tlb::{Asid, TlbCaps, TlbOps};
/// use machvm_addr::VirtAddr;
///
/// // A one-CPU machine whose TLB needs no maintenance, to show the wiring.
/// struct Cpu0;
/// // SAFETY: there is one CPU.
/// unsafe impl CpuId for Cpu0 { fn current_cpu(&self) -> CpuIndex { CpuIndex::new(0) } }
/// struct NoIpi;
/// impl IpiSender for NoIpi { fn send(&self, _: CpuIndex) {} }
/// struct NoTlb;
/// impl TlbOps for NoTlb {
///     fn caps(&self) -> TlbCaps { TlbCaps::new(false, false, true, 8) }
///     fn invalidate_page(&self, _: Asid, _: VirtAddr, _: bool) {}
///     fn invalidate_asid(&self, _: Asid) {}
///     fn invalidate_all(&self) {}
///     fn sync(&self) {}
///     fn complete(&self) {}
/// }
/// static ENGINE: Shootdown<1> = Shootdown::new(1 << 20);
/// let tlbs = ShootdownTlbs::new(ShootdownParts { engine: &ENGINE, local: &NoTlb, ipi: &NoIpi, cpu: &Cpu0 });
/// tlbs.switch_in(Asid::new(3), 0);
/// assert_eq!(tlbs.running(Asid::new(3)), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ShootdownTlbs<T, I, C, const CPUS: usize>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
    parts: ShootdownParts<T, I, C, CPUS>,
    spaces: Arc<Vec<SpaceCpus<CPUS>>>,
}

impl<T, I, C, const CPUS: usize> fmt::Debug for ShootdownTlbs<T, I, C, CPUS>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShootdownTlbs")
            .field("cpus", &CPUS)
            .finish_non_exhaustive()
    }
}

/// ASIDs a [`ShootdownTlbs`] tracks (every ASID a [`VmSystem`](crate::VmSystem) hands out).
const ASIDS: usize = 256;

impl<T, I, C, const CPUS: usize> ShootdownTlbs<T, I, C, CPUS>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
    /// A provider over the kernel's TLB machinery.
    #[must_use]
    pub fn new(parts: ShootdownParts<T, I, C, CPUS>) -> Self {
        Self {
            parts,
            spaces: Arc::new((0..ASIDS).map(|_| SpaceCpus::new()).collect()),
        }
    }

    fn space(&self, asid: Asid) -> Option<&SpaceCpus<CPUS>> {
        self.spaces.get(usize::from(asid.as_u16()))
    }

    /// The CPUs running the space of `asid` (bit per CPU).
    #[must_use]
    pub fn running(&self, asid: Asid) -> u64 {
        self.space(asid).map_or(0, |s| s.running().bits())
    }
}

/// The flush hook of one space of a [`ShootdownTlbs`].
pub struct ShootdownHook<T, I, C, const CPUS: usize>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
    parts: ShootdownParts<T, I, C, CPUS>,
    spaces: Arc<Vec<SpaceCpus<CPUS>>>,
    asid: Asid,
}

impl<T, I, C, const CPUS: usize> fmt::Debug for ShootdownHook<T, I, C, CPUS>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShootdownHook")
            .field("asid", &self.asid)
            .finish_non_exhaustive()
    }
}

impl<T, I, C, const CPUS: usize> FlushHook for ShootdownHook<T, I, C, CPUS>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
    fn sync(&mut self) {
        self.parts.local.sync();
        self.parts.local.complete();
    }

    fn invalidate(&mut self, range: &FlushRange) {
        let p = self.parts;
        let me = p.cpu.current_cpu();
        let Some(space) = self.spaces.get(usize::from(self.asid.as_u16())) else {
            // Not a tracked ASID: flush everything everywhere rather than miss a CPU.
            p.local.invalidate_all();
            return;
        };
        match ShootdownFlush::new(p.engine, space, me, self.asid, p.local, p.ipi) {
            Ok(mut hook) => hook.invalidate(range),
            // A CPU number beyond `CPUS`: the kernel is misconfigured; flush locally and
            // fully, which is all this CPU can do.
            Err(_) => p.local.invalidate_all(),
        }
    }
}

impl<T, I, C, const CPUS: usize> FlushProvider for ShootdownTlbs<T, I, C, CPUS>
where
    T: TlbOps + Sync + 'static,
    I: IpiSender + Sync + 'static,
    C: CpuId + Sync + 'static,
{
    type Hook = ShootdownHook<T, I, C, CPUS>;

    fn hook(&self, asid: Asid) -> Self::Hook {
        ShootdownHook {
            parts: self.parts,
            spaces: self.spaces.clone(),
            asid,
        }
    }

    fn flush_asid(&self, asid: Asid) {
        let p = self.parts;
        let me = p.cpu.current_cpu();
        if let Some(space) = self.space(asid) {
            // Everyone that may hold the ASID's entries drops them: the running CPUs by
            // shootdown, the others when they next switch it in (they are behind).
            let all = FlushRange {
                start: VirtAddr::new(0),
                len: u64::MAX,
                stride: machvm_addr::PageSize::Size4KiB,
                entries: u64::MAX,
                leaf_only: false,
            };
            if let Ok(mut hook) = ShootdownFlush::new(p.engine, space, me, asid, p.local, p.ipi) {
                hook.invalidate(&all);
            }
        }
        p.local.invalidate_asid(asid);
    }

    fn switch_in(&self, asid: Asid, cpu: u32) {
        if let Some(space) = self.space(asid) {
            if let Ok(catch_up) = space.switch_in(CpuIndex::new(cpu)) {
                catch_up.apply(asid, self.parts.local);
            }
        }
    }

    fn switch_out(&self, asid: Asid, cpu: u32) {
        if let Some(space) = self.space(asid) {
            let _ = space.switch_out(CpuIndex::new(cpu));
        }
    }
}
