//! Codec round trips (proptest and the real-page corpus), error handling on bad input, the
//! poisoned-buffer oracle, agreement of the code paths, and the corpus compression ratios.

// Not under miri: this crate's only unsafe code is the AVX2 path (which miri cannot run) and the
// byte views of `codec::bytes`, both exercised by the unit tests miri runs; these tests drive
// safe code (and lz4_flex, also reached by the unit tests) through hundreds of pages, which
// took most of CI's miri step. They run natively in `cargo test`.
#![cfg(not(miri))]

mod codec_common;

use codec_common::{all_codecs, corpus, decode_is_deterministic, round_trip};
use machvm_compressor::codec::wkdm::{self, format};
use machvm_compressor::codec::{
    Best, CodePath, CodecKind, CompressError, DecodeError, Encoded, Hybrid, Lz4, PageCodec,
    PageSize, VectorPolicy, Wkdm, single,
};
use proptest::prelude::*;

fn cases() -> u32 {
    if cfg!(miri) { 1 } else { 96 }
}

/// Pages of one kind of content: random words, pointers into a few regions, small integers,
/// ASCII text, mostly zeros, one repeated value, or a mix of runs of these.
fn page_strategy(words: usize) -> BoxedStrategy<Vec<u32>> {
    let random = prop::collection::vec(any::<u32>(), words).boxed();
    let pointers = (
        any::<u32>(),
        prop::collection::vec((0u32..4, 0u32..4096), words),
    )
        .prop_map(|(base, offs)| {
            offs.into_iter()
                .enumerate()
                .map(|(i, (region, off))| {
                    if i % 2 == 1 {
                        0x0000_7f00 | region // high half of a 64-bit pointer
                    } else {
                        (base & 0xfff0_0000)
                            .wrapping_add(region << 22)
                            .wrapping_add(off * 8)
                    }
                })
                .collect()
        })
        .boxed();
    let small = prop::collection::vec(0u32..2000, words).boxed();
    let text = prop::collection::vec(
        prop::sample::select(b" etaoinshrdlu\n{}".to_vec()),
        words * 4,
    )
    .prop_map(|bytes| {
        bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
    .boxed();
    let sparse = prop::collection::vec((0u32..32, any::<u32>()), words)
        .prop_map(|v| {
            v.into_iter()
                .map(|(k, w)| if k == 0 { w } else { 0 })
                .collect()
        })
        .boxed();
    let single = (any::<u32>(), any::<u32>(), any::<bool>())
        .prop_map(move |(a, b, wide)| {
            (0..words)
                .map(|i| if wide && i % 2 == 1 { b } else { a })
                .collect()
        })
        .boxed();
    let runs = prop::collection::vec((any::<u32>(), 1usize..300, 0u8..3), 1..40)
        .prop_map(move |runs| {
            let mut page = Vec::with_capacity(words);
            for (v, n, kind) in runs.iter().cycle() {
                for k in 0..*n {
                    if page.len() == words {
                        return page;
                    }
                    page.push(match kind {
                        0 => *v,
                        1 => v.wrapping_add(k as u32),
                        _ => v.rotate_left(k as u32),
                    });
                }
            }
            page
        })
        .boxed();
    prop_oneof![random, pointers, small, text, sparse, single, runs].boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_codec_round_trips_4k_pages(page in page_strategy(1024)) {
        for (name, codec) in all_codecs(PageSize::Size4K) {
            round_trip(name, codec.as_ref(), &page);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "16 KiB pages under miri: corpus_pages_round_trip_as_16k_pages")]
    fn every_codec_round_trips_16k_pages(page in page_strategy(4096)) {
        for (name, codec) in all_codecs(PageSize::Size16K) {
            round_trip(name, codec.as_ref(), &page);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "under miri both paths are the portable one")]
    fn all_wkdm_paths_write_the_same_bytes(page in page_strategy(1024), budget in 0usize..4200) {
        assert_paths_agree(PageSize::Size4K, &page, budget);
    }

    #[test]
    fn single_value_detection_matches_a_plain_check(page in page_strategy(1024)) {
        let plain = page.iter().enumerate().all(|(i, w)| *w == page[i % 2]);
        prop_assert_eq!(single::detect(&page).is_some(), plain);
    }

    #[test]
    fn arbitrary_bytes_never_decode_differently_into_poison(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        header in any::<bool>(),
    ) {
        let mut input = bytes;
        if header && input.len() >= format::HEADER_LEN {
            // A valid header prefix gets the decoder past the first checks.
            input[..4].copy_from_slice(&[b'W', b'K', format::VERSION, 12]);
        }
        for (_, codec) in all_codecs(PageSize::Size4K) {
            for kind in [CodecKind::Wkdm, CodecKind::Lz4, CodecKind::Raw] {
                decode_is_deterministic(codec.as_ref(), kind, &input);
            }
        }
        // Both WKdm paths reach the same verdict and page on any input.
        let mut pages = Vec::new();
        for policy in [VectorPolicy::Portable, VectorPolicy::Detect] {
            let mut page = vec![codec_common::POISON; 1024];
            let r = wkdm::decompress_page(PageSize::Size4K, policy, &input, &mut page);
            pages.push((r, page));
        }
        prop_assert_eq!(&pages[0], &pages[1]);
    }
}

/// Compresses `page` on every WKdm path available here and checks identical results.
fn assert_paths_agree(size: PageSize, page: &[u32], budget: usize) {
    let paths = [VectorPolicy::Portable, VectorPolicy::Detect];
    let mut results = Vec::new();
    for path in paths {
        let mut out = vec![0u8; size.bytes() + 64];
        let len = wkdm::compress_page(size, path, page, &mut out, budget).unwrap();
        results.push(len.map(|n| out[..n].to_vec()));
    }
    assert_eq!(results[0], results[1], "paths {paths:?} disagree");
    if let Some(bytes) = &results[0] {
        for path in paths {
            let mut back = vec![codec_common::POISON; size.words()];
            wkdm::decompress_page(size, path, bytes, &mut back).unwrap();
            assert!(back == page, "{path:?} decode differs");
        }
    }
}

#[test]
fn detection_finds_the_vector_path_where_the_cpu_has_it() {
    #[cfg(target_arch = "x86_64")]
    if !cfg!(miri) && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("bmi2")
    {
        let avx512 = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512cd")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vbmi2")
            && std::is_x86_feature_detected!("gfni")
            && std::is_x86_feature_detected!("lzcnt");
        let path = VectorPolicy::Detect.resolve();
        if avx512 {
            // AVX2 when the AVX-512 path is not built (rustc older than 1.89).
            assert!(
                matches!(path, CodePath::X86Avx512 | CodePath::X86Avx2),
                "{path:?}"
            );
        } else {
            assert_eq!(path, CodePath::X86Avx2);
        }
        return;
    }
    assert_eq!(VectorPolicy::Detect.resolve(), CodePath::Portable);
}

#[test]
fn every_corpus_page_round_trips_through_every_codec() {
    let Some(pages) = corpus() else { return };
    for (name, codec) in all_codecs(PageSize::Size4K) {
        for (i, page) in pages.iter().enumerate() {
            let (_, stored) = round_trip(name, codec.as_ref(), page);
            assert!(stored.len() <= 4096, "{name} page {i}");
        }
    }
}

/// Compresses `page` into a buffer filled with `fill`; returns the result and the stored bytes.
fn compress_into_filled(codec: &dyn PageCodec, page: &[u32], fill: u8) -> (Encoded, Vec<u8>) {
    let mut out = vec![fill; codec.max_encoded_len()];
    let enc = codec.compress(page, &mut out).expect("compress");
    // Nothing is written for a single-value page.
    let len = if let Encoded::Stored { len, .. } = enc {
        len
    } else {
        0
    };
    out.truncate(len);
    (enc, out)
}

/// The codecs' output never depends on what the output buffer held before (a pool reuses its
/// scratch buffer, and what it stores must not carry an earlier page's bytes): every corpus
/// page, and sample pages, compressed into buffers of zeros, of ones and holding an earlier
/// page's encoding give the same result and the same bytes.
#[test]
fn compressed_bytes_do_not_depend_on_the_buffer() {
    let mut pages: Vec<Vec<u32>> = (0..64).map(sample_page).collect();
    if let Some(corpus) = corpus() {
        let step = if cfg!(miri) { 1 } else { 3 };
        pages.extend(corpus.iter().step_by(step).map(|p| p.to_vec()));
    }
    for (name, codec) in all_codecs(PageSize::Size4K) {
        let codec = codec.as_ref();
        let mut dirty = vec![0u8; codec.max_encoded_len()];
        for (i, page) in pages.iter().enumerate() {
            let clean = compress_into_filled(codec, page, 0);
            assert_eq!(
                clean,
                compress_into_filled(codec, page, 0xFF),
                "{name} page {i}"
            );
            // A buffer still holding the previous page's encoding (and its leftovers).
            let enc = codec.compress(page, &mut dirty).expect("compress");
            assert_eq!(enc, clean.0, "{name} page {i}");
            assert_eq!(
                &dirty[..clean.1.len()],
                clean.1.as_slice(),
                "{name} page {i}"
            );
        }
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "minutes under miri; the 16 KiB path has no unsafe code of its own"
)]
fn corpus_pages_round_trip_as_16k_pages() {
    let Some(pages) = corpus() else { return };
    for (name, codec) in all_codecs(PageSize::Size16K) {
        for group in pages.chunks_exact(4) {
            let page: Vec<u32> = group.iter().flatten().copied().collect();
            round_trip(name, codec.as_ref(), &page);
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "under miri both paths are the portable one")]
fn wkdm_paths_agree_on_the_corpus() {
    let Some(pages) = corpus() else { return };
    for page in &pages {
        assert_paths_agree(PageSize::Size4K, page, 4095);
        assert_paths_agree(PageSize::Size4K, page, 1500);
    }
    for group in pages.chunks_exact(4) {
        let page: Vec<u32> = group.iter().flatten().copied().collect();
        assert_paths_agree(PageSize::Size16K, &page, 16383);
    }
}

/// Stored size of a page for the ratio: single-value pages cost a value-table entry (8 bytes).
fn stored_len(codec: &dyn PageCodec, page: &[u32], out: &mut [u8]) -> usize {
    match codec.compress(page, out).unwrap() {
        Encoded::SingleValue(_) => 8,
        Encoded::Stored { len, .. } => len,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a ratio over the handful of pages miri can afford says nothing"
)]
fn corpus_ratios_meet_the_goals() {
    let Some(pages) = corpus() else { return };
    let input = (pages.len() * 4096) as f64;
    let mut lz4_total = 0usize;
    let mut buf = vec![0u8; lz4_flex::block::get_maximum_output_size(4096)];
    for page in &pages {
        let bytes: Vec<u8> = page.iter().flat_map(|w| w.to_le_bytes()).collect();
        lz4_total += lz4_flex::block::compress_into(&bytes, &mut buf).unwrap();
    }
    let lz4_ratio = input / lz4_total as f64;
    let ratio = |codec: &dyn PageCodec| {
        let mut out = vec![0u8; codec.max_encoded_len()];
        let total: usize = pages.iter().map(|p| stored_len(codec, p, &mut out)).sum();
        input / total as f64
    };
    let hybrid = ratio(&Hybrid::new(PageSize::Size4K, VectorPolicy::Portable));
    let best = ratio(&Best::new(PageSize::Size4K, VectorPolicy::Portable));
    let wk = ratio(&Wkdm::new(PageSize::Size4K, VectorPolicy::Portable));
    eprintln!("ratios: lz4_flex {lz4_ratio:.3}, wkdm {wk:.3}, hybrid {hybrid:.3}, best {best:.3}");
    assert!(
        hybrid >= 0.85 * lz4_ratio,
        "hybrid {hybrid} vs lz4 {lz4_ratio}"
    );
    assert!(best >= lz4_ratio, "best {best} vs lz4 {lz4_ratio}");
}

fn encode_wkdm(page: &[u32]) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let len = wkdm::compress_page(
        PageSize::Size4K,
        VectorPolicy::Portable,
        page,
        &mut out,
        4095,
    )
    .unwrap()
    .expect("compressible");
    out.truncate(len);
    out
}

fn sample_page(seed: u32) -> Vec<u32> {
    let mut x = seed | 1;
    (0..1024u32)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 5 {
                0 => 0,
                1 => 0x5500_0000 + (x & 0xfff),
                2 => i,
                3 => 0x0000_7f3a,
                _ => x,
            }
        })
        .collect()
}

#[test]
fn truncated_wkdm_streams_are_errors() {
    let wk = Wkdm::new(PageSize::Size4K, VectorPolicy::Portable);
    let enc = encode_wkdm(&sample_page(7));
    let step = if cfg!(miri) { 401 } else { 1 };
    for cut in (0..enc.len()).step_by(step) {
        let mut out = vec![codec_common::POISON; 1024];
        let r = wk.decompress(CodecKind::Wkdm, &enc[..cut], &mut out);
        assert!(r.is_err(), "prefix of {cut} bytes decoded");
        assert!(out.iter().all(|w| *w == 0), "failed decode left old bytes");
    }
    let mut long = enc.clone();
    long.push(0);
    let mut out = vec![0u32; 1024];
    assert_eq!(
        wk.decompress(CodecKind::Wkdm, &long, &mut out),
        Err(DecodeError::Corrupt)
    );
}

#[test]
fn corrupt_wkdm_headers_are_errors() {
    let wk = Wkdm::new(PageSize::Size4K, VectorPolicy::Portable);
    let enc = encode_wkdm(&sample_page(9));
    let mut out = vec![0u32; 1024];
    for (byte, value) in [(0, b'X'), (1, b'X'), (2, 9), (3, 14), (10, 1), (11, 1)] {
        let mut bad = enc.clone();
        bad[byte] = value;
        assert_eq!(
            wk.decompress(CodecKind::Wkdm, &bad, &mut out),
            Err(DecodeError::Corrupt),
            "byte {byte}"
        );
    }
    // Counts that disagree with the tags (the length is kept consistent).
    let mut bad = enc.clone();
    let partials = u16::from_le_bytes([bad[8], bad[9]]);
    if partials >= 4 {
        bad[8..10].copy_from_slice(&(partials - 4).to_le_bytes());
        bad.truncate(bad.len() - 5);
        assert!(wk.decompress(CodecKind::Wkdm, &bad, &mut out).is_err());
    }
}

#[test]
fn flipped_bits_decode_deterministically() {
    let codecs = all_codecs(PageSize::Size4K);
    let page = sample_page(11);
    let flips = if cfg!(miri) { 2 } else { 3000 };
    for (name, codec) in &codecs {
        let mut out = vec![0u8; codec.max_encoded_len()];
        let Encoded::Stored { kind, len } = codec.compress(&page, &mut out).unwrap() else {
            panic!("{name}: sample page is not single-valued");
        };
        let enc = &out[..len];
        let mut x = 0x1234_5678u32;
        for _ in 0..flips {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut bad = enc.to_vec();
            let at = x as usize % bad.len();
            bad[at] ^= 1 << (x >> 29);
            decode_is_deterministic(codec.as_ref(), kind, &bad);
        }
    }
}

#[test]
fn wrong_codec_and_wrong_page_size_are_errors() {
    let page = sample_page(13);
    let enc = encode_wkdm(&page);
    let mut out4 = vec![0u32; 1024];
    let mut out16 = vec![0u32; 4096];
    let wk16 = Wkdm::new(PageSize::Size16K, VectorPolicy::Portable);
    assert_eq!(
        wk16.decompress(CodecKind::Wkdm, &enc, &mut out16),
        Err(DecodeError::Corrupt)
    );
    let lz = Lz4::new(PageSize::Size4K);
    assert_eq!(
        lz.decompress(CodecKind::Wkdm, &enc, &mut out4),
        Err(DecodeError::UnsupportedCodec)
    );
    assert!(lz.decompress(CodecKind::Lz4, &enc, &mut out4).is_err());
    let wk = Wkdm::new(PageSize::Size4K, VectorPolicy::Portable);
    assert_eq!(
        wk.decompress(CodecKind::Lz4, &enc, &mut out4),
        Err(DecodeError::UnsupportedCodec)
    );
    // An LZ4 block of a 4 KiB page decodes to the wrong length for a 16 KiB codec.
    let mut lz_out = vec![0u8; lz.max_encoded_len()];
    let Encoded::Stored { len, .. } = lz.compress(&page, &mut lz_out).unwrap() else {
        panic!("not stored");
    };
    let lz16 = Lz4::new(PageSize::Size16K);
    assert_eq!(
        lz16.decompress(CodecKind::Lz4, &lz_out[..len], &mut out16),
        Err(DecodeError::WrongLength)
    );
    // Raw pages must be exactly one page.
    assert_eq!(
        wk.decompress(CodecKind::Raw, &[0; 4095], &mut out4),
        Err(DecodeError::WrongLength)
    );
    // Output slices of the wrong length.
    for (_, codec) in all_codecs(PageSize::Size4K) {
        assert_eq!(
            codec.decompress(CodecKind::Wkdm, &enc, &mut out16),
            Err(DecodeError::BadPageLength {
                expected: 1024,
                actual: 4096
            })
        );
    }
}

#[test]
fn compress_checks_its_arguments() {
    for (name, codec) in all_codecs(PageSize::Size4K) {
        let mut out = vec![0u8; codec.max_encoded_len()];
        assert_eq!(
            codec.compress(&[0; 1023], &mut out),
            Err(CompressError::BadPageLength {
                expected: 1024,
                actual: 1023
            }),
            "{name}"
        );
        let need = codec.max_encoded_len();
        assert_eq!(
            codec.compress(&[0; 1024], &mut out[..need - 1]),
            Err(CompressError::OutputTooSmall {
                needed: need,
                actual: need - 1
            }),
            "{name}"
        );
    }
}

#[test]
fn incompressible_pages_are_stored_raw_and_counted() {
    let mut x = 0x9e37_79b9u32;
    let page: Vec<u32> = (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        })
        .collect();
    let hybrid = Hybrid::new(PageSize::Size4K, VectorPolicy::Portable);
    let (enc, stored) = round_trip("hybrid", &hybrid, &page);
    assert_eq!(
        enc,
        Encoded::Stored {
            kind: CodecKind::Raw,
            len: 4096
        }
    );
    assert_eq!(stored.len(), 4096);
    let s = hybrid.stats().snapshot();
    assert_eq!((s.raw_pages, s.wkdm.failures, s.lz4.attempts), (1, 1, 1));
    assert_eq!(s.decompressions, 2);
}

#[test]
fn hybrid_keeps_wkdm_below_the_threshold_and_the_smaller_above() {
    let page = sample_page(3);
    // XNU's exact policy (the forecast's own model is in `wkdm_reference.rs`).
    let hybrid = Hybrid::new(PageSize::Size4K, VectorPolicy::Portable).with_forecast(false);
    let (enc, _) = round_trip("hybrid", &hybrid, &page);
    let wk_len = encode_wkdm(&page).len();
    let lz = Lz4::new(PageSize::Size4K);
    let (lz_enc, _) = round_trip("lz4", &lz, &page);
    let Encoded::Stored { len: lz_len, .. } = lz_enc else {
        panic!()
    };
    assert!(
        wk_len > 2048,
        "the page exercises the fallback ({wk_len} bytes)"
    );
    let expect = if wk_len <= 2048 || wk_len <= lz_len {
        (CodecKind::Wkdm, wk_len)
    } else {
        (CodecKind::Lz4, lz_len)
    };
    let Encoded::Stored { kind, len } = enc else {
        panic!()
    };
    assert_eq!((kind, len), expect);
    // Threshold 0 is `Best`: always the smaller.
    let best = Best::new(PageSize::Size4K, VectorPolicy::Portable);
    let (enc, _) = round_trip("best", &best, &page);
    let Encoded::Stored { len, .. } = enc else {
        panic!()
    };
    assert_eq!(len, wk_len.min(lz_len));
    assert_eq!(best.stats().snapshot().lz4.attempts, 1);
}

#[test]
fn single_value_pages_are_reported_not_stored() {
    for (name, codec) in all_codecs(PageSize::Size4K) {
        let mut out = vec![0x77u8; codec.max_encoded_len()];
        let enc = codec.compress(&[0x1234_5678; 1024], &mut out).unwrap();
        assert!(
            matches!(enc, Encoded::SingleValue(v) if v.value == 0x1234_5678_1234_5678),
            "{name}: {enc:?}"
        );
        assert!(out.iter().all(|b| *b == 0x77), "{name} wrote output");
    }
}
