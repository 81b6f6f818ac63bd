//! The virt board's PL011 UART, and Arm semihosting for the command line and the exit status.
//!
//! Semihosting calls are `hlt #0xf000` with the operation in `x0` and a parameter block in
//! `x1`; QEMU handles them when started with `-semihosting-config enable=on,target=native`
//! (without it the instruction is undefined, and the exception handler reports it).

use core::arch::asm;

/// PL011 data register of the virt board's UART.
pub const UART_BASE: u64 = 0x0900_0000;
/// Flag register: bit 5 (TXFF) is set while the transmit FIFO is full.
const UART_FR: u64 = UART_BASE + 0x18;

const SYS_GET_CMDLINE: u64 = 0x15;
const SYS_EXIT: u64 = 0x18;
/// `ADP_Stopped_ApplicationExit`: with the 64-bit `SYS_EXIT` block, QEMU exits with the code.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Writes one byte to the UART (QEMU's PL011 needs no set-up).
pub fn put_byte(byte: u8) {
    // SAFETY: the UART registers are device memory, identity-mapped (or the MMU is off); the
    // flag register read has no side effect.
    while unsafe { core::ptr::read_volatile(UART_FR as *const u32) } & (1 << 5) != 0 {
        core::hint::spin_loop();
    }
    // SAFETY: as above; writing the data register only transmits the byte.
    unsafe { core::ptr::write_volatile(UART_BASE as *mut u32, u32::from(byte)) };
}

/// Performs semihosting call `op` with parameter block `block`.
///
/// # Safety
///
/// - `block` is valid for the call (QEMU reads and may write it).
unsafe fn semihost(op: u64, block: u64) -> u64 {
    let ret: u64;
    // SAFETY: the caller's contract; QEMU performs the call and returns in x0.
    unsafe { asm!("hlt #0xf000", inout("x0") op => ret, in("x1") block, options(nostack)) };
    ret
}

/// Exits QEMU with status 0 (success) or 1 (failure).
pub fn exit(success: bool) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(!success)];
    // SAFETY: the block lives on the stack for the call; SYS_EXIT only reads it.
    unsafe { semihost(SYS_EXIT, block.as_ptr() as u64) };
    loop {
        // SAFETY: parks the CPU; nothing is touched.
        unsafe { asm!("wfe", options(nomem, nostack)) };
    }
}

/// Reads the command line (`"<kernel path> <-append text>"`) into `buf`; returns its length.
pub fn read_cmdline(buf: &mut [u8]) -> usize {
    let mut block = [buf.as_mut_ptr() as u64, buf.len() as u64];
    // SAFETY: the block points at `buf` with its length; QEMU writes at most that many bytes
    // and stores the length written in the second word.
    let ret = unsafe { semihost(SYS_GET_CMDLINE, block.as_mut_ptr() as u64) };
    if ret != 0 {
        return 0;
    }
    (block[1] as usize).min(buf.len())
}
