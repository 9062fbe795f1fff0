//! The quickstart: register an endpoint and deliver one signed webhook.
//!
//! ```sh
//! cargo run -p webhook-examples --example quickstart -- http://127.0.0.1:8080/webhook
//! ```

use std::time::Duration;

use webhook_dispatcher::{
    DeliveryRecord, Dispatcher, DispatcherConfig, Endpoint, Event, IdempotencyKey,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "https://example.com/webhook".to_owned());
    let record = run(&url).await?;
    println!(
        "evt_123 -> orders: {} after {} attempt(s)",
        record.delivery.state.name(),
        record.attempts.len()
    );
    Ok(())
}

/// Delivers `evt_123` to `url` and returns the delivery once it has been attempted.
pub async fn run(url: &str) -> Result<DeliveryRecord, webhook_dispatcher::Error> {
    let dispatcher = Dispatcher::new(DispatcherConfig::default());

    let endpoint = Endpoint::new("orders", url)
        .with_secret(b"supersecret")
        .with_tenant_id("tenant_a")
        .with_rate_limit(100, 200);
    dispatcher.register_endpoint(endpoint).await?;

    let event = Event::new("evt_123", r#"{"id":123}"#.as_bytes()).with_tenant_id("tenant_a");
    dispatcher.dispatch(event, vec!["orders".into()]).await?;

    // Wait for the first attempt's outcome, then stop cleanly.
    let key = IdempotencyKey::new("evt_123".into(), "orders".into(), Some("tenant_a".into()));
    let record = loop {
        match dispatcher.delivery_status(&key).await? {
            Some(record) if !record.attempts.is_empty() => break record,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    dispatcher.shutdown().await;
    Ok(record)
}
