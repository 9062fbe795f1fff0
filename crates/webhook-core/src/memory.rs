//! An in-memory [`Store`]: fast, shared by every dispatcher in the process, and gone
//! when the process ends.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    Attempt, ClaimRequest, Claimed, Completed, DeadLetterQuery, Delivery, DeliveryRecord,
    DeliveryState, Endpoint, EndpointId, Enqueued, Error, Event, EventId, EventRecord, Finished,
    IdempotencyKey, Ordering, Result, Store, TenantId,
};

/// An in-memory [`Store`]. Not durable: use a store crate for that.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

type EventKey = (Option<TenantId>, EventId);

#[derive(Debug, Default)]
struct Inner {
    endpoints: BTreeMap<EndpointId, Endpoint>,
    events: HashMap<EventKey, StoredEvent>,
    deliveries: HashMap<u64, Stored>,
    by_key: HashMap<IdempotencyKey, u64>,
    /// Per endpoint: unfinished deliveries by the time they become claimable.
    queues: BTreeMap<EndpointId, Queue>,
    /// Dead deliveries by the time they died.
    dead: BTreeSet<(DateTime<Utc>, u64)>,
    next_seq: u64,
    /// The endpoint served last, so the next claim starts after it.
    cursor: Option<EndpointId>,
}

#[derive(Debug)]
struct StoredEvent {
    event: Event,
    deliveries: Vec<u64>,
}

#[derive(Debug)]
struct Stored {
    delivery: Delivery,
    attempts: Vec<Attempt>,
}

#[derive(Debug, Default)]
struct Queue {
    schedule: BTreeSet<(DateTime<Utc>, u64)>,
    /// Unfinished deliveries in dispatch order (for strict ordering).
    unfinished: BTreeSet<u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that breaks the invariants worse than losing the process would, so recover.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    /// Moves `seq` from state `old` to its current state in the indexes.
    fn reindex(&mut self, seq: u64, old: DeliveryState) {
        let Some(stored) = self.deliveries.get(&seq) else {
            return;
        };
        let new = stored.delivery.state;
        let queue = self
            .queues
            .entry(stored.delivery.key.endpoint_id.clone())
            .or_default();
        if let Some(at) = old.claimable_at() {
            queue.schedule.remove(&(at, seq));
        }
        if let DeliveryState::Dead { at } = old {
            self.dead.remove(&(at, seq));
        }
        match new.claimable_at() {
            Some(at) => {
                queue.schedule.insert((at, seq));
                queue.unfinished.insert(seq);
            }
            None => {
                queue.unfinished.remove(&seq);
            }
        }
        if let DeliveryState::Dead { at } = new {
            self.dead.insert((at, seq));
        }
    }

    fn claim_from(
        &mut self,
        endpoint: &EndpointId,
        strict: bool,
        request: &ClaimRequest,
        max: usize,
    ) -> Vec<u64> {
        let Some(queue) = self.queues.get(endpoint) else {
            return Vec::new();
        };
        let due: Vec<u64> = if strict {
            queue
                .unfinished
                .first()
                .filter(|seq| self.deliveries[*seq].delivery.is_claimable(request.now))
                .copied()
                .into_iter()
                .collect()
        } else {
            queue
                .schedule
                .iter()
                .take_while(|(at, _)| *at <= request.now)
                .take(max)
                .map(|&(_, seq)| seq)
                .collect()
        };
        let mut claimed = Vec::with_capacity(due.len());
        for seq in due {
            let stored = self
                .deliveries
                .get_mut(&seq)
                .expect("indexed delivery exists");
            let old = stored.delivery.state;
            if stored.delivery.claim(request.now, request.lease).is_ok() {
                self.reindex(seq, old);
                claimed.push(seq);
            }
        }
        claimed
    }

    fn remove_delivery(&mut self, seq: u64) {
        let Some(stored) = self.deliveries.remove(&seq) else {
            return;
        };
        let key = stored.delivery.key;
        self.by_key.remove(&key);
        if let Some(queue) = self.queues.get_mut(&key.endpoint_id) {
            if let Some(at) = stored.delivery.state.claimable_at() {
                queue.schedule.remove(&(at, seq));
            }
            queue.unfinished.remove(&seq);
        }
        if let DeliveryState::Dead { at } = stored.delivery.state {
            self.dead.remove(&(at, seq));
        }
        let event_key = (key.tenant, key.event_id);
        if let Some(event) = self.events.get_mut(&event_key) {
            event.deliveries.retain(|s| *s != seq);
            if event.deliveries.is_empty() {
                self.events.remove(&event_key);
            }
        }
    }

    fn replay(&mut self, seq: u64, now: DateTime<Utc>) -> bool {
        let Some(stored) = self.deliveries.get_mut(&seq) else {
            return false;
        };
        let old = stored.delivery.state;
        if stored.delivery.replay(now).is_err() {
            return false;
        }
        self.reindex(seq, old);
        true
    }

    fn record(&self, seq: u64) -> DeliveryRecord {
        let stored = &self.deliveries[&seq];
        DeliveryRecord {
            delivery: stored.delivery.clone(),
            attempts: stored.attempts.clone(),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        endpoint.validate()?;
        self.lock()
            .endpoints
            .insert(endpoint.id.clone(), endpoint.clone());
        Ok(())
    }

    async fn get_endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>> {
        Ok(self.lock().endpoints.get(id).cloned())
    }

    async fn list_endpoints(&self, tenant: Option<&TenantId>) -> Result<Vec<Endpoint>> {
        Ok(self
            .lock()
            .endpoints
            .values()
            .filter(|e| tenant.is_none() || e.tenant_id.as_ref() == tenant)
            .cloned()
            .collect())
    }

    async fn delete_endpoint(&self, id: &EndpointId) -> Result<bool> {
        let mut inner = self.lock();
        if inner.endpoints.remove(id).is_none() {
            return Ok(false);
        }
        let seqs: Vec<u64> = inner
            .deliveries
            .iter()
            .filter(|(_, s)| &s.delivery.key.endpoint_id == id)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in seqs {
            inner.remove_delivery(seq);
        }
        inner.queues.remove(id);
        Ok(true)
    }

    async fn enqueue(
        &self,
        event: &Event,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> Result<Enqueued> {
        let mut inner = self.lock();
        for id in endpoints {
            let endpoint = inner
                .endpoints
                .get(id)
                .ok_or_else(|| Error::not_found("endpoint", id.as_str()))?;
            check_tenant(endpoint, event)?;
        }
        let event_key = (event.tenant_id.clone(), event.id.clone());
        let mut result = Enqueued::default();
        let mut created = Vec::new();
        for id in endpoints {
            let key = IdempotencyKey::new(event.id.clone(), id.clone(), event.tenant_id.clone());
            if inner.by_key.contains_key(&key) || created.iter().any(|(k, _)| k == &key) {
                result.existing += 1;
                continue;
            }
            let seq = inner.next_seq;
            inner.next_seq += 1;
            created.push((key, seq));
        }
        result.created = created.len();
        if created.is_empty() {
            return Ok(result);
        }
        let stored_event = inner
            .events
            .entry(event_key)
            .or_insert_with(|| StoredEvent {
                event: Event {
                    created_at: Some(event.created_at.unwrap_or(now)),
                    ..event.clone()
                },
                deliveries: Vec::new(),
            });
        stored_event
            .deliveries
            .extend(created.iter().map(|(_, seq)| *seq));
        for (key, seq) in created {
            let delivery = Delivery::new(key.clone(), event.priority, now);
            let queue = inner.queues.entry(key.endpoint_id.clone()).or_default();
            queue.schedule.insert((now, seq));
            queue.unfinished.insert(seq);
            inner.by_key.insert(key, seq);
            inner.deliveries.insert(
                seq,
                Stored {
                    delivery,
                    attempts: Vec::new(),
                },
            );
        }
        Ok(result)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        let mut inner = self.lock();
        let mut order: Vec<(EndpointId, bool, usize)> = inner
            .queues
            .iter()
            .filter(|(_, q)| q.schedule.first().is_some_and(|(at, _)| *at <= request.now))
            .filter_map(|(id, _)| {
                let endpoint = inner.endpoints.get(id)?;
                let max = request
                    .endpoint_limits
                    .get(id)
                    .copied()
                    .unwrap_or(request.per_endpoint_limit);
                (endpoint.enabled && max > 0)
                    .then(|| (id.clone(), endpoint.ordering == Ordering::Strict, max))
            })
            .collect();
        // Round robin: start after the endpoint served last.
        if let Some(cursor) = &inner.cursor {
            let first_after = order.partition_point(|(id, _, _)| id <= cursor);
            order.rotate_left(first_after);
        }
        let mut seqs = Vec::new();
        for (id, strict, max) in order {
            let room = request.limit.saturating_sub(seqs.len());
            if room == 0 {
                break;
            }
            let got = inner.claim_from(&id, strict, request, room.min(max));
            if !got.is_empty() {
                seqs.extend(got);
                inner.cursor = Some(id);
            }
        }
        Ok(seqs
            .into_iter()
            .map(|seq| {
                let delivery = inner.deliveries[&seq].delivery.clone();
                let key = &delivery.key;
                let event = inner.events[&(key.tenant.clone(), key.event_id.clone())]
                    .event
                    .clone();
                let lease = crate::Lease {
                    key: key.clone(),
                    token: delivery.lease_token,
                    until: match delivery.state {
                        DeliveryState::InFlight { lease_until } => lease_until,
                        _ => unreachable!("just claimed"),
                    },
                };
                Claimed {
                    delivery,
                    event,
                    lease,
                }
            })
            .collect())
    }

    async fn complete(&self, finished: &[Finished], now: DateTime<Utc>) -> Result<Completed> {
        let mut inner = self.lock();
        let mut result = Completed::default();
        for f in finished {
            let Some(&seq) = inner.by_key.get(&f.lease.key) else {
                result.lease_lost.push(f.lease.key.clone());
                continue;
            };
            let stored = inner
                .deliveries
                .get_mut(&seq)
                .expect("indexed delivery exists");
            let old = stored.delivery.state;
            if stored
                .delivery
                .complete(&f.lease, &f.completion, now)
                .is_err()
            {
                result.lease_lost.push(f.lease.key.clone());
                continue;
            }
            if let Some(attempt) = f.completion.attempt() {
                stored.attempts.push(attempt.clone());
            }
            inner.reindex(seq, old);
            result.applied += 1;
        }
        Ok(result)
    }

    async fn get_delivery(&self, key: &IdempotencyKey) -> Result<Option<DeliveryRecord>> {
        let inner = self.lock();
        Ok(inner.by_key.get(key).map(|seq| inner.record(*seq)))
    }

    async fn get_event(
        &self,
        tenant: Option<&TenantId>,
        id: &EventId,
    ) -> Result<Option<EventRecord>> {
        let inner = self.lock();
        Ok(inner
            .events
            .get(&(tenant.cloned(), id.clone()))
            .map(|stored| EventRecord {
                event: stored.event.clone(),
                deliveries: stored
                    .deliveries
                    .iter()
                    .map(|seq| inner.record(*seq))
                    .collect(),
            }))
    }

    async fn list_dead(&self, query: &DeadLetterQuery) -> Result<Vec<Delivery>> {
        let inner = self.lock();
        Ok(inner
            .dead
            .iter()
            .map(|(_, seq)| &inner.deliveries[seq].delivery)
            .filter(|d| matches_dead(d, query.tenant.as_ref(), query.endpoint_id.as_ref()))
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn replay_dead(&self, key: &IdempotencyKey, now: DateTime<Utc>) -> Result<bool> {
        let mut inner = self.lock();
        let Some(&seq) = inner.by_key.get(key) else {
            return Ok(false);
        };
        Ok(inner.replay(seq, now))
    }

    async fn replay_all_dead(&self, tenant: Option<&TenantId>, now: DateTime<Utc>) -> Result<u64> {
        let mut inner = self.lock();
        let seqs: Vec<u64> = inner
            .dead
            .iter()
            .map(|(_, seq)| *seq)
            .filter(|seq| matches_dead(&inner.deliveries[seq].delivery, tenant, None))
            .collect();
        let mut count = 0;
        for seq in seqs {
            count += u64::from(inner.replay(seq, now));
        }
        Ok(count)
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut inner = self.lock();
        let seqs: Vec<u64> = inner
            .deliveries
            .iter()
            .filter(
                |(_, s)| matches!(s.delivery.state, DeliveryState::Delivered { at } if at < before),
            )
            .map(|(seq, _)| *seq)
            .collect();
        for &seq in &seqs {
            inner.remove_delivery(seq);
        }
        Ok(seqs.len() as u64)
    }
}

fn matches_dead(d: &Delivery, tenant: Option<&TenantId>, endpoint: Option<&EndpointId>) -> bool {
    (tenant.is_none() || d.key.tenant.as_ref() == tenant)
        && endpoint.is_none_or(|e| &d.key.endpoint_id == e)
}

/// Fails unless `endpoint` may receive `event`: same tenant, or no tenant on either.
pub(crate) fn check_tenant(endpoint: &Endpoint, event: &Event) -> Result<()> {
    if endpoint.tenant_id == event.tenant_id {
        Ok(())
    } else {
        Err(Error::invalid(
            "endpoints",
            format!(
                "endpoint {} belongs to another tenant than event {}",
                endpoint.id, event.id
            ),
        ))
    }
}
