//! Property tests over outside input: endpoint JSON and URLs, headers, retry schedules
//! and policies, circuit breaker settings, `Retry-After` values and ids.
//!
//! Nothing here may panic, and where a parse succeeds the result must keep its promise:
//! a valid URL round-trips, a valid schedule yields its delays in order, and no delay
//! (even of a policy that was never validated) overflows when added to the clock.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};
use webhook_core::{
    CircuitBreaker, CircuitBreakerConfig, Endpoint, Error, EventId, IdempotencyKey, MAX_URL_LEN,
    RetryPolicy, circuit::MAX_OPEN_TIMEOUT, retry::Decision, retry::MAX_RETRY_AFTER,
    retry::MAX_RETRY_DELAY, retry::format_duration, retry::parse_duration,
    retry::parse_retry_after, validate_url,
};

/// Cases per property: enough to find shallow bugs, few enough for `cargo test` on a
/// small machine.
const CASES: u32 = 256;

/// Strings shaped like URLs (to get past the parser), plus anything at all.
fn url_string() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        "https?://[a-z0-9.-]{1,12}(:[0-9]{1,6})?(/[ -~]{0,12})?",
        "(https?|HTTP|ftp|file|javascript|data|)(:|://|:///)[a-zA-Z0-9.:@\\[\\]%/?#_~-]{0,40}",
        (
            "(http|https|HtTpS)://",
            "([a-z0-9-]{0,10}(:[a-z0-9]{0,5})?@)?",
            prop_oneof![
                "[a-zA-Z0-9.-]{0,30}",
                "\\[[0-9a-fA-F:.]{0,40}\\]",
                "[0-9]{1,10}(\\.[0-9x]{1,4}){0,4}",
                "0x[0-9a-f]{1,8}",
                "xn--[a-z0-9]{0,12}",
                any::<String>(),
            ],
            "(:[0-9]{0,7})?",
            "(/[^#?]{0,20})?(\\?.{0,10})?(#.{0,5})?",
        )
            .prop_map(|(s, u, h, p, rest)| format!("{s}{u}{h}{p}{rest}")),
        "https://x.test/[a-z]{2040,2060}",
    ]
    .boxed()
}

/// Duration strings: valid ones of every unit, absurd magnitudes, and junk.
fn duration_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[0-9]{1,4}(ns|us|µs|ms|s|m|h|d)",
        2 => "[0-9]{5,30}(ns|us|ms|s|m|h|d)",
        1 => Just(format!("{}s", u64::MAX)),
        1 => Just(format!("{}d", u64::MAX)),
        1 => Just("213503982334601d".to_owned()),
        1 => Just(format!("{}ns", u128::MAX)),
        1 => " ?[0-9]{0,3} ?[a-zµ]{0,3} ?",
        1 => any::<String>(),
    ]
    .boxed()
}

/// A JSON retry policy, valid or not.
fn retry_policy_json() -> BoxedStrategy<Value> {
    let number = prop_oneof![
        Just(json!(1.0)),
        Just(json!(2)),
        Just(json!(0.5)),
        Just(json!(-1)),
        Just(json!(1e308)),
        Just(json!(0.0)),
        (0.0f64..10.0).prop_map(|f| json!(f)),
        any::<u32>().prop_map(|n| json!(n)),
        Just(json!("2")),
    ];
    prop_oneof![
        (
            proptest::collection::vec(duration_string(), 0..6),
            prop_oneof![any::<u32>(), 1u32..10],
        )
            .prop_map(|(d, n)| json!({"kind": "schedule", "delays": d, "max_attempts": n})),
        (
            prop_oneof![2 => "[1-9]s", 1 => duration_string()],
            prop_oneof![2 => "[1-9][0-9]m", 1 => duration_string()],
            number.clone(),
            prop_oneof![any::<u32>(), 1u32..20],
            number,
        )
            .prop_map(|(i, m, mul, n, j)| json!({
                "kind": "exponential", "initial": i, "max": m, "multiplier": mul,
                "max_attempts": n, "jitter": j,
            })),
        Just(json!({"kind": "exponential"})),
        Just(json!({"kind": "nope"})),
        Just(json!([])),
    ]
    .boxed()
}

/// Header maps, valid or not.
fn headers_json() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => proptest::collection::btree_map("X-[A-Za-z0-9-]{1,12}", "[ -~\t]{0,20}", 0..3),
        1 => proptest::collection::btree_map(any::<String>(), any::<String>(), 0..3),
    ]
    .prop_map(|m| json!(m))
    .boxed()
}

/// A valid-looking duration string most of the time.
fn short_duration() -> BoxedStrategy<String> {
    prop_oneof![3 => "[1-9][0-9]{0,2}(ms|s)", 1 => duration_string()].boxed()
}

/// Endpoint JSON objects whose fields are each usually valid, sometimes not, so that
/// both the validator and what lies behind it are reached.
fn endpoint_json() -> BoxedStrategy<Value> {
    let fields = (
        prop_oneof![8 => "[a-z0-9_-]{1,20}", 1 => any::<String>(), 1 => Just(String::new())],
        prop_oneof![
            3 => r"https?://[a-z0-9-]{1,10}(\.[a-z]{1,5}){0,2}(:[0-9]{1,5})?(/[a-zA-Z0-9_./%-]{0,10})?(\?[a-z=&]{0,8})?",
            1 => url_string(),
        ],
        proptest::option::of(prop_oneof![
            3 => "[ -~]{1,20}".prop_map(|s| json!(s)),
            1 => any::<String>().prop_map(|s| json!(s)),
            1 => "[A-Za-z0-9+/=]{0,20}".prop_map(|b| json!({"base64": b})),
        ]),
        proptest::collection::vec(
            prop_oneof![4 => r"[a-z]{1,6}(\.[a-z*]{1,4})?", 1 => r"[a-z.*?{},\[\]!-]{0,12}", 1 => any::<String>()],
            0..3,
        ),
        headers_json(),
        proptest::option::of(retry_policy_json()),
        proptest::option::of(short_duration()),
        proptest::option::of((any::<u32>(), prop_oneof![3 => 1u32..100, 1 => any::<u32>()])),
    )
        .boxed();
    let more = (
        proptest::option::of((1u32..10, 0u32..10, short_duration(), 1u32..10)),
        proptest::option::of((
            prop_oneof![3 => 1u32..50, 1 => any::<u32>()],
            short_duration(),
        )),
        proptest::option::of(prop_oneof![
            Just(json!({"kind": "standard_webhooks"})),
            Just(json!({"kind": "body_only"})),
            ("[A-Za-z-]{0,10}|.{0,10}", "[A-Za-z-]{0,10}|.{0,10}").prop_map(|(s, t)| json!({
                "kind": "split_timestamp", "signature_header": s, "timestamp_header": t,
            })),
        ]),
        proptest::option::of(any::<u32>()),
    )
        .boxed();
    (fields, more)
        .prop_map(
            |(
                (id, url, secret, globs, headers, retry, timeout, rate),
                (breaker, batch, scheme, mif),
            )| {
                let mut v = json!({"id": id, "url": url, "event_types": globs, "headers": headers});
                let obj = v.as_object_mut().expect("object");
                if let Some(s) = secret {
                    obj.insert("secret".into(), s);
                }
                if let Some(r) = retry {
                    obj.insert("retry_policy".into(), r);
                }
                if let Some(t) = timeout {
                    obj.insert("timeout".into(), json!(t));
                }
                if let Some((rate, burst)) = rate {
                    obj.insert(
                        "rate_limit".into(),
                        json!({"rate_per_sec": rate, "burst": burst}),
                    );
                }
                if let Some((f, s, t, h)) = breaker {
                    obj.insert(
                        "circuit_breaker".into(),
                        json!({"failure_threshold": f, "success_threshold": s,
                           "open_timeout": t, "half_open_max_requests": h}),
                    );
                }
                if let Some((n, w)) = batch {
                    obj.insert("batching".into(), json!({"max_events": n, "max_wait": w}));
                }
                if let Some(s) = scheme {
                    obj.insert("signature_scheme".into(), s);
                }
                if let Some(m) = mif {
                    obj.insert("max_in_flight".into(), json!(m));
                }
                v
            },
        )
        .boxed()
}

/// Whether `now + d` is representable: what the dispatcher computes for the next attempt.
fn fits_after(now: DateTime<Utc>, d: Duration) -> bool {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .is_some()
}

/// The far end of the clocks this runs against: the year 9999.
fn late_now() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).expect("in range")
}

/// Checks everything a caller may do with a deserialized (possibly invalid) policy.
fn exercise_policy(
    policy: &RetryPolicy,
    attempts: &[u32],
    sample: f64,
) -> Result<(), TestCaseError> {
    for &attempt in attempts {
        let delay = policy.delay(attempt, sample);
        prop_assert!(delay <= MAX_RETRY_DELAY, "{delay:?}");
        prop_assert!(
            fits_after(late_now(), delay),
            "{delay:?} overflows the clock"
        );
        match policy.decide(attempt, Some(Duration::MAX), sample) {
            Decision::GiveUp => prop_assert!(attempt >= policy.max_attempts()),
            Decision::Retry { after } => {
                prop_assert!(attempt < policy.max_attempts());
                prop_assert!(after >= delay && after <= MAX_RETRY_DELAY.max(MAX_RETRY_AFTER));
                prop_assert!(fits_after(late_now(), after));
            }
        }
    }
    Ok(())
}

/// Floats may move by an ulp through serde_json's default float parser; compare the rest
/// exactly.
fn same_endpoint(a: &Endpoint, b: &Endpoint) -> bool {
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// `validate_url` never panics; what it accepts is an absolute http(s) URL with a
    /// host and no credentials, and its normalized form is accepted again, unchanged.
    #[test]
    fn urls_validate_cleanly_and_round_trip(url in url_string()) {
        let endpoint_ok = Endpoint::new("e", url.clone()).validate().is_ok();
        match validate_url(&url) {
            Ok(parsed) => {
                prop_assert!(endpoint_ok, "validate_url accepts {url:?} but Endpoint::validate does not");
                prop_assert!(url.len() <= MAX_URL_LEN);
                prop_assert!(matches!(parsed.scheme(), "http" | "https"));
                prop_assert!(parsed.host_str().is_some_and(|h| !h.is_empty()));
                prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
                if parsed.as_str().len() <= MAX_URL_LEN {
                    let again = validate_url(parsed.as_str());
                    prop_assert_eq!(again.as_ref().ok(), Some(&parsed), "{:?}", again);
                }
                // The endpoint's URL survives JSON as it was given.
                let ep = Endpoint::new("e", url.clone());
                let back: Endpoint = serde_json::from_str(&serde_json::to_string(&ep).unwrap()).unwrap();
                prop_assert_eq!(&back.url, &url);
                prop_assert!(back.validate().is_ok());
            }
            Err(e) => {
                prop_assert!(!endpoint_ok);
                prop_assert!(matches!(e, Error::Invalid { field: "url", .. }), "{e}");
            }
        }
    }

    /// Endpoint JSON from arbitrary bytes: no panic in parsing, validating or matching.
    #[test]
    fn endpoint_json_from_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200), event_type in ".{0,20}") {
        if let Ok(ep) = serde_json::from_slice::<Endpoint>(&bytes) {
            let _ = ep.validate();
            let _ = ep.subscribes_to(&event_type);
        }
    }

    /// Structured endpoint JSON: a valid endpoint keeps its promises (headers are HTTP
    /// field values, delays fit the clock) and survives a JSON round trip.
    #[test]
    fn endpoint_json_validates_and_round_trips(v in endpoint_json(), event_type in ".{0,20}", attempt in any::<u32>()) {
        let Ok(ep) = serde_json::from_value::<Endpoint>(v) else { return Ok(()) };
        let _ = ep.subscribes_to(&event_type);
        if let Some(policy) = &ep.retry_policy {
            exercise_policy(policy, &[0, 1, attempt], 0.5)?;
        }
        if ep.validate().is_err() {
            return Ok(());
        }
        prop_assert!(validate_url(&ep.url).is_ok());
        for (name, value) in &ep.headers {
            prop_assert!(!name.is_empty());
            prop_assert!(value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)), "{value:?}");
        }
        if let Some(t) = ep.timeout {
            prop_assert!(!t.is_zero() && t <= Duration::from_secs(300));
        }
        if let Some(b) = &ep.circuit_breaker {
            prop_assert!(b.open_timeout <= MAX_OPEN_TIMEOUT);
        }
        let json = serde_json::to_string(&ep).unwrap();
        let back: Endpoint = serde_json::from_str(&json).unwrap();
        prop_assert!(same_endpoint(&back, &ep), "{json}");
        prop_assert!(back.validate().is_ok());
    }

    /// An explicit schedule either fails naming `retry_policy.schedule`, or validates and
    /// yields its delays in the order given, repeating the last, within the attempts.
    #[test]
    fn schedules_yield_delays_in_order(
        items in proptest::collection::vec(duration_string(), 0..8),
        extra in 0u32..4,
        attempt in any::<u32>(),
        retry_after in proptest::option::of(any::<u64>()),
    ) {
        match RetryPolicy::schedule(&items) {
            Err(Error::Invalid { field, message }) => {
                prop_assert_eq!(field, "retry_policy.schedule");
                prop_assert!(!message.is_empty());
                let all_fine = !items.is_empty() && items.iter().all(|i| parse_duration(i).is_ok_and(|d| d <= MAX_RETRY_DELAY));
                prop_assert!(!all_fine, "{items:?} refused: {message}");
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
            Ok(policy) => {
                prop_assert!(policy.validate().is_ok());
                let delays: Vec<Duration> = items.iter().map(|i| parse_duration(i).unwrap()).collect();
                prop_assert!(delays.iter().all(|d| *d <= MAX_RETRY_DELAY));
                prop_assert_eq!(policy.max_attempts() as usize, delays.len() + 1);
                for (i, d) in delays.iter().enumerate() {
                    let n = u32::try_from(i + 1).unwrap();
                    prop_assert_eq!(policy.delay(n, 0.3), *d);
                    prop_assert_eq!(policy.decide(n, None, 0.3), Decision::Retry { after: *d });
                }
                let last = *delays.last().unwrap();
                let n = u32::try_from(delays.len()).unwrap();
                prop_assert_eq!(policy.delay(0, 0.0), delays[0]);
                prop_assert_eq!(policy.delay(n + 1 + extra, 0.9), last);
                prop_assert_eq!(policy.delay(u32::MAX, 0.9), last);
                prop_assert_eq!(policy.decide(n + 1, None, 0.0), Decision::GiveUp);
                let longer = policy.clone().with_max_attempts(n + 2 + extra);
                prop_assert_eq!(longer.decide(n + 1, None, 0.0), Decision::Retry { after: last });
                // Retry-After wins when longer, capped.
                let ra = retry_after.map(Duration::from_secs);
                if let Decision::Retry { after } = policy.decide(1, ra, 0.0) {
                    let expected = ra.map_or(delays[0], |r| delays[0].max(r.min(MAX_RETRY_AFTER)));
                    prop_assert_eq!(after, expected);
                }
                exercise_policy(&policy, &[attempt, 0, u32::MAX], 0.5)?;
                // Its JSON form reads back the same.
                let json = serde_json::to_string(&policy).unwrap();
                prop_assert_eq!(serde_json::from_str::<RetryPolicy>(&json).unwrap(), policy);
            }
        }
    }

    /// Any policy that deserializes, valid or not, gives delays that fit the clock for
    /// every attempt and jitter sample; validation failures name a retry_policy field.
    #[test]
    fn any_policy_from_json_is_safe_to_use(
        v in retry_policy_json(),
        attempts in proptest::collection::vec(any::<u32>(), 1..4),
        sample in prop_oneof![any::<f64>(), 0.0f64..1.0],
    ) {
        let Ok(policy) = serde_json::from_value::<RetryPolicy>(v) else { return Ok(()) };
        exercise_policy(&policy, &attempts, sample)?;
        match policy.validate() {
            Ok(()) => prop_assert!(policy.max_attempts() >= 1),
            Err(Error::Invalid { field, .. }) => prop_assert!(field.starts_with("retry_policy."), "{field}"),
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    /// Durations: no input panics, and what parses formats back to the same value.
    #[test]
    fn durations_parse_cleanly(s in duration_string()) {
        if let Ok(d) = parse_duration(&s) {
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }

    /// Circuit breaker settings from JSON: the reported wait always fits the clock.
    #[test]
    fn breaker_waits_fit_the_clock(
        timeout in duration_string(),
        failures in 0u32..4,
        trials in 0u32..3,
        elapsed_ms in 0u64..10_000,
    ) {
        let v = json!({"failure_threshold": failures, "open_timeout": timeout, "half_open_max_requests": trials});
        let Ok(config) = serde_json::from_value::<CircuitBreakerConfig>(v) else { return Ok(()) };
        if config.validate().is_ok() {
            prop_assert!(config.open_timeout <= MAX_OPEN_TIMEOUT && !config.open_timeout.is_zero());
        }
        let mut breaker = CircuitBreaker::new(config);
        let t0 = Instant::now();
        for i in 0..5 {
            let at = t0 + Duration::from_millis(i);
            if let Ok(permit) = breaker.try_acquire(at) {
                breaker.on_failure(permit, at);
            }
        }
        let later = t0 + Duration::from_millis(elapsed_ms);
        if let Err(wait) = breaker.try_acquire(later) {
            prop_assert!(wait <= MAX_OPEN_TIMEOUT);
            prop_assert!(fits_after(late_now(), wait));
        }
    }

    /// `Retry-After` values: no panic at any clock, and never a wait past `now` for a
    /// date in the past.
    #[test]
    fn retry_after_is_clean(value in prop_oneof![
        any::<String>(),
        "[0-9]{1,30}",
        "(Mon|Sun), [0-9]{1,2} (Jan|Oct) [0-9]{1,6} [0-9]{2}:[0-9]{2}:[0-9]{2} (GMT|\\+0000|-2359)",
    ], secs in -8_000_000_000_000i64..8_000_000_000_000) {
        let now = DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let _ = parse_retry_after(&value, now);
        let _ = parse_retry_after(&value, DateTime::<Utc>::MAX_UTC);
        if let Some(d) = parse_retry_after(&value, DateTime::<Utc>::MIN_UTC) {
            prop_assert!(d >= Duration::ZERO);
        }
    }

    /// Ids take any string and give it back unchanged, through JSON too; keys from
    /// arbitrary JSON parse or fail cleanly.
    #[test]
    fn ids_round_trip(s in any::<String>(), t in proptest::option::of(any::<String>()), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let id = EventId::from(s.as_str());
        prop_assert_eq!(id.as_str(), s.as_str());
        prop_assert_eq!(id.to_string(), s.as_str());
        prop_assert_eq!(id.is_empty(), s.is_empty());
        let back: EventId = serde_json::from_str(&serde_json::to_string(&id).unwrap()).unwrap();
        prop_assert_eq!(&back, &id);
        let key = IdempotencyKey::new(id, s.as_str().into(), t.map(Into::into));
        let back: IdempotencyKey = serde_json::from_str(&serde_json::to_string(&key).unwrap()).unwrap();
        prop_assert_eq!(back, key);
        let _ = serde_json::from_slice::<IdempotencyKey>(&bytes);
        let _ = serde_json::from_slice::<webhook_core::Event>(&bytes);
    }
}

/// The overflow that used to panic a worker: a schedule or backoff of absurd length
/// validated, and `now + delay` overflowed `DateTime` in the dispatcher.
#[test]
fn absurd_delays_are_refused_and_capped() {
    for entry in ["18446744073709551615s", "106751991167300d", "31d"] {
        let err = RetryPolicy::schedule([entry]).unwrap_err().to_string();
        assert!(err.contains("retry_policy.schedule"), "{err}");
    }
    assert!(RetryPolicy::schedule(["30d"]).is_ok());

    let json = json!({"kind": "schedule", "delays": ["18446744073709551615s"], "max_attempts": 3});
    let policy: RetryPolicy = serde_json::from_value(json).unwrap();
    match policy.validate() {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "retry_policy.schedule"),
        other => panic!("{other:?}"),
    }
    assert_eq!(policy.delay(1, 0.5), MAX_RETRY_DELAY);
    assert!(fits_after(Utc::now(), policy.delay(1, 0.5)));

    let json = json!({"kind": "exponential", "initial": "1000000d", "max": "1000000d"});
    let policy: RetryPolicy = serde_json::from_value(json).unwrap();
    match policy.validate() {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "retry_policy.max"),
        other => panic!("{other:?}"),
    }
    assert_eq!(policy.delay(7, 1.0), MAX_RETRY_DELAY);

    let config: CircuitBreakerConfig =
        serde_json::from_value(json!({"open_timeout": "18446744073709551615s"})).unwrap();
    match config.validate() {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "circuit_breaker.open_timeout"),
        other => panic!("{other:?}"),
    }
    let mut breaker = CircuitBreaker::new(config);
    let t0 = Instant::now();
    for _ in 0..5 {
        let permit = breaker.try_acquire(t0).expect("closed");
        breaker.on_failure(permit, t0);
    }
    assert_eq!(breaker.try_acquire(t0), Err(MAX_OPEN_TIMEOUT));
}

/// Header values with control characters other than tab are refused, as HTTP does; so
/// are split-timestamp header names that are not tokens or that coincide.
#[test]
fn header_values_and_scheme_header_names_are_http_valid() {
    for bad in ["a\u{1}b", "x\u{7f}", "\u{1b}[31m", "a\rb", "a\nb", "a\0b"] {
        let err = Endpoint::new("e", "https://x.test")
            .with_header("X-A", bad)
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "headers",
                    ..
                }
            ),
            "{bad:?}: {err}"
        );
    }
    Endpoint::new("e", "https://x.test")
        .with_header("X-A", "tab\tand é ok")
        .validate()
        .unwrap();
    let split = |s: &str, t: &str| {
        Endpoint::new("e", "https://x.test")
            .with_signature_scheme(webhook_core::SignatureScheme::SplitTimestamp {
                signature_header: s.into(),
                timestamp_header: t.into(),
            })
            .validate()
    };
    for (s, t) in [
        ("", "X-Ts"),
        ("X Sig", "X-Ts"),
        ("X-Sig", "X-Ts\n"),
        ("X-Sig", "x-sig"),
    ] {
        assert!(
            matches!(
                split(s, t),
                Err(Error::Invalid {
                    field: "signature_scheme",
                    ..
                })
            ),
            "{s:?} {t:?}"
        );
    }
    split("X-Sig", "X-Ts").unwrap();
}

/// Claiming with a lease too long for the clock ends the lease at the end of time.
#[test]
fn huge_leases_do_not_overflow() {
    use webhook_core::{Delivery, EndpointId};
    let key = IdempotencyKey::new(EventId::from("ev"), EndpointId::from("ep"), None);
    let now = Utc::now();
    let mut d = Delivery::new(key, 0, now);
    let lease = d.claim(now, Duration::MAX).unwrap();
    assert_eq!(lease.until, DateTime::<Utc>::MAX_UTC);
}
