#![doc = include_str!("../README.md")]

mod codec;
mod schema;
mod writer;

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering as Atomic},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use webhook_core::{
    ClaimRequest, Claimed, Completed, DeadLetterQuery, Delivery, DeliveryRecord, DeliveryState,
    Endpoint, EndpointId, Enqueued, Error, Event, EventId, EventRecord, Finished, IdempotencyKey,
    Lease, Result, Store, TenantId,
};

use crate::{
    schema::storage,
    writer::{Ctx, DeleteStep, Job, NewEvent, RawClaims, Stats},
};

/// Payloads or claim results at least this large are encoded or decoded on a blocking
/// thread rather than on the async runtime.
const BIG: usize = 256 * 1024;

/// Settings for [`RedbStore::open_with`].
#[derive(Clone, Debug)]
pub struct RedbOptions {
    /// Delivered work older than this is pruned by a background thread, so the file
    /// does not grow without bound. `None` (the default): nothing is pruned unless
    /// [`Store::prune`] is called. Dead and unfinished deliveries are never pruned.
    pub retention: Option<Duration>,
    /// How often the retention pass runs (default: every minute; at least every 10 ms).
    pub prune_interval: Duration,
    /// Payloads longer than this many bytes are stored zstd-compressed when that makes
    /// them smaller (default 1024).
    pub compress_threshold: usize,
    /// The zstd level for payloads (default 3).
    pub compression_level: i32,
    /// The most memory redb may use to cache pages of the file (default 64 MiB).
    pub cache_size: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            retention: None,
            prune_interval: Duration::from_secs(60),
            compress_threshold: 1024,
            compression_level: 3,
            cache_size: 64 * 1024 * 1024,
        }
    }
}

/// Counters of a [`RedbStore`] since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedbStats {
    /// Write transactions committed (each one fsync).
    pub commits: u64,
    /// Write operations (enqueue, claim, complete, ...) in those commits.
    pub operations: u64,
    /// Deliveries removed by the background retention pass.
    pub pruned: u64,
}

/// A durable [`Store`] in one redb file.
///
/// See the [crate documentation](crate) for what is durable when. Dropping the store
/// waits for queued writes to finish and closes the file.
pub struct RedbStore {
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    /// Tells the writer to stop once the jobs queued are done (see `Drop`).
    closing: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
    /// Background threads that send jobs to the writer (retention, resumed
    /// deletions), each with the sender whose drop stops it.
    helpers: Vec<(mpsc::Sender<()>, JoinHandle<()>)>,
    stats: Arc<Stats>,
    path: PathBuf,
    options: RedbOptions,
}

impl RedbStore {
    /// Opens the store at `path`, creating the file if needed, with default options.
    ///
    /// Opening does blocking file I/O (and recovers the file after a crash): do it at
    /// startup or on a blocking thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens the store at `path`, creating the file if needed.
    pub fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = redb::Builder::new()
            .set_cache_size(options.cache_size)
            .create(&path)
            .map_err(storage)?;
        writer::init(&db)?;
        let index = writer::Index::load(&db)?;
        let unfinished = writer::unfinished_deletions(&db)?;
        let db = Arc::new(db);
        let stats = Arc::new(Stats::default());
        let (jobs, rx) = mpsc::channel();
        let closing = Arc::new(AtomicBool::new(false));
        let state = writer::Writer::new(
            Arc::clone(&db),
            index,
            rx,
            Arc::clone(&stats),
            Arc::clone(&closing),
        );
        let writer = std::thread::Builder::new()
            .name("webhook-redb-writer".into())
            .spawn(move || state.run())
            .map_err(|e| Error::Unavailable(format!("cannot start the writer thread: {e}")))?;
        let mut store = Self {
            db,
            jobs: Some(jobs),
            closing,
            writer: Some(writer),
            helpers: Vec::new(),
            stats,
            path,
            options,
        };
        if !unfinished.is_empty() {
            // Deletions cut short (the process stopped) go on in the background.
            let (stop, stopped) = mpsc::channel();
            let jobs = store.jobs.clone().expect("just set");
            let handle = std::thread::Builder::new()
                .name("webhook-redb-deleter".into())
                .spawn(move || writer::finish_deletions(&stopped, &jobs, unfinished))
                .map_err(|e| Error::Unavailable(format!("cannot start a thread: {e}")))?;
            store.helpers.push((stop, handle));
        }
        if let Some(retention) = store.options.retention {
            let (stop, stopped) = mpsc::channel();
            let jobs = store.jobs.clone().expect("just set");
            let stats = Arc::clone(&store.stats);
            let interval = store.options.prune_interval;
            let handle = std::thread::Builder::new()
                .name("webhook-redb-retention".into())
                .spawn(move || writer::prune_loop(&stopped, &jobs, retention, interval, &stats))
                .map_err(|e| {
                    Error::Unavailable(format!("cannot start the retention thread: {e}"))
                })?;
            store.helpers.push((stop, handle));
        }
        Ok(store)
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &RedbOptions {
        &self.options
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> RedbStats {
        RedbStats {
            commits: self.stats.commits.load(Atomic::Relaxed),
            operations: self.stats.operations.load(Atomic::Relaxed),
            pruned: self.stats.pruned.load(Atomic::Relaxed),
        }
    }

    /// Runs `op` on the writer thread in the next group commit; returns once that
    /// commit is done, and on disk when `durable`.
    async fn write<T, F>(&self, durable: bool, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Ctx<'_, '_>) -> Result<T> + Send + 'static,
    {
        send(self.jobs.as_ref().ok_or_else(stopped)?, durable, op).await
    }

    /// Runs `op` in a read transaction on a blocking thread.
    async fn read<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        offload(true, move || op(&db.begin_read().map_err(storage)?)).await
    }
}

/// Runs CPU- or disk-bound `work` on tokio's blocking pool when `blocking` and a
/// runtime is at hand, else right here.
async fn offload<T, F>(blocking: bool, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if blocking => handle
            .spawn_blocking(work)
            .await
            .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?,
        _ => work(),
    }
}

/// Sends `op` to the writer and waits for its result.
async fn send<T, F>(jobs: &mpsc::Sender<Job>, durable: bool, op: F) -> Result<T>
where
    T: Send + 'static,
    F: FnMut(&mut Ctx<'_, '_>) -> Result<T> + Send + 'static,
{
    let (job, reply) = writer::job(op, durable);
    jobs.send(job).map_err(|_| stopped())?;
    reply.await.map_err(|_| stopped())?
}

/// Deletes endpoint `id` a step (a transaction) at a time; without `begin`, only
/// carries on a deletion already under way. Whether there was something to delete.
async fn delete_in_steps(jobs: mpsc::Sender<Job>, id: EndpointId, begin: bool) -> Result<bool> {
    let mut existed = false;
    loop {
        let id = id.clone();
        // Only the first step may begin: an endpoint put again meanwhile (which
        // finishes the deletion first) is a new one, and stays.
        let begin = begin && !existed;
        match send(&jobs, true, move |ctx| ctx.delete_endpoint_step(&id, begin)).await? {
            DeleteStep::More => existed = true,
            DeleteStep::Done => return Ok(true),
            // Finished meanwhile by another call.
            DeleteStep::Missing => return Ok(existed),
        }
    }
}

fn stopped() -> Error {
    Error::Unavailable("the store's writer thread has stopped".into())
}

fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: redb::TableDefinition<'static, K, V>,
) -> Result<redb::ReadOnlyTable<K, V>> {
    txn.open_table(def).map_err(storage)
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Endpoints (and their secrets) live in the file only: nothing to leak here.
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        for (stop, handle) in self.helpers.drain(..) {
            drop(stop);
            let _ = handle.join();
        }
        // The writer finishes the jobs already queued, then exits and closes its
        // handle on the file, though a task of this store's (a deletion going on)
        // may still hold a sender: it is woken with a job that does nothing.
        self.closing.store(true, Atomic::Release);
        if let Some(jobs) = self.jobs.take() {
            let _ = jobs.send(writer::job(|_| Ok(()), false).0);
        }
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        endpoint.validate()?;
        let json = schema::encode_endpoint(endpoint)?;
        let endpoint = endpoint.clone();
        let id = endpoint.id.clone();
        let put = move |ctx: &mut Ctx<'_, '_>| ctx.put_endpoint(&endpoint, &json);
        let jobs = self.jobs.clone().ok_or_else(stopped)?;
        if send(&jobs, true, put.clone()).await? {
            return Ok(());
        }
        // A deletion of this id cut short: it goes first, a transaction at a time.
        delete_in_steps(jobs.clone(), id.clone(), false).await?;
        if send(&jobs, true, put).await? {
            return Ok(());
        }
        Err(Error::Unavailable(format!(
            "endpoint {id} is being deleted by another call"
        )))
    }

    async fn get_endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>> {
        let id = id.clone();
        self.read(move |txn| {
            let endpoints = table(txn, schema::ENDPOINTS)?;
            let raw = endpoints.get(id.as_str()).map_err(storage)?;
            raw.map(|raw| schema::decode_endpoint(raw.value()))
                .transpose()
        })
        .await
    }

    async fn list_endpoints(&self, tenant: Option<&TenantId>) -> Result<Vec<Endpoint>> {
        let tenant = tenant.cloned();
        self.read(move |txn| {
            let endpoints = table(txn, schema::ENDPOINTS)?;
            let mut out = Vec::new();
            for item in endpoints.iter().map_err(storage)? {
                let (_, raw) = item.map_err(storage)?;
                let endpoint = schema::decode_endpoint(raw.value())?;
                if tenant.is_none() || endpoint.tenant_id == tenant {
                    out.push(endpoint);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_endpoint(&self, id: &EndpointId) -> Result<bool> {
        let jobs = self.jobs.clone().ok_or_else(stopped)?;
        let steps = delete_in_steps(jobs, id.clone(), true);
        // On a task of its own, so that a caller who stops waiting (a client that
        // hangs up) does not leave the deletion half done.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn(steps)
                .await
                .map_err(|e| Error::Unavailable(format!("deletion task failed: {e}")))?,
            Err(_) => steps.await,
        }
    }

    async fn enqueue(
        &self,
        event: &Event,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> Result<Enqueued> {
        let threshold = self.options.compress_threshold;
        let level = self.options.compression_level;
        let created_at = event.created_at.unwrap_or(now);
        let new_event = {
            let event = event.clone();
            offload(event.payload.len() >= BIG, move || {
                Ok(NewEvent {
                    key: codec::event_key(event.tenant_id.as_ref(), &event.id),
                    record: codec::encode_event(&event, created_at, threshold, level),
                    tenant: event.tenant_id,
                    id: event.id,
                    priority: event.priority,
                })
            })
            .await?
        };
        let endpoints = endpoints.to_vec();
        self.write(true, move |ctx| ctx.enqueue(&new_event, &endpoints, now))
            .await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let req = request.clone();
        let raw = self.write(false, move |ctx| ctx.claim(&req)).await?;
        let size: usize = raw.events.values().map(Vec::len).sum();
        offload(size >= BIG, move || decode_claims(raw)).await
    }

    async fn complete(&self, finished: &[Finished], now: DateTime<Utc>) -> Result<Completed> {
        if finished.is_empty() {
            return Ok(Completed::default());
        }
        let finished = finished.to_vec();
        self.write(false, move |ctx| ctx.complete(&finished, now))
            .await
    }

    async fn get_delivery(&self, key: &IdempotencyKey) -> Result<Option<DeliveryRecord>> {
        let raw_key = codec::delivery_key(key);
        self.read(move |txn| {
            let keys = table(txn, schema::DELIVERY_KEYS)?;
            let Some(seq) = keys.get(raw_key.as_slice()).map_err(storage)? else {
                return Ok(None);
            };
            schema::load_record(
                &table(txn, schema::DELIVERIES)?,
                &table(txn, schema::ATTEMPTS)?,
                seq.value(),
            )
        })
        .await
    }

    async fn get_event(
        &self,
        tenant: Option<&TenantId>,
        id: &EventId,
    ) -> Result<Option<EventRecord>> {
        let raw_key = codec::event_key(tenant, id);
        self.read(move |txn| {
            let ids = table(txn, schema::EVENT_IDS)?;
            let Some(event_seq) = ids.get(raw_key.as_slice()).map_err(storage)? else {
                return Ok(None);
            };
            let event_seq = event_seq.value();
            let events = table(txn, schema::EVENTS)?;
            let Some(raw) = events.get(event_seq).map_err(storage)? else {
                return Err(codec::corrupt("event id points at a missing event"));
            };
            let event = codec::decode_event(raw.value())?;
            let links = table(txn, schema::EVENT_DELIVERIES)?;
            let deliveries = table(txn, schema::DELIVERIES)?;
            let attempts = table(txn, schema::ATTEMPTS)?;
            let mut records = Vec::new();
            let range = (event_seq, 0)..=(event_seq, u64::MAX);
            for item in links.range(range).map_err(storage)? {
                let seq = item.map_err(storage)?.0.value().1;
                let record = schema::load_record(&deliveries, &attempts, seq)?
                    .ok_or_else(|| codec::corrupt("event lists a missing delivery"))?;
                records.push(record);
            }
            Ok(Some(EventRecord {
                event,
                deliveries: records,
            }))
        })
        .await
    }

    async fn list_dead(&self, query: &DeadLetterQuery) -> Result<Vec<Delivery>> {
        let query = query.clone();
        self.read(move |txn| {
            let dead = table(txn, schema::DEAD)?;
            let deliveries = table(txn, schema::DELIVERIES)?;
            let mut out = Vec::new();
            for item in dead.iter().map_err(storage)? {
                if out.len() >= query.limit {
                    break;
                }
                let seq = item.map_err(storage)?.0.value().2;
                let raw = deliveries.get(seq).map_err(storage)?.ok_or_else(|| {
                    codec::corrupt("dead-letter index points at a missing delivery")
                })?;
                let (tenant, endpoint) = codec::delivery_owner(raw.value())?;
                let wanted = query
                    .tenant
                    .as_ref()
                    .is_none_or(|t| Some(t.as_str()) == tenant)
                    && query
                        .endpoint_id
                        .as_ref()
                        .is_none_or(|e| e.as_str() == endpoint);
                if wanted {
                    out.push(codec::decode_delivery(raw.value())?.1);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn replay_dead(&self, key: &IdempotencyKey, now: DateTime<Utc>) -> Result<bool> {
        let key = key.clone();
        self.write(true, move |ctx| ctx.replay_dead(&key, now))
            .await
    }

    async fn replay_all_dead(&self, tenant: Option<&TenantId>, now: DateTime<Utc>) -> Result<u64> {
        let tenant = tenant.cloned();
        self.write(true, move |ctx| ctx.replay_all_dead(tenant.as_ref(), now))
            .await
    }

    /// Prunes in chunks, one transaction each, so other writes are not held up.
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self
                .write(true, move |ctx| ctx.prune(before, writer::PRUNE_CHUNK))
                .await?;
            total += n;
            if n < writer::PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// The length of the schedule, which holds every unfinished delivery (redb keeps
    /// table lengths, so this reads no entries).
    async fn unfinished(&self) -> Result<Option<u64>> {
        self.read(|txn| {
            use redb::ReadableTableMetadata as _;
            table(txn, schema::SCHEDULE)?
                .len()
                .map(Some)
                .map_err(storage)
        })
        .await
    }
}

fn decode_claims(raw: RawClaims) -> Result<Vec<Claimed>> {
    let mut events = HashMap::with_capacity(raw.events.len());
    for (seq, record) in raw.events {
        events.insert(seq, codec::decode_event(&record)?);
    }
    raw.deliveries
        .into_iter()
        .map(|(event_seq, delivery)| {
            let DeliveryState::InFlight { lease_until } = delivery.state else {
                return Err(codec::corrupt("claimed delivery is not in flight"));
            };
            let event = events
                .get(&event_seq)
                .cloned()
                .ok_or_else(|| codec::corrupt("claimed delivery of a missing event"))?;
            Ok(Claimed {
                lease: Lease {
                    key: delivery.key.clone(),
                    token: delivery.lease_token,
                    until: lease_until,
                },
                event,
                delivery,
            })
        })
        .collect()
}
