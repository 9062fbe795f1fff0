//! Claim order within an endpoint (priority, then due time, then creation order) as
//! the redb store keeps it: across reopens, retries, clocks that go back, endpoint
//! deletion, and files written before the `ready` index existed.

use std::{path::Path, time::Duration};

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
use webhook_core::{
    ClaimRequest, Completion, Endpoint, EndpointId, Event, Finished, Ordering, Store,
};
use webhook_store_redb::RedbStore;

const LEASE: Duration = Duration::from_secs(30);

// Mirrors of the store's private tables, for inspecting and downgrading files.
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
const READY: TableDefinition<'static, (&str, u16, i64, u32, u64), ()> =
    TableDefinition::new("ready");
const PROMOTED: TableDefinition<'static, &str, (i64, u32)> = TableDefinition::new("promoted");
const UNFINISHED: TableDefinition<'static, (&str, u64), (i64, u32)> =
    TableDefinition::new("unfinished");

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

async fn open_with_endpoint(path: &Path, id: &str) -> RedbStore {
    let store = RedbStore::open(path).unwrap();
    store
        .put_endpoint(&Endpoint::new(id, format!("https://example.test/{id}")))
        .await
        .unwrap();
    store
}

async fn enqueue(store: &RedbStore, id: &str, priority: i16, endpoint: &str, at: i64) {
    store
        .enqueue(
            &Event::new(id, "{}").with_priority(priority),
            &[EndpointId::from(endpoint)],
            t(at),
        )
        .await
        .unwrap();
}

async fn claim(store: &RedbStore, request: &ClaimRequest) -> Vec<String> {
    store
        .claim(request)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.delivery.key.event_id.to_string())
        .collect()
}

async fn claim_at(store: &RedbStore, at: i64, limit: usize) -> Vec<String> {
    claim(store, &ClaimRequest::new(t(at), LEASE, limit)).await
}

/// (ready entries, promotion marks) in the file.
fn index_sizes(path: &Path) -> (u64, u64) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let ready = txn.open_table(READY).unwrap().len().unwrap();
    let promoted = txn.open_table(PROMOTED).unwrap().len().unwrap();
    (ready, promoted)
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_order_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = open_with_endpoint(&path, "a").await;
        for (i, priority) in [0, 3, -2, 3, 7, 0].into_iter().enumerate() {
            enqueue(
                &store,
                &format!("e{i}"),
                priority,
                "a",
                i64::try_from(i).unwrap(),
            )
            .await;
        }
        // Promotes all six, claims the first.
        assert_eq!(claim_at(&store, 10, 1).await, ["e4"]);
    }
    let store = RedbStore::open(&path).unwrap();
    // Due at 5, before the promotion mark: goes straight to the ready index.
    enqueue(&store, "late", 3, "a", 5).await;
    assert_eq!(
        claim_at(&store, 10, 10).await,
        ["e1", "e3", "late", "e0", "e5", "e2"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_and_expired_leases_are_ordered_by_priority_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_endpoint(&dir.path().join("store.redb"), "a").await;
    enqueue(&store, "low", 0, "a", 0).await;
    enqueue(&store, "high", 5, "a", 1).await;
    enqueue(&store, "mid", 2, "a", 2).await;
    let claimed = store
        .claim(&ClaimRequest::new(t(10), LEASE, 10))
        .await
        .unwrap();
    let order: Vec<_> = claimed
        .iter()
        .map(|c| c.delivery.key.event_id.to_string())
        .collect();
    assert_eq!(order, ["high", "mid", "low"]);
    // `low` and `high` are deferred to 20; `mid`'s lease expires at 40.
    for c in claimed
        .iter()
        .filter(|c| c.delivery.key.event_id.as_str() != "mid")
    {
        let done = store
            .complete(
                &[Finished {
                    lease: c.lease.clone(),
                    completion: Completion::Defer { until: t(20) },
                }],
                t(11),
            )
            .await
            .unwrap();
        assert_eq!(done.applied, 1);
    }
    assert!(claim_at(&store, 19, 10).await.is_empty());
    enqueue(&store, "new", 1, "a", 30).await;
    // Due at 20 before `new` (due at 30) and `mid` (claimable at 40), but by priority:
    assert_eq!(
        claim_at(&store, 45, 10).await,
        ["high", "mid", "new", "low"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clock_that_goes_back_never_claims_early() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_endpoint(&dir.path().join("store.redb"), "a").await;
    enqueue(&store, "x", 0, "a", 0).await;
    assert_eq!(claim_at(&store, 100, 10).await, ["x"]);
    // Both before the mark (100), so promoted already; `z` is not due at 60.
    enqueue(&store, "z", 9, "a", 70).await;
    enqueue(&store, "y", 1, "a", 50).await;
    assert_eq!(claim_at(&store, 60, 10).await, ["y"]);
    // (`y` is leased until 90.)
    assert_eq!(claim_at(&store, 80, 10).await, ["z"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_endpoints_keep_creation_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_endpoint(&dir.path().join("store.redb"), "s").await;
    let strict = Endpoint::new("s", "https://example.test/s").with_ordering(Ordering::Strict);
    store.put_endpoint(&strict).await.unwrap();
    enqueue(&store, "first", 0, "s", 0).await;
    enqueue(&store, "urgent", 9, "s", 1).await;
    let claimed = store
        .claim(&ClaimRequest::new(t(10), LEASE, 10))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.key.event_id.as_str(), "first");
    let done = store
        .complete(
            &[Finished {
                lease: claimed[0].lease.clone(),
                completion: Completion::Defer { until: t(0) },
            }],
            t(11),
        )
        .await
        .unwrap();
    assert_eq!(done.applied, 1);
    // Switching to unordered: the priority order applies from now on.
    store
        .put_endpoint(&strict.with_ordering(Ordering::Unordered))
        .await
        .unwrap();
    assert_eq!(claim_at(&store, 12, 10).await, ["urgent", "first"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_endpoint_clears_its_ready_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = open_with_endpoint(&path, "a").await;
        for i in 0..5 {
            enqueue(&store, &format!("e{i}"), i, "a", 0).await;
        }
        assert_eq!(claim_at(&store, 10, 2).await, ["e4", "e3"]);
        assert!(store.delete_endpoint(&"a".into()).await.unwrap());
    }
    assert_eq!(index_sizes(&path), (0, 0));
    let store = open_with_endpoint(&path, "a").await;
    enqueue(&store, "again", 0, "a", 5).await;
    enqueue(&store, "urgent", 1, "a", 6).await;
    assert_eq!(claim_at(&store, 10, 10).await, ["urgent", "again"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_from_before_the_ready_index_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = open_with_endpoint(&path, "a").await;
        enqueue(&store, "low", 0, "a", 0).await;
        enqueue(&store, "high", 4, "a", 1).await;
    }
    // Make it look like layout 1: no `ready` or `promoted` tables, and `unfinished`
    // entries for every endpoint, not only strict ones.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", 1).unwrap();
        assert!(txn.delete_table(READY).unwrap());
        assert!(txn.delete_table(PROMOTED).unwrap());
        let mut unfinished = txn.open_table(UNFINISHED).unwrap();
        assert_eq!(
            unfinished.len().unwrap(),
            0,
            "a relaxed endpoint has none now"
        );
        unfinished.insert(("a", 0), (1_800_000_000, 0)).unwrap();
        unfinished.insert(("a", 1), (1_800_000_001, 0)).unwrap();
        drop(unfinished);
        txn.commit().unwrap();
    }
    {
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(claim_at(&store, 10, 10).await, ["high", "low"]);
    }
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let format = txn
        .open_table(META)
        .unwrap()
        .get("format")
        .unwrap()
        .unwrap();
    assert_eq!(format.value(), 3);
    assert_eq!(
        txn.open_table(UNFINISHED).unwrap().len().unwrap(),
        0,
        "the upgrade drops the relaxed endpoint's entries"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(RedbStore::open(&path).unwrap());
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", 4).unwrap();
        txn.commit().unwrap();
    }
    assert!(RedbStore::open(&path).is_err());
}
