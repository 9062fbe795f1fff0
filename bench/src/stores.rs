//! `cargo xtask bench stores`: end-to-end deliveries per second (dispatch, durable,
//! delivered, recorded) on each store. `redb` and `redis` are compared with the
//! in-memory store in the same run; `postgres` with the seed 003 design (one row per
//! transaction: insert, then poll `FOR UPDATE SKIP LOCKED LIMIT 1`, update) on the
//! same PostgreSQL server in the same run.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use webhook_core::{Attempt, ClaimRequest, Completion, Finished, MemoryStore, Store};
use webhook_dispatcher::{Dispatcher, DispatcherConfig, Endpoint, Event, OverflowPolicy};

use crate::{receiver::Receiver, report::Figure};

const EVENTS: u64 = 20_000;
const PRODUCERS: u64 = 64;

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}_{}_{nanos}", std::process::id())
}

fn env_url(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run through `cargo xtask bench stores`"))
}

pub(crate) async fn run() -> Vec<Figure> {
    let receiver = Receiver::start();
    let postgres_url = env_url("WEBHOOK_TEST_POSTGRES_URL");
    let redis_url = env_url("WEBHOOK_TEST_REDIS_URL");
    let dir = std::env::temp_dir().join(unique("bench-redb"));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // A warm-up (connections, allocator), then two rounds, each on new stores; the
    // best run of each counts, as in the other benchmarks: the machine is shared, and
    // the best run is the least disturbed one.
    end_to_end(
        &receiver,
        Arc::new(MemoryStore::new()),
        "warm-up",
        EVENTS / 4,
    )
    .await;
    let mut best = [0.0_f64; 6];
    for round in 0..2 {
        let memory = end_to_end(&receiver, Arc::new(MemoryStore::new()), "memory", EVENTS).await;
        let redb = webhook_store_redb::RedbStore::open(dir.join(format!("bench-{round}.redb")))
            .expect("redb");
        let redb = end_to_end(&receiver, Arc::new(redb), "redb", EVENTS).await;
        let redis = webhook_store_redis::RedisStore::connect(&redis_url, &unique("bench"))
            .await
            .expect("redis");
        let redis = end_to_end(&receiver, Arc::new(redis), "redis", EVENTS).await;
        let options =
            webhook_store_postgres::PostgresOptions::default().with_schema(unique("bench"));
        let postgres = webhook_store_postgres::PostgresStore::connect_with(&postgres_url, options)
            .await
            .expect("postgres");
        let postgres = Arc::new(postgres);
        let postgres_rate = end_to_end(&receiver, postgres.clone(), "postgres", EVENTS).await;
        let postgres_alone = store_alone(postgres).await;
        let seed = seed_003(&receiver, &postgres_url).await;
        let rates = [memory, redb, redis, postgres_rate, postgres_alone, seed];
        for (best, rate) in best.iter_mut().zip(rates) {
            *best = best.max(rate);
        }
    }
    let [memory, redb, redis, postgres_rate, postgres_alone, seed] = best;
    let _ = std::fs::remove_dir_all(&dir);

    vec![
        Figure::new("memory", memory, "deliv/s", "memory", memory),
        Figure::new("redb", redb, "deliv/s", "memory store", memory),
        Figure::new("redis", redis, "deliv/s", "memory store", memory),
        Figure::new(
            "postgres",
            postgres_rate,
            "deliv/s",
            "seed 003 design on PostgreSQL",
            seed,
        ),
        Figure::new(
            "postgres_store_alone",
            postgres_alone,
            "deliv/s",
            "seed 003 design on PostgreSQL",
            seed,
        ),
    ]
}

/// Event `i`, its id prefixed with `prefix`.
fn event(i: u64, prefix: &str) -> Event {
    Event::new(
        format!("{prefix}{i}"),
        Bytes::from(format!("{{\"n\":{i}}}")),
    )
}

/// `PRODUCERS` tasks that together call `send(i)` once for each `i` in `0..events`.
fn produce<F, Fut>(events: u64, send: F) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    (0..PRODUCERS)
        .map(|p| {
            let send = send.clone();
            tokio::spawn(async move {
                let mut i = p;
                while i < events {
                    send(i).await;
                    i += PRODUCERS;
                }
            })
        })
        .collect()
}

/// Dispatches `events` events from `PRODUCERS` tasks and waits until every delivery is
/// recorded as delivered in the store.
async fn end_to_end(
    receiver: &Arc<Receiver>,
    store: Arc<dyn Store>,
    name: &str,
    events: u64,
) -> f64 {
    let config = DispatcherConfig {
        max_in_flight: 256,
        max_in_flight_per_endpoint: 256,
        claim_batch: 512,
        overflow_policy: OverflowPolicy::SpillToStorage,
        shutdown_timeout: Duration::from_millis(100),
        ..DispatcherConfig::default()
    };
    let dispatcher = Arc::new(Dispatcher::new_with_storage(config, store).await);
    dispatcher
        .register_endpoint(
            Endpoint::new("bench", receiver.url("/stores"))
                .with_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        )
        .await
        .expect("register");
    let start = Instant::now();
    let d = dispatcher.clone();
    let tasks = produce(events, move |i| {
        let d = d.clone();
        async move {
            d.dispatch(event(i, "s"), vec!["bench".into()])
                .await
                .expect("dispatch");
        }
    });
    for t in tasks {
        let _ = t.await;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while dispatcher.metrics().delivered < events {
        assert!(
            Instant::now() < deadline,
            "{name}: deliveries did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    dispatcher.shutdown().await;
    rate
}

/// Deliveries per second `store` alone cycles through, with no HTTP and no engine:
/// `PRODUCERS` tasks enqueue `EVENTS` events to one endpoint while `CLAIMERS` tasks
/// claim up to 512 at a time and complete each as delivered. When this is no faster
/// than the end-to-end figure, the store, not HTTP or the engine, bounds that figure.
async fn store_alone(store: Arc<dyn Store>) -> f64 {
    const CLAIMERS: usize = 4;
    let endpoint = webhook_core::Endpoint::new("alone", "http://127.0.0.1:9/alone");
    store.put_endpoint(&endpoint).await.expect("endpoint");
    let completed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let s = store.clone();
    let producers = produce(EVENTS, move |i| {
        let s = s.clone();
        async move {
            s.enqueue(&event(i, "a"), &["alone".into()], Utc::now())
                .await
                .expect("enqueue");
        }
    });
    let claimers: Vec<_> = (0..CLAIMERS)
        .map(|_| {
            let (store, completed) = (store.clone(), completed.clone());
            tokio::spawn(async move {
                while completed.load(Relaxed) < EVENTS {
                    let now = Utc::now();
                    let request = ClaimRequest::new(now, Duration::from_secs(60), 512);
                    let claimed = store.claim(&request).await.expect("claim");
                    if claimed.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    let finished: Vec<Finished> = claimed
                        .into_iter()
                        .map(|c| Finished {
                            lease: c.lease,
                            completion: Completion::Delivered {
                                attempt: Attempt::response(
                                    now,
                                    Duration::from_millis(1),
                                    200,
                                    b"ok",
                                ),
                            },
                        })
                        .collect();
                    let done = store
                        .complete(&finished, Utc::now())
                        .await
                        .expect("complete");
                    completed.fetch_add(done.applied as u64, Relaxed);
                }
            })
        })
        .collect();
    for t in producers.into_iter().chain(claimers) {
        let _ = t.await;
    }
    EVENTS as f64 / start.elapsed().as_secs_f64()
}

/// The seed 003 design: every event inserted in its own transaction; workers poll one
/// row at a time with `FOR UPDATE SKIP LOCKED LIMIT 1`, post it, and mark it delivered.
async fn seed_003(receiver: &Arc<Receiver>, url: &str) -> f64 {
    const WORKERS: usize = 8;
    let schema = unique("seed003");
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
    };
    let admin = connect().await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.webhook_events (
                 id bigserial PRIMARY KEY, payload jsonb NOT NULL, target_url text NOT NULL,
                 status text NOT NULL DEFAULT 'pending', attempt_count int NOT NULL DEFAULT 0,
                 next_retry_at timestamptz NOT NULL DEFAULT now(), created_at timestamptz NOT NULL DEFAULT now());
             CREATE INDEX ON {schema}.webhook_events (status, next_retry_at);"
        ))
        .await
        .expect("schema");
    let target = receiver.url("/seed003");
    let http: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let delivered = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    // Ingest: one transaction per row, from several connections as an API would.
    let ingest: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (schema, target) = (schema.clone(), target.clone());
            let url = url.to_owned();
            tokio::spawn(async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
                tokio::spawn(connection);
                let insert = client
                    .prepare(&format!("INSERT INTO {schema}.webhook_events (payload, target_url) VALUES ($1::text::jsonb, $2)"))
                    .await
                    .expect("prepare");
                let mut i = w as u64;
                while i < EVENTS {
                    client.execute(&insert, &[&format!("{{\"n\":{i}}}"), &target]).await.expect("insert");
                    i += WORKERS as u64;
                }
            })
        })
        .collect();
    // Workers: claim one row per transaction, post, update.
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (schema, http, delivered) = (schema.clone(), http.clone(), delivered.clone());
            let url = url.to_owned();
            tokio::spawn(async move {
                let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
                tokio::spawn(connection);
                while delivered.load(Relaxed) < EVENTS {
                    let tx = client.transaction().await.expect("begin");
                    let row = tx
                        .query_opt(
                            &format!("SELECT id, payload::text, target_url FROM {schema}.webhook_events WHERE status = 'pending' AND next_retry_at <= now() ORDER BY next_retry_at LIMIT 1 FOR UPDATE SKIP LOCKED"),
                            &[],
                        )
                        .await
                        .expect("poll");
                    let Some(row) = row else {
                        drop(tx);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    };
                    let (id, payload, target): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
                    let request = http::Request::post(target).body(Full::new(Bytes::from(payload))).expect("request");
                    let ok = match http.request(request).await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                            ok
                        }
                        Err(_) => false,
                    };
                    let status = if ok { "delivered" } else { "pending" };
                    tx.execute(
                        &format!("UPDATE {schema}.webhook_events SET status = $1, attempt_count = attempt_count + 1 WHERE id = $2"),
                        &[&status, &id],
                    )
                    .await
                    .expect("update");
                    tx.commit().await.expect("commit");
                    if ok {
                        delivered.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in ingest.into_iter().chain(workers) {
        let _ = t.await;
    }
    let rate = EVENTS as f64 / start.elapsed().as_secs_f64();
    let _ = admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
    rate
}
