//! pktgen: traffic for benchmarking director on this machine's veth pairs, and the baselines it
//! is compared with.
//!
//! - [`send`]: a generator that outruns the director. Frames are built in Rust ([`frame`]: IPv4
//!   UDP, TCP SYN, TCP ACK, N flows, correct checksums); an XDP program run with BPF_PROG_RUN in
//!   live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`, the technique of xdp-trafficgen, which is
//!   broken on this kernel) writes each flow's fields and an optional latency stamp and
//!   redirects the frame out of a veth: several times what an AF_XDP forwarder on veth
//!   handles, from one core (figures in `benches/README.md`). Paced, when asked, by the
//!   program itself (frames evenly spaced); bounded by a duration and an exact count.
//! - [`sink`]: an XDP program that counts every arriving frame (per CPU, and per destination
//!   MAC, so the spread over real servers shows) and drops it; with latency on, a log-linear
//!   histogram of one-way latency ([`histogram`]) from the generator's stamps (both read
//!   `bpf_ktime_get_ns`, one clock).
//! - [`hairpin`]: the most this machine forwards: an XDP program that swaps the MACs and sends
//!   every frame back out (XDP_TX).
//! - [`macswap`]: a bare AF_XDP forwarder on the director's own socket and classifier
//!   (`dataplane::xsk`, `dataplane::xdp`) with the worker's ring handling and no
//!   load-balancing logic: the director's rate over this one is what that logic costs.
//!
//! Every command stops by itself (a duration bound, always set), stops early on SIGINT or
//! SIGTERM, and detaches what it attached (bpf_links: the kernel detaches them even if the
//! process is killed). The `pktgen` binary (`src/main.rs`) is the CLI; `benches/pktgen/` drives
//! it.
//!
//! What it must not do: send anywhere but the interface it is given, or run unbounded.

#![expect(
    clippy::cast_precision_loss,
    reason = "rates, shares and quantiles are reported as f64; frame counts stay far below 2^52"
)]

pub mod abi;
pub mod frame;
pub mod hairpin;
pub mod histogram;
pub mod macswap;
pub mod send;
pub mod sink;
pub mod sys;

use std::time::Duration;

/// Why a pktgen command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such interface (in this network namespace).
    #[error("interface {name}")]
    Interface {
        /// Interface name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The frames asked for cannot be built.
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    /// libbpf could not open or load an object (the verifier log is in the message).
    #[error("loading the {program} XDP program")]
    Load {
        /// Which program.
        program: &'static str,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// The kernel refused to attach a program.
    #[error("attaching the {program} XDP program to interface index {ifindex}")]
    Attach {
        /// Which program.
        program: &'static str,
        /// Interface index.
        ifindex: u32,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// A map could not be read or written.
    #[error("XDP map {map}")]
    Map {
        /// Map name.
        map: &'static str,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// BPF_PROG_RUN failed.
    #[error("BPF_PROG_RUN of the generator (live frames)")]
    Run(#[source] std::io::Error),
    /// The AF_XDP socket could not be set up.
    #[error(transparent)]
    Xsk(#[from] dataplane::xsk::XskError),
    /// The director's classifier could not be loaded or attached.
    #[error(transparent)]
    Xdp(#[from] dataplane::xdp::XdpError),
}

/// Why a command stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The count given was reached.
    Count,
    /// The duration given ran out.
    Duration,
    /// SIGINT or SIGTERM.
    Signal,
}

/// Parses a duration: `"10s"`, `"500ms"`, `"2m"`, or plain seconds (`"10"`, `"0.5"`); it must
/// be above zero and at most a day.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{text:?}: must be above zero and at most 24 hours"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Looks up interface `name`, naming it in the error.
pub fn interface_index(name: &str) -> Result<u32, Error> {
    sys::if_index(name).map_err(|source| Error::Interface {
        name: name.to_owned(),
        source,
    })
}

/// Frames per second in millions.
pub fn mpps(frames_per_second: u64) -> f64 {
    frames_per_second as f64 / 1e6
}

/// Frames per second over `elapsed`, 0 for no time.
pub fn rate(frames: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        frames as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["", "0", "0s", "-1s", "10h", "1d", "s", "2 s", "90000"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
