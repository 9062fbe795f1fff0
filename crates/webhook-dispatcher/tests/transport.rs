//! The HTTP transport against real local servers.

use std::{
    convert::Infallible,
    io::Read as _,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use webhook_dispatcher::{
    destination::DestinationPolicy,
    transport::{Encoding, Outcome, Request, SendError, Transport, TransportConfig, parse_url},
};

/// What the test server received.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Server {
    fn url(&self, path: &str) -> Uri {
        format!("http://{}{path}", self.addr).parse().unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync>;

/// An HTTP/1.1 server on `bind` answering every request with `handler`.
async fn serve(
    bind: &str,
    handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static,
) -> Server {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let handler: Handler = Arc::new(handler);
    let (seen2, connections2) = (Arc::clone(&seen), Arc::clone(&connections));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            connections2.fetch_add(1, Ordering::SeqCst);
            let (seen, handler) = (Arc::clone(&seen2), Arc::clone(&handler));
            let service = service_fn(move |req: http::Request<Incoming>| {
                let (seen, handler) = (Arc::clone(&seen), Arc::clone(&handler));
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let s = Seen {
                        method: parts.method,
                        uri: parts.uri,
                        headers: parts.headers,
                        body,
                    };
                    let response = handler(&s);
                    seen.lock().unwrap().push(s);
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server {
        addr,
        seen,
        connections,
    }
}

fn respond(status: u16, body: &'static [u8]) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

fn transport(destination: DestinationPolicy) -> Transport {
    Transport::new(TransportConfig {
        destination,
        ..TransportConfig::default()
    })
}

fn local() -> Transport {
    transport(DestinationPolicy::allow_all())
}

async fn post(t: &Transport, url: Uri, body: &'static [u8]) -> Outcome {
    t.send(Request::new(url, Bytes::from_static(body))).await
}

#[tokio::test]
async fn response_is_reported_and_request_arrives_exactly() {
    let server = serve("127.0.0.1:0", |_| respond(200, b"thanks")).await;
    let t = local();
    let mut req = Request::new(
        server.url("/hook?x=1"),
        Bytes::from_static(br#"{"event":"a.b"}"#),
    );
    req.headers.push((
        HeaderName::from_static("x-custom"),
        HeaderValue::from_static("one"),
    ));
    req.headers.push((
        HeaderName::from_static("x-custom"),
        HeaderValue::from_static("two"),
    ));
    req.headers.push((
        HeaderName::from_static("webhook-signature"),
        HeaderValue::from_static("v1,abc"),
    ));
    let out = t.send(req).await;

    assert_eq!(out.status, Some(200), "{out:?}");
    assert!(out.is_success());
    assert_eq!(out.body_excerpt, Bytes::from_static(b"thanks"));
    assert_eq!(out.retry_after, None);
    assert!(out.error.is_none());
    assert!(out.duration > Duration::ZERO);

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, Method::POST);
    assert_eq!(s.uri.path_and_query().unwrap().as_str(), "/hook?x=1");
    assert_eq!(s.body, Bytes::from_static(br#"{"event":"a.b"}"#));
    let custom: Vec<_> = s.headers.get_all("x-custom").iter().collect();
    assert_eq!(custom, ["one", "two"]);
    assert_eq!(s.headers["webhook-signature"], "v1,abc");
    assert_eq!(s.headers["content-type"], "application/json");
    assert_eq!(s.headers["content-length"], "15");
    assert_eq!(
        s.headers["user-agent"],
        concat!("webhook-dispatcher/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(s.headers["host"], server.addr.to_string().as_str());
    assert!(s.headers.get("content-encoding").is_none());
}

#[tokio::test]
async fn caller_content_type_and_configured_user_agent_are_used() {
    let server = serve("127.0.0.1:0", |_| respond(204, b"")).await;
    let t = Transport::new(TransportConfig {
        destination: DestinationPolicy::allow_all(),
        user_agent: "acme-hooks/2".to_owned(),
        ..TransportConfig::default()
    });
    let mut req = Request::new(server.url("/"), Bytes::from_static(b"a=1"));
    req.headers.push((
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    ));
    req.headers.push((
        http::header::CONTENT_LENGTH,
        HeaderValue::from_static("999"),
    ));
    let out = t.send(req).await;
    assert_eq!(out.status, Some(204), "{out:?}");
    assert!(out.body_excerpt.is_empty());
    let s = &server.seen()[0];
    assert_eq!(
        s.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(s.headers["user-agent"], "acme-hooks/2");
    assert_eq!(s.headers["content-length"], "3");
    assert_eq!(s.body, Bytes::from_static(b"a=1"));

    // A user agent that is not a valid header value falls back to the default.
    let t = Transport::new(TransportConfig {
        destination: DestinationPolicy::allow_all(),
        user_agent: "bad\nagent".to_owned(),
        ..TransportConfig::default()
    });
    assert_eq!(post(&t, server.url("/"), b"{}").await.status, Some(204));
    assert!(
        server.seen()[1].headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("webhook-dispatcher/")
    );
}

#[tokio::test]
async fn error_statuses_and_retry_after_are_captured() {
    let server = serve("127.0.0.1:0", |s| match s.uri.path() {
        "/500" => respond(500, b"boom"),
        "/410" => respond(410, b"gone"),
        _ => Response::builder()
            .status(429)
            .header("retry-after", "7")
            .body(Full::new(Bytes::from_static(b"slow down")))
            .unwrap(),
    })
    .await;
    let t = local();

    let out = post(&t, server.url("/500"), b"{}").await;
    assert_eq!(
        (
            out.status,
            out.body_excerpt.as_ref(),
            out.retry_after.as_deref()
        ),
        (Some(500), &b"boom"[..], None)
    );
    assert!(out.error.is_none() && !out.is_success());

    let out = post(&t, server.url("/410"), b"{}").await;
    assert_eq!(
        (out.status, out.body_excerpt.as_ref()),
        (Some(410), &b"gone"[..])
    );

    let out = post(&t, server.url("/429"), b"{}").await;
    assert_eq!(out.status, Some(429));
    assert_eq!(out.retry_after.as_deref(), Some("7"));
    assert_eq!(out.body_excerpt.as_ref(), b"slow down");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = serve("127.0.0.1:0", |s| match s.uri.path() {
        "/old" => Response::builder()
            .status(301)
            .header("location", "/new")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        _ => respond(200, b"followed"),
    })
    .await;
    let out = post(&local(), server.url("/old"), b"{}").await;
    assert_eq!(out.status, Some(301), "{out:?}");
    assert!(out.error.is_none());
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn large_responses_are_cut_at_the_cap() {
    static BIG: [u8; 200_000] = [b'x'; 200_000];
    let server = serve("127.0.0.1:0", |s| match s.uri.path() {
        "/big" => respond(200, &BIG),
        _ => respond(500, &BIG[..1000]),
    })
    .await;
    let t = Transport::new(TransportConfig {
        destination: DestinationPolicy::allow_all(),
        max_response_bytes: 1000,
        ..TransportConfig::default()
    });
    let out = post(&t, server.url("/big"), b"{}").await;
    assert_eq!(out.status, Some(200), "{out:?}");
    assert!(out.error.is_none());
    assert_eq!(out.body_excerpt.len(), 1000);
    assert!(out.body_excerpt.iter().all(|&b| b == b'x'));

    // Exactly the cap: all of it, and the connection stays usable.
    let out = post(&t, server.url("/exact"), b"{}").await;
    assert_eq!((out.status, out.body_excerpt.len()), (Some(500), 1000));

    // The default cap is 64 KiB.
    let out = post(&local(), server.url("/big"), b"{}").await;
    assert_eq!((out.status, out.body_excerpt.len()), (Some(200), 64 * 1024));

    // A cap of zero keeps nothing but the status.
    let t = Transport::new(TransportConfig {
        destination: DestinationPolicy::allow_all(),
        max_response_bytes: 0,
        ..TransportConfig::default()
    });
    let out = post(&t, server.url("/big"), b"{}").await;
    assert_eq!((out.status, out.body_excerpt.len()), (Some(200), 0));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let t = local();
    let mut req = Request::new(
        format!("http://{addr}/").parse().unwrap(),
        Bytes::from_static(b"{}"),
    );
    req.timeout = Some(Duration::from_millis(300));
    let out = t.send(req).await;
    assert_eq!(out.error, Some(SendError::Timeout), "{out:?}");
    assert_eq!(out.status, None);
    assert!(
        out.duration >= Duration::from_millis(290),
        "{:?}",
        out.duration
    );
    assert!(out.duration < Duration::from_secs(2), "{:?}", out.duration);
    assert!(SendError::Timeout.is_retryable());

    // The config's request timeout applies when the request sets none.
    let t = Transport::new(TransportConfig {
        destination: DestinationPolicy::allow_all(),
        request_timeout: Duration::from_millis(200),
        ..TransportConfig::default()
    });
    let out = post(&t, format!("http://{addr}/").parse().unwrap(), b"{}").await;
    assert_eq!(out.error, Some(SendError::Timeout), "{out:?}");
    assert!(out.duration < Duration::from_secs(2), "{:?}", out.duration);
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = post(&local(), format!("http://{addr}/").parse().unwrap(), b"{}").await;
    assert_eq!(out.status, None);
    let Some(SendError::Connect(message)) = &out.error else {
        panic!("expected a connect error: {out:?}");
    };
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(out.error.as_ref().unwrap().is_retryable());
}

#[tokio::test]
async fn unresolvable_host_is_a_connect_error() {
    let out = post(
        &local(),
        "http://does-not-exist.invalid/".parse().unwrap(),
        b"{}",
    )
    .await;
    assert!(matches!(out.error, Some(SendError::Connect(_))), "{out:?}");
}

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        "zstd" => zstd::decode_all(body).unwrap(),
        other => panic!("unexpected encoding {other}"),
    }
}

#[tokio::test]
async fn bodies_are_compressed_above_the_threshold() {
    let server = serve("127.0.0.1:0", |_| respond(200, b"")).await;
    let t = local();
    let body = Bytes::from("{\"data\":\"".to_owned() + &"abcdefgh".repeat(500) + "\"}");
    for (encoding, name) in [(Encoding::Gzip, "gzip"), (Encoding::Zstd, "zstd")] {
        assert_eq!(encoding.as_str(), name);
        let mut req = Request::new(server.url("/"), body.clone());
        req.compression = Some((encoding, 1024));
        assert_eq!(t.send(req).await.status, Some(200));
        let s = server.seen().pop().unwrap();
        assert_eq!(s.headers["content-encoding"], name);
        assert_eq!(s.headers["content-type"], "application/json");
        assert!(
            s.body.len() < body.len() / 4,
            "{name}: {} bytes",
            s.body.len()
        );
        assert_eq!(
            s.headers["content-length"],
            s.body.len().to_string().as_str()
        );
        assert_eq!(decode(name, &s.body), body);

        // Below the threshold: sent as is.
        let mut req = Request::new(server.url("/"), Bytes::from_static(b"{\"small\":true}"));
        req.compression = Some((encoding, 1024));
        assert_eq!(t.send(req).await.status, Some(200));
        let s = server.seen().pop().unwrap();
        assert!(s.headers.get("content-encoding").is_none());
        assert_eq!(s.body, Bytes::from_static(b"{\"small\":true}"));

        // Exactly at the threshold: compressed.
        let mut req = Request::new(server.url("/"), body.clone());
        req.compression = Some((encoding, body.len()));
        assert_eq!(t.send(req).await.status, Some(200));
        let s = server.seen().pop().unwrap();
        assert_eq!(s.headers["content-encoding"], name);
        assert_eq!(decode(name, &s.body), body);
    }
}

fn assert_refused(out: &Outcome) {
    let Some(SendError::Refused(message)) = &out.error else {
        panic!("expected a refusal: {out:?}");
    };
    assert!(message.contains("refused by policy"), "{message}");
    assert!(message.contains("loopback"), "{message}");
    assert!(!out.error.as_ref().unwrap().is_retryable());
    assert_eq!(out.status, None);
}

#[tokio::test]
async fn public_only_refuses_loopback_destinations_before_connecting() {
    let v4 = serve("127.0.0.1:0", |_| respond(200, b"ok")).await;
    let v6 = serve("[::1]:0", |_| respond(200, b"ok")).await;
    let t = transport(DestinationPolicy::public_only());
    let default = Transport::new(TransportConfig::default());
    let localhost: Uri = format!("http://localhost:{}/", v4.addr.port())
        .parse()
        .unwrap();

    for t in [&t, &default] {
        assert_refused(&post(t, v4.url("/"), b"{}").await);
        assert_refused(&post(t, v6.url("/"), b"{}").await);
        assert_refused(&post(t, localhost.clone(), b"{}").await);
        // Other spellings that resolve to loopback.
        let mapped: Uri = format!("http://[::ffff:127.0.0.1]:{}/", v4.addr.port())
            .parse()
            .unwrap();
        assert_refused(&post(t, mapped, b"{}").await);
        let short: Uri = format!("http://127.1:{}/", v4.addr.port()).parse().unwrap();
        assert_refused(&post(t, short, b"{}").await);
        let https: Uri = format!("https://127.0.0.1:{}/", v4.addr.port())
            .parse()
            .unwrap();
        assert_refused(&post(t, https, b"{}").await);
    }
    let out = post(
        &t,
        format!("http://169.254.169.254:{}/", v4.addr.port())
            .parse()
            .unwrap(),
        b"{}",
    )
    .await;
    assert!(
        matches!(&out.error, Some(SendError::Refused(m)) if m.contains("metadata")),
        "{out:?}"
    );

    assert_eq!(v4.connections(), 0);
    assert_eq!(v6.connections(), 0);
    assert!(v4.seen().is_empty() && v6.seen().is_empty());

    // allow_all lets them all through.
    let all = local();
    for url in [v4.url("/"), v6.url("/"), localhost] {
        let out = post(&all, url.clone(), b"{}").await;
        assert_eq!(out.status, Some(200), "{url}: {out:?}");
    }
    assert_eq!(v4.seen().len() + v6.seen().len(), 3);
}

#[tokio::test]
async fn allow_list_lets_a_chosen_range_through() {
    let v4 = serve("127.0.0.1:0", |_| respond(200, b"ok")).await;
    let v6 = serve("[::1]:0", |_| respond(200, b"ok")).await;
    let t = transport(DestinationPolicy::public_only().allow("127.0.0.1/32".parse().unwrap()));
    let out = post(&t, v4.url("/"), b"{}").await;
    assert_eq!(out.status, Some(200), "{out:?}");
    // localhost resolves to 127.0.0.1 here, which the allow list covers.
    let localhost: Uri = format!("http://localhost:{}/", v4.addr.port())
        .parse()
        .unwrap();
    assert_eq!(post(&t, localhost, b"{}").await.status, Some(200));
    assert_refused(&post(&t, v6.url("/"), b"{}").await);
    assert_eq!(v6.connections(), 0);
}

#[tokio::test]
async fn invalid_urls_are_invalid_requests() {
    for bad in [
        "not a url",
        "ftp://x",
        "",
        "/relative/path",
        "http://",
        "file:///etc/passwd",
        "mailto:a@b.c",
    ] {
        let err = parse_url(bad).unwrap_err();
        assert!(
            matches!(err, SendError::InvalidRequest(_)),
            "{bad}: {err:?}"
        );
        assert!(!err.is_retryable());
        assert!(err.to_string().starts_with("invalid request: "), "{err}");
    }
    assert_eq!(
        parse_url("https://example.com/hook").unwrap().host(),
        Some("example.com")
    );

    let t = local();
    for url in ["ftp://x", "/relative", "x.test:80"] {
        let out = post(&t, url.parse().unwrap(), b"{}").await;
        assert!(
            matches!(out.error, Some(SendError::InvalidRequest(_))),
            "{url}: {out:?}"
        );
        assert_eq!(out.status, None);
    }
}

#[tokio::test]
async fn connections_are_reused() {
    let server = serve("127.0.0.1:0", |_| respond(200, b"ok")).await;
    let t = local();
    for _ in 0..20 {
        assert_eq!(post(&t, server.url("/"), b"{}").await.status, Some(200));
    }
    assert_eq!(server.connections(), 1);

    // Clones share the pool; concurrent sends all get through.
    let t2 = t.clone();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (t, url) = (t2.clone(), server.url("/"));
            tokio::spawn(async move { post(&t, url, b"{}").await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().status, Some(200));
    }
    assert_eq!(server.seen().len(), 84);
    assert!(server.connections() <= 64);
}

#[test]
fn send_errors_display_short_messages() {
    assert_eq!(SendError::Timeout.to_string(), "request timed out");
    assert_eq!(
        SendError::Connect("tcp connect error".into()).to_string(),
        "connection failed: tcp connect error"
    );
    assert_eq!(
        SendError::Other("x".into()).to_string(),
        "request failed: x"
    );
    assert!(SendError::Connect(String::new()).is_retryable());
    assert!(SendError::Other(String::new()).is_retryable());
    assert!(!SendError::Refused(String::new()).is_retryable());
    assert!(!SendError::InvalidRequest(String::new()).is_retryable());
    let defaults = TransportConfig::default();
    assert_eq!(defaults.connect_timeout, Duration::from_secs(5));
    assert_eq!(defaults.request_timeout, Duration::from_secs(15));
    assert_eq!(defaults.max_response_bytes, 64 * 1024);
    assert_eq!(defaults.pool_idle_per_host, 256);
    assert_eq!(defaults.pool_idle_timeout, Duration::from_secs(90));
    assert_eq!(defaults.destination, DestinationPolicy::public_only());
}
