//! API errors: `{"error": {"code", "message", "field"?}}` with the right status.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400: the request cannot be parsed.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: `field` is invalid.
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            message: format!("invalid {field}: {message}"),
            field: Some(field),
        }
    }

    /// 404: `kind` `id` does not exist (or is not visible to the caller).
    pub(crate) fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} {id:?} not found"),
        )
    }

    /// 401.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 413.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 409 `too_many_endpoints`: the scope already has `limit` endpoints.
    ///
    /// 409 rather than 422 or 429: the request itself is valid (422 would blame a field,
    /// and `tenant` is often not in the body at all, being implied by a tenant token),
    /// and waiting does not help (429 invites a retry after a delay). It conflicts with
    /// the current state of the tenant's endpoints and succeeds once one is deleted,
    /// which is what RFC 9110 describes for 409.
    pub(crate) fn too_many_endpoints(
        tenant: Option<&webhook_core::TenantId>,
        limit: usize,
    ) -> Self {
        let scope = match tenant {
            Some(t) => format!("tenant {:?} already has", t.as_str()),
            None => "there are already".to_owned(),
        };
        let untenanted = if tenant.is_none() {
            " without a tenant"
        } else {
            ""
        };
        Self::new(
            StatusCode::CONFLICT,
            "too_many_endpoints",
            format!(
                "{scope} {limit} endpoints{untenanted}, the most allowed \
                 (--max-endpoints-per-tenant); delete one first"
            ),
        )
    }

    /// 500, without details (they are logged).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503: retry later.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"webhookd\""),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<webhook_dispatcher::Error> for ApiError {
    fn from(e: webhook_dispatcher::Error) -> Self {
        use webhook_dispatcher::Error as E;
        match e {
            E::Invalid { field, message } => Self::invalid(field, message),
            E::NotFound { kind, id } => Self::not_found(kind, &id),
            E::PayloadTooLarge { limit, .. } => Self::too_large(limit),
            E::QueueFull { .. } | E::ShuttingDown => Self::unavailable(e.to_string()),
            E::Store(inner) => Self::from(inner),
            other => {
                tracing::error!(error = %other, "dispatcher error");
                Self::internal("internal error")
            }
        }
    }
}

impl From<webhook_core::Error> for ApiError {
    fn from(e: webhook_core::Error) -> Self {
        use webhook_core::Error as E;
        match e {
            E::Invalid { field, message } => Self::invalid(field, message),
            E::NotFound { kind, id } => Self::not_found(kind, &id),
            ref other if other.is_retryable() => {
                tracing::warn!(error = %other, "store unavailable");
                Self::unavailable("the store is unavailable; try again")
            }
            other => {
                tracing::error!(error = %other, "store error");
                Self::internal("internal error")
            }
        }
    }
}

/// `Result` with [`ApiError`].
pub(crate) type ApiResult<T> = Result<T, ApiError>;
