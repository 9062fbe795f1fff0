//! Prometheus text exposition of [`Metrics`].

use std::fmt::Write as _;

use webhook_dispatcher::Metrics;

/// The Content-Type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders a metrics snapshot (and the count of failed store operations) in the
/// Prometheus text format. Every name starts with `webhookd_`.
pub fn render(m: &Metrics, store_errors: u64) -> String {
    let mut out = String::with_capacity(2048);
    let counters = [
        (
            "webhookd_deliveries_dispatched_total",
            "Deliveries created (one per event and endpoint).",
            m.dispatched,
        ),
        (
            "webhookd_deliveries_delivered_total",
            "Deliveries that got a 2xx answer.",
            m.delivered,
        ),
        (
            "webhookd_deliveries_retried_total",
            "Failed attempts scheduled for another try.",
            m.retried,
        ),
        (
            "webhookd_deliveries_dead_total",
            "Deliveries moved to the dead-letter queue.",
            m.dead,
        ),
        (
            "webhookd_deliveries_deferred_total",
            "Deliveries postponed by a rate limit or an open circuit (no attempt spent).",
            m.deferred,
        ),
        (
            "webhookd_attempts_total",
            "HTTP delivery attempts made.",
            m.attempts,
        ),
        (
            "webhookd_store_errors_total",
            "Store operations that failed and were retried.",
            store_errors,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let gauges = [
        (
            "webhookd_in_flight",
            "Delivery requests in flight now.",
            m.in_flight,
        ),
        (
            "webhookd_queued",
            "Accepted deliveries not yet delivered or dead (this process's view).",
            m.queued,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    let name = "webhookd_delivery_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from acceptance to successful delivery, by quantile.\n# TYPE {name} gauge"
    );
    for (q, d) in [
        ("0.5", m.latency_p50),
        ("0.9", m.latency_p90),
        ("0.99", m.latency_p99),
        ("1", m.latency_max),
    ] {
        let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {}", d.as_secs_f64());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_a_comment_or_a_sample() {
        let text = render(&Metrics::default(), 3);
        assert!(text.contains("webhookd_store_errors_total 3\n"));
        assert!(text.contains("webhookd_delivery_latency_seconds{quantile=\"0.99\"} 0\n"));
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.split_whitespace().count() == 2,
                "{line}"
            );
        }
    }
}
