//! [`RedisStore`]: the [`Store`] on Redis.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::{
    Connection, Manager, Pool, Runtime,
    redis::{self, AsyncConnectionConfig, Script, Value},
};
use webhook_core::{
    ClaimRequest, Claimed, Completed, Completion, DeadLetterQuery, Delivery, DeliveryRecord,
    DeliveryState, Endpoint, EndpointId, Enqueued, Error, Event, EventId, EventRecord, Finished,
    IdempotencyKey, Lease, Ordering, Result, Store, TenantId,
};

use crate::{
    codec::{
        Args, Fields, array, attempts, corrupt, delivery_key, event_key, int, millis, text, tuple,
    },
    error::Redactor,
    scripts::SCRIPTS,
};

/// Counts passed to scripts are capped here (Lua numbers are doubles).
const MAX_COUNT: usize = 1 << 30;
/// Dead letters replayed or deliveries pruned per script call, so that no single
/// call blocks Redis for long.
const BATCH: usize = 500;

/// Connection settings for [`RedisStore::connect_with`].
///
/// Every wait is bounded, so a Redis that is down or restarting makes calls fail
/// with [`Error::Unavailable`] instead of hanging.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Most pooled connections (each multiplexes concurrent calls). Default 16.
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
    /// Fails with [`Error::Invalid`] for a malformed URL and with
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
            pool,
            prefix: prefix.into(),
            redactor: Arc::new(redactor),
        };
        store.ping().await?;
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
        let mut conn = self.conn().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.redactor.redis(&e))
    }

    /// Deletes every key under `{prefix}:`, returning how many. Everything this store
    /// holds is gone: meant for tests and tear-down. Not atomic: do not run it while
    /// other clients use the prefix.
    pub async fn clear(&self) -> Result<u64> {
        let mut conn = self.conn().await?;
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
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.redactor.redis(&e))?;
            if !keys.is_empty() {
                deleted += redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<u64>(&mut conn)
                    .await
                    .map_err(|e| self.redactor.redis(&e))?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    async fn conn(&self) -> Result<Connection> {
        self.pool.get().await.map_err(|e| self.redactor.pool(e))
    }

    /// Runs `script` with `ARGV = [prefix, args...]`.
    async fn eval(&self, script: &Script, args: Args) -> Result<Value> {
        let mut conn = self.conn().await?;
        let mut call = script.prepare_invoke();
        call.arg(self.prefix.as_bytes());
        for arg in args.0 {
            call.arg(arg.as_slice());
        }
        call.invoke_async(&mut conn)
            .await
            .map_err(|e| self.redactor.redis(&e))
    }
}

fn record(v: Value) -> Result<DeliveryRecord> {
    let [delivery, history] = tuple(v)?;
    Ok(DeliveryRecord {
        delivery: Fields::parse(delivery)?.delivery()?,
        attempts: attempts(history)?,
    })
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
        self.eval(&SCRIPTS.put_endpoint, args).await?;
        Ok(())
    }

    async fn get_endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>> {
        let mut conn = self.conn().await?;
        let json: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(format!("{}:ep:{id}", self.prefix))
            .arg("json")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.redactor.redis(&e))?;
        json.map(|j| {
            serde_json::from_slice(&j).map_err(|e| corrupt(format!("stored endpoint {id}: {e}")))
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
        let reply = self
            .eval(&SCRIPTS.delete_endpoint, Args::new().str(id.as_str()))
            .await?;
        Ok(int(reply)? == 1)
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
        let mut args = Args::new()
            .num(millis(now))
            .str(&event_key(event.tenant_id.as_ref(), &event.id))
            .str(event.id.as_str())
            .opt(tenant_str(event.tenant_id.as_ref()))
            .opt(event.event_type.as_deref())
            .num(millis(event.created_at.unwrap_or(now)))
            .num(event.priority)
            .bytes(&event.payload)
            .num(endpoints.len());
        for id in endpoints {
            let key = IdempotencyKey::new(event.id.clone(), id.clone(), event.tenant_id.clone());
            args = args.str(id.as_str()).str(&delivery_key(&key));
        }
        let mut reply = array(self.eval(&SCRIPTS.enqueue, args).await?)?.into_iter();
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
        let reply = self.eval(&SCRIPTS.claim, args).await?;
        array(reply)?
            .into_iter()
            .map(|item| {
                let [_seq, delivery, event] = tuple(item)?;
                let delivery: Delivery = Fields::parse(delivery)?.delivery()?;
                let DeliveryState::InFlight { lease_until } = delivery.state else {
                    return Err(corrupt("claimed delivery is not in flight"));
                };
                let lease = Lease {
                    key: delivery.key.clone(),
                    token: delivery.lease_token,
                    until: lease_until,
                };
                Ok(Claimed {
                    event: Fields::parse(event)?.event()?,
                    delivery,
                    lease,
                })
            })
            .collect()
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
            let attempt = f.completion.attempt();
            let json = attempt
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| Error::invalid("attempt", e.to_string()))?;
            args = args
                .str(&delivery_key(&f.lease.key))
                .num(f.lease.token)
                .str(kind)
                .num(millis(at))
                .opt(json.as_deref())
                .str(
                    &attempt
                        .and_then(|a| a.status)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                )
                .opt(attempt.and_then(|a| a.error.as_deref()));
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
            reply => record(reply).map(Some),
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
        let [event, deliveries] = tuple(reply)?;
        Ok(Some(EventRecord {
            event: Fields::parse(event)?.event()?,
            deliveries: array(deliveries)?
                .into_iter()
                .map(record)
                .collect::<Result<_>>()?,
        }))
    }

    async fn list_dead(&self, query: &DeadLetterQuery) -> Result<Vec<Delivery>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let args = Args::new()
            .opt(tenant_str(query.tenant.as_ref()))
            .opt(query.endpoint_id.as_ref().map(EndpointId::as_str))
            .num(query.limit.min(MAX_COUNT));
        array(self.eval(&SCRIPTS.list_dead, args).await?)?
            .into_iter()
            .map(|v| Fields::parse(v)?.delivery())
            .collect()
    }

    async fn replay_dead(&self, key: &IdempotencyKey, now: DateTime<Utc>) -> Result<bool> {
        let args = Args::new().num(millis(now)).str(&delivery_key(key));
        Ok(int(self.eval(&SCRIPTS.replay_one, args).await?)? == 1)
    }

    async fn replay_all_dead(&self, tenant: Option<&TenantId>, now: DateTime<Utc>) -> Result<u64> {
        let mut offset = 0i64;
        let mut total = 0u64;
        loop {
            let args = Args::new()
                .num(millis(now))
                .opt(tenant_str(tenant))
                .num(offset)
                .num(BATCH);
            let [replayed, skipped, seen] = tuple(self.eval(&SCRIPTS.replay_batch, args).await?)?;
            total += u64::try_from(int(replayed)?).map_err(corrupt)?;
            offset += int(skipped)?;
            if usize::try_from(int(seen)?).map_err(corrupt)? < BATCH {
                return Ok(total);
            }
        }
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
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
}
