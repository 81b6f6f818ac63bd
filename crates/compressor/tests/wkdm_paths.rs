//! Agreement of the WKdm code paths: every vector path this CPU runs (AVX2, AVX-512) writes
//! the same bytes as the portable path for any page and budget, decodes any input to the
//! same result, and round-trips. Pages lean to what the vector paths find hard: many words
//! of one 16-word block on one dictionary slot, chains of partial matches, misses and zeros
//! interleaved. Paths the CPU lacks are skipped with a note.

#![cfg(not(miri))] // Vector paths only; under miri every policy is the portable path.

mod codec_common;

use codec_common::corpus;
use machvm_compressor::codec::wkdm::{self, format};
use machvm_compressor::codec::{
    CodePath, CpuFeatures, Encoded, Hybrid, PageCodec, PageSize, VectorPolicy,
};
use proptest::prelude::*;

/// The vector policies this CPU runs, besides the portable one.
fn vector_policies() -> Vec<VectorPolicy> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("bmi2")
            && std::is_x86_feature_detected!("popcnt")
        {
            // SAFETY: the features were detected on this CPU.
            v.push(VectorPolicy::Assume(unsafe {
                CpuFeatures::none().with_x86_avx2_bmi2()
            }));
        }
        if has_avx512() {
            // SAFETY: the features were detected on this CPU.
            let p = VectorPolicy::Assume(unsafe { CpuFeatures::none().with_x86_avx512() });
            if p.resolve() == CodePath::X86Avx512 {
                v.push(p);
            } else {
                eprintln!("note: AVX-512 path not built (rustc older than 1.89)");
            }
        } else {
            eprintln!(
                "note: this CPU lacks AVX-512 F/BW/CD/VL/VBMI2 or GFNI; AVX-512 checks skipped"
            );
        }
    }
    v
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512cd")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vbmi2")
        && std::is_x86_feature_detected!("gfni")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("bmi2")
        && std::is_x86_feature_detected!("popcnt")
        && std::is_x86_feature_detected!("lzcnt")
}

fn size_of(words: usize) -> PageSize {
    if words == 1024 {
        PageSize::Size4K
    } else {
        PageSize::Size16K
    }
}

/// Compresses `page` on every path with `budget` and checks identical results and round
/// trips on every path.
fn assert_paths_agree(page: &[u32], budget: usize) {
    let size = size_of(page.len());
    let compress = |policy| {
        let mut out = vec![0x5Au8; size.bytes() + 64];
        let len = wkdm::compress_page(size, policy, page, &mut out, budget).unwrap();
        len.map(|n| out[..n].to_vec())
    };
    let want = compress(VectorPolicy::Portable);
    for policy in vector_policies() {
        assert_eq!(
            compress(policy),
            want,
            "{policy:?} disagrees, budget {budget}"
        );
    }
    if let Some(bytes) = &want {
        for policy in vector_policies() {
            let mut back = vec![codec_common::POISON; page.len()];
            wkdm::decompress_page(size, policy, bytes, &mut back).unwrap();
            assert!(back == page, "{policy:?} decode differs");
        }
    }
}

/// Decodes `input` on every path and checks the same result and page as the portable path.
fn assert_decoders_agree(size: PageSize, input: &[u8]) {
    let decode = |policy| {
        let mut page = vec![codec_common::POISON; size.words()];
        let r = wkdm::decompress_page(size, policy, input, &mut page);
        (r, page)
    };
    let want = decode(VectorPolicy::Portable);
    for policy in vector_policies() {
        let got = decode(policy);
        assert_eq!(got.0, want.0, "{policy:?} verdict differs");
        assert!(got.1 == want.1, "{policy:?} page differs");
    }
}

/// Upper-22-bit values that hash to `slot`.
fn values_on_slot(slot: usize, n: usize) -> Vec<u32> {
    (1u32..)
        .map(|u| u << 10)
        .filter(|&w| format::slot(w) == slot)
        .take(n)
        .collect()
}

/// Pages whose blocks crowd a few dictionary slots: each word is zero, or a value of a few
/// upper parts that share one or two slots, with random low bits (partial matches), the
/// same word again (exact) or a new upper part (miss).
fn conflict_page(words: usize) -> BoxedStrategy<Vec<u32>> {
    (
        0usize..16,
        0usize..16,
        prop::collection::vec((0u8..8, 0usize..6, any::<u16>()), words),
    )
        .prop_map(move |(s0, s1, picks)| {
            let a = values_on_slot(s0, 3);
            let b = values_on_slot(s1, 3);
            let mut prev = 0u32;
            picks
                .into_iter()
                .map(|(kind, which, low)| {
                    let upper = if which < 3 { a[which] } else { b[which - 3] };
                    let w = match kind {
                        0 => 0,
                        1 | 2 => prev,
                        3 | 4 => upper | (u32::from(low) & 0x3FF),
                        // A neighbour of `upper`: usually a miss on another slot.
                        5 => upper | (u32::from(low) & 0x3FF) | (0x400 * u32::from(low >> 12)),
                        6 => upper,
                        _ => (u32::from(low) << 16) | u32::from(low),
                    };
                    prev = w;
                    w
                })
                .collect()
        })
        .boxed()
}

/// Random pages, sparse pages and the conflict pages above.
fn page_strategy(words: usize) -> BoxedStrategy<Vec<u32>> {
    let random = prop::collection::vec(any::<u32>(), words).boxed();
    let low_entropy = prop::collection::vec((0u32..4, 0u32..64), words)
        .prop_map(|v| v.into_iter().map(|(h, l)| (h << 24) | l).collect())
        .boxed();
    let sparse = prop::collection::vec((0u32..16, any::<u32>()), words)
        .prop_map(|v| {
            v.into_iter()
                .map(|(k, w)| if k == 0 { w } else { 0 })
                .collect()
        })
        .boxed();
    prop_oneof![
        1 => random,
        2 => low_entropy,
        1 => sparse,
        4 => conflict_page(words),
    ]
    .boxed()
}

/// Compresses `page` with the hybrid codec at `threshold` on every path and checks the same
/// codec is kept with the same bytes: WKdm's forecast gives up on the same pages everywhere.
fn assert_hybrid_paths_agree(page: &[u32], threshold: usize) {
    let size = size_of(page.len());
    let compress = |policy| {
        let hybrid = Hybrid::new(size, policy).with_threshold(threshold);
        let mut out = vec![0x5Au8; hybrid.max_encoded_len()];
        let encoded = hybrid.compress(page, &mut out).unwrap();
        let bytes = match encoded {
            Encoded::Stored { len, .. } => out[..len].to_vec(),
            _ => Vec::new(),
        };
        (encoded, bytes)
    };
    let portable = compress(VectorPolicy::Portable);
    for policy in vector_policies() {
        assert!(
            compress(policy) == portable,
            "hybrid at threshold {threshold}: {policy:?} differs from the portable path"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn hybrid_paths_agree(page in page_strategy(1024), threshold in 0usize..4200) {
        assert_hybrid_paths_agree(&page, threshold);
        assert_hybrid_paths_agree(&page, 2048);
    }

    #[test]
    fn paths_agree_on_4k_pages(page in page_strategy(1024), budget in 0usize..4200) {
        assert_paths_agree(&page, budget);
        assert_paths_agree(&page, 4095);
    }

    #[test]
    fn paths_agree_on_16k_pages(page in page_strategy(4096), budget in 0usize..16500) {
        assert_paths_agree(&page, budget);
        assert_paths_agree(&page, 16383);
    }

    #[test]
    fn paths_decode_mutated_streams_alike(
        page in page_strategy(1024),
        flips in prop::collection::vec((any::<usize>(), 0u8..8), 0..6),
        cut in any::<usize>(),
        truncate in any::<bool>(),
    ) {
        let mut out = vec![0u8; 4096];
        let Some(len) = wkdm::compress_page(
            PageSize::Size4K, VectorPolicy::Portable, &page, &mut out, 4096,
        ).unwrap() else {
            return Ok(());
        };
        let mut enc = out[..len].to_vec();
        // Leave the header alone half the time, so the flips reach the streams.
        for (at, bit) in flips {
            let at = format::HEADER_LEN + at % (enc.len() - format::HEADER_LEN);
            enc[at] ^= 1 << bit;
        }
        if truncate {
            enc.truncate(cut % (enc.len() + 1));
        }
        assert_decoders_agree(PageSize::Size4K, &enc);
    }

    #[test]
    fn paths_decode_arbitrary_streams_alike(
        body in prop::collection::vec(any::<u8>(), 0..5000),
        counts in (0u16..1100, 0u16..1100, 0u16..1100),
        big in any::<bool>(),
    ) {
        let size = if big { PageSize::Size16K } else { PageSize::Size4K };
        let (m, i, p) = counts;
        let mut input = vec![b'W', b'K', format::VERSION, if big { 14 } else { 12 }];
        for v in [m, i, p.min(i), 0] {
            input.extend_from_slice(&v.to_le_bytes());
        }
        // Make the length match the header about half the time.
        let c = format::Counts {
            misses: m.into(),
            indices: i.into(),
            partials: p.min(i).into(),
        };
        let want = c.encoded_len(size.words()) - format::HEADER_LEN;
        let mut body = body;
        if want <= 20_000 && body.len() % 2 == 0 {
            body.resize(want, 0x3C);
        }
        input.extend_from_slice(&body);
        assert_decoders_agree(size, &input);
    }
}

#[test]
fn worst_case_conflicts_agree() {
    // Every word of every block on one slot: all misses, all partials, alternating.
    for slot in 0..16 {
        let v = values_on_slot(slot, 16);
        let pages: [Vec<u32>; 4] = [
            (0..1024).map(|i| v[i % 16]).collect(),
            (0..1024).map(|i| v[0] | (i as u32 & 0x3FF)).collect(),
            (0..1024)
                .map(|i| if i % 2 == 0 { v[i % 16] } else { v[0] | 7 })
                .collect(),
            (0..4096)
                .map(|i| match i % 3 {
                    0 => 0,
                    1 => v[(i / 3) % 4] | (i as u32 & 0x3FF),
                    _ => v[(i / 7) % 4],
                })
                .collect(),
        ];
        for page in &pages {
            let full = if page.len() == 1024 { 4095 } else { 16383 };
            for budget in [full, full / 2, 300, 0] {
                assert_paths_agree(page, budget);
            }
        }
    }
}

/// `n` partial matches of one word (after its miss), then zeros; and `n` exact matches.
fn chunk_edge_pages(words: usize, n: usize) -> [Vec<u32>; 2] {
    let v = values_on_slot(5, 1)[0];
    [
        (0..words)
            .map(|i| {
                if i <= n {
                    v | ((i as u32 * 7 + 1) & 0x3FF)
                } else {
                    0
                }
            })
            .collect(),
        (0..words).map(|i| if i <= n { v | 3 } else { 0 }).collect(),
    ]
}

#[test]
fn stream_lengths_around_chunk_edges_agree() {
    // Index and low-part streams ending at every offset around the 32- and 64-entry chunks
    // a vector path may pack and unpack them in, up to a whole page of them.
    for words in [1024usize, 4096] {
        let full = 4 * words - 1;
        let mut ns: Vec<usize> = (0..=70).collect();
        ns.extend(words - 70..words);
        for n in ns {
            for page in chunk_edge_pages(words, n) {
                assert_paths_agree(&page, full);
            }
        }
    }
}

#[test]
fn headers_that_disagree_with_the_tags_are_refused_alike() {
    // The header claims a few more or fewer indices or partial words than the tags hold,
    // with the length made to match it, so the decoders see it only through the tags.
    for (words, size) in [(1024usize, PageSize::Size4K), (4096, PageSize::Size16K)] {
        for n in [1usize, 31, 32, 33, 64, 65, words - 2] {
            for page in chunk_edge_pages(words, n) {
                let mut out = vec![0u8; 4 * words];
                let len =
                    wkdm::compress_page(size, VectorPolicy::Portable, &page, &mut out, 4 * words)
                        .unwrap()
                        .unwrap();
                let enc = &out[..len];
                let field = |i: usize| usize::from(u16::from_le_bytes([enc[i], enc[i + 1]]));
                let counts = format::Counts {
                    misses: field(4),
                    indices: field(6),
                    partials: field(8),
                };
                for (di, dp) in [
                    (1isize, 0isize),
                    (-1, 0),
                    (0, 1),
                    (0, -1),
                    (2, 2),
                    (-1, -1),
                    (64, 33),
                ] {
                    let (Some(indices), Some(partials)) = (
                        counts.indices.checked_add_signed(di),
                        counts.partials.checked_add_signed(dp),
                    ) else {
                        continue;
                    };
                    let c = format::Counts {
                        indices,
                        partials,
                        ..counts
                    };
                    let mut input = enc[..format::HEADER_LEN + words / 4 + 4 * c.misses].to_vec();
                    input[6..8].copy_from_slice(&(indices as u16).to_le_bytes());
                    input[8..10].copy_from_slice(&(partials as u16).to_le_bytes());
                    input.resize(c.encoded_len(words), 0);
                    assert_decoders_agree(size, &input);
                }
            }
        }
    }
}

#[test]
fn every_corpus_page_agrees_at_every_budget_step() {
    let Some(pages) = corpus() else { return };
    for page in &pages {
        for budget in [4095, 3000, 2000, 1200, 600, 268] {
            assert_paths_agree(page, budget);
        }
    }
    for group in pages.chunks_exact(4) {
        let page: Vec<u32> = group.iter().flatten().copied().collect();
        for budget in [16383, 8000, 2000] {
            assert_paths_agree(&page, budget);
        }
    }
}

#[test]
fn hybrid_paths_agree_on_the_corpus() {
    let Some(pages) = corpus() else { return };
    for page in &pages {
        assert_hybrid_paths_agree(page, 2048);
    }
    for group in pages.chunks_exact(4).step_by(3) {
        let page: Vec<u32> = group.iter().flatten().copied().collect();
        for threshold in [12288, 6000] {
            assert_hybrid_paths_agree(&page, threshold);
        }
    }
}

#[test]
fn detection_prefers_avx512() {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        let p = VectorPolicy::Detect.resolve();
        // `X86Avx2` when the AVX-512 path is not built (rustc older than 1.89).
        assert!(
            matches!(p, CodePath::X86Avx512 | CodePath::X86Avx2),
            "{p:?}"
        );
        return;
    }
    eprintln!("note: this CPU lacks AVX-512; detection checked in tests/codec.rs only");
}
