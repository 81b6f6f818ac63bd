//! Loom models of `machvm-tlb`'s concurrent parts.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=2 cargo test --release -p machvm-tlb --test loom`.
//!
//! Each model has 2-3 threads, each standing for a CPU, and a handful of operations; every
//! shared word goes through `machvm-sync`, so loom explores the real code's interleavings.
//!
//! ASID allocator (`asid.rs`), on a 2-bit ASID space (three user ASIDs) with two CPUs, set up
//! so that the concurrent switches force a rollover:
//!
//! - `concurrent_switches_across_a_rollover_keep_asids_distinct`: two CPUs switch to two
//!   contexts while one of them rolls over; the CPUs end up running distinct ASIDs, contexts in
//!   the current generation have distinct ASIDs, and a context running at the rollover keeps
//!   its ASID.
//! - `a_cpu_racing_a_rollover_flushes_before_a_reused_asid`: one CPU takes the lock-free fast
//!   path while the other rolls over; each CPU keeps a record of which context its TLB may
//!   hold under each ASID, and no CPU loads an ASID that carried another context without
//!   having been told to flush first; the context the racing CPU switched to keeps its ASID.
//! - `three_cpus_switching_during_a_rollover_never_share_an_asid`: the same with three CPUs.
//!
//! Shootdown (`shootdown.rs`, `space.rs`), two CPUs with one-entry TLBs:
//!
//! - `shootdown_leaves_no_stale_translation`: a successful shootdown leaves the target
//!   without the old frame while it keeps translating.
//! - `concurrent_shootdowns_do_not_deadlock`: two CPUs shooting each other both finish.
//! - `lazy_cpu_catches_up_after_a_missed_shootdown`: a CPU switching away from the space and
//!   back during a space shootdown is either interrupted or flushes at its switch-in.
#![cfg(loom)]

extern crate alloc;

use alloc::collections::BTreeMap;

use loom::sync::Arc;
use loom::thread;
use machvm_sync::CpuIndex;
use machvm_sync::atomic::Ordering;
use machvm_sync::model::run_model;
use machvm_tlb::asid::{AsidAllocator, AsidContext};

// ---------------------------------------------------------------------------------------------
// ASID allocator
// ---------------------------------------------------------------------------------------------

/// The allocator and the address spaces of an ASID model.
struct Asids<const CPUS: usize> {
    allocator: AsidAllocator<CPUS>,
    ctxs: Vec<AsidContext>,
}

/// One simulated CPU: its index and a record of the context whose translations its TLB may
/// hold under each ASID (everything it ran since its last flush).
struct Cpu {
    index: CpuIndex,
    tlb: BTreeMap<u16, usize>,
    /// The context it runs and the ASID it loaded for it.
    running: Option<(usize, u16)>,
}

impl Cpu {
    fn new(index: u32) -> Self {
        Self {
            index: CpuIndex::new(index),
            tlb: BTreeMap::new(),
            running: None,
        }
    }

    /// Switches to context `ctx` the way a kernel would: flush if told to, then check that the
    /// TLB holds nothing of another context under the ASID, then load it. Returns the ASID.
    fn switch<const CPUS: usize>(&mut self, asids: &Asids<CPUS>, ctx: usize) -> u16 {
        let s = asids
            .allocator
            .switch_to(self.index, &asids.ctxs[ctx])
            .unwrap();
        if s.needs_flush() {
            self.tlb.clear();
        }
        let asid = s.asid().as_u16();
        assert_ne!(asid, 0, "the kernel ASID was handed out");
        if let Some(&owner) = self.tlb.get(&asid) {
            assert_eq!(
                owner, ctx,
                "cpu {} loads asid {asid} for ctx {ctx} while holding ctx {owner}'s translations",
                self.index
            );
        }
        self.tlb.insert(asid, ctx);
        self.running = Some((ctx, asid));
        asid
    }
}

/// Checks, after all CPUs are joined, that contexts in the current generation have distinct
/// ASIDs, that CPUs running different contexts run different ASIDs, and that each CPU runs its
/// context under the context's current ASID (so invalidations by that ASID reach it).
fn check_distinct<const CPUS: usize>(asids: &Asids<CPUS>, cpus: &[Cpu]) {
    let generation = asids.allocator.generation();
    let mut owners = BTreeMap::new();
    for (i, c) in asids.ctxs.iter().enumerate() {
        if c.generation() == Some(generation) {
            let asid = c.asid().unwrap().as_u16();
            if let Some(other) = owners.insert(asid, i) {
                panic!("ctx {other} and ctx {i} share asid {asid} in generation {generation}");
            }
        }
    }
    let mut running = BTreeMap::new();
    for &(ctx, asid) in cpus.iter().filter_map(|c| c.running.as_ref()) {
        if let Some(other) = running.insert(asid, ctx) {
            assert_eq!(other, ctx, "two contexts run under asid {asid}");
        }
        assert_eq!(
            asids.ctxs[ctx].asid().map(|a| a.as_u16()),
            Some(asid),
            "ctx {ctx} changed asid while running"
        );
    }
}

/// A 2-bit allocator for `CPUS` CPUs and `contexts` address spaces.
fn asids<const CPUS: usize>(bits: u8, contexts: usize) -> Arc<Asids<CPUS>> {
    Arc::new(Asids {
        allocator: AsidAllocator::new(bits).unwrap(),
        ctxs: (0..contexts).map(|_| AsidContext::new()).collect(),
    })
}

#[test]
fn concurrent_switches_across_a_rollover_keep_asids_distinct() {
    run_model(
        "concurrent_switches_across_a_rollover_keep_asids_distinct",
        || {
            let asids = asids::<2>(2, 4);
            // Setup, before the race: CPU 0 uses up generation 1 (contexts 0, 1, 2 get
            // ASIDs 1, 2, 3) and keeps running context 2.
            let mut cpu0 = Cpu::new(0);
            for ctx in 0..3 {
                cpu0.switch(&asids, ctx);
            }
            let cpu1 = Cpu::new(1);

            // CPU 0 switches to the new context 3 (no ASID left: rollover) while CPU 1 switches
            // to context 0 (generation 1, maybe stale by the time it takes the lock).
            let t0 = {
                let asids = Arc::clone(&asids);
                thread::spawn(move || {
                    let mut cpu0 = cpu0;
                    cpu0.switch(&asids, 3);
                    cpu0
                })
            };
            let t1 = {
                let asids = Arc::clone(&asids);
                thread::spawn(move || {
                    let mut cpu1 = cpu1;
                    cpu1.switch(&asids, 0);
                    cpu1
                })
            };
            let mut cpus = [t0.join().unwrap(), t1.join().unwrap()];
            assert!(
                asids.allocator.generation() >= 2,
                "the switches must roll over"
            );
            check_distinct(&asids, &cpus);

            // Both keep running their context: switching again moves each into the current
            // generation under the same ASID (it was reserved if it was running at the
            // rollover), and they stay distinct.
            let before: Vec<_> = cpus.iter().map(|c| c.running).collect();
            for (cpu, running) in cpus.iter_mut().zip(&before) {
                let (ctx, asid) = running.unwrap();
                assert_eq!(
                    cpu.switch(&asids, ctx),
                    asid,
                    "ctx {ctx} changed asid while running"
                );
            }
            let generation = asids.allocator.generation();
            for &(ctx, _) in before.iter().flatten() {
                assert_eq!(asids.ctxs[ctx].generation(), Some(generation));
            }
            check_distinct(&asids, &cpus);
        },
    );
}

#[test]
fn a_cpu_racing_a_rollover_flushes_before_a_reused_asid() {
    run_model(
        "a_cpu_racing_a_rollover_flushes_before_a_reused_asid",
        || {
            let asids = asids::<2>(2, 4);
            // Setup: CPU 1 runs context 0 (ASID 1); CPU 0 ran context 1 (ASID 2) and runs context 2
            // (ASID 3). Generation 1 is full; both CPUs have done their first flush.
            let mut cpu1 = Cpu::new(1);
            cpu1.switch(&asids, 0);
            let mut cpu0 = Cpu::new(0);
            cpu0.switch(&asids, 1);
            cpu0.switch(&asids, 2);

            // CPU 0 switches to the new context 3 (a rollover, after which ASID 1 or 2 can go to
            // context 3) and then back to context 1. Meanwhile CPU 1 switches to context 1 (the
            // lock-free fast path if it wins the race, the slow path after a rollover) and then to
            // context 3: whatever ASIDs the contexts end up with, neither CPU may load one while
            // holding another context's translations under it, and context 1, running on CPU 1
            // during CPU 0's rollover, must keep its ASID.
            let t0 = {
                let asids = Arc::clone(&asids);
                thread::spawn(move || {
                    let mut cpu0 = cpu0;
                    cpu0.switch(&asids, 3);
                    cpu0.switch(&asids, 1);
                    cpu0
                })
            };
            let t1 = {
                let asids = Arc::clone(&asids);
                thread::spawn(move || {
                    let mut cpu1 = cpu1;
                    cpu1.switch(&asids, 1);
                    cpu1.switch(&asids, 3);
                    cpu1
                })
            };
            let cpus = [t0.join().unwrap(), t1.join().unwrap()];
            check_distinct(&asids, &cpus);
        },
    );
}

#[test]
fn three_cpus_switching_during_a_rollover_never_share_an_asid() {
    run_model(
        "three_cpus_switching_during_a_rollover_never_share_an_asid",
        || {
            // 3 CPUs need at least 3 bits: seven user ASIDs.
            let asids = asids::<3>(3, 9);
            // Setup: CPU 0 uses up ASIDs 1..=6 with contexts 0..=5; CPU 1 runs context 6
            // (ASID 7). Generation 1 is full.
            let mut cpu0 = Cpu::new(0);
            for ctx in 0..6 {
                cpu0.switch(&asids, ctx);
            }
            let mut cpu1 = Cpu::new(1);
            cpu1.switch(&asids, 6);
            let cpu2 = Cpu::new(2);

            // Three concurrent switches: two new contexts (at least one rollover) and CPU 1 to
            // context 0, whose ASID may be reused by the new ones.
            let spawn = |mut cpu: Cpu, ctx: usize| {
                let asids = Arc::clone(&asids);
                thread::spawn(move || {
                    cpu.switch(&asids, ctx);
                    cpu
                })
            };
            let handles = [spawn(cpu0, 7), spawn(cpu1, 0), spawn(cpu2, 8)];
            let cpus = handles.map(|h| h.join().unwrap());
            assert!(
                asids.allocator.generation() >= 2,
                "the switches must roll over"
            );
            check_distinct(&asids, &cpus);
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Shootdown models.

/// A one-entry TLB of a simulated CPU: the frame it caches for the one virtual address of the
/// model (0: nothing cached).
#[derive(Debug)]
struct OneEntryTlb {
    cached: machvm_sync::atomic::AtomicU64,
}

impl OneEntryTlb {
    fn new(frame: u64) -> Self {
        Self {
            cached: machvm_sync::atomic::AtomicU64::new(frame),
        }
    }

    /// The CPU uses the translation: a miss refills it from the page table.
    fn translate(&self, page_table: &machvm_sync::atomic::AtomicU64) -> u64 {
        match self.cached.load(Ordering::Acquire) {
            0 => {
                let frame = page_table.load(Ordering::Acquire);
                self.cached.store(frame, Ordering::Release);
                frame
            }
            frame => frame,
        }
    }
}

impl machvm_tlb::TlbOps for OneEntryTlb {
    fn caps(&self) -> machvm_tlb::TlbCaps {
        machvm_tlb::TlbCaps::new(false, false, true, 16)
    }
    fn sync(&self) {}
    fn invalidate_page(&self, _: machvm_tlb::Asid, _: machvm_addr::VirtAddr, _: bool) {
        self.cached.store(0, Ordering::Release);
    }
    fn invalidate_asid(&self, _: machvm_tlb::Asid) {
        self.cached.store(0, Ordering::Release);
    }
    fn invalidate_all(&self) {
        self.cached.store(0, Ordering::Release);
    }
    fn complete(&self) {}
}

/// An IPI: a flag the target polls.
struct FlagIpi(Arc<machvm_sync::atomic::AtomicBool>);

impl machvm_tlb::shootdown::IpiSender for FlagIpi {
    fn send(&self, _target: CpuIndex) {
        self.0.store(true, Ordering::Release);
    }
}

const OLD_FRAME: u64 = 0x1000;
const NEW_FRAME: u64 = 0x2000;

fn one_page() -> machvm_tlb::gather::FlushRecord {
    machvm_tlb::gather::FlushRecord::new(
        machvm_addr::VirtAddr::new(0x4000_0000),
        0x1000,
        machvm_addr::PageSize::Size4KiB,
    )
}

/// CPU 0 remaps the page and shoots CPU 1 down while CPU 1 keeps using the translation and
/// polls for IPIs: whenever the shootdown reports success, CPU 1 can no longer translate to
/// the old frame.
#[test]
fn shootdown_leaves_no_stale_translation() {
    run_model("shootdown_leaves_no_stale_translation", || {
        use machvm_tlb::shootdown::{CpuMask, Shootdown};
        let engine = Arc::new(Shootdown::<2>::new(2));
        let page_table = Arc::new(machvm_sync::atomic::AtomicU64::new(OLD_FRAME));
        let tlb1 = Arc::new(OneEntryTlb::new(OLD_FRAME));
        let ipi = Arc::new(machvm_sync::atomic::AtomicBool::new(false));

        let cpu1 = {
            let (engine, page_table, tlb1, ipi) = (
                Arc::clone(&engine),
                Arc::clone(&page_table),
                Arc::clone(&tlb1),
                Arc::clone(&ipi),
            );
            thread::spawn(move || {
                for _ in 0..2 {
                    if ipi.swap(false, Ordering::AcqRel) {
                        engine.handle(CpuIndex::new(1), &*tlb1).unwrap();
                    }
                    tlb1.translate(&page_table);
                    thread::yield_now();
                }
            })
        };

        let tlb0 = OneEntryTlb::new(OLD_FRAME);
        page_table.store(NEW_FRAME, Ordering::Release);
        let result = engine.shootdown(
            CpuIndex::new(0),
            CpuMask::from_bits(0b11),
            machvm_tlb::Asid::new(1),
            one_page(),
            &tlb0,
            &FlagIpi(Arc::clone(&ipi)),
        );
        if result.is_ok() {
            assert_ne!(
                tlb1.translate(&page_table),
                OLD_FRAME,
                "CPU 1 kept the old frame"
            );
        }
        assert_ne!(
            tlb0.translate(&page_table),
            OLD_FRAME,
            "CPU 0 kept the old frame"
        );
        cpu1.join().unwrap();
    });
}

/// Two CPUs shoot each other down at the same time: neither deadlocks (each serves its own
/// mailbox while it waits), and each success leaves the other CPU without the old frame.
#[test]
fn concurrent_shootdowns_do_not_deadlock() {
    run_model("concurrent_shootdowns_do_not_deadlock", || {
        use machvm_tlb::shootdown::{CpuMask, Shootdown};
        let engine = Arc::new(Shootdown::<2>::new(2));
        let page_table = Arc::new(machvm_sync::atomic::AtomicU64::new(OLD_FRAME));
        let tlbs = Arc::new([OneEntryTlb::new(OLD_FRAME), OneEntryTlb::new(OLD_FRAME)]);
        let ipis = Arc::new([
            machvm_sync::atomic::AtomicBool::new(false),
            machvm_sync::atomic::AtomicBool::new(false),
        ]);
        page_table.store(NEW_FRAME, Ordering::Release);

        let run = |me: usize| {
            let (engine, tlbs, ipis) = (Arc::clone(&engine), Arc::clone(&tlbs), Arc::clone(&ipis));
            move || {
                let other = 1 - me;
                struct Ipi(Arc<[machvm_sync::atomic::AtomicBool; 2]>, usize);
                impl machvm_tlb::shootdown::IpiSender for Ipi {
                    fn send(&self, _target: CpuIndex) {
                        self.0[self.1].store(true, Ordering::Release);
                    }
                }
                let result = engine.shootdown(
                    CpuIndex::new(me as u32),
                    CpuMask::from_bits(0b11),
                    machvm_tlb::Asid::new(1),
                    one_page(),
                    &tlbs[me],
                    &Ipi(Arc::clone(&ipis), other),
                );
                // Serve what the other CPU asked for, then report.
                if ipis[me].swap(false, Ordering::AcqRel) {
                    engine.handle(CpuIndex::new(me as u32), &tlbs[me]).unwrap();
                }
                result
            }
        };
        let t = thread::spawn(run(1));
        let r0 = run(0)();
        let r1 = t.join().unwrap();
        if r0.is_ok() {
            assert_ne!(tlbs[1].cached.load(Ordering::Acquire), OLD_FRAME);
        }
        if r1.is_ok() {
            assert_ne!(tlbs[0].cached.load(Ordering::Acquire), OLD_FRAME);
        }
    });
}

/// CPU 0 remaps the page and shoots the address space down while CPU 1 switches away from the
/// space and back: either CPU 0 sees CPU 1 running and interrupts it, or CPU 1 sees the new
/// flush generation and flushes the space's ASID at its switch-in. After a successful
/// shootdown CPU 1 never translates to the old frame, and once its mailbox is served it never
/// does whatever the outcome.
#[test]
fn lazy_cpu_catches_up_after_a_missed_shootdown() {
    run_model("lazy_cpu_catches_up_after_a_missed_shootdown", || {
        use machvm_tlb::SpaceCpus;
        use machvm_tlb::shootdown::Shootdown;
        let engine = Arc::new(Shootdown::<2>::new(2));
        let space = Arc::new(SpaceCpus::<2>::new());
        let page_table = Arc::new(machvm_sync::atomic::AtomicU64::new(OLD_FRAME));
        let tlb1 = Arc::new(OneEntryTlb::new(OLD_FRAME));
        let ipi = Arc::new(machvm_sync::atomic::AtomicBool::new(false));
        let asid = machvm_tlb::Asid::new(1);
        let (cpu0, cpu1) = (CpuIndex::new(0), CpuIndex::new(1));
        // Both CPUs ran the space and cached the old frame.
        assert!(!space.switch_in(cpu0).unwrap().is_needed());
        assert!(!space.switch_in(cpu1).unwrap().is_needed());

        let other = {
            let (engine, space, page_table, tlb1, ipi) = (
                Arc::clone(&engine),
                Arc::clone(&space),
                Arc::clone(&page_table),
                Arc::clone(&tlb1),
                Arc::clone(&ipi),
            );
            thread::spawn(move || {
                let serve = || {
                    if ipi.swap(false, Ordering::AcqRel) {
                        engine.handle(cpu1, &*tlb1).unwrap();
                    }
                };
                space.switch_out(cpu1).unwrap();
                serve();
                space.switch_in(cpu1).unwrap().apply(asid, &*tlb1);
                serve();
                tlb1.translate(&page_table);
            })
        };

        let tlb0 = OneEntryTlb::new(OLD_FRAME);
        page_table.store(NEW_FRAME, Ordering::Release);
        let result = engine.shootdown_space(
            cpu0,
            &space,
            asid,
            one_page(),
            &tlb0,
            &FlagIpi(Arc::clone(&ipi)),
        );
        assert_ne!(
            tlb0.translate(&page_table),
            OLD_FRAME,
            "CPU 0 kept the old frame"
        );
        other.join().unwrap();
        if result.is_ok() {
            assert_ne!(
                tlb1.translate(&page_table),
                OLD_FRAME,
                "CPU 1 kept the old frame"
            );
        }
        engine.handle(cpu1, &*tlb1).unwrap();
        assert_ne!(
            tlb1.translate(&page_table),
            OLD_FRAME,
            "CPU 1 kept the old frame after serving its mailbox"
        );
    });
}
