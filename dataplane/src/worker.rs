//! The per-queue worker: a busy-polling loop in the shape of DPDK's l2fwd.
//!
//! Each iteration: reap TX completions, top up the fill ring, take a burst of up to [`BATCH`]
//! frames from the RX ring, run each through the [`Pipeline`], queue the survivors on the TX
//! ring in one go, recycle the rest, and kick the kernel while TX descriptors are pending.
//! Between bursts the worker swaps in the newest [`ServiceTable`] control has sent, and about
//! once a second it does housekeeping (connection expiry, kernel socket statistics).
//!
//! The loop owns everything it touches per packet (rings, batch arrays, connection table,
//! counters it alone writes), so it takes no lock, allocates nothing and logs nothing per packet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use xdpilone::xdp::XdpDesc;

use crate::counters::{bump, DropReason, WorkerCounters};
use crate::pipeline::{Egress, Pipeline, Verdict};
use crate::service::ServiceTable;
use crate::xsk::Xsk;

/// Frames taken from the RX ring per burst.
pub const BATCH: usize = 64;

/// How often housekeeping runs.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(1);

/// Idle iterations between clock reads while no traffic arrives.
const IDLE_CLOCK_CHECK: u32 = 1024;

/// How long a stopping worker waits for the kernel to finish sending what it queued.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

/// What a worker needs besides its socket.
pub struct WorkerContext {
    /// Worker index (selects its backend counter block).
    pub index: usize,
    /// The pipeline, with its connection table already allocated.
    pub pipeline: Pipeline,
    /// Counters this worker writes and control reads.
    pub counters: Arc<WorkerCounters>,
    /// New service tables from control; the worker keeps the newest.
    pub tables: Receiver<Arc<ServiceTable>>,
    /// The table to start with.
    pub initial_table: Arc<ServiceTable>,
    /// Where replaced tables go, so that control, not this loop, frees them.
    pub retired_tables: Sender<Arc<ServiceTable>>,
    /// Set by control to stop the loop.
    pub stop: Arc<AtomicBool>,
}

/// Runs the loop until `stop` is set, then drains TX and hands the socket back (tests use it to
/// check that every frame is accounted for).
pub fn run(mut xsk: Xsk, context: WorkerContext) -> Xsk {
    let WorkerContext {
        index: _,
        mut pipeline,
        counters,
        tables,
        initial_table,
        retired_tables,
        stop,
    } = context;
    let mut table = initial_table;
    counters
        .table_generation
        .store(table.generation, Ordering::Release);
    let mut rx_descs = [XdpDesc::default(); BATCH];
    let mut tx_descs = [XdpDesc::default(); BATCH];
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING_PERIOD;
    let mut idle_iterations = 0u32;

    while !stop.load(Ordering::Relaxed) {
        while let Ok(newer) = tables.try_recv() {
            let replaced = std::mem::replace(&mut table, newer);
            // Should control have gone away, the table is freed here; it is rare and not per packet.
            let _ = retired_tables.try_send(replaced);
            counters
                .table_generation
                .store(table.generation, Ordering::Release);
        }

        xsk.reap_completions();
        if xsk.refill() == 0 && xsk.accounting().in_fill == 0 {
            bump(&counters.fill_ring_starved, 1);
        }

        let received = xsk.receive(&mut rx_descs);
        let mut now = None;
        if received > 0 {
            let batch_time = Instant::now();
            now = Some(batch_time);
            let mut queued = 0;
            for desc in &rx_descs[..received] {
                bump(&counters.rx_packets, 1);
                bump(&counters.rx_bytes, u64::from(desc.len));
                let verdict = if let Some((chunk, start)) = xsk.chunk_mut(desc) {
                    let len = desc.len as usize;
                    pipeline.process(chunk, start, len, &table, batch_time, &counters)
                } else {
                    bump(&counters.bad_descriptors, 1);
                    Verdict::Drop(DropReason::Truncated)
                };
                match verdict {
                    Verdict::Tx {
                        start,
                        len,
                        egress: Egress::Ingress,
                    } => {
                        tx_descs[queued] = XdpDesc {
                            addr: xsk.chunk_address(desc, start),
                            len: len as u32,
                            options: 0,
                        };
                        queued += 1;
                    }
                    // This worker serves one interface; leaving by the other one (NAT) needs a
                    // socket there on a shared UMEM, which the worker does not have yet.
                    Verdict::Tx {
                        egress: Egress::Peer,
                        ..
                    } => {
                        counters.count_drop(DropReason::UnsupportedForwarding);
                        xsk.recycle(desc);
                    }
                    Verdict::Drop(_) => xsk.recycle(desc),
                }
            }
            let sent = xsk.transmit(&tx_descs[..queued]);
            for desc in &tx_descs[..sent] {
                bump(&counters.tx_packets, 1);
                bump(&counters.tx_bytes, u64::from(desc.len));
            }
            for desc in &tx_descs[sent..queued] {
                counters.count_drop(DropReason::TxRingFull);
                xsk.recycle(desc);
            }
            idle_iterations = 0;
        } else {
            idle_iterations += 1;
            std::hint::spin_loop();
        }

        if xsk.kick_tx() {
            bump(&counters.tx_wakeups, 1);
        }

        if now.is_none() && idle_iterations.is_multiple_of(IDLE_CLOCK_CHECK) {
            now = Some(Instant::now());
        }
        if let Some(now) = now {
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING_PERIOD;
                pipeline.housekeeping(&table, now, &counters);
                publish_kernel_stats(&xsk, &counters);
            }
        }
    }

    drain_tx(&mut xsk);
    publish_kernel_stats(&xsk, &counters);
    xsk
}

/// Waits (bounded) for frames on the TX ring to complete so none is lost at shutdown.
fn drain_tx(xsk: &mut Xsk) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while xsk.tx_in_flight() > 0 && Instant::now() < deadline {
        xsk.kick_tx();
        xsk.reap_completions();
        std::thread::yield_now();
    }
}

fn publish_kernel_stats(xsk: &Xsk, counters: &WorkerCounters) {
    if let Some(stats) = xsk.kernel_stats() {
        let kernel = &counters.kernel;
        kernel.rx_dropped.store(stats.rx_dropped, Ordering::Relaxed);
        kernel
            .rx_invalid_descs
            .store(stats.rx_invalid_descs, Ordering::Relaxed);
        kernel
            .tx_invalid_descs
            .store(stats.tx_invalid_descs, Ordering::Relaxed);
        kernel
            .rx_ring_full
            .store(stats.rx_ring_full, Ordering::Relaxed);
        kernel
            .rx_fill_ring_empty
            .store(stats.rx_fill_ring_empty_descs, Ordering::Relaxed);
        kernel
            .tx_ring_empty
            .store(stats.tx_ring_empty_descs, Ordering::Relaxed);
    }
}

/// Pins the calling thread to `core` if that core exists; returns whether it did.
pub fn pin_to_core(core: usize) -> bool {
    core_affinity::get_core_ids()
        .and_then(|cores| cores.into_iter().find(|candidate| candidate.id == core))
        .is_some_and(core_affinity::set_for_current)
}
