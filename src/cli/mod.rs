//! Command-line interface (shared/interface.md "Binary and subcommands").

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "tandem",
    version,
    about = "DHCPv6 server (RFC 8415) with RFC 8156 failover",
    long_about = "tandem serves DHCPv6 addresses (IA_NA) and delegated prefixes (IA_PD) and, \
                  configured as a failover pair, shares one address and prefix space with a \
                  partner server over RFC 8156."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a configuration file: exit 0, or print one line per problem
    /// (file: key: what is wrong) and exit 1.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} subnet{}, {})",
                    config.display(),
                    c.subnets.len(),
                    if c.subnets.len() == 1 { "" } else { "s" },
                    match &c.failover {
                        Some(f) => format!("failover {:?} as {:?}", f.name, f.role),
                        None => "standalone".into(),
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
    }
}
