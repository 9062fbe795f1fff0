//! The configurable limits of [`Limits`]: URL length, endpoint headers, and endpoints
//! per tenant.
//!
//! # Endpoints per tenant under concurrency
//!
//! Creating an endpoint (explicitly, or an implicit one for a new `target_url`) counts
//! the endpoints of its tenant and stores the new one while holding
//! `AppState::endpoint_creation`, so within one webhookd process the limit holds
//! exactly, however many requests race. Processes sharing a PostgreSQL or Redis store
//! do not share that lock: when N processes create endpoints for one tenant at the same
//! moment, each sees the others' endpoints once they are stored, so the tenant can end
//! up at most N - 1 endpoints over the limit, never more; further creations are then
//! refused until enough are deleted.

use std::collections::BTreeMap;

use webhook_core::TenantId;

use crate::{
    app::AppState,
    error::{ApiError, ApiResult},
    settings::Limits,
};

/// Refuses a URL longer than the limit, naming `field`.
pub(crate) fn check_url(limits: &Limits, url: &str, field: &str) -> ApiResult<()> {
    if url.len() > limits.max_url_bytes {
        return Err(ApiError::invalid(
            field,
            format!(
                "is {} bytes, longer than the limit of {} bytes (--max-url-bytes)",
                url.len(),
                limits.max_url_bytes
            ),
        ));
    }
    Ok(())
}

/// Refuses too many headers, too long a name, or too many bytes in all.
pub(crate) fn check_headers(limits: &Limits, headers: &BTreeMap<String, String>) -> ApiResult<()> {
    if headers.len() > limits.max_endpoint_headers {
        return Err(ApiError::invalid(
            "headers",
            format!(
                "{} headers, more than the limit of {} (--max-endpoint-headers)",
                headers.len(),
                limits.max_endpoint_headers
            ),
        ));
    }
    let mut total = 0usize;
    for (name, value) in headers {
        if name.len() > Limits::MAX_HEADER_NAME_BYTES {
            return Err(ApiError::invalid(
                "headers",
                format!(
                    "a header name is {} bytes, longer than the limit of {} bytes",
                    name.len(),
                    Limits::MAX_HEADER_NAME_BYTES
                ),
            ));
        }
        if value.len() > limits.max_endpoint_header_bytes {
            return Err(ApiError::invalid(
                "headers",
                format!(
                    "the value of {name:?} is {} bytes, longer than the limit of {} bytes \
                     (--max-endpoint-header-bytes)",
                    value.len(),
                    limits.max_endpoint_header_bytes
                ),
            ));
        }
        total = total.saturating_add(name.len()).saturating_add(value.len());
    }
    if total > limits.max_endpoint_header_bytes {
        return Err(ApiError::invalid(
            "headers",
            format!(
                "the headers total {total} bytes (names and values), more than the limit of \
                 {} bytes (--max-endpoint-header-bytes)",
                limits.max_endpoint_header_bytes
            ),
        ));
    }
    Ok(())
}

impl AppState {
    /// Refuses a new endpoint in `tenant` (or without a tenant) when the scope is full.
    /// Call it while holding `endpoint_creation`, and store the endpoint before
    /// releasing it.
    pub(crate) async fn check_endpoint_quota(&self, tenant: Option<&TenantId>) -> ApiResult<()> {
        // The raw store: counting needs no secret, so none is decrypted.
        let listed = self.raw_store.list_endpoints(tenant).await?;
        let count = listed
            .iter()
            .filter(|e| e.tenant_id.as_ref() == tenant)
            .count();
        if count >= self.limits.max_endpoints_per_tenant {
            return Err(ApiError::too_many_endpoints(
                tenant,
                self.limits.max_endpoints_per_tenant,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_limits() {
        let limits = Limits {
            max_endpoint_headers: 2,
            max_endpoint_header_bytes: 10,
            ..Limits::DEFAULT
        };
        let h = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(check_headers(&limits, &h(&[("a", "1"), ("b", "1234567")])).is_ok());
        let too_many = check_headers(&limits, &h(&[("a", ""), ("b", ""), ("c", "")]));
        assert!(too_many.unwrap_err().message.contains("3 headers"));
        let too_big = check_headers(&limits, &h(&[("ab", "12345"), ("cd", "12")]));
        assert!(too_big.unwrap_err().message.contains("11 bytes"));
        let long_value = check_headers(&limits, &h(&[("a", "12345678901")]));
        assert!(long_value.unwrap_err().message.contains("value of \"a\""));
        let long_name = "n".repeat(257);
        let roomy = Limits {
            max_endpoint_header_bytes: 1000,
            ..limits
        };
        assert!(check_headers(&roomy, &h(&[(long_name.as_str(), "")])).is_err());
        assert!(check_headers(&roomy, &h(&[(&long_name[1..], "")])).is_ok());
    }

    #[test]
    fn url_limit_names_the_field() {
        let limits = Limits {
            max_url_bytes: 20,
            ..Limits::DEFAULT
        };
        assert!(check_url(&limits, "https://e.com/123456", "url").is_ok());
        let e = check_url(&limits, "https://e.com/1234567", "target_url").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("target_url"));
        assert!(e.message.contains("21 bytes"), "{}", e.message);
    }
}
