//! An in-memory [`Store`]: fast, shared by every dispatcher in the process, and gone
//! when the process ends.
//!
//! Events and deliveries live in slabs (vectors indexed by slot), so a queued
//! delivery costs its record and a few index entries, not a hash-table entry of its
//! own: a million queued deliveries fit in well under 512 MB.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    Attempt, ClaimRequest, Claimed, Completed, DeadLetterQuery, Delivery, DeliveryRecord,
    DeliveryState, Endpoint, EndpointId, Enqueued, Error, Event, EventId, EventRecord, Finished,
    IdempotencyKey, Lease, Ordering, Result, Store, TenantId,
};

/// An in-memory [`Store`]. Not durable: use a store crate for that.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

type EventKey = (Option<TenantId>, EventId);

/// A slot in a slab.
type Slot = u32;

#[derive(Debug, Default)]
struct Inner {
    endpoints: BTreeMap<EndpointId, Endpoint>,
    events: Slab<StoredEvent>,
    event_slots: HashMap<EventKey, Slot>,
    deliveries: Slab<Stored>,
    /// Per endpoint: unfinished deliveries by the time they become claimable.
    queues: BTreeMap<EndpointId, Queue>,
    /// Dead deliveries by the time they died.
    dead: BTreeSet<(DateTime<Utc>, Slot)>,
    /// The endpoint served last, so the next claim starts after it.
    cursor: Option<EndpointId>,
    next_seq: u64,
}

/// A vector of optional records with a free list: slots are stable and reused.
#[derive(Debug)]
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<Slot>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, item: T) -> Slot {
        match self.free.pop() {
            Some(slot) => {
                self.items[slot as usize] = Some(item);
                slot
            }
            None => {
                self.items.push(Some(item));
                Slot::try_from(self.items.len() - 1).expect("fewer than 2^32 records")
            }
        }
    }

    fn get(&self, slot: Slot) -> Option<&T> {
        self.items.get(slot as usize).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, slot: Slot) -> Option<&mut T> {
        self.items.get_mut(slot as usize).and_then(Option::as_mut)
    }

    fn remove(&mut self, slot: Slot) -> Option<T> {
        let item = self.items.get_mut(slot as usize)?.take();
        if item.is_some() {
            self.free.push(slot);
        }
        item
    }

    fn iter(&self) -> impl Iterator<Item = (Slot, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(slot, item)| Some((Slot::try_from(slot).ok()?, item.as_ref()?)))
    }
}

#[derive(Debug)]
struct StoredEvent {
    event: Event,
    /// Its deliveries, in creation order.
    deliveries: Slots,
}

/// A list of slots that needs no allocation for the common case of one.
#[derive(Debug)]
enum Slots {
    One(Slot),
    Many(Vec<Slot>),
}

impl Slots {
    fn iter(&self) -> std::slice::Iter<'_, Slot> {
        match self {
            Self::One(slot) => std::slice::from_ref(slot).iter(),
            Self::Many(slots) => slots.iter(),
        }
    }

    fn push(&mut self, slot: Slot) {
        match self {
            Self::One(first) => *self = Self::Many(vec![*first, slot]),
            Self::Many(slots) => slots.push(slot),
        }
    }

    /// Removes `slot`; returns whether the list is now empty.
    fn remove(&mut self, slot: Slot) -> bool {
        match self {
            Self::One(only) => *only == slot,
            Self::Many(slots) => {
                slots.retain(|s| *s != slot);
                slots.is_empty()
            }
        }
    }
}

#[derive(Debug)]
struct Stored {
    delivery: Delivery,
    /// Creation order across the store (for strict ordering).
    seq: u64,
    event: Slot,
    attempts: Vec<Attempt>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Claimable deliveries not yet seen due, by the time they become claimable.
    schedule: BTreeSet<(DateTime<Utc>, Slot)>,
    /// Claimable deliveries seen due, in claim order: priority (highest first), due
    /// time, creation order. A claim moves what has come due from `schedule` here, so
    /// each delivery is moved once per state.
    ready: BTreeSet<ReadyKey>,
    /// Unfinished deliveries in creation order (for strict ordering).
    unfinished: BTreeMap<u64, Slot>,
}

type ReadyKey = (std::cmp::Reverse<i16>, DateTime<Utc>, u64, Slot);

impl Queue {
    /// Forgets a claimable delivery, wherever it is indexed.
    fn unschedule(&mut self, at: DateTime<Utc>, stored: &Stored, slot: Slot) {
        if !self.schedule.remove(&(at, slot)) {
            self.ready.remove(&ready_key(stored, at, slot));
        }
    }

    fn has_due(&self, now: DateTime<Utc>) -> bool {
        !self.ready.is_empty() || self.schedule.first().is_some_and(|(at, _)| *at <= now)
    }
}

fn ready_key(stored: &Stored, at: DateTime<Utc>, slot: Slot) -> ReadyKey {
    (
        std::cmp::Reverse(stored.delivery.priority),
        at,
        stored.seq,
        slot,
    )
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
    fn delivery_slot(&self, key: &IdempotencyKey) -> Option<Slot> {
        let event = self
            .event_slots
            .get(&(key.tenant.clone(), key.event_id.clone()))?;
        self.events
            .get(*event)?
            .deliveries
            .iter()
            .copied()
            .find(|slot| {
                self.deliveries
                    .get(*slot)
                    .is_some_and(|s| s.delivery.key.endpoint_id == key.endpoint_id)
            })
    }

    /// Moves `slot` from state `old` to its current state in the indexes.
    fn reindex(&mut self, slot: Slot, old: DeliveryState) {
        let Some(stored) = self.deliveries.get(slot) else {
            return;
        };
        let (new, seq) = (stored.delivery.state, stored.seq);
        let queue = self
            .queues
            .entry(stored.delivery.key.endpoint_id.clone())
            .or_default();
        if let Some(at) = old.claimable_at() {
            queue.unschedule(at, stored, slot);
        }
        if let DeliveryState::Dead { at } = old {
            self.dead.remove(&(at, slot));
        }
        match new.claimable_at() {
            Some(at) => {
                queue.schedule.insert((at, slot));
                queue.unfinished.insert(seq, slot);
            }
            None => {
                queue.unfinished.remove(&seq);
            }
        }
        if let DeliveryState::Dead { at } = new {
            self.dead.insert((at, slot));
        }
    }

    fn claim_from(
        &mut self,
        endpoint: &EndpointId,
        strict: bool,
        request: &ClaimRequest,
        max: usize,
    ) -> Vec<Slot> {
        let Some(queue) = self.queues.get_mut(endpoint) else {
            return Vec::new();
        };
        while let Some(&(at, slot)) = queue.schedule.first() {
            if at > request.now {
                break;
            }
            queue.schedule.pop_first();
            if let Some(stored) = self.deliveries.get(slot) {
                queue.ready.insert(ready_key(stored, at, slot));
            }
        }
        let due: Vec<Slot> = if strict {
            queue
                .unfinished
                .first_key_value()
                .map(|(_, slot)| *slot)
                .filter(|slot| {
                    self.deliveries
                        .get(*slot)
                        .is_some_and(|s| s.delivery.is_claimable(request.now))
                })
                .into_iter()
                .collect()
        } else {
            queue
                .ready
                .iter()
                .take(max)
                .map(|&(_, _, _, slot)| slot)
                .collect()
        };
        let mut claimed = Vec::with_capacity(due.len());
        for slot in due {
            let Some(stored) = self.deliveries.get_mut(slot) else {
                continue;
            };
            let old = stored.delivery.state;
            if stored.delivery.claim(request.now, request.lease).is_ok() {
                self.reindex(slot, old);
                claimed.push(slot);
            }
        }
        claimed
    }

    fn remove_delivery(&mut self, slot: Slot) {
        let Some(stored) = self.deliveries.remove(slot) else {
            return;
        };
        let key = &stored.delivery.key;
        if let Some(queue) = self.queues.get_mut(&key.endpoint_id) {
            if let Some(at) = stored.delivery.state.claimable_at() {
                queue.unschedule(at, &stored, slot);
            }
            queue.unfinished.remove(&stored.seq);
        }
        if let DeliveryState::Dead { at } = stored.delivery.state {
            self.dead.remove(&(at, slot));
        }
        if let Some(event) = self.events.get_mut(stored.event)
            && event.deliveries.remove(slot)
        {
            self.events.remove(stored.event);
            self.event_slots
                .remove(&(key.tenant.clone(), key.event_id.clone()));
        }
    }

    fn replay(&mut self, slot: Slot, now: DateTime<Utc>) -> bool {
        let Some(stored) = self.deliveries.get_mut(slot) else {
            return false;
        };
        let old = stored.delivery.state;
        if stored.delivery.replay(now).is_err() {
            return false;
        }
        self.reindex(slot, old);
        true
    }

    fn record(&self, slot: Slot) -> Option<DeliveryRecord> {
        let stored = self.deliveries.get(slot)?;
        Some(DeliveryRecord {
            delivery: stored.delivery.clone(),
            attempts: stored.attempts.clone(),
        })
    }

    fn claimed(&self, slot: Slot) -> Option<Claimed> {
        let stored = self.deliveries.get(slot)?;
        let DeliveryState::InFlight { lease_until } = stored.delivery.state else {
            return None;
        };
        Some(Claimed {
            delivery: stored.delivery.clone(),
            event: self.events.get(stored.event)?.event.clone(),
            lease: Lease {
                key: stored.delivery.key.clone(),
                token: stored.delivery.lease_token,
                until: lease_until,
            },
        })
    }

    fn dead_slots<'a>(
        &'a self,
        tenant: Option<&'a TenantId>,
        endpoint: Option<&'a EndpointId>,
    ) -> impl Iterator<Item = Slot> + 'a {
        self.dead.iter().map(|(_, slot)| *slot).filter(move |slot| {
            self.deliveries.get(*slot).is_some_and(|s| {
                let key = &s.delivery.key;
                (tenant.is_none() || key.tenant.as_ref() == tenant)
                    && endpoint.is_none_or(|e| &key.endpoint_id == e)
            })
        })
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
        let slots: Vec<Slot> = inner
            .deliveries
            .iter()
            .filter(|(_, s)| &s.delivery.key.endpoint_id == id)
            .map(|(slot, _)| slot)
            .collect();
        for slot in slots {
            inner.remove_delivery(slot);
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
        let existing_event = inner.event_slots.get(&event_key).copied();
        let mut result = Enqueued::default();
        let mut new_endpoints: Vec<&EndpointId> = Vec::with_capacity(endpoints.len());
        for id in endpoints {
            let known = existing_event.is_some_and(|slot| {
                inner.events.get(slot).is_some_and(|e| {
                    e.deliveries.iter().any(|d| {
                        inner
                            .deliveries
                            .get(*d)
                            .is_some_and(|s| &s.delivery.key.endpoint_id == id)
                    })
                })
            });
            if known || new_endpoints.contains(&id) {
                result.existing += 1;
            } else {
                new_endpoints.push(id);
            }
        }
        result.created = new_endpoints.len();
        if new_endpoints.is_empty() {
            return Ok(result);
        }
        let mut event_slot = existing_event;
        // Deliveries take the event's priority: the stored event's when it exists.
        let priority = existing_event
            .and_then(|slot| inner.events.get(slot))
            .map_or(event.priority, |stored| stored.event.priority);
        for id in new_endpoints {
            let key = IdempotencyKey::new(event.id.clone(), id.clone(), event.tenant_id.clone());
            let seq = inner.next_seq;
            inner.next_seq += 1;
            // The event's slot is only known once its first delivery exists.
            let placeholder = event_slot.unwrap_or(Slot::MAX);
            let slot = inner.deliveries.insert(Stored {
                delivery: Delivery::new(key, priority, now),
                seq,
                event: placeholder,
                attempts: Vec::new(),
            });
            match event_slot {
                Some(existing) => {
                    if let Some(stored_event) = inner.events.get_mut(existing) {
                        stored_event.deliveries.push(slot);
                    }
                }
                None => {
                    let new = inner.events.insert(StoredEvent {
                        event: Event {
                            created_at: Some(event.created_at.unwrap_or(now)),
                            ..event.clone()
                        },
                        deliveries: Slots::One(slot),
                    });
                    inner.event_slots.insert(event_key.clone(), new);
                    if let Some(stored) = inner.deliveries.get_mut(slot) {
                        stored.event = new;
                    }
                    event_slot = Some(new);
                }
            }
            let queue = inner.queues.entry(id.clone()).or_default();
            queue.schedule.insert((now, slot));
            queue.unfinished.insert(seq, slot);
        }
        Ok(result)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        let mut inner = self.lock();
        let mut order: Vec<(EndpointId, bool, usize)> = inner
            .queues
            .iter()
            .filter(|(_, q)| q.has_due(request.now))
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
        let mut slots = Vec::new();
        for (id, strict, max) in order {
            let room = request.limit.saturating_sub(slots.len());
            if room == 0 {
                break;
            }
            let got = inner.claim_from(&id, strict, request, room.min(max));
            if !got.is_empty() {
                slots.extend(got);
                inner.cursor = Some(id);
            }
        }
        Ok(slots
            .into_iter()
            .filter_map(|slot| inner.claimed(slot))
            .collect())
    }

    async fn complete(&self, finished: &[Finished], now: DateTime<Utc>) -> Result<Completed> {
        let mut inner = self.lock();
        let mut result = Completed::default();
        for f in finished {
            let Some(slot) = inner.delivery_slot(&f.lease.key) else {
                result.lease_lost.push(f.lease.key.clone());
                continue;
            };
            let Some(stored) = inner.deliveries.get_mut(slot) else {
                result.lease_lost.push(f.lease.key.clone());
                continue;
            };
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
            inner.reindex(slot, old);
            result.applied += 1;
        }
        Ok(result)
    }

    async fn get_delivery(&self, key: &IdempotencyKey) -> Result<Option<DeliveryRecord>> {
        let inner = self.lock();
        Ok(inner.delivery_slot(key).and_then(|slot| inner.record(slot)))
    }

    async fn get_event(
        &self,
        tenant: Option<&TenantId>,
        id: &EventId,
    ) -> Result<Option<EventRecord>> {
        let inner = self.lock();
        let Some(slot) = inner.event_slots.get(&(tenant.cloned(), id.clone())) else {
            return Ok(None);
        };
        Ok(inner.events.get(*slot).map(|stored| EventRecord {
            event: stored.event.clone(),
            deliveries: stored
                .deliveries
                .iter()
                .filter_map(|d| inner.record(*d))
                .collect(),
        }))
    }

    async fn list_dead(&self, query: &DeadLetterQuery) -> Result<Vec<Delivery>> {
        let inner = self.lock();
        Ok(inner
            .dead_slots(query.tenant.as_ref(), query.endpoint_id.as_ref())
            .take(query.limit)
            .filter_map(|slot| inner.deliveries.get(slot).map(|s| s.delivery.clone()))
            .collect())
    }

    async fn replay_dead(&self, key: &IdempotencyKey, now: DateTime<Utc>) -> Result<bool> {
        let mut inner = self.lock();
        let Some(slot) = inner.delivery_slot(key) else {
            return Ok(false);
        };
        Ok(inner.replay(slot, now))
    }

    async fn replay_all_dead(&self, tenant: Option<&TenantId>, now: DateTime<Utc>) -> Result<u64> {
        let mut inner = self.lock();
        let slots: Vec<Slot> = inner.dead_slots(tenant, None).collect();
        let mut count = 0;
        for slot in slots {
            count += u64::from(inner.replay(slot, now));
        }
        Ok(count)
    }

    async fn unfinished(&self) -> Result<Option<u64>> {
        let inner = self.lock();
        let count: usize = inner.queues.values().map(|q| q.unfinished.len()).sum();
        Ok(Some(count as u64))
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut inner = self.lock();
        let slots: Vec<Slot> = inner
            .deliveries
            .iter()
            .filter(
                |(_, s)| matches!(s.delivery.state, DeliveryState::Delivered { at } if at < before),
            )
            .map(|(slot, _)| slot)
            .collect();
        for &slot in &slots {
            inner.remove_delivery(slot);
        }
        Ok(slots.len() as u64)
    }
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
