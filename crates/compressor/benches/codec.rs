//! Codec benchmarks over real pages: `compressor/compress_4k` and `compressor/decompress_4k`.
//!
//! Pages come from the file named by `MACHVM_CORPUS` (any file of concatenated 4 KiB pages),
//! else the shared corpus next to the repository. One iteration compresses (or decodes) every
//! page once; throughput is `ElementsAndBytes` (pages, page bytes), so `ns_per_op` in the
//! summary is per 4 KiB page and `gb_per_s` is page bytes per second.
//!
//! Implementations: `machvm-wkdm-portable`, `machvm-wkdm` (the best path this CPU has),
//! `machvm-hybrid-portable`, `machvm-hybrid`, `machvm-best` (both codecs on every page, the
//! smaller kept), and `lz4_flex` (block `compress_into` / `decompress_into`, default
//! features). `extra.ratio` is input bytes over stored bytes for the whole corpus: a
//! single-value page counts as 8 bytes (the 64-bit value of its entry in the pool's value
//! table, which is what it occupies instead of segment space), a raw page as 4096.
//! `extra.speed_vs_lz4_flex` (machvm rows): `lz4_flex`'s time over the row's for the same
//! work, the median of 15 pairs of corpus passes run after the criterion measurements, the
//! two sides alternating, so that a change in the machine's speed during the run (a shared
//! VM) affects both sides of each pair alike; the ratio table compares rows measured one
//! after another, whose figures move with such changes.

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
use machvm_compressor::codec::{
    Best, CodecKind, Encoded, Hybrid, PageCodec, PageSize, VectorPolicy, Wkdm,
};

/// Bytes a single-value page counts as in the ratio (one value-table entry).
const SINGLE_VALUE_COST: usize = 8;

fn corpus_path() -> PathBuf {
    std::env::var_os("MACHVM_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/pages-4k.bin"),
        PathBuf::from,
    )
}

/// The corpus as word pages and as bytes.
fn corpus() -> (Vec<[u32; 1024]>, Vec<u8>) {
    let path = corpus_path();
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading corpus {}: {e}", path.display()));
    let bytes = bytes[..bytes.len() / 4096 * 4096].to_vec();
    assert!(
        !bytes.is_empty(),
        "corpus {} has no whole page",
        path.display()
    );
    let pages = bytes
        .chunks_exact(4096)
        .map(|chunk| {
            let mut page = [0u32; 1024];
            for (w, b) in page.iter_mut().zip(chunk.chunks_exact(4)) {
                *w = u32::from_le_bytes(b.try_into().unwrap());
            }
            page
        })
        .collect();
    (pages, bytes)
}

/// Appends `extra` figures for a result to the file xtask names (if it does).
fn record_extra(case: &str, imp: &str, extra: &str) {
    if let Ok(path) = std::env::var("MACHVM_BENCH_EXTRA") {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
            let _ = writeln!(
                f,
                r#"{{"suite": "compressor", "case": "{case}", "impl": "{imp}", "extra": {extra}}}"#
            );
        }
    }
}

/// One stored page: how to decode it.
enum Stored {
    Single(machvm_compressor::codec::SingleValue),
    Bytes(CodecKind, Vec<u8>),
}

fn encode_all(codec: &dyn PageCodec, pages: &[[u32; 1024]]) -> (Vec<Stored>, usize) {
    let mut out = vec![0u8; codec.max_encoded_len()];
    let mut total = 0;
    let stored = pages
        .iter()
        .map(|p| match codec.compress(p, &mut out).unwrap() {
            Encoded::SingleValue(v) => {
                total += SINGLE_VALUE_COST;
                Stored::Single(v)
            }
            Encoded::Stored { kind, len } => {
                total += len;
                Stored::Bytes(kind, out[..len].to_vec())
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    (stored, total)
}

fn benches(c: &mut Criterion) {
    let (pages, bytes) = corpus();
    let n = pages.len() as u64;
    let input = bytes.len() as f64;
    let throughput = Throughput::ElementsAndBytes {
        elements: n,
        bytes: n * 4096,
    };
    let codecs: Vec<(&str, Box<dyn PageCodec>)> = vec![
        (
            "machvm-wkdm-portable",
            Box::new(Wkdm::new(PageSize::Size4K, VectorPolicy::Portable)),
        ),
        (
            "machvm-wkdm",
            Box::new(Wkdm::new(PageSize::Size4K, VectorPolicy::Detect)),
        ),
        (
            "machvm-hybrid-portable",
            Box::new(Hybrid::new(PageSize::Size4K, VectorPolicy::Portable)),
        ),
        (
            "machvm-hybrid",
            Box::new(Hybrid::new(PageSize::Size4K, VectorPolicy::Detect)),
        ),
        (
            "machvm-best",
            Box::new(Best::new(PageSize::Size4K, VectorPolicy::Detect)),
        ),
    ];
    eprintln!(
        "corpus: {} pages from {}; vector path: {:?}",
        n,
        corpus_path().display(),
        VectorPolicy::Detect.resolve()
    );

    // Stored forms and ratios first (also the decode inputs).
    let mut encoded = Vec::new();
    for (name, codec) in &codecs {
        let (stored, total) = encode_all(codec.as_ref(), &pages);
        let ratio = input / total as f64;
        eprintln!("{name}: ratio {ratio:.3}");
        for case in ["compress_4k", "decompress_4k"] {
            record_extra(case, name, &format!(r#"{{"ratio": {ratio}}}"#));
        }
        encoded.push(stored);
    }
    let mut lz4_blocks = Vec::with_capacity(pages.len());
    let mut lz4_buf = vec![0u8; lz4_flex::block::get_maximum_output_size(4096)];
    for chunk in bytes.chunks_exact(4096) {
        let len = lz4_flex::block::compress_into(chunk, &mut lz4_buf).unwrap();
        lz4_blocks.push(lz4_buf[..len].to_vec());
    }
    let lz4_total: usize = lz4_blocks.iter().map(Vec::len).sum();
    let lz4_ratio = input / lz4_total as f64;
    eprintln!("lz4_flex: ratio {lz4_ratio:.3}");
    for case in ["compress_4k", "decompress_4k"] {
        record_extra(case, "lz4_flex", &format!(r#"{{"ratio": {lz4_ratio}}}"#));
    }

    let mut g = c.benchmark_group("compressor/compress_4k");
    g.throughput(throughput.clone());
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    for (name, codec) in &codecs {
        let mut out = vec![0u8; codec.max_encoded_len()];
        g.bench_function(*name, |b| {
            b.iter(|| compress_pass(codec.as_ref(), &pages, &mut out))
        });
    }
    g.bench_function("lz4_flex", |b| {
        b.iter(|| lz4_compress_pass(&bytes, &mut lz4_buf));
    });
    g.finish();

    let mut g = c.benchmark_group("compressor/decompress_4k");
    g.throughput(throughput);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    for ((name, codec), stored) in codecs.iter().zip(&encoded) {
        let mut page = [0u32; 1024];
        g.bench_function(*name, |b| {
            b.iter(|| decompress_pass(codec.as_ref(), stored, &mut page));
        });
    }
    let mut page = vec![0u8; 4096];
    g.bench_function("lz4_flex", |b| {
        b.iter(|| lz4_decompress_pass(&lz4_blocks, &mut page));
    });
    g.finish();

    // Speed against lz4_flex from paired passes (see the module docs).
    eprintln!(
        "speed against lz4_flex, median of {PAIRED_ROUNDS} paired passes (lz4_flex time / ours):"
    );
    for ((name, codec), stored) in codecs.iter().zip(&encoded) {
        let mut out = vec![0u8; codec.max_encoded_len()];
        let compress = paired(
            || compress_pass(codec.as_ref(), &pages, &mut out),
            || lz4_compress_pass(&bytes, &mut lz4_buf),
        );
        let mut ours = [0u32; 1024];
        let decompress = paired(
            || decompress_pass(codec.as_ref(), stored, &mut ours),
            || lz4_decompress_pass(&lz4_blocks, &mut page),
        );
        eprintln!("  {name}: compress {compress:.2}x, decompress {decompress:.2}x");
        for (case, speed) in [("compress_4k", compress), ("decompress_4k", decompress)] {
            record_extra(case, name, &format!(r#"{{"speed_vs_lz4_flex": {speed}}}"#));
        }
    }
}

/// Compresses every page once with `codec`.
fn compress_pass(codec: &dyn PageCodec, pages: &[[u32; 1024]], out: &mut [u8]) {
    for p in pages {
        black_box(codec.compress(black_box(p), out).unwrap());
    }
}

/// Decodes every stored page once with `codec`.
fn decompress_pass(codec: &dyn PageCodec, stored: &[Stored], page: &mut [u32; 1024]) {
    for s in stored {
        match s {
            Stored::Single(v) => v.fill(page),
            Stored::Bytes(kind, data) => {
                codec.decompress(*kind, black_box(data), page).unwrap();
            }
        }
        black_box(&*page);
    }
}

/// Compresses every page (4 KiB of `bytes`) once with `lz4_flex`.
fn lz4_compress_pass(bytes: &[u8], out: &mut [u8]) {
    for chunk in bytes.chunks_exact(4096) {
        black_box(lz4_flex::block::compress_into(black_box(chunk), out).unwrap());
    }
}

/// Decodes every `lz4_flex` block once.
fn lz4_decompress_pass(blocks: &[Vec<u8>], page: &mut [u8]) {
    for block in blocks {
        let n = lz4_flex::block::decompress_into(black_box(block), page).unwrap();
        black_box((n, &*page));
    }
}

/// Passes of each side in [`paired`].
const PAIRED_ROUNDS: usize = 15;

/// Runs `ours` and `theirs` (one pass over the corpus each) alternately, `PAIRED_ROUNDS`
/// times each, with the side that goes first alternating too, and returns the median of the
/// per-pair ratios `theirs` time / `ours` time.
fn paired(mut ours: impl FnMut(), mut theirs: impl FnMut()) -> f64 {
    let timed = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    let mut ratios: Vec<f64> = (0..PAIRED_ROUNDS)
        .map(|round| {
            let (a, b) = if round % 2 == 0 {
                let a = timed(&mut ours);
                (a, timed(&mut theirs))
            } else {
                let b = timed(&mut theirs);
                (timed(&mut ours), b)
            };
            b / a
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

criterion_group!(codec_benches, benches);
criterion_main!(codec_benches);
