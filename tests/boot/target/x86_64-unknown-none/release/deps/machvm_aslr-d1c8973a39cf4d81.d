/work/main/tests/boot/target/x86_64-unknown-none/release/deps/machvm_aslr-d1c8973a39cf4d81.d: /work/main/crates/aslr/src/lib.rs /work/main/crates/aslr/src/arch/mod.rs /work/main/crates/aslr/src/arch/x86_64.rs /work/main/crates/aslr/src/bits.rs /work/main/crates/aslr/src/entropy/mod.rs /work/main/crates/aslr/src/entropy/boot.rs /work/main/crates/aslr/src/error.rs /work/main/crates/aslr/src/fit.rs /work/main/crates/aslr/src/layout/mod.rs /work/main/crates/aslr/src/layout/config.rs /work/main/crates/aslr/src/layout/report.rs /work/main/crates/aslr/src/range.rs /work/main/crates/aslr/src/rng.rs /work/main/crates/aslr/src/slide.rs /work/main/crates/aslr/src/../README.md

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libmachvm_aslr-d1c8973a39cf4d81.rmeta: /work/main/crates/aslr/src/lib.rs /work/main/crates/aslr/src/arch/mod.rs /work/main/crates/aslr/src/arch/x86_64.rs /work/main/crates/aslr/src/bits.rs /work/main/crates/aslr/src/entropy/mod.rs /work/main/crates/aslr/src/entropy/boot.rs /work/main/crates/aslr/src/error.rs /work/main/crates/aslr/src/fit.rs /work/main/crates/aslr/src/layout/mod.rs /work/main/crates/aslr/src/layout/config.rs /work/main/crates/aslr/src/layout/report.rs /work/main/crates/aslr/src/range.rs /work/main/crates/aslr/src/rng.rs /work/main/crates/aslr/src/slide.rs /work/main/crates/aslr/src/../README.md

/work/main/crates/aslr/src/lib.rs:
/work/main/crates/aslr/src/arch/mod.rs:
/work/main/crates/aslr/src/arch/x86_64.rs:
/work/main/crates/aslr/src/bits.rs:
/work/main/crates/aslr/src/entropy/mod.rs:
/work/main/crates/aslr/src/entropy/boot.rs:
/work/main/crates/aslr/src/error.rs:
/work/main/crates/aslr/src/fit.rs:
/work/main/crates/aslr/src/layout/mod.rs:
/work/main/crates/aslr/src/layout/config.rs:
/work/main/crates/aslr/src/layout/report.rs:
/work/main/crates/aslr/src/range.rs:
/work/main/crates/aslr/src/rng.rs:
/work/main/crates/aslr/src/slide.rs:
/work/main/crates/aslr/src/../README.md:
