//! `POST /events` and `GET /events/{id}`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::{Json, extract::State, http::StatusCode};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use webhook_core::{
    DeliveryState, Endpoint, EndpointId, Event, EventId, EventRecord, Secret, TenantId,
};
use webhook_dispatcher::DispatchReceipt;

use super::{attempt_json, delivery_json, time, valid_id};
use crate::{
    app::AppState,
    auth::Principal,
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathIds, QueryParams},
};

/// The answer to `POST /events`: `{"id": ..., "status": "accepted"}`.
#[derive(Debug, Serialize)]
pub(crate) struct Accepted {
    id: EventId,
    status: &'static str,
}

/// Prefix of the ids of implicit endpoints (one per target URL and tenant).
pub(crate) const IMPLICIT_PREFIX: &str = "url_";

/// The body of `POST /events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventIn {
    /// Sent as the request body, exactly as it appears in the request.
    payload: Box<serde_json::value::RawValue>,
    #[serde(default)]
    target_url: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

pub(crate) async fn ingest(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    JsonBody(body): JsonBody<EventIn>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let tenant = principal.tenant_for(body.tenant.as_deref(), "tenant")?;
    let id = match body.id {
        Some(id) if valid_id(&id) => EventId::from(id),
        Some(_) => {
            return Err(ApiError::invalid(
                "id",
                "must be 1 to 256 characters of A-Z a-z 0-9 - _ . : ~",
            ));
        }
        None => EventId::v7(Utc::now()),
    };
    if let Some(t) = &body.event_type
        && (t.is_empty() || t.len() > 256 || t.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "event_type",
            "must be 1 to 256 bytes without control characters",
        ));
    }
    let payload = bytes::Bytes::copy_from_slice(body.payload.get().as_bytes());
    let mut event = Event::new(id, payload);
    event.tenant_id = tenant;
    event.event_type = body.event_type;

    let receipt = match body.target_url {
        Some(url) => {
            check_destination(&state, &url, "target_url")?;
            state.dispatch_implicit(event, &url).await?
        }
        None => {
            let mut targets = state.subscribers(&event);
            if targets.is_empty() {
                // Perhaps another node created a matching endpoint a moment ago.
                state.dispatcher.refresh_endpoints().await?;
                targets = state.subscribers(&event);
            }
            if !targets.is_empty() {
                state.dispatcher.dispatch(event, targets).await?
            } else if let Some(url) = state.target_url.clone() {
                state.dispatch_implicit(event, &url).await?
            } else {
                return Err(ApiError::invalid(
                    "target_url",
                    "no target_url given, no enabled endpoint subscribes to this event type, \
                     and no default target (TARGET_URL) is configured",
                ));
            }
        }
    };
    tracing::info!(
        event_id = %receipt.event_id,
        deliveries = receipt.created,
        duplicates = receipt.existing,
        "event accepted"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: receipt.event_id,
            status: "accepted",
        }),
    ))
}

pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathIds(id): PathIds<String>,
    query: QueryParams,
) -> ApiResult<Json<Value>> {
    query.only(&["tenant"])?;
    let tenant = principal.tenant_for(query.get("tenant"), "tenant")?;
    if !valid_id(&id) {
        return Err(ApiError::not_found("event", &id));
    }
    let record = state
        .dispatcher
        .event_status(tenant.as_ref(), &EventId::from(id.as_str()))
        .await?
        .ok_or_else(|| ApiError::not_found("event", &id))?;
    Ok(Json(event_json(&record)))
}

fn event_json(record: &EventRecord) -> Value {
    let event = &record.event;
    let payload = serde_json::from_slice::<Value>(&event.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&event.payload).into_owned()));
    let deliveries: Vec<Value> = record
        .deliveries
        .iter()
        .map(|d| {
            let mut v = delivery_json(&d.delivery);
            v["attempts"] = d.attempts.iter().map(attempt_json).collect();
            v
        })
        .collect();
    let states = record.deliveries.iter().map(|d| &d.delivery.state);
    let status = if states.clone().any(|s| !s.is_final()) {
        "pending"
    } else if states
        .clone()
        .any(|s| matches!(s, DeliveryState::Dead { .. }))
    {
        "dead"
    } else if record.deliveries.is_empty() {
        "accepted"
    } else {
        "delivered"
    };
    let attempt_count: u64 = record
        .deliveries
        .iter()
        .map(|d| u64::from(d.delivery.attempts))
        .sum();
    json!({
        "id": event.id,
        "tenant": event.tenant_id,
        "event_type": event.event_type,
        "created_at": event.created_at.map(time),
        "payload": payload,
        "status": status,
        "attempt_count": attempt_count,
        "deliveries": deliveries,
    })
}

/// The id of the implicit endpoint for `url` in `tenant`: `url_<hex of sha256(url)>`
/// (the tenant, when there is one, is hashed in front of the URL).
pub(crate) fn implicit_id(tenant: Option<&TenantId>, url: &str) -> EndpointId {
    let mut input = Vec::with_capacity(url.len() + 32);
    if let Some(t) = tenant {
        input.extend_from_slice(t.as_str().as_bytes());
        input.push(b'\n');
    }
    input.extend_from_slice(url.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    EndpointId::from(format!("{IMPLICIT_PREFIX}{}", hex::encode(digest)))
}

/// Checks a destination URL: syntax, and (with the SSRF guard on) that an IP-literal
/// host is allowed. Host names are checked when they are resolved, at delivery.
pub(crate) fn check_destination(state: &AppState, url: &str, field: &str) -> ApiResult<()> {
    super::limits::check_url(&state.limits, url, field)?;
    let parsed = webhook_core::validate_url(url).map_err(|e| match e {
        webhook_core::Error::Invalid { message, .. } => ApiError::invalid(field, message),
        other => ApiError::invalid(field, other.to_string()),
    })?;
    match refused_destination(&state.destinations, &parsed) {
        Some(refused) => Err(ApiError::invalid(field, refused)),
        None => Ok(()),
    }
}

/// Why `destinations` refuses `url`, when its host is an IP address it refuses (a
/// host name is checked when it is resolved, at delivery).
pub(crate) fn refused_destination(
    destinations: &webhook_dispatcher::DestinationPolicy,
    url: &url::Url,
) -> Option<String> {
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => std::net::IpAddr::V4(ip),
        url::Host::Ipv6(ip) => std::net::IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    let refused = destinations.check(ip).err()?;
    Some(format!(
        "{refused}; start webhookd with --allow-private-destinations to allow it"
    ))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AppState {
    /// Enabled, explicitly registered endpoints of the event's tenant whose globs match
    /// its type. Implicit endpoints only receive events addressed to their URL.
    fn subscribers(&self, event: &Event) -> Vec<EndpointId> {
        let mut ids = self.dispatcher.subscribers(event);
        ids.retain(|id| !id.as_str().starts_with(IMPLICIT_PREFIX));
        ids
    }

    /// Dispatches `event` to the implicit endpoint of `url`, registering it first.
    async fn dispatch_implicit(&self, event: Event, url: &str) -> ApiResult<DispatchReceipt> {
        let id = self.ensure_implicit(event.tenant_id.as_ref(), url).await?;
        match self
            .dispatcher
            .dispatch(event.clone(), vec![id.clone()])
            .await
        {
            // Deleted through the API since it was registered: register it again.
            Err(webhook_dispatcher::Error::NotFound { .. }) => {
                self.forget_implicit(&id);
                let id = self.ensure_implicit(event.tenant_id.as_ref(), url).await?;
                Ok(self.dispatcher.dispatch(event, vec![id]).await?)
            }
            other => Ok(other?),
        }
    }

    /// Registers the implicit endpoint of `url` unless this process already did; keeps
    /// its secret and scheme in line with the configuration.
    async fn ensure_implicit(&self, tenant: Option<&TenantId>, url: &str) -> ApiResult<EndpointId> {
        let id = implicit_id(tenant, url);
        if lock(&self.implicit).contains(&id) {
            return Ok(id);
        }
        let secret = self.webhook_secret.as_deref().map(Secret::new);
        // A new implicit endpoint counts against its tenant's limit: hold the creation
        // lock from the count until it is stored.
        let _creating = self.endpoint_creation.lock().await;
        let update = match self.dispatcher.endpoint(&id).await? {
            Some(e) if e.secret == secret && e.signature_scheme == self.signature_scheme => None,
            Some(mut e) => {
                e.secret = secret;
                e.signature_scheme = self.signature_scheme.clone();
                Some(e)
            }
            None => {
                self.check_endpoint_quota(tenant).await?;
                let mut e = Endpoint::new(id.clone(), url);
                e.tenant_id = tenant.cloned();
                e.secret = secret;
                e.signature_scheme = self.signature_scheme.clone();
                Some(e)
            }
        };
        if let Some(endpoint) = update {
            self.dispatcher
                .register_endpoint(endpoint)
                .await
                .map_err(|e| match e {
                    webhook_dispatcher::Error::Invalid {
                        field: "url",
                        message,
                    } => ApiError::invalid("target_url", message),
                    other => other.into(),
                })?;
            tracing::info!(endpoint_id = %id, "implicit endpoint registered");
        }
        lock(&self.implicit).insert(id.clone());
        Ok(id)
    }

    /// Forgets that an implicit endpoint is registered (it was deleted).
    pub(crate) fn forget_implicit(&self, id: &EndpointId) {
        lock(&self.implicit).remove(id);
    }
}
