//! The portable WKdm compressor against a plain reference encoder written from the format's
//! documentation (one word at a time, no passes, no scratch tricks): same bytes for every
//! page and budget, `None` exactly when the encoding passes the budget, and the portable
//! decoder returns the page. The portable hybrid codec against a model built on the same
//! encoder: WKdm's forecast gives up exactly where the counts of a quarter, half or three
//! quarters of the page, scaled to the page, pass the threshold. Runs on every target (the
//! vector-path agreement is `wkdm_paths.rs`).

mod codec_common;

use machvm_compressor::codec::wkdm::{self, format};
use machvm_compressor::codec::{
    CodecKind, Encoded, Hybrid, Lz4, PageCodec, PageSize, VectorPolicy,
};

/// The encoding of `page` per the format documentation.
fn reference(page: &[u32]) -> Vec<u8> {
    reference_with_quarters(page).0
}

/// [`reference`], with the counts (misses, indices, partials) after each quarter of the page.
fn reference_with_quarters(page: &[u32]) -> (Vec<u8>, Vec<[usize; 3]>) {
    let words = page.len();
    let mut dict = [0u32; 16];
    let mut tags = vec![0u8; words / 4];
    let (mut misses, mut indices, mut low8, mut low2) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut partials = 0usize;
    let mut quarters = Vec::new();
    for (i, &w) in page.iter().enumerate() {
        let tag = if w == 0 {
            format::TAG_ZERO
        } else {
            let s = format::slot(w);
            let d = dict[s];
            if d == w {
                indices.push(s as u8);
                format::TAG_EXACT
            } else if d >> format::LOW_BITS == w >> format::LOW_BITS {
                dict[s] = w;
                indices.push(s as u8);
                low8.push(w as u8);
                if partials % 4 == 0 {
                    low2.push(0u8);
                }
                *low2.last_mut().unwrap() |= (((w >> 8) & 3) as u8) << (2 * (partials % 4));
                partials += 1;
                format::TAG_PARTIAL
            } else {
                dict[s] = w;
                misses.extend_from_slice(&w.to_le_bytes());
                format::TAG_MISS
            }
        };
        tags[i / 4] |= (tag as u8) << (2 * (i % 4));
        if (i + 1) % (words / 4) == 0 {
            quarters.push([misses.len() / 4, indices.len(), partials]);
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&format::MAGIC);
    out.push(format::VERSION);
    out.push((words.trailing_zeros() + 2) as u8);
    for n in [misses.len() / 4, indices.len(), partials, 0] {
        out.extend_from_slice(&(n as u16).to_le_bytes());
    }
    out.extend_from_slice(&tags);
    out.extend_from_slice(&misses);
    for pair in indices.chunks(2) {
        out.push(pair[0] | pair.get(1).map_or(0, |&h| h << 4));
    }
    out.extend_from_slice(&low8);
    out.extend_from_slice(&low2);
    (out, quarters)
}

/// A small deterministic generator (xorshift).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A page whose words lean to the classes in `mix` (per mille of zero, repeat, near-repeat
/// words; the rest random), with repeats drawn from a few recent words so that slots collide.
fn page(words: usize, mix: [u64; 3], state: &mut u64) -> Vec<u32> {
    let mut recent = [0x1234_5678u32; 8];
    let mut out = Vec::with_capacity(words);
    for _ in 0..words {
        let r = next(state) % 1000;
        let pick = recent[(next(state) % 8) as usize];
        let w = if r < mix[0] {
            0
        } else if r < mix[0] + mix[1] {
            pick
        } else if r < mix[0] + mix[1] + mix[2] {
            (pick & !format::LOW_MASK) | (next(state) as u32 & format::LOW_MASK)
        } else {
            next(state) as u32
        };
        recent[(next(state) % 8) as usize] = if w == 0 { pick } else { w };
        out.push(w);
    }
    out
}

fn check(words: &[u32], size: PageSize) {
    let expected = reference(words);
    let len = expected.len();
    let mut out = vec![0u8; len.max(4 * words.len()) + 64];
    // Budgets around the exact length, and far below it (early aborts at every run; under
    // miri, where each compression of a page takes most of a second, one of them).
    let mut budgets = vec![len, len.saturating_sub(1), len + 1, 4 * words.len()];
    if cfg!(miri) {
        budgets.push(len / 2);
    } else {
        budgets.extend((1..8).map(|k| len * k / 8));
    }
    for budget in budgets {
        out.fill(0xEE);
        let got =
            wkdm::compress_page(size, VectorPolicy::Portable, words, &mut out, budget).unwrap();
        if len <= budget {
            assert_eq!(got, Some(len), "budget {budget}");
            assert!(
                out[..len] == expected[..],
                "bytes differ from the reference"
            );
            let mut back = vec![0xA5A5_A5A5u32; words.len()];
            wkdm::decompress_page(size, VectorPolicy::Portable, &out[..len], &mut back).unwrap();
            assert!(back == words, "decode differs");
        } else {
            assert_eq!(got, None, "budget {budget}, length {len}");
        }
    }
    // An output buffer shorter than the encoding is refused like a budget.
    if len > 1 {
        let mut short = vec![0u8; len - 1];
        let got = wkdm::compress_page(size, VectorPolicy::Portable, words, &mut short, usize::MAX)
            .unwrap();
        assert_eq!(got, None);
    }
}

/// Mixes of word classes (per mille of zero, repeat and near-repeat words; the rest random)
/// for [`page`].
const MIXES: [[u64; 3]; 8] = [
    [0, 0, 0],
    [1000, 0, 0],
    [0, 1000, 0],
    [0, 0, 1000],
    [330, 240, 170],
    [100, 100, 700],
    [50, 800, 100],
    [600, 100, 50],
];

/// Calls `f` with `rounds` pages of every mix, 4 KiB and 16 KiB (under miri: one round of 4
/// KiB pages, each compression of a page taking most of a second there).
fn for_generated_pages(seed: u64, rounds: usize, mut f: impl FnMut(&[u32], PageSize)) {
    let mut state = seed;
    let rounds = if cfg!(miri) { 1 } else { rounds };
    for _ in 0..rounds {
        for mix in MIXES {
            f(&page(1024, mix, &mut state), PageSize::Size4K);
            if !cfg!(miri) {
                f(&page(4096, mix, &mut state), PageSize::Size16K);
            }
        }
    }
}

#[test]
fn portable_compressor_matches_the_reference() {
    for_generated_pages(0x9E37_79B9_7F4A_7C15, 6, check);
}

#[test]
fn portable_compressor_matches_the_reference_on_the_corpus() {
    let Some(pages) = codec_common::corpus() else {
        return;
    };
    let step = if cfg!(miri) { pages.len() } else { 7 };
    for page in pages.iter().step_by(step) {
        check(page, PageSize::Size4K);
    }
}

/// What the hybrid codec keeps for `page` (not a single-value page) at `threshold`, by the
/// documented policy: WKdm's output unless it is longer than the threshold, or WKdm gives up
/// (over a page, or forecast past the threshold at a quarter, half or three quarters); then
/// the shorter of WKdm's (if any) and LZ4's, raw when neither is shorter than the page.
fn hybrid_model(page: &[u32], size: PageSize, threshold: usize) -> (CodecKind, usize) {
    let (encoding, quarters) = reference_with_quarters(page);
    let words = page.len();
    let fixed = format::HEADER_LEN + words / 4;
    let forecast_passes = quarters[..3].iter().enumerate().any(|(q, c)| {
        let variable = 4 * c[0] + c[1] / 2 + c[2];
        fixed + variable * 4 / (q + 1) > threshold
    });
    let wk = (encoding.len() < size.bytes() && !forecast_passes).then_some(encoding.len());
    if let Some(w) = wk {
        if w <= threshold {
            return (CodecKind::Wkdm, w);
        }
    }
    let lz4 = Lz4::new(size);
    let mut out = vec![0u8; lz4.max_encoded_len()];
    let lz = match lz4.compress(page, &mut out).unwrap() {
        Encoded::Stored {
            kind: CodecKind::Lz4,
            len,
        } => Some(len),
        _ => None,
    };
    match (wk, lz) {
        (Some(w), Some(l)) if l < w => (CodecKind::Lz4, l),
        (None, Some(l)) => (CodecKind::Lz4, l),
        (Some(w), _) => (CodecKind::Wkdm, w),
        (None, None) => (CodecKind::Raw, size.bytes()),
    }
}

/// Checks the portable hybrid against [`hybrid_model`] (single-value pages, which the
/// codec reports without compressing, are left to `codec.rs`).
fn check_hybrid(page: &[u32], size: PageSize, thresholds: &[usize]) {
    for &threshold in thresholds {
        let hybrid = Hybrid::new(size, VectorPolicy::Portable).with_threshold(threshold);
        let mut out = vec![0u8; hybrid.max_encoded_len()];
        let Encoded::Stored { kind, len } = hybrid.compress(page, &mut out).unwrap() else {
            continue;
        };
        assert_eq!(
            (kind, len),
            hybrid_model(page, size, threshold),
            "threshold {threshold}"
        );
    }
}

#[test]
fn hybrid_forecast_follows_the_model() {
    if cfg!(miri) {
        // One page, two thresholds: miri checks the memory accesses, the native run the model.
        let mut state = 0x2545_F491_4F6C_DD1D;
        let page = page(1024, [330, 240, 170], &mut state);
        check_hybrid(&page, PageSize::Size4K, &[600, 2048]);
        return;
    }
    for_generated_pages(0x2545_F491_4F6C_DD1D, 4, |page, size| {
        let thresholds: &[usize] = match size {
            PageSize::Size4K => &[0, 600, 1200, 2048, 3000, 4096],
            _ => &[2400, 8000, 12288, 16384],
        };
        check_hybrid(page, size, thresholds);
    });
}

#[test]
fn hybrid_forecast_follows_the_model_on_the_corpus() {
    let Some(pages) = codec_common::corpus() else {
        return;
    };
    let (step, thresholds): (_, &[usize]) = if cfg!(miri) {
        (pages.len(), &[2048])
    } else {
        (5, &[1024, 2048, 3072])
    };
    for page in pages.iter().step_by(step) {
        check_hybrid(page, PageSize::Size4K, thresholds);
    }
}
