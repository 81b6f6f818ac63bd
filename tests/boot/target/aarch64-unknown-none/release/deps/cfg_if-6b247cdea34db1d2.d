/work/main/tests/boot/target/aarch64-unknown-none/release/deps/cfg_if-6b247cdea34db1d2.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libcfg_if-6b247cdea34db1d2.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs:
