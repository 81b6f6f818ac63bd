/work/main/tests/boot/target/x86_64-unknown-none/release/deps/machvm_zone_alloc-b6599a85d46eb88e.d: /work/main/crates/zone-alloc/src/lib.rs /work/main/crates/zone-alloc/src/chunk.rs /work/main/crates/zone-alloc/src/cpu.rs /work/main/crates/zone-alloc/src/error.rs /work/main/crates/zone-alloc/src/global.rs /work/main/crates/zone-alloc/src/kalloc.rs /work/main/crates/zone-alloc/src/leaks.rs /work/main/crates/zone-alloc/src/malloc.rs /work/main/crates/zone-alloc/src/pac.rs /work/main/crates/zone-alloc/src/source.rs /work/main/crates/zone-alloc/src/stats.rs /work/main/crates/zone-alloc/src/zone.rs /work/main/crates/zone-alloc/src/../README.md

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libmachvm_zone_alloc-b6599a85d46eb88e.rmeta: /work/main/crates/zone-alloc/src/lib.rs /work/main/crates/zone-alloc/src/chunk.rs /work/main/crates/zone-alloc/src/cpu.rs /work/main/crates/zone-alloc/src/error.rs /work/main/crates/zone-alloc/src/global.rs /work/main/crates/zone-alloc/src/kalloc.rs /work/main/crates/zone-alloc/src/leaks.rs /work/main/crates/zone-alloc/src/malloc.rs /work/main/crates/zone-alloc/src/pac.rs /work/main/crates/zone-alloc/src/source.rs /work/main/crates/zone-alloc/src/stats.rs /work/main/crates/zone-alloc/src/zone.rs /work/main/crates/zone-alloc/src/../README.md

/work/main/crates/zone-alloc/src/lib.rs:
/work/main/crates/zone-alloc/src/chunk.rs:
/work/main/crates/zone-alloc/src/cpu.rs:
/work/main/crates/zone-alloc/src/error.rs:
/work/main/crates/zone-alloc/src/global.rs:
/work/main/crates/zone-alloc/src/kalloc.rs:
/work/main/crates/zone-alloc/src/leaks.rs:
/work/main/crates/zone-alloc/src/malloc.rs:
/work/main/crates/zone-alloc/src/pac.rs:
/work/main/crates/zone-alloc/src/source.rs:
/work/main/crates/zone-alloc/src/stats.rs:
/work/main/crates/zone-alloc/src/zone.rs:
/work/main/crates/zone-alloc/src/../README.md:
