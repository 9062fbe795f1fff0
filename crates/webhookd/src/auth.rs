//! Bearer-token authentication: an admin token and tenant-scoped tokens.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time, every configured
//! token each time, so neither timing nor the order of checks reveals a match.

use std::sync::Arc;

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use ring::digest::{SHA256, digest};
use webhook_core::TenantId;

use crate::{app::AppState, error::ApiError};

type Digest = [u8; 32];

fn hash(token: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token).as_ref());
    out
}

/// Constant-time equality of two digests.
fn same(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured tokens.
pub(crate) struct Auth {
    admin: Option<Digest>,
    tenants: Vec<(Digest, TenantId)>,
}

impl Auth {
    pub(crate) fn new(admin: Option<&str>, tenants: &[(TenantId, String)]) -> Self {
        Self {
            admin: admin.map(|t| hash(t.as_bytes())),
            tenants: tenants
                .iter()
                .map(|(tenant, token)| (hash(token.as_bytes()), tenant.clone()))
                .collect(),
        }
    }

    /// Whether any token is configured (else every caller is admin).
    pub(crate) fn required(&self) -> bool {
        self.admin.is_some() || !self.tenants.is_empty()
    }

    /// Who presents `token`, if anyone.
    fn identify(&self, token: &str) -> Option<Principal> {
        let presented = hash(token.as_bytes());
        let admin = self.admin.as_ref().is_some_and(|d| same(d, &presented));
        let mut tenant = None;
        for (digest, id) in &self.tenants {
            if same(digest, &presented) && tenant.is_none() {
                tenant = Some(id.clone());
            }
        }
        if admin {
            Some(Principal::Admin)
        } else {
            tenant.map(Principal::Tenant)
        }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The admin token (or no authentication configured): sees every tenant.
    Admin,
    /// A tenant-scoped token.
    Tenant(TenantId),
}

impl Principal {
    /// The tenant a request acts in: a tenant token's own tenant (a different
    /// `requested` one is refused, naming `field`), or for the admin whatever it asks.
    pub(crate) fn tenant_for(
        &self,
        requested: Option<&str>,
        field: &str,
    ) -> Result<Option<TenantId>, ApiError> {
        let requested = requested.map(|t| parse_tenant(t, field)).transpose()?;
        match (self, requested) {
            (Self::Admin, requested) => Ok(requested),
            (Self::Tenant(own), Some(other)) if own != &other => Err(ApiError::invalid(
                field,
                "a tenant token acts only in its own tenant",
            )),
            (Self::Tenant(own), _) => Ok(Some(own.clone())),
        }
    }

    /// Whether something of `tenant` is visible to the caller.
    pub(crate) fn sees(&self, tenant: Option<&TenantId>) -> bool {
        match self {
            Self::Admin => true,
            Self::Tenant(own) => tenant == Some(own),
        }
    }

    /// Fails unless the caller is the admin.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::Tenant(_) => Err(ApiError::forbidden("this route needs the admin token")),
        }
    }
}

/// Checks a tenant id's syntax.
pub(crate) fn parse_tenant(value: &str, field: &str) -> Result<TenantId, ApiError> {
    if crate::api::valid_id(value) {
        Ok(TenantId::from(value))
    } else {
        Err(ApiError::invalid(
            field,
            "must be 1 to 256 characters of A-Z a-z 0-9 - _ . : ~",
        ))
    }
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        if !state.auth.required() {
            return Ok(Self::Admin);
        }
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "missing bearer token: send Authorization: Bearer <token>",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("malformed Authorization header: expected Bearer <token>")
            })?;
        state
            .auth
            .identify(token)
            .ok_or_else(|| ApiError::unauthorized("invalid bearer token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_identify_their_holder() {
        let auth = Auth::new(
            Some("root"),
            &[("acme".into(), "a".into()), ("globex".into(), "g".into())],
        );
        assert!(auth.required());
        assert_eq!(auth.identify("root"), Some(Principal::Admin));
        assert_eq!(auth.identify("a"), Some(Principal::Tenant("acme".into())));
        assert_eq!(auth.identify("g"), Some(Principal::Tenant("globex".into())));
        assert_eq!(auth.identify("roo"), None);
        assert_eq!(auth.identify(""), None);
        assert!(!Auth::new(None, &[]).required());
    }

    #[test]
    fn tenant_tokens_cannot_reach_other_tenants() {
        let p = Principal::Tenant("acme".into());
        assert_eq!(p.tenant_for(None, "tenant").unwrap(), Some("acme".into()));
        assert_eq!(
            p.tenant_for(Some("acme"), "tenant").unwrap(),
            Some("acme".into())
        );
        assert!(p.tenant_for(Some("globex"), "tenant").is_err());
        assert!(p.sees(Some(&"acme".into())));
        assert!(!p.sees(Some(&"globex".into())));
        assert!(!p.sees(None));
        assert!(Principal::Admin.sees(None));
    }
}
