//! Build script: enables the AVX-512 WKdm path (`cfg(machvm_avx512)`) when the compiler has
//! the AVX-512 intrinsics, stable since Rust 1.89 (the crate's MSRV is older).

use std::env;
use std::process::Command;

/// The first Rust release whose `core::arch::x86_64` has the AVX-512 intrinsics on stable.
const AVX512_MINOR: u32 = 89;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(machvm_avx512)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=RUSTC");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(output) = Command::new(rustc).arg("--version").output() else {
        return;
    };
    let version = String::from_utf8_lossy(&output.stdout);
    if rustc_minor(&version).is_some_and(|minor| minor >= AVX512_MINOR) {
        println!("cargo::rustc-cfg=machvm_avx512");
    }
}

/// Returns the minor version of a `rustc 1.<minor>.<patch>...` line (`None` for another
/// major version or an unreadable line).
fn rustc_minor(version: &str) -> Option<u32> {
    let number = version.strip_prefix("rustc ")?.split([' ', '-']).next()?;
    let mut parts = number.split('.');
    if parts.next()? != "1" {
        return None;
    }
    parts.next()?.parse().ok()
}
