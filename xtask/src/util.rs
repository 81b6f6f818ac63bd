//! Running commands (echoed, with errors that name the step and the command), tool probes and
//! install helpers.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Renders a command the way a shell user would type it, including `cd` and changed variables.
pub fn display_cmd(cmd: &Command) -> String {
    let mut parts = Vec::new();
    if let Some(dir) = cmd.get_current_dir() {
        parts.push(format!("cd {} &&", dir.display()));
    }
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!(
                "{}={}",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            ));
        }
    }
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=+.,/:@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Echoes `cmd`, runs it with inherited stdio and fails if it exits non-zero. The error names
/// `step` and the exact command.
pub fn run_cmd(step: &str, cmd: &mut Command) -> Result<()> {
    let shown = display_cmd(cmd);
    eprintln!("[{step}] $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("step `{step}`: could not start `{shown}`"))?;
    if !status.success() {
        bail!("step `{step}` failed: `{shown}` exited with {status}");
    }
    Ok(())
}

/// Runs `cmd` quietly (no echo) and returns its stdout; fails like [`run_cmd`].
pub fn capture_cmd(step: &str, cmd: &mut Command) -> Result<String> {
    let shown = display_cmd(cmd);
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("step `{step}`: could not start `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "step `{step}` failed: `{shown}` exited with {}",
            output.status
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("step `{step}`: `{shown}` printed non-UTF-8 output"))
}

/// Returns whether `cmd` starts and exits successfully (output discarded).
pub fn probe(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Returns whether the environment variable `CI` says we run in CI (set, not empty, not
/// `false`/`0`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Returns the value for an environment variable: `default` unless already set.
pub fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Appends `flags` to the current value of a flags variable (`RUSTFLAGS`, `MIRIFLAGS`), unless
/// already present.
pub fn env_append(key: &str, flags: &str) -> String {
    append_flags(std::env::var(key).ok().as_deref(), flags)
}

fn append_flags(current: Option<&str>, flags: &str) -> String {
    match current.map(str::trim) {
        None | Some("") => flags.to_owned(),
        Some(cur) if cur.contains(flags) => cur.to_owned(),
        Some(cur) => format!("{cur} {flags}"),
    }
}

/// Returns the lines of `list` whose first word is `name` or `name-<host triple>`.
fn component_listed(list: &str, name: &str) -> bool {
    list.lines().any(|line| {
        let word = line.split_whitespace().next().unwrap_or("");
        word == name
            || word
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('-') && rest[1..].contains("-unknown-"))
    })
}

/// Makes sure the rustup toolchain `toolchain` is installed (installs a minimal profile).
pub fn ensure_toolchain(step: &str, toolchain: &str) -> Result<()> {
    let list = capture_cmd(step, Command::new("rustup").args(["toolchain", "list"]))?;
    if list.lines().any(|l| l.starts_with(toolchain)) {
        return Ok(());
    }
    eprintln!("[{step}] toolchain {toolchain} missing; installing it");
    run_cmd(
        step,
        Command::new("rustup").args(["toolchain", "install", toolchain, "--profile", "minimal"]),
    )
}

/// Makes sure the rustup targets are installed for `toolchain`.
pub fn ensure_rustup_targets(step: &str, toolchain: &str, targets: &[&str]) -> Result<()> {
    let list = capture_cmd(
        step,
        Command::new("rustup").args(["target", "list", "--installed", "--toolchain", toolchain]),
    )?;
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !list.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("[{step}] installing rustup targets {missing:?} for {toolchain}");
    run_cmd(
        step,
        Command::new("rustup")
            .args(["target", "add", "--toolchain", toolchain])
            .args(&missing),
    )
}

/// Makes sure the rustup components are installed for `toolchain`.
pub fn ensure_rustup_components(step: &str, toolchain: &str, components: &[&str]) -> Result<()> {
    let list = capture_cmd(
        step,
        Command::new("rustup").args([&format!("+{toolchain}"), "component", "list", "--installed"]),
    )?;
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|c| !component_listed(&list, c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("[{step}] installing rustup components {missing:?} for {toolchain}");
    run_cmd(
        step,
        Command::new("rustup")
            .args(["component", "add"])
            .args(&missing)
            .args(["--toolchain", toolchain]),
    )
}

/// Makes sure a cargo subcommand tool exists: probes with `cargo <sub> --version`, else runs
/// `cargo install --locked <crate>`.
pub fn ensure_cargo_tool(step: &str, subcommand: &str, krate: &str) -> Result<()> {
    if probe(Command::new("cargo").args([subcommand, "--version"])) {
        return Ok(());
    }
    eprintln!(
        "[{step}] `cargo {subcommand}` not found; installing it with `cargo install --locked {krate}`"
    );
    run_cmd(
        step,
        Command::new("cargo").args(["install", "--locked", krate]),
    )
}

/// Returns the `apt-get install` command line that installs `packages`.
fn apt_install_line(packages: &[&str]) -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// Makes sure Debian packages are installed. Missing ones are installed with apt-get when
/// running as root on a Debian/Ubuntu machine; otherwise fails with the exact install command.
#[allow(dead_code)] // Used by the QEMU smoke subcommand (next issue); keep it general.
pub fn ensure_apt_packages(step: &str, packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .stderr(Stdio::null())
                .output();
            !out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let line = apt_install_line(&missing);
    let is_root = capture_cmd(step, Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0");
    if !(is_root && Path::new("/usr/bin/apt-get").exists()) {
        bail!("step `{step}`: missing packages {missing:?}; install them with: sudo {line}");
    }
    eprintln!("[{step}] installing {missing:?} with apt-get");
    run_cmd(step, Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        step,
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Fails with a one-line install hint unless `probe` succeeds.
#[allow(dead_code)] // Used for host tools without an installer (QEMU, next issue).
pub fn require_tool(step: &str, probe_cmd: &mut Command, install: &str) -> Result<()> {
    if probe(probe_cmd) {
        Ok(())
    } else {
        bail!(
            "step `{step}`: `{}` failed; install it with: {install}",
            display_cmd(probe_cmd)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_and_shows_env() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--cfg loom"])
            .env("RUSTFLAGS", "--cfg loom")
            .current_dir("/w");
        assert_eq!(
            display_cmd(&cmd),
            "cd /w && RUSTFLAGS='--cfg loom' cargo test '--cfg loom'"
        );
    }

    #[test]
    fn flags_are_appended_once() {
        assert_eq!(append_flags(None, "-Zx"), "-Zx");
        assert_eq!(append_flags(Some(" "), "-Zx"), "-Zx");
        assert_eq!(append_flags(Some("-Za"), "-Zx"), "-Za -Zx");
        assert_eq!(append_flags(Some("-Za -Zx"), "-Zx"), "-Za -Zx");
    }

    #[test]
    fn components_match_with_and_without_triple() {
        let list = "cargo-x86_64-unknown-linux-gnu\nmiri-x86_64-unknown-linux-gnu\nrust-src\n";
        assert!(component_listed(list, "miri"));
        assert!(component_listed(list, "rust-src"));
        assert!(!component_listed(list, "rust"));
        assert!(!component_listed(list, "clippy"));
    }

    #[test]
    fn apt_line() {
        assert_eq!(
            apt_install_line(&["qemu-system-x86", "qemu-system-arm"]),
            "apt-get install -y --no-install-recommends qemu-system-x86 qemu-system-arm"
        );
    }

    #[test]
    fn run_cmd_error_names_step_and_command() {
        let err = run_cmd("demo", Command::new("false").arg("x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "step `demo` failed: `false x` exited with exit status: 1"
        );
    }
}
