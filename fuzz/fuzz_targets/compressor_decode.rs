#![no_main]
//! Arbitrary bytes into every codec's decoder, as every codec kind and both page sizes, with
//! a zeroed and a poisoned output buffer: the results must agree (output never depends on the
//! buffer's old contents), and a page that decodes must survive a round trip.

use libfuzzer_sys::fuzz_target;
use machvm_compressor::codec::{
    Best, CodecKind, Encoded, Hybrid, Lz4, PageCodec, PageSize, VectorPolicy, Wkdm,
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

fn codecs(size: PageSize) -> Vec<Box<dyn PageCodec>> {
    let mut v: Vec<Box<dyn PageCodec>> = policies()
        .into_iter()
        .map(|p| Box::new(Wkdm::new(size, p)) as Box<dyn PageCodec>)
        .collect();
    v.extend::<[Box<dyn PageCodec>; 4]>([
        Box::new(Lz4::new(size)),
        Box::new(Hybrid::new(size, VectorPolicy::Portable)),
        Box::new(Hybrid::new(size, VectorPolicy::Detect)),
        Box::new(Best::new(size, VectorPolicy::Detect)),
    ]);
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let size = if selector & 0x80 == 0 {
        PageSize::Size4K
    } else {
        PageSize::Size16K
    };
    let kind = match selector & 3 {
        0 | 1 => CodecKind::Wkdm,
        2 => CodecKind::Lz4,
        _ => CodecKind::Raw,
    };
    let words = size.words();
    let mut first: Option<(Result<(), _>, Vec<u32>)> = None;
    for codec in codecs(size) {
        let mut zeroed = vec![0u32; words];
        let mut poisoned = vec![POISON; words];
        let a = codec.decompress(kind, input, &mut zeroed);
        let b = codec.decompress(kind, input, &mut poisoned);
        assert_eq!(a, b);
        assert!(zeroed == poisoned, "output depends on the buffer");
        // Codecs that can decode `kind` agree with each other.
        if a != Err(machvm_compressor::codec::DecodeError::UnsupportedCodec) {
            match &first {
                None => first = Some((a, zeroed.clone())),
                Some((r, page)) => {
                    assert_eq!(*r, a);
                    assert!(*page == zeroed, "codecs decode differently");
                }
            }
        }
        if a.is_ok() {
            let mut out = vec![0u8; codec.max_encoded_len()];
            match codec.compress(&zeroed, &mut out).unwrap() {
                Encoded::SingleValue(v) => {
                    let mut back = vec![POISON; words];
                    v.fill(&mut back);
                    assert!(back == zeroed);
                }
                Encoded::Stored { kind, len } => {
                    let mut back = vec![POISON; words];
                    codec.decompress(kind, &out[..len], &mut back).unwrap();
                    assert!(back == zeroed);
                }
                _ => unreachable!(),
            }
        }
    }
});
