//! [`RedisStore`]: the [`Store`] on Redis.

use std::{
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::{
    Connection, Manager, Pool, Runtime,
    redis::{self, AsyncConnectionConfig, RedisError, Script, Value, aio::MultiplexedConnection},
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use webhook_core::{
    Attempt, ClaimRequest, Claimed, Completed, Completion, DeadLetterQuery, Delivery,
    DeliveryRecord, DeliveryState, Endpoint, EndpointId, Enqueued, Error, Event, EventId,
    EventRecord, Finished, IdempotencyKey, Lease, Ordering, Result, Store, TenantId,
};

use crate::{
    codec::{
        Args, array, attempt_entry, corrupt, delivery, delivery_key, delivery_record, error_part,
        event, event_key, event_record, int, millis, status_field, text, token_field, tuple,
    },
    error::Redactor,
    scripts::SCRIPTS,
};

/// Counts passed to scripts are capped here (Lua numbers are doubles).
const MAX_COUNT: usize = 1 << 30;
/// Dead letters replayed or deliveries pruned per script call, so that no single
/// call blocks Redis for long.
const BATCH: usize = 500;
/// Most dead letters one `list_dead` script call looks at.
const DEAD_SCAN: usize = 2000;

/// Most pooled connections held open and shared by concurrent calls.
const MAX_SHARED: usize = 4;

/// Pooled connections held open and shared: each multiplexes (pipelines) the
/// concurrent calls sent on it, so a call neither waits for a free connection nor
/// pays the pool's health check (a round trip) every time. A connection that fails is
/// dropped from its slot; the next call there takes a checked one from the pool.
struct Shared {
    slots: Vec<Mutex<Option<Held>>>,
    /// One per slot: held while the slot is filled from the pool, so that an empty
    /// slot draws one connection, not one per waiting call (the slots may hold the
    /// whole pool: a second draw would wait for a connection no one returns).
    filling: Vec<tokio::sync::Mutex<()>>,
    next: AtomicUsize,
    /// Numbers the connections put in slots, so that a failed call drops its own
    /// connection, not one put in its slot since.
    filled: AtomicU64,
}

/// A connection in a slot, and its number.
struct Held {
    id: u64,
    conn: Connection,
}

impl Shared {
    fn new(pool: &Pool) -> Self {
        let n = pool.status().max_size.clamp(1, MAX_SHARED);
        Self {
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            filling: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
            next: AtomicUsize::new(0),
            filled: AtomicU64::new(0),
        }
    }

    fn slot(&self, i: usize) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.slots[i].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection for one call, the slot it came from and its number there.
struct Conn {
    conn: MultiplexedConnection,
    slot: usize,
    id: u64,
}

/// Most events written by one enqueue script call.
const ENQUEUE_BATCH: usize = 64;
/// Most enqueue script calls in flight at once; further enqueues wait and are
/// written together by the next call (group commit).
const ENQUEUE_IN_FLIGHT: usize = 4;

/// One event's enqueue, waiting to be written with others.
struct EnqueueJob {
    args: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<Value>>,
}

/// Whether `e` says the server is no longer a writable primary: `READONLY` or
/// `MASTERDOWN`, as the reply's code (Redis 7) or inside a script's error (Redis 6,
/// `ERR Error running script ... -READONLY ...`).
fn not_primary(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
    ) {
        return true;
    }
    let text = e.to_string();
    text.contains("READONLY You can't write") || text.contains("MASTERDOWN ")
}

/// The same error again, for each enqueue of a batch that failed as a whole.
fn replicate(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::Limit(m) => Error::Limit(m.clone()),
        Error::Corrupt(m) => Error::Corrupt(m.clone()),
        other => Error::Unavailable(other.to_string()),
    }
}

/// Connection settings for [`RedisStore::connect_with`].
///
/// Every wait is bounded, so a Redis that is down or restarting makes calls fail
/// with [`Error::Unavailable`] instead of hanging.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Most pooled connections. Calls share up to 4 of them, each multiplexing
    /// (pipelining) the concurrent calls sent on it. Default 16.
    pub max_connections: usize,
    /// Longest time to open a connection (TCP connect and handshake). Default 2 s.
    pub connect_timeout: Duration,
    /// Longest wait for a free pooled connection. Default 5 s.
    pub wait_timeout: Duration,
    /// Longest wait for the reply to one command or script; also bounds the health
    /// check of a pooled connection before reuse. Default 10 s.
    pub command_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: Duration::from_secs(2),
            wait_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
        }
    }
}

impl RedisOptions {
    /// Sets [`max_connections`](Self::max_connections).
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`wait_timeout`](Self::wait_timeout).
    #[must_use]
    pub fn with_wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Sets [`command_timeout`](Self::command_timeout).
    #[must_use]
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }
}

/// A [`Store`] on Redis, shareable by many dispatcher processes.
///
/// Every key is under `{prefix}:`; see the crate docs for the data model.
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    shared: Arc<Shared>,
    /// Where enqueues go to be written in batches; started on first use.
    enqueuer: Arc<Mutex<Option<mpsc::UnboundedSender<EnqueueJob>>>>,
    prefix: Arc<str>,
    redactor: Arc<Redactor>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `redis+unix:///path`) with default [`RedisOptions`], keeping every key under
    /// `{prefix}:`, and checks the server answers.
    ///
    /// Fails with [`Error::Invalid`] for a malformed URL or a server older than
    /// Redis 6.2 (the scripts use `ZADD … LT` and `ZRANGE … BYSCORE`), and with
    /// [`Error::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        Self::connect_with(url, prefix, &RedisOptions::default()).await
    }

    /// [`connect`](Self::connect) with explicit options.
    pub async fn connect_with(url: &str, prefix: &str, options: &RedisOptions) -> Result<Self> {
        let redactor = Redactor::for_url(url);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.command_timeout));
        let manager = Manager::new_with_config(url, config)
            .map_err(|e| Error::invalid("url", redactor.clean(e.to_string())))?;
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.command_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Unavailable(redactor.clean(format!("redis pool: {e}"))))?;
        let store = Self {
            shared: Arc::new(Shared::new(&pool)),
            enqueuer: Arc::default(),
            pool,
            prefix: prefix.into(),
            redactor: Arc::new(redactor),
        };
        store.ping().await?;
        // A server that does not answer INFO (an ACL user without @dangerous, some
        // proxies) is taken as it is.
        if let Ok(info) = store
            .query::<String>(redis::cmd("INFO").arg("server"))
            .await
        {
            check_version(&info)?;
        }
        Ok(store)
    }

    /// A store on an existing pool, keeping every key under `{prefix}:`.
    ///
    /// Give the pool wait/create/recycle timeouts (and a runtime), or calls may wait
    /// forever for a connection while Redis is down. Connections made with
    /// `redis`'s defaults time out replies after 500 ms, which may cut off large
    /// operations such as deleting an endpoint with a long history.
    pub fn from_pool(pool: Pool, prefix: &str) -> Self {
        Self {
            shared: Arc::new(Shared::new(&pool)),
            enqueuer: Arc::default(),
            pool,
            prefix: prefix.into(),
            redactor: Arc::new(Redactor::default()),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Checks the server answers.
    pub async fn ping(&self) -> Result<()> {
        self.query::<()>(&redis::cmd("PING")).await
    }

    /// Deletes every key under `{prefix}:`, returning how many. Everything this store
    /// holds is gone: meant for tests and tear-down. Not atomic: do not run it while
    /// other clients use the prefix.
    pub async fn clear(&self) -> Result<u64> {
        let mut pattern = String::with_capacity(self.prefix.len() + 2);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":*");
        let mut cursor = 0u64;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            if !keys.is_empty() {
                deleted += self.query::<u64>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// A shared connection (see [`Shared`]).
    async fn conn(&self) -> Result<Conn> {
        let slots = self.shared.slots.len();
        let slot = self.shared.next.fetch_add(1, AtomicOrdering::Relaxed) % slots;
        if let Some(conn) = self.held(slot) {
            return Ok(conn);
        }
        // Bounded like the pool's own wait: a call queued behind a filler that waited
        // out the pool does not wait as long again.
        let filling = self.shared.filling[slot].lock();
        let _filling = match self.pool.timeouts().wait {
            Some(limit) => tokio::time::timeout(limit, filling).await.map_err(|_| {
                Error::Unavailable(
                    "redis connection pool: timed out waiting for a connection".into(),
                )
            })?,
            None => filling.await,
        };
        // Another call may have filled the slot while this one waited.
        if let Some(conn) = self.held(slot) {
            return Ok(conn);
        }
        let fresh = self.pool.get().await.map_err(|e| self.redactor.pool(e))?;
        let conn = (*fresh).clone();
        let id = self.shared.filled.fetch_add(1, AtomicOrdering::Relaxed);
        *self.shared.slot(slot) = Some(Held { id, conn: fresh });
        Ok(Conn { conn, slot, id })
    }

    /// The connection held in `slot`, if any.
    fn held(&self, slot: usize) -> Option<Conn> {
        self.shared.slot(slot).as_ref().map(|held| Conn {
            conn: (*held.conn).clone(),
            slot,
            id: held.id,
        })
    }

    /// Maps a failed call's error, dropping its connection from the shared slot when
    /// the connection may be broken (it then goes back to the pool, whose health check
    /// replaces it). A connection to a server that is no longer a writable primary
    /// (`READONLY`, `MASTERDOWN`: after a failover that moved the primary's DNS name
    /// elsewhere) is closed instead: it would pass the health check, and only a new
    /// connection reaches the new primary.
    fn failed(&self, conn: &Conn, e: &RedisError) -> Error {
        let broken = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error()
            || e.is_connection_refusal();
        let demoted = not_primary(e);
        if broken || demoted {
            // Only this call's connection: the slot may hold a new one already.
            let held = self
                .shared
                .slot(conn.slot)
                .take_if(|held| held.id == conn.id);
            if demoted && let Some(held) = held {
                drop(Connection::take(held.conn));
            }
        }
        self.redactor.redis(e)
    }

    /// Deletes endpoint `id` and its deliveries, `BATCH` deliveries per script call
    /// (the endpoint is hidden from the first call on); without `begin`, only carries
    /// on a deletion already under way. Whether there was something to delete.
    async fn delete_in_steps(&self, id: &str, begin: bool) -> Result<bool> {
        let mut existed = false;
        loop {
            // Only the first step may begin: an endpoint put again meanwhile (which
            // finishes the deletion first) is a new one, and stays.
            let args = Args::new().str(id).num(BATCH).flag(begin && !existed);
            match int(self.eval(&SCRIPTS.delete_endpoint, args).await?)? {
                2 => existed = true,
                1 => return Ok(true),
                // Finished meanwhile by another call.
                _ => return Ok(existed),
            }
        }
    }

    /// Runs `script` with `ARGV = [prefix, args...]`.
    async fn eval(&self, script: &Script, args: Args) -> Result<Value> {
        let mut conn = self.conn().await?;
        let mut call = script.prepare_invoke();
        call.arg(self.prefix.as_bytes());
        for arg in args.0 {
            call.arg(arg);
        }
        match call.invoke_async(&mut conn.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(&conn, &e)),
        }
    }

    /// Enqueues one event (its `enqueue` script arguments, prefix excluded), written
    /// in one script call together with the enqueues made meanwhile.
    async fn enqueue_batched(&self, args: Args) -> Result<Value> {
        let (reply, rx) = oneshot::channel();
        let sender = {
            let mut enqueuer = self.enqueuer.lock().unwrap_or_else(PoisonError::into_inner);
            match enqueuer.as_ref() {
                Some(tx) if !tx.is_closed() => tx.clone(),
                // None yet, or its runtime is gone: (re)start it on the caller's runtime.
                _ => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    // The writer holds no sender: it stops once every clone of the
                    // store is gone.
                    let writer = Self {
                        pool: self.pool.clone(),
                        shared: Arc::clone(&self.shared),
                        enqueuer: Arc::default(),
                        prefix: Arc::clone(&self.prefix),
                        redactor: Arc::clone(&self.redactor),
                    };
                    tokio::spawn(writer.write_enqueues(rx));
                    *enqueuer = Some(tx.clone());
                    tx
                }
            }
        };
        sender
            .send(EnqueueJob {
                args: args.0,
                reply,
            })
            .map_err(|_| Error::Unavailable("redis enqueue writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("redis enqueue writer stopped".into()))?
    }

    /// Writes queued enqueues, up to [`ENQUEUE_BATCH`] per script call and
    /// [`ENQUEUE_IN_FLIGHT`] calls at a time: under load, enqueues that arrive while
    /// calls are in flight share the next one.
    async fn write_enqueues(self, mut rx: mpsc::UnboundedReceiver<EnqueueJob>) {
        let permits = Arc::new(Semaphore::new(ENQUEUE_IN_FLIGHT));
        while let Some(first) = rx.recv().await {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let mut jobs = vec![first];
            while jobs.len() < ENQUEUE_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let store = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                store.write_batch(jobs).await;
            });
        }
    }

    async fn write_batch(&self, mut jobs: Vec<EnqueueJob>) {
        let mut args = Args::new().num(jobs.len());
        for job in &mut jobs {
            args = args.num(job.args.len());
            args.0.append(&mut job.args);
        }
        // Three values per event, flat.
        let replies = self
            .eval(&SCRIPTS.enqueue, args)
            .await
            .and_then(array)
            .and_then(|r| {
                if r.len() == 3 * jobs.len() {
                    Ok(r)
                } else {
                    Err(corrupt("enqueue replied with the wrong count"))
                }
            });
        match replies {
            Ok(replies) => {
                let mut replies = replies.into_iter();
                for job in jobs {
                    let reply: Vec<Value> = replies.by_ref().take(3).collect();
                    let _ = job.reply.send(Ok(Value::Array(reply)));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(replicate(&e)));
                }
            }
        }
    }

    /// Runs one command.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.conn().await?;
        match cmd.query_async(&mut conn.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(&conn, &e)),
        }
    }
}

/// Refuses a server older than 6.2, from its `INFO server` answer: a script failing
/// half-way on an unknown option would leave deliveries written but unscheduled. An
/// answer without a version is taken as it is.
fn check_version(info: &str) -> Result<()> {
    let Some(version) = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))
    else {
        return Ok(());
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 2) {
        return Err(Error::invalid(
            "url",
            format!("the server runs Redis {version}; this store needs Redis 6.2 or newer"),
        ));
    }
    Ok(())
}

fn tenant_str(tenant: Option<&TenantId>) -> Option<&str> {
    tenant.map(TenantId::as_str)
}

#[async_trait]
impl Store for RedisStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        endpoint.validate()?;
        let json = serde_json::to_string(endpoint)
            .map_err(|e| Error::invalid("endpoint", e.to_string()))?;
        let args = Args::new()
            .str(endpoint.id.as_str())
            .str(&json)
            .flag(endpoint.enabled)
            .flag(endpoint.ordering == Ordering::Strict)
            .opt(tenant_str(endpoint.tenant_id.as_ref()));
        if int(self.eval(&SCRIPTS.put_endpoint, args.clone()).await?)? == 0 {
            // A deletion of this id began and did not end (its process stopped):
            // finish it, so the new endpoint starts without the old one's deliveries.
            self.delete_in_steps(endpoint.id.as_str(), false).await?;
            if int(self.eval(&SCRIPTS.put_endpoint, args).await?)? == 0 {
                return Err(Error::Unavailable(format!(
                    "endpoint {} is being deleted by another call",
                    endpoint.id
                )));
            }
        }
        Ok(())
    }

    async fn get_endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>> {
        let (json, deleting): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .query(
                redis::cmd("HMGET")
                    .arg(format!("{}:ep:{id}", self.prefix))
                    .arg("json")
                    .arg("deleting"),
            )
            .await?;
        // An endpoint being deleted is gone already for its readers.
        json.filter(|_| deleting.is_none())
            .map(|j| {
                serde_json::from_slice(&j)
                    .map_err(|e| corrupt(format!("stored endpoint {id}: {e}")))
            })
            .transpose()
    }

    async fn list_endpoints(&self, tenant: Option<&TenantId>) -> Result<Vec<Endpoint>> {
        let reply = self
            .eval(&SCRIPTS.list_endpoints, Args::new().opt(tenant_str(tenant)))
            .await?;
        array(reply)?
            .into_iter()
            .map(|v| {
                serde_json::from_str(&text(v)?)
                    .map_err(|e| corrupt(format!("stored endpoint: {e}")))
            })
            .collect()
    }

    async fn delete_endpoint(&self, id: &EndpointId) -> Result<bool> {
        // On a task of its own, so that a caller who stops waiting (a client that
        // hangs up) does not leave the deletion half done.
        let (store, id) = (self.clone(), id.to_string());
        tokio::spawn(async move { store.delete_in_steps(&id, true).await })
            .await
            .map_err(|e| Error::Unavailable(format!("deletion task failed: {e}")))?
    }

    async fn enqueue(
        &self,
        event: &Event,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> Result<Enqueued> {
        if endpoints.is_empty() {
            return Ok(Enqueued::default());
        }
        let ekey = event_key(event.tenant_id.as_ref(), &event.id);
        let mut args = Args::new()
            .num(millis(now))
            .str(&ekey)
            .opt(tenant_str(event.tenant_id.as_ref()))
            .num(event.priority)
            .owned(event_record(event, &ekey, now))
            .num(endpoints.len());
        for id in endpoints {
            let key = IdempotencyKey::new(event.id.clone(), id.clone(), event.tenant_id.clone());
            args = args.str(id.as_str()).str(&delivery_key(&key));
        }
        let mut reply = array(self.enqueue_batched(args).await?)?.into_iter();
        let status = text(reply.next().unwrap_or_default())?;
        let mut next = || reply.next().ok_or_else(|| corrupt("short enqueue reply"));
        match status.as_str() {
            "ok" => Ok(Enqueued {
                created: usize::try_from(int(next()?)?).map_err(corrupt)?,
                existing: usize::try_from(int(next()?)?).map_err(corrupt)?,
            }),
            "not_found" => Err(Error::not_found("endpoint", text(next()?)?)),
            "invalid" => Err(Error::invalid(
                "endpoints",
                format!(
                    "endpoint {} belongs to another tenant than event {}",
                    text(next()?)?,
                    event.id
                ),
            )),
            other => Err(corrupt(format!("unexpected enqueue reply {other:?}"))),
        }
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let limit = request.limit.min(MAX_COUNT);
        let until = chrono::Duration::from_std(request.lease)
            .ok()
            .and_then(|lease| request.now.checked_add_signed(lease))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut args = Args::new()
            .num(millis(request.now))
            .num(millis(until))
            .num(limit)
            .num(request.per_endpoint_limit.min(limit))
            .num(request.endpoint_limits.len());
        for (id, max) in &request.endpoint_limits {
            args = args.str(id.as_str()).num((*max).min(limit));
        }
        let [claimed, events] = tuple(self.eval(&SCRIPTS.claim, args).await?)?;
        // An event record that is missing (evicted, or deleted by hand) or unreadable
        // fails its deliveries, not the claim: otherwise every later claim would fail
        // on them too, and nothing would be delivered.
        let events: Vec<std::result::Result<Event, String>> = array(events)?
            .into_iter()
            .map(|v| match v {
                Value::Nil => Err("the event's record is missing from Redis (evicted or \
                    deleted): it cannot be sent"
                    .to_owned()),
                v => event(v).map_err(|e| format!("the event's record cannot be read: {e}")),
            })
            .collect();
        let mut out = Vec::new();
        let mut unsendable = Vec::new();
        let mut items = array(claimed)?.into_iter();
        while let Some(record) = items.next() {
            let delivery: Delivery = delivery(record)?;
            let index = items
                .next()
                .ok_or_else(|| corrupt("short claim reply"))
                .and_then(int)?;
            let event = usize::try_from(index - 1)
                .ok()
                .and_then(|i| events.get(i))
                .ok_or_else(|| corrupt("claim replied with a wrong event index"))?
                .clone();
            let DeliveryState::InFlight { lease_until } = delivery.state else {
                return Err(corrupt("claimed delivery is not in flight"));
            };
            let lease = Lease {
                key: delivery.key.clone(),
                token: delivery.lease_token,
                until: lease_until,
            };
            match event {
                Ok(event) => out.push(Claimed {
                    event,
                    delivery,
                    lease,
                }),
                Err(why) => unsendable.push(Finished {
                    lease,
                    completion: Completion::Dead {
                        attempt: Attempt::failed(request.now, Duration::ZERO, why),
                    },
                }),
            }
        }
        if !unsendable.is_empty() {
            // Into the dead letters, where they can be seen. Should this fail, their
            // leases expire and a later claim tries again.
            let _ = self.complete(&unsendable, request.now).await;
        }
        Ok(out)
    }

    async fn complete(&self, finished: &[Finished], now: DateTime<Utc>) -> Result<Completed> {
        if finished.is_empty() {
            return Ok(Completed::default());
        }
        let mut args = Args::new().num(millis(now)).num(finished.len());
        for f in finished {
            let (kind, at) = match &f.completion {
                Completion::Delivered { .. } => ("delivered", now),
                Completion::Dead { .. } => ("dead", now),
                Completion::Retry {
                    next_attempt_at, ..
                } => ("retry", *next_attempt_at),
                Completion::Defer { until } => ("defer", *until),
            };
            args = args
                .str(&delivery_key(&f.lease.key))
                .str(f.lease.key.endpoint_id.as_str())
                .str(&token_field(f.lease.token))
                .str(kind)
                .num(millis(at));
            args = match f.completion.attempt() {
                Some(attempt) => args
                    .flag(true)
                    .str(&status_field(attempt.status))
                    .str(&error_part(attempt.error.as_deref()))
                    .owned(attempt_entry(attempt)?),
                None => args.flag(false).str("").str("").str(""),
            };
        }
        let applied = array(self.eval(&SCRIPTS.complete, args).await?)?;
        if applied.len() != finished.len() {
            return Err(corrupt("complete replied with the wrong count"));
        }
        let mut result = Completed::default();
        for (f, ok) in finished.iter().zip(applied) {
            if int(ok)? == 1 {
                result.applied += 1;
            } else {
                result.lease_lost.push(f.lease.key.clone());
            }
        }
        Ok(result)
    }

    async fn get_delivery(&self, key: &IdempotencyKey) -> Result<Option<DeliveryRecord>> {
        match self
            .eval(&SCRIPTS.get_delivery, Args::new().str(&delivery_key(key)))
            .await?
        {
            Value::Nil => Ok(None),
            reply => delivery_record(reply).map(Some),
        }
    }

    async fn get_event(
        &self,
        tenant: Option<&TenantId>,
        id: &EventId,
    ) -> Result<Option<EventRecord>> {
        let reply = self
            .eval(&SCRIPTS.get_event, Args::new().str(&event_key(tenant, id)))
            .await?;
        if reply == Value::Nil {
            return Ok(None);
        }
        let [record, deliveries] = tuple(reply)?;
        Ok(Some(EventRecord {
            event: event(record)?,
            deliveries: array(deliveries)?
                .into_iter()
                .map(delivery_record)
                .collect::<Result<_>>()?,
        }))
    }

    async fn list_dead(&self, query: &DeadLetterQuery) -> Result<Vec<Delivery>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let limit = query.limit.min(MAX_COUNT);
        let mut found = Vec::new();
        let (mut after_at, mut after_seq) = (String::new(), String::new());
        loop {
            let args = Args::new()
                .opt(tenant_str(query.tenant.as_ref()))
                .opt(query.endpoint_id.as_ref().map(EndpointId::as_str))
                .num(limit - found.len())
                .str(&after_at)
                .str(&after_seq)
                .num(DEAD_SCAN);
            let mut values = array(self.eval(&SCRIPTS.list_dead, args).await?)?.into_iter();
            let mut cursor = || {
                values
                    .next()
                    .map_or_else(|| Err(corrupt("no cursor")), text)
            };
            (after_at, after_seq) = (cursor()?, cursor()?);
            for value in values {
                found.push(delivery(value)?);
            }
            if after_at.is_empty() || found.len() >= limit {
                return Ok(found);
            }
        }
    }

    async fn replay_dead(&self, key: &IdempotencyKey, now: DateTime<Utc>) -> Result<bool> {
        let args = Args::new().num(millis(now)).str(&delivery_key(key));
        Ok(int(self.eval(&SCRIPTS.replay_one, args).await?)? == 1)
    }

    async fn replay_all_dead(&self, tenant: Option<&TenantId>, now: DateTime<Utc>) -> Result<u64> {
        // Only what is dead now: a replayed delivery that dies again during the call
        // joins the end of the queue and must not be replayed (and counted) again.
        // Deaths are appended in time order, so the first `left` entries by rank are
        // the ones dead now, less those replayed meanwhile by someone else.
        let mut left: usize = self
            .query(redis::cmd("ZCARD").arg(format!("{}:dead", self.prefix)))
            .await?;
        let mut offset = 0i64;
        let mut total = 0u64;
        while left > 0 {
            let count = left.min(BATCH);
            let args = Args::new()
                .num(millis(now))
                .opt(tenant_str(tenant))
                .num(offset)
                .num(count);
            let [replayed, skipped, seen] = tuple(self.eval(&SCRIPTS.replay_batch, args).await?)?;
            total += u64::try_from(int(replayed)?).map_err(corrupt)?;
            offset += int(skipped)?;
            let seen = usize::try_from(int(seen)?).map_err(corrupt)?;
            if seen < count {
                break;
            }
            left -= seen;
        }
        Ok(total)
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        // Deletions whose process stopped half-way are finished here.
        let deleting: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(format!("{}:deleting", self.prefix)))
            .await?;
        // One that cannot go on (corrupt data) does not hold up retention.
        for id in deleting {
            let _ = self.delete_in_steps(&id, false).await;
        }
        let mut total = 0u64;
        loop {
            let args = Args::new().num(millis(before)).num(BATCH);
            let [removed, seen] = tuple(self.eval(&SCRIPTS.prune_batch, args).await?)?;
            total += u64::try_from(int(removed)?).map_err(corrupt)?;
            if usize::try_from(int(seen)?).map_err(corrupt)? < BATCH {
                return Ok(total);
            }
        }
    }

    async fn unfinished(&self) -> Result<Option<u64>> {
        let count = int(self.eval(&SCRIPTS.unfinished, Args::new()).await?)?;
        u64::try_from(count).map(Some).map_err(corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_6_2_are_refused() {
        let info = |version: &str| {
            format!("# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n")
        };
        for old in ["6.0.16", "5.0.7", "6.1.99"] {
            let err = check_version(&info(old)).unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{old}: {err}");
            assert!(err.to_string().contains(old), "{err}");
        }
        for new in ["6.2.0", "7.0.15", "10.0.1"] {
            check_version(&info(new)).unwrap();
        }
        check_version("# Server\r\n").unwrap();
    }

    #[test]
    fn a_server_no_longer_primary_is_recognised_in_every_form() {
        let error = |reply: &str| {
            redis::parse_redis_value(format!("-{reply}\r\n").as_bytes())
                .expect("a reply")
                .extract_error()
                .expect_err("an error reply")
        };
        for reply in [
            // Redis 7, a command or a script.
            "READONLY You can't write against a read only replica.",
            "READONLY You can't write against a read only replica. script: 131b, on @user_script:1.",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            // Redis 6, a script.
            "ERR Error running script (call to f_131b): @user_script:1: @user_script: 1: \
             -READONLY You can't write against a read only replica.",
        ] {
            assert!(not_primary(&error(reply)), "{reply}");
        }
        for reply in [
            "ERR Error running script (call to f_131b): @user_script:9: attempt to compare nil",
            "NOSCRIPT No matching script.",
            "OOM command not allowed when used memory > 'maxmemory'.",
        ] {
            assert!(!not_primary(&error(reply)), "{reply}");
        }
    }
}
