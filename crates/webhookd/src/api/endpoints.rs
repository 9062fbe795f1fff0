//! `/v1/endpoints`: create, list, read, replace and delete endpoints.

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use webhook_core::{
    Batching, CircuitBreakerConfig, Compression, Endpoint, EndpointId, Ordering, RateLimit,
    RetryPolicy, Secret, SignatureScheme, TenantId, retry::parse_duration,
};

use super::{events::IMPLICIT_PREFIX, events::check_destination, limits::check_headers, valid_id};
use crate::{
    app::AppState,
    auth::Principal,
    error::{ApiError, ApiResult},
    extract::{JsonBody, PathIds, QueryParams},
};

/// The body of `POST /v1/endpoints` and `PUT /v1/endpoints/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndpointIn {
    #[serde(default)]
    id: Option<String>,
    url: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    rate_limit: Option<RateLimit>,
    #[serde(default)]
    retry_policy: Option<RetryPolicy>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    batching: Option<Batching>,
    #[serde(default)]
    ordering: Option<Ordering>,
    #[serde(default, deserialize_with = "scheme")]
    signature_scheme: Option<SignatureScheme>,
    #[serde(default)]
    max_in_flight: Option<u32>,
    #[serde(default)]
    circuit_breaker: Option<CircuitBreakerConfig>,
    #[serde(default)]
    compression: Option<Compression>,
}

/// A scheme by name (`"body_only"`) or in its tagged form (`{"kind": "body_only"}`).
fn scheme<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SignatureScheme>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    let value = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(name)) => json!({ "kind": name }),
        Some(other) => other,
    };
    serde_json::from_value(value).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{e}; expected standard_webhooks, body_only, inline_timestamp or split_timestamp"
        ))
    })
}

const ID_RULE: &str = "must be 1 to 256 characters of A-Z a-z 0-9 - _ . : ~";

impl EndpointIn {
    /// The endpoint this body describes.
    fn into_endpoint(
        self,
        id: EndpointId,
        tenant: Option<TenantId>,
        secret: Option<Secret>,
    ) -> ApiResult<Endpoint> {
        let timeout = self
            .timeout
            .map(|t| parse_duration(&t))
            .transpose()
            .map_err(|e| match e {
                webhook_core::Error::Invalid { message, .. } => {
                    ApiError::invalid("timeout", message)
                }
                other => ApiError::invalid("timeout", other.to_string()),
            })?;
        let mut e = Endpoint::new(id, self.url);
        e.secret = secret;
        e.tenant_id = tenant;
        e.event_types = self.event_types;
        e.headers = self.headers;
        e.rate_limit = self.rate_limit;
        e.retry_policy = self.retry_policy;
        e.circuit_breaker = self.circuit_breaker;
        e.timeout = timeout;
        e.max_in_flight = self.max_in_flight;
        e.enabled = self.enabled.unwrap_or(true);
        e.signature_scheme = self.signature_scheme.unwrap_or_default();
        e.batching = self.batching;
        e.ordering = self.ordering.unwrap_or_default();
        e.compression = self.compression;
        e.validate()?;
        Ok(e)
    }
}

/// An endpoint as the API shows it: never its secret.
pub(crate) fn endpoint_json(e: &Endpoint) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.remove("secret");
        let tenant = obj.remove("tenant_id").unwrap_or(Value::Null);
        obj.insert("tenant".into(), tenant);
        obj.insert("has_secret".into(), json!(e.secret.is_some()));
        obj.insert(
            "implicit".into(),
            json!(e.id.as_str().starts_with(IMPLICIT_PREFIX)),
        );
    }
    v
}

/// The endpoint `id` if it exists and the caller may see it.
async fn visible(state: &AppState, principal: &Principal, id: &str) -> ApiResult<Endpoint> {
    if !valid_id(id) {
        return Err(ApiError::not_found("endpoint", id));
    }
    match state.dispatcher.endpoint(&EndpointId::from(id)).await? {
        Some(e) if principal.sees(e.tenant_id.as_ref()) => Ok(e),
        _ => Err(ApiError::not_found("endpoint", id)),
    }
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    JsonBody(body): JsonBody<EndpointIn>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = principal.tenant_for(body.tenant.as_deref(), "tenant")?;
    let id = match &body.id {
        Some(id) if !valid_id(id) => return Err(ApiError::invalid("id", ID_RULE)),
        Some(id) if id.starts_with(IMPLICIT_PREFIX) => {
            return Err(ApiError::invalid(
                "id",
                format!("the prefix {IMPLICIT_PREFIX:?} is reserved for implicit endpoints"),
            ));
        }
        Some(id) => EndpointId::from(id.as_str()),
        None => EndpointId::from(format!("ep_{}", uuid::Uuid::now_v7())),
    };
    check_destination(&state, &body.url, "url")?;
    let secret = body
        .secret
        .clone()
        .unwrap_or_else(webhook_sdk::generate_secret);
    let endpoint = body.into_endpoint(id.clone(), tenant, Some(Secret::new(&secret)))?;
    check_headers(&state.limits, &endpoint.headers)?;
    {
        // From the checks until it is stored, so that concurrent creations cannot both
        // take the id or the tenant's last free place (see `api::limits`).
        let _creating = state.endpoint_creation.lock().await;
        if state.dispatcher.endpoint(&id).await?.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("endpoint {id:?} already exists; PUT /v1/endpoints/{id} replaces it"),
            ));
        }
        state
            .check_endpoint_quota(endpoint.tenant_id.as_ref())
            .await?;
        state.dispatcher.register_endpoint(endpoint.clone()).await?;
    }
    tracing::info!(endpoint_id = %id, tenant = ?endpoint.tenant_id, "endpoint created");
    let mut v = endpoint_json(&endpoint);
    v["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(v)))
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: QueryParams,
) -> ApiResult<Json<Value>> {
    query.only(&["tenant"])?;
    let tenant = principal.tenant_for(query.get("tenant"), "tenant")?;
    let endpoints = state
        .dispatcher
        .store()
        .list_endpoints(tenant.as_ref())
        .await?;
    let endpoints: Vec<Value> = endpoints
        .iter()
        .filter(|e| principal.sees(e.tenant_id.as_ref()))
        .map(endpoint_json)
        .collect();
    Ok(Json(json!({ "endpoints": endpoints })))
}

pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathIds(id): PathIds<String>,
) -> ApiResult<Json<Value>> {
    let endpoint = visible(&state, &principal, &id).await?;
    Ok(Json(endpoint_json(&endpoint)))
}

pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathIds(id): PathIds<String>,
    JsonBody(body): JsonBody<EndpointIn>,
) -> ApiResult<Json<Value>> {
    let existing = visible(&state, &principal, &id).await?;
    if body.id.as_ref().is_some_and(|b| b != &id) {
        return Err(ApiError::invalid("id", "does not match the id in the path"));
    }
    let tenant = match principal.tenant_for(body.tenant.as_deref(), "tenant")? {
        None => existing.tenant_id.clone(),
        Some(t) if Some(&t) == existing.tenant_id.as_ref() => Some(t),
        Some(_) => {
            return Err(ApiError::invalid(
                "tenant",
                "an endpoint cannot move to another tenant; create a new one",
            ));
        }
    };
    if id.starts_with(IMPLICIT_PREFIX) && body.url != existing.url {
        return Err(ApiError::invalid(
            "url",
            "the url of an implicit endpoint cannot change",
        ));
    }
    check_destination(&state, &body.url, "url")?;
    let secret = body
        .secret
        .as_deref()
        .map(Secret::new)
        .or_else(|| existing.secret.clone());
    let endpoint = body.into_endpoint(existing.id.clone(), tenant, secret)?;
    check_headers(&state.limits, &endpoint.headers)?;
    state.dispatcher.register_endpoint(endpoint.clone()).await?;
    tracing::info!(endpoint_id = %id, "endpoint replaced");
    Ok(Json(endpoint_json(&endpoint)))
}

pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathIds(id): PathIds<String>,
) -> ApiResult<StatusCode> {
    let existing = visible(&state, &principal, &id).await?;
    state.dispatcher.remove_endpoint(&existing.id).await?;
    state.forget_implicit(&existing.id);
    tracing::info!(endpoint_id = %id, "endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}
