//! Several processes sharing one Redis: separate pools on the same prefix.

mod support;

use std::{collections::HashSet, time::Duration};

use webhook_core::{
    Attempt, ClaimRequest, Completion, Endpoint, EndpointId, Event, Finished, IdempotencyKey,
    Store, testkit::t,
};
use webhook_store_redis::{RedisOptions, RedisStore};

const LEASE: Duration = Duration::from_secs(30);

async fn two_stores(cleanup: &support::Cleanup, url: &str) -> (RedisStore, RedisStore) {
    let prefix = cleanup.prefix("shared");
    let options = RedisOptions::default().with_max_connections(4);
    let a = RedisStore::connect_with(url, &prefix, &options)
        .await
        .expect("connect a");
    let b = RedisStore::connect_with(url, &prefix, &options)
        .await
        .expect("connect b");
    (a, b)
}

/// Claims in a loop until nothing is left, returning every key claimed.
async fn drain(store: RedisStore) -> Vec<IdempotencyKey> {
    let mut got = Vec::new();
    loop {
        let mut request = ClaimRequest::new(t(1), LEASE, 7);
        request.per_endpoint_limit = 3;
        let claimed = store.claim(&request).await.expect("claim");
        if claimed.is_empty() {
            return got;
        }
        got.extend(claimed.into_iter().map(|c| c.delivery.key));
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_claim_the_same_delivery_and_together_claim_all() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let (a, b) = two_stores(&cleanup, &url).await;
    let endpoints: Vec<EndpointId> = ["x", "y", "z"].into_iter().map(Into::into).collect();
    for id in &endpoints {
        a.put_endpoint(&Endpoint::new(id.clone(), "https://example.test/hook"))
            .await
            .unwrap();
    }
    for i in 0..60 {
        a.enqueue(&Event::new(format!("e{i}"), "{}"), &endpoints, t(0))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
        tasks.push(tokio::spawn(drain(store)));
    }
    let mut seen = HashSet::new();
    let mut per_task = Vec::new();
    for task in tasks {
        let keys = task.await.expect("claimer task");
        per_task.push(keys.len());
        for key in keys {
            assert!(seen.insert(key.clone()), "{key} claimed twice");
        }
    }
    assert_eq!(seen.len(), 180, "together they claim every due delivery");
    assert!(
        b.claim(&ClaimRequest::new(t(2), LEASE, 100))
            .await
            .unwrap()
            .is_empty(),
        "nothing left for anyone while the leases hold"
    );
    eprintln!("claims per claimer: {per_task:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_by_another_process() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let (a, b) = two_stores(&cleanup, &url).await;
    a.put_endpoint(&Endpoint::new("x", "https://example.test/hook"))
        .await
        .unwrap();
    a.enqueue(&Event::new("e1", "{}"), &["x".into()], t(0))
        .await
        .unwrap();
    let first = a
        .claim(&ClaimRequest::new(t(0), LEASE, 10))
        .await
        .unwrap()
        .remove(0);
    assert!(
        b.claim(&ClaimRequest::new(t(29), LEASE, 10))
            .await
            .unwrap()
            .is_empty(),
        "held by a"
    );
    let second = b
        .claim(&ClaimRequest::new(t(30), LEASE, 10))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.lease.token, first.lease.token + 1);
    let done = |lease| Finished {
        lease,
        completion: Completion::Delivered {
            attempt: Attempt::response(t(31), Duration::from_millis(3), 200, b"ok"),
        },
    };
    let late = a.complete(&[done(first.lease)], t(31)).await.unwrap();
    assert_eq!(late.applied, 0);
    assert_eq!(late.lease_lost, vec![second.lease.key.clone()]);
    let ok = b.complete(&[done(second.lease)], t(31)).await.unwrap();
    assert_eq!(ok.applied, 1);
}
