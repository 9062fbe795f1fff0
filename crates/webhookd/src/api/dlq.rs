//! `/v1/dlq`: inspect and replay dead letters.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde_json::{Value, json};
use webhook_core::{DeadLetterQuery, EndpointId, EventId, IdempotencyKey};

use super::{delivery_json, valid_id};
use crate::{
    app::AppState,
    auth::Principal,
    error::{ApiError, ApiResult},
    extract::{PathIds, QueryParams},
};

/// Dead letters listed when no `limit` is given.
const DEFAULT_LIMIT: usize = 100;
/// Most dead letters listed at once.
const MAX_LIMIT: usize = 1000;

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: QueryParams,
) -> ApiResult<Json<Value>> {
    query.only(&["endpoint_id", "limit", "tenant"])?;
    let tenant = principal.tenant_for(query.get("tenant"), "tenant")?;
    let endpoint_id = match query.get("endpoint_id") {
        Some(id) if valid_id(id) => Some(EndpointId::from(id)),
        Some(_) => return Err(ApiError::invalid("endpoint_id", "not a valid endpoint id")),
        None => None,
    };
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                ));
            }
        },
    };
    let dead = state
        .dispatcher
        .dead_letters(&DeadLetterQuery {
            tenant,
            endpoint_id,
            limit,
        })
        .await?;
    let items: Vec<Value> = dead
        .iter()
        .filter(|d| principal.sees(d.key.tenant.as_ref()))
        .map(delivery_json)
        .collect();
    Ok(Json(json!({ "dead_letters": items })))
}

pub(crate) async fn replay_all(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: QueryParams,
) -> ApiResult<Json<Value>> {
    query.only(&["tenant"])?;
    let tenant = principal.tenant_for(query.get("tenant"), "tenant")?;
    let replayed = state.dispatcher.replay_dlq_tenant(tenant.as_ref()).await?;
    tracing::info!(replayed, tenant = ?tenant, "dead letters replayed");
    Ok(Json(json!({ "replayed": replayed })))
}

pub(crate) async fn replay_one(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathIds((event_id, endpoint_id)): PathIds<(String, String)>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::not_found("dead letter", &format!("{event_id}/{endpoint_id}"));
    if !valid_id(&event_id) || !valid_id(&endpoint_id) {
        return Err(not_found());
    }
    let endpoint = match state
        .dispatcher
        .endpoint(&EndpointId::from(endpoint_id.as_str()))
        .await?
    {
        Some(e) if principal.sees(e.tenant_id.as_ref()) => e,
        _ => return Err(not_found()),
    };
    let key = IdempotencyKey::new(
        EventId::from(event_id.as_str()),
        endpoint.id,
        endpoint.tenant_id,
    );
    if !state.dispatcher.replay_dlq_entry(&key).await? {
        return Err(not_found());
    }
    tracing::info!(%key, "dead letter replayed");
    Ok(Json(json!({ "replayed": 1 })))
}
