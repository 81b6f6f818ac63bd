//! Page-table benchmarks: machvm against `x86_64` (`OffsetPageTable`), aarch64-paging and
//! `page_table_multiarch`, all on one simulated physical memory (`anchors::PhysMem`).
//!
//! Groups are `page-table/<case>`; function ids are implementation names (`machvm` for the
//! x86_64 4-level format, `machvm-<format>` for the others, and the anchors by crate name).
//! Throughput is `Elements(n)` with `n` the number of 4 KiB pages handled (16384 = 64 MiB),
//! 2^20 lookups for `translate_random`, and 4 KiB-equivalents for `map_range_1g`, so xtask reads
//! ns per page (or per lookup).
//!
//! Timing: every case runs through [`timed`] (criterion's `iter_custom`): a fresh table is
//! built — and pre-mapped for unmap and protect — outside the timed region, only the operation
//! itself is timed, and afterwards, still untimed, the result is checked (sampled lookups, table
//! counts, no leaked frames) so a broken driver cannot report a fast time. `translate_random`
//! reuses one pre-mapped table per implementation and checks the sum of all translated
//! addresses. No implementation runs TLB maintenance (see `anchors`).

// A host benchmark binary: std is the natural choice, and the `core`/`alloc` re-export
// preferences of the library crates buy nothing here.
#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

mod anchors;

use core::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use anchors::aarch64_paging::Aarch64Paging;
use anchors::machvm::{Machvm, map_1g};
use anchors::page_table_multiarch::PageTableMultiarch;
use anchors::x86_64::X86_64;
use anchors::{Driver, PAGE, PAGES, PhysMem, RANGE, TABLES_64M_4K, TARGET_PA, VA_BASE};
use machvm_page_table::{A64Granule4K48, X86Pml4, X86Pml5};

/// Untimed iterations each row runs just before it is measured.
const WARM_UP_ITERS: u64 = 3;
/// Lookups per `translate_random` iteration.
const LOOKUPS: u64 = 1 << 20;
/// 4 KiB-equivalents in the 1 GiB of `map_range_1g`.
const PAGES_1G: u64 = (1 << 30) / PAGE;

/// Runs `iters` iterations for criterion's `iter_custom` and returns the time measured.
type Runner = Box<dyn FnMut(u64) -> Duration>;

/// One row of a case: an implementation name and how to run it.
struct Impl {
    name: String,
    run: Runner,
}

impl Impl {
    fn new(name: impl Into<String>, run: Runner) -> Self {
        Self {
            name: name.into(),
            run,
        }
    }
}

/// Builds a [`Runner`]: per iteration `setup` (untimed), `routine` (timed), then `check`
/// (untimed), which gets the state back and tears it down.
fn timed<S: 'static, O: 'static>(
    mut setup: impl FnMut() -> S + 'static,
    mut routine: impl FnMut(&mut S) -> O + 'static,
    mut check: impl FnMut(S, O) + 'static,
) -> Runner {
    Box::new(move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let mut state = setup();
            let start = Instant::now();
            let out = black_box(routine(black_box(&mut state)));
            total += start.elapsed();
            check(state, out);
        }
        total
    })
}

/// Benchmarks one case: group `page-table/<case>`, throughput `elements`, one function per
/// implementation. A case with no implementation yet is skipped.
fn bench_case(c: &mut Criterion, case: &str, elements: u64, impls: Vec<Impl>) {
    if impls.is_empty() {
        return;
    }
    let mut group = c.benchmark_group(format!("page-table/{case}"));
    group.throughput(Throughput::Elements(elements));
    for mut imp in impls {
        // Untimed warm-up of this row right before it is measured: with `--quick` criterion
        // barely warms up, and the first row of a group otherwise pays for the previous
        // group's state (measured: the first row ran 30 % slower than the same code later).
        let _warm_up: Duration = (imp.run)(WARM_UP_ITERS);
        group.bench_function(imp.name.as_str(), |b| b.iter_custom(&mut imp.run));
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Checks (never timed).

/// Pages whose lookups the checks sample: both ends, the 2 MiB boundaries around a leaf table,
/// and a spread of others.
fn sample_pages() -> impl Iterator<Item = u64> {
    [0, 1, 511, 512, 513, PAGES / 2, PAGES - 2, PAGES - 1]
        .into_iter()
        .chain((0..PAGES).step_by(97))
}

/// Asserts that the whole run is mapped to `TARGET_PA..` with the given writability, and that
/// the pages on either side are not mapped.
fn check_mapped<D: Driver>(t: &D, writable: bool) {
    for page in sample_pages() {
        let va = VA_BASE + page * PAGE + (page * 8) % PAGE;
        let want = anchors::Lookup {
            pa: anchors::expected_pa(va),
            writable,
        };
        assert_eq!(t.lookup(va), Some(want), "{}: lookup of {va:#x}", D::NAME);
    }
    assert_eq!(t.lookup(VA_BASE - PAGE), None, "{}: page below", D::NAME);
    assert_eq!(t.lookup(VA_BASE + RANGE), None, "{}: page above", D::NAME);
}

/// Asserts that no page of the run is mapped.
fn check_unmapped<D: Driver>(t: &D) {
    for page in sample_pages() {
        let va = VA_BASE + page * PAGE;
        assert_eq!(t.lookup(va), None, "{}: {va:#x} still mapped", D::NAME);
    }
}

/// Asserts that the 64 MiB run in 4 KiB pages took exactly the expected tables (so no driver
/// sneaks in block mappings) from the shared memory. Assumes no other table is alive: rows that
/// keep a table across iterations (`translate_random`) drop it when their group ends.
fn check_tables<D: Driver>() {
    assert_eq!(
        PhysMem::get().frames_in_use(),
        TABLES_64M_4K + D::LEVELS - 4,
        "{}: table frames for 64 MiB of 4 KiB pages",
        D::NAME
    );
}

/// Drops a table and asserts that every table frame went back to the shared memory.
fn teardown<D: Driver>(t: D) {
    drop(t);
    assert_eq!(
        PhysMem::get().frames_in_use(),
        0,
        "{}: leaked table frames",
        D::NAME
    );
}

/// Returns a fresh table with the whole run mapped (setup of unmap and protect cases).
fn premapped<D: Driver>() -> D {
    let mut t = D::new();
    t.map_range(VA_BASE, TARGET_PA, PAGES);
    t
}

/// Returns 2^20 pseudo-random addresses inside the run (any byte offset), deterministic.
fn random_addresses() -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..LOOKUPS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            VA_BASE + x % RANGE
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Anchor rows, one function per case, generic over the driver.

fn map_range_4k_row<D: Driver + 'static>() -> Impl {
    Impl::new(
        D::NAME,
        timed(
            D::new,
            |t: &mut D| t.map_range(VA_BASE, TARGET_PA, PAGES),
            |t, ()| {
                check_tables::<D>();
                check_mapped(&t, true);
                teardown(t);
            },
        ),
    )
}

fn map_4k_single_row<D: Driver + 'static>() -> Impl {
    Impl::new(
        D::NAME,
        timed(
            D::new,
            |t: &mut D| t.map_single(VA_BASE, TARGET_PA, PAGES),
            |t, ()| {
                check_tables::<D>();
                check_mapped(&t, true);
                teardown(t);
            },
        ),
    )
}

fn translate_random_row<D: Driver + 'static>() -> Impl {
    let table = premapped::<D>();
    check_mapped(&table, true);
    let raw = random_addresses();
    let want: u64 = raw
        .iter()
        .fold(0, |s, &va| s.wrapping_add(anchors::expected_pa(va)));
    let vas: Vec<D::Va> = raw.iter().map(|&va| D::va(va)).collect();
    Impl::new(
        D::NAME,
        timed(
            || (),
            move |()| {
                let mut sum = 0_u64;
                let mut missing = 0_u64;
                for &va in &vas {
                    match table.translate(va) {
                        Some(pa) => sum = sum.wrapping_add(pa),
                        None => missing += 1,
                    }
                }
                (sum, missing)
            },
            move |(), (sum, missing)| {
                assert_eq!(missing, 0, "{}: lookups that failed", D::NAME);
                assert_eq!(sum, want, "{}: sum of translated addresses", D::NAME);
            },
        ),
    )
}

fn unmap_range_4k_row<D: Driver + 'static>() -> Impl {
    Impl::new(
        D::NAME,
        timed(
            premapped::<D>,
            |t: &mut D| t.unmap_range(VA_BASE, PAGES),
            |t, ()| {
                check_unmapped(&t);
                teardown(t);
            },
        ),
    )
}

fn unmap_4k_single_row<D: Driver + 'static>() -> Impl {
    Impl::new(
        D::NAME,
        timed(
            premapped::<D>,
            |t: &mut D| t.unmap_single(VA_BASE, PAGES),
            |t, ()| {
                check_unmapped(&t);
                teardown(t);
            },
        ),
    )
}

fn protect_range_64m_row<D: Driver + 'static>() -> Impl {
    Impl::new(
        D::NAME,
        timed(
            premapped::<D>,
            |t: &mut D| t.protect_range(VA_BASE, PAGES),
            |t, ()| {
                check_tables::<D>();
                check_mapped(&t, false);
                teardown(t);
            },
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Cases. Each builds its rows; machvm rows go where the `// machvm:` blocks are, as
// `Impl::new("machvm", timed(setup, routine, check))` (or by implementing `anchors::Driver` for a
// machvm wrapper and reusing the `*_row` functions), with `machvm-<format>` rows after it.
// machvm should take its table frames from `PhysMem::get()` (e.g. `PhysMem::get().sim()`, a
// `FrameAllocator` and `PhysMapper` through `&`), use `anchors::VA_BASE`/`TARGET_PA`, run no
// TLB flush, and check its result with the same helpers.

fn map_range_4k(c: &mut Criterion) {
    let impls = vec![
        // machvm: one `map_range` over the 16384 pages (4 KiB pages only), then
        // `check_tables`-style count, `check_mapped(.., true)`, teardown; `machvm-<format>` rows
        // after it.
        map_range_4k_row::<Machvm<X86Pml4>>(),
        map_range_4k_row::<X86_64>(),
        map_range_4k_row::<Aarch64Paging>(),
        map_range_4k_row::<PageTableMultiarch>(),
        map_range_4k_row::<Machvm<X86Pml5>>(),
        map_range_4k_row::<Machvm<A64Granule4K48>>(),
    ];
    bench_case(c, "map_range_4k", PAGES, impls);
}

fn map_4k_single(c: &mut Criterion) {
    let impls = vec![
        // machvm: one map call per 4 KiB page.
        map_4k_single_row::<Machvm<X86Pml4>>(),
        map_4k_single_row::<X86_64>(),
        map_4k_single_row::<Aarch64Paging>(),
        map_4k_single_row::<PageTableMultiarch>(),
        map_4k_single_row::<Machvm<X86Pml5>>(),
        map_4k_single_row::<Machvm<A64Granule4K48>>(),
    ];
    bench_case(c, "map_4k_single", PAGES, impls);
}

fn translate_random(c: &mut Criterion) {
    let impls = vec![
        // machvm: one pre-mapped table, translate each of `random_addresses()` (converted to
        // machvm's `VirtAddr` outside the timing), check the sum like `translate_random_row`.
        translate_random_row::<Machvm<X86Pml4>>(),
        translate_random_row::<X86_64>(),
        translate_random_row::<Aarch64Paging>(),
        translate_random_row::<PageTableMultiarch>(),
        translate_random_row::<Machvm<X86Pml5>>(),
        translate_random_row::<Machvm<A64Granule4K48>>(),
    ];
    bench_case(c, "translate_random", LOOKUPS, impls);
}

fn unmap_range_4k(c: &mut Criterion) {
    let impls = vec![
        // machvm: setup = fresh table + `map_range` of the run; timed = one `unmap_range`;
        // check = `check_unmapped`, teardown.
        unmap_range_4k_row::<Machvm<X86Pml4>>(),
        unmap_range_4k_row::<X86_64>(),
        unmap_range_4k_row::<Aarch64Paging>(),
        unmap_range_4k_row::<PageTableMultiarch>(),
        unmap_range_4k_row::<Machvm<X86Pml5>>(),
        unmap_range_4k_row::<Machvm<A64Granule4K48>>(),
    ];
    bench_case(c, "unmap_range_4k", PAGES, impls);
}

fn unmap_4k_single(c: &mut Criterion) {
    let impls = vec![
        // machvm: as unmap_range_4k, but one unmap call per page.
        unmap_4k_single_row::<Machvm<X86Pml4>>(),
        unmap_4k_single_row::<X86_64>(),
        unmap_4k_single_row::<Aarch64Paging>(),
        unmap_4k_single_row::<PageTableMultiarch>(),
        unmap_4k_single_row::<Machvm<X86Pml5>>(),
        unmap_4k_single_row::<Machvm<A64Granule4K48>>(),
    ];
    bench_case(c, "unmap_4k_single", PAGES, impls);
}

fn protect_range_64m(c: &mut Criterion) {
    let impls = vec![
        // machvm: setup = pre-mapped run; timed = one protect call making it read-only;
        // check = `check_mapped(.., false)`, teardown.
        protect_range_64m_row::<Machvm<X86Pml4>>(),
        protect_range_64m_row::<X86_64>(),
        protect_range_64m_row::<Aarch64Paging>(),
        protect_range_64m_row::<PageTableMultiarch>(),
        protect_range_64m_row::<Machvm<X86Pml5>>(),
        protect_range_64m_row::<Machvm<A64Granule4K48>>(),
    ];
    bench_case(c, "protect_range_64m", PAGES, impls);
}

fn map_range_1g(c: &mut Criterion) {
    // machvm alone: one `map_range` of 1 GiB at VA_BASE -> TARGET_PA (both 1 GiB aligned)
    // with pages up to 1 GiB; throughput in 4 KiB-equivalents (`PAGES_1G`).
    let impls: Vec<Impl> = vec![Impl::new(
        "machvm",
        timed(
            Machvm::<X86Pml4>::new,
            |t: &mut Machvm<X86Pml4>| map_1g(t, VA_BASE, TARGET_PA),
            |t, ()| {
                for off in [0, PAGE, 1 << 29, (1 << 30) - 8] {
                    let got = t.lookup(VA_BASE + off).map(|l| l.pa);
                    assert_eq!(
                        got,
                        Some(TARGET_PA + off),
                        "machvm: 1 GiB lookup at +{off:#x}"
                    );
                }
                assert_eq!(
                    PhysMem::get().frames_in_use(),
                    2,
                    "machvm: root + PDPT only"
                );
                teardown(t);
            },
        ),
    )];
    bench_case(c, "map_range_1g", PAGES_1G, impls);
}

criterion_group!(
    benches,
    map_range_4k,
    map_4k_single,
    translate_random,
    unmap_range_4k,
    unmap_4k_single,
    protect_range_64m,
    map_range_1g
);
criterion_main!(benches);
