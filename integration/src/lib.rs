//! Support for the cross-process tests: opening any store from a spec string, and a
//! counting receiver.
//!
//! A store spec is `memory`, `redb:<path>`, `postgres:<url>#<schema>` or
//! `redis:<url>#<prefix>`.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use webhook_core::{MemoryStore, Store};

/// Opens the store a spec names.
pub async fn open_store(spec: &str) -> Result<Arc<dyn Store>, String> {
    let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let split = |rest: &str| -> (String, String) {
        match rest.rsplit_once('#') {
            Some((url, name)) => (url.to_owned(), name.to_owned()),
            None => (rest.to_owned(), "webhook".to_owned()),
        }
    };
    let store: Arc<dyn Store> = match kind {
        "memory" => Arc::new(MemoryStore::new()),
        "redb" => Arc::new(webhook_store_redb::RedbStore::open(rest).map_err(|e| e.to_string())?),
        "postgres" => {
            let (url, schema) = split(rest);
            let options = webhook_store_postgres::PostgresOptions::default().with_schema(schema);
            Arc::new(
                webhook_store_postgres::PostgresStore::connect_with(&url, options)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
        "redis" => {
            let (url, prefix) = split(rest);
            Arc::new(
                webhook_store_redis::RedisStore::connect(&url, &prefix)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
        other => return Err(format!("unknown store kind {other:?}")),
    };
    Ok(store)
}

/// A receiver that answers 200 (after `delay`) and counts each `webhook-id`.
pub struct CountingReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingReceiver {
    /// Starts listening on 127.0.0.1.
    pub async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counts = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counts = counts.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let counts = counts.clone();
                        async move {
                            let id = req
                                .headers()
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let _ = req.into_body().collect().await;
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            *counts.lock().expect("counts").entry(id).or_default() += 1;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// The URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// How many times each `webhook-id` arrived.
    pub fn counts(&self) -> HashMap<String, usize> {
        self.seen.lock().expect("counts").clone()
    }
}

/// The test environment's PostgreSQL URL (set by `cargo xtask ci`).
pub fn postgres_url() -> String {
    std::env::var("WEBHOOK_TEST_POSTGRES_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("WEBHOOK_TEST_POSTGRES_URL is not set: run the tests with `cargo xtask ci` or `cargo xtask integration`")
}

/// The test environment's Redis URL (set by `cargo xtask ci`).
pub fn redis_url() -> String {
    std::env::var("WEBHOOK_TEST_REDIS_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .expect("WEBHOOK_TEST_REDIS_URL is not set: run the tests with `cargo xtask ci` or `cargo xtask integration`")
}
