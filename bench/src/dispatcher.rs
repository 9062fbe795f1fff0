//! `cargo xtask bench dispatcher`: throughput, fanout, fairness, latency and memory of
//! the engine on the in-memory store, each against a baseline from the same run.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use webhook_dispatcher::{
    Dispatcher, DispatcherConfig, Endpoint, EndpointId, Event, OverflowPolicy,
};

use crate::{
    receiver::{Receiver, stamped_payload},
    report::{Figure, rss_bytes},
};

const CONCURRENCY: usize = 256;
const REQUESTS: u64 = 100_000;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub(crate) async fn run() -> Vec<Figure> {
    let receiver = Receiver::start();
    let mut figures = Vec::new();

    // Memory first, while the heap is fresh: resident-size growth is only meaningful
    // before anything has been freed (freed memory stays resident and is reused).
    let parked = payload_copies(&mut figures).await;
    memory(&mut figures).await;
    for dispatcher in parked {
        dispatcher.shutdown().await;
    }

    // Warm up both paths (connections, allocator), then take the best of two runs of
    // each: the machine is shared, and the best run is the least disturbed one.
    bare_client(&receiver, 10_000).await;
    engine_throughput(&receiver, 10_000).await;
    let mut bare: f64 = 0.0;
    let mut engine: f64 = 0.0;
    for _ in 0..2 {
        bare = bare.max(bare_client(&receiver, REQUESTS).await);
        engine = engine.max(engine_throughput(&receiver, REQUESTS).await);
    }
    figures.push(Figure::new(
        "throughput",
        engine,
        "req/s",
        "bare hyper client",
        bare,
    ));

    fanout(&receiver, bare, &mut figures).await;
    fairness(&receiver, &mut figures).await;
    latency(&receiver, engine, &mut figures).await;
    figures
}

/// Only the throughput figure (for profiling).
pub(crate) async fn throughput() -> Vec<Figure> {
    let receiver = Receiver::start();
    bare_client(&receiver, 10_000).await;
    let bare = bare_client(&receiver, REQUESTS).await;
    let engine = engine_throughput(&receiver, REQUESTS).await;
    vec![Figure::new(
        "throughput",
        engine,
        "req/s",
        "bare hyper client",
        bare,
    )]
}

/// Only the latency figures, at 25k deliveries/s (for profiling).
pub(crate) async fn latency_only() -> Vec<Figure> {
    let receiver = Receiver::start();
    let mut figures = Vec::new();
    latency(&receiver, 50_000.0, &mut figures).await;
    figures
}

/// Only the memory figure (for profiling).
pub(crate) async fn memory_only() -> Vec<Figure> {
    let mut figures = Vec::new();
    memory(&mut figures).await;
    figures
}

fn config() -> DispatcherConfig {
    DispatcherConfig {
        max_in_flight: CONCURRENCY,
        max_in_flight_per_endpoint: CONCURRENCY as u32,
        claim_batch: 512,
        overflow_policy: OverflowPolicy::SpillToStorage,
        shutdown_timeout: Duration::from_millis(100),
        ..DispatcherConfig::default()
    }
}

/// Requests per second of a pooled hyper client at `CONCURRENCY`.
async fn bare_client(receiver: &Arc<Receiver>, n: u64) -> f64 {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONCURRENCY)
        .build_http();
    let uri: http::Uri = receiver.url("/bare").parse().expect("uri");
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, uri, next) = (client.clone(), uri.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Relaxed) < n {
                    let request = http::Request::post(uri.clone())
                        .header("content-type", "application/json")
                        .body(Full::new(stamped_payload()))
                        .expect("request");
                    if let Ok(response) = client.request(request).await {
                        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn dispatch_all(
    dispatcher: &Arc<Dispatcher>,
    prefix: &str,
    n: u64,
    endpoints: &[EndpointId],
    payload: impl Fn() -> Bytes + Send + Sync + Clone + 'static,
) {
    let producers = 4;
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let dispatcher = dispatcher.clone();
            let endpoints = endpoints.to_vec();
            let prefix = prefix.to_owned();
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut i = p;
                while i < n {
                    let event = Event::new(format!("{prefix}{i}"), payload());
                    dispatcher
                        .dispatch(event, endpoints.clone())
                        .await
                        .expect("dispatch");
                    i += producers;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Deliveries per second through the engine, signing on, dispatch included.
async fn engine_throughput(receiver: &Arc<Receiver>, n: u64) -> f64 {
    let dispatcher = Arc::new(Dispatcher::new(config()));
    dispatcher
        .register_endpoint(Endpoint::new("bench", receiver.url("/engine")).with_secret(SECRET))
        .await
        .expect("register");
    let target = receiver.count() + n;
    let start = Instant::now();
    dispatch_all(&dispatcher, "t", n, &["bench".into()], stamped_payload).await;
    assert!(
        receiver.wait_for(target, Duration::from_secs(120)).await,
        "throughput run did not finish"
    );
    let rate = n as f64 / start.elapsed().as_secs_f64();
    dispatcher.shutdown().await;
    rate
}

/// Resident bytes per queued delivery with 1M queued (payload shared and tiny).
async fn memory(figures: &mut Vec<Figure>) {
    const QUEUED: u64 = 1_000_000;
    let dispatcher = Arc::new(Dispatcher::new(config()));
    dispatcher
        .register_endpoint(Endpoint::new("parked", "http://127.0.0.1:9/").with_enabled(false))
        .await
        .expect("register");
    let before = rss_bytes();
    dispatch_all(&dispatcher, "m", QUEUED, &["parked".into()], || {
        Bytes::from_static(b"{}")
    })
    .await;
    let per_delivery = rss_bytes().saturating_sub(before) as f64 / QUEUED as f64;
    figures.push(Figure::new(
        "memory",
        per_delivery,
        "B/queued",
        "goal (512 B)",
        512.0,
    ));
    dispatcher.shutdown().await;
}

/// How many copies of a payload one event to 100 endpoints keeps: 200 events are
/// queued to 100 parked endpoints, once with 64 KiB payloads and once with 2-byte
/// ones; the difference is what the payloads cost. Returns the dispatchers, to be
/// dropped after the other memory measurement.
async fn payload_copies(figures: &mut Vec<Figure>) -> Vec<Arc<Dispatcher>> {
    let endpoints: Vec<EndpointId> = (0..100)
        .map(|i| EndpointId::from(format!("fan{i}")))
        .collect();
    // Copies: queue 200 events x 100 parked endpoints, once with 64 KiB payloads and
    // once with 2-byte ones; the difference is what the payloads cost.
    // Both stay alive until measured, so freed memory is not reused in between.
    let mut growth = [0.0; 2];
    let mut keep = Vec::new();
    for (run, size) in [2usize, 65_536].into_iter().enumerate() {
        let parked = Arc::new(Dispatcher::new(config()));
        for id in &endpoints {
            parked
                .register_endpoint(
                    Endpoint::new(id.clone(), "http://127.0.0.1:9/").with_enabled(false),
                )
                .await
                .expect("register");
        }
        let payload = Bytes::from(vec![b'x'; size]);
        let before = rss_bytes();
        dispatch_all(&parked, &format!("c{run}-"), 200, &endpoints, move || {
            Bytes::copy_from_slice(&payload)
        })
        .await;
        growth[run] = rss_bytes().saturating_sub(before) as f64;
        keep.push(parked);
    }
    let copies = (growth[1] - growth[0]).max(0.0) / (200.0 * 65_536.0);
    figures.push(Figure::new(
        "fanout_payload_copies",
        copies,
        "copies",
        "one copy per delivery",
        100.0,
    ));
    keep
}

/// One event to 100 endpoints: delivery rate.
async fn fanout(receiver: &Arc<Receiver>, bare: f64, figures: &mut Vec<Figure>) {
    let endpoints: Vec<EndpointId> = (0..100)
        .map(|i| EndpointId::from(format!("fan{i}")))
        .collect();

    // Rate: 1000 events x 100 endpoints.
    let dispatcher = Arc::new(Dispatcher::new(DispatcherConfig {
        max_in_flight_per_endpoint: 16,
        ..config()
    }));
    for id in &endpoints {
        dispatcher
            .register_endpoint(
                Endpoint::new(id.clone(), receiver.url(&format!("/{id}"))).with_secret(SECRET),
            )
            .await
            .expect("register");
    }
    let target = receiver.count() + 100_000;
    let start = Instant::now();
    dispatch_all(&dispatcher, "f", 1000, &endpoints, stamped_payload).await;
    assert!(
        receiver.wait_for(target, Duration::from_secs(120)).await,
        "fanout run did not finish"
    );
    let rate = 100_000.0 / start.elapsed().as_secs_f64();
    figures.push(Figure::new(
        "fanout",
        rate,
        "req/s",
        "bare hyper client",
        bare,
    ));
    dispatcher.shutdown().await;
}

/// 50 healthy endpoints' rate next to one that answers after 2 s with a 10k backlog.
async fn fairness(receiver: &Arc<Receiver>, figures: &mut Vec<Figure>) {
    async fn healthy_rate(receiver: &Arc<Receiver>, with_slow: bool) -> f64 {
        let dispatcher = Arc::new(Dispatcher::new(DispatcherConfig {
            max_in_flight: 512,
            max_in_flight_per_endpoint: 64,
            request_timeout: Duration::from_secs(10),
            ..config()
        }));
        let healthy: Vec<EndpointId> = (0..50).map(|i| EndpointId::from(format!("h{i}"))).collect();
        for id in &healthy {
            dispatcher
                .register_endpoint(Endpoint::new(id.clone(), receiver.url(&format!("/{id}"))))
                .await
                .expect("register");
        }
        if with_slow {
            dispatcher
                .register_endpoint(Endpoint::new("slow", receiver.url("/slow")))
                .await
                .expect("register");
            dispatch_all(&dispatcher, "s", 10_000, &["slow".into()], || {
                Bytes::from_static(b"{}")
            })
            .await;
        }
        let target = receiver.count() + 50 * 400;
        let start = Instant::now();
        for id in &healthy {
            dispatch_all(
                &dispatcher,
                &format!("{id}-"),
                400,
                std::slice::from_ref(id),
                stamped_payload,
            )
            .await;
        }
        assert!(
            receiver.wait_for(target, Duration::from_secs(120)).await,
            "fairness run did not finish"
        );
        let rate = 20_000.0 / start.elapsed().as_secs_f64();
        dispatcher.shutdown().await;
        rate
    }
    let mut alone: f64 = 0.0;
    let mut beside_slow: f64 = 0.0;
    for _ in 0..2 {
        alone = alone.max(healthy_rate(receiver, false).await);
        beside_slow = beside_slow.max(healthy_rate(receiver, true).await);
    }
    figures.push(Figure::new(
        "fairness",
        beside_slow,
        "req/s",
        "healthy endpoints alone",
        alone,
    ));
}

/// p50 and p99 from dispatch to receipt at half the engine's peak rate.
async fn latency(receiver: &Arc<Receiver>, peak: f64, figures: &mut Vec<Figure>) {
    let rate = (peak / 2.0).max(1000.0);
    let per_tick = (rate / 1000.0).ceil() as u64;
    let ticks = 3000;

    // Baseline: the bare client at the same rate.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONCURRENCY)
        .build_http();
    let uri: http::Uri = receiver.url("/bare").parse().expect("uri");
    receiver.reset_latency();
    let target = receiver.count() + per_tick * ticks;
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..ticks {
        interval.tick().await;
        for _ in 0..per_tick {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let request = http::Request::post(uri)
                    .body(Full::new(stamped_payload()))
                    .expect("request");
                if let Ok(response) = client.request(request).await {
                    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                }
            });
        }
    }
    receiver.wait_for(target, Duration::from_secs(60)).await;
    let (bare_p50, bare_p99) = receiver.latency_ms();

    let dispatcher = Arc::new(Dispatcher::new(config()));
    dispatcher
        .register_endpoint(Endpoint::new("lat", receiver.url("/engine")).with_secret(SECRET))
        .await
        .expect("register");
    receiver.reset_latency();
    let target = receiver.count() + per_tick * ticks;
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    let mut i = 0u64;
    for _ in 0..ticks {
        interval.tick().await;
        for _ in 0..per_tick {
            let dispatcher = dispatcher.clone();
            let id = format!("l{i}");
            i += 1;
            tokio::spawn(async move {
                let _ = dispatcher
                    .dispatch(Event::new(id, stamped_payload()), vec!["lat".into()])
                    .await;
            });
        }
    }
    receiver.wait_for(target, Duration::from_secs(60)).await;
    let (p50, p99) = receiver.latency_ms();
    figures.push(Figure::new(
        "latency_p50",
        p50,
        "ms",
        "bare hyper client p50",
        bare_p50,
    ));
    figures.push(Figure::new(
        "latency_p99",
        p99,
        "ms",
        "bare hyper client p99",
        bare_p99,
    ));
    eprintln!("latency measured at {rate:.0} req/s (half of the engine's peak)");
    dispatcher.shutdown().await;
}
