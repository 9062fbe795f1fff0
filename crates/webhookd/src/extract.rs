//! Request extractors that answer in the API's error format.

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::{app::AppState, error::ApiError};

/// Ids from the path. An id that cannot be one (it percent-decodes to bytes that are
/// not UTF-8) names nothing that exists: 404 in the API's error format, not axum's
/// plain-text 400.
pub(crate) struct PathIds<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathIds<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(ids) = Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no such resource: {}", rejection.body_text()),
                )
            })?;
        Ok(Self(ids))
    }
}

/// A JSON body: 400 when it is not JSON (or not sent as JSON), 413 when too large, 422
/// naming the field when a field is missing, unknown or of the wrong type.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::bad_request(
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(state.max_body_bytes)
            } else {
                ApiError::bad_request(format!("cannot read the body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn is_json(value: Option<&axum::http::HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses JSON, mapping errors to 400 (syntax) or 422 (a named field).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        // Malformed JSON is a 400 whatever it looks like.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize::<_, T>(&mut de);
    if parsed.is_ok() {
        de.end()
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    }
    parsed.map_err(|e| {
        // A field error may come before a syntax error later in the text: check the
        // syntax (only on this error path) so that malformed JSON is always a 400.
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return ApiError::bad_request(format!("malformed JSON: {syntax}"));
        }
        let path = e.path().to_string();
        let inner = e.into_inner();
        match field_of(&path, &inner.to_string()) {
            Some(field) => ApiError::invalid(field, strip_position(&inner)),
            None => ApiError::invalid("body", strip_position(&inner)),
        }
    })
}

/// The field an error is about: the path, plus the name in "unknown field `x`" and
/// "missing field `x`" messages (which report the enclosing object's path).
fn field_of(path: &str, message: &str) -> Option<String> {
    let path = if path == "." { "" } else { path };
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        ("", None) => None,
        ("", Some(name)) => Some(name.to_owned()),
        (path, None) => Some(path.to_owned()),
        (path, Some(name)) if path.ends_with(name) => Some(path.to_owned()),
        (path, Some(name)) => Some(format!("{path}.{name}")),
    }
}

/// serde_json's message without " at line 1 column 5".
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Query parameters by name; unknown names are refused with 422.
pub(crate) struct QueryParams(pub(crate) HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
        Ok(Self(map))
    }
}

impl QueryParams {
    /// Fails with 422 on any parameter not in `allowed`.
    pub(crate) fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(ApiError::invalid(
                unknown.clone(),
                format!(
                    "unknown query parameter (expected one of: {})",
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// A parameter's value, `None` when absent or empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn field(body: &str) -> (StatusCode, Option<String>) {
        let e = parse_json::<Outer>(body.as_bytes()).unwrap_err();
        (e.status, e.field)
    }

    #[test]
    fn errors_name_the_field() {
        let un = StatusCode::UNPROCESSABLE_ENTITY;
        assert_eq!(field(r#"{"name":"a","nmae":1}"#), (un, Some("nmae".into())));
        assert_eq!(field(r#"{}"#), (un, Some("name".into())));
        assert_eq!(field(r#"{"name":1}"#), (un, Some("name".into())));
        assert_eq!(
            field(r#"{"name":"a","inner":{"count":"x"}}"#),
            (un, Some("inner.count".into()))
        );
        assert_eq!(
            field(r#"{"name":"a","inner":{"cnt":1}}"#),
            (un, Some("inner.cnt".into()))
        );
        assert_eq!(field(r#"{"name":"a""#).0, StatusCode::BAD_REQUEST);
        assert_eq!(field(r#"[1]"#).0, StatusCode::BAD_REQUEST);
        assert_eq!(field(r#"{"name":"a"} x"#).0, StatusCode::BAD_REQUEST);
        // A field error before a syntax error is still malformed JSON.
        assert_eq!(field(r#"{"nmae":1, oops}"#).0, StatusCode::BAD_REQUEST);
        assert_eq!(field(r#"{"name":1,"#).0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn json_content_types() {
        let v = |s: &'static str| axum::http::HeaderValue::from_static(s);
        assert!(is_json(Some(&v("application/json"))));
        assert!(is_json(Some(&v("Application/JSON; charset=utf-8"))));
        assert!(is_json(Some(&v("application/merge-patch+json"))));
        assert!(!is_json(Some(&v("text/plain"))));
        assert!(!is_json(None));
    }
}
