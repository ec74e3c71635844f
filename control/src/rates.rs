//! Per-second rates: control samples the counters once a second (from the main loop's ticker)
//! into a small ring, and a stats reply carries the rates over the last 1 s and 5 s.
//!
//! The tracker works on [`Stats`] documents, so it knows nothing of workers or tables: a sample
//! is the counters of one `Stats`, keyed by (service, backend address) and worker index. A
//! counter that went backwards (a backend removed and re-added by a reload starts from zero)
//! counts as no traffic rather than as a huge negative rate.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use director_proto::{Rates, Stats, WorkerRates};

/// Samples kept: enough for the 5 s window at one sample a second.
const SAMPLES: usize = 6;
/// The two windows a reply carries.
const SHORT: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(5);

/// One sample's counters.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    /// (service, backend) -> [connections_total, packets_in, bytes_in].
    backends: HashMap<(String, String), [u64; 3]>,
    /// worker -> [rx_packets, rx_bytes, tx_packets, tx_bytes].
    workers: HashMap<usize, [u64; 4]>,
}

impl Sample {
    fn of(stats: &Stats, at: Instant) -> Sample {
        let backends = stats
            .services
            .iter()
            .flat_map(|service| {
                service.backends.iter().map(|backend| {
                    (
                        (service.name.clone(), backend.address.clone()),
                        [
                            backend.connections_total,
                            backend.packets_in,
                            backend.bytes_in,
                        ],
                    )
                })
            })
            .collect();
        let workers = stats
            .workers
            .iter()
            .map(|worker| {
                (
                    worker.worker,
                    [
                        worker.rx_packets,
                        worker.rx_bytes,
                        worker.tx_packets,
                        worker.tx_bytes,
                    ],
                )
            })
            .collect();
        Sample {
            at,
            backends,
            workers,
        }
    }
}

/// The ring of recent samples. Shared between the main loop (which records) and the stats
/// socket's threads (which read); the lock is held only to copy or push a sample.
#[derive(Debug, Default)]
pub struct RateTracker {
    samples: Mutex<VecDeque<Sample>>,
}

impl RateTracker {
    /// An empty tracker: every rate is 0 until two samples exist.
    pub fn new() -> RateTracker {
        RateTracker::default()
    }

    /// Records the counters of `stats`, read at `at`.
    pub fn record(&self, stats: &Stats, at: Instant) {
        let sample = Sample::of(stats, at);
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Fills the `rate_1s`/`rate_5s` fields of `stats` (backends, services, workers) from the
    /// samples recorded so far.
    pub fn fill(&self, stats: &mut Stats) {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(newest) = samples.back() else {
            return;
        };
        let short = baseline(&samples, SHORT);
        let long = baseline(&samples, LONG);
        for service in &mut stats.services {
            let (mut sum_1s, mut sum_5s) = (Rates::default(), Rates::default());
            for backend in &mut service.backends {
                let key = (service.name.clone(), backend.address.clone());
                backend.rate_1s = backend_rates(newest, short, &key);
                backend.rate_5s = backend_rates(newest, long, &key);
                sum_1s = sum_1s + backend.rate_1s;
                sum_5s = sum_5s + backend.rate_5s;
            }
            service.rate_1s = sum_1s;
            service.rate_5s = sum_5s;
        }
        for worker in &mut stats.workers {
            worker.rate_1s = worker_rates(newest, short, worker.worker);
            worker.rate_5s = worker_rates(newest, long, worker.worker);
        }
    }
}

/// The sample to measure a `window` against: the oldest one no more than half a second older
/// than `window` before the newest (so a late tick still counts), or none if the newest is the
/// only one. With less history than `window`, the rate is over what there is.
fn baseline(samples: &VecDeque<Sample>, window: Duration) -> Option<&Sample> {
    let newest = samples.back()?;
    let limit = window + Duration::from_millis(500);
    samples
        .iter()
        .take(samples.len() - 1)
        .find(|sample| newest.at.duration_since(sample.at) <= limit)
}

/// Per-second increase of each counter from `old` to `new` over `seconds`; counters that went
/// backwards give 0.
fn per_second<const N: usize>(new: [u64; N], old: [u64; N], seconds: f64) -> [f64; N] {
    let mut rates = [0.0; N];
    for (rate, (new, old)) in rates.iter_mut().zip(new.into_iter().zip(old)) {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a rate needs no more than f64's 53 bits"
        )]
        let increase = new.saturating_sub(old) as f64;
        *rate = increase / seconds;
    }
    rates
}

fn elapsed(newest: &Sample, baseline: &Sample) -> Option<f64> {
    let seconds = newest.at.duration_since(baseline.at).as_secs_f64();
    (seconds > 0.0).then_some(seconds)
}

fn backend_rates(newest: &Sample, baseline: Option<&Sample>, key: &(String, String)) -> Rates {
    let Some(baseline) = baseline else {
        return Rates::default();
    };
    let (Some(seconds), Some(&new)) = (elapsed(newest, baseline), newest.backends.get(key)) else {
        return Rates::default();
    };
    // A backend new since the baseline started from zero.
    let old = baseline.backends.get(key).copied().unwrap_or_default();
    let [connections, packets, bytes] = per_second(new, old, seconds);
    Rates {
        connections_per_second: connections,
        packets_per_second: packets,
        bytes_per_second: bytes,
    }
}

fn worker_rates(newest: &Sample, baseline: Option<&Sample>, worker: usize) -> WorkerRates {
    let Some(baseline) = baseline else {
        return WorkerRates::default();
    };
    let (Some(seconds), Some(&new)) = (elapsed(newest, baseline), newest.workers.get(&worker))
    else {
        return WorkerRates::default();
    };
    let old = baseline.workers.get(&worker).copied().unwrap_or_default();
    let [rx_packets, rx_bytes, tx_packets, tx_bytes] = per_second(new, old, seconds);
    WorkerRates {
        rx_packets_per_second: rx_packets,
        rx_bytes_per_second: rx_bytes,
        tx_packets_per_second: tx_packets,
        tx_bytes_per_second: tx_bytes,
    }
}

#[cfg(test)]
mod tests {
    use director_proto::{BackendStats, ServiceStats, WorkerStats};

    use super::*;

    /// One service "web" with backends .11 and .12, and one worker, all counting `n` per second
    /// times a per-counter factor.
    fn stats(connections: [u64; 2], packets: [u64; 2], rx: u64) -> Stats {
        let backend = |address: &str, index: usize| BackendStats {
            address: address.to_owned(),
            connections_total: connections[index],
            packets_in: packets[index],
            bytes_in: packets[index] * 100,
            ..BackendStats::default()
        };
        Stats {
            services: vec![ServiceStats {
                name: "web".to_owned(),
                backends: vec![backend("192.0.2.11", 0), backend("192.0.2.12", 1)],
                ..ServiceStats::default()
            }],
            workers: vec![WorkerStats {
                worker: 0,
                rx_packets: rx,
                rx_bytes: rx * 100,
                tx_packets: rx,
                tx_bytes: rx * 100,
                ..WorkerStats::default()
            }],
            ..Stats::default()
        }
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() < 1e-9
    }

    #[test]
    fn no_samples_or_one_sample_means_zero() {
        let tracker = RateTracker::new();
        let mut reply = stats([10, 10], [30, 30], 60);
        tracker.fill(&mut reply);
        assert_eq!(reply.services[0].backends[0].rate_1s, Rates::default());
        tracker.record(&reply, Instant::now());
        tracker.fill(&mut reply);
        assert_eq!(reply.services[0].rate_5s, Rates::default());
        assert_eq!(reply.workers[0].rate_1s, WorkerRates::default());
    }

    #[test]
    fn one_and_five_second_windows() {
        let tracker = RateTracker::new();
        let start = Instant::now();
        // Backend .11 gets 10 connections a second for 5 s, then 40 in the last second; .12
        // gets 2 a second throughout.
        let mut totals = [0u64, 0u64];
        for second in 0..=6u64 {
            tracker.record(
                &stats(
                    totals,
                    [totals[0] * 3, totals[1] * 3],
                    totals[0] + totals[1],
                ),
                start + Duration::from_secs(second),
            );
            totals[0] += if second == 5 { 40 } else { 10 };
            totals[1] += 2;
        }
        let mut reply = stats([0, 0], [0, 0], 0);
        tracker.fill(&mut reply);
        let web = &reply.services[0];
        // The last second (5 -> 6): 40 and 2.
        assert!(close(web.backends[0].rate_1s.connections_per_second, 40.0));
        assert!(close(web.backends[0].rate_1s.packets_per_second, 120.0));
        assert!(close(web.backends[0].rate_1s.bytes_per_second, 12_000.0));
        assert!(close(web.backends[1].rate_1s.connections_per_second, 2.0));
        // The last five (1 -> 6): (4 * 10 + 40) / 5 = 16 and 2.
        assert!(close(web.backends[0].rate_5s.connections_per_second, 16.0));
        assert!(close(web.backends[1].rate_5s.connections_per_second, 2.0));
        // The service sums its backends.
        assert!(close(web.rate_1s.connections_per_second, 42.0));
        assert!(close(web.rate_5s.connections_per_second, 18.0));
        // Workers: rx = connections of both.
        assert!(close(reply.workers[0].rate_1s.rx_packets_per_second, 42.0));
        assert!(close(reply.workers[0].rate_5s.rx_bytes_per_second, 1800.0));
        assert!(close(reply.workers[0].rate_5s.tx_packets_per_second, 18.0));
    }

    #[test]
    fn short_history_and_late_ticks() {
        let tracker = RateTracker::new();
        let start = Instant::now();
        tracker.record(&stats([0, 0], [0, 0], 0), start);
        // A tick 1.4 s late: the 1 s window still measures against it; 5 s uses what there is.
        tracker.record(
            &stats([14, 0], [0, 0], 0),
            start + Duration::from_millis(1400),
        );
        let mut reply = stats([0, 0], [0, 0], 0);
        tracker.fill(&mut reply);
        let backend = &reply.services[0].backends[0];
        assert!(close(backend.rate_1s.connections_per_second, 10.0));
        assert!(close(backend.rate_5s.connections_per_second, 10.0));
    }

    #[test]
    fn counters_going_backwards_and_new_backends() {
        let tracker = RateTracker::new();
        let start = Instant::now();
        let mut first = stats([100, 0], [300, 0], 0);
        first.services[0].backends.pop();
        tracker.record(&first, start);
        // .11 was removed and re-added (counters restart); .12 is new.
        tracker.record(&stats([5, 7], [15, 21], 0), start + Duration::from_secs(1));
        let mut reply = stats([0, 0], [0, 0], 0);
        reply.services[0].backends.push(BackendStats {
            address: "192.0.2.13".to_owned(),
            ..BackendStats::default()
        });
        tracker.fill(&mut reply);
        let backends = &reply.services[0].backends;
        assert_eq!(backends[0].rate_1s, Rates::default());
        assert!(close(backends[1].rate_1s.connections_per_second, 7.0));
        // A backend the samples never saw has no rate.
        assert_eq!(backends[2].rate_1s, Rates::default());
    }

    #[test]
    fn ring_keeps_six_samples() {
        let tracker = RateTracker::new();
        let start = Instant::now();
        for second in 0..20u64 {
            tracker.record(
                &stats([second * 3, 0], [0, 0], 0),
                start + Duration::from_secs(second),
            );
        }
        assert_eq!(tracker.samples.lock().unwrap().len(), SAMPLES);
        let mut reply = stats([0, 0], [0, 0], 0);
        tracker.fill(&mut reply);
        assert!(close(
            reply.services[0].backends[0].rate_5s.connections_per_second,
            3.0
        ));
    }
}
