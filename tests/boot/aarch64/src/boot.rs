//! Start-up for the boot CPU and the secondary CPUs.
//!
//! QEMU's `-kernel` loader starts the boot CPU at `_start` with the MMU and caches off, at EL1
//! on plain `-M virt` (EL2 with `virtualization=on`, which we drop from). The code clears
//! `.bss`, sets the stack, enables the FP/SIMD unit (`CPACR_EL1.FPEN`: the target uses NEON
//! registers in ordinary code), installs the exception vectors and calls `kmain`.
//!
//! Secondary CPUs are started by PSCI `CPU_ON` at `secondary_entry`, also at EL1 with the MMU
//! off, with their stack top as the context argument in `x0`.

use core::arch::global_asm;

/// Bytes of each CPU's stack.
pub const STACK_SIZE: usize = 128 * 1024;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    mrs x9, CurrentEL
    lsr x9, x9, #2
    cmp x9, #2
    b.ne 1f
    /* EL2: run EL1 in AArch64, give it the timers, and drop to EL1h with DAIF masked. */
    mov x9, #(1 << 31)
    msr hcr_el2, x9
    mov x9, #3
    msr cnthctl_el2, x9
    msr cntvoff_el2, xzr
    mov x9, #0x3c5
    msr spsr_el2, x9
    adr x9, 1f
    msr elr_el2, x9
    eret

1:  ldr x9, =__bss_start
    ldr x10, =__bss_end
2:  cmp x9, x10
    b.hs 3f
    str xzr, [x9], #8
    b 2b
3:  ldr x9, =boot_stack_top
    mov sp, x9
    bl cpu_common_init
    bl kmain
4:  wfe
    b 4b

    .global secondary_entry
secondary_entry:
    mov sp, x0
    bl cpu_common_init
    bl secondary_main
    b 4b

    /* FP/SIMD on (CPACR_EL1.FPEN = 0b11) and the exception vectors. */
cpu_common_init:
    mov x9, #(3 << 20)
    msr cpacr_el1, x9
    ldr x9, =exception_vectors
    msr vbar_el1, x9
    isb
    ret

    .section .bss.stacks, "aw", @nobits
    .balign 16
    .global boot_stack_top
    .skip {stack}
boot_stack_top:
    .global secondary_stack_top
    .skip {stack}
secondary_stack_top:
"#,
    stack = const STACK_SIZE,
);

unsafe extern "C" {
    /// The entry point of secondary CPUs (for PSCI `CPU_ON`).
    pub fn secondary_entry();
    /// Top of CPU 1's stack.
    pub static secondary_stack_top: u8;
}
