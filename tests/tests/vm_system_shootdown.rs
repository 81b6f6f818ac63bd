//! `VmSystem` with the SMP flush provider `ShootdownTlbs`: flushes are TLB shootdowns through
//! `machvm-tlb`'s engine to the CPUs that run the space, and a CPU that switches a space back
//! in catches up on the shootdowns it missed. Two simulated CPUs (software TLBs); an IPI runs
//! the target's handler at once. Every translation a CPU uses is checked against the page
//! table, so a CPU left out of a shootdown it needed fails the test.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::sync::OnceLock;

use machvm::shootdown::{ShootdownParts, ShootdownTlbs};
use machvm::sim::SimMemory;
use machvm::{SpaceId, VmSystem};
use machvm_addr::{FrameRequest, PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::X86Pml4;
use machvm_sync::{CpuId, CpuIndex, ThreadCpuId};
use machvm_tlb::shootdown::{IpiSender, Shootdown};
use machvm_tlb::soft::{Access, SoftTlb, SoftTlbError, Walked};
use machvm_tlb::{Asid, TlbCaps, TlbOps};
use machvm_vm_map::MapRequest;

const PS: u64 = 4096;
const BASE: u64 = 0x1000_0000;

static TLB: OnceLock<SoftTlb> = OnceLock::new();
static ENGINE: Shootdown<2> = Shootdown::new(1 << 16);
static CPU: OnceLock<ThreadCpuId> = OnceLock::new();

fn tlb() -> &'static SoftTlb {
    TLB.get_or_init(|| SoftTlb::new(2, 16, 4).expect("tlb"))
}

fn cpu_id() -> &'static ThreadCpuId {
    CPU.get_or_init(ThreadCpuId::new)
}

/// The TLB instructions of whichever CPU runs the caller (as `invlpg` / `tlbi` are).
struct LocalTlb;

impl LocalTlb {
    fn with<R>(&self, f: impl FnOnce(&machvm_tlb::soft::SoftTlbCpu<'_>) -> R) -> R {
        let ops = tlb().cpu(cpu_id().current_cpu()).expect("cpu");
        f(&ops)
    }
}

impl TlbOps for LocalTlb {
    fn caps(&self) -> TlbCaps {
        self.with(|t| t.caps())
    }
    fn sync(&self) {
        self.with(|t| t.sync());
    }
    fn invalidate_page(&self, asid: Asid, va: VirtAddr, leaf_only: bool) {
        self.with(|t| t.invalidate_page(asid, va, leaf_only));
    }
    fn invalidate_range(
        &self,
        asid: Asid,
        start: VirtAddr,
        len: u64,
        stride: PageSize,
        leaf_only: bool,
    ) {
        self.with(|t| t.invalidate_range(asid, start, len, stride, leaf_only));
    }
    fn invalidate_asid(&self, asid: Asid) {
        self.with(|t| t.invalidate_asid(asid));
    }
    fn invalidate_all(&self) {
        self.with(|t| t.invalidate_all());
    }
    fn complete(&self) {
        self.with(|t| t.complete());
    }
}

static LOCAL: LocalTlb = LocalTlb;

/// Delivers an IPI at once: the target's handler runs (with the target's TLB) before `send`
/// returns.
struct InstantIpi;

impl IpiSender for InstantIpi {
    fn send(&self, target: CpuIndex) {
        let ops = tlb().cpu(target).expect("cpu");
        ENGINE.handle(target, &ops).expect("handle");
    }
}

static IPI: InstantIpi = InstantIpi;

type Vm =
    VmSystem<X86Pml4, SimMemory, SimMemory, ShootdownTlbs<LocalTlb, InstantIpi, ThreadCpuId, 2>>;

fn system() -> Vm {
    let memory = SimMemory::new(
        SimPhysMemory::builder()
            .size_bytes(4 << 20)
            .build()
            .expect("memory"),
    );
    let parts = ShootdownParts {
        engine: &ENGINE,
        local: &LOCAL,
        ipi: &IPI,
        cpu: cpu_id(),
    };
    let mut vm = Vm::new(
        memory.clone(),
        memory.clone(),
        ShootdownTlbs::new(parts),
        VirtAddr::new(BASE),
        VirtAddr::new(BASE + (1 << 30)),
    );
    let run = memory
        .memory()
        .allocate(FrameRequest::new(PageSize::Size4KiB, 64).expect("request"))
        .expect("frames");
    vm.donate(run, 64).expect("donate");
    vm
}

/// An access of `cpu` (the calling thread becomes that CPU for it).
fn access(
    vm: &mut Vm,
    cpu: u32,
    space: SpaceId,
    va: u64,
    access: Access,
) -> Result<PhysAddr, String> {
    let _bound = cpu_id().bind(CpuIndex::new(cpu)).expect("bind");
    for _ in 0..4 {
        let asid = vm.asid(space).expect("space");
        let map = vm.map(space).expect("space");
        let walk = |v: VirtAddr| {
            map.pmap().lookup(v).map(|m| {
                Walked::new(m.pa, m.size).with_writable(m.attrs.prot().contains(VmProt::WRITE))
            })
        };
        match tlb().translate(CpuIndex::new(cpu), asid, VirtAddr::new(va), access, walk) {
            Ok(t) => return Ok(t.pa),
            Err(SoftTlbError::Fault { .. }) => {
                vm.handle_fault(space, VirtAddr::new(va), access.prot())
                    .map_err(|e| format!("fault: {e}"))?;
            }
            Err(e) => return Err(format!("{e}")),
        }
    }
    panic!("no progress");
}

/// Runs `f` as CPU `cpu`.
fn on_cpu<R>(cpu: u32, f: impl FnOnce() -> R) -> R {
    let _bound = cpu_id().bind(CpuIndex::new(cpu)).expect("bind");
    f()
}

#[test]
fn shootdowns_reach_running_cpus_and_switched_out_cpus_catch_up() {
    let mut vm = system();
    let s = vm.create_space().unwrap();
    let base = vm.mmap(s, MapRequest::anonymous(4 * PS)).unwrap().as_u64();
    on_cpu(0, || vm.activate(s, 0)).unwrap();
    on_cpu(1, || vm.activate(s, 1)).unwrap();
    for cpu in 0..2 {
        access(&mut vm, cpu, s, base, Access::Write).unwrap();
        access(&mut vm, cpu, s, base + PS, Access::Write).unwrap();
    }
    // CPU 0 unmaps a page both CPUs cached: CPU 1 is interrupted and flushes.
    on_cpu(0, || vm.munmap(s, VirtAddr::new(base), PS)).unwrap();
    // The page is gone: CPU 1 misses, walks, finds nothing and faults into the map, which
    // refuses; it does not use its old translation.
    let r = access(&mut vm, 1, s, base, Access::Read);
    assert!(r.as_ref().is_err_and(|e| e.starts_with("fault")), "{r:?}");
    assert_eq!(
        tlb().stats().stale_reports,
        0,
        "CPU 1 flushed when interrupted"
    );

    // CPU 1 switches the space out; CPU 0 forks (write-protecting page 1, which CPU 1 still
    // has writable in its TLB). CPU 1 is not interrupted...
    on_cpu(1, || vm.deactivate(s, 1)).unwrap();
    let before = tlb().cpu_stats(CpuIndex::new(1)).unwrap().invalidations;
    let _child = on_cpu(0, || vm.fork(s)).unwrap();
    assert_eq!(
        tlb().cpu_stats(CpuIndex::new(1)).unwrap().invalidations,
        before,
        "a CPU not running the space is not interrupted"
    );
    // ...and catches up when it switches the space back in: its store faults (copy on write)
    // instead of using the stale writable entry.
    on_cpu(1, || vm.activate(s, 1)).unwrap();
    access(&mut vm, 1, s, base + PS, Access::Write).expect("no stale translation");
    assert_eq!(tlb().stats().stale_reports, 0);
    assert!(vm.counters().cow_faults >= 1);
    // Tearing the spaces down flushes too: as CPU 0.
    on_cpu(0, || drop(vm));
}
