//! Identifiers: tenants, endpoints, events, and the delivery key that ties them.
//!
//! Ids are reference-counted strings, so the many deliveries of one endpoint or one
//! event share a single allocation and cloning an id is cheap.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

/// Most bytes in an id.
pub const MAX_ID_LEN: usize = 256;

/// Whether `id` can be an endpoint or tenant id: 1 to [`MAX_ID_LEN`] bytes without
/// control characters (ids appear in logs). Event ids are stricter: they are sent in
/// the `webhook-id` header, so they are visible ASCII.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Arc<str>);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether the id is the empty string.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.into())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value.into())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A tenant: the owner of endpoints and events. Events of one tenant are only ever
    /// delivered to endpoints of the same tenant.
    TenantId
);
string_id!(
    /// An endpoint's id, unique in a store (not only within a tenant).
    EndpointId
);
string_id!(
    /// An event's id, unique within its tenant. Sent to receivers as `webhook-id`.
    EventId
);

impl EventId {
    /// A new time-ordered UUIDv7 id for the given time (the caller supplies the clock).
    pub fn v7(now: chrono::DateTime<chrono::Utc>) -> Self {
        let secs = u64::try_from(now.timestamp()).unwrap_or(0);
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, secs, now.timestamp_subsec_nanos());
        Self::from(uuid::Uuid::new_v7(ts).to_string())
    }
}

/// The key of one delivery: one event to one endpoint, within a tenant.
///
/// Dispatching the same key twice creates one delivery.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The tenant of the event and the endpoint (`None` for single-tenant use).
    pub tenant: Option<TenantId>,
    /// The endpoint the event goes to.
    pub endpoint_id: EndpointId,
    /// The event.
    pub event_id: EventId,
}

impl IdempotencyKey {
    /// The key of `event_id` delivered to `endpoint_id` for `tenant`.
    pub fn new(event_id: EventId, endpoint_id: EndpointId, tenant: Option<TenantId>) -> Self {
        Self {
            tenant,
            endpoint_id,
            event_id,
        }
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "{t}/{}/{}", self.endpoint_id, self.event_id),
            None => write!(f, "{}/{}", self.endpoint_id, self.event_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_style_construction_compiles_and_displays() {
        let key = IdempotencyKey::new("evt_123".into(), "orders".into(), Some("tenant_a".into()));
        assert_eq!(key.to_string(), "tenant_a/orders/evt_123");
        let tenant = TenantId("tenant_a".into());
        assert_eq!(key.tenant, Some(tenant));
    }

    #[test]
    fn v7_ids_are_time_ordered() {
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let t1 = t0 + chrono::Duration::milliseconds(5);
        assert!(EventId::v7(t0) < EventId::v7(t1));
        assert_eq!(EventId::v7(t0).as_str().len(), 36);
    }
}
