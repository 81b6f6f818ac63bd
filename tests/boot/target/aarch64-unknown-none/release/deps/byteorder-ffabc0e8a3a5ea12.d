/work/main/tests/boot/target/aarch64-unknown-none/release/deps/byteorder-ffabc0e8a3a5ea12.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/byteorder-1.5.0/src/lib.rs

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libbyteorder-ffabc0e8a3a5ea12.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/byteorder-1.5.0/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/byteorder-1.5.0/src/lib.rs:
