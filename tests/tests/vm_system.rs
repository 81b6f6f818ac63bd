//! The machine simulator: `VmSystem` over real page tables on simulated physical memory, with
//! simulated CPUs that translate every load and store through `SoftTlb` (a missed
//! invalidation fails the test) and fault into the system. Workloads: random operations over
//! several spaces against a flat model, an over-commit run (more pages than frames, so pages
//! flow through the pageout daemon to a pager and back), and exact counter accounting.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use machvm::{AnonymousPager, FlushProvider, PageQueue, PressureLevel, SpaceId, VmError, VmSystem};
use machvm_addr::{FrameRequest, PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{FlushHook, FlushRange, X86Pml4};
use machvm_sync::CpuIndex;
use machvm_tlb::soft::{Access, SoftTlb, SoftTlbError, Walked};
use machvm_tlb::{Asid, TlbFlush};
use machvm_vm_map::{FaultError, MapRequest};
use machvm_vm_object::{InMemoryPager, MemoryObject, ObjectError, ObjectRef};
use proptest::prelude::*;

const PS: u64 = 4096;
const CPUS: usize = 2;
const BASE: u64 = 0x1000_0000;

/// Invalidates on every simulated CPU through `machvm-tlb`'s `TlbFlush`.
struct SoftFlush {
    tlb: &'static SoftTlb,
    asid: Asid,
}

impl FlushHook for SoftFlush {
    fn sync(&mut self) {
        let ops = self.tlb.broadcast(CpuIndex::new(0)).expect("cpu 0");
        TlbFlush::new(&ops, self.asid).sync();
    }

    fn invalidate(&mut self, range: &FlushRange) {
        let ops = self.tlb.broadcast(CpuIndex::new(0)).expect("cpu 0");
        TlbFlush::new(&ops, self.asid).invalidate(range);
    }
}

struct SoftTlbs(&'static SoftTlb);

impl FlushProvider for SoftTlbs {
    type Hook = SoftFlush;

    fn hook(&self, asid: Asid) -> SoftFlush {
        SoftFlush { tlb: self.0, asid }
    }

    fn flush_asid(&self, asid: Asid) {
        self.0.broadcast_invalidate_asid(asid);
    }
}

/// An anonymous pager keeping evicted pages in memory (one `InMemoryPager` per object).
#[derive(Default)]
struct MemPagers {
    made: Mutex<u64>,
}

impl AnonymousPager for MemPagers {
    fn pager_for(&self, _object: &ObjectRef) -> Result<Arc<dyn MemoryObject>, ObjectError> {
        *self.made.lock().unwrap() += 1;
        Ok(Arc::new(InMemoryPager::new()))
    }
}

type Vm = VmSystem<X86Pml4, &'static SimPhysMemory, &'static SimPhysMemory, SoftTlbs>;

struct Machine {
    vm: Vm,
    tlb: &'static SoftTlb,
    phys: &'static SimPhysMemory,
    /// Declared last, so it is dropped after `vm`: gives the memory back for reuse.
    _lease: Lease,
}

/// Simulated memory, a TLB and the run of data frames, kept for the next machine of the
/// same size (proptest builds one per case; leaking each would exhaust the host).
type Parts = (u32, &'static SimPhysMemory, &'static SoftTlb, PhysAddr);

static IDLE: Mutex<Vec<Parts>> = Mutex::new(Vec::new());

struct Lease(Parts);

impl Drop for Lease {
    fn drop(&mut self) {
        IDLE.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(self.0);
    }
}

/// A machine with `frames` data frames (page tables come from the rest of the memory).
fn machine(frames: u32) -> Machine {
    let idle = {
        let mut idle = IDLE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.iter()
            .position(|p| p.0 == frames)
            .map(|i| idle.swap_remove(i))
    };
    let parts = idle.unwrap_or_else(|| {
        let phys: &'static SimPhysMemory = Box::leak(Box::new(
            SimPhysMemory::builder()
                .size_bytes(u64::from(frames) * PS + (2 << 20))
                .build()
                .expect("memory"),
        ));
        let tlb: &'static SoftTlb = Box::leak(Box::new(SoftTlb::new(CPUS, 16, 4).expect("tlb")));
        // The data frames: taken from the simulated memory's allocator, then donated.
        let run = phys
            .allocate(FrameRequest::new(PageSize::Size4KiB, u64::from(frames)).expect("request"))
            .expect("frames");
        (frames, phys, tlb, run)
    });
    let (_, phys, tlb, run) = parts;
    tlb.broadcast_invalidate_all();
    tlb.reset_stats();
    let mut vm = Vm::new(
        phys,
        phys,
        SoftTlbs(tlb),
        VirtAddr::new(BASE),
        VirtAddr::new(BASE + (1 << 30)),
    );
    vm.donate(run, frames).expect("donate");
    vm.set_anonymous_pager(Arc::new(MemPagers::default()));
    Machine {
        vm,
        tlb,
        phys,
        _lease: Lease(parts),
    }
}

impl Machine {
    /// A simulated CPU's access: translate through the soft TLB and a walk of the space's
    /// page table, faulting into the system on a miss or a permission fault.
    fn access(
        &mut self,
        cpu: usize,
        space: SpaceId,
        va: u64,
        access: Access,
    ) -> Result<PhysAddr, VmError> {
        for _ in 0..4 {
            let asid = self.vm.asid(space)?;
            let map = self.vm.map(space)?;
            let walk = |v: VirtAddr| {
                map.pmap().lookup(v).map(|m| {
                    let prot = m.attrs.prot();
                    Walked::new(m.pa, m.size)
                        .with_writable(prot.contains(VmProt::WRITE))
                        .with_executable(prot.contains(VmProt::EXECUTE))
                })
            };
            match self.tlb.translate(
                CpuIndex::new(cpu as u32),
                asid,
                VirtAddr::new(va),
                access,
                walk,
            ) {
                Ok(t) => return Ok(t.pa),
                Err(SoftTlbError::Fault { .. }) => {
                    self.vm
                        .handle_fault(space, VirtAddr::new(va), access.prot())?;
                }
                Err(e) => panic!("cpu {cpu} {space}: {e}"),
            }
        }
        panic!("no progress at {va:#x}");
    }

    fn store(&mut self, cpu: usize, space: SpaceId, va: u64, value: u8) -> Result<(), VmError> {
        let pa = self.access(cpu, space, va, Access::Write)?;
        self.phys.write_bytes(pa, &[value]).expect("store");
        Ok(())
    }

    fn load(&mut self, cpu: usize, space: SpaceId, va: u64) -> Result<u8, VmError> {
        let pa = self.access(cpu, space, va, Access::Read)?;
        let mut b = [0u8];
        self.phys.read_bytes(pa, &mut b).expect("load");
        Ok(b[0])
    }
}

/// The byte pattern of page `page` of space `tag`.
fn pattern(tag: u8, page: u64) -> u8 {
    tag.wrapping_mul(31)
        .wrapping_add(page as u8)
        .wrapping_add(1)
}

#[test]
fn over_commit_pages_go_out_and_come_back_intact() {
    // 48 frames for 192 pages: every page must be evicted and paged in again.
    let mut m = machine(48);
    let s = m.vm.create_space().unwrap();
    let pages = 192u64;
    let base =
        m.vm.mmap(s, MapRequest::anonymous(pages * PS))
            .unwrap()
            .as_u64();
    for p in 0..pages {
        let va = base + p * PS + (p * 17) % PS;
        m.store((p % 2) as usize, s, va, pattern(1, p)).unwrap();
        if p % 16 == 15 {
            m.vm.pageout_step(64);
        }
    }
    for round in 0..2 {
        for p in 0..pages {
            let va = base + p * PS + (p * 17) % PS;
            assert_eq!(
                m.load(((p + round) % 2) as usize, s, va).unwrap(),
                pattern(1, p),
                "page {p}"
            );
        }
    }
    let c = m.vm.counters();
    assert!(c.pageouts >= pages - 48, "{c:?}");
    assert!(c.pageins >= pages - 48, "{c:?}");
    assert_eq!(c.zero_fill, pages, "each page zero-filled once");
    assert_eq!(m.tlb.stats().stale_reports, 0);
    let q = m.vm.queues();
    assert_eq!(q.total(), 48);
    m.vm.destroy_space(s).unwrap();
    assert_eq!(m.vm.queues().free, 48, "every frame back");
}

#[test]
fn counters_move_by_exactly_the_events_that_happened() {
    let mut m = machine(64);
    let s = m.vm.create_space().unwrap();
    let base =
        m.vm.mmap(s, MapRequest::anonymous(8 * PS))
            .unwrap()
            .as_u64();
    let mut faults = 0;
    // 8 zero fills.
    for p in 0..8 {
        m.store(0, s, base + p * PS, 7).unwrap();
        faults += 1;
    }
    // TLB hits: no faults.
    for p in 0..8 {
        assert_eq!(m.load(0, s, base + p * PS).unwrap(), 7);
    }
    let c = m.vm.counters();
    assert_eq!(
        (c.faults, c.zero_fill, c.cow_faults, c.pageins),
        (faults, 8, 0, 0)
    );

    // Fork, then the child writes 3 pages: its first access to each is one copy-on-write
    // fault (the child's page table starts empty).
    let child = m.vm.fork(s).unwrap();
    for p in 0..3 {
        m.store(1, child, base + p * PS, 9).unwrap();
        faults += 1;
    }
    let c = m.vm.counters();
    assert_eq!((c.faults, c.cow_faults, c.zero_fill), (faults, 3, 8));
    // The parent's pages are write-protected by the fork: its write to page 5 copies too.
    m.store(0, s, base + 5 * PS, 1).unwrap();
    faults += 1;
    let c = m.vm.counters();
    assert_eq!((c.faults, c.cow_faults), (faults, 4));
    assert_eq!(
        m.load(1, child, base + 5 * PS).unwrap(),
        7,
        "the child keeps the old byte"
    );
    faults += 1; // the child's first read of page 5 (resident in the shared object)

    // Page out everything pageable, then read it back: one pagein per page paged out.
    m.vm.set_pageout_targets({
        let mut t = machvm::PageoutTargets::default();
        t.free_percent = 100;
        t
    });
    let step = m.vm.pageout_step(1000);
    let c = m.vm.counters();
    assert_eq!(c.pageouts, step.paged_out);
    assert!(step.paged_out > 0, "{step:?}");
    let before = c.pageins;
    for p in 0..8 {
        let want = if p == 5 { 1 } else { 7 };
        assert_eq!(
            m.load(0, s, base + p * PS).unwrap(),
            want,
            "parent page {p}"
        );
        faults += 1;
    }
    let c = m.vm.counters();
    assert_eq!(c.faults, faults);
    assert!(c.pageins > before);
    assert_eq!(m.tlb.stats().stale_reports, 0);
    let report = m.vm.vm_stat().to_string();
    assert!(report.starts_with("Mach Virtual Memory Statistics: (page size of 4096 bytes)\n"));
    assert!(
        report.contains(&format!("{:<30}{:>20}.", "\"Translation faults\":", faults)),
        "{report}"
    );
    assert!(
        report.contains(&format!("{:<30}{:>20}.", "Pageouts:", c.pageouts)),
        "{report}"
    );
}

#[test]
fn pressure_rises_with_use_and_falls_when_memory_returns() {
    let mut m = machine(100);
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    m.vm.on_pressure_change(Box::new(move |old, new| {
        seen.lock().unwrap().push((old, new))
    }));
    let s = m.vm.create_space().unwrap();
    let base =
        m.vm.mmap(s, MapRequest::anonymous(100 * PS))
            .unwrap()
            .as_u64();
    // Wire pages so nothing is reclaimable.
    m.vm.wire(s, VirtAddr::new(base), 97 * PS).unwrap();
    assert_eq!(m.vm.pressure(), PressureLevel::Critical);
    assert_eq!(m.vm.queues().wired, 97);
    let report = m.vm.memory_pressure().to_string();
    assert!(report.contains("Memory pressure: Critical"), "{report}");
    m.vm.munmap(s, VirtAddr::new(base), 100 * PS).unwrap();
    assert_eq!(m.vm.pressure(), PressureLevel::Normal);
    let changes = changes.lock().unwrap().clone();
    assert_eq!(changes.first().map(|c| c.0), Some(PressureLevel::Normal));
    assert_eq!(changes.last().map(|c| c.1), Some(PressureLevel::Normal));
    assert!(changes.iter().any(|c| c.1 == PressureLevel::Critical));
    let report = m.vm.memory_pressure().to_string();
    assert!(report.contains("Memory pressure: Normal"), "{report}");
    assert!(report.contains("The system has 409600 (100 pages with a page size of 4096)."));
}

#[derive(Clone, Debug)]
enum Op {
    Store {
        s: usize,
        cpu: usize,
        page: u64,
        value: u8,
    },
    Load {
        s: usize,
        cpu: usize,
        page: u64,
    },
    Fork {
        s: usize,
    },
    Exit {
        s: usize,
    },
    Unmap {
        s: usize,
        page: u64,
        n: u64,
    },
    Protect {
        s: usize,
        page: u64,
        n: u64,
        write: bool,
    },
    Pageout {
        budget: u64,
    },
}

const PAGES: u64 = 24;

fn op() -> impl Strategy<Value = Op> {
    let s = 0..3usize;
    prop_oneof![
        8 => (s.clone(), 0..CPUS, 0..PAGES, any::<u8>()).prop_map(|(s, cpu, page, value)| Op::Store { s, cpu, page, value }),
        8 => (s.clone(), 0..CPUS, 0..PAGES).prop_map(|(s, cpu, page)| Op::Load { s, cpu, page }),
        1 => s.clone().prop_map(|s| Op::Fork { s }),
        1 => s.clone().prop_map(|s| Op::Exit { s }),
        1 => (s.clone(), 0..PAGES, 1..4u64).prop_map(|(s, page, n)| Op::Unmap { s, page, n }),
        1 => (s, 0..PAGES, 1..4u64, any::<bool>()).prop_map(|(s, page, n, write)| Op::Protect { s, page, n, write }),
        2 => (1..40u64).prop_map(|budget| Op::Pageout { budget }),
    ]
}

/// The model of one space: each page's byte at offset 0 and whether it is writable; a
/// missing page is unmapped.
type MSpace = BTreeMap<u64, (u8, bool)>;

fn run_workload(ops: &[Op]) {
    // 20 frames for up to 3 spaces of 24 pages: pageout runs constantly.
    let mut m = machine(20);
    let first = m.vm.create_space().unwrap();
    m.vm.mmap(
        first,
        MapRequest::anonymous(PAGES * PS)
            .location(machvm_vm_map::Location::Fixed(VirtAddr::new(BASE))),
    )
    .unwrap();
    let mut spaces: Vec<(SpaceId, MSpace)> =
        vec![(first, (0..PAGES).map(|p| (p, (0u8, true))).collect())];
    let verbose = std::env::var_os("MACHVM_TEST_VERBOSE").is_some();
    for op in ops {
        if verbose {
            let ids: Vec<u32> = spaces.iter().map(|(id, _)| id.get()).collect();
            eprintln!(
                "{op:?} spaces {ids:?} {:?} {:?}",
                m.vm.counters(),
                m.vm.queues()
            );
        }
        match *op {
            Op::Store {
                s,
                cpu,
                page,
                value,
            } => {
                let i = s % spaces.len();
                let (id, model) = &mut spaces[i];
                let r = m.store(cpu, *id, BASE + page * PS, value);
                match model.get_mut(&page) {
                    None => assert!(
                        matches!(r, Err(VmError::Fault(FaultError::NotMapped { .. }))),
                        "{r:?}"
                    ),
                    Some((_, false)) => assert!(
                        matches!(r, Err(VmError::Fault(FaultError::Protection { .. }))),
                        "{r:?}"
                    ),
                    Some((byte, true)) => {
                        r.unwrap();
                        *byte = value;
                    }
                }
            }
            Op::Load { s, cpu, page } => {
                let i = s % spaces.len();
                let (id, model) = &spaces[i];
                let r = m.load(cpu, *id, BASE + page * PS);
                match model.get(&page) {
                    None => assert!(
                        matches!(r, Err(VmError::Fault(FaultError::NotMapped { .. }))),
                        "{r:?}"
                    ),
                    Some((byte, _)) => assert_eq!(r.unwrap(), *byte, "space {i} page {page}"),
                }
            }
            Op::Fork { s } => {
                if spaces.len() < 3 {
                    let i = s % spaces.len();
                    let child = m.vm.fork(spaces[i].0).unwrap();
                    let model = spaces[i].1.clone();
                    spaces.push((child, model));
                }
            }
            Op::Exit { s } => {
                if spaces.len() > 1 {
                    let i = s % spaces.len();
                    let (id, _) = spaces.remove(i);
                    m.vm.destroy_space(id).unwrap();
                }
            }
            Op::Unmap { s, page, n } => {
                let i = s % spaces.len();
                let n = n.min(PAGES - page);
                let (id, model) = &mut spaces[i];
                m.vm.munmap(*id, VirtAddr::new(BASE + page * PS), n * PS)
                    .unwrap();
                for p in page..page + n {
                    model.remove(&p);
                }
            }
            Op::Protect { s, page, n, write } => {
                let i = s % spaces.len();
                let n = n.min(PAGES - page);
                let (id, model) = &mut spaces[i];
                let prot = if write { VmProt::DEFAULT } else { VmProt::READ };
                let r =
                    m.vm.mprotect(*id, VirtAddr::new(BASE + page * PS), n * PS, prot);
                if (page..page + n).all(|p| model.contains_key(&p)) {
                    r.unwrap();
                    for p in page..page + n {
                        model.get_mut(&p).unwrap().1 = write;
                    }
                } else {
                    assert!(r.is_err());
                }
            }
            Op::Pageout { budget } => {
                m.vm.pageout_step(budget);
            }
        }
        let q = m.vm.queues();
        assert_eq!(q.total(), 20, "frames are conserved: {q:?}");
    }
    assert_eq!(m.tlb.stats().stale_reports, 0);
    for (id, _) in spaces {
        m.vm.destroy_space(id).unwrap();
    }
    assert_eq!(
        m.vm.queues().free,
        20,
        "every frame back after every space is gone"
    );
    assert_eq!(m.vm.frames().oldest(PageQueue::Active, 1).len(), 0);
}

/// A sequence proptest once shrank to: forks, exits and reclaim inside faults.
#[test]
fn regression_fork_exit_reclaim() {
    run_workload(&[
        Op::Store {
            s: 0,
            cpu: 0,
            page: 5,
            value: 0,
        },
        Op::Fork { s: 0 },
        Op::Store {
            s: 2,
            cpu: 0,
            page: 18,
            value: 0,
        },
        Op::Fork { s: 2 },
        Op::Exit { s: 0 },
        Op::Load {
            s: 0,
            cpu: 0,
            page: 10,
        },
        Op::Load {
            s: 0,
            cpu: 0,
            page: 6,
        },
        Op::Store {
            s: 1,
            cpu: 0,
            page: 15,
            value: 0,
        },
        Op::Load {
            s: 0,
            cpu: 0,
            page: 7,
        },
        Op::Load {
            s: 0,
            cpu: 0,
            page: 9,
        },
        Op::Fork { s: 0 },
        Op::Store {
            s: 1,
            cpu: 0,
            page: 5,
            value: 0,
        },
        Op::Load {
            s: 0,
            cpu: 0,
            page: 14,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 1,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 2,
            value: 0,
        },
        Op::Unmap {
            s: 0,
            page: 1,
            n: 1,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 5,
            value: 0,
        },
        Op::Load {
            s: 1,
            cpu: 0,
            page: 0,
        },
        Op::Load {
            s: 1,
            cpu: 0,
            page: 1,
        },
        Op::Store {
            s: 1,
            cpu: 0,
            page: 2,
            value: 0,
        },
        Op::Exit { s: 2 },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 6,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 3,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 4,
            value: 0,
        },
        Op::Load {
            s: 1,
            cpu: 0,
            page: 16,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 7,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 8,
            value: 0,
        },
        Op::Load {
            s: 1,
            cpu: 0,
            page: 18,
        },
        Op::Exit { s: 0 },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 18,
            value: 1,
        },
        Op::Fork { s: 0 },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 5,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 0,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 0,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 3,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 4,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 1,
            value: 0,
        },
        Op::Store {
            s: 2,
            cpu: 0,
            page: 6,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 0,
            value: 0,
        },
        Op::Store {
            s: 1,
            cpu: 0,
            page: 0,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 15,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 9,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 7,
            value: 0,
        },
        Op::Store {
            s: 0,
            cpu: 0,
            page: 0,
            value: 0,
        },
        Op::Load {
            s: 0,
            cpu: 0,
            page: 18,
        },
    ]);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 64 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_workloads_match_the_flat_model(ops in prop::collection::vec(op(), 1..150)) {
        run_workload(&ops);
    }
}
