//! Command-line interface: one `*Args` struct per subcommand. Doc comments are the `--help` text.

use clap::{Parser, Subcommand};

/// Developer commands for the machvm workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The xtask subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs every check in order, failing fast.
    ///
    /// Steps: fmt, clippy, test, smoke (QEMU test kernels, --quiet), nostd, msrv, doc, package,
    /// loom, miri, fuzz (--smoke). Prints a summary table and `N passed, N failed`; exits
    /// non-zero if a step failed.
    Ci(CiArgs),
    /// Builds the library crates for bare-metal targets.
    ///
    /// Targets x86_64-unknown-none and aarch64-unknown-none, with no default features, each
    /// single non-std feature, and all non-std features together. Features that enable `std`
    /// or are listed in `[package.metadata.machvm] host-only-features` are left out. Warnings
    /// in the crate being built are errors.
    Nostd(NostdArgs),
    /// Checks every library crate with the Rust version its `rust-version` names.
    ///
    /// Installs that toolchain (minimal profile) with rustup when missing, then runs
    /// `cargo +VERSION check --lib --all-features` per crate in `target/msrv`.
    Msrv(MsrvArgs),
    /// Checks publishing metadata and packages the publishable crates.
    ///
    /// Runs `cargo package --workspace` (verified, never published) after checking that every
    /// publishable crate has description, license, repository, readme, keywords, categories,
    /// rust-version and documentation. Passes `--allow-dirty` unless `CI` is set.
    Package(PackageArgs),
    /// Runs the loom models (`tests/loom.rs`) of every crate that has one.
    ///
    /// Uses `RUSTFLAGS="--cfg loom"`, `CARGO_TARGET_DIR=target/loom` and
    /// `LOOM_MAX_PREEMPTIONS=2` (unless already set), in release mode.
    Loom(LoomArgs),
    /// Runs the tests of every crate that contains `unsafe` under miri.
    ///
    /// Installs the nightly `miri` and `rust-src` components when missing. Uses
    /// `CARGO_TARGET_DIR=target/miri`, adds `-Zmiri-disable-isolation` to `MIRIFLAGS` and sets
    /// `PROPTEST_CASES=4` unless already set.
    Miri(MiriArgs),
    /// Runs the cargo-fuzz targets in fuzz/ on nightly.
    ///
    /// Installs cargo-fuzz when missing. Fails on any crash and prints the reproducer path.
    Fuzz(FuzzArgs),
    /// Runs the criterion benchmarks and compares machvm with the anchors.
    ///
    /// Writes target/machvm-bench/summary.json and prints, per crate, each anchor's ns/op and
    /// the ratio anchor/machvm (>1 means machvm is faster) with a geometric mean. Benches can
    /// add extra figures as JSON lines to the file named by `MACHVM_BENCH_EXTRA`.
    Bench(BenchArgs),
    /// Builds the QEMU test kernels (tests/boot) and boots each configuration.
    ///
    /// The kernels run machvm-page-table and machvm-tlb on QEMU's MMUs (TCG): x86-4level,
    /// x86-5level, x86-smp, a64-4k48, a64-4k39, a64-16k47, a64-16k48, a64-smp. Installs the rustup
    /// targets if missing, and QEMU too when running as root on Debian (bookworm-backports on
    /// Debian 12); builds into target/boot. A boot passes on QEMU's success status (x86_64: 33,
    /// aarch64: 0) together with a `SMOKE PASS` line. Prints a summary table.
    Smoke(SmokeArgs),
}

/// Arguments of `cargo xtask ci`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CiArgs {
    /// Skips a step (repeatable). Steps: fmt, clippy, test, smoke, nostd, msrv, doc, package,
    /// loom, miri, fuzz.
    #[arg(long, value_name = "STEP")]
    pub skip: Vec<String>,
    /// Starts at this step; earlier steps are skipped.
    #[arg(long, value_name = "STEP")]
    pub from: Option<String>,
}

/// Arguments of `cargo xtask nostd`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NostdArgs {
    /// Crates to build (short name like `addr` or package name like `machvm-addr`); default:
    /// every library crate under crates/.
    #[arg(value_name = "CRATE")]
    pub crates: Vec<String>,
}

/// Arguments of `cargo xtask msrv`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MsrvArgs {
    /// Crates to check (short or package name); default: every library crate under crates/.
    #[arg(value_name = "CRATE")]
    pub crates: Vec<String>,
}

/// Arguments of `cargo xtask package`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PackageArgs {
    /// Only checks the publishing metadata; does not run `cargo package`.
    #[arg(long)]
    pub metadata_only: bool,
}

/// Arguments of `cargo xtask loom`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LoomArgs {
    /// Crates to model-check (short or package name); default: every crate with `tests/loom.rs`.
    #[arg(value_name = "CRATE")]
    pub crates: Vec<String>,
}

/// Arguments of `cargo xtask miri`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MiriArgs {
    /// Crates to test (short or package name); default: every library crate whose src/
    /// contains `unsafe`.
    #[arg(value_name = "CRATE")]
    pub crates: Vec<String>,
}

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FuzzArgs {
    /// Runs every target for a short time (10 s each unless `--seconds` is given).
    #[arg(long, conflicts_with = "target")]
    pub smoke: bool,
    /// The fuzz target to run; default: every target in fuzz/Cargo.toml.
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
    /// Seconds per target (`-max_total_time`); default 60, or 10 with `--smoke`.
    #[arg(long, value_name = "N")]
    pub seconds: Option<u64>,
}

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchArgs {
    /// Passes `--quick` to criterion (fewer samples, well under 2 minutes per crate).
    #[arg(long)]
    pub quick: bool,
    /// Crates to benchmark (short or package name); default: every crate under crates/ with a
    /// benches/ directory.
    #[arg(value_name = "CRATE")]
    pub crates: Vec<String>,
}

/// Arguments of `cargo xtask smoke`.
#[derive(Debug, Clone, clap::Args)]
pub struct SmokeArgs {
    /// Does not stream the kernels' serial output (a failing boot's output is still shown).
    #[arg(long)]
    pub quiet: bool,
    /// Boots only these configurations (repeatable, or comma-separated).
    #[arg(long, value_name = "NAME", num_args = 1..)]
    pub only: Vec<String>,
    /// Seconds before a boot is killed and counted as failed.
    #[arg(long, value_name = "SECS", default_value_t = crate::smoke::DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
}

impl Default for SmokeArgs {
    fn default() -> Self {
        Self {
            quiet: false,
            only: Vec::new(),
            timeout: crate::smoke::DEFAULT_TIMEOUT_SECS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn smoke_conflicts_with_target() {
        assert!(Cli::try_parse_from(["xtask", "fuzz", "--smoke", "addr_ops"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "fuzz", "--smoke", "--seconds", "3"]).unwrap();
        let Command::Fuzz(args) = cli.command else {
            panic!("expected fuzz")
        };
        assert!(args.smoke);
        assert_eq!(args.seconds, Some(3));
    }

    #[test]
    fn smoke_only_takes_several_names() {
        let cli = Cli::try_parse_from([
            "xtask",
            "smoke",
            "--quiet",
            "--only",
            "a64-smp",
            "x86-4level",
        ])
        .unwrap();
        let Command::Smoke(args) = cli.command else {
            panic!("expected smoke")
        };
        assert!(args.quiet);
        assert_eq!(args.only, ["a64-smp", "x86-4level"]);
        assert_eq!(args.timeout, 30);
    }

    #[test]
    fn ci_skip_is_repeatable() {
        let cli = Cli::try_parse_from(["xtask", "ci", "--skip", "miri", "--skip", "fuzz"]).unwrap();
        let Command::Ci(args) = cli.command else {
            panic!("expected ci")
        };
        assert_eq!(args.skip, ["miri", "fuzz"]);
    }
}
