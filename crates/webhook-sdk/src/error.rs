//! The crate's error type.

/// Why a webhook request was rejected.
///
/// Messages name the offending header but never include a secret, and never
/// echo a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is absent (or present with an empty value).
    #[error("missing header `{0}`")]
    MissingHeader(String),

    /// A header is present but badly encoded or malformed.
    #[error("invalid header `{header}`: {reason}")]
    InvalidHeader {
        /// The header's name as the verifier looked it up.
        header: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The timestamp is not a decimal integer that fits in an `i64`.
    #[error("invalid timestamp")]
    InvalidTimestamp,

    /// The timestamp is older than the allowed tolerance (possible replay).
    #[error("timestamp is too old")]
    Expired,

    /// The timestamp is further in the future than the allowed tolerance.
    #[error("timestamp is too far in the future")]
    FutureTimestamp,

    /// No signature in the request matches any of the verifier's keys.
    #[error("no matching signature")]
    NoMatchingSignature,

    /// The body is not a valid JSON envelope (or batch of envelopes).
    #[error("invalid body: {0}")]
    InvalidBody(String),
}
