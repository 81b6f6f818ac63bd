//! `cargo xtask msrv`: checks every library crate with the toolchain its `rust-version` names.
//!
//! The workspace declares one `rust-version`; this installs that toolchain (minimal profile)
//! when missing and runs `cargo +VERSION check --lib --all-features` per library crate in a
//! target dir of its own, so a newer language feature or std API fails here rather than for
//! a user on the oldest supported compiler.

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cargo::{Action, Cargo, Features};
use crate::cli::MsrvArgs;
use crate::util::{ensure_toolchain, run_cmd};
use crate::workspace::{Package, Workspace};

const STEP: &str = "msrv";

/// Returns the `rust-version` shared by `crates`, failing if they disagree or one lacks it.
pub fn common_rust_version(crates: &[&Package]) -> Result<String> {
    let mut found: Option<String> = None;
    for pkg in crates {
        let Some(v) = pkg.raw.get("rust_version").and_then(Value::as_str) else {
            bail!("[{STEP}] {} has no rust-version", pkg.name);
        };
        match &found {
            None => found = Some(v.to_owned()),
            Some(f) if f == v => {}
            Some(f) => bail!(
                "[{STEP}] {} declares rust-version {v}, others {f}",
                pkg.name
            ),
        }
    }
    found.context("no library crates to check")
}

/// Runs the MSRV check.
pub fn run(args: &MsrvArgs) -> Result<()> {
    let ws = Workspace::load(STEP)?;
    let crates = ws.select(&args.crates, |_| true)?;
    let version = common_rust_version(&crates)?;
    ensure_toolchain(STEP, &version)?;
    let target_dir = ws.root.join("target").join("msrv");
    for pkg in &crates {
        let cargo = Cargo::new(Action::Check)
            .toolchain(&version)
            .package(&pkg.name)
            .features(Features::All)
            .flags(["--lib"])
            .env("CARGO_TARGET_DIR", target_dir.display().to_string())
            .cwd(&ws.root);
        run_cmd(STEP, &mut cargo.command())?;
    }
    eprintln!("[{STEP}] {} crates check with Rust {version}", crates.len());
    Ok(())
}
