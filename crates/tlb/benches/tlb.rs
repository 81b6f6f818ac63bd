//! TLB benchmarks: shootdown round trips between two host threads, flush batching, and the
//! ASID switch fast path.
//!
//! No anchor crate ships a shootdown engine or an ASID allocator (see the crate README), so
//! the comparisons are with the baselines kernels write without one:
//!
//! - `tlb/shootdown_round_trip`: `machvm` (the `Shootdown` engine, one page) against `naive`
//!   (ask the other CPU to flush everything and flush everything locally). Each CPU has a
//!   1536-page working set in a model TLB whose misses walk a real machvm page table; one
//!   iteration is the shootdown plus both CPUs back to a full TLB, so the cost of flushing too
//!   much is counted.
//! - `tlb/unmap_64_pages`: 64 single-page unmaps flushed as they happen (`unbatched`) or
//!   gathered and flushed once (`machvm`), through a TLB model that counts operations; the
//!   operation counts go to the summary's `extra`.
//! - `tlb/asid_switch`: the allocator's context switch between two address spaces whose
//!   ASIDs are current (the lock-free fast path).
//! - `tlb/space_switch`: the same switch plus the lazy CPU tracking a kernel does with it
//!   (`SpaceCpus::switch_out` of the old space, `switch_in` of the new one and its catch-up
//!   check): the whole TLB bookkeeping of a context switch.
//!
//! Throughput is `Elements(1)` per shootdown or switch and `Elements(64)` per unmap batch.

// A host benchmark binary: std is the natural choice.
#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

use core::hint::black_box;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{NoFlush, PageAttrs, PageTable, Region, X86Pml4};
use machvm_sync::CpuIndex;
use machvm_tlb::gather::{FlushGather, FlushRecord};
use machvm_tlb::shootdown::{CpuMask, IpiSender, Shootdown};
use machvm_tlb::{Asid, AsidAllocator, AsidContext, SpaceCpus, TlbCaps, TlbOps};

/// Pages in each CPU's working set: the size of a second-level TLB (1536 entries on recent
/// Intel cores), so a full flush costs what it costs a busy CPU.
const WORKING_SET: u64 = 1536;
/// Pages of the unmap batch.
const UNMAP_PAGES: u64 = 64;
/// First address of the working set.
const BASE: u64 = 0x4000_0000;

/// Appends `extra` figures for a result to the file xtask names (if it does).
fn record_extra(case: &str, imp: &str, extra: &str) {
    if let Ok(path) = std::env::var("MACHVM_BENCH_EXTRA") {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
            let _ = writeln!(
                f,
                r#"{{"suite": "tlb", "case": "{case}", "impl": "{imp}", "extra": {extra}}}"#
            );
        }
    }
}

/// A page table mapping the working set, shared by both CPUs' walks.
struct Walker {
    _sim: &'static SimPhysMemory,
    pt: PageTable<X86Pml4, &'static SimPhysMemory>,
}

impl Walker {
    fn new() -> Self {
        let sim: &'static SimPhysMemory = Box::leak(Box::new(
            SimPhysMemory::builder()
                .size_bytes(1 << 20)
                .build()
                .expect("simulated memory"),
        ));
        let mut alloc = sim.frame_allocator();
        let mut pt = PageTable::new(Region::Both, sim, &mut alloc).expect("table");
        let attrs = PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true);
        let done = pt
            .map_range(
                VirtAddr::new(BASE),
                PhysAddr::new(0x1000_0000),
                WORKING_SET * 0x1000,
                &attrs,
                PageSize::Size4KiB,
                &mut alloc,
            )
            .expect("map");
        pt.finish(done, &mut NoFlush, &mut alloc).expect("finish");
        Self { _sim: sim, pt }
    }

    fn walk(&self, page: u64) -> u64 {
        self.pt
            .translate(VirtAddr::new(BASE + page * 0x1000))
            .map_or(0, |t| t.pa.as_u64())
    }
}

/// A CPU's TLB over the working set: cached frame per page (0 = not cached). Misses walk.
struct ModelTlb {
    entries: Vec<AtomicU64>,
    invalidations: AtomicU64,
}

impl ModelTlb {
    fn new() -> Self {
        Self {
            entries: (0..WORKING_SET).map(|_| AtomicU64::new(0)).collect(),
            invalidations: AtomicU64::new(0),
        }
    }

    /// Touches every page of the working set, walking the table on misses.
    fn touch_all(&self, walker: &Walker) -> u64 {
        let mut sum = 0;
        for (page, e) in self.entries.iter().enumerate() {
            let mut pa = e.load(Ordering::Relaxed);
            if pa == 0 {
                pa = walker.walk(page as u64);
                e.store(pa, Ordering::Relaxed);
            }
            sum += pa;
        }
        sum
    }

    fn clear_all(&self) {
        for e in &self.entries {
            e.store(0, Ordering::Relaxed);
        }
    }
}

impl TlbOps for ModelTlb {
    fn caps(&self) -> TlbCaps {
        TlbCaps::new(false, false, true, 12)
    }
    fn sync(&self) {}
    fn invalidate_page(&self, _asid: Asid, va: VirtAddr, _leaf_only: bool) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        let page = va.as_u64().wrapping_sub(BASE) / 0x1000;
        if let Some(e) = self.entries.get(page as usize) {
            e.store(0, Ordering::Relaxed);
        }
    }
    fn invalidate_asid(&self, _asid: Asid) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        self.clear_all();
    }
    fn invalidate_all(&self) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        self.clear_all();
    }
    fn complete(&self) {}
}

/// The IPI of the round-trip case: a flag CPU 1 polls.
struct FlagIpi<'a>(&'a AtomicBool);

impl IpiSender for FlagIpi<'_> {
    fn send(&self, _target: CpuIndex) {
        self.0.store(true, Ordering::Release);
    }
}

/// State shared with the responder thread (CPU 1).
struct Responder {
    engine: Shootdown<2>,
    walker: Walker,
    tlb: ModelTlb,
    /// machvm IPI.
    ipi: AtomicBool,
    /// Naive requests posted / served.
    naive_posted: AtomicU64,
    naive_served: AtomicU64,
    /// Working-set refills completed.
    refilled: AtomicU64,
    stop: AtomicBool,
}

fn responder_loop(r: &Responder) {
    let mut naive_seen = 0;
    while !r.stop.load(Ordering::Acquire) {
        let mut flushed = false;
        if r.ipi.swap(false, Ordering::AcqRel) {
            r.engine.handle(CpuIndex::new(1), &r.tlb).expect("handle");
            flushed = true;
        }
        let posted = r.naive_posted.load(Ordering::Acquire);
        if posted != naive_seen {
            r.tlb.invalidate_all();
            naive_seen = posted;
            r.naive_served.store(posted, Ordering::Release);
            flushed = true;
        }
        if flushed {
            black_box(r.tlb.touch_all(&r.walker));
            r.refilled.fetch_add(1, Ordering::AcqRel);
        }
        core::hint::spin_loop();
    }
}

fn wait_refilled(r: &Responder, want: u64) {
    while r.refilled.load(Ordering::Acquire) < want {
        core::hint::spin_loop();
    }
}

fn shootdown_round_trip(c: &mut Criterion) {
    let r = Arc::new(Responder {
        engine: Shootdown::new(1 << 30),
        walker: Walker::new(),
        tlb: ModelTlb::new(),
        ipi: AtomicBool::new(false),
        naive_posted: AtomicU64::new(0),
        naive_served: AtomicU64::new(0),
        refilled: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let thread = {
        let r = Arc::clone(&r);
        thread::spawn(move || responder_loop(&r))
    };
    let local = ModelTlb::new();
    local.touch_all(&r.walker);
    r.tlb.touch_all(&r.walker);
    let record = FlushRecord::new(VirtAddr::new(BASE + 5 * 0x1000), 0x1000, PageSize::Size4KiB);

    let mut group = c.benchmark_group("tlb/shootdown_round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("machvm", |b| {
        b.iter(|| {
            let want = r.refilled.load(Ordering::Acquire) + 1;
            r.engine
                .shootdown(
                    CpuIndex::new(0),
                    CpuMask::from_bits(0b11),
                    Asid::new(1),
                    record,
                    &local,
                    &FlagIpi(&r.ipi),
                )
                .expect("shootdown");
            black_box(local.touch_all(&r.walker));
            wait_refilled(&r, want);
        });
    });
    group.bench_function("naive", |b| {
        b.iter(|| {
            let want = r.refilled.load(Ordering::Acquire) + 1;
            let ticket = r.naive_posted.fetch_add(1, Ordering::AcqRel) + 1;
            local.invalidate_all();
            while r.naive_served.load(Ordering::Acquire) < ticket {
                core::hint::spin_loop();
            }
            black_box(local.touch_all(&r.walker));
            wait_refilled(&r, want);
        });
    });
    group.finish();
    r.stop.store(true, Ordering::Release);
    thread.join().expect("responder");
}

fn unmap_64_pages(c: &mut Criterion) {
    let mut group = c.benchmark_group("tlb/unmap_64_pages");
    group.throughput(Throughput::Elements(UNMAP_PAGES));
    let records: Vec<FlushRecord> = (0..UNMAP_PAGES)
        .map(|p| FlushRecord::new(VirtAddr::new(BASE + p * 0x1000), 0x1000, PageSize::Size4KiB))
        .collect();
    let tlb = ModelTlb::new();
    group.bench_function("machvm", |b| {
        b.iter(|| {
            let mut gather = FlushGather::new(Asid::new(1));
            for r in &records {
                gather.add(*r);
            }
            black_box(gather.flush(&tlb))
        });
    });
    group.bench_function("unbatched", |b| {
        b.iter(|| {
            for r in &records {
                let mut gather = FlushGather::new(Asid::new(1));
                gather.add(*r);
                black_box(gather.flush(&tlb));
            }
        });
    });
    group.finish();
    // Operation counts of one batch each way (not timed).
    let mut gather = FlushGather::new(Asid::new(1));
    for r in &records {
        gather.add(*r);
    }
    let batched = gather.flush(&tlb);
    let mut unbatched = 0;
    for r in &records {
        let mut g = FlushGather::new(Asid::new(1));
        g.add(*r);
        unbatched += g.flush(&tlb).operations();
    }
    record_extra(
        "unmap_64_pages",
        "machvm",
        &format!(
            r#"{{"flush_operations": {}, "flushes": 1}}"#,
            batched.operations()
        ),
    );
    record_extra(
        "unmap_64_pages",
        "unbatched",
        &format!(r#"{{"flush_operations": {unbatched}, "flushes": {UNMAP_PAGES}}}"#),
    );
}

fn asid_switch(c: &mut Criterion) {
    let allocator = AsidAllocator::<2>::new(16).expect("allocator");
    let contexts = [AsidContext::new(), AsidContext::new()];
    let cpu = CpuIndex::new(0);
    // First switches take the slow path and give both contexts an ASID.
    for ctx in &contexts {
        let _ = allocator.switch_to(cpu, ctx).expect("switch");
    }
    let mut group = c.benchmark_group("tlb/asid_switch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("machvm", |b| {
        let mut i = 0;
        b.iter(|| {
            i ^= 1;
            black_box(allocator.switch_to(cpu, &contexts[i]).expect("switch"))
        });
    });
    group.finish();
}

fn space_switch(c: &mut Criterion) {
    let allocator = AsidAllocator::<2>::new(16).expect("allocator");
    let contexts = [AsidContext::new(), AsidContext::new()];
    let spaces = [SpaceCpus::<2>::new(), SpaceCpus::<2>::new()];
    let cpu = CpuIndex::new(0);
    for ctx in &contexts {
        let _ = allocator.switch_to(cpu, ctx).expect("switch");
    }
    let _ = spaces[0].switch_in(cpu).expect("switch in");
    let mut group = c.benchmark_group("tlb/space_switch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("machvm", |b| {
        let mut i = 0;
        b.iter(|| {
            spaces[i].switch_out(cpu).expect("switch out");
            i ^= 1;
            let switch = allocator.switch_to(cpu, &contexts[i]).expect("switch");
            let catch_up = spaces[i].switch_in(cpu).expect("switch in");
            black_box((switch, catch_up.is_needed()))
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    shootdown_round_trip,
    unmap_64_pages,
    asid_switch,
    space_switch
);
criterion_main!(benches);
