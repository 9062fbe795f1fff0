//! A ready-made receiver that reads the system clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{
    Envelope, HeaderSource, IncomingWebhook, SignatureScheme, SigningKey, Verifier, VerifyError,
};

/// Verifies and parses incoming webhooks.
///
/// A thin layer over [`Verifier`] that takes the current time from the
/// system clock (the only place this crate reads it) and parses the JSON
/// [`Envelope`]. Defaults: [`SignatureScheme::StandardWebhooks`] and a
/// 5 minute tolerance.
#[derive(Clone, Debug)]
pub struct WebhookReceiver {
    verifier: Verifier,
}

impl WebhookReceiver {
    /// A receiver for one secret (decoded as by [`SigningKey::new`]) and the
    /// Standard Webhooks scheme.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self {
            verifier: Verifier::new(secret, SignatureScheme::StandardWebhooks),
        }
    }

    /// A receiver accepting any of several keys (secret rotation), with the
    /// Standard Webhooks scheme.
    pub fn from_keys(keys: impl IntoIterator<Item = SigningKey>) -> Self {
        Self {
            verifier: Verifier::from_keys(keys, SignatureScheme::StandardWebhooks),
        }
    }

    /// A receiver around a configured [`Verifier`].
    pub fn from_verifier(verifier: Verifier) -> Self {
        Self { verifier }
    }

    /// Uses another scheme.
    #[must_use]
    pub fn with_scheme(mut self, scheme: SignatureScheme) -> Self {
        self.verifier = self.verifier.with_scheme(scheme);
        self
    }

    /// Sets the timestamp tolerance (see [`Verifier::with_tolerance`]).
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.verifier = self.verifier.with_tolerance(tolerance);
        self
    }

    /// The underlying verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Verifies a request against the system clock.
    ///
    /// Returns `Ok(true)` when the request is authentic and fresh, and
    /// `Err` with the reason otherwise; it never returns `Ok(false)` (the
    /// `bool` is kept for compatibility with existing callers).
    pub fn verify_signature<H: HeaderSource>(
        &self,
        headers: H,
        body: &[u8],
    ) -> Result<bool, VerifyError> {
        self.verifier
            .verify_ref(&headers, body, now_unix_secs())
            .map(|()| true)
    }

    /// Verifies a request at a given time (unix seconds), for tests and for
    /// callers that own their clock.
    pub fn verify_at<H: HeaderSource>(
        &self,
        headers: H,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), VerifyError> {
        self.verifier.verify_ref(&headers, body, now_secs)
    }

    /// Parses one envelope from the body. **Does not verify**: call
    /// [`WebhookReceiver::verify_signature`] first, or use
    /// [`WebhookReceiver::verify_and_parse`].
    pub fn parse_webhook(&self, body: &[u8]) -> Result<IncomingWebhook, VerifyError> {
        Envelope::from_json(body)
    }

    /// Parses a batch (a JSON array of envelopes; a single object gives a
    /// batch of one). **Does not verify.**
    pub fn parse_batch(&self, body: &[u8]) -> Result<Vec<IncomingWebhook>, VerifyError> {
        Envelope::batch_from_json(body)
    }

    /// Verifies against the system clock, then parses one envelope.
    pub fn verify_and_parse<H: HeaderSource>(
        &self,
        headers: H,
        body: &[u8],
    ) -> Result<IncomingWebhook, VerifyError> {
        self.verifier.verify_ref(&headers, body, now_unix_secs())?;
        Envelope::from_json(body)
    }
}

/// The system clock in unix seconds, saturating, negative before 1970.
fn now_unix_secs() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}
