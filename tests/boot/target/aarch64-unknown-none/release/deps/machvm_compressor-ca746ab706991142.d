/work/main/tests/boot/target/aarch64-unknown-none/release/deps/machvm_compressor-ca746ab706991142.d: /work/main/crates/compressor/src/lib.rs /work/main/crates/compressor/src/codec/mod.rs /work/main/crates/compressor/src/codec/bytes.rs /work/main/crates/compressor/src/codec/hybrid.rs /work/main/crates/compressor/src/codec/lz4.rs /work/main/crates/compressor/src/codec/raw.rs /work/main/crates/compressor/src/codec/single.rs /work/main/crates/compressor/src/codec/stats.rs /work/main/crates/compressor/src/codec/vector.rs /work/main/crates/compressor/src/codec/wkdm/mod.rs /work/main/crates/compressor/src/codec/wkdm/decode.rs /work/main/crates/compressor/src/codec/wkdm/format.rs /work/main/crates/compressor/src/codec/wkdm/portable.rs /work/main/crates/compressor/src/pool/mod.rs /work/main/crates/compressor/src/pool/checksum.rs /work/main/crates/compressor/src/pool/compact.rs /work/main/crates/compressor/src/pool/config.rs /work/main/crates/compressor/src/pool/error.rs /work/main/crates/compressor/src/pool/handle.rs /work/main/crates/compressor/src/pool/memory.rs /work/main/crates/compressor/src/pool/segment.rs /work/main/crates/compressor/src/pool/state.rs /work/main/crates/compressor/src/pool/stats.rs /work/main/crates/compressor/src/pool/store.rs /work/main/crates/compressor/src/pool/table.rs /work/main/crates/compressor/src/pool/value_table.rs /work/main/crates/compressor/src/../README.md

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libmachvm_compressor-ca746ab706991142.rmeta: /work/main/crates/compressor/src/lib.rs /work/main/crates/compressor/src/codec/mod.rs /work/main/crates/compressor/src/codec/bytes.rs /work/main/crates/compressor/src/codec/hybrid.rs /work/main/crates/compressor/src/codec/lz4.rs /work/main/crates/compressor/src/codec/raw.rs /work/main/crates/compressor/src/codec/single.rs /work/main/crates/compressor/src/codec/stats.rs /work/main/crates/compressor/src/codec/vector.rs /work/main/crates/compressor/src/codec/wkdm/mod.rs /work/main/crates/compressor/src/codec/wkdm/decode.rs /work/main/crates/compressor/src/codec/wkdm/format.rs /work/main/crates/compressor/src/codec/wkdm/portable.rs /work/main/crates/compressor/src/pool/mod.rs /work/main/crates/compressor/src/pool/checksum.rs /work/main/crates/compressor/src/pool/compact.rs /work/main/crates/compressor/src/pool/config.rs /work/main/crates/compressor/src/pool/error.rs /work/main/crates/compressor/src/pool/handle.rs /work/main/crates/compressor/src/pool/memory.rs /work/main/crates/compressor/src/pool/segment.rs /work/main/crates/compressor/src/pool/state.rs /work/main/crates/compressor/src/pool/stats.rs /work/main/crates/compressor/src/pool/store.rs /work/main/crates/compressor/src/pool/table.rs /work/main/crates/compressor/src/pool/value_table.rs /work/main/crates/compressor/src/../README.md

/work/main/crates/compressor/src/lib.rs:
/work/main/crates/compressor/src/codec/mod.rs:
/work/main/crates/compressor/src/codec/bytes.rs:
/work/main/crates/compressor/src/codec/hybrid.rs:
/work/main/crates/compressor/src/codec/lz4.rs:
/work/main/crates/compressor/src/codec/raw.rs:
/work/main/crates/compressor/src/codec/single.rs:
/work/main/crates/compressor/src/codec/stats.rs:
/work/main/crates/compressor/src/codec/vector.rs:
/work/main/crates/compressor/src/codec/wkdm/mod.rs:
/work/main/crates/compressor/src/codec/wkdm/decode.rs:
/work/main/crates/compressor/src/codec/wkdm/format.rs:
/work/main/crates/compressor/src/codec/wkdm/portable.rs:
/work/main/crates/compressor/src/pool/mod.rs:
/work/main/crates/compressor/src/pool/checksum.rs:
/work/main/crates/compressor/src/pool/compact.rs:
/work/main/crates/compressor/src/pool/config.rs:
/work/main/crates/compressor/src/pool/error.rs:
/work/main/crates/compressor/src/pool/handle.rs:
/work/main/crates/compressor/src/pool/memory.rs:
/work/main/crates/compressor/src/pool/segment.rs:
/work/main/crates/compressor/src/pool/state.rs:
/work/main/crates/compressor/src/pool/stats.rs:
/work/main/crates/compressor/src/pool/store.rs:
/work/main/crates/compressor/src/pool/table.rs:
/work/main/crates/compressor/src/pool/value_table.rs:
/work/main/crates/compressor/src/../README.md:
