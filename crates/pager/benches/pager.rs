//! Default-pager benchmarks: `pager/roundtrip_4k` and `pager/swap_segment_64k`.
//!
//! Pages come from the file named by `MACHVM_CORPUS` (concatenated 4 KiB pages), else the
//! shared corpus next to the repository; the first 512 pages are used.
//!
//! `pager/roundtrip_4k`: one iteration pages every page out (`data_return`, compress, store)
//! and back in (`data_request`, swap in when needed, decompress, free the slot) through a
//! `CompressorPager`; `ns_per_op` is per page (out + in). Implementations:
//! - `machvm-pager-compressor`: a pool large enough to keep everything in core (no swap);
//! - `machvm-pager-swap-encrypted`: a pool of 2 in-core segments over AES-256-XTS swap files
//!   in a temporary directory, so nearly every segment is written to and read from swap;
//! - `machvm-pager-swap-plain`: the same swap without encryption.
//!
//! `pager/swap_segment_64k`: one `Swap` write + read + free of a 64 KiB segment image into
//! memory (no file system), encrypted and plain: the cost of sealing and encryption alone.
//!
//! `extra.pages_per_s` (roundtrip rows), `extra.encryption_cost` (encrypted rows: time with
//! encryption ÷ time without, from the last samples), `extra.segment_mb_per_s`.

// A host benchmark binary: std is the natural choice.
#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

use core::hint::black_box;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use machvm_addr::{PageSize, SimPhysMemory, VmProt};
use machvm_compressor::codec::{Hybrid, PageSize as CodecPageSize, VectorPolicy};
use machvm_compressor::pool::{PoolConfig, SegmentSize, SegmentStore, SwapHeader};
use machvm_pager::{
    CompressorPager, DefaultPager, FixedKey, FsSwapBacking, MemorySwapBacking, Swap, SwapConfig,
};
use machvm_vm_object::{MemoryObject, PageMemory, PageOutKind, SimPageMemory, VmObject};

const PAGES: usize = 512;
const ROUNDTRIP: &str = "roundtrip_4k";
const SEGMENT: &str = "swap_segment_64k";

fn corpus_path() -> PathBuf {
    std::env::var_os("MACHVM_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/pages-4k.bin"),
        PathBuf::from,
    )
}

fn corpus() -> Vec<Vec<u8>> {
    let path = corpus_path();
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading corpus {}: {e}", path.display()));
    let pages: Vec<Vec<u8>> = bytes
        .chunks_exact(4096)
        .take(PAGES)
        .map(<[u8]>::to_vec)
        .collect();
    assert!(!pages.is_empty(), "corpus {} has no page", path.display());
    pages
}

/// Appends `extra` figures for a result to the file xtask names (if it does).
fn record_extra(case: &str, imp: &str, extra: &str) {
    if let Ok(path) = std::env::var("MACHVM_BENCH_EXTRA") {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
            let _ = writeln!(
                f,
                r#"{{"suite": "pager", "case": "{case}", "impl": "{imp}", "extra": {extra}}}"#
            );
        }
    }
}

fn key() -> FixedKey {
    FixedKey::new(core::array::from_fn(|i| (i as u8).wrapping_mul(29) ^ 0x6b))
}

fn codec() -> Hybrid {
    Hybrid::new(CodecPageSize::Size4K, VectorPolicy::Detect)
}

fn swap_config() -> SwapConfig {
    SwapConfig::new(SegmentSize::K64)
        .file_slots(8, 64)
        .max_files(8)
}

/// An object of `PAGES` pages and its compressor pager (the object is never faulted).
fn attach<B: machvm_pager::SwapBacking + 'static>(
    pager: &Arc<DefaultPager<B>>,
) -> (machvm_vm_object::ObjectRef, Arc<CompressorPager<B>>) {
    let phys = SimPhysMemory::builder()
        .size_bytes(1 << 16)
        .build()
        .unwrap();
    let memory: Arc<dyn PageMemory> =
        Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB).unwrap());
    let object = VmObject::anonymous(PAGES as u64 * 4096, memory).unwrap();
    let cp = pager.attach(&object).unwrap();
    (object, cp)
}

/// Pages every page out and back in; returns the time taken.
fn roundtrip<B: machvm_pager::SwapBacking + 'static>(
    cp: &CompressorPager<B>,
    pages: &[Vec<u8>],
    out: &mut [u8],
) -> Duration {
    let start = Instant::now();
    for (i, p) in pages.iter().enumerate() {
        cp.data_return(i as u64 * 4096, black_box(p), PageOutKind::Evict)
            .unwrap();
    }
    for (i, p) in pages.iter().enumerate() {
        cp.data_request(i as u64 * 4096, out, VmProt::READ).unwrap();
        debug_assert_eq!(out, &p[..]);
        black_box(&*out);
    }
    start.elapsed()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("machvm-pager-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn benches(c: &mut Criterion) {
    let pages = corpus();
    let n = pages.len();
    let mut out = vec![0u8; 4096];

    // Correctness once, untimed, for each configuration.
    let in_core = PoolConfig::new(SegmentSize::K64).max_in_core_segments(n);
    let compressor = DefaultPager::<MemorySwapBacking>::new(in_core, codec(), None).unwrap();
    let swapped = PoolConfig::new(SegmentSize::K64).max_in_core_segments(2);
    let enc_dir = temp_dir("enc");
    let plain_dir = temp_dir("plain");
    let enc_swap = Swap::new(
        FsSwapBacking::new(&enc_dir).unwrap(),
        swap_config(),
        &mut key(),
    )
    .unwrap();
    let plain_swap =
        Swap::new_unencrypted(FsSwapBacking::new(&plain_dir).unwrap(), swap_config()).unwrap();
    let encrypted = DefaultPager::new(swapped, codec(), Some(Arc::new(enc_swap))).unwrap();
    let plain = DefaultPager::new(swapped, codec(), Some(Arc::new(plain_swap))).unwrap();
    let (_o1, cp_compressor) = attach(&compressor);
    let (_o2, cp_encrypted) = attach(&encrypted);
    let (_o3, cp_plain) = attach(&plain);
    for (i, p) in pages.iter().enumerate() {
        cp_encrypted
            .data_return(i as u64 * 4096, p, PageOutKind::Evict)
            .unwrap();
    }
    let st = encrypted.stats();
    eprintln!(
        "roundtrip_4k: {n} pages from {}; compression ratio {:.3}; with swap: {} segments \
         swapped out, {}",
        corpus_path().display(),
        st.pool.compression_ratio(),
        st.pool.segments_swapped,
        encrypted.swap_usage().unwrap()
    );
    for (i, p) in pages.iter().enumerate() {
        cp_encrypted
            .data_request(i as u64 * 4096, &mut out, VmProt::READ)
            .unwrap();
        assert_eq!(&out, p, "page {i} came back different");
    }

    let mut g = c.benchmark_group(format!("pager/{ROUNDTRIP}"));
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    let mut ns = [0.0_f64; 3];
    let cases: [(&str, &CompressorPager<_>); 1] = [("machvm-pager-compressor", &cp_compressor)];
    for (name, cp) in cases {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    t += roundtrip(cp, &pages, &mut out);
                }
                ns[0] = t.as_nanos() as f64 / (iters as f64 * n as f64);
                t
            });
        });
    }
    let swap_cases: [(&str, &CompressorPager<FsSwapBacking>, usize); 2] = [
        ("machvm-pager-swap-encrypted", &cp_encrypted, 1),
        ("machvm-pager-swap-plain", &cp_plain, 2),
    ];
    for (name, cp, slot) in swap_cases {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    t += roundtrip(cp, &pages, &mut out);
                }
                ns[slot] = t.as_nanos() as f64 / (iters as f64 * n as f64);
                t
            });
        });
    }
    g.finish();
    let names = [
        "machvm-pager-compressor",
        "machvm-pager-swap-encrypted",
        "machvm-pager-swap-plain",
    ];
    for (name, v) in names.iter().zip(ns) {
        let extra = if *name == "machvm-pager-swap-encrypted" {
            format!(
                r#"{{"pages_per_s": {}, "encryption_cost": {}}}"#,
                1e9 / v,
                v / ns[2]
            )
        } else {
            format!(r#"{{"pages_per_s": {}}}"#, 1e9 / v)
        };
        record_extra(ROUNDTRIP, name, &extra);
    }
    eprintln!(
        "roundtrip_4k: compressor {:.0} pages/s, swap encrypted {:.0} pages/s, swap plain \
         {:.0} pages/s; encryption cost {:.3}x (last samples)",
        1e9 / ns[0],
        1e9 / ns[1],
        1e9 / ns[2],
        ns[1] / ns[2]
    );

    // One segment through the swap alone (in memory): sealing, encryption, checks.
    let image: Vec<u8> = pages.iter().flatten().copied().take(65536).collect();
    let header = SwapHeader {
        version: SwapHeader::VERSION,
        segment: 0,
        image_len: image.len() as u32,
        data_len: image.len() as u32,
        slots: 0,
        checksum: 0,
    };
    let swaps = [
        (
            "machvm-pager-swap-encrypted",
            Swap::new(MemorySwapBacking::new(), swap_config(), &mut key()).unwrap(),
        ),
        (
            "machvm-pager-swap-plain",
            Swap::new_unencrypted(MemorySwapBacking::new(), swap_config()).unwrap(),
        ),
    ];
    let mut g = c.benchmark_group(format!("pager/{SEGMENT}"));
    g.throughput(Throughput::Bytes(image.len() as u64));
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    let mut seg_ns = [0.0_f64; 2];
    let mut back = vec![0u8; image.len()];
    for (i, (name, swap)) in swaps.iter().enumerate() {
        g.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let key = swap.write(&header, black_box(&image)).unwrap();
                    swap.read(key, &mut back).unwrap();
                    swap.free(key);
                }
                let t = start.elapsed();
                seg_ns[i] = t.as_nanos() as f64 / iters as f64;
                t
            });
        });
    }
    g.finish();
    assert_eq!(back, image);
    let mb = |ns: f64| image.len() as f64 / ns * 1e3;
    record_extra(
        SEGMENT,
        "machvm-pager-swap-encrypted",
        &format!(
            r#"{{"segment_mb_per_s": {}, "encryption_cost": {}}}"#,
            mb(seg_ns[0]),
            seg_ns[0] / seg_ns[1]
        ),
    );
    record_extra(
        SEGMENT,
        "machvm-pager-swap-plain",
        &format!(r#"{{"segment_mb_per_s": {}}}"#, mb(seg_ns[1])),
    );
    eprintln!(
        "swap_segment_64k: encrypted {:.0} MB/s, plain {:.0} MB/s (write+read), encryption \
         cost {:.3}x (last samples)",
        mb(seg_ns[0]),
        mb(seg_ns[1]),
        seg_ns[0] / seg_ns[1]
    );
    drop((encrypted, plain, cp_encrypted, cp_plain, _o2, _o3));
    let _ = std::fs::remove_dir_all(&enc_dir);
    let _ = std::fs::remove_dir_all(&plain_dir);
}

criterion_group!(pager_benches, benches);
criterion_main!(pager_benches);
