/work/main/tests/boot/target/x86_64-unknown-none/release/deps/crypto_common-0418c9cd3aad9ca3.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/crypto-common-0.1.7/src/lib.rs

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libcrypto_common-0418c9cd3aad9ca3.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/crypto-common-0.1.7/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/crypto-common-0.1.7/src/lib.rs:
