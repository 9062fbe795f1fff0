//! A local hyper receiver on its own thread and runtime: counts requests, records the
//! latency carried in each payload (`{"t":<nanos since the bench epoch>}`), and
//! answers 200, or after 2 s for paths starting with `/slow`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

/// The instant payload timestamps are measured from.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A payload carrying the current time.
pub(crate) fn stamped_payload() -> Bytes {
    Bytes::from(format!("{{\"t\":{}}}", epoch().elapsed().as_nanos()))
}

pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    pub(crate) fast: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Receiver {
    /// Starts a receiver on a thread of its own.
    pub(crate) fn start() -> Arc<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let receiver = Arc::new(Self {
            addr: std_listener.local_addr().expect("addr"),
            fast: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")),
        });
        let server = receiver.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let server = server.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| {
                            let server = server.clone();
                            async move { Ok::<_, Infallible>(server.handle(req).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        receiver
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let slow = req.uri().path().starts_with("/slow");
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if slow {
            tokio::time::sleep(Duration::from_secs(2)).await;
        } else {
            self.fast.fetch_add(1, Relaxed);
            if let Some(sent) = parse_stamp(&body) {
                let now = epoch().elapsed().as_nanos() as u64;
                let micros = now.saturating_sub(sent) / 1000;
                if let Ok(mut h) = self.latency.lock() {
                    h.saturating_record(micros.max(1));
                }
            }
        }
        Response::new(Full::new(Bytes::from_static(b"ok")))
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn count(&self) -> u64 {
        self.fast.load(Relaxed)
    }

    /// Clears the latency histogram.
    pub(crate) fn reset_latency(&self) {
        if let Ok(mut h) = self.latency.lock() {
            h.reset();
        }
    }

    /// (p50, p99) of the recorded latencies, in milliseconds.
    pub(crate) fn latency_ms(&self) -> (f64, f64) {
        let h = self.latency.lock().expect("histogram");
        (
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        )
    }

    /// Waits until `n` fast requests have arrived in total.
    pub(crate) async fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

fn parse_stamp(body: &[u8]) -> Option<u64> {
    let start = body.windows(4).position(|w| w == b"\"t\":")? + 4;
    let digits: Vec<u8> = body[start..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}
