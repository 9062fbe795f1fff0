//! The one error type of `webhook-core`.

/// Everything that can go wrong in core logic or in a [`Store`](crate::Store).
///
/// Whether a failure is worth retrying is a value: see [`Error::is_retryable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field of user input is invalid; `field` names it.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field that was rejected, e.g. `url` or `retry_policy.schedule[1]`.
        field: &'static str,
        /// What is wrong with it, in plain words.
        message: String,
    },
    /// The thing asked for does not exist.
    #[error("{kind} not found: {id}")]
    NotFound {
        /// What kind of thing: `endpoint`, `event`, `delivery`.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A delivery lease was lost: it expired and another worker claimed the delivery,
    /// or the delivery changed state. The result of this attempt is discarded.
    #[error("lease lost for delivery {0}")]
    LeaseLost(String),
    /// The store is unavailable or failed; the operation may succeed if retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store holds data it cannot read back (corruption or an incompatible version).
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// A limit was reached (queue full, too many endpoints, payload too large).
    #[error("limit reached: {0}")]
    Limit(String),
}

impl Error {
    /// Builds an [`Error::Invalid`].
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    /// Builds an [`Error::NotFound`].
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Limit(_))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
