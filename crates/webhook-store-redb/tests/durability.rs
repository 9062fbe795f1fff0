//! What an acknowledged write survives: closing and reopening the file, and the
//! process being SIGKILLed in the middle of writing.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use webhook_core::{
    Attempt, ClaimRequest, Completion, DeadLetterQuery, DeliveryState, Endpoint, EndpointId, Error,
    Event, Finished, IdempotencyKey, Ordering, Store,
};
use webhook_store_redb::RedbStore;

const LEASE: Duration = Duration::from_secs(30);
const CHILD_ENV: &str = "WEBHOOK_STORE_REDB_CRASH_CHILD";

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn key(event: &str, endpoint: &str) -> IdempotencyKey {
    IdempotencyKey::new(event.into(), endpoint.into(), None)
}

/// A claim at `now` that skips the endpoint `excluded`.
fn excluding(now: DateTime<Utc>, excluded: &str) -> ClaimRequest {
    let mut request = ClaimRequest::new(now, LEASE, 100);
    request
        .endpoint_limits
        .insert(EndpointId::from(excluded), 0);
    request
}

async fn finish(store: &RedbStore, lease: &webhook_core::Lease, completion: Completion, at: i64) {
    let done = store
        .complete(
            &[Finished {
                lease: lease.clone(),
                completion,
            }],
            t(at),
        )
        .await
        .unwrap();
    assert_eq!(done.applied, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let a = Endpoint::new("a", "https://example.test/a")
        .with_secret("whsec_c2VjcmV0")
        .with_header("x-team", "payments");
    let s = Endpoint::new("s", "https://example.test/s").with_ordering(Ordering::Strict);
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let in_flight_lease;
    {
        let store = RedbStore::open(&path).unwrap();
        store.put_endpoint(&a).await.unwrap();
        store.put_endpoint(&s).await.unwrap();
        for (i, id) in ["e1", "e2", "e3", "e4"].iter().enumerate() {
            let event = Event::new(*id, payload.clone()).with_event_type("order.paid");
            let created = store
                .enqueue(&event, &["a".into()], t(i64::try_from(i).unwrap()))
                .await
                .unwrap();
            assert_eq!(created.created, 1);
        }
        store
            .enqueue(&Event::new("o1", "first"), &["s".into()], t(0))
            .await
            .unwrap();
        store
            .enqueue(&Event::new("o2", "second"), &["s".into()], t(1))
            .await
            .unwrap();
        let mut claimed = store.claim(&excluding(t(10), "s")).await.unwrap();
        claimed.sort_by(|x, y| x.delivery.key.cmp(&y.delivery.key));
        assert_eq!(claimed.len(), 4);
        let attempt = |status| Attempt::response(t(10), Duration::from_millis(5), status, b"ok");
        finish(
            &store,
            &claimed[0].lease,
            Completion::Delivered {
                attempt: attempt(200),
            },
            11,
        )
        .await;
        finish(
            &store,
            &claimed[1].lease,
            Completion::Dead {
                attempt: attempt(410),
            },
            11,
        )
        .await;
        finish(
            &store,
            &claimed[2].lease,
            Completion::Retry {
                attempt: attempt(503),
                next_attempt_at: t(100),
            },
            11,
        )
        .await;
        // e4 stays in flight, as if the process died while delivering it.
        in_flight_lease = claimed[3].lease.clone();
        // The strict endpoint's head is in flight too.
        let strict = store.claim(&excluding(t(10), "a")).await.unwrap();
        assert_eq!(strict.len(), 1);
        assert_eq!(strict[0].delivery.key.event_id.as_str(), "o1");
        // Dropping the store closes the file (every write above was already durable).
    }

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.get_endpoint(&"a".into()).await.unwrap(), Some(a));
    assert_eq!(store.get_endpoint(&"s".into()).await.unwrap(), Some(s));
    for id in ["e1", "e2", "e3", "e4"] {
        let record = store.get_event(None, &id.into()).await.unwrap().unwrap();
        assert_eq!(&record.event.payload[..], &payload[..], "{id} payload");
        assert_eq!(record.event.event_type.as_deref(), Some("order.paid"));
        assert_eq!(record.deliveries.len(), 1);
    }
    let e1 = store.get_delivery(&key("e1", "a")).await.unwrap().unwrap();
    assert_eq!(e1.delivery.state, DeliveryState::Delivered { at: t(11) });
    assert_eq!(e1.attempts.len(), 1);
    assert_eq!(e1.attempts[0].status, Some(200));
    let e3 = store.get_delivery(&key("e3", "a")).await.unwrap().unwrap();
    assert_eq!(
        e3.delivery.state,
        DeliveryState::Pending {
            next_attempt_at: t(100)
        }
    );
    assert_eq!(e3.delivery.last_status, Some(503));
    let dead = store
        .list_dead(&DeadLetterQuery {
            limit: 10,
            ..DeadLetterQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key, key("e2", "a"));

    // The in-flight delivery keeps its lease, then becomes claimable again.
    assert!(
        store
            .claim(&excluding(t(39), "s"))
            .await
            .unwrap()
            .is_empty(),
        "lease held across the restart"
    );
    let again = store.claim(&excluding(t(40), "s")).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.key, key("e4", "a"));
    assert!(again[0].lease.token > in_flight_lease.token);
    assert_eq!(&again[0].event.payload[..], &payload[..]);
    let late = store
        .complete(
            &[Finished {
                lease: in_flight_lease,
                completion: Completion::Defer { until: t(50) },
            }],
            t(41),
        )
        .await
        .unwrap();
    assert_eq!(late.lease_lost, vec![key("e4", "a")], "the old lease lost");

    // Strict ordering still holds: o2 waits for o1, whose lease expires at 40.
    assert!(
        store
            .claim(&excluding(t(39), "a"))
            .await
            .unwrap()
            .is_empty()
    );
    let strict = store.claim(&excluding(t(40), "a")).await.unwrap();
    assert_eq!(strict.len(), 1);
    assert_eq!(strict[0].delivery.key.event_id.as_str(), "o1");

    // New writes continue after the old ones without reusing anything.
    store
        .enqueue(&Event::new("e5", "five"), &["a".into(), "s".into()], t(200))
        .await
        .unwrap();
    let e5 = store.get_event(None, &"e5".into()).await.unwrap().unwrap();
    assert_eq!(e5.deliveries.len(), 2);
    let e1_again = store.get_event(None, &"e1".into()).await.unwrap().unwrap();
    assert_eq!(e1_again.deliveries.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = RedbStore::open(&path).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    drop(store);
    RedbStore::open(&path).expect("free again once the first is dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    std::fs::write(&path, vec![0xAB; 8192]).unwrap();
    assert!(RedbStore::open(&path).is_err());
}

/// Run by `acknowledged_events_survive_sigkill` in a child process: acknowledges
/// events as fast as it can until it is killed. Does nothing in a normal test run.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(RedbStore::open(&path).unwrap());
        store
            .put_endpoint(&Endpoint::new("held", "https://example.test/held"))
            .await
            .unwrap();
        store
            .put_endpoint(&Endpoint::new("bulk", "https://example.test/bulk"))
            .await
            .unwrap();
        store
            .enqueue(&Event::new("held", "in flight"), &["held".into()], t(0))
            .await
            .unwrap();
        let claimed = store
            .claim(&ClaimRequest::new(t(0), LEASE, 10))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        println!("claimed {}", claimed[0].lease.token);
        let mut tasks = Vec::new();
        for task in 0..4 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in 0..100_000 {
                    let id = format!("e{task}-{i}");
                    let payload = format!("{{\"n\":{i}}}").repeat(if i % 3 == 0 { 200 } else { 1 });
                    store
                        .enqueue(&Event::new(id.as_str(), payload), &["bulk".into()], t(0))
                        .await
                        .unwrap();
                    println!("acked {id}");
                }
            }));
        }
        // The parent kills us long before this ends.
        tokio::time::sleep(Duration::from_secs(60)).await;
        std::process::exit(3);
    });
}

#[test]
fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut token = None;
    let mut lines = stdout.lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("acked ") {
            acked.push(id.to_owned());
        } else if let Some((_, t)) = line.split_once("claimed ") {
            // libtest's "test crash_child ... " may share the line.
            token = Some(t.trim().parse::<u64>().unwrap());
        }
        if acked.len() >= 300 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no flushing, mid-commit.
    child.wait().unwrap();
    // Acknowledgements printed before the kill landed count too.
    for line in lines {
        if let Some(id) = line.unwrap().strip_prefix("acked ") {
            acked.push(id.to_owned());
        }
    }
    assert!(
        acked.len() >= 300,
        "child acknowledged only {}",
        acked.len()
    );
    // Lease tokens start at the delivery's creation time in microseconds.
    let first = u64::try_from(t(0).timestamp_micros()).unwrap();
    assert_eq!(token, Some(first + 1));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = RedbStore::open(&path).expect("reopens after SIGKILL");
        let mut missing = Vec::new();
        for id in &acked {
            match store.get_event(None, &id.as_str().into()).await.unwrap() {
                Some(record) if record.deliveries.len() == 1 => {}
                _ => missing.push(id.clone()),
            }
        }
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
        // Everything acknowledged is claimable, each exactly once.
        let mut request = ClaimRequest::new(t(1), LEASE, 1_000_000);
        request.endpoint_limits.insert("held".into(), 0);
        let claimed = store.claim(&request).await.unwrap();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for c in &claimed {
            *seen.entry(c.event.id.to_string()).or_default() += 1;
        }
        assert!(seen.values().all(|n| *n == 1));
        for id in &acked {
            assert!(seen.contains_key(id), "{id} not claimable");
        }
        // The delivery in flight at the kill keeps its lease until it expires.
        let held = ClaimRequest::new(t(29), LEASE, 10);
        assert!(store.claim(&held).await.unwrap().is_empty());
        let held = store
            .claim(&ClaimRequest::new(t(30), LEASE, 10))
            .await
            .unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].delivery.key.event_id.as_str(), "held");
        assert_eq!(held[0].lease.token, first + 2);
    });
}
