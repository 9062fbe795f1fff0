//! Pruning: explicit and in the background.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use webhook_core::{
    Attempt, ClaimRequest, Completion, DeadLetterQuery, DeliveryState, Endpoint, EndpointId, Event,
    Finished, IdempotencyKey, Store,
};
use webhook_store_redb::{RedbOptions, RedbStore};

const LEASE: Duration = Duration::from_secs(30);

fn key(event: &str) -> IdempotencyKey {
    IdempotencyKey::new(event.into(), "a".into(), None)
}

fn ok(at: DateTime<Utc>, status: u16) -> Attempt {
    Attempt::response(at, Duration::from_millis(4), status, b"")
}

#[tokio::test(flavor = "multi_thread")]
async fn background_retention_prunes_old_delivered_work_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_with(
        dir.path().join("store.redb"),
        RedbOptions {
            retention: Some(Duration::from_secs(3600)),
            prune_interval: Duration::from_millis(20),
            ..RedbOptions::default()
        },
    )
    .unwrap();
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/a"))
        .await
        .unwrap();
    let now = Utc::now();
    let long_ago = now - chrono::Duration::hours(3);
    let to: Vec<EndpointId> = vec!["a".into()];
    for id in ["old", "dead", "recent", "pending"] {
        store
            .enqueue(&Event::new(id, id), &to, long_ago)
            .await
            .unwrap();
    }
    let claimed = store
        .claim(&ClaimRequest::new(long_ago, LEASE, 10))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4);
    let finished: Vec<Finished> = claimed
        .iter()
        .map(|c| {
            let completion = match c.delivery.key.event_id.as_str() {
                "old" | "recent" => Completion::Delivered {
                    attempt: ok(long_ago, 200),
                },
                "dead" => Completion::Dead {
                    attempt: ok(long_ago, 400),
                },
                _ => Completion::Defer {
                    until: now + chrono::Duration::hours(1),
                },
            };
            Finished {
                lease: c.lease.clone(),
                completion,
            }
        })
        .collect();
    // "old" and "dead" finish two hours ago; "recent" just now.
    let (recent, earlier): (Vec<_>, Vec<_>) = finished
        .into_iter()
        .partition(|f| f.lease.key.event_id.as_str() == "recent");
    store
        .complete(&earlier, now - chrono::Duration::hours(2))
        .await
        .unwrap();
    store.complete(&recent, now).await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.get_delivery(&key("old")).await.unwrap().is_some() || store.stats().pruned == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention never pruned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store
            .get_event(None, &"old".into())
            .await
            .unwrap()
            .is_none(),
        "its event went with it"
    );
    for kept in ["dead", "recent", "pending"] {
        assert!(
            store.get_delivery(&key(kept)).await.unwrap().is_some(),
            "{kept} kept"
        );
    }
    let dead = store
        .list_dead(&DeadLetterQuery {
            limit: 10,
            ..DeadLetterQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(matches!(
        store
            .get_delivery(&key("pending"))
            .await
            .unwrap()
            .unwrap()
            .delivery
            .state,
        DeliveryState::Pending { .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_removes_large_amounts_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/a"))
        .await
        .unwrap();
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let to: Vec<EndpointId> = vec!["a".into()];
    let events: Vec<Event> = (0..5000)
        .map(|i| Event::new(format!("e{i}"), vec![b'x'; 2000]))
        .collect();
    for chunk in events.chunks(1000) {
        let results = join_all(chunk.iter().map(|e| store.enqueue(e, &to, t0))).await;
        assert!(results.into_iter().all(|r| r.is_ok()));
    }
    let claimed = store
        .claim(&ClaimRequest::new(t0, LEASE, 10_000))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5000);
    let finished: Vec<Finished> = claimed
        .iter()
        .map(|c| Finished {
            lease: c.lease.clone(),
            completion: Completion::Delivered {
                attempt: ok(t0, 200),
            },
        })
        .collect();
    assert_eq!(store.complete(&finished, t0).await.unwrap().applied, 5000);
    let later = t0 + chrono::Duration::seconds(1);
    assert_eq!(store.prune(t0).await.unwrap(), 0, "strictly before");
    assert_eq!(store.prune(later).await.unwrap(), 5000);
    assert!(store.get_event(None, &"e0".into()).await.unwrap().is_none());
    assert!(
        store
            .get_event(None, &"e4999".into())
            .await
            .unwrap()
            .is_none()
    );
    // The keys are free again: the same events can be enqueued anew.
    let again = store.enqueue(&events[0], &to, later).await.unwrap();
    assert_eq!(again.created, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_output_holds_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    store
        .put_endpoint(
            &Endpoint::new("a", "https://example.test/a").with_secret("whsec_c2VjcmV0LXZhbHVl"),
        )
        .await
        .unwrap();
    let debug = format!("{store:?}");
    assert!(debug.contains("RedbStore"));
    assert!(!debug.contains("c2VjcmV0"), "{debug}");
}
