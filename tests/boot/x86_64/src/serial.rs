//! COM1 output and QEMU's `isa-debug-exit` device.

use core::arch::asm;

const COM1: u16 = 0x3f8;
/// Line status register: bit 5 set when the transmit holding register is empty.
const LSR: u16 = COM1 + 5;
/// `-device isa-debug-exit,iobase=0xf4,iosize=0x04`: writing `v` exits QEMU with `(v << 1) | 1`.
const DEBUG_EXIT: u16 = 0xf4;
/// Exit value for success: the host sees status 33.
const EXIT_PASS: u32 = 0x10;
/// Exit value for failure: the host sees status 35.
const EXIT_FAIL: u32 = 0x11;

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the kernel runs at CPL0, where port I/O is allowed; reading the UART's line
    // status register has no side effect.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack)) };
    value
}

/// Writes one byte to COM1, waiting until the UART can take it. QEMU's UART needs no set-up.
pub fn put_byte(byte: u8) {
    while inb(LSR) & 0x20 == 0 {
        core::hint::spin_loop();
    }
    // SAFETY: CPL0; writing the data register of COM1 only transmits the byte.
    unsafe { asm!("out dx, al", in("dx") COM1, in("al") byte, options(nomem, nostack)) };
}

/// Exits QEMU through `isa-debug-exit` (status 33 for success, 35 for failure).
pub fn exit(success: bool) -> ! {
    let value = if success { EXIT_PASS } else { EXIT_FAIL };
    // SAFETY: CPL0; the write makes QEMU exit. Without the device it does nothing and we halt.
    unsafe { asm!("out dx, eax", in("dx") DEBUG_EXIT, in("eax") value, options(nomem, nostack)) };
    loop {
        // SAFETY: CPL0; halting with interrupts off stops this CPU for good.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
