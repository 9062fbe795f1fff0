//! webhookd on PostgreSQL and Redis: events delivered, kept across a restart, and two
//! instances sharing one store delivering each event once.
//!
//! The servers come from `WEBHOOK_TEST_POSTGRES_URL` and `WEBHOOK_TEST_REDIS_URL`
//! (`cargo xtask ci` starts throwaway ones). Without them these tests are skipped,
//! except under CI, where they fail.

mod common;

use std::time::Duration;

use common::{Server, healthy, namespace, receiver, settings, store_url, wait_status};
use serde_json::json;
use webhookd::{Settings, StoreSpec};

async fn exercise(make: impl Fn() -> Settings) {
    let secret = webhook_sdk::generate_secret();
    let target = receiver(healthy(Some(&secret))).await;
    let a = Server::start(make()).await;
    let b = Server::start(make()).await;
    a.post("/v1/endpoints")
        .json(&json!({"id": "shared", "url": target.url("/hook"), "secret": secret, "event_types": ["*"]}))
        .send()
        .await
        .expect(201);
    // B sees the endpoint A created (it reloads endpoints from the store).
    b.get("/v1/endpoints/shared").send().await.expect(200);

    let mut ids = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 { &a } else { &b };
        let accepted = node
            .post("/events")
            .json(&json!({"payload": {"i": i}, "event_type": "shared.test"}))
            .send()
            .await
            .expect(202);
        ids.push(accepted["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        wait_status(&a, None, id, "delivered").await;
        wait_status(&b, None, id, "delivered").await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let delivered = target.stats().delivered();
    for id in &ids {
        assert_eq!(delivered.get(id), Some(&1), "{id} delivered once");
    }
    assert_eq!(target.stats().counts().bad_signature, 0);

    // A restart keeps everything.
    a.stop().await;
    b.stop().await;
    let again = Server::start(make()).await;
    for id in &ids {
        wait_status(&again, None, id, "delivered").await;
    }
    again
        .delete("/v1/endpoints/shared")
        .send()
        .await
        .expect(204);
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let Some(url) = store_url("WEBHOOK_TEST_POSTGRES_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = namespace("pg");
    exercise(|| {
        let mut s = settings(dir.path());
        s.store = StoreSpec::from_value(Some(&url)).unwrap();
        assert_eq!(s.store.kind(), "postgres");
        s.store_namespace = Some(schema.clone());
        s
    })
    .await;
    let store = webhook_store_postgres::PostgresStore::connect_with(
        &url,
        webhook_store_postgres::PostgresOptions::default().with_schema(schema.clone()),
    )
    .await
    .unwrap();
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    let Some(url) = store_url("WEBHOOK_TEST_REDIS_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = namespace("redis");
    exercise(|| {
        let mut s = settings(dir.path());
        s.store = StoreSpec::from_value(Some(&url)).unwrap();
        assert_eq!(s.store.kind(), "redis");
        s.store_namespace = Some(prefix.clone());
        s
    })
    .await;
}
