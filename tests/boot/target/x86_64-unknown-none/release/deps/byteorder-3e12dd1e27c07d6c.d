/work/main/tests/boot/target/x86_64-unknown-none/release/deps/byteorder-3e12dd1e27c07d6c.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/byteorder-1.5.0/src/lib.rs

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libbyteorder-3e12dd1e27c07d6c.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/byteorder-1.5.0/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/byteorder-1.5.0/src/lib.rs:
