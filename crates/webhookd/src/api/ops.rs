//! `/metrics`, `/healthz` and `/openapi.json`.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{app::AppState, auth::Principal, error::ApiResult};

#[allow(clippy::unused_async, reason = "axum handlers are async")]
pub(crate) async fn metrics(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> ApiResult<Response> {
    principal.require_admin()?;
    let text = crate::metrics::render(&state.dispatcher.metrics(), state.dispatcher.store_errors());
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

#[allow(clippy::unused_async, reason = "axum handlers are async")]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[allow(clippy::unused_async, reason = "axum handlers are async")]
pub(crate) async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
