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
/// Each request let through carries a [`Permit`], handed back with its outcome. Only
/// outcomes of the current half-open phase's trials decide it: outcomes of requests
/// let through before it (while closed, or in an earlier half-open phase) are ignored
/// while open or half-open, as they say nothing about the endpoint since it opened.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    inner: Inner,
    /// How many times the breaker has opened: the half-open phase after the `n`th
    /// opening admits trials of round `n`.
    opened: u64,
}

/// A request let through by [`CircuitBreaker::try_acquire`]; its outcome is reported
/// with it ([`on_success`](CircuitBreaker::on_success),
/// [`on_failure`](CircuitBreaker::on_failure)), or it is given back unused
/// ([`release`](CircuitBreaker::release)).
///
/// Not `Clone`: each permit is handed back once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "report the outcome of the request, or release the permit"]
pub struct Permit {
    /// The half-open round this request is a trial of; `None` if let through closed.
    trial: Option<u64>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            config,
            inner: Inner::Closed { failures: 0 },
            opened: 0,
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
    /// every trial slot taken, it is [`HALF_OPEN_BUSY_WAIT`]. A granted request's permit
    /// must be handed back to [`on_success`](Self::on_success),
    /// [`on_failure`](Self::on_failure) or [`release`](Self::release).
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Duration> {
        self.inner = self.current(now);
        match &mut self.inner {
            Inner::Closed { .. } => Ok(Permit { trial: None }),
            Inner::Open { since } => Err(self
                .config
                .open_timeout
                .saturating_sub(now.saturating_duration_since(*since))
                .min(MAX_OPEN_TIMEOUT)),
            Inner::HalfOpen { in_flight, .. } => {
                if *in_flight < self.config.half_open_max_requests {
                    *in_flight += 1;
                    Ok(Permit {
                        trial: Some(self.opened),
                    })
                } else {
                    Err(HALF_OPEN_BUSY_WAIT)
                }
            }
        }
    }

    /// Whether `permit` is a trial of the current half-open round (it is used up).
    #[expect(
        clippy::needless_pass_by_value,
        reason = "a permit is used up when handed back"
    )]
    fn is_trial(&self, permit: Permit) -> bool {
        permit.trial == Some(self.opened)
    }

    /// Records the success of the request let through with `permit`.
    pub fn on_success(&mut self, permit: Permit, now: Instant) {
        let trial = self.is_trial(permit);
        self.inner = match self.current(now) {
            Inner::Closed { .. } => Inner::Closed { failures: 0 },
            Inner::HalfOpen {
                successes,
                in_flight,
            } if trial => {
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
            // Open, or half-open and not one of its trials.
            other => other,
        };
    }

    /// Records the failure of the request let through with `permit`.
    pub fn on_failure(&mut self, permit: Permit, now: Instant) {
        let trial = self.is_trial(permit);
        self.inner = match self.current(now) {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    self.open(now)
                } else {
                    Inner::Closed { failures }
                }
            }
            Inner::HalfOpen { .. } if trial => self.open(now),
            // Open, or half-open and not one of its trials.
            other => other,
        };
    }

    /// Gives back a granted request that was not sent (e.g. deferred), so it does not hold
    /// a half-open trial slot. Records no outcome.
    pub fn release(&mut self, permit: Permit) {
        let trial = self.is_trial(permit);
        if let Inner::HalfOpen { in_flight, .. } = &mut self.inner
            && trial
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Opens the breaker at `now`, beginning a new round.
    fn open(&mut self, now: Instant) -> Inner {
        self.opened = self.opened.wrapping_add(1);
        Inner::Open { since: now }
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
        let permit = |b: &mut CircuitBreaker, at| b.try_acquire(at).unwrap();
        // A success resets the failure count.
        for ok in [false, false, true, false, false] {
            let p = permit(&mut b, t0);
            if ok {
                b.on_success(p, t0);
            } else {
                b.on_failure(p, t0);
            }
        }
        assert_eq!(b.state(t0), CircuitState::Closed);
        let late = [(); 4].map(|()| permit(&mut b, ms(100)));
        let p = permit(&mut b, ms(100));
        b.on_failure(p, ms(100));
        assert_eq!(b.state(ms(100)), CircuitState::Open);
        assert_eq!(b.try_acquire(ms(400)), Err(Duration::from_millis(700)));
        // Timeout passed: half-open, two trial slots.
        assert_eq!(b.state(ms(1100)), CircuitState::HalfOpen);
        let t1 = b.try_acquire(ms(1100)).unwrap();
        let t2 = b.try_acquire(ms(1100)).unwrap();
        assert_eq!(b.try_acquire(ms(1100)), Err(HALF_OPEN_BUSY_WAIT));
        b.release(t2);
        let t2 = b.try_acquire(ms(1100)).unwrap();
        // Requests let through while closed answer late: they are no trials, and
        // neither close nor reopen the breaker, nor free a trial slot.
        let [l1, l2, l3, l4] = late;
        b.on_success(l1, ms(1150));
        b.on_success(l2, ms(1150));
        b.on_failure(l3, ms(1150));
        assert_eq!(b.state(ms(1150)), CircuitState::HalfOpen);
        assert_eq!(b.try_acquire(ms(1150)), Err(HALF_OPEN_BUSY_WAIT));
        // A failing trial reopens and restarts the timer.
        b.on_failure(t1, ms(1200));
        assert_eq!(b.state(ms(2100)), CircuitState::Open);
        assert_eq!(b.try_acquire(ms(2100)), Err(Duration::from_millis(100)));
        // Outcomes are ignored while open, and an earlier round's trials do not count
        // in the next round.
        b.on_success(l4, ms(2150));
        assert_eq!(b.state(ms(2150)), CircuitState::Open);
        let t3 = b.try_acquire(ms(2200)).unwrap();
        b.on_success(t2, ms(2205));
        assert_eq!(b.state(ms(2205)), CircuitState::HalfOpen);
        let t4 = b.try_acquire(ms(2205)).unwrap();
        assert_eq!(
            b.try_acquire(ms(2205)),
            Err(HALF_OPEN_BUSY_WAIT),
            "two trials out"
        );
        b.release(t4);
        b.on_success(t3, ms(2210));
        assert_eq!(b.state(ms(2210)), CircuitState::HalfOpen);
        let t4 = b.try_acquire(ms(2220)).unwrap();
        b.on_success(t4, ms(2230));
        assert_eq!(b.state(ms(2230)), CircuitState::Closed);
        // Time going backwards does not close or open anything.
        assert!(b.try_acquire(t0).is_ok());
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Acquire,
        /// Outcomes and releases name an outstanding permit (modulo their number).
        Success(usize),
        Failure(usize),
        Release(usize),
        Advance(u64),
    }

    /// Reference model on an integer millisecond clock; `round` counts openings.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Model {
        Closed(u32),
        Open(u64),
        HalfOpen { ok: u32, out: u32 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Acquire),
            2 => any::<usize>().prop_map(Op::Success),
            3 => any::<usize>().prop_map(Op::Failure),
            1 => any::<usize>().prop_map(Op::Release),
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
            let mut round = 0u64;
            // Outstanding permits, with the round each is a trial of (None: closed).
            let mut permits: Vec<(Permit, Option<u64>)> = Vec::new();
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
                let mut take = |i: usize| (!permits.is_empty()).then(|| permits.remove(i % permits.len()));
                match op {
                    Op::Advance(_) => {}
                    Op::Acquire => {
                        let got = b.try_acquire(now);
                        match &mut m {
                            Model::Closed(_) => {
                                prop_assert!(got.is_ok());
                                permits.push((got.unwrap(), None));
                            }
                            Model::Open(at) => prop_assert_eq!(
                                got,
                                Err(Duration::from_millis(timeout - (t - *at)))
                            ),
                            Model::HalfOpen { out, .. } if *out < trials => {
                                prop_assert!(got.is_ok());
                                *out += 1;
                                permits.push((got.unwrap(), Some(round)));
                            }
                            Model::HalfOpen { .. } => prop_assert_eq!(got, Err(HALF_OPEN_BUSY_WAIT)),
                        }
                    }
                    Op::Success(i) => {
                        let Some((permit, trial)) = take(i) else { continue };
                        b.on_success(permit, now);
                        let current = trial == Some(round);
                        m = match m {
                            Model::Closed(_) => Model::Closed(0),
                            Model::HalfOpen { ok, .. } if current && ok + 1 >= successes => Model::Closed(0),
                            Model::HalfOpen { ok, out } if current => Model::HalfOpen { ok: ok + 1, out: out - 1 },
                            other => other,
                        };
                    }
                    Op::Failure(i) => {
                        let Some((permit, trial)) = take(i) else { continue };
                        b.on_failure(permit, now);
                        let current = trial == Some(round);
                        m = match m {
                            Model::Closed(f) if f + 1 >= failures => { round += 1; Model::Open(t) }
                            Model::Closed(f) => Model::Closed(f + 1),
                            Model::HalfOpen { .. } if current => { round += 1; Model::Open(t) }
                            other => other,
                        };
                    }
                    Op::Release(i) => {
                        let Some((permit, trial)) = take(i) else { continue };
                        b.release(permit);
                        if let Model::HalfOpen { out, .. } = &mut m
                            && trial == Some(round)
                        {
                            *out -= 1;
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
                        // The trial slots taken are exactly the current round's permits.
                        let held = permits.iter().filter(|(_, r)| *r == Some(round)).count();
                        prop_assert_eq!(in_flight as usize, held);
                    }
                    (inner, m) => prop_assert!(false, "{inner:?} vs model {m:?}"),
                }
            }
        }
    }
}
