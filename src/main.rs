//! The `gwbench` binary: parse the command line, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use gwbench::cli::{Cli, one_line_error};

/// mimalloc instead of glibc's malloc: per-thread free lists without glibc's arena locking and
/// fastbin consolidation, which cost the gateway about a tenth of its CPU per request at
/// saturation (BENCHMARKS.md, "Allocator"). The library (and so its tests) keeps the system's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `gwbench` alone: the usage, on stderr (it is not what was asked for).
            let _ = err.print();
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("gwbench: error: {}", one_line_error(&err));
            return ExitCode::from(2);
        }
    };
    gwbench::net::log_panics();
    match gwbench::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gwbench: error: {err:#}");
            ExitCode::from(gwbench::exit_code(&err))
        }
    }
}
