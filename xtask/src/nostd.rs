//! `cargo xtask nostd`: bare-metal builds of every library crate across its non-std feature
//! combinations, with warnings denied in the crate being built (`cargo rustc -- -D warnings`:
//! code that only the bare-metal targets leave unused, such as a helper of an x86_64-only
//! path, shows up here and nowhere else). `RUSTFLAGS=-D warnings` would not do: it replaces
//! the target's rustflags from `.cargo/config.toml`, and would also deny warnings in
//! dependencies.

use anyhow::Result;

use crate::cargo::{Action, Cargo, Features};
use crate::cli::NostdArgs;
use crate::util::{ensure_rustup_targets, run_cmd};
use crate::workspace::Workspace;

/// The bare-metal targets every library crate must build for.
pub const TARGETS: [&str; 2] = ["x86_64-unknown-none", "aarch64-unknown-none"];

const STEP: &str = "nostd";

/// Returns the feature sets to build: none, each single feature, then all together (when
/// that differs from the single ones).
pub fn feature_sets(features: &[String]) -> Vec<Vec<String>> {
    let mut sets = vec![Vec::new()];
    sets.extend(features.iter().map(|f| vec![f.clone()]));
    if features.len() > 1 {
        sets.push(features.to_vec());
    }
    sets
}

/// Runs the nostd builds.
pub fn run(args: &NostdArgs) -> Result<()> {
    ensure_rustup_targets(STEP, "stable", &TARGETS)?;
    let ws = Workspace::load(STEP)?;
    let crates = ws.select(&args.crates, |_| true)?;
    let mut builds = 0;
    for pkg in crates {
        let features = ws.nostd_features(pkg);
        eprintln!("[{STEP}] {}: non-std features {:?}", pkg.name, features);
        for target in TARGETS {
            for set in feature_sets(&features) {
                let cargo = Cargo::new(Action::Rustc)
                    .package(&pkg.name)
                    .target(target)
                    .features(Features::NoDefault(set))
                    .flags(["--lib"])
                    .tool_args(["-D", "warnings"])
                    .cwd(&ws.root);
                run_cmd(STEP, &mut cargo.command())?;
                builds += 1;
            }
        }
    }
    eprintln!("[{STEP}] {builds} bare-metal builds ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_sets_none_single_all() {
        assert_eq!(feature_sets(&[]), vec![Vec::<String>::new()]);
        assert_eq!(
            feature_sets(&["a".into()]),
            vec![vec![], vec!["a".to_owned()]]
        );
        let sets = feature_sets(&["a".into(), "b".into()]);
        assert_eq!(sets.len(), 4);
        assert_eq!(sets[3], ["a", "b"]);
    }
}
