//! The `tandem` binary: command-line parsing and dispatch only.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tandem::cli::Cli::parse();
    tandem::cli::run(cli)
}
