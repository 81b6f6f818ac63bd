#![no_main]
//! Arbitrary bytes into every codec's decoder, as every codec kind and both page sizes, with
//! a zeroed and a poisoned output buffer: the results must agree (output never depends on the
//! buffer's old contents), and a page that decodes must survive a round trip.

use libfuzzer_sys::fuzz_target;
use machvm_compressor::codec::{
    Best, CodecKind, Encoded, Hybrid, Lz4, PageCodec, PageSize, VectorPolicy, Wkdm,
};

const POISON: u32 = 0xA5A5_5A5A;

fn codecs(size: PageSize) -> Vec<Box<dyn PageCodec>> {
    vec![
        Box::new(Wkdm::new(size, VectorPolicy::Portable)),
        Box::new(Wkdm::new(size, VectorPolicy::Detect)),
        Box::new(Lz4::new(size)),
        Box::new(Hybrid::new(size, VectorPolicy::Portable)),
        Box::new(Hybrid::new(size, VectorPolicy::Detect)),
        Box::new(Best::new(size, VectorPolicy::Detect)),
    ]
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
