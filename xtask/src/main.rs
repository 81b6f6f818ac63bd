//! `cargo xtask`: developer commands for the machvm workspace (see `cargo xtask --help`).

mod bench;
mod cargo;
mod ci;
mod cli;
mod fuzz;
mod loom;
mod miri;
mod msrv;
mod nostd;
mod package;
mod smoke;
mod util;
mod workspace;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match &cli.command {
        cli::Command::Ci(args) => ci::run(args),
        cli::Command::Nostd(args) => nostd::run(args),
        cli::Command::Package(args) => package::run(args),
        cli::Command::Loom(args) => loom::run(args),
        cli::Command::Miri(args) => miri::run(args),
        cli::Command::Msrv(args) => msrv::run(args),
        cli::Command::Fuzz(args) => fuzz::run(args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Smoke(args) => smoke::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the context chain on one line, without anyhow's backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
