//! The verdict: one line per check, then `SMOKE PASS` or `SMOKE FAIL: <what>`.
//!
//! `cargo xtask smoke` passes a boot only if QEMU exits with the success status *and* the
//! output contains a line starting with `SMOKE PASS`.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::console::exit;
use crate::kprintln;

static PASSED: AtomicU32 = AtomicU32::new(0);

/// Records a passed check and prints `ok <name>: <detail>`.
pub fn pass(name: &str, detail: fmt::Arguments<'_>) {
    PASSED.fetch_add(1, Ordering::Relaxed);
    kprintln!("ok   {name}: {detail}");
}

/// Prints an informational line (not a check: hardware may legitimately differ).
pub fn info(name: &str, detail: fmt::Arguments<'_>) {
    kprintln!("info {name}: {detail}");
}

/// Prints `SMOKE FAIL: <what>` and exits with failure.
pub fn fail(what: fmt::Arguments<'_>) -> ! {
    kprintln!("SMOKE FAIL: {what}");
    exit(false)
}

/// Prints `SMOKE PASS` with the number of checks and exits with success.
pub fn finish() -> ! {
    kprintln!("SMOKE PASS ({} checks)", PASSED.load(Ordering::Relaxed));
    exit(true)
}

/// Fails the run with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::report::fail(format_args!($($arg)+))
        }
    };
}

/// Unwraps a `Result`, failing the run with the error and a description otherwise.
#[macro_export]
macro_rules! must {
    ($result:expr, $($arg:tt)+) => {
        match $result {
            Ok(value) => value,
            Err(e) => $crate::report::fail(format_args!("{}: {}", format_args!($($arg)+), e)),
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("panic: {info}"))
}
