#![doc = include_str!("../README.md")]

mod delivery;
mod endpoint;
mod error;
mod event;
mod ids;
mod memory;
mod store;

pub mod circuit;
pub mod rate;
pub mod retry;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use circuit::{CircuitBreaker, CircuitBreakerConfig, CircuitState, Permit};
pub use delivery::{Attempt, Completion, Delivery, DeliveryState, Lease, MAX_EXCERPT_LEN, excerpt};
pub use endpoint::{
    Batching, Compression, ContentEncoding, Endpoint, EventTypeFilter, MAX_URL_LEN, Ordering,
    Secret, validate_secret, validate_url,
};
pub use error::{Error, Result};
pub use event::Event;
pub use ids::{EndpointId, EventId, IdempotencyKey, MAX_ID_LEN, TenantId, is_valid_id};
pub use memory::MemoryStore;
pub use rate::{RateLimit, TokenBucket};
pub use retry::{RetryPolicy, Verdict};
pub use store::{
    ClaimRequest, Claimed, Completed, DeadLetterQuery, DeliveryRecord, Enqueued, EventRecord,
    Finished, Store,
};
pub use webhook_sdk::SignatureScheme;

/// `Bytes`, the payload type of [`Event`].
pub use bytes::Bytes;
