//! A typed builder for cargo invocations, unit-tested on the argv it produces.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// The cargo subcommand to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `cargo build`.
    Build,
    /// `cargo rustc` (arguments after `--` reach only the selected package's compilation).
    Rustc,
    /// `cargo check`.
    Check,
    /// `cargo test`.
    Test,
    /// `cargo clippy`.
    Clippy,
    /// `cargo doc`.
    Doc,
    /// `cargo fmt`.
    Fmt,
    /// `cargo package`.
    Package,
    /// `cargo bench`.
    Bench,
    /// `cargo miri setup`.
    MiriSetup,
    /// `cargo miri test`.
    MiriTest,
    /// `cargo fuzz run TARGET`.
    FuzzRun(String),
}

impl Action {
    fn words(&self) -> Vec<&str> {
        match self {
            Action::Build => vec!["build"],
            Action::Rustc => vec!["rustc"],
            Action::Check => vec!["check"],
            Action::Test => vec!["test"],
            Action::Clippy => vec!["clippy"],
            Action::Doc => vec!["doc"],
            Action::Fmt => vec!["fmt"],
            Action::Package => vec!["package"],
            Action::Bench => vec!["bench"],
            Action::MiriSetup => vec!["miri", "setup"],
            Action::MiriTest => vec!["miri", "test"],
            Action::FuzzRun(target) => vec!["fuzz", "run", target],
        }
    }
}

/// Which features to enable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Features {
    /// The package defaults (no flag).
    #[default]
    Default,
    /// `--no-default-features` plus the listed features (if any).
    NoDefault(Vec<String>),
    /// `--all-features`.
    All,
}

/// Which packages to select.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Packages {
    /// No selection flag (the package in the current directory, or the default members).
    #[default]
    Current,
    /// `--workspace` (`--all` for `fmt`), minus the excluded packages.
    Workspace {
        /// Packages passed as `--exclude`.
        exclude: Vec<String>,
    },
    /// `-p NAME` for each listed package.
    Some(Vec<String>),
}

/// A cargo invocation.
#[derive(Debug, Clone)]
pub struct Cargo {
    /// `+toolchain`, if any.
    pub toolchain: Option<String>,
    /// The subcommand.
    pub action: Action,
    /// Package selection.
    pub packages: Packages,
    /// Feature selection.
    pub features: Features,
    /// `--target`, if any.
    pub target: Option<String>,
    /// `--release`.
    pub release: bool,
    /// `--all-targets`.
    pub all_targets: bool,
    /// Further cargo flags, placed before `--`.
    pub flags: Vec<String>,
    /// Arguments after `--` (for rustfmt, clippy-driver, the test harness or libFuzzer).
    pub tool_args: Vec<String>,
    /// Environment variables to set.
    pub env: Vec<(String, String)>,
    /// Working directory, if not the current one.
    pub cwd: Option<PathBuf>,
}

impl Cargo {
    /// Starts an invocation of `action` with no flags.
    pub fn new(action: Action) -> Self {
        Cargo {
            toolchain: None,
            action,
            packages: Packages::Current,
            features: Features::Default,
            target: None,
            release: false,
            all_targets: false,
            flags: Vec::new(),
            tool_args: Vec::new(),
            env: Vec::new(),
            cwd: None,
        }
    }

    /// Uses `cargo +toolchain`.
    pub fn toolchain(mut self, toolchain: &str) -> Self {
        self.toolchain = Some(toolchain.to_owned());
        self
    }

    /// Selects packages.
    pub fn packages(mut self, packages: Packages) -> Self {
        self.packages = packages;
        self
    }

    /// Selects one package.
    pub fn package(self, name: &str) -> Self {
        self.packages(Packages::Some(vec![name.to_owned()]))
    }

    /// Selects the whole workspace.
    pub fn workspace(self) -> Self {
        self.packages(Packages::Workspace {
            exclude: Vec::new(),
        })
    }

    /// Selects features.
    pub fn features(mut self, features: Features) -> Self {
        self.features = features;
        self
    }

    /// Sets `--target`.
    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(target.to_owned());
        self
    }

    /// Sets `--release`.
    pub fn release(mut self) -> Self {
        self.release = true;
        self
    }

    /// Sets `--all-targets`.
    pub fn all_targets(mut self) -> Self {
        self.all_targets = true;
        self
    }

    /// Adds cargo flags (before `--`).
    pub fn flags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, flags: I) -> Self {
        self.flags.extend(flags.into_iter().map(Into::into));
        self
    }

    /// Adds arguments after `--`.
    pub fn tool_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.tool_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Returns the argv after `cargo`.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(toolchain) = &self.toolchain {
            args.push(format!("+{toolchain}"));
        }
        args.extend(self.action.words().into_iter().map(str::to_owned));
        if self.release {
            args.push("--release".into());
        }
        match &self.packages {
            Packages::Current => {}
            Packages::Workspace { exclude } => {
                // rustfmt's cargo wrapper spells `--workspace` as `--all`.
                args.push(
                    if self.action == Action::Fmt {
                        "--all"
                    } else {
                        "--workspace"
                    }
                    .into(),
                );
                for name in exclude {
                    args.push("--exclude".into());
                    args.push(name.clone());
                }
            }
            Packages::Some(names) => {
                for name in names {
                    args.push("-p".into());
                    args.push(name.clone());
                }
            }
        }
        if let Some(target) = &self.target {
            args.push("--target".into());
            args.push(target.clone());
        }
        if self.all_targets {
            args.push("--all-targets".into());
        }
        match &self.features {
            Features::Default => {}
            Features::NoDefault(features) => {
                args.push("--no-default-features".into());
                if !features.is_empty() {
                    args.push("--features".into());
                    args.push(features.join(","));
                }
            }
            Features::All => args.push("--all-features".into()),
        }
        args.extend(self.flags.iter().cloned());
        if !self.tool_args.is_empty() {
            args.push("--".into());
            args.extend(self.tool_args.iter().cloned());
        }
        args
    }

    /// Builds the [`Command`].
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(cargo_program());
        cmd.args(self.args());
        if self.toolchain.is_some() {
            // `cargo xtask` runs under rustup with RUSTUP_TOOLCHAIN set to the outer toolchain;
            // `+toolchain` wins anyway, but do not let the stale value leak into nested tools.
            cmd.env_remove("RUSTUP_TOOLCHAIN");
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }
}

/// Returns the cargo program to run: always the rustup proxy on `PATH`, so `+toolchain` works
/// (the `CARGO` variable that `cargo run` sets points at one toolchain's binary).
pub fn cargo_program() -> OsString {
    OsString::from("cargo")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_check_uses_all() {
        let args = Cargo::new(Action::Fmt)
            .workspace()
            .tool_args(["--check"])
            .args();
        assert_eq!(args, ["fmt", "--all", "--", "--check"]);
    }

    #[test]
    fn rustc_passes_flags_to_the_package_only() {
        let args = Cargo::new(Action::Rustc)
            .package("machvm-addr")
            .target("x86_64-unknown-none")
            .features(Features::NoDefault(vec![]))
            .flags(["--lib"])
            .tool_args(["-D", "warnings"])
            .args();
        assert_eq!(
            args,
            [
                "rustc",
                "-p",
                "machvm-addr",
                "--target",
                "x86_64-unknown-none",
                "--no-default-features",
                "--lib",
                "--",
                "-D",
                "warnings"
            ]
        );
    }

    #[test]
    fn clippy_workspace_all_features() {
        let args = Cargo::new(Action::Clippy)
            .workspace()
            .all_targets()
            .features(Features::All)
            .tool_args(["-D", "warnings"])
            .args();
        assert_eq!(
            args,
            [
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings"
            ]
        );
    }

    #[test]
    fn nostd_build_with_features() {
        let args = Cargo::new(Action::Build)
            .package("machvm-addr")
            .target("aarch64-unknown-none")
            .features(Features::NoDefault(vec!["a".into(), "b".into()]))
            .args();
        assert_eq!(
            args,
            [
                "build",
                "-p",
                "machvm-addr",
                "--target",
                "aarch64-unknown-none",
                "--no-default-features",
                "--features",
                "a,b"
            ]
        );
        let args = Cargo::new(Action::Build)
            .package("machvm-addr")
            .features(Features::NoDefault(Vec::new()))
            .args();
        assert_eq!(
            args,
            ["build", "-p", "machvm-addr", "--no-default-features"]
        );
    }

    #[test]
    fn package_excludes() {
        let args = Cargo::new(Action::Package)
            .packages(Packages::Workspace {
                exclude: vec!["xtask".into(), "machvm-tests".into()],
            })
            .flags(["--allow-dirty"])
            .args();
        assert_eq!(
            args,
            [
                "package",
                "--workspace",
                "--exclude",
                "xtask",
                "--exclude",
                "machvm-tests",
                "--allow-dirty"
            ]
        );
    }

    #[test]
    fn toolchain_and_multiword_actions() {
        let args = Cargo::new(Action::MiriTest)
            .toolchain("nightly")
            .package("machvm-sync")
            .features(Features::All)
            .flags(["--lib", "--tests"])
            .args();
        assert_eq!(
            args,
            [
                "+nightly",
                "miri",
                "test",
                "-p",
                "machvm-sync",
                "--all-features",
                "--lib",
                "--tests"
            ]
        );
        let args = Cargo::new(Action::FuzzRun("addr_ops".into()))
            .toolchain("nightly")
            .tool_args(["-max_total_time=10", "-seed=1"])
            .args();
        assert_eq!(
            args,
            [
                "+nightly",
                "fuzz",
                "run",
                "addr_ops",
                "--",
                "-max_total_time=10",
                "-seed=1"
            ]
        );
    }

    #[test]
    fn loom_release_test() {
        let cargo = Cargo::new(Action::Test)
            .release()
            .package("machvm-sync")
            .flags(["--test", "loom"])
            .env("RUSTFLAGS", "--cfg loom");
        assert_eq!(
            cargo.args(),
            ["test", "--release", "-p", "machvm-sync", "--test", "loom"]
        );
        let cmd = cargo.command();
        let envs: Vec<_> = cmd.get_envs().collect();
        assert!(envs.contains(&(
            std::ffi::OsStr::new("RUSTFLAGS"),
            Some(std::ffi::OsStr::new("--cfg loom"))
        )));
    }
}
