//! Endpoint secrets encrypted at rest (`--secret-encryption-key`): deliveries are
//! signed with the real secret while the redb file (and PostgreSQL / Redis, when their
//! test servers are configured) holds only ciphertext; a wrong or missing key stops
//! webhookd at start with a clear error; plaintext secrets stored before the key was
//! configured keep working and are encrypted when next written.

mod common;

use std::{path::Path, sync::Arc};

use common::{Server, healthy, namespace, receiver, settings, store_url, wait_status};
use serde_json::json;
use webhook_core::{EndpointId, Store};
use webhook_dispatcher::{SealingKey, sealing::is_sealed};
use webhookd::{App, Settings, StoreSpec, app::REDB_FILE};

const KEY: &str = "mQd3F1nqvGv8X7b2ZqK0tW6yR4cJpL9sHaE5uN1oBxI=";
const OTHER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn key(text: &str) -> SealingKey {
    SealingKey::from_base64(text).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The endpoint as the redb file holds it (the server must be stopped).
async fn raw_endpoint(dir: &Path, id: &str) -> webhook_core::Endpoint {
    let path = dir.join(REDB_FILE);
    let store = tokio::task::spawn_blocking(move || webhook_store_redb::RedbStore::open(path))
        .await
        .unwrap()
        .unwrap();
    store
        .get_endpoint(&EndpointId::from(id))
        .await
        .unwrap()
        .unwrap()
}

/// Sends one event to `endpoint` and waits until it is delivered.
async fn deliver(server: &Server, id: &str, event_type: &str) {
    server
        .post("/events")
        .json(&json!({"payload": {"id": id}, "event_type": event_type, "id": id}))
        .send()
        .await
        .expect(202);
    wait_status(server, None, id, "delivered").await;
}

/// Why webhookd does not start (not `Server::start`: it retries start-up failures).
async fn build_error(settings: Settings) -> String {
    match Box::pin(App::build(settings)).await {
        Ok(_) => panic!("webhookd started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_in_the_redb_file_and_deliveries_are_signed() {
    let dir = tempfile::tempdir().unwrap();
    let given = webhook_sdk::generate_secret();
    let given_b64 = given.strip_prefix("whsec_").unwrap().to_owned();
    let given_hook = receiver(healthy(Some(&given))).await;
    let mut s = settings(dir.path());
    s.secret_encryption_key = Some(key(KEY));
    let server = Server::start(s.clone()).await;
    server
        .post("/v1/endpoints")
        .json(&json!({"id": "given", "url": given_hook.url("/h"), "secret": given, "event_types": ["given.*"]}))
        .send()
        .await
        .expect(201);
    // A generated secret, shown once: the receiver verifies with it.
    let created = server
        .post("/v1/endpoints")
        .json(&json!({"id": "generated", "url": "https://example.com/", "event_types": ["none"]}))
        .send()
        .await
        .expect(201);
    let generated = created["secret"].as_str().unwrap().to_owned();
    let generated_hook = receiver(healthy(Some(&generated))).await;
    server
        .put("/v1/endpoints/generated")
        .json(&json!({"url": generated_hook.url("/h"), "event_types": ["generated.*"]}))
        .send()
        .await
        .expect(200);

    deliver(&server, "e-given", "given.x").await;
    deliver(&server, "e-generated", "generated.x").await;
    assert_eq!(given_hook.stats().counts().succeeded, 1);
    assert_eq!(generated_hook.stats().counts().succeeded, 1);
    assert_eq!(given_hook.stats().counts().bad_signature, 0);
    assert_eq!(generated_hook.stats().counts().bad_signature, 0);
    server.stop().await;

    // The file holds neither secret in any form; the stored secret is the sealed form.
    let file = std::fs::read(dir.path().join(REDB_FILE)).unwrap();
    for secret in [&given, &given_b64, &generated, &generated[6..]] {
        assert!(
            !contains(&file, secret.as_bytes()),
            "{secret} is in the file"
        );
    }
    for id in ["given", "generated"] {
        let raw = raw_endpoint(dir.path(), id).await;
        assert!(is_sealed(raw.secret.as_ref().unwrap()), "{id}");
    }

    // A restart with the same key reads them back and signs correctly.
    let server = Server::start(s.clone()).await;
    deliver(&server, "e-given-2", "given.y").await;
    assert_eq!(given_hook.stats().counts().succeeded, 2);
    assert_eq!(given_hook.stats().counts().bad_signature, 0);
    server.stop().await;

    // Another key, or none: webhookd refuses to start, naming the problem; never
    // sends with a garbled secret.
    let mut wrong = s.clone();
    wrong.secret_encryption_key = Some(key(OTHER_KEY));
    let e = build_error(wrong).await;
    assert!(
        e.contains("cannot read the endpoint secrets") && e.contains(key(OTHER_KEY).id()),
        "{e}"
    );
    assert!(e.contains(key(KEY).id()), "{e}");
    let mut none = s.clone();
    none.secret_encryption_key = None;
    let e = build_error(none).await;
    assert!(
        e.contains("no secret encryption key is configured")
            && e.contains("--secret-encryption-key"),
        "{e}"
    );
    for text in [given.as_str(), generated.as_str(), KEY, OTHER_KEY] {
        assert!(!e.contains(text), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_file_holds_plaintext_which_keeps_working_once_a_key_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let secret = webhook_sdk::generate_secret();
    let hook = receiver(healthy(Some(&secret))).await;
    let plain = settings(dir.path());
    let server = Server::start(plain.clone()).await;
    server
        .post("/v1/endpoints")
        .json(&json!({"id": "ep", "url": hook.url("/h"), "secret": secret}))
        .send()
        .await
        .expect(201);
    // The reserved prefix is refused (it would be taken for an encrypted secret).
    server
        .post("/v1/endpoints")
        .json(&json!({"url": hook.url("/h"), "secret": "sealed:v1:mine"}))
        .send()
        .await
        .expect_error(422, Some("secret"));
    server.stop().await;
    // The control for the test above: without a key the secret is in the file.
    let file = std::fs::read(dir.path().join(REDB_FILE)).unwrap();
    assert!(contains(&file, secret.as_bytes()));

    // With a key now: the plaintext secret still signs...
    let mut sealed = plain.clone();
    sealed.secret_encryption_key = Some(key(KEY));
    let server = Server::start(sealed.clone()).await;
    deliver(&server, "e1", "t").await;
    assert_eq!(hook.stats().counts().succeeded, 1);
    assert_eq!(hook.stats().counts().bad_signature, 0);
    // ...and a write (a PUT that keeps the secret) encrypts it.
    server
        .put("/v1/endpoints/ep")
        .json(&json!({"url": hook.url("/h")}))
        .send()
        .await
        .expect(200);
    deliver(&server, "e2", "t").await;
    assert_eq!(hook.stats().counts().succeeded, 2);
    server.stop().await;
    let raw = raw_endpoint(dir.path(), "ep").await;
    let stored = raw.secret.unwrap();
    assert!(is_sealed(&stored));
    assert!(!contains(stored.expose(), secret.as_bytes()));
    assert_eq!(
        key(KEY).open(&EndpointId::from("ep"), &stored).unwrap(),
        webhook_core::Secret::new(&secret)
    );
    // The key cannot be dropped again without losing access: start-up says so.
    let e = build_error(plain).await;
    assert!(e.contains("\"ep\""), "{e}");
}

#[test]
fn a_malformed_key_is_refused_at_start_without_showing_it() {
    use clap::Parser as _;
    for bad in ["too-short", "bm90IDMyIGJ5dGVz", "!!!!"] {
        let Err(e) =
            webhookd::cli::Cli::try_parse_from(["webhookd", "--secret-encryption-key", bad])
        else {
            panic!("{bad} accepted");
        };
        let message = e.to_string();
        assert!(message.contains("--secret-encryption-key"), "{message}");
        assert!(message.contains("base64"), "{message}");
        assert!(!message.contains(bad), "{message}");
    }
    let cli =
        webhookd::cli::Cli::try_parse_from(["webhookd", "--secret-encryption-key", KEY]).unwrap();
    let settings = Settings::from_args(&cli.serve).unwrap();
    assert_eq!(
        settings.secret_encryption_key.as_ref().map(SealingKey::id),
        Some(key(KEY).id())
    );
    assert!(!format!("{settings:?}").contains(KEY));
}

/// Creates a sealed endpoint through webhookd on `settings`, delivers to it, and
/// returns its secret.
async fn round_trip(settings: Settings) -> String {
    let secret = webhook_sdk::generate_secret();
    let hook = receiver(healthy(Some(&secret))).await;
    let server = Server::start(settings).await;
    server
        .post("/v1/endpoints")
        .json(&json!({"id": "sealed-ep", "url": hook.url("/h"), "secret": secret}))
        .send()
        .await
        .expect(201);
    deliver(&server, "sealed-e1", "t").await;
    assert_eq!(hook.stats().counts().bad_signature, 0);
    server.stop().await;
    secret
}

fn assert_sealed(raw: &webhook_core::Endpoint, secret: &str) {
    let stored = raw.secret.as_ref().unwrap();
    assert!(is_sealed(stored));
    assert!(!contains(stored.expose(), secret.as_bytes()));
    let json = serde_json::to_string(raw).unwrap();
    assert!(!json.contains(secret) && !json.contains(&secret[6..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_holds_only_ciphertext() {
    let Some(url) = store_url("WEBHOOK_TEST_POSTGRES_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = namespace("pg");
    let mut s = settings(dir.path());
    s.store = StoreSpec::from_value(Some(&url)).unwrap();
    s.store_namespace = Some(schema.clone());
    s.secret_encryption_key = Some(key(KEY));
    let secret = round_trip(s).await;
    let store = webhook_store_postgres::PostgresStore::connect_with(
        &url,
        webhook_store_postgres::PostgresOptions::default().with_schema(schema.clone()),
    )
    .await
    .unwrap();
    let raw = store
        .get_endpoint(&EndpointId::from("sealed-ep"))
        .await
        .unwrap()
        .unwrap();
    assert_sealed(&raw, &secret);
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_only_ciphertext() {
    let Some(url) = store_url("WEBHOOK_TEST_REDIS_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = namespace("redis");
    let mut s = settings(dir.path());
    s.store = StoreSpec::from_value(Some(&url)).unwrap();
    s.store_namespace = Some(prefix.clone());
    s.secret_encryption_key = Some(key(KEY));
    let secret = round_trip(s).await;
    let store: Arc<dyn Store> = Arc::new(
        webhook_store_redis::RedisStore::connect(&url, &prefix)
            .await
            .unwrap(),
    );
    let raw = store
        .get_endpoint(&EndpointId::from("sealed-ep"))
        .await
        .unwrap()
        .unwrap();
    assert_sealed(&raw, &secret);
}
