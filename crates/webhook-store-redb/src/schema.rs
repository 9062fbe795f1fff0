//! The redb tables, the mapping of redb errors, and lookups shared by readers and the
//! writer.

use chrono::{DateTime, Utc};
use redb::{ReadableTable, TableDefinition};
use webhook_core::{Attempt, Delivery, DeliveryRecord, Endpoint, EndpointId, Error, Result};

use crate::codec::{self, Ts};

/// The layout version of the tables, in [`META`] under [`FORMAT_KEY`]. Version 2 added
/// [`READY`] and [`PROMOTED`] (both start empty when a version 1 file is upgraded, which
/// is consistent: nothing has been promoted yet). Version 3 keeps [`UNFINISHED`] for
/// strict endpoints only (upgrading drops the entries of the others).
pub(crate) const FORMAT: u64 = 3;
/// The older layout versions this version opens, upgrading them in place.
pub(crate) const FORMAT_V1: u64 = 1;
pub(crate) const FORMAT_V2: u64 = 2;
pub(crate) const FORMAT_KEY: &str = "format";
pub(crate) const NEXT_SEQ_KEY: &str = "next_delivery_seq";
pub(crate) const NEXT_EVENT_KEY: &str = "next_event_seq";

/// Counters and the format version.
pub(crate) const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
/// Endpoint id -> endpoint as JSON.
pub(crate) const ENDPOINTS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("endpoints");
/// Event key (tenant, id) -> event sequence number.
pub(crate) const EVENT_IDS: TableDefinition<'static, &[u8], u64> =
    TableDefinition::new("event_ids");
/// Event sequence number -> event record, payload included (stored once per event).
pub(crate) const EVENTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("events");
/// Delivery sequence number -> delivery record.
pub(crate) const DELIVERIES: TableDefinition<'static, u64, &[u8]> =
    TableDefinition::new("deliveries");
/// Idempotency key -> delivery sequence number.
pub(crate) const DELIVERY_KEYS: TableDefinition<'static, &[u8], u64> =
    TableDefinition::new("delivery_keys");
/// (event, delivery): an event's deliveries in creation order.
pub(crate) const EVENT_DELIVERIES: TableDefinition<'static, (u64, u64), ()> =
    TableDefinition::new("event_deliveries");
/// (delivery, n) -> attempt record, oldest first.
pub(crate) const ATTEMPTS: TableDefinition<'static, (u64, u32), &[u8]> =
    TableDefinition::new("attempts");
/// (endpoint, delivery): every delivery of an endpoint.
pub(crate) const BY_ENDPOINT: TableDefinition<'static, (&str, u64), ()> =
    TableDefinition::new("by_endpoint");
/// (endpoint, delivery) -> claimable time: the unfinished deliveries of endpoints with
/// strict ordering, in dispatch order (a claim serves the first). Other endpoints have
/// no entries: the table is rebuilt from [`SCHEDULE`] for an endpoint that becomes
/// strict, and its entries dropped when it stops being strict.
pub(crate) const UNFINISHED: TableDefinition<'static, (&str, u64), Ts> =
    TableDefinition::new("unfinished");
/// (endpoint, claimable time, delivery): unfinished deliveries by when they are due.
pub(crate) const SCHEDULE: TableDefinition<'static, (&str, i64, u32, u64), ()> =
    TableDefinition::new("schedule");
/// (endpoint, priority rank, claimable time, delivery): the unfinished deliveries of an
/// endpoint whose claimable time is at or before its [`PROMOTED`] mark, in claim order
/// (highest priority first, see [`rank`], then by due time, then in creation order).
/// Every entry is also in [`SCHEDULE`], which stays the complete time-ordered index.
pub(crate) const READY: TableDefinition<'static, (&str, u16, i64, u32, u64), ()> =
    TableDefinition::new("ready");
/// Endpoint -> promotion mark: every [`SCHEDULE`] entry of the endpoint claimable at or
/// before the mark is in [`READY`] too, and no later one is. No entry: nothing promoted.
pub(crate) const PROMOTED: TableDefinition<'static, &str, Ts> = TableDefinition::new("promoted");
/// (time of death, delivery): the dead-letter queue, oldest first.
pub(crate) const DEAD: TableDefinition<'static, (i64, u32, u64), ()> = TableDefinition::new("dead");
/// (time of delivery, delivery): delivered work, for pruning.
pub(crate) const DELIVERED: TableDefinition<'static, (i64, u32, u64), ()> =
    TableDefinition::new("delivered");

/// `priority` as a [`READY`] key part that sorts the highest priority first.
pub(crate) fn rank(priority: i16) -> u16 {
    // Flipping the sign bit maps i16 onto u16 in order; inverting reverses it.
    !(u16::from_ne_bytes(priority.to_ne_bytes()) ^ 0x8000)
}

/// A redb failure as a store error: corruption is [`Error::Corrupt`], anything else
/// (I/O, locks, a closed database) is [`Error::Unavailable`].
pub(crate) fn storage(e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Corrupted(msg) => Error::Corrupt(format!("redb: {msg}")),
        redb::Error::UpgradeRequired(v) => Error::Corrupt(format!(
            "redb file format {v} needs an upgrade this version cannot do"
        )),
        other => Error::Unavailable(format!("redb: {other}")),
    }
}

/// A copy of a failure, for every operation of a failed batch.
pub(crate) fn copy_error(e: &Error) -> Error {
    match e {
        Error::Corrupt(msg) => Error::Corrupt(msg.clone()),
        Error::Unavailable(msg) => Error::Unavailable(msg.clone()),
        other => Error::Unavailable(other.to_string()),
    }
}

pub(crate) fn decode_endpoint(buf: &[u8]) -> Result<Endpoint> {
    serde_json::from_slice(buf).map_err(|e| codec::corrupt(format_args!("endpoint record: {e}")))
}

pub(crate) fn encode_endpoint(endpoint: &Endpoint) -> Result<Vec<u8>> {
    serde_json::to_vec(endpoint).map_err(|e| Error::invalid("endpoint", e.to_string()))
}

pub(crate) fn load_delivery(
    deliveries: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<Option<(u64, Delivery)>> {
    deliveries
        .get(seq)
        .map_err(storage)?
        .map(|raw| codec::decode_delivery(raw.value()))
        .transpose()
}

pub(crate) fn load_attempts(
    attempts: &impl ReadableTable<(u64, u32), &'static [u8]>,
    seq: u64,
) -> Result<Vec<Attempt>> {
    let mut out = Vec::new();
    for item in attempts
        .range((seq, 0)..=(seq, u32::MAX))
        .map_err(storage)?
    {
        let (_, raw) = item.map_err(storage)?;
        out.push(codec::decode_attempt(raw.value())?);
    }
    Ok(out)
}

pub(crate) fn load_record(
    deliveries: &impl ReadableTable<u64, &'static [u8]>,
    attempts: &impl ReadableTable<(u64, u32), &'static [u8]>,
    seq: u64,
) -> Result<Option<DeliveryRecord>> {
    let Some((_, delivery)) = load_delivery(deliveries, seq)? else {
        return Ok(None);
    };
    Ok(Some(DeliveryRecord {
        delivery,
        attempts: load_attempts(attempts, seq)?,
    }))
}

/// The earliest time `endpoint` may have claimable work: for strict ordering, when
/// its oldest unfinished delivery is claimable; otherwise its earliest schedule entry.
pub(crate) fn head(
    schedule: &impl ReadableTable<(&'static str, i64, u32, u64), ()>,
    unfinished: &impl ReadableTable<(&'static str, u64), Ts>,
    endpoint: &EndpointId,
    strict: bool,
) -> Result<Option<DateTime<Utc>>> {
    let id = endpoint.as_str();
    let at = if strict {
        let mut range = unfinished
            .range((id, 0)..=(id, u64::MAX))
            .map_err(storage)?;
        match range.next() {
            Some(item) => Some(item.map_err(storage)?.1.value()),
            None => None,
        }
    } else {
        let mut range = schedule
            .range((id, i64::MIN, 0, 0)..=(id, i64::MAX, u32::MAX, u64::MAX))
            .map_err(storage)?;
        match range.next() {
            Some(item) => {
                let (guard, _) = item.map_err(storage)?;
                let (_, secs, nanos, _) = guard.value();
                Some((secs, nanos))
            }
            None => None,
        }
    };
    at.map(codec::from_ts).transpose()
}

#[cfg(test)]
mod tests {
    use super::rank;

    #[test]
    fn rank_puts_higher_priorities_first() {
        let priorities = [i16::MAX, 5, 1, 0, -1, -300, i16::MIN];
        let ranks: Vec<u16> = priorities.iter().map(|&p| rank(p)).collect();
        assert!(ranks.is_sorted_by(|a, b| a < b), "{ranks:?}");
        assert_eq!(rank(i16::MAX), 0);
        assert_eq!(rank(i16::MIN), u16::MAX);
    }
}
