//! Start-up: the PVH entry note, 32-bit protected mode to long mode, and the switch to 5-level
//! paging.
//!
//! QEMU's `-kernel` loader finds the Xen PVH note, loads the ELF at its physical addresses and
//! enters `_start32` in 32-bit protected mode, paging off, with `%ebx` pointing to the
//! `hvm_start_info` structure. The code below clears `.bss`, builds boot page tables that
//! identity-map the first GiB with 2 MiB pages, enables PAE, long mode (`EFER.LME`), no-execute
//! (`EFER.NXE`, which machvm's entries use), global pages (`CR4.PGE`) and write protection for
//! supervisor writes (`CR0.WP`, so read-only mappings bind the kernel too), turns paging on and
//! jumps to 64-bit code, which calls `kmain(start_info)`. `kmain` then replaces the boot
//! tables with tables built by `machvm-page-table`.

use core::arch::global_asm;

/// Bytes of each CPU's boot stack.
pub const STACK_SIZE: usize = 128 * 1024;

global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz */
    .long 8                 /* descsz: a 64-bit entry address for an ELF64 kernel */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad _start32

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    mov %ebx, %esi                  /* hvm_start_info, kept for kmain */

    /* Clear .bss (the boot tables, stacks and the frame pool live there). */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov $boot_stack_top, %esp

    /* Boot tables: PML4[0] -> PDPT[0] -> PD with 512 x 2 MiB identity pages (1 GiB). */
    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $0x3, %eax
    mov %eax, boot_pdpt
    mov $boot_pd, %edi
    mov $0x83, %eax                 /* P | RW | PS */
    mov $512, %ecx
1:  mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 1b

    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0xa0, %eax                  /* PAE (bit 5) | PGE (bit 7) */
    mov %eax, %cr4
    mov $0xc0000080, %ecx           /* IA32_EFER */
    rdmsr
    or $0x900, %eax                 /* LME (bit 8) | NXE (bit 11) */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax            /* PG | WP (read-only pages bind CPL0 too) | PE */
    mov %eax, %cr0

    lgdt gdt_pointer
    ljmp $0x08, $start64

    .code64
start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    mov %esi, %edi                  /* kmain(start_info) */
    call kmain
2:  hlt
    jmp 2b

    /*
     * switch_to_la57(cr3): turns on 5-level paging with the PML5 at `cr3`.
     *
     * CR4.LA57 can only change while paging is off, and paging can only be turned off outside
     * 64-bit mode. So: far-return to a 32-bit code segment (compatibility mode), clear CR0.PG
     * (the CPU leaves IA-32e mode), set CR4.LA57, load CR3, set CR0.PG again (IA-32e mode is
     * re-entered, EFER.LME is still set), and far-jump back to 64-bit code. All of it runs
     * from identity-mapped memory with interrupts off, and the new tables identity-map this
     * code and the stack. Clobbers rax, rcx (caller-saved).
     */
    .global switch_to_la57
switch_to_la57:
    lea 3f(%rip), %rax
    push $0x18
    push %rax
    lretq
    .code32
3:  mov %cr0, %eax
    and $0x7fffffff, %eax
    mov %eax, %cr0                  /* paging off: IA-32e mode inactive */
    mov %cr4, %eax
    or $0x1000, %eax                /* LA57 (bit 12) */
    mov %eax, %cr4
    mov %edi, %cr3                  /* the PML5 (below 4 GiB) */
    mov %cr0, %eax
    or $0x80000000, %eax
    mov %eax, %cr0                  /* paging on: IA-32e mode again, with 5 levels */
    ljmp $0x08, $4f
    .code64
4:  mov %esp, %esp                  /* the stack is below 4 GiB: make the upper half zero */
    ret

    /*
     * The application-processor trampoline, copied to AP_TRAMPOLINE (0x8000) and started by
     * a SIPI in real mode with CS = 0x0800: loads the GDT, enters protected mode and jumps to
     * ap_start32 in the kernel image (linked at its load address, so absolute addresses work).
     */
    .code16
    .global ap_trampoline_start
ap_trampoline_start:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_gdt_pointer - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x18, $ap_start32
    .balign 8
ap_gdt_pointer:
    .word gdt_end - gdt - 1
    .long gdt
    .global ap_trampoline_end
ap_trampoline_end:

    /* The AP in protected mode: long mode on the kernel's machvm tables (AP_CR3). */
    .code32
ap_start32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $0xa0, %eax                  /* PAE | PGE */
    mov %eax, %cr4
    mov AP_CR3, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x900, %eax                 /* LME | NXE */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax            /* PG | WP | PE */
    mov %eax, %cr0
    ljmp $0x08, $ap_start64
    .code64
ap_start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov $ap_stack_top, %rsp
    call ap_main
5:  hlt
    jmp 5b

    .section .data.boot, "aw"
    .balign 8
    .global AP_CR3
AP_CR3: .quad 0

    .section .rodata.boot, "a"
    .balign 8
gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
    .quad 0x00cf9a000000ffff        /* 0x18: 32-bit code (for the LA57 switch) */
gdt_end:
    .global gdt_pointer
gdt_pointer:
    .word gdt_end - gdt - 1
    .long gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096
    .balign 16
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack}
    .global boot_stack_top
boot_stack_top:
    .balign 16
    .skip {stack}
    .global ap_stack_top
ap_stack_top:
"#,
    stack = const STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    /// Turns on 5-level paging with the PML5 at `cr3` (see the assembly above).
    pub fn switch_to_la57(cr3: u64);
    /// First byte of the AP trampoline (to be copied to 0x8000).
    pub static ap_trampoline_start: u8;
    /// End of the AP trampoline.
    pub static ap_trampoline_end: u8;
    /// The CR3 value application processors load (a 4-level PML4 below 4 GiB).
    pub static mut AP_CR3: u64;
}
