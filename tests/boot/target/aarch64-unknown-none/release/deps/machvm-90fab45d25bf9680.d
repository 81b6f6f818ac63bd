/work/main/tests/boot/target/aarch64-unknown-none/release/deps/machvm-90fab45d25bf9680.d: /work/main/crates/machvm/src/lib.rs /work/main/crates/machvm/src/compressed.rs /work/main/crates/machvm/src/frames.rs /work/main/crates/machvm/src/kmem.rs /work/main/crates/machvm/src/placement.rs /work/main/crates/machvm/src/pmap.rs /work/main/crates/machvm/src/pressure.rs /work/main/crates/machvm/src/report.rs /work/main/crates/machvm/src/shootdown.rs /work/main/crates/machvm/src/system.rs /work/main/crates/machvm/src/../README.md

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libmachvm-90fab45d25bf9680.rmeta: /work/main/crates/machvm/src/lib.rs /work/main/crates/machvm/src/compressed.rs /work/main/crates/machvm/src/frames.rs /work/main/crates/machvm/src/kmem.rs /work/main/crates/machvm/src/placement.rs /work/main/crates/machvm/src/pmap.rs /work/main/crates/machvm/src/pressure.rs /work/main/crates/machvm/src/report.rs /work/main/crates/machvm/src/shootdown.rs /work/main/crates/machvm/src/system.rs /work/main/crates/machvm/src/../README.md

/work/main/crates/machvm/src/lib.rs:
/work/main/crates/machvm/src/compressed.rs:
/work/main/crates/machvm/src/frames.rs:
/work/main/crates/machvm/src/kmem.rs:
/work/main/crates/machvm/src/placement.rs:
/work/main/crates/machvm/src/pmap.rs:
/work/main/crates/machvm/src/pressure.rs:
/work/main/crates/machvm/src/report.rs:
/work/main/crates/machvm/src/shootdown.rs:
/work/main/crates/machvm/src/system.rs:
/work/main/crates/machvm/src/../README.md:
