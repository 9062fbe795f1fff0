//! Rows to core types, and core values to column values.

use chrono::{DateTime, Utc};
use tokio_postgres::{Row, types::FromSql};
use webhook_core::{
    Attempt, Bytes, Delivery, DeliveryRecord, DeliveryState, Error, Event, IdempotencyKey, Result,
    TenantId,
};

use crate::error::corrupt;

/// The stored form of a tenant: `''` for none.
pub(crate) fn tenant_column(tenant: Option<&TenantId>) -> &str {
    tenant.map_or("", TenantId::as_str)
}

/// The tenant column as a tenant: `''` is none.
fn tenant_value(column: String) -> Option<TenantId> {
    (!column.is_empty()).then(|| TenantId::from(column))
}

/// Whether `tenant` can be stored: empty tenant ids are not (`''` means none).
pub(crate) fn storable_tenant(tenant: Option<&TenantId>) -> bool {
    tenant.is_none_or(|t| !t.is_empty())
}

/// Refuses text PostgreSQL cannot store (a NUL character).
pub(crate) fn check_text(field: &'static str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(field, "must not contain a NUL character"));
    }
    Ok(())
}

/// Text as PostgreSQL can store it: NUL characters become U+FFFD.
pub(crate) fn storable_text(value: &str) -> String {
    value.replace('\0', "\u{FFFD}")
}

/// Column `name` of `row`, or [`Error::Corrupt`].
pub(crate) fn get<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T> {
    row.try_get(name)
        .map_err(|e| corrupt(&format!("column {name}"), e))
}

fn u32_of(value: i32, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(what, format!("{value} is negative")))
}

fn u16_of(value: i32, what: &str) -> Result<u16> {
    u16::try_from(value).map_err(|_| corrupt(what, format!("{value} is not a u16")))
}

/// Reads a delivery (see `delivery_columns!` in `sql.rs`).
pub(crate) fn delivery(row: &Row) -> Result<Delivery> {
    let state: &str = get(row, "state")?;
    let claimable_at: Option<DateTime<Utc>> = get(row, "claimable_at")?;
    let finished_at: Option<DateTime<Utc>> = get(row, "finished_at")?;
    let missing = |column: &str| corrupt("delivery", format!("{state} without {column}"));
    let state = match state {
        "pending" => DeliveryState::Pending {
            next_attempt_at: claimable_at.ok_or_else(|| missing("claimable_at"))?,
        },
        "in_flight" => DeliveryState::InFlight {
            lease_until: claimable_at.ok_or_else(|| missing("claimable_at"))?,
        },
        "delivered" => DeliveryState::Delivered {
            at: finished_at.ok_or_else(|| missing("finished_at"))?,
        },
        "dead" => DeliveryState::Dead {
            at: finished_at.ok_or_else(|| missing("finished_at"))?,
        },
        other => return Err(corrupt("delivery", format!("unknown state {other:?}"))),
    };
    let key = IdempotencyKey::new(
        get::<String>(row, "event_id")?.into(),
        get::<String>(row, "endpoint_id")?.into(),
        tenant_value(get(row, "tenant")?),
    );
    let lease_token: i64 = get(row, "lease_token")?;
    Ok(Delivery {
        key,
        state,
        attempts: u32_of(get(row, "attempts")?, "attempts")?,
        last_status: get::<Option<i32>>(row, "last_status")?
            .map(|s| u16_of(s, "last_status"))
            .transpose()?,
        last_error: get(row, "last_error")?,
        priority: get(row, "priority")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        lease_token: u64::try_from(lease_token)
            .map_err(|_| corrupt("lease_token", format!("{lease_token} is negative")))?,
    })
}

/// Reads the attempt of a `LEFT JOIN attempts` row, if there is one.
pub(crate) fn attempt(row: &Row) -> Result<Option<Attempt>> {
    if get::<Option<i64>>(row, "attempt_id")?.is_none() {
        return Ok(None);
    }
    let duration_ms: i64 = get(row, "duration_ms")?;
    Ok(Some(Attempt {
        started_at: get(row, "started_at")?,
        duration_ms: u64::try_from(duration_ms)
            .map_err(|_| corrupt("duration_ms", format!("{duration_ms} is negative")))?,
        status: get::<Option<i32>>(row, "status")?
            .map(|s| u16_of(s, "status"))
            .transpose()?,
        error: get(row, "error")?,
        response_excerpt: get(row, "response_excerpt")?,
    }))
}

/// Groups rows of deliveries joined with their attempts (ordered by delivery, then
/// attempt) into records.
pub(crate) fn records(rows: &[Row]) -> Result<Vec<DeliveryRecord>> {
    let mut records: Vec<(i64, DeliveryRecord)> = Vec::new();
    for row in rows {
        let seq: i64 = get(row, "seq")?;
        if records.last().is_none_or(|(last, _)| *last != seq) {
            records.push((
                seq,
                DeliveryRecord {
                    delivery: delivery(row)?,
                    attempts: Vec::new(),
                },
            ));
        }
        if let Some(attempt) = attempt(row)? {
            let (_, record) = records.last_mut().expect("pushed above");
            record.attempts.push(attempt);
        }
    }
    Ok(records.into_iter().map(|(_, record)| record).collect())
}

/// Reads an event (see `event_columns!` in `sql.rs`).
pub(crate) fn event(row: &Row) -> Result<Event> {
    Ok(Event {
        id: get::<String>(row, "event_id")?.into(),
        tenant_id: tenant_value(get(row, "event_tenant")?),
        event_type: get(row, "event_type")?,
        payload: Bytes::from(get::<Vec<u8>>(row, "payload")?),
        created_at: Some(get(row, "event_created_at")?),
        priority: get(row, "priority")?,
    })
}

/// An endpoint from its stored JSON.
pub(crate) fn endpoint(row: &Row) -> Result<webhook_core::Endpoint> {
    let config: serde_json::Value = get(row, "config")?;
    serde_json::from_value(config).map_err(|e| corrupt("endpoint config", e))
}

/// A count or limit as a PostgreSQL `bigint`.
pub(crate) fn bigint(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `bigint` count as a `usize`.
pub(crate) fn count(n: i64) -> Result<usize> {
    usize::try_from(n).map_err(|_| corrupt("count", n))
}
