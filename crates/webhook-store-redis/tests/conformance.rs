//! The `webhook_core` store conformance suite, on a fresh key prefix per case.

mod support;

use webhook_store_redis::RedisStore;

#[tokio::test(flavor = "multi_thread")]
async fn conformance() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    webhook_core::testkit::run_all(|| {
        let url = url.clone();
        let prefix = cleanup.prefix("conformance");
        async move {
            RedisStore::connect(&url, &prefix)
                .await
                .expect("connect to the test Redis")
        }
    })
    .await;
}
