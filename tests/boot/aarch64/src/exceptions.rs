//! Exception vectors, the data-abort handler and the fault probes.
//!
//! Each of the 16 vector slots saves `x0`/`x1`, loads its slot number and branches to
//! `trap_common`, which saves the rest of the registers, `ELR_EL1` and `SPSR_EL1` into a
//! [`TrapFrame`] and calls [`a64_trap`]. A data abort taken by a probe's access is offered to
//! the demand-paging hook (the access is retried if it mapped a page), otherwise counted and
//! resumed at the probe's recovery label. Anything else prints slot, ESR, FAR and ELR and fails
//! the run.

use core::arch::{asm, global_asm};

use machvm_boot_common::fault::{self, HwFault, HwFaultKind, ProbeRead};
use machvm_boot_common::{kprintln, report};

/// Registers saved on exception entry.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// `x0`..`x30`.
    x: [u64; 31],
    elr: u64,
    spsr: u64,
    _pad: u64,
}

global_asm!(
    r#"
    .macro VECTOR slot
    .balign 0x80
    sub sp, sp, #{frame}
    stp x0, x1, [sp, #0]
    mov x0, #\slot
    b trap_common
    .endm

    .section .text
    .balign 0x800
    .global exception_vectors
exception_vectors:
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

trap_common:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    mrs x9, elr_el1
    mrs x10, spsr_el1
    stp x30, x9, [sp, #240]
    str x10, [sp, #256]
    mov x1, sp
    bl a64_trap
    ldp x30, x9, [sp, #240]
    ldr x10, [sp, #256]
    msr elr_el1, x9
    msr spsr_el1, x10
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    ldp x0, x1, [sp, #0]
    add sp, sp, #{frame}
    eret

    /*
     * Probes: one memory access each, at a global label the abort handler recognises.
     * probe_read(va) -> {{value, faulted}} in x0:x1; probe_write(va, value) -> faulted.
     */
    .global probe_read
probe_read:
    mov x2, x0
    mov x1, xzr
    .global probe_read_access
probe_read_access:
    ldr x0, [x2]
    .global probe_read_resume
probe_read_resume:
    ret

    .global probe_write
probe_write:
    mov x2, x0
    mov x0, xzr
    .global probe_write_access
probe_write_access:
    str x1, [x2]
    .global probe_write_resume
probe_write_resume:
    ret
"#,
    frame = const core::mem::size_of::<TrapFrame>(),
);

unsafe extern "C" {
    fn probe_read_access();
    fn probe_read_resume();
    fn probe_write_access();
    fn probe_write_resume();
    /// Reads the `u64` at `va`, reporting a data abort instead of taking it.
    pub fn probe_read(va: u64) -> ProbeRead;
    /// Writes `value` to `va`; returns nonzero if the write faulted.
    pub fn probe_write(va: u64, value: u64) -> u64;
}

/// Exception class of a data abort taken without a change in exception level (ESR_EL1.EC).
const EC_DATA_ABORT_SAME_EL: u64 = 0x25;
/// Vector slot: synchronous exception from the current EL using SP_ELx.
const SLOT_SYNC_CURRENT_SPX: u64 = 4;
/// Data abort ISS: `WnR` (the access was a write) and the data fault status code (Arm ARM
/// D24.2.40, ESR_EL1): 0b0001LL translation, 0b0010LL access flag, 0b0011LL permission
/// fault at level LL.
const ESR_WNR: u64 = 1 << 6;
const ESR_DFSC: u64 = 0x3f;

fn esr_far() -> (u64, u64) {
    let (esr, far): (u64, u64);
    // SAFETY: EL1 exception handler; reading ESR_EL1 and FAR_EL1 has no side effect.
    unsafe {
        asm!("mrs {}, esr_el1", "mrs {}, far_el1", out(reg) esr, out(reg) far,
             options(nomem, nostack, preserves_flags));
    }
    (esr, far)
}

/// The Rust side of every exception.
#[unsafe(no_mangle)]
extern "C" fn a64_trap(slot: u64, frame: &mut TrapFrame) {
    let (esr, far) = esr_far();
    if slot == SLOT_SYNC_CURRENT_SPX && esr >> 26 == EC_DATA_ABORT_SAME_EL {
        let cpu = crate::cpu_index();
        let hw = HwFault {
            va: far,
            write: esr & ESR_WNR != 0,
            kind: match esr & ESR_DFSC {
                0x04..=0x07 => HwFaultKind::NotPresent,
                0x08..=0x0b => HwFaultKind::AccessFlag,
                0x0c..=0x0f => HwFaultKind::Protection,
                _ => HwFaultKind::Other,
            },
        };
        if frame.elr == probe_read_access as *const () as u64 {
            if fault::try_demand(hw) {
                return; // mapped: retry the access
            }
            fault::record(cpu);
            frame.x[0] = 0;
            frame.x[1] = 1;
            frame.elr = probe_read_resume as *const () as u64;
            return;
        }
        if frame.elr == probe_write_access as *const () as u64 {
            if fault::try_demand(hw) {
                return;
            }
            fault::record(cpu);
            frame.x[0] = 1;
            frame.elr = probe_write_resume as *const () as u64;
            return;
        }
    }
    kprintln!(
        "unexpected exception: slot {slot} ESR {esr:#x} (EC {:#x}, ISS {:#x}) FAR {far:#x} ELR {:#x} SPSR {:#x} (cpu {})",
        esr >> 26,
        esr & 0x1ff_ffff,
        frame.elr,
        frame.spsr,
        crate::cpu_index()
    );
    report::fail(format_args!(
        "unexpected exception (slot {slot}, ESR {esr:#x}, FAR {far:#x}, ELR {:#x})",
        frame.elr
    ))
}
