//! What [`App::build`](crate::App::build) needs, independent of how it was configured.

use std::{path::PathBuf, time::Duration};

use webhook_core::{CircuitBreakerConfig, RetryPolicy, SignatureScheme, TenantId};
use webhook_dispatcher::{DispatcherConfig, SealingKey};

use crate::cli::ServeArgs;

/// Longest backoff delay when `BACKOFF_BASE_SECONDS` sets the policy.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Where the service keeps its state.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded redb file `webhookd.redb` in the data directory.
    Redb,
    /// PostgreSQL at this URL.
    Postgres(String),
    /// Redis at this URL.
    Redis(String),
}

impl std::fmt::Debug for StoreSpec {
    /// Never prints URLs: they may hold passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl StoreSpec {
    /// Chooses the store from a `--store` / `DATABASE_URL` value: a `postgres://` or
    /// `postgresql://` URL selects PostgreSQL, a `redis://` (or `redis+unix://`) URL
    /// Redis, `redb` or nothing the embedded redb file.
    ///
    /// # Errors
    /// Any other value (another scheme, a misspelt one): falling back to a local file
    /// would give each node of a cluster a private store. The message never contains
    /// the value, which may hold a password.
    pub fn from_value(value: Option<&str>) -> Result<Self, String> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Self::Redb);
        };
        let lower = value.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(Self::Postgres(value.to_owned()))
        } else if lower.starts_with("redis://") || lower.starts_with("redis+unix://") {
            Ok(Self::Redis(value.to_owned()))
        } else if lower == "redb" {
            Ok(Self::Redb)
        } else {
            let scheme = lower
                .split_once("://")
                .map(|(scheme, _)| scheme)
                .filter(|s| {
                    s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                });
            Err(match scheme {
                Some(scheme) => format!(
                    "the store URL scheme {scheme}:// is not supported: use postgres://, \
                     postgresql://, redis:// or redis+unix://, or redb (--store, \
                     WEBHOOKD_STORE or DATABASE_URL)"
                ),
                None => "the store setting (--store, WEBHOOKD_STORE or DATABASE_URL) is \
                         neither a postgres:// or redis:// URL nor redb"
                    .to_owned(),
            })
        }
    }

    /// `redb`, `postgres` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Redb => "redb",
            Self::Postgres(_) => "postgres",
            Self::Redis(_) => "redis",
        }
    }
}

/// Size and count limits of the API. Each is a flag; every refusal names the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest endpoint `url` and event `target_url`, in bytes (422 on the field). At
    /// most [`webhook_core::MAX_URL_LEN`].
    pub max_url_bytes: usize,
    /// Most custom headers of one endpoint (422 on `headers`).
    pub max_endpoint_headers: usize,
    /// Largest total of an endpoint's header names and values, in bytes (422 on
    /// `headers`); no single value may be larger either.
    pub max_endpoint_header_bytes: usize,
    /// Most endpoints of one tenant, implicit ones included; the endpoints without a
    /// tenant share the same limit (409 `too_many_endpoints`).
    pub max_endpoints_per_tenant: usize,
}

impl Limits {
    /// URLs of 2048 bytes, 32 headers totalling 8 KiB, 1000 endpoints per tenant.
    pub const DEFAULT: Self = Self {
        max_url_bytes: 2048,
        max_endpoint_headers: 32,
        max_endpoint_header_bytes: 8 * 1024,
        max_endpoints_per_tenant: 1000,
    };

    /// Longest header name, in bytes (not configurable: no real header is longer).
    pub const MAX_HEADER_NAME_BYTES: usize = 256;

    /// Checks that every limit is usable.
    ///
    /// # Errors
    /// A message naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=webhook_core::MAX_URL_LEN).contains(&self.max_url_bytes) {
            return Err(format!(
                "--max-url-bytes must be from 1 to {}",
                webhook_core::MAX_URL_LEN
            ));
        }
        if self.max_endpoints_per_tenant == 0 {
            return Err("--max-endpoints-per-tenant must be at least 1".to_owned());
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Everything the service is configured with. `Debug` hides tokens and secrets.
#[derive(Clone)]
pub struct Settings {
    /// Directory of the embedded redb file (created if missing).
    pub data_dir: PathBuf,
    /// Which store to use.
    pub store: StoreSpec,
    /// Where in a shared PostgreSQL or Redis the data lives: the PostgreSQL schema
    /// (default that of `webhook-store-postgres`) or the Redis key prefix (default
    /// `webhookd`). Ignored by redb.
    pub store_namespace: Option<String>,
    /// Admin bearer token; with no token at all configured, the API is open.
    pub api_token: Option<String>,
    /// Tenant-scoped bearer tokens.
    pub tenant_tokens: Vec<(TenantId, String)>,
    /// Allow private, loopback and link-local destinations (off: SSRF guard on).
    pub allow_private_destinations: bool,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// URL, header and endpoint-count limits.
    pub limits: Limits,
    /// Encrypts endpoint secrets in the store (see [`webhook_dispatcher::sealing`]).
    /// `None`: secrets are stored in plaintext, and encrypted ones cannot be read.
    pub secret_encryption_key: Option<SealingKey>,
    /// Secret of implicit endpoints (`target_url` and `TARGET_URL`).
    pub webhook_secret: Option<String>,
    /// Signature scheme of implicit endpoints.
    pub signature_scheme: SignatureScheme,
    /// Default target of `POST /events`.
    pub target_url: Option<String>,
    /// Engine settings. `destination_policy` and `max_payload_bytes` are overridden from
    /// `allow_private_destinations` and `max_body_bytes`.
    pub dispatcher: DispatcherConfig,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenants: Vec<&str> = self.tenant_tokens.iter().map(|(t, _)| t.as_str()).collect();
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field("store", &self.store)
            .field("store_namespace", &self.store_namespace)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("tenant_tokens", &tenants)
            .field(
                "allow_private_destinations",
                &self.allow_private_destinations,
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("limits", &self.limits)
            // Shows only the key id.
            .field("secret_encryption_key", &self.secret_encryption_key)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("signature_scheme", &self.signature_scheme)
            .field("target_url", &self.target_url)
            .field("dispatcher", &self.dispatcher)
            .finish()
    }
}

impl Settings {
    /// Defaults: redb in `data_dir`, no auth, SSRF guard on, 1 MiB bodies, the
    /// [`Limits::DEFAULT`] limits, secrets stored in plaintext.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            store: StoreSpec::Redb,
            store_namespace: None,
            api_token: None,
            tenant_tokens: Vec::new(),
            allow_private_destinations: false,
            max_body_bytes: 1024 * 1024,
            limits: Limits::DEFAULT,
            secret_encryption_key: None,
            webhook_secret: None,
            signature_scheme: SignatureScheme::StandardWebhooks,
            target_url: None,
            dispatcher: DispatcherConfig::default(),
        }
    }

    /// Settings from parsed flags and environment.
    ///
    /// # Errors
    /// A message naming the flag when a combination is invalid.
    pub fn from_args(args: &ServeArgs) -> Result<Self, String> {
        let store_value = args.store.as_deref().or(args.database_url.as_deref());
        let mut settings = Self::new(&args.data_dir);
        settings.store = StoreSpec::from_value(store_value)?;
        settings.store_namespace = args.store_namespace.clone().filter(|n| !n.is_empty());
        settings.api_token = match args.api_token.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(
                    "--api-token (WEBHOOKD_API_TOKEN) is set but empty: unset it to \
                            run without authentication"
                        .to_owned(),
                );
            }
            Some(token) => Some(token.to_owned()),
        };
        settings.tenant_tokens = args
            .tenant_tokens
            .iter()
            .map(|t| (t.tenant.clone(), t.token.clone()))
            .collect();
        check_distinct_tokens(settings.api_token.as_deref(), &settings.tenant_tokens)?;
        settings.allow_private_destinations = args.allow_private_destinations;
        if args.max_body_bytes == 0 {
            return Err("--max-body-bytes must be at least 1".to_owned());
        }
        settings.max_body_bytes = args.max_body_bytes;
        settings.limits = Limits {
            max_url_bytes: args.max_url_bytes,
            max_endpoint_headers: args.max_endpoint_headers,
            max_endpoint_header_bytes: args.max_endpoint_header_bytes,
            max_endpoints_per_tenant: args.max_endpoints_per_tenant,
        };
        settings.limits.validate()?;
        settings.secret_encryption_key = args.secret_encryption_key.clone();
        settings.webhook_secret = args.webhook_secret.clone().filter(|s| !s.is_empty());
        if let Some(secret) = &settings.webhook_secret {
            // It signs the implicit endpoints' deliveries: refused now, not at the
            // first event.
            webhook_core::validate_secret(secret.as_bytes())
                .map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
        }
        settings.signature_scheme = args.signature_scheme.scheme();
        settings.target_url = args.target_url.clone().filter(|s| !s.is_empty());
        if let Some(url) = &settings.target_url {
            webhook_core::validate_url(url).map_err(|e| format!("TARGET_URL: {e}"))?;
        }
        let cfg = &mut settings.dispatcher;
        if let Some(poll) = args.poll_interval {
            cfg.poll_interval = poll;
        }
        if let Some(timeout) = args.http_timeout {
            cfg.request_timeout = timeout;
        }
        cfg.default_retry_policy = retry_policy(args.backoff_base, args.max_attempts);
        cfg.default_circuit_breaker = CircuitBreakerConfig {
            failure_threshold: args.circuit_breaker_threshold,
            open_timeout: args.circuit_breaker_open_timeout,
            ..CircuitBreakerConfig::default()
        };
        cfg.shutdown_timeout = args.shutdown_timeout;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(settings)
    }
}

/// The default retry policy from seed 003's `BACKOFF_BASE_SECONDS` and `MAX_ATTEMPTS`:
/// delays base, base², base³… (a base under 1 s repeats), ±20 % jitter, at most 1 h.
pub fn retry_policy(backoff_base: Option<Duration>, max_attempts: Option<u32>) -> RetryPolicy {
    let policy = match backoff_base {
        Some(base) => {
            let mut policy = RetryPolicy::exponential(base, MAX_BACKOFF.max(base), 15);
            if let RetryPolicy::Exponential(b) = &mut policy {
                b.multiplier = base.as_secs_f64().max(1.0);
            }
            policy
        }
        None => RetryPolicy::default(),
    };
    match max_attempts {
        Some(n) => policy.with_max_attempts(n),
        None => policy,
    }
}

/// Refuses a token given twice: one token for two tenants, or a tenant token equal to
/// the admin token, would make a caller someone else than intended.
fn check_distinct_tokens(
    admin: Option<&str>,
    tenants: &[(TenantId, String)],
) -> Result<(), String> {
    for (i, (tenant, token)) in tenants.iter().enumerate() {
        if admin == Some(token.as_str()) {
            return Err(format!(
                "the token of tenant {tenant:?} is the admin token (--api-token)"
            ));
        }
        if let Some((other, _)) = tenants[..i].iter().find(|(_, t)| t == token) {
            return Err(format!(
                "tenants {other:?} and {tenant:?} have the same token"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_be_distinct_and_not_empty() {
        use clap::Parser as _;
        let settings = |args: &[&str]| {
            let cli = crate::cli::Cli::try_parse_from(
                std::iter::once("webhookd").chain(args.iter().copied()),
            )
            .expect("flags parse");
            Settings::from_args(&cli.serve)
        };
        let err = settings(&["--api-token", "T", "--tenant-token", "acme=T"]).unwrap_err();
        assert!(
            err.contains("admin token") && !err.contains("\"T\""),
            "{err}"
        );
        let err = settings(&["--tenant-token", "acme=X,globex=X"]).unwrap_err();
        assert!(err.contains("acme") && err.contains("globex"), "{err}");
        let err = settings(&["--api-token", " "]).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let ok = settings(&["--api-token", "A", "--tenant-token", "acme=t1 ,globex=t2"]).unwrap();
        assert_eq!(
            ok.tenant_tokens[0].1, "t1",
            "whitespace around a token is dropped"
        );
        assert!(ok.api_token.is_some());
    }

    #[test]
    fn store_is_chosen_by_url_scheme() {
        let kind = |value| StoreSpec::from_value(value).map(|s| s.kind());
        assert_eq!(kind(None), Ok("redb"));
        assert_eq!(kind(Some("")), Ok("redb"));
        assert_eq!(kind(Some("REDB")), Ok("redb"));
        assert_eq!(kind(Some("postgresql://u:p@h/db")), Ok("postgres"));
        assert_eq!(kind(Some("postgres://h/db")), Ok("postgres"));
        assert_eq!(kind(Some("redis://h:6379")), Ok("redis"));
        assert!(
            !format!("{:?}", StoreSpec::from_value(Some("postgres://u:pw@h/db"))).contains("pw")
        );
    }

    #[test]
    fn an_unknown_store_value_is_refused_without_showing_it() {
        for (value, named) in [
            ("rediss://u:pw-1@h:6380", "rediss://"),
            ("postgress://u:pw-1@h/db", "postgress://"),
            ("./pw-1/webhookd.redb", "neither"),
        ] {
            let err = StoreSpec::from_value(Some(value)).unwrap_err();
            assert!(err.contains(named), "{value}: {err}");
            assert!(!err.contains("pw-1"), "{value}: {err}");
        }
    }

    #[test]
    fn debug_hides_tokens_and_secrets() {
        let mut s = Settings::new("data");
        s.api_token = Some("tok-123".into());
        s.webhook_secret = Some("sec-456".into());
        s.tenant_tokens = vec![("acme".into(), "ten-789".into())];
        s.store = StoreSpec::from_value(Some("postgres://u:pw-000@h/db")).unwrap();
        let key = [0x5a_u8; 32];
        s.secret_encryption_key = Some(SealingKey::from_bytes(&key));
        let shown = format!("{s:?}");
        let key_b64 = "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo";
        for secret in [
            "tok-123", "sec-456", "ten-789", "pw-000", key_b64, "5a5a5a5a", "90, 90",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("acme"));
    }

    #[test]
    fn backoff_base_gives_powers() {
        let p = retry_policy(Some(Duration::from_secs(2)), Some(20));
        assert_eq!(p.max_attempts(), 20);
        // The jitter sample 0.5 means no jitter.
        assert_eq!(p.delay(1, 0.5), Duration::from_secs(2));
        assert_eq!(p.delay(2, 0.5), Duration::from_secs(4));
        assert_eq!(p.delay(3, 0.5), Duration::from_secs(8));
        p.validate().unwrap();
        let fast = retry_policy(Some(Duration::from_millis(50)), None);
        fast.validate().unwrap();
        assert_eq!(fast.delay(5, 0.5), Duration::from_millis(50));
    }
}
