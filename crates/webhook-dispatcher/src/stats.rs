//! Counters and latency percentiles, readable with `Dispatcher::metrics`.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use hdrhistogram::Histogram;

/// A snapshot of what a dispatcher has done since it started.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Deliveries created by `dispatch` and `publish`.
    pub dispatched: u64,
    /// Deliveries that got a 2xx.
    pub delivered: u64,
    /// Failed attempts scheduled for another try.
    pub retried: u64,
    /// Deliveries sent to the dead-letter queue.
    pub dead: u64,
    /// Deliveries postponed by a rate limit or an open circuit (no attempt spent).
    pub deferred: u64,
    /// HTTP attempts made.
    pub attempts: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Accepted deliveries not yet delivered or dead: those this process accepted and
    /// has not seen finish, replaced by the store's count of unfinished deliveries
    /// whenever that says the queue is full.
    pub queued: u64,
    /// Median time from dispatch to delivery.
    pub latency_p50: Duration,
    /// 90th percentile of the same.
    pub latency_p90: Duration,
    /// 99th percentile of the same.
    pub latency_p99: Duration,
    /// Slowest seen.
    pub latency_max: Duration,
}

#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) dispatched: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) attempts: AtomicU64,
    /// Microseconds from dispatch to delivery.
    latency: Mutex<Histogram<u64>>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            dispatched: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds"),
            ),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }

    pub(crate) fn record_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.latency.lock() {
            // In range by construction; saturate rather than fail.
            h.saturating_record(micros);
        }
    }

    pub(crate) fn snapshot(&self, in_flight: u64, queued: u64) -> Metrics {
        let (p50, p90, p99, max) = self
            .latency
            .lock()
            .map(|h| {
                let q = |p: f64| {
                    Duration::from_micros(if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(p)
                    })
                };
                (q(0.5), q(0.9), q(0.99), Duration::from_micros(h.max()))
            })
            .unwrap_or_default();
        Metrics {
            dispatched: self.dispatched.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            retried: self.retried.load(Relaxed),
            dead: self.dead.load(Relaxed),
            deferred: self.deferred.load(Relaxed),
            attempts: self.attempts.load(Relaxed),
            in_flight,
            queued,
            latency_p50: p50,
            latency_p90: p90,
            latency_p99: p99,
            latency_max: max,
        }
    }
}
