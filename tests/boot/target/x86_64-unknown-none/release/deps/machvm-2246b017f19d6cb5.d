/work/main/tests/boot/target/x86_64-unknown-none/release/deps/machvm-2246b017f19d6cb5.d: /work/main/crates/machvm/src/lib.rs /work/main/crates/machvm/src/compressed.rs /work/main/crates/machvm/src/frames.rs /work/main/crates/machvm/src/kmem.rs /work/main/crates/machvm/src/placement.rs /work/main/crates/machvm/src/pmap.rs /work/main/crates/machvm/src/pressure.rs /work/main/crates/machvm/src/report.rs /work/main/crates/machvm/src/shootdown.rs /work/main/crates/machvm/src/system.rs /work/main/crates/machvm/src/../README.md

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libmachvm-2246b017f19d6cb5.rmeta: /work/main/crates/machvm/src/lib.rs /work/main/crates/machvm/src/compressed.rs /work/main/crates/machvm/src/frames.rs /work/main/crates/machvm/src/kmem.rs /work/main/crates/machvm/src/placement.rs /work/main/crates/machvm/src/pmap.rs /work/main/crates/machvm/src/pressure.rs /work/main/crates/machvm/src/report.rs /work/main/crates/machvm/src/shootdown.rs /work/main/crates/machvm/src/system.rs /work/main/crates/machvm/src/../README.md

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
