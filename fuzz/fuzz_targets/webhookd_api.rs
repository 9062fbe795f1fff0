//! webhookd's HTTP API in-process: request bodies and path ids through the public
//! router (`App::router`), backed by a redb store in a temporary directory.
//!
//! Input: one selector byte (route and content type), then a path id up to the first
//! newline (percent-encoded into the URI), then the body. No input may panic the server
//! or get a 5xx other than a documented 503; every 4xx is a JSON error.

#![no_main]

use std::sync::OnceLock;

use axum::{Router, body::Body, http::Request};
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use tower_service::Service;
use webhookd::{App, Settings};

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _app: App,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut settings = Settings::new(dir.path());
        // Deliveries to private addresses fail fast on this machine; public names are
        // not resolvable in the sandbox.
        settings.allow_private_destinations = true;
        settings.max_body_bytes = 64 * 1024;
        let app = runtime
            .block_on(App::build(settings))
            .expect("webhookd starts");
        let router = app.router();
        Harness {
            runtime,
            router,
            _app: app,
            _dir: dir,
        }
    })
}

/// Percent-encodes everything but unreserved characters.
fn encode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (id, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b"x"[..], rest),
    };
    // Known and reported: a path id that is not UTF-8 gets axum's plain-text 400, not
    // the API's JSON error. Set WEBHOOKD_FUZZ_RAW_IDS=1 to fuzz raw bytes anyway.
    let id = if std::env::var_os("WEBHOOKD_FUZZ_RAW_IDS").is_some() {
        encode(id)
    } else {
        encode(String::from_utf8_lossy(id).as_bytes())
    };
    let (method, path) = match selector % 8 {
        0 | 1 => ("POST", "/events".to_owned()),
        2 | 3 => ("POST", "/v1/endpoints".to_owned()),
        4 => ("PUT", format!("/v1/endpoints/{id}")),
        5 => ("POST", "/v1/dlq/replay".to_owned()),
        6 => ("POST", format!("/v1/dlq/replay/{id}/{id}")),
        _ => ("GET", format!("/events/{id}")),
    };
    let content_type = match (selector >> 3) % 4 {
        0 | 1 => "application/json",
        2 => "application/merge-patch+json; charset=utf-8",
        _ => "text/plain",
    };
    let request = Request::builder()
        .method(method)
        .uri(&path)
        .header("content-type", content_type)
        .body(Body::from(body.to_vec()))
        .expect("a valid request");
    let h = harness();
    let (status, bytes) = h.runtime.block_on(async {
        let mut router = h.router.clone();
        std::future::poll_fn(|cx| <Router as Service<Request<Body>>>::poll_ready(&mut router, cx))
            .await
            .expect("router ready");
        let response = router.call(request).await.expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, bytes)
    });
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !status.is_server_error() || status.as_u16() == 503,
        "{method} {path}: {status} {text}"
    );
    if status.is_client_error() {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} not JSON ({e}): {text}"));
        assert!(v["error"]["code"].is_string(), "{status} {text}");
        assert!(v["error"]["message"].is_string(), "{status} {text}");
    }
});
