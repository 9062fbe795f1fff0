//! Per-endpoint circuit breaker: stop sending to an endpoint that keeps failing, and
//! probe it with a few trial requests after a cool-down.
//!
//! Pure: the caller passes the current [`Instant`] to every call.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How long [`CircuitBreaker::try_acquire`] asks a caller to wait when the breaker is
/// half-open and all trial slots are taken.
pub const HALF_OPEN_BUSY_WAIT: Duration = Duration::from_secs(1);

/// The longest `open_timeout` [`CircuitBreakerConfig::validate`] accepts: 30 days. The
/// wait [`CircuitBreaker::try_acquire`] reports is never longer, even for a config that
/// was not validated (callers add it to the current time, which must not overflow).
pub const MAX_OPEN_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);

/// Circuit breaker settings. In JSON `open_timeout` is a human string such as `"60s"`;
/// missing fields take their [`Default`] values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open a closed breaker; at least 1.
    pub failure_threshold: u32,
    /// Consecutive successes in half-open that close the breaker; at least 1.
    pub success_threshold: u32,
    /// How long the breaker stays open before admitting trial requests; greater than zero.
    #[serde(with = "crate::retry::serde_duration")]
    pub open_timeout: Duration,
    /// Most trial requests outstanding at once while half-open; at least 1.
    pub half_open_max_requests: u32,
}

impl Default for CircuitBreakerConfig {
    /// 5 failures to open, 2 successes to close, 60 s open, 3 concurrent trials.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            success_threshold: 2,
            open_timeout: Duration::from_secs(60),
            half_open_max_requests: 3,
        }
    }
}

impl CircuitBreakerConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field (`circuit_breaker.failure_threshold`,
    /// `circuit_breaker.success_threshold`, `circuit_breaker.open_timeout`,
    /// `circuit_breaker.half_open_max_requests`) if it is zero, and on
    /// `circuit_breaker.open_timeout` if it is above [`MAX_OPEN_TIMEOUT`].
    pub fn validate(&self) -> Result<()> {
        let checks = [
            (self.failure_threshold, "circuit_breaker.failure_threshold"),
            (self.success_threshold, "circuit_breaker.success_threshold"),
            (
                self.half_open_max_requests,
                "circuit_breaker.half_open_max_requests",
            ),
        ];
        if let Some((_, field)) = checks.iter().find(|(v, _)| *v == 0) {
            return Err(Error::invalid(field, "must be at least 1"));
        }
        if self.open_timeout.is_zero() {
            return Err(Error::invalid(
                "circuit_breaker.open_timeout",
                "must be greater than zero",
            ));
        }
        if self.open_timeout > MAX_OPEN_TIMEOUT {
            return Err(Error::invalid(
                "circuit_breaker.open_timeout",
                format!(
                    "must be at most {}",
                    crate::retry::format_duration(MAX_OPEN_TIMEOUT)
                ),
            ));
        }
        Ok(())
    }
}

/// The state of a [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Requests flow; failures are counted.
    Closed,
    /// Requests are refused until the open timeout passes.
    Open,
    /// A limited number of trial requests are admitted to probe the endpoint.
    HalfOpen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    Closed { failures: u32 },
    Open { since: Instant },
    HalfOpen { successes: u32, in_flight: u32 },
}

/// A circuit breaker.
///
/// - Closed: `failure_threshold` consecutive failures open it; a success resets the count.
/// - Open: refuses requests; after `open_timeout` it becomes half-open.
/// - Half-open: admits up to `half_open_max_requests` outstanding trial requests;
///   `success_threshold` consecutive successes close it, any failure opens it again and
///   restarts the timer.
///
/// Outcomes reported while open are ignored (they belong to requests admitted before it
/// opened). Permits are not tracked individually: in half-open, any outcome or
/// [`release`](Self::release) frees one trial slot.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    inner: Inner,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            config,
            inner: Inner::Closed { failures: 0 },
        }
    }

    /// The state at `now`: an open breaker whose timeout has passed reports
    /// [`CircuitState::HalfOpen`].
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.current(now) {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Asks to send a request at `now`.
    ///
    /// # Errors
    /// `Err(wait)` if the request must not be sent: when open, `wait` is the time left until
    /// the breaker turns half-open (at most [`MAX_OPEN_TIMEOUT`]); when half-open with
    /// every trial slot taken, it is [`HALF_OPEN_BUSY_WAIT`]. A granted request must be followed by
    /// [`on_success`](Self::on_success), [`on_failure`](Self::on_failure) or
    /// [`release`](Self::release).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        self.inner = self.current(now);
        match &mut self.inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { since } => Err(self
                .config
                .open_timeout
                .saturating_sub(now.saturating_duration_since(*since))
                .min(MAX_OPEN_TIMEOUT)),
            Inner::HalfOpen { in_flight, .. } => {
                if *in_flight < self.config.half_open_max_requests {
                    *in_flight += 1;
                    Ok(())
                } else {
                    Err(HALF_OPEN_BUSY_WAIT)
                }
            }
        }
    }

    /// Records a successful request.
    pub fn on_success(&mut self, now: Instant) {
        self.inner = match self.current(now) {
            Inner::Closed { .. } => Inner::Closed { failures: 0 },
            Inner::HalfOpen {
                successes,
                in_flight,
            } => {
                let successes = successes.saturating_add(1);
                if successes >= self.config.success_threshold {
                    Inner::Closed { failures: 0 }
                } else {
                    Inner::HalfOpen {
                        successes,
                        in_flight: in_flight.saturating_sub(1),
                    }
                }
            }
            open @ Inner::Open { .. } => open,
        };
    }

    /// Records a failed request.
    pub fn on_failure(&mut self, now: Instant) {
        self.inner = match self.current(now) {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    Inner::Open { since: now }
                } else {
                    Inner::Closed { failures }
                }
            }
            Inner::HalfOpen { .. } => Inner::Open { since: now },
            open @ Inner::Open { .. } => open,
        };
    }

    /// Gives back a granted request that was not sent (e.g. deferred), so it does not hold
    /// a half-open trial slot. Records no outcome.
    pub fn release(&mut self) {
        if let Inner::HalfOpen { in_flight, .. } = &mut self.inner {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// The inner state at `now`, with an expired open state turned half-open.
    fn current(&self, now: Instant) -> Inner {
        match self.inner {
            Inner::Open { since }
                if now.saturating_duration_since(since) >= self.config.open_timeout =>
            {
                Inner::HalfOpen {
                    successes: 0,
                    in_flight: 0,
                }
            }
            inner => inner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(failures: u32, successes: u32, timeout_ms: u64, trials: u32) -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_threshold: failures,
            success_threshold: successes,
            open_timeout: Duration::from_millis(timeout_ms),
            half_open_max_requests: trials,
        }
    }

    #[test]
    fn defaults_validate_and_json() {
        let c = CircuitBreakerConfig::default();
        assert_eq!(c, config(5, 2, 60_000, 3));
        assert!(c.validate().is_ok());
        let json = r#"{"failure_threshold":5,"success_threshold":2,"open_timeout":"1m","half_open_max_requests":3}"#;
        assert_eq!(serde_json::to_string(&c).unwrap(), json);
        assert_eq!(
            serde_json::from_str::<CircuitBreakerConfig>(json).unwrap(),
            c
        );
        let partial: CircuitBreakerConfig =
            serde_json::from_str(r#"{"open_timeout":"90s"}"#).unwrap();
        assert_eq!(partial.open_timeout, Duration::from_secs(90));
        assert!(
            serde_json::from_str::<CircuitBreakerConfig>(r#"{"open_timeout":"soon"}"#).is_err()
        );

        let field = |c: CircuitBreakerConfig| match c.validate() {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(config(0, 2, 1, 3)),
            "circuit_breaker.failure_threshold"
        );
        assert_eq!(
            field(config(5, 0, 1, 3)),
            "circuit_breaker.success_threshold"
        );
        assert_eq!(field(config(5, 2, 0, 3)), "circuit_breaker.open_timeout");
        assert_eq!(
            field(config(5, 2, 1, 0)),
            "circuit_breaker.half_open_max_requests"
        );
    }

    #[test]
    fn full_cycle() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = CircuitBreaker::new(config(3, 2, 1000, 2));
        assert_eq!(b.state(t0), CircuitState::Closed);
        // A success resets the failure count.
        b.on_failure(t0);
        b.on_failure(t0);
        b.on_success(t0);
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), CircuitState::Closed);
        b.on_failure(ms(100));
        assert_eq!(b.state(ms(100)), CircuitState::Open);
        assert_eq!(b.try_acquire(ms(400)), Err(Duration::from_millis(700)));
        // Timeout passed: half-open, two trial slots.
        assert_eq!(b.state(ms(1100)), CircuitState::HalfOpen);
        assert_eq!(b.try_acquire(ms(1100)), Ok(()));
        assert_eq!(b.try_acquire(ms(1100)), Ok(()));
        assert_eq!(b.try_acquire(ms(1100)), Err(HALF_OPEN_BUSY_WAIT));
        b.release();
        assert_eq!(b.try_acquire(ms(1100)), Ok(()));
        // A failing trial reopens and restarts the timer.
        b.on_failure(ms(1200));
        assert_eq!(b.state(ms(2100)), CircuitState::Open);
        assert_eq!(b.try_acquire(ms(2100)), Err(Duration::from_millis(100)));
        // The other outstanding trial's outcome is ignored while open.
        b.on_success(ms(2150));
        assert_eq!(b.state(ms(2150)), CircuitState::Open);
        assert_eq!(b.try_acquire(ms(2200)), Ok(()));
        b.on_success(ms(2210));
        assert_eq!(b.state(ms(2210)), CircuitState::HalfOpen);
        assert_eq!(b.try_acquire(ms(2220)), Ok(()));
        b.on_success(ms(2230));
        assert_eq!(b.state(ms(2230)), CircuitState::Closed);
        // Time going backwards does not close or open anything.
        assert_eq!(b.try_acquire(t0), Ok(()));
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Acquire,
        Success,
        Failure,
        Release,
        Advance(u64),
    }

    /// Reference model on an integer millisecond clock.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Model {
        Closed(u32),
        Open(u64),
        HalfOpen { ok: u32, out: u32 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Acquire),
            2 => Just(Op::Success),
            3 => Just(Op::Failure),
            1 => Just(Op::Release),
            2 => (0u64..150).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn matches_reference_model(
            failures in 1u32..5,
            successes in 1u32..4,
            timeout in 1u64..100,
            trials in 1u32..4,
            ops in prop::collection::vec(op(), 0..200),
        ) {
            let cfg = config(failures, successes, timeout, trials);
            let t0 = Instant::now();
            let mut b = CircuitBreaker::new(cfg);
            let mut m = Model::Closed(0);
            let mut t = 0u64;
            for op in ops {
                if let Op::Advance(d) = op {
                    t += d;
                }
                let now = t0 + Duration::from_millis(t);
                // Lazy open -> half-open transition.
                if let Model::Open(at) = m
                    && t - at >= timeout
                {
                    m = Model::HalfOpen { ok: 0, out: 0 };
                }
                match op {
                    Op::Advance(_) => {}
                    Op::Acquire => {
                        let got = b.try_acquire(now);
                        match &mut m {
                            Model::Closed(_) => prop_assert_eq!(got, Ok(())),
                            Model::Open(at) => prop_assert_eq!(
                                got,
                                Err(Duration::from_millis(timeout - (t - *at)))
                            ),
                            Model::HalfOpen { out, .. } if *out < trials => {
                                prop_assert_eq!(got, Ok(()));
                                *out += 1;
                            }
                            Model::HalfOpen { .. } => prop_assert_eq!(got, Err(HALF_OPEN_BUSY_WAIT)),
                        }
                    }
                    Op::Success => {
                        b.on_success(now);
                        m = match m {
                            Model::Closed(_) => Model::Closed(0),
                            Model::HalfOpen { ok, .. } if ok + 1 >= successes => Model::Closed(0),
                            Model::HalfOpen { ok, out } => Model::HalfOpen { ok: ok + 1, out: out.saturating_sub(1) },
                            open => open,
                        };
                    }
                    Op::Failure => {
                        b.on_failure(now);
                        m = match m {
                            Model::Closed(f) if f + 1 >= failures => Model::Open(t),
                            Model::Closed(f) => Model::Closed(f + 1),
                            Model::HalfOpen { .. } => Model::Open(t),
                            open => open,
                        };
                    }
                    Op::Release => {
                        b.release();
                        if let Model::HalfOpen { out, .. } = &mut m {
                            *out = out.saturating_sub(1);
                        }
                    }
                }
                let expected = match m {
                    Model::Closed(_) => CircuitState::Closed,
                    Model::Open(_) => CircuitState::Open,
                    Model::HalfOpen { .. } => CircuitState::HalfOpen,
                };
                prop_assert_eq!(b.state(now), expected);
                match (b.current(now), m) {
                    (Inner::Closed { failures }, Model::Closed(f)) => prop_assert_eq!(failures, f),
                    (Inner::Open { since }, Model::Open(at)) => {
                        prop_assert_eq!(since, t0 + Duration::from_millis(at));
                    }
                    (Inner::HalfOpen { successes, in_flight }, Model::HalfOpen { ok, out }) => {
                        prop_assert_eq!((successes, in_flight), (ok, out));
                        prop_assert!(in_flight <= trials);
                    }
                    (inner, m) => prop_assert!(false, "{inner:?} vs model {m:?}"),
                }
            }
        }
    }
}
