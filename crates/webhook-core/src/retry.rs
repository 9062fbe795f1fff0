//! Retry policy: when to try a failed delivery again, and when to give up.
//!
//! Everything here is pure: randomness (the jitter sample) and the current time
//! (for `Retry-After` dates) are passed in by the caller.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The longest wait a server may ask for with `Retry-After`; longer requests are cut to this.
///
/// One day: a server asking for more is either misconfigured or effectively gone, and a
/// delivery parked for longer would outlive most retention windows.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// The longest delay a policy may ask for between two attempts: 30 days.
///
/// [`RetryPolicy::validate`] (and [`RetryPolicy::schedule`]) refuse longer delays, and
/// [`RetryPolicy::delay`] never returns more, even for a policy that was not validated:
/// callers add the delay to the current time, which must not overflow.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// How a failed delivery is retried.
///
/// In JSON the variant is the `kind` field and durations are human strings:
/// `{"kind":"schedule","delays":["5s","30s","2m"],"max_attempts":4}` or
/// `{"kind":"exponential","initial":"5s","max":"1h","multiplier":2.0,"max_attempts":15,"jitter":0.2}`.
/// Deserialization does not validate: call [`RetryPolicy::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RetryPolicy {
    /// Exponential backoff with jitter.
    Exponential(Backoff),
    /// An explicit list of delays.
    Schedule(Schedule),
}

/// Exponential backoff: the delay after the n-th failed attempt is
/// `initial * multiplier^(n-1)`, capped at `max`, then scaled by a random factor in
/// `[1 - jitter, 1 + jitter]` and capped at `max` again.
///
/// Missing fields in JSON take their [`Default`] values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// Delay after the first failed attempt; must be greater than zero.
    #[serde(with = "serde_duration")]
    pub initial: Duration,
    /// Upper bound on any delay; at least `initial`.
    #[serde(with = "serde_duration")]
    pub max: Duration,
    /// Growth factor per attempt; finite and at least 1.
    pub multiplier: f64,
    /// Total attempts including the first; at least 1.
    pub max_attempts: u32,
    /// Jitter fraction in `[0, 1]`.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 5 s doubling up to 1 h, ±20 % jitter, 15 attempts: 14 retries spread over about
    /// 5.4 hours (5 s, 10 s, 20 s, ... 42 m 40 s, then 1 h four times).
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            multiplier: 2.0,
            max_attempts: 15,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before retrying after `attempt` failed attempts, without jitter.
    /// Attempt 0 is treated as 1. Saturates at `max`; never panics.
    fn base_delay(&self, attempt: u32) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exponent = f64::from(attempt.saturating_sub(1));
        let secs = self.initial.as_secs_f64() * multiplier.powf(exponent);
        Duration::try_from_secs_f64(secs).map_or(self.max, |d| d.min(self.max))
    }

    fn delay(&self, attempt: u32, jitter_sample: f64) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        let sample = if jitter_sample.is_nan() {
            0.5
        } else {
            jitter_sample.clamp(0.0, 1.0)
        };
        let factor = 1.0 + jitter * (2.0 * sample - 1.0);
        Duration::try_from_secs_f64(base.as_secs_f64() * factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// An explicit retry schedule: the n-th retry waits `delays[n-1]`; past the end of the
/// list the last delay repeats until `max_attempts` is reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The delays, in order; at least one.
    #[serde(with = "serde_durations")]
    pub delays: Vec<Duration>,
    /// Total attempts including the first; at least 1.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// [`RetryPolicy::Exponential`] with [`Backoff::default`].
    fn default() -> Self {
        Self::Exponential(Backoff::default())
    }
}

impl RetryPolicy {
    /// Exponential backoff with multiplier 2 and ±20 % jitter.
    pub fn exponential(initial: Duration, max: Duration, max_attempts: u32) -> Self {
        Self::Exponential(Backoff {
            initial,
            max,
            multiplier: 2.0,
            max_attempts,
            jitter: 0.2,
        })
    }

    /// An explicit schedule from strings such as `"500ms"`, `"5s"`, `"2m"`, `"1h"`, `"1d"`
    /// (see [`parse_duration`]). `max_attempts` is one initial attempt plus one per entry;
    /// change it with [`RetryPolicy::with_max_attempts`].
    ///
    /// # Errors
    /// [`Error::Invalid`] on `retry_policy.schedule` if the list is empty or an entry does
    /// not parse or is longer than [`MAX_RETRY_DELAY`]; the message names the entry.
    pub fn schedule<I, S>(items: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let delays = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let item = item.as_ref();
                parse_duration_inner(item)
                    .and_then(|d| {
                        if d > MAX_RETRY_DELAY {
                            Err(too_long())
                        } else {
                            Ok(d)
                        }
                    })
                    .map_err(|e| {
                        Error::invalid(
                            "retry_policy.schedule",
                            format!("entry [{i}] {item:?}: {e}"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        if delays.is_empty() {
            return Err(Error::invalid(
                "retry_policy.schedule",
                "needs at least one delay",
            ));
        }
        let max_attempts = u32::try_from(delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        Ok(Self::Schedule(Schedule {
            delays,
            max_attempts,
        }))
    }

    /// The same policy with `max_attempts` set to `n`.
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        match &mut self {
            Self::Exponential(b) => b.max_attempts = n,
            Self::Schedule(s) => s.max_attempts = n,
        }
        self
    }

    /// Total attempts allowed, including the first.
    pub fn max_attempts(&self) -> u32 {
        match self {
            Self::Exponential(b) => b.max_attempts,
            Self::Schedule(s) => s.max_attempts,
        }
    }

    /// The delay before the next attempt after `attempt` failed attempts (1-based; 0 is
    /// treated as 1).
    ///
    /// `jitter_sample` is a uniform random number in `[0, 1)` from the caller; values
    /// outside are clamped and NaN means no jitter. [`RetryPolicy::Schedule`] ignores it.
    /// The result is never above the backoff's `max` nor above [`MAX_RETRY_DELAY`], and
    /// this never panics, even for invalid policies.
    pub fn delay(&self, attempt: u32, jitter_sample: f64) -> Duration {
        let delay = match self {
            Self::Exponential(b) => b.delay(attempt, jitter_sample),
            Self::Schedule(s) => {
                let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
                s.delays
                    .get(index)
                    .or(s.delays.last())
                    .copied()
                    .unwrap_or(Duration::ZERO)
            }
        };
        delay.min(MAX_RETRY_DELAY)
    }

    /// What to do after a retryable failure, given the attempts made so far (including the
    /// one that just failed) and the server's `Retry-After`, if any.
    ///
    /// Gives up once `attempts_made >= max_attempts`; otherwise waits the longer of the
    /// policy delay and `retry_after`, the latter cut to [`MAX_RETRY_AFTER`].
    pub fn decide(
        &self,
        attempts_made: u32,
        retry_after: Option<Duration>,
        jitter_sample: f64,
    ) -> Decision {
        if attempts_made >= self.max_attempts() {
            return Decision::GiveUp;
        }
        let delay = self.delay(attempts_made, jitter_sample);
        let after = retry_after.map_or(delay, |r| delay.max(r.min(MAX_RETRY_AFTER)));
        Decision::Retry { after }
    }

    /// Checks the policy.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field: `retry_policy.initial` (zero),
    /// `retry_policy.max` (below `initial`, or above [`MAX_RETRY_DELAY`]),
    /// `retry_policy.multiplier` (below 1 or not finite), `retry_policy.jitter` (outside
    /// `[0, 1]`), `retry_policy.schedule` (empty, or a delay above [`MAX_RETRY_DELAY`]),
    /// `retry_policy.max_attempts` (zero).
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Exponential(b) => {
                if b.initial.is_zero() {
                    return Err(Error::invalid(
                        "retry_policy.initial",
                        "must be greater than zero",
                    ));
                }
                if b.max < b.initial {
                    return Err(Error::invalid(
                        "retry_policy.max",
                        format!(
                            "{} is less than initial {}",
                            format_duration(b.max),
                            format_duration(b.initial)
                        ),
                    ));
                }
                if b.max > MAX_RETRY_DELAY {
                    return Err(Error::invalid(
                        "retry_policy.max",
                        format!("{}: {}", format_duration(b.max), too_long()),
                    ));
                }
                if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
                    return Err(Error::invalid(
                        "retry_policy.multiplier",
                        format!(
                            "must be a finite number of at least 1, got {}",
                            b.multiplier
                        ),
                    ));
                }
                if !(0.0..=1.0).contains(&b.jitter) {
                    return Err(Error::invalid(
                        "retry_policy.jitter",
                        format!("must be between 0 and 1, got {}", b.jitter),
                    ));
                }
            }
            Self::Schedule(s) => {
                if s.delays.is_empty() {
                    return Err(Error::invalid(
                        "retry_policy.schedule",
                        "needs at least one delay",
                    ));
                }
                if let Some((i, d)) = s
                    .delays
                    .iter()
                    .enumerate()
                    .find(|(_, d)| **d > MAX_RETRY_DELAY)
                {
                    return Err(Error::invalid(
                        "retry_policy.schedule",
                        format!("entry [{i}] {}: {}", format_duration(*d), too_long()),
                    ));
                }
            }
        }
        if self.max_attempts() == 0 {
            return Err(Error::invalid(
                "retry_policy.max_attempts",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The message for a delay above [`MAX_RETRY_DELAY`].
fn too_long() -> String {
    format!(
        "longer than the maximum retry delay of {}",
        format_duration(MAX_RETRY_DELAY)
    )
}

/// What to do after a retryable failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this long.
    Retry {
        /// The wait before the next attempt.
        after: Duration,
    },
    /// No attempts left: the delivery has failed for good.
    GiveUp,
}

/// How the outcome of one delivery attempt is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// 2xx: delivered.
    Success,
    /// 408, 425, 429, 5xx, and every transport error (timeout, connection refused or
    /// reset, TLS or DNS failure): retry per the policy.
    Retry,
    /// Any other status (other 4xx, 1xx, 3xx: redirects are not followed): final failure
    /// of this delivery, no retry.
    Permanent,
    /// 410 Gone: final failure of this delivery, and the endpoint should be disabled.
    DisableEndpoint,
}

/// Classifies an HTTP response status. Transport errors have no status and are always
/// [`Verdict::Retry`].
pub fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Success,
        408 | 425 | 429 | 500..=599 => Verdict::Retry,
        410 => Verdict::DisableEndpoint,
        _ => Verdict::Permanent,
    }
}

/// Parses a `Retry-After` header value: whole seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, also the obsolete RFC 850 and asctime forms),
/// relative to `now`.
///
/// A date in the past gives `Some(Duration::ZERO)`; a number too large for `u64`
/// saturates; anything else gives `None`. Never panics.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = match DateTime::parse_from_rfc2822(value) {
        Ok(date) => date.with_timezone(&Utc),
        Err(_) => NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT")
            .or_else(|_| NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y"))
            .ok()?
            .and_utc(),
    };
    Some((date - now).to_std().unwrap_or(Duration::ZERO))
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Units from largest to smallest, in nanoseconds.
const UNITS: [(u128, &str); 7] = [
    (86_400 * NANOS_PER_SEC, "d"),
    (3_600 * NANOS_PER_SEC, "h"),
    (60 * NANOS_PER_SEC, "m"),
    (NANOS_PER_SEC, "s"),
    (1_000_000, "ms"),
    (1_000, "us"),
    (1, "ns"),
];

/// Parses a duration written as a whole number and a unit: `ns`, `us` (or `µs`), `ms`,
/// `s`, `m`, `h` or `d` (24 h), e.g. `"500ms"`, `"5s"`, `"2m"`, `"1d"`, `"0s"`. A bare
/// `"0"` is also accepted. Surrounding whitespace is ignored.
///
/// # Errors
/// [`Error::Invalid`] on `duration` for a missing number, a missing or unknown unit, or a
/// value that does not fit in a [`Duration`].
pub fn parse_duration(s: &str) -> Result<Duration> {
    parse_duration_inner(s).map_err(|e| Error::invalid("duration", format!("{s:?}: {e}")))
}

fn parse_duration_inner(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    if number.is_empty() {
        return Err("expected a whole number followed by a unit, e.g. \"5s\"".into());
    }
    let out_of_range = || "out of range".to_owned();
    let n: u128 = number.parse().map_err(|_| out_of_range())?;
    let unit_nanos = match unit {
        "" if n == 0 => 1,
        "" => return Err("missing unit (ns, us, ms, s, m, h or d)".into()),
        "µs" => 1_000,
        _ => UNITS
            .iter()
            .find(|(_, name)| *name == unit)
            .map(|(nanos, _)| *nanos)
            .ok_or_else(|| format!("unknown unit {unit:?} (expected ns, us, ms, s, m, h or d)"))?,
    };
    let total = n.checked_mul(unit_nanos).ok_or_else(out_of_range)?;
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| out_of_range())?;
    // The remainder is below 10^9, so it fits.
    let nanos = u32::try_from(total % NANOS_PER_SEC).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration in the largest unit that represents it exactly, e.g. `"5s"`,
/// `"250ms"`, `"2m"`, `"90s"`, `"1d"`; zero is `"0s"`. [`parse_duration`] reads it back
/// to the same value.
pub fn format_duration(d: Duration) -> String {
    let total = d.as_nanos();
    if total == 0 {
        return "0s".to_owned();
    }
    let (nanos, name) = UNITS
        .iter()
        .find(|(nanos, _)| total.is_multiple_of(*nanos))
        .copied()
        .unwrap_or((1, "ns"));
    format!("{}{name}", total / nanos)
}

/// Serde adapter for a [`Duration`] as a human string (see [`format_duration`]).
pub(crate) mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(D::Error::custom)
    }
}

/// Serde adapter for a list of [`Duration`]s as human strings.
pub(crate) mod serde_durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(crate) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| super::format_duration(*d)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .enumerate()
            .map(|(i, s)| {
                super::parse_duration(s)
                    .map_err(|e| D::Error::custom(format_args!("delays[{i}]: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn backoff(initial: Duration, max: Duration, multiplier: f64, jitter: f64) -> Backoff {
        Backoff {
            initial,
            max,
            multiplier,
            max_attempts: 10,
            jitter,
        }
    }

    fn invalid_field(r: Result<impl std::fmt::Debug>) -> &'static str {
        match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Error::Invalid, got {other:?}"),
        }
    }

    #[test]
    fn classify_each_listed_status() {
        for s in [200, 201, 204, 299] {
            assert_eq!(classify_status(s), Verdict::Success, "{s}");
        }
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(s), Verdict::Retry, "{s}");
        }
        assert_eq!(classify_status(410), Verdict::DisableEndpoint);
        for s in [
            100, 101, 301, 302, 307, 400, 401, 403, 404, 409, 413, 422, 0, 600,
        ] {
            assert_eq!(classify_status(s), Verdict::Permanent, "{s}");
        }
    }

    #[test]
    fn exponential_delays_double_and_cap() {
        let p = RetryPolicy::Exponential(backoff(secs(1), secs(10), 2.0, 0.0));
        let got: Vec<_> = (0..=6).map(|a| p.delay(a, 0.5)).collect();
        assert_eq!(got, [1, 1, 2, 4, 8, 10, 10].map(secs));
        assert_eq!(p.delay(u32::MAX, 0.99), secs(10));
    }

    #[test]
    fn jitter_bounds_and_clamping() {
        let p = RetryPolicy::Exponential(backoff(secs(10), secs(100), 2.0, 0.5));
        assert_eq!(p.delay(1, 0.0), secs(5));
        assert_eq!(p.delay(1, 0.5), secs(10));
        assert_eq!(p.delay(1, 1.0), secs(15));
        assert_eq!(p.delay(1, -3.0), secs(5));
        assert_eq!(p.delay(1, 7.0), secs(15));
        assert_eq!(p.delay(1, f64::NAN), secs(10));
        // At the cap, upward jitter is clamped to max.
        assert_eq!(p.delay(10, 1.0), secs(100));
        assert_eq!(p.delay(10, 0.0), secs(50));
    }

    #[test]
    fn schedule_repeats_last_delay() {
        let p = RetryPolicy::schedule(["5s", "30s", "2m"]).unwrap();
        assert_eq!(p.max_attempts(), 4);
        let got: Vec<_> = (1..=6).map(|a| p.delay(a, 0.9)).collect();
        assert_eq!(got, [5, 30, 120, 120, 120, 120].map(secs));
        let p = p.with_max_attempts(6);
        assert_eq!(p.max_attempts(), 6);
        assert_eq!(p.decide(5, None, 0.0), Decision::Retry { after: secs(120) });
        assert_eq!(p.decide(6, None, 0.0), Decision::GiveUp);
    }

    #[test]
    fn schedule_rejects_bad_entries() {
        let empty: [&str; 0] = [];
        assert_eq!(
            invalid_field(RetryPolicy::schedule(empty)),
            "retry_policy.schedule"
        );
        for bad in ["5x", "", "s", "-1s", "1.5s", "99999999999999999999999999d"] {
            let err = RetryPolicy::schedule(["1s", bad]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("retry_policy.schedule"), "{msg}");
            assert!(
                msg.contains("entry [1]") && msg.contains(&format!("{bad:?}")),
                "{msg}"
            );
        }
        let p = RetryPolicy::schedule(["0s", "500ms", "1d"]).unwrap();
        assert_eq!(p.delay(1, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, 0.0), secs(86_400));
    }

    #[test]
    fn decide_honours_max_attempts_and_retry_after() {
        let p = RetryPolicy::exponential(secs(1), secs(60), 3);
        let jitter_free = |d| match d {
            Decision::Retry { after } => after,
            Decision::GiveUp => panic!("gave up"),
        };
        assert_eq!(jitter_free(p.decide(1, None, 0.5)), secs(1));
        assert_eq!(jitter_free(p.decide(2, None, 0.5)), secs(2));
        assert_eq!(p.decide(3, None, 0.5), Decision::GiveUp);
        assert_eq!(p.decide(4, Some(secs(5)), 0.5), Decision::GiveUp);
        // Retry-After longer than the policy delay wins; shorter does not.
        assert_eq!(jitter_free(p.decide(1, Some(secs(30)), 0.5)), secs(30));
        assert_eq!(jitter_free(p.decide(2, Some(Duration::ZERO), 0.5)), secs(2));
        // Capped at MAX_RETRY_AFTER.
        assert_eq!(
            jitter_free(p.decide(1, Some(secs(10 * 86_400)), 0.5)),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_parsing() {
        let now = DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:30 GMT", now),
            Some(secs(150))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:10 2015", now),
            Some(secs(10))
        );
        assert_eq!(
            parse_retry_after("Tue, 20 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        for junk in ["", "-5", "1.5", "soon", "Wed, 99 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn validate_names_the_field() {
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(RetryPolicy::schedule(["5s"]).unwrap().validate().is_ok());
        let b = Backoff::default;
        let cases = [
            (
                Backoff {
                    initial: Duration::ZERO,
                    ..b()
                },
                "retry_policy.initial",
            ),
            (
                Backoff {
                    max: secs(1),
                    ..b()
                },
                "retry_policy.max",
            ),
            (
                Backoff {
                    multiplier: 0.5,
                    ..b()
                },
                "retry_policy.multiplier",
            ),
            (
                Backoff {
                    multiplier: f64::INFINITY,
                    ..b()
                },
                "retry_policy.multiplier",
            ),
            (
                Backoff {
                    multiplier: f64::NAN,
                    ..b()
                },
                "retry_policy.multiplier",
            ),
            (Backoff { jitter: 1.5, ..b() }, "retry_policy.jitter"),
            (
                Backoff {
                    jitter: f64::NAN,
                    ..b()
                },
                "retry_policy.jitter",
            ),
            (
                Backoff {
                    max_attempts: 0,
                    ..b()
                },
                "retry_policy.max_attempts",
            ),
        ];
        for (backoff, field) in cases {
            assert_eq!(
                invalid_field(RetryPolicy::Exponential(backoff).validate()),
                field
            );
        }
        let s = Schedule {
            delays: vec![],
            max_attempts: 3,
        };
        assert_eq!(
            invalid_field(RetryPolicy::Schedule(s).validate()),
            "retry_policy.schedule"
        );
        let p = RetryPolicy::schedule(["5s"]).unwrap().with_max_attempts(0);
        assert_eq!(invalid_field(p.validate()), "retry_policy.max_attempts");
    }

    #[test]
    fn json_round_trip() {
        let json = r#"{"kind":"schedule","delays":["5s","30s","2m"],"max_attempts":4}"#;
        let p: RetryPolicy = serde_json::from_str(json).unwrap();
        assert_eq!(p, RetryPolicy::schedule(["5s", "30s", "2m"]).unwrap());
        assert_eq!(serde_json::to_string(&p).unwrap(), json);

        let p = RetryPolicy::exponential(Duration::from_millis(250), secs(3600), 7);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"exponential","initial":"250ms","max":"1h","multiplier":2.0,"max_attempts":7,"jitter":0.2}"#
        );
        assert_eq!(serde_json::from_str::<RetryPolicy>(&json).unwrap(), p);

        // Missing backoff fields take defaults.
        let p: RetryPolicy =
            serde_json::from_str(r#"{"kind":"exponential","initial":"1s"}"#).unwrap();
        assert_eq!(
            p,
            RetryPolicy::Exponential(Backoff {
                initial: secs(1),
                ..Backoff::default()
            })
        );
    }

    #[test]
    fn json_errors_are_clear() {
        let err =
            serde_json::from_str::<RetryPolicy>(r#"{"kind":"exponential","initial":"5 parsecs"}"#)
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("\"5 parsecs\"") && err.contains("unknown unit"),
            "{err}"
        );
        let err = serde_json::from_str::<RetryPolicy>(
            r#"{"kind":"schedule","delays":["5s","x"],"max_attempts":3}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("delays[1]"), "{err}");
        let err = serde_json::from_str::<RetryPolicy>(r#"{"kind":"exponential","max_attemps":3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_attemps"), "{err}");
    }

    #[test]
    fn duration_format_examples() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (secs(5), "5s"),
            (secs(90), "90s"),
            (secs(120), "2m"),
            (secs(3600), "1h"),
            (secs(86_400 * 2), "2d"),
            (Duration::from_micros(1500), "1500us"),
            (Duration::new(1, 1), "1000000001ns"),
        ];
        for (d, s) in cases {
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(s).unwrap(), d);
        }
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("7µs").unwrap(), Duration::from_micros(7));
        assert_eq!(parse_duration(" 3m ").unwrap(), secs(180));
        assert_eq!(invalid_field(parse_duration("5")), "duration");
    }

    proptest! {
        #[test]
        fn backoff_delay_within_bounds(
            initial_ms in 0u64..10_000_000,
            max_ms in 0u64..100_000_000,
            multiplier in 1.0f64..10.0,
            jitter in 0.0f64..=1.0,
            attempt in prop_oneof![0u32..100, Just(u32::MAX), any::<u32>()],
            sample in 0.0f64..1.0,
        ) {
            let b = backoff(Duration::from_millis(initial_ms), Duration::from_millis(max_ms), multiplier, jitter);
            let base = b.base_delay(attempt);
            let d = RetryPolicy::Exponential(b.clone()).delay(attempt, sample);
            prop_assert!(d <= b.max);
            prop_assert!(base <= b.max);
            let slack = base.as_secs_f64() * jitter + 1e-9;
            prop_assert!(
                d == b.max || (d.as_secs_f64() - base.as_secs_f64()).abs() <= slack,
                "delay {d:?} base {base:?} jitter {jitter}"
            );
        }

        #[test]
        fn base_delay_non_decreasing(
            initial_ms in 1u64..10_000_000,
            extra_ms in 0u64..100_000_000,
            multiplier in 1.0f64..10.0,
            attempt in 0u32..2_000,
        ) {
            let b = backoff(Duration::from_millis(initial_ms), Duration::from_millis(initial_ms + extra_ms), multiplier, 0.0);
            prop_assert!(b.base_delay(attempt) <= b.base_delay(attempt + 1));
        }

        #[test]
        fn duration_round_trip(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }

        #[test]
        fn duration_round_trip_small(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }

        #[test]
        fn parsers_never_panic(s in ".{0,40}", digits in "[0-9]{0,45}[a-zµ]{0,3}") {
            let _ = parse_duration(&s);
            let _ = parse_duration(&digits);
            let _ = parse_retry_after(&s, DateTime::<Utc>::MAX_UTC);
            let _ = parse_retry_after(&digits, DateTime::<Utc>::MIN_UTC);
        }

        #[test]
        fn retry_after_dates_never_panic(
            day in "(Mon|Tue|Wed|Sun), ",
            date in 0u32..40,
            year in 0u32..300_000,
            hms in "[0-9]{1,2}:[0-9]{2}:[0-9]{2}",
        ) {
            let v = format!("{day}{date} Oct {year} {hms} GMT");
            let _ = parse_retry_after(&v, DateTime::<Utc>::MIN_UTC);
            let _ = parse_retry_after(&v, DateTime::<Utc>::MAX_UTC);
        }
    }
}
