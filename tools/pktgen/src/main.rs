//! `pktgen`: the generator, the sink and the baselines for benchmarking director. See the
//! library docs (`src/lib.rs`) for how each works, and `benches/README.md` for the benchmarks
//! built on them.
//!
//! ```text
//! pktgen send IFACE --dst-mac MAC --dst-ip IP --dst-port PORT [--kind udp|syn|ack]
//!             [--flows N] [--src-net NET] [--src-port PORT] [--size BYTES]
//!             [--duration 10s] [--count N] [--rate PPS] [--latency] [--batch 64] [--json]
//! pktgen sink IFACE [--duration 10s] [--count N] [--latency] [--json]
//! pktgen hairpin IFACE [--duration 10s] [--json]
//! pktgen macswap IFACE --vip IP --port PORT [--protocol tcp|udp] [--queue 0]
//!             [--duration 10s] [--json]
//! ```
//!
//! Every command stops by itself after `--duration` (default 10 s), earlier with `--count` or
//! SIGINT/SIGTERM, and detaches whatever it attached. `sink`, `hairpin` and `macswap` print
//! `pktgen CMD: ready on IFACE` on stderr once attached, for scripts to wait on. Progress goes to
//! stderr each second; the result goes to stdout, as text or, with `--json`, one JSON document.
//!
//! Exit status: 0 on success, 1 with the reason on stderr.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use dataplane::service::{Protocol, ServiceKey};
use pktgen::frame::{self, FrameKind, FrameSpec, Ipv4Net};
use pktgen::hairpin::Hairpin;
use pktgen::macswap::Macswap;
use pktgen::send::{Generator, Limits};
use pktgen::sink::{Sink, SinkReport};
use pktgen::{parse_duration, sys};

/// Traffic generator, sink and forwarding baselines for benchmarking director on veth.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sends frames out of IFACE from an XDP program run with BPF_PROG_RUN in live-frames mode,
    /// on the calling CPU (pin it with taskset). IFACE's peer needs an XDP program.
    Send(SendArgs),
    /// Attaches a counting XDP program to IFACE that drops every frame; prints frames per
    /// second, then totals by destination MAC (and latency percentiles with --latency).
    Sink {
        /// Interface to count on.
        iface: String,
        /// Stop after this long (10s, 500ms, 2m).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Stop once this many frames have arrived.
        #[arg(long)]
        count: Option<u64>,
        /// Histogram the one-way latency of frames stamped by `pktgen send --latency`.
        #[arg(long)]
        latency: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attaches an XDP program to IFACE that swaps every frame's MACs and sends it back out
    /// (XDP_TX): the most this machine forwards.
    Hairpin {
        /// Interface to hairpin on.
        iface: String,
        /// Stop after this long.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A bare AF_XDP forwarder on the director's socket and classifier: frames for VIP:PORT
    /// arriving on IFACE get their MACs swapped and go back out, with no load balancing.
    Macswap {
        /// Interface to forward on.
        iface: String,
        /// Destination address of the frames to take.
        #[arg(long)]
        vip: Ipv4Addr,
        /// Destination port of the frames to take.
        #[arg(long)]
        port: u16,
        /// Their protocol.
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: ProtocolArg,
        /// RX queue to serve.
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// Stop after this long.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct SendArgs {
    /// Interface to send out of.
    iface: String,
    /// Destination MAC (the director's interface, or the sink's).
    #[arg(long, value_parser = frame::parse_mac)]
    dst_mac: [u8; 6],
    /// Destination address (a VIP).
    #[arg(long)]
    dst_ip: Ipv4Addr,
    /// Destination port.
    #[arg(long)]
    dst_port: u16,
    /// Source MAC; by default IFACE's.
    #[arg(long, value_parser = frame::parse_mac)]
    src_mac: Option<[u8; 6]>,
    /// What the frames carry: UDP datagrams, TCP SYNs (new connections) or TCP ACKs
    /// (established connections; the director picks them up mid-flow).
    #[arg(long, value_enum, default_value = "udp")]
    kind: KindArg,
    /// Distinct flows, sent in turn: flow i comes from address i % hosts of --src-net and port
    /// --src-port + i / hosts.
    #[arg(long, default_value_t = 256)]
    flows: u32,
    /// Network the source addresses come from (network and broadcast addresses skipped).
    #[arg(long, default_value = "198.51.100.0/24")]
    src_net: Ipv4Net,
    /// First source port.
    #[arg(long, default_value_t = 1024)]
    src_port: u16,
    /// Frame size in bytes, Ethernet header included, FCS excluded (62..=1514).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Stop after this long (10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many frames.
    #[arg(long)]
    count: Option<u64>,
    /// Frames per second (e.g. 100000, 250k, 1.5M); by default as fast as one CPU goes.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<u64>,
    /// Stamp each frame's payload with the send time for `pktgen sink --latency`.
    #[arg(long)]
    latency: bool,
    /// Frames per kernel flush (1..=256).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
    batch: u32,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KindArg {
    /// UDP datagrams.
    Udp,
    /// TCP SYNs.
    Syn,
    /// TCP ACKs.
    Ack,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Parses a rate in frames per second: `250000`, `250k`, `1.5M`.
fn parse_rate(text: &str) -> Result<u64, String> {
    let (number, scale) = match text.strip_suffix(['k', 'K']) {
        Some(number) => (number, 1e3),
        None => match text.strip_suffix('M') {
            Some(number) => (number, 1e6),
            None => (text, 1.0),
        },
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected frames per second, e.g. 250000, 250k, 1.5M"))?;
    let rate = (value * scale).round();
    if !(1.0..=1e9).contains(&rate) {
        return Err(format!("{text:?}: must be 1..=1G frames per second"));
    }
    #[expect(clippy::cast_sign_loss, reason = "checked to be 1..=1e9 above")]
    let rate = rate as u64;
    Ok(rate)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pktgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    sys::install_stop_signals().context("installing SIGINT/SIGTERM handlers")?;
    match command {
        Command::Send(args) => send(&args),
        Command::Sink {
            iface,
            duration,
            count,
            latency,
            json,
        } => sink(&iface, duration, count, latency, json),
        Command::Hairpin {
            iface,
            duration,
            json,
        } => {
            let ifindex = pktgen::interface_index(&iface)?;
            let hairpin = Hairpin::attach(ifindex).with_context(|| format!("interface {iface}"))?;
            eprintln!("pktgen hairpin: ready on {iface}");
            let report = hairpin.run(&iface, duration, |second, pps, _| {
                eprintln!("{second:>4} s {:>10.3} Mpps hairpinned", pktgen::mpps(pps));
            })?;
            print(json, &report, || {
                format!(
                    "{}: {} frames hairpinned in {:.3} s ({:.3} Mpps)",
                    report.interface,
                    report.frames,
                    report.elapsed_s,
                    pktgen::rate(report.frames, Duration::from_secs_f64(report.elapsed_s)) / 1e6
                )
            })
        }
        Command::Macswap {
            iface,
            vip,
            port,
            protocol,
            queue,
            duration,
            json,
        } => {
            let ifindex = pktgen::interface_index(&iface)?;
            let service = ServiceKey {
                vip: std::net::IpAddr::V4(vip),
                port,
                protocol: match protocol {
                    ProtocolArg::Tcp => Protocol::Tcp,
                    ProtocolArg::Udp => Protocol::Udp,
                },
            };
            let mut macswap = Macswap::open(ifindex, queue, &service)
                .with_context(|| format!("interface {iface} queue {queue}"))?;
            eprintln!("pktgen macswap: ready on {iface}");
            let never = AtomicBool::new(false);
            let report = macswap.run(&iface, duration, &never, |second, pps, _| {
                eprintln!("{second:>4} s {:>10.3} Mpps forwarded", pktgen::mpps(pps));
            });
            print(json, &report, || {
                format!(
                    "{}: received {}, transmitted {} ({:.3} Mpps), TX ring full {}, kernel rx dropped {}, rx ring full {}",
                    report.interface,
                    report.received,
                    report.transmitted,
                    report.pps / 1e6,
                    report.tx_ring_full,
                    report.kernel_rx_dropped,
                    report.kernel_rx_ring_full,
                )
            })
        }
    }
}

fn send(args: &SendArgs) -> anyhow::Result<()> {
    let ifindex = pktgen::interface_index(&args.iface)?;
    let src_mac = match args.src_mac {
        Some(mac) => mac,
        None => sys::if_mac(&args.iface)
            .with_context(|| format!("reading the MAC address of {}", args.iface))?,
    };
    let spec = FrameSpec {
        kind: match args.kind {
            KindArg::Udp => FrameKind::Udp,
            KindArg::Syn => FrameKind::TcpSyn,
            KindArg::Ack => FrameKind::TcpAck,
        },
        size: args.size,
        src_mac,
        dst_mac: args.dst_mac,
        src_net: args.src_net,
        src_port: args.src_port,
        dst: SocketAddrV4::new(args.dst_ip, args.dst_port),
        flows: args.flows,
    };
    let generator = Generator::load(&spec, ifindex, args.latency, args.rate)
        .with_context(|| format!("interface {}", args.iface))?;
    let limits = Limits {
        duration: args.duration,
        count: args.count,
        batch_size: args.batch,
    };
    let mut next_report = Duration::from_secs(1);
    let mut last_frames = 0;
    let report = generator.run(limits, &args.iface, |frames, elapsed| {
        if elapsed >= next_report {
            eprintln!(
                "{:>4} s {:>10.3} Mpps sent",
                next_report.as_secs(),
                pktgen::mpps(frames - last_frames)
            );
            last_frames = frames;
            next_report += Duration::from_secs(1);
        }
    })?;
    print(args.json, &report, || {
        format!(
            "{}: sent {} {:?} frames of {} bytes over {} flows in {:.3} s ({:.3} Mpps), stopped by {:?}",
            report.interface,
            report.frames,
            report.kind,
            report.size,
            report.flows,
            report.elapsed_s,
            report.pps / 1e6,
            report.stopped_by,
        )
    })
}

fn sink(
    iface: &str,
    duration: Duration,
    count: Option<u64>,
    latency: bool,
    json: bool,
) -> anyhow::Result<()> {
    let ifindex = pktgen::interface_index(iface)?;
    let mut sink = Sink::load(latency)?;
    sink.attach(ifindex)
        .with_context(|| format!("interface {iface}"))?;
    eprintln!("pktgen sink: ready on {iface}");
    let report = sink.run(iface, duration, count, |second, pps, total| {
        eprintln!(
            "{second:>4} s {:>10.3} Mpps received, {total} in all",
            pktgen::mpps(pps)
        );
    })?;
    print(json, &report, || sink_text(&report))
}

fn sink_text(report: &SinkReport) -> String {
    let mut text = format!(
        "{}: {} frames, {} bytes in {:.3} s (peak {:.3} Mpps), stopped by {:?}\n",
        report.interface,
        report.packets,
        report.bytes,
        report.elapsed_s,
        pktgen::mpps(report.peak_pps),
        report.stopped_by
    );
    text.push_str("destination MAC          frames      share\n");
    for mac in &report.by_dst_mac {
        let _ = writeln!(
            text,
            "{:<17} {:>14} {:>9.2}%",
            mac.mac,
            mac.packets,
            mac.share * 100.0
        );
    }
    if report.mac_overflow > 0 {
        let _ = writeln!(text, "(other MACs)      {:>14}", report.mac_overflow);
    }
    if let Some(latency) = &report.latency {
        let _ = write!(
            text,
            "one-way latency over {} stamped frames: min {} ns, p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
            latency.samples,
            latency.min_ns,
            latency.p50_ns,
            latency.p99_ns,
            latency.p999_ns,
            latency.max_ns
        );
    }
    text.trim_end().to_owned()
}

/// Prints `report` as JSON, or `text()`.
fn print<T: serde::Serialize>(
    json: bool,
    report: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).context("serialising the report")?
        );
    } else {
        println!("{}", text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("250000"), Ok(250_000));
        assert_eq!(parse_rate("250k"), Ok(250_000));
        assert_eq!(parse_rate("1.5M"), Ok(1_500_000));
        for bad in ["", "0", "-5", "k", "2G", "1e10"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
