/work/main/tests/boot/target/aarch64-unknown-none/release/deps/machvm_tlb-b339aa6f966b8704.d: /work/main/crates/tlb/src/lib.rs /work/main/crates/tlb/src/arch/mod.rs /work/main/crates/tlb/src/arch/aarch64.rs /work/main/crates/tlb/src/arch/tlbi.rs /work/main/crates/tlb/src/arch/x86_regs.rs /work/main/crates/tlb/src/asid.rs /work/main/crates/tlb/src/gather.rs /work/main/crates/tlb/src/hook.rs /work/main/crates/tlb/src/ops.rs /work/main/crates/tlb/src/pcid.rs /work/main/crates/tlb/src/shootdown.rs /work/main/crates/tlb/src/space.rs /work/main/crates/tlb/src/../README.md

/work/main/tests/boot/target/aarch64-unknown-none/release/deps/libmachvm_tlb-b339aa6f966b8704.rmeta: /work/main/crates/tlb/src/lib.rs /work/main/crates/tlb/src/arch/mod.rs /work/main/crates/tlb/src/arch/aarch64.rs /work/main/crates/tlb/src/arch/tlbi.rs /work/main/crates/tlb/src/arch/x86_regs.rs /work/main/crates/tlb/src/asid.rs /work/main/crates/tlb/src/gather.rs /work/main/crates/tlb/src/hook.rs /work/main/crates/tlb/src/ops.rs /work/main/crates/tlb/src/pcid.rs /work/main/crates/tlb/src/shootdown.rs /work/main/crates/tlb/src/space.rs /work/main/crates/tlb/src/../README.md

/work/main/crates/tlb/src/lib.rs:
/work/main/crates/tlb/src/arch/mod.rs:
/work/main/crates/tlb/src/arch/aarch64.rs:
/work/main/crates/tlb/src/arch/tlbi.rs:
/work/main/crates/tlb/src/arch/x86_regs.rs:
/work/main/crates/tlb/src/asid.rs:
/work/main/crates/tlb/src/gather.rs:
/work/main/crates/tlb/src/hook.rs:
/work/main/crates/tlb/src/ops.rs:
/work/main/crates/tlb/src/pcid.rs:
/work/main/crates/tlb/src/shootdown.rs:
/work/main/crates/tlb/src/space.rs:
/work/main/crates/tlb/src/../README.md:
