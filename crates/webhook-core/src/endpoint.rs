//! Endpoints: where webhooks go and how they are delivered there.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Serialize};
use webhook_sdk::SignatureScheme;

use crate::{
    CircuitBreakerConfig, EndpointId, Error, RateLimit, Result, RetryPolicy, TenantId,
    retry::{format_duration, parse_duration},
};

/// Longest URL an endpoint may have, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// A signing secret. Its bytes never appear in `Debug` output or error messages.
///
/// A secret written `whsec_<base64>` signs with the decoded bytes; any other
/// secret signs with its raw bytes (see [`webhook_sdk::SigningKey::new`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes as given.
    pub fn new(bytes: impl AsRef<[u8]>) -> Self {
        Self(bytes.as_ref().to_vec())
    }

    /// The secret bytes as given. Handle with care: never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Stored form: a string when the secret is UTF-8, else `{"base64": ".."}`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SecretRepr {
    Text(String),
    Bytes { base64: String },
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        match std::str::from_utf8(&self.0) {
            Ok(text) => SecretRepr::Text(text.to_owned()),
            Err(_) => SecretRepr::Bytes {
                base64: base64::engine::general_purpose::STANDARD.encode(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        match SecretRepr::deserialize(d)? {
            SecretRepr::Text(text) => Ok(Self(text.into_bytes())),
            SecretRepr::Bytes { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Whether an endpoint's deliveries may overtake each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Deliveries run concurrently; a retrying delivery does not hold back later ones.
    #[default]
    Unordered,
    /// One delivery in flight at a time, in dispatch order: the next waits until the
    /// previous one is delivered or dead.
    Strict,
}

/// Several events sent in one request, as a signed JSON array of envelopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// Most events in one request.
    pub max_events: u32,
    /// Longest an event waits for others to join its batch.
    #[serde(with = "crate::retry::serde_duration")]
    pub max_wait: Duration,
}

/// Content encodings an endpoint may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentEncoding {
    /// `Content-Encoding: gzip`.
    Gzip,
    /// `Content-Encoding: zstd`.
    Zstd,
}

/// Compress request bodies of at least `min_size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// The encoding to use.
    pub encoding: ContentEncoding,
    /// Bodies smaller than this are sent as they are.
    pub min_size: u32,
}

/// Where webhooks go and how they are delivered there.
///
/// Built with [`Endpoint::new`] and the `with_*` methods; checked by
/// [`Endpoint::validate`] when it is registered. Its `Debug` output shows the names
/// of custom headers, not their values (they often carry credentials), and no secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Unique id.
    pub id: EndpointId,
    /// The `http` or `https` URL deliveries are POSTed to.
    pub url: String,
    /// The signing secret; without one, requests are not signed.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// The owning tenant; only events of the same tenant are delivered here.
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// Event-type globs this endpoint subscribes to (`user.*`, `*`, `order.created`).
    /// Empty means every event type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Deliveries per second and burst; `None` for no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Overrides the dispatcher's default retry policy.
    #[serde(default)]
    pub retry_policy: Option<RetryPolicy>,
    /// Overrides the dispatcher's default circuit breaker settings.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Overrides the dispatcher's request timeout.
    #[serde(default, with = "opt_duration_str")]
    pub timeout: Option<Duration>,
    /// Most requests in flight to this endpoint at once; `None` for the dispatcher default.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Disabled endpoints receive nothing; their pending deliveries wait.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Why the endpoint was disabled by the dispatcher (e.g. it answered 410 Gone).
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// How requests are signed.
    #[serde(default)]
    pub signature_scheme: SignatureScheme,
    /// Send several events per request.
    #[serde(default)]
    pub batching: Option<Batching>,
    /// Keep dispatch order.
    #[serde(default)]
    pub ordering: Ordering,
    /// Compress large bodies.
    #[serde(default)]
    pub compression: Option<Compression>,
}

fn yes() -> bool {
    true
}

impl Endpoint {
    /// An enabled endpoint with default settings.
    pub fn new(id: impl Into<EndpointId>, url: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            url: url.into(),
            secret: None,
            tenant_id: None,
            event_types: Vec::new(),
            headers: BTreeMap::new(),
            rate_limit: None,
            retry_policy: None,
            circuit_breaker: None,
            timeout: None,
            max_in_flight: None,
            enabled: true,
            disabled_reason: None,
            signature_scheme: SignatureScheme::default(),
            batching: None,
            ordering: Ordering::default(),
            compression: None,
        }
    }

    /// Sets the signing secret (`whsec_...` or raw bytes).
    #[must_use]
    pub fn with_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(Secret::new(secret));
        self
    }

    /// Sets the owning tenant.
    #[must_use]
    pub fn with_tenant_id(mut self, tenant: impl Into<TenantId>) -> Self {
        self.tenant_id = Some(tenant.into());
        self
    }

    /// Limits deliveries to `rate_per_sec` per second with bursts of `burst`.
    #[must_use]
    pub fn with_rate_limit(mut self, rate_per_sec: u32, burst: u32) -> Self {
        self.rate_limit = Some(RateLimit {
            rate_per_sec,
            burst,
        });
        self
    }

    /// Exponential backoff from `initial_delay_ms` up to `max_delay_ms`, giving up after
    /// `max_retries` retries. For explicit schedules use [`Endpoint::with_retry`].
    #[must_use]
    pub fn with_retry_policy(
        self,
        initial_delay_ms: u64,
        max_delay_ms: u64,
        max_retries: u32,
    ) -> Self {
        self.with_retry(RetryPolicy::exponential(
            Duration::from_millis(initial_delay_ms),
            Duration::from_millis(max_delay_ms),
            max_retries.saturating_add(1),
        ))
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// Subscribes to event types matching these globs.
    #[must_use]
    pub fn with_event_types<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = globs.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a request header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the signature scheme.
    #[must_use]
    pub fn with_signature_scheme(mut self, scheme: SignatureScheme) -> Self {
        self.signature_scheme = scheme;
        self
    }

    /// Sends up to `max_events` events per request, waiting at most `max_wait`.
    #[must_use]
    pub fn with_batching(mut self, max_events: u32, max_wait: Duration) -> Self {
        self.batching = Some(Batching {
            max_events,
            max_wait,
        });
        self
    }

    /// Sets the ordering guarantee.
    #[must_use]
    pub fn with_ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }

    /// Compresses bodies of at least `min_size` bytes.
    #[must_use]
    pub fn with_compression(mut self, encoding: ContentEncoding, min_size: u32) -> Self {
        self.compression = Some(Compression { encoding, min_size });
        self
    }

    /// Caps the requests in flight to this endpoint.
    #[must_use]
    pub fn with_max_in_flight(mut self, max: u32) -> Self {
        self.max_in_flight = Some(max);
        self
    }

    /// Enables or disables the endpoint.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Checks every field of an endpoint being created or changed; the error names the
    /// first invalid one.
    pub fn validate(&self) -> Result<()> {
        if !crate::is_valid_id(self.id.as_str()) {
            return Err(Error::invalid(
                "id",
                "must be 1 to 256 bytes without control characters",
            ));
        }
        if let Some(tenant) = &self.tenant_id
            && !crate::is_valid_id(tenant.as_str())
        {
            return Err(Error::invalid(
                "tenant_id",
                "must be 1 to 256 bytes without control characters",
            ));
        }
        if let Some(secret) = &self.secret {
            validate_secret(secret.expose())?;
        }
        self.validate_usable()
    }

    /// Checks what delivering to the endpoint needs: [`validate`](Self::validate)
    /// without its rules on the form of ids and secrets, which endpoints stored before
    /// those rules may break (they are still delivered as before: a `whsec_` secret
    /// that is not base64 is used as raw bytes).
    pub fn validate_usable(&self) -> Result<()> {
        if self.id.is_empty() || self.id.as_str().len() > crate::MAX_ID_LEN {
            return Err(Error::invalid("id", "must be 1 to 256 bytes"));
        }
        validate_url(&self.url)?;
        if self.secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
            return Err(Error::invalid("secret", "must not be empty"));
        }
        EventTypeFilter::new(&self.event_types)?;
        for (name, value) in &self.headers {
            if !is_header_name(name) {
                return Err(Error::invalid(
                    "headers",
                    format!("{name:?} is not a valid header name"),
                ));
            }
            if is_reserved_header(name, &self.signature_scheme) {
                return Err(Error::invalid(
                    "headers",
                    format!("{name:?} is set by the dispatcher and cannot be overridden"),
                ));
            }
            // HTTP field values: no control characters but horizontal tab.
            if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(Error::invalid(
                    "headers",
                    format!("value of {name:?} contains a control character"),
                ));
            }
        }
        if let SignatureScheme::SplitTimestamp {
            signature_header,
            timestamp_header,
        } = &self.signature_scheme
        {
            for name in [signature_header, timestamp_header] {
                if !is_header_name(name) {
                    return Err(Error::invalid(
                        "signature_scheme",
                        format!("{name:?} is not a valid header name"),
                    ));
                }
            }
            if signature_header.eq_ignore_ascii_case(timestamp_header) {
                return Err(Error::invalid(
                    "signature_scheme",
                    "the signature and timestamp headers must differ",
                ));
            }
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        if let Some(policy) = &self.retry_policy {
            policy.validate()?;
        }
        if let Some(breaker) = &self.circuit_breaker {
            breaker.validate()?;
        }
        if self
            .timeout
            .is_some_and(|t| t.is_zero() || t > Duration::from_secs(300))
        {
            return Err(Error::invalid("timeout", "must be between 1ms and 300s"));
        }
        if self.max_in_flight == Some(0) {
            return Err(Error::invalid("max_in_flight", "must be at least 1"));
        }
        if let Some(b) = &self.batching {
            if b.max_events == 0 || b.max_events > 1000 {
                return Err(Error::invalid(
                    "batching.max_events",
                    "must be between 1 and 1000",
                ));
            }
            if b.max_wait > Duration::from_secs(60) {
                return Err(Error::invalid("batching.max_wait", "must be at most 60s"));
            }
        }
        Ok(())
    }

    /// Whether this endpoint subscribes to `event_type` (compiles the globs: for hot
    /// paths keep an [`EventTypeFilter`] instead).
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        EventTypeFilter::new(&self.event_types).is_ok_and(|f| f.matches(event_type))
    }
}

/// Whether the dispatcher sets `name` itself (framing, compression, signing), so an
/// endpoint's custom header must not override or duplicate it.
fn is_reserved_header(name: &str, scheme: &SignatureScheme) -> bool {
    const RESERVED: [&str; 10] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "content-encoding",
        webhook_sdk::headers::WEBHOOK_ID,
        webhook_sdk::headers::WEBHOOK_TIMESTAMP,
        webhook_sdk::headers::WEBHOOK_SIGNATURE,
    ];
    let timestamp_header = match scheme {
        SignatureScheme::SplitTimestamp {
            timestamp_header, ..
        } => Some(timestamp_header.as_str()),
        _ => None,
    };
    RESERVED
        .iter()
        .copied()
        .chain([scheme.signature_header()])
        .chain(timestamp_header)
        .any(|reserved| reserved.eq_ignore_ascii_case(name))
}

/// Whether `name` is an HTTP header name (an RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `url` for `Debug` output: scheme, host and port only. Paths and queries often
/// carry credentials (chat webhook tokens, `?token=`).
fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if parsed.path() == "/" && parsed.query().is_none() {
                "/"
            } else {
                "/<redacted>"
            };
            format!(
                "{}://{}{port}{rest}",
                parsed.scheme(),
                parsed.host_str().unwrap_or("")
            )
        }
        Err(_) => "<not a URL>".to_owned(),
    }
}

/// Checks a signing secret: not empty, and base64 after a `whsec_` prefix (a
/// receiver's Standard Webhooks library decodes what follows `whsec_`: one that does
/// not decode is a mistyped or truncated secret, not a raw key).
pub fn validate_secret(secret: &[u8]) -> Result<()> {
    if secret.is_empty() {
        return Err(Error::invalid("secret", "must not be empty"));
    }
    if secret.starts_with(webhook_sdk::WHSEC_PREFIX.as_bytes())
        && std::str::from_utf8(secret)
            .ok()
            .and_then(webhook_sdk::SigningKey::from_base64)
            .is_none()
    {
        return Err(Error::invalid(
            "secret",
            "a secret starting with whsec_ must continue with base64",
        ));
    }
    Ok(())
}

/// Checks that `url` is an absolute `http` or `https` URL with a host.
pub fn validate_url(url: &str) -> Result<url::Url> {
    if url.len() > MAX_URL_LEN {
        return Err(Error::invalid(
            "url",
            format!("longer than {MAX_URL_LEN} bytes"),
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| Error::invalid("url", format!("{e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid(
            "url",
            format!("scheme {:?} is not http or https", parsed.scheme()),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid("url", "has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::invalid("url", "must not contain credentials"));
    }
    Ok(parsed)
}

/// A compiled set of event-type globs.
#[derive(Clone, Debug)]
pub struct EventTypeFilter {
    globs: Option<globset::GlobSet>,
}

impl EventTypeFilter {
    /// Compiles `globs`; an empty list matches every event type.
    pub fn new(globs: &[String]) -> Result<Self> {
        if globs.is_empty() {
            return Ok(Self { globs: None });
        }
        let mut builder = globset::GlobSetBuilder::new();
        for glob in globs {
            if glob.is_empty() || glob.len() > 256 {
                return Err(Error::invalid(
                    "event_types",
                    "each glob must be 1 to 256 bytes",
                ));
            }
            let compiled = globset::GlobBuilder::new(glob)
                .literal_separator(false)
                .build()
                .map_err(|e| Error::invalid("event_types", format!("{glob:?}: {e}")))?;
            builder.add(compiled);
        }
        let set = builder
            .build()
            .map_err(|e| Error::invalid("event_types", e.to_string()))?;
        Ok(Self { globs: Some(set) })
    }

    /// Whether `event_type` matches. An event without a type matches only an
    /// endpoint that subscribes to everything (no globs, or `*`).
    pub fn matches(&self, event_type: &str) -> bool {
        self.globs
            .as_ref()
            .is_none_or(|set| set.is_match(event_type))
    }
}

mod opt_duration_str {
    use super::{format_duration, parse_duration};
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>> as serde::Deserialize>::deserialize(d)?;
        text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id,
            url,
            secret,
            tenant_id,
            event_types,
            headers,
            rate_limit,
            retry_policy,
            circuit_breaker,
            timeout,
            max_in_flight,
            enabled,
            disabled_reason,
            signature_scheme,
            batching,
            ordering,
            compression,
        } = self;
        let header_names: Vec<&str> = headers.keys().map(String::as_str).collect();
        f.debug_struct("Endpoint")
            .field("id", id)
            .field("url", &redacted_url(url))
            .field("secret", secret)
            .field("tenant_id", tenant_id)
            .field("event_types", event_types)
            .field("headers", &header_names)
            .field("rate_limit", rate_limit)
            .field("retry_policy", retry_policy)
            .field("circuit_breaker", circuit_breaker)
            .field("timeout", timeout)
            .field("max_in_flight", max_in_flight)
            .field("enabled", enabled)
            .field("disabled_reason", disabled_reason)
            .field("signature_scheme", signature_scheme)
            .field("batching", batching)
            .field("ordering", ordering)
            .field("compression", compression)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_header_names_not_values() {
        let endpoint = Endpoint::new("a", "https://example.test/")
            .with_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .with_header("Authorization", "Bearer tok_live_s3cret");
        let shown = format!("{endpoint:?}");
        assert!(shown.contains("Authorization"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("MfKQ9r8"), "{shown}");
    }

    #[test]
    fn debug_shows_where_a_url_points_not_its_path_or_query() {
        let endpoint = Endpoint::new(
            "a",
            "https://hooks.example.test:8443/services/T0/XYZ?token=tok1",
        );
        let shown = format!("{endpoint:?}");
        assert!(
            shown.contains("https://hooks.example.test:8443/<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains("XYZ") && !shown.contains("tok1"), "{shown}");
        let plain = format!("{:?}", Endpoint::new("a", "http://[::1]/"));
        assert!(plain.contains("http://[::1]/\""), "{plain}");
    }

    /// The field `endpoint.validate()` names in its refusal.
    fn refused_field(endpoint: &Endpoint) -> &'static str {
        match endpoint.validate() {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn ids_and_tenants_have_no_control_characters() {
        for (endpoint, field) in [
            (Endpoint::new("a\r\nb", "https://x.test/"), "id"),
            (Endpoint::new("", "https://x.test/"), "id"),
            (Endpoint::new("x".repeat(257), "https://x.test/"), "id"),
            (
                Endpoint::new("a", "https://x.test/").with_tenant_id(""),
                "tenant_id",
            ),
            (
                Endpoint::new("a", "https://x.test/").with_tenant_id("t\n1"),
                "tenant_id",
            ),
        ] {
            assert_eq!(refused_field(&endpoint), field, "{endpoint:?}");
        }
        Endpoint::new("orders/v2:eu~1 é", "https://x.test/")
            .with_tenant_id("tenant_a")
            .validate()
            .unwrap();
    }

    #[test]
    fn an_endpoint_stored_before_the_id_and_secret_rules_is_still_usable() {
        let old = Endpoint::new("a", "https://x.test/")
            .with_tenant_id("")
            .with_secret("whsec_test123");
        assert!(old.validate().is_err());
        old.validate_usable().unwrap();
    }

    #[test]
    fn a_whsec_secret_must_be_base64() {
        for bad in [
            "whsec_",
            "whsec_not base64!",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
        ] {
            let endpoint = Endpoint::new("e", "https://x.test/").with_secret(bad);
            assert_eq!(refused_field(&endpoint), "secret", "{bad:?}");
        }
        for good in [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_c2VjcmV0",
            "raw secret",
        ] {
            Endpoint::new("e", "https://x.test/")
                .with_secret(good)
                .validate()
                .unwrap();
        }
    }

    #[test]
    fn seed_builder_compiles_and_validates() {
        let ep = Endpoint::new("orders", "https://example.com/webhook")
            .with_secret(b"supersecret")
            .with_tenant_id("tenant_a")
            .with_rate_limit(100, 200)
            .with_retry_policy(200, 2_000, 50);
        ep.validate().unwrap();
        assert_eq!(ep.retry_policy.unwrap().max_attempts(), 51);
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        for bad in [
            "ftp://x.test/",
            "not a url",
            "http://",
            "file:///etc/passwd",
            "https://u:p@x.test/",
        ] {
            let err = Endpoint::new("e", bad).validate().unwrap_err();
            assert!(
                matches!(err, Error::Invalid { field: "url", .. }),
                "{bad}: {err}"
            );
        }
        let long = format!("https://x.test/{}", "a".repeat(MAX_URL_LEN));
        assert!(Endpoint::new("e", long).validate().is_err());
        Endpoint::new("e", "http://127.0.0.1:8080/hook")
            .validate()
            .unwrap();
    }

    #[test]
    fn headers_the_dispatcher_sets_are_reserved() {
        for name in ["Webhook-Signature", "webhook-id", "Content-Length", "host"] {
            let ep = Endpoint::new("e", "https://x.test").with_header(name, "v");
            match ep.validate() {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, "headers", "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        let split = Endpoint::new("e", "https://x.test")
            .with_signature_scheme(SignatureScheme::split_timestamp());
        assert!(
            split
                .with_header("X-Webhook-Timestamp", "1")
                .validate()
                .is_err()
        );
        // Content-Type may be overridden (e.g. a CloudEvents media type).
        let ep = Endpoint::new("e", "https://x.test").with_header("Content-Type", "text/plain");
        assert!(ep.validate().is_ok());
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                Endpoint::new("e", "https://x.test").with_event_types(["user.["]),
                "event_types",
            ),
            (
                Endpoint::new("e", "https://x.test").with_header("bad name", "v"),
                "headers",
            ),
            (
                Endpoint::new("e", "https://x.test").with_header("X-A", "v\r\nX-B: 1"),
                "headers",
            ),
            (
                Endpoint::new("e", "https://x.test").with_timeout(Duration::ZERO),
                "timeout",
            ),
            (
                Endpoint::new("e", "https://x.test").with_batching(0, Duration::from_millis(5)),
                "batching.max_events",
            ),
            (Endpoint::new("", "https://x.test"), "id"),
            (
                Endpoint::new("e", "https://x.test").with_secret(""),
                "secret",
            ),
        ];
        for (ep, field) in cases {
            match ep.validate() {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn globs_route_event_types() {
        let f = EventTypeFilter::new(&["user.*".into(), "order.created".into()]).unwrap();
        assert!(f.matches("user.created"));
        assert!(f.matches("user.deleted"));
        assert!(f.matches("order.created"));
        assert!(!f.matches("order.updated"));
        assert!(!f.matches("users.created"));
        assert!(
            EventTypeFilter::new(&["*".into()])
                .unwrap()
                .matches("anything.at.all")
        );
        assert!(EventTypeFilter::new(&[]).unwrap().matches("x"));
    }

    #[test]
    fn secrets_are_redacted_and_round_trip() {
        let ep = Endpoint::new("e", "https://x.test").with_secret(b"supersecret");
        assert!(!format!("{ep:?}").contains("supersecret"));
        let json = serde_json::to_string(&ep).unwrap();
        let back: Endpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ep);
        let binary = Endpoint::new("e", "https://x.test").with_secret([0xff, 0x00, 0x80]);
        let back: Endpoint =
            serde_json::from_str(&serde_json::to_string(&binary).unwrap()).unwrap();
        assert_eq!(back.secret.unwrap().expose(), &[0xff, 0x00, 0x80]);
    }

    #[test]
    fn minimal_json_gets_defaults() {
        let ep: Endpoint =
            serde_json::from_str(r#"{"id":"a","url":"https://x.test","timeout":"5s"}"#).unwrap();
        assert!(ep.enabled);
        assert_eq!(ep.timeout, Some(Duration::from_secs(5)));
        assert_eq!(ep.signature_scheme, SignatureScheme::StandardWebhooks);
    }
}
