//! The one list of routes: the router and the OpenAPI document are both built from
//! [`ROUTES`], so they cannot drift apart.

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter, on},
};

use crate::{api, app::AppState, error::ApiError};

/// What a route does (its OpenAPI `operationId` is [`Op::operation_id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `POST /events`: accept an event (seed 003 compatible).
    IngestEvent,
    /// `GET /events/{id}`: an event and its deliveries.
    GetEvent,
    /// `POST /v1/endpoints`: create an endpoint.
    CreateEndpoint,
    /// `GET /v1/endpoints`: list endpoints.
    ListEndpoints,
    /// `GET /v1/endpoints/{id}`: one endpoint.
    GetEndpoint,
    /// `PUT /v1/endpoints/{id}`: replace an endpoint.
    UpdateEndpoint,
    /// `DELETE /v1/endpoints/{id}`: delete an endpoint.
    DeleteEndpoint,
    /// `GET /v1/dlq`: list dead letters.
    ListDeadLetters,
    /// `POST /v1/dlq/replay`: replay every dead letter.
    ReplayDeadLetters,
    /// `POST /v1/dlq/replay/{event_id}/{endpoint_id}`: replay one dead letter.
    ReplayDeadLetter,
    /// `GET /metrics`: Prometheus metrics.
    Metrics,
    /// `GET /healthz`: liveness.
    Healthz,
    /// `GET /openapi.json`: this API's OpenAPI document.
    OpenApi,
}

impl Op {
    /// The OpenAPI `operationId`.
    pub fn operation_id(self) -> &'static str {
        match self {
            Self::IngestEvent => "ingestEvent",
            Self::GetEvent => "getEvent",
            Self::CreateEndpoint => "createEndpoint",
            Self::ListEndpoints => "listEndpoints",
            Self::GetEndpoint => "getEndpoint",
            Self::UpdateEndpoint => "updateEndpoint",
            Self::DeleteEndpoint => "deleteEndpoint",
            Self::ListDeadLetters => "listDeadLetters",
            Self::ReplayDeadLetters => "replayDeadLetters",
            Self::ReplayDeadLetter => "replayDeadLetter",
            Self::Metrics => "metrics",
            Self::Healthz => "healthz",
            Self::OpenApi => "openapi",
        }
    }

    /// Whether the route needs a bearer token when tokens are configured.
    pub fn authenticated(self) -> bool {
        !matches!(self, Self::Healthz | Self::OpenApi)
    }
}

/// One route: HTTP method, path (OpenAPI syntax, `{param}`), and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// The path template.
    pub path: &'static str,
    /// The operation.
    pub op: Op,
}

const fn route(method: &'static str, path: &'static str, op: Op) -> Route {
    Route { method, path, op }
}

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    route("POST", "/events", Op::IngestEvent),
    route("GET", "/events/{id}", Op::GetEvent),
    route("POST", "/v1/endpoints", Op::CreateEndpoint),
    route("GET", "/v1/endpoints", Op::ListEndpoints),
    route("GET", "/v1/endpoints/{id}", Op::GetEndpoint),
    route("PUT", "/v1/endpoints/{id}", Op::UpdateEndpoint),
    route("DELETE", "/v1/endpoints/{id}", Op::DeleteEndpoint),
    route("GET", "/v1/dlq", Op::ListDeadLetters),
    route("POST", "/v1/dlq/replay", Op::ReplayDeadLetters),
    route(
        "POST",
        "/v1/dlq/replay/{event_id}/{endpoint_id}",
        Op::ReplayDeadLetter,
    ),
    route("GET", "/metrics", Op::Metrics),
    route("GET", "/healthz", Op::Healthz),
    route("GET", "/openapi.json", Op::OpenApi),
];

fn handler(op: Op, filter: MethodFilter) -> MethodRouter<Arc<AppState>> {
    match op {
        Op::IngestEvent => on(filter, api::events::ingest),
        Op::GetEvent => on(filter, api::events::get),
        Op::CreateEndpoint => on(filter, api::endpoints::create),
        Op::ListEndpoints => on(filter, api::endpoints::list),
        Op::GetEndpoint => on(filter, api::endpoints::get),
        Op::UpdateEndpoint => on(filter, api::endpoints::update),
        Op::DeleteEndpoint => on(filter, api::endpoints::delete),
        Op::ListDeadLetters => on(filter, api::dlq::list),
        Op::ReplayDeadLetters => on(filter, api::dlq::replay_all),
        Op::ReplayDeadLetter => on(filter, api::dlq::replay_one),
        Op::Metrics => on(filter, api::ops::metrics),
        Op::Healthz => on(filter, api::ops::healthz),
        Op::OpenApi => on(filter, api::ops::openapi),
    }
}

/// The router of [`ROUTES`], with JSON answers for unknown routes and methods, a body
/// size limit, and a log line per request.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    let mut router = Router::new();
    for r in ROUTES {
        let method = Method::from_bytes(r.method.as_bytes()).unwrap_or(Method::GET);
        let filter = MethodFilter::try_from(method).unwrap_or(MethodFilter::GET);
        router = router.route(r.path, handler(r.op, filter));
    }
    router
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

#[allow(clippy::unused_async, reason = "axum handlers are async")]
async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

#[allow(clippy::unused_async, reason = "axum handlers are async")]
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// One log line per request: method, route (its template, such as `/events/{id}`:
/// ids and queries stay out of the logs), status, duration. Never headers (they carry
/// tokens) nor bodies (they carry secrets).
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("(no route)", MatchedPath::as_str);
    let response = next.run(request).await.into_response();
    let status = response.status().as_u16();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if status >= 500 {
        tracing::warn!(%method, route, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, route, status, elapsed_ms, "request");
    }
    response
}
