//! The per-queue worker: a busy-polling loop in the shape of DPDK's l2fwd.
//!
//! A worker owns one [`Xsk`] with one or two ports. One port ([`Xsk::open`]) serves DR, TUN and
//! one-armed NAT: every frame leaves by the interface it came in on. Two ports
//! ([`Xsk::open_pair`]: [`crate::xsk::CLIENT`] and [`crate::xsk::SERVER`]) serve LVS-NAT between
//! a client side and a server side: a frame the pipeline sends out of [`Egress::Peer`] leaves by
//! the other port. The two sockets share one UMEM, so that frame is transmitted from the chunk it
//! was received into, rewritten in place: no copy between interfaces, and the frame is never in
//! two places for the accounting. (With one port, [`Egress::Peer`] has nowhere to go and is
//! counted as [`DropReason::UnsupportedForwarding`].)
//!
//! Each iteration: reap TX completions on every port, top up every fill ring, then for each port
//! take a burst of up to [`BATCH`] frames from its RX ring and run each through the
//! [`Pipeline`], queueing the survivors on the TX list of the port they leave by; then queue each
//! port's list on its TX ring in one go, recycle what a ring did not take and the drops, and kick
//! the kernel for every port whose TX descriptors are pending. Between bursts the worker swaps in
//! the newest [`ServiceTable`] control has sent and applies up to
//! [`crate::sync::IMPORT_BUDGET`] connection records other directors sent (state sync, when
//! enabled in the pipeline), and about once a second it does housekeeping (connection expiry,
//! kernel socket statistics summed over the ports).
//!
//! The loop owns everything it touches per packet (rings, fixed batch arrays, connection table,
//! counters it alone writes), so it takes no lock, allocates nothing and logs nothing per packet.
//! Its counters are per worker: packets and bytes received and sent are summed over the ports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::counters::{bump, DropReason, WorkerCounters};
use crate::pipeline::{Egress, Pipeline, Verdict};
use crate::service::ServiceTable;
use crate::xsk::{Frames, KernelXskStats, RxFrame, Xsk, MAX_PORTS};

/// Frames taken from one port's RX ring per burst.
pub const BATCH: usize = 64;

/// Room in one port's TX list: in one iteration it takes frames from every port's burst (its
/// own, and with NAT its peer's).
const TX_LIST: usize = BATCH * MAX_PORTS;

/// How many frames ahead of the one being processed the worker asks for a frame's headers, for
/// the index buckets of its connection lookup, and for the entry they point at (see
/// [`Bursts::receive`]). Each stage's misses overlap the processing of the frames in between.
/// A rolling window rather than the whole burst at once: a CPU tracks only a couple of dozen
/// misses at a time, and prefetches beyond that stall the loop.
const PREFETCH_HEADERS_AHEAD: usize = 8;
const PREFETCH_BUCKETS_AHEAD: usize = 4;
const PREFETCH_ENTRY_AHEAD: usize = 2;

/// How often housekeeping runs.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(1);

/// Idle iterations between clock reads while no traffic arrives.
const IDLE_CLOCK_CHECK: u32 = 1024;

/// Idle iterations an adaptive worker spins before it sleeps (a few tens of microseconds: a
/// burst's gap does not put it to sleep).
const ADAPTIVE_SPINS: u32 = 4096;

/// Longest sleep of an adaptive worker, so table updates, housekeeping and stop are seen.
const ADAPTIVE_SLEEP_MS: i32 = 10;

/// How a worker waits while no traffic arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PollMode {
    /// Spin on the rings without pause, as DPDK's poll-mode drivers do: the lowest latency, and
    /// a whole core always.
    #[default]
    Busy,
    /// Spin while traffic flows; after [`ADAPTIVE_SPINS`] empty iterations with nothing left to
    /// send, sleep in poll(2) on the sockets (need_wakeup is on) until a frame arrives or
    /// [`ADAPTIVE_SLEEP_MS`] pass. An idle director then costs almost no CPU; the first frame
    /// after a pause waits for the wake-up.
    Adaptive,
}

/// How long a stopping worker waits for the kernel to finish sending what it queued.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

/// What a worker needs besides its socket.
pub struct WorkerContext {
    /// Worker index (selects its backend counter block).
    pub index: usize,
    /// The pipeline, with its connection table already allocated and, for state sync with other
    /// directors, its export and import queues ([`Pipeline::with_sync`]).
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
    /// Busy or adaptive polling.
    pub poll: PollMode,
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
        poll,
    } = context;
    let mut table = initial_table;
    // A replaced table waiting for room in `retired_tables` (see `adopt_newest`).
    let mut parked = None;
    counters
        .table_generation
        .store(table.generation, Ordering::Release);
    let mut bursts = Bursts::new();
    let ports = xsk.port_count();
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING_PERIOD;
    let mut idle_iterations = 0u32;

    while !stop.load(Ordering::Relaxed) {
        // An empty channel is one load to see; try_recv costs more, and this runs every
        // iteration. Replaced tables go back to control to be freed there.
        if (!tables.is_empty() || parked.is_some())
            && adopt_newest(&mut table, &mut parked, &tables, &retired_tables)
        {
            counters
                .table_generation
                .store(table.generation, Ordering::Release);
        }

        // Records from other directors (state sync), a bounded number between bursts.
        if pipeline.imports_pending() {
            pipeline.drain_imports(&table, Instant::now(), &counters);
        }

        xsk.reap_completions();
        if xsk.refill() == 0 && (0..ports).any(|port| xsk.in_fill(port) == 0) {
            bump(&counters.fill_ring_starved, 1);
        }

        let mut now = None;
        for port in 0..ports {
            bursts.receive(&mut xsk, port, &mut pipeline, &table, &mut now, &counters);
        }
        if now.is_some() {
            bursts.transmit(&mut xsk, &counters);
            idle_iterations = 0;
        } else {
            idle_iterations += 1;
            // No spin_loop() (PAUSE) here: it stalls the poll for tens of cycles each time, and
            // on this project's VM it was the loop's hottest instruction. Nothing here waits on
            // a lock; the rings are simply polled again.
        }

        let kicks = xsk.kick_tx();
        if kicks > 0 {
            bump(&counters.tx_wakeups, u64::from(kicks));
        }

        if poll == PollMode::Adaptive
            && now.is_none()
            && idle_iterations >= ADAPTIVE_SPINS
            && xsk.tx_in_flight() == 0
        {
            bump(&counters.idle_sleeps, 1);
            xsk.wait_readable(ADAPTIVE_SLEEP_MS);
            // The clock moved while asleep: housekeeping must not wait for IDLE_CLOCK_CHECK
            // more sleeps.
            now = Some(Instant::now());
        } else if now.is_none() && idle_iterations.is_multiple_of(IDLE_CLOCK_CHECK) {
            now = Some(Instant::now());
        }
        if let Some(now) = now {
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING_PERIOD;
                pipeline.housekeeping(&table, now, &counters);
                publish_kernel_stats(&xsk, &counters);
                publish_frame_accounting(&xsk, &counters);
            }
        }
    }

    drain_tx(&mut xsk);
    publish_kernel_stats(&xsk, &counters);
    publish_frame_accounting(&xsk, &counters);
    xsk
}

/// Swaps in the newest table control has sent, handing each one it replaces back through
/// `retired` so that control, not this thread, drops it: the last reference to a table frees
/// its Maglev lookup tables, which a burst of reloads must not do in the hot loop. Returns
/// whether `table` changed.
///
/// `retired` is shared by the workers and bounded: a table it has no room for waits in
/// `parked` (first in line next time) and newer tables wait in `tables` until control drains
/// it, so the worker never frees a table itself. Should control have gone away (the worker is
/// stopping) a replaced table is freed here. Allocates and frees nothing otherwise: both
/// channels are bounded arrays.
pub fn adopt_newest(
    table: &mut Arc<ServiceTable>,
    parked: &mut Option<Arc<ServiceTable>>,
    tables: &Receiver<Arc<ServiceTable>>,
    retired: &Sender<Arc<ServiceTable>>,
) -> bool {
    if let Some(replaced) = parked.take() {
        if let Err(TrySendError::Full(replaced)) = retired.try_send(replaced) {
            *parked = Some(replaced);
            return false;
        }
    }
    let mut changed = false;
    while parked.is_none() {
        let Ok(newer) = tables.try_recv() else {
            break;
        };
        let replaced = std::mem::replace(table, newer);
        changed = true;
        if let Err(TrySendError::Full(replaced)) = retired.try_send(replaced) {
            *parked = Some(replaced);
        }
    }
    changed
}

/// One iteration's frames: the RX burst being processed and, per port, the frames to send out
/// of it (fixed arrays, as DPDK l2fwd's per-port TX buffers).
struct Bursts {
    rx: Frames<BATCH>,
    tx: [Frames<TX_LIST>; MAX_PORTS],
}

impl Bursts {
    fn new() -> Self {
        Bursts {
            rx: Frames::new(),
            tx: [const { Frames::new() }; MAX_PORTS],
        }
    }

    /// Takes a burst from `port`'s RX ring and runs each frame through the pipeline: a frame to
    /// transmit joins the TX list of the port it leaves by, any other is recycled. `now` is the
    /// batch time, read from the clock by the first burst that brings frames.
    fn receive(
        &mut self,
        xsk: &mut Xsk,
        port: usize,
        pipeline: &mut Pipeline,
        table: &ServiceTable,
        now: &mut Option<Instant>,
        counters: &WorkerCounters,
    ) {
        // Back-pressure: take no more than every port this burst may leave by has room for, so
        // no frame is processed only to be dropped at a full TX ring; what stays on the RX ring
        // waits for the kernel to catch up (or is dropped by it, at no cost to this core).
        let peer = xsk.peer(port);
        let mut room = BATCH;
        for out in std::iter::once(port).chain(peer) {
            let free = (xsk.tx_room(out) as usize).saturating_sub(self.tx[out].len());
            room = room.min(free);
        }
        if room == 0 {
            bump(&counters.rx_deferred, 1);
            return;
        }
        let received = xsk.receive(port, &mut self.rx, room);
        if received == 0 {
            return;
        }
        let batch_time = *now.get_or_insert_with(Instant::now);
        let mut frames = self.rx.drain();
        // Prefetch in stages, as DPDK's l3fwd does. The kernel wrote the frames from another
        // CPU: a few frames ahead of the one being processed, its headers are asked for; when
        // they have arrived the frame is parsed and the index bucket its connection lookup will
        // read is asked for; when that has arrived, the entry it points at. The frames at the
        // start of the burst get what they can at once.
        for frame in frames.remaining().iter().take(PREFETCH_HEADERS_AHEAD) {
            xsk.prefetch(frame);
        }
        let mut hints = [None; BATCH];
        for (hint, frame) in hints
            .iter_mut()
            .zip(frames.remaining())
            .take(PREFETCH_BUCKETS_AHEAD)
        {
            *hint = xsk.frame(frame).and_then(|bytes| pipeline.prefetch(bytes));
        }
        let mut index = 0;
        while let Some(mut frame) = frames.next() {
            if let Some(ahead) = frames.ahead(PREFETCH_HEADERS_AHEAD) {
                xsk.prefetch(ahead);
            }
            let ahead = index + PREFETCH_BUCKETS_AHEAD;
            if let Some(bytes) = frames
                .ahead(PREFETCH_BUCKETS_AHEAD)
                .and_then(|ahead| xsk.frame(ahead))
            {
                hints[ahead] = pipeline.prefetch(bytes);
            }
            if let Some(&Some(hint)) = hints.get(index + PREFETCH_ENTRY_AHEAD) {
                pipeline.prefetch_entry(hint);
            }
            index += 1;
            bump(&counters.rx_packets, 1);
            bump(&counters.rx_bytes, frame.len() as u64);
            let verdict = if let Some((chunk, start)) = xsk.chunk_mut(&frame) {
                let len = frame.len();
                pipeline.process(chunk, start, len, table, batch_time, counters)
            } else {
                bump(&counters.bad_descriptors, 1);
                Verdict::Drop(DropReason::Truncated)
            };
            let (start, len, egress) = match verdict {
                Verdict::Tx { start, len, egress } => (start, len, egress),
                Verdict::Drop(_) => {
                    xsk.recycle(frame);
                    continue;
                }
            };
            let out = match (egress, peer) {
                (Egress::Ingress, _) => port,
                // NAT: out of the other interface, from the same UMEM chunk.
                (Egress::Peer, Some(peer)) => peer,
                // One interface: no socket on the other side to send from.
                (Egress::Peer, None) => {
                    counters.count_drop(DropReason::UnsupportedForwarding);
                    xsk.recycle(frame);
                    continue;
                }
            };
            if !xsk.reframe(&mut frame, start, len) {
                // The pipeline never returns a range outside the chunk; should it, the frame is
                // dropped rather than sent from the wrong place.
                bump(&counters.bad_descriptors, 1);
                xsk.recycle(frame);
                continue;
            }
            // A burst adds at most BATCH frames to a list, which has room for one burst from
            // every port: the list is never full here.
            if let Err(frame) = self.tx[out].push(frame) {
                counters.count_drop(DropReason::TxRingFull);
                xsk.recycle(frame);
            }
        }
    }

    /// Queues every port's TX list on its TX ring in one go; what a ring does not take is
    /// counted and recycled. Empties the lists.
    fn transmit(&mut self, xsk: &mut Xsk, counters: &WorkerCounters) {
        for (port, list) in self.tx.iter_mut().enumerate() {
            if list.is_empty() {
                continue;
            }
            let queued_bytes: usize = list.iter().map(RxFrame::len).sum();
            let sent = xsk.transmit(port, list);
            let mut unsent_bytes = 0;
            for frame in list.drain() {
                unsent_bytes += frame.len();
                counters.count_drop(DropReason::TxRingFull);
                xsk.recycle(frame);
            }
            bump(&counters.tx_packets, sent as u64);
            bump(&counters.tx_bytes, (queued_bytes - unsent_bytes) as u64);
        }
    }
}

/// Waits (bounded) for frames on every port's TX ring to complete so none is lost at shutdown.
fn drain_tx(xsk: &mut Xsk) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while xsk.tx_in_flight() > 0 && Instant::now() < deadline {
        xsk.kick_tx();
        xsk.reap_completions();
        std::thread::yield_now();
    }
}

/// Publishes where the UMEM's frames are (the `frames_*` gauges), so a frame leak shows on the
/// stats socket: at idle, free and fill-ring frames are every frame.
fn publish_frame_accounting(xsk: &Xsk, counters: &WorkerCounters) {
    let frames = xsk.accounting();
    for (gauge, value) in [
        (&counters.frames_free, frames.free),
        (&counters.frames_in_fill, frames.in_fill),
        (&counters.frames_in_tx, frames.in_tx),
        (&counters.frames_in_hand, frames.in_hand),
    ] {
        gauge.store(u64::from(value), Ordering::Relaxed);
    }
}

/// Publishes the kernel's socket counters, summed over the ports (ports whose counters cannot
/// be read count as zero; nothing is published if none can).
fn publish_kernel_stats(xsk: &Xsk, counters: &WorkerCounters) {
    let mut total: Option<KernelXskStats> = None;
    for port in 0..xsk.port_count() {
        if let Some(stats) = xsk.kernel_stats(port) {
            *total.get_or_insert_with(KernelXskStats::default) += stats;
        }
    }
    if let Some(stats) = total {
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
