#![doc = include_str!("../README.md")]

mod decode;
mod enqueue;
mod error;
mod migrate;
mod sql;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{
    NoTls,
    config::SslMode,
    types::{ToSql, Type},
};
use webhook_core::{
    ClaimRequest, Claimed, Completed, Completion, DeadLetterQuery, Delivery, DeliveryRecord,
    Endpoint, EndpointId, Enqueued, Error, Event, EventId, EventRecord, Finished, IdempotencyKey,
    Lease, Ordering, Result, Store, TenantId,
};

pub use deadpool_postgres;
pub use migrate::{MIGRATIONS, Migration, SCHEMA_VERSION};

use crate::{
    decode::{bigint, check_text, get, storable_tenant, storable_text, tenant_column},
    enqueue::{Batcher, Ctx},
    error::Redactor,
    sql::Sql,
};

/// The schema used when none is configured.
pub const DEFAULT_SCHEMA: &str = "webhook";

/// Delivered deliveries deleted per transaction by [`Store::prune`].
const PRUNE_CHUNK: i64 = 10_000;

/// How to connect and where the tables live.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// The schema holding every table (created if missing). ASCII letters, digits and
    /// `_`, not starting with a digit, at most 63 bytes. Default [`DEFAULT_SCHEMA`].
    pub schema: String,
    /// Most pooled connections. Default 16. Ignored by [`PostgresStore::from_pool`].
    pub pool_size: usize,
    /// Longest wait to open a connection, unless the URL sets `connect_timeout`.
    /// Default 10 s. Ignored by [`PostgresStore::from_pool`].
    pub connect_timeout: Duration,
    /// Longest wait for a free pooled connection before an operation fails with
    /// [`Error::Unavailable`]. Default 30 s. Ignored by [`PostgresStore::from_pool`].
    pub wait_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(30),
        }
    }
}

impl PostgresOptions {
    /// Sets the schema.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the pool size.
    #[must_use]
    pub fn with_pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }
}

/// A [`Store`] on PostgreSQL, shared safely by any number of dispatcher processes.
///
/// See the [crate documentation](crate) for the schema and the claim strategy.
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    sql: Arc<Sql>,
    redactor: Redactor,
    /// Gathers concurrent enqueues into batches (group commit); `None` outside a Tokio
    /// runtime.
    batcher: Option<Batcher>,
    /// The endpoint this store served last: the next claim starts after it.
    cursor: Mutex<String>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// Checks that `schema` is a plain identifier, so quoting it is enough.
fn check_schema(schema: &str) -> Result<()> {
    let mut bytes = schema.bytes();
    let plain = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && schema.len() <= 63;
    if plain {
        Ok(())
    } else {
        Err(Error::invalid(
            "schema",
            format!(
                "{schema:?} must be 1 to 63 ASCII letters, digits or '_', not starting with a digit"
            ),
        ))
    }
}

impl PostgresStore {
    /// Connects with default [`PostgresOptions`] and applies pending migrations.
    ///
    /// `url` is a `postgres://user:password@host:port/database?options` URL or a
    /// `key=value` connection string. TLS is not supported yet: `sslmode=require` is
    /// refused and `sslmode=prefer` (the default) connects without TLS.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects with `options` and applies pending migrations.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self> {
        check_schema(&options.schema)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::invalid(
                "url",
                format!("not a PostgreSQL connection URL or string: {e}"),
            )
        })?;
        let redactor = Redactor::new(&config);
        if matches!(config.get_ssl_mode(), SslMode::Require) {
            return Err(Error::invalid(
                "url",
                "sslmode=require: TLS to PostgreSQL is not supported yet",
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("webhook-store-postgres");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| Error::Unavailable(redactor.clean(&format!("building the pool: {e}"))))?;
        Self::open(pool, options, redactor).await
    }

    /// Uses an existing pool (without TLS, or with TLS configured by the caller) and
    /// applies pending migrations. Only `options.schema` is used.
    pub async fn from_pool(pool: Pool, options: PostgresOptions) -> Result<Self> {
        Self::open(pool, options, Redactor::default()).await
    }

    async fn open(pool: Pool, options: PostgresOptions, redactor: Redactor) -> Result<Self> {
        check_schema(&options.schema)?;
        let quoted = format!("\"{}\"", options.schema);
        let mut client = pool.get().await.map_err(|e| redactor.pool(&e))?;
        migrate::run(&mut client, &options.schema, &quoted, &redactor).await?;
        drop(client);
        let sql = Arc::new(Sql::new(&quoted));
        let batcher = Batcher::start(Ctx {
            pool: pool.clone(),
            sql: Arc::clone(&sql),
            redactor: redactor.clone(),
        });
        Ok(Self {
            sql,
            batcher,
            pool,
            schema: options.schema,
            redactor,
            cursor: Mutex::new(String::new()),
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    async fn client(&self) -> Result<Client> {
        self.pool.get().await.map_err(|e| self.redactor.pool(&e))
    }

    fn db(&self, error: &tokio_postgres::Error) -> Error {
        self.redactor.db(error)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            pool: self.pool.clone(),
            sql: Arc::clone(&self.sql),
            redactor: self.redactor.clone(),
        }
    }

    async fn prepare(&self, client: &Client, sql: &str) -> Result<tokio_postgres::Statement> {
        client.prepare_cached(sql).await.map_err(|e| self.db(&e))
    }
}

/// The stored name of an ordering.
fn ordering_name(ordering: Ordering) -> &'static str {
    match ordering {
        Ordering::Unordered => "unordered",
        Ordering::Strict => "strict",
    }
}

/// Whether `key` can name a stored delivery at all.
fn storable_key(key: &IdempotencyKey) -> bool {
    storable_tenant(key.tenant.as_ref())
        && ![
            tenant_column(key.tenant.as_ref()),
            key.endpoint_id.as_str(),
            key.event_id.as_str(),
        ]
        .iter()
        .any(|s| s.contains('\0'))
}

/// The columns of one completion, for the batched `complete`.
#[derive(Default)]
struct CompleteBatch<'a> {
    index: Vec<usize>,
    tenants: Vec<&'a str>,
    endpoints: Vec<&'a str>,
    events: Vec<&'a str>,
    tokens: Vec<i64>,
    kinds: Vec<&'static str>,
    next_at: Vec<Option<DateTime<Utc>>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    duration_ms: Vec<i64>,
    status: Vec<Option<i32>>,
    errors: Vec<Option<String>>,
    excerpts: Vec<Option<String>>,
}

impl<'a> CompleteBatch<'a> {
    fn push(&mut self, index: usize, finished: &'a Finished) {
        let key = &finished.lease.key;
        let (kind, next_at) = match &finished.completion {
            Completion::Delivered { .. } => ("delivered", None),
            Completion::Retry {
                next_attempt_at, ..
            } => ("retry", Some(*next_attempt_at)),
            Completion::Dead { .. } => ("dead", None),
            Completion::Defer { until } => ("defer", Some(*until)),
        };
        let attempt = finished.completion.attempt();
        self.index.push(index);
        self.tenants.push(tenant_column(key.tenant.as_ref()));
        self.endpoints.push(key.endpoint_id.as_str());
        self.events.push(key.event_id.as_str());
        self.tokens
            .push(i64::try_from(finished.lease.token).unwrap_or(-1));
        self.kinds.push(kind);
        self.next_at.push(next_at);
        self.started_at.push(attempt.map(|a| a.started_at));
        self.duration_ms
            .push(attempt.map_or(0, |a| i64::try_from(a.duration_ms).unwrap_or(i64::MAX)));
        self.status
            .push(attempt.and_then(|a| a.status).map(i32::from));
        self.errors
            .push(attempt.and_then(|a| a.error.as_deref()).map(storable_text));
        self.excerpts.push(
            attempt
                .and_then(|a| a.response_excerpt.as_deref())
                .map(storable_text),
        );
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        endpoint.validate()?;
        if !storable_tenant(endpoint.tenant_id.as_ref()) {
            return Err(Error::invalid("tenant_id", "must not be empty"));
        }
        check_text("id", endpoint.id.as_str())?;
        check_text("tenant_id", tenant_column(endpoint.tenant_id.as_ref()))?;
        let config = serde_json::to_value(endpoint)
            .map_err(|e| Error::invalid("endpoint", format!("cannot be stored: {e}")))?;
        let client = self.client().await?;
        let statement = self.prepare(&client, &self.sql.put_endpoint).await?;
        client
            .execute(
                &statement,
                &[
                    &endpoint.id.as_str(),
                    &tenant_column(endpoint.tenant_id.as_ref()),
                    &config,
                    &endpoint.enabled,
                    &ordering_name(endpoint.ordering),
                ],
            )
            .await
            .map_err(|e| self.db(&e))?;
        Ok(())
    }

    async fn get_endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>> {
        if id.as_str().contains('\0') {
            return Ok(None);
        }
        let client = self.client().await?;
        let statement = self.prepare(&client, &self.sql.get_endpoint).await?;
        let row = client
            .query_opt(&statement, &[&id.as_str()])
            .await
            .map_err(|e| self.db(&e))?;
        row.as_ref().map(decode::endpoint).transpose()
    }

    async fn list_endpoints(&self, tenant: Option<&TenantId>) -> Result<Vec<Endpoint>> {
        if !storable_tenant(tenant) || tenant.is_some_and(|t| t.as_str().contains('\0')) {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let rows = match tenant {
            None => {
                let statement = self.prepare(&client, &self.sql.list_endpoints).await?;
                client.query(&statement, &[]).await
            }
            Some(tenant) => {
                let statement = self
                    .prepare(&client, &self.sql.list_tenant_endpoints)
                    .await?;
                client.query(&statement, &[&tenant.as_str()]).await
            }
        }
        .map_err(|e| self.db(&e))?;
        rows.iter().map(decode::endpoint).collect()
    }

    async fn delete_endpoint(&self, id: &EndpointId) -> Result<bool> {
        if id.as_str().contains('\0') {
            return Ok(false);
        }
        let mut client = self.client().await?;
        let lock = self.prepare(&client, &self.sql.lock_endpoint).await?;
        let delete = self.prepare(&client, &self.sql.delete_endpoint).await?;
        let orphans = self
            .prepare(&client, &self.sql.delete_orphan_events)
            .await?;
        let tx = client.transaction().await.map_err(|e| self.db(&e))?;
        // Locking the endpoint first holds back enqueues to it (their foreign key check
        // waits), so the deletion below sees every delivery it has.
        let found = tx
            .query_opt(&lock, &[&id.as_str()])
            .await
            .map_err(|e| self.db(&e))?;
        if found.is_none() {
            tx.rollback().await.map_err(|e| self.db(&e))?;
            return Ok(false);
        }
        let row = tx
            .query_one(&delete, &[&id.as_str()])
            .await
            .map_err(|e| self.db(&e))?;
        let events: Vec<i64> = get(&row, "events")?;
        if !events.is_empty() {
            tx.execute(&orphans, &[&events])
                .await
                .map_err(|e| self.db(&e))?;
        }
        tx.commit().await.map_err(|e| self.db(&e))?;
        Ok(true)
    }

    async fn enqueue(
        &self,
        event: &Event,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> Result<Enqueued> {
        if !storable_tenant(event.tenant_id.as_ref()) {
            return Err(Error::invalid("tenant_id", "must not be empty"));
        }
        check_text("id", event.id.as_str())?;
        check_text("tenant_id", tenant_column(event.tenant_id.as_ref()))?;
        if let Some(event_type) = &event.event_type {
            check_text("event_type", event_type)?;
        }
        if let Some(id) = endpoints.iter().find(|id| id.as_str().contains('\0')) {
            return Err(Error::not_found("endpoint", id.as_str()));
        }
        if endpoints.is_empty() {
            return Ok(Enqueued::default());
        }
        let tenant = tenant_column(event.tenant_id.as_ref());
        let ids: Vec<&str> = endpoints.iter().map(EndpointId::as_str).collect();
        let batched = match &self.batcher {
            Some(batcher) => batcher.enqueue(event, &ids, now).await,
            None => None,
        };
        let outcome = match batched {
            Some(outcome) => outcome?,
            None => {
                let client = self.client().await?;
                self.ctx().one(&client, event, &ids, now).await?
            }
        };
        let tenants = outcome.tenants;
        for (id, found) in endpoints.iter().zip(&tenants) {
            match found {
                None => return Err(Error::not_found("endpoint", id.as_str())),
                Some(found) if found != tenant => {
                    return Err(Error::invalid(
                        "endpoints",
                        format!(
                            "endpoint {id} belongs to another tenant than event {}",
                            event.id
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let created = outcome.created;
        Ok(Enqueued {
            created,
            existing: endpoints.len().saturating_sub(created),
        })
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let lease_until = chrono::Duration::from_std(request.lease)
            .ok()
            .and_then(|lease| request.now.checked_add_signed(lease))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let (override_ids, override_limits): (Vec<&str>, Vec<i64>) = request
            .endpoint_limits
            .iter()
            .map(|(id, limit)| (id.as_str(), bigint(*limit)))
            .filter(|(id, _)| !id.contains('\0'))
            .unzip();
        let cursor = self
            .cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let client = self.client().await?;
        let statement = self.prepare(&client, &self.sql.claim).await?;
        let rows = client
            .query(
                &statement,
                &[
                    &request.now,
                    &lease_until,
                    &bigint(request.per_endpoint_limit),
                    &override_ids,
                    &override_limits,
                    &bigint(request.limit),
                    &cursor.as_str(),
                ],
            )
            .await
            .map_err(|e| self.db(&e))?;
        drop(client);
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let delivery = decode::delivery(row)?;
            let lease_until = delivery.state.claimable_at().ok_or_else(|| {
                error::corrupt("claim", format!("{} was not left in flight", delivery.key))
            })?;
            let due: DateTime<Utc> = get(row, "due")?;
            let seq: i64 = get(row, "seq")?;
            let lease = Lease {
                key: delivery.key.clone(),
                token: delivery.lease_token,
                until: lease_until,
            };
            claimed.push((
                due,
                seq,
                Claimed {
                    event: decode::event(row)?,
                    delivery,
                    lease,
                },
            ));
        }
        // Claim order: endpoints in round-robin order from the cursor, then by priority
        // (highest first), due time and creation order.
        let rotation = |id: &EndpointId| (id.as_str() <= cursor.as_str(), id.clone());
        claimed.sort_by(|(a_due, a_seq, a), (b_due, b_seq, b)| {
            (
                rotation(&a.delivery.key.endpoint_id),
                std::cmp::Reverse(a.delivery.priority),
                a_due,
                a_seq,
            )
                .cmp(&(
                    rotation(&b.delivery.key.endpoint_id),
                    std::cmp::Reverse(b.delivery.priority),
                    b_due,
                    b_seq,
                ))
        });
        if let Some((_, _, last)) = claimed.last() {
            *self.cursor.lock().unwrap_or_else(PoisonError::into_inner) =
                last.delivery.key.endpoint_id.as_str().to_owned();
        }
        Ok(claimed.into_iter().map(|(_, _, c)| c).collect())
    }

    async fn complete(&self, finished: &[Finished], now: DateTime<Utc>) -> Result<Completed> {
        let mut batch = CompleteBatch::default();
        let mut lost = vec![false; finished.len()];
        for (index, f) in finished.iter().enumerate() {
            if storable_key(&f.lease.key) && i64::try_from(f.lease.token).is_ok() {
                batch.push(index, f);
            } else {
                lost[index] = true;
            }
        }
        let mut applied = 0;
        if !batch.index.is_empty() {
            lost.iter_mut().for_each(|l| *l = true);
            let client = self.client().await?;
            let params: [(&(dyn ToSql + Sync), Type); 12] = [
                (&now, Type::TIMESTAMPTZ),
                (&batch.tenants, Type::TEXT_ARRAY),
                (&batch.endpoints, Type::TEXT_ARRAY),
                (&batch.events, Type::TEXT_ARRAY),
                (&batch.tokens, Type::INT8_ARRAY),
                (&batch.kinds, Type::TEXT_ARRAY),
                (&batch.next_at, Type::TIMESTAMPTZ_ARRAY),
                (&batch.started_at, Type::TIMESTAMPTZ_ARRAY),
                (&batch.duration_ms, Type::INT8_ARRAY),
                (&batch.status, Type::INT4_ARRAY),
                (&batch.errors, Type::TEXT_ARRAY),
                (&batch.excerpts, Type::TEXT_ARRAY),
            ];
            // An unnamed statement, parsed, planned and run in one round trip: planned
            // with this batch's values each time. A cached prepared statement switches to
            // a generic plan after five runs, which on young tables (no statistics yet)
            // scans whole indexes and is several times slower.
            let rows = client
                .query_typed(&self.sql.complete, &params)
                .await
                .map_err(|e| self.db(&e))?;
            for row in &rows {
                let ord: i64 = get(row, "ord")?;
                let position = usize::try_from(ord - 1)
                    .ok()
                    .and_then(|p| batch.index.get(p))
                    .ok_or_else(|| error::corrupt("complete", format!("unknown position {ord}")))?;
                lost[*position] = false;
                applied += 1;
            }
        }
        Ok(Completed {
            applied,
            lease_lost: finished
                .iter()
                .zip(lost)
                .filter(|(_, lost)| *lost)
                .map(|(f, _)| f.lease.key.clone())
                .collect(),
        })
    }

    async fn unfinished(&self) -> Result<Option<u64>> {
        let client = self.client().await?;
        let statement = self.prepare(&client, &self.sql.unfinished).await?;
        let row = client
            .query_one(&statement, &[])
            .await
            .map_err(|e| self.db(&e))?;
        let n: i64 = get(&row, "n")?;
        Ok(Some(u64::try_from(n).unwrap_or(0)))
    }

    async fn get_delivery(&self, key: &IdempotencyKey) -> Result<Option<DeliveryRecord>> {
        if !storable_key(key) {
            return Ok(None);
        }
        let client = self.client().await?;
        let statement = self.prepare(&client, &self.sql.get_delivery).await?;
        let rows = client
            .query(
                &statement,
                &[
                    &tenant_column(key.tenant.as_ref()),
                    &key.event_id.as_str(),
                    &key.endpoint_id.as_str(),
                ],
            )
            .await
            .map_err(|e| self.db(&e))?;
        Ok(decode::records(&rows)?.into_iter().next())
    }

    async fn get_event(
        &self,
        tenant: Option<&TenantId>,
        id: &EventId,
    ) -> Result<Option<EventRecord>> {
        let tenant_text = tenant_column(tenant);
        if !storable_tenant(tenant) || tenant_text.contains('\0') || id.as_str().contains('\0') {
            return Ok(None);
        }
        let client = self.client().await?;
        let (event_statement, deliveries_statement) = tokio::try_join!(
            self.prepare(&client, &self.sql.get_event),
            self.prepare(&client, &self.sql.get_event_deliveries),
        )?;
        let params: [&(dyn ToSql + Sync); 2] = [&tenant_text, &id.as_str()];
        // Both queries go out at once on the one connection (pipelining).
        let (event, rows) = tokio::try_join!(
            client.query_opt(&event_statement, &params),
            client.query(&deliveries_statement, &params),
        )
        .map_err(|e| self.db(&e))?;
        let Some(event) = event else {
            return Ok(None);
        };
        Ok(Some(EventRecord {
            event: decode::event(&event)?,
            deliveries: decode::records(&rows)?,
        }))
    }

    async fn list_dead(&self, query: &DeadLetterQuery) -> Result<Vec<Delivery>> {
        let tenant = query.tenant.as_ref();
        let endpoint = query.endpoint_id.as_ref().map(EndpointId::as_str);
        if query.limit == 0
            || !storable_tenant(tenant)
            || tenant.is_some_and(|t| t.as_str().contains('\0'))
            || endpoint.is_some_and(|e| e.contains('\0'))
        {
            return Ok(Vec::new());
        }
        let limit = bigint(query.limit);
        let tenant = tenant.map(TenantId::as_str);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit];
        if let Some(tenant) = &tenant {
            params.push(tenant);
        }
        if let Some(endpoint) = &endpoint {
            params.push(endpoint);
        }
        let variant = usize::from(tenant.is_some()) | usize::from(endpoint.is_some()) << 1;
        let client = self.client().await?;
        let statement = self.prepare(&client, &self.sql.list_dead[variant]).await?;
        let rows = client
            .query(&statement, &params)
            .await
            .map_err(|e| self.db(&e))?;
        rows.iter().map(decode::delivery).collect()
    }

    async fn replay_dead(&self, key: &IdempotencyKey, now: DateTime<Utc>) -> Result<bool> {
        if !storable_key(key) {
            return Ok(false);
        }
        let client = self.client().await?;
        let statement = self.prepare(&client, &self.sql.replay_dead).await?;
        let replayed = client
            .execute(
                &statement,
                &[
                    &tenant_column(key.tenant.as_ref()),
                    &key.event_id.as_str(),
                    &key.endpoint_id.as_str(),
                    &now,
                ],
            )
            .await
            .map_err(|e| self.db(&e))?;
        Ok(replayed > 0)
    }

    async fn replay_all_dead(&self, tenant: Option<&TenantId>, now: DateTime<Utc>) -> Result<u64> {
        if !storable_tenant(tenant) || tenant.is_some_and(|t| t.as_str().contains('\0')) {
            return Ok(0);
        }
        let client = self.client().await?;
        match tenant {
            None => {
                let statement = self.prepare(&client, &self.sql.replay_all_dead).await?;
                client.execute(&statement, &[&now]).await
            }
            Some(tenant) => {
                let statement = self
                    .prepare(&client, &self.sql.replay_all_tenant_dead)
                    .await?;
                client.execute(&statement, &[&now, &tenant.as_str()]).await
            }
        }
        .map_err(|e| self.db(&e))
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut client = self.client().await?;
        let prune = self.prepare(&client, &self.sql.prune).await?;
        let orphans = self
            .prepare(&client, &self.sql.delete_orphan_events)
            .await?;
        let mut total = 0u64;
        loop {
            let tx = client.transaction().await.map_err(|e| self.db(&e))?;
            let row = tx
                .query_one(&prune, &[&before, &PRUNE_CHUNK])
                .await
                .map_err(|e| self.db(&e))?;
            let pruned: i64 = get(&row, "pruned")?;
            let events: Vec<i64> = get(&row, "events")?;
            if !events.is_empty() {
                // A new statement, so a new snapshot: it sees deliveries that enqueues
                // committed before the events were locked.
                tx.execute(&orphans, &[&events])
                    .await
                    .map_err(|e| self.db(&e))?;
            }
            tx.commit().await.map_err(|e| self.db(&e))?;
            total += u64::try_from(pruned).unwrap_or(0);
            if pruned < PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_plain_identifiers() {
        for good in ["webhook", "wh_test_00ff", "_x", "A1"] {
            check_schema(good).unwrap();
        }
        for bad in ["", "1abc", "a-b", "a\"b", "x; drop", &"a".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn bad_urls_are_refused_without_leaking_the_password() {
        let err = PostgresStore::connect("postgres://u:hunter2@127.0.0.1:1/db?sslmode=require")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { field: "url", .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        let err = PostgresStore::connect("postgres://u:hunter2@127.0.0.1:1/db?port=xx")
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = PostgresStore::connect_with(
            "postgres://u:hunter2@127.0.0.1:1/db",
            PostgresOptions {
                connect_timeout: Duration::from_secs(2),
                ..PostgresOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
