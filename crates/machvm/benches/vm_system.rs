//! `VmSystem` benchmarks on the machine simulator (`machvm::sim`: real page tables on
//! simulated memory, software-TLB CPUs). No anchor crate has a VM system to compare with;
//! the figures are per operation, with rates in the summary's `extra`.
//!
//! - `machvm/zero_fill_fault`: a store to an untouched anonymous page (TLB miss, walk,
//!   fault, zero fill, page-table entry, frame-table records), per page.
//! - `machvm/cow_fault`: a store in a forked child to a page the parent wrote (copy on
//!   write), per page.
//! - `machvm/pagein_fault`: a load of a page the pageout daemon evicted to the in-memory
//!   pager (fault, page-in, mapping), per page.
//! - `machvm/tlb_hit_load`: a load whose translation is cached (the simulator's cost floor).
//! - `machvm/pageout_per_page`: the pageout daemon's cost per page it evicts (aging, reference
//!   check, disconnecting the translation with its flush, page-out to the pager).
//! - `machvm/overcommit_4x`: a workload touching 4× more pages than there are frames, pages
//!   per second end to end (faults, reclaim inside faults, page-ins) with an in-memory pager;
//!   `extra` has the page-outs and page-ins.
//! - `machvm/overcommit_compressed_4x`: the same through the compressor (4 segments of 64 KiB
//!   in core) and an encrypted swap; `extra` has the split: pages compressed / decompressed
//!   and segments swapped out / in.

#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core,
    missing_docs
)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use machvm::compressed::CompressedMemory;
use machvm::sim::SimMachine;
use machvm::{AnonymousPager, PageoutTargets, SpaceId};
use machvm_compressor::codec::{Hybrid, PageSize as CPageSize, VectorPolicy};
use machvm_compressor::pool::{PoolConfig, SegmentSize};
use machvm_page_table::X86Pml4;
use machvm_pager::{DefaultPager, FixedKey, MemorySwapBacking, Swap, SwapConfig};
use machvm_vm_map::MapRequest;
use machvm_vm_object::{InMemoryPager, ObjectError, ObjectRef};

const PS: u64 = 4096;
/// Pages per timed batch.
const BATCH: u64 = 1024;

/// Appends `extra` figures for a result to the file xtask names (if it does).
fn record_extra(case: &str, extra: &str) {
    if let Ok(path) = std::env::var("MACHVM_BENCH_EXTRA") {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
            let _ = writeln!(
                f,
                r#"{{"suite": "machvm", "case": "{case}", "impl": "machvm", "extra": {extra}}}"#
            );
        }
    }
}

struct MemPagers;

impl AnonymousPager for MemPagers {
    fn attach(&self, object: &ObjectRef) -> Result<(), ObjectError> {
        object.set_pager(Arc::new(InMemoryPager::new()))
    }
}

fn machine(frames: u32) -> SimMachine<X86Pml4> {
    let m = SimMachine::<X86Pml4>::new(frames, 2).expect("machine");
    m.vm().set_anonymous_pager(Arc::new(MemPagers));
    m
}

fn mapped(m: &SimMachine<X86Pml4>, pages: u64) -> (SpaceId, u64) {
    let s = m.create_space().expect("space");
    let base = m
        .vm()
        .mmap(s, MapRequest::anonymous(pages * PS))
        .expect("mmap")
        .as_u64();
    (s, base)
}

/// Runs `batch` (returning the time of its measured part) until `iters` pages are done.
fn per_page(iters: u64, mut batch: impl FnMut() -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        total += batch();
        done += BATCH;
    }
    total.mul_f64(iters as f64 / done as f64)
}

/// The group of one case (`machvm/<case>`), counting `elements` per iteration.
fn group<'a>(c: &'a mut Criterion, case: &str, elements: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(format!("machvm/{case}"));
    g.throughput(Throughput::Elements(elements));
    g
}

fn faults(c: &mut Criterion) {
    group(c, "zero_fill_fault", 1).bench_function("machvm", |b| {
        b.iter_custom(|iters| {
            per_page(iters, || {
                let m = machine(BATCH as u32 + 64);
                let (s, base) = mapped(&m, BATCH);
                let t = Instant::now();
                for p in 0..BATCH {
                    m.store(0, s, base + p * PS, 1).expect("store");
                }
                t.elapsed()
            })
        });
    });

    group(c, "cow_fault", 1).bench_function("machvm", |b| {
        b.iter_custom(|iters| {
            per_page(iters, || {
                let m = machine(2 * BATCH as u32 + 64);
                let (s, base) = mapped(&m, BATCH);
                for p in 0..BATCH {
                    m.store(0, s, base + p * PS, 1).expect("store");
                }
                let child = m.fork(s).expect("fork");
                let t = Instant::now();
                for p in 0..BATCH {
                    m.store(1, child, base + p * PS, 2).expect("store");
                }
                t.elapsed()
            })
        });
    });

    group(c, "pagein_fault", 1).bench_function("machvm", |b| {
        b.iter_custom(|iters| {
            per_page(iters, || {
                let m = machine(BATCH as u32 + 64);
                let (s, base) = mapped(&m, BATCH);
                for p in 0..BATCH {
                    m.store(0, s, base + p * PS, 1).expect("store");
                }
                m.vm()
                    .set_pageout_targets(PageoutTargets::default().with_free_percent(100));
                m.vm().pageout_step(4 * BATCH);
                let t = Instant::now();
                for p in 0..BATCH {
                    m.load(0, s, base + p * PS).expect("load");
                }
                t.elapsed()
            })
        });
    });

    group(c, "tlb_hit_load", 1).bench_function("machvm", |b| {
        let m = machine(64);
        let (s, base) = mapped(&m, 8);
        for p in 0..8 {
            m.store(0, s, base + p * PS, 1).expect("store");
        }
        let mut p = 0;
        b.iter(|| {
            p = (p + 1) % 8;
            m.load(0, s, base + p * PS).expect("load")
        });
    });

    group(c, "pageout_per_page", 1).bench_function("machvm", |b| {
        b.iter_custom(|iters| {
            per_page(iters, || {
                let m = machine(BATCH as u32 + 64);
                let (s, base) = mapped(&m, BATCH);
                for p in 0..BATCH {
                    m.store(0, s, base + p * PS, 1).expect("store");
                }
                m.vm()
                    .set_pageout_targets(PageoutTargets::default().with_free_percent(100));
                let t = Instant::now();
                let step = m.vm().pageout_step(4 * BATCH);
                let e = t.elapsed();
                assert!(step.paged_out >= BATCH - 64, "{step:?}");
                e
            })
        });
    });

    // Over-commit: 4 × 256 pages touched round-robin in 256 frames.
    let frames = 256u32;
    let pages = 4 * u64::from(frames);
    let mut last = (0u64, 0u64, 0u64);
    group(c, "overcommit_4x", pages).bench_function("machvm", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = machine(frames);
                let (s, base) = mapped(&m, pages);
                let t = Instant::now();
                for round in 0..2u64 {
                    for p in 0..pages {
                        m.store((p % 2) as usize, s, base + p * PS, round as u8)
                            .expect("store");
                    }
                }
                total += t.elapsed();
                let c = m.vm().counters();
                last = (c.pageouts, c.pageins, c.faults);
            }
            total
        });
    });
    // The same workload with the compressor and an encrypted swap as the anonymous pager:
    // pages per second, and where the evicted pages went.
    let mut split = (0u64, 0u64, 0u64, 0u64);
    group(c, "overcommit_compressed_4x", pages).bench_function("machvm", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut config = PoolConfig::new(SegmentSize::K64);
                config.max_in_core_segments = 4;
                let mut keys = FixedKey::new(core::array::from_fn(|i| (i as u8) ^ 0xa5));
                let swap = Swap::new(
                    MemorySwapBacking::new(),
                    SwapConfig::new(SegmentSize::K64),
                    &mut keys,
                )
                .expect("swap");
                let codec = Hybrid::new(CPageSize::Size4K, VectorPolicy::Portable);
                let pager = DefaultPager::new(config, codec, Some(Arc::new(swap))).expect("pager");
                let m = SimMachine::<X86Pml4>::new(frames, 2).expect("machine");
                m.vm()
                    .set_anonymous_pager(Arc::new(CompressedMemory(pager)));
                let (s, base) = mapped(&m, pages);
                let t = Instant::now();
                for round in 0..2u64 {
                    for p in 0..pages {
                        for i in (0..PS).step_by(256) {
                            let v = ((p.wrapping_mul(0x9e37_79b9)
                                ^ (i + round).wrapping_mul(0x85eb_ca6b))
                                >> 7) as u8;
                            m.store((p % 2) as usize, s, base + p * PS + i, v)
                                .expect("store");
                        }
                    }
                }
                total += t.elapsed();
                let st = m.vm().pager_stats();
                split = (st.compressions, st.decompressions, st.swapouts, st.swapins);
            }
            total
        });
    });
    record_extra(
        "overcommit_compressed_4x",
        &format!(
            r#"{{"frames": {frames}, "pages": {pages}, "compressions": {}, "decompressions": {}, "segment_swapouts": {}, "segment_swapins": {}, "pager": "compressor+encrypted-swap"}}"#,
            split.0, split.1, split.2, split.3
        ),
    );
    record_extra(
        "overcommit_4x",
        &format!(
            r#"{{"frames": {frames}, "pages": {pages}, "pageouts": {}, "pageins": {}, "faults": {}, "pager": "in-memory"}}"#,
            last.0, last.1, last.2
        ),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3)).sample_size(10);
    targets = faults
}
criterion_main!(benches);
