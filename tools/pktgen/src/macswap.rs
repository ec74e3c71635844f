//! The bare AF_XDP baseline: the director's own socket and classifier with no load balancing.
//!
//! One [`Xsk`] on (interface, queue) and the director's XDP classifier steering one service's
//! frames into it, exactly as `director` sets them up; then the worker loop's ring handling
//! (`dataplane::worker`: reap completions, refill, a burst of up to [`BATCH`] frames but no more
//! than the TX ring has room for, queue the burst on the TX ring in one go, recycle what it did
//! not take, kick while anything is pending) with the pipeline replaced by a swap of the
//! Ethernet addresses. What the director forwards below this rate is the cost of parsing, the
//! connection table, scheduling and the rewrite; the rings, the copies of copy mode and the
//! kernel's per-frame skb are common to both.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::service::ServiceKey;
use dataplane::xdp::XdpClassifier;
use dataplane::xsk::{Frames, Xsk, XskConfig, CLIENT};

use crate::{sys, Error, StopReason};

/// Frames per RX burst, as the director's workers take (`dataplane::worker::BATCH`).
pub const BATCH: usize = dataplane::worker::BATCH;

/// Loop iterations between clock reads.
const CLOCK_CHECK: u32 = 256;

/// What a macswap run forwarded.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MacswapReport {
    /// The interface.
    pub interface: String,
    /// RX queue served.
    pub queue: u32,
    /// From the socket's start to the end of the loop, in seconds.
    pub elapsed_s: f64,
    /// Frames received from the socket.
    pub received: u64,
    /// Frames queued for transmission.
    pub transmitted: u64,
    /// Frames the TX ring did not take (recycled).
    pub tx_ring_full: u64,
    /// TX wake-up syscalls.
    pub tx_kicks: u64,
    /// `transmitted / elapsed_s`.
    pub pps: f64,
    /// Frames per second transmitted in each whole second.
    pub per_second_pps: Vec<u64>,
    /// The kernel's counters for the socket (`XDP_STATISTICS`).
    pub kernel_rx_dropped: u64,
    /// Frames the kernel dropped because the RX ring was full.
    pub kernel_rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub kernel_rx_fill_ring_empty: u64,
    /// Why it stopped.
    pub stopped_by: StopReason,
}

/// The socket, the classifier that feeds it, and the loop's counters.
pub struct Macswap {
    // Field order is drop order: the classifier (and its bpf_link) goes before the socket it
    // steers into.
    classifier: XdpClassifier,
    xsk: Xsk,
    queue: u32,
}

impl Macswap {
    /// Opens the socket on `ifindex`/`queue`, attaches the director's classifier to `ifindex`
    /// and steers `service`'s frames (only) into the socket; everything else goes to the
    /// kernel.
    pub fn open(ifindex: u32, queue: u32, service: &ServiceKey) -> Result<Self, Error> {
        let xsk = Xsk::open(ifindex, queue, XskConfig::default())?;
        let classifier = XdpClassifier::attach(ifindex)?;
        classifier.set_service(service, true)?;
        classifier.register_socket(queue, xsk.fd(CLIENT))?;
        Ok(Macswap {
            classifier,
            xsk,
            queue,
        })
    }

    /// Whether the classifier is attached.
    pub fn is_attached(&self) -> bool {
        self.classifier.is_attached()
    }

    /// Forwards until `duration` has passed, `stop` is set, or SIGINT/SIGTERM, calling
    /// `each_second(second, pps, total)` after every whole second.
    pub fn run(
        &mut self,
        interface: &str,
        duration: Duration,
        stop: &AtomicBool,
        mut each_second: impl FnMut(u64, u64, u64),
    ) -> MacswapReport {
        let xsk = &mut self.xsk;
        let mut rx = Frames::<BATCH>::new();
        let mut tx = Frames::<BATCH>::new();
        let (mut received, mut transmitted, mut tx_ring_full, mut tx_kicks) = (0u64, 0, 0, 0);
        let start = Instant::now();
        let deadline = start + duration;
        let mut next_second = start + Duration::from_secs(1);
        let mut last_second = 0;
        let mut per_second = Vec::new();
        let mut iterations = 0u32;
        let stopped_by = loop {
            xsk.reap_completions();
            xsk.refill();

            // Back-pressure, as the worker: no more than the TX ring has room for.
            let room = (xsk.tx_room(CLIENT) as usize).min(BATCH);
            let count = xsk.receive(CLIENT, &mut rx, room);
            for mut frame in rx.drain() {
                let Some((chunk, start)) = xsk.chunk_mut(&frame) else {
                    xsk.recycle(frame);
                    continue;
                };
                let len = frame.len();
                let bytes = &mut chunk[start..start + len];
                if bytes.len() < 12 {
                    xsk.recycle(frame);
                    continue;
                }
                let (dst, src) = bytes.split_at_mut(6);
                dst.swap_with_slice(&mut src[..6]);
                if !xsk.reframe(&mut frame, start, len) {
                    xsk.recycle(frame);
                    continue;
                }
                // At most BATCH frames a burst, and the TX list is emptied after each.
                if let Err(frame) = tx.push(frame) {
                    xsk.recycle(frame);
                }
            }
            received += count as u64;
            if !tx.is_empty() {
                let sent = xsk.transmit(CLIENT, &mut tx);
                transmitted += sent as u64;
                for frame in tx.drain() {
                    tx_ring_full += 1;
                    xsk.recycle(frame);
                }
            }
            tx_kicks += u64::from(xsk.kick_tx());

            iterations = iterations.wrapping_add(1);
            if stop.load(Ordering::Relaxed) || sys::stop_requested() {
                break StopReason::Signal;
            }
            if iterations.is_multiple_of(CLOCK_CHECK) {
                let now = Instant::now();
                if now >= next_second {
                    per_second.push(transmitted - last_second);
                    each_second(
                        per_second.len() as u64,
                        transmitted - last_second,
                        transmitted,
                    );
                    last_second = transmitted;
                    next_second += Duration::from_secs(1);
                }
                if now >= deadline {
                    break StopReason::Duration;
                }
            }
        };
        let elapsed = start.elapsed();
        // Let the kernel finish what is queued, briefly, as the worker does on stop.
        let drain_until = Instant::now() + Duration::from_millis(200);
        while xsk.tx_in_flight() > 0 && Instant::now() < drain_until {
            xsk.kick_tx();
            xsk.reap_completions();
            std::thread::yield_now();
        }
        let stats = xsk.kernel_stats(CLIENT).unwrap_or_default();
        MacswapReport {
            interface: interface.to_owned(),
            queue: self.queue,
            elapsed_s: elapsed.as_secs_f64(),
            received,
            transmitted,
            tx_ring_full,
            tx_kicks,
            pps: crate::rate(transmitted, elapsed),
            per_second_pps: per_second,
            kernel_rx_dropped: stats.rx_dropped,
            kernel_rx_ring_full: stats.rx_ring_full,
            kernel_rx_fill_ring_empty: stats.rx_fill_ring_empty_descs,
            stopped_by,
        }
    }
}
