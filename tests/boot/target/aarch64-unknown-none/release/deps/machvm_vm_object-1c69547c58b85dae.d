/work/main/tests/boot/target/aarch64-unknown-none/release/deps/machvm_vm_object-1c69547c58b85dae.d: /work/main/crates/vm-object/src/lib.rs /work/main/crates/vm-object/src/chain.rs /work/main/crates/vm-object/src/error.rs /work/main/crates/vm-object/src/fault.rs /work/main/crates/vm-object/src/memory.rs /work/main/crates/vm-object/src/object.rs /work/main/crates/vm-object/src/page.rs /work/main/crates/vm-object/src/pager.rs /work/main/crates/vm-object/src/../README.md

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libmachvm_vm_object-1c69547c58b85dae.rmeta: /work/main/crates/vm-object/src/lib.rs /work/main/crates/vm-object/src/chain.rs /work/main/crates/vm-object/src/error.rs /work/main/crates/vm-object/src/fault.rs /work/main/crates/vm-object/src/memory.rs /work/main/crates/vm-object/src/object.rs /work/main/crates/vm-object/src/page.rs /work/main/crates/vm-object/src/pager.rs /work/main/crates/vm-object/src/../README.md

/work/main/crates/vm-object/src/lib.rs:
/work/main/crates/vm-object/src/chain.rs:
/work/main/crates/vm-object/src/error.rs:
/work/main/crates/vm-object/src/fault.rs:
/work/main/crates/vm-object/src/memory.rs:
/work/main/crates/vm-object/src/object.rs:
/work/main/crates/vm-object/src/page.rs:
/work/main/crates/vm-object/src/pager.rs:
/work/main/crates/vm-object/src/../README.md:
