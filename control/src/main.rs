//! `director`: the L4 load balancer's binary.
//!
//! - `director check --config FILE` validates a configuration and prints a summary, like
//!   `nginx -t`, with the memory it needs; exit status 0 if it is valid and fits the
//!   classifier's maps and this machine's memory, 1 otherwise.
//! - `director run --config FILE` loads the configuration and runs the director until SIGINT or
//!   SIGTERM; SIGHUP re-reads the file.
//! - `director reload` asks a running director to re-read its configuration file, and prints
//!   whether it did or why not (the running configuration stays on any error).
//! - `director backend weight|drain|disable|enable SERVICE ADDRESS` changes one real server of a
//!   running director until its next reload.
//!
//! Logs go to stderr through `tracing`; `RUST_LOG` filters them (default `info`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use control::config::{check_dr_on_link, Config, ConfigError};
use control::connected::read_prefixes;
use control::limits::{self, Available, Capacities, Facts};
use control::netlink::Netlink;
use dataplane::Forwarding;
use director_proto::{Reply, Request};
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
    /// Make a running director re-read its configuration file without a restart.
    Reload {
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Change one real server of a running director until its next reload.
    Backend {
        #[command(subcommand)]
        change: BackendChange,
        #[command(flatten)]
        socket: SocketArgs,
    },
}

/// Where the running director listens.
#[derive(clap::Args, Debug)]
struct SocketArgs {
    /// The director's control socket.
    #[arg(long, short, global = true, default_value = director_proto::DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Subcommand, Debug)]
enum BackendChange {
    /// Set the weight (0 drains: no new flows, existing ones continue).
    Weight {
        /// Service name.
        service: String,
        /// Real server address.
        address: String,
        /// New weight, 0..=65535.
        weight: u32,
    },
    /// Weight 0: no new flows, existing ones continue.
    Drain {
        /// Service name.
        service: String,
        /// Real server address.
        address: String,
    },
    /// Out of the pool: no new flows, and its flows move to other servers.
    Disable {
        /// Service name.
        service: String,
        /// Real server address.
        address: String,
    },
    /// Back into the pool after `disable`.
    Enable {
        /// Service name.
        service: String,
        /// Real server address.
        address: String,
    },
}

impl BackendChange {
    fn into_request(self) -> Request {
        match self {
            BackendChange::Weight {
                service,
                address,
                weight,
            } => Request::SetWeight {
                service,
                backend: address,
                weight,
            },
            BackendChange::Drain { service, address } => Request::Drain {
                service,
                backend: address,
            },
            BackendChange::Disable { service, address } => Request::Disable {
                service,
                backend: address,
            },
            BackendChange::Enable { service, address } => Request::Enable {
                service,
                backend: address,
            },
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config),
        Command::Reload { socket } => call(&socket.socket, &Request::Reload),
        Command::Backend { change, socket } => call(&socket.socket, &change.into_request()),
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
    // DR real servers must be on-link of the client side (the first interface); where it does
    // not exist (another machine), that part is left to start-up and the rest is checked as
    // usual.
    let client_side: Vec<String> = config.director.interfaces.iter().take(1).cloned().collect();
    let skipped = match Netlink::open()
        .map_err(anyhow::Error::from)
        .and_then(|mut netlink| read_prefixes(&mut netlink, &client_side))
    {
        Ok(connected) => {
            check_dr_on_link(&config, &connected)
                .with_context(|| format!("configuration {}", path.display()))?;
            None
        }
        Err(error) => Some(error),
    };
    // The same limits start-up and reload check, against this machine: the workers the
    // client side's RX queues would get, and its memory.
    let (workers, queues_unknown) = limits::workers_here(&config);
    let facts = Facts {
        workers,
        available: Available::read(),
        running: false,
    };
    let estimate = limits::check(&config, &facts, &Capacities::DIRECTOR)
        .with_context(|| format!("configuration {}", path.display()))?;
    println!("configuration {} is ok", path.display());
    for service in &config.services {
        println!("  {}", service.summary());
    }
    if let Some(ha) = &config.ha {
        println!("  {}", ha.summary());
    }
    match facts.available {
        Some(available) => println!("  memory: {estimate}, {available}"),
        None => println!("  memory: {estimate}; available memory unknown"),
    }
    if let Some(error) = queues_unknown {
        println!(
            "  note: counted 1 worker ({}: {error}); start-up runs one per RX queue",
            config.director.interfaces[0]
        );
    }
    if let Some(error) = skipped {
        if config.uses(Forwarding::DirectRouting) {
            println!(
                "  note: DR real servers not checked to be on-link ({error:#}); start-up checks it"
            );
        }
    }
    Ok(())
}

fn run(path: &Path) -> Result<()> {
    // Before any thread exists, so every thread inherits the blocked signal mask.
    let signals = control::signals::install().context("installing signal handling")?;
    let config = load(path)?;
    tracing::info!(config = %path.display(), services = config.services.len(), "configuration loaded");
    control::director::run(config, path, &signals)
}

/// Sends one mutating request and prints the director's answer.
fn call(socket: &Path, request: &Request) -> Result<()> {
    match director_proto::call(socket, request)? {
        Reply::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        Reply::Error { message } => anyhow::bail!("{message}"),
        Reply::Stats(_) => anyhow::bail!("unexpected stats reply to {request:?}"),
    }
}
