//! Deliveries: one event to one endpoint, and the state machine every store keeps.
//!
//! ```text
//! pending(next_attempt_at) --claim--> in_flight(lease_until) --> delivered
//!        ^                                  |                 --> dead (the DLQ)
//!        +------- retry / defer / lease expiry ----------------+
//! dead --replay--> pending(now)
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, IdempotencyKey, Result};

/// Longest response excerpt kept in an attempt record, in bytes.
pub const MAX_EXCERPT_LEN: usize = 1024;

/// Where a delivery is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting; claimable from `next_attempt_at` on.
    Pending {
        /// When it may next be attempted.
        next_attempt_at: DateTime<Utc>,
    },
    /// Claimed by a worker until `lease_until`; claimable again after that.
    InFlight {
        /// When the lease expires.
        lease_until: DateTime<Utc>,
    },
    /// The endpoint answered 2xx.
    Delivered {
        /// When.
        at: DateTime<Utc>,
    },
    /// Given up on: in the dead-letter queue until replayed.
    Dead {
        /// When.
        at: DateTime<Utc>,
    },
}

impl DeliveryState {
    /// The state's name: `pending`, `in_flight`, `delivered` or `dead`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending { .. } => "pending",
            Self::InFlight { .. } => "in_flight",
            Self::Delivered { .. } => "delivered",
            Self::Dead { .. } => "dead",
        }
    }

    /// Delivered or dead.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Delivered { .. } | Self::Dead { .. })
    }

    /// When the delivery can next be claimed (`None` once final).
    pub fn claimable_at(&self) -> Option<DateTime<Utc>> {
        match *self {
            Self::Pending { next_attempt_at } => Some(next_attempt_at),
            Self::InFlight { lease_until } => Some(lease_until),
            Self::Delivered { .. } | Self::Dead { .. } => None,
        }
    }
}

/// One HTTP attempt and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the request started.
    pub started_at: DateTime<Utc>,
    /// How long until the response (or the error), in milliseconds.
    pub duration_ms: u64,
    /// The HTTP status, when a response came.
    pub status: Option<u16>,
    /// The transport error (timeout, connection refused, ...), when no response came,
    /// or why the delivery was given up.
    pub error: Option<String>,
    /// The start of the response body (at most [`MAX_EXCERPT_LEN`] bytes, lossy UTF-8).
    pub response_excerpt: Option<String>,
}

impl Attempt {
    /// An attempt that got a response.
    pub fn response(
        started_at: DateTime<Utc>,
        duration: Duration,
        status: u16,
        body: &[u8],
    ) -> Self {
        Self {
            started_at,
            duration_ms: millis(duration),
            status: Some(status),
            error: None,
            response_excerpt: (!body.is_empty()).then(|| excerpt(body)),
        }
    }

    /// An attempt that failed without a response.
    pub fn failed(started_at: DateTime<Utc>, duration: Duration, error: impl Into<String>) -> Self {
        Self {
            started_at,
            duration_ms: millis(duration),
            status: None,
            error: Some(error.into()),
            response_excerpt: None,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The first [`MAX_EXCERPT_LEN`] bytes of `body` as lossy UTF-8, cut on a char boundary.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_EXCERPT_LEN)]);
    let mut end = text.len().min(MAX_EXCERPT_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// One event to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Which event to which endpoint.
    pub key: IdempotencyKey,
    /// Where it is in its life.
    #[serde(flatten)]
    pub state: DeliveryState,
    /// HTTP attempts made (deferrals do not count).
    pub attempts: u32,
    /// Status of the last attempt, if it got a response.
    pub last_status: Option<u16>,
    /// Error of the last attempt, if it got none.
    pub last_error: Option<String>,
    /// Copied from the event: higher first within an endpoint.
    pub priority: i16,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The token of the current lease: it starts at the creation time in microseconds
    /// since the epoch and goes up by one per claim. So a delivery created again under
    /// the same key (its endpoint deleted and put again) does not hand out the tokens
    /// of the one before, which a worker may still hold a lease of.
    pub lease_token: u64,
}

/// Proof of a claim: only its holder can complete the delivery, and only while no
/// one else has claimed it since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The delivery.
    pub key: IdempotencyKey,
    /// [`Delivery::lease_token`] at the claim.
    pub token: u64,
    /// When the lease expires.
    pub until: DateTime<Utc>,
}

/// How a claimed delivery ends its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Completion {
    /// 2xx: delivered.
    Delivered {
        /// The successful attempt.
        attempt: Attempt,
    },
    /// A retryable failure: try again at `next_attempt_at`.
    Retry {
        /// The failed attempt.
        attempt: Attempt,
        /// When to try again.
        next_attempt_at: DateTime<Utc>,
    },
    /// A final failure or exhausted retries: to the dead-letter queue.
    Dead {
        /// The last attempt.
        attempt: Attempt,
    },
    /// Not attempted (rate limit, open circuit, shutdown): back to pending at `until`
    /// without spending an attempt.
    Defer {
        /// When it may be claimed again.
        until: DateTime<Utc>,
    },
}

impl Completion {
    /// The attempt this completion records, if one was made.
    pub fn attempt(&self) -> Option<&Attempt> {
        match self {
            Self::Delivered { attempt } | Self::Retry { attempt, .. } | Self::Dead { attempt } => {
                Some(attempt)
            }
            Self::Defer { .. } => None,
        }
    }
}

impl Delivery {
    /// A new pending delivery, due at `now`.
    pub fn new(key: IdempotencyKey, priority: i16, now: DateTime<Utc>) -> Self {
        Self {
            key,
            state: DeliveryState::Pending {
                next_attempt_at: now,
            },
            attempts: 0,
            last_status: None,
            last_error: None,
            priority,
            created_at: now,
            updated_at: now,
            lease_token: u64::try_from(now.timestamp_micros()).unwrap_or(0),
        }
    }

    /// Whether it can be claimed at `now`: pending and due, or in flight with an
    /// expired lease.
    pub fn is_claimable(&self, now: DateTime<Utc>) -> bool {
        self.state.claimable_at().is_some_and(|at| at <= now)
    }

    /// Claims it until `now + lease`.
    pub fn claim(&mut self, now: DateTime<Utc>, lease: Duration) -> Result<Lease> {
        if !self.is_claimable(now) {
            return Err(Error::invalid(
                "delivery",
                format!(
                    "{} is {} and cannot be claimed now",
                    self.key,
                    self.state.name()
                ),
            ));
        }
        // A lease too long to represent ends at the end of time rather than panicking.
        let until = chrono::Duration::from_std(lease)
            .ok()
            .and_then(|lease| now.checked_add_signed(lease))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        // A token never repeats (a repeated one could let an old lease's result land).
        self.lease_token = self.lease_token.checked_add(1).ok_or_else(|| {
            Error::invalid(
                "lease_token",
                format!("{} has used every lease token", self.key),
            )
        })?;
        self.state = DeliveryState::InFlight { lease_until: until };
        self.updated_at = now;
        Ok(Lease {
            key: self.key.clone(),
            token: self.lease_token,
            until,
        })
    }

    /// Whether `lease` is the current lease. An expired lease still holds until someone
    /// else claims the delivery: a late result is better than a duplicate.
    pub fn holds(&self, lease: &Lease) -> bool {
        matches!(self.state, DeliveryState::InFlight { .. }) && self.lease_token == lease.token
    }

    /// Applies `completion` under `lease`.
    pub fn complete(
        &mut self,
        lease: &Lease,
        completion: &Completion,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if !self.holds(lease) {
            return Err(Error::LeaseLost(self.key.to_string()));
        }
        if let Some(attempt) = completion.attempt() {
            // Saturates: a count that wrapped would restart the retry budget.
            self.attempts = self.attempts.saturating_add(1);
            self.last_status = attempt.status;
            self.last_error.clone_from(&attempt.error);
        }
        self.state = match *completion {
            Completion::Delivered { .. } => DeliveryState::Delivered { at: now },
            Completion::Retry {
                next_attempt_at, ..
            } => DeliveryState::Pending { next_attempt_at },
            Completion::Dead { .. } => DeliveryState::Dead { at: now },
            Completion::Defer { until } => DeliveryState::Pending {
                next_attempt_at: until,
            },
        };
        self.updated_at = now;
        Ok(())
    }

    /// Moves a dead delivery back to pending, due at `now`. Its attempt history stays;
    /// its attempt count restarts so it gets a full retry budget.
    pub fn replay(&mut self, now: DateTime<Utc>) -> Result<()> {
        if !matches!(self.state, DeliveryState::Dead { .. }) {
            return Err(Error::invalid(
                "delivery",
                format!(
                    "{} is {}, only dead deliveries can be replayed",
                    self.key,
                    self.state.name()
                ),
            ));
        }
        self.state = DeliveryState::Pending {
            next_attempt_at: now,
        };
        self.attempts = 0;
        self.updated_at = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn key() -> IdempotencyKey {
        IdempotencyKey::new("evt".into(), "ep".into(), None)
    }

    /// Completes `lease` on `d` with a 500 to retry at `next`.
    fn fail(d: &mut Delivery, lease: &Lease, now: DateTime<Utc>, next: DateTime<Utc>) {
        let failed = Attempt::response(now, Duration::from_millis(5), 500, b"oops");
        d.complete(
            lease,
            &Completion::Retry {
                attempt: failed,
                next_attempt_at: next,
            },
            now,
        )
        .unwrap();
    }

    #[test]
    fn counters_at_their_limits_neither_wrap_nor_panic() {
        let mut d = Delivery::new(key(), 0, t(0));
        d.attempts = u32::MAX;
        let lease = d.claim(t(0), Duration::from_secs(30)).unwrap();
        fail(&mut d, &lease, t(1), t(10));
        assert_eq!(d.attempts, u32::MAX, "the retry budget does not restart");
        d.lease_token = u64::MAX;
        assert!(d.claim(t(10), Duration::from_secs(30)).is_err());
        assert!(
            matches!(d.state, DeliveryState::Pending { .. }),
            "a refused claim changes nothing"
        );
    }

    #[test]
    fn lifecycle_retry_then_deliver() {
        let mut d = Delivery::new(key(), 0, t(0));
        let lease = d.claim(t(0), Duration::from_secs(30)).unwrap();
        assert!(
            d.claim(t(1), Duration::from_secs(30)).is_err(),
            "in flight is not claimable"
        );
        fail(&mut d, &lease, t(1), t(10));
        assert_eq!(d.attempts, 1);
        assert_eq!(d.last_status, Some(500));
        assert!(!d.is_claimable(t(9)));
        let lease = d.claim(t(10), Duration::from_secs(30)).unwrap();
        let ok = Attempt::response(t(10), Duration::from_millis(5), 200, b"");
        d.complete(&lease, &Completion::Delivered { attempt: ok }, t(11))
            .unwrap();
        assert_eq!(d.state, DeliveryState::Delivered { at: t(11) });
        assert_eq!(d.attempts, 2);
        assert!(d.claim(t(100), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn expired_lease_is_reclaimed_and_the_old_holder_loses() {
        let mut d = Delivery::new(key(), 0, t(0));
        let first = d.claim(t(0), Duration::from_secs(30)).unwrap();
        assert!(!d.is_claimable(t(29)));
        let second = d.claim(t(30), Duration::from_secs(30)).unwrap();
        let ok = Completion::Delivered {
            attempt: Attempt::response(t(0), Duration::ZERO, 200, b""),
        };
        assert!(matches!(
            d.complete(&first, &ok, t(31)),
            Err(Error::LeaseLost(_))
        ));
        d.complete(&second, &ok, t(31)).unwrap();
    }

    #[test]
    fn defer_spends_no_attempt_and_replay_restores_budget() {
        let mut d = Delivery::new(key(), 0, t(0));
        let lease = d.claim(t(0), Duration::from_secs(30)).unwrap();
        d.complete(&lease, &Completion::Defer { until: t(5) }, t(0))
            .unwrap();
        assert_eq!(d.attempts, 0);
        assert!(d.replay(t(1)).is_err(), "only dead deliveries replay");
        let lease = d.claim(t(5), Duration::from_secs(30)).unwrap();
        let dead = Completion::Dead {
            attempt: Attempt::failed(t(5), Duration::ZERO, "connection refused"),
        };
        d.complete(&lease, &dead, t(6)).unwrap();
        assert_eq!(d.last_error.as_deref(), Some("connection refused"));
        d.replay(t(7)).unwrap();
        assert_eq!(d.attempts, 0);
        assert!(d.is_claimable(t(7)));
    }

    #[test]
    fn excerpt_is_capped_on_a_char_boundary() {
        let body = "é".repeat(MAX_EXCERPT_LEN);
        let e = excerpt(body.as_bytes());
        assert!(e.len() <= MAX_EXCERPT_LEN);
        assert!(e.chars().all(|c| c == 'é'));
    }
}
