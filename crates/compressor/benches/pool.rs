//! Pool benchmark over real pages: `compressor/pool_store_4k`.
//!
//! Pages come from the file named by `MACHVM_CORPUS` (any file of concatenated 4 KiB pages),
//! else the shared corpus next to the repository. One iteration stores every page once;
//! throughput is `ElementsAndBytes` (pages, page bytes), so `ns_per_op` is per 4 KiB page.
//!
//! Implementations:
//! - `machvm-hybrid`: [`Pool::store`] with `codec::Hybrid` (best vector path available): the
//!   whole store path (compression outside the lock into stack scratch, slot checksum,
//!   placement under the lock, segment buffers from the heap as segments open). Only the
//!   stores are timed; freeing every page between iterations is not.
//! - `machvm-hybrid-codec`: the bare `Hybrid::compress` into a buffer, the floor the pool's
//!   store path is compared with (goal: the pool within 1.2× of it).
//!
//! `extra.ratio`: for the pool, input bytes over the in-core segment bytes occupied (data,
//! holes and slot directories) plus 8 bytes per single-value table entry in use; for the
//! codec, input bytes over output bytes with a single-value page counted as 8 bytes.
//! `extra.overhead`: the pool's time per page over the codec's (on the pool row), the median
//! of 15 passes of each run alternately after the criterion measurements.

// A host benchmark binary: std is the natural choice.
#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

use core::hint::black_box;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use machvm_compressor::codec::{Encoded, Hybrid, PageCodec, PageSize, VectorPolicy};
use machvm_compressor::pool::{Handle, HeapMemory, NoStore, Pool, PoolConfig, SegmentSize};

const CASE: &str = "pool_store_4k";

fn corpus_path() -> PathBuf {
    std::env::var_os("MACHVM_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/pages-4k.bin"),
        PathBuf::from,
    )
}

fn corpus() -> Vec<[u32; 1024]> {
    let path = corpus_path();
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading corpus {}: {e}", path.display()));
    let pages: Vec<[u32; 1024]> = bytes
        .chunks_exact(4096)
        .map(|chunk| {
            let mut page = [0_u32; 1024];
            for (w, b) in page.iter_mut().zip(chunk.chunks_exact(4)) {
                *w = u32::from_le_bytes(b.try_into().unwrap());
            }
            page
        })
        .collect();
    assert!(
        !pages.is_empty(),
        "corpus {} has no whole page",
        path.display()
    );
    pages
}

/// Appends `extra` figures for a result to the file xtask names (if it does).
fn record_extra(imp: &str, extra: &str) {
    if let Ok(path) = std::env::var("MACHVM_BENCH_EXTRA") {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
            let _ = writeln!(
                f,
                r#"{{"suite": "compressor", "case": "{CASE}", "impl": "{imp}", "extra": {extra}}}"#
            );
        }
    }
}

/// Alternating pool and codec passes the overhead is taken from.
const PAIRED_ROUNDS: usize = 15;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn hybrid() -> Hybrid {
    Hybrid::new(PageSize::Size4K, VectorPolicy::Detect)
}

fn benches(c: &mut Criterion) {
    let pages = corpus();
    let n = pages.len();
    let input = (n * 4096) as f64;
    let config = PoolConfig::new(SegmentSize::K64)
        .max_in_core_segments(n)
        .max_segments(n)
        .max_pages(n);
    let pool = Pool::new(config, hybrid(), HeapMemory::new(), NoStore).unwrap();
    let mut handles: Vec<Handle> = Vec::with_capacity(n);

    // Ratios (untimed): one pass through the pool and one through the bare codec.
    for p in &pages {
        handles.push(pool.store(p).unwrap());
    }
    let st = pool.stats();
    let pool_ratio = input / (st.bytes_used + 8 * st.single_values) as f64;
    for h in handles.drain(..) {
        pool.free(h).unwrap();
    }
    let codec = hybrid();
    let mut out = vec![0_u8; codec.max_encoded_len()];
    let mut total = 0_usize;
    for p in &pages {
        total += match codec.compress(p, &mut out).unwrap() {
            Encoded::SingleValue(_) => 8,
            Encoded::Stored { len, .. } => len,
            other => panic!("unexpected {other:?}"),
        };
    }
    let codec_ratio = input / total as f64;
    eprintln!(
        "pool_store_4k: {n} pages from {}; pool ratio {pool_ratio:.3} (compression ratio \
         {:.3}, fragmentation {:.1} %), codec ratio {codec_ratio:.3}",
        corpus_path().display(),
        st.compression_ratio(),
        st.fragmentation_percent()
    );

    let mut g = c.benchmark_group(format!("compressor/{CASE}"));
    g.throughput(Throughput::ElementsAndBytes {
        elements: n as u64,
        bytes: (n * 4096) as u64,
    });
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("machvm-hybrid", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for p in &pages {
                    handles.push(pool.store(black_box(p)).unwrap());
                }
                elapsed += start.elapsed();
                for h in handles.drain(..) {
                    pool.free(h).unwrap();
                }
            }
            elapsed
        });
    });
    g.bench_function("machvm-hybrid-codec", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for p in &pages {
                    black_box(codec.compress(black_box(p), &mut out).unwrap());
                }
            }
            start.elapsed()
        });
    });
    g.finish();

    // The overhead from paired passes: the pool and the bare codec alternate, so that a
    // change in the machine's speed during the run (a shared VM) affects both sides of each
    // ratio alike; the median ratio is reported.
    let mut ratios = Vec::with_capacity(PAIRED_ROUNDS);
    let (mut pool_ns, mut codec_ns) = (Vec::new(), Vec::new());
    for _ in 0..PAIRED_ROUNDS {
        let start = Instant::now();
        for p in &pages {
            handles.push(pool.store(black_box(p)).unwrap());
        }
        let pool_t = start.elapsed().as_nanos() as f64 / n as f64;
        for h in handles.drain(..) {
            pool.free(h).unwrap();
        }
        let start = Instant::now();
        for p in &pages {
            black_box(codec.compress(black_box(p), &mut out).unwrap());
        }
        let codec_t = start.elapsed().as_nanos() as f64 / n as f64;
        ratios.push(pool_t / codec_t);
        pool_ns.push(pool_t);
        codec_ns.push(codec_t);
    }
    let (overhead, pool_ns, codec_ns) = (median(ratios), median(pool_ns), median(codec_ns));
    eprintln!(
        "pool_store_4k: pool {pool_ns:.0} ns/page, codec {codec_ns:.0} ns/page, \
         overhead {overhead:.3}x (median of {PAIRED_ROUNDS} paired passes)"
    );
    record_extra(
        "machvm-hybrid",
        &format!(r#"{{"ratio": {pool_ratio}, "overhead": {overhead}}}"#),
    );
    record_extra(
        "machvm-hybrid-codec",
        &format!(r#"{{"ratio": {codec_ratio}}}"#),
    );
}

criterion_group!(pool_benches, benches);
criterion_main!(pool_benches);
