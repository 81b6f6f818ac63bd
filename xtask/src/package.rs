//! `cargo xtask package`: publishing-metadata checks, then `cargo package` (verified) of every
//! publishable workspace crate. Nothing is ever published.
//!
//! `cargo package --workspace` (cargo ≥ 1.90) packages interdependent crates together: path
//! dependencies that are not on crates.io yet are resolved from a temporary local registry
//! under `target/package/tmp-registry`, so verification builds work before the first publish.

use anyhow::{Result, bail};
use serde_json::Value;

use crate::cargo::{Action, Cargo, Packages};
use crate::cli::PackageArgs;
use crate::util::{in_ci, run_cmd};
use crate::workspace::{Package, Workspace};

const STEP: &str = "package";

/// Returns the problems with `pkg`'s publishing metadata, one line each.
pub fn metadata_problems(pkg: &Package) -> Vec<String> {
    let raw = &pkg.raw;
    let mut problems = Vec::new();
    let mut missing = |field: &str| problems.push(format!("{}: missing `{field}`", pkg.name));
    let non_empty_str = |key: &str| raw[key].as_str().is_some_and(|s| !s.trim().is_empty());
    let non_empty_list = |key: &str| raw[key].as_array().is_some_and(|a| !a.is_empty());
    if !non_empty_str("description") {
        missing("description");
    }
    if !non_empty_str("license") && !non_empty_str("license_file") {
        missing("license");
    }
    if !non_empty_str("repository") {
        missing("repository");
    }
    if !non_empty_list("categories") {
        missing("categories");
    }
    if !non_empty_str("rust_version") {
        missing("rust-version");
    }
    let docs_rs = raw
        .pointer("/metadata/docs/rs")
        .is_some_and(Value::is_object);
    if !non_empty_str("documentation") && !docs_rs {
        missing("documentation (or [package.metadata.docs.rs])");
    }
    if !non_empty_list("keywords") {
        missing("keywords");
    }
    match raw["readme"].as_str() {
        None => missing("readme"),
        Some(readme) => {
            if !pkg.dir.join(readme).is_file() {
                problems.push(format!(
                    "{}: readme `{readme}` does not exist in {}",
                    pkg.name,
                    pkg.dir.display()
                ));
            }
        }
    }
    let keywords = raw["keywords"].as_array().map_or(0, Vec::len);
    if keywords > 5 {
        problems.push(format!(
            "{}: {keywords} keywords, crates.io allows at most 5",
            pkg.name
        ));
    }
    problems
}

/// Checks metadata, then runs `cargo package`.
pub fn run(args: &PackageArgs) -> Result<()> {
    let ws = Workspace::load(STEP)?;
    let publishable: Vec<&Package> = ws.packages.iter().filter(|p| p.publishable).collect();
    let problems: Vec<String> = publishable
        .iter()
        .flat_map(|p| metadata_problems(p))
        .collect();
    if !problems.is_empty() {
        bail!(
            "step `{STEP}` failed: incomplete publishing metadata:\n  {}",
            problems.join("\n  ")
        );
    }
    eprintln!(
        "[{STEP}] metadata complete for {} publishable crates",
        publishable.len()
    );
    if args.metadata_only {
        return Ok(());
    }
    let exclude = ws
        .packages
        .iter()
        .filter(|p| !p.publishable)
        .map(|p| p.name.clone())
        .collect();
    clear_stale_unpacks(&ws.root, &publishable);
    let mut cargo = Cargo::new(Action::Package)
        .packages(Packages::Workspace { exclude })
        .cwd(&ws.root);
    // A CI checkout is clean and must stay strict; developers package from dirty trees.
    if !in_ci() {
        cargo = cargo.flags(["--allow-dirty"]);
    }
    run_cmd(STEP, &mut cargo.command())
}

/// Removes what earlier `cargo package` runs left of our own crates outside `target/`.
///
/// Cargo unpacks the temporary registry's crates into `$CARGO_HOME/registry/src/-<hash>/`,
/// where the hash depends only on the registry's path, and reuses an unpacked
/// `name-version` directory as it finds it. Our crates keep one version while their code
/// changes, so a machine that packaged an older commit from the same path (a CI runner)
/// would verify against that older code. Only directories of local registries (named
/// `-<hash>`, never the crates.io index) and only our crates' entries are removed.
fn clear_stale_unpacks(root: &std::path::Path, publishable: &[&Package]) {
    let _ = std::fs::remove_dir_all(root.join("target/package/tmp-registry"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")));
    let Some(cargo_home) = cargo_home else {
        return;
    };
    for area in ["registry/src", "registry/cache"] {
        let Ok(registries) = std::fs::read_dir(cargo_home.join(area)) else {
            continue;
        };
        for registry in registries.flatten() {
            if !registry.file_name().to_string_lossy().starts_with('-') {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(registry.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if publishable.iter().any(|p| is_unpack_of(&name, &p.name)) {
                    let path = entry.path();
                    let removed = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    if removed.is_ok() {
                        eprintln!("[{STEP}] removed stale {}", path.display());
                    }
                }
            }
        }
    }
}

/// Whether `entry` (`name-1.2.3` or `name-1.2.3.crate`) is an unpack of crate `name`.
fn is_unpack_of(entry: &str, name: &str) -> bool {
    entry
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn unpack_names() {
        assert!(is_unpack_of("machvm-vm-object-0.1.0", "machvm-vm-object"));
        assert!(is_unpack_of(
            "machvm-vm-object-0.1.0.crate",
            "machvm-vm-object"
        ));
        assert!(!is_unpack_of("machvm-vm-object-0.1.0", "machvm-vm"));
        assert!(!is_unpack_of("machvm-vm-map-0.1.0", "machvm-vm-object"));
    }

    fn pkg(raw: Value) -> Package {
        Package {
            name: "machvm-x".into(),
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            features: Default::default(),
            deps: Vec::new(),
            publishable: true,
            benches: Vec::new(),
            raw,
        }
    }

    #[test]
    fn complete_metadata_passes() {
        let p = pkg(serde_json::json!({
            "description": "d", "license": "MIT", "repository": "r",
            "readme": "Cargo.toml", "keywords": ["a"], "categories": ["os"],
            "rust_version": "1.85", "documentation": "https://docs.rs/x",
        }));
        assert!(
            metadata_problems(&p).is_empty(),
            "{:?}",
            metadata_problems(&p)
        );
    }

    #[test]
    fn problems_name_crate_and_field() {
        let p = pkg(serde_json::json!({
            "description": "", "license": "MIT", "readme": "NOPE.md",
            "keywords": ["a", "b", "c", "d", "e", "f"], "categories": [],
            "metadata": {"docs": {"rs": {"all-features": true}}},
        }));
        let problems = metadata_problems(&p);
        assert_eq!(
            problems,
            [
                "machvm-x: missing `description`",
                "machvm-x: missing `repository`",
                "machvm-x: missing `categories`",
                "machvm-x: missing `rust-version`",
                &format!(
                    "machvm-x: readme `NOPE.md` does not exist in {}",
                    env!("CARGO_MANIFEST_DIR")
                ),
                "machvm-x: 6 keywords, crates.io allows at most 5",
            ]
        );
    }
}
