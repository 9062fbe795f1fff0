//! The store conformance suite on the in-memory store.

use webhook_core::{MemoryStore, testkit};

#[tokio::test]
async fn memory_store_passes_the_conformance_suite() {
    testkit::run_all(|| async { MemoryStore::new() }).await;
}
