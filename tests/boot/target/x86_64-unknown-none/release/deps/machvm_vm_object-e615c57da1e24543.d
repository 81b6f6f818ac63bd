/work/main/tests/boot/target/x86_64-unknown-none/release/deps/machvm_vm_object-e615c57da1e24543.d: /work/main/crates/vm-object/src/lib.rs /work/main/crates/vm-object/src/chain.rs /work/main/crates/vm-object/src/error.rs /work/main/crates/vm-object/src/fault.rs /work/main/crates/vm-object/src/memory.rs /work/main/crates/vm-object/src/object.rs /work/main/crates/vm-object/src/page.rs /work/main/crates/vm-object/src/pager.rs /work/main/crates/vm-object/src/../README.md

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libmachvm_vm_object-e615c57da1e24543.rmeta: /work/main/crates/vm-object/src/lib.rs /work/main/crates/vm-object/src/chain.rs /work/main/crates/vm-object/src/error.rs /work/main/crates/vm-object/src/fault.rs /work/main/crates/vm-object/src/memory.rs /work/main/crates/vm-object/src/object.rs /work/main/crates/vm-object/src/page.rs /work/main/crates/vm-object/src/pager.rs /work/main/crates/vm-object/src/../README.md

/work/main/crates/vm-object/src/lib.rs:
/work/main/crates/vm-object/src/chain.rs:
/work/main/crates/vm-object/src/error.rs:
/work/main/crates/vm-object/src/fault.rs:
/work/main/crates/vm-object/src/memory.rs:
/work/main/crates/vm-object/src/object.rs:
/work/main/crates/vm-object/src/page.rs:
/work/main/crates/vm-object/src/pager.rs:
/work/main/crates/vm-object/src/../README.md:
