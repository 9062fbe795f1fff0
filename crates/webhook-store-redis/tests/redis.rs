//! Redis-specific behaviour beyond the conformance suite: the data model, ordering
//! across many deliveries and endpoints, key encoding, clean-up and connection errors.

mod support;

use std::{collections::HashSet, net::TcpListener, time::Duration};

use webhook_core::{
    ClaimRequest, Completion, Endpoint, EndpointId, Error, Event, IdempotencyKey, Ordering, Store,
    testkit::t,
};
use webhook_store_redis::{RedisOptions, RedisStore, deadpool_redis::redis};

const LEASE: Duration = Duration::from_secs(30);

async fn store(cleanup: &support::Cleanup, url: &str, tag: &str) -> RedisStore {
    RedisStore::connect(url, &cleanup.prefix(tag))
        .await
        .expect("connect")
}

async fn keys(store: &RedisStore, pattern: &str) -> Vec<String> {
    let mut conn = store.pool().get().await.unwrap();
    let mut out: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{pattern}", store.prefix()))
        .query_async(&mut *conn)
        .await
        .unwrap();
    out.sort();
    out
}

fn ids(list: &[&str]) -> Vec<EndpointId> {
    list.iter().map(|s| EndpointId::from(*s)).collect()
}

#[tokio::test]
async fn the_payload_is_stored_once_per_event() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "payload").await;
    for id in ["a", "b", "c"] {
        store
            .put_endpoint(&Endpoint::new(id, "https://example.test/"))
            .await
            .unwrap();
    }
    let payload = vec![0xABu8; 10_000];
    store
        .enqueue(&Event::new("e1", payload.clone()), &ids(&["a", "b"]), t(0))
        .await
        .unwrap();
    store
        .enqueue(&Event::new("e1", payload.clone()), &ids(&["c"]), t(1))
        .await
        .unwrap();
    let events = keys(&store, "ev:*").await;
    assert_eq!(events.len(), 1, "one event record: {events:?}");
    assert_eq!(keys(&store, "d:*").await.len(), 3, "three deliveries");
    let mut conn = store.pool().get().await.unwrap();
    let record: Vec<u8> = redis::cmd("GET")
        .arg(&events[0])
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert!(
        record.len() < payload.len() + 100,
        "the payload once, in a small record: {} bytes",
        record.len()
    );
    assert!(record.ends_with(&payload), "raw bytes, not an encoding");
    for d in keys(&store, "d:*").await {
        let len: usize = redis::cmd("STRLEN")
            .arg(&d)
            .query_async(&mut *conn)
            .await
            .unwrap();
        assert!(len < 300, "deliveries do not copy the payload: {len} bytes");
    }
    let claimed = store
        .claim(&ClaimRequest::new(t(1), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(claimed.iter().all(|c| c.event.payload[..] == payload[..]));
}

#[tokio::test]
async fn dispatch_order_holds_past_ten_deliveries() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "order").await;
    store
        .put_endpoint(&Endpoint::new("u", "https://example.test/"))
        .await
        .unwrap();
    store
        .put_endpoint(&Endpoint::new("s", "https://example.test/").with_ordering(Ordering::Strict))
        .await
        .unwrap();
    for i in 0..25 {
        store
            .enqueue(&Event::new(format!("e{i}"), "x"), &ids(&["u", "s"]), t(0))
            .await
            .unwrap();
    }
    let mut request = ClaimRequest::new(t(0), LEASE, 25);
    request.endpoint_limits.insert("s".into(), 0);
    let unordered: Vec<String> = store
        .claim(&request)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.delivery.key.event_id.to_string())
        .collect();
    let expected: Vec<String> = (0..25).map(|i| format!("e{i}")).collect();
    assert_eq!(
        unordered, expected,
        "equal due times claim in dispatch order"
    );
    for (i, want) in expected.iter().enumerate() {
        let now = t(i64::try_from(i).unwrap() + 1);
        let claimed = store
            .claim(&ClaimRequest::new(now, LEASE, 10))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "strict: one at a time");
        assert_eq!(claimed[0].delivery.key.event_id.as_str(), want);
        let done = store
            .complete(
                &[webhook_core::Finished {
                    lease: claimed[0].lease.clone(),
                    completion: Completion::Delivered {
                        attempt: webhook_core::Attempt::response(now, Duration::ZERO, 200, b""),
                    },
                }],
                now,
            )
            .await
            .unwrap();
        assert_eq!(done.applied, 1);
    }
}

#[tokio::test]
async fn round_robin_covers_many_endpoints() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "rr").await;
    let all: Vec<EndpointId> = (0..300).map(|i| format!("ep{i:03}").into()).collect();
    for id in &all {
        store
            .put_endpoint(&Endpoint::new(id.clone(), "https://example.test/"))
            .await
            .unwrap();
    }
    for i in 0..2 {
        store
            .enqueue(&Event::new(format!("e{i}"), "x"), &all, t(0))
            .await
            .unwrap();
    }
    // One per endpoint per claim: three claims of 100 serve every endpoint once,
    // continuing where the last one stopped.
    let mut served = HashSet::new();
    for round in 0..3 {
        let mut request = ClaimRequest::new(t(1), LEASE, 100);
        request.per_endpoint_limit = 1;
        let claimed = store.claim(&request).await.unwrap();
        assert_eq!(claimed.len(), 100, "round {round}");
        for c in claimed {
            assert!(
                served.insert(c.delivery.key.endpoint_id.clone()),
                "round {round}: {} served twice before the others",
                c.delivery.key.endpoint_id
            );
        }
    }
    assert_eq!(served.len(), 300);
    let mut request = ClaimRequest::new(t(1), LEASE, usize::MAX);
    request.per_endpoint_limit = usize::MAX;
    assert_eq!(
        store.claim(&request).await.unwrap().len(),
        300,
        "the second round, with unbounded limits"
    );
}

#[tokio::test]
async fn ids_with_separators_do_not_collide() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "ids").await;
    for (id, tenant) in [("a:b", "a"), ("x", "a:b"), ("é ü/✓", "a")] {
        store
            .put_endpoint(&Endpoint::new(id, "https://example.test/").with_tenant_id(tenant))
            .await
            .unwrap();
    }
    store
        .enqueue(
            &Event::new("b:c", "one").with_tenant_id("a"),
            &ids(&["a:b", "é ü/✓"]),
            t(0),
        )
        .await
        .unwrap();
    store
        .enqueue(
            &Event::new("c", "two").with_tenant_id("a:b"),
            &ids(&["x"]),
            t(0),
        )
        .await
        .unwrap();
    let one = store
        .get_event(Some(&"a".into()), &"b:c".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&one.event.payload[..], b"one");
    assert_eq!(one.deliveries.len(), 2);
    let two = store
        .get_event(Some(&"a:b".into()), &"c".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&two.event.payload[..], b"two");
    let key = IdempotencyKey::new("b:c".into(), "é ü/✓".into(), Some("a".into()));
    assert!(store.get_delivery(&key).await.unwrap().is_some());
    let listed: Vec<_> = store
        .list_endpoints(Some(&"a".into()))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, ids(&["a:b", "é ü/✓"]));
}

#[tokio::test]
async fn deleting_and_pruning_leave_no_garbage() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "garbage").await;
    for id in ["a", "b"] {
        store
            .put_endpoint(&Endpoint::new(id, "https://example.test/"))
            .await
            .unwrap();
    }
    for i in 0..3 {
        store
            .enqueue(&Event::new(format!("e{i}"), "x"), &ids(&["a", "b"]), t(0))
            .await
            .unwrap();
    }
    let claimed = store
        .claim(&ClaimRequest::new(t(0), LEASE, 100))
        .await
        .unwrap();
    let finished: Vec<_> = claimed
        .iter()
        .map(|c| webhook_core::Finished {
            lease: c.lease.clone(),
            completion: if c.delivery.key.event_id.as_str() == "e0" {
                Completion::Dead {
                    attempt: webhook_core::Attempt::failed(t(1), Duration::ZERO, "refused"),
                }
            } else {
                Completion::Delivered {
                    attempt: webhook_core::Attempt::response(t(1), Duration::ZERO, 200, b""),
                }
            },
        })
        .collect();
    assert_eq!(store.complete(&finished, t(1)).await.unwrap().applied, 6);
    assert!(store.delete_endpoint(&"a".into()).await.unwrap());
    assert_eq!(store.prune(t(2)).await.unwrap(), 2, "b's delivered ones");
    // Left: endpoint b, its dead delivery of e0 (its attempt in its record) and
    // event e0.
    let left = keys(&store, "*").await;
    let p = store.prefix();
    let expected: Vec<String> = [
        "cursor",
        "d:0000000000000002",
        "dead",
        "dkeys",
        "ekeys",
        "endpoints",
        "ep:b",
        "epd:b",
        "eseq",
        "ev:0000000000000001",
        "seq",
    ]
    .iter()
    .map(|k| format!("{p}:{k}"))
    .collect();
    assert_eq!(left, expected);
    assert!(store.clear().await.unwrap() > 0);
    assert!(
        keys(&store, "*").await.is_empty(),
        "clear removes everything"
    );
}

#[tokio::test]
async fn a_large_endpoint_is_deleted_in_steps_and_leaves_nothing_behind() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "bigdelete").await;
    for id in ["big", "other"] {
        store
            .put_endpoint(&Endpoint::new(id, "https://example.test/"))
            .await
            .unwrap();
    }
    // More deliveries than one script call removes; every event also goes elsewhere.
    for i in 0..1200 {
        store
            .enqueue(
                &Event::new(format!("e{i}"), "x"),
                &ids(&["big", "other"]),
                t(0),
            )
            .await
            .unwrap();
    }
    assert!(store.delete_endpoint(&"big".into()).await.unwrap());
    assert!(!store.delete_endpoint(&"big".into()).await.unwrap());
    assert!(
        keys(&store, "*:big").await.is_empty(),
        "{:?}",
        keys(&store, "*:big").await
    );
    assert!(keys(&store, "deleting").await.is_empty());
    assert_eq!(
        keys(&store, "d:*").await.len(),
        1200,
        "the other endpoint's"
    );
    let record = store.get_event(None, &"e7".into()).await.unwrap().unwrap();
    assert_eq!(record.deliveries.len(), 1);
    assert_eq!(
        record.deliveries[0].delivery.key.endpoint_id.as_str(),
        "other"
    );
    // A new endpoint of the same id gets the same events afresh.
    store
        .put_endpoint(&Endpoint::new("big", "https://example.test/"))
        .await
        .unwrap();
    let again = store
        .enqueue(&Event::new("e7", "x"), &ids(&["big"]), t(1))
        .await
        .unwrap();
    assert_eq!((again.created, again.existing), (1, 0));
}

#[tokio::test]
async fn a_deletion_goes_on_when_its_caller_stops_waiting() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "gaveup").await;
    store
        .put_endpoint(&Endpoint::new("big", "https://example.test/"))
        .await
        .unwrap();
    for i in 0..1500 {
        store
            .enqueue(&Event::new(format!("e{i}"), "x"), &ids(&["big"]), t(0))
            .await
            .unwrap();
    }
    // A caller that gives up at once (an HTTP client that hangs up, say).
    let gave_up = tokio::time::timeout(
        Duration::from_millis(1),
        store.delete_endpoint(&"big".into()),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the deletion takes more than a millisecond"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !keys(&store, "*")
        .await
        .iter()
        .all(|k| !k.ends_with(":big") && !k.contains(":d:"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion stopped half done"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(keys(&store, "deleting").await.is_empty());
}

#[tokio::test]
async fn a_deletion_cut_short_is_hidden_and_finished_later() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "cutshort").await;
    for id in ["a", "b", "c"] {
        store
            .put_endpoint(&Endpoint::new(id, "https://example.test/"))
            .await
            .unwrap();
    }
    store
        .enqueue(&Event::new("e1", "x"), &ids(&["a", "b", "c"]), t(0))
        .await
        .unwrap();
    // What a deletion's first step leaves when its process stops right after it.
    let mut conn = store.pool().get().await.unwrap();
    let p = store.prefix().to_owned();
    for id in ["a", "b"] {
        let _: () = redis::cmd("HSET")
            .arg(format!("{p}:ep:{id}"))
            .arg("enabled")
            .arg("0")
            .arg("deleting")
            .arg("1")
            .query_async(&mut *conn)
            .await
            .unwrap();
        let _: () = redis::cmd("SADD")
            .arg(format!("{p}:deleting"))
            .arg(id)
            .query_async(&mut *conn)
            .await
            .unwrap();
    }
    drop(conn);
    assert!(store.get_endpoint(&"a".into()).await.unwrap().is_none());
    let listed: Vec<String> = store
        .list_endpoints(None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(listed, ["c"]);
    let err = store
        .enqueue(&Event::new("e2", "x"), &ids(&["a"]), t(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let claimed = store
        .claim(&ClaimRequest::new(t(0), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(
        event_endpoints(&claimed),
        ["c"],
        "deliveries of a and b are not claimed"
    );
    // Putting `a` again finishes its deletion first: the new `a` has no old deliveries.
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/"))
        .await
        .unwrap();
    assert!(store.get_endpoint(&"a".into()).await.unwrap().is_some());
    assert!(
        store
            .get_delivery(&IdempotencyKey::new("e1".into(), "a".into(), None))
            .await
            .unwrap()
            .is_none()
    );
    // Retention finishes `b`'s.
    store.prune(t(0)).await.unwrap();
    assert!(keys(&store, "*:b").await.is_empty());
    assert!(keys(&store, "deleting").await.is_empty());
    let record = store.get_event(None, &"e1".into()).await.unwrap().unwrap();
    assert_eq!(record.deliveries.len(), 1, "c's is left");
}

fn event_endpoints(claimed: &[webhook_core::Claimed]) -> Vec<String> {
    claimed
        .iter()
        .map(|c| c.delivery.key.endpoint_id.to_string())
        .collect()
}

#[tokio::test]
async fn a_delivery_whose_event_record_is_gone_goes_dead_and_the_rest_are_claimed() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "orphan").await;
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/"))
        .await
        .unwrap();
    for id in ["lost", "kept"] {
        store
            .enqueue(&Event::new(id, "x"), &ids(&["a"]), t(0))
            .await
            .unwrap();
    }
    // As if Redis had evicted it (a maxmemory policy other than noeviction).
    let mut conn = store.pool().get().await.unwrap();
    let removed: u64 = redis::cmd("DEL")
        .arg(format!("{}:ev:0000000000000001", store.prefix()))
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    drop(conn);
    let claimed = store
        .claim(&ClaimRequest::new(t(1), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(event_ids(&claimed), ["kept"]);
    let dead = store
        .list_dead(&webhook_core::DeadLetterQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key.event_id.as_str(), "lost");
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("missing")),
        "{:?}",
        dead[0].last_error
    );
    assert!(
        store
            .claim(&ClaimRequest::new(t(100), LEASE, 10))
            .await
            .is_ok(),
        "later claims work"
    );
}

#[tokio::test]
async fn pruning_finds_events_with_long_keys() {
    // The key of this event (tenant and id) is longer than what a script reads of an
    // event record's head in one go.
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "longkey").await;
    let tenant = "t".repeat(150);
    for id in ["a", "b"] {
        store
            .put_endpoint(
                &Endpoint::new(id, "https://example.test/").with_tenant_id(tenant.as_str()),
            )
            .await
            .unwrap();
    }
    let id = "e".repeat(300);
    let event = Event::new(id.as_str(), "x").with_tenant_id(tenant.as_str());
    store
        .enqueue(&event, &ids(&["a", "b"]), t(0))
        .await
        .unwrap();
    let claimed = store
        .claim(&ClaimRequest::new(t(0), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let at = |c: &webhook_core::Claimed| {
        if c.delivery.key.endpoint_id.as_str() == "a" {
            1
        } else {
            100
        }
    };
    for c in &claimed {
        store
            .complete(&[delivered(c, at(c))], t(at(c)))
            .await
            .unwrap();
    }
    assert_eq!(store.prune(t(50)).await.unwrap(), 1);
    let record = store
        .get_event(Some(&tenant.as_str().into()), &id.as_str().into())
        .await
        .unwrap()
        .expect("the event stays with its other delivery");
    assert_eq!(record.deliveries.len(), 1);
    assert_eq!(record.deliveries[0].delivery.key.endpoint_id.as_str(), "b");
    assert_eq!(store.prune(t(200)).await.unwrap(), 1);
    assert!(
        keys(&store, "ev:*").await.is_empty(),
        "the event went with its last delivery"
    );
    assert!(keys(&store, "d:*").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_calls_on_a_new_store_waits_for_no_connection() {
    // The store keeps its pooled connections in shared slots; a burst of calls finds
    // them empty, and each slot must be filled once, not once per call (the pool would
    // run dry and the calls beyond it wait out the wait timeout).
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let options = RedisOptions::default()
        .with_max_connections(2)
        .with_wait_timeout(Duration::from_secs(1));
    let store = RedisStore::connect_with(&url, &cleanup.prefix("burst"), &options)
        .await
        .unwrap();
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get_endpoint(&"nobody".into()).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().unwrap().is_none());
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_the_password_stays_hidden() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}/");
    let started = std::time::Instant::now();
    let err = RedisStore::connect(&url, "x").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = RedisStore::connect("http://nope:hunter2@example.test", "x")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

fn event_ids(claimed: &[webhook_core::Claimed]) -> Vec<String> {
    claimed
        .iter()
        .map(|c| c.delivery.key.event_id.to_string())
        .collect()
}

/// `claimed` ended as `completion`.
fn finished(claimed: &webhook_core::Claimed, completion: Completion) -> webhook_core::Finished {
    webhook_core::Finished {
        lease: claimed.lease.clone(),
        completion,
    }
}

/// An answer with `status` at `now`.
fn answer(now: i64, status: u16) -> webhook_core::Attempt {
    webhook_core::Attempt::response(t(now), Duration::ZERO, status, b"")
}

fn delivered(claimed: &webhook_core::Claimed, now: i64) -> webhook_core::Finished {
    let attempt = answer(now, 200);
    finished(claimed, Completion::Delivered { attempt })
}

#[tokio::test]
async fn priority_holds_through_expired_leases_retries_and_a_switch_to_strict() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "priority").await;
    for id in ["p", "s"] {
        store
            .put_endpoint(&Endpoint::new(id, "https://example.test/"))
            .await
            .unwrap();
    }
    for (id, priority) in [("lo", 0), ("hi", 3)] {
        store
            .enqueue(
                &Event::new(id, "x").with_priority(priority),
                &ids(&["p"]),
                t(0),
            )
            .await
            .unwrap();
    }
    let first = store
        .claim(&ClaimRequest::new(t(0), LEASE, 1))
        .await
        .unwrap();
    assert_eq!(event_ids(&first), ["hi"]);
    let second = store
        .claim(&ClaimRequest::new(t(0), LEASE, 1))
        .await
        .unwrap();
    assert_eq!(event_ids(&second), ["lo"]);

    // Both leases expire at t(30): they come back by priority.
    let again = store
        .claim(&ClaimRequest::new(t(31), LEASE, 1))
        .await
        .unwrap();
    assert_eq!(event_ids(&again), ["hi"]);
    let stale = store
        .complete(&[delivered(&first[0], 31)], t(31))
        .await
        .unwrap();
    assert_eq!(
        stale.lease_lost.len(),
        1,
        "the first lease of hi was taken over"
    );
    store
        .enqueue(
            &Event::new("mid", "x").with_priority(1),
            &ids(&["p"]),
            t(31),
        )
        .await
        .unwrap();
    let rest = store
        .claim(&ClaimRequest::new(t(31), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(event_ids(&rest), ["mid", "lo"], "priority before due time");

    // A retry waits for its time, then goes through the ready set again.
    let lo = &rest[1];
    let retry = webhook_core::Finished {
        lease: lo.lease.clone(),
        completion: Completion::Retry {
            attempt: webhook_core::Attempt::failed(t(32), Duration::ZERO, "boom"),
            next_attempt_at: t(40),
        },
    };
    assert_eq!(store.complete(&[retry], t(32)).await.unwrap().applied, 1);
    assert!(
        store
            .claim(&ClaimRequest::new(t(35), LEASE, 10))
            .await
            .unwrap()
            .is_empty()
    );
    let retried = store
        .claim(&ClaimRequest::new(t(40), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(event_ids(&retried), ["lo"]);

    // Ready work of an endpoint that turns strict goes oldest first.
    for (id, priority) in [("s1", 0), ("s2", 5)] {
        store
            .enqueue(
                &Event::new(id, "x").with_priority(priority),
                &ids(&["s"]),
                t(0),
            )
            .await
            .unwrap();
    }
    store
        .put_endpoint(&Endpoint::new("s", "https://example.test/").with_ordering(Ordering::Strict))
        .await
        .unwrap();
    let mut request = ClaimRequest::new(t(50), LEASE, 10);
    request.endpoint_limits.insert("p".into(), 0);
    let s1 = store.claim(&request).await.unwrap();
    assert_eq!(event_ids(&s1), ["s1"]);
    assert!(store.claim(&request).await.unwrap().is_empty(), "strict");
    store
        .complete(&[delivered(&s1[0], 50)], t(50))
        .await
        .unwrap();
    let s2 = store.claim(&request).await.unwrap();
    assert_eq!(event_ids(&s2), ["s2"]);
    store
        .complete(&[delivered(&s2[0], 50)], t(50))
        .await
        .unwrap();
    assert!(keys(&store, "rdy:s").await.is_empty(), "no ready set left");
}

#[tokio::test]
async fn switching_ordering_rebuilds_the_dispatch_order() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "switch").await;
    let loose = Endpoint::new("s", "https://example.test/");
    let strict = loose.clone().with_ordering(Ordering::Strict);
    store.put_endpoint(&loose).await.unwrap();
    for i in 0..3 {
        store
            .enqueue(&Event::new(format!("e{i}"), "x"), &ids(&["s"]), t(0))
            .await
            .unwrap();
    }
    assert!(
        keys(&store, "unf:s").await.is_empty(),
        "kept for strict only"
    );
    let e0 = store
        .claim(&ClaimRequest::new(t(0), LEASE, 1))
        .await
        .unwrap();
    assert_eq!(event_ids(&e0), ["e0"]);
    store.complete(&[delivered(&e0[0], 1)], t(1)).await.unwrap();

    // Strict: the unfinished ones (e1, e2) in dispatch order, one at a time.
    store.put_endpoint(&strict).await.unwrap();
    let e1 = store
        .claim(&ClaimRequest::new(t(1), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(event_ids(&e1), ["e1"]);
    let dead = webhook_core::Finished {
        lease: e1[0].lease.clone(),
        completion: Completion::Dead {
            attempt: webhook_core::Attempt::failed(t(2), Duration::ZERO, "gone \"away\""),
        },
    };
    assert_eq!(store.complete(&[dead], t(2)).await.unwrap().applied, 1);
    let e2 = store
        .claim(&ClaimRequest::new(t(2), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(event_ids(&e2), ["e2"]);

    // Not strict: e3 goes while e2 is in flight.
    store.put_endpoint(&loose).await.unwrap();
    assert!(keys(&store, "unf:s").await.is_empty());
    store
        .enqueue(&Event::new("e3", "x"), &ids(&["s"]), t(3))
        .await
        .unwrap();
    let e3 = store
        .claim(&ClaimRequest::new(t(3), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(event_ids(&e3), ["e3"]);

    // Strict again, then e1 replayed: the oldest unfinished, so the only claimable one
    // once the leases of e2 and e3 expire.
    store.put_endpoint(&strict).await.unwrap();
    let key = IdempotencyKey::new("e1".into(), "s".into(), None);
    assert!(store.replay_dead(&key, t(4)).await.unwrap());
    let record = store.get_delivery(&key).await.unwrap().unwrap();
    assert_eq!(record.attempts.len(), 1, "history kept");
    assert_eq!(record.delivery.last_error.as_deref(), Some("gone \"away\""));
    let again = store
        .claim(&ClaimRequest::new(t(100), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(event_ids(&again), ["e1"]);
    store
        .complete(&[delivered(&again[0], 100)], t(100))
        .await
        .unwrap();
    let next = store
        .claim(&ClaimRequest::new(t(100), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(
        event_ids(&next),
        ["e2"],
        "an expired lease, taken over in order"
    );
    assert_eq!(next[0].delivery.lease_token, e2[0].lease.token + 1);
    let stale = store
        .complete(&[delivered(&e2[0], 100)], t(100))
        .await
        .unwrap();
    assert_eq!(stale.lease_lost.len(), 1, "the first lease of e2 is gone");
}

fn dead(claimed: &webhook_core::Claimed, now: i64) -> webhook_core::Finished {
    let attempt = answer(now, 400);
    finished(claimed, Completion::Dead { attempt })
}

#[tokio::test]
async fn dead_letters_are_listed_across_script_calls_in_order() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = store(&cleanup, &url, "deadscan").await;
    for id in ["many", "few"] {
        store
            .put_endpoint(&Endpoint::new(id, "https://example.test/"))
            .await
            .unwrap();
    }
    // More dead letters than one script call looks at, most of them dying at the same
    // time (equal scores), with the few of the other endpoint among them.
    let mut expected = Vec::new();
    for i in 0..4500 {
        store
            .enqueue(&Event::new(format!("e{i}"), "x"), &ids(&["many"]), t(0))
            .await
            .unwrap();
        expected.push(format!("e{i}"));
        if [1000, 3000, 4400].contains(&i) {
            let id = format!("f{i}");
            store
                .enqueue(&Event::new(id.as_str(), "x"), &ids(&["few"]), t(0))
                .await
                .unwrap();
            expected.push(id);
        }
    }
    let mut claimed = Vec::new();
    loop {
        let more = store
            .claim(&ClaimRequest::new(t(1), LEASE, 5000))
            .await
            .unwrap();
        if more.is_empty() {
            break;
        }
        claimed.extend(more);
    }
    assert_eq!(claimed.len(), expected.len());
    // Half die at t(5), the rest at t(6), each half in creation order.
    let position = |c: &webhook_core::Claimed| {
        expected
            .iter()
            .position(|e| e.as_str() == c.delivery.key.event_id.as_str())
            .unwrap()
    };
    claimed.sort_by_key(position);
    let (first, second) = claimed.split_at(2251);
    for (part, now) in [(first, 5), (second, 6)] {
        let finished: Vec<_> = part.iter().map(|c| dead(c, now)).collect();
        assert_eq!(
            store.complete(&finished, t(now)).await.unwrap().applied,
            part.len()
        );
    }

    let list = |endpoint: Option<&str>, limit: usize| {
        let store = &store;
        let query = webhook_core::DeadLetterQuery {
            endpoint_id: endpoint.map(EndpointId::from),
            limit,
            ..Default::default()
        };
        async move {
            store
                .list_dead(&query)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.key.event_id.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(Some("few"), 10).await, ["f1000", "f3000", "f4400"]);
    assert_eq!(list(Some("few"), 2).await, ["f1000", "f3000"]);
    assert_eq!(
        list(None, 10_000).await,
        expected,
        "all, oldest first, once each"
    );
    let many: Vec<String> = expected
        .iter()
        .filter(|e| e.starts_with('e'))
        .take(4000)
        .cloned()
        .collect();
    assert_eq!(list(Some("many"), 4000).await, many);
}
