//! Route handlers.

pub(crate) mod dlq;
pub(crate) mod endpoints;
pub(crate) mod events;
pub(crate) mod limits;
pub(crate) mod ops;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use webhook_core::{Attempt, Delivery, DeliveryState};

/// Whether `id` is usable as an id in a URL path: 1 to 256 characters of
/// `A-Z a-z 0-9 - _ . : ~`.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:~".contains(&b))
}

pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A delivery's state and counters as JSON.
pub(crate) fn delivery_json(d: &Delivery) -> Value {
    let (next_attempt_at, lease_until, finished_at) = match d.state {
        DeliveryState::Pending { next_attempt_at } => (Some(time(next_attempt_at)), None, None),
        DeliveryState::InFlight { lease_until } => (None, Some(time(lease_until)), None),
        DeliveryState::Delivered { at } | DeliveryState::Dead { at } => {
            (None, None, Some(time(at)))
        }
    };
    json!({
        "event_id": d.key.event_id,
        "endpoint_id": d.key.endpoint_id,
        "tenant": d.key.tenant,
        "status": d.state.name(),
        "attempt_count": d.attempts,
        "last_status_code": d.last_status,
        "last_error": d.last_error,
        "next_attempt_at": next_attempt_at,
        "lease_until": lease_until,
        "finished_at": finished_at,
        "created_at": time(d.created_at),
        "updated_at": time(d.updated_at),
    })
}

pub(crate) fn attempt_json(a: &Attempt) -> Value {
    json!({
        "started_at": time(a.started_at),
        "duration_ms": a.duration_ms,
        "status": a.status,
        "error": a.error,
        "response_excerpt": a.response_excerpt,
    })
}
