//! Deleting an endpoint with a large backlog: in steps, so that other writes are not
//! held up, and finished after a crash cut it short.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use redb::{ReadableDatabase, TableDefinition};
use webhook_core::{
    ClaimRequest, Endpoint, EndpointId, Event, IdempotencyKey, Ordering, Store, testkit::t,
};
use webhook_store_redb::RedbStore;

const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
const ENDPOINTS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("endpoints");
const BY_ENDPOINT: TableDefinition<'static, (&str, u64), ()> = TableDefinition::new("by_endpoint");
const UNFINISHED: TableDefinition<'static, (&str, u64), (i64, u32)> =
    TableDefinition::new("unfinished");
const READY: TableDefinition<'static, (&str, u16, i64, u32, u64), ()> =
    TableDefinition::new("ready");
const PROMOTED: TableDefinition<'static, &str, (i64, u32)> = TableDefinition::new("promoted");

/// A store with a strict endpoint `a` holding `n` deliveries (the first claimed, so
/// every index has entries) and an endpoint `b` that shares their events.
async fn backlog(path: &Path, n: usize) -> RedbStore {
    let store = RedbStore::open(path).unwrap();
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/a").with_ordering(Ordering::Strict))
        .await
        .unwrap();
    store
        .put_endpoint(&Endpoint::new("b", "https://example.test/b"))
        .await
        .unwrap();
    // Concurrent enqueues share group commits.
    let store = std::sync::Arc::new(store);
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let both = [EndpointId::from("a"), EndpointId::from("b")];
                for i in (w..n).step_by(32) {
                    store
                        .enqueue(&Event::new(format!("e{i}"), "{}"), &both, t(0))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let store = std::sync::Arc::into_inner(store).unwrap();
    let claimed = store
        .claim(&ClaimRequest::new(t(1), Duration::from_secs(30), 10))
        .await
        .unwrap();
    assert!(
        claimed
            .iter()
            .any(|c| c.delivery.key.endpoint_id.as_str() == "a")
    );
    store
}

fn key(event: &str, endpoint: &str) -> IdempotencyKey {
    IdempotencyKey::new(event.into(), endpoint.into(), None)
}

/// What the file still holds of endpoint `a`: (by_endpoint, unfinished, ready,
/// promoted, deletion marks) entries.
fn remains_of_a(path: &Path) -> (usize, usize, usize, usize, usize) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let by_endpoint = txn.open_table(BY_ENDPOINT).unwrap();
    let unfinished = txn.open_table(UNFINISHED).unwrap();
    let ready = txn.open_table(READY).unwrap();
    let meta = txn.open_table(META).unwrap();
    (
        by_endpoint
            .range(("a", 0)..=("a", u64::MAX))
            .unwrap()
            .count(),
        unfinished
            .range(("a", 0)..=("a", u64::MAX))
            .unwrap()
            .count(),
        ready
            .range(("a", 0, i64::MIN, 0, 0)..=("a", u16::MAX, i64::MAX, u32::MAX, u64::MAX))
            .unwrap()
            .count(),
        usize::from(
            txn.open_table(PROMOTED)
                .unwrap()
                .get("a")
                .unwrap()
                .is_some(),
        ),
        meta.range("deleting:".."deleting;").unwrap().count(),
    )
}

/// Makes the file look as the first step of deleting `a` leaves it when the process
/// dies right after that step.
fn cut_short_after_first_step(path: &Path) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(ENDPOINTS).unwrap().remove("a").unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("deleting:a", 0)
        .unwrap();
    txn.commit().unwrap();
}

/// Puts endpoint `a` (relaxed ordering) and enqueues event `new` to it.
async fn put_a_again_with_a_delivery(store: &RedbStore) {
    store
        .put_endpoint(&Endpoint::new("a", "https://example.test/a"))
        .await
        .unwrap();
    store
        .enqueue(&Event::new("new", "{}"), &[EndpointId::from("a")], t(2))
        .await
        .unwrap();
}

/// The delivery of [`put_a_again_with_a_delivery`] is there, and (once `store` is
/// closed) nothing else of endpoint `a` is in the file.
async fn only_the_new_a_remains(store: RedbStore, path: &Path) {
    assert!(
        store
            .get_delivery(&key("new", "a"))
            .await
            .unwrap()
            .is_some()
    );
    drop(store);
    assert_eq!(remains_of_a(path), (1, 0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_endpoint_goes_in_steps_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = backlog(&path, 5000).await;
        assert!(store.delete_endpoint(&"a".into()).await.unwrap());
        assert!(!store.delete_endpoint(&"a".into()).await.unwrap());
        assert!(store.get_endpoint(&"a".into()).await.unwrap().is_none());
        assert!(
            store
                .get_delivery(&key("e4999", "a"))
                .await
                .unwrap()
                .is_none()
        );
        let record = store.get_event(None, &"e7".into()).await.unwrap().unwrap();
        assert_eq!(record.deliveries.len(), 1, "b's is left");
    }
    assert_eq!(remains_of_a(&path), (0, 0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_cut_short_is_finished_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(backlog(&path, 300).await);
    cut_short_after_first_step(&path);
    {
        let store = RedbStore::open(&path).unwrap();
        assert!(store.get_endpoint(&"a".into()).await.unwrap().is_none());
        let deadline = Instant::now() + Duration::from_secs(20);
        while store
            .get_delivery(&key("e299", "a"))
            .await
            .unwrap()
            .is_some()
        {
            assert!(Instant::now() < deadline, "the deletion was not finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // `a` again is a new endpoint, which the finished deletion leaves alone.
        put_a_again_with_a_delivery(&store).await;
        assert!(store.get_delivery(&key("e7", "b")).await.unwrap().is_some());
    }
    // Only the new endpoint's delivery: the old strict one's index entries went too,
    // though the restart forgot that it was strict.
    only_the_new_a_remains(RedbStore::open(&path).unwrap(), &path).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_put_while_its_old_deletion_resumes_starts_afresh_and_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(backlog(&path, 2500).await);
    cut_short_after_first_step(&path);
    // At once, while the store resumes the old deletion: the put finishes it first.
    let store = RedbStore::open(&path).unwrap();
    put_a_again_with_a_delivery(&store).await;
    assert!(
        store.get_delivery(&key("e0", "a")).await.unwrap().is_none(),
        "the new endpoint starts without the old one's deliveries"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(store.get_endpoint(&"a".into()).await.unwrap().is_some());
    only_the_new_a_remains(store, &path).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_goes_on_when_its_caller_stops_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = backlog(&path, 5000).await;
        // A caller that gives up at once (an HTTP client that hangs up, say).
        let gave_up =
            tokio::time::timeout(Duration::from_millis(1), store.delete_endpoint(&"a".into()))
                .await;
        assert!(
            gave_up.is_err(),
            "the deletion takes more than a millisecond"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.get_delivery(&key("e0", "a")).await.unwrap().is_some()
            || store
                .get_delivery(&key("e4999", "a"))
                .await
                .unwrap()
                .is_some()
        {
            assert!(Instant::now() < deadline, "the deletion stopped half done");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(store.get_endpoint(&"a".into()).await.unwrap().is_none());
    }
    assert_eq!(remains_of_a(&path), (0, 0, 0, 0, 0));
}

#[test]
fn dropping_the_store_while_a_deletion_goes_on_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let (done, finished) = std::sync::mpsc::channel();
    let file = path.clone();
    // On a runtime with one thread, which the drop blocks: the deletion's task cannot
    // run then, so the drop must not wait for it.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = backlog(&file, 5000).await;
            let gave_up =
                tokio::time::timeout(Duration::from_millis(1), store.delete_endpoint(&"a".into()))
                    .await;
            assert!(gave_up.is_err());
            drop(store);
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("dropping the store hung");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = RedbStore::open(&path).unwrap();
        store.delete_endpoint(&"a".into()).await.unwrap();
    });
    assert_eq!(remains_of_a(&path), (0, 0, 0, 0, 0));
}
