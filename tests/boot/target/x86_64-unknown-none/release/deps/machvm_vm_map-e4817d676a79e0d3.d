/work/main/tests/boot/target/x86_64-unknown-none/release/deps/machvm_vm_map-e4817d676a79e0d3.d: /work/main/crates/vm-map/src/lib.rs /work/main/crates/vm-map/src/entry.rs /work/main/crates/vm-map/src/error.rs /work/main/crates/vm-map/src/fault.rs /work/main/crates/vm-map/src/fork.rs /work/main/crates/vm-map/src/map.rs /work/main/crates/vm-map/src/placement.rs /work/main/crates/vm-map/src/pmap.rs /work/main/crates/vm-map/src/region.rs /work/main/crates/vm-map/src/wire.rs /work/main/crates/vm-map/src/../README.md

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libmachvm_vm_map-e4817d676a79e0d3.rmeta: /work/main/crates/vm-map/src/lib.rs /work/main/crates/vm-map/src/entry.rs /work/main/crates/vm-map/src/error.rs /work/main/crates/vm-map/src/fault.rs /work/main/crates/vm-map/src/fork.rs /work/main/crates/vm-map/src/map.rs /work/main/crates/vm-map/src/placement.rs /work/main/crates/vm-map/src/pmap.rs /work/main/crates/vm-map/src/region.rs /work/main/crates/vm-map/src/wire.rs /work/main/crates/vm-map/src/../README.md

/work/main/crates/vm-map/src/lib.rs:
/work/main/crates/vm-map/src/entry.rs:
/work/main/crates/vm-map/src/error.rs:
/work/main/crates/vm-map/src/fault.rs:
/work/main/crates/vm-map/src/fork.rs:
/work/main/crates/vm-map/src/map.rs:
/work/main/crates/vm-map/src/placement.rs:
/work/main/crates/vm-map/src/pmap.rs:
/work/main/crates/vm-map/src/region.rs:
/work/main/crates/vm-map/src/wire.rs:
/work/main/crates/vm-map/src/../README.md:
