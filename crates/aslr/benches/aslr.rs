//! ASLR benchmarks: the cost of one slide, one random-fit placement over a 10,000-entry map,
//! and one whole layout.
//!
//! No anchor crate computes slides or layouts (see the crate README), so the comparisons are
//! with the baselines a kernel writes without one, all over the same `rand_chacha` `ChaCha20`:
//!
//! - `aslr/slide_4k`: a 4 KiB-aligned slide with 2^28 positions (the `x86_64` mmap window).
//!   `machvm` is a precomputed `SlideRequest::slide`; `naive_modulo` is
//!   `base + (1 + next_u64() % n) * 4096` (what most code does; biased when `n` is not a power
//!   of two).
//! - `aslr/slide_uneven`: the same with 3 * 2^26 positions, where the modulo is biased and the
//!   rejection sampler pays for its threshold check.
//! - `aslr/random_fit_10k`: a randomised placement of 64 KiB among the free gaps of a map with
//!   10,000 entries (10,001 gaps of 4 KiB to 1 MiB). `machvm` is `FitRequest::place` (uniform
//!   over positions, two passes, no allocation); `collect_then_pick` collects the fitting
//!   gaps into a `Vec`, picks one with `% len` and a position in it with `%` (the usual naive
//!   random fit: allocation, and biased towards small gaps); `collect_uniform` is the unbiased
//!   naive version (running totals of positions in a `Vec`, one draw, a binary search).
//! - `aslr/layout_build`: a full `x86_64` 47-bit layout (seven regions, two reserved ranges,
//!   policy check). No baseline.
//!
//! Throughput is `Elements(1)` per slide, placement or layout.

// A host benchmark binary: std is the natural choice.
#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

use core::hint::black_box;
use std::io::Write as _;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use machvm_addr::{VaWidth, VirtAddr};
use machvm_aslr::{AslrRng, FitRequest, LayoutBuilder, LayoutConfig, SlideRequest, VaRange};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// Appends `extra` figures for a result to the file xtask names (if it does).
fn record_extra(case: &str, imp: &str, extra: &str) {
    if let Ok(path) = std::env::var("MACHVM_BENCH_EXTRA") {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
            let _ = writeln!(
                f,
                r#"{{"suite": "aslr", "case": "{case}", "impl": "{imp}", "extra": {extra}}}"#
            );
        }
    }
}

const PAGE: u64 = 0x1000;
const BASE: u64 = 0x1_0000_0000;

fn slide_case(c: &mut Criterion, case: &str, positions: u64) {
    let size = 64 << 20;
    let window = VaRange::new(VirtAddr::new(BASE), size + positions * PAGE).expect("window");
    let req = SlideRequest::new(window, size, PAGE).expect("request");
    assert_eq!(req.positions(), positions);
    record_extra(
        case,
        "machvm",
        &format!(r#"{{"bits": {:.4}}}"#, req.bits().as_f64()),
    );
    let mut group = c.benchmark_group(format!("aslr/{case}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("machvm", |b| {
        let mut rng = AslrRng::from_seed([1; 32]);
        b.iter(|| black_box(req.slide(&mut rng).expect("slide").base()));
    });
    group.bench_function("naive_modulo", |b| {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let n = black_box(positions);
        b.iter(|| black_box(BASE + (1 + rng.next_u64() % n) * PAGE));
    });
    group.finish();
}

fn slides(c: &mut Criterion) {
    slide_case(c, "slide_4k", 1 << 28);
    slide_case(c, "slide_uneven", 3 << 26);
}

/// The free gaps of a map with `entries` entries: alternating mapped entries and gaps of
/// 4 KiB .. 1 MiB (deterministic sizes).
fn map_gaps(entries: u64) -> Vec<VaRange> {
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let mut gaps = Vec::with_capacity(entries as usize + 1);
    let mut cursor = BASE;
    for _ in 0..=entries {
        let gap = (1 + rng.next_u64() % 256) * PAGE;
        gaps.push(VaRange::new(VirtAddr::new(cursor), gap).expect("gap"));
        let entry = (1 + rng.next_u64() % 64) * PAGE;
        cursor += gap + entry;
    }
    gaps
}

fn random_fit(c: &mut Criterion) {
    let gaps = map_gaps(10_000);
    let req = FitRequest::new(64 << 10, PAGE).expect("request");
    let positions = req.positions(gaps.iter().copied()).expect("sorted");
    let fitting = gaps.iter().filter(|g| g.len() >= 64 << 10).count();
    record_extra(
        "random_fit_10k",
        "machvm",
        &format!(
            r#"{{"gaps": {}, "fitting_gaps": {fitting}, "positions": {positions}}}"#,
            gaps.len()
        ),
    );
    let mut group = c.benchmark_group("aslr/random_fit_10k");
    group.throughput(Throughput::Elements(1));
    group.bench_function("machvm", |b| {
        let mut rng = AslrRng::from_seed([2; 32]);
        b.iter(|| {
            black_box(
                req.place(black_box(&gaps).iter().copied(), &mut rng)
                    .expect("fits")
                    .base(),
            )
        });
    });
    group.bench_function("collect_then_pick", |b| {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let size = 64u64 << 10;
        b.iter(|| {
            let fits: Vec<&VaRange> = black_box(&gaps)
                .iter()
                .filter(|g| g.len() >= size)
                .collect();
            let g = fits[(rng.next_u64() % fits.len() as u64) as usize];
            let n = (g.len() - size) / PAGE + 1;
            black_box(g.start().as_u64() + (rng.next_u64() % n) * PAGE)
        });
    });
    group.bench_function("collect_uniform", |b| {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let size = 64u64 << 10;
        b.iter(|| {
            // The unbiased version of the same: running totals of positions, one draw,
            // a binary search (modulo bias of `% total` ignored: `total` is far below 2^64).
            let mut total = 0u64;
            let sums: Vec<(u64, &VaRange)> = black_box(&gaps)
                .iter()
                .filter(|g| g.len() >= size)
                .map(|g| {
                    total += (g.len() - size) / PAGE + 1;
                    (total, g)
                })
                .collect();
            let pick = rng.next_u64() % total;
            let i = sums.partition_point(|&(t, _)| t <= pick);
            let (end, g) = sums[i];
            let first = end - ((g.len() - size) / PAGE + 1);
            black_box(g.start().as_u64() + (pick - first) * PAGE)
        });
    });
    group.finish();
}

fn layout_build(c: &mut Criterion) {
    let config = LayoutConfig::x86_64(VaWidth::X86_64_4LEVEL).expect("config");
    let builder = LayoutBuilder::new(config)
        .reserve(VaRange::new(VirtAddr::new(0x2_0000_0000), 1 << 30).expect("range"))
        .and_then(|b| b.reserve(VaRange::new(VirtAddr::new(0x7f00_0000_0000), 1 << 32)?))
        .expect("reserve");
    let mut group = c.benchmark_group("aslr/layout_build");
    group.throughput(Throughput::Elements(1));
    group.bench_function("machvm", |b| {
        let mut rng = AslrRng::from_seed([3; 32]);
        b.iter(|| black_box(builder.build(&mut rng).expect("layout").stack_top()));
    });
    group.finish();
}

criterion_group!(benches, slides, random_fit, layout_build);
criterion_main!(benches);
