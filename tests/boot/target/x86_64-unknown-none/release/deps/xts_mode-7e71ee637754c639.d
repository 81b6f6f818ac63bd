/work/main/tests/boot/target/x86_64-unknown-none/release/deps/xts_mode-7e71ee637754c639.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xts-mode-0.5.1/src/lib.rs

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libxts_mode-7e71ee637754c639.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xts-mode-0.5.1/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xts-mode-0.5.1/src/lib.rs:
