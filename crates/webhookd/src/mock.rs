//! `webhookd mock-receiver`: seed 003's chaotic receiver.
//!
//! For every request, on any path: verify the signature with `webhook-sdk` (401 when it
//! fails; skipped when no secret is configured), then hang with probability
//! `hang_rate`, else answer 500 with probability `failure_rate`, else 200 — each after
//! a random delay of up to `max_delay`. One JSON line per request goes to stdout.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use rand::Rng as _;
use serde_json::json;
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};
use webhook_sdk::{SignatureScheme, WebhookReceiver};

use crate::cli::MockArgs;

/// How the mock receiver behaves. `Debug` hides the secret.
#[derive(Clone)]
pub struct MockConfig {
    /// Fraction of (non-hanging) requests answered 500.
    pub failure_rate: f64,
    /// Fraction of requests that hang.
    pub hang_rate: f64,
    /// Most time to wait before answering.
    pub max_delay: Duration,
    /// How long a hanging request hangs (far longer than any client timeout).
    pub hang_for: Duration,
    /// Secret to verify with; `None` skips verification.
    pub secret: Option<String>,
    /// Scheme to verify.
    pub scheme: SignatureScheme,
    /// Print one JSON line per request on stdout.
    pub log_requests: bool,
}

impl std::fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockConfig")
            .field("failure_rate", &self.failure_rate)
            .field("hang_rate", &self.hang_rate)
            .field("max_delay", &self.max_delay)
            .field("hang_for", &self.hang_for)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("scheme", &self.scheme)
            .field("log_requests", &self.log_requests)
            .finish()
    }
}

impl Default for MockConfig {
    /// Seed 003's defaults: 70 % failures, 8 % hangs, up to 5 s delay, no secret.
    fn default() -> Self {
        Self {
            failure_rate: 0.7,
            hang_rate: 0.08,
            max_delay: Duration::from_secs(5),
            hang_for: Duration::from_secs(3600),
            secret: None,
            scheme: SignatureScheme::StandardWebhooks,
            log_requests: true,
        }
    }
}

impl From<&MockArgs> for MockConfig {
    fn from(args: &MockArgs) -> Self {
        Self {
            failure_rate: args.failure_rate,
            hang_rate: args.hang_rate,
            max_delay: args.max_delay,
            secret: args.secret.clone().filter(|s| !s.is_empty()),
            scheme: args.scheme.scheme(),
            ..Self::default()
        }
    }
}

/// What the receiver has seen so far.
#[derive(Debug, Default)]
pub struct MockStats {
    requests: AtomicU64,
    bad_signature: AtomicU64,
    hung: AtomicU64,
    failed: AtomicU64,
    succeeded: AtomicU64,
    /// `webhook-id` -> 200s answered for it.
    delivered: Mutex<HashMap<String, u32>>,
}

/// Counters of a [`MockStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MockCounts {
    /// Requests received.
    pub requests: u64,
    /// Requests refused with 401 (signature missing or wrong).
    pub bad_signature: u64,
    /// Requests left hanging.
    pub hung: u64,
    /// Requests answered 500.
    pub failed: u64,
    /// Requests answered 200.
    pub succeeded: u64,
}

impl MockStats {
    /// The counters now.
    pub fn counts(&self) -> MockCounts {
        MockCounts {
            requests: self.requests.load(Relaxed),
            bad_signature: self.bad_signature.load(Relaxed),
            hung: self.hung.load(Relaxed),
            failed: self.failed.load(Relaxed),
            succeeded: self.succeeded.load(Relaxed),
        }
    }

    /// How many 200s each `webhook-id` got.
    pub fn delivered(&self) -> HashMap<String, u32> {
        self.delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

struct MockState {
    config: MockConfig,
    receiver: Option<WebhookReceiver>,
    stats: Arc<MockStats>,
    /// Set when the receiver shuts down: hanging requests then end (503), so that a
    /// graceful shutdown does not wait out an hour-long hang.
    stopping: watch::Sender<bool>,
}

/// The receiver's router (every path, every method) and its statistics.
pub fn router(config: MockConfig) -> (Router, Arc<MockStats>) {
    let (router, state) = build(config);
    (router, state.stats.clone())
}

/// Serves `router` on `listener` until `shutdown` completes; hanging requests end then.
async fn serve(
    listener: TcpListener,
    router: Router,
    state: Arc<MockState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            state.stopping.send_replace(true);
        })
        .await
}

fn build(config: MockConfig) -> (Router, Arc<MockState>) {
    let stats = Arc::new(MockStats::default());
    let receiver = config
        .secret
        .as_deref()
        .map(|s| WebhookReceiver::new(s).with_scheme(config.scheme.clone()));
    let state = Arc::new(MockState {
        config,
        receiver,
        stats,
        stopping: watch::Sender::new(false),
    });
    let router = Router::new()
        .fallback(receive)
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(state.clone());
    (router, state)
}

#[derive(Clone, Copy)]
enum Fate {
    Hang,
    Fail,
    Succeed,
}

async fn receive(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stats = &state.stats;
    stats.requests.fetch_add(1, Relaxed);
    let webhook_id = headers
        .get(webhook_sdk::headers::WEBHOOK_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let signature = match &state.receiver {
        None => Ok("unchecked"),
        Some(receiver) => {
            let pairs: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect();
            receiver
                .verify_signature(&pairs, &body)
                .map(|_| "valid")
                .map_err(|e| e.to_string())
        }
    };
    let log = |outcome: &str, status: Option<u16>, delay: Duration, detail: Option<&str>| {
        if state.config.log_requests {
            let line = json!({
                "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "webhook_id": webhook_id,
                "method": method.as_str(),
                "path": uri.path(),
                "signature": if status == Some(401) { "invalid" } else { signature.as_deref().unwrap_or("invalid") },
                "outcome": outcome,
                "status": status,
                "delay_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "detail": detail,
            });
            println!("{line}");
        }
    };
    if let Err(reason) = &signature {
        stats.bad_signature.fetch_add(1, Relaxed);
        log("bad_signature", Some(401), Duration::ZERO, Some(reason));
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": format!("signature verification failed: {reason}")})),
        )
            .into_response();
    }
    let (fate, delay) = {
        let mut rng = rand::rng();
        let fate = if rng.random::<f64>() < state.config.hang_rate {
            Fate::Hang
        } else if rng.random::<f64>() < state.config.failure_rate {
            Fate::Fail
        } else {
            Fate::Succeed
        };
        let max = state.config.max_delay.as_secs_f64();
        let delay = if max > 0.0 {
            Duration::from_secs_f64(rng.random_range(0.0..=max))
        } else {
            Duration::ZERO
        };
        (fate, delay)
    };
    match fate {
        Fate::Hang => {
            stats.hung.fetch_add(1, Relaxed);
            log("hang", None, state.config.hang_for, None);
            let mut stopping = state.stopping.subscribe();
            tokio::select! {
                () = tokio::time::sleep(state.config.hang_for) => {
                    StatusCode::GATEWAY_TIMEOUT.into_response()
                }
                _ = stopping.wait_for(|stopping| *stopping) => {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                }
            }
        }
        // Logged once answered: a client that gave up during the delay got nothing
        // (the request is then dropped, and logged as such).
        Fate::Fail => {
            let gone = OnDrop(Some(|| log("client_gone", None, delay, None)));
            tokio::time::sleep(delay).await;
            gone.disarm();
            log("fail", Some(500), delay, None);
            stats.failed.fetch_add(1, Relaxed);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "simulated failure"})),
            )
                .into_response()
        }
        Fate::Succeed => {
            let gone = OnDrop(Some(|| log("client_gone", None, delay, None)));
            tokio::time::sleep(delay).await;
            gone.disarm();
            log("ok", Some(200), delay, None);
            stats.succeeded.fetch_add(1, Relaxed);
            *stats
                .delivered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(webhook_id.clone())
                .or_default() += 1;
            (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
        }
    }
}

/// Runs its closure when dropped, unless disarmed.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnDrop<F> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Serves the mock receiver on `listener` until `shutdown` completes.
///
/// # Errors
/// When the listener fails.
pub async fn run<F>(config: MockConfig, listener: TcpListener, shutdown: F) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        failure_rate = config.failure_rate,
        hang_rate = config.hang_rate,
        max_delay_ms = u64::try_from(config.max_delay.as_millis()).unwrap_or(u64::MAX),
        verify = config.secret.is_some(),
        "mock receiver listening"
    );
    let (router, state) = build(config);
    serve(listener, router, state, shutdown).await
}

/// A mock receiver running in the background (for tests and embedding).
#[derive(Debug)]
pub struct MockReceiver {
    addr: SocketAddr,
    stats: Arc<MockStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl MockReceiver {
    /// Starts serving on `listener`.
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn start(config: MockConfig, listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (router, state) = build(config);
        let stats = state.stats.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            let _ = serve(listener, router, state, stopped).await;
        });
        Ok(Self {
            addr,
            stats,
            stop: Some(stop),
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it has seen.
    pub fn stats(&self) -> &MockStats {
        &self.stats
    }
}

impl Drop for MockReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}
