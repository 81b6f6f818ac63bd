//! Shared helpers of the codec tests (included with `mod` by each test file that needs them).

#![allow(dead_code)] // Each test file uses a different subset.

use machvm_compressor::codec::{
    Best, CodecKind, Encoded, Hybrid, Lz4, PageCodec, PageSize, VectorPolicy, Wkdm,
};

/// Pages read from the corpus file: `MACHVM_CORPUS`, else the shared corpus next to the
/// repository. `None` (with a notice) when the file is absent.
pub fn corpus() -> Option<Vec<[u32; 1024]>> {
    let path = std::env::var_os("MACHVM_CORPUS").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/corpus/pages-4k.bin")
        },
        std::path::PathBuf::from,
    );
    let Ok(bytes) = read_pages(&path) else {
        eprintln!(
            "notice: corpus {} not found; corpus tests skipped",
            path.display()
        );
        return None;
    };
    bytes
        .chunks_exact(4096)
        .map(|chunk| {
            let mut page = [0u32; 1024];
            for (w, b) in page.iter_mut().zip(chunk.chunks_exact(4)) {
                *w = u32::from_le_bytes(b.try_into().unwrap());
            }
            page
        })
        .collect::<Vec<_>>()
        .into()
}

/// The corpus bytes; under miri (which interprets every byte copied) only four pages from
/// the middle.
fn read_pages(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    if !cfg!(miri) {
        return std::fs::read(path);
    }
    let mut f = std::fs::File::open(path)?;
    let pages = f.metadata()?.len() / 4096;
    f.seek(SeekFrom::Start(pages / 2 * 4096))?;
    let mut bytes = vec![0u8; 4 * 4096];
    let n = f.read(&mut bytes)?;
    bytes.truncate(n / 4096 * 4096);
    Ok(bytes)
}

/// Every codec of the crate for `size`, with the portable path and with run-time detection.
pub fn all_codecs(size: PageSize) -> Vec<(&'static str, Box<dyn PageCodec>)> {
    if cfg!(miri) {
        // Detection resolves to the portable path under miri: the others would repeat it.
        return vec![
            (
                "wkdm-portable",
                Box::new(Wkdm::new(size, VectorPolicy::Portable)),
            ),
            ("lz4", Box::new(Lz4::new(size))),
            (
                "hybrid-portable",
                Box::new(Hybrid::new(size, VectorPolicy::Portable)),
            ),
        ];
    }
    vec![
        (
            "wkdm-portable",
            Box::new(Wkdm::new(size, VectorPolicy::Portable)),
        ),
        (
            "wkdm-detect",
            Box::new(Wkdm::new(size, VectorPolicy::Detect)),
        ),
        ("lz4", Box::new(Lz4::new(size))),
        (
            "hybrid-portable",
            Box::new(Hybrid::new(size, VectorPolicy::Portable)),
        ),
        (
            "hybrid-detect",
            Box::new(Hybrid::new(size, VectorPolicy::Detect)),
        ),
        (
            "best-portable",
            Box::new(Best::new(size, VectorPolicy::Portable)),
        ),
        (
            "best-detect",
            Box::new(Best::new(size, VectorPolicy::Detect)),
        ),
    ]
}

/// The value a poisoned output buffer is filled with.
pub const POISON: u32 = 0xA5A5_5A5A;

/// Compresses `page` with `codec`, decodes it into a zeroed and a poisoned page, checks both
/// equal `page`, and returns what compression produced with the stored bytes.
pub fn round_trip(name: &str, codec: &dyn PageCodec, page: &[u32]) -> (Encoded, Vec<u8>) {
    let mut out = vec![0xEEu8; codec.max_encoded_len()];
    let enc = codec.compress(page, &mut out).expect("compress");
    let stored = match enc {
        Encoded::SingleValue(v) => {
            let mut back = vec![POISON; page.len()];
            v.fill(&mut back);
            assert_eq!(back, page, "{name}: single value");
            Vec::new()
        }
        Encoded::Stored { kind, len } => {
            assert!(
                len <= codec.page_size().bytes(),
                "{name}: {len} bytes stored"
            );
            if kind != CodecKind::Raw {
                assert!(
                    len < codec.page_size().bytes(),
                    "{name}: {kind:?} not smaller"
                );
            }
            let stored = out[..len].to_vec();
            for fill in [0, POISON] {
                let mut back = vec![fill; page.len()];
                codec
                    .decompress(kind, &stored, &mut back)
                    .unwrap_or_else(|e| panic!("{name}: decode {kind:?}: {e}"));
                assert!(back == page, "{name}: {kind:?} round trip differs");
            }
            stored
        }
        other => panic!("{name}: unexpected {other:?}"),
    };
    (enc, stored)
}

/// Decodes `input` as `kind` into a zeroed and a poisoned buffer; both results (and, on
/// success, both pages) must be identical. Returns whether decoding succeeded.
pub fn decode_is_deterministic(codec: &dyn PageCodec, kind: CodecKind, input: &[u8]) -> bool {
    let words = codec.page_size().words();
    let mut a = vec![0u32; words];
    let mut b = vec![POISON; words];
    let ra = codec.decompress(kind, input, &mut a);
    let rb = codec.decompress(kind, input, &mut b);
    assert_eq!(ra, rb, "results differ with the buffer's old contents");
    assert!(
        a == b,
        "output depends on the buffer's old contents ({ra:?})"
    );
    ra.is_ok()
}
