//! `director`: the L4 load balancer's binary.
//!
//! - `director check --config FILE` validates a configuration and prints a summary, like
//!   `nginx -t`; exit status 0 if it is valid, 1 otherwise.
//! - `director run --config FILE` loads the configuration and runs the director until SIGINT or
//!   SIGTERM.
//!
//! Logs go to stderr through `tracing`; `RUST_LOG` filters them (default `info`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use control::config::{Config, ConfigError};
use tracing_subscriber::EnvFilter;

/// An AF_XDP layer-4 load balancer (LVS direct routing).
#[derive(Parser, Debug)]
#[command(name = "director", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load the configuration and run the director until SIGINT or SIGTERM.
    Run {
        /// Configuration file (see configs/reference.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check the configuration, print a summary and exit: 0 if valid, 1 if not.
    Check {
        /// Configuration file (see configs/reference.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Check { config } => check(config),
        Command::Run { config } => run(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("director: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a configuration; errors in its content are prefixed with the file name (a read error
/// names the file already).
fn load(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|error| match error {
        ConfigError::Read { .. } => anyhow::Error::new(error),
        other => anyhow::Error::new(other).context(format!("configuration {}", path.display())),
    })
}

fn check(path: &Path) -> Result<()> {
    let config = load(path)?;
    println!("configuration {} is ok", path.display());
    for service in &config.services {
        println!("  {}", service.summary());
    }
    Ok(())
}

fn run(path: &Path) -> Result<()> {
    // Before any thread exists, so every thread inherits the blocked signal mask.
    let signals = control::signals::install().context("installing signal handling")?;
    let config = load(path)?;
    tracing::info!(config = %path.display(), services = config.services.len(), "configuration loaded");
    control::run::run(config, path, &signals)
}
