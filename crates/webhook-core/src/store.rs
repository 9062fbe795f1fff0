//! The `Store` trait: durable state shared by dispatchers.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    Attempt, Completion, Delivery, Endpoint, EndpointId, Event, EventId, IdempotencyKey, Lease,
    Result, TenantId,
};

/// What [`Store::enqueue`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// Deliveries created.
    pub created: usize,
    /// Deliveries that already existed under the same key (left unchanged).
    pub existing: usize,
}

/// What [`Store::claim`] should hand out.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// The current time.
    pub now: DateTime<Utc>,
    /// How long the claimer may hold each delivery before others may take it.
    pub lease: Duration,
    /// Most deliveries in total.
    pub limit: usize,
    /// Most deliveries of any one endpoint, so a backlog on one endpoint leaves room
    /// for the others.
    pub per_endpoint_limit: usize,
    /// Limits for particular endpoints, overriding `per_endpoint_limit` (a rate limit
    /// or concurrency cap leaves the caller room for fewer); 0 skips the endpoint.
    pub endpoint_limits: HashMap<EndpointId, usize>,
}

impl ClaimRequest {
    /// Claim up to `limit` due deliveries at `now`, no per-endpoint cap.
    pub fn new(now: DateTime<Utc>, lease: Duration, limit: usize) -> Self {
        Self {
            now,
            lease,
            limit,
            per_endpoint_limit: usize::MAX,
            endpoint_limits: HashMap::new(),
        }
    }
}

/// A claimed delivery with what is needed to attempt it.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The delivery (state `in_flight`).
    pub delivery: Delivery,
    /// Its event, payload included.
    pub event: Event,
    /// Proof of the claim, to pass back to [`Store::complete`].
    pub lease: Lease,
}

/// A finished lease, for [`Store::complete`].
#[derive(Clone, Debug)]
pub struct Finished {
    /// The lease from the claim.
    pub lease: Lease,
    /// What happened.
    pub completion: Completion,
}

/// What [`Store::complete`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completed {
    /// Completions applied.
    pub applied: usize,
    /// Completions discarded because their lease was lost (another claim happened, or
    /// the delivery is gone); their deliveries are someone else's now.
    pub lease_lost: Vec<IdempotencyKey>,
}

/// Everything known about one delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The delivery.
    pub delivery: Delivery,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
}

/// An event and all its deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// The event.
    pub event: Event,
    /// Its deliveries, each with its attempts.
    pub deliveries: Vec<DeliveryRecord>,
}

/// Which dead letters to list.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterQuery {
    /// Only this tenant's (`None`: all tenants).
    pub tenant: Option<TenantId>,
    /// Only this endpoint's.
    pub endpoint_id: Option<EndpointId>,
    /// Most to return.
    pub limit: usize,
}

/// Durable state: endpoints, events, deliveries and their attempts.
///
/// Every implementation keeps the contract checked by the conformance suite in
/// `webhook_core::testkit` (feature `testkit`):
///
/// - [`enqueue`](Store::enqueue) is idempotent per [`IdempotencyKey`], stores the
///   payload once per event, and returns only once the event is durable.
/// - [`claim`](Store::claim) hands each due delivery to one claimer at a time,
///   round-robin over endpoints; within an endpoint, due deliveries go by priority
///   (highest first), then by due time, then in creation order, and are returned in
///   that order. A lease that expires makes the delivery claimable again.
/// - For an endpoint with [`Ordering::Strict`](crate::Ordering::Strict), only its oldest
///   unfinished delivery is ever claimable.
/// - [`complete`](Store::complete) applies a result only under the current lease.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or replaces an endpoint.
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<()>;

    /// The endpoint with this id.
    async fn get_endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>>;

    /// Endpoints of `tenant`, or of every tenant when `None`, ordered by id.
    async fn list_endpoints(&self, tenant: Option<&TenantId>) -> Result<Vec<Endpoint>>;

    /// Deletes an endpoint and all its deliveries (their events keep their other
    /// deliveries). Returns whether it existed.
    async fn delete_endpoint(&self, id: &EndpointId) -> Result<bool>;

    /// Stores `event` (if new) and one pending delivery, due at `now`, to each of
    /// `endpoints` that has none for this event yet.
    ///
    /// Fails, writing nothing, with [`Error::NotFound`](crate::Error::NotFound) if an
    /// endpoint does not exist and with [`Error::Invalid`](crate::Error::Invalid) if one
    /// belongs to another tenant than the event.
    async fn enqueue(
        &self,
        event: &Event,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> Result<Enqueued>;

    /// Claims due deliveries (see [`ClaimRequest`]) for enabled endpoints.
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>>;

    /// Ends leases; each completion is applied only if its lease is still current.
    async fn complete(&self, finished: &[Finished], now: DateTime<Utc>) -> Result<Completed>;

    /// One delivery with its attempts.
    async fn get_delivery(&self, key: &IdempotencyKey) -> Result<Option<DeliveryRecord>>;

    /// One event of `tenant` with all its deliveries.
    async fn get_event(
        &self,
        tenant: Option<&TenantId>,
        id: &EventId,
    ) -> Result<Option<EventRecord>>;

    /// Dead deliveries, oldest first.
    async fn list_dead(&self, query: &DeadLetterQuery) -> Result<Vec<Delivery>>;

    /// Moves one dead delivery back to pending, due at `now`. Returns whether it was dead.
    async fn replay_dead(&self, key: &IdempotencyKey, now: DateTime<Utc>) -> Result<bool>;

    /// Moves every dead delivery of `tenant` (all tenants when `None`) back to
    /// pending. Returns how many.
    async fn replay_all_dead(&self, tenant: Option<&TenantId>, now: DateTime<Utc>) -> Result<u64>;

    /// Deletes delivered deliveries finished before `before`, their attempts, and events
    /// left with no deliveries. Dead deliveries are kept. Returns deliveries removed.
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64>;

    /// How many deliveries are unfinished (pending or in flight) in the whole store,
    /// those of every process sharing it included, or `None` when the store cannot
    /// count them cheaply (the default). A dispatcher asks when its own count says its
    /// queue is full: that count misses deliveries finished by other processes and
    /// those removed with their endpoint.
    async fn unfinished(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}
