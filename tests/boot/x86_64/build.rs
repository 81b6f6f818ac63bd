//! Link flags for the kernel: our linker script (absolute path, so the working directory does
//! not matter) and `-no-pie` (the target defaults to static-PIE, but the 32-bit boot code uses
//! absolute relocations). Emitted here rather than in RUSTFLAGS so no environment can drop them.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
