//! The HTTP API, in-process on 127.0.0.1:0 with a temporary redb store: every route,
//! every error status (and that errors write nothing), tenant isolation, secrets, the
//! SSRF guard, and the OpenAPI document against the router.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{Server, free_port, healthy, receiver, settings, wait_status};
use serde_json::{Value, json};
use webhookd::{mock::MockConfig, routes::ROUTES};

const ADMIN: &str = "admin-token-123";
const ACME: &str = "acme-token-456";
const GLOBEX: &str = "globex-token-789";

async fn secured(dir: &std::path::Path) -> Server {
    let mut s = settings(dir);
    s.api_token = Some(ADMIN.into());
    s.tenant_tokens = vec![
        ("acme".into(), ACME.into()),
        ("globex".into(), GLOBEX.into()),
    ];
    Server::start(s).await
}

fn count(v: &Value, key: &str) -> usize {
    v[key].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn events_route_by_target_url_by_event_type_and_to_the_default_target() {
    let dir = tempfile::tempdir().unwrap();
    let subscribed = receiver(healthy(None)).await;
    let direct = receiver(healthy(Some("seed-secret"))).await;
    let default = receiver(healthy(Some("seed-secret"))).await;
    let mut s = settings(dir.path());
    s.webhook_secret = Some("seed-secret".into());
    s.target_url = Some(default.url("/webhook"));
    let server = Server::start(s).await;

    // An endpoint subscribed to order.*.
    let ep = server
        .post("/v1/endpoints")
        .json(&json!({"url": subscribed.url("/hooks"), "event_types": ["order.*"]}))
        .send()
        .await
        .expect(201);
    let ep_id = ep["id"].as_str().unwrap().to_owned();

    // By event type.
    let accepted = server
        .post("/events")
        .json(&json!({"payload": {"n": 1}, "event_type": "order.created"}))
        .send()
        .await
        .expect(202);
    assert_eq!(accepted["status"], "accepted");
    let id = accepted["id"].as_str().unwrap();
    let event = wait_status(&server, None, id, "delivered").await;
    assert_eq!(event["payload"], json!({"n": 1}));
    assert_eq!(event["event_type"], "order.created");
    assert_eq!(event["attempt_count"], 1);
    let delivery = &event["deliveries"][0];
    assert_eq!(delivery["endpoint_id"], ep_id.as_str());
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempt_count"], 1);
    assert_eq!(delivery["last_status_code"], 200);
    assert_eq!(delivery["attempts"][0]["status"], 200);
    assert!(delivery["attempts"][0]["duration_ms"].is_u64());
    assert!(delivery["attempts"][0]["started_at"].is_string());
    assert_eq!(subscribed.stats().counts().succeeded, 1);

    // By target_url (seed 003), with a chosen id, signed with WEBHOOK_SECRET.
    let accepted = server
        .post("/events")
        .json(
            &json!({"payload": [1, 2], "target_url": direct.url("/webhook"), "id": "evt-direct-1"}),
        )
        .send()
        .await
        .expect(202);
    assert_eq!(accepted["id"], "evt-direct-1");
    let event = wait_status(&server, None, "evt-direct-1", "delivered").await;
    assert!(
        event["deliveries"][0]["endpoint_id"]
            .as_str()
            .unwrap()
            .starts_with("url_")
    );
    assert_eq!(direct.stats().counts().succeeded, 1);
    assert_eq!(direct.stats().counts().bad_signature, 0);
    // The same id again is accepted and not delivered twice.
    server
        .post("/events")
        .json(
            &json!({"payload": [1, 2], "target_url": direct.url("/webhook"), "id": "evt-direct-1"}),
        )
        .send()
        .await
        .expect(202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(direct.stats().counts().requests, 1);

    // No target and no subscriber: the default target.
    let accepted = server
        .post("/events")
        .json(&json!({"payload": "hello", "event_type": "user.created"}))
        .send()
        .await
        .expect(202);
    wait_status(&server, None, accepted["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(default.stats().counts().succeeded, 1);
    // Implicit endpoints only get what is addressed to them.
    assert_eq!(subscribed.stats().counts().requests, 1);

    // Implicit endpoints are listed like any other.
    let list = server.get("/v1/endpoints").send().await.expect(200);
    assert_eq!(count(&list, "endpoints"), 3);
    server.stop().await;
}

#[tokio::test]
async fn without_any_target_the_event_is_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(settings(dir.path())).await;
    server
        .post("/events")
        .json(&json!({"payload": {}, "id": "orphan", "event_type": "x"}))
        .send()
        .await
        .expect_error(422, Some("target_url"));
    server.get("/events/orphan").send().await.expect(404);
    server.stop().await;
}

#[tokio::test]
async fn endpoint_crud_shows_the_secret_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(settings(dir.path())).await;

    let created = server
        .post("/v1/endpoints")
        .json(&json!({
            "url": "https://example.com/hook",
            "event_types": ["user.*"],
            "rate_limit": {"rate_per_sec": 10, "burst": 20},
            "retry_policy": {"kind": "schedule", "delays": ["1s", "5s"], "max_attempts": 3},
            "headers": {"X-Team": "billing"},
            "timeout": "5s",
            "enabled": true,
            "batching": {"max_events": 10, "max_wait": "100ms"},
            "ordering": "strict",
            "signature_scheme": "body_only",
            "max_in_flight": 4
        }))
        .send()
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ep_"), "{id}");
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created["ordering"], "strict");
    assert_eq!(created["timeout"], "5s");
    assert_eq!(created["signature_scheme"]["kind"], "body_only");
    assert_eq!(created["rate_limit"]["burst"], 20);
    assert_eq!(created["retry_policy"]["max_attempts"], 3);

    let got = server
        .get(&format!("/v1/endpoints/{id}"))
        .send()
        .await
        .expect(200);
    assert!(got.get("secret").is_none(), "{got}");
    assert!(!got.to_string().contains(secret));
    assert_eq!(got["has_secret"], true);
    assert_eq!(got["batching"]["max_wait"], "100ms");
    assert_eq!(got["headers"]["X-Team"], "billing");

    let list = server.get("/v1/endpoints").send().await.expect(200);
    assert_eq!(count(&list, "endpoints"), 1);
    assert!(!list.to_string().contains(secret));

    // A given id and secret.
    let given = server
        .post("/v1/endpoints")
        .json(
            &json!({"id": "orders", "url": "https://example.com/orders", "secret": "supersecret"}),
        )
        .send()
        .await
        .expect(201);
    assert_eq!(given["id"], "orders");
    assert_eq!(given["secret"], "supersecret");
    server
        .post("/v1/endpoints")
        .json(&json!({"id": "orders", "url": "https://example.com/other"}))
        .send()
        .await
        .expect_error(409, None);

    // Replace: fields left out take defaults, the secret is kept.
    let replaced = server
        .put(&format!("/v1/endpoints/{id}"))
        .json(&json!({"url": "https://example.com/v2", "enabled": false}))
        .send()
        .await
        .expect(200);
    assert_eq!(replaced["url"], "https://example.com/v2");
    assert_eq!(replaced["enabled"], false);
    assert_eq!(replaced["ordering"], "unordered");
    assert_eq!(replaced["has_secret"], true);
    assert!(replaced.get("secret").is_none());

    server
        .delete(&format!("/v1/endpoints/{id}"))
        .send()
        .await
        .expect(204);
    server
        .get(&format!("/v1/endpoints/{id}"))
        .send()
        .await
        .expect_error(404, None);
    server
        .delete(&format!("/v1/endpoints/{id}"))
        .send()
        .await
        .expect_error(404, None);
    let list = server.get("/v1/endpoints").send().await.expect(200);
    assert_eq!(count(&list, "endpoints"), 1);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_the_right_status_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_body_bytes = 4096;
    s.target_url = Some("https://example.com/default".into());
    let server = Server::start(s).await;
    let ok_endpoint = json!({"url": "https://example.com/hook"});

    // 400: malformed JSON, wrong content type, not an object.
    for path in ["/events", "/v1/endpoints"] {
        server
            .post(path)
            .raw("application/json", r#"{"payload": "#)
            .send()
            .await
            .expect_error(400, None);
        server
            .post(path)
            .raw("text/plain", serde_json::to_vec(&ok_endpoint).unwrap())
            .send()
            .await
            .expect_error(400, None);
        server
            .post(path)
            .raw("application/x-www-form-urlencoded", "payload=1")
            .send()
            .await
            .expect_error(400, None);
        server
            .post(path)
            .raw("application/json", "[1]")
            .send()
            .await
            .expect_error(400, None);
    }

    // 413: over --max-body-bytes.
    let big = json!({"payload": "x".repeat(5000)});
    let code = server
        .post("/events")
        .json(&big)
        .send()
        .await
        .expect_error(413, None);
    assert_eq!(code, "payload_too_large");
    server
        .post("/v1/endpoints")
        .json(&json!({"url": "https://example.com/hook", "headers": {"X-Big": "y".repeat(5000)}}))
        .send()
        .await
        .expect_error(413, None);

    // 422 naming the field.
    let cases = [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (
            json!({"url": "https://example.com", "event_types": ["user.["]}),
            "event_types",
        ),
        (
            json!({"url": "https://example.com", "retry_policy": {"kind": "schedule", "delays": ["5x"], "max_attempts": 2}}),
            "retry_policy",
        ),
        (
            json!({"url": "https://example.com", "retry_policy": {"kind": "schedule", "delays": [], "max_attempts": 2}}),
            "retry_policy.schedule",
        ),
        (
            json!({"url": "https://example.com", "retry_policy": {"kind": "exponential", "initial": "0s"}}),
            "retry_policy.initial",
        ),
        (json!({"url": "https://example.com", "urll": "x"}), "urll"),
        (
            json!({"url": "https://example.com", "rate_limit": {"rate_per_sec": 1, "burst": 0}}),
            "rate_limit.burst",
        ),
        (
            json!({"url": "https://example.com", "rate_limit": {"rate": 1, "burst": 1}}),
            "rate_limit.rate",
        ),
        (
            json!({"url": "https://example.com", "timeout": "soon"}),
            "timeout",
        ),
        (
            json!({"url": "https://example.com", "batching": {"max_events": 10, "max_wait": "1s", "max_bytes": 9}}),
            "batching.max_bytes",
        ),
        (
            json!({"url": "https://example.com", "compression": {"encoding": "gzip", "min_size": 1, "level": 9}}),
            "compression.level",
        ),
        (
            json!({"url": "https://example.com", "headers": {"bad name": "v"}}),
            "headers",
        ),
        (
            json!({"url": "https://example.com", "ordering": "sorted"}),
            "ordering",
        ),
        (
            json!({"url": "https://example.com", "signature_scheme": "rot13"}),
            "signature_scheme",
        ),
        (
            json!({"url": "https://example.com", "max_in_flight": 0}),
            "max_in_flight",
        ),
        (
            json!({"url": "https://example.com", "enabled": "yes"}),
            "enabled",
        ),
        (json!({"url": "https://example.com", "id": "a/b"}), "id"),
        (
            json!({"url": "https://example.com", "id": "url_mine"}),
            "id",
        ),
        (
            json!({"url": "https://example.com", "tenant": ""}),
            "tenant",
        ),
        (json!({"event_types": ["*"]}), "url"),
    ];
    for (body, field) in cases {
        server
            .post("/v1/endpoints")
            .json(&body)
            .send()
            .await
            .expect_error(422, Some(field));
    }
    let event_cases = [
        (json!({"target_url": "https://example.com"}), "payload"),
        (
            json!({"payload": 1, "target": "https://example.com"}),
            "target",
        ),
        (
            json!({"payload": 1, "target_url": "gopher://x"}),
            "target_url",
        ),
        (json!({"payload": 1, "id": "has space"}), "id"),
        (json!({"payload": 1, "event_type": ""}), "event_type"),
        (json!({"payload": 1, "event_type": 5}), "event_type"),
    ];
    for (body, field) in event_cases {
        server
            .post("/events")
            .json(&body)
            .send()
            .await
            .expect_error(422, Some(field));
    }
    server
        .get("/v1/dlq?limit=0")
        .send()
        .await
        .expect_error(422, Some("limit"));
    server
        .get("/v1/dlq?limit=abc")
        .send()
        .await
        .expect_error(422, Some("limit"));
    server
        .get("/v1/dlq?colour=red")
        .send()
        .await
        .expect_error(422, Some("colour"));

    // 404: unknown ids.
    for reply in [
        server.get("/events/nope").send().await,
        server.get("/v1/endpoints/nope").send().await,
        server
            .put("/v1/endpoints/nope")
            .json(&ok_endpoint)
            .send()
            .await,
        server.delete("/v1/endpoints/nope").send().await,
        server.post("/v1/dlq/replay/evt/nope").send().await,
    ] {
        reply.expect_error(404, None);
    }
    // An unknown route and a wrong method are JSON errors too.
    server
        .get("/v2/nothing")
        .send()
        .await
        .expect_error(404, None);
    server
        .delete("/events")
        .send()
        .await
        .expect_error(405, None);

    // Nothing was written.
    let list = server.get("/v1/endpoints").send().await.expect(200);
    assert_eq!(count(&list, "endpoints"), 0, "{list}");
    let metrics = server.get("/metrics").send().await.text();
    assert!(
        metrics.contains("webhookd_deliveries_dispatched_total 0\n"),
        "{metrics}"
    );
    // And a valid request still works.
    server
        .post("/v1/endpoints")
        .json(&ok_endpoint)
        .send()
        .await
        .expect(201);
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured(dir.path()).await;
    let body = json!({"url": "https://example.com/hook"});

    // Public routes.
    assert_eq!(
        server.get("/healthz").send().await.expect(200),
        json!({"status": "ok"})
    );
    server.get("/openapi.json").send().await.expect(200);

    // 401 without a token, with a wrong one, or a malformed header.
    for (method, path) in ROUTES.iter().filter(|r| r.op.authenticated()).map(|r| {
        (
            r.method,
            r.path
                .replace("{id}", "x")
                .replace("{event_id}", "e")
                .replace("{endpoint_id}", "x"),
        )
    }) {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let url = server.url(&path);
        let call = || common::Call::new(method.clone(), url.clone()).json(&body);
        let reply = call().send().await;
        reply.expect_error(401, None);
        assert!(reply.headers.contains_key("www-authenticate"));
        call().token("wrong").send().await.expect_error(401, None);
        call()
            .header("authorization", &format!("Basic {ADMIN}"))
            .send()
            .await
            .expect_error(401, None);
    }
    // Nothing was written by the refused requests.
    let list = server
        .get("/v1/endpoints")
        .token(ADMIN)
        .send()
        .await
        .expect(200);
    assert_eq!(count(&list, "endpoints"), 0);
    // The admin token works; a tenant token may not read global metrics.
    server
        .post("/v1/endpoints")
        .token(ADMIN)
        .json(&body)
        .send()
        .await
        .expect(201);
    assert_eq!(server.get("/metrics").token(ADMIN).send().await.status, 200);
    server
        .get("/metrics")
        .token(ACME)
        .send()
        .await
        .expect_error(403, None);
    server.stop().await;
}

#[tokio::test]
async fn tenant_tokens_see_and_change_only_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured(dir.path()).await;
    let down = format!("http://127.0.0.1:{}/hook", free_port().await);

    // acme creates an endpoint: it gets acme's tenant; another tenant is refused.
    let ep = server
        .post("/v1/endpoints")
        .token(ACME)
        .json(&json!({
            "url": down,
            "event_types": ["invoice.*"],
            "retry_policy": {"kind": "schedule", "delays": ["10ms"], "max_attempts": 1}
        }))
        .send()
        .await
        .expect(201);
    assert_eq!(ep["tenant"], "acme");
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    server
        .post("/v1/endpoints")
        .token(ACME)
        .json(&json!({"url": "https://example.com", "tenant": "globex"}))
        .send()
        .await
        .expect_error(422, Some("tenant"));

    // globex cannot see, change or delete it.
    let path = format!("/v1/endpoints/{ep_id}");
    server
        .get(&path)
        .token(GLOBEX)
        .send()
        .await
        .expect_error(404, None);
    server
        .put(&path)
        .token(GLOBEX)
        .json(&json!({"url": "https://evil.example.com"}))
        .send()
        .await
        .expect_error(404, None);
    server
        .delete(&path)
        .token(GLOBEX)
        .send()
        .await
        .expect_error(404, None);
    let list = server
        .get("/v1/endpoints")
        .token(GLOBEX)
        .send()
        .await
        .expect(200);
    assert_eq!(count(&list, "endpoints"), 0);
    let list = server
        .get("/v1/endpoints?tenant=acme")
        .token(GLOBEX)
        .send()
        .await;
    list.expect_error(422, Some("tenant"));
    server.get(&path).token(ACME).send().await.expect(200);

    // acme's event: routed to acme's endpoint, invisible to globex.
    let accepted = server
        .post("/events")
        .token(ACME)
        .json(&json!({"payload": {"amount": 5}, "event_type": "invoice.paid", "id": "inv-1"}))
        .send()
        .await
        .expect(202);
    assert_eq!(accepted["id"], "inv-1");
    let event = wait_status(&server, Some(ACME), "inv-1", "dead").await;
    assert_eq!(event["tenant"], "acme");
    assert!(event["deliveries"][0]["last_error"].is_string());
    server
        .get("/events/inv-1")
        .token(GLOBEX)
        .send()
        .await
        .expect_error(404, None);
    // globex's own event with the same type reaches none of acme's endpoints.
    server
        .post("/events")
        .token(GLOBEX)
        .json(&json!({"payload": 1, "event_type": "invoice.paid"}))
        .send()
        .await
        .expect_error(422, Some("target_url"));
    // The admin sees it in acme's tenant.
    server
        .get("/events/inv-1?tenant=acme")
        .token(ADMIN)
        .send()
        .await
        .expect(200);

    // Dead letters are tenant-scoped too.
    let dlq = server.get("/v1/dlq").token(ACME).send().await.expect(200);
    assert_eq!(count(&dlq, "dead_letters"), 1);
    assert_eq!(dlq["dead_letters"][0]["endpoint_id"], ep_id.as_str());
    let dlq = server.get("/v1/dlq").token(GLOBEX).send().await.expect(200);
    assert_eq!(count(&dlq, "dead_letters"), 0);
    let replayed = server
        .post("/v1/dlq/replay")
        .token(GLOBEX)
        .send()
        .await
        .expect(200);
    assert_eq!(replayed["replayed"], 0);
    let one = format!("/v1/dlq/replay/inv-1/{ep_id}");
    server
        .post(&one)
        .token(GLOBEX)
        .send()
        .await
        .expect_error(404, None);
    let dlq = server.get("/v1/dlq").token(ADMIN).send().await.expect(200);
    assert_eq!(count(&dlq, "dead_letters"), 1, "still dead: {dlq}");
    let replayed = server.post(&one).token(ACME).send().await.expect(200);
    assert_eq!(replayed["replayed"], 1);
    server.stop().await;
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(settings(dir.path())).await;
    let down = format!("http://127.0.0.1:{}/hook", free_port().await);
    let once = json!({"kind": "schedule", "delays": ["10ms"], "max_attempts": 2});
    let ep = server
        .post("/v1/endpoints")
        .json(&json!({"id": "flaky", "url": down, "retry_policy": once}))
        .send()
        .await
        .expect(201);
    let secret = ep["secret"].as_str().unwrap().to_owned();
    for i in 0..3 {
        server
            .post("/events")
            .json(&json!({"payload": {"i": i}, "id": format!("e{i}"), "event_type": "t"}))
            .send()
            .await
            .expect(202);
    }
    for i in 0..3 {
        let event = wait_status(&server, None, &format!("e{i}"), "dead").await;
        let d = &event["deliveries"][0];
        assert_eq!(d["attempt_count"], 2);
        assert_eq!(count(d, "attempts"), 2);
        assert!(d["attempts"][1]["error"].is_string());
    }
    let dlq = server.get("/v1/dlq").send().await.expect(200);
    assert_eq!(count(&dlq, "dead_letters"), 3);
    let dlq = server
        .get("/v1/dlq?endpoint_id=flaky&limit=2")
        .send()
        .await
        .expect(200);
    assert_eq!(count(&dlq, "dead_letters"), 2);
    let dlq = server
        .get("/v1/dlq?endpoint_id=other")
        .send()
        .await
        .expect(200);
    assert_eq!(count(&dlq, "dead_letters"), 0);

    // Point the endpoint at a live receiver (the secret is kept), then replay.
    let live = receiver(healthy(Some(&secret))).await;
    server
        .put("/v1/endpoints/flaky")
        .json(&json!({"url": live.url("/hook"), "retry_policy": once}))
        .send()
        .await
        .expect(200);
    // Wait until the dispatcher has the new URL (it replaces its copy on PUT).
    server
        .post("/v1/dlq/replay/e0/flaky")
        .send()
        .await
        .expect(200);
    wait_status(&server, None, "e0", "delivered").await;
    server
        .post("/v1/dlq/replay/e0/flaky")
        .send()
        .await
        .expect_error(404, None);
    let replayed = server.post("/v1/dlq/replay").send().await.expect(200);
    assert_eq!(replayed["replayed"], 2);
    wait_status(&server, None, "e1", "delivered").await;
    wait_status(&server, None, "e2", "delivered").await;
    assert_eq!(live.stats().counts().bad_signature, 0);
    assert_eq!(live.stats().delivered().len(), 3);
    let dlq = server.get("/v1/dlq").send().await.expect(200);
    assert_eq!(count(&dlq, "dead_letters"), 0);

    let metrics = server.get("/metrics").send().await;
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text();
    for line in [
        "webhookd_deliveries_dispatched_total 3",
        "webhookd_deliveries_delivered_total 3",
        "webhookd_deliveries_dead_total 3",
        "webhookd_attempts_total 9",
        "# TYPE webhookd_in_flight gauge",
        "webhookd_delivery_latency_seconds{quantile=\"0.5\"}",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_ssrf_guard_is_on_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let target = receiver(healthy(None)).await;
    let mut s = settings(dir.path());
    s.allow_private_destinations = false;
    let server = Server::start(s).await;

    // IP-literal private hosts are refused when the endpoint is made.
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/hook",
    ] {
        server
            .post("/v1/endpoints")
            .json(&json!({"url": url}))
            .send()
            .await
            .expect_error(422, Some("url"));
        server
            .post("/events")
            .json(&json!({"payload": 1, "target_url": url}))
            .send()
            .await
            .expect_error(422, Some("target_url"));
    }
    // A host name is checked when resolved: localhost is accepted, but the delivery
    // is refused (a final failure: dead) and nothing reaches the receiver.
    let url = format!("http://localhost:{}/hook", target.addr().port());
    let accepted = server
        .post("/events")
        .json(&json!({"payload": 1, "target_url": url}))
        .send()
        .await
        .expect(202);
    let event = wait_status(&server, None, accepted["id"].as_str().unwrap(), "dead").await;
    let error = event["deliveries"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("refused"), "{error}");
    assert_eq!(target.stats().counts().requests, 0);
    server.stop().await;
}

#[tokio::test]
async fn openapi_describes_exactly_the_routes_of_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(settings(dir.path())).await;
    let doc = server.get("/openapi.json").send().await.expect(200);
    assert_eq!(doc["openapi"], "3.1.0");

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, routed);

    let mut ids = BTreeSet::new();
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method.to_lowercase()];
        assert!(ids.insert(op["operationId"].as_str().unwrap().to_owned()));
        assert!(op["summary"].is_string());
        assert!(op["responses"].as_object().is_some_and(|m| !m.is_empty()));
        // Statuses every such route can answer are documented.
        if op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"))
        {
            assert!(
                op["responses"]["422"].is_object(),
                "{} {} lacks 422",
                r.method,
                r.path
            );
        }
        if !matches!(r.path, "/healthz" | "/openapi.json" | "/metrics") {
            assert!(
                op["responses"]["503"].is_object(),
                "{} {} lacks 503",
                r.method,
                r.path
            );
        }
        for name in r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            assert!(
                op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path"),
                "{} {} lacks parameter {name}",
                r.method,
                r.path
            );
        }
        // Every $ref resolves.
        for reference in refs(op) {
            let name = reference.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling {reference}"
            );
        }

        // The router really serves it: not the unknown-route or wrong-method answer.
        let path = r
            .path
            .replace("{id}", "x")
            .replace("{event_id}", "e")
            .replace("{endpoint_id}", "x");
        let method = hyper::Method::from_bytes(r.method.as_bytes()).unwrap();
        let reply = common::Call::new(method, server.url(&path))
            .json(&json!({}))
            .send()
            .await;
        assert_ne!(reply.status.as_u16(), 405, "{} {}", r.method, r.path);
        if reply.status.as_u16() == 404 {
            assert_eq!(
                reply.json()["error"]["code"],
                "not_found",
                "{} {}",
                r.method,
                r.path
            );
        }
    }
    // A path not in the list is not routed.
    let reply = server.get("/v1/nothing").send().await;
    assert_eq!(reply.json()["error"]["code"], "route_not_found");
    server.stop().await;
}

fn refs(v: &Value) -> Vec<String> {
    match v {
        Value::Object(m) => m
            .iter()
            .flat_map(|(k, v)| {
                if k == "$ref" {
                    vec![v.as_str().unwrap().to_owned()]
                } else {
                    refs(v)
                }
            })
            .collect(),
        Value::Array(a) => a.iter().flat_map(refs).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn the_mock_receiver_refuses_bad_signatures() {
    let secret = webhook_sdk::generate_secret();
    let mock = receiver(MockConfig {
        secret: Some(secret.clone()),
        ..healthy(None)
    })
    .await;
    let body = br#"{"hello":"world"}"#;
    let unsigned = common::Call::new(hyper::Method::POST, mock.url("/webhook"))
        .raw("application/json", &body[..])
        .send()
        .await;
    assert_eq!(unsigned.status.as_u16(), 401);
    let key = webhook_sdk::SigningKey::new(secret.as_bytes());
    let now = chrono::Utc::now().timestamp();
    let mut call = common::Call::new(hyper::Method::POST, mock.url("/webhook"))
        .raw("application/json", &body[..]);
    for (name, value) in
        webhook_sdk::SignatureScheme::StandardWebhooks.sign(&key, "msg_1", now, body)
    {
        call = call.header(&name, &value);
    }
    assert_eq!(call.send().await.status.as_u16(), 200);
    let counts = mock.stats().counts();
    assert_eq!(
        (counts.requests, counts.bad_signature, counts.succeeded),
        (2, 1, 1)
    );
    assert_eq!(mock.stats().delivered().get("msg_1"), Some(&1));
}
