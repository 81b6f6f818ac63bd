/work/main/tests/boot/target/x86_64-unknown-none/release/deps/machvm_addr-82f07d9f1e83aa1d.d: /work/main/crates/addr/src/lib.rs /work/main/crates/addr/src/error.rs /work/main/crates/addr/src/frame_alloc.rs /work/main/crates/addr/src/mapper.rs /work/main/crates/addr/src/page.rs /work/main/crates/addr/src/phys.rs /work/main/crates/addr/src/prot.rs /work/main/crates/addr/src/size.rs /work/main/crates/addr/src/virt.rs /work/main/crates/addr/src/../README.md

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libmachvm_addr-82f07d9f1e83aa1d.rmeta: /work/main/crates/addr/src/lib.rs /work/main/crates/addr/src/error.rs /work/main/crates/addr/src/frame_alloc.rs /work/main/crates/addr/src/mapper.rs /work/main/crates/addr/src/page.rs /work/main/crates/addr/src/phys.rs /work/main/crates/addr/src/prot.rs /work/main/crates/addr/src/size.rs /work/main/crates/addr/src/virt.rs /work/main/crates/addr/src/../README.md

/work/main/crates/addr/src/lib.rs:
/work/main/crates/addr/src/error.rs:
/work/main/crates/addr/src/frame_alloc.rs:
/work/main/crates/addr/src/mapper.rs:
/work/main/crates/addr/src/page.rs:
/work/main/crates/addr/src/phys.rs:
/work/main/crates/addr/src/prot.rs:
/work/main/crates/addr/src/size.rs:
/work/main/crates/addr/src/virt.rs:
/work/main/crates/addr/src/../README.md:
