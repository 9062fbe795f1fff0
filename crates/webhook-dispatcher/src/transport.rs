//! The HTTP transport: one `POST` per delivery attempt, over pooled connections.
//!
//! [`Transport::send`] never fails: whatever happens (a response of any status, a
//! timeout, a refused connection, an address refused by the
//! [`DestinationPolicy`]) is reported in the returned [`Outcome`]. Redirects are
//! not followed: a 3xx response is an outcome like any other.

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    io::{self, Write as _},
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Uri,
    header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, USER_AGENT},
    uri::Scheme,
};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, dns::Name},
    },
    rt::{TokioExecutor, TokioTimer},
};

use crate::destination::{DestinationPolicy, RefusedDestination};

const DEFAULT_USER_AGENT: &str = concat!("webhook-dispatcher/", env!("CARGO_PKG_VERSION"));

/// Settings of a [`Transport`].
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Most time to establish a TCP connection (default 5 s). Exceeding it yields
    /// [`SendError::Timeout`].
    pub connect_timeout: Duration,
    /// Most time for a whole attempt: connecting, TLS, sending, and reading the
    /// (capped) response (default 15 s). [`Request::timeout`] overrides it.
    pub request_timeout: Duration,
    /// Most response body bytes read and kept (default 64 KiB); reading stops there.
    pub max_response_bytes: usize,
    /// `User-Agent` header, unless a request sets its own (default
    /// `webhook-dispatcher/<version>`). A value that is not a valid header value is
    /// replaced by the default.
    pub user_agent: String,
    /// Most idle pooled connections kept per host (default 256).
    pub pool_idle_per_host: usize,
    /// How long an idle pooled connection is kept (default 90 s).
    pub pool_idle_timeout: Duration,
    /// Which destination addresses may be contacted (default
    /// [`DestinationPolicy::public_only`]).
    pub destination: DestinationPolicy,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            max_response_bytes: 64 * 1024,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            pool_idle_per_host: 256,
            pool_idle_timeout: Duration::from_secs(90),
            destination: DestinationPolicy::public_only(),
        }
    }
}

/// A content encoding for request bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `Content-Encoding: gzip` (compression level 1, the fastest).
    Gzip,
    /// `Content-Encoding: zstd` (compression level 3, zstd's default).
    Zstd,
}

impl Encoding {
    /// The `Content-Encoding` token: `"gzip"` or `"zstd"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// One attempt's request. The method is always `POST`.
#[derive(Clone, Debug)]
pub struct Request {
    /// Absolute `http` or `https` URL; see [`parse_url`]. A URL of any other kind
    /// yields [`SendError::InvalidRequest`].
    pub url: Uri,
    /// Extra headers, sent as given (repeated names are all sent). `Content-Type`
    /// defaults to `application/json` and `User-Agent` to the configured one when
    /// not set here; `Content-Encoding` and `Content-Length` are set by the transport.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, uncompressed.
    pub body: Bytes,
    /// Overrides [`TransportConfig::request_timeout`].
    pub timeout: Option<Duration>,
    /// Compress the body with this encoding when it is at least this many bytes.
    pub compression: Option<(Encoding, usize)>,
}

impl Request {
    /// A request to `url` with `body`, no extra headers, the configured timeout and
    /// no compression.
    pub fn new(url: Uri, body: Bytes) -> Self {
        Self {
            url,
            headers: Vec::new(),
            body,
            timeout: None,
            compression: None,
        }
    }
}

/// Parses and checks a webhook URL: it must be an absolute `http` or `https` URL
/// with a host. Parse once per endpoint and clone the [`Uri`] per request (cheap).
///
/// ```
/// use webhook_dispatcher::transport::{SendError, parse_url};
///
/// assert!(parse_url("https://example.com/hook").is_ok());
/// assert!(matches!(parse_url("ftp://x"), Err(SendError::InvalidRequest(_))));
/// assert!(matches!(parse_url("not a url"), Err(SendError::InvalidRequest(_))));
/// ```
pub fn parse_url(url: &str) -> Result<Uri, SendError> {
    let uri = url
        .parse::<Uri>()
        .map_err(|e| SendError::InvalidRequest(format!("invalid URL: {e}")))?;
    check_url(&uri)?;
    Ok(uri)
}

fn check_url(uri: &Uri) -> Result<(), SendError> {
    match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => {}
        Some(s) => {
            return Err(SendError::InvalidRequest(format!(
                "URL scheme {s:?} is not http or https"
            )));
        }
        None => return Err(SendError::InvalidRequest("URL is not absolute".to_owned())),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err(SendError::InvalidRequest("URL has no host".to_owned())),
    }
}

/// What came of one attempt. A response of any status is an outcome with
/// `status` set and no `error`; a failure before a response has `error` set.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The response status, when a response came.
    pub status: Option<u16>,
    /// The start of the response body, at most
    /// [`TransportConfig::max_response_bytes`] bytes.
    pub body_excerpt: Bytes,
    /// The raw `Retry-After` header value, when present and visible ASCII.
    pub retry_after: Option<String>,
    /// Why no response came.
    pub error: Option<SendError>,
    /// How long the attempt took.
    pub duration: Duration,
}

impl Outcome {
    /// An outcome without a response, failed with `error` after `duration`.
    pub fn failed(error: SendError, duration: Duration) -> Self {
        Self {
            error: Some(error),
            duration,
            ..Self::default()
        }
    }

    /// Whether a 2xx response came.
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Why an attempt got no response. The messages never contain header values or
/// bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The attempt took longer than its timeout (connecting included).
    Timeout,
    /// No connection could be established (refused, unreachable, DNS, TLS).
    Connect(String),
    /// The destination address was refused by the [`DestinationPolicy`].
    Refused(String),
    /// The request cannot be sent (invalid URL).
    InvalidRequest(String),
    /// The connection failed after it was established, or anything else.
    Other(String),
}

impl SendError {
    /// Whether trying again later may succeed: `Timeout`, `Connect` and `Other`.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout | Self::Connect(_) | Self::Other(_))
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("request timed out"),
            Self::Connect(m) => write!(f, "connection failed: {m}"),
            Self::Refused(m) => write!(f, "{m}"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::Other(m) => write!(f, "request failed: {m}"),
        }
    }
}

impl StdError for SendError {}

type HttpsClient = Client<HttpsConnector<HttpConnector<PolicyResolver>>, Full<Bytes>>;

/// Sends webhook requests over a shared connection pool. Cloning is cheap and
/// shares the pool.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    client: HttpsClient,
    user_agent: HeaderValue,
    request_timeout: Duration,
    max_response_bytes: usize,
    policy: Arc<DestinationPolicy>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("request_timeout", &self.inner.request_timeout)
            .field("max_response_bytes", &self.inner.max_response_bytes)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport with its own connection pool. HTTPS uses rustls (ring, Mozilla's
    /// roots) and negotiates HTTP/2 or HTTP/1.1; plain HTTP uses HTTP/1.1.
    /// Building needs no Tokio runtime; [`send`](Self::send) must run inside one.
    pub fn new(config: TransportConfig) -> Self {
        let policy = Arc::new(config.destination);
        let mut http = HttpConnector::new_with_resolver(PolicyResolver {
            policy: Arc::clone(&policy),
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));

        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);

        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_idle_per_host)
            .build(https);

        let user_agent = HeaderValue::from_str(&config.user_agent)
            .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_USER_AGENT));
        Self {
            inner: Arc::new(Inner {
                client,
                user_agent,
                request_timeout: config.request_timeout,
                max_response_bytes: config.max_response_bytes,
                policy,
            }),
        }
    }

    /// Sends `request` as one `POST` and reports what came of it; never fails.
    pub async fn send(&self, request: Request) -> Outcome {
        let start = Instant::now();
        let timeout = request.timeout.unwrap_or(self.inner.request_timeout);
        let mut outcome = match tokio::time::timeout(timeout, self.attempt(request)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => Outcome::failed(error, Duration::ZERO),
            Err(_elapsed) => Outcome::failed(SendError::Timeout, Duration::ZERO),
        };
        outcome.duration = start.elapsed();
        outcome
    }

    async fn attempt(&self, request: Request) -> Result<Outcome, SendError> {
        let inner = &*self.inner;
        check_url(&request.url)?;
        if !inner.policy.allows_all() {
            check_literal_host(&inner.policy, &request.url)?;
        }

        let mut headers = HeaderMap::with_capacity(request.headers.len() + 3);
        for (name, value) in request.headers {
            headers.append(name, value);
        }
        // The body decides the length; a stale caller value would corrupt the exchange.
        headers.remove(CONTENT_LENGTH);
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, inner.user_agent.clone());
        }
        let body = match request.compression {
            Some((encoding, min)) if request.body.len() >= min => {
                let compressed = compress(encoding, &request.body).map_err(|e| {
                    SendError::Other(format!("{} compression failed: {e}", encoding.as_str()))
                })?;
                headers.insert(CONTENT_ENCODING, encoding_header(encoding));
                compressed
            }
            _ => request.body,
        };

        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = request.url;
        *req.headers_mut() = headers;

        let response = inner.client.request(req).await.map_err(|e| classify(&e))?;
        let (parts, body) = response.into_parts();
        let retry_after = parts
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body_excerpt = read_capped(body, inner.max_response_bytes).await;
        Ok(Outcome {
            status: Some(parts.status.as_u16()),
            body_excerpt,
            retry_after,
            error: None,
            duration: Duration::ZERO,
        })
    }
}

fn encoding_header(encoding: Encoding) -> HeaderValue {
    match encoding {
        Encoding::Gzip => HeaderValue::from_static("gzip"),
        Encoding::Zstd => HeaderValue::from_static("zstd"),
    }
}

fn compress(encoding: Encoding, body: &[u8]) -> io::Result<Bytes> {
    match encoding {
        Encoding::Gzip => {
            let out = Vec::with_capacity(body.len() / 2 + 64);
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            enc.write_all(body)?;
            enc.finish().map(Bytes::from)
        }
        Encoding::Zstd => {
            zstd::bulk::compress(body, zstd::DEFAULT_COMPRESSION_LEVEL).map(Bytes::from)
        }
    }
}

/// Refuses an IP-literal host the policy refuses: the connector connects to IP
/// literals without asking the resolver. The host is parsed exactly as hyper-util
/// parses it, so what it takes for an IP literal is checked here.
fn check_literal_host(policy: &DestinationPolicy, uri: &Uri) -> Result<(), SendError> {
    let host = uri.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match host.parse::<IpAddr>() {
        Ok(ip) => policy
            .check(ip)
            .map_err(|r| SendError::Refused(r.to_string())),
        Err(_) => Ok(()),
    }
}

/// Reads at most `cap` bytes of `body`, then stops (dropping the rest, which closes
/// the connection rather than returning it to the pool).
async fn read_capped(mut body: Incoming, cap: usize) -> Bytes {
    // The common case, one data frame, is kept as is without copying.
    let mut first = Bytes::new();
    let mut rest: Option<BytesMut> = None;
    loop {
        let len = rest.as_ref().map_or(first.len(), BytesMut::len);
        if len >= cap && !body.is_end_stream() {
            break;
        }
        let Some(Ok(frame)) = body.frame().await else {
            // End of body, or an error after the status came: keep what was read.
            break;
        };
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers
        };
        data.truncate(cap - len);
        if data.is_empty() {
            continue;
        }
        match &mut rest {
            Some(buf) => buf.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut buf =
                    BytesMut::with_capacity((first.len() + data.len()).max(cap.min(16 * 1024)));
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
                rest = Some(buf);
            }
        }
    }
    rest.map_or(first, BytesMut::freeze)
}

/// Turns a client error into a [`SendError`], by its cause chain.
fn classify(err: &hyper_util::client::legacy::Error) -> SendError {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<PolicyRefusal>() {
            return SendError::Refused(refused.to_string());
        }
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            return SendError::Timeout;
        }
        source = e.source();
    }
    let message = describe(err);
    if err.is_connect() {
        SendError::Connect(message)
    } else {
        SendError::Other(message)
    }
}

/// The messages of `err`'s causes, joined by `": "`, skipping the top-level
/// "client error (Kind)" when there are causes and repeats of a message already
/// contained in the previous one.
fn describe(err: &hyper_util::client::legacy::Error) -> String {
    let mut out = String::new();
    let mut source = err.source();
    let mut previous = String::new();
    while let Some(e) = source {
        let msg = e.to_string();
        if !msg.is_empty() && !previous.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
        previous = msg;
        source = e.source();
    }
    if out.is_empty() { err.to_string() } else { out }
}

/// The resolver of the connector: resolves with the system resolver and keeps only
/// the addresses the policy allows.
#[derive(Clone)]
struct PolicyResolver {
    policy: Arc<DestinationPolicy>,
}

type BoxError = Box<dyn StdError + Send + Sync>;
type ResolveFuture =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, BoxError>> + Send>>;

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if policy.allows_all() {
                return Ok(addrs.into_iter());
            }
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        refused.get_or_insert(r);
                        false
                    }
                })
                .collect();
            match refused {
                Some(first) if allowed.is_empty() => Err(Box::new(PolicyRefusal {
                    host: name.as_str().to_owned(),
                    first,
                }) as BoxError),
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

/// A host name that resolved only to addresses the policy refuses.
#[derive(Debug)]
struct PolicyRefusal {
    host: String,
    first: RefusedDestination,
}

impl fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "destination {} refused by policy: it resolves to {} ({})",
            self.host,
            self.first.ip(),
            self.first.reason()
        )
    }
}

impl StdError for PolicyRefusal {}

/// The rustls client configuration: ring, TLS 1.2 and 1.3, Mozilla's roots, ALPN
/// set by the connector builder.
fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // Cannot fail: the ring provider supports both default protocol versions.
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_webpki_roots()
        .with_no_client_auth()
}
