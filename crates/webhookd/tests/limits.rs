//! The configurable limits, through the HTTP API: request body (413), endpoint URL and
//! `target_url` length and endpoint headers (422 naming the field), endpoints per tenant
//! (409 `too_many_endpoints`, implicit endpoints included, exact under concurrent
//! creates), and that every refusal writes nothing.

mod common;

use common::{Server, healthy, receiver, settings};
use serde_json::{Value, json};
use webhookd::settings::Limits;

const ADMIN: &str = "admin-token-limits";
const ACME: &str = "acme-token-limits";
const GLOBEX: &str = "globex-token-limits";

fn ids(list: &Value) -> Vec<String> {
    list["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `https://example.com/` padded with path characters to exactly `len` bytes.
fn url_of_len(len: usize) -> String {
    let base = "https://example.com/";
    format!("{base}{}", "p".repeat(len - base.len()))
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_body_bytes = 2000;
    let server = Server::start(s).await;
    let hook = receiver(healthy(None)).await;
    let ep = server
        .post("/v1/endpoints")
        .json(&json!({"id": "ep", "url": hook.url("/h"), "event_types": ["*"]}))
        .send()
        .await
        .expect(201);
    assert_eq!(ep["id"], "ep");

    // Just under the limit is accepted; just over is refused.
    let fits = json!({"payload": "x".repeat(1900), "event_type": "t", "id": "fits"});
    assert!(serde_json::to_vec(&fits).unwrap().len() <= 2000);
    server.post("/events").json(&fits).send().await.expect(202);
    let over = json!({"payload": "x".repeat(2000), "event_type": "t", "id": "over"});
    let reply = server.post("/events").json(&over).send().await;
    assert_eq!(reply.expect_error(413, None), "payload_too_large");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2000 bytes"),
        "{}",
        reply.text()
    );
    server
        .get("/events/over")
        .send()
        .await
        .expect_error(404, None);

    // Endpoint bodies too, on create and replace.
    let big = json!({"url": hook.url("/h"), "event_types": ["y".repeat(2100)]});
    server
        .post("/v1/endpoints")
        .json(&big)
        .send()
        .await
        .expect_error(413, None);
    server
        .put("/v1/endpoints/ep")
        .json(&big)
        .send()
        .await
        .expect_error(413, None);
    let list = server.get("/v1/endpoints").send().await.expect(200);
    assert_eq!(ids(&list), ["ep"]);
    assert_eq!(list["endpoints"][0]["event_types"], json!(["*"]));
    server.stop().await;
}

#[tokio::test]
async fn long_urls_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.limits.max_url_bytes = 64;
    let server = Server::start(s).await;

    server
        .post("/v1/endpoints")
        .json(&json!({"id": "at-limit", "url": url_of_len(64)}))
        .send()
        .await
        .expect(201);
    let reply = server
        .post("/v1/endpoints")
        .json(&json!({"id": "over", "url": url_of_len(65)}))
        .send()
        .await;
    reply.expect_error(422, Some("url"));
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("65 bytes") && message.contains("64 bytes"),
        "{message}"
    );
    server
        .put("/v1/endpoints/at-limit")
        .json(&json!({"url": url_of_len(65)}))
        .send()
        .await
        .expect_error(422, Some("url"));
    server
        .post("/events")
        .json(&json!({"payload": 1, "target_url": url_of_len(65), "id": "long-target"}))
        .send()
        .await
        .expect_error(422, Some("target_url"));

    // Nothing was written.
    let list = server.get("/v1/endpoints").send().await.expect(200);
    assert_eq!(ids(&list), ["at-limit"]);
    assert_eq!(list["endpoints"][0]["url"], url_of_len(64));
    server
        .get("/events/long-target")
        .send()
        .await
        .expect_error(404, None);
    server.stop().await;

    // The default: 2048 bytes.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(settings(dir.path())).await;
    server
        .post("/v1/endpoints")
        .json(&json!({"url": url_of_len(2048)}))
        .send()
        .await
        .expect(201);
    server
        .post("/v1/endpoints")
        .json(&json!({"url": url_of_len(2049)}))
        .send()
        .await
        .expect_error(422, Some("url"));
    server.stop().await;
}

#[tokio::test]
async fn endpoint_headers_are_limited_in_count_size_and_name_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.limits.max_endpoint_headers = 4;
    s.limits.max_endpoint_header_bytes = 100;
    let server = Server::start(s).await;
    let headers = |n: usize, value_len: usize| -> Value {
        (0..n)
            .map(|i| (format!("X-H{i}"), Value::String("v".repeat(value_len))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };

    // 4 headers of 4 + 21 bytes = 100 bytes: exactly at both limits.
    server
        .post("/v1/endpoints")
        .json(&json!({"id": "ok", "url": "https://example.com/", "headers": headers(4, 21)}))
        .send()
        .await
        .expect(201);
    let cases = [
        (headers(5, 1), "5 headers"),
        (headers(4, 22), "104 bytes"),
        (json!({"X-One": "v".repeat(101)}), "value of \"X-One\""),
        (json!({"n".repeat(257): "v"}), "257 bytes"),
    ];
    for (h, expected) in &cases {
        for call in [
            server
                .post("/v1/endpoints")
                .json(&json!({"url": "https://example.com/", "headers": h})),
            server
                .put("/v1/endpoints/ok")
                .json(&json!({"url": "https://example.com/", "headers": h})),
        ] {
            let reply = call.send().await;
            reply.expect_error(422, Some("headers"));
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(message.contains(expected), "{message}");
        }
    }
    // The defaults allow 32 headers of 8 KiB in all, not 33.
    let list = server.get("/v1/endpoints").send().await.expect(200);
    assert_eq!(ids(&list), ["ok"]);
    assert_eq!(list["endpoints"][0]["headers"], headers(4, 21));
    server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(settings(dir.path())).await;
    assert_eq!(Limits::DEFAULT.max_endpoint_headers, 32);
    server
        .post("/v1/endpoints")
        .json(&json!({"url": "https://example.com/", "headers": headers(32, 200)}))
        .send()
        .await
        .expect(201);
    server
        .post("/v1/endpoints")
        .json(&json!({"url": "https://example.com/", "headers": headers(33, 1)}))
        .send()
        .await
        .expect_error(422, Some("headers"));
    server
        .post("/v1/endpoints")
        .json(&json!({"url": "https://example.com/", "headers": headers(2, 4100)}))
        .send()
        .await
        .expect_error(422, Some("headers"));
    server.stop().await;
}

#[tokio::test]
async fn endpoints_per_tenant_are_limited_implicit_ones_included() {
    let dir = tempfile::tempdir().unwrap();
    let hook = receiver(healthy(None)).await;
    let mut s = settings(dir.path());
    s.limits.max_endpoints_per_tenant = 3;
    s.api_token = Some(ADMIN.into());
    s.tenant_tokens = vec![
        ("acme".into(), ACME.into()),
        ("globex".into(), GLOBEX.into()),
    ];
    let server = Server::start(s).await;
    let create =
        |token: &'static str, body: Value| server.post("/v1/endpoints").token(token).json(&body);

    // acme: an implicit endpoint (from a target_url) and two explicit ones fill it.
    server
        .post("/events")
        .token(ACME)
        .json(&json!({"payload": 1, "target_url": hook.url("/implicit"), "id": "e1"}))
        .send()
        .await
        .expect(202);
    for i in 0..2 {
        create(
            ACME,
            json!({"id": format!("acme-{i}"), "url": hook.url("/a")}),
        )
        .send()
        .await
        .expect(201);
    }
    let reply = create(ACME, json!({"id": "acme-2", "url": hook.url("/a")}))
        .send()
        .await;
    assert_eq!(reply.expect_error(409, None), "too_many_endpoints");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("\"acme\"") && message.contains("3 endpoints"),
        "{message}"
    );
    // A new target_url would need a fourth: refused, and the event is not stored.
    let reply = server
        .post("/events")
        .token(ACME)
        .json(&json!({"payload": 2, "target_url": hook.url("/other"), "id": "e2"}))
        .send()
        .await;
    assert_eq!(reply.expect_error(409, None), "too_many_endpoints");
    server
        .get("/events/e2")
        .token(ACME)
        .send()
        .await
        .expect_error(404, None);
    // The existing implicit endpoint still takes events; replacing an endpoint is fine.
    server
        .post("/events")
        .token(ACME)
        .json(&json!({"payload": 3, "target_url": hook.url("/implicit"), "id": "e3"}))
        .send()
        .await
        .expect(202);
    server
        .put("/v1/endpoints/acme-0")
        .token(ACME)
        .json(&json!({"url": hook.url("/a2")}))
        .send()
        .await
        .expect(200);
    // The admin acting in acme is bound by the same limit.
    create(ADMIN, json!({"url": hook.url("/a"), "tenant": "acme"}))
        .send()
        .await
        .expect_error(409, None);

    // Other tenants and the untenanted scope have their own room.
    for i in 0..3 {
        create(GLOBEX, json!({"url": hook.url("/g")}))
            .send()
            .await
            .expect(201);
        create(
            ADMIN,
            json!({"id": format!("global-{i}"), "url": hook.url("/n")}),
        )
        .send()
        .await
        .expect(201);
    }
    let reply = create(ADMIN, json!({"url": hook.url("/n")})).send().await;
    assert_eq!(reply.expect_error(409, None), "too_many_endpoints");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("without a tenant"), "{message}");

    // Deleting one frees a place.
    server
        .delete("/v1/endpoints/acme-1")
        .token(ACME)
        .send()
        .await
        .expect(204);
    create(ACME, json!({"id": "acme-3", "url": hook.url("/a")}))
        .send()
        .await
        .expect(201);
    let acme = server
        .get("/v1/endpoints")
        .token(ACME)
        .send()
        .await
        .expect(200);
    assert_eq!(ids(&acme).len(), 3, "{acme}");
    let all = server
        .get("/v1/endpoints")
        .token(ADMIN)
        .send()
        .await
        .expect(200);
    assert_eq!(ids(&all).len(), 9, "{all}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_do_not_overshoot_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.limits.max_endpoints_per_tenant = 5;
    let server = std::sync::Arc::new(Server::start(s).await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            server
                .post("/v1/endpoints")
                .json(&json!({"url": format!("https://example.com/{i}"), "tenant": "busy"}))
                .send()
                .await
                .status
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let created = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, refused), (5, 35), "{statuses:?}");
    let list = server
        .get("/v1/endpoints?tenant=busy")
        .send()
        .await
        .expect(200);
    assert_eq!(ids(&list).len(), 5, "{list}");
    std::sync::Arc::into_inner(server).unwrap().stop().await;
}
