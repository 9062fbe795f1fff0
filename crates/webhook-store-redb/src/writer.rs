//! The writer thread: every change goes through it, batched into group commits.
//!
//! Callers send a job (a re-runnable closure over the write transaction and a
//! oneshot for the reply). The thread takes every job waiting in the channel, runs
//! them in order in one write transaction, commits once (fsync), and only then
//! replies. A job that fails with a storage error may have written part of its
//! changes, so the transaction is aborted and the other jobs run again without it.
//!
//! The thread also owns the claim index: per enabled endpoint, the earliest time it
//! may have claimable work, so a claim only visits endpoints with due work. It is
//! rebuilt from the tables at open and whenever a transaction is aborted.
//!
//! Within an endpoint, due deliveries are claimed by priority, then due time, then
//! creation order. `schedule` orders them by time only, so a claim first promotes
//! what has come due since the endpoint's promotion mark (`promoted`) from `schedule`
//! into `ready`, which is ordered for claiming, then takes from the front of `ready`.
//! Each delivery is promoted once per claimable state, so a claim costs what it
//! promotes and takes, not the size of the backlog.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    ops::Bound,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering as Atomic},
        mpsc,
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;
use webhook_core::{
    ClaimRequest, Completed, Delivery, DeliveryState, Endpoint, EndpointId, Enqueued, Error,
    EventId, Finished, IdempotencyKey, Ordering, Result, TenantId,
};

use crate::{
    codec::{self, Ts, ts},
    schema::{self, *},
};

/// Most jobs in one transaction.
const MAX_BATCH: usize = 1024;
/// Most deliveries one prune transaction removes, so pruning never stalls the writer.
pub(crate) const PRUNE_CHUNK: usize = 2048;
/// Most deliveries one step of deleting an endpoint removes.
pub(crate) const DELETE_CHUNK: usize = 2048;

/// Where a deletion stands after one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeleteStep {
    /// There is no such endpoint (nor a deletion of it under way).
    Missing,
    /// Deliveries are left: take another step.
    More,
    /// The endpoint and its deliveries are gone.
    Done,
}

/// The `meta` key marking a deletion of endpoint `id` begun and not ended.
fn deleting_key(id: &str) -> String {
    format!("{DELETING_PREFIX}{id}")
}

const DELETING_PREFIX: &str = "deleting:";

/// The endpoints whose deletion began and did not end (their process stopped).
pub(crate) fn unfinished_deletions(db: &Database) -> Result<Vec<EndpointId>> {
    let txn = db.begin_read().map_err(storage)?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(storage(e)),
    };
    let mut ids = Vec::new();
    for item in meta.range(DELETING_PREFIX..).map_err(storage)? {
        let (key, _) = item.map_err(storage)?;
        match key.value().strip_prefix(DELETING_PREFIX) {
            Some(id) => ids.push(EndpointId::from(id)),
            None => break,
        }
    }
    Ok(ids)
}

/// Takes deletion steps for each of `ids` until they are done or `stop` is dropped
/// (on a thread of its own: it waits for the writer). What is left is taken up again
/// at the next open.
pub(crate) fn finish_deletions(
    stop: &mpsc::Receiver<()>,
    jobs: &mpsc::Sender<Job>,
    ids: Vec<EndpointId>,
) {
    for id in ids {
        loop {
            if !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                return;
            }
            let id = id.clone();
            let (job, reply) = job(move |ctx| ctx.delete_endpoint_step(&id, false), true);
            if jobs.send(job).is_err() {
                return;
            }
            // A failed step is taken again by the next open, put or delete of the id.
            if !matches!(reply.blocking_recv(), Ok(Ok(DeleteStep::More))) {
                break;
            }
        }
    }
}

/// Counters for tests and monitoring.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) commits: AtomicU64,
    pub(crate) operations: AtomicU64,
    pub(crate) pruned: AtomicU64,
}

/// A write operation waiting for its batch.
pub(crate) trait WriteOp: Send {
    /// Runs the operation in the batch's transaction. `false` when it failed in a way
    /// that may have left part of its writes behind: the batch must be aborted.
    fn apply(&mut self, ctx: &mut Ctx<'_, '_>) -> bool;
    /// Replies: with the operation's own result, or with `failure` when the batch
    /// could not be committed.
    fn finish(self: Box<Self>, failure: Option<&Error>);
    /// Whether the caller's promise needs this write on disk when it returns.
    fn durable(&self) -> bool;
}

pub(crate) type Job = Box<dyn WriteOp>;

struct Op<T, F> {
    run: F,
    durable: bool,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> WriteOp for Op<T, F>
where
    T: Send,
    F: FnMut(&mut Ctx<'_, '_>) -> Result<T> + Send,
{
    fn apply(&mut self, ctx: &mut Ctx<'_, '_>) -> bool {
        let result = catch_unwind(AssertUnwindSafe(|| (self.run)(ctx))).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::Unavailable(format!(
                "write operation panicked: {message}"
            )))
        });
        let fatal = matches!(result, Err(Error::Unavailable(_) | Error::Corrupt(_)));
        self.result = Some(result);
        !fatal
    }

    fn finish(self: Box<Self>, failure: Option<&Error>) {
        let result = match failure {
            Some(e) => Err(schema::copy_error(e)),
            None => self
                .result
                .unwrap_or_else(|| Err(Error::Unavailable("operation was not run".into()))),
        };
        // The caller may have given up waiting; that is fine.
        let _ = self.reply.send(result);
    }

    fn durable(&self) -> bool {
        self.durable
    }
}

/// A job running `run` in a write transaction, and where its reply arrives. A
/// `durable` job is on disk when its reply arrives; the others ride along and reach
/// the disk with the next durable commit (losing them in a crash only repeats work:
/// a claim or a result is redone, never an acknowledged event lost).
pub(crate) fn job<T, F>(run: F, durable: bool) -> (Job, oneshot::Receiver<Result<T>>)
where
    T: Send + 'static,
    F: FnMut(&mut Ctx<'_, '_>) -> Result<T> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let op = Op {
        run,
        durable,
        result: None,
        reply,
    };
    (Box::new(op), rx)
}

/// Creates the tables of a new file, or checks the format of an existing one.
pub(crate) fn init(db: &Database) -> Result<()> {
    let txn = db.begin_write().map_err(schema::storage)?;
    {
        let mut tables = Tables::open(&txn)?;
        let format = tables
            .meta
            .get(FORMAT_KEY)
            .map_err(storage)?
            .map(|g| g.value());
        match format {
            Some(FORMAT) => {}
            // Version 2 only added `ready` and `promoted`, empty here (`Tables::open`
            // just created them): nothing promoted yet is a consistent state. Version 3
            // keeps `unfinished` for strict endpoints only.
            Some(FORMAT_V1 | FORMAT_V2) => {
                let mut relaxed = Vec::new();
                for item in tables.endpoints.iter().map_err(storage)? {
                    let (_, raw) = item.map_err(storage)?;
                    let endpoint = schema::decode_endpoint(raw.value())?;
                    if endpoint.ordering != Ordering::Strict {
                        relaxed.push(endpoint.id);
                    }
                }
                for id in relaxed {
                    tables
                        .unfinished
                        .retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)
                        .map_err(storage)?;
                }
                tables.meta.insert(FORMAT_KEY, FORMAT).map_err(storage)?;
            }
            Some(other) => {
                return Err(Error::Corrupt(format!(
                    "file has table layout {other}, this version reads {FORMAT}"
                )));
            }
            None => {
                tables.meta.insert(FORMAT_KEY, FORMAT).map_err(storage)?;
            }
        }
    }
    txn.commit().map_err(storage)
}

/// Where the claim index stands for one endpoint.
#[derive(Debug)]
struct EndpointInfo {
    tenant: Option<TenantId>,
    enabled: bool,
    strict: bool,
    /// The earliest time it may have claimable work.
    head: Option<DateTime<Utc>>,
}

/// The in-memory claim index, owned by the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Index {
    endpoints: HashMap<EndpointId, EndpointInfo>,
    /// Enabled endpoints that have unfinished work, by when it may be due.
    due: BTreeSet<(DateTime<Utc>, EndpointId)>,
    /// The endpoint served last, so the next claim starts after it.
    cursor: Option<EndpointId>,
    /// Each endpoint's promotion mark (the `promoted` table), by endpoint id.
    promoted: HashMap<String, Ts>,
    /// The endpoints with strict ordering: only their deliveries are in `unfinished`.
    strict: HashSet<String>,
    next_seq: u64,
    next_event: u64,
}

impl Index {
    /// Builds the index from the committed tables: O(endpoints), not O(deliveries).
    pub(crate) fn load(db: &Database) -> Result<Self> {
        let txn = db.begin_read().map_err(storage)?;
        let open = |e: redb::TableError| storage(e);
        let meta = txn.open_table(META).map_err(open)?;
        let endpoints = txn.open_table(ENDPOINTS).map_err(open)?;
        let schedule = txn.open_table(SCHEDULE).map_err(open)?;
        let unfinished = txn.open_table(UNFINISHED).map_err(open)?;
        let promoted = txn.open_table(PROMOTED).map_err(open)?;
        let counter = |key: &str| -> Result<u64> {
            Ok(meta.get(key).map_err(storage)?.map_or(0, |g| g.value()))
        };
        let mut index = Self {
            next_seq: counter(NEXT_SEQ_KEY)?,
            next_event: counter(NEXT_EVENT_KEY)?,
            ..Self::default()
        };
        for item in endpoints.iter().map_err(storage)? {
            let (_, raw) = item.map_err(storage)?;
            let endpoint = schema::decode_endpoint(raw.value())?;
            let strict = endpoint.ordering == Ordering::Strict;
            let head = schema::head(&schedule, &unfinished, &endpoint.id, strict)?;
            index.set_endpoint(&endpoint, head);
        }
        for item in promoted.iter().map_err(storage)? {
            let (id, mark) = item.map_err(storage)?;
            index.promoted.insert(id.value().to_owned(), mark.value());
        }
        Ok(index)
    }

    fn set_endpoint(&mut self, endpoint: &Endpoint, head: Option<DateTime<Utc>>) {
        self.remove_endpoint(&endpoint.id);
        let info = EndpointInfo {
            tenant: endpoint.tenant_id.clone(),
            enabled: endpoint.enabled,
            strict: endpoint.ordering == Ordering::Strict,
            head,
        };
        if info.enabled
            && let Some(at) = head
        {
            self.due.insert((at, endpoint.id.clone()));
        }
        if info.strict {
            self.strict.insert(endpoint.id.as_str().to_owned());
        } else {
            self.strict.remove(endpoint.id.as_str());
        }
        self.endpoints.insert(endpoint.id.clone(), info);
    }

    fn remove_endpoint(&mut self, id: &EndpointId) {
        if let Some(info) = self.endpoints.remove(id)
            && let Some(at) = info.head
        {
            self.due.remove(&(at, id.clone()));
        }
    }

    fn set_head(&mut self, id: &EndpointId, head: Option<DateTime<Utc>>) {
        let Some(info) = self.endpoints.get_mut(id) else {
            return;
        };
        if info.head == head {
            return;
        }
        if let Some(old) = info.head {
            self.due.remove(&(old, id.clone()));
        }
        info.head = head;
        if info.enabled
            && let Some(at) = head
        {
            self.due.insert((at, id.clone()));
        }
    }

    /// Whether a delivery of `endpoint` claimable at `at` belongs in `ready`.
    fn is_promoted(&self, endpoint: &str, at: Ts) -> bool {
        self.promoted.get(endpoint).is_some_and(|mark| at <= *mark)
    }
}

type Bytes = &'static [u8];

/// Every table, open in one write transaction.
pub(crate) struct Tables<'t> {
    meta: Table<'t, &'static str, u64>,
    endpoints: Table<'t, &'static str, Bytes>,
    event_ids: Table<'t, Bytes, u64>,
    events: Table<'t, u64, Bytes>,
    deliveries: Table<'t, u64, Bytes>,
    delivery_keys: Table<'t, Bytes, u64>,
    event_deliveries: Table<'t, (u64, u64), ()>,
    attempts: Table<'t, (u64, u32), Bytes>,
    by_endpoint: Table<'t, (&'static str, u64), ()>,
    unfinished: Table<'t, (&'static str, u64), Ts>,
    schedule: Table<'t, (&'static str, i64, u32, u64), ()>,
    ready: Table<'t, (&'static str, u16, i64, u32, u64), ()>,
    promoted: Table<'t, &'static str, Ts>,
    dead: Table<'t, (i64, u32, u64), ()>,
    delivered: Table<'t, (i64, u32, u64), ()>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        let open = |e: redb::TableError| storage(e);
        Ok(Self {
            meta: txn.open_table(META).map_err(open)?,
            endpoints: txn.open_table(ENDPOINTS).map_err(open)?,
            event_ids: txn.open_table(EVENT_IDS).map_err(open)?,
            events: txn.open_table(EVENTS).map_err(open)?,
            deliveries: txn.open_table(DELIVERIES).map_err(open)?,
            delivery_keys: txn.open_table(DELIVERY_KEYS).map_err(open)?,
            event_deliveries: txn.open_table(EVENT_DELIVERIES).map_err(open)?,
            attempts: txn.open_table(ATTEMPTS).map_err(open)?,
            by_endpoint: txn.open_table(BY_ENDPOINT).map_err(open)?,
            unfinished: txn.open_table(UNFINISHED).map_err(open)?,
            schedule: txn.open_table(SCHEDULE).map_err(open)?,
            ready: txn.open_table(READY).map_err(open)?,
            promoted: txn.open_table(PROMOTED).map_err(open)?,
            dead: txn.open_table(DEAD).map_err(open)?,
            delivered: txn.open_table(DELIVERED).map_err(open)?,
        })
    }
}

/// What a job sees: the batch's tables and the claim index.
pub(crate) struct Ctx<'t, 'i> {
    t: Tables<'t>,
    index: &'i mut Index,
}

/// An event to store, encoded by the caller.
pub(crate) struct NewEvent {
    pub(crate) key: Vec<u8>,
    pub(crate) tenant: Option<TenantId>,
    pub(crate) id: EventId,
    pub(crate) priority: i16,
    pub(crate) record: Vec<u8>,
}

/// Claimed deliveries with their event records, decoded by the caller.
pub(crate) struct RawClaims {
    pub(crate) deliveries: Vec<(u64, Delivery)>,
    pub(crate) events: HashMap<u64, Vec<u8>>,
}

impl Ctx<'_, '_> {
    /// Puts `endpoint`; `false`, having written nothing, while a deletion of its id is
    /// under way (the caller finishes it and puts again, so that the new endpoint
    /// starts without the old one's deliveries).
    pub(crate) fn put_endpoint(&mut self, endpoint: &Endpoint, json: &[u8]) -> Result<bool> {
        let mark = deleting_key(endpoint.id.as_str());
        if self.t.meta.get(mark.as_str()).map_err(storage)?.is_some() {
            return Ok(false);
        }
        self.t
            .endpoints
            .insert(endpoint.id.as_str(), json)
            .map_err(storage)?;
        let id = endpoint.id.as_str();
        let strict = endpoint.ordering == Ordering::Strict;
        if strict && !self.index.strict.contains(id) {
            // Becomes strict: its unfinished deliveries are exactly its `schedule`
            // entries, with the same claimable times.
            let mut entries = Vec::new();
            let range = (id, i64::MIN, 0, 0)..=(id, i64::MAX, u32::MAX, u64::MAX);
            for item in self.t.schedule.range(range).map_err(storage)? {
                let (_, secs, nanos, seq) = item.map_err(storage)?.0.value();
                entries.push((seq, (secs, nanos)));
            }
            for (seq, at) in entries {
                self.t.unfinished.insert((id, seq), at).map_err(storage)?;
            }
        } else if !strict && self.index.strict.contains(id) {
            // Stops being strict: its entries go.
            self.t
                .unfinished
                .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)
                .map_err(storage)?;
        }
        let head = schema::head(&self.t.schedule, &self.t.unfinished, &endpoint.id, strict)?;
        self.index.set_endpoint(endpoint, head);
        Ok(true)
    }

    /// One step of deleting endpoint `id` and its deliveries, so that no transaction
    /// holds the writer for long. The first takes the endpoint away (reads, enqueues
    /// and claims no longer see it) and marks its deletion begun in `meta`; each step
    /// removes up to [`DELETE_CHUNK`] of its deliveries; the last clears the mark.
    /// Without `begin`, only a deletion already under way goes on (an endpoint put
    /// again meanwhile is a new one, and stays).
    pub(crate) fn delete_endpoint_step(
        &mut self,
        id: &EndpointId,
        begin: bool,
    ) -> Result<DeleteStep> {
        let mark = deleting_key(id.as_str());
        let begun = self.t.meta.get(mark.as_str()).map_err(storage)?.is_some();
        if !begun {
            if !begin {
                return Ok(DeleteStep::Missing);
            }
            if self
                .t
                .endpoints
                .remove(id.as_str())
                .map_err(storage)?
                .is_none()
            {
                return Ok(DeleteStep::Missing);
            }
            self.t.meta.insert(mark.as_str(), 0).map_err(storage)?;
            self.index.remove_endpoint(id);
        }
        let mut seqs = Vec::new();
        let range = (id.as_str(), 0)..=(id.as_str(), u64::MAX);
        for item in self.t.by_endpoint.range(range).map_err(storage)? {
            seqs.push(item.map_err(storage)?.0.value().1);
            if seqs.len() == DELETE_CHUNK {
                break;
            }
        }
        for &seq in &seqs {
            self.remove_delivery(seq)?;
            // Also when its record is missing (corrupt data), so that every step
            // makes progress.
            self.t
                .by_endpoint
                .remove((id.as_str(), seq))
                .map_err(storage)?;
        }
        if seqs.len() == DELETE_CHUNK {
            return Ok(DeleteStep::More);
        }
        // Only now: removing the deliveries used the mark to find their `ready` entries,
        // and the strict set to find their `unfinished` ones (which a restart during
        // the deletion loses, as the endpoint is gone: whatever is left goes here).
        self.t
            .unfinished
            .retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)
            .map_err(storage)?;
        self.t.promoted.remove(id.as_str()).map_err(storage)?;
        self.index.promoted.remove(id.as_str());
        self.index.strict.remove(id.as_str());
        self.t.meta.remove(mark.as_str()).map_err(storage)?;
        Ok(DeleteStep::Done)
    }

    pub(crate) fn enqueue(
        &mut self,
        event: &NewEvent,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> Result<Enqueued> {
        for id in endpoints {
            let info = self
                .index
                .endpoints
                .get(id)
                .ok_or_else(|| Error::not_found("endpoint", id.as_str()))?;
            if info.tenant != event.tenant {
                return Err(Error::invalid(
                    "endpoints",
                    format!(
                        "endpoint {id} belongs to another tenant than event {}",
                        event.id
                    ),
                ));
            }
        }
        let mut result = Enqueued::default();
        let mut created: Vec<(IdempotencyKey, Vec<u8>)> = Vec::with_capacity(endpoints.len());
        for id in endpoints {
            let key = IdempotencyKey::new(event.id.clone(), id.clone(), event.tenant.clone());
            let raw_key = codec::delivery_key(&key);
            let exists = self
                .t
                .delivery_keys
                .get(raw_key.as_slice())
                .map_err(storage)?
                .is_some();
            if exists || created.iter().any(|(k, _)| k == &key) {
                result.existing += 1;
            } else {
                created.push((key, raw_key));
            }
        }
        result.created = created.len();
        if created.is_empty() {
            return Ok(result);
        }
        let existing = self
            .t
            .event_ids
            .get(event.key.as_slice())
            .map_err(storage)?
            .map(|g| g.value());
        // Deliveries take the event's priority: the stored event's when it exists.
        let (event_seq, priority) = match existing {
            Some(seq) => {
                let stored =
                    self.t.events.get(seq).map_err(storage)?.ok_or_else(|| {
                        codec::corrupt(format!("event {seq} is indexed but missing"))
                    })?;
                (seq, codec::event_priority(stored.value())?)
            }
            None => {
                let seq = self.index.next_event;
                self.index.next_event += 1;
                self.t
                    .events
                    .insert(seq, event.record.as_slice())
                    .map_err(storage)?;
                self.t
                    .event_ids
                    .insert(event.key.as_slice(), seq)
                    .map_err(storage)?;
                (seq, event.priority)
            }
        };
        for (key, raw_key) in created {
            let seq = self.index.next_seq;
            self.index.next_seq += 1;
            let delivery = Delivery::new(key, priority, now);
            let endpoint = delivery.key.endpoint_id.as_str();
            self.save(seq, event_seq, &delivery)?;
            self.t
                .delivery_keys
                .insert(raw_key.as_slice(), seq)
                .map_err(storage)?;
            self.t
                .event_deliveries
                .insert((event_seq, seq), ())
                .map_err(storage)?;
            self.t
                .by_endpoint
                .insert((endpoint, seq), ())
                .map_err(storage)?;
            self.add_indexes(seq, endpoint, delivery.priority, delivery.state)?;
            if let Some(at) = delivery.state.claimable_at() {
                self.note_new(&delivery.key.endpoint_id, at);
            }
        }
        Ok(result)
    }

    pub(crate) fn claim(&mut self, request: &ClaimRequest) -> Result<RawClaims> {
        let now = request.now;
        let mut order: Vec<(EndpointId, bool, usize)> = self
            .index
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter_map(|(_, id)| {
                let info = self.index.endpoints.get(id)?;
                let max = request
                    .endpoint_limits
                    .get(id)
                    .copied()
                    .unwrap_or(request.per_endpoint_limit);
                (info.enabled && max > 0).then(|| (id.clone(), info.strict, max))
            })
            .collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Round robin: start after the endpoint served last.
        if let Some(cursor) = &self.index.cursor {
            let first_after = order.partition_point(|(id, _, _)| id <= cursor);
            order.rotate_left(first_after);
        }
        let mut claimed = Vec::new();
        for (id, strict, max) in order {
            let room = request.limit.saturating_sub(claimed.len());
            if room == 0 {
                break;
            }
            let before = claimed.len();
            self.claim_from(&id, strict, request, room.min(max), &mut claimed)?;
            if claimed.len() > before {
                self.index.cursor = Some(id);
            }
        }
        let mut events = HashMap::new();
        for (event_seq, _) in &claimed {
            if !events.contains_key(event_seq) {
                let raw = self
                    .t
                    .events
                    .get(*event_seq)
                    .map_err(storage)?
                    .ok_or_else(|| codec::corrupt("delivery of a missing event"))?
                    .value()
                    .to_vec();
                events.insert(*event_seq, raw);
            }
        }
        Ok(RawClaims {
            deliveries: claimed,
            events,
        })
    }

    fn claim_from(
        &mut self,
        endpoint: &EndpointId,
        strict: bool,
        request: &ClaimRequest,
        max: usize,
        out: &mut Vec<(u64, Delivery)>,
    ) -> Result<()> {
        let id = endpoint.as_str();
        let (now_secs, now_nanos) = ts(request.now);
        let mut seqs = Vec::new();
        if strict {
            let mut range = self
                .t
                .unfinished
                .range((id, 0)..=(id, u64::MAX))
                .map_err(storage)?;
            if let Some(item) = range.next() {
                let (key, at) = item.map_err(storage)?;
                if at.value() <= (now_secs, now_nanos) {
                    seqs.push(key.value().1);
                }
            }
        } else {
            self.promote(id, (now_secs, now_nanos))?;
            let range = (id, 0, i64::MIN, 0, 0)..=(id, u16::MAX, i64::MAX, u32::MAX, u64::MAX);
            for item in self.t.ready.range(range).map_err(storage)? {
                if seqs.len() >= max {
                    break;
                }
                let (_, _, secs, nanos, seq) = item.map_err(storage)?.0.value();
                // Promoted by a claim with a later clock and not due yet at this one.
                if (secs, nanos) <= (now_secs, now_nanos) {
                    seqs.push(seq);
                }
            }
        }
        for seq in seqs {
            let (event_seq, mut delivery) = self
                .load(seq)?
                .ok_or_else(|| codec::corrupt("schedule points at a missing delivery"))?;
            let old = delivery.state;
            if delivery.claim(request.now, request.lease).is_err() {
                continue;
            }
            self.save(seq, event_seq, &delivery)?;
            self.reindex(seq, id, delivery.priority, old, delivery.state)?;
            out.push((event_seq, delivery));
        }
        self.refresh_head(endpoint)
    }

    pub(crate) fn complete(
        &mut self,
        finished: &[Finished],
        now: DateTime<Utc>,
    ) -> Result<Completed> {
        let mut result = Completed::default();
        let mut touched: Vec<EndpointId> = Vec::new();
        for f in finished {
            let raw_key = codec::delivery_key(&f.lease.key);
            let Some(seq) = self.seq_of(&raw_key)? else {
                result.lease_lost.push(f.lease.key.clone());
                continue;
            };
            let (event_seq, mut delivery) = self
                .load(seq)?
                .ok_or_else(|| codec::corrupt("key points at a missing delivery"))?;
            let old = delivery.state;
            if delivery.complete(&f.lease, &f.completion, now).is_err() {
                result.lease_lost.push(f.lease.key.clone());
                continue;
            }
            if let Some(attempt) = f.completion.attempt() {
                let next = match self
                    .t
                    .attempts
                    .range((seq, 0)..=(seq, u32::MAX))
                    .map_err(storage)?
                    .next_back()
                {
                    Some(item) => item.map_err(storage)?.0.value().1 + 1,
                    None => 0,
                };
                self.t
                    .attempts
                    .insert((seq, next), codec::encode_attempt(attempt).as_slice())
                    .map_err(storage)?;
            }
            self.save(seq, event_seq, &delivery)?;
            self.reindex(
                seq,
                delivery.key.endpoint_id.as_str(),
                delivery.priority,
                old,
                delivery.state,
            )?;
            if !touched.contains(&delivery.key.endpoint_id) {
                touched.push(delivery.key.endpoint_id.clone());
            }
            result.applied += 1;
        }
        for endpoint in &touched {
            self.refresh_head(endpoint)?;
        }
        Ok(result)
    }

    pub(crate) fn replay_dead(&mut self, key: &IdempotencyKey, now: DateTime<Utc>) -> Result<bool> {
        match self.seq_of(&codec::delivery_key(key))? {
            Some(seq) => self.replay(seq, now),
            None => Ok(false),
        }
    }

    pub(crate) fn replay_all_dead(
        &mut self,
        tenant: Option<&TenantId>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut seqs = Vec::new();
        for item in self.t.dead.iter().map_err(storage)? {
            let seq = item.map_err(storage)?.0.value().2;
            if let Some(tenant) = tenant {
                let raw = self
                    .t
                    .deliveries
                    .get(seq)
                    .map_err(storage)?
                    .ok_or_else(|| {
                        codec::corrupt("dead-letter index points at a missing delivery")
                    })?;
                if codec::delivery_owner(raw.value())?.0 != Some(tenant.as_str()) {
                    continue;
                }
            }
            seqs.push(seq);
        }
        let mut count = 0;
        for seq in seqs {
            count += u64::from(self.replay(seq, now)?);
        }
        Ok(count)
    }

    /// Removes up to `max` deliveries delivered before `before`.
    pub(crate) fn prune(&mut self, before: DateTime<Utc>, max: usize) -> Result<u64> {
        let (secs, nanos) = ts(before);
        let mut seqs = Vec::new();
        for item in self
            .t
            .delivered
            .range(..(secs, nanos, 0))
            .map_err(storage)?
            .take(max)
        {
            seqs.push(item.map_err(storage)?.0.value().2);
        }
        for &seq in &seqs {
            self.remove_delivery(seq)?;
        }
        Ok(seqs.len() as u64)
    }

    fn replay(&mut self, seq: u64, now: DateTime<Utc>) -> Result<bool> {
        let Some((event_seq, mut delivery)) = self.load(seq)? else {
            return Ok(false);
        };
        let old = delivery.state;
        if delivery.replay(now).is_err() {
            return Ok(false);
        }
        self.save(seq, event_seq, &delivery)?;
        self.reindex(
            seq,
            delivery.key.endpoint_id.as_str(),
            delivery.priority,
            old,
            delivery.state,
        )?;
        self.refresh_head(&delivery.key.endpoint_id)?;
        Ok(true)
    }

    /// Deletes a delivery, its attempts and index entries, and its event when it was
    /// the event's last delivery.
    fn remove_delivery(&mut self, seq: u64) -> Result<()> {
        let Some((event_seq, delivery)) = self.load(seq)? else {
            return Ok(());
        };
        let key = &delivery.key;
        let endpoint = key.endpoint_id.as_str();
        self.t.deliveries.remove(seq).map_err(storage)?;
        self.t
            .delivery_keys
            .remove(codec::delivery_key(key).as_slice())
            .map_err(storage)?;
        self.t
            .event_deliveries
            .remove((event_seq, seq))
            .map_err(storage)?;
        self.t
            .attempts
            .retain_in((seq, 0)..=(seq, u32::MAX), |_, _| false)
            .map_err(storage)?;
        self.t
            .by_endpoint
            .remove((endpoint, seq))
            .map_err(storage)?;
        self.remove_indexes(seq, endpoint, delivery.priority, delivery.state)?;
        let orphan = self
            .t
            .event_deliveries
            .range((event_seq, 0)..=(event_seq, u64::MAX))
            .map_err(storage)?
            .next()
            .is_none();
        if orphan {
            self.t.events.remove(event_seq).map_err(storage)?;
            let event_key = codec::event_key(key.tenant.as_ref(), &key.event_id);
            self.t
                .event_ids
                .remove(event_key.as_slice())
                .map_err(storage)?;
        }
        if !delivery.state.is_final() {
            self.refresh_head(&key.endpoint_id)?;
        }
        Ok(())
    }

    fn seq_of(&self, raw_key: &[u8]) -> Result<Option<u64>> {
        Ok(self
            .t
            .delivery_keys
            .get(raw_key)
            .map_err(storage)?
            .map(|g| g.value()))
    }

    fn load(&self, seq: u64) -> Result<Option<(u64, Delivery)>> {
        schema::load_delivery(&self.t.deliveries, seq)
    }

    fn save(&mut self, seq: u64, event_seq: u64, delivery: &Delivery) -> Result<()> {
        let record = codec::encode_delivery(event_seq, delivery);
        self.t
            .deliveries
            .insert(seq, record.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Moves `endpoint`'s deliveries claimable by `now` from `schedule` into `ready`
    /// (those not there yet: claimable after the promotion mark), and moves the mark.
    fn promote(&mut self, endpoint: &str, now: Ts) -> Result<()> {
        let mark = self.index.promoted.get(endpoint).copied();
        if mark.is_some_and(|mark| mark >= now) {
            return Ok(());
        }
        let from = match mark {
            Some((secs, nanos)) => Bound::Excluded((endpoint, secs, nanos, u64::MAX)),
            None => Bound::Included((endpoint, i64::MIN, 0, 0)),
        };
        let to = Bound::Included((endpoint, now.0, now.1, u64::MAX));
        let mut due = Vec::new();
        for item in self.t.schedule.range((from, to)).map_err(storage)? {
            let (_, secs, nanos, seq) = item.map_err(storage)?.0.value();
            due.push((secs, nanos, seq));
        }
        for (secs, nanos, seq) in due {
            let raw = self
                .t
                .deliveries
                .get(seq)
                .map_err(storage)?
                .ok_or_else(|| codec::corrupt("schedule points at a missing delivery"))?;
            let priority = codec::delivery_priority(raw.value())?;
            drop(raw);
            self.t
                .ready
                .insert((endpoint, schema::rank(priority), secs, nanos, seq), ())
                .map_err(storage)?;
        }
        self.t.promoted.insert(endpoint, now).map_err(storage)?;
        self.index.promoted.insert(endpoint.to_owned(), now);
        Ok(())
    }

    fn reindex(
        &mut self,
        seq: u64,
        endpoint: &str,
        priority: i16,
        old: DeliveryState,
        new: DeliveryState,
    ) -> Result<()> {
        self.remove_indexes(seq, endpoint, priority, old)?;
        self.add_indexes(seq, endpoint, priority, new)
    }

    fn remove_indexes(
        &mut self,
        seq: u64,
        endpoint: &str,
        priority: i16,
        state: DeliveryState,
    ) -> Result<()> {
        if let Some(at) = state.claimable_at() {
            let (secs, nanos) = ts(at);
            self.t
                .schedule
                .remove((endpoint, secs, nanos, seq))
                .map_err(storage)?;
            if self.index.strict.contains(endpoint) {
                self.t.unfinished.remove((endpoint, seq)).map_err(storage)?;
            }
            if self.index.is_promoted(endpoint, (secs, nanos)) {
                self.t
                    .ready
                    .remove((endpoint, schema::rank(priority), secs, nanos, seq))
                    .map_err(storage)?;
            }
        }
        match state {
            DeliveryState::Dead { at } => {
                let (secs, nanos) = ts(at);
                self.t.dead.remove((secs, nanos, seq)).map_err(storage)?;
            }
            DeliveryState::Delivered { at } => {
                let (secs, nanos) = ts(at);
                self.t
                    .delivered
                    .remove((secs, nanos, seq))
                    .map_err(storage)?;
            }
            DeliveryState::Pending { .. } | DeliveryState::InFlight { .. } => {}
        }
        Ok(())
    }

    fn add_indexes(
        &mut self,
        seq: u64,
        endpoint: &str,
        priority: i16,
        state: DeliveryState,
    ) -> Result<()> {
        if let Some(at) = state.claimable_at() {
            let (secs, nanos) = ts(at);
            self.t
                .schedule
                .insert((endpoint, secs, nanos, seq), ())
                .map_err(storage)?;
            if self.index.strict.contains(endpoint) {
                self.t
                    .unfinished
                    .insert((endpoint, seq), (secs, nanos))
                    .map_err(storage)?;
            }
            if self.index.is_promoted(endpoint, (secs, nanos)) {
                self.t
                    .ready
                    .insert((endpoint, schema::rank(priority), secs, nanos, seq), ())
                    .map_err(storage)?;
            }
        }
        match state {
            DeliveryState::Dead { at } => {
                let (secs, nanos) = ts(at);
                self.t
                    .dead
                    .insert((secs, nanos, seq), ())
                    .map_err(storage)?;
            }
            DeliveryState::Delivered { at } => {
                let (secs, nanos) = ts(at);
                self.t
                    .delivered
                    .insert((secs, nanos, seq), ())
                    .map_err(storage)?;
            }
            DeliveryState::Pending { .. } | DeliveryState::InFlight { .. } => {}
        }
        Ok(())
    }

    /// Updates `endpoint`'s head for a delivery just added, claimable at `at`, without
    /// reading the tables: the head can only move earlier, and in strict order only
    /// when the endpoint had no unfinished delivery (the new one comes last).
    fn note_new(&mut self, endpoint: &EndpointId, at: DateTime<Utc>) {
        let Some(info) = self.index.endpoints.get(endpoint) else {
            return;
        };
        let head = match info.head {
            Some(old) if info.strict || old <= at => old,
            _ => at,
        };
        self.index.set_head(endpoint, Some(head));
    }

    fn refresh_head(&mut self, endpoint: &EndpointId) -> Result<()> {
        let Some(strict) = self.index.endpoints.get(endpoint).map(|i| i.strict) else {
            return Ok(());
        };
        let head = schema::head(&self.t.schedule, &self.t.unfinished, endpoint, strict)?;
        self.index.set_head(endpoint, head);
        Ok(())
    }

    fn write_counters(&mut self) -> Result<()> {
        self.t
            .meta
            .insert(NEXT_SEQ_KEY, self.index.next_seq)
            .map_err(storage)?;
        self.t
            .meta
            .insert(NEXT_EVENT_KEY, self.index.next_event)
            .map_err(storage)?;
        Ok(())
    }
}

enum Outcome {
    Committed,
    /// Job `i` failed and the transaction was aborted.
    JobFailed(usize),
    /// The transaction could not be begun or committed.
    Failed(Error),
}

/// The writer thread's state.
pub(crate) struct Writer {
    db: Arc<Database>,
    index: Index,
    jobs: mpsc::Receiver<Job>,
    stats: Arc<Stats>,
    /// Set when the store is dropped: the writer then stops after the jobs queued,
    /// even if tasks of the store's (a deletion going on) still hold senders.
    closing: Arc<AtomicBool>,
    lazy_commits: u32,
    last_durable: Instant,
    /// The claim index may not match the tables: a transaction was aborted and the
    /// index could not be reloaded. No job runs until a reload succeeds.
    stale: bool,
}

/// Most commits in a row without fsync.
const MAX_LAZY_COMMITS: u32 = 256;
/// Longest time without a durable commit while writes go on.
const MAX_LAZY_TIME: Duration = Duration::from_secs(1);

impl Writer {
    pub(crate) fn new(
        db: Arc<Database>,
        index: Index,
        jobs: mpsc::Receiver<Job>,
        stats: Arc<Stats>,
        closing: Arc<AtomicBool>,
    ) -> Self {
        Self {
            db,
            index,
            jobs,
            stats,
            closing,
            lazy_commits: 0,
            last_durable: Instant::now(),
            stale: false,
        }
    }

    /// Serves jobs until every sender is gone.
    pub(crate) fn run(mut self) {
        while let Ok(first) = self.jobs.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
            if self.closing.load(Atomic::Acquire) {
                // The store is gone: what is queued now is the last work. A task that
                // sends more (a deletion's next step) finds the writer gone; the
                // deletion is taken up again at the next open.
                let mut rest: Vec<Job> = self.jobs.try_iter().collect();
                while !rest.is_empty() {
                    let later = rest.split_off(rest.len().min(MAX_BATCH));
                    self.run_batch(rest);
                    rest = later;
                }
                return;
            }
        }
    }

    fn run_batch(&mut self, mut jobs: Vec<Job>) {
        loop {
            match self.try_batch(&mut jobs) {
                Outcome::Committed => {
                    self.stats.commits.fetch_add(1, Atomic::Relaxed);
                    self.stats
                        .operations
                        .fetch_add(jobs.len() as u64, Atomic::Relaxed);
                    for job in jobs {
                        job.finish(None);
                    }
                    return;
                }
                Outcome::JobFailed(i) => {
                    self.reload_index();
                    jobs.remove(i).finish(None);
                    if jobs.is_empty() {
                        return;
                    }
                }
                Outcome::Failed(error) => {
                    self.reload_index();
                    for job in jobs {
                        job.finish(Some(&error));
                    }
                    return;
                }
            }
        }
    }

    fn try_batch(&mut self, jobs: &mut [Job]) -> Outcome {
        if self.stale {
            self.reload_index();
            if self.stale {
                return Outcome::Failed(Error::Unavailable(
                    "the claim index cannot be reloaded after an aborted write".into(),
                ));
            }
        }
        let mut txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return Outcome::Failed(storage(e)),
        };
        // Batches of only claims and results skip the fsync, but not forever: a
        // durable commit now and then bounds redone work and lets redb free pages.
        let durable = jobs.iter().any(|job| job.durable())
            || self.lazy_commits >= MAX_LAZY_COMMITS
            || self.last_durable.elapsed() >= MAX_LAZY_TIME;
        if !durable && txn.set_durability(redb::Durability::None).is_err() {
            return Outcome::Failed(Error::Unavailable("cannot relax durability".into()));
        }
        let failed = {
            let tables = match Tables::open(&txn) {
                Ok(tables) => tables,
                Err(e) => return Outcome::Failed(e),
            };
            let mut ctx = Ctx {
                t: tables,
                index: &mut self.index,
            };
            let failed = jobs.iter_mut().position(|job| !job.apply(&mut ctx));
            if failed.is_none()
                && let Err(e) = ctx.write_counters()
            {
                return Outcome::Failed(e);
            }
            failed
        };
        if let Some(i) = failed {
            // Dropping the transaction aborts it as well; an abort error changes nothing.
            let _ = txn.abort();
            return Outcome::JobFailed(i);
        }
        match txn.commit() {
            Ok(()) => {
                if durable {
                    self.lazy_commits = 0;
                    self.last_durable = Instant::now();
                } else {
                    self.lazy_commits += 1;
                }
                Outcome::Committed
            }
            Err(e) => Outcome::Failed(storage(e)),
        }
    }

    /// Rebuilds the claim index from the committed tables after an abort. Counters
    /// never go back, so an aborted batch leaves gaps, not reused numbers.
    /// Until that succeeds, the index is stale (it may hold changes of the aborted
    /// transaction) and jobs fail instead of running on it.
    fn reload_index(&mut self) {
        match Index::load(&self.db) {
            Ok(mut index) => {
                index.cursor = self.index.cursor.take();
                index.next_seq = index.next_seq.max(self.index.next_seq);
                index.next_event = index.next_event.max(self.index.next_event);
                self.index = index;
                self.stale = false;
            }
            Err(_) => self.stale = true,
        }
    }
}

/// The retention pass: every `interval`, prunes work delivered more than `retention`
/// ago, a chunk per transaction, until `stop` is dropped.
pub(crate) fn prune_loop(
    stop: &mpsc::Receiver<()>,
    jobs: &mpsc::Sender<Job>,
    retention: Duration,
    interval: Duration,
    stats: &Stats,
) {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let interval = interval.max(Duration::from_millis(10));
    loop {
        match stop.recv_timeout(interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let Some(before) = Utc::now().checked_sub_signed(retention) else {
            continue;
        };
        loop {
            let (job, reply) = job(move |ctx| ctx.prune(before, PRUNE_CHUNK), true);
            if jobs.send(job).is_err() {
                return;
            }
            match reply.blocking_recv() {
                Ok(Ok(n)) => {
                    stats.pruned.fetch_add(n, Atomic::Relaxed);
                    if n < PRUNE_CHUNK as u64 {
                        break;
                    }
                }
                // The writer failed; try again at the next interval.
                Ok(Err(_)) | Err(_) => break,
            }
            if !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                return;
            }
        }
    }
}
