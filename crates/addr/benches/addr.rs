//! Side-by-side benchmarks of `machvm-addr` and the `x86_64` crate.
//!
//! Groups are `addr/<case>`; each has a `machvm` and an `x86_64` function doing the same work
//! (the `x86_64` crate checks 48-bit canonical form, so `machvm` uses
//! `VaWidth::X86_64_4LEVEL` there). Throughput is set to the number of operations per iteration.

use core::hint::black_box;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use machvm_addr::{Page, PageRange, Size4KiB, VaWidth, VirtAddr};

const BATCH: usize = 1024;
const PAGES: u64 = 4096;

/// Returns a deterministic mix of canonical and non-canonical addresses (xorshift).
fn mixed_addresses() -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..BATCH)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match i % 4 {
                0 => x & 0x7fff_ffff_ffff,
                1 => x | 0xffff_8000_0000_0000,
                2 => x,
                _ => (x & 0xffff_ffff) | 0x0000_8000_0000_0000,
            }
        })
        .collect()
}

fn virt_try_new(c: &mut Criterion) {
    let raws = mixed_addresses();
    let mut g = c.benchmark_group("addr/virt_try_new");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("machvm", |b| {
        b.iter(|| {
            black_box(&raws)
                .iter()
                .filter(|&&r| VirtAddr::try_new_in(r, VaWidth::X86_64_4LEVEL).is_ok())
                .count()
        });
    });
    g.bench_function("x86_64", |b| {
        b.iter(|| {
            black_box(&raws)
                .iter()
                .filter(|&&r| x86_64::VirtAddr::try_new(r).is_ok())
                .count()
        });
    });
    g.finish();
}

fn align_up(c: &mut Criterion) {
    let raws: Vec<u64> = mixed_addresses()
        .iter()
        .map(|r| r & 0x7fff_ffff_0000)
        .collect();
    let ours: Vec<VirtAddr> = raws.iter().map(|&r| VirtAddr::new(r)).collect();
    let theirs: Vec<x86_64::VirtAddr> = raws.iter().map(|&r| x86_64::VirtAddr::new(r)).collect();
    let mut g = c.benchmark_group("addr/align_up");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("machvm", |b| {
        b.iter(|| {
            black_box(&ours)
                .iter()
                .map(|a| a.align_up(black_box(0x1000)).map_or(0, VirtAddr::as_u64))
                .fold(0u64, u64::wrapping_add)
        });
    });
    g.bench_function("x86_64", |b| {
        b.iter(|| {
            black_box(&theirs)
                .iter()
                .map(|a| a.align_up(black_box(0x1000u64)).as_u64())
                .fold(0u64, u64::wrapping_add)
        });
    });
    g.finish();
}

fn page_range_iter(c: &mut Criterion) {
    let start = 0x7f00_0000_0000_u64;
    let mut g = c.benchmark_group("addr/page_range_iter");
    g.throughput(Throughput::Elements(PAGES));
    g.bench_function("machvm", |b| {
        b.iter(|| {
            let first: Page<Size4KiB> = Page::containing_address(VirtAddr::new(black_box(start)));
            let range = PageRange::from_start_and_count(first, black_box(PAGES))
                .unwrap_or(PageRange::empty(first));
            range.into_iter().fold(0u64, |acc, p| {
                acc.wrapping_add(black_box(p.start_address().as_u64()))
            })
        });
    });
    g.bench_function("x86_64", |b| {
        use x86_64::structures::paging::Page as XPage;
        b.iter(|| {
            let first: XPage<x86_64::structures::paging::Size4KiB> =
                XPage::containing_address(x86_64::VirtAddr::new(black_box(start)));
            let range = XPage::range(first, first + black_box(PAGES));
            range.fold(0u64, |acc, p| {
                acc.wrapping_add(black_box(p.start_address().as_u64()))
            })
        });
    });
    g.finish();
}

criterion_group!(benches, virt_try_new, align_up, page_range_iter);
criterion_main!(benches);
