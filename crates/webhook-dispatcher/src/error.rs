//! The one error type of `webhook-dispatcher`.

/// Why a dispatcher call failed. Nothing was changed unless the variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field of the input is invalid; `field` names it.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The rejected field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The endpoint, event or delivery does not exist.
    #[error("{kind} not found: {id}")]
    NotFound {
        /// What kind of thing.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The queue is full and the overflow policy is `Reject`.
    #[error("queue full: {queued} deliveries waiting (capacity {capacity})")]
    QueueFull {
        /// Deliveries waiting.
        queued: usize,
        /// The configured capacity.
        capacity: usize,
    },
    /// The payload is larger than `DispatcherConfig::max_payload_bytes`.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The dispatcher is shutting down and accepts no new work.
    #[error("dispatcher is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error("store: {0}")]
    Store(webhook_core::Error),
}

impl Error {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::QueueFull { .. } => true,
            Self::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<webhook_core::Error> for Error {
    fn from(e: webhook_core::Error) -> Self {
        match e {
            webhook_core::Error::Invalid { field, message } => Self::Invalid { field, message },
            webhook_core::Error::NotFound { kind, id } => Self::NotFound { kind, id },
            other => Self::Store(other),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
