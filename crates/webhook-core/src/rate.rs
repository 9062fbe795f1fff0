//! Token-bucket rate limiting, e.g. deliveries per second to one endpoint.
//!
//! Pure: the caller passes the current [`Instant`] to every call.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The longest wait [`TokenBucket::try_acquire`] reports. Returned when tokens will never
/// become available (rate 0 with an empty bucket, or more tokens asked than the burst).
pub const MAX_WAIT: Duration = Duration::from_secs(365 * 86_400);

/// Highest refill rate, in tokens per second; higher rates are clamped to it.
const MAX_RATE: f64 = 1e9;

/// Slack for floating-point rounding when comparing token counts.
const EPSILON: f64 = 1e-9;

/// A rate limit as configured on an endpoint: `rate_per_sec` sustained, bursts of up to
/// `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Tokens added per second. Zero admits only the initial burst.
    pub rate_per_sec: u32,
    /// Bucket capacity: the most requests admitted at once; at least 1.
    pub burst: u32,
}

impl RateLimit {
    /// Checks the limit.
    ///
    /// # Errors
    /// [`Error::Invalid`] on `rate_limit.burst` if it is zero.
    pub fn validate(&self) -> Result<()> {
        if self.burst == 0 {
            return Err(Error::invalid("rate_limit.burst", "must be at least 1"));
        }
        Ok(())
    }
}

/// A token bucket: holds up to `burst` tokens, refilled continuously at `rate` per second;
/// each admitted request takes one.
///
/// Time going backwards (a `now` earlier than one already seen) adds no tokens and never
/// panics. Rates that are negative or NaN count as 0; rates above 10⁹/s are clamped.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: f64, burst: u32, now: Instant) -> Self {
        Self {
            rate: sanitize(rate_per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// A full bucket for `limit`.
    pub fn from_limit(limit: RateLimit, now: Instant) -> Self {
        Self::new(f64::from(limit.rate_per_sec), limit.burst, now)
    }

    /// Takes one token.
    ///
    /// # Errors
    /// `Err(wait)`: how long until a token is available (at most [`MAX_WAIT`]).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        self.try_acquire_n(1, now)
    }

    /// Takes `n` tokens at once, or none.
    ///
    /// # Errors
    /// `Err(wait)`: how long until `n` tokens are available; [`MAX_WAIT`] if never (`n`
    /// above the burst, or rate 0).
    pub fn try_acquire_n(&mut self, n: u32, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let n = f64::from(n);
        if self.tokens + EPSILON >= n {
            self.tokens = (self.tokens - n).max(0.0);
            return Ok(());
        }
        if n > self.burst || self.rate == 0.0 {
            return Err(MAX_WAIT);
        }
        // Wait until the admission check above passes with EPSILON / 2 to spare for
        // rounding; the deficit is above EPSILON, so this is at least 1 ns.
        let nanos = ((n - self.tokens - EPSILON / 2.0) / self.rate * 1e9).ceil();
        // `as` saturates.
        Err(Duration::from_nanos(nanos as u64).min(MAX_WAIT))
    }

    /// Changes the rate and burst from `now` on. Tokens earned so far are kept, up to the
    /// new burst.
    pub fn set_rate(&mut self, rate_per_sec: f64, burst: u32, now: Instant) {
        self.refill(now);
        self.rate = sanitize(rate_per_sec);
        self.burst = f64::from(burst);
        self.tokens = self.tokens.min(self.burst);
    }

    /// Tokens available at `now` (fractional).
    pub fn available(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.burst)
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            self.tokens = self.available(now);
            self.last = now;
        }
    }
}

fn sanitize(rate: f64) -> f64 {
    if rate > 0.0 { rate.min(MAX_RATE) } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3, t0);
        assert_eq!(b.available(t0), 3.0);
        for _ in 0..3 {
            assert_eq!(b.try_acquire(t0), Ok(()));
        }
        assert_eq!(b.try_acquire(t0), Err(ms(500)));
        assert_eq!(b.try_acquire(t0 + ms(250)), Err(ms(250)));
        assert_eq!(b.try_acquire(t0 + ms(500)), Ok(()));
        // Refill is capped at the burst.
        assert_eq!(b.available(t0 + Duration::from_secs(100)), 3.0);
        assert_eq!(b.try_acquire_n(3, t0 + Duration::from_secs(100)), Ok(()));
        assert_eq!(b.try_acquire_n(0, t0 + Duration::from_secs(100)), Ok(()));
        assert_eq!(
            b.try_acquire_n(4, t0 + Duration::from_secs(200)),
            Err(MAX_WAIT)
        );
        assert_eq!(b.available(t0 + Duration::from_secs(200)), 3.0);
    }

    #[test]
    fn time_going_backwards_mints_nothing() {
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(10);
        let mut b = TokenBucket::new(1.0, 1, late);
        assert_eq!(b.try_acquire(late), Ok(()));
        assert_eq!(b.available(t0), 0.0);
        assert_eq!(b.try_acquire(t0), Err(Duration::from_secs(1)));
        assert_eq!(b.try_acquire(late + ms(999)), Err(ms(1)));
        assert_eq!(b.try_acquire(late + ms(1000)), Ok(()));
    }

    #[test]
    fn zero_and_odd_rates() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 2, t0);
        assert_eq!(b.try_acquire(t0), Ok(()));
        assert_eq!(b.try_acquire(t0), Ok(()));
        assert_eq!(
            b.try_acquire(t0 + Duration::from_secs(1_000_000)),
            Err(MAX_WAIT)
        );
        for rate in [f64::NAN, -5.0, f64::NEG_INFINITY, 1e-300] {
            let mut b = TokenBucket::new(rate, 0, t0);
            assert_eq!(b.try_acquire(t0 + ms(1)), Err(MAX_WAIT), "{rate}");
        }
        let mut b = TokenBucket::new(f64::INFINITY, 1, t0);
        assert_eq!(b.try_acquire(t0), Ok(()));
        assert_eq!(b.try_acquire(t0), Err(Duration::from_nanos(1)));
        assert_eq!(b.try_acquire(t0 + Duration::from_nanos(1)), Ok(()));
        let mut b = TokenBucket::new(2.0, 0, t0);
        assert_eq!(b.try_acquire(t0 + Duration::from_secs(60)), Err(MAX_WAIT));
    }

    #[test]
    fn set_rate_keeps_earned_tokens_up_to_new_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1.0, 10, t0);
        b.set_rate(100.0, 4, t0);
        assert_eq!(b.available(t0), 4.0);
        assert_eq!(b.try_acquire_n(4, t0), Ok(()));
        assert_eq!(b.try_acquire(t0), Err(ms(10)));
        b.set_rate(1.0, 4, t0 + ms(5));
        assert!((b.available(t0 + ms(5)) - 0.5).abs() < 1e-9);
        assert_eq!(b.try_acquire(t0 + ms(5)), Err(ms(500)));
    }

    #[test]
    fn rate_limit_validate_and_json() {
        let limit = RateLimit {
            rate_per_sec: 10,
            burst: 20,
        };
        assert!(limit.validate().is_ok());
        let json = r#"{"rate_per_sec":10,"burst":20}"#;
        assert_eq!(serde_json::to_string(&limit).unwrap(), json);
        assert_eq!(serde_json::from_str::<RateLimit>(json).unwrap(), limit);
        match (RateLimit {
            rate_per_sec: 10,
            burst: 0,
        })
        .validate()
        {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "rate_limit.burst"),
            other => panic!("{other:?}"),
        }
        let t0 = Instant::now();
        let mut b = TokenBucket::from_limit(limit, t0);
        assert_eq!(b.try_acquire_n(20, t0), Ok(()));
        assert_eq!(b.try_acquire(t0), Err(ms(100)));
    }

    proptest! {
        #[test]
        fn admitted_never_exceeds_burst_plus_rate(
            rate in prop_oneof![Just(0.0), 0.001f64..1000.0],
            burst in 0u32..20,
            steps in prop::collection::vec((0u64..2_000_000, 0u32..4), 1..300),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst, t0);
            let (mut t, mut admitted) = (0u64, 0u64);
            for (step_us, n) in steps {
                t += step_us;
                let now = t0 + Duration::from_micros(t);
                if let Ok(()) = b.try_acquire_n(n, now) {
                    admitted += u64::from(n);
                } else {
                    prop_assert!(b.available(now) < f64::from(n));
                }
                prop_assert!(b.available(now) >= 0.0 && b.available(now) <= f64::from(burst));
                let bound = f64::from(burst) + rate * (t as f64 / 1e6) + 1e-6;
                prop_assert!((admitted as f64) <= bound, "{admitted} > {bound}");
            }
        }

        #[test]
        fn spaced_requests_all_admitted(
            rate in 0.01f64..1e6,
            burst in 1u32..5,
            extra_us in prop::collection::vec(0u64..1000, 1..100),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst, t0);
            // Rounded up to whole nanoseconds: never shorter than 1 / rate.
            let spacing = Duration::from_nanos((1e9 / rate).ceil() as u64);
            let mut now = t0;
            for extra in extra_us {
                prop_assert_eq!(b.try_acquire(now), Ok(()));
                now += spacing + Duration::from_micros(extra);
            }
        }

        #[test]
        fn waiting_the_reported_time_suffices(
            rate in 0.01f64..1e6,
            burst in 1u32..5,
            n in 1u32..5,
            drain in 0u32..10,
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst, t0);
            for _ in 0..drain {
                let _ = b.try_acquire(t0);
            }
            match b.try_acquire_n(n, t0) {
                Ok(()) => {}
                Err(wait) if n > burst => prop_assert_eq!(wait, MAX_WAIT),
                Err(wait) => {
                    prop_assert!(!wait.is_zero());
                    prop_assert_eq!(b.try_acquire_n(n, t0 + wait), Ok(()));
                }
            }
        }
    }
}
