#![doc = include_str!("../README.md")]

pub mod headers;

mod envelope;
mod error;
mod key;
mod receiver;
mod scheme;
mod util;
mod verify;

pub use envelope::{Envelope, IncomingWebhook};
pub use error::VerifyError;
pub use key::{GENERATED_SECRET_BYTES, SigningKey, WHSEC_PREFIX, generate_secret};
pub use receiver::WebhookReceiver;
pub use scheme::{SignatureScheme, SignedHeaders};
pub use verify::{DEFAULT_TOLERANCE, HeaderSource, Verifier, verify_webhook_request};
