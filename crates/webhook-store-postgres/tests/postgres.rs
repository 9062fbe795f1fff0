//! PostgreSQL-specific behaviour: migrations under concurrent start-up, several stores
//! (as several dispatcher processes) sharing one schema, and what is stored where.

mod common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use common::Schemas;
use webhook_core::{
    Attempt, ClaimRequest, Claimed, Completion, Endpoint, EndpointId, Error, Event, Finished,
    IdempotencyKey, Ordering, Store, testkit::t,
};
use webhook_store_postgres::{MIGRATIONS, PostgresStore};

const LEASE: Duration = Duration::from_secs(60);

fn ids(list: &[&str]) -> Vec<EndpointId> {
    list.iter().map(|s| EndpointId::from(*s)).collect()
}

async fn scalar(store: &PostgresStore, sql: &str) -> i64 {
    let client = store.pool().get().await.expect("connection");
    let sql = sql.replace("{s}", &format!("\"{}\"", store.schema()));
    client.query_one(&sql, &[]).await.expect("query").get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_start_ups_apply_each_migration_once() {
    let schemas = Schemas::new();
    concurrent_start_ups(&schemas, schemas.url()).await;
    // Also where the database's default isolation is stricter than READ COMMITTED.
    let separator = if schemas.url().contains('?') {
        '&'
    } else {
        '?'
    };
    let strict = format!(
        "{}{separator}options=-c%20default_transaction_isolation%3Dserializable",
        schemas.url()
    );
    concurrent_start_ups(&schemas, &strict).await;
}

async fn concurrent_start_ups(schemas: &Schemas, url: &str) {
    let schema = schemas.name();
    let url = url.to_owned();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (url, schema) = (url.clone(), schema.clone());
        tasks.spawn(
            async move { PostgresStore::connect_with(&url, Schemas::options(&schema)).await },
        );
    }
    let mut stores = Vec::new();
    while let Some(result) = tasks.join_next().await {
        stores.push(
            result
                .expect("task")
                .expect("every concurrent start-up succeeds"),
        );
    }
    let store = &stores[0];
    assert_eq!(
        scalar(store, "SELECT count(*) FROM {s}.schema_migrations").await,
        i64::try_from(MIGRATIONS.len()).unwrap(),
        "each migration recorded once"
    );
    assert_eq!(
        scalar(
            store,
            "SELECT max(version)::int8 FROM {s}.schema_migrations"
        )
        .await,
        i64::from(webhook_store_postgres::SCHEMA_VERSION)
    );
    // A later start-up finds nothing to do, and every store works on the one schema.
    let again = schemas.store_on(&schema).await;
    again
        .put_endpoint(&Endpoint::new("a", "https://example.test/a"))
        .await
        .unwrap();
    for store in &stores {
        assert!(store.get_endpoint(&"a".into()).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_share_the_work_and_never_claim_the_same_delivery() {
    let schemas = Schemas::new();
    let schema = schemas.name();
    let a = Arc::new(schemas.store_on(&schema).await);
    let b = Arc::new(schemas.store_on(&schema).await);
    let endpoints = ["e1", "e2", "e3", "e4", "e5"];
    for id in endpoints {
        a.put_endpoint(&Endpoint::new(id, format!("https://example.test/{id}")))
            .await
            .unwrap();
    }
    a.put_endpoint(
        &Endpoint::new("strict", "https://example.test/strict").with_ordering(Ordering::Strict),
    )
    .await
    .unwrap();
    let targets = ids(&endpoints);
    for i in 0..300 {
        let store = if i % 2 == 0 { &a } else { &b };
        store
            .enqueue(&Event::new(format!("ev{i}"), "{}"), &targets, t(0))
            .await
            .unwrap();
    }
    for i in 0..5 {
        a.enqueue(&Event::new(format!("s{i}"), "{}"), &ids(&["strict"]), t(0))
            .await
            .unwrap();
    }
    let total = 300 * endpoints.len();

    let start = Arc::new(tokio::sync::Barrier::new(2));
    let worker = |store: Arc<PostgresStore>, start: Arc<tokio::sync::Barrier>| async move {
        start.wait().await;
        let mut keys = Vec::new();
        let mut strict_in_flight = 0;
        loop {
            let mut request = ClaimRequest::new(t(1), LEASE, 20);
            request.per_endpoint_limit = 10;
            let claimed = store.claim(&request).await.unwrap();
            if claimed.is_empty() {
                return (keys, strict_in_flight);
            }
            for c in &claimed {
                assert!(c.lease.until > t(1));
                if c.delivery.key.endpoint_id.as_str() == "strict" {
                    strict_in_flight += 1;
                }
                keys.push(c.delivery.key.clone());
            }
        }
    };
    let (from_a, from_b) = tokio::join!(
        tokio::spawn(worker(Arc::clone(&a), Arc::clone(&start))),
        tokio::spawn(worker(Arc::clone(&b), Arc::clone(&start)))
    );
    let (from_a, strict_a) = from_a.unwrap();
    let (from_b, strict_b) = from_b.unwrap();
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both stores got work"
    );
    let mut seen = HashSet::new();
    for key in from_a.iter().chain(&from_b) {
        assert!(seen.insert(key.clone()), "{key} claimed twice");
    }
    assert_eq!(
        strict_a + strict_b,
        1,
        "a strict endpoint has one delivery in flight"
    );
    assert_eq!(seen.len(), total + 1, "together they claimed all due work");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_moves_to_another_store() {
    let schemas = Schemas::new();
    let schema = schemas.name();
    let a = schemas.store_on(&schema).await;
    let b = schemas.store_on(&schema).await;
    a.put_endpoint(&Endpoint::new("e", "https://example.test/e"))
        .await
        .unwrap();
    a.enqueue(&Event::new("ev", "{}"), &ids(&["e"]), t(0))
        .await
        .unwrap();
    let first = a.claim(&ClaimRequest::new(t(0), LEASE, 10)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        b.claim(&ClaimRequest::new(t(59), LEASE, 10))
            .await
            .unwrap()
            .is_empty(),
        "held until the lease ends"
    );
    let second = b.claim(&ClaimRequest::new(t(60), LEASE, 10)).await.unwrap();
    assert_eq!(second.len(), 1, "taken over once expired");
    let done = |lease| Finished {
        lease,
        completion: Completion::Delivered {
            attempt: Attempt::response(t(61), Duration::from_millis(3), 200, b"ok"),
        },
    };
    let late = a
        .complete(&[done(first[0].lease.clone())], t(61))
        .await
        .unwrap();
    assert_eq!(late.applied, 0);
    assert_eq!(late.lease_lost, vec![first[0].lease.key.clone()]);
    let current = b
        .complete(&[done(second[0].lease.clone())], t(61))
        .await
        .unwrap();
    assert_eq!(current.applied, 1);
    assert!(current.lease_lost.is_empty());
}

/// Concurrent enqueues take their seqs in one order and may commit in the other: a
/// claim can then find a strict endpoint's later delivery in flight and an earlier one
/// pending. That earlier one waits until the endpoint has nothing in flight.
#[tokio::test(flavor = "multi_thread")]
async fn a_strict_endpoint_never_has_two_deliveries_in_flight() {
    let schemas = Schemas::new();
    let store = schemas.store().await;
    store
        .put_endpoint(&Endpoint::new("s", "https://example.test/s").with_ordering(Ordering::Strict))
        .await
        .unwrap();
    for e in ["e1", "e2"] {
        store
            .enqueue(&Event::new(e, "{}"), &ids(&["s"]), t(0))
            .await
            .unwrap();
    }
    // The state that race leaves: e2 (the later seq) in flight, e1 pending.
    let client = store.pool().get().await.unwrap();
    let sql = "UPDATE {s}.deliveries d SET state = 'in_flight', claimable_at = $1 \
               FROM {s}.events e WHERE e.seq = d.event_seq AND e.id = 'e2'"
        .replace("{s}", &format!("\"{}\"", store.schema()));
    assert_eq!(client.execute(&sql, &[&t(30)]).await.unwrap(), 1);
    drop(client);
    assert!(
        store
            .claim(&ClaimRequest::new(t(1), LEASE, 10))
            .await
            .unwrap()
            .is_empty(),
        "e1 waits while e2 is in flight"
    );
    // Once e2's lease has run out, the head (e1) goes first.
    let claimed = store
        .claim(&ClaimRequest::new(t(31), LEASE, 10))
        .await
        .unwrap();
    let events: Vec<&str> = claimed.iter().map(|c| c.event.id.as_str()).collect();
    assert_eq!(events, ["e1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_layout_and_batched_completion() {
    let schemas = Schemas::new();
    let store = schemas.store().await;
    for id in ["a", "b", "c"] {
        store
            .put_endpoint(&Endpoint::new(id, format!("https://example.test/{id}")))
            .await
            .unwrap();
    }
    let payload = vec![7u8; 10_000];
    store
        .enqueue(
            &Event::new("big", payload.clone()),
            &ids(&["a", "b", "c"]),
            t(0),
        )
        .await
        .unwrap();
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM {s}.events").await,
        1,
        "the payload is stored once"
    );
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM {s}.deliveries").await,
        3
    );

    // One batch: two completions applied, one duplicate and one unknown key lost, and an
    // attempt whose texts hold NUL characters (which PostgreSQL text cannot) is kept.
    let claimed = store
        .claim(&ClaimRequest::new(t(0), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let nul = Attempt::response(t(0), Duration::from_millis(1), 500, b"bad\0body");
    let mut finished: Vec<Finished> = claimed
        .iter()
        .map(|c| Finished {
            lease: c.lease.clone(),
            completion: Completion::Retry {
                attempt: nul.clone(),
                next_attempt_at: t(10),
            },
        })
        .collect();
    finished[2].completion = Completion::Defer { until: t(5) };
    finished.push(finished[0].clone());
    let mut unknown = finished[1].clone();
    unknown.lease.key = IdempotencyKey::new("nope".into(), "a".into(), None);
    finished.push(unknown);
    let done = store.complete(&finished, t(1)).await.unwrap();
    assert_eq!(done.applied, 3);
    assert_eq!(
        done.lease_lost,
        vec![finished[3].lease.key.clone(), finished[4].lease.key.clone()]
    );
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM {s}.attempts").await,
        2,
        "deferral records no attempt"
    );
    let record = store
        .get_delivery(&claimed[0].lease.key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.attempts[0].response_excerpt.as_deref(),
        Some("bad\u{FFFD}body")
    );

    // Deleting an endpoint removes its deliveries and attempts but not shared events.
    assert!(store.delete_endpoint(&"a".into()).await.unwrap());
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM {s}.deliveries").await,
        2
    );
    assert_eq!(scalar(&store, "SELECT count(*) FROM {s}.events").await, 1);
    assert!(store.delete_endpoint(&"b".into()).await.unwrap());
    assert!(store.delete_endpoint(&"c".into()).await.unwrap());
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM {s}.events").await,
        0,
        "an event left without deliveries goes"
    );
    assert_eq!(scalar(&store, "SELECT count(*) FROM {s}.attempts").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_takes_attempts_and_orphaned_events() {
    let schemas = Schemas::new();
    let store = schemas.store().await;
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/a"))
        .await
        .unwrap();
    for i in 0..25 {
        store
            .enqueue(&Event::new(format!("e{i}"), "{}"), &ids(&["a"]), t(0))
            .await
            .unwrap();
    }
    let claimed = store
        .claim(&ClaimRequest::new(t(0), LEASE, 100))
        .await
        .unwrap();
    let finished: Vec<Finished> = claimed
        .iter()
        .map(|c| Finished {
            lease: c.lease.clone(),
            completion: Completion::Delivered {
                attempt: Attempt::response(t(0), Duration::ZERO, 200, b""),
            },
        })
        .collect();
    assert_eq!(store.complete(&finished, t(1)).await.unwrap().applied, 25);
    assert_eq!(store.prune(t(1)).await.unwrap(), 0, "cutoff is exclusive");
    assert_eq!(store.prune(t(2)).await.unwrap(), 25);
    for table in ["deliveries", "attempts", "events"] {
        assert_eq!(
            scalar(&store, &format!("SELECT count(*) FROM {{s}}.{table}")).await,
            0,
            "{table} emptied"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn inputs_postgres_cannot_hold_are_refused_cleanly() {
    let schemas = Schemas::new();
    let store = schemas.store().await;
    let err = store
        .put_endpoint(&Endpoint::new("a", "https://example.test/a").with_tenant_id(""))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/a"))
        .await
        .unwrap();
    let err = store
        .enqueue(&Event::new("x\0y", "{}"), &ids(&["a"]), t(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = store
        .enqueue(&Event::new("ok", "{}"), &ids(&["a\0"]), t(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(
        store
            .get_event(Some(&"".into()), &"ok".into())
            .await
            .unwrap()
            .is_none()
    );
    let twice = store
        .enqueue(&Event::new("dup", "{}"), &ids(&["a", "a"]), t(0))
        .await
        .unwrap();
    assert_eq!(
        (twice.created, twice.existing),
        (1, 1),
        "one key, one delivery"
    );
    assert_eq!(scalar(&store, "SELECT count(*) FROM {s}.events").await, 1);
    let empty = store.enqueue(&Event::new("ok", "{}"), &[], t(0)).await;
    assert_eq!(empty.unwrap().created, 0);
    assert!(
        store.get_event(None, &"ok".into()).await.unwrap().is_none(),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_unavailable() {
    let err = PostgresStore::connect_with(
        "postgres://postgres:s3cret-pw@127.0.0.1:1/test",
        webhook_store_postgres::PostgresOptions {
            connect_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
}

/// Throughput on this machine (run with `--ignored --nocapture`, ideally `--release`):
/// enqueue, batched claims and batched completions, rows per second.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn throughput() {
    let schemas = Schemas::new();
    let schema = schemas.name();
    let store = Arc::new(
        PostgresStore::connect_with(schemas.url(), Schemas::options(&schema).with_pool_size(8))
            .await
            .unwrap(),
    );
    let endpoints: Vec<EndpointId> = (0..100)
        .map(|i| EndpointId::from(format!("ep{i:03}")))
        .collect();
    for id in &endpoints {
        store
            .put_endpoint(&Endpoint::new(id.clone(), "https://example.test/hook"))
            .await
            .unwrap();
    }
    let events = 20_000;
    let per_event = 5;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = Arc::clone(&store);
        let endpoints = endpoints.clone();
        tasks.spawn(async move {
            for i in (worker..events).step_by(8) {
                let first = (i * per_event) % endpoints.len();
                let targets = &endpoints[first..first + per_event];
                store
                    .enqueue(
                        &Event::new(format!("ev{i}"), vec![b'x'; 256]),
                        targets,
                        t(0),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let total = events * per_event;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "enqueue: {events} events ({total} deliveries) in {secs:.2}s: {:.0} events/s, {:.0} deliveries/s",
        f64::from(u32::try_from(events).unwrap()) / secs,
        f64::from(u32::try_from(total).unwrap()) / secs
    );

    // The naive design for comparison: one delivery per transaction (round robin over
    // the endpoints, through the same due index).
    let naive = 2_000;
    let started = std::time::Instant::now();
    {
        let mut client = store.pool().get().await.unwrap();
        let schema = format!("\"{}\"", store.schema());
        let pick = format!(
            "SELECT seq FROM {schema}.deliveries WHERE state IN ('pending', 'in_flight') \
             AND claimable_at <= $1 AND endpoint_id = $2 \
             ORDER BY claimable_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED"
        );
        let take = format!(
            "UPDATE {schema}.deliveries SET state = 'in_flight', claimable_at = $2, \
             lease_token = lease_token + 1, updated_at = $1 WHERE seq = $3"
        );
        let payload = format!(
            "SELECT e.payload FROM {schema}.events e JOIN {schema}.deliveries d \
             ON d.event_seq = e.seq WHERE d.seq = $1"
        );
        let until = t(1) + chrono::Duration::seconds(60);
        for i in 0..naive {
            let endpoint = endpoints[usize::try_from(i).unwrap() % endpoints.len()].as_str();
            let tx = client.transaction().await.unwrap();
            let seq: i64 = tx
                .query_one(&pick, &[&t(1), &endpoint])
                .await
                .unwrap()
                .get(0);
            tx.execute(&take, &[&t(1), &until, &seq]).await.unwrap();
            tx.query_one(&payload, &[&seq]).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "naive claim: {naive} rows in {secs:.2}s: {:.0} rows/s (one per transaction)",
        f64::from(naive) / secs
    );

    let started = std::time::Instant::now();
    let mut claimed = Vec::new();
    loop {
        let mut request = ClaimRequest::new(t(1), LEASE, 1000);
        request.per_endpoint_limit = 50;
        let batch = store.claim(&request).await.unwrap();
        if batch.is_empty() {
            break;
        }
        claimed.extend(batch);
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(claimed.len(), total - usize::try_from(naive).unwrap());
    println!(
        "claim: {} rows in {secs:.2}s: {:.0} rows/s (batches of 1000)",
        claimed.len(),
        f64::from(u32::try_from(claimed.len()).unwrap()) / secs
    );

    let started = std::time::Instant::now();
    for chunk in claimed.chunks(1000) {
        let finished: Vec<Finished> = chunk
            .iter()
            .map(|c| Finished {
                lease: c.lease.clone(),
                completion: Completion::Delivered {
                    attempt: Attempt::response(t(1), Duration::from_millis(5), 200, b"ok"),
                },
            })
            .collect();
        assert_eq!(
            store.complete(&finished, t(2)).await.unwrap().applied,
            chunk.len()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let total = claimed.len();
    println!(
        "complete: {total} rows in {secs:.2}s: {:.0} rows/s (batches of 1000)",
        f64::from(u32::try_from(total).unwrap()) / secs
    );
    let started = std::time::Instant::now();
    let pruned = store.prune(t(3)).await.unwrap();
    println!(
        "prune: {pruned} rows in {:.2}s",
        started.elapsed().as_secs_f64()
    );
}

/// The dispatcher's pattern on one endpoint (run with `--ignored --nocapture`): 64
/// concurrent callers each enqueueing one event per call, then claims of up to 256, then
/// completions in batches of 256. Prints each phase's rate.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn dispatcher_pattern() {
    let schemas = Schemas::new();
    let schema = schemas.name();
    let store = Arc::new(
        PostgresStore::connect_with(
            schemas.url(),
            webhook_store_postgres::PostgresOptions::default().with_schema(&schema),
        )
        .await
        .unwrap(),
    );
    store
        .put_endpoint(&Endpoint::new("bench", "https://example.test/hook"))
        .await
        .unwrap();
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let producers = 64;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let target = [EndpointId::from("bench")];
            for i in (p..events).step_by(producers) {
                let done = store
                    .enqueue(
                        &Event::new(format!("s{i}"), format!("{{\"n\":{i}}}")),
                        &target,
                        t(0),
                    )
                    .await
                    .unwrap();
                assert_eq!(done.created, 1);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    println!(
        "enqueue x{producers}: {events} in {secs:.2}s: {:.0}/s",
        events as f64 / secs
    );

    let started = std::time::Instant::now();
    let mut claimed = Vec::new();
    loop {
        let mut request = ClaimRequest::new(t(1), LEASE, 256);
        request.per_endpoint_limit = 256;
        let batch = store.claim(&request).await.unwrap();
        if batch.is_empty() {
            break;
        }
        claimed.extend(batch);
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(claimed.len(), events);
    println!(
        "claim 256: {events} in {secs:.2}s: {:.0}/s",
        events as f64 / secs
    );

    let started = std::time::Instant::now();
    for chunk in claimed.chunks(256) {
        let finished: Vec<Finished> = chunk
            .iter()
            .map(|c| Finished {
                lease: c.lease.clone(),
                completion: Completion::Delivered {
                    attempt: Attempt::response(t(1), Duration::from_millis(5), 200, b"ok"),
                },
            })
            .collect();
        assert_eq!(
            store.complete(&finished, t(2)).await.unwrap().applied,
            chunk.len()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "complete 256: {events} in {secs:.2}s: {:.0}/s",
        events as f64 / secs
    );
}

/// The dispatcher's pattern end to end (run with `--ignored --nocapture`): 64 callers
/// enqueueing one event per call while one loop claims up to 256 at a time and one
/// writer completes what was claimed in batches; the rate is events delivered per
/// second, from the first enqueue to the last completion.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn dispatcher_pattern_end_to_end() {
    let schemas = Schemas::new();
    let schema = schemas.name();
    let store = Arc::new(
        PostgresStore::connect_with(
            schemas.url(),
            webhook_store_postgres::PostgresOptions::default().with_schema(&schema),
        )
        .await
        .unwrap(),
    );
    store
        .put_endpoint(&Endpoint::new("bench", "https://example.test/hook"))
        .await
        .unwrap();
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let producers = 64;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let target = [EndpointId::from("bench")];
            for i in (p..events).step_by(producers) {
                store
                    .enqueue(
                        &Event::new(format!("s{i}"), format!("{{\"n\":{i}}}")),
                        &target,
                        chrono::Utc::now(),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Vec<Claimed>>();
    let claimer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut total = 0;
            while total < events {
                let request = ClaimRequest::new(chrono::Utc::now(), LEASE, 256);
                let batch = store.claim(&request).await.unwrap();
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                total += batch.len();
                sender.send(batch).unwrap();
            }
        })
    };
    let mut done = 0;
    while done < events {
        let mut claimed = receiver.recv().await.unwrap();
        while claimed.len() < 256 {
            match receiver.try_recv() {
                Ok(more) => claimed.extend(more),
                Err(_) => break,
            }
        }
        let finished: Vec<Finished> = claimed
            .iter()
            .map(|c| Finished {
                lease: c.lease.clone(),
                completion: Completion::Delivered {
                    attempt: Attempt::response(
                        chrono::Utc::now(),
                        Duration::from_millis(5),
                        200,
                        b"ok",
                    ),
                },
            })
            .collect();
        let applied = store
            .complete(&finished, chrono::Utc::now())
            .await
            .unwrap()
            .applied;
        assert_eq!(applied, finished.len());
        done += applied;
    }
    claimer.await.unwrap();
    while tasks.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    println!(
        "end to end: {events} in {secs:.2}s: {:.0}/s",
        events as f64 / secs
    );
}

/// Concurrent enqueues are stored in batches, yet each call keeps its own outcome: a
/// call naming a missing endpoint or another tenant's fails and writes nothing, the
/// same event enqueued by many callers at once is stored once, and every caller learns
/// how many deliveries it created.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_enqueues_keep_their_own_outcomes() {
    let schemas = Schemas::new();
    let store = Arc::new(schemas.store().await);
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/a").with_tenant_id("t1"))
        .await
        .unwrap();
    store
        .put_endpoint(&Endpoint::new("b", "https://example.test/b").with_tenant_id("t1"))
        .await
        .unwrap();
    store
        .put_endpoint(&Endpoint::new("x", "https://example.test/x").with_tenant_id("t2"))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200usize {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let (id, targets) = match i % 5 {
                0 => (format!("missing{i}"), ids(&["a", "nope"])),
                1 => (format!("foreign{i}"), ids(&["a", "x"])),
                2 => ("shared".to_owned(), ids(&["a", "b"])),
                _ => (format!("ok{i}"), ids(&["a", "b", "a"])),
            };
            let event = Event::new(id, "{}").with_tenant_id("t1");
            (i, store.enqueue(&event, &targets, t(0)).await)
        });
    }
    let mut shared_created = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.unwrap();
        match i % 5 {
            0 => assert!(matches!(result, Err(Error::NotFound { .. })), "{result:?}"),
            1 => assert!(matches!(result, Err(Error::Invalid { .. })), "{result:?}"),
            2 => {
                let done = result.unwrap();
                assert_eq!(done.created + done.existing, 2);
                shared_created += done.created;
            }
            _ => {
                let done = result.unwrap();
                assert_eq!((done.created, done.existing), (2, 1));
            }
        }
    }
    assert_eq!(
        shared_created, 2,
        "the shared event's deliveries are created once"
    );
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM {s}.events").await,
        1 + 80,
        "failed calls write nothing"
    );
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM {s}.deliveries").await,
        2 + 80 * 2
    );
}

/// A delivery cannot name a missing endpoint, deleting deliveries deletes their
/// attempts, and enqueues racing the deletion of their endpoint leave no delivery
/// behind.
#[tokio::test(flavor = "multi_thread")]
async fn integrity_holds_between_tables() {
    let schemas = Schemas::new();
    let store = Arc::new(schemas.store().await);
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/a"))
        .await
        .unwrap();
    store
        .enqueue(&Event::new("e1", "{}"), &ids(&["a"]), t(0))
        .await
        .unwrap();
    let claimed = store
        .claim(&ClaimRequest::new(t(0), LEASE, 10))
        .await
        .unwrap();
    let retry = Finished {
        lease: claimed[0].lease.clone(),
        completion: Completion::Retry {
            attempt: Attempt::response(t(0), Duration::from_millis(1), 500, b"no"),
            next_attempt_at: t(10),
        },
    };
    assert_eq!(store.complete(&[retry], t(1)).await.unwrap().applied, 1);

    let client = store.pool().get().await.unwrap();
    let s = format!("\"{}\"", store.schema());
    let err = client
        .execute(
            &format!(
                "INSERT INTO {s}.deliveries (tenant, endpoint_id, event_seq, state, claimable_at, created_at, updated_at)
                 SELECT '', 'ghost', seq, 'pending', now(), now(), now() FROM {s}.events"
            ),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&webhook_store_postgres::deadpool_postgres::tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION),
        "{err}"
    );
    assert_eq!(scalar(&store, "SELECT count(*) FROM {s}.attempts").await, 1);
    client
        .execute(&format!("DELETE FROM {s}.deliveries"), &[])
        .await
        .unwrap();
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM {s}.attempts").await,
        0,
        "attempts go with their deliveries"
    );
    drop(client);

    // Enqueues racing the deletion of their endpoint: afterwards no delivery names it.
    for round in 0..5 {
        store
            .put_endpoint(&Endpoint::new("b", "https://example.test/b"))
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                let event = Event::new(format!("r{round}_{i}"), "{}");
                // Refused (`NotFound`) once the endpoint is gone: either outcome is fine.
                let _ = store.enqueue(&event, &ids(&["b"]), t(0)).await;
            });
        }
        tokio::task::yield_now().await;
        assert!(store.delete_endpoint(&"b".into()).await.unwrap());
        while tasks.join_next().await.is_some() {}
        assert_eq!(
            scalar(
                &store,
                "SELECT count(*) FROM {s}.deliveries d
                 WHERE NOT EXISTS (SELECT 1 FROM {s}.endpoints e WHERE e.id = d.endpoint_id)"
            )
            .await,
            0,
            "round {round}: no delivery outlives its endpoint"
        );
    }
}
