//! The `webhook_core` store conformance suite, on fresh files.

use std::sync::atomic::{AtomicUsize, Ordering};

use webhook_store_redb::{RedbOptions, RedbStore};

#[tokio::test(flavor = "multi_thread")]
async fn redb_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    webhook_core::testkit::run_all(|| {
        let path = dir
            .path()
            .join(format!("store-{}.redb", n.fetch_add(1, Ordering::Relaxed)));
        async move { RedbStore::open(path).unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_holds_with_every_payload_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    webhook_core::testkit::run_all(|| {
        let path = dir
            .path()
            .join(format!("store-{}.redb", n.fetch_add(1, Ordering::Relaxed)));
        let options = RedbOptions {
            compress_threshold: 0,
            ..RedbOptions::default()
        };
        async move { RedbStore::open_with(path, options).unwrap() }
    })
    .await;
}
