//! `rs-decap`: attaches, detaches and shows the tunnel decapsulation XDP program (4in4, 6in6,
//! 4in6) on a real
//! server's interface. See the library docs (`src/lib.rs`) for why and for the rest of the
//! real-server set-up (VIP on `lo`, arp_ignore/arp_announce, rp_filter).
//!
//! ```text
//! rs-decap attach eth0 [--mode native|generic] [--local 192.0.2.11 --local 2001:db8::11 ...]
//! rs-decap detach eth0
//! rs-decap status eth0
//! ```
//!
//! Exit status: 0 on success (`status`: `rs_decap` is attached), 1 otherwise, with the reason
//! on stderr naming the interface.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use rs_decap::{Decap, Interface, Mode};

/// Decapsulates IPv4-in-IPv4, IPv6-in-IPv6 and IPv4-in-IPv6 (LVS-TUN) addressed to this host
/// with an XDP program, for kernels without the ipip and ip6_tunnel modules.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Loads the program and attaches it to IFACE; it stays attached after this command exits.
    /// Run again to refresh the local addresses (the program is replaced atomically).
    Attach {
        /// Interface the tunnelled traffic arrives on.
        iface: String,
        /// XDP mode; by default native, falling back to generic.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Outer destination to accept, IPv4 or IPv6 (repeatable); by default every address of
        /// this host except loopback and IPv6 link-local, as it is now.
        #[arg(long = "local", value_name = "ADDR")]
        locals: Vec<IpAddr>,
    },
    /// Detaches the program from IFACE; refuses if another XDP program is attached there.
    Detach {
        /// Interface to detach from.
        iface: String,
    },
    /// Shows whether the program is attached to IFACE, its addresses and its counters; exits 1
    /// if it is not attached.
    Status {
        /// Interface to inspect.
        iface: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// In the driver.
    Native,
    /// Generic (SKB) mode.
    Generic,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Native => Mode::Native,
            ModeArg::Generic => Mode::Generic,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("rs-decap: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Attach {
            iface,
            mode,
            locals,
        } => {
            let interface = Interface::by_name(&iface)?;
            let locals = if locals.is_empty() {
                let addrs = rs_decap::host_addrs().context("listing this host's addresses")?;
                if addrs.is_empty() {
                    bail!("interface {iface}: this host has no address besides loopback and IPv6 link-local to decapsulate for; pass --local ADDR");
                }
                addrs
            } else {
                locals
            };
            let decap = Decap::load()?;
            decap.add_local_addrs(&locals)?;
            let mode = decap.attach(&interface, mode.map(Mode::from))?;
            let list: Vec<String> = locals.iter().map(ToString::to_string).collect();
            println!(
                "{iface}: {} attached in {mode} mode, decapsulating tunnels (4in4, 6in6, 4in6) to {}",
                rs_decap::PROGRAM_NAME,
                list.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Detach { iface } => {
            let interface = Interface::by_name(&iface)?;
            match rs_decap::detach(&interface)? {
                Some(removed) => println!(
                    "{iface}: {} (id {}) detached",
                    rs_decap::PROGRAM_NAME,
                    removed.id
                ),
                None => println!("{iface}: no XDP program attached; nothing to do"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { iface } => {
            let interface = Interface::by_name(&iface)?;
            let Some(current) = rs_decap::attached(&interface)? else {
                println!("{iface}: no XDP program attached");
                return Ok(ExitCode::FAILURE);
            };
            let mode = current
                .mode
                .map_or_else(|| "unknown".to_owned(), |mode| mode.to_string());
            if !current.is_ours() {
                println!(
                    "{iface}: another XDP program is attached: {:?} (id {}, {mode} mode)",
                    current.name, current.id
                );
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "{iface}: {} attached (id {}, {mode} mode)",
                current.name, current.id
            );
            match rs_decap::inspect(current.id) {
                Ok(inspection) => {
                    let list: Vec<String> = inspection
                        .local_addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    println!("local addresses: {}", list.join(", "));
                    for (name, value) in inspection.counters {
                        println!("{name:<20}{value:>12}");
                    }
                }
                Err(error) => println!("counters not readable: {error}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
