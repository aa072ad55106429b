//! # syncctl: the command-line face of the syncctl identity-sync engine
//!
//! A thin binary: it parses the command line ([`cli`]), reads and validates the config file
//! ([`config`], connector types in [`registry`]), sets up logging ([`logging`]) and calls the
//! store and engine crates ([`commands`]). It holds no sync logic of its own.
//!
//! Exit codes are in [`exit`]: 0 success, 1 completed with errors, 2 stopped or failed,
//! 3 configuration or usage error, 4 not found.

mod cli;
mod commands;
mod config;
mod exit;
mod logging;
mod output;
mod registry;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::Cli;
use crate::exit::Code;

/// mimalloc: imports allocate and free millions of small values across threads, where glibc's
/// allocator spent a quarter of the CPU time of a 10k-object full import. Built without
/// transparent huge pages (`no_thp` in the workspace's Cargo.toml): the kernel zeroed 2 MB for
/// each first touch of an arena, a quarter of a small delta import's CPU, and counted it whole in
/// the RSS. Its v2 (the `v2` feature), not v3: v3 keeps freed memory for a second before it gives
/// it back (`purge_delay` 1,000 ms against 10), so each step of a cycle started on top of what the
/// step before had freed; at 100,000 objects a full cycle peaked 20-40 MB lower with v2, in the
/// same time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors exit 3.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Code::Usage.status() } else { 0 });
        }
    };
    let quiet = matches!(cli.command, cli::Command::Demo(_));
    // The service logs what it does (cycles starting and ending) by default: `info`.
    let service = matches!(&cli.command, cli::Command::Serve(a) if a.action.is_none());
    let verbose = if service { cli.verbose.max(1) } else { cli.verbose };
    logging::init(verbose, cli.log_format, quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Code::Stopped.status());
        }
    };
    let code = match runtime.block_on(commands::run(&cli)) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            failure.code
        }
    };
    ExitCode::from(code.status())
}
