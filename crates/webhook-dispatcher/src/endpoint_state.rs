//! What the dispatcher keeps per endpoint at run time: compiled settings, limiter,
//! breaker and in-flight count.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use http::{HeaderName, HeaderValue};
use webhook_core::{
    CircuitBreaker, CircuitState, Claimed, Endpoint, EventTypeFilter, Permit, RetryPolicy,
    TokenBucket,
};
use webhook_sdk::SigningKey;

use crate::{DispatcherConfig, Encoding, Error, Result};

#[derive(Debug)]
pub(crate) struct EndpointState {
    pub(crate) endpoint: Endpoint,
    pub(crate) uri: http::Uri,
    pub(crate) key: Option<SigningKey>,
    pub(crate) filter: EventTypeFilter,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) policy: RetryPolicy,
    pub(crate) timeout: Duration,
    pub(crate) compression: Option<(Encoding, usize)>,
    /// Shared with a state that replaces this one with the same rate limit.
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    /// Shared with a state that replaces this one with the same URL and breaker
    /// settings.
    breaker: Arc<Mutex<CircuitBreaker>>,
    /// Deliveries of this endpoint in flight here; shared with the states that replace
    /// this one when the endpoint changes (see [`EndpointState::succeed`]).
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// A strict endpoint's attempt is under way in this process (see [`StrictTurn`]);
    /// shared like `in_flight`.
    strict_busy: Arc<AtomicBool>,
    /// Most deliveries in flight at once (requests times batch size).
    pub(crate) cap: usize,
    /// Deliveries waiting for a batch to fill, with their breaker permits.
    pub(crate) batch: Mutex<Vec<(Claimed, Permit)>>,
}

/// A strict endpoint's turn to have an attempt under way; ends when dropped.
pub(crate) struct StrictTurn(Option<Arc<EndpointState>>);

impl StrictTurn {
    /// A turn that holds nothing (endpoints without strict order).
    pub(crate) const FREE: Self = Self(None);

    /// Whether this turn is a strict endpoint's.
    pub(crate) fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for StrictTurn {
    fn drop(&mut self) {
        if let Some(state) = &self.0 {
            state.strict_busy.store(false, Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EndpointState {
    /// The longest a claimed delivery of this endpoint is held before its result: the
    /// batch wait, then the request timeout.
    pub(crate) fn longest_hold(&self) -> Duration {
        self.timeout
            + self
                .endpoint
                .batching
                .map_or(Duration::ZERO, |b| b.max_wait)
    }

    pub(crate) fn new(endpoint: Endpoint, config: &DispatcherConfig, now: Instant) -> Result<Self> {
        // Endpoints come from the store here, perhaps written before today's rules
        // on ids and secrets: only what delivering needs is checked.
        endpoint.validate_usable()?;
        let filter = EventTypeFilter::new(&endpoint.event_types)?;
        let uri = crate::transport::parse_url(&endpoint.url).map_err(|e| Error::Invalid {
            field: "url",
            message: e.to_string(),
        })?;
        let headers = endpoint
            .headers
            .iter()
            .map(|(name, value)| {
                let name =
                    HeaderName::try_from(name.as_str()).map_err(|e| invalid_header(name, &e))?;
                let mut value = HeaderValue::try_from(value.as_str())
                    .map_err(|e| invalid_header(name.as_str(), &e))?;
                // Kept out of `Debug` output (and HTTP/2 header compression tables):
                // custom headers often carry credentials.
                value.set_sensitive(true);
                Ok((name, value))
            })
            .collect::<Result<Vec<_>>>()?;
        let per_request = endpoint
            .max_in_flight
            .unwrap_or(config.max_in_flight_per_endpoint) as usize;
        let batch_size = endpoint.batching.map_or(1, |b| b.max_events as usize);
        Ok(Self {
            uri,
            key: endpoint
                .secret
                .as_ref()
                .map(|s| SigningKey::new(s.expose())),
            filter,
            headers,
            policy: endpoint
                .retry_policy
                .clone()
                .unwrap_or_else(|| config.default_retry_policy.clone()),
            timeout: endpoint.timeout.unwrap_or(config.request_timeout),
            compression: endpoint.compression.map(|c| {
                let encoding = match c.encoding {
                    webhook_core::ContentEncoding::Gzip => Encoding::Gzip,
                    webhook_core::ContentEncoding::Zstd => Encoding::Zstd,
                };
                (encoding, c.min_size as usize)
            }),
            bucket: endpoint
                .rate_limit
                .map(|limit| Arc::new(Mutex::new(TokenBucket::from_limit(limit, now)))),
            breaker: Arc::new(Mutex::new(CircuitBreaker::new(
                endpoint
                    .circuit_breaker
                    .clone()
                    .unwrap_or_else(|| config.default_circuit_breaker.clone()),
            ))),
            in_flight: Arc::new(AtomicUsize::new(0)),
            strict_busy: Arc::new(AtomicBool::new(false)),
            cap: per_request.saturating_mul(batch_size).max(1),
            batch: Mutex::new(Vec::new()),
            endpoint,
        })
    }

    /// Takes over the work under way of `old`, the state of the same endpoint before a
    /// change: its attempts in flight still count against the cap, and a strict
    /// endpoint's attempt under way still holds its turn. The circuit breaker carries
    /// on unless the URL or the breaker settings changed (an open circuit stays open
    /// when, say, a header changes), and so does the rate limiter unless the limit did.
    pub(crate) fn succeed(&mut self, old: &Self) {
        self.in_flight = old.in_flight.clone();
        self.strict_busy = old.strict_busy.clone();
        if self.endpoint.url == old.endpoint.url
            && self.endpoint.circuit_breaker == old.endpoint.circuit_breaker
        {
            self.breaker = old.breaker.clone();
        }
        if self.endpoint.rate_limit == old.endpoint.rate_limit {
            self.bucket.clone_from(&old.bucket);
        }
    }

    /// How many more deliveries this endpoint can take now without deferring.
    pub(crate) fn room(&self, now: Instant) -> usize {
        let mut room = self.cap.saturating_sub(self.in_flight.load(Relaxed));
        if let Some(bucket) = &self.bucket {
            let tokens = lock(bucket).available(now).floor();
            // Truncation is the point: whole tokens only.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let tokens = tokens.max(0.0).min(usize::MAX as f64) as usize;
            room = room.min(tokens);
        }
        if lock(&self.breaker).state(now) == CircuitState::Open {
            room = 0;
        }
        room
    }

    /// Takes a rate-limit token and a breaker permit, or says how long to wait.
    pub(crate) fn admit(&self, now: Instant) -> Result<Permit, Duration> {
        let mut breaker = lock(&self.breaker);
        let permit = breaker.try_acquire(now)?;
        if let Some(bucket) = &self.bucket
            && let Err(wait) = lock(bucket).try_acquire(now)
        {
            breaker.release(permit);
            return Err(wait);
        }
        Ok(permit)
    }

    /// For a strict endpoint, the right to make the one attempt under way, or `None`
    /// while another attempt of it is under way here. The store hands out one delivery
    /// at a time in order, but an older one replayed from the dead letters comes first
    /// in that order while a newer one may still be in flight. Other endpoints always
    /// get a (no-op) turn.
    pub(crate) fn strict_turn(self: &Arc<Self>) -> Option<StrictTurn> {
        if self.endpoint.ordering != webhook_core::Ordering::Strict {
            return Some(StrictTurn::FREE);
        }
        (!self.strict_busy.swap(true, Relaxed)).then(|| StrictTurn(Some(self.clone())))
    }

    /// Gives back the breaker permit of an attempt that was not made.
    pub(crate) fn release(&self, permit: Permit) {
        lock(&self.breaker).release(permit);
    }

    pub(crate) fn on_success(&self, permit: Permit, now: Instant) {
        lock(&self.breaker).on_success(permit, now);
    }

    pub(crate) fn on_failure(&self, permit: Permit, now: Instant) {
        lock(&self.breaker).on_failure(permit, now);
    }

    /// Adds a claimed delivery to the batch; returns the batch if it is now full,
    /// and whether it was the first (so a flush timer must be armed).
    pub(crate) fn push_batch(
        &self,
        claimed: Claimed,
        permit: Permit,
    ) -> (Option<Vec<(Claimed, Permit)>>, bool) {
        let max = self.endpoint.batching.map_or(1, |b| b.max_events as usize);
        let mut batch = lock(&self.batch);
        let first = batch.is_empty();
        batch.push((claimed, permit));
        if batch.len() >= max {
            (Some(std::mem::take(&mut *batch)), first)
        } else {
            (None, first)
        }
    }

    pub(crate) fn take_batch(&self) -> Vec<(Claimed, Permit)> {
        std::mem::take(&mut *lock(&self.batch))
    }
}

fn invalid_header(name: &str, e: &dyn std::fmt::Display) -> Error {
    Error::Invalid {
        field: "headers",
        message: format!("{name:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_keeps_header_values_and_secrets_out() {
        let endpoint = Endpoint::new("a", "https://example.test/")
            .with_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .with_header("Authorization", "Bearer tok_live_s3cret");
        let state = EndpointState::new(endpoint, &DispatcherConfig::default(), Instant::now())
            .expect("valid endpoint");
        let shown = format!("{state:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("MfKQ9r8"), "{shown}");
    }
}
