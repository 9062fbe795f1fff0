#![doc = include_str!("../README.md")]

mod config;
mod dispatcher;
mod endpoint_state;
mod error;
mod stats;
mod telemetry;

pub mod destination;
pub mod sealing;
pub mod transport;

pub use config::{DispatcherConfig, OverflowPolicy};
pub use destination::DestinationPolicy;
pub use dispatcher::{DispatchReceipt, Dispatcher};
pub use error::{Error, Result};
pub use sealing::{SealingKey, SealingStore};
pub use stats::Metrics;
pub use transport::{Encoding, Transport, TransportConfig};

pub use webhook_core::{
    Attempt, CircuitBreakerConfig, ContentEncoding, DeadLetterQuery, Delivery, DeliveryRecord,
    DeliveryState, Endpoint, EndpointId, Event, EventId, EventRecord, IdempotencyKey, MemoryStore,
    Ordering, RateLimit, RetryPolicy, SignatureScheme, Store, TenantId,
};
pub use webhook_sdk::{VerifyError, WebhookReceiver, verify_webhook_request};
