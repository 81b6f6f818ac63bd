//! `cargo xtask loom`: runs each crate's `tests/loom.rs` models under `--cfg loom`.

use anyhow::{Result, bail};

use crate::cargo::{Action, Cargo};
use crate::cli::LoomArgs;
use crate::util::{env_append, env_or, run_cmd};
use crate::workspace::{Package, Workspace};

const STEP: &str = "loom";

fn has_models(pkg: &Package) -> bool {
    pkg.dir.join("tests/loom.rs").is_file()
}

/// Runs the loom models.
pub fn run(args: &LoomArgs) -> Result<()> {
    let ws = Workspace::load(STEP)?;
    let all = ws.select(&args.crates, |_| true)?;
    let (with, without): (Vec<&Package>, Vec<&Package>) =
        all.into_iter().partition(|p| has_models(p));
    if !args.crates.is_empty() && !without.is_empty() {
        let names: Vec<&str> = without.iter().map(|p| p.name.as_str()).collect();
        bail!("step `{STEP}`: no tests/loom.rs in {}", names.join(", "));
    }
    let names: Vec<&str> = with.iter().map(|p| p.short_name()).collect();
    eprintln!(
        "[{STEP}] crates with loom models: {}",
        if names.is_empty() {
            "(none)".to_owned()
        } else {
            names.join(", ")
        }
    );
    // RUSTFLAGS replaces config rustflags and rebuilds everything: use a separate target dir.
    let target_dir = ws.target_dir.join("loom");
    for pkg in &with {
        let cargo = Cargo::new(Action::Test)
            .release()
            .package(&pkg.name)
            .flags(["--test", "loom"])
            .env("RUSTFLAGS", env_append("RUSTFLAGS", "--cfg loom"))
            .env("CARGO_TARGET_DIR", target_dir.to_string_lossy())
            .env("LOOM_MAX_PREEMPTIONS", env_or("LOOM_MAX_PREEMPTIONS", "2"))
            .cwd(&ws.root);
        run_cmd(STEP, &mut cargo.command())?;
    }
    eprintln!("[{STEP}] {} crate(s) model-checked", with.len());
    Ok(())
}
