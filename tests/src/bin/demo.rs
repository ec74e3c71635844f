//! The director in a namespace lab, end to end: `cargo run --release -p director-lab --bin demo`
//! (as root; build the director first with `cargo build --release`).
//!
//! Builds the DR lab (client, director, rs1..rs3 on one bridge), starts the director on the
//! repository's `configs/demo.toml` (with a private stats socket), sends 300 HTTP requests to the
//! VIP, each on a new connection, prints how many each real server answered and the director's
//! `lbstat` table, and tears everything down. Exits non-zero, with the director's log, if any
//! request failed or a real server was left out.

use std::collections::BTreeMap;
use std::fs;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use director_lab::config::with_stats_socket;
use director_lab::{is_root, rs_ip, rs_name, vip_url, workspace_dir, Lab, LabOptions, CLIENT_IP};

const REQUESTS: usize = 300;
const REQUESTS_F64: f64 = 300.0;
const REAL_SERVERS: usize = 3;

fn main() -> ExitCode {
    if !is_root() {
        eprintln!(
            "demo: needs root (network namespaces, XDP); try: sudo {}",
            std::env::args().next().unwrap_or_default()
        );
        return ExitCode::from(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let started = Instant::now();
    println!("building the DR lab: client 192.0.2.2, director 192.0.2.3, rs1..rs{REAL_SERVERS} 192.0.2.11.., VIP 192.0.2.10");
    let lab = Lab::try_dr(LabOptions::servers(REAL_SERVERS))?;
    println!("lab {} up in {:.1?}", lab.prefix(), started.elapsed());

    let socket = lab.stats_socket();
    let demo = workspace_dir().join("configs").join("demo.toml");
    let text = if demo.is_file() {
        println!(
            "config: {} (stats_socket -> {})",
            demo.display(),
            socket.display()
        );
        let text =
            fs::read_to_string(&demo).with_context(|| format!("reading {}", demo.display()))?;
        with_stats_socket(&text, &socket.to_string_lossy())
    } else {
        println!(
            "config: {} is missing; using the lab's own maglev config",
            demo.display()
        );
        lab.dr_config("maglev").to_toml()
    };
    let config = lab.write_config_text(&text);
    let mut director = lab.try_start_director_with(&config, &socket)?;
    println!("director running (pid {})\n", director.pid());

    let outcome = traffic(&lab);
    // Let the counters catch up with the last flows before showing them.
    let _ = director.settled_stats(REQUESTS as u64);
    match director.lbstat_table() {
        Ok(table) => println!("lbstat --socket {}:\n{table}", socket.display()),
        Err(e) => println!("lbstat failed: {e:#}"),
    }
    let stopped = director.stop();
    println!(
        "director stopped in {:.0?} ({}{})",
        stopped.elapsed,
        stopped.status,
        if stopped.killed {
            ", needed SIGKILL"
        } else {
            ""
        }
    );
    if outcome.is_err() || !stopped.status.success() {
        eprintln!(
            "--- director log ---\n{}--- end of director log ---",
            director.log()
        );
    }
    outcome?;
    if !stopped.status.success() {
        bail!("the director exited with {} on SIGTERM", stopped.status);
    }
    drop(director);
    drop(lab);
    println!("lab torn down; demo OK in {:.1?}", started.elapsed());
    Ok(())
}

/// Sends the requests and prints who answered; fails if any failed or a real server got none.
fn traffic(lab: &Lab) -> Result<()> {
    let url = vip_url();
    println!("sending {REQUESTS} requests to {url} from the client, each on a new TCP connection");
    let t = Instant::now();
    let results = lab.http_get_many(REQUESTS, &url);
    let elapsed = t.elapsed();

    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut saw_director = 0;
    let mut errors = Vec::new();
    for result in &results {
        match result {
            Ok(r) if r.status == 200 => {
                *served.entry(r.server.clone()).or_default() += 1;
                if r.client_ip() != CLIENT_IP {
                    saw_director += 1;
                }
            }
            Ok(r) => errors.push(format!("HTTP {}", r.status)),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    println!("{} requests in {elapsed:.1?}\n", results.len());
    println!(
        "{:<6} {:<12} {:>8} {:>7}",
        "server", "address", "requests", "share"
    );
    for i in 1..=lab.real_servers() {
        let n = served.get(&rs_name(i)).copied().unwrap_or(0);
        println!(
            "{:<6} {:<12} {:>8} {:>6.1}%",
            rs_name(i),
            rs_ip(i),
            n,
            100.0 * f64::from(u32::try_from(n).unwrap_or(u32::MAX)) / REQUESTS_F64
        );
    }
    println!("{:<6} {:<12} {:>8}\n", "failed", "", errors.len());

    if !errors.is_empty() {
        bail!(
            "{} of {REQUESTS} requests failed; first: {}",
            errors.len(),
            errors[0]
        );
    }
    if saw_director > 0 {
        bail!("{saw_director} responses saw a client address other than {CLIENT_IP}: not direct routing");
    }
    let idle: Vec<String> = (1..=lab.real_servers())
        .map(rs_name)
        .filter(|n| !served.contains_key(n))
        .collect();
    if !idle.is_empty() {
        bail!("real servers that served nothing: {idle:?}");
    }
    Ok(())
}
