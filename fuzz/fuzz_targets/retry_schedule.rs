//! Retry schedules and durations as users write them: `RetryPolicy::schedule` over
//! comma-separated entries, `RetryPolicy` JSON, `parse_duration`, `Retry-After`.
//!
//! No input may panic; a schedule that parses yields its delays in the order given and
//! never a delay that overflows the clock.

#![no_main]

use std::time::Duration;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use webhook_core::{
    RetryPolicy,
    retry::{Decision, MAX_RETRY_DELAY, format_duration, parse_duration, parse_retry_after},
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let entries: Vec<&str> = text.split(',').collect();
    if let Ok(policy) = RetryPolicy::schedule(&entries) {
        policy.validate().expect("a parsed schedule validates");
        let delays: Vec<Duration> = entries
            .iter()
            .map(|e| parse_duration(e).expect("each entry parsed"))
            .collect();
        assert_eq!(policy.max_attempts() as usize, delays.len() + 1);
        for (i, d) in delays.iter().enumerate().take(64) {
            let attempt = u32::try_from(i + 1).expect("small");
            assert!(*d <= MAX_RETRY_DELAY);
            assert_eq!(policy.delay(attempt, 0.5), *d);
            assert_eq!(
                policy.decide(attempt, None, 0.5),
                Decision::Retry { after: *d }
            );
        }
        assert_eq!(
            policy.delay(u32::MAX, 0.5),
            *delays.last().expect("non-empty")
        );
    }
    if let Ok(d) = parse_duration(&text) {
        assert_eq!(parse_duration(&format_duration(d)).expect("formatted"), d);
    }
    if let Ok(policy) = serde_json::from_slice::<RetryPolicy>(data) {
        let _ = policy.validate();
        for attempt in [0, 1, 3, u32::MAX] {
            assert!(policy.delay(attempt, 1.0) <= MAX_RETRY_DELAY);
        }
    }
    for now in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
        let _ = parse_retry_after(&text, now);
    }
});
