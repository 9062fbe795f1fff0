//! Encoding of ids, times and script arguments; decoding of script replies.

use std::{fmt::Display, str::FromStr};

use chrono::{DateTime, Utc};
use deadpool_redis::redis::Value;
use webhook_core::{
    Attempt, Bytes, Delivery, DeliveryRecord, DeliveryState, EndpointId, Error, Event, EventId,
    IdempotencyKey, Result, TenantId,
};

pub(crate) fn corrupt(message: impl Display) -> Error {
    Error::Corrupt(message.to_string())
}

/// Milliseconds since the epoch: the store's time precision.
pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("time {ms} out of range")))
}

/// The hash field naming an event: `[tenant, event id]` as JSON (unambiguous).
pub(crate) fn event_key(tenant: Option<&TenantId>, id: &EventId) -> String {
    // Strings and null only: serializing cannot fail.
    serde_json::to_string(&(tenant.map(TenantId::as_str), id.as_str())).unwrap_or_default()
}

/// The hash field naming a delivery: `[tenant, endpoint id, event id]` as JSON.
pub(crate) fn delivery_key(key: &IdempotencyKey) -> String {
    // Strings and null only: serializing cannot fail.
    serde_json::to_string(&(
        key.tenant.as_ref().map(TenantId::as_str),
        key.endpoint_id.as_str(),
        key.event_id.as_str(),
    ))
    .unwrap_or_default()
}

/// Arguments of a script call (after the prefix, which is always `ARGV[1]`).
#[derive(Clone, Default)]
pub(crate) struct Args(pub(crate) Vec<Vec<u8>>);

impl Args {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn bytes(mut self, value: &[u8]) -> Self {
        self.0.push(value.to_vec());
        self
    }

    pub(crate) fn owned(mut self, value: Vec<u8>) -> Self {
        self.0.push(value);
        self
    }

    pub(crate) fn str(self, value: &str) -> Self {
        self.bytes(value.as_bytes())
    }

    pub(crate) fn num(self, value: impl Display) -> Self {
        self.str(&value.to_string())
    }

    pub(crate) fn flag(self, value: bool) -> Self {
        self.str(if value { "1" } else { "0" })
    }

    /// A presence flag, then the value (empty when absent).
    pub(crate) fn opt(self, value: Option<&str>) -> Self {
        self.flag(value.is_some()).str(value.unwrap_or_default())
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) | Value::SimpleString(_) | Value::VerbatimString { .. } => "a string",
        Value::Array(_) | Value::Set(_) => "an array",
        _ => "an unexpected value",
    }
}

pub(crate) fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(corrupt(format!(
            "expected an array from redis, got {}",
            kind(&other)
        ))),
    }
}

pub(crate) fn bytes(v: Value) -> Result<Vec<u8>> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(corrupt(format!(
            "expected a string from redis, got {}",
            kind(&other)
        ))),
    }
}

pub(crate) fn text(v: Value) -> Result<String> {
    String::from_utf8(bytes(v)?).map_err(|_| corrupt("a stored string is not UTF-8"))
}

pub(crate) fn int(v: Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(i),
        other => text(other)?
            .parse()
            .map_err(|_| corrupt("expected an integer from redis")),
    }
}

/// `N` values of a reply array, checked for count.
pub(crate) fn tuple<const N: usize>(v: Value) -> Result<[Value; N]> {
    let items = array(v)?;
    let len = items.len();
    items
        .try_into()
        .map_err(|_| corrupt(format!("expected {N} values from redis, got {len}")))
}

// Records: a delivery or an event is one Redis string with a fixed-width head of
// ASCII decimal fields (so that the Lua scripts read and rewrite it with
// `string.sub`), then length-prefixed variable parts. `src/lua/common.lua` and the
// crate docs describe the same layout; positions below are 0-based.

/// Width of a time field (`%017d`: sign included, sorts nothing, parses both ways).
const TIME: usize = 17;
/// Width of a length field.
const LEN: usize = 10;

// Delivery record.
const D_STATE: usize = 0;
const D_AT: usize = 1;
const D_TOKEN: usize = D_AT + TIME;
const D_ATTEMPTS: usize = D_TOKEN + 16;
const D_UPDATED: usize = D_ATTEMPTS + 10;
const D_CREATED: usize = D_UPDATED + TIME;
const D_PRIORITY: usize = D_CREATED + TIME;
const D_ESEQ: usize = D_PRIORITY + 6;
const D_STATUS: usize = D_ESEQ + 16;
const D_HAS_ERROR: usize = D_STATUS + 6;
const D_ERROR_LEN: usize = D_HAS_ERROR + 1;

// Event record.
const E_CREATED: usize = 0;
const E_PRIORITY: usize = E_CREATED + TIME;
const E_KEY_LEN: usize = E_PRIORITY + 6;
const E_HAS_TYPE: usize = E_KEY_LEN + LEN;
const E_TYPE_LEN: usize = E_HAS_TYPE + 1;
const E_KEY: usize = E_TYPE_LEN + LEN;

/// A time field of a record.
pub(crate) fn time_field(t: DateTime<Utc>) -> String {
    format!("{:017}", millis(t))
}

/// A lease token as stored in a delivery record (16 digits; a longer token never
/// matches a stored one).
pub(crate) fn token_field(token: u64) -> String {
    format!("{token:016}")
}

/// The last-status field of a delivery record.
pub(crate) fn status_field(status: Option<u16>) -> String {
    status.map_or_else(|| "------".to_owned(), |s| format!("{s:06}"))
}

/// The error part of a delivery record: presence flag, length, bytes.
pub(crate) fn error_part(error: Option<&str>) -> String {
    match error {
        Some(e) => format!("1{:010}{e}", e.len()),
        None => "0".repeat(1 + LEN),
    }
}

/// One attempt as appended to a delivery record: length, then its JSON.
pub(crate) fn attempt_entry(attempt: &Attempt) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(attempt).map_err(|e| Error::invalid("attempt", e.to_string()))?;
    let mut out = format!("{:010}", json.len()).into_bytes();
    out.extend_from_slice(&json);
    Ok(out)
}

/// The event record of `event`, stored as is by the enqueue script.
pub(crate) fn event_record(event: &Event, ekey: &str, now: DateTime<Utc>) -> Vec<u8> {
    let kind = event.event_type.as_deref();
    let mut out = Vec::with_capacity(E_KEY + ekey.len() + event.payload.len() + 32);
    out.extend_from_slice(time_field(event.created_at.unwrap_or(now)).as_bytes());
    out.extend_from_slice(format!("{:06}", event.priority).as_bytes());
    out.extend_from_slice(format!("{:010}", ekey.len()).as_bytes());
    out.extend_from_slice(if kind.is_some() { b"1" } else { b"0" });
    out.extend_from_slice(format!("{:010}", kind.map_or(0, str::len)).as_bytes());
    out.extend_from_slice(ekey.as_bytes());
    out.extend_from_slice(kind.unwrap_or_default().as_bytes());
    out.extend_from_slice(&event.payload);
    out
}

/// Reads a record from left to right.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8]> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| corrupt(format!("stored {} record is truncated", self.what)))
    }

    fn text(&self, at: usize, len: usize) -> Result<&'a str> {
        std::str::from_utf8(self.slice(at, len)?)
            .map_err(|_| corrupt(format!("stored {} record is not UTF-8", self.what)))
    }

    fn number<T: FromStr>(&self, at: usize, len: usize) -> Result<T> {
        let s = self.text(at, len)?;
        s.parse().map_err(|_| {
            corrupt(format!(
                "stored {} record: {s:?} is not a number",
                self.what
            ))
        })
    }

    fn time(&self, at: usize) -> Result<DateTime<Utc>> {
        from_millis(self.number(at, TIME)?)
    }

    /// A length field at `at`, then that many bytes: the bytes and where they end.
    fn part(&self, at: usize) -> Result<(&'a [u8], usize)> {
        let len: usize = self.number(at, LEN)?;
        Ok((self.slice(at + LEN, len)?, at + LEN + len))
    }
}

/// The tenant, endpoint id and event id in a stored idempotency key.
type StoredKey = (Option<String>, String, String);

/// A delivery record: the delivery, and where its attempts start.
fn delivery_at(bytes: &[u8]) -> Result<(Delivery, usize)> {
    let r = Reader {
        bytes,
        what: "delivery",
    };
    let at = r.time(D_AT)?;
    let state = match r.slice(D_STATE, 1)? {
        b"p" => DeliveryState::Pending {
            next_attempt_at: at,
        },
        b"f" => DeliveryState::InFlight { lease_until: at },
        b"d" => DeliveryState::Delivered { at },
        b"x" => DeliveryState::Dead { at },
        other => {
            return Err(corrupt(format!(
                "unknown delivery state {:?}",
                String::from_utf8_lossy(other)
            )));
        }
    };
    let status = r.text(D_STATUS, 6)?;
    let last_status = if status == "------" {
        None
    } else {
        Some(r.number(D_STATUS, 6)?)
    };
    let (error, key_at) = r.part(D_ERROR_LEN)?;
    let last_error = match r.slice(D_HAS_ERROR, 1)? {
        b"1" => Some(
            std::str::from_utf8(error)
                .map_err(|_| corrupt("a stored error is not UTF-8"))?
                .to_owned(),
        ),
        _ => None,
    };
    let (key, end) = r.part(key_at)?;
    let (tenant, endpoint, event): StoredKey =
        serde_json::from_slice(key).map_err(|e| corrupt(format!("stored delivery key: {e}")))?;
    let delivery = Delivery {
        key: IdempotencyKey::new(
            EventId::from(event),
            EndpointId::from(endpoint),
            tenant.map(TenantId::from),
        ),
        state,
        attempts: r.number(D_ATTEMPTS, 10)?,
        last_status,
        last_error,
        priority: r.number(D_PRIORITY, 6)?,
        created_at: r.time(D_CREATED)?,
        updated_at: r.time(D_UPDATED)?,
        lease_token: r.number(D_TOKEN, 16)?,
    };
    Ok((delivery, end))
}

/// A delivery record, without its attempts.
pub(crate) fn delivery(v: Value) -> Result<Delivery> {
    Ok(delivery_at(&bytes(v)?)?.0)
}

/// A delivery record with its attempts.
pub(crate) fn delivery_record(v: Value) -> Result<DeliveryRecord> {
    let bytes = bytes(v)?;
    let (delivery, mut at) = delivery_at(&bytes)?;
    let r = Reader {
        bytes: &bytes,
        what: "delivery",
    };
    let mut attempts = Vec::new();
    while at < bytes.len() {
        let (json, end) = r.part(at)?;
        attempts.push(
            serde_json::from_slice(json).map_err(|e| corrupt(format!("stored attempt: {e}")))?,
        );
        at = end;
    }
    Ok(DeliveryRecord { delivery, attempts })
}

/// An event record, payload included (shared, not copied).
pub(crate) fn event(v: Value) -> Result<Event> {
    let record = Bytes::from(bytes(v)?);
    let r = Reader {
        bytes: &record,
        what: "event",
    };
    let key_len: usize = r.number(E_KEY_LEN, LEN)?;
    let key = r.slice(E_KEY, key_len)?;
    let type_at = E_KEY + key_len;
    let type_len: usize = r.number(E_TYPE_LEN, LEN)?;
    let kind = r.text(type_at, type_len)?;
    let (tenant, id): (Option<String>, String) =
        serde_json::from_slice(key).map_err(|e| corrupt(format!("stored event key: {e}")))?;
    let event_type = match r.slice(E_HAS_TYPE, 1)? {
        b"1" => Some(kind.to_owned()),
        _ => None,
    };
    let created_at = Some(r.time(E_CREATED)?);
    let priority = r.number(E_PRIORITY, 6)?;
    let payload = record.slice(type_at + type_len..);
    Ok(Event {
        id: EventId::from(id),
        tenant_id: tenant.map(TenantId::from),
        event_type,
        payload,
        created_at,
        priority,
    })
}
