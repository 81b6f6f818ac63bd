//! `cargo xtask ci`: every check, in order, failing fast, with a summary table.
//!
//! After the first failure the remaining steps are reported as `not-run`; steps excluded with
//! `--skip`/`--from` as `skipped`. Neither counts in the final `N passed, N failed` line (so
//! `passed + failed` can be less than the number of steps); the exit code is non-zero whenever
//! a step failed.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::cargo::{Action, Cargo, Features};
use crate::cli::{
    CiArgs, FuzzArgs, LoomArgs, MiriArgs, MsrvArgs, NostdArgs, PackageArgs, SmokeArgs,
};
use crate::util::{env_append, run_cmd};

/// The steps, in order.
pub const STEPS: [&str; 11] = [
    "fmt", "clippy", "test", "smoke", "nostd", "msrv", "doc", "package", "loom", "miri", "fuzz",
];

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The step passed.
    Ok,
    /// The step failed.
    Failed,
    /// Excluded by `--skip` or `--from`.
    Skipped,
    /// Not run because an earlier step failed.
    NotRun,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
            Outcome::NotRun => "not-run",
        }
    }
}

/// Returns which steps to run, validating `--skip` and `--from`.
pub fn selected_steps(args: &CiArgs) -> Result<Vec<(&'static str, bool)>> {
    for name in args.skip.iter().chain(&args.from) {
        if !STEPS.contains(&name.as_str()) {
            bail!("unknown ci step `{name}`; steps are: {}", STEPS.join(", "));
        }
    }
    let from = args
        .from
        .as_deref()
        .and_then(|f| STEPS.iter().position(|s| *s == f))
        .unwrap_or(0);
    Ok(STEPS
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, i >= from && !args.skip.iter().any(|k| k == s)))
        .collect())
}

fn run_step(name: &str) -> Result<()> {
    match name {
        "fmt" => run_cmd(
            name,
            &mut Cargo::new(Action::Fmt)
                .workspace()
                .tool_args(["--check"])
                .command(),
        ),
        "clippy" => run_cmd(
            name,
            &mut Cargo::new(Action::Clippy)
                .workspace()
                .all_targets()
                .features(Features::All)
                .tool_args(["-D", "warnings"])
                .command(),
        ),
        "test" => run_cmd(
            name,
            &mut Cargo::new(Action::Test)
                .workspace()
                .features(Features::All)
                .command(),
        ),
        "smoke" => crate::smoke::run(&SmokeArgs {
            quiet: true,
            ..SmokeArgs::default()
        }),
        "nostd" => crate::nostd::run(&NostdArgs::default()),
        "msrv" => crate::msrv::run(&MsrvArgs::default()),
        "doc" => run_cmd(
            name,
            &mut Cargo::new(Action::Doc)
                .workspace()
                .features(Features::All)
                .flags(["--no-deps"])
                .env("RUSTDOCFLAGS", env_append("RUSTDOCFLAGS", "-D warnings"))
                .command(),
        ),
        "package" => crate::package::run(&PackageArgs::default()),
        "loom" => crate::loom::run(&LoomArgs::default()),
        "miri" => crate::miri::run(&MiriArgs::default()),
        "fuzz" => crate::fuzz::run(&FuzzArgs {
            smoke: true,
            ..FuzzArgs::default()
        }),
        other => bail!("unknown ci step `{other}`"),
    }
}

/// Renders the summary table and the `N passed, N failed` line.
pub fn summary(rows: &[(&str, Outcome, Option<f64>)]) -> String {
    let mut out = format!("{:<8}  {:<8}  {:>8}\n", "step", "result", "seconds");
    for (name, outcome, secs) in rows {
        let secs = secs.map_or("-".to_owned(), |s| format!("{s:.1}"));
        out.push_str(&format!("{name:<8}  {:<8}  {secs:>8}\n", outcome.label()));
    }
    let passed = rows.iter().filter(|r| r.1 == Outcome::Ok).count();
    let failed = rows.iter().filter(|r| r.1 == Outcome::Failed).count();
    out.push_str(&format!("{passed} passed, {failed} failed\n"));
    out
}

/// Runs the CI steps.
pub fn run(args: &CiArgs) -> Result<()> {
    let steps = selected_steps(args)?;
    let mut rows = Vec::new();
    let mut failure = None;
    for (name, enabled) in steps {
        if !enabled {
            rows.push((name, Outcome::Skipped, None));
            continue;
        }
        if failure.is_some() {
            rows.push((name, Outcome::NotRun, None));
            continue;
        }
        eprintln!("==> ci step `{name}`");
        let start = Instant::now();
        let result = run_step(name);
        let secs = Some(start.elapsed().as_secs_f64());
        match result {
            Ok(()) => rows.push((name, Outcome::Ok, secs)),
            Err(e) => {
                eprintln!("==> ci step `{name}` FAILED: {e:#}");
                rows.push((name, Outcome::Failed, secs));
                failure = Some(e);
            }
        }
    }
    print!("\n{}", summary(&rows));
    match failure {
        Some(e) => Err(e.context("ci failed")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_and_from() {
        let args = CiArgs {
            skip: vec!["miri".into()],
            from: Some("doc".into()),
        };
        let enabled: Vec<&str> = selected_steps(&args)
            .unwrap()
            .into_iter()
            .filter(|s| s.1)
            .map(|s| s.0)
            .collect();
        assert_eq!(enabled, ["doc", "package", "loom", "fuzz"]);
        let bad = CiArgs {
            skip: vec!["lint".into()],
            from: None,
        };
        assert!(selected_steps(&bad).is_err());
    }

    #[test]
    fn summary_counts_only_run_steps() {
        let s = summary(&[
            ("fmt", Outcome::Ok, Some(1.04)),
            ("clippy", Outcome::Failed, Some(12.0)),
            ("test", Outcome::NotRun, None),
            ("miri", Outcome::Skipped, None),
        ]);
        assert_eq!(
            s,
            "\
step      result     seconds
fmt       ok             1.0
clippy    FAILED        12.0
test      not-run          -
miri      skipped          -
1 passed, 1 failed
"
        );
    }
}
