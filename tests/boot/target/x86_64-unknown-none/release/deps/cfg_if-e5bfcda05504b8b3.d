/work/main/tests/boot/target/x86_64-unknown-none/release/deps/cfg_if-e5bfcda05504b8b3.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libcfg_if-e5bfcda05504b8b3.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs:
