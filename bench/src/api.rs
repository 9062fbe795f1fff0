//! `cargo xtask bench api`: `POST /events` accepted per second and p99 latency on the
//! embedded store, against dispatching the same events through the library directly
//! on the same kind of store in the same run.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use webhook_dispatcher::{Dispatcher, DispatcherConfig, Endpoint, Event};

use crate::{receiver::Receiver, report::Figure};

const EVENTS: u64 = 50_000;
const CLIENTS: usize = 64;

pub(crate) async fn run() -> Vec<Figure> {
    let receiver = Receiver::start();
    let root = std::env::temp_dir().join(format!("webhook-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    // Two runs of each, interleaved, each on a new store; the best run of each path
    // (by rate) counts: the machine is shared, and the best run is the least disturbed.
    let (mut direct_rate, mut direct_p99, mut api_rate, mut api_p99) = (0.0, 0.0, 0.0, 0.0);
    for run in 0..2 {
        let (rate, p99) = direct(&receiver, &root.join(format!("direct-{run}"))).await;
        if rate > direct_rate {
            (direct_rate, direct_p99) = (rate, p99);
        }
        let (rate, p99) = api(&receiver, &root.join(format!("api-{run}"))).await;
        if rate > api_rate {
            (api_rate, api_p99) = (rate, p99);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    vec![
        Figure::new(
            "ingest",
            api_rate,
            "events/s",
            "library dispatch, same store",
            direct_rate,
        ),
        Figure::new(
            "ingest_p99",
            api_p99,
            "ms",
            "library dispatch p99",
            direct_p99,
        ),
    ]
}

/// Runs `CLIENTS` concurrent loops of `call(client, i)` until `EVENTS` calls are done;
/// returns the rate and the p99 of one call in milliseconds.
async fn load<F, Fut>(call: F) -> (f64, f64)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (call, next, histogram) = (call.clone(), next.clone(), histogram.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= EVENTS {
                        return;
                    }
                    let begun = Instant::now();
                    call(client, i).await;
                    let micros = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX);
                    histogram
                        .lock()
                        .expect("histogram")
                        .saturating_record(micros.max(1));
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let rate = EVENTS as f64 / start.elapsed().as_secs_f64();
    let p99 = histogram.lock().expect("histogram").value_at_quantile(0.99) as f64 / 1000.0;
    (rate, p99)
}

async fn direct(receiver: &Arc<Receiver>, dir: &std::path::Path) -> (f64, f64) {
    std::fs::create_dir_all(dir).expect("dir");
    let store = webhook_store_redb::RedbStore::open(dir.join("bench.redb")).expect("redb");
    let dispatcher =
        Arc::new(Dispatcher::new_with_storage(DispatcherConfig::default(), Arc::new(store)).await);
    dispatcher
        .register_endpoint(Endpoint::new("bench", receiver.url("/direct")))
        .await
        .expect("register");
    let d = dispatcher.clone();
    let result = load(move |_, i| {
        let d = d.clone();
        async move {
            let event = Event::new(format!("d{i}"), Bytes::from(format!("{{\"n\":{i}}}")))
                .with_event_type("bench");
            d.dispatch(event, vec!["bench".into()])
                .await
                .expect("dispatch");
        }
    })
    .await;
    dispatcher.shutdown().await;
    result
}

async fn api(receiver: &Arc<Receiver>, dir: &std::path::Path) -> (f64, f64) {
    let mut settings = webhookd::Settings::new(dir);
    settings.allow_private_destinations = true;
    let app = webhookd::App::build(settings).await.expect("webhookd");
    app.dispatcher()
        .register_endpoint(Endpoint::new("bench", receiver.url("/api")).with_event_types(["bench"]))
        .await
        .expect("register");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    // The load generator holds one keep-alive connection per client and sends on it
    // directly, as wrk does: it shares the 2 cores with webhookd, and the pool of a
    // general-purpose client would be CPU spent on the client's side, not the service's.
    let mut connections = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        // Each client uses only its own connection: the lock is never contended.
        connections.push(tokio::sync::Mutex::new(sender));
    }
    let connections = Arc::new(connections);
    let result = load(move |client, i| {
        let connections = connections.clone();
        async move {
            let body =
                format!("{{\"id\":\"a{i}\",\"event_type\":\"bench\",\"payload\":{{\"n\":{i}}}}}");
            let request = http::Request::post("/events")
                .header(http::header::HOST, addr.to_string())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("request");
            let mut connection = connections[client].lock().await;
            let response = connection
                .send_request(request)
                .await
                .expect("POST /events");
            assert_eq!(response.status(), 202, "POST /events was not accepted");
            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        }
    })
    .await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    result
}
