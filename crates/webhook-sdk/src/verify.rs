//! The receiver side: header lookup and signature verification.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::headers::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, X_WEBHOOK_SIGNATURE};
use crate::util::{DecimalI64, TAG_LEN, ct_eq, decode_hex_tag, parse_timestamp};
use crate::{SignatureScheme, SigningKey, VerifyError};

/// Default timestamp tolerance of receivers: 5 minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Length of a base64 (padded) HMAC-SHA256 tag.
const B64_TAG_LEN: usize = 44;

/// Where a verifier reads request headers from.
///
/// Implemented for slices, arrays and `Vec`s of `(name, value)` pairs and for
/// `HashMap`/`BTreeMap`, with any name type that is `AsRef<str>` and any
/// value type that is `AsRef<[u8]>` (`&str`, `String`, `&[u8]`, `Vec<u8>`),
/// and for references to all of those. So `&[(&str, &str)]`,
/// `Vec<(String, String)>`, `&HashMap<String, String>` and the output of
/// [`SignatureScheme::sign`] all work as they are.
///
/// Values are bytes so that sources holding raw header bytes (such as
/// `http::HeaderValue::as_bytes`) need no lossy conversion; the verifier
/// rejects values that are not UTF-8 with [`VerifyError::InvalidHeader`].
pub trait HeaderSource {
    /// The value of the first header named `name`, compared ignoring ASCII
    /// case, or `None`.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl<T: HeaderSource + ?Sized> HeaderSource for &T {
    fn header(&self, name: &str) -> Option<&[u8]> {
        (**self).header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> HeaderSource for [(K, V)] {
    fn header(&self, name: &str) -> Option<&[u8]> {
        find(self.iter().map(|(k, v)| (k, v)), name)
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>, const N: usize> HeaderSource for [(K, V); N] {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.as_slice().header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> HeaderSource for Vec<(K, V)> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.as_slice().header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>, S: BuildHasher> HeaderSource for HashMap<K, V, S> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        find(self.iter(), name)
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> HeaderSource for BTreeMap<K, V> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        find(self.iter(), name)
    }
}

fn find<'a, K, V>(mut pairs: impl Iterator<Item = (&'a K, &'a V)>, name: &str) -> Option<&'a [u8]>
where
    K: AsRef<str> + 'a,
    V: AsRef<[u8]> + 'a,
{
    pairs
        .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// A required header as text: missing or empty is
/// [`VerifyError::MissingHeader`], non-UTF-8 is [`VerifyError::InvalidHeader`].
fn required<'h, H: HeaderSource + ?Sized>(
    headers: &'h H,
    name: &str,
) -> Result<&'h str, VerifyError> {
    required_value(headers.header(name), name)
}

fn required_value<'v>(value: Option<&'v [u8]>, name: &str) -> Result<&'v str, VerifyError> {
    match value {
        None | Some([]) => Err(VerifyError::MissingHeader(name.to_owned())),
        Some(bytes) => std::str::from_utf8(bytes).map_err(|_| VerifyError::InvalidHeader {
            header: name.to_owned(),
            reason: "value is not valid UTF-8",
        }),
    }
}

/// The accepted age window, in seconds.
#[derive(Clone, Copy)]
struct Window {
    past: u64,
    future: u64,
}

impl Window {
    fn check(self, timestamp: i64, now: i64) -> Result<(), VerifyError> {
        let age = i128::from(now) - i128::from(timestamp);
        if age > i128::from(self.past) {
            Err(VerifyError::Expired)
        } else if -age > i128::from(self.future) {
            Err(VerifyError::FutureTimestamp)
        } else {
            Ok(())
        }
    }
}

/// Verifies requests of one [`SignatureScheme`] against one or more secrets.
///
/// Build it once and reuse it: the HMAC keys are precomputed. With several
/// secrets (rotation on the receiver side) a request passes if any secret
/// matches any of its signatures. All comparisons are constant time, and no
/// input makes it panic.
///
/// It never reads the clock: the caller passes `now`.
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: Vec<SigningKey>,
    scheme: SignatureScheme,
    tolerance: Duration,
    future_tolerance: Option<Duration>,
}

impl Verifier {
    /// A verifier for one secret (decoded as by [`SigningKey::new`]), with
    /// the [`DEFAULT_TOLERANCE`] of 5 minutes.
    pub fn new(secret: impl AsRef<[u8]>, scheme: SignatureScheme) -> Self {
        Self::from_keys([SigningKey::new(secret.as_ref())], scheme)
    }

    /// A verifier accepting any of several secrets (rotation).
    pub fn with_secrets<I>(secrets: I, scheme: SignatureScheme) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        Self::from_keys(
            secrets.into_iter().map(|s| SigningKey::new(s.as_ref())),
            scheme,
        )
    }

    /// A verifier accepting any of the given keys. With no keys at all,
    /// every request fails with [`VerifyError::NoMatchingSignature`].
    pub fn from_keys(keys: impl IntoIterator<Item = SigningKey>, scheme: SignatureScheme) -> Self {
        Self {
            keys: keys.into_iter().collect(),
            scheme,
            tolerance: DEFAULT_TOLERANCE,
            future_tolerance: None,
        }
    }

    /// Sets how old a timestamp may be. Also sets how far in the future it
    /// may be, except for [`SignatureScheme::SplitTimestamp`], which rejects
    /// every future timestamp unless [`Verifier::with_future_tolerance`] is
    /// set. Sub-second parts are ignored. A timestamp exactly `tolerance`
    /// old is accepted.
    ///
    /// Ignored by [`SignatureScheme::BodyOnly`], which has no timestamp.
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Sets how far in the future a timestamp may be (clock skew), for every
    /// scheme, overriding the default that follows
    /// [`Verifier::with_tolerance`].
    #[must_use]
    pub fn with_future_tolerance(mut self, tolerance: Duration) -> Self {
        self.future_tolerance = Some(tolerance);
        self
    }

    /// Replaces the scheme.
    #[must_use]
    pub fn with_scheme(mut self, scheme: SignatureScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// The scheme this verifier checks.
    pub fn scheme(&self) -> &SignatureScheme {
        &self.scheme
    }

    /// How old a timestamp may be.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    fn window(&self) -> Window {
        let past = self.tolerance.as_secs();
        let future = match (self.future_tolerance, &self.scheme) {
            (Some(future), _) => future.as_secs(),
            (None, SignatureScheme::SplitTimestamp { .. }) => 0,
            (None, _) => past,
        };
        Window { past, future }
    }

    /// Verifies a request at time `now_unix_secs`.
    ///
    /// Checks, in order: the required headers are present and UTF-8, the
    /// timestamp parses and lies within the tolerance, and one signature
    /// matches one key. The first failure is returned.
    pub fn verify<H: HeaderSource>(
        &self,
        headers: H,
        body: &[u8],
        now_unix_secs: i64,
    ) -> Result<(), VerifyError> {
        self.verify_ref(&headers, body, now_unix_secs)
    }

    pub(crate) fn verify_ref<H: HeaderSource + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let scheme = &self.scheme;
        match scheme {
            SignatureScheme::StandardWebhooks => {
                let msg_id = required(headers, WEBHOOK_ID)?;
                let timestamp = required(headers, WEBHOOK_TIMESTAMP)?;
                let signatures = required(headers, WEBHOOK_SIGNATURE)?;
                let timestamp = parse_timestamp(timestamp)?;
                self.window().check(timestamp, now)?;
                verify_standard(&self.keys, msg_id, timestamp, signatures, body)
            }
            SignatureScheme::SplitTimestamp {
                signature_header,
                timestamp_header,
            } => {
                let signature = required(headers, signature_header)?;
                let timestamp = required(headers, timestamp_header)?;
                verify_split(
                    &self.keys,
                    scheme,
                    signature_header,
                    signature,
                    timestamp,
                    body,
                    now,
                    self.window(),
                )
            }
            SignatureScheme::InlineTimestamp => {
                let header = required(headers, X_WEBHOOK_SIGNATURE)?;
                let (timestamp, signatures) = parse_inline(header)?;
                let timestamp = parse_timestamp(timestamp)?;
                self.window().check(timestamp, now)?;
                let text = DecimalI64::new(timestamp);
                let candidates = || signatures.clone().filter_map(decode_hex_tag);
                match_any(&self.keys, |key| {
                    let tag = scheme.tag(key, "", text.as_bytes(), body);
                    candidates().any(|c| ct_eq(&c, tag.as_ref()))
                })
            }
            SignatureScheme::BodyOnly => {
                let header = required(headers, X_WEBHOOK_SIGNATURE)?;
                let signature = header
                    .trim_ascii()
                    .strip_prefix("sha256=")
                    .and_then(decode_hex_tag)
                    .ok_or_else(|| VerifyError::InvalidHeader {
                        header: X_WEBHOOK_SIGNATURE.to_owned(),
                        reason: "expected sha256=<64 hex digits>",
                    })?;
                match_any(&self.keys, |key| {
                    ct_eq(&signature, scheme.tag(key, "", b"", body).as_ref())
                })
            }
        }
    }
}

/// `Ok` if `matches` holds for one of the keys.
fn match_any(
    keys: &[SigningKey],
    mut matches: impl FnMut(&ring::hmac::Key) -> bool,
) -> Result<(), VerifyError> {
    if keys.iter().any(|key| matches(key.hmac_key())) {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

fn verify_standard(
    keys: &[SigningKey],
    msg_id: &str,
    timestamp: i64,
    signatures: &str,
    body: &[u8],
) -> Result<(), VerifyError> {
    let text = DecimalI64::new(timestamp);
    let candidates = || {
        signatures
            .split_ascii_whitespace()
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .map(|(_, signature)| signature.as_bytes())
    };
    match_any(keys, |key| {
        let tag = SignatureScheme::StandardWebhooks.tag(key, msg_id, text.as_bytes(), body);
        let mut expected = [0u8; B64_TAG_LEN];
        match STANDARD.encode_slice(tag.as_ref(), &mut expected) {
            Ok(B64_TAG_LEN) => candidates().any(|c| ct_eq(c, &expected)),
            _ => false,
        }
    })
}

/// Shared by [`Verifier`] and [`verify_webhook_request`].
#[allow(clippy::too_many_arguments)]
fn verify_split(
    keys: &[SigningKey],
    scheme: &SignatureScheme,
    signature_header: &str,
    signature: &str,
    timestamp: &str,
    body: &[u8],
    now: i64,
    window: Window,
) -> Result<(), VerifyError> {
    let timestamp = parse_timestamp(timestamp)?;
    window.check(timestamp, now)?;
    let signature: [u8; TAG_LEN] =
        decode_hex_tag(signature.trim_ascii()).ok_or_else(|| VerifyError::InvalidHeader {
            header: signature_header.to_owned(),
            reason: "expected 64 hex digits",
        })?;
    let text = DecimalI64::new(timestamp);
    match_any(keys, |key| {
        ct_eq(
            &signature,
            scheme.tag(key, "", text.as_bytes(), body).as_ref(),
        )
    })
}

/// Splits `t=<ts>,v1=<hex>,v1=<hex>` into the timestamp text and the `v1`
/// values. Other keys and entries without `=` are ignored.
fn parse_inline(header: &str) -> Result<(&str, impl Iterator<Item = &str> + Clone), VerifyError> {
    let invalid = |reason| VerifyError::InvalidHeader {
        header: X_WEBHOOK_SIGNATURE.to_owned(),
        reason,
    };
    let entries = || {
        header
            .split(',')
            .filter_map(|entry| entry.trim_ascii().split_once('='))
    };
    let mut timestamps = entries().filter(|(k, _)| *k == "t").map(|(_, v)| v);
    let timestamp = timestamps
        .next()
        .ok_or_else(|| invalid("missing t=<timestamp>"))?;
    if timestamps.next().is_some() {
        return Err(invalid("more than one t="));
    }
    let signatures = entries().filter(|(k, _)| *k == "v1").map(|(_, v)| v);
    Ok((timestamp, signatures))
}

/// Verifies a [`SignatureScheme::SplitTimestamp`] request (the legacy
/// `X-Webhook-Signature` / `X-Webhook-Timestamp` scheme).
///
/// `headers` are `(name, value)` pairs; names match case-insensitively and
/// the first occurrence wins. `secret` is decoded as by [`SigningKey::new`].
/// The request is rejected if its timestamp is in the future at all, or
/// more than `max_age_secs` before `now_secs`.
///
/// This builds the HMAC key on every call; a long-lived receiver should
/// keep a [`Verifier`] instead.
///
/// ```
/// use webhook_sdk::verify_webhook_request;
///
/// // A signature made with some other secret.
/// let headers = [
///     ("X-Webhook-Signature", "bc7dd5b10bc01c38a5d76e7cf92b5a1cd1bb5a6a6d3b5f42a4ff1a4c6ea7b8a2"),
///     ("X-Webhook-Timestamp", "1700000000"),
/// ];
/// let result = verify_webhook_request(
///     headers.iter().map(|(k, v)| (*k, *v)),
///     b"{}",
///     b"supersecret",
///     "X-Webhook-Signature",
///     "X-Webhook-Timestamp",
///     300,
///     1_700_000_010,
/// );
/// assert_eq!(result, Err(webhook_sdk::VerifyError::NoMatchingSignature));
/// ```
pub fn verify_webhook_request<'a, I>(
    headers: I,
    payload: &[u8],
    secret: &[u8],
    signature_header: &str,
    timestamp_header: &str,
    max_age_secs: u64,
    now_secs: u64,
) -> Result<(), VerifyError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut signature = None;
    let mut timestamp = None;
    for (name, value) in headers {
        if signature.is_none() && name.eq_ignore_ascii_case(signature_header) {
            signature = Some(value);
        }
        if timestamp.is_none() && name.eq_ignore_ascii_case(timestamp_header) {
            timestamp = Some(value);
        }
    }
    let signature = required_value(signature.map(str::as_bytes), signature_header)?;
    let timestamp = required_value(timestamp.map(str::as_bytes), timestamp_header)?;
    let key = SigningKey::new(secret);
    verify_split(
        std::slice::from_ref(&key),
        // Header names do not enter the MAC; empty strings do not allocate.
        &SignatureScheme::SplitTimestamp {
            signature_header: String::new(),
            timestamp_header: String::new(),
        },
        signature_header,
        signature,
        timestamp,
        payload,
        i64::try_from(now_secs).unwrap_or(i64::MAX),
        Window {
            past: max_age_secs,
            future: 0,
        },
    )
}
