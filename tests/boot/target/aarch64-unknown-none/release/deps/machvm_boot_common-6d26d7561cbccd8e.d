/work/main/tests/boot/target/aarch64-unknown-none/release/deps/machvm_boot_common-6d26d7561cbccd8e.d: /work/main/clippy.toml common/src/lib.rs common/src/aslr.rs common/src/checks.rs common/src/cmdline.rs common/src/console.rs common/src/fault.rs common/src/heap.rs common/src/kmem.rs common/src/pool.rs common/src/report.rs common/src/shootdown.rs common/src/smp_job.rs common/src/space.rs common/src/vm.rs Cargo.toml

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libmachvm_boot_common-6d26d7561cbccd8e.rmeta: /work/main/clippy.toml common/src/lib.rs common/src/aslr.rs common/src/checks.rs common/src/cmdline.rs common/src/console.rs common/src/fault.rs common/src/heap.rs common/src/kmem.rs common/src/pool.rs common/src/report.rs common/src/shootdown.rs common/src/smp_job.rs common/src/space.rs common/src/vm.rs Cargo.toml

/work/main/clippy.toml:
common/src/lib.rs:
common/src/aslr.rs:
common/src/checks.rs:
common/src/cmdline.rs:
common/src/console.rs:
common/src/fault.rs:
common/src/heap.rs:
common/src/kmem.rs:
common/src/pool.rs:
common/src/report.rs:
common/src/shootdown.rs:
common/src/smp_job.rs:
common/src/space.rs:
common/src/vm.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
