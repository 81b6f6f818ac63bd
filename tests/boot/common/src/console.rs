//! The kernel console and the platform hooks (`kprintln!`, exit).
//!
//! The architecture registers a [`Platform`] once, early in boot; everything else prints with
//! [`kprint!`](crate::kprint) / [`kprintln!`](crate::kprintln). Output from several CPUs is
//! serialised by a lock, taken with a bounded wait so that an exception handler that
//! interrupted a `kprintln!` on the same CPU still gets its message out.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicPtr, Ordering};

use machvm_sync::Mutex;

/// What the architecture code provides to the shared code.
#[derive(Debug)]
pub struct Platform {
    /// Writes one byte to the serial port (blocking until the UART takes it).
    pub put_byte: fn(u8),
    /// Ends the run: the host sees success (`true`) or failure (`false`) in QEMU's exit status.
    pub exit: fn(bool) -> !,
}

static PLATFORM: AtomicPtr<Platform> = AtomicPtr::new(core::ptr::null_mut());
static LOCK: Mutex<()> = Mutex::new(());

/// Registers the platform hooks. Call it once, before the first `kprintln!`.
pub fn set_platform(platform: &'static Platform) {
    PLATFORM.store(core::ptr::from_ref(platform).cast_mut(), Ordering::Release);
}

fn platform() -> Option<&'static Platform> {
    let ptr = PLATFORM.load(Ordering::Acquire);
    // SAFETY: the only non-null value ever stored comes from a `&'static Platform`
    // (`set_platform`), and the platform is never written through the pointer.
    unsafe { ptr.as_ref() }
}

/// A `fmt::Write` over the platform's UART.
struct Uart(fn(u8));

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(self.0);
        Ok(())
    }
}

/// Prints `args` (the back end of `kprint!`). Does nothing before [`set_platform`].
pub fn print(args: fmt::Arguments<'_>) {
    let Some(p) = platform() else { return };
    // Bounded wait: if this CPU itself holds the lock (an exception inside a print), print
    // anyway rather than deadlock.
    let mut guard = None;
    for _ in 0..1_000_000 {
        guard = LOCK.try_lock();
        if guard.is_some() {
            break;
        }
        core::hint::spin_loop();
    }
    let _ = Uart(p.put_byte).write_fmt(args);
    drop(guard);
}

/// Ends the run with the given verdict through the platform (spins if none is registered).
pub fn exit(success: bool) -> ! {
    match platform() {
        Some(p) => (p.exit)(success),
        None => loop {
            core::hint::spin_loop();
        },
    }
}

/// Prints to the kernel console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the kernel console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
