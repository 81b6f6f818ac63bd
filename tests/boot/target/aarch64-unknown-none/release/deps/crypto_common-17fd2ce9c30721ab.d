/work/main/tests/boot/target/aarch64-unknown-none/release/deps/crypto_common-17fd2ce9c30721ab.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/crypto-common-0.1.7/src/lib.rs

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libcrypto_common-17fd2ce9c30721ab.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/crypto-common-0.1.7/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/crypto-common-0.1.7/src/lib.rs:
