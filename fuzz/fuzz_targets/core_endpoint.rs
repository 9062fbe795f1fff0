//! `webhook-core`'s endpoint model: JSON deserialization, `Endpoint::validate`,
//! `validate_url`, event-type globs, and what the dispatcher does with a policy.
//!
//! No input may panic; a valid endpoint must survive a JSON round trip and stay valid,
//! and no delay it asks for may overflow the clock.

#![no_main]

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use webhook_core::{
    CircuitBreaker, Endpoint, MAX_URL_LEN, RetryPolicy, circuit::MAX_OPEN_TIMEOUT,
    retry::MAX_RETRY_DELAY, validate_url,
};

fn fits_the_clock(d: Duration) -> bool {
    let end = DateTime::<Utc>::from_timestamp(253_402_300_799, 0).expect("year 9999");
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| end.checked_add_signed(d))
        .is_some()
}

fn check_policy(policy: &RetryPolicy) {
    for attempt in [0, 1, 2, 7, u32::MAX] {
        let delay = policy.delay(attempt, 0.999);
        assert!(delay <= MAX_RETRY_DELAY && fits_the_clock(delay));
        let _ = policy.decide(attempt, Some(Duration::MAX), f64::NAN);
    }
}

/// Equal up to the last bits of floats, which serde_json may round.
fn same(a: &Endpoint, b: &Endpoint) -> bool {
    let strip = |e: &Endpoint| {
        let mut e = e.clone();
        if let Some(RetryPolicy::Exponential(b)) = &mut e.retry_policy {
            b.multiplier = (b.multiplier * 1e9).round();
            b.jitter = (b.jitter * 1e9).round();
        }
        e
    };
    strip(a) == strip(b)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(url) = validate_url(text)
    {
        assert!(matches!(url.scheme(), "http" | "https"));
        if url.as_str().len() <= MAX_URL_LEN {
            assert_eq!(validate_url(url.as_str()).expect("normalized URL"), url);
        }
    }
    let Ok(endpoint) = serde_json::from_slice::<Endpoint>(data) else {
        return;
    };
    let _ = endpoint.subscribes_to("order.created");
    let _ = endpoint.subscribes_to("");
    if let Some(policy) = &endpoint.retry_policy {
        check_policy(policy);
    }
    if let Some(config) = &endpoint.circuit_breaker {
        let mut breaker = CircuitBreaker::new(config.clone());
        let now = Instant::now();
        for _ in 0..3 {
            breaker.on_failure(now);
        }
        if let Err(wait) = breaker.try_acquire(now) {
            assert!(wait <= MAX_OPEN_TIMEOUT && fits_the_clock(wait));
        }
    }
    if endpoint.validate().is_err() {
        return;
    }
    validate_url(&endpoint.url).expect("a valid endpoint has a valid URL");
    let json = serde_json::to_vec(&endpoint).expect("serializes");
    let back: Endpoint = serde_json::from_slice(&json).expect("reads back");
    assert!(same(&back, &endpoint), "{}", String::from_utf8_lossy(&json));
    back.validate().expect("still valid");
});
