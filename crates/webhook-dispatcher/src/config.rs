//! Dispatcher settings.

use std::time::Duration;

use webhook_core::{CircuitBreakerConfig, RetryPolicy};

use crate::{DestinationPolicy, TransportConfig};

/// What [`Dispatcher::dispatch`](crate::Dispatcher::dispatch) does when the queue is full.
///
/// The queue is full when [`DispatcherConfig::queue_capacity`] deliveries are
/// unfinished. The dispatcher counts those it accepts and sees finish; when that count
/// says full it asks the store ([`Store::unfinished`](webhook_core::Store::unfinished),
/// at most once a second), whose count also covers deliveries finished by other
/// processes, removed with their endpoint, and accepted by other processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Wait until there is room (the safe default).
    #[default]
    Block,
    /// Fail at once with [`Error::QueueFull`](crate::Error::QueueFull).
    Reject,
    /// Accept anyway: the store holds the excess until there is room. With a durable
    /// store this costs disk; with the in-memory store, memory.
    SpillToStorage,
}

/// Dispatcher settings. Build with struct update syntax:
///
/// ```
/// use webhook_dispatcher::{DispatcherConfig, OverflowPolicy};
///
/// let cfg = DispatcherConfig {
///     max_in_flight: 500,
///     shard_queue_size: 2_000,
///     shard_count: 32,
///     worker_count: 8,
///     overflow_policy: OverflowPolicy::Reject,
///     ..Default::default()
/// };
/// assert_eq!(cfg.queue_capacity(), 64_000);
/// ```
#[derive(Clone, Debug)]
pub struct DispatcherConfig {
    /// Most HTTP requests in flight at once, across all endpoints.
    pub max_in_flight: usize,
    /// Most requests in flight to one endpoint, unless the endpoint sets its own.
    pub max_in_flight_per_endpoint: u32,
    /// Queue slots per shard; the queue holds `shard_count * shard_queue_size`
    /// accepted deliveries that are not yet delivered or dead.
    pub shard_queue_size: usize,
    /// Number of queue shards (see `shard_queue_size`).
    pub shard_count: usize,
    /// Tasks that claim due work from the store concurrently.
    pub worker_count: usize,
    /// What `dispatch` does when the queue is full.
    pub overflow_policy: OverflowPolicy,
    /// Retry policy of endpoints that set none.
    pub default_retry_policy: RetryPolicy,
    /// Circuit breaker of endpoints that set none.
    pub default_circuit_breaker: CircuitBreakerConfig,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout of endpoints that set none.
    pub request_timeout: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Largest payload `dispatch` accepts, in bytes.
    pub max_payload_bytes: usize,
    /// Most response bytes read (and kept as an excerpt) per attempt.
    pub max_response_bytes: usize,
    /// Which destination addresses may be contacted (SSRF protection). The library
    /// default allows all; `webhookd` refuses private addresses by default.
    pub destination_policy: DestinationPolicy,
    /// How often the store is polled for due work when nothing wakes the dispatcher
    /// (retries coming due, work from other processes, expired leases).
    pub poll_interval: Duration,
    /// Most deliveries claimed from the store per round trip.
    pub claim_batch: usize,
    /// How long `shutdown` waits for in-flight requests before releasing them.
    pub shutdown_timeout: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 512,
            max_in_flight_per_endpoint: 64,
            shard_queue_size: 10_000,
            shard_count: 16,
            worker_count: 2,
            overflow_policy: OverflowPolicy::Block,
            default_retry_policy: RetryPolicy::default(),
            default_circuit_breaker: CircuitBreakerConfig::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            user_agent: concat!("webhook-dispatcher/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_payload_bytes: 1024 * 1024,
            max_response_bytes: 64 * 1024,
            destination_policy: DestinationPolicy::allow_all(),
            poll_interval: Duration::from_millis(500),
            claim_batch: 256,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl DispatcherConfig {
    /// Accepted deliveries not yet final that the dispatcher holds before the overflow
    /// policy applies: `shard_count * shard_queue_size`.
    pub fn queue_capacity(&self) -> usize {
        self.shard_count
            .max(1)
            .saturating_mul(self.shard_queue_size.max(1))
    }

    pub(crate) fn transport(&self) -> TransportConfig {
        TransportConfig {
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            max_response_bytes: self.max_response_bytes,
            user_agent: self.user_agent.clone(),
            destination: self.destination_policy.clone(),
            ..TransportConfig::default()
        }
    }

    /// Checks the settings; the error names the first invalid field.
    pub fn validate(&self) -> crate::Result<()> {
        let invalid = |field, message: &str| {
            Err(crate::Error::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if self.max_in_flight == 0 {
            return invalid("max_in_flight", "must be at least 1");
        }
        if self.max_in_flight_per_endpoint == 0 {
            return invalid("max_in_flight_per_endpoint", "must be at least 1");
        }
        if self.worker_count == 0 {
            return invalid("worker_count", "must be at least 1");
        }
        if self.claim_batch == 0 {
            return invalid("claim_batch", "must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be more than zero");
        }
        if self.poll_interval.is_zero() {
            return invalid("poll_interval", "must be more than zero");
        }
        self.default_retry_policy.validate()?;
        self.default_circuit_breaker.validate()?;
        Ok(())
    }
}
