//! Command-line flags and environment variables.
//!
//! Every flag can also be set through the environment variable shown in `--help`.
//! Seed 003's variables (`DATABASE_URL`, `WEBHOOK_SECRET`, `TARGET_URL`,
//! `WORKER_POLL_INTERVAL`, `HTTP_TIMEOUT`, `MAX_ATTEMPTS`, `BACKOFF_BASE_SECONDS`, and
//! the mock receiver's `FAILURE_RATE`, `HANG_RATE`, `MAX_DELAY_SEC`) keep their meaning.
//!
//! The argument types do not implement `Debug`, so that tokens and secrets cannot be
//! printed by accident; [`Settings`](crate::Settings) prints them redacted.

use std::{ffi::OsStr, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum, builder::TypedValueParser, error::ErrorKind};
use webhook_core::{SignatureScheme, TenantId};
use webhook_dispatcher::SealingKey;

use crate::settings::Limits;

/// `webhookd`: the webhook delivery service. With no subcommand it serves the HTTP API.
#[derive(Parser)]
#[command(
    name = "webhookd",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run; none serves the API.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of the API server.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// A chaotic webhook receiver for trying webhookd out: verifies signatures, fails,
    /// hangs and dawdles at random, and logs one JSON line per request.
    MockReceiver(MockArgs),
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A signature scheme by name, as on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum SchemeName {
    /// Standard Webhooks (`webhook-signature: v1,<base64>`), the default.
    #[default]
    #[value(name = "standard_webhooks")]
    StandardWebhooks,
    /// `X-Webhook-Signature: sha256=<hex of HMAC(body)>` (seed 003; no replay protection).
    #[value(name = "body_only")]
    BodyOnly,
    /// `X-Webhook-Signature: t=<ts>,v1=<hex>` (seed 004).
    #[value(name = "inline_timestamp")]
    InlineTimestamp,
    /// `X-Webhook-Signature: <hex>` plus `X-Webhook-Timestamp` (seed 000).
    #[value(name = "split_timestamp")]
    SplitTimestamp,
}

impl SchemeName {
    /// The scheme, with default header names.
    pub fn scheme(self) -> SignatureScheme {
        match self {
            Self::StandardWebhooks => SignatureScheme::StandardWebhooks,
            Self::BodyOnly => SignatureScheme::BodyOnly,
            Self::InlineTimestamp => SignatureScheme::InlineTimestamp,
            Self::SplitTimestamp => SignatureScheme::split_timestamp(),
        }
    }
}

/// A tenant-scoped API token, written `TENANT=TOKEN`.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantToken {
    /// The tenant the token acts for.
    pub tenant: TenantId,
    /// The bearer token.
    pub token: String,
}

impl std::fmt::Debug for TenantToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TenantToken({}=<redacted>)", self.tenant)
    }
}

/// Parses `TENANT=TOKEN`.
///
/// # Errors
/// A message when either side is empty or the tenant is not a valid id. Whitespace
/// around the token is dropped (a bearer token in a header cannot carry it).
pub fn parse_tenant_token(s: &str) -> Result<TenantToken, String> {
    let (tenant, token) = s
        .split_once('=')
        .ok_or_else(|| "expected TENANT=TOKEN".to_owned())?;
    let tenant = tenant.trim();
    if !crate::api::valid_id(tenant) {
        return Err(format!(
            "tenant {tenant:?} must be 1 to 256 characters of A-Z a-z 0-9 - _ . : ~"
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("the token of tenant {tenant:?} is empty"));
    }
    Ok(TenantToken {
        tenant: TenantId::from(tenant),
        token: token.to_owned(),
    })
}

/// Parses a `--secret-encryption-key`: 32 bytes in base64.
///
/// # Errors
/// A message that never contains the value.
pub fn parse_sealing_key(s: &str) -> Result<SealingKey, String> {
    SealingKey::from_base64(s).map_err(|e| match e {
        webhook_dispatcher::Error::Invalid { message, .. } => {
            format!("{message}; make one with `openssl rand -base64 32`")
        }
        other => other.to_string(),
    })
}

/// A value parser for secret values: its errors never repeat the value (clap's own
/// "invalid value '...'" message would print a token or key to the terminal and logs).
#[derive(Clone, Copy)]
pub struct SecretValue<T>(pub fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for SecretValue<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg.map_or_else(|| "value".to_owned(), |a| format!("{a}"));
        let fail = |kind, message: String| {
            clap::Error::raw(
                kind,
                format!("invalid value for {name} (not shown, it is secret): {message}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| fail(ErrorKind::InvalidUtf8, "not UTF-8".to_owned()))?;
        (self.0)(text).map_err(|message| fail(ErrorKind::ValueValidation, message))
    }
}

/// Parses a positive number of seconds (fractions allowed) into a [`Duration`].
///
/// # Errors
/// A message when it is not a finite number above zero.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s:?} must be a number of seconds above zero"));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d.is_zero() => Err(format!("{s:?} is below one nanosecond")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

/// Parses a non-negative number of seconds (zero allowed).
///
/// # Errors
/// A message when it is not a finite number of at least zero.
pub fn parse_seconds_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    parse_seconds(s)
}

/// Parses a probability in `[0, 1]`.
///
/// # Errors
/// A message when it is not a number between 0 and 1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("{s:?} must be between 0 and 1"));
    }
    Ok(rate)
}

/// Settings of the API server (`webhookd` with no subcommand).
#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WEBHOOKD_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Directory of the embedded redb store (created if missing).
    #[arg(long, env = "WEBHOOKD_DATA_DIR", default_value = "./webhookd-data")]
    pub data_dir: PathBuf,

    /// Store: a `postgres://` / `postgresql://` URL selects PostgreSQL, a `redis://`
    /// URL selects Redis, `redb` (or nothing) the embedded redb file in `--data-dir`;
    /// anything else is refused. Falls back to `DATABASE_URL`.
    #[arg(long, env = "WEBHOOKD_STORE", hide_env_values = true)]
    pub store: Option<String>,

    /// Seed 003's store URL, used when `--store` is not given.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, hide = true)]
    pub database_url: Option<String>,

    /// Where in a shared database webhookd keeps its data: the PostgreSQL schema
    /// (default `webhook`) or the Redis key prefix (default `webhookd`).
    #[arg(long, env = "WEBHOOKD_STORE_NAMESPACE")]
    pub store_namespace: Option<String>,

    /// Admin bearer token for the API. Unset (and no tenant tokens): no authentication.
    #[arg(long, env = "WEBHOOKD_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// A tenant-scoped bearer token, `TENANT=TOKEN` (repeatable; in the environment a
    /// comma-separated list). Such a token sees and changes only its tenant's data.
    #[arg(
        long = "tenant-token",
        env = "WEBHOOKD_TENANT_TOKENS",
        value_name = "TENANT=TOKEN",
        value_delimiter = ',',
        value_parser = SecretValue(parse_tenant_token),
        hide_env_values = true
    )]
    pub tenant_tokens: Vec<TenantToken>,

    /// Encrypt endpoint signing secrets in the store with this key: 32 random bytes in
    /// base64 (`openssl rand -base64 32`). AES-256-GCM, bound to the endpoint id.
    /// Secrets stored before are read as they are and encrypted when next written.
    /// Without it, secrets are stored in plaintext, and encrypted ones cannot be read
    /// (webhookd refuses to start).
    #[arg(
        long,
        env = "WEBHOOKD_SECRET_ENCRYPTION_KEY",
        value_name = "BASE64_KEY",
        value_parser = SecretValue(parse_sealing_key),
        hide_env_values = true
    )]
    pub secret_encryption_key: Option<SealingKey>,

    /// Allow deliveries to loopback, private, link-local and metadata addresses (refused
    /// by default, against SSRF). Needed for a receiver on 127.0.0.1. The variable
    /// takes true/false, 1/0, yes/no or on/off.
    #[arg(
        long,
        env = "WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_private_destinations: bool,

    /// Largest request body the API accepts, in bytes (also the largest payload).
    #[arg(long, env = "WEBHOOKD_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Longest endpoint URL (and `target_url`), in bytes; at most 2048.
    #[arg(
        long,
        env = "WEBHOOKD_MAX_URL_BYTES",
        default_value_t = Limits::DEFAULT.max_url_bytes,
        value_parser = clap::value_parser!(u64).range(1..=webhook_core::MAX_URL_LEN as u64).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    )]
    pub max_url_bytes: usize,

    /// Most custom headers an endpoint may have.
    #[arg(
        long,
        env = "WEBHOOKD_MAX_ENDPOINT_HEADERS",
        default_value_t = Limits::DEFAULT.max_endpoint_headers
    )]
    pub max_endpoint_headers: usize,

    /// Largest total size of an endpoint's custom headers (names plus values), in bytes;
    /// also the largest single value. Header names are at most 256 bytes.
    #[arg(
        long,
        env = "WEBHOOKD_MAX_ENDPOINT_HEADER_BYTES",
        default_value_t = Limits::DEFAULT.max_endpoint_header_bytes
    )]
    pub max_endpoint_header_bytes: usize,

    /// Most endpoints per tenant (implicit `target_url` endpoints included); endpoints
    /// without a tenant have the same limit between them.
    #[arg(
        long,
        env = "WEBHOOKD_MAX_ENDPOINTS_PER_TENANT",
        default_value_t = Limits::DEFAULT.max_endpoints_per_tenant,
        value_parser = clap::value_parser!(u64).range(1..).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    )]
    pub max_endpoints_per_tenant: usize,

    /// Log format.
    #[arg(long, env = "WEBHOOKD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Signing secret of the implicit endpoints made for `target_url` and `TARGET_URL`
    /// (`whsec_<base64>` or any string, used as raw bytes). Unset: unsigned.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Signature scheme of the implicit endpoints.
    #[arg(
        long,
        env = "WEBHOOKD_SIGNATURE_SCHEME",
        value_enum,
        default_value_t = SchemeName::StandardWebhooks
    )]
    pub signature_scheme: SchemeName,

    /// Default target of `POST /events` when no `target_url` is given and no endpoint
    /// subscribes to the event type.
    #[arg(long, env = "TARGET_URL")]
    pub target_url: Option<String>,

    /// Seconds between store polls for due work (fractions allowed).
    #[arg(long, env = "WORKER_POLL_INTERVAL", value_parser = parse_seconds)]
    pub poll_interval: Option<Duration>,

    /// Seconds before an outbound webhook request times out.
    #[arg(long, env = "HTTP_TIMEOUT", value_parser = parse_seconds)]
    pub http_timeout: Option<Duration>,

    /// Attempts (the first included) before a delivery goes to the dead-letter queue,
    /// for endpoints without their own retry policy.
    #[arg(long, env = "MAX_ATTEMPTS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,

    /// Base of the exponential backoff in seconds: retries wait about base, base², base³…
    /// (with ±20 % jitter, at most 1 h; a base below 1 s repeats the base). Default:
    /// 5 s doubling.
    #[arg(long, env = "BACKOFF_BASE_SECONDS", value_parser = parse_seconds)]
    pub backoff_base: Option<Duration>,

    /// Consecutive failures that open an endpoint's circuit breaker (its deliveries are
    /// then deferred, not failed), for endpoints without their own setting.
    #[arg(
        long,
        env = "WEBHOOKD_CIRCUIT_BREAKER_THRESHOLD",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub circuit_breaker_threshold: u32,

    /// Seconds an open circuit breaker waits before trial requests.
    #[arg(
        long,
        env = "WEBHOOKD_CIRCUIT_BREAKER_OPEN_TIMEOUT",
        default_value = "60",
        value_parser = parse_seconds
    )]
    pub circuit_breaker_open_timeout: Duration,

    /// Seconds shutdown waits for API requests in flight (then stops waiting for
    /// them), and then for deliveries in flight (then releases them to be retried).
    #[arg(
        long,
        env = "WEBHOOKD_SHUTDOWN_TIMEOUT",
        default_value = "30",
        value_parser = parse_seconds_or_zero
    )]
    pub shutdown_timeout: Duration,
}

/// Settings of `webhookd mock-receiver`.
#[derive(Clone, Args)]
pub struct MockArgs {
    /// Address to listen on (every path is accepted).
    #[arg(long, env = "MOCK_RECEIVER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Fraction of requests answered 500.
    #[arg(long, env = "FAILURE_RATE", default_value = "0.7", value_parser = parse_rate)]
    pub failure_rate: f64,

    /// Fraction of requests that hang (never answered within any client timeout).
    #[arg(long, env = "HANG_RATE", default_value = "0.08", value_parser = parse_rate)]
    pub hang_rate: f64,

    /// Most seconds to wait before answering (uniformly random).
    #[arg(long, env = "MAX_DELAY_SEC", default_value = "5", value_parser = parse_seconds_or_zero)]
    pub max_delay: Duration,

    /// Secret to verify signatures with; unset: no verification.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Signature scheme to verify.
    #[arg(
        long,
        env = "WEBHOOKD_SIGNATURE_SCHEME",
        value_enum,
        default_value_t = SchemeName::StandardWebhooks
    )]
    pub scheme: SchemeName,

    /// Format of diagnostic logs (the per-request lines on stdout are always JSON).
    #[arg(long, env = "WEBHOOKD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "webhookd",
            "--listen",
            "127.0.0.1:9000",
            "--tenant-token",
            "acme=t1",
            "--tenant-token",
            "globex=t2,initech=t3",
            "--allow-private-destinations",
            "--poll-interval",
            "0.25",
            "--backoff-base",
            "2",
            "--max-attempts",
            "7",
            "--signature-scheme",
            "body_only",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let s = cli.serve;
        assert_eq!(s.listen.port(), 9000);
        let tenants: Vec<&str> = s.tenant_tokens.iter().map(|t| t.tenant.as_str()).collect();
        assert_eq!(tenants, ["acme", "globex", "initech"]);
        assert!(s.allow_private_destinations);
        assert_eq!(s.poll_interval, Some(Duration::from_millis(250)));
        assert_eq!(s.max_attempts, Some(7));
        assert_eq!(s.signature_scheme, SchemeName::BodyOnly);
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(!format!("{:?}", s.tenant_tokens).contains("t1"));
    }

    #[test]
    fn limit_flags_have_careful_defaults_and_bounds() {
        let s = Cli::try_parse_from(["webhookd"]).unwrap().serve;
        assert_eq!(
            (
                s.max_url_bytes,
                s.max_endpoint_headers,
                s.max_endpoint_header_bytes,
                s.max_endpoints_per_tenant
            ),
            (2048, 32, 8192, 1000)
        );
        assert!(s.secret_encryption_key.is_none());
        let s = Cli::try_parse_from([
            "webhookd",
            "--max-url-bytes",
            "512",
            "--max-endpoint-headers",
            "4",
            "--max-endpoint-header-bytes",
            "100",
            "--max-endpoints-per-tenant",
            "7",
        ])
        .unwrap()
        .serve;
        let limits = crate::Settings::from_args(&s).unwrap().limits;
        assert_eq!(
            limits,
            Limits {
                max_url_bytes: 512,
                max_endpoint_headers: 4,
                max_endpoint_header_bytes: 100,
                max_endpoints_per_tenant: 7,
            }
        );
        for args in [
            &["webhookd", "--max-url-bytes", "2049"][..],
            &["webhookd", "--max-url-bytes", "0"],
            &["webhookd", "--max-endpoints-per-tenant", "0"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn errors_about_secret_values_do_not_repeat_them() {
        for args in [
            &["webhookd", "--tenant-token", "bad/tenant=hunter2-token"][..],
            &["webhookd", "--tenant-token", "hunter2-token"],
            &["webhookd", "--secret-encryption-key", "hunter2-token"],
        ] {
            let Err(e) = Cli::try_parse_from(args) else {
                panic!("{args:?} accepted");
            };
            let shown = e.to_string();
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("not shown, it is secret"), "{shown}");
        }
    }

    #[test]
    fn mock_receiver_subcommand_parses() {
        let cli = Cli::try_parse_from([
            "webhookd",
            "mock-receiver",
            "--listen",
            "127.0.0.1:8080",
            "--failure-rate",
            "0.7",
            "--hang-rate",
            "0.08",
            "--max-delay",
            "5",
            "--secret",
            "s",
            "--scheme",
            "standard_webhooks",
        ])
        .unwrap();
        let Some(Command::MockReceiver(m)) = cli.command else {
            panic!("no subcommand");
        };
        assert!((m.failure_rate - 0.7).abs() < 1e-9);
        assert_eq!(m.max_delay, Duration::from_secs(5));
        assert_eq!(m.secret.as_deref(), Some("s"));
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["webhookd", "--tenant-token", "acme"][..],
            &["webhookd", "--tenant-token", "a/b=x"],
            &["webhookd", "--http-timeout", "0"],
            &["webhookd", "--max-attempts", "0"],
            &["webhookd", "mock-receiver", "--failure-rate", "1.5"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
