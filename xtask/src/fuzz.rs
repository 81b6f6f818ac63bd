//! `cargo xtask fuzz`: runs the cargo-fuzz targets in fuzz/ on nightly.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cargo::{Action, Cargo};
use crate::cli::FuzzArgs;
use crate::util::{display_cmd, ensure_cargo_tool, ensure_toolchain};
use crate::workspace::Workspace;

const STEP: &str = "fuzz";

/// Seconds per target for `--smoke`.
pub const SMOKE_SECONDS: u64 = 10;
/// Seconds per target otherwise.
pub const DEFAULT_SECONDS: u64 = 60;

/// Returns the `name`s of the `[[bin]]` sections of a cargo-fuzz manifest.
pub fn bin_targets(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if !in_bin {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "name" {
                out.push(value.trim().trim_matches('"').trim_matches('\'').to_owned());
            }
        }
    }
    out
}

/// What a libFuzzer run printed that we report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FuzzReport {
    /// Executions from the final `Done N runs in S second(s)` line.
    pub runs: Option<u64>,
    /// Crash or leak reproducer written by libFuzzer.
    pub artifact: Option<String>,
}

impl FuzzReport {
    /// Updates the report from one line of libFuzzer output.
    pub fn observe(&mut self, line: &str) {
        if let Some(rest) = line.trim().strip_prefix("Done ") {
            if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                self.runs = Some(n);
            }
        }
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifact = Some(path.trim().to_owned());
        }
    }
}

/// Runs the fuzz targets.
pub fn run(args: &FuzzArgs) -> Result<()> {
    let ws = Workspace::load(STEP)?;
    let fuzz_dir = ws.root.join("fuzz");
    let manifest_path = fuzz_dir.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("step `{STEP}`: reading {}", manifest_path.display()))?;
    let all = bin_targets(&manifest);
    if all.is_empty() {
        bail!(
            "step `{STEP}`: no [[bin]] targets in {}",
            manifest_path.display()
        );
    }
    let targets = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!(
            "step `{STEP}`: unknown fuzz target `{t}`; targets are: {}",
            all.join(", ")
        ),
        None => all,
    };
    let seconds = args.seconds.unwrap_or(if args.smoke {
        SMOKE_SECONDS
    } else {
        DEFAULT_SECONDS
    });
    ensure_toolchain(STEP, "nightly")?;
    ensure_cargo_tool(STEP, "fuzz", "cargo-fuzz")?;
    let mut results = Vec::new();
    for target in &targets {
        let report = run_target(&fuzz_dir, target, seconds)?;
        results.push((target.clone(), report));
    }
    for (target, report) in &results {
        let runs = report.runs.map_or("?".to_owned(), |n| n.to_string());
        eprintln!("[{STEP}] {target}: {runs} runs in {seconds} s, no crash");
    }
    Ok(())
}

fn run_target(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<FuzzReport> {
    let cargo = Cargo::new(Action::FuzzRun(target.to_owned()))
        .toolchain("nightly")
        .tool_args([format!("-max_total_time={seconds}"), "-seed=1".to_owned()])
        .cwd(fuzz_dir);
    let mut cmd = cargo.command();
    let shown = display_cmd(&cmd);
    eprintln!("[{STEP}] $ {shown}");
    let start = Instant::now();
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("step `{STEP}`: could not start `{shown}`"))?;
    let mut report = FuzzReport::default();
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    let mut out = std::io::stderr();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        report.observe(&line);
        // Echo failures are not worth failing the run for.
        let _ = out.write_all(&buf);
    }
    let status = child.wait()?;
    if !status.success() {
        let artifact = report.artifact.as_deref().map_or(String::new(), |a| {
            format!("; reproducer: {}", fuzz_dir.join(a).display())
        });
        bail!(
            "step `{STEP}` failed: target `{target}` crashed or failed ({status}): `{shown}`{artifact}"
        );
    }
    eprintln!(
        "[{STEP}] {target}: done in {:.0} s, {} runs",
        start.elapsed().as_secs_f64(),
        report.runs.map_or("?".to_owned(), |n| n.to_string())
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_from_manifest() {
        let manifest = r#"
[package]
name = "machvm-fuzz"

[package.metadata]
cargo-fuzz = true

[dependencies]
libfuzzer-sys = "0.4"

[[bin]]
name = "addr_ops"   # comment
path = "fuzz_targets/addr_ops.rs"
test = false

[[bin]]
name = 'sim_frames'
path = "fuzz_targets/sim_frames.rs"
"#;
        assert_eq!(bin_targets(manifest), ["addr_ops", "sim_frames"]);
    }

    #[test]
    fn report_parses_done_and_artifact() {
        let mut r = FuzzReport::default();
        r.observe("#1024\tpulse  cov: 12 ft: 13 corp: 1/1b exec/s: 0 rss: 30Mb\n");
        r.observe("Done 1432718 runs in 11 second(s)\n");
        assert_eq!(r.runs, Some(1432718));
        r.observe("artifact_prefix='/w/fuzz/artifacts/addr_ops/'; Test unit written to /w/fuzz/artifacts/addr_ops/crash-abc\n");
        assert_eq!(
            r.artifact.as_deref(),
            Some("/w/fuzz/artifacts/addr_ops/crash-abc")
        );
    }
}
