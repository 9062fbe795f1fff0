//! Compact binary records for the hot path: events, deliveries and attempts.
//!
//! Every record starts with a format version byte. Integers are little-endian,
//! strings and byte strings are length-prefixed (u32), optional values carry a
//! 0/1 tag, and times are stored exactly (seconds + nanoseconds).

use chrono::{DateTime, Utc};
use webhook_core::{
    Attempt, Bytes, Delivery, DeliveryState, EndpointId, Error, Event, EventId, IdempotencyKey,
    Result, TenantId,
};

/// The format of every record this version writes.
const VERSION: u8 = 1;
/// Event flag: the payload is a zstd frame.
const COMPRESSED: u8 = 1;

/// A time as an exactly ordered key: seconds since the epoch and nanoseconds.
pub(crate) type Ts = (i64, u32);

/// `t` as a key.
pub(crate) fn ts(t: DateTime<Utc>) -> Ts {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

/// A key back as a time.
pub(crate) fn from_ts((secs, nanos): Ts) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp(secs, nanos).ok_or_else(|| corrupt("timestamp out of range"))
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(what.to_string())
}

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Records live in redb values, which are capped far below 4 GiB.
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn opt_u16(&mut self, v: Option<u16>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u16(v);
            }
        }
    }
    fn time(&mut self, t: DateTime<Utc>) {
        let (secs, nanos) = ts(t);
        self.i64(secs);
        self.u32(nanos);
    }
}

struct R<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> R<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Result<Self> {
        let mut r = Self { buf, what };
        let version = r.u8()?;
        if version != VERSION {
            return Err(corrupt(format_args!(
                "{what} record has unknown format version {version}"
            )));
        }
        Ok(r)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(corrupt(format_args!("{} record is truncated", self.what)));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| corrupt(format_args!("{} record holds invalid UTF-8", self.what)))
    }
    fn flag(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(format_args!(
                "{} record has bad tag {other}",
                self.what
            ))),
        }
    }
    fn opt_str(&mut self) -> Result<Option<&'a str>> {
        Ok(if self.flag()? {
            Some(self.str()?)
        } else {
            None
        })
    }
    fn opt_u16(&mut self) -> Result<Option<u16>> {
        Ok(if self.flag()? {
            Some(self.u16()?)
        } else {
            None
        })
    }
    fn time(&mut self) -> Result<DateTime<Utc>> {
        let secs = self.i64()?;
        let nanos = self.u32()?;
        from_ts((secs, nanos))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    fn end(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(corrupt(format_args!(
                "{} record has trailing bytes",
                self.what
            )))
        }
    }
}

/// The key of an event in its tenant.
pub(crate) fn event_key(tenant: Option<&TenantId>, id: &EventId) -> Vec<u8> {
    let mut w = W::with_capacity(16 + id.as_str().len());
    w.opt_str(tenant.map(TenantId::as_str));
    w.str(id.as_str());
    w.0
}

/// The key of a delivery.
pub(crate) fn delivery_key(key: &IdempotencyKey) -> Vec<u8> {
    let mut w = W::with_capacity(24 + key.endpoint_id.as_str().len() + key.event_id.as_str().len());
    w.opt_str(key.tenant.as_ref().map(TenantId::as_str));
    w.str(key.endpoint_id.as_str());
    w.str(key.event_id.as_str());
    w.0
}

/// An event record: header, then the payload as it is or as a zstd frame when it is
/// longer than `threshold` and compressing makes it smaller.
pub(crate) fn encode_event(
    event: &Event,
    created_at: DateTime<Utc>,
    threshold: usize,
    level: i32,
) -> Vec<u8> {
    let payload = &event.payload[..];
    let compressed = (payload.len() > threshold)
        .then(|| zstd::bulk::compress(payload, level).ok())
        .flatten()
        .filter(|c| c.len() < payload.len());
    let body: &[u8] = compressed.as_deref().unwrap_or(payload);
    let mut w = W::with_capacity(64 + event.id.as_str().len() + body.len());
    w.u8(VERSION);
    w.u8(if compressed.is_some() { COMPRESSED } else { 0 });
    w.opt_str(event.tenant_id.as_ref().map(TenantId::as_str));
    w.str(event.id.as_str());
    w.opt_str(event.event_type.as_deref());
    w.time(created_at);
    w.i16(event.priority);
    w.u64(payload.len() as u64);
    w.0.extend_from_slice(body);
    w.0
}

pub(crate) fn decode_event(buf: &[u8]) -> Result<Event> {
    let mut r = R::new(buf, "event")?;
    let flags = r.u8()?;
    let tenant_id = r.opt_str()?.map(TenantId::from);
    let id = EventId::from(r.str()?);
    let event_type = r.opt_str()?.map(str::to_owned);
    let created_at = r.time()?;
    let priority = r.i16()?;
    let len = r.u64()?;
    let body = r.rest();
    let payload = if flags & COMPRESSED != 0 {
        zstd::stream::decode_all(body).map_err(|e| corrupt(format_args!("event payload: {e}")))?
    } else {
        body.to_vec()
    };
    if payload.len() as u64 != len {
        return Err(corrupt("event payload has the wrong length"));
    }
    Ok(Event {
        id,
        tenant_id,
        event_type,
        payload: Bytes::from(payload),
        created_at: Some(created_at),
        priority,
    })
}

/// A delivery record: the delivery and the sequence number of its event.
pub(crate) fn encode_delivery(event_seq: u64, d: &Delivery) -> Vec<u8> {
    let mut w = W::with_capacity(
        96 + d.key.endpoint_id.as_str().len()
            + d.key.event_id.as_str().len()
            + d.last_error.as_ref().map_or(0, String::len),
    );
    w.u8(VERSION);
    w.u64(event_seq);
    w.opt_str(d.key.tenant.as_ref().map(TenantId::as_str));
    w.str(d.key.endpoint_id.as_str());
    w.str(d.key.event_id.as_str());
    let (tag, at) = match d.state {
        DeliveryState::Pending { next_attempt_at } => (0, next_attempt_at),
        DeliveryState::InFlight { lease_until } => (1, lease_until),
        DeliveryState::Delivered { at } => (2, at),
        DeliveryState::Dead { at } => (3, at),
    };
    w.u8(tag);
    w.time(at);
    w.u32(d.attempts);
    w.opt_u16(d.last_status);
    w.opt_str(d.last_error.as_deref());
    w.i16(d.priority);
    w.time(d.created_at);
    w.time(d.updated_at);
    w.u64(d.lease_token);
    w.0
}

pub(crate) fn decode_delivery(buf: &[u8]) -> Result<(u64, Delivery)> {
    let mut r = R::new(buf, "delivery")?;
    let event_seq = r.u64()?;
    let tenant = r.opt_str()?.map(TenantId::from);
    let endpoint_id = EndpointId::from(r.str()?);
    let event_id = EventId::from(r.str()?);
    let tag = r.u8()?;
    let at = r.time()?;
    let state = match tag {
        0 => DeliveryState::Pending {
            next_attempt_at: at,
        },
        1 => DeliveryState::InFlight { lease_until: at },
        2 => DeliveryState::Delivered { at },
        3 => DeliveryState::Dead { at },
        other => return Err(corrupt(format_args!("delivery state tag {other}"))),
    };
    let delivery = Delivery {
        key: IdempotencyKey::new(event_id, endpoint_id, tenant),
        state,
        attempts: r.u32()?,
        last_status: r.opt_u16()?,
        last_error: r.opt_str()?.map(str::to_owned),
        priority: r.i16()?,
        created_at: r.time()?,
        updated_at: r.time()?,
        lease_token: r.u64()?,
    };
    r.end()?;
    Ok((event_seq, delivery))
}

/// Only the tenant and endpoint of a delivery record, for filtering without a full decode.
pub(crate) fn delivery_owner(buf: &[u8]) -> Result<(Option<&str>, &str)> {
    let mut r = R::new(buf, "delivery")?;
    r.u64()?;
    let tenant = r.opt_str()?;
    let endpoint = r.str()?;
    Ok((tenant, endpoint))
}

/// Only the priority of an event record, without reading its payload.
pub(crate) fn event_priority(buf: &[u8]) -> Result<i16> {
    let mut r = R::new(buf, "event")?;
    r.u8()?;
    r.opt_str()?;
    r.str()?;
    r.opt_str()?;
    r.time()?;
    r.i16()
}

/// Only the priority of a delivery record, without a full decode.
pub(crate) fn delivery_priority(buf: &[u8]) -> Result<i16> {
    let mut r = R::new(buf, "delivery")?;
    r.u64()?;
    r.opt_str()?;
    r.str()?;
    r.str()?;
    r.u8()?;
    r.time()?;
    r.u32()?;
    r.opt_u16()?;
    r.opt_str()?;
    r.i16()
}

pub(crate) fn encode_attempt(a: &Attempt) -> Vec<u8> {
    let mut w = W::with_capacity(
        40 + a.error.as_ref().map_or(0, String::len)
            + a.response_excerpt.as_ref().map_or(0, String::len),
    );
    w.u8(VERSION);
    w.time(a.started_at);
    w.u64(a.duration_ms);
    w.opt_u16(a.status);
    w.opt_str(a.error.as_deref());
    w.opt_str(a.response_excerpt.as_deref());
    w.0
}

pub(crate) fn decode_attempt(buf: &[u8]) -> Result<Attempt> {
    let mut r = R::new(buf, "attempt")?;
    let attempt = Attempt {
        started_at: r.time()?,
        duration_ms: r.u64()?,
        status: r.opt_u16()?,
        error: r.opt_str()?.map(str::to_owned),
        response_excerpt: r.opt_str()?.map(str::to_owned),
    };
    r.end()?;
    Ok(attempt)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t(secs: i64, nanos: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, nanos).unwrap()
    }

    #[test]
    fn delivery_round_trips_exactly() {
        let key = IdempotencyKey::new("evt".into(), "ep".into(), Some("tenant".into()));
        let mut d = Delivery::new(key, -3, t(0, 123_456_789));
        let lease = d.claim(t(1, 1), Duration::from_millis(1500)).unwrap();
        let buf = encode_delivery(42, &d);
        assert_eq!(decode_delivery(&buf).unwrap(), (42, d.clone()));
        assert_eq!(delivery_owner(&buf).unwrap(), (Some("tenant"), "ep"));
        assert_eq!(delivery_priority(&buf).unwrap(), -3);
        let attempt = Attempt::failed(t(1, 2), Duration::from_millis(7), "refused");
        d.complete(
            &lease,
            &webhook_core::Completion::Dead {
                attempt: attempt.clone(),
            },
            t(2, 0),
        )
        .unwrap();
        assert_eq!(decode_delivery(&encode_delivery(1, &d)).unwrap().1, d);
        // With a last error (a string before the priority) too.
        assert_eq!(delivery_priority(&encode_delivery(1, &d)).unwrap(), -3);
        assert_eq!(decode_attempt(&encode_attempt(&attempt)).unwrap(), attempt);
        let ok = Attempt::response(t(3, 0), Duration::ZERO, 200, b"fine");
        assert_eq!(decode_attempt(&encode_attempt(&ok)).unwrap(), ok);
    }

    #[test]
    fn large_compressible_payloads_are_stored_compressed() {
        let payload = br#"{"user":"someone","action":"created"},"#.repeat(300);
        let event = Event::new("e", payload.clone()).with_event_type("user.created");
        let record = encode_event(&event, t(0, 0), 1024, 3);
        assert!(
            record.len() < payload.len() / 4,
            "{} bytes stored for {}",
            record.len(),
            payload.len()
        );
        let back = decode_event(&record).unwrap();
        assert_eq!(&back.payload[..], &payload[..]);
        assert_eq!(back.event_type.as_deref(), Some("user.created"));
        // Small payloads stay as they are.
        let small = Event::new("s", "tiny");
        let record = encode_event(&small, t(0, 0), 1024, 3);
        assert_eq!(record[1], 0, "not compressed");
        assert_eq!(&decode_event(&record).unwrap().payload[..], b"tiny");
    }

    #[test]
    fn incompressible_payloads_are_stored_raw() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let payload: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        let record = encode_event(&Event::new("r", payload.clone()), t(0, 0), 1024, 3);
        assert_eq!(record[1], 0, "compression did not pay, raw kept");
        assert_eq!(&decode_event(&record).unwrap().payload[..], &payload[..]);
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for buf in [&b""[..], &[9][..], &[1, 0, 7][..], &[1, 1, 0, 0][..]] {
            assert!(matches!(decode_event(buf), Err(Error::Corrupt(_))));
            assert!(matches!(decode_delivery(buf), Err(Error::Corrupt(_))));
            assert!(matches!(decode_attempt(buf), Err(Error::Corrupt(_))));
        }
    }

    #[test]
    fn keys_do_not_collide_across_tenants() {
        let none = event_key(None, &"e".into());
        let empty = event_key(Some(&"".into()), &"e".into());
        assert_ne!(none, empty);
        let a = delivery_key(&IdempotencyKey::new("b".into(), "a".into(), None));
        let b = delivery_key(&IdempotencyKey::new("".into(), "ab".into(), None));
        assert_ne!(a, b);
    }
}
