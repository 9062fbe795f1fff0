//! The store conformance suite: every [`Store`] implementation runs it.
//!
//! ```no_run
//! # async fn example() {
//! use webhook_core::{MemoryStore, testkit};
//! // `make` returns a fresh, empty store for each case.
//! testkit::run_all(|| async { MemoryStore::new() }).await;
//! # }
//! ```
//!
//! Each case panics with a message naming what broke. Times are passed in, so the
//! suite is deterministic and never sleeps.

use std::{collections::HashSet, future::Future, time::Duration};

use chrono::{DateTime, Utc};

use crate::{
    Attempt, ClaimRequest, Claimed, Completion, DeadLetterQuery, DeliveryState, Endpoint,
    EndpointId, Error, Event, EventId, Finished, IdempotencyKey, Ordering, Store,
};

const LEASE: Duration = Duration::from_secs(30);

/// Runs every case, each on a fresh store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {
            $(
                eprintln!("store conformance: {}", stringify!($case));
                $case(&make().await).await;
            )*
        };
    }
    cases!(
        endpoint_crud,
        enqueue_is_idempotent,
        enqueue_checks_endpoints_and_writes_nothing_on_error,
        event_round_trips,
        claim_hands_each_delivery_out_once,
        expired_lease_is_claimable_again,
        delivered_is_final_and_recorded,
        retry_waits_until_due,
        defer_spends_no_attempt,
        dead_letters_list_and_replay,
        attempt_history_is_kept_in_order,
        tenant_scoping,
        claims_are_fair_across_endpoints,
        excluded_and_disabled_endpoints_are_skipped,
        strict_ordering_holds_back_later_deliveries,
        switching_ordering_keeps_dispatch_order,
        higher_priority_goes_first_within_an_endpoint,
        an_event_sent_again_keeps_its_priority,
        deleting_an_endpoint_drops_its_deliveries,
        a_lease_on_a_deleted_delivery_does_not_hold_its_successor,
        prune_removes_old_delivered_work_only,
        pruning_part_of_a_fanout_keeps_the_rest,
        concurrent_claims_never_overlap,
        unfinished_counts_pending_and_in_flight,
    );
}

/// The suite's fixed clock origin, plus `secs`.
pub fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("valid time")
}

fn endpoint(id: &str) -> Endpoint {
    Endpoint::new(id, format!("https://example.test/{id}"))
}

fn event(id: &str) -> Event {
    Event::new(id, format!("{{\"id\":\"{id}\"}}"))
}

fn ids(list: &[&str]) -> Vec<EndpointId> {
    list.iter().map(|s| EndpointId::from(*s)).collect()
}

fn key(event: &str, endpoint: &str) -> IdempotencyKey {
    IdempotencyKey::new(event.into(), endpoint.into(), None)
}

fn ok_attempt(at: DateTime<Utc>, status: u16) -> Attempt {
    Attempt::response(at, Duration::from_millis(12), status, b"response body")
}

async fn setup(store: &impl Store, endpoints: &[&str]) {
    for id in endpoints {
        store
            .put_endpoint(&endpoint(id))
            .await
            .expect("put_endpoint");
    }
}

async fn claim(store: &impl Store, now: DateTime<Utc>, limit: usize) -> Vec<Claimed> {
    store
        .claim(&ClaimRequest::new(now, LEASE, limit))
        .await
        .expect("claim")
}

async fn finish(
    store: &impl Store,
    claimed: &Claimed,
    completion: Completion,
    now: DateTime<Utc>,
) -> bool {
    let done = store
        .complete(
            &[Finished {
                lease: claimed.lease.clone(),
                completion,
            }],
            now,
        )
        .await
        .expect("complete");
    done.applied == 1
}

async fn state(store: &impl Store, key: &IdempotencyKey) -> DeliveryState {
    store
        .get_delivery(key)
        .await
        .expect("get_delivery")
        .unwrap_or_else(|| panic!("delivery {key} missing"))
        .delivery
        .state
}

async fn endpoint_crud(store: &impl Store) {
    assert_eq!(store.get_endpoint(&"a".into()).await.unwrap(), None);
    let a = endpoint("a")
        .with_tenant_id("t1")
        .with_secret("whsec_c2VjcmV0")
        .with_event_types(["user.*"]);
    store.put_endpoint(&a).await.unwrap();
    store.put_endpoint(&endpoint("b")).await.unwrap();
    assert_eq!(
        store.get_endpoint(&"a".into()).await.unwrap(),
        Some(a.clone()),
        "endpoint round trip"
    );
    let updated = a.with_enabled(false).with_rate_limit(5, 10);
    store.put_endpoint(&updated).await.unwrap();
    assert_eq!(
        store.get_endpoint(&"a".into()).await.unwrap(),
        Some(updated),
        "put replaces"
    );
    let all: Vec<_> = store
        .list_endpoints(None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all, ids(&["a", "b"]), "list all, ordered by id");
    let t1 = store.list_endpoints(Some(&"t1".into())).await.unwrap();
    assert_eq!(t1.len(), 1, "list by tenant");
    assert!(store.delete_endpoint(&"a".into()).await.unwrap());
    assert!(
        !store.delete_endpoint(&"a".into()).await.unwrap(),
        "second delete reports absence"
    );
    assert_eq!(store.get_endpoint(&"a".into()).await.unwrap(), None);
    let invalid = Endpoint::new("bad", "ftp://example.test");
    assert!(
        store.put_endpoint(&invalid).await.is_err(),
        "invalid endpoint refused"
    );
}

async fn enqueue_is_idempotent(store: &impl Store) {
    setup(store, &["a", "b", "c"]).await;
    let e = event("e1");
    let first = store.enqueue(&e, &ids(&["a", "b"]), t(0)).await.unwrap();
    assert_eq!((first.created, first.existing), (2, 0));
    let again = store.enqueue(&e, &ids(&["a", "b"]), t(1)).await.unwrap();
    assert_eq!(
        (again.created, again.existing),
        (0, 2),
        "same keys create nothing"
    );
    let more = store.enqueue(&e, &ids(&["b", "c"]), t(2)).await.unwrap();
    assert_eq!((more.created, more.existing), (1, 1));
    let record = store
        .get_event(None, &"e1".into())
        .await
        .unwrap()
        .expect("event stored");
    let endpoints: Vec<_> = record
        .deliveries
        .iter()
        .map(|d| d.delivery.key.endpoint_id.clone())
        .collect();
    assert_eq!(
        endpoints,
        ids(&["a", "b", "c"]),
        "one delivery per key, in creation order"
    );
    assert_eq!(
        claim(store, t(10), 100).await.len(),
        3,
        "three deliveries, not five"
    );
}

async fn enqueue_checks_endpoints_and_writes_nothing_on_error(store: &impl Store) {
    setup(store, &["a"]).await;
    store
        .put_endpoint(&endpoint("other").with_tenant_id("t2"))
        .await
        .unwrap();
    let err = store
        .enqueue(&event("e1"), &ids(&["a", "missing"]), t(0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { .. }),
        "unknown endpoint: {err}"
    );
    let err = store
        .enqueue(&event("e1").with_tenant_id("t1"), &ids(&["other"]), t(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "cross-tenant: {err}");
    assert!(
        store.get_event(None, &"e1".into()).await.unwrap().is_none(),
        "nothing written"
    );
    assert!(
        claim(store, t(10), 10).await.is_empty(),
        "nothing claimable"
    );
}

async fn event_round_trips(store: &impl Store) {
    store
        .put_endpoint(&endpoint("a").with_tenant_id("t1"))
        .await
        .unwrap();
    let payload: Vec<u8> = (0..=255u8)
        .chain(b"{\"big\":true}".iter().copied())
        .cycle()
        .take(5000)
        .collect();
    let e = Event::new("e1", payload.clone())
        .with_tenant_id("t1")
        .with_event_type("user.created")
        .with_priority(7)
        .with_created_at(t(-5));
    store.enqueue(&e, &ids(&["a"]), t(0)).await.unwrap();
    let record = store
        .get_event(Some(&"t1".into()), &"e1".into())
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(record.event, e, "event round trip, payload byte for byte");
    let claimed = claim(store, t(0), 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].event.payload.as_ref(),
        &payload[..],
        "claim carries the payload"
    );
    assert_eq!(claimed[0].delivery.priority, 7);
    let untimed = Event::new("e2", "x").with_tenant_id("t1");
    store.enqueue(&untimed, &ids(&["a"]), t(3)).await.unwrap();
    let record = store
        .get_event(Some(&"t1".into()), &"e2".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.event.created_at,
        Some(t(3)),
        "created_at defaults to enqueue time"
    );
}

async fn claim_hands_each_delivery_out_once(store: &impl Store) {
    setup(store, &["a"]).await;
    for i in 0..3 {
        store
            .enqueue(&event(&format!("e{i}")), &ids(&["a"]), t(0))
            .await
            .unwrap();
    }
    assert!(
        claim(store, t(-1), 10).await.is_empty(),
        "nothing is due before its time"
    );
    let first = claim(store, t(0), 2).await;
    assert_eq!(first.len(), 2, "limit respected");
    let second = claim(store, t(1), 10).await;
    assert_eq!(second.len(), 1);
    assert!(
        claim(store, t(2), 10).await.is_empty(),
        "in-flight work is not claimed twice"
    );
    let keys: HashSet<_> = first
        .iter()
        .chain(&second)
        .map(|c| c.delivery.key.clone())
        .collect();
    assert_eq!(keys.len(), 3);
    for c in first.iter().chain(&second) {
        assert!(matches!(c.delivery.state, DeliveryState::InFlight { .. }));
        assert_eq!(c.lease.key, c.delivery.key);
        assert!(
            matches!(state(store, &c.lease.key).await, DeliveryState::InFlight { lease_until } if lease_until == c.lease.until)
        );
    }
}

async fn expired_lease_is_claimable_again(store: &impl Store) {
    setup(store, &["a"]).await;
    store
        .enqueue(&event("e1"), &ids(&["a"]), t(0))
        .await
        .unwrap();
    let old = claim(store, t(0), 1).await.remove(0);
    assert!(claim(store, t(29), 1).await.is_empty(), "lease still held");
    let new = claim(store, t(30), 1).await;
    assert_eq!(new.len(), 1, "expired lease is claimable again");
    let new = &new[0];
    assert_ne!(new.lease.token, old.lease.token);
    let done = Completion::Delivered {
        attempt: ok_attempt(t(31), 200),
    };
    assert!(
        !finish(store, &old, done.clone(), t(31)).await,
        "the old holder lost its lease"
    );
    assert!(
        finish(store, new, done, t(31)).await,
        "the new holder completes"
    );
    assert_eq!(
        state(store, &new.lease.key).await,
        DeliveryState::Delivered { at: t(31) }
    );
}

async fn delivered_is_final_and_recorded(store: &impl Store) {
    setup(store, &["a"]).await;
    store
        .enqueue(&event("e1"), &ids(&["a"]), t(0))
        .await
        .unwrap();
    let c = claim(store, t(0), 1).await.remove(0);
    assert!(
        finish(
            store,
            &c,
            Completion::Delivered {
                attempt: ok_attempt(t(0), 204)
            },
            t(1)
        )
        .await
    );
    let record = store.get_delivery(&key("e1", "a")).await.unwrap().unwrap();
    assert_eq!(record.delivery.state, DeliveryState::Delivered { at: t(1) });
    assert_eq!(record.delivery.attempts, 1);
    assert_eq!(record.delivery.last_status, Some(204));
    assert_eq!(record.attempts, vec![ok_attempt(t(0), 204)]);
    assert!(
        claim(store, t(1000), 10).await.is_empty(),
        "delivered is final"
    );
    assert!(
        !finish(
            store,
            &c,
            Completion::Delivered {
                attempt: ok_attempt(t(2), 200)
            },
            t(2)
        )
        .await,
        "no second completion"
    );
}

async fn retry_waits_until_due(store: &impl Store) {
    setup(store, &["a"]).await;
    store
        .enqueue(&event("e1"), &ids(&["a"]), t(0))
        .await
        .unwrap();
    let c = claim(store, t(0), 1).await.remove(0);
    let retry = Completion::Retry {
        attempt: ok_attempt(t(0), 503),
        next_attempt_at: t(10),
    };
    assert!(finish(store, &c, retry, t(1)).await);
    assert_eq!(
        state(store, &key("e1", "a")).await,
        DeliveryState::Pending {
            next_attempt_at: t(10)
        }
    );
    assert!(
        claim(store, t(9), 1).await.is_empty(),
        "not before next_attempt_at"
    );
    let again = claim(store, t(10), 1).await;
    assert_eq!(again.len(), 1, "claimable at next_attempt_at");
    assert_eq!(again[0].delivery.attempts, 1);
}

async fn defer_spends_no_attempt(store: &impl Store) {
    setup(store, &["a"]).await;
    store
        .enqueue(&event("e1"), &ids(&["a"]), t(0))
        .await
        .unwrap();
    let c = claim(store, t(0), 1).await.remove(0);
    assert!(finish(store, &c, Completion::Defer { until: t(5) }, t(0)).await);
    let record = store.get_delivery(&key("e1", "a")).await.unwrap().unwrap();
    assert_eq!(record.delivery.attempts, 0, "deferral is not an attempt");
    assert!(record.attempts.is_empty());
    assert!(claim(store, t(4), 1).await.is_empty());
    assert_eq!(claim(store, t(5), 1).await.len(), 1);
}

async fn dead_letters_list_and_replay(store: &impl Store) {
    setup(store, &["a", "b"]).await;
    for e in ["e1", "e2"] {
        store
            .enqueue(&event(e), &ids(&["a", "b"]), t(0))
            .await
            .unwrap();
    }
    let mut claimed = claim(store, t(0), 10).await;
    claimed.sort_by(|x, y| x.delivery.key.cmp(&y.delivery.key));
    for (i, c) in claimed.iter().enumerate() {
        let at = t(i64::try_from(i).unwrap());
        let completion = if c.delivery.key.endpoint_id.as_str() == "a" {
            Completion::Dead {
                attempt: ok_attempt(at, 400),
            }
        } else {
            Completion::Delivered {
                attempt: ok_attempt(at, 200),
            }
        };
        assert!(finish(store, c, completion, at).await);
    }
    let dead = store
        .list_dead(&DeadLetterQuery {
            limit: 10,
            ..DeadLetterQuery::default()
        })
        .await
        .unwrap();
    let dead_keys: Vec<_> = dead.iter().map(|d| d.key.clone()).collect();
    assert_eq!(
        dead_keys,
        vec![key("e1", "a"), key("e2", "a")],
        "dead letters, oldest first"
    );
    let limited = store
        .list_dead(&DeadLetterQuery {
            limit: 1,
            ..DeadLetterQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 1, "limit respected");
    let by_endpoint = DeadLetterQuery {
        endpoint_id: Some("b".into()),
        limit: 10,
        ..DeadLetterQuery::default()
    };
    assert!(store.list_dead(&by_endpoint).await.unwrap().is_empty());
    assert!(
        !store.replay_dead(&key("e1", "b"), t(10)).await.unwrap(),
        "delivered is not replayed"
    );
    assert!(
        !store.replay_dead(&key("nope", "a"), t(10)).await.unwrap(),
        "unknown key"
    );
    assert!(store.replay_dead(&key("e1", "a"), t(10)).await.unwrap());
    assert_eq!(
        state(store, &key("e1", "a")).await,
        DeliveryState::Pending {
            next_attempt_at: t(10)
        }
    );
    assert_eq!(
        store.replay_all_dead(None, t(11)).await.unwrap(),
        1,
        "only the remaining dead one"
    );
    let again = claim(store, t(11), 10).await;
    assert_eq!(again.len(), 2, "replayed deliveries are claimable");
    assert!(
        again.iter().all(|c| c.delivery.attempts == 0),
        "replay restores the retry budget"
    );
    let history = store.get_delivery(&key("e1", "a")).await.unwrap().unwrap();
    assert_eq!(
        history.attempts.len(),
        1,
        "replay keeps the attempt history"
    );
}

async fn attempt_history_is_kept_in_order(store: &impl Store) {
    setup(store, &["a"]).await;
    store
        .enqueue(&event("e1"), &ids(&["a"]), t(0))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..3 {
        let c = claim(store, t(i * 10), 1).await.remove(0);
        let attempt = if i == 1 {
            Attempt::failed(t(i * 10), Duration::from_secs(15), "timed out after 15s")
        } else {
            ok_attempt(t(i * 10), 500)
        };
        expected.push(attempt.clone());
        let retry = Completion::Retry {
            attempt,
            next_attempt_at: t(i * 10 + 10),
        };
        assert!(finish(store, &c, retry, t(i * 10 + 1)).await);
    }
    let record = store.get_delivery(&key("e1", "a")).await.unwrap().unwrap();
    assert_eq!(record.attempts, expected, "every attempt, oldest first");
    assert_eq!(record.delivery.attempts, 3);
    assert_eq!(record.delivery.last_status, Some(500));
    let event_view = store.get_event(None, &"e1".into()).await.unwrap().unwrap();
    assert_eq!(
        event_view.deliveries[0].attempts, expected,
        "event view carries attempts"
    );
}

async fn tenant_scoping(store: &impl Store) {
    for (id, tenant) in [("a1", "t1"), ("a2", "t1"), ("b1", "t2")] {
        store
            .put_endpoint(&endpoint(id).with_tenant_id(tenant))
            .await
            .unwrap();
    }
    let t1: Vec<_> = store
        .list_endpoints(Some(&"t1".into()))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(t1, ids(&["a1", "a2"]));
    store
        .enqueue(&event("same").with_tenant_id("t1"), &ids(&["a1"]), t(0))
        .await
        .unwrap();
    store
        .enqueue(&event("same").with_tenant_id("t2"), &ids(&["b1"]), t(0))
        .await
        .unwrap();
    let one = store
        .get_event(Some(&"t1".into()), &"same".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        one.deliveries.len(),
        1,
        "same event id in two tenants are two events"
    );
    assert_eq!(one.event.tenant_id, Some("t1".into()));
    assert!(
        store
            .get_event(Some(&"t3".into()), &"same".into())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_event(None, &"same".into())
            .await
            .unwrap()
            .is_none(),
        "no tenant is its own scope"
    );
    for c in claim(store, t(0), 10).await {
        assert!(
            finish(
                store,
                &c,
                Completion::Dead {
                    attempt: ok_attempt(t(0), 400)
                },
                t(1)
            )
            .await
        );
    }
    let q = DeadLetterQuery {
        tenant: Some("t2".into()),
        limit: 10,
        ..DeadLetterQuery::default()
    };
    let dead = store.list_dead(&q).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key.tenant, Some("t2".into()));
    assert_eq!(
        store
            .replay_all_dead(Some(&"t1".into()), t(2))
            .await
            .unwrap(),
        1
    );
    let remaining = store
        .list_dead(&DeadLetterQuery {
            limit: 10,
            ..DeadLetterQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(remaining.len(), 1, "other tenant's dead letter untouched");
    assert_eq!(remaining[0].key.tenant, Some("t2".into()));
}

async fn claims_are_fair_across_endpoints(store: &impl Store) {
    setup(store, &["busy", "quiet"]).await;
    for i in 0..10 {
        store
            .enqueue(&event(&format!("b{i}")), &ids(&["busy"]), t(0))
            .await
            .unwrap();
    }
    for i in 0..2 {
        store
            .enqueue(&event(&format!("q{i}")), &ids(&["quiet"]), t(1))
            .await
            .unwrap();
    }
    let mut request = ClaimRequest::new(t(5), LEASE, 4);
    request.per_endpoint_limit = 2;
    let claimed = store.claim(&request).await.unwrap();
    let quiet = claimed
        .iter()
        .filter(|c| c.delivery.key.endpoint_id.as_str() == "quiet")
        .count();
    assert_eq!(claimed.len(), 4);
    assert_eq!(
        quiet, 2,
        "a backlog on one endpoint does not crowd out another"
    );
    let mut request = ClaimRequest::new(t(5), LEASE, 10);
    request.endpoint_limits.insert("busy".into(), 3);
    let claimed = store.claim(&request).await.unwrap();
    assert_eq!(
        claimed.len(),
        3,
        "a per-endpoint limit overrides the default"
    );
}

async fn excluded_and_disabled_endpoints_are_skipped(store: &impl Store) {
    setup(store, &["a", "b", "c"]).await;
    store
        .put_endpoint(&endpoint("c").with_enabled(false))
        .await
        .unwrap();
    store
        .enqueue(&event("e1"), &ids(&["a", "b", "c"]), t(0))
        .await
        .unwrap();
    let mut request = ClaimRequest::new(t(0), LEASE, 10);
    request.endpoint_limits.insert("a".into(), 0);
    let claimed = store.claim(&request).await.unwrap();
    let got: Vec<_> = claimed
        .iter()
        .map(|c| c.delivery.key.endpoint_id.clone())
        .collect();
    assert_eq!(
        got,
        ids(&["b"]),
        "endpoints limited to 0 and disabled endpoints are skipped"
    );
    store.put_endpoint(&endpoint("c")).await.unwrap();
    let got: HashSet<_> = claim(store, t(1), 10)
        .await
        .into_iter()
        .map(|c| c.delivery.key.endpoint_id)
        .collect();
    assert_eq!(
        got,
        ids(&["a", "c"]).into_iter().collect(),
        "re-enabled endpoint's work is claimable"
    );
}

async fn strict_ordering_holds_back_later_deliveries(store: &impl Store) {
    store
        .put_endpoint(&endpoint("o").with_ordering(Ordering::Strict))
        .await
        .unwrap();
    for (i, e) in ["e1", "e2", "e3"].iter().enumerate() {
        store
            .enqueue(&event(e), &ids(&["o"]), t(i64::try_from(i).unwrap()))
            .await
            .unwrap();
    }
    let first = claim(store, t(5), 10).await;
    assert_eq!(first.len(), 1, "one in flight at a time");
    assert_eq!(first[0].delivery.key.event_id.as_str(), "e1");
    assert!(
        claim(store, t(6), 10).await.is_empty(),
        "nothing while e1 is in flight"
    );
    let retry = Completion::Retry {
        attempt: ok_attempt(t(6), 500),
        next_attempt_at: t(20),
    };
    assert!(finish(store, &first[0], retry, t(6)).await);
    assert!(
        claim(store, t(7), 10).await.is_empty(),
        "e2 waits while e1 waits to retry"
    );
    let again = claim(store, t(20), 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.key.event_id.as_str(), "e1");
    assert!(
        finish(
            store,
            &again[0],
            Completion::Dead {
                attempt: ok_attempt(t(20), 400)
            },
            t(20)
        )
        .await
    );
    let next = claim(store, t(21), 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].delivery.key.event_id.as_str(),
        "e2",
        "a dead head lets the next go"
    );
}

async fn switching_ordering_keeps_dispatch_order(store: &impl Store) {
    setup(store, &["s"]).await;
    for (i, e) in ["e1", "e2", "e3"].iter().enumerate() {
        store
            .enqueue(&event(e), &ids(&["s"]), t(i64::try_from(i).unwrap()))
            .await
            .unwrap();
    }
    let first = claim(store, t(5), 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].delivery.key.event_id.as_str(), "e1");
    store
        .put_endpoint(&endpoint("s").with_ordering(Ordering::Strict))
        .await
        .unwrap();
    assert!(
        claim(store, t(6), 10).await.is_empty(),
        "once strict, nothing while e1 (claimed before the switch) is in flight"
    );
    let delivered = Completion::Delivered {
        attempt: ok_attempt(t(6), 200),
    };
    assert!(finish(store, &first[0], delivered, t(6)).await);
    let next = claim(store, t(7), 10).await;
    assert_eq!(next.len(), 1, "one at a time");
    assert_eq!(next[0].delivery.key.event_id.as_str(), "e2");
    store.put_endpoint(&endpoint("s")).await.unwrap();
    let rest = claim(store, t(8), 10).await;
    assert_eq!(
        rest.len(),
        1,
        "no longer strict: e3 goes while e2 is in flight"
    );
    assert_eq!(rest[0].delivery.key.event_id.as_str(), "e3");
    store
        .put_endpoint(&endpoint("s").with_ordering(Ordering::Strict))
        .await
        .unwrap();
    let done = Completion::Delivered {
        attempt: ok_attempt(t(9), 200),
    };
    assert!(finish(store, &next[0], done, t(9)).await);
    assert!(
        claim(store, t(10), 10).await.is_empty(),
        "strict again: e3 is in flight"
    );
}

async fn higher_priority_goes_first_within_an_endpoint(store: &impl Store) {
    setup(store, &["a"]).await;
    let events = [
        ("low1", 0, 0),
        ("low2", 0, 1),
        ("high", 5, 2),
        ("mid", 1, 3),
    ];
    for (id, priority, at) in events {
        store
            .enqueue(&event(id).with_priority(priority), &ids(&["a"]), t(at))
            .await
            .unwrap();
    }
    // Not yet due: a higher priority does not make it claimable early.
    store
        .enqueue(&event("later").with_priority(9), &ids(&["a"]), t(50))
        .await
        .unwrap();
    let mut request = ClaimRequest::new(t(10), LEASE, 10);
    request.per_endpoint_limit = 2;
    let first: Vec<_> = store
        .claim(&request)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.delivery.key.event_id.to_string())
        .collect();
    assert_eq!(
        first,
        ["high", "mid"],
        "due work is claimed by priority, highest first"
    );
    let rest: Vec<_> = claim(store, t(10), 10)
        .await
        .into_iter()
        .map(|c| c.delivery.key.event_id.to_string())
        .collect();
    assert_eq!(rest, ["low1", "low2"], "equal priorities in due order");
}

async fn an_event_sent_again_keeps_its_priority(store: &impl Store) {
    setup(store, &["a", "b"]).await;
    store
        .enqueue(&event("e1").with_priority(1), &ids(&["a"]), t(0))
        .await
        .unwrap();
    // The same event again, to another endpoint, with another priority: it is the
    // stored event (payload and priority) that is delivered there.
    store
        .enqueue(&event("e1").with_priority(9), &ids(&["b"]), t(0))
        .await
        .unwrap();
    store
        .enqueue(&event("e2").with_priority(5), &ids(&["b"]), t(0))
        .await
        .unwrap();
    let record = store.get_delivery(&key("e1", "b")).await.unwrap().unwrap();
    assert_eq!(record.delivery.priority, 1);
    let mut request = ClaimRequest::new(t(1), LEASE, 10);
    request.endpoint_limits.insert("a".into(), 0);
    let order: Vec<_> = store
        .claim(&request)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.delivery.key.event_id.to_string())
        .collect();
    assert_eq!(order, ["e2", "e1"], "e1 goes at its stored priority, 1");
}

async fn deleting_an_endpoint_drops_its_deliveries(store: &impl Store) {
    setup(store, &["a", "b"]).await;
    store
        .enqueue(&event("e1"), &ids(&["a", "b"]), t(0))
        .await
        .unwrap();
    assert!(store.delete_endpoint(&"a".into()).await.unwrap());
    let claimed = claim(store, t(0), 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.key.endpoint_id.as_str(), "b");
    assert!(store.get_delivery(&key("e1", "a")).await.unwrap().is_none());
    let record = store.get_event(None, &"e1".into()).await.unwrap().unwrap();
    assert_eq!(
        record.deliveries.len(),
        1,
        "the event keeps its other deliveries"
    );
}

async fn a_lease_on_a_deleted_delivery_does_not_hold_its_successor(store: &impl Store) {
    setup(store, &["a"]).await;
    store
        .enqueue(&event("e1"), &ids(&["a"]), t(0))
        .await
        .unwrap();
    let old = claim(store, t(0), 1).await;
    assert_eq!(old.len(), 1);
    // The endpoint goes, comes back, and gets the same event again, while a worker
    // still holds the lease of the delivery that went with it.
    assert!(store.delete_endpoint(&"a".into()).await.unwrap());
    setup(store, &["a"]).await;
    store
        .enqueue(&event("e1"), &ids(&["a"]), t(5))
        .await
        .unwrap();
    let new = claim(store, t(5), 1).await;
    assert_eq!(new.len(), 1);
    let late = Completion::Delivered {
        attempt: ok_attempt(t(6), 200),
    };
    assert!(
        !finish(store, &old[0], late, t(6)).await,
        "the old lease completed the new delivery"
    );
    assert!(matches!(
        state(store, &key("e1", "a")).await,
        DeliveryState::InFlight { .. }
    ));
    let done = Completion::Delivered {
        attempt: ok_attempt(t(7), 200),
    };
    assert!(finish(store, &new[0], done, t(7)).await);
}

async fn prune_removes_old_delivered_work_only(store: &impl Store) {
    setup(store, &["a"]).await;
    for e in ["old", "dead", "new", "pending"] {
        store.enqueue(&event(e), &ids(&["a"]), t(0)).await.unwrap();
    }
    for c in claim(store, t(0), 3).await {
        let (completion, at) = match c.delivery.key.event_id.as_str() {
            "old" => (
                Completion::Delivered {
                    attempt: ok_attempt(t(1), 200),
                },
                t(1),
            ),
            "dead" => (
                Completion::Dead {
                    attempt: ok_attempt(t(1), 400),
                },
                t(1),
            ),
            "new" => (
                Completion::Delivered {
                    attempt: ok_attempt(t(100), 200),
                },
                t(100),
            ),
            _ => (Completion::Defer { until: t(0) }, t(0)),
        };
        assert!(finish(store, &c, completion, at).await);
    }
    assert_eq!(
        store.prune(t(50)).await.unwrap(),
        1,
        "only the old delivered one"
    );
    assert!(
        store
            .get_delivery(&key("old", "a"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_event(None, &"old".into())
            .await
            .unwrap()
            .is_none(),
        "event without deliveries is gone"
    );
    for kept in ["dead", "new", "pending"] {
        assert!(
            store.get_delivery(&key(kept, "a")).await.unwrap().is_some(),
            "{kept} is kept"
        );
    }
}

async fn pruning_part_of_a_fanout_keeps_the_rest(store: &impl Store) {
    let names: Vec<String> = (0..40).map(|i| format!("ep{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    setup(store, &names).await;
    store
        .enqueue(&event("wide"), &ids(&names), t(0))
        .await
        .unwrap();
    let claimed = claim(store, t(0), 40).await;
    assert_eq!(claimed.len(), 40);
    // Three in four delivered early, the rest late.
    let mut late = Vec::new();
    for (i, c) in claimed.iter().enumerate() {
        let at = if i % 4 == 3 { t(100) } else { t(1) };
        if at == t(100) {
            late.push(c.delivery.key.endpoint_id.to_string());
        }
        let completion = Completion::Delivered {
            attempt: ok_attempt(at, 200),
        };
        assert!(finish(store, c, completion, at).await);
    }
    assert_eq!(store.prune(t(50)).await.unwrap(), 30, "the early ones");
    let record = store.get_event(None, &"wide".into()).await.unwrap();
    let mut left: Vec<String> = record
        .expect("the event stays while it has deliveries")
        .deliveries
        .iter()
        .map(|d| d.delivery.key.endpoint_id.to_string())
        .collect();
    left.sort();
    late.sort();
    assert_eq!(left, late, "exactly the late deliveries are left");
    assert_eq!(store.prune(t(200)).await.unwrap(), 10, "the late ones");
    assert!(
        store
            .get_event(None, &"wide".into())
            .await
            .unwrap()
            .is_none(),
        "the event goes with its last delivery"
    );
}

async fn unfinished_counts_pending_and_in_flight(store: &impl Store) {
    let count = || async { store.unfinished().await.expect("unfinished") };
    if count().await.is_none() {
        return; // The store does not count (allowed).
    }
    assert_eq!(count().await, Some(0));
    setup(store, &["a", "b"]).await;
    for e in ["e1", "e2"] {
        store
            .enqueue(&event(e), &ids(&["a", "b"]), t(0))
            .await
            .unwrap();
    }
    assert_eq!(count().await, Some(4), "pending");
    let claimed = claim(store, t(0), 10).await;
    assert_eq!(count().await, Some(4), "in flight counts");
    let of_b = claimed
        .iter()
        .filter(|c| c.delivery.key.endpoint_id.as_str() == "b");
    for (done, c) in of_b.enumerate() {
        let completion = if done == 0 {
            Completion::Delivered {
                attempt: ok_attempt(t(1), 200),
            }
        } else {
            Completion::Dead {
                attempt: ok_attempt(t(1), 400),
            }
        };
        assert!(finish(store, c, completion, t(1)).await);
    }
    assert_eq!(count().await, Some(2), "delivered and dead are finished");
    assert!(store.delete_endpoint(&"a".into()).await.unwrap());
    assert_eq!(count().await, Some(0), "removed with their endpoint");
    assert_eq!(store.replay_all_dead(None, t(2)).await.unwrap(), 1);
    assert_eq!(
        count().await,
        Some(1),
        "a replayed dead letter is pending again"
    );
}

async fn concurrent_claims_never_overlap(store: &impl Store) {
    setup(store, &["a", "b"]).await;
    for i in 0..40 {
        store
            .enqueue(&event(&format!("e{i}")), &ids(&["a", "b"]), t(0))
            .await
            .unwrap();
    }
    let claims = (0..10).map(|_| claim(store, t(1), 10));
    let results = futures_util::future::join_all(claims).await;
    let mut seen = HashSet::new();
    for c in results.into_iter().flatten() {
        assert!(
            seen.insert(c.delivery.key.clone()),
            "{} claimed twice",
            c.delivery.key
        );
    }
    assert_eq!(seen.len(), 80, "every due delivery claimed exactly once");
    let ids: HashSet<EventId> = seen.iter().map(|k| k.event_id.clone()).collect();
    assert_eq!(ids.len(), 40);
}
