//! Optional telemetry: the `metrics` facade (feature `metrics`) and `tracing` spans
//! (feature `tracing`). Without the features these compile to nothing.

use std::time::Duration;

use webhook_core::{Completion, EndpointId};

/// Counts a finished lease by outcome, and records delivery latency.
pub(crate) fn completed(completion: &Completion, latency: Option<Duration>) {
    #[cfg(feature = "metrics")]
    {
        let outcome = match completion {
            Completion::Delivered { .. } => "delivered",
            Completion::Retry { .. } => "retried",
            Completion::Dead { .. } => "dead",
            Completion::Defer { .. } => "deferred",
        };
        metrics::counter!("webhook_deliveries_total", "outcome" => outcome).increment(1);
        if let Some(latency) = latency {
            metrics::histogram!("webhook_delivery_latency_seconds").record(latency.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (completion, latency);
}

/// Counts an HTTP attempt and its status (0 when no response came).
pub(crate) fn attempted(status: Option<u16>, duration: Duration) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("webhook_attempts_total", "status" => status.unwrap_or(0).to_string())
            .increment(1);
        metrics::histogram!("webhook_attempt_duration_seconds").record(duration.as_secs_f64());
    }
    #[cfg(feature = "tracing")]
    tracing::debug!(
        status = status.unwrap_or(0),
        duration_ms = duration.as_millis() as u64,
        "attempt finished"
    );
    #[cfg(not(any(feature = "metrics", feature = "tracing")))]
    let _ = (status, duration);
}

/// Logs a failed store operation (feature `tracing`); the dispatcher also counts it
/// (`Dispatcher::store_errors`). Store errors carry no secrets.
pub(crate) fn store_failed(during: &str, error: &dyn std::fmt::Display) {
    #[cfg(feature = "tracing")]
    tracing::warn!(during, error = %error, "store operation failed");
    #[cfg(not(feature = "tracing"))]
    let _ = (during, error);
}

/// Logs a stored endpoint this process cannot use (feature `tracing`): its deliveries
/// wait until it is fixed.
pub(crate) fn endpoint_unusable(id: &EndpointId, error: &crate::Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(endpoint = %id, error = %error, "stored endpoint is unusable; its deliveries wait");
    #[cfg(not(feature = "tracing"))]
    let _ = (id, error);
}

/// Runs `future` inside a `webhook.attempt` span (feature `tracing`).
pub(crate) async fn in_attempt_span<F: Future>(
    endpoint: &str,
    message_id: &str,
    future: F,
) -> F::Output {
    #[cfg(feature = "tracing")]
    {
        use tracing::Instrument as _;
        future
            .instrument(tracing::info_span!("webhook.attempt", endpoint, message_id))
            .await
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (endpoint, message_id);
        future.await
    }
}
