/work/main/tests/boot/target/x86_64-unknown-none/release/deps/machvm_boot_x86_64-97491b47f06c154e.d: /work/main/clippy.toml x86_64/src/main.rs x86_64/src/boot.rs x86_64/src/mmu.rs x86_64/src/serial.rs x86_64/src/smp.rs x86_64/src/trap.rs Cargo.toml

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libmachvm_boot_x86_64-97491b47f06c154e.rmeta: /work/main/clippy.toml x86_64/src/main.rs x86_64/src/boot.rs x86_64/src/mmu.rs x86_64/src/serial.rs x86_64/src/smp.rs x86_64/src/trap.rs Cargo.toml

/work/main/clippy.toml:
x86_64/src/main.rs:
x86_64/src/boot.rs:
x86_64/src/mmu.rs:
x86_64/src/serial.rs:
x86_64/src/smp.rs:
x86_64/src/trap.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
