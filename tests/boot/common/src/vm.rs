//! machvm's [`VmSystem`] on the real MMU: address spaces with their own page tables and
//! ASIDs/PCIDs, whose pages are brought in by real page faults (#PF / data aborts) that the
//! kernel's exception handler passes to [`VmSystem::handle_fault`].
//!
//! The pieces a kernel wires together (the start of [`run`]; each kernel's `vm_checks` makes
//! the architecture's parts):
//!
//! - the physical mapper ([`IdentityMapper`]: the kernels identity-map every frame they use)
//!   and a [`FrameAllocator`] for the spaces' page tables ([`PoolFrames`], over the kernel's
//!   frame pool); the data frames are a small run of that pool *donated* to the system — few
//!   on purpose, so that the checks over-commit memory and the pageout daemon must run;
//! - a [`FlushProvider`]: [`LocalTlbs`] (`machvm-tlb`'s `TlbFlush` with the space's ASID) on
//!   one CPU, `machvm::shootdown::ShootdownTlbs` over the kernel's shootdown engine with two;
//! - the kernel's own mappings: its table lends the root entries that map the kernel
//!   (`PageTable::share_root`) and [`VmSystem::share_kernel`] links them into every space's
//!   table, so the CPU keeps running the kernel whichever space's root it loads;
//! - the anonymous pager ([`CompressorPager`]): `machvm-pager`'s `DefaultPager`, a
//!   compressor pool whose full segments go to encrypted swap in memory
//!   (`MemorySwapBacking`), keyed from the CPU's random-number instruction;
//! - the zone source of `zprint`: the statistics of the kernel heap's kalloc zones.
//!
//! Then the checks: zero fill, protection errors (a refused write comes back to the
//! probe as a protection error and the kernel carries on), copy on write after `fork` in both
//! directions, pages pushed out to the compressor and swap and faulted back in intact, and
//! on SMP configurations a space running on CPU 1 while CPU 0 forks it. Each check compares
//! what the MMU reported (the fault kinds the handler saw) with what the VM system says it
//! did, and the bytes every space reads with what it must read. Last, the reports:
//! `vm_stat`, `memory_pressure`, `vmmap`, `zprint` and `vm.swapusage`.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, Ordering};

use machvm::{AnonymousPager, FlushProvider, PagerStats, SpaceId, VmError, VmSystem};
use machvm_addr::{
    AddrError, FrameAllocator, FrameRequest, IdentityMapper, PageSize, PhysAddr, VirtAddr, VmProt,
};
use machvm_compressor::codec::{Hybrid, PageSize as CodecPageSize, VectorPolicy};
use machvm_compressor::pool::{PoolConfig, SegmentSize};
use machvm_page_table::{Format, SharedRoot};
use machvm_pager::{
    DefaultPager, FixedKey, KEY_MATERIAL_BYTES, KeySource, MemorySwapBacking, PagingError, Swap,
    SwapConfig,
};
use machvm_sync::{Mutex, MutexGuard};
use machvm_tlb::{Asid, TlbFlush, TlbOps};
use machvm_vm_map::{FaultError, FaultKind, MapRequest, VmTag};
use machvm_vm_object::{ObjectError, ObjectRef, PagerError};

use crate::fault::{self, Cpu, HwFault, HwFaultKind, MAX_CPUS};
use crate::heap::KernelHeap;
use crate::pool::FramePool;
use crate::report::{info, pass};
use crate::{ensure, kprintln, must, smp_job};

// ---------------------------------------------------------------------------------------
// The parts
// ---------------------------------------------------------------------------------------

/// The physical mapper of the kernels' VM systems.
// SAFETY: the kernels identity-map all the RAM they use (image, frame pool, heap arena), and
// the VM system reaches only page-table frames and donated frames, both from the pool.
static IDENTITY: IdentityMapper = unsafe { IdentityMapper::new() };

/// A [`FrameAllocator`] (cloneable, as a [`VmSystem`] needs) over the kernel's frame pool:
/// where the spaces' page tables come from.
#[derive(Debug, Clone, Copy)]
pub struct PoolFrames<'a>(pub &'a Mutex<FramePool>);

// SAFETY: forwards to the `FramePool`, whose implementation makes the promises; the lock
// makes the clones share it safely.
unsafe impl FrameAllocator for PoolFrames<'_> {
    fn allocate(&mut self, request: FrameRequest) -> Result<PhysAddr, AddrError> {
        self.0.lock().allocate(request)
    }

    unsafe fn deallocate(
        &mut self,
        start: PhysAddr,
        request: FrameRequest,
    ) -> Result<(), AddrError> {
        // SAFETY: the caller's contract is the pool's.
        unsafe { self.0.lock().deallocate(start, request) }
    }
}

/// The flush provider of a one-CPU kernel: each space's hook is `machvm-tlb`'s `TlbFlush`
/// with the space's ASID over this CPU's TLB operations.
#[derive(Debug)]
pub struct LocalTlbs<'a, T: TlbOps> {
    /// The CPU's TLB operations.
    pub ops: &'a T,
}

impl<'a, T: TlbOps> FlushProvider for LocalTlbs<'a, T> {
    type Hook = TlbFlush<'a, T>;

    fn hook(&self, asid: Asid) -> TlbFlush<'a, T> {
        TlbFlush::new(self.ops, asid)
    }

    fn flush_asid(&self, asid: Asid) {
        // Table writes first, then the invalidation, then wait for it.
        self.ops.sync();
        self.ops.invalidate_asid(asid);
        self.ops.complete();
    }
}

/// `machvm-pager`'s default pager as the anonymous pager of a [`VmSystem`]: an anonymous
/// object gets its compressor pager on its first page-out.
#[derive(Debug, Clone)]
pub struct CompressorPager(pub Arc<DefaultPager<MemorySwapBacking, Hybrid>>);

impl AnonymousPager for CompressorPager {
    fn attach(&self, object: &ObjectRef) -> Result<(), ObjectError> {
        self.0.attach(object).map(|_| ()).map_err(|e| match e {
            PagingError::Object(e) => e,
            PagingError::OutOfMemory => ObjectError::NoMemory,
            PagingError::NoSpace => ObjectError::Pager(PagerError::NoSpace),
            _ => ObjectError::Pager(PagerError::Unsupported),
        })
    }

    fn stats(&self) -> PagerStats {
        let s = self.0.stats().pool;
        let page = self.0.page_size().max(1);
        let limit = self.0.pool().config().limit_bytes() as u64;
        let fullness = (s.in_core_capacity * 100).checked_div(limit).unwrap_or(0);
        PagerStats::new(
            s.pages_stored,
            s.bytes_used.div_ceil(page),
            s.stores,
            s.loads,
            s.swap_ins,
            s.swap_outs,
            fullness.min(100) as u8,
        )
    }
}

/// Swap key material from the kernel's entropy source (`machvm-aslr`'s hardware source:
/// `RDSEED`/`RDRAND`, `RNDRRS`/`RNDR`), two 256-bit seeds; without one, a fixed test key.
/// Either way it says which on the console.
#[derive(Debug)]
pub struct BootKeys<S: machvm_aslr::EntropySource> {
    source: S,
}

impl<S: machvm_aslr::EntropySource> BootKeys<S> {
    /// Keys drawn from `source`.
    pub const fn new(source: S) -> Self {
        Self { source }
    }

    /// A generator for randomised placement, seeded from the same source (an error when it
    /// has no entropy: no weak fallback for ASLR).
    fn aslr_rng(&mut self) -> Result<machvm_aslr::AslrRng, machvm_aslr::AslrError> {
        machvm_aslr::AslrRng::from_source(&mut self.source)
    }
}

impl<S: machvm_aslr::EntropySource> KeySource for BootKeys<S> {
    fn fill_key(&mut self, key: &mut [u8; KEY_MATERIAL_BYTES]) -> Result<(), PagingError> {
        let kind = self.source.kind();
        let mut drawn = true;
        for half in key.chunks_mut(32) {
            match self.source.seed() {
                Ok(seed) => half.copy_from_slice(seed.as_bytes()),
                Err(_) => drawn = false,
            }
        }
        if drawn {
            info(
                "vm-swap-key",
                format_args!("swap encryption keyed with 512 bits from {kind:?}"),
            );
            return Ok(());
        }
        info(
            "vm-swap-key",
            format_args!("no hardware entropy ({kind:?}): the swap uses a fixed test key"),
        );
        FixedKey::new(core::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5c)).fill_key(key)
    }
}

/// The VM system type of the kernels.
pub type KernelVm<'a, F, T> = VmSystem<F, &'static IdentityMapper, PoolFrames<'a>, T>;

/// What the kernel gives the VM checks.
#[derive(Debug)]
pub struct Machine<'a, F: Format, T: FlushProvider> {
    /// The frame pool: page tables of the spaces, and the donated data frames.
    pub pool: &'a Mutex<FramePool>,
    /// The flush provider.
    pub flush: T,
    /// The kernel's root entries every space links (from its table's `share_root`).
    pub kernel: SharedRoot<F>,
    /// The spaces' user window `[start, end)`, outside the kernel's root entries.
    pub window: (u64, u64),
    /// Loads a root-register value from [`VmSystem::activate`] (CR3 with PCID, TTBR0 with
    /// ASID) on the executing CPU.
    pub load_root: fn(u64),
    /// The root-register value of the kernel's own table (no space).
    pub kernel_root: u64,
    /// With two CPUs: IPIs CPU 1 served so far (x86_64), to show the fork's shootdown.
    pub ipis_served: Option<fn() -> u64>,
    /// Whether CPU 1 serves jobs ([`smp_job`]) and the two-CPU check runs.
    pub smp: bool,
}

/// The window of the spaces for format `F`: one root entry's span (at least 256 GiB) above the
/// kernel's entries, 1 GiB long, and the kernel's shared range `[0, kernel_len)` (whole root
/// entries covering everything up to `kernel_top`).
pub fn layout<F: Format>(kernel_top: u64) -> ((u64, u64), u64) {
    let span = machvm_page_table::PageTable::<F, &IdentityMapper>::root_entry_span();
    let kernel_len = kernel_top.div_ceil(span).max(1) * span;
    let start = kernel_len.max(0x40_0000_0000).next_multiple_of(span);
    ((start, start + (1 << 30)), kernel_len)
}

// ---------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------

/// What the fault hook saw on one CPU.
#[derive(Debug)]
struct FaultLog {
    /// Calls of `handle_fault` (every one a hardware fault of a probe).
    entered: AtomicU64,
    /// Of those, by what the MMU reported.
    not_present: AtomicU64,
    protection: AtomicU64,
    access_flag: AtomicU64,
    /// Resolved, by what the VM system did.
    zero_fill: AtomicU64,
    cow: AtomicU64,
    page_in: AtomicU64,
    soft: AtomicU64,
    /// Copy-on-write faults the MMU reported as protection faults on a write.
    cow_on_write_protect: AtomicU64,
    /// Refused: protection error, not mapped, anything else.
    refused_protection: AtomicU64,
    refused_not_mapped: AtomicU64,
    refused_other: AtomicU64,
    /// Faults the hook could not take (no space running, the VM system busy, no progress).
    unhandled: AtomicU64,
    /// The address of the last fault and how often in a row it was taken.
    last_va: AtomicU64,
    repeats: AtomicU64,
}

/// A snapshot of [`FaultLog`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Calls of `handle_fault`.
    pub entered: u64,
    /// Hardware: no translation.
    pub not_present: u64,
    /// Hardware: a translation that refused the access.
    pub protection: u64,
    /// Hardware: access flag clear (aarch64 without `TCR_EL1.HA`).
    pub access_flag: u64,
    /// Resolved by zero fill.
    pub zero_fill: u64,
    /// Resolved by copy on write.
    pub cow: u64,
    /// Resolved by a page-in.
    pub page_in: u64,
    /// Resolved, the page was resident.
    pub soft: u64,
    /// Copy-on-write faults that were hardware write-protection faults.
    pub cow_on_write_protect: u64,
    /// Refused with a protection error.
    pub refused_protection: u64,
    /// Refused: nothing mapped.
    pub refused_not_mapped: u64,
    /// Refused otherwise.
    pub refused_other: u64,
    /// Not taken by the hook.
    pub unhandled: u64,
}

impl Faults {
    fn minus(self, b: Self) -> Self {
        Self {
            entered: self.entered - b.entered,
            not_present: self.not_present - b.not_present,
            protection: self.protection - b.protection,
            access_flag: self.access_flag - b.access_flag,
            zero_fill: self.zero_fill - b.zero_fill,
            cow: self.cow - b.cow,
            page_in: self.page_in - b.page_in,
            soft: self.soft - b.soft,
            cow_on_write_protect: self.cow_on_write_protect - b.cow_on_write_protect,
            refused_protection: self.refused_protection - b.refused_protection,
            refused_not_mapped: self.refused_not_mapped - b.refused_not_mapped,
            refused_other: self.refused_other - b.refused_other,
            unhandled: self.unhandled - b.unhandled,
        }
    }

    fn plus(self, b: Self) -> Self {
        Self {
            entered: self.entered + b.entered,
            not_present: self.not_present + b.not_present,
            protection: self.protection + b.protection,
            access_flag: self.access_flag + b.access_flag,
            zero_fill: self.zero_fill + b.zero_fill,
            cow: self.cow + b.cow,
            page_in: self.page_in + b.page_in,
            soft: self.soft + b.soft,
            cow_on_write_protect: self.cow_on_write_protect + b.cow_on_write_protect,
            refused_protection: self.refused_protection + b.refused_protection,
            refused_not_mapped: self.refused_not_mapped + b.refused_not_mapped,
            refused_other: self.refused_other + b.refused_other,
            unhandled: self.unhandled + b.unhandled,
        }
    }
}

impl FaultLog {
    fn snapshot(&self) -> Faults {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Faults {
            entered: l(&self.entered),
            not_present: l(&self.not_present),
            protection: l(&self.protection),
            access_flag: l(&self.access_flag),
            zero_fill: l(&self.zero_fill),
            cow: l(&self.cow),
            page_in: l(&self.page_in),
            soft: l(&self.soft),
            cow_on_write_protect: l(&self.cow_on_write_protect),
            refused_protection: l(&self.refused_protection),
            refused_not_mapped: l(&self.refused_not_mapped),
            refused_other: l(&self.refused_other),
            unhandled: l(&self.unhandled),
        }
    }
}

fn bump(a: &AtomicU64) {
    // Counters only; each CPU writes its own log.
    a.fetch_add(1, Ordering::Relaxed);
}

/// The VM system and what the fault hook needs, shared by the check code and the exception
/// handlers of both CPUs.
pub struct VmShared<'a, F: Format, T: FlushProvider> {
    vm: Mutex<KernelVm<'a, F, T>>,
    /// The space each CPU runs.
    running: [Mutex<Option<SpaceId>>; MAX_CPUS],
    logs: [FaultLog; MAX_CPUS],
}

impl<F: Format, T: FlushProvider> core::fmt::Debug for VmShared<'_, F, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VmShared").finish_non_exhaustive()
    }
}

impl<'a, F: Format, T: FlushProvider> VmShared<'a, F, T> {
    /// Locks the VM system. Never held across a probe: the fault hook needs it.
    fn vm(&self) -> MutexGuard<'_, KernelVm<'a, F, T>> {
        self.vm.lock()
    }

    /// The faults taken on `cpu` so far.
    fn faults(&self, cpu: usize) -> Faults {
        self.logs
            .get(cpu)
            .map(FaultLog::snapshot)
            .unwrap_or_default()
    }

    /// The faults taken on every CPU so far.
    fn all_faults(&self) -> Faults {
        self.logs
            .iter()
            .fold(Faults::default(), |a, l| a.plus(l.snapshot()))
    }
}

/// Consecutive faults at one address after which the hook gives up (a translation the VM
/// system installed does not satisfy the access: a bug, reported instead of a hang).
const MAX_REPEATS: u64 = 8;

/// The fault hook: the CPU's running space takes the fault through
/// [`VmSystem::handle_fault`]; `true` (retry the access) when it was resolved.
///
/// # Safety
///
/// `ctx` points to a live `VmShared<F, T>`.
unsafe fn vm_fault<F: Format, T: FlushProvider, C: Cpu>(ctx: *const (), hw: HwFault) -> bool {
    // SAFETY: the caller (the check that installed the hook) keeps the shared state alive.
    let shared = unsafe { &*ctx.cast::<VmShared<'_, F, T>>() };
    let cpu = C::index();
    let Some(log) = shared.logs.get(cpu) else {
        return false;
    };
    let space = shared.running[cpu].try_lock().and_then(|s| *s);
    let (Some(space), Ok(va)) = (space, VirtAddr::try_new(hw.va)) else {
        bump(&log.unhandled);
        return false;
    };
    if log.last_va.swap(hw.va, Ordering::Relaxed) == hw.va {
        if log.repeats.fetch_add(1, Ordering::Relaxed) >= MAX_REPEATS {
            bump(&log.unhandled);
            return false;
        }
    } else {
        log.repeats.store(0, Ordering::Relaxed);
    }
    let Some(mut vm) = shared.vm.try_lock() else {
        bump(&log.unhandled);
        return false;
    };
    bump(&log.entered);
    bump(match hw.kind {
        HwFaultKind::NotPresent => &log.not_present,
        HwFaultKind::Protection => &log.protection,
        HwFaultKind::AccessFlag | HwFaultKind::Other => &log.access_flag,
    });
    let access = if hw.write {
        VmProt::WRITE
    } else {
        VmProt::READ
    };
    match vm.handle_fault(space, va, access) {
        Ok(outcome) => {
            bump(match outcome.kind {
                FaultKind::ZeroFill => &log.zero_fill,
                FaultKind::CopyOnWrite => &log.cow,
                FaultKind::PageIn => &log.page_in,
                _ => &log.soft,
            });
            if outcome.kind == FaultKind::CopyOnWrite
                && hw.write
                && hw.kind == HwFaultKind::Protection
            {
                bump(&log.cow_on_write_protect);
            }
            true
        }
        Err(VmError::Fault(FaultError::Protection { .. })) => {
            bump(&log.refused_protection);
            false
        }
        Err(VmError::Fault(FaultError::NotMapped { .. })) => {
            bump(&log.refused_not_mapped);
            false
        }
        Err(_) => {
            bump(&log.refused_other);
            false
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running spaces
// ---------------------------------------------------------------------------------------

/// What the checks do on one CPU.
struct On<'s, 'a, F: Format, T: FlushProvider, C: Cpu> {
    shared: &'s VmShared<'a, F, T>,
    load_root: fn(u64),
    kernel_root: u64,
    cpu: usize,
    _cpu: core::marker::PhantomData<C>,
}

impl<F: Format, T: FlushProvider, C: Cpu> On<'_, '_, F, T, C> {
    /// Makes the CPU run `space`: the VM system records it (the flush provider may bring
    /// the CPU's TLB up to date first) and the root register is loaded.
    fn switch_to(&self, space: SpaceId) {
        self.leave();
        let root = must!(
            self.shared.vm().activate(space, self.cpu as u32),
            "activating {space}"
        );
        *self.shared.running[self.cpu].lock() = Some(space);
        (self.load_root)(root);
    }

    /// Makes the CPU run the kernel's own table (no space).
    fn leave(&self) {
        let old = self.shared.running[self.cpu].lock().take();
        (self.load_root)(self.kernel_root);
        if let Some(space) = old {
            must!(
                self.shared.vm().deactivate(space, self.cpu as u32),
                "deactivating {space}"
            );
        }
    }

    fn faults(&self) -> Faults {
        self.shared.faults(self.cpu)
    }
}

/// A word of page `page` in the pages of check `tag`: every eighth word an unpredictable
/// value (incompressible), the others structured (compressible), so the compressor stores
/// a page in about half its size.
fn word(tag: u64, page: u64, index: u64) -> u64 {
    let x = (tag << 48) | (page << 20) | index;
    if index % 8 == 0 {
        // SplitMix64's finaliser.
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    } else {
        x
    }
}

// ---------------------------------------------------------------------------------------
// Set-up and the checks
// ---------------------------------------------------------------------------------------

/// Data frames donated to the VM system: few (128 KiB of 4 KiB pages, 256 KiB of 16 KiB
/// pages), so that the pageout check must evict.
const fn donated_frames(page: u64) -> u64 {
    if page >= 16 << 10 { 16 } else { 32 }
}
/// The pageout check maps this many times the donated memory.
const OVERCOMMIT: u64 = 3;

/// Builds the VM system of `m` and runs every VM check, then prints the reports.
pub fn run<F: Format, T: FlushProvider, C: Cpu + Send + Sync + 'static, S>(
    m: Machine<'_, F, T>,
    heap: &'static KernelHeap<C>,
    keys: &mut BootKeys<S>,
) where
    S: machvm_aslr::EntropySource,
{
    let page = F::GRANULE.bytes();
    let frames = donated_frames(page);
    let mut vm = KernelVm::<F, T>::new(
        &IDENTITY,
        PoolFrames(m.pool),
        m.flush,
        VirtAddr::new(m.window.0),
        VirtAddr::new(m.window.1),
    );
    let run_start = must!(
        m.pool.lock().allocate(must!(
            FrameRequest::new(F::GRANULE, frames),
            "a request for {frames} frames"
        )),
        "taking {frames} frames for the VM system"
    );
    must!(
        vm.donate(run_start, frames as u32),
        "donating {frames} frames"
    );
    // SAFETY: the kernel's table lives for the rest of the run (the kernels never return
    // from their main function) and never unmaps its image, so the shared entries and the
    // tables below them stay.
    let shared = unsafe { vm.share_kernel(m.kernel) };
    must!(shared, "sharing the kernel's root entries");
    let pager = make_pager::<F>(keys);
    vm.set_anonymous_pager(Arc::new(CompressorPager(pager.clone())));
    vm.set_zone_source(Box::new(move || {
        heap.heap()
            .map(|k| k.zone_stats().filter(|z| z.alloc_count > 0).collect())
            .unwrap_or_default()
    }));
    info(
        "vm",
        format_args!(
            "VmSystem over {}: window {:#x}..{:#x}, kernel root entries {:#x}..{:#x} \
             linked into every space, {frames} frames of {page} bytes donated at {:#x}",
            F::NAME,
            m.window.0,
            m.window.1,
            m.kernel.start().as_u64(),
            m.kernel.start().as_u64() + m.kernel.size(),
            run_start.as_u64()
        ),
    );

    let shared = VmShared {
        vm: Mutex::new(vm),
        running: [const { Mutex::new(None) }; MAX_CPUS],
        logs: [const { FaultLog::new() }; MAX_CPUS],
    };
    // SAFETY: `shared` outlives the hook, cleared below before it goes; the hook takes the
    // VM system with `try_lock` only.
    unsafe {
        fault::set_demand_hook(
            vm_fault::<F, T, C>,
            core::ptr::from_ref(&shared).cast::<()>(),
        );
    }
    let on = On::<F, T, C> {
        shared: &shared,
        load_root: m.load_root,
        kernel_root: m.kernel_root,
        cpu: C::index(),
        _cpu: core::marker::PhantomData,
    };
    let a = must!(shared.vm().create_space(), "creating space A");
    on.switch_to(a);
    zero_fill(&on, a);
    protection(&on, a);
    copy_on_write(&on, a);
    if m.smp {
        smp_fork(&on, m.ipis_served);
    }
    pageout(&on, a, frames, &pager);
    random_placement(&on, a, keys);
    reports(&on, a, &pager);

    // Tear down: the kernel runs on its own table again, every space goes, and with it
    // every page, compressed page and swap slot.
    on.leave();
    let ids: alloc::vec::Vec<SpaceId> = shared.vm().spaces().collect();
    for id in ids {
        must!(shared.vm().destroy_space(id), "destroying {id}");
    }
    fault::clear_demand_hook();
    let vm = shared.vm.into_inner();
    let q = vm.queues();
    let stored = pager.stats().pool.pages_stored;
    ensure!(
        q.free == frames && stored == 0,
        "after destroying every space: {} of {frames} frames free, {stored} pages still \
         compressed",
        q.free
    );
    drop(vm);
    pass(
        "vm-teardown",
        format_args!(
            "spaces destroyed (their tables freed, the kernel's linked entries left alone): \
             all {frames} frames free, compressor empty, the kernel still runs"
        ),
    );
}

impl FaultLog {
    const fn new() -> Self {
        Self {
            entered: AtomicU64::new(0),
            not_present: AtomicU64::new(0),
            protection: AtomicU64::new(0),
            access_flag: AtomicU64::new(0),
            zero_fill: AtomicU64::new(0),
            cow: AtomicU64::new(0),
            page_in: AtomicU64::new(0),
            soft: AtomicU64::new(0),
            cow_on_write_protect: AtomicU64::new(0),
            refused_protection: AtomicU64::new(0),
            refused_not_mapped: AtomicU64::new(0),
            refused_other: AtomicU64::new(0),
            unhandled: AtomicU64::new(0),
            last_va: AtomicU64::new(u64::MAX),
            repeats: AtomicU64::new(0),
        }
    }
}

/// The default pager: a small compressor pool (two 64 KiB segments in core) whose older
/// segments go to encrypted swap in memory, keyed from `keys`.
fn make_pager<F: Format>(keys: &mut dyn KeySource) -> Arc<DefaultPager<MemorySwapBacking, Hybrid>> {
    let codec_page = match F::GRANULE {
        PageSize::Size16KiB => CodecPageSize::Size16K,
        _ => CodecPageSize::Size4K,
    };
    let config = SwapConfig::new(SegmentSize::K64)
        .file_slots(2, 16)
        .max_files(2);
    let swap = must!(
        Swap::new(MemorySwapBacking::new(), config, keys),
        "creating the swap"
    );
    let pool = PoolConfig::new(SegmentSize::K64)
        .max_in_core_segments(2)
        .max_segments(48)
        .max_pages(1024);
    must!(
        DefaultPager::new(
            pool,
            Hybrid::new(codec_page, VectorPolicy::Portable),
            Some(Arc::new(swap))
        ),
        "creating the default pager"
    )
}

/// Randomised `mmap` (`VmSystem::set_mmap_randomisation`, seeded from the CPU's random
/// instruction): mappings land at random positions of the window, not one after the other,
/// and behave like any other (zero fill through the MMU, unmapped afterwards). Without
/// hardware entropy the check says so and is skipped.
fn random_placement<F: Format, T: FlushProvider, C: Cpu, S: machvm_aslr::EntropySource>(
    on: &On<'_, '_, F, T, C>,
    a: SpaceId,
    keys: &mut BootKeys<S>,
) {
    const MAPS: usize = 4;
    let page = F::GRANULE.bytes();
    let rng = match keys.aslr_rng() {
        Ok(rng) => rng,
        Err(e) => {
            info(
                "vm-aslr",
                format_args!("no hardware entropy ({e}): randomised mmap not checked"),
            );
            return;
        }
    };
    on.shared.vm().set_mmap_randomisation(Some(rng));
    let mut at = [0u64; MAPS];
    for (i, slot) in at.iter_mut().enumerate() {
        *slot = must!(
            on.shared.vm().mmap(a, MapRequest::anonymous(page)),
            "randomised mmap {i}"
        )
        .as_u64();
    }
    on.shared.vm().set_mmap_randomisation(None);
    let before = on.faults();
    for (i, &va) in at.iter().enumerate() {
        let first = C::read(va);
        ensure!(
            first == Some(0),
            "randomised page {va:#x} read {first:x?} before any write"
        );
        ensure!(C::write(va + 8, word(9, i as u64, 0)), "writing {va:#x}");
        ensure!(
            C::read(va + 8) == Some(word(9, i as u64, 0)),
            "randomised page {va:#x} lost its write"
        );
    }
    let zero_fills = on.faults().minus(before).zero_fill;
    let mut sorted = at;
    sorted.sort_unstable();
    // Packed placement would put them one page apart; four uniform draws over a window of
    // 2^16 pages or more all landing on neighbouring pages is a one in 2^40 event or rarer.
    let packed = sorted.windows(2).all(|w| w[1] - w[0] == page);
    ensure!(
        !packed && zero_fills == MAPS as u64,
        "randomised mmaps at {at:#x?} (packed: {packed}), {zero_fills} zero fills"
    );
    for &va in &at {
        must!(
            on.shared.vm().munmap(a, VirtAddr::new(va), page),
            "munmap of {va:#x}"
        );
    }
    pass(
        "vm-aslr",
        format_args!(
            "{MAPS} randomised mmaps (hardware-seeded random fit) at {:#x}, {:#x}, {:#x}, {:#x}: \
             one zero fill each through the MMU, unmapped",
            at[0], at[1], at[2], at[3]
        ),
    );
}

/// Zero fill: an anonymous region reads as zeros, the first touch of each page is one
/// not-present fault resolved by a zero fill, and what is written stays.
fn zero_fill<F: Format, T: FlushProvider, C: Cpu>(on: &On<'_, '_, F, T, C>, a: SpaceId) {
    const PAGES: u64 = 4;
    let page = F::GRANULE.bytes();
    let base = must!(
        on.shared.vm().mmap(a, MapRequest::anonymous(PAGES * page)),
        "mmap of {PAGES} pages"
    )
    .as_u64();
    let counters = on.shared.vm().counters();
    let before = on.faults();
    let first = C::read(base + 8);
    ensure!(
        first == Some(0),
        "the first read of new anonymous memory gave {first:x?}"
    );
    for p in 0..PAGES {
        let va = base + p * page;
        ensure!(
            C::write(va, word(1, p, 0)) && C::write(va + page - 8, word(1, p, 1)),
            "writing page {p} of the zero-fill region"
        );
    }
    for p in 0..PAGES {
        let va = base + p * page;
        let got = (C::read(va), C::read(va + 8), C::read(va + page - 8));
        ensure!(
            got == (Some(word(1, p, 0)), Some(0), Some(word(1, p, 1))),
            "zero-fill page {p} reads {got:x?}"
        );
    }
    let d = on.faults().minus(before);
    let c = on.shared.vm().counters();
    ensure!(
        d.zero_fill == PAGES && c.zero_fill - counters.zero_fill == PAGES,
        "expected {PAGES} zero fills, the hook saw {} and vm_stat counts {}",
        d.zero_fill,
        c.zero_fill - counters.zero_fill
    );
    ensure!(
        d.not_present >= PAGES && d.unhandled == 0 && d.refused_other == 0,
        "zero-fill faults as the MMU reported them: {d:?}"
    );
    ensure!(
        c.faults - counters.faults == d.entered,
        "vm_stat counts {} faults, the exception handler passed {}",
        c.faults - counters.faults,
        d.entered
    );
    pass(
        "vm-zero-fill",
        format_args!(
            "{PAGES} pages at {base:#x}: {} page faults into handle_fault ({} not present, {} \
             protection), {PAGES} zero fills, vm_stat agrees; reads zeros, then what was written",
            d.entered, d.not_present, d.protection
        ),
    );
}

/// Protection errors: a write to a read-only region and to a region made read-only by
/// `mprotect`, and a read of an address nothing maps, each come back to the probe as a
/// refused fault with the right error; the kernel carries on and the data is intact.
fn protection<F: Format, T: FlushProvider, C: Cpu>(on: &On<'_, '_, F, T, C>, a: SpaceId) {
    let page = F::GRANULE.bytes();
    let (ro, rw) = {
        let mut vm = on.shared.vm();
        let ro = must!(
            vm.mmap(
                a,
                MapRequest::anonymous(page)
                    .protection(VmProt::READ, VmProt::READ)
                    .tag(VmTag::GUARD)
            ),
            "mmap of a read-only page"
        );
        let rw = must!(vm.mmap(a, MapRequest::anonymous(page)), "mmap of a page");
        (ro.as_u64(), rw.as_u64())
    };
    let before = on.faults();
    let cpu = on.cpu;
    let probe_faults = fault::count(cpu);
    ensure!(C::read(ro) == Some(0), "read of the read-only page");
    ensure!(
        !C::write(ro, 0x0bad),
        "a write to a read-only mapping succeeded"
    );
    let d = on.faults().minus(before);
    ensure!(
        d.refused_protection == 1 && fault::count(cpu) == probe_faults + 1,
        "the write to the read-only page: {d:?}"
    );

    ensure!(C::write(rw, word(2, 0, 0)), "write to the writable page");
    must!(
        on.shared
            .vm()
            .mprotect(a, VirtAddr::new(rw), page, VmProt::READ),
        "mprotect to read-only"
    );
    let before = on.faults();
    ensure!(
        !C::write(rw, 0x0bad),
        "a write after mprotect(READ) succeeded (stale writable TLB entry?)"
    );
    let d = on.faults().minus(before);
    ensure!(
        d.refused_protection == 1 && d.protection == 1,
        "the write after mprotect: {d:?} (expected one protection fault, refused)"
    );
    ensure!(
        C::read(rw) == Some(word(2, 0, 0)),
        "the mprotected page lost its contents"
    );

    let (start, end) = {
        let vm = on.shared.vm();
        let map = must!(vm.map(a), "space A");
        (map.min_addr().as_u64(), map.max_addr().as_u64())
    };
    let hole = end - page;
    let before = on.faults();
    ensure!(
        C::read(hole).is_none(),
        "a read of unmapped {hole:#x} succeeded"
    );
    let d = on.faults().minus(before);
    ensure!(
        d.refused_not_mapped == 1,
        "the read of an unmapped address: {d:?}"
    );
    pass(
        "vm-protection",
        format_args!(
            "write to a read-only region and after mprotect(READ) refused as protection \
             errors, read of unmapped {hole:#x} (window {start:#x}..{end:#x}) refused as not \
             mapped; the probes returned, contents intact"
        ),
    );
}

/// Copy on write after `fork`, both ways: the parent's pages are write-protected by the
/// fork (its next write is a protection fault that copies), the child reads the parent's
/// old bytes and its own write copies too; neither sees the other's writes.
fn copy_on_write<F: Format, T: FlushProvider, C: Cpu>(on: &On<'_, '_, F, T, C>, a: SpaceId) {
    const PAGES: u64 = 4;
    let page = F::GRANULE.bytes();
    let base = must!(
        on.shared.vm().mmap(a, MapRequest::anonymous(PAGES * page)),
        "mmap for the fork"
    )
    .as_u64();
    for p in 0..PAGES {
        ensure!(C::write(base + p * page, word(3, p, 0)), "parent page {p}");
    }
    let counters = on.shared.vm().counters();
    let before = on.faults();
    let b = must!(on.shared.vm().fork(a), "fork");
    // The parent writes page 0: its translation is read-only since the fork.
    ensure!(C::write(base, word(4, 0, 0)), "parent write after fork");
    let parent_fault = on.faults().minus(before);
    ensure!(
        parent_fault.cow == 1 && parent_fault.cow_on_write_protect == 1,
        "the parent's first write after the fork: {parent_fault:?} (expected one \
         write-protection fault resolved by copy on write)"
    );

    on.switch_to(b);
    let child_old = C::read(base);
    ensure!(
        C::write(base + page, word(5, 1, 0)),
        "child write to page 1"
    );
    let child_view: [Option<u64>; 3] = [child_old, C::read(base + page), C::read(base + 2 * page)];
    on.switch_to(a);
    let parent_view = [
        C::read(base),
        C::read(base + page),
        C::read(base + 2 * page),
    ];
    ensure!(
        child_view
            == [
                Some(word(3, 0, 0)),
                Some(word(5, 1, 0)),
                Some(word(3, 2, 0))
            ],
        "the child reads {child_view:x?}: it must keep the old page 0 and see its own page 1"
    );
    ensure!(
        parent_view
            == [
                Some(word(4, 0, 0)),
                Some(word(3, 1, 0)),
                Some(word(3, 2, 0))
            ],
        "the parent reads {parent_view:x?}: the child's write leaked, or the parent's was lost"
    );
    let d = on.faults().minus(before);
    let c = on.shared.vm().counters();
    ensure!(
        d.cow == 2 && c.cow_faults - counters.cow_faults == 2,
        "expected 2 copy-on-write faults, the hook saw {} and vm_stat counts {}",
        d.cow,
        c.cow_faults - counters.cow_faults
    );
    must!(on.shared.vm().destroy_space(b), "destroying the child");
    ensure!(
        C::read(base + page) == Some(word(3, 1, 0)),
        "the parent lost page 1 when the child went"
    );
    pass(
        "vm-cow",
        format_args!(
            "fork: parent write-protected (its write took a protection fault and copied), the \
             child kept the old bytes and copied on its own write; {} faults, {} copies; the \
             child destroyed, the parent intact",
            d.entered, d.cow
        ),
    );
}

/// Over-commit: a region three times the donated memory is written page by page (every
/// word), so the fault path runs out of frames and the pageout daemon sends pages to the
/// compressor, whose older segments go to encrypted swap; then every word of every page is
/// read back (page-ins, swap-ins) and must be intact.
fn pageout<F: Format, T: FlushProvider, C: Cpu>(
    on: &On<'_, '_, F, T, C>,
    a: SpaceId,
    frames: u64,
    pager: &Arc<DefaultPager<MemorySwapBacking, Hybrid>>,
) {
    let page = F::GRANULE.bytes();
    let pages = frames * OVERCOMMIT;
    let words = page / 8;
    let base = must!(
        on.shared.vm().mmap(
            a,
            MapRequest::anonymous(pages * page).tag(VmTag::MALLOC_LARGE)
        ),
        "mmap of {pages} pages"
    )
    .as_u64();
    let counters = on.shared.vm().counters();
    let before = on.faults();
    for p in 0..pages {
        for i in 0..words {
            if !C::write(base + p * page + i * 8, word(6, p, i)) {
                crate::report::fail(format_args!(
                    "writing word {i} of page {p} faulted for good ({:?})",
                    on.faults().minus(before)
                ));
            }
        }
    }
    let written = on.shared.vm().counters();
    ensure!(
        written.pageouts - counters.pageouts >= pages - frames,
        "{} pages written into {frames} frames, but only {} paged out",
        pages,
        written.pageouts - counters.pageouts
    );
    // One more push by the daemon, then everything comes back.
    let step = on.shared.vm().pageout_step(64);
    let mut bad = 0u64;
    for p in 0..pages {
        for i in 0..words {
            if C::read(base + p * page + i * 8) != Some(word(6, p, i)) {
                bad += 1;
            }
        }
    }
    let d = on.faults().minus(before);
    let c = on.shared.vm().counters();
    let ps = pager.stats();
    ensure!(bad == 0, "{bad} words differ after the round trip ({d:?})");
    ensure!(
        c.pageins - counters.pageins >= pages - frames && d.page_in == c.pageins - counters.pageins,
        "{} page-ins (the hook saw {}) for {pages} pages in {frames} frames",
        c.pageins - counters.pageins,
        d.page_in
    );
    ensure!(
        ps.pool.swap_outs >= 1 && ps.pool.swap_ins >= 1,
        "no segment went to swap and came back: {:?}",
        ps.pool
    );
    ensure!(
        d.refused_other == 0 && d.unhandled == 0,
        "faults the VM system could not resolve: {d:?}"
    );
    pass(
        "vm-pageout",
        format_args!(
            "{pages} pages ({} KiB) in {frames} frames: {} pageouts to the compressor, {} \
             segments to encrypted swap and {} back, {} page-ins; the daemon's extra step \
             scanned {}; all {} words intact",
            (pages * page) >> 10,
            c.pageouts - counters.pageouts,
            ps.pool.swap_outs,
            ps.pool.swap_ins,
            c.pageins - counters.pageins,
            step.scanned,
            pages * words
        ),
    );
}

/// The reports, and checks that they say what happened.
fn reports<F: Format, T: FlushProvider, C: Cpu>(
    on: &On<'_, '_, F, T, C>,
    a: SpaceId,
    pager: &Arc<DefaultPager<MemorySwapBacking, Hybrid>>,
) {
    let vm = on.shared.vm();
    let faults = on.shared.all_faults();
    let stat = vm.vm_stat();
    kprintln!("$ vm_stat");
    kprintln!("{stat}");
    kprintln!("$ memory_pressure");
    kprintln!("{}", vm.memory_pressure());
    kprintln!("$ vmmap (space A)");
    kprintln!("{}", must!(vm.vmmap(a), "vmmap"));
    kprintln!("$ zprint");
    kprintln!("{}", vm.zprint());
    let usage = pager.swap_usage();
    if let Some(usage) = usage {
        kprintln!("$ sysctl vm.swapusage");
        kprintln!("{usage}");
    }
    // vm_stat must count exactly the faults the exception handlers passed to it.
    let mut text = alloc::string::String::new();
    let _ = write!(text, "{stat}");
    let line = |label: &str, n: u64| {
        let mut l = alloc::string::String::new();
        let _ = write!(l, "{label:<30}{n:>20}.");
        l
    };
    let c = stat.counters;
    ensure!(
        text.contains(&line("\"Translation faults\":", faults.entered))
            && text.contains(&line("Pages zero filled:", faults.zero_fill))
            && text.contains(&line("Pages copy-on-write:", faults.cow))
            && text.contains(&line("Pageins:", faults.page_in)),
        "vm_stat ({c:?}) disagrees with the faults the handlers saw ({faults:?})"
    );
    ensure!(
        c.pageouts > 0 && stat.pager.compressions >= c.pageouts,
        "vm_stat shows {} pageouts and {} compressions",
        c.pageouts,
        stat.pager.compressions
    );
    ensure!(
        !vm.zprint().zones.is_empty(),
        "zprint has no zones (no zone source?)"
    );
    pass(
        "vm-reports",
        format_args!(
            "vm_stat counts the {} faults the handlers passed ({} zero fill, {} copy on \
             write, {} page-ins), {} pageouts; memory pressure {}; {} kalloc zones; swap {}",
            faults.entered,
            faults.zero_fill,
            faults.cow,
            faults.page_in,
            c.pageouts,
            vm.pressure(),
            vm.zprint().zones.len(),
            if usage.is_some() {
                "encrypted, in memory"
            } else {
                "none"
            }
        ),
    );
}

// ---------------------------------------------------------------------------------------
// Two CPUs
// ---------------------------------------------------------------------------------------

/// Steps of the two-CPU check (CPU 1 odd, CPU 0 even).
static STEP: AtomicU64 = AtomicU64::new(0);
/// Pages of the two-CPU check.
const SMP_PAGES: u64 = 4;

/// What CPU 1's job needs.
struct SmpCtx<'s, 'a, F: Format, T: FlushProvider> {
    shared: &'s VmShared<'a, F, T>,
    load_root: fn(u64),
    kernel_root: u64,
    space: SpaceId,
    base: u64,
    /// CPU 1's faults during its writes after the fork.
    faults: Mutex<Faults>,
}

/// CPU 1's part: run the space, write every page (caching writable translations), wait
/// for CPU 0's fork, write again (each write must take a write-protection fault that the
/// VM system resolves on CPU 1 by copying), read back, leave the space.
///
/// # Safety
///
/// `ctx` points to a live `SmpCtx<F, T>` (CPU 0 waits for the job before dropping it).
unsafe fn smp_job_cpu1<F: Format, T: FlushProvider, C: Cpu>(ctx: *const ()) {
    // SAFETY: the caller's contract.
    let ctx = unsafe { &*ctx.cast::<SmpCtx<'_, '_, F, T>>() };
    let page = F::GRANULE.bytes();
    let on = On::<F, T, C> {
        shared: ctx.shared,
        load_root: ctx.load_root,
        kernel_root: ctx.kernel_root,
        cpu: C::index(),
        _cpu: core::marker::PhantomData,
    };
    on.switch_to(ctx.space);
    let before = on.faults();
    let mut ok = true;
    for p in 0..SMP_PAGES {
        ok &= C::write(ctx.base + p * page + 8, word(8, p, 1));
    }
    ok &= on.faults() == before; // resident and writable: no fault
    STEP.store(if ok { 1 } else { 99 }, Ordering::Release);
    smp_job::wait(|| STEP.load(Ordering::Acquire) >= 2, "cpu 0's fork");
    let before = on.faults();
    for p in 0..SMP_PAGES {
        ok &= C::write(ctx.base + p * page + 16, word(8, p, 2));
    }
    *ctx.faults.lock() = on.faults().minus(before);
    for p in 0..SMP_PAGES {
        let va = ctx.base + p * page;
        ok &= (C::read(va), C::read(va + 8), C::read(va + 16))
            == (
                Some(word(7, p, 0)),
                Some(word(8, p, 1)),
                Some(word(8, p, 2)),
            );
    }
    on.leave();
    STEP.store(if ok { 3 } else { 99 }, Ordering::Release);
}

/// The two-CPU check: CPU 1 runs a space and caches writable translations of its pages;
/// CPU 0 forks the space, which write-protects them — the flush is a shootdown to every CPU
/// running the space (an IPI on x86_64, broadcast `TLBI`s on aarch64). CPU 1's writes must
/// then fault (copy on write, resolved by `handle_fault` on CPU 1), and the child must keep
/// the bytes from before the fork: a stale writable entry on CPU 1 would have written into
/// the frame the child shares.
fn smp_fork<F: Format, T: FlushProvider, C: Cpu>(
    on: &On<'_, '_, F, T, C>,
    ipis_served: Option<fn() -> u64>,
) {
    let page = F::GRANULE.bytes();
    let s = must!(on.shared.vm().create_space(), "creating the SMP space");
    let base = must!(
        on.shared
            .vm()
            .mmap(s, MapRequest::anonymous(SMP_PAGES * page)),
        "mmap for the SMP check"
    )
    .as_u64();
    let home = *on.shared.running[on.cpu].lock();
    on.switch_to(s);
    for p in 0..SMP_PAGES {
        ensure!(C::write(base + p * page, word(7, p, 0)), "cpu 0 page {p}");
    }
    let ctx = SmpCtx {
        shared: on.shared,
        load_root: on.load_root,
        kernel_root: on.kernel_root,
        space: s,
        base,
        faults: Mutex::new(Faults::default()),
    };
    STEP.store(0, Ordering::Release);
    // SAFETY: `ctx` lives until `join_cpu1` below; CPU 1 uses the VM system only through
    // its lock and the fault hook, and CPU 0 waits on STEP meanwhile.
    unsafe {
        smp_job::start_on_cpu1(
            smp_job_cpu1::<F, T, C>,
            core::ptr::from_ref(&ctx).cast::<()>(),
        );
    }
    smp_job::wait(
        || STEP.load(Ordering::Acquire) >= 1,
        "cpu 1 running the space",
    );
    ensure!(
        STEP.load(Ordering::Acquire) == 1,
        "cpu 1 could not write the space's pages without faults"
    );
    let ipis = ipis_served.map(|f| f());
    let cows = on.shared.vm().counters().cow_faults;
    let child = must!(on.shared.vm().fork(s), "fork while cpu 1 runs the space");
    let ipis = ipis.zip(ipis_served).map(|(b, f)| f() - b);
    // CPU 0 leaves the space while CPU 1 works in it (its interrupts are off: it could not
    // answer a shootdown from CPU 1).
    on.leave();
    STEP.store(2, Ordering::Release);
    smp_job::join_cpu1();
    ensure!(
        STEP.load(Ordering::Acquire) == 3,
        "cpu 1 read wrong bytes back after its copy-on-write faults"
    );
    let d = *ctx.faults.lock();
    ensure!(
        d.cow == SMP_PAGES && d.cow_on_write_protect == SMP_PAGES,
        "cpu 1's {SMP_PAGES} writes after the fork: {d:?} (a write that did not fault used a \
         stale writable translation)"
    );
    on.switch_to(child);
    for p in 0..SMP_PAGES {
        let va = base + p * page;
        let got = (C::read(va), C::read(va + 8), C::read(va + 16));
        ensure!(
            got == (Some(word(7, p, 0)), Some(word(8, p, 1)), Some(0)),
            "the child's page {p} reads {got:x?}: cpu 1's write after the fork leaked into it"
        );
    }
    match home {
        Some(h) => on.switch_to(h),
        None => on.leave(),
    }
    let copies = on.shared.vm().counters().cow_faults - cows;
    for id in [child, s] {
        must!(on.shared.vm().destroy_space(id), "destroying {id}");
    }
    if let Some(n) = ipis {
        ensure!(n >= 1, "the fork's shootdown sent cpu 1 no IPI");
    }
    pass(
        "vm-smp-fork",
        format_args!(
            "cpu 1 ran the space; the fork's write-protect reached it ({}); its {SMP_PAGES} \
             writes faulted into handle_fault on cpu 1 ({copies} copies), the child kept the \
             bytes from before the fork",
            match ipis {
                Some(n) => alloc::format!("shootdown: {n} IPI(s) served by cpu 1"),
                None => alloc::string::String::from("broadcast TLBI, no IPI"),
            }
        ),
    );
}
