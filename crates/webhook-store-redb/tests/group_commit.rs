//! Concurrent writes share commits.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use webhook_core::{
    Attempt, ClaimRequest, Completion, Endpoint, EndpointId, Event, Finished, Store,
};
use webhook_store_redb::RedbStore;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_enqueues_share_a_few_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/a"))
        .await
        .unwrap();
    let before = store.stats();
    let events: Vec<Event> = (0..1000)
        .map(|i| Event::new(format!("e{i}"), format!("{{\"i\":{i}}}")))
        .collect();
    let to: Vec<EndpointId> = vec!["a".into()];
    let results = join_all(events.iter().map(|event| store.enqueue(event, &to, t(0)))).await;
    for result in results {
        assert_eq!(result.unwrap().created, 1);
    }
    let after = store.stats();
    let commits = after.commits - before.commits;
    assert_eq!(after.operations - before.operations, 1000);
    assert!(
        commits <= 100,
        "1000 enqueues took {commits} commits: not batched"
    );
    eprintln!("1000 concurrent enqueues: {commits} commits");

    // Claims and completions ride in shared commits too, and every delivery is
    // handed out exactly once.
    let request = ClaimRequest::new(t(1), Duration::from_secs(30), 100);
    let claims = join_all((0..10).map(|_| store.claim(&request))).await;
    let claimed: Vec<_> = claims.into_iter().flat_map(Result::unwrap).collect();
    assert_eq!(claimed.len(), 1000);
    let mut keys: Vec<_> = claimed.iter().map(|c| c.delivery.key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 1000, "no delivery claimed twice");
    let before = store.stats();
    let finished: Vec<Finished> = claimed
        .iter()
        .map(|c| Finished {
            lease: c.lease.clone(),
            completion: Completion::Delivered {
                attempt: Attempt::response(t(1), Duration::from_millis(3), 200, b""),
            },
        })
        .collect();
    let done = join_all(
        finished
            .iter()
            .map(|f| store.complete(std::slice::from_ref(f), t(2))),
    )
    .await;
    assert!(done.into_iter().all(|d| d.unwrap().applied == 1));
    let commits = store.stats().commits - before.commits;
    assert!(commits <= 100, "1000 completions took {commits} commits");
}
