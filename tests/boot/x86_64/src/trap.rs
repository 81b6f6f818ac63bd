//! Exceptions: the IDT, the entry stubs, the page-fault handler, and the fault probes.
//!
//! Every vector the kernel may see has a stub that pushes a dummy error code (where the CPU
//! pushes none) and the vector number, then `trap_common` saves the general-purpose registers
//! into a [`TrapFrame`] and calls [`x86_trap`]. Page faults taken by the probe routines are
//! first offered to the demand-paging hook (the access is retried if it mapped a page), and
//! otherwise counted and resumed at the probe's recovery label. Everything else is fatal:
//! vector, error code, RIP and CR2 are printed and the run fails.

use core::arch::{asm, global_asm};

use machvm_boot_common::fault::{self, HwFault, HwFaultKind, ProbeRead};
use machvm_boot_common::{kprintln, report};

/// Vector used for TLB shootdown IPIs (x86 SMP).
pub const IPI_VECTOR: u8 = 0x40;

/// The registers saved on entry, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

global_asm!(
    r#"
    .macro STUB_NOERR n
    .balign 16
trap_stub_\n:
    push $0
    push $\n
    jmp trap_common
    .endm
    .macro STUB_ERR n
    .balign 16
trap_stub_\n:
    push $\n
    jmp trap_common
    .endm

    .section .text
    STUB_NOERR 0
    STUB_NOERR 1
    STUB_NOERR 2
    STUB_NOERR 3
    STUB_NOERR 4
    STUB_NOERR 5
    STUB_NOERR 6
    STUB_NOERR 7
    STUB_ERR 8
    STUB_NOERR 9
    STUB_ERR 10
    STUB_ERR 11
    STUB_ERR 12
    STUB_ERR 13
    STUB_ERR 14
    STUB_NOERR 15
    STUB_NOERR 16
    STUB_ERR 17
    STUB_NOERR 18
    STUB_NOERR 19
    STUB_NOERR 20
    STUB_ERR 21
    STUB_NOERR 64
    STUB_NOERR 255

trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi          /* 22 quadwords below a 16-aligned frame: rsp is 16-aligned */
    cld
    call x86_trap
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp           /* vector and error code */
    iretq

    .section .rodata
    .balign 8
    .global trap_stubs
trap_stubs:
    .quad trap_stub_0, trap_stub_1, trap_stub_2, trap_stub_3, trap_stub_4, trap_stub_5
    .quad trap_stub_6, trap_stub_7, trap_stub_8, trap_stub_9, trap_stub_10, trap_stub_11
    .quad trap_stub_12, trap_stub_13, trap_stub_14, trap_stub_15, trap_stub_16
    .quad trap_stub_17, trap_stub_18, trap_stub_19, trap_stub_20, trap_stub_21
    .global trap_stub_ipi
trap_stub_ipi:
    .quad trap_stub_64
    .global trap_stub_spurious
trap_stub_spurious:
    .quad trap_stub_255

    /*
     * Probes: one memory access each, at a global label the #PF handler recognises.
     * probe_read(va) -> {{value, faulted}} in rax:rdx; probe_write(va, value) -> faulted.
     */
    .section .text
    .global probe_read
probe_read:
    xor %edx, %edx
    .global probe_read_access
probe_read_access:
    mov (%rdi), %rax
    .global probe_read_resume
probe_read_resume:
    ret

    .global probe_write
probe_write:
    xor %eax, %eax
    .global probe_write_access
probe_write_access:
    mov %rsi, (%rdi)
    .global probe_write_resume
probe_write_resume:
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static trap_stubs: [u64; 22];
    static trap_stub_ipi: u64;
    static trap_stub_spurious: u64;
    fn probe_read_access();
    fn probe_read_resume();
    fn probe_write_access();
    fn probe_write_resume();
    /// Reads the `u64` at `va`, reporting a page fault instead of taking it.
    pub fn probe_read(va: u64) -> ProbeRead;
    /// Writes `value` to `va`; returns nonzero if the write faulted.
    pub fn probe_write(va: u64, value: u64) -> u64;
}

/// One 16-byte IDT gate (Intel SDM Vol. 3A §6.14.1).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Self = Self {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present 64-bit interrupt gate (interrupts stay off in the handler) to `handler`.
    const fn interrupt(handler: u64) -> Self {
        Self {
            offset_low: handler as u16,
            selector: 0x08,
            ist: 0,
            attributes: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static mut IDT: Idt = Idt([Gate::MISSING; 256]);

/// Fills the IDT (once, on the boot CPU) and loads it on the executing CPU.
///
/// # Safety
///
/// - CPL0, interrupts off; the first call happens before any other CPU runs.
pub unsafe fn init_idt(first: bool) {
    if first {
        // SAFETY: the stub tables are initialised data emitted by the assembly above.
        let stubs = unsafe { &*core::ptr::addr_of!(trap_stubs) };
        // SAFETY: as above.
        let (ipi, spurious) = unsafe { (trap_stub_ipi, trap_stub_spurious) };
        // SAFETY: only the boot CPU writes the IDT, before any CPU loads it (caller's contract).
        let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
        for (gate, &stub) in idt.0.iter_mut().zip(stubs) {
            *gate = Gate::interrupt(stub);
        }
        idt.0[usize::from(IPI_VECTOR)] = Gate::interrupt(ipi);
        idt.0[255] = Gate::interrupt(spurious);
    }
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: core::ptr::addr_of!(IDT) as u64,
    };
    // SAFETY: CPL0; the IDT is a static that lives forever and its gates point at our stubs.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack)) };
}

fn cr2() -> u64 {
    let value: u64;
    // SAFETY: CPL0 (exception handler); reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack)) };
    value
}

/// Handler for IPIs, set by the SMP code.
pub static IPI_HANDLER: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The Rust side of every exception and interrupt.
#[unsafe(no_mangle)]
extern "C" fn x86_trap(frame: &mut TrapFrame) {
    match frame.vector {
        14 => page_fault(frame),
        v if v == u64::from(IPI_VECTOR) => {
            let raw = IPI_HANDLER.load(core::sync::atomic::Ordering::Acquire);
            if raw != 0 {
                // SAFETY: only `fn()` pointers are stored in IPI_HANDLER.
                let handler = unsafe { core::mem::transmute::<usize, fn()>(raw) };
                handler();
                return;
            }
            fatal(frame, "unexpected IPI")
        }
        255 => {} // spurious: no EOI
        _ => fatal(frame, "unexpected exception"),
    }
}

/// #PF error code bits (Intel SDM Vol. 3A §4.7): P (the translation was present: a
/// protection violation) and W/R (the access was a write).
const PF_PRESENT: u64 = 1 << 0;
const PF_WRITE: u64 = 1 << 1;

fn page_fault(frame: &mut TrapFrame) {
    let va = cr2();
    let cpu = crate::cpu_index();
    let hw = HwFault {
        va,
        write: frame.error & PF_WRITE != 0,
        kind: if frame.error & PF_PRESENT != 0 {
            HwFaultKind::Protection
        } else {
            HwFaultKind::NotPresent
        },
    };
    if frame.rip == probe_read_access as *const () as u64 {
        if fault::try_demand(hw) {
            return; // mapped: retry the access
        }
        fault::record(cpu);
        frame.rax = 0;
        frame.rdx = 1;
        frame.rip = probe_read_resume as *const () as u64;
    } else if frame.rip == probe_write_access as *const () as u64 {
        if fault::try_demand(hw) {
            return;
        }
        fault::record(cpu);
        frame.rax = 1;
        frame.rip = probe_write_resume as *const () as u64;
    } else {
        fatal(frame, "page fault outside a probe");
    }
}

fn fatal(frame: &TrapFrame, what: &str) -> ! {
    kprintln!(
        "{what}: vector {} error {:#x} rip {:#x} cr2 {:#x} rsp {:#x} (cpu {})",
        frame.vector,
        frame.error,
        frame.rip,
        cr2(),
        frame.rsp,
        crate::cpu_index()
    );
    report::fail(format_args!(
        "{what} (vector {}, rip {:#x})",
        frame.vector, frame.rip
    ))
}
