//! The engine: claim loops, workers, the completion writer, and the public API.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, RwLock,
        atomic::{
            AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
        },
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};
use webhook_core::{
    Attempt, ClaimRequest, Claimed, Completion, DeadLetterQuery, Delivery, DeliveryRecord,
    Endpoint, EndpointId, Event, EventId, EventRecord, Finished, IdempotencyKey, MemoryStore,
    Permit, Store, TenantId, TokenBucket,
    retry::{Decision, Verdict, classify_status, parse_retry_after},
};

use crate::{
    DispatcherConfig, Error, Metrics, OverflowPolicy, Result, Transport,
    endpoint_state::{EndpointState, StrictTurn},
    stats::Stats,
    telemetry,
    transport::{Outcome, Request},
};

/// How often endpoints are reloaded from the store, to see changes made by other
/// processes sharing it.
const ENDPOINT_REFRESH: Duration = Duration::from_secs(1);

/// How long a strict endpoint's delivery waits when another of its attempts is under
/// way in this process (see `EndpointState::strict_turn`).
const STRICT_BUSY_WAIT: Duration = Duration::from_millis(50);

/// How long a delivery waits when its endpoint could not be loaded (a store error, or
/// an endpoint stored in a form this process cannot use).
const UNLOADABLE_ENDPOINT_WAIT: Duration = Duration::from_secs(5);

/// What [`Dispatcher::dispatch`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchReceipt {
    /// The event's id (generated when the event had none).
    pub event_id: EventId,
    /// Deliveries created.
    pub created: usize,
    /// Deliveries that already existed for the same keys (dispatching is idempotent).
    pub existing: usize,
}

/// Delivers webhooks: the in-process engine.
///
/// Work is stored first, then claimed under a lease by background tasks and sent;
/// results are written back in batches. Dropping the dispatcher stops its tasks;
/// call [`shutdown`](Self::shutdown) to finish in-flight work first.
pub struct Dispatcher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

struct Shared {
    store: Arc<dyn Store>,
    config: DispatcherConfig,
    transport: Transport,
    endpoints: RwLock<HashMap<EndpointId, Arc<EndpointState>>>,
    /// Counts local changes to `endpoints`, so a reload does not undo a newer one.
    endpoint_changes: AtomicU64,
    tenant_limits: Mutex<HashMap<TenantId, TokenBucket>>,
    /// Wakes claim loops: new work, or capacity freed.
    wake: Notify,
    /// Wakes `dispatch` calls blocked on a full queue.
    room: Notify,
    in_flight: AtomicUsize,
    /// Deliveries accepted here and not yet seen final here: an upper bound that
    /// misses those finished by other processes and those removed with their
    /// endpoint, so it is replaced by the store's count when it says the queue is full.
    queued: AtomicUsize,
    /// When `queued` was last replaced by the store's count (unix millis).
    recounted: AtomicI64,
    /// Earliest retry time this process scheduled (unix millis), so claim loops wake for it.
    next_due: AtomicI64,
    accepting: AtomicBool,
    /// Tells claim loops to stop claiming.
    stop_claiming: watch::Sender<bool>,
    /// Tells in-flight attempts to give up and release their leases.
    abandon: watch::Sender<bool>,
    stats: Stats,
    store_errors: AtomicU64,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: Mutex<Option<mpsc::UnboundedReceiver<Done>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    started: OnceLock<()>,
}

/// A finished lease on its way to the store.
struct Done {
    finished: Finished,
    /// `None` when the endpoint could not be loaded (nothing was attempted).
    endpoint: Option<Arc<EndpointState>>,
    created_at: Option<DateTime<Utc>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Dispatcher {
    /// A dispatcher on a fresh in-memory store (not durable across restarts).
    ///
    /// Background tasks run on the current tokio runtime: they start here when called
    /// inside one, else on the first call that needs them.
    pub fn new(config: DispatcherConfig) -> Self {
        let dispatcher = Self::build(config, Arc::new(MemoryStore::new()));
        if tokio::runtime::Handle::try_current().is_ok() {
            dispatcher.start();
        }
        dispatcher
    }

    /// A dispatcher on `store`, with the endpoints already in it loaded. Several
    /// dispatchers (in one or many processes) may share a store.
    pub async fn new_with_storage(config: DispatcherConfig, store: Arc<dyn Store>) -> Self {
        let dispatcher = Self::build(config, store);
        // A store that is down now is retried by the refresh loop.
        let _ = dispatcher.shared.refresh_endpoints().await;
        // Work left in the store by an earlier process is delivered without waiting
        // for a new dispatch.
        dispatcher.start();
        dispatcher
    }

    fn build(config: DispatcherConfig, store: Arc<dyn Store>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let transport = Transport::new(config.transport());
        Self {
            shared: Arc::new(Shared {
                store,
                transport,
                config,
                endpoints: RwLock::new(HashMap::new()),
                endpoint_changes: AtomicU64::new(0),
                tenant_limits: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                room: Notify::new(),
                in_flight: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                recounted: AtomicI64::new(i64::MIN),
                next_due: AtomicI64::new(i64::MAX),
                accepting: AtomicBool::new(true),
                stop_claiming: watch::Sender::new(false),
                abandon: watch::Sender::new(false),
                stats: Stats::new(),
                store_errors: AtomicU64::new(0),
                done_tx,
                done_rx: Mutex::new(Some(done_rx)),
                tasks: Mutex::new(Vec::new()),
                started: OnceLock::new(),
            }),
        }
    }

    /// The store this dispatcher works on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The settings.
    pub fn config(&self) -> &DispatcherConfig {
        &self.shared.config
    }

    fn start(&self) {
        self.shared.started.get_or_init(|| {
            let mut tasks = lock(&self.shared.tasks);
            if let Some(rx) = lock(&self.shared.done_rx).take() {
                tasks.push(tokio::spawn(completer(self.shared.clone(), rx)));
            }
            for _ in 0..self.shared.config.worker_count {
                tasks.push(tokio::spawn(claim_loop(self.shared.clone())));
            }
            tasks.push(tokio::spawn(refresh_loop(Arc::downgrade(&self.shared))));
        });
    }

    /// Validates and stores an endpoint (creating or replacing it).
    pub async fn register_endpoint(&self, endpoint: Endpoint) -> Result<()> {
        endpoint.validate()?;
        let state = EndpointState::new(endpoint, &self.shared.config, Instant::now())?;
        self.shared.store.put_endpoint(&state.endpoint).await?;
        self.shared.install(state);
        self.start();
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Removes an endpoint and its deliveries. Returns whether it existed.
    pub async fn remove_endpoint(&self, id: &EndpointId) -> Result<bool> {
        let existed = self.shared.store.delete_endpoint(id).await?;
        self.shared.uninstall(id);
        Ok(existed)
    }

    /// The endpoint with this id, as stored.
    pub async fn endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>> {
        Ok(self.shared.store.get_endpoint(id).await?)
    }

    /// Limits deliveries of `tenant`'s events, across all its endpoints, to
    /// `rate_per_sec` with bursts of `burst`. Held in this process only.
    #[allow(
        clippy::unused_async,
        reason = "async like the rest of the API, as users call it"
    )]
    pub async fn set_tenant_rate_limit(&self, tenant: TenantId, rate_per_sec: u32, burst: u32) {
        let now = Instant::now();
        lock(&self.shared.tenant_limits)
            .entry(tenant)
            .and_modify(|b| b.set_rate(f64::from(rate_per_sec), burst, now))
            .or_insert_with(|| TokenBucket::new(f64::from(rate_per_sec), burst, now));
    }

    /// Stores `event` durably and schedules one delivery to each of `endpoint_ids`.
    ///
    /// Returns once the deliveries are in the store. Dispatching the same event id to
    /// the same endpoint again creates nothing new. When the queue is full the
    /// [`OverflowPolicy`] decides.
    pub async fn dispatch(
        &self,
        event: Event,
        endpoint_ids: Vec<EndpointId>,
    ) -> Result<DispatchReceipt> {
        if endpoint_ids.is_empty() {
            return Err(Error::Invalid {
                field: "endpoint_ids",
                message: "no endpoint to deliver to".to_owned(),
            });
        }
        self.enqueue(event, &endpoint_ids).await
    }

    /// Stores `event` and delivers it to its [`subscribers`](Self::subscribers).
    pub async fn publish(&self, event: Event) -> Result<DispatchReceipt> {
        let targets = self.subscribers(&event);
        if targets.is_empty() {
            let event_id = self.shared.prepare(event)?.id;
            return Ok(DispatchReceipt {
                event_id,
                created: 0,
                existing: 0,
            });
        }
        self.enqueue(event, &targets).await
    }

    /// Reloads the endpoint cache from the store now, to see changes other processes
    /// made (it is reloaded every second anyway).
    pub async fn refresh_endpoints(&self) -> Result<()> {
        self.shared.refresh_endpoints().await
    }

    /// The enabled endpoints of `event`'s tenant whose event-type globs match its type
    /// (endpoints without globs take every type), ordered by id. Read from this
    /// dispatcher's endpoint cache, which sees other processes' changes within a
    /// second (or at once after [`refresh_endpoints`](Self::refresh_endpoints)).
    pub fn subscribers(&self, event: &Event) -> Vec<EndpointId> {
        let event_type = event.event_type.as_deref().unwrap_or("");
        let endpoints = self.shared.read_endpoints();
        let mut ids: Vec<EndpointId> = endpoints
            .values()
            .filter(|s| {
                s.endpoint.enabled
                    && s.endpoint.tenant_id == event.tenant_id
                    && s.filter.matches(event_type)
            })
            .map(|s| s.endpoint.id.clone())
            .collect();
        ids.sort();
        ids
    }

    async fn enqueue(&self, event: Event, endpoint_ids: &[EndpointId]) -> Result<DispatchReceipt> {
        let shared = &self.shared;
        let event = shared.prepare(event)?;
        for id in endpoint_ids {
            if id.is_empty() {
                return Err(Error::Invalid {
                    field: "endpoint_ids",
                    message: "an endpoint id is empty".to_owned(),
                });
            }
        }
        self.start();
        shared.make_room(endpoint_ids.len()).await?;
        let now = Utc::now();
        let enqueued = shared.store.enqueue(&event, endpoint_ids, now).await?;
        shared.queued.fetch_add(enqueued.created, Relaxed);
        Stats::bump(&shared.stats.dispatched, enqueued.created as u64);
        if enqueued.created > 0 {
            shared.wake.notify_one();
        }
        Ok(DispatchReceipt {
            event_id: event.id,
            created: enqueued.created,
            existing: enqueued.existing,
        })
    }

    /// A delivery's state and attempts.
    pub async fn delivery_status(&self, key: &IdempotencyKey) -> Result<Option<DeliveryRecord>> {
        Ok(self.shared.store.get_delivery(key).await?)
    }

    /// An event with its deliveries and their attempts.
    pub async fn event_status(
        &self,
        tenant: Option<&TenantId>,
        id: &EventId,
    ) -> Result<Option<EventRecord>> {
        Ok(self.shared.store.get_event(tenant, id).await?)
    }

    /// Dead letters, oldest first.
    pub async fn dead_letters(&self, query: &DeadLetterQuery) -> Result<Vec<Delivery>> {
        Ok(self.shared.store.list_dead(query).await?)
    }

    /// Sends every dead letter again, with a fresh retry budget. Returns how many.
    pub async fn replay_dlq_all(&self) -> Result<u64> {
        self.replay_dlq_tenant(None).await
    }

    /// Sends every dead letter of `tenant` (all tenants when `None`) again.
    pub async fn replay_dlq_tenant(&self, tenant: Option<&TenantId>) -> Result<u64> {
        let count = self
            .shared
            .store
            .replay_all_dead(tenant, Utc::now())
            .await?;
        self.after_replay(count);
        Ok(count)
    }

    /// Sends one dead letter again. Returns whether it was dead.
    pub async fn replay_dlq_entry(&self, key: &IdempotencyKey) -> Result<bool> {
        let replayed = self.shared.store.replay_dead(key, Utc::now()).await?;
        self.after_replay(u64::from(replayed));
        Ok(replayed)
    }

    fn after_replay(&self, count: u64) {
        if count > 0 {
            self.shared
                .queued
                .fetch_add(usize::try_from(count).unwrap_or(usize::MAX), Relaxed);
            self.start();
            self.shared.wake.notify_one();
        }
    }

    /// Counters and latency percentiles since start.
    pub fn metrics(&self) -> Metrics {
        self.shared.stats.snapshot(
            self.shared.in_flight.load(Relaxed) as u64,
            self.shared.queued.load(Relaxed) as u64,
        )
    }

    /// Store operations that failed and were retried (a sign of store trouble).
    pub fn store_errors(&self) -> u64 {
        self.shared.store_errors.load(Relaxed)
    }

    /// Stops accepting and claiming work, waits up to `shutdown_timeout` for requests in
    /// flight, releases the leases of those still running (they are claimable again at
    /// once, here or elsewhere), and writes every result to the store. Nothing accepted
    /// is lost: what is not delivered stays pending in the store.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        shared.accepting.store(false, SeqCst);
        shared.room.notify_waiters();
        shared.stop_claiming.send_replace(true);
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&shared.tasks));
        // Batches waiting for company go out now.
        let endpoints: Vec<Arc<EndpointState>> =
            shared.read_endpoints().values().cloned().collect();
        for endpoint in endpoints {
            let batch = endpoint.take_batch();
            if !batch.is_empty() {
                tokio::spawn(send_batch(
                    shared.clone(),
                    endpoint,
                    batch,
                    StrictTurn::FREE,
                ));
            }
        }
        let deadline = tokio::time::Instant::now() + shared.config.shutdown_timeout;
        while shared.in_flight.load(SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shared.abandon.send_replace(true);
        while shared.in_flight.load(SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for handle in handles {
            handle.abort();
            let _ = handle.await;
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.shared.accepting.store(false, SeqCst);
        self.shared.stop_claiming.send_replace(true);
        self.shared.abandon.send_replace(true);
        for handle in lock(&self.shared.tasks).drain(..) {
            handle.abort();
        }
    }
}

impl Shared {
    fn read_endpoints(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<EndpointId, Arc<EndpointState>>> {
        self.endpoints
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_endpoints(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<EndpointId, Arc<EndpointState>>> {
        self.endpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn install(&self, mut state: EndpointState) -> Arc<EndpointState> {
        let mut endpoints = self.write_endpoints();
        if let Some(old) = endpoints.get(&state.endpoint.id) {
            state.succeed(old);
        }
        let state = Arc::new(state);
        endpoints.insert(state.endpoint.id.clone(), state.clone());
        self.endpoint_changes.fetch_add(1, SeqCst);
        state
    }

    fn uninstall(&self, id: &EndpointId) {
        let mut endpoints = self.write_endpoints();
        endpoints.remove(id);
        self.endpoint_changes.fetch_add(1, SeqCst);
    }

    /// Reloads endpoints from the store, keeping the run-time state of unchanged ones.
    async fn refresh_endpoints(&self) -> Result<()> {
        let changes = self.endpoint_changes.load(SeqCst);
        let stored = self.store.list_endpoints(None).await?;
        let now = Instant::now();
        let mut fresh = HashMap::with_capacity(stored.len());
        {
            let current = self.read_endpoints();
            for endpoint in stored {
                let old = current.get(&endpoint.id);
                let state = match old {
                    Some(s) if s.endpoint == endpoint => s.clone(),
                    _ => match EndpointState::new(endpoint.clone(), &self.config, now) {
                        Ok(mut s) => {
                            if let Some(old) = old {
                                s.succeed(old);
                            }
                            Arc::new(s)
                        }
                        Err(e) => {
                            telemetry::endpoint_unusable(&endpoint.id, &e);
                            continue;
                        }
                    },
                };
                fresh.insert(state.endpoint.id.clone(), state);
            }
        }
        let mut endpoints = self.write_endpoints();
        // A change made here while the list was read is newer than the list: keep the
        // cache, the next refresh picks everything up.
        if self.endpoint_changes.load(SeqCst) == changes {
            *endpoints = fresh;
        }
        Ok(())
    }

    /// The run-time state of endpoint `id`, loaded from the store when not cached:
    /// `Ok(None)` when it does not exist, `Err(())` when it cannot be loaded (the store
    /// failed, or the stored endpoint is unusable here; counted and logged).
    async fn endpoint_state(&self, id: &EndpointId) -> Result<Option<Arc<EndpointState>>, ()> {
        if let Some(state) = self.read_endpoints().get(id) {
            return Ok(Some(state.clone()));
        }
        let endpoint = match self.store.get_endpoint(id).await {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.store_failed("load an endpoint", &e);
                return Err(());
            }
        };
        match EndpointState::new(endpoint, &self.config, Instant::now()) {
            Ok(state) => Ok(Some(self.install(state))),
            Err(e) => {
                telemetry::endpoint_unusable(id, &e);
                Err(())
            }
        }
    }

    /// Counts and logs a failed store operation.
    fn store_failed(&self, during: &'static str, error: &dyn std::fmt::Display) {
        self.store_errors.fetch_add(1, Relaxed);
        telemetry::store_failed(during, error);
    }

    /// Checks and completes an event before it is stored.
    fn prepare(&self, mut event: Event) -> Result<Event> {
        if !self.accepting.load(SeqCst) {
            return Err(Error::ShuttingDown);
        }
        if event.payload.len() > self.config.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                size: event.payload.len(),
                limit: self.config.max_payload_bytes,
            });
        }
        let now = Utc::now();
        if event.id.is_empty() {
            event.id = EventId::v7(now);
        } else if event.id.as_str().len() > webhook_core::MAX_ID_LEN
            || !event.id.as_str().bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::Invalid {
                field: "id",
                message: "must be 1 to 256 visible ASCII characters".to_owned(),
            });
        }
        if let Some(tenant) = &event.tenant_id
            && !webhook_core::is_valid_id(tenant.as_str())
        {
            return Err(Error::Invalid {
                field: "tenant_id",
                message: "must be 1 to 256 bytes without control characters".to_owned(),
            });
        }
        if event.event_type.as_ref().is_some_and(|t| t.len() > 256) {
            return Err(Error::Invalid {
                field: "event_type",
                message: "must be at most 256 bytes".to_owned(),
            });
        }
        event.created_at.get_or_insert(now);
        Ok(event)
    }

    /// Applies the overflow policy for `incoming` new deliveries.
    async fn make_room(&self, incoming: usize) -> Result<()> {
        let capacity = self.config.queue_capacity();
        loop {
            let queued = self.queued.load(Relaxed);
            if queued.saturating_add(incoming) <= capacity || queued == 0 {
                return Ok(());
            }
            match self.config.overflow_policy {
                OverflowPolicy::SpillToStorage => return Ok(()),
                // This process's count may be stale: ask the store first.
                _ if self.recount().await => {}
                OverflowPolicy::Reject => return Err(Error::QueueFull { queued, capacity }),
                OverflowPolicy::Block => {
                    let room = self.room.notified();
                    if !self.accepting.load(SeqCst) {
                        return Err(Error::ShuttingDown);
                    }
                    // Re-check after registering interest, with a timeout as a backstop.
                    if self.queued.load(Relaxed).saturating_add(incoming) > capacity {
                        let _ = tokio::time::timeout(Duration::from_millis(100), room).await;
                    }
                }
            }
        }
    }

    /// Replaces `queued` by the store's count of unfinished deliveries, at most once a
    /// second (across callers). Returns whether it did.
    async fn recount(&self) -> bool {
        let now = Utc::now().timestamp_millis();
        let last = self.recounted.load(Relaxed);
        if now.saturating_sub(last) < 1000
            || self
                .recounted
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            return false;
        }
        match self.store.unfinished().await {
            Ok(Some(count)) => {
                self.queued
                    .store(usize::try_from(count).unwrap_or(usize::MAX), Relaxed);
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.store_failed("count unfinished deliveries", &e);
                false
            }
        }
    }

    /// Per-endpoint claim limits (endpoints that cannot take a full share now), and a
    /// lease long enough for the slowest endpoint's attempt (batch wait included).
    fn claim_limits(&self, share: usize) -> (HashMap<EndpointId, usize>, Duration) {
        let now = Instant::now();
        let tenants = lock(&self.tenant_limits);
        let mut limits = HashMap::new();
        let mut longest = self.config.request_timeout;
        for state in self.read_endpoints().values() {
            longest = longest.max(state.longest_hold());
            let mut room = state.room(now);
            if let Some(bucket) = state
                .endpoint
                .tenant_id
                .as_ref()
                .and_then(|t| tenants.get(t))
            {
                let tokens = bucket.available(now).floor().max(0.0);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let tokens = tokens.min(usize::MAX as f64) as usize;
                room = room.min(tokens);
            }
            if room < share {
                limits.insert(state.endpoint.id.clone(), room);
            }
        }
        (limits, longest * 2 + Duration::from_secs(10))
    }

    fn admit_tenant(&self, tenant: Option<&TenantId>, now: Instant) -> Result<(), Duration> {
        match tenant {
            Some(t) => lock(&self.tenant_limits)
                .get_mut(t)
                .map_or(Ok(()), |bucket| bucket.try_acquire(now)),
            None => Ok(()),
        }
    }

    fn note_due(&self, at: DateTime<Utc>) {
        self.next_due.fetch_min(at.timestamp_millis(), Relaxed);
    }

    fn finish(&self, endpoint: Arc<EndpointState>, claimed: &Claimed, completion: Completion) {
        self.send_done(Some(endpoint), claimed, completion);
    }

    /// Hands a finished lease to the completer.
    fn send_done(
        &self,
        endpoint: Option<Arc<EndpointState>>,
        claimed: &Claimed,
        completion: Completion,
    ) {
        let done = Done {
            finished: Finished {
                lease: claimed.lease.clone(),
                completion,
            },
            endpoint,
            created_at: claimed.event.created_at,
        };
        if self.done_tx.send(done).is_err() {
            // The completer is gone (dispatcher dropped): the lease expires and the
            // delivery is claimed again. Still free the slot.
            self.in_flight.fetch_sub(1, SeqCst);
        }
    }

    /// Turns an attempt's outcome into a completion, and hands the attempt's breaker
    /// permit back with the outcome (`None`: another delivery of the same request
    /// reports it).
    fn judge(
        &self,
        state: &EndpointState,
        permit: Option<Permit>,
        delivery: &Delivery,
        outcome: &Outcome,
        started: DateTime<Utc>,
    ) -> Completion {
        let now = Utc::now();
        let attempt = match (outcome.status, &outcome.error) {
            (Some(status), _) => {
                Attempt::response(started, outcome.duration, status, &outcome.body_excerpt)
            }
            (None, Some(error)) => Attempt::failed(started, outcome.duration, error.to_string()),
            (None, None) => Attempt::failed(started, outcome.duration, "no response"),
        };
        let verdict = match (outcome.status, &outcome.error) {
            (Some(status), _) => classify_status(status),
            (None, Some(error)) if !error.is_retryable() => Verdict::Permanent,
            (None, _) => Verdict::Retry,
        };
        let clock = Instant::now();
        if let Some(permit) = permit {
            match (verdict, outcome.status) {
                (Verdict::Retry, Some(429)) => state.release(permit),
                (Verdict::Retry, _) => state.on_failure(permit, clock),
                _ => state.on_success(permit, clock),
            }
        }
        match verdict {
            Verdict::Success => Completion::Delivered { attempt },
            Verdict::Permanent => Completion::Dead { attempt },
            Verdict::DisableEndpoint => Completion::Dead { attempt },
            Verdict::Retry => {
                let retry_after = outcome
                    .retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, now));
                match state
                    .policy
                    .decide(delivery.attempts + 1, retry_after, rand::random::<f64>())
                {
                    Decision::Retry { after } => {
                        let next_attempt_at = later(now, after);
                        Completion::Retry {
                            attempt,
                            next_attempt_at,
                        }
                    }
                    Decision::GiveUp => Completion::Dead { attempt },
                }
            }
        }
    }

    /// Disables the endpoint whose URL answered 410, as it is stored now: an endpoint
    /// changed meanwhile to another URL (or removed, or disabled) is left as it is.
    async fn disable(&self, state: &EndpointState, at: DateTime<Utc>) {
        let Ok(Some(mut endpoint)) = self.store.get_endpoint(&state.endpoint.id).await else {
            return;
        };
        if !endpoint.enabled || endpoint.url != state.endpoint.url {
            return;
        }
        endpoint.enabled = false;
        endpoint.disabled_reason = Some(format!("answered 410 Gone at {}", at.to_rfc3339()));
        if self.store.put_endpoint(&endpoint).await.is_ok()
            && let Ok(new_state) = EndpointState::new(endpoint, &self.config, Instant::now())
        {
            self.install(new_state);
        }
    }

    fn request(&self, state: &EndpointState, msg_id: &str, body: Bytes, timestamp: i64) -> Request {
        let mut headers: Vec<(HeaderName, HeaderValue)> = state.headers.clone();
        let signed = match &state.key {
            Some(key) => state
                .endpoint
                .signature_scheme
                .sign(key, msg_id, timestamp, &body),
            None => vec![
                (webhook_sdk::headers::WEBHOOK_ID.into(), msg_id.to_owned()),
                (
                    webhook_sdk::headers::WEBHOOK_TIMESTAMP.into(),
                    timestamp.to_string(),
                ),
            ],
        };
        headers.reserve(signed.len());
        for (name, value) in signed {
            if let (Some(name), Ok(value)) = (header_name(&name), HeaderValue::try_from(value)) {
                headers.push((name, value));
            }
        }
        Request {
            url: state.uri.clone(),
            headers,
            body,
            timeout: Some(state.timeout),
            compression: state.compression,
        }
    }
}

/// The header name for a signing header: the well-known ones without parsing or
/// allocating (this runs for every request), others parsed.
fn header_name(name: &str) -> Option<HeaderName> {
    use webhook_sdk::headers::{
        WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, X_WEBHOOK_SIGNATURE, X_WEBHOOK_TIMESTAMP,
    };
    Some(match name {
        WEBHOOK_ID => HeaderName::from_static("webhook-id"),
        WEBHOOK_TIMESTAMP => HeaderName::from_static("webhook-timestamp"),
        WEBHOOK_SIGNATURE => HeaderName::from_static("webhook-signature"),
        X_WEBHOOK_SIGNATURE => HeaderName::from_static("x-webhook-signature"),
        X_WEBHOOK_TIMESTAMP => HeaderName::from_static("x-webhook-timestamp"),
        other => return HeaderName::try_from(other).ok(),
    })
}

/// Claims due work and starts a task per delivery.
async fn claim_loop(shared: Arc<Shared>) {
    let mut stop = shared.stop_claiming.subscribe();
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let reserved = reserve(
            &shared.in_flight,
            shared.config.max_in_flight,
            shared.config.claim_batch,
        );
        let mut idle = true;
        if reserved > 0 {
            let share = shared.config.max_in_flight_per_endpoint as usize;
            let (endpoint_limits, lease) = shared.claim_limits(share);
            let request = ClaimRequest {
                now: Utc::now(),
                lease,
                limit: reserved,
                per_endpoint_limit: share,
                endpoint_limits,
            };
            match shared.store.claim(&request).await {
                Ok(claimed) => {
                    failures = 0;
                    shared.in_flight.fetch_sub(reserved - claimed.len(), SeqCst);
                    idle = claimed.len() < reserved;
                    for c in claimed {
                        start_delivery(&shared, c).await;
                    }
                }
                Err(e) => {
                    shared.in_flight.fetch_sub(reserved, SeqCst);
                    shared.store_failed("claim", &e);
                    failures = failures.saturating_add(1);
                }
            }
        }
        if idle {
            let now = Utc::now().timestamp_millis();
            let due = shared.next_due.load(Relaxed);
            let mut wait = shared.config.poll_interval;
            if due <= now {
                shared.next_due.store(i64::MAX, Relaxed);
                wait = Duration::ZERO;
            } else if due != i64::MAX {
                wait = wait.min(Duration::from_millis(u64::try_from(due - now).unwrap_or(0)));
            }
            if failures > 0 {
                wait = shared.config.poll_interval * failures.min(20);
            }
            if !wait.is_zero() {
                tokio::select! {
                    () = shared.wake.notified() => {
                        // Let the wakers run on, so one claim picks up more work.
                        tokio::task::yield_now().await;
                    }
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// `now + wait`, saturating at the end of time instead of panicking.
fn later(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|wait| now.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Takes up to `want` slots out of `max`, returning how many were taken.
fn reserve(in_flight: &AtomicUsize, max: usize, want: usize) -> usize {
    let mut current = in_flight.load(SeqCst);
    loop {
        let take = max.saturating_sub(current).min(want);
        if take == 0 {
            return 0;
        }
        match in_flight.compare_exchange_weak(current, current + take, SeqCst, SeqCst) {
            Ok(_) => return take,
            Err(actual) => current = actual,
        }
    }
}

async fn start_delivery(shared: &Arc<Shared>, claimed: Claimed) {
    let state = match shared
        .endpoint_state(&claimed.delivery.key.endpoint_id)
        .await
    {
        Ok(Some(state)) => state,
        Ok(None) => {
            // The endpoint is gone; its deliveries went with it. Free the slot.
            shared.in_flight.fetch_sub(1, SeqCst);
            return;
        }
        Err(()) => {
            // Nothing was attempted: back in the queue for a later try, instead of
            // waiting out the lease (the next claim loads the endpoint again).
            let until = later(Utc::now(), UNLOADABLE_ENDPOINT_WAIT);
            shared.send_done(None, &claimed, Completion::Defer { until });
            return;
        }
    };
    state.in_flight.fetch_add(1, Relaxed);
    // The lease was sized for the endpoints cached at the claim; one loaded since
    // (another process created it) may need longer. Claimed again at once, it gets a
    // lease sized for it: no attempt may outlive its lease (another claim would send
    // the delivery again meanwhile).
    let left = (claimed.lease.until - Utc::now())
        .to_std()
        .unwrap_or_default();
    if state.longest_hold() >= left {
        shared.finish(state, &claimed, Completion::Defer { until: Utc::now() });
        return;
    }
    let Some(turn) = state.strict_turn() else {
        let until = later(Utc::now(), STRICT_BUSY_WAIT);
        shared.finish(state, &claimed, Completion::Defer { until });
        return;
    };
    let now = Instant::now();
    let admitted = state.admit(now).and_then(|permit| {
        match shared.admit_tenant(claimed.event.tenant_id.as_ref(), now) {
            Ok(()) => Ok(permit),
            Err(wait) => {
                state.release(permit);
                Err(wait)
            }
        }
    });
    let permit = match admitted {
        Ok(permit) => permit,
        Err(wait) => {
            Stats::bump(&shared.stats.deferred, 1);
            let until = later(Utc::now(), wait);
            shared.finish(state, &claimed, Completion::Defer { until });
            return;
        }
    };
    if state.endpoint.batching.is_some() {
        if turn.is_held() {
            // Strict: the store hands out one delivery at a time, so there is nothing
            // to wait for; the batch of one goes now, holding the endpoint's turn.
            tokio::spawn(send_batch(
                shared.clone(),
                state,
                vec![(claimed, permit)],
                turn,
            ));
            return;
        }
        let (full, first) = state.push_batch(claimed, permit);
        if let Some(batch) = full {
            tokio::spawn(send_batch(shared.clone(), state, batch, turn));
        } else if first {
            let max_wait = state
                .endpoint
                .batching
                .map_or(Duration::ZERO, |b| b.max_wait);
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(max_wait).await;
                let batch = state.take_batch();
                if !batch.is_empty() {
                    send_batch(shared, state, batch, turn).await;
                }
            });
        }
        return;
    }
    // Boxed: the attempt's future is a few KiB, and tokio copies a task's future
    // several times (spawn, cell, completion); a box makes those copies a pointer.
    tokio::spawn(Box::pin(send_one(
        shared.clone(),
        state,
        claimed,
        permit,
        turn,
    )));
}

/// Runs `send` unless the dispatcher abandons in-flight work first.
async fn attempt(
    shared: &Shared,
    state: &EndpointState,
    message_id: &str,
    request: Request,
) -> Option<Outcome> {
    let mut abandon = shared.abandon.subscribe();
    if *abandon.borrow() {
        return None;
    }
    Stats::bump(&shared.stats.attempts, 1);
    let send = telemetry::in_attempt_span(state.endpoint.id.as_str(), message_id, async {
        let outcome = shared.transport.send(request).await;
        telemetry::attempted(outcome.status, outcome.duration);
        outcome
    });
    tokio::select! {
        outcome = send => Some(outcome),
        _ = abandon.changed() => None,
    }
}

async fn send_one(
    shared: Arc<Shared>,
    state: Arc<EndpointState>,
    claimed: Claimed,
    permit: Permit,
    turn: StrictTurn,
) {
    let started = Utc::now();
    let request = shared.request(
        &state,
        claimed.event.id.as_str(),
        claimed.event.payload.clone(),
        started.timestamp(),
    );
    let outcome = attempt(&shared, &state, claimed.event.id.as_str(), request).await;
    drop(turn);
    let Some(outcome) = outcome else {
        state.release(permit);
        shared.finish(state, &claimed, Completion::Defer { until: Utc::now() });
        return;
    };
    let completion = shared.judge(&state, Some(permit), &claimed.delivery, &outcome, started);
    if outcome.status == Some(410) {
        shared.disable(&state, Utc::now()).await;
    }
    shared.finish(state, &claimed, completion);
}

async fn send_batch(
    shared: Arc<Shared>,
    state: Arc<EndpointState>,
    batch: Vec<(Claimed, Permit)>,
    turn: StrictTurn,
) {
    let (batch, permits): (Vec<Claimed>, Vec<Permit>) = batch.into_iter().unzip();
    let started = Utc::now();
    let body = batch_body(&batch, started);
    let batch_id = batch_id(&batch);
    let request = shared.request(&state, &batch_id, body, started.timestamp());
    let outcome = attempt(&shared, &state, &batch_id, request).await;
    drop(turn);
    if outcome.as_ref().is_some_and(|o| o.status == Some(410)) {
        shared.disable(&state, Utc::now()).await;
    }
    // One request, one outcome for the breaker: the first delivery's permit reports
    // it, the others are given back.
    for (i, (claimed, permit)) in batch.iter().zip(permits).enumerate() {
        let completion = match &outcome {
            Some(outcome) => {
                let permit = if i == 0 {
                    Some(permit)
                } else {
                    state.release(permit);
                    None
                };
                shared.judge(&state, permit, &claimed.delivery, outcome, started)
            }
            None => {
                state.release(permit);
                Completion::Defer { until: Utc::now() }
            }
        };
        shared.finish(state.clone(), claimed, completion);
    }
}

/// The `webhook-id` of a batch: `batch_` and a digest of its events' ids, in any
/// order. The same events sent again carry the same id (a duplicate the receiver may
/// drop); a batch with any other event carries another, so a receiver that drops
/// duplicate ids never drops events it has not seen (items of a failed batch are
/// retried on their own schedules and may be batched with new events).
fn batch_id(batch: &[Claimed]) -> String {
    let mut ids: Vec<&str> = batch.iter().map(|c| c.event.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for id in ids {
        digest.update(&(id.len() as u64).to_be_bytes());
        digest.update(id.as_bytes());
    }
    let mut out = String::from("batch_");
    for byte in &digest.finish().as_ref()[..16] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A JSON array of Standard Webhooks envelopes; a payload that is not JSON is sent
/// as a JSON string.
fn batch_body(batch: &[Claimed], now: DateTime<Utc>) -> Bytes {
    let items: Vec<serde_json::Value> = batch
        .iter()
        .map(|c| {
            let data = serde_json::from_slice::<serde_json::Value>(&c.event.payload)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&c.event.payload).into_owned()));
            serde_json::json!({
                "id": c.event.id,
                "type": c.event.event_type.as_deref().unwrap_or(""),
                "timestamp": c.event.created_at.unwrap_or(now).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "data": data,
            })
        })
        .collect();
    Bytes::from(serde_json::to_vec(&items).unwrap_or_default())
}

/// Writes finished leases to the store in batches and frees their slots.
async fn completer(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Done>) {
    let mut buffer = Vec::with_capacity(512);
    let mut finished: Vec<Finished> = Vec::with_capacity(512);
    let mut sources = Vec::with_capacity(512);
    while rx.recv_many(&mut buffer, 512).await > 0 {
        if buffer.len() < 512 {
            // Let more results arrive, so one store round trip carries more of them.
            tokio::task::yield_now().await;
            while buffer.len() < 512 {
                match rx.try_recv() {
                    Ok(done) => buffer.push(done),
                    Err(_) => break,
                }
            }
        }
        for done in buffer.drain(..) {
            finished.push(done.finished);
            sources.push((done.endpoint, done.created_at));
        }
        let mut delay = Duration::from_millis(10);
        // Keep trying: until this lands the deliveries stay in flight in the store and
        // would be redelivered after their lease, which is safe but wasteful.
        loop {
            match shared.store.complete(&finished, Utc::now()).await {
                Ok(_) => break,
                Err(e) => {
                    shared.store_failed("complete", &e);
                    if *shared.abandon.borrow() && delay > Duration::from_secs(1) {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        let now = Utc::now();
        let mut finals = 0;
        for (done, (endpoint, created_at)) in finished.drain(..).zip(sources.drain(..)) {
            if let Some(endpoint) = &endpoint {
                endpoint.in_flight.fetch_sub(1, Relaxed);
            }
            let latency = created_at.map(|created| (now - created).to_std().unwrap_or_default());
            telemetry::completed(&done.completion, latency);
            match &done.completion {
                Completion::Delivered { .. } => {
                    finals += 1;
                    Stats::bump(&shared.stats.delivered, 1);
                    if let Some(latency) = latency {
                        shared.stats.record_latency(latency);
                    }
                }
                Completion::Dead { .. } => {
                    finals += 1;
                    Stats::bump(&shared.stats.dead, 1);
                }
                Completion::Retry {
                    next_attempt_at, ..
                } => {
                    Stats::bump(&shared.stats.retried, 1);
                    shared.note_due(*next_attempt_at);
                }
                Completion::Defer { until } => shared.note_due(*until),
            }
            shared.in_flight.fetch_sub(1, SeqCst);
        }
        if finals > 0 {
            let _ = shared
                .queued
                .fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(finals)));
            shared.room.notify_waiters();
        }
        shared.wake.notify_one();
    }
}

/// Reloads endpoints now and then; stops when the dispatcher is gone.
async fn refresh_loop(shared: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(ENDPOINT_REFRESH).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = shared.refresh_endpoints().await {
            shared.store_failed("reload endpoints", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(event: &str) -> Claimed {
        let now = Utc::now();
        let key = IdempotencyKey::new(event.into(), "ep".into(), None);
        let delivery = Delivery::new(key.clone(), 0, now);
        Claimed {
            lease: webhook_core::Lease {
                key,
                token: delivery.lease_token,
                until: now,
            },
            delivery,
            event: Event::new(event, "{}"),
        }
    }

    #[test]
    fn a_batch_id_names_all_of_its_events() {
        let ids =
            |events: &[&str]| batch_id(&events.iter().map(|e| claimed(e)).collect::<Vec<_>>());
        assert_eq!(
            ids(&["e1", "e2"]),
            ids(&["e2", "e1"]),
            "the same events again"
        );
        assert_ne!(
            ids(&["e1", "e2"]),
            ids(&["e1", "e7", "e8"]),
            "same first event"
        );
        assert_ne!(ids(&["e1", "e2"]), ids(&["e1"]));
        assert_ne!(
            ids(&["ab", "c"]),
            ids(&["a", "bc"]),
            "ids are not run together"
        );
        assert!(ids(&["e1"]).starts_with("batch_"));
        assert_eq!(ids(&["e1"]).len(), "batch_".len() + 32);
    }

    #[test]
    fn later_saturates_instead_of_overflowing() {
        let now = Utc::now();
        assert_eq!(
            later(now, Duration::from_secs(2)),
            now + chrono::Duration::seconds(2)
        );
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        let near_end = DateTime::<Utc>::MAX_UTC - chrono::Duration::seconds(1);
        assert_eq!(
            later(near_end, Duration::from_secs(60)),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
