//! The machine simulator (`machvm::sim`): `VmSystem` over real page tables on simulated
//! physical memory, with simulated CPUs that translate every load and store through
//! `SoftTlb` (a missed invalidation fails the test) and fault into the system — on one host
//! thread against a flat model (random workloads, over-commit, exact counters, pressure), and
//! on several host threads at once.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::sync::{Arc, Mutex};

use machvm::sim::SimMachine;
use machvm::{PageoutTargets, PressureLevel};
use machvm_addr::VirtAddr;
use machvm_page_table::X86Pml4;
use machvm_tests::MemPagers;
use machvm_tests::workload::{self, CPUS, Op, PAGES};
use machvm_vm_map::MapRequest;
use proptest::prelude::*;

const PS: u64 = 4096;

fn machine(frames: u32) -> SimMachine<X86Pml4> {
    let m = SimMachine::<X86Pml4>::new(frames, CPUS).expect("machine");
    m.vm().set_anonymous_pager(Arc::new(MemPagers::default()));
    m
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
    let m = machine(48);
    let s = m.create_space().unwrap();
    let pages = 192u64;
    let base = m
        .vm()
        .mmap(s, MapRequest::anonymous(pages * PS))
        .unwrap()
        .as_u64();
    for p in 0..pages {
        let va = base + p * PS + (p * 17) % PS;
        m.store((p % 2) as usize, s, va, pattern(1, p)).unwrap();
        if p % 16 == 15 {
            m.vm().pageout_step(64);
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
    let c = m.vm().counters();
    assert!(c.pageouts >= pages - 48, "{c:?}");
    assert!(c.pageins >= pages - 48, "{c:?}");
    assert_eq!(c.zero_fill, pages, "each page zero-filled once");
    assert_eq!(m.tlb().stats().stale_reports, 0);
    assert_eq!(m.vm().queues().total(), 48);
    m.destroy_space(s).unwrap();
    assert_eq!(m.vm().queues().free, 48, "every frame back");
}

#[test]
fn counters_move_by_exactly_the_events_that_happened() {
    let m = machine(64);
    let s = m.create_space().unwrap();
    let base = m
        .vm()
        .mmap(s, MapRequest::anonymous(8 * PS))
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
    let c = m.vm().counters();
    assert_eq!(
        (c.faults, c.zero_fill, c.cow_faults, c.pageins),
        (faults, 8, 0, 0)
    );

    // Fork, then the child writes 3 pages: its first access to each is one copy-on-write
    // fault (the child's page table starts empty).
    let child = m.fork(s).unwrap();
    for p in 0..3 {
        m.store(1, child, base + p * PS, 9).unwrap();
        faults += 1;
    }
    let c = m.vm().counters();
    assert_eq!((c.faults, c.cow_faults, c.zero_fill), (faults, 3, 8));
    // The parent's pages are write-protected by the fork: its write to page 5 copies too.
    m.store(0, s, base + 5 * PS, 1).unwrap();
    faults += 1;
    let c = m.vm().counters();
    assert_eq!((c.faults, c.cow_faults), (faults, 4));
    assert_eq!(
        m.load(1, child, base + 5 * PS).unwrap(),
        7,
        "the child keeps the old byte"
    );
    faults += 1; // the child's first read of page 5 (resident in the shared object)

    // Page out everything pageable, then read it back: one pagein per page paged out.
    m.vm()
        .set_pageout_targets(PageoutTargets::default().with_free_percent(100));
    let step = m.vm().pageout_step(1000);
    let c = m.vm().counters();
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
    let c = m.vm().counters();
    assert_eq!(c.faults, faults);
    assert!(c.pageins > before);
    assert_eq!(m.tlb().stats().stale_reports, 0);
    let report = m.vm().vm_stat().to_string();
    assert!(report.starts_with("Mach Virtual Memory Statistics: (page size of 4096 bytes)\n"));
    let line = |label: &str, n: u64| format!("{label:<30}{n:>20}.");
    assert!(
        report.contains(&line("\"Translation faults\":", faults)),
        "{report}"
    );
    assert!(report.contains(&line("Pageouts:", c.pageouts)), "{report}");
    assert!(report.contains(&line("Pageins:", c.pageins)), "{report}");
    assert!(
        report.contains(&line("Pages copy-on-write:", 4)),
        "{report}"
    );
    assert!(report.contains(&line("Pages zero filled:", 8)), "{report}");
}

#[test]
fn pressure_rises_with_use_and_falls_when_memory_returns() {
    let m = machine(100);
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    m.vm().on_pressure_change(Box::new(move |old, new| {
        seen.lock().unwrap().push((old, new))
    }));
    let s = m.create_space().unwrap();
    let base = m
        .vm()
        .mmap(s, MapRequest::anonymous(100 * PS))
        .unwrap()
        .as_u64();
    // Wired pages are not reclaimable.
    m.vm().wire(s, VirtAddr::new(base), 97 * PS).unwrap();
    assert_eq!(m.vm().pressure(), PressureLevel::Critical);
    assert_eq!(m.vm().queues().wired, 97);
    let report = m.vm().memory_pressure().to_string();
    assert!(report.contains("Memory pressure: Critical"), "{report}");
    m.vm().munmap(s, VirtAddr::new(base), 100 * PS).unwrap();
    assert_eq!(m.vm().pressure(), PressureLevel::Normal);
    let changes = changes.lock().unwrap().clone();
    assert_eq!(changes.first().map(|c| c.0), Some(PressureLevel::Normal));
    assert_eq!(changes.last().map(|c| c.1), Some(PressureLevel::Normal));
    assert!(changes.iter().any(|c| c.1 == PressureLevel::Critical));
    let report = m.vm().memory_pressure().to_string();
    assert!(report.contains("Memory pressure: Normal"), "{report}");
    assert!(report.contains("The system has 409600 (100 pages with a page size of 4096)."));
}

/// Four host threads, each a simulated CPU writing and checking its own pages of one shared
/// space, while a fifth thread runs the pageout daemon and forks and destroys children:
/// every byte read back is the thread's own, and no CPU ever uses a stale translation.
#[test]
fn cpus_on_host_threads_with_a_concurrent_pageout_daemon() {
    const THREADS: usize = 4;
    const PER_THREAD: u64 = 24;
    let m = Arc::new(SimMachine::<X86Pml4>::new(40, THREADS).expect("machine"));
    m.vm().set_anonymous_pager(Arc::new(MemPagers::default()));
    let s = m.create_space().unwrap();
    let base = m
        .vm()
        .mmap(s, MapRequest::anonymous(THREADS as u64 * PER_THREAD * PS))
        .unwrap()
        .as_u64();
    let rounds = if cfg!(miri) { 2 } else { 40 };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let daemon = {
        let (m, stop) = (m.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                m.vm().pageout_step(16);
                if n % 8 == 0 {
                    // A fork write-protects every page of the space: each CPU's next store
                    // copies on write, racing the other CPUs' accesses.
                    let child = m.fork(s).unwrap();
                    m.destroy_space(child).unwrap();
                }
                n += 1;
                std::thread::yield_now();
            }
        })
    };
    // The CPUs start each round together, so they compete for the 40 frames throughout.
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|cpu| {
            let (m, barrier) = (m.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mine = base + cpu as u64 * PER_THREAD * PS;
                for round in 0..rounds {
                    barrier.wait();
                    for p in 0..PER_THREAD {
                        let va = mine + p * PS + (round * 7) % PS;
                        let value = pattern(cpu as u8 + round as u8, p);
                        m.store(cpu, s, va, value).unwrap();
                    }
                    for p in 0..PER_THREAD {
                        let va = mine + p * PS + (round * 7) % PS;
                        let value = pattern(cpu as u8 + round as u8, p);
                        assert_eq!(m.load(cpu, s, va).unwrap(), value, "cpu {cpu} page {p}");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    daemon.join().expect("daemon");
    assert_eq!(m.tlb().stats().stale_reports, 0);
    let c = m.vm().counters();
    assert!(c.pageouts > 0 && c.pageins > 0, "{c:?}");
    m.destroy_space(s).unwrap();
    assert_eq!(m.vm().queues().free, 40);
}

/// A sequence proptest once shrank to: forks, exits and reclaim inside faults (a page written
/// through a translation that a fork later write-protected was dropped as clean).
#[test]
fn regression_fork_exit_reclaim() {
    workload::run(
        20,
        &[
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 5,
                value: 0,
            },
            Op::Fork { s: 0 },
            Op::Store {
                off: 0,
                s: 2,
                cpu: 0,
                page: 18,
                value: 0,
            },
            Op::Fork { s: 2 },
            Op::Exit { s: 0 },
            Op::Load {
                off: 0,
                s: 0,
                cpu: 0,
                page: 10,
            },
            Op::Load {
                off: 0,
                s: 0,
                cpu: 0,
                page: 6,
            },
            Op::Store {
                off: 0,
                s: 1,
                cpu: 0,
                page: 15,
                value: 0,
            },
            Op::Load {
                off: 0,
                s: 0,
                cpu: 0,
                page: 7,
            },
            Op::Load {
                off: 0,
                s: 0,
                cpu: 0,
                page: 9,
            },
            Op::Fork { s: 0 },
            Op::Store {
                off: 0,
                s: 1,
                cpu: 0,
                page: 5,
                value: 0,
            },
            Op::Load {
                off: 0,
                s: 0,
                cpu: 0,
                page: 14,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 1,
                value: 0,
            },
            Op::Store {
                off: 0,
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
                off: 0,
                s: 0,
                cpu: 0,
                page: 5,
                value: 0,
            },
            Op::Load {
                off: 0,
                s: 1,
                cpu: 0,
                page: 0,
            },
            Op::Load {
                off: 0,
                s: 1,
                cpu: 0,
                page: 1,
            },
            Op::Store {
                off: 0,
                s: 1,
                cpu: 0,
                page: 2,
                value: 0,
            },
            Op::Exit { s: 2 },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 6,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 3,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 4,
                value: 0,
            },
            Op::Load {
                off: 0,
                s: 1,
                cpu: 0,
                page: 16,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 7,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 8,
                value: 0,
            },
            Op::Load {
                off: 0,
                s: 1,
                cpu: 0,
                page: 18,
            },
            Op::Exit { s: 0 },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 18,
                value: 1,
            },
            Op::Fork { s: 0 },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 5,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 0,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 0,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 3,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 4,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 1,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 2,
                cpu: 0,
                page: 6,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 0,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 1,
                cpu: 0,
                page: 0,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 15,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 9,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 7,
                value: 0,
            },
            Op::Store {
                off: 0,
                s: 0,
                cpu: 0,
                page: 0,
                value: 0,
            },
            Op::Load {
                off: 0,
                s: 0,
                cpu: 0,
                page: 18,
            },
        ],
    );
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..3usize;
    let off = prop_oneof![Just(0u64), 0..PS];
    prop_oneof![
        8 => (s.clone(), 0..CPUS, 0..PAGES, off.clone(), any::<u8>())
            .prop_map(|(s, cpu, page, off, value)| Op::Store { s, cpu, page, off, value }),
        8 => (s.clone(), 0..CPUS, 0..PAGES, off).prop_map(|(s, cpu, page, off)| Op::Load { s, cpu, page, off }),
        1 => s.clone().prop_map(|s| Op::Fork { s }),
        1 => s.clone().prop_map(|s| Op::Exit { s }),
        1 => (s.clone(), 0..PAGES, 1..4u64).prop_map(|(s, page, n)| Op::Unmap { s, page, n }),
        1 => (s, 0..PAGES, 1..4u64, any::<bool>())
            .prop_map(|(s, page, n, write)| Op::Protect { s, page, n, write }),
        2 => (1..40u64).prop_map(|budget| Op::Pageout { budget }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 64 },
        ..ProptestConfig::default()
    })]

    /// 20 frames for up to 3 spaces of 24 pages: pageout runs constantly.
    #[test]
    fn random_workloads_match_the_flat_model(ops in prop::collection::vec(op(), 1..150)) {
        workload::run(20, &ops);
    }
}

/// A purgeable object marked volatile is emptied by the pageout daemon instead of paged out;
/// `vmmap` and `vm_stat` show it.
#[test]
fn volatile_purgeable_memory_is_purged_under_pressure() {
    use machvm_vm_object::{PageMemory, PurgeableState, VmObject};
    let m = machine(64);
    let s = m.create_space().unwrap();
    let memory: Arc<dyn PageMemory> = m.vm().frames().clone();
    let object = VmObject::builder(8 * PS, memory)
        .purgeable()
        .build()
        .unwrap();
    let base = m
        .vm()
        .mmap(s, MapRequest::shared(object.clone(), 0, 8 * PS))
        .unwrap();
    for p in 0..8 {
        m.store(0, s, base.as_u64() + p * PS, 3).unwrap();
    }
    let map = m.vm().vmmap(s).unwrap().to_string();
    assert!(map.starts_with("REGION TYPE"), "{map}");
    assert_eq!(map.lines().count(), 2, "{map}");
    assert!(map.contains("32K"), "8 resident pages: {map}");

    let old = m
        .vm()
        .set_purgeable(s, base, PurgeableState::Volatile)
        .unwrap();
    assert_eq!(old, PurgeableState::NonVolatile);
    let stat = m.vm().vm_stat().to_string();
    assert!(
        stat.contains(&format!("{:<30}{:>20}.", "Pages purgeable:", 8)),
        "{stat}"
    );
    m.vm()
        .set_pageout_targets(PageoutTargets::default().with_free_percent(100));
    let step = m.vm().pageout_step(100);
    assert_eq!(step.purged, 8, "{step:?}");
    assert_eq!(step.paged_out, 0, "{step:?}");
    assert_eq!(m.vm().counters().purged, 8);
    assert_eq!(object.purgeable_state(), Some(PurgeableState::Empty));
    // An emptied object faults until it is made non-volatile; then it reads as zeros.
    assert!(m.load(0, s, base.as_u64()).is_err());
    m.vm()
        .set_purgeable(s, base, PurgeableState::NonVolatile)
        .unwrap();
    assert_eq!(m.load(0, s, base.as_u64()).unwrap(), 0);
    assert_eq!(m.tlb().stats().stale_reports, 0);
}

/// `zprint` shows the zones the system was given: here a kalloc heap whose allocations the
/// test makes, so its counters are known.
#[test]
fn zprint_reports_the_zones_of_the_source() {
    use machvm_zone_alloc::{Kalloc, NoCpuCache, SystemPages};
    let m = machine(16);
    let pages: &'static SystemPages = Box::leak(Box::new(SystemPages::new()));
    let cpu: &'static NoCpuCache = Box::leak(Box::new(NoCpuCache));
    let heap: Arc<Kalloc<'static, SystemPages, NoCpuCache, 1>> =
        Arc::new(Kalloc::new("vm", pages, cpu, 0x5eed).unwrap());
    let layout = std::alloc::Layout::from_size_align(48, 8).unwrap();
    let held: Vec<_> = (0..10).map(|_| heap.alloc(layout).unwrap()).collect();
    let source = heap.clone();
    m.vm()
        .set_zone_source(Box::new(move || source.zone_stats().collect()));
    let table = m.vm().zprint().to_string();
    let row = table
        .lines()
        .find(|l| l.starts_with("vm.48 "))
        .unwrap_or_else(|| panic!("no 48-byte zone row in\n{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "48", "{row}");
    assert_eq!(cols[6], "10", "ten elements in use: {row}");
    for p in held {
        // SAFETY: allocated above with `layout`, freed once.
        unsafe { heap.free(p, layout) };
    }
}

/// Sequential sweeps (write every page in order, read every page in order) over 24 pages in
/// 12 frames: every sweep evicts the pages the next sweep needs.
#[test]
fn sequential_sweeps_through_a_small_memory() {
    let mut ops = Vec::new();
    for round in 0..6u8 {
        for page in 0..PAGES {
            ops.push(Op::Store {
                s: 0,
                cpu: usize::from(round % 2),
                page,
                off: u64::from(round) * 8,
                value: round ^ page as u8,
            });
        }
        for page in 0..PAGES {
            ops.push(Op::Load {
                s: 0,
                cpu: usize::from(round % 2 == 0),
                page,
                off: u64::from(round) * 8,
            });
        }
    }
    let report = workload::run(12, &ops);
    assert!(report.pageouts >= 5 * (PAGES - 12), "{report:?}");
    assert!(report.pageins > 0, "{report:?}");
}

/// Fork-heavy: every few stores the newest space forks or a space exits, so pages are shared
/// copy on write across up to three spaces while memory is short.
#[test]
fn fork_heavy_workload() {
    let mut ops = Vec::new();
    for i in 0..200u64 {
        let s = (i % 3) as usize;
        match i % 10 {
            3 => ops.push(Op::Fork { s }),
            7 => ops.push(Op::Exit { s: s + 1 }),
            9 => ops.push(Op::Pageout { budget: 8 }),
            _ => {
                ops.push(Op::Store {
                    s,
                    cpu: (i % 2) as usize,
                    page: (i * 7) % PAGES,
                    off: i % 64,
                    value: i as u8,
                });
                ops.push(Op::Load {
                    s: s + 1,
                    cpu: ((i + 1) % 2) as usize,
                    page: (i * 5) % PAGES,
                    off: i % 64,
                });
            }
        }
    }
    let report = workload::run(20, &ops);
    assert!(report.accesses > 200, "{report:?}");
}

/// A pager with room for a fixed number of pages (shared by every object).
struct SmallPagers {
    room: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug)]
struct SmallPager {
    inner: machvm_vm_object::InMemoryPager,
    room: Arc<std::sync::atomic::AtomicU64>,
}

impl machvm_vm_object::MemoryObject for SmallPager {
    fn data_request(
        &self,
        offset: u64,
        page: &mut [u8],
        access: machvm_addr::VmProt,
    ) -> Result<machvm_vm_object::PageIn, machvm_vm_object::PagerError> {
        let r = self.inner.data_request(offset, page, access);
        if matches!(r, Ok(machvm_vm_object::PageIn::Filled)) {
            self.room.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    fn data_return(
        &self,
        offset: u64,
        page: &[u8],
        kind: machvm_vm_object::PageOutKind,
    ) -> Result<(), machvm_vm_object::PagerError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self
            .room
            .fetch_update(Relaxed, Relaxed, |r| r.checked_sub(1))
            .is_err()
        {
            return Err(machvm_vm_object::PagerError::NoSpace);
        }
        self.inner.data_return(offset, page, kind)
    }

    fn has_page(&self, offset: u64) -> bool {
        self.inner.has_page(offset)
    }
}

impl machvm::AnonymousPager for SmallPagers {
    fn attach(
        &self,
        object: &machvm_vm_object::ObjectRef,
    ) -> Result<(), machvm_vm_object::ObjectError> {
        object.set_pager(Arc::new(SmallPager {
            inner: machvm_vm_object::InMemoryPager::new(),
            room: self.room.clone(),
        }))
    }
}

/// A full pager throttles pages instead of losing or skipping them; they wait on the
/// throttled queue (vm_stat shows them) and go out once it has room again.
#[test]
fn a_full_pager_throttles_pages() {
    let m = SimMachine::<X86Pml4>::new(32, CPUS).expect("machine");
    let room = Arc::new(std::sync::atomic::AtomicU64::new(4));
    m.vm()
        .set_anonymous_pager(Arc::new(SmallPagers { room: room.clone() }));
    let s = m.create_space().unwrap();
    let base = m
        .vm()
        .mmap(s, MapRequest::anonymous(16 * PS))
        .unwrap()
        .as_u64();
    for p in 0..16 {
        m.store(0, s, base + p * PS, p as u8 + 1).unwrap();
    }
    m.vm()
        .set_pageout_targets(PageoutTargets::default().with_free_percent(100));
    let step = m.vm().pageout_step(64);
    assert_eq!(step.paged_out, 4, "{step:?}");
    assert!(step.throttled >= 1, "{step:?}");
    let q = m.vm().queues();
    assert_eq!(q.throttled, step.throttled, "{q:?}");
    let stat = m.vm().vm_stat().to_string();
    assert!(
        stat.contains(&format!("{:<30}{:>20}.", "Pages throttled:", q.throttled)),
        "{stat}"
    );
    // Room again: the throttled pages go out on the next steps.
    room.store(100, std::sync::atomic::Ordering::Relaxed);
    m.vm().pageout_step(64);
    m.vm().pageout_step(64);
    assert_eq!(m.vm().queues().throttled, 0);
    for p in 0..16 {
        assert_eq!(
            m.load(1, s, base + p * PS).unwrap(),
            p as u8 + 1,
            "page {p}"
        );
    }
}
