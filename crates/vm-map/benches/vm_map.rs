//! Address-map benchmarks on the host harness (`SimPageMemory` + `SoftPmap`).
//!
//! No anchor crate has Mach address maps (see the crate README), so only `lookup_10k` has a
//! comparison: `linear_scan`, the sorted-vector walk of a simple VMA list.
//!
//! - `vm-map/zero_fill_fault`: one write fault on an untouched anonymous page (zero fill and
//!   the translation), per page.
//! - `vm-map/cow_fault`: one write fault in a forked child on a page the parent wrote (a
//!   shadow-object copy on write), per page.
//! - `vm-map/fork_1g_10pct`: fork of a 1 GiB map (1024 entries of 1 MiB) with every tenth
//!   page touched (26,214 resident pages write-protected in the parent's pmap).
//! - `vm-map/lookup_10k`: finding the entry of an address in a map of 10,000 entries.
//!
//! Fault rates (faults per second) go to the summary's `extra`.
//!
//! Frames come from a pool carved out of one `SimPhysMemory` up front (`PooledMemory`, a
//! free list, as a kernel's page allocator would be), so the figures measure the map and
//! object layers rather than the simulator's first-fit frame search.

// A host benchmark binary: std is the natural choice.
#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core,
    missing_docs
)]

use core::hint::black_box;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use machvm_addr::{FrameRequest, PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_vm_map::{MapRequest, SoftPmap, VmMap};
use machvm_vm_object::{ObjectError, PageMemory};

const PS: u64 = 4096;
const BASE: u64 = 0x1_0000_0000;
/// Pages faulted per timed batch.
const BATCH: u64 = 4096;

/// Appends `extra` figures for a result to the file xtask names (if it does).
fn record_extra(case: &str, imp: &str, extra: &str) {
    if let Ok(path) = std::env::var("MACHVM_BENCH_EXTRA") {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
            let _ = writeln!(
                f,
                r#"{{"suite": "vm-map", "case": "{case}", "impl": "{imp}", "extra": {extra}}}"#
            );
        }
    }
}

/// Page memory over a `SimPhysMemory` whose frames are all taken once and recycled through a
/// free list.
#[derive(Debug)]
struct PooledMemory {
    phys: SimPhysMemory,
    free: Mutex<Vec<PhysAddr>>,
}

const ZERO: [u8; PS as usize] = [0; PS as usize];

impl PageMemory for PooledMemory {
    fn page_size(&self) -> u64 {
        PS
    }
    fn alloc_page(&self) -> Result<PhysAddr, ObjectError> {
        self.free.lock().unwrap().pop().ok_or(ObjectError::NoMemory)
    }
    fn free_page(&self, frame: PhysAddr) {
        self.free.lock().unwrap().push(frame);
    }
    fn with_page(&self, frame: PhysAddr, f: &mut dyn FnMut(&mut [u8])) {
        let mut buf = [0u8; PS as usize];
        self.phys.read_bytes(frame, &mut buf).expect("read");
        f(&mut buf);
        self.phys.write_bytes(frame, &buf).expect("write");
    }
    fn zero_page(&self, frame: PhysAddr) {
        self.phys.write_bytes(frame, &ZERO).expect("zero");
    }
    fn copy_page(&self, src: PhysAddr, dst: PhysAddr) {
        let mut buf = [0u8; PS as usize];
        self.phys.read_bytes(src, &mut buf).expect("read");
        self.phys.write_bytes(dst, &buf).expect("write");
    }
}

fn memory(bytes: u64) -> Arc<PooledMemory> {
    let phys = SimPhysMemory::builder()
        .size_bytes(bytes)
        .zero_on_alloc(false)
        .build()
        .expect("simulated memory");
    let mut free = Vec::new();
    while let Ok(frame) = phys.allocate(FrameRequest::single(PageSize::Size4KiB)) {
        free.push(frame);
    }
    free.reverse();
    Arc::new(PooledMemory {
        phys,
        free: Mutex::new(free),
    })
}

fn new_map(mem: &Arc<PooledMemory>) -> VmMap<SoftPmap> {
    VmMap::new(
        PageSize::Size4KiB,
        VirtAddr::new(BASE),
        VirtAddr::new(BASE << 4),
        mem.clone(),
        SoftPmap::new(PS),
    )
    .expect("map")
}

/// Runs `iters` timed faults in batches of [`BATCH`], with `setup` (untimed) preparing a map
/// and the first address of a batch; returns the time of the faults alone.
fn time_faults(
    iters: u64,
    mut setup: impl FnMut() -> (VmMap<SoftPmap>, Option<VmMap<SoftPmap>>, u64),
    total: &mut (Duration, u64),
) -> Duration {
    let mut spent = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        let (mut map, keep, at) = setup();
        let t = Instant::now();
        for i in 0..n {
            black_box(
                map.fault(VirtAddr::new(at + i * PS), VmProt::WRITE)
                    .expect("fault"),
            );
        }
        let d = t.elapsed();
        spent += d;
        total.0 += d;
        total.1 += n;
        drop(keep);
        drop(map);
        left -= n;
    }
    spent
}

fn faults_per_s(total: (Duration, u64)) -> f64 {
    total.1 as f64 / total.0.as_secs_f64().max(1e-12)
}

fn zero_fill_fault(c: &mut Criterion) {
    let mem = memory((BATCH + 64) * PS);
    let mut total = (Duration::ZERO, 0);
    let mut g = c.benchmark_group("vm-map/zero_fill_fault");
    g.throughput(Throughput::Elements(1));
    g.bench_function("machvm", |b| {
        b.iter_custom(|iters| {
            time_faults(
                iters,
                || {
                    let mut map = new_map(&mem);
                    let at = map
                        .enter(MapRequest::anonymous(BATCH * PS))
                        .expect("enter")
                        .as_u64();
                    (map, None, at)
                },
                &mut total,
            )
        });
    });
    g.finish();
    record_extra(
        "zero_fill_fault",
        "machvm",
        &format!(r#"{{"faults_per_s": {:.0}}}"#, faults_per_s(total)),
    );
}

fn cow_fault(c: &mut Criterion) {
    let mem = memory((2 * BATCH + 64) * PS);
    let mut total = (Duration::ZERO, 0);
    let mut g = c.benchmark_group("vm-map/cow_fault");
    g.throughput(Throughput::Elements(1));
    g.bench_function("machvm", |b| {
        b.iter_custom(|iters| {
            time_faults(
                iters,
                || {
                    let mut parent = new_map(&mem);
                    let at = parent
                        .enter(MapRequest::anonymous(BATCH * PS))
                        .expect("enter")
                        .as_u64();
                    for i in 0..BATCH {
                        parent
                            .fault(VirtAddr::new(at + i * PS), VmProt::WRITE)
                            .expect("fault");
                    }
                    let child = parent.fork(SoftPmap::new(PS)).expect("fork");
                    // Time the child's copies; the parent stays alive so they are real copies.
                    (child, Some(parent), at)
                },
                &mut total,
            )
        });
    });
    g.finish();
    record_extra(
        "cow_fault",
        "machvm",
        &format!(r#"{{"faults_per_s": {:.0}}}"#, faults_per_s(total)),
    );
}

fn fork_1g_10pct(c: &mut Criterion) {
    const MAP: u64 = 1 << 30;
    const ENTRY: u64 = 1 << 20;
    let pages = MAP / PS;
    let touched = pages / 10;
    let mem = memory((touched + 1024) * PS);
    let mut parent = new_map(&mem);
    let mut starts = Vec::new();
    for _ in 0..MAP / ENTRY {
        starts.push(
            parent
                .enter(MapRequest::anonymous(ENTRY))
                .expect("enter")
                .as_u64(),
        );
    }
    for i in 0..touched {
        parent
            .fault(VirtAddr::new(BASE + i * 10 * PS), VmProt::WRITE)
            .expect("fault");
    }
    let mut g = c.benchmark_group("vm-map/fork_1g_10pct");
    g.sample_size(10);
    g.bench_function("machvm", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let child = parent.fork(SoftPmap::new(PS)).expect("fork");
                spent += t.elapsed();
                drop(child);
                // The child is gone: one write per entry takes each object back without a
                // copy (sole reference), so the next fork starts from the same state.
                for &s in &starts {
                    parent
                        .fault(VirtAddr::new(s), VmProt::WRITE)
                        .expect("fault");
                }
            }
            spent
        });
    });
    g.finish();
    record_extra(
        "fork_1g_10pct",
        "machvm",
        &format!(
            r#"{{"entries": {}, "resident_pages": {touched}}}"#,
            MAP / ENTRY
        ),
    );
}

fn lookup_10k(c: &mut Criterion) {
    const N: u64 = 10_000;
    let mem = memory(64 * PS);
    let mut map = new_map(&mem);
    let mut vma: Vec<(u64, u64)> = Vec::new();
    for i in 0..N {
        // One page mapped, one left free: 10,000 separate entries.
        let at = BASE + 2 * i * PS;
        map.enter(MapRequest::anonymous(PS).fixed(VirtAddr::new(at)))
            .expect("enter");
        vma.push((at, at + PS));
    }
    assert_eq!(map.len() as u64, N);
    // A fixed pseudo-random sequence of addresses, mapped and unmapped.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let probes: Vec<u64> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            BASE + (x % (2 * N * PS))
        })
        .collect();
    let mut g = c.benchmark_group("vm-map/lookup_10k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("machvm", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % probes.len();
            black_box(map.lookup(VirtAddr::new(black_box(probes[i]))).is_some())
        });
    });
    g.bench_function("linear_scan", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % probes.len();
            let a = black_box(probes[i]);
            black_box(vma.iter().find(|(s, e)| *s <= a && a < *e).is_some())
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    zero_fill_fault,
    cow_fault,
    fork_1g_10pct,
    lookup_10k
);
criterion_main!(benches);
