//! Encoding of ids, times and script arguments; decoding of script replies.

use std::{collections::HashMap, fmt::Display, str::FromStr};

use chrono::{DateTime, Utc};
use deadpool_redis::redis::Value;
use webhook_core::{
    Attempt, Bytes, Delivery, DeliveryState, EndpointId, Error, Event, EventId, IdempotencyKey,
    Result, TenantId,
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
    serde_json::json!([tenant.map(TenantId::as_str), id.as_str()]).to_string()
}

/// The hash field naming a delivery: `[tenant, endpoint id, event id]` as JSON.
pub(crate) fn delivery_key(key: &IdempotencyKey) -> String {
    serde_json::json!([
        key.tenant.as_ref().map(TenantId::as_str),
        key.endpoint_id.as_str(),
        key.event_id.as_str()
    ])
    .to_string()
}

/// Arguments of a script call (after the prefix, which is always `ARGV[1]`).
#[derive(Default)]
pub(crate) struct Args(pub(crate) Vec<Vec<u8>>);

impl Args {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn bytes(mut self, value: &[u8]) -> Self {
        self.0.push(value.to_vec());
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

/// A hash as returned by `HGETALL`.
pub(crate) struct Fields(HashMap<String, Vec<u8>>);

impl Fields {
    pub(crate) fn parse(v: Value) -> Result<Self> {
        let items = array(v)?;
        let mut map = HashMap::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let Some(name) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| corrupt("odd number of hash fields"))?;
            map.insert(text(name)?, bytes(value)?);
        }
        Ok(Self(map))
    }

    fn text(&self, name: &str) -> Result<Option<&str>> {
        self.0
            .get(name)
            .map(|b| std::str::from_utf8(b).map_err(|_| corrupt(format!("{name} is not UTF-8"))))
            .transpose()
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.text(name)?
            .ok_or_else(|| corrupt(format!("stored record lacks {name}")))
    }

    fn opt_number<T: FromStr>(&self, name: &str) -> Result<Option<T>> {
        self.text(name)?
            .map(|s| {
                s.parse()
                    .map_err(|_| corrupt(format!("{name} is not a number: {s:?}")))
            })
            .transpose()
    }

    fn number<T: FromStr>(&self, name: &str) -> Result<T> {
        self.opt_number(name)?
            .ok_or_else(|| corrupt(format!("stored record lacks {name}")))
    }

    fn time(&self, name: &str) -> Result<DateTime<Utc>> {
        from_millis(self.number(name)?)
    }

    /// A delivery hash.
    pub(crate) fn delivery(&self) -> Result<Delivery> {
        let key = IdempotencyKey::new(
            EventId::from(self.required("event")?),
            EndpointId::from(self.required("endpoint")?),
            self.text("tenant")?.map(TenantId::from),
        );
        let at = self.time("at")?;
        let state = match self.required("state")? {
            "pending" => DeliveryState::Pending {
                next_attempt_at: at,
            },
            "in_flight" => DeliveryState::InFlight { lease_until: at },
            "delivered" => DeliveryState::Delivered { at },
            "dead" => DeliveryState::Dead { at },
            other => return Err(corrupt(format!("unknown delivery state {other:?}"))),
        };
        Ok(Delivery {
            key,
            state,
            attempts: self.number("attempts")?,
            last_status: self.opt_number("status")?,
            last_error: self.text("error")?.map(str::to_owned),
            priority: self.number("priority")?,
            created_at: self.time("created")?,
            updated_at: self.time("updated")?,
            lease_token: self.number("token")?,
        })
    }

    /// An event hash, payload included.
    pub(crate) fn event(mut self) -> Result<Event> {
        let payload = self
            .0
            .remove("payload")
            .ok_or_else(|| corrupt("stored event lacks its payload"))?;
        Ok(Event {
            id: EventId::from(self.required("id")?),
            tenant_id: self.text("tenant")?.map(TenantId::from),
            event_type: self.text("type")?.map(str::to_owned),
            payload: Bytes::from(payload),
            created_at: Some(self.time("created")?),
            priority: self.number("priority")?,
        })
    }
}

/// An attempts list (JSON per attempt).
pub(crate) fn attempts(v: Value) -> Result<Vec<Attempt>> {
    array(v)?
        .into_iter()
        .map(|item| {
            serde_json::from_slice(&bytes(item)?)
                .map_err(|e| corrupt(format!("stored attempt: {e}")))
        })
        .collect()
}
