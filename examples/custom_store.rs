//! A custom store: your own `Store` implementation, checked by the same conformance
//! suite every built-in store passes.
//!
//! This one wraps the in-memory store and counts the claims it serves; a real one
//! would talk to your database. Run the suite with:
//!
//! ```sh
//! cargo run -p webhook-examples --example custom_store
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use webhook_core::{
    ClaimRequest, Claimed, Completed, DeadLetterQuery, Delivery, DeliveryRecord, Endpoint,
    EndpointId, Enqueued, Event, EventId, EventRecord, Finished, IdempotencyKey, MemoryStore,
    Result, Store, TenantId, testkit,
};

/// A store that counts claims.
#[derive(Debug, Default)]
pub struct CountingStore {
    inner: MemoryStore,
    /// Claims served.
    pub claims: AtomicU64,
}

#[async_trait]
impl Store for CountingStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        self.inner.put_endpoint(endpoint).await
    }
    async fn get_endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>> {
        self.inner.get_endpoint(id).await
    }
    async fn list_endpoints(&self, tenant: Option<&TenantId>) -> Result<Vec<Endpoint>> {
        self.inner.list_endpoints(tenant).await
    }
    async fn delete_endpoint(&self, id: &EndpointId) -> Result<bool> {
        self.inner.delete_endpoint(id).await
    }
    async fn enqueue(
        &self,
        event: &Event,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> Result<Enqueued> {
        self.inner.enqueue(event, endpoints, now).await
    }
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        self.claims.fetch_add(1, Ordering::Relaxed);
        self.inner.claim(request).await
    }
    async fn complete(&self, finished: &[Finished], now: DateTime<Utc>) -> Result<Completed> {
        self.inner.complete(finished, now).await
    }
    async fn get_delivery(&self, key: &IdempotencyKey) -> Result<Option<DeliveryRecord>> {
        self.inner.get_delivery(key).await
    }
    async fn get_event(
        &self,
        tenant: Option<&TenantId>,
        id: &EventId,
    ) -> Result<Option<EventRecord>> {
        self.inner.get_event(tenant, id).await
    }
    async fn list_dead(&self, query: &DeadLetterQuery) -> Result<Vec<Delivery>> {
        self.inner.list_dead(query).await
    }
    async fn replay_dead(&self, key: &IdempotencyKey, now: DateTime<Utc>) -> Result<bool> {
        self.inner.replay_dead(key, now).await
    }
    async fn replay_all_dead(&self, tenant: Option<&TenantId>, now: DateTime<Utc>) -> Result<u64> {
        self.inner.replay_all_dead(tenant, now).await
    }
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        self.inner.prune(before).await
    }
    // Optional (the default says "cannot count"), but a dispatcher's overflow policy
    // is only exact with it when processes share the store or endpoints are removed.
    async fn unfinished(&self) -> Result<Option<u64>> {
        self.inner.unfinished().await
    }
}

#[tokio::main]
async fn main() {
    testkit::run_all(|| async { CountingStore::default() }).await;
    println!("CountingStore passes the store conformance suite");
}
