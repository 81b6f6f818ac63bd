//! `cargo xtask smoke`: builds the QEMU test kernels in tests/boot and boots each
//! configuration, judging it by QEMU's exit status and the kernel's `SMOKE PASS` line.
//!
//! The kernels live in their own workspace (`tests/boot`, excluded from the root one) and are
//! built into `target/boot`. Every configuration is one QEMU boot (TCG, no firmware noise:
//! `-nodefaults -display none -serial stdio -no-reboot`) of the same kernel binary per
//! architecture, told which configuration to run by `-append "config=NAME"`. A boot passes
//! only if QEMU exits with the architecture's success status (x86_64: 33 from
//! `isa-debug-exit`, because a triple fault exits 0; aarch64: 0 from semihosting `SYS_EXIT`)
//! *and* the serial output has a `SMOKE PASS` line; a boot that outlives `--timeout` is killed.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cargo::{Action, Cargo};
use crate::cli::SmokeArgs;
use crate::util::{capture_cmd, display_cmd, ensure_apt_packages, ensure_rustup_targets, probe};
use crate::workspace::Workspace;

const STEP: &str = "smoke";

/// Default seconds before a boot is killed.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// The debian packages that provide the two QEMU binaries.
const QEMU_PACKAGES: [&str; 2] = ["qemu-system-x86", "qemu-system-arm"];

/// A kernel architecture: how to build its kernel and boot it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `tests/boot/x86_64`, booted through PVH by `qemu-system-x86_64`.
    X86_64,
    /// `tests/boot/aarch64`, booted on `qemu-system-aarch64 -M virt`.
    Aarch64,
}

impl Arch {
    /// Returns the rustup target triple.
    pub fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-none",
            Arch::Aarch64 => "aarch64-unknown-none",
        }
    }

    /// Returns the kernel package (and binary) name.
    pub fn package(self) -> &'static str {
        match self {
            Arch::X86_64 => "machvm-boot-x86_64",
            Arch::Aarch64 => "machvm-boot-aarch64",
        }
    }

    /// Returns the QEMU binary.
    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// Returns the exit status of a passing boot.
    pub fn pass_status(self) -> i32 {
        match self {
            // isa-debug-exit exits with (value << 1) | 1; the kernel writes 0x10.
            Arch::X86_64 => 33,
            Arch::Aarch64 => 0,
        }
    }

    /// Returns the QEMU arguments that select the machine, CPU and exit device.
    fn machine_args(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &[
                "-M",
                "q35",
                "-cpu",
                "max",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ],
            Arch::Aarch64 => &[
                "-M",
                "virt",
                "-cpu",
                "max",
                "-semihosting-config",
                "enable=on,target=native",
            ],
        }
    }
}

/// One boot: a configuration of one kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The name, passed to the kernel as `config=NAME`.
    pub name: &'static str,
    /// The kernel.
    pub arch: Arch,
    /// Virtual CPUs.
    pub cpus: u32,
    /// What it tests (for `--help`-like listings and the summary).
    pub about: &'static str,
}

/// Every configuration, in boot order.
pub const CONFIGS: [Config; 8] = [
    Config {
        name: "x86-4level",
        arch: Arch::X86_64,
        cpus: 1,
        about: "X86Pml4, invlpg / CR3 reload / CR4.PGE flushes",
    },
    Config {
        name: "x86-5level",
        arch: Arch::X86_64,
        cpus: 1,
        about: "X86Pml5 with CR4.LA57, 57-bit addresses",
    },
    Config {
        name: "x86-smp",
        arch: Arch::X86_64,
        cpus: 2,
        about: "2 CPUs: INIT-SIPI-SIPI, Shootdown over LAPIC IPIs",
    },
    Config {
        name: "a64-4k48",
        arch: Arch::Aarch64,
        cpus: 1,
        about: "A64Granule4K48, range/ASID TLBIs, two ASIDs, TTBR1",
    },
    Config {
        name: "a64-4k39",
        arch: Arch::Aarch64,
        cpus: 1,
        about: "A64Granule4K39 (3 levels)",
    },
    Config {
        name: "a64-16k47",
        arch: Arch::Aarch64,
        cpus: 1,
        about: "A64Granule16K47 (16 KiB granule)",
    },
    Config {
        name: "a64-16k48",
        arch: Arch::Aarch64,
        cpus: 1,
        about: "A64Granule16K48 (16 KiB, 4 levels)",
    },
    Config {
        name: "a64-smp",
        arch: Arch::Aarch64,
        cpus: 2,
        about: "2 CPUs: broadcast TLBI seen by the other CPU",
    },
];

/// Returns the configurations `--only` selects (all if empty).
pub fn select(only: &[String]) -> Result<Vec<Config>> {
    if only.is_empty() {
        return Ok(CONFIGS.to_vec());
    }
    let names: Vec<&str> = only
        .iter()
        .flat_map(|s| s.split([',', ' ']))
        .filter(|s| !s.is_empty())
        .collect();
    for name in &names {
        if !CONFIGS.iter().any(|c| c.name == *name) {
            let all: Vec<&str> = CONFIGS.iter().map(|c| c.name).collect();
            bail!("unknown smoke configuration `{name}`; configurations are: {all:?}");
        }
    }
    Ok(CONFIGS
        .iter()
        .filter(|c| names.contains(&c.name))
        .copied()
        .collect())
}

/// Returns the QEMU command line that boots `kernel` in configuration `config`.
pub fn qemu_command(config: &Config, kernel: &Path) -> Command {
    let mut cmd = Command::new(config.arch.qemu());
    cmd.args(config.arch.machine_args())
        .args(["-accel", "tcg", "-m", "128M"])
        .args(["-smp", &config.cpus.to_string()])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .args(["-append", &format!("config={}", config.name)])
        .arg("-kernel")
        .arg(kernel);
    cmd
}

/// How one boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Expected status and a `SMOKE PASS` line.
    Pass,
    /// Anything else, with the reason.
    Fail(String),
}

/// Judges a boot from its exit status (`None`: killed after the timeout) and its output.
pub fn judge(arch: Arch, status: Option<i32>, output: &[String]) -> Verdict {
    let passed = output.iter().any(|l| l.starts_with("SMOKE PASS"));
    let failure = output.iter().find(|l| l.starts_with("SMOKE FAIL"));
    match (status, failure) {
        (None, _) => Verdict::Fail("timed out (killed)".into()),
        (_, Some(line)) => Verdict::Fail(line.clone()),
        (Some(s), None) if s != arch.pass_status() => Verdict::Fail(format!(
            "exit status {s}, expected {}{}",
            arch.pass_status(),
            if arch == Arch::X86_64 && s == 0 {
                " (0 is a triple fault)"
            } else {
                ""
            }
        )),
        (Some(_), None) if !passed => Verdict::Fail("no SMOKE PASS line".into()),
        _ => Verdict::Pass,
    }
}

/// Returns the QEMU install hint for this machine.
fn qemu_install_hint() -> String {
    format!(
        "on Debian 12: add `deb <mirror> bookworm-backports main` to /etc/apt/sources.list.d/ and run \
         `apt-get update && apt-get install -y --no-install-recommends -t bookworm-backports {}`",
        QEMU_PACKAGES.join(" ")
    )
}

/// Returns the first mirror URI of the machine's apt sources (deb822 or one-line format).
fn apt_mirror() -> Option<String> {
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources") {
        if let Some(uri) = text
            .lines()
            .find_map(|l| l.strip_prefix("URIs:"))
            .and_then(|rest| rest.split_whitespace().next())
        {
            return Some(uri.to_owned());
        }
    }
    let text = std::fs::read_to_string("/etc/apt/sources.list").ok()?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("deb "))
        .and_then(|l| l.split_whitespace().find(|w| w.contains("://")))
        .map(str::to_owned)
}

/// Makes sure both QEMU binaries exist. On Debian 12 (bookworm) as root, installs them from
/// bookworm-backports (bookworm's own QEMU 7.2 conflicts with the preinstalled backports
/// qemu-utils); on other Debian releases as root, from the release itself. Otherwise fails
/// with the install command. Idempotent.
fn ensure_qemu() -> Result<()> {
    let have = |bin: &str| probe(Command::new(bin).arg("--version"));
    if have("qemu-system-x86_64") && have("qemu-system-aarch64") {
        return Ok(());
    }
    eprintln!(
        "[{STEP}] QEMU is missing; install it with: {}",
        qemu_install_hint()
    );
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let root = capture_cmd(STEP, Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0");
    if root && os.contains("VERSION_CODENAME=bookworm") {
        let mirror = apt_mirror().unwrap_or_else(|| "http://deb.debian.org/debian".into());
        let list = Path::new("/etc/apt/sources.list.d/bookworm-backports.list");
        let line = format!("deb {mirror} bookworm-backports main\n");
        if std::fs::read_to_string(list).ok().as_deref() != Some(line.as_str()) {
            std::fs::write(list, &line).with_context(|| format!("writing {}", list.display()))?;
        }
        crate::util::run_cmd(STEP, Command::new("apt-get").args(["update", "-q"]))?;
        crate::util::run_cmd(
            STEP,
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(["-t", "bookworm-backports"])
                .args(QEMU_PACKAGES)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    } else {
        ensure_apt_packages(STEP, &QEMU_PACKAGES)?;
    }
    if have("qemu-system-x86_64") && have("qemu-system-aarch64") {
        Ok(())
    } else {
        bail!(
            "step `{STEP}`: QEMU still missing after installing; {}",
            qemu_install_hint()
        )
    }
}

/// Builds the kernel of `arch` and returns its path.
fn build_kernel(root: &Path, arch: Arch) -> Result<PathBuf> {
    let target_dir = root.join("target").join("boot");
    let manifest = root.join("tests").join("boot").join("Cargo.toml");
    let mut cmd = Cargo::new(Action::Build)
        .release()
        .package(arch.package())
        .target(arch.triple())
        .flags([
            "--manifest-path".to_owned(),
            manifest.display().to_string(),
            "--target-dir".to_owned(),
            target_dir.display().to_string(),
        ])
        .command();
    crate::util::run_cmd(STEP, &mut cmd)?;
    Ok(target_dir
        .join(arch.triple())
        .join("release")
        .join(arch.package()))
}

/// Copies lines from `reader` into `lines`, echoing them with `prefix` unless `quiet`.
fn pump(
    reader: impl Read + Send + 'static,
    prefix: String,
    quiet: bool,
    lines: Arc<Mutex<Vec<String>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end_matches('\r').to_owned();
            if !quiet {
                println!("{prefix}{line}");
            }
            if let Ok(mut all) = lines.lock() {
                all.push(line);
            }
        }
    })
}

/// Waits for `child` at most `timeout`; kills it after that. Returns the exit status, or
/// `None` if it was killed.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<Option<i32>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            // Killed by a signal (no code) counts as not passing: report it as -1.
            return Ok(Some(status.code().unwrap_or(-1)));
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Boots one configuration; returns its verdict, its output and the seconds it took.
fn boot(config: &Config, kernel: &Path, args: &SmokeArgs) -> Result<(Verdict, Vec<String>, f64)> {
    let mut cmd = qemu_command(config, kernel);
    eprintln!("[{STEP}] $ {}", display_cmd(&cmd));
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("step `{STEP}`: could not start {}", config.arch.qemu()))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        child.stdout.take().map(|out| {
            pump(
                out,
                format!("[{}] ", config.name),
                args.quiet,
                lines.clone(),
            )
        }),
        child.stderr.take().map(|err| {
            pump(
                err,
                format!("[{}] qemu: ", config.name),
                args.quiet,
                lines.clone(),
            )
        }),
    ];
    let status = wait_with_timeout(&mut child, Duration::from_secs(args.timeout))?;
    let secs = start.elapsed().as_secs_f64();
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let output = lines.lock().map(|l| l.clone()).unwrap_or_default();
    Ok((judge(config.arch, status, &output), output, secs))
}

/// Renders the summary table and the `N passed, N failed` line.
pub fn summary(rows: &[(&str, &Verdict, f64)]) -> String {
    let mut out = format!(
        "{:<12}  {:<6}  {:>7}  note\n",
        "config", "result", "seconds"
    );
    for (name, verdict, secs) in rows {
        let (result, note) = match verdict {
            Verdict::Pass => ("ok", ""),
            Verdict::Fail(why) => ("FAILED", why.as_str()),
        };
        let row = format!("{name:<12}  {result:<6}  {secs:>7.2}  {note}");
        out.push_str(row.trim_end());
        out.push('\n');
    }
    let passed = rows.iter().filter(|r| *r.1 == Verdict::Pass).count();
    out.push_str(&format!(
        "{passed} passed, {} failed\n",
        rows.len() - passed
    ));
    out
}

/// Builds the kernels and boots every selected configuration.
pub fn run(args: &SmokeArgs) -> Result<()> {
    let configs = select(&args.only)?;
    let mut arches: Vec<Arch> = configs.iter().map(|c| c.arch).collect();
    arches.dedup();
    let triples: Vec<&str> = arches.iter().map(|a| a.triple()).collect();
    ensure_rustup_targets(STEP, "stable", &triples)?;
    ensure_qemu()?;
    let ws = Workspace::load(STEP)?;
    let mut kernels = Vec::new();
    for arch in arches {
        kernels.push((arch, build_kernel(&ws.root, arch)?));
    }
    let mut results = Vec::new();
    for config in &configs {
        let kernel = kernels
            .iter()
            .find(|(a, _)| *a == config.arch)
            .map(|(_, k)| k.as_path())
            .context("kernel not built")?;
        let (verdict, output, secs) = boot(config, kernel, args)?;
        if args.quiet && verdict != Verdict::Pass {
            // Quiet runs still show what a failing kernel printed.
            for line in &output {
                println!("[{}] {line}", config.name);
            }
        }
        results.push((config.name, verdict, secs));
    }
    let rows: Vec<(&str, &Verdict, f64)> = results.iter().map(|(n, v, s)| (*n, v, *s)).collect();
    print!("\n{}", summary(&rows));
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.1 != Verdict::Pass)
        .map(|r| r.0)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "step `{STEP}`: configurations failed: {}",
            failed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn only_status_and_pass_line_together_pass() {
        let ok = lines("ok   map: ...\nSMOKE PASS (10 checks)");
        assert_eq!(judge(Arch::X86_64, Some(33), &ok), Verdict::Pass);
        assert_eq!(judge(Arch::Aarch64, Some(0), &ok), Verdict::Pass);
        assert!(
            matches!(judge(Arch::X86_64, Some(0), &ok), Verdict::Fail(w) if w.contains("triple fault"))
        );
        assert!(
            matches!(judge(Arch::Aarch64, Some(0), &lines("hello")), Verdict::Fail(w) if w == "no SMOKE PASS line")
        );
        assert!(
            matches!(judge(Arch::Aarch64, None, &ok), Verdict::Fail(w) if w.contains("timed out"))
        );
        let bad = lines("SMOKE FAIL: remap: stale");
        assert_eq!(
            judge(Arch::Aarch64, Some(1), &bad),
            Verdict::Fail("SMOKE FAIL: remap: stale".into())
        );
    }

    #[test]
    fn selection_accepts_lists_and_rejects_unknown_names() {
        assert_eq!(select(&[]).unwrap().len(), CONFIGS.len());
        let picked = select(&["a64-smp,x86-4level".into()]).unwrap();
        let names: Vec<&str> = picked.iter().map(|c| c.name).collect();
        assert_eq!(names, ["x86-4level", "a64-smp"]);
        assert!(select(&["x86-3level".into()]).is_err());
    }

    #[test]
    fn qemu_argv_selects_machine_config_and_cpus() {
        let smp = CONFIGS.iter().find(|c| c.name == "a64-smp").unwrap();
        let cmd = qemu_command(smp, Path::new("/k"));
        let argv: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), "qemu-system-aarch64");
        let joined = argv.join(" ");
        assert!(joined.contains("-M virt -cpu max -semihosting-config enable=on,target=native"));
        assert!(joined.contains("-smp 2"));
        assert!(joined.ends_with("-no-reboot -append config=a64-smp -kernel /k"));
    }

    #[test]
    fn summary_table() {
        let pass = Verdict::Pass;
        let fail = Verdict::Fail("exit status 35, expected 33".into());
        assert_eq!(
            summary(&[("x86-4level", &pass, 0.13), ("a64-smp", &fail, 1.0)]),
            "\
config        result  seconds  note
x86-4level    ok         0.13
a64-smp       FAILED     1.00  exit status 35, expected 33
1 passed, 1 failed
"
        );
    }
}
