#![no_main]
//! Compress → decompress identity for arbitrary pages through every codec and code path,
//! byte-identical WKdm output from the portable and the vector path at any budget, and the
//! same codec and bytes from the hybrid on every path at any threshold (WKdm's forecast
//! decides alike everywhere).

use libfuzzer_sys::fuzz_target;
use machvm_compressor::codec::wkdm;
use machvm_compressor::codec::{
    Best, Encoded, Hybrid, Lz4, PageCodec, PageSize, VectorPolicy, Wkdm,
};

const POISON: u32 = 0xA5A5_5A5A;

/// The policies to compare: portable, run-time detection (AVX-512 where present) and, where
/// the CPU has it, the AVX2 path explicitly (detection would hide it behind AVX-512).
fn policies() -> Vec<VectorPolicy> {
    let mut v = vec![VectorPolicy::Portable, VectorPolicy::Detect];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("bmi2")
        && std::is_x86_feature_detected!("popcnt")
    {
        // SAFETY: the features were detected on this CPU.
        v.push(VectorPolicy::Assume(unsafe {
            machvm_compressor::codec::CpuFeatures::none().with_x86_avx2_bmi2()
        }));
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let size = if selector & 1 == 0 {
        PageSize::Size4K
    } else {
        PageSize::Size16K
    };
    // The bytes become the page's words, repeated to fill it (zeros when there are none), so
    // short inputs give structured pages.
    let words = size.words();
    let mut page = vec![0u32; words];
    let src: Vec<u32> = rest
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect();
    if !src.is_empty() {
        for (w, s) in page.iter_mut().zip(src.iter().cycle()) {
            *w = *s;
        }
    }
    let mut codecs: Vec<Box<dyn PageCodec>> = policies()
        .into_iter()
        .map(|p| Box::new(Wkdm::new(size, p)) as Box<dyn PageCodec>)
        .collect();
    codecs.extend::<[Box<dyn PageCodec>; 5]>([
        Box::new(Lz4::new(size)),
        Box::new(Hybrid::new(size, VectorPolicy::Portable)),
        Box::new(Hybrid::new(size, VectorPolicy::Detect)),
        Box::new(Best::new(size, VectorPolicy::Portable)),
        Box::new(Best::new(size, VectorPolicy::Detect)),
    ]);
    for codec in &codecs {
        let mut out = vec![0u8; codec.max_encoded_len()];
        match codec.compress(&page, &mut out).unwrap() {
            Encoded::SingleValue(v) => {
                let mut back = vec![POISON; words];
                v.fill(&mut back);
                assert!(back == page);
            }
            Encoded::Stored { kind, len } => {
                assert!(len <= size.bytes());
                let mut back = vec![POISON; words];
                codec.decompress(kind, &out[..len], &mut back).unwrap();
                assert!(back == page, "{kind:?} round trip differs");
            }
            _ => unreachable!(),
        }
    }
    let budget = usize::from(selector >> 1) * size.bytes() / 100;
    let mut outs = Vec::new();
    for policy in policies() {
        let mut out = vec![0u8; size.bytes() + 64];
        let len = wkdm::compress_page(size, policy, &page, &mut out, budget).unwrap();
        outs.push(len.map(|n| out[..n].to_vec()));
    }
    for other in &outs[1..] {
        assert_eq!(&outs[0], other, "WKdm paths disagree");
    }
    let threshold = usize::from(selector >> 1) * size.bytes() / 100;
    let mut hybrids = Vec::new();
    for policy in policies() {
        let hybrid = Hybrid::new(size, policy).with_threshold(threshold);
        let mut out = vec![0u8; hybrid.max_encoded_len()];
        let encoded = hybrid.compress(&page, &mut out).unwrap();
        let bytes = match encoded {
            Encoded::Stored { len, .. } => out[..len].to_vec(),
            _ => Vec::new(),
        };
        hybrids.push((encoded, bytes));
    }
    for other in &hybrids[1..] {
        assert!(&hybrids[0] == other, "hybrid paths disagree at threshold {threshold}");
    }
});
