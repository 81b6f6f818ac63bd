/work/main/tests/boot/target/x86_64-unknown-none/release/deps/machvm_pager-909a3e11c05ff211.d: /work/main/crates/pager/src/lib.rs /work/main/crates/pager/src/default_pager.rs /work/main/crates/pager/src/device.rs /work/main/crates/pager/src/error.rs /work/main/crates/pager/src/evict.rs /work/main/crates/pager/src/key.rs /work/main/crates/pager/src/slot_map.rs /work/main/crates/pager/src/swap/mod.rs /work/main/crates/pager/src/swap/backing.rs /work/main/crates/pager/src/swap/bitmap.rs /work/main/crates/pager/src/swap/record.rs /work/main/crates/pager/src/swap/usage.rs /work/main/crates/pager/src/vnode/mod.rs /work/main/crates/pager/src/vnode/file.rs /work/main/crates/pager/src/words.rs /work/main/crates/pager/src/../README.md

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libmachvm_pager-909a3e11c05ff211.rmeta: /work/main/crates/pager/src/lib.rs /work/main/crates/pager/src/default_pager.rs /work/main/crates/pager/src/device.rs /work/main/crates/pager/src/error.rs /work/main/crates/pager/src/evict.rs /work/main/crates/pager/src/key.rs /work/main/crates/pager/src/slot_map.rs /work/main/crates/pager/src/swap/mod.rs /work/main/crates/pager/src/swap/backing.rs /work/main/crates/pager/src/swap/bitmap.rs /work/main/crates/pager/src/swap/record.rs /work/main/crates/pager/src/swap/usage.rs /work/main/crates/pager/src/vnode/mod.rs /work/main/crates/pager/src/vnode/file.rs /work/main/crates/pager/src/words.rs /work/main/crates/pager/src/../README.md

/work/main/crates/pager/src/lib.rs:
/work/main/crates/pager/src/default_pager.rs:
/work/main/crates/pager/src/device.rs:
/work/main/crates/pager/src/error.rs:
/work/main/crates/pager/src/evict.rs:
/work/main/crates/pager/src/key.rs:
/work/main/crates/pager/src/slot_map.rs:
/work/main/crates/pager/src/swap/mod.rs:
/work/main/crates/pager/src/swap/backing.rs:
/work/main/crates/pager/src/swap/bitmap.rs:
/work/main/crates/pager/src/swap/record.rs:
/work/main/crates/pager/src/swap/usage.rs:
/work/main/crates/pager/src/vnode/mod.rs:
/work/main/crates/pager/src/vnode/file.rs:
/work/main/crates/pager/src/words.rs:
/work/main/crates/pager/src/../README.md:
