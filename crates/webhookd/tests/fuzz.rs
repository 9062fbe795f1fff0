//! Property tests of the HTTP API over outside input, in-process through the public
//! router (`App::router`, no sockets): arbitrary bytes and near-valid JSON as the
//! bodies of `POST /events`, `POST`/`PUT /v1/endpoints` and `POST /v1/dlq/replay`,
//! arbitrary strings as path ids and query values, arbitrary bearer tokens.
//!
//! The server must never panic nor answer 5xx (503 "try again" is documented); every
//! 4xx is the JSON error `{"error": {"code", "message", "field"?}}`, 422 names the
//! field, and a refused request changes nothing. The command-line parsers are checked
//! here too.

use std::{future::poll_fn, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use http_body_util::BodyExt as _;
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Value, json};
use tower_service::Service;
use webhookd::{App, Settings, cli};

/// Cases per property: each is one or a few requests against redb in a temp dir.
const CASES: u32 = 160;

/// A port nothing listens on: deliveries fail at once, locally.
const DEAD_URL: &str = "http://127.0.0.1:9/hook";

/// webhookd built on a temp dir, with its router and a runtime to drive it.
struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    app: Option<App>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(configure: impl FnOnce(&mut Settings)) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::new(dir.path());
        settings.allow_private_destinations = true;
        settings.max_body_bytes = 16 * 1024;
        settings.dispatcher.request_timeout = Duration::from_millis(500);
        configure(&mut settings);
        let app = runtime.block_on(App::build(settings)).unwrap();
        let router = app.router();
        Self {
            runtime,
            router,
            app: Some(app),
            _dir: dir,
        }
    }

    /// Sends one request; returns the status and the body.
    fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &[u8])],
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body)).unwrap();
        self.runtime.block_on(async {
            let mut router = self.router.clone();
            poll_fn(|cx| <Router as Service<Request<Body>>>::poll_ready(&mut router, cx))
                .await
                .unwrap();
            let response = router.call(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, bytes.to_vec())
        })
    }

    fn json(&self, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        self.send(
            method,
            uri,
            &[("content-type", b"application/json".as_slice())],
            body,
        )
    }

    fn endpoint_count(&self) -> usize {
        let (status, body) = self.send("GET", "/v1/endpoints", &[], Vec::new());
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["endpoints"].as_array().unwrap().len()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            self.runtime.block_on(app.shutdown());
        }
    }
}

/// The API's promise about any answer: no 5xx but 503, JSON errors for 4xx (naming the
/// field for 422), JSON for every other body. Returns the parsed body.
fn check_answer(what: &str, status: StatusCode, body: &[u8]) -> Result<Value, TestCaseError> {
    let text = String::from_utf8_lossy(body);
    prop_assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {status} {text}"
    );
    if body.is_empty() {
        prop_assert!(
            status == StatusCode::NO_CONTENT,
            "{what}: {status} with no body"
        );
        return Ok(Value::Null);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TestCaseError::fail(format!("{what}: {status} not JSON ({e}): {text}")))?;
    if status.is_client_error() || status.is_server_error() {
        prop_assert!(v["error"]["code"].is_string(), "{what}: {status} {text}");
        prop_assert!(v["error"]["message"].is_string(), "{what}: {status} {text}");
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            prop_assert!(v["error"]["field"].is_string(), "{what}: {status} {text}");
        }
    }
    Ok(v)
}

/// Percent-encodes every byte but the unreserved ones.
fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether webhookd takes `id` as an id: 1 to 256 of `A-Z a-z 0-9 - _ . : ~`.
fn id_like(id: &str) -> bool {
    (1..=256).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:~".contains(&b))
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Any JSON value, shallow.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Strings for URL fields: usually a dead local URL, sometimes junk or a private
/// address spelled oddly.
fn url_value() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => Just(json!(DEAD_URL)),
        1 => "(https?|ftp)://[a-z0-9.:\\[\\]@-]{0,20}(/.{0,8})?".prop_map(Value::from),
        1 => any::<String>().prop_map(Value::from),
        1 => json_value(),
    ]
    .boxed()
}

/// Strings for id fields: usually valid, sometimes anything.
fn id_value() -> BoxedStrategy<String> {
    prop_oneof![6 => "[A-Za-z0-9_.:~-]{1,24}", 1 => any::<String>(), 1 => "url_[a-f0-9]{0,8}"]
        .boxed()
}

/// Sometimes present (with probability `p`), usually right.
fn maybe<T: std::fmt::Debug>(
    p: f64,
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    proptest::option::weighted(p, s)
}

/// `POST /events` bodies: near-valid objects, each field usually right.
fn event_body() -> BoxedStrategy<Value> {
    (
        maybe(0.95, json_value()),
        maybe(0.8, url_value()),
        maybe(
            0.6,
            prop_oneof![
                6 => "[a-z]{1,8}\\.[a-z]{1,8}".prop_map(Value::from),
                1 => any::<String>().prop_map(Value::from),
                1 => json_value(),
            ],
        ),
        maybe(0.5, id_value().prop_map(Value::from)),
        maybe(
            0.1,
            prop_oneof!["[a-z]{1,8}".prop_map(Value::from), json_value()],
        ),
        maybe(0.05, ("[a-z_]{1,8}", json_value())),
    )
        .prop_map(|(payload, url, event_type, id, tenant, extra)| {
            let mut m = serde_json::Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            };
            put("payload", payload);
            put("target_url", url);
            put("event_type", event_type);
            put("id", id);
            put("tenant", tenant);
            if let Some((k, v)) = extra {
                put(&k, Some(v));
            }
            Value::Object(m)
        })
        .boxed()
}

/// A retry policy, valid or not (absurd delays included).
fn retry_value() -> BoxedStrategy<Value> {
    let duration = prop_oneof![
        6 => "[1-9][0-9]{0,2}(ms|s|m)",
        1 => "[0-9]{1,25}(ns|s|d)",
        1 => Just(format!("{}s", u64::MAX)),
        1 => ".{0,6}",
    ];
    prop_oneof![
        3 => (proptest::collection::vec(duration.clone(), 1..4), 1u32..20)
            .prop_map(|(d, n)| json!({"kind": "schedule", "delays": d, "max_attempts": n})),
        1 => (proptest::collection::vec(duration.clone(), 0..4), any::<u32>())
            .prop_map(|(d, n)| json!({"kind": "schedule", "delays": d, "max_attempts": n})),
        2 => (duration.clone(), duration, prop_oneof![Just(2.0), any::<f64>()]).prop_map(
            |(i, m, mul)| json!({"kind": "exponential", "initial": i, "max": m, "multiplier": mul})
        ),
        1 => json_value(),
    ]
    .boxed()
}

/// `POST`/`PUT /v1/endpoints` bodies: near-valid objects, each field usually right.
fn endpoint_body() -> BoxedStrategy<Value> {
    let first = (
        maybe(0.7, id_value().prop_map(Value::from)),
        prop_oneof![8 => url_value(), 1 => Just(Value::Null)],
        maybe(0.5, prop_oneof![4 => "[ -~]{1,20}".prop_map(Value::from), 1 => json_value()]),
        maybe(
            0.5,
            proptest::collection::vec(
                prop_oneof![6 => "[a-z]{1,6}(\\.\\*)?", 1 => "[a-z.*{}\\[\\]!?]{0,8}", 1 => ".{0,8}"],
                0..3
            )
            .prop_map(Value::from)
        ),
        maybe(0.3, retry_value()),
        maybe(
            0.3,
            proptest::collection::btree_map(
                prop_oneof![6 => "X-[A-Za-z]{1,8}", 1 => ".{0,8}"],
                prop_oneof![6 => "[ -~]{0,10}", 1 => ".{0,10}"],
                0..3
            )
            .prop_map(|m| json!(m))
        ),
    )
        .boxed();
    let second = (
        maybe(
            0.3,
            prop_oneof![
                4 => "[1-9][0-9]{0,2}(ms|s)".prop_map(Value::from),
                1 => ".{0,8}".prop_map(Value::from),
            ]
        ),
        maybe(
            0.3,
            prop_oneof![
                Just(json!("body_only")),
                Just(json!("inline_timestamp")),
                Just(json!({"kind": "split_timestamp", "signature_header": "X-S", "timestamp_header": "X-T"})),
                (".{0,8}", ".{0,8}").prop_map(|(s, t)| json!({"kind": "split_timestamp", "signature_header": s, "timestamp_header": t})),
                json_value(),
            ]
        ),
        maybe(
            0.2,
            prop_oneof![
                4 => (1u32..50, "[1-9]00ms").prop_map(|(n, w)| json!({"max_events": n, "max_wait": w})),
                1 => (any::<u32>(), ".{0,6}").prop_map(|(n, w)| json!({"max_events": n, "max_wait": w})),
            ]
        ),
        maybe(
            0.2,
            prop_oneof![
                4 => "[1-9][0-9]?s".prop_map(|t| json!({"open_timeout": t})),
                1 => json_value().prop_map(|v| json!({"open_timeout": v})),
            ]
        ),
        maybe(0.05, ("[a-z_]{1,10}", json_value())),
    )
        .boxed();
    (first, second)
        .prop_map(
            |(
                (id, url, secret, globs, retry, headers),
                (timeout, scheme, batching, breaker, extra),
            )| {
                let mut m = serde_json::Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        m.insert(k.to_owned(), v);
                    }
                };
                put("id", id);
                put("url", Some(url));
                put("secret", secret);
                put("event_types", globs);
                put("retry_policy", retry);
                put("headers", headers);
                put("timeout", timeout);
                put("signature_scheme", scheme);
                put("batching", batching);
                put("circuit_breaker", breaker);
                if let Some((k, v)) = extra {
                    put(&k, Some(v));
                }
                Value::Object(m)
            },
        )
        .boxed()
}

/// A body: arbitrary bytes, the JSON of `near_valid`, or that JSON cut or corrupted.
fn body(near_valid: BoxedStrategy<Value>) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        4 => near_valid.clone().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => (near_valid, any::<prop::sample::Index>(), any::<u8>(), any::<bool>()).prop_map(
            |(v, at, byte, cut)| {
                let mut bytes = serde_json::to_vec(&v).unwrap();
                let i = at.index(bytes.len() + 1);
                if cut {
                    bytes.truncate(i);
                } else {
                    bytes.insert(i, byte);
                }
                bytes
            }
        ),
    ]
    .boxed()
}

fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        6 => Just(Some(b"application/json".to_vec())),
        1 => Just(Some(b"Application/JSON; charset=utf-8".to_vec())),
        1 => Just(Some(b"text/plain".to_vec())),
        1 => Just(None),
        1 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(Some),
    ]
}

#[test]
fn event_bodies_never_fail_the_server() {
    let h = Harness::new(|_| {});
    let strategy = (body(event_body()), content_type());
    runner()
        .run(&strategy, |(body, content_type)| {
            let headers: Vec<(&str, &[u8])> = content_type
                .as_deref()
                .map(|ct| vec![("content-type", ct)])
                .unwrap_or_default();
            // A header value the http crate refuses cannot be sent at all.
            if content_type
                .as_deref()
                .is_some_and(|ct| axum::http::HeaderValue::from_bytes(ct).is_err())
            {
                return Ok(());
            }
            let (status, reply) = h.send("POST", "/events", &headers, body.clone());
            let v = check_answer("POST /events", status, &reply)?;
            if status == StatusCode::ACCEPTED {
                prop_assert_eq!(&v["status"], "accepted");
                let id = v["id"].as_str().unwrap_or_default();
                prop_assert!(id_like(id), "accepted id {id:?}");
                // The event is stored and readable by its id (in its tenant).
                let tenant = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|b| {
                        b["tenant"]
                            .as_str()
                            .map(|t| format!("?tenant={}", encode(t)))
                    })
                    .unwrap_or_default();
                let uri = format!("/events/{}{tenant}", encode(id));
                let (status, reply) = h.send("GET", &uri, &[], Vec::new());
                let event = check_answer("GET /events/{id}", status, &reply)?;
                prop_assert_eq!(status, StatusCode::OK);
                prop_assert_eq!(event["id"].as_str(), Some(id));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn endpoint_bodies_never_fail_the_server_and_refusals_change_nothing() {
    let h = Harness::new(|_| {});
    // One endpoint to PUT over.
    let (status, reply) = h.json(
        "POST",
        "/v1/endpoints",
        serde_json::to_vec(&json!({"id": "target", "url": DEAD_URL})).unwrap(),
    );
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let strategy = (body(endpoint_body()), any::<bool>(), any::<bool>());
    runner()
        .run(&strategy, |(mut body, put, keep_id)| {
            // A PUT body's id must match the path: mostly leave it out.
            if put
                && !keep_id
                && let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&body)
            {
                m.remove("id");
                body = serde_json::to_vec(&m).unwrap();
            }
            let before = h.endpoint_count();
            let (method, uri) = if put {
                ("PUT", "/v1/endpoints/target")
            } else {
                ("POST", "/v1/endpoints")
            };
            let (status, reply) = h.json(method, uri, body);
            let v = check_answer(&format!("{method} {uri}"), status, &reply)?;
            let after = h.endpoint_count();
            match status {
                StatusCode::CREATED => {
                    prop_assert_eq!(after, before + 1);
                    let id = v["id"].as_str().unwrap_or_default();
                    prop_assert!(id_like(id), "created id {id:?}");
                    prop_assert!(v["secret"].is_string());
                    // Readable by its id, percent-encoded or not.
                    let (status, reply) = h.send(
                        "GET",
                        &format!("/v1/endpoints/{}", encode(id)),
                        &[],
                        Vec::new(),
                    );
                    let got = check_answer("GET /v1/endpoints/{id}", status, &reply)?;
                    prop_assert_eq!(status, StatusCode::OK);
                    prop_assert_eq!(got["id"].as_str(), Some(id));
                    prop_assert!(got.get("secret").is_none(), "secret shown: {got}");
                }
                StatusCode::OK => {
                    prop_assert!(put);
                    prop_assert_eq!(after, before);
                    prop_assert_eq!(v["id"].as_str(), Some("target"));
                }
                _ => prop_assert_eq!(
                    after,
                    before,
                    "refused with {} but changed the endpoints",
                    status
                ),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn path_ids_and_queries_never_fail_the_server() {
    let h = Harness::new(|_| {});
    let (status, _) = h.json(
        "POST",
        "/v1/endpoints",
        serde_json::to_vec(&json!({"id": "known:ep~1", "url": DEAD_URL})).unwrap(),
    );
    assert_eq!(status, StatusCode::CREATED);
    let strategy = (
        prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_.:~-]{1,20}",
            Just("known:ep~1".to_owned()),
            ".{250,260}"
        ],
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        0usize..7,
    );
    runner()
        .run(&strategy, |(id, other, body, route)| {
            let a = encode(&id);
            let b = encode(&other);
            let (method, uri) = match route {
                0 => ("GET", format!("/events/{a}")),
                1 => ("GET", format!("/v1/endpoints/{a}")),
                2 => ("PUT", format!("/v1/endpoints/{a}")),
                3 => ("POST", format!("/v1/dlq/replay/{a}/{b}")),
                4 => ("POST", format!("/v1/dlq/replay?tenant={a}")),
                5 => ("GET", format!("/v1/dlq?endpoint_id={a}&limit={b}")),
                _ => ("GET", format!("/events/{a}?{b}={a}")),
            };
            let (status, reply) = h.json(method, &uri, body);
            let v = check_answer(&format!("{method} {uri}"), status, &reply)?;
            // An id that cannot exist is not found, whatever it looks like.
            if matches!(route, 0 | 1) && id != "known:ep~1" {
                prop_assert_eq!(status, StatusCode::NOT_FOUND, "{}", v);
            }
            if route == 1 && id == "known:ep~1" {
                prop_assert_eq!(status, StatusCode::OK);
            }
            if route == 3 {
                prop_assert_eq!(status, StatusCode::NOT_FOUND, "{}", v);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(h.endpoint_count(), 1);
}

/// Found by `cargo fuzz run webhookd_api`: a path id that percent-decodes to bytes that
/// are not UTF-8 (`GET /events/%FF`) used to get axum's plain-text 400 instead of the
/// API's JSON error.
#[test]
fn non_utf8_path_ids_get_json_errors() {
    let h = Harness::new(|_| {});
    let strategy = (proptest::collection::vec(any::<u8>(), 1..20), 0usize..4);
    runner()
        .run(&strategy, |(raw, route)| {
            let a: String = raw.iter().map(|b| format!("%{b:02X}")).collect();
            let (method, uri) = match route {
                0 => ("GET", format!("/events/{a}")),
                1 => ("GET", format!("/v1/endpoints/{a}")),
                2 => ("DELETE", format!("/v1/endpoints/{a}")),
                _ => ("POST", format!("/v1/dlq/replay/{a}/{a}")),
            };
            let (status, reply) = h.json(method, &uri, Vec::new());
            check_answer(&format!("{method} {uri}"), status, &reply)?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_tokens_are_refused_with_json() {
    let h = Harness::new(|s| s.api_token = Some("the-admin-token".into()));
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..60),
        prop_oneof![Just("/v1/endpoints"), Just("/v1/dlq"), Just("/events/x")],
    );
    runner()
        .run(&strategy, |(token, path)| {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(&token);
            let headers: Vec<(&str, &[u8])> = if axum::http::HeaderValue::from_bytes(&value).is_ok()
            {
                vec![("authorization", value.as_slice())]
            } else {
                Vec::new()
            };
            let (status, reply) = h.send("GET", path, &headers, Vec::new());
            check_answer(path, status, &reply)?;
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
            Ok(())
        })
        .unwrap();
    let (status, _) = h.send(
        "GET",
        "/v1/endpoints",
        &[("authorization", b"Bearer the-admin-token".as_slice())],
        Vec::new(),
    );
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn cli_parsers_accept_or_refuse_cleanly() {
    // Found by this test: below a nanosecond used to round to zero.
    assert!(cli::parse_seconds(".1e-10").is_err());
    let strategy = (
        prop_oneof![
            any::<String>(),
            "[+-]?[0-9]{0,30}(\\.[0-9]{0,10})?(e[+-]?[0-9]{1,4})?",
            Just("inf".to_owned()),
            Just("NaN".to_owned())
        ],
        prop_oneof![any::<String>(), "[A-Za-z0-9_.:~-]{0,10}=.{0,10}"],
    );
    runner()
        .run(&strategy, |(number, pair)| {
            if let Ok(d) = cli::parse_seconds(&number) {
                // Documented: "a positive number of seconds", so never zero (values
                // below a nanosecond used to round to zero).
                prop_assert!(!d.is_zero(), "{number:?} gave zero");
            }
            if let Ok(d) = cli::parse_seconds_or_zero(&number) {
                prop_assert!(cli::parse_seconds(&number).is_ok() || d.is_zero());
            }
            if let Ok(rate) = cli::parse_rate(&number) {
                prop_assert!((0.0..=1.0).contains(&rate));
            }
            match cli::parse_tenant_token(&pair) {
                Ok(t) => {
                    prop_assert!(id_like(t.tenant.as_str()));
                    prop_assert!(!t.token.is_empty());
                    // Whitespace around the token is dropped (a header cannot carry it).
                    prop_assert_eq!(t.token.trim(), t.token.as_str());
                    prop_assert!(pair.trim_end().ends_with(&t.token));
                }
                Err(message) => prop_assert!(!message.is_empty()),
            }
            Ok(())
        })
        .unwrap();
}
