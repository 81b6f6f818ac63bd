/work/main/tests/boot/target/aarch64-unknown-none/release/deps/machvm_sync-a13881635663d114.d: /work/main/crates/sync/src/lib.rs /work/main/crates/sync/src/atomic.rs /work/main/crates/sync/src/cell.rs /work/main/crates/sync/src/cpu.rs /work/main/crates/sync/src/error.rs /work/main/crates/sync/src/hint.rs /work/main/crates/sync/src/mutex.rs /work/main/crates/sync/src/padded.rs /work/main/crates/sync/src/rwlock.rs /work/main/crates/sync/src/../README.md

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libmachvm_sync-a13881635663d114.rmeta: /work/main/crates/sync/src/lib.rs /work/main/crates/sync/src/atomic.rs /work/main/crates/sync/src/cell.rs /work/main/crates/sync/src/cpu.rs /work/main/crates/sync/src/error.rs /work/main/crates/sync/src/hint.rs /work/main/crates/sync/src/mutex.rs /work/main/crates/sync/src/padded.rs /work/main/crates/sync/src/rwlock.rs /work/main/crates/sync/src/../README.md

/work/main/crates/sync/src/lib.rs:
/work/main/crates/sync/src/atomic.rs:
/work/main/crates/sync/src/cell.rs:
/work/main/crates/sync/src/cpu.rs:
/work/main/crates/sync/src/error.rs:
/work/main/crates/sync/src/hint.rs:
/work/main/crates/sync/src/mutex.rs:
/work/main/crates/sync/src/padded.rs:
/work/main/crates/sync/src/rwlock.rs:
/work/main/crates/sync/src/../README.md:
