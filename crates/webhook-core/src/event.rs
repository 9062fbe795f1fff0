//! Events: what is sent.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{EventId, TenantId};

/// Something that happened, to be delivered to endpoints.
///
/// The payload is sent as the request body, byte for byte. It is stored once per
/// event, however many endpoints it goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique within the tenant; sent as `webhook-id`. An empty id is replaced by a
    /// UUIDv7 when the event is dispatched.
    pub id: EventId,
    /// The tenant the event belongs to.
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// The event type used for routing (`user.created`).
    #[serde(default)]
    pub event_type: Option<String>,
    /// The request body.
    pub payload: Bytes,
    /// When it was accepted; set on dispatch when not given.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Higher priorities are delivered first within an endpoint.
    #[serde(default)]
    pub priority: i16,
}

impl Event {
    /// An event with this id and payload.
    pub fn new(id: impl Into<EventId>, payload: impl Into<Bytes>) -> Self {
        Self {
            id: id.into(),
            tenant_id: None,
            event_type: None,
            payload: payload.into(),
            created_at: None,
            priority: 0,
        }
    }

    /// Sets the tenant.
    #[must_use]
    pub fn with_tenant_id(mut self, tenant: impl Into<TenantId>) -> Self {
        self.tenant_id = Some(tenant.into());
        self
    }

    /// Sets the event type.
    #[must_use]
    pub fn with_event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// Sets the priority (default 0; higher first).
    #[must_use]
    pub fn with_priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the creation time.
    #[must_use]
    pub fn with_created_at(mut self, at: DateTime<Utc>) -> Self {
        self.created_at = Some(at);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_construction() {
        let event = Event::new("evt_123", r#"{"id":123}"#.as_bytes()).with_tenant_id("tenant_a");
        assert_eq!(event.id.as_str(), "evt_123");
        assert_eq!(&event.payload[..], br#"{"id":123}"#);
        assert_eq!(event.tenant_id.unwrap().as_str(), "tenant_a");
    }
}
