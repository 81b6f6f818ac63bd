//! Workspace facts from `cargo metadata --format-version 1 --no-deps`: library crates under
//! crates/, their features and dependency order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util::capture_cmd;

/// A dependency of a workspace package.
#[derive(Debug, Clone)]
pub struct Dep {
    /// The dependency's package name.
    pub name: String,
    /// Its name in this package's feature table (`rename` or `name`).
    pub key: String,
    /// `normal`, `dev` or `build`.
    pub kind: String,
    /// Features enabled on it unconditionally.
    pub features: Vec<String>,
}

/// A workspace package.
#[derive(Debug, Clone)]
pub struct Package {
    /// Package name (`machvm-addr`).
    pub name: String,
    /// Directory holding its Cargo.toml.
    pub dir: PathBuf,
    /// The feature table.
    pub features: BTreeMap<String, Vec<String>>,
    /// Its dependencies.
    pub deps: Vec<Dep>,
    /// Whether it may be published (`publish` not `false`).
    pub publishable: bool,
    /// Names of its `bench` targets.
    pub benches: Vec<String>,
    /// The raw metadata JSON (for field checks).
    pub raw: Value,
}

impl Package {
    /// Returns the short name: `machvm-addr` gives `addr`, `machvm` stays `machvm`.
    pub fn short_name(&self) -> &str {
        short_name(&self.name)
    }

    /// Returns `package.metadata.machvm.host-only-features`.
    pub fn host_only_features(&self) -> Vec<String> {
        self.raw
            .pointer("/metadata/machvm/host-only-features")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Returns the short name of a package name.
pub fn short_name(name: &str) -> &str {
    name.strip_prefix("machvm-").unwrap_or(name)
}

/// The workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root.
    pub root: PathBuf,
    /// The cargo target directory.
    pub target_dir: PathBuf,
    /// All workspace members.
    pub packages: Vec<Package>,
}

impl Workspace {
    /// Runs `cargo metadata` and parses it.
    pub fn load(step: &str) -> Result<Self> {
        let json = capture_cmd(
            step,
            Command::new(crate::cargo::cargo_program()).args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
            ]),
        )?;
        Self::parse(&json).context("parsing `cargo metadata` output")
    }

    /// Parses `cargo metadata --format-version 1 --no-deps` output.
    pub fn parse(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json)?;
        let root = PathBuf::from(str_field(&v, "workspace_root")?);
        let target_dir = PathBuf::from(str_field(&v, "target_directory")?);
        let members: BTreeSet<&str> = v["workspace_members"]
            .as_array()
            .context("no workspace_members")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut packages = Vec::new();
        for p in v["packages"].as_array().context("no packages")? {
            if !members.contains(str_field(p, "id")?) {
                continue;
            }
            let manifest = PathBuf::from(str_field(p, "manifest_path")?);
            let features = p["features"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), string_list(v))).collect())
                .unwrap_or_default();
            let deps = p["dependencies"]
                .as_array()
                .map(|a| a.iter().map(parse_dep).collect::<Result<Vec<_>>>())
                .transpose()?
                .unwrap_or_default();
            // `publish = false` appears as `[]`; `null` means any registry.
            let publishable = p["publish"].as_array().is_none_or(|a| !a.is_empty());
            let benches = p["targets"]
                .as_array()
                .map(|targets| {
                    targets
                        .iter()
                        .filter(|t| string_list(&t["kind"]).iter().any(|k| k == "bench"))
                        .filter_map(|t| t["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            packages.push(Package {
                name: str_field(p, "name")?.to_owned(),
                dir: manifest
                    .parent()
                    .context("manifest path has no parent")?
                    .to_owned(),
                features,
                deps,
                publishable,
                benches,
                raw: p.clone(),
            });
        }
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Workspace {
            root,
            target_dir,
            packages,
        })
    }

    /// Returns the package called `name`.
    pub fn get(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// Returns the library crates (packages under `crates/`) in dependency order
    /// (dependencies first, ties by name).
    pub fn library_crates(&self) -> Vec<&Package> {
        let crates_dir = self.root.join("crates");
        let libs: Vec<&Package> = self
            .packages
            .iter()
            .filter(|p| p.dir.starts_with(&crates_dir))
            .collect();
        dependency_order(&libs)
    }

    /// Resolves user-given crate names (short `addr` or full `machvm-addr`) among the library
    /// crates; an empty list selects `default`.
    pub fn select<'a>(
        &'a self,
        names: &[String],
        default: impl Fn(&Package) -> bool,
    ) -> Result<Vec<&'a Package>> {
        let libs = self.library_crates();
        if names.is_empty() {
            return Ok(libs.into_iter().filter(|p| default(p)).collect());
        }
        let mut out = Vec::new();
        for name in names {
            let Some(p) = libs
                .iter()
                .find(|p| p.name == *name || p.short_name() == name)
            else {
                let known: Vec<&str> = libs.iter().map(|p| p.short_name()).collect();
                bail!(
                    "unknown crate `{name}`; library crates are: {}",
                    known.join(", ")
                );
            };
            if !out.iter().any(|q: &&Package| q.name == p.name) {
                out.push(*p);
            }
        }
        Ok(out)
    }

    /// Returns whether `feature` of `pkg` enables a `std` feature, directly or through other
    /// features, optional dependencies or workspace dependencies' features.
    pub fn enables_std(&self, pkg: &Package, feature: &str) -> bool {
        let mut seen = BTreeSet::new();
        self.enables_std_inner(pkg, feature, &mut seen)
    }

    fn enables_std_inner(
        &self,
        pkg: &Package,
        feature: &str,
        seen: &mut BTreeSet<(String, String)>,
    ) -> bool {
        if feature == "std" {
            return true;
        }
        if !seen.insert((pkg.name.clone(), feature.to_owned())) {
            return false;
        }
        let Some(values) = pkg.features.get(feature) else {
            return false;
        };
        values.iter().any(|value| {
            if let Some(dep_key) = value.strip_prefix("dep:") {
                self.dep_enables_std(pkg, dep_key, None, seen)
            } else if let Some((dep_key, dep_feature)) = value.split_once('/') {
                let dep_key = dep_key.trim_end_matches('?');
                self.dep_enables_std(pkg, dep_key, Some(dep_feature), seen)
            } else {
                self.enables_std_inner(pkg, value, seen)
            }
        })
    }

    /// Whether activating dependency `dep_key` of `pkg` (and `dep_feature` on it) turns on std.
    fn dep_enables_std(
        &self,
        pkg: &Package,
        dep_key: &str,
        dep_feature: Option<&str>,
        seen: &mut BTreeSet<(String, String)>,
    ) -> bool {
        let deps = pkg
            .deps
            .iter()
            .filter(|d| d.key == dep_key && d.kind != "dev");
        for dep in deps {
            let mut features: Vec<&str> = dep.features.iter().map(String::as_str).collect();
            features.extend(dep_feature);
            if features.contains(&"std") {
                return true;
            }
            if let Some(dep_pkg) = self.get(&dep.name) {
                if features
                    .iter()
                    .any(|f| self.enables_std_inner(dep_pkg, f, seen))
                {
                    return true;
                }
            }
        }
        false
    }

    /// Returns the features of `pkg` that can be built without std: not `default`, not
    /// enabling std, not listed in `host-only-features`.
    pub fn nostd_features(&self, pkg: &Package) -> Vec<String> {
        let host_only = pkg.host_only_features();
        pkg.features
            .keys()
            .filter(|f| *f != "default" && !host_only.contains(f) && !self.enables_std(pkg, f))
            .cloned()
            .collect()
    }
}

fn parse_dep(d: &Value) -> Result<Dep> {
    let name = str_field(d, "name")?.to_owned();
    let key = d["rename"].as_str().unwrap_or(&name).to_owned();
    Ok(Dep {
        key,
        kind: d["kind"].as_str().unwrap_or("normal").to_owned(),
        features: string_list(&d["features"]),
        name,
    })
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v[key]
        .as_str()
        .with_context(|| format!("missing string field `{key}`"))
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Orders `pkgs` so that each comes after its (non-dev) dependencies among them; ties and
/// cycles are broken by name.
fn dependency_order<'a>(pkgs: &[&'a Package]) -> Vec<&'a Package> {
    let names: BTreeSet<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    let mut sorted: Vec<&Package> = pkgs.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    while out.len() < sorted.len() {
        let ready = sorted.iter().find(|p| {
            !done.contains(p.name.as_str())
                && p.deps.iter().all(|d| {
                    d.kind == "dev"
                        || !names.contains(d.name.as_str())
                        || done.contains(d.name.as_str())
                })
        });
        // A cycle cannot happen through normal deps, but never loop forever.
        let next = ready
            .or_else(|| sorted.iter().find(|p| !done.contains(p.name.as_str())))
            .copied()
            .expect("some package is left");
        done.insert(next.name.as_str());
        out.push(next);
    }
    out
}

/// Returns the paths of all files under `dir` (recursively) for which `keep` holds, sorted.
/// Unreadable directories are skipped.
pub fn files_under(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if keep(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Returns the paths of all `.rs` files under `dir`, sorted.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir, |p| p.extension().is_some_and(|x| x == "rs"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A trimmed `cargo metadata --no-deps` output: three library crates (one std-only
    /// feature chain, one host-only feature, one cross-crate std feature), a publish=false
    /// test crate, and a non-member package.
    pub(crate) const FIXTURE: &str = r#"{
      "packages": [
        {"name": "machvm-tlb", "id": "path+file:///w/crates/tlb#machvm-tlb@0.1.0",
         "manifest_path": "/w/crates/tlb/Cargo.toml", "publish": null,
         "features": {"default": ["batch"], "batch": [], "sim": ["machvm-addr/sim"],
                      "host": ["dep:proptest"], "fast": ["batch"]},
         "dependencies": [
           {"name": "machvm-addr", "kind": null, "optional": false, "features": [],
            "rename": null, "path": "/w/crates/addr"},
           {"name": "machvm-sync", "kind": null, "optional": false, "features": [],
            "rename": null, "path": "/w/crates/sync"},
           {"name": "proptest", "kind": null, "optional": true, "features": [],
            "rename": null}],
         "metadata": {"machvm": {"host-only-features": ["host"]}},
         "targets": [{"kind": ["lib"], "name": "machvm_tlb"},
                     {"kind": ["bench"], "name": "tlb"}]},
        {"name": "machvm-addr", "id": "path+file:///w/crates/addr#machvm-addr@0.1.0",
         "manifest_path": "/w/crates/addr/Cargo.toml", "publish": null,
         "features": {"default": [], "std": [], "sim": ["std"], "serde": []},
         "dependencies": [], "metadata": null,
         "targets": [{"kind": ["lib"], "name": "machvm_addr"}]},
        {"name": "machvm-sync", "id": "path+file:///w/crates/sync#machvm-sync@0.1.0",
         "manifest_path": "/w/crates/sync/Cargo.toml", "publish": null,
         "features": {"std": []},
         "dependencies": [
           {"name": "machvm-addr", "kind": null, "optional": false, "features": [],
            "rename": null, "path": "/w/crates/addr"},
           {"name": "loom", "kind": "dev", "optional": false, "features": [], "rename": null}],
         "metadata": null, "targets": [{"kind": ["lib"], "name": "machvm_sync"}]},
        {"name": "machvm-tests", "id": "path+file:///w/tests#machvm-tests@0.0.0",
         "manifest_path": "/w/tests/Cargo.toml", "publish": [],
         "features": {}, "dependencies": [], "metadata": null, "targets": []},
        {"name": "outsider", "id": "registry+x#outsider@1.0.0",
         "manifest_path": "/r/outsider/Cargo.toml", "publish": null,
         "features": {}, "dependencies": [], "metadata": null, "targets": []}
      ],
      "workspace_members": [
        "path+file:///w/crates/tlb#machvm-tlb@0.1.0",
        "path+file:///w/crates/addr#machvm-addr@0.1.0",
        "path+file:///w/crates/sync#machvm-sync@0.1.0",
        "path+file:///w/tests#machvm-tests@0.0.0"
      ],
      "target_directory": "/w/target",
      "workspace_root": "/w",
      "version": 1
    }"#;

    pub(crate) fn fixture() -> Workspace {
        Workspace::parse(FIXTURE).unwrap()
    }

    #[test]
    fn parses_members_only() {
        let ws = fixture();
        let names: Vec<&str> = ws.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["machvm-addr", "machvm-sync", "machvm-tests", "machvm-tlb"]
        );
        assert_eq!(ws.target_dir, Path::new("/w/target"));
        assert!(!ws.get("machvm-tests").unwrap().publishable);
        assert!(ws.get("machvm-tlb").unwrap().publishable);
        assert_eq!(ws.get("machvm-tlb").unwrap().benches, ["tlb"]);
    }

    #[test]
    fn library_crates_in_dependency_order() {
        let ws = fixture();
        let names: Vec<&str> = ws.library_crates().iter().map(|p| p.short_name()).collect();
        assert_eq!(names, ["addr", "sync", "tlb"]);
    }

    #[test]
    fn nostd_features_skip_std_default_and_host_only() {
        let ws = fixture();
        assert_eq!(ws.nostd_features(ws.get("machvm-addr").unwrap()), ["serde"]);
        assert!(ws.nostd_features(ws.get("machvm-sync").unwrap()).is_empty());
        // `sim` enables machvm-addr/sim, which enables std; `host` is host-only.
        assert_eq!(
            ws.nostd_features(ws.get("machvm-tlb").unwrap()),
            ["batch", "fast"]
        );
    }

    #[test]
    fn select_accepts_short_and_full_names() {
        let ws = fixture();
        let sel = ws
            .select(&["tlb".into(), "machvm-addr".into(), "addr".into()], |_| {
                true
            })
            .unwrap();
        let names: Vec<&str> = sel.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["machvm-tlb", "machvm-addr"]);
        let err = ws.select(&["nope".into()], |_| true).unwrap_err();
        assert!(err.to_string().contains("unknown crate `nope`"));
        let all = ws.select(&[], |p| p.short_name() != "sync").unwrap();
        assert_eq!(all.len(), 2);
    }
}
