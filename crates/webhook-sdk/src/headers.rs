//! Header names used on the wire.
//!
//! Receivers match header names case-insensitively, so the exact spelling of
//! these constants only matters on the sending side.

/// Standard Webhooks: the unique message id. Sent by every scheme so that
/// receivers can deduplicate retried deliveries.
pub const WEBHOOK_ID: &str = "webhook-id";

/// Standard Webhooks: the send time as decimal unix seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";

/// Standard Webhooks: space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// Signature header of the legacy schemes
/// ([`SplitTimestamp`](crate::SignatureScheme::SplitTimestamp) by default,
/// [`InlineTimestamp`](crate::SignatureScheme::InlineTimestamp) and
/// [`BodyOnly`](crate::SignatureScheme::BodyOnly) always).
pub const X_WEBHOOK_SIGNATURE: &str = "X-Webhook-Signature";

/// Default timestamp header of
/// [`SplitTimestamp`](crate::SignatureScheme::SplitTimestamp).
pub const X_WEBHOOK_TIMESTAMP: &str = "X-Webhook-Timestamp";
