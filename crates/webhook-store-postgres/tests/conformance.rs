//! The `webhook-core` store conformance suite, each case on a fresh schema.

mod common;

use webhook_core::testkit;

#[tokio::test(flavor = "multi_thread")]
async fn conformance() {
    let schemas = common::Schemas::new();
    let schemas = &schemas;
    testkit::run_all(|| schemas.store()).await;
}
