/work/main/tests/boot/target/aarch64-unknown-none/release/deps/machvm_boot_aarch64-623040e204d91539.d: /work/main/clippy.toml aarch64/src/main.rs aarch64/src/boot.rs aarch64/src/exceptions.rs aarch64/src/mmu.rs aarch64/src/platform.rs aarch64/src/smp.rs Cargo.toml

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libmachvm_boot_aarch64-623040e204d91539.rmeta: /work/main/clippy.toml aarch64/src/main.rs aarch64/src/boot.rs aarch64/src/exceptions.rs aarch64/src/mmu.rs aarch64/src/platform.rs aarch64/src/smp.rs Cargo.toml

/work/main/clippy.toml:
aarch64/src/main.rs:
aarch64/src/boot.rs:
aarch64/src/exceptions.rs:
aarch64/src/mmu.rs:
aarch64/src/platform.rs:
aarch64/src/smp.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
