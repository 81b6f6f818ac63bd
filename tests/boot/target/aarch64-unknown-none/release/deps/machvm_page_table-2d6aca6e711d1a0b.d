/work/main/tests/boot/target/aarch64-unknown-none/release/deps/machvm_page_table-2d6aca6e711d1a0b.d: /work/main/crates/page-table/src/lib.rs /work/main/crates/page-table/src/aarch64.rs /work/main/crates/page-table/src/attrs.rs /work/main/crates/page-table/src/cursor.rs /work/main/crates/page-table/src/error.rs /work/main/crates/page-table/src/flush.rs /work/main/crates/page-table/src/format.rs /work/main/crates/page-table/src/table.rs /work/main/crates/page-table/src/x86_64.rs /work/main/crates/page-table/src/../README.md

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libmachvm_page_table-2d6aca6e711d1a0b.rmeta: /work/main/crates/page-table/src/lib.rs /work/main/crates/page-table/src/aarch64.rs /work/main/crates/page-table/src/attrs.rs /work/main/crates/page-table/src/cursor.rs /work/main/crates/page-table/src/error.rs /work/main/crates/page-table/src/flush.rs /work/main/crates/page-table/src/format.rs /work/main/crates/page-table/src/table.rs /work/main/crates/page-table/src/x86_64.rs /work/main/crates/page-table/src/../README.md

/work/main/crates/page-table/src/lib.rs:
/work/main/crates/page-table/src/aarch64.rs:
/work/main/crates/page-table/src/attrs.rs:
/work/main/crates/page-table/src/cursor.rs:
/work/main/crates/page-table/src/error.rs:
/work/main/crates/page-table/src/flush.rs:
/work/main/crates/page-table/src/format.rs:
/work/main/crates/page-table/src/table.rs:
/work/main/crates/page-table/src/x86_64.rs:
/work/main/crates/page-table/src/../README.md:
