//! Structured logs on stderr via `tracing`: human text or one JSON object per line.
//!
//! The level is set with `RUST_LOG`; the default, `info,webhook_dispatcher=debug`,
//! includes one line per delivery attempt (endpoint, `webhook-id`, status, duration).
//! Nothing logged by webhookd contains a secret or a token.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The filter used when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,webhook_dispatcher=debug";

/// Installs the global subscriber; a second call does nothing.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
