//! `cargo xtask miri`: unit and integration tests under miri for every crate with `unsafe`.

use anyhow::{Context, Result};

use crate::cargo::{Action, Cargo, Features};
use crate::cli::MiriArgs;
use crate::util::{ensure_rustup_components, ensure_toolchain, env_append, env_or, run_cmd};
use crate::workspace::{Package, Workspace, rust_files};

const STEP: &str = "miri";

/// Why a crate is or is not run under miri.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsafeUse {
    /// Some source file uses `unsafe` (the first such file, relative to src/).
    Uses(String),
    /// The crate root says `#![forbid(unsafe_code)]`.
    Forbidden,
    /// No `unsafe` anywhere in src/.
    None,
}

/// Returns whether `source` contains the word `unsafe` outside `//` comments (`unsafe_code`
/// and the like are other words).
pub fn mentions_unsafe(source: &str) -> bool {
    source.lines().any(|line| {
        let code = line.split("//").next().unwrap_or("");
        code.match_indices("unsafe").any(|(i, _)| {
            let before = code[..i].chars().next_back();
            let after = code[i + "unsafe".len()..].chars().next();
            let word_char = |c: char| c.is_alphanumeric() || c == '_';
            !before.is_some_and(word_char) && !after.is_some_and(word_char)
        })
    })
}

/// Returns whether a crate root forbids unsafe code.
pub fn forbids_unsafe(lib_rs: &str) -> bool {
    lib_rs
        .lines()
        .map(|l| l.split("//").next().unwrap_or("").replace(' ', ""))
        .any(|l| l.contains("#![forbid(") && l.contains("unsafe_code"))
}

/// Classifies a crate by reading its src/.
pub fn unsafe_use(pkg: &Package) -> Result<UnsafeUse> {
    let src = pkg.dir.join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs"))
        .with_context(|| format!("reading {}/src/lib.rs", pkg.dir.display()))?;
    if forbids_unsafe(&lib) {
        return Ok(UnsafeUse::Forbidden);
    }
    for file in rust_files(&src) {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        if mentions_unsafe(&text) {
            let rel = file.strip_prefix(&src).unwrap_or(&file);
            return Ok(UnsafeUse::Uses(rel.display().to_string()));
        }
    }
    Ok(UnsafeUse::None)
}

/// Runs the miri tests.
pub fn run(args: &MiriArgs) -> Result<()> {
    let ws = Workspace::load(STEP)?;
    let candidates = ws.select(&args.crates, |_| true)?;
    let mut selected = Vec::new();
    for pkg in candidates {
        match unsafe_use(pkg)? {
            UnsafeUse::Uses(file) => {
                eprintln!("[{STEP}] {}: uses unsafe (src/{file})", pkg.name);
                selected.push(pkg);
            }
            UnsafeUse::Forbidden => {
                eprintln!("[{STEP}] {}: skipped, #![forbid(unsafe_code)]", pkg.name);
            }
            UnsafeUse::None => eprintln!("[{STEP}] {}: skipped, no unsafe in src/", pkg.name),
        }
    }
    if selected.is_empty() {
        eprintln!("[{STEP}] no crate uses unsafe; nothing to run");
        return Ok(());
    }
    ensure_toolchain(STEP, "nightly")?;
    ensure_rustup_components(STEP, "nightly", &["miri", "rust-src"])?;
    let target_dir = ws.target_dir.join("miri");
    let miri = |action: Action| {
        Cargo::new(action)
            .toolchain("nightly")
            .env("CARGO_TARGET_DIR", target_dir.to_string_lossy())
            .env(
                "MIRIFLAGS",
                env_append("MIRIFLAGS", "-Zmiri-disable-isolation"),
            )
            .env("PROPTEST_CASES", env_or("PROPTEST_CASES", "4"))
            .cwd(&ws.root)
    };
    run_cmd(STEP, &mut miri(Action::MiriSetup).command())?;
    for pkg in &selected {
        let cargo = miri(Action::MiriTest)
            .package(&pkg.name)
            .features(Features::All)
            .flags(["--lib", "--tests"]);
        run_cmd(STEP, &mut cargo.command())?;
    }
    eprintln!("[{STEP}] {} crate(s) clean under miri", selected.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_word_detection() {
        assert!(mentions_unsafe("fn f() { unsafe { g() } }"));
        assert!(mentions_unsafe("pub unsafe fn f() {}"));
        assert!(mentions_unsafe("unsafe impl Send for X {}"));
        assert!(!mentions_unsafe("#![deny(unsafe_op_in_unsafe_fn)]"));
        assert!(!mentions_unsafe("#![forbid(unsafe_code)]"));
        assert!(!mentions_unsafe("// unsafe here is only a comment"));
        assert!(!mentions_unsafe("/// Not unsafe to call."));
        assert!(!mentions_unsafe("let not_unsafe = 1;"));
    }

    #[test]
    fn forbid_detection() {
        assert!(forbids_unsafe(
            "//! docs\n#![no_std]\n#![forbid(unsafe_code)]\n"
        ));
        assert!(forbids_unsafe("#![forbid(missing_docs, unsafe_code)]"));
        assert!(!forbids_unsafe("#![deny(unsafe_code)]"));
        assert!(!forbids_unsafe("// #![forbid(unsafe_code)]"));
    }
}
