//! Shared test support: an in-process webhookd, a mock receiver, and an HTTP client.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    future::Future,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header::HeaderMap};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use webhook_core::{CircuitBreakerConfig, Store};
use webhookd::{
    App, Settings,
    mock::{MockConfig, MockReceiver},
    settings::retry_policy,
};

/// Settings for tests: redb in `dir`, private destinations allowed, fast polling and
/// retries, short timeouts.
pub fn settings(dir: &Path) -> Settings {
    let mut s = Settings::new(dir);
    s.allow_private_destinations = true;
    s.dispatcher.poll_interval = Duration::from_millis(50);
    s.dispatcher.request_timeout = Duration::from_secs(2);
    s.dispatcher.shutdown_timeout = Duration::from_secs(1);
    s.dispatcher.default_retry_policy = retry_policy(Some(Duration::from_millis(50)), Some(5));
    s.dispatcher.default_circuit_breaker = CircuitBreakerConfig {
        open_timeout: Duration::from_millis(100),
        ..CircuitBreakerConfig::default()
    };
    s
}

/// webhookd served in this process on 127.0.0.1:0.
pub struct Server {
    pub addr: SocketAddr,
    store: Weak<dyn Store>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(settings: Settings) -> Self {
        // A store released a moment ago may still be closing its file: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        let app = loop {
            match Box::pin(App::build(settings.clone())).await {
                Ok(app) => break app,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("webhookd did not start yet: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("webhookd does not start: {e}"),
            }
        };
        let store = Arc::downgrade(app.dispatcher().store());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A handle on a server running elsewhere (another process).
    pub fn attach(addr: &str) -> Self {
        let store: Weak<dyn Store> = Weak::<webhook_core::MemoryStore>::new();
        Self {
            addr: addr.parse().unwrap(),
            store,
            stop: None,
            task: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.wait_released().await;
    }

    /// Abrupt stop, as a crash: nothing is flushed or released.
    pub async fn crash(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.wait_released().await;
    }

    /// Waits until nothing holds the store any more (its file can be opened again).
    async fn wait_released(&self) {
        wait_for(
            "the store to be released",
            Duration::from_secs(30),
            || async { self.store.upgrade().is_none() },
        )
        .await;
    }

    pub fn get(&self, path: &str) -> Call {
        Call::new(Method::GET, self.url(path))
    }

    pub fn post(&self, path: &str) -> Call {
        Call::new(Method::POST, self.url(path))
    }

    pub fn put(&self, path: &str) -> Call {
        Call::new(Method::PUT, self.url(path))
    }

    pub fn delete(&self, path: &str) -> Call {
        Call::new(Method::DELETE, self.url(path))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One HTTP request being built.
pub struct Call {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// An HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text()
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an API error with this status (and field, for 422) and returns its code.
    #[track_caller]
    pub fn expect_error(&self, status: u16, field: Option<&str>) -> String {
        let v = self.expect(status);
        let error = &v["error"];
        assert!(error["message"].is_string(), "no message: {v}");
        assert_eq!(error["field"].as_str(), field, "wrong field: {v}");
        error["code"].as_str().unwrap().to_owned()
    }
}

impl Call {
    pub fn new(method: Method, url: String) -> Self {
        Self {
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn token(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn json(self, value: &Value) -> Self {
        self.raw("application/json", serde_json::to_vec(value).unwrap())
    }

    pub fn raw(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.headers
            .push(("content-type".to_owned(), content_type.to_owned()));
        self.body = body.into();
        self
    }

    pub async fn send(self) -> Reply {
        // No pooled connections: nothing keeps a stopped server's connections open.
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        let mut request = Request::builder().method(self.method).uri(&self.url);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(self.body)).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
            .await
            .expect("request timed out")
            .expect("request failed");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// A quiet mock receiver that answers 200 at once unless told otherwise.
pub async fn receiver(config: MockConfig) -> MockReceiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    MockReceiver::start(config, listener).unwrap()
}

/// A config that always answers 200 at once, verifying with `secret` if given.
pub fn healthy(secret: Option<&str>) -> MockConfig {
    MockConfig {
        failure_rate: 0.0,
        hang_rate: 0.0,
        max_delay: Duration::ZERO,
        secret: secret.map(str::to_owned),
        log_requests: false,
        ..MockConfig::default()
    }
}

/// Polls `check` until it is true; panics after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the event's overall status is `status`; returns the event.
pub async fn wait_status(server: &Server, token: Option<&str>, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut call = server.get(&format!("/events/{id}"));
        if let Some(t) = token {
            call = call.token(t);
        }
        let reply = call.send().await;
        if reply.status == StatusCode::OK {
            last = reply.json();
            if last["status"] == status {
                return last;
            }
        }
        assert!(
            Instant::now() < deadline,
            "event {id} did not become {status}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An unused local port (bound then released).
pub async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// The URL of a test server from `var`; `None` (the test skips) outside CI when unset.
/// Under CI a missing URL fails the test: nothing is skipped there.
pub fn store_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} must be set under CI (cargo xtask ci sets it)"
            );
            eprintln!("skipped: set {var} to run this test");
            None
        }
    }
}

/// A store namespace (PostgreSQL schema, Redis prefix) no other test uses.
pub fn namespace(kind: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("webhookd_test_{kind}_{}_{nanos}", std::process::id())
}

/// Waits for `child` to exit; kills it and fails the test after `within`.
pub fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
