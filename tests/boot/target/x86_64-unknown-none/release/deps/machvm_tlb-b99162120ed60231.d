/work/main/tests/boot/target/x86_64-unknown-none/release/deps/machvm_tlb-b99162120ed60231.d: /work/main/crates/tlb/src/lib.rs /work/main/crates/tlb/src/arch/mod.rs /work/main/crates/tlb/src/arch/tlbi.rs /work/main/crates/tlb/src/arch/x86_64.rs /work/main/crates/tlb/src/arch/x86_regs.rs /work/main/crates/tlb/src/asid.rs /work/main/crates/tlb/src/gather.rs /work/main/crates/tlb/src/hook.rs /work/main/crates/tlb/src/ops.rs /work/main/crates/tlb/src/pcid.rs /work/main/crates/tlb/src/shootdown.rs /work/main/crates/tlb/src/space.rs /work/main/crates/tlb/src/../README.md

/work/main/tests/boot/target/x86_64-unknown-none/release/deps/libmachvm_tlb-b99162120ed60231.rmeta: /work/main/crates/tlb/src/lib.rs /work/main/crates/tlb/src/arch/mod.rs /work/main/crates/tlb/src/arch/tlbi.rs /work/main/crates/tlb/src/arch/x86_64.rs /work/main/crates/tlb/src/arch/x86_regs.rs /work/main/crates/tlb/src/asid.rs /work/main/crates/tlb/src/gather.rs /work/main/crates/tlb/src/hook.rs /work/main/crates/tlb/src/ops.rs /work/main/crates/tlb/src/pcid.rs /work/main/crates/tlb/src/shootdown.rs /work/main/crates/tlb/src/space.rs /work/main/crates/tlb/src/../README.md

/work/main/crates/tlb/src/lib.rs:
/work/main/crates/tlb/src/arch/mod.rs:
/work/main/crates/tlb/src/arch/tlbi.rs:
/work/main/crates/tlb/src/arch/x86_64.rs:
/work/main/crates/tlb/src/arch/x86_regs.rs:
/work/main/crates/tlb/src/asid.rs:
/work/main/crates/tlb/src/gather.rs:
/work/main/crates/tlb/src/hook.rs:
/work/main/crates/tlb/src/ops.rs:
/work/main/crates/tlb/src/pcid.rs:
/work/main/crates/tlb/src/shootdown.rs:
/work/main/crates/tlb/src/space.rs:
/work/main/crates/tlb/src/../README.md:
