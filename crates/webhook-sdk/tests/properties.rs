//! Property tests: no input makes any verify path panic, and every signed
//! request verifies.

use proptest::prelude::*;
use webhook_sdk::headers::{
    WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, X_WEBHOOK_SIGNATURE, X_WEBHOOK_TIMESTAMP,
};
use webhook_sdk::{
    Envelope, SignatureScheme, SigningKey, Verifier, WebhookReceiver, verify_webhook_request,
};

fn scheme() -> impl Strategy<Value = SignatureScheme> {
    prop_oneof![
        Just(SignatureScheme::StandardWebhooks),
        Just(SignatureScheme::split_timestamp()),
        // Two names for one header are refused by `Endpoint::validate`.
        ("[A-Za-z-]{1,20}", "[A-Za-z-]{1,20}")
            .prop_filter("distinct header names", |(s, t)| !s.eq_ignore_ascii_case(t))
            .prop_map(|(s, t)| SignatureScheme::SplitTimestamp {
                signature_header: s,
                timestamp_header: t,
            }),
        Just(SignatureScheme::InlineTimestamp),
        Just(SignatureScheme::BodyOnly),
    ]
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(WEBHOOK_ID.to_owned()),
        Just(WEBHOOK_TIMESTAMP.to_owned()),
        Just(WEBHOOK_SIGNATURE.to_owned()),
        Just(X_WEBHOOK_SIGNATURE.to_owned()),
        Just(X_WEBHOOK_TIMESTAMP.to_owned()),
        Just("WEBHOOK-SIGNATURE".to_owned()),
        any::<String>(),
    ]
}

/// Values built to reach deep into the parsers, plus arbitrary strings.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{0,40}",
        "-?[0-9]{1,25}",
        "(v1,|v1a,|v2,)?[A-Za-z0-9+/=]{0,50}( (v1,|v1a,)?[A-Za-z0-9+/=]{0,50}){0,4}",
        "(t=-?[0-9]{0,22},?)?(v1=[0-9a-fA-F]{0,70},?){0,4}[=,]*",
        "(sha256=)?[0-9a-fA-F]{0,70}",
        "[ ,=\\t]{0,10}",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| n.to_string()),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((header_name(), header_value()), 0..8)
}

fn byte_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(
        (header_name(), proptest::collection::vec(any::<u8>(), 0..80)),
        0..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn verify_never_panics(
        scheme in scheme(),
        headers in headers(),
        byte_headers in byte_headers(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        secret in proptest::collection::vec(any::<u8>(), 0..64),
        now in any::<i64>(),
        tolerance in any::<u64>(),
        future in any::<u64>(),
    ) {
        let verifier = Verifier::new(&secret, scheme)
            .with_tolerance(std::time::Duration::from_secs(tolerance))
            .with_future_tolerance(std::time::Duration::from_secs(future));
        let _ = verifier.verify(&headers, &body, now);
        let _ = verifier.verify(&byte_headers, &body, now);
        let receiver = WebhookReceiver::from_verifier(verifier);
        let _ = receiver.verify_signature(&headers, &body);
        let _ = receiver.verify_at(&headers, &body, now);
        let _ = receiver.parse_webhook(&body);
        let _ = receiver.parse_batch(&body);
    }

    #[test]
    fn seed_000_never_panics(
        headers in headers(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        secret in proptest::collection::vec(any::<u8>(), 0..64),
        sig_name in header_name(),
        ts_name in header_name(),
        max_age in any::<u64>(),
        now in any::<u64>(),
    ) {
        let _ = verify_webhook_request(
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &body, &secret, &sig_name, &ts_name, max_age, now,
        );
    }

    #[test]
    fn whsec_secrets_never_panic(rest in any::<String>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let secret = format!("whsec_{rest}");
        let key = SigningKey::new(secret.as_bytes());
        let _ = SigningKey::from_base64(&secret);
        let headers = SignatureScheme::StandardWebhooks.sign(&key, "m", 0, &body);
        prop_assert!(Verifier::new(&secret, SignatureScheme::StandardWebhooks).verify(&headers, &body, 0).is_ok());
    }

    #[test]
    fn envelope_parse_never_panics(body in any::<String>()) {
        let _ = Envelope::from_json(body.as_bytes());
        let _ = Envelope::batch_from_json(body.as_bytes());
    }

    #[test]
    fn round_trip(
        scheme in scheme(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
        msg_id in ".{1,40}",
        timestamp in any::<i64>(),
        secret in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            proptest::collection::vec(any::<u8>(), 1..48).prop_map(|b| {
                use base64::Engine as _;
                format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(b)).into_bytes()
            }),
        ],
        skew in -300i64..=300,
    ) {
        let key = SigningKey::new(&secret);
        let headers = scheme.sign(&key, &msg_id, timestamp, &body);
        let verifier = Verifier::new(&secret, scheme.clone())
            .with_future_tolerance(std::time::Duration::from_secs(300));
        let now = timestamp.saturating_add(skew);
        prop_assert_eq!(verifier.verify(&headers, &body, now), Ok(()));
        prop_assert_eq!(
            scheme.sign_many(&[key.clone(), SigningKey::new(b"other")], &msg_id, timestamp, &body)
                .map(|h| verifier.verify(&h, &body, now)),
            Some(Ok(()))
        );
        // A different body never verifies.
        let mut other = body.clone();
        other.push(0);
        prop_assert!(verifier.verify(&headers, &other, now).is_err());
    }

    #[test]
    fn mutated_valid_requests_never_panic(
        scheme in scheme(),
        body in proptest::collection::vec(any::<u8>(), 0..128),
        timestamp in any::<i64>(),
        which in any::<prop::sample::Index>(),
        replacement in header_value(),
        append in any::<bool>(),
    ) {
        let key = SigningKey::new(b"secret");
        let mut headers = scheme.sign(&key, "msg_1", timestamp, &body);
        let i = which.index(headers.len());
        if append {
            headers[i].1.push_str(&replacement);
        } else {
            headers[i].1 = replacement;
        }
        let _ = Verifier::new(b"secret", scheme).verify(&headers, &body, timestamp);
    }
}

/// Printable secrets that do not start with `whsec_`: distinct ones are distinct HMAC
/// keys (no NUL padding, no base64 decoding to the same bytes).
fn plain_secret() -> impl Strategy<Value = String> {
    "[a-vx-z0-9!-/]{1,40}"
}

fn timed_scheme() -> impl Strategy<Value = SignatureScheme> {
    scheme().prop_filter("has a timestamp", SignatureScheme::has_replay_protection)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary headers never verify, whatever the scheme, the secrets and the
    /// tolerance: even with every timestamp accepted, a signature must be computed.
    #[test]
    fn unsigned_requests_never_verify(
        scheme in scheme(),
        headers in headers(),
        byte_headers in byte_headers(),
        body in proptest::collection::vec(any::<u8>(), 0..128),
        secrets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..3),
        now in any::<i64>(),
    ) {
        let verifier = Verifier::with_secrets(&secrets, scheme)
            .with_tolerance(std::time::Duration::MAX)
            .with_future_tolerance(std::time::Duration::MAX);
        prop_assert!(verifier.verify(&headers, &body, now).is_err());
        prop_assert!(verifier.verify(&byte_headers, &body, now).is_err());
        for secret in &secrets {
            prop_assert!(verify_webhook_request(
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                &body, secret, X_WEBHOOK_SIGNATURE, X_WEBHOOK_TIMESTAMP, u64::MAX, u64::MAX,
            ).is_err());
        }
    }

    /// A request signed with another secret never verifies, nor one whose body, id or
    /// timestamp was changed after signing.
    #[test]
    fn other_secrets_and_tampering_are_rejected(
        scheme in scheme(),
        ours in plain_secret(),
        theirs in plain_secret(),
        body in proptest::collection::vec(any::<u8>(), 0..128),
        msg_id in "[a-z0-9_]{1,20}",
        timestamp in 0i64..4_000_000_000,
    ) {
        prop_assume!(ours != theirs);
        let verifier = Verifier::new(&ours, scheme.clone());
        let forged = scheme.sign(&SigningKey::new(theirs.as_bytes()), &msg_id, timestamp, &body);
        prop_assert_eq!(
            verifier.verify(&forged, &body, timestamp),
            Err(webhook_sdk::VerifyError::NoMatchingSignature)
        );
        let genuine = scheme.sign(&SigningKey::new(ours.as_bytes()), &msg_id, timestamp, &body);
        prop_assert_eq!(verifier.verify(&genuine, &body, timestamp), Ok(()));
        let mut other_body = body.clone();
        other_body.insert(0, b'x');
        prop_assert!(verifier.verify(&genuine, &other_body, timestamp).is_err());
        // The id is signed by Standard Webhooks only; the timestamp by every timed scheme.
        let with = |name: &str, value: String| -> Vec<(String, String)> {
            genuine.iter().map(|(k, v)| {
                (k.to_string(), if k.eq_ignore_ascii_case(name) { value.clone() } else { v.clone() })
            }).collect()
        };
        if scheme == SignatureScheme::StandardWebhooks {
            let changed = with(WEBHOOK_ID, format!("{msg_id}x"));
            prop_assert!(verifier.verify(&changed, &body, timestamp).is_err());
            let changed = with(WEBHOOK_TIMESTAMP, (timestamp + 1).to_string());
            prop_assert!(verifier.verify(&changed, &body, timestamp).is_err());
        }
        if let SignatureScheme::SplitTimestamp { timestamp_header, .. } = &scheme {
            let changed = with(timestamp_header, (timestamp - 1).to_string());
            prop_assert!(verifier.verify(&changed, &body, timestamp).is_err());
        }
    }

    /// Timestamps outside the window are refused before any signature is checked, by
    /// every scheme that signs one; `BodyOnly` ignores time.
    #[test]
    fn stale_and_future_timestamps_are_refused(
        scheme in timed_scheme(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        timestamp in -4_000_000_000i64..4_000_000_000,
        tolerance in 0u64..100_000,
        beyond in 1i64..1_000_000,
    ) {
        let key = SigningKey::new(b"secret");
        let headers = scheme.sign(&key, "msg_1", timestamp, &body);
        let verifier = Verifier::new(b"secret", scheme)
            .with_tolerance(std::time::Duration::from_secs(tolerance))
            .with_future_tolerance(std::time::Duration::from_secs(tolerance));
        let tol = i64::try_from(tolerance).unwrap();
        prop_assert_eq!(verifier.verify(&headers, &body, timestamp + tol), Ok(()));
        prop_assert_eq!(verifier.verify(&headers, &body, timestamp - tol), Ok(()));
        prop_assert_eq!(
            verifier.verify(&headers, &body, timestamp + tol + beyond),
            Err(webhook_sdk::VerifyError::Expired)
        );
        prop_assert_eq!(
            verifier.verify(&headers, &body, timestamp - tol - beyond),
            Err(webhook_sdk::VerifyError::FutureTimestamp)
        );
        let body_only = SignatureScheme::BodyOnly.sign(&key, "m", timestamp, &body);
        prop_assert_eq!(
            Verifier::new(b"secret", SignatureScheme::BodyOnly).verify(&body_only, &body, i64::MAX),
            Ok(())
        );
    }

    /// Seed 000's free function accepts what the split scheme signs, within `max_age`
    /// and never from the future.
    #[test]
    fn seed_000_round_trip(
        secret in proptest::collection::vec(any::<u8>(), 0..48),
        body in proptest::collection::vec(any::<u8>(), 0..128),
        timestamp in 0u64..4_000_000_000,
        age in 0u64..1_000,
        max_age in 0u64..1_000,
    ) {
        let ts = i64::try_from(timestamp).unwrap();
        let headers = SignatureScheme::split_timestamp().sign(&SigningKey::new(&secret), "m", ts, &body);
        let result = verify_webhook_request(
            headers.iter().map(|(k, v)| (k.as_ref(), v.as_str())),
            &body, &secret, "x-webhook-signature", "X-WEBHOOK-TIMESTAMP", max_age, timestamp + age,
        );
        if age <= max_age {
            prop_assert_eq!(result, Ok(()));
        } else {
            prop_assert_eq!(result, Err(webhook_sdk::VerifyError::Expired));
        }
        if timestamp > 0 {
            prop_assert_eq!(
                verify_webhook_request(
                    headers.iter().map(|(k, v)| (k.as_ref(), v.as_str())),
                    &body, &secret, X_WEBHOOK_SIGNATURE, X_WEBHOOK_TIMESTAMP, max_age, timestamp - 1,
                ),
                Err(webhook_sdk::VerifyError::FutureTimestamp)
            );
        }
    }

    /// Scheme JSON (as stored on endpoints) from arbitrary bytes: parses or fails
    /// cleanly, and what parses writes back to the same scheme.
    #[test]
    fn scheme_json_is_clean(
        bytes in proptest::collection::vec(any::<u8>(), 0..80),
        kind in "(standard_webhooks|split_timestamp|inline_timestamp|body_only|[a-z_]{0,12})",
        sig in proptest::option::of(".{0,12}"),
    ) {
        let mut text = format!(r#"{{"kind":{}"#, serde_json::to_string(&kind).unwrap());
        if let Some(sig) = sig {
            text.push_str(&format!(r#","signature_header":{}"#, serde_json::to_string(&sig).unwrap()));
        }
        text.push('}');
        for input in [bytes.as_slice(), text.as_bytes()] {
            if let Ok(scheme) = serde_json::from_slice::<SignatureScheme>(input) {
                let json = serde_json::to_vec(&scheme).unwrap();
                prop_assert_eq!(serde_json::from_slice::<SignatureScheme>(&json).unwrap(), scheme);
            }
        }
    }

    /// Envelopes from arbitrary bytes (not only UTF-8): parse or fail cleanly; what
    /// parses writes back to the same envelope, and a batch of one is that envelope.
    #[test]
    fn envelopes_from_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        id in ".{0,10}",
        ts in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), Just("\"2024-01-31T12:00:00Z\"".to_owned()), Just("1.5".to_owned())],
    ) {
        let text = format!(r#"{{"id":{},"event":"t","timestamp":{ts},"version":"1"}}"#, serde_json::to_string(&id).unwrap());
        for input in [bytes.as_slice(), text.as_bytes()] {
            if let Ok(env) = Envelope::from_json(input) {
                let json = serde_json::to_vec(&env).unwrap();
                prop_assert_eq!(Envelope::from_json(&json).unwrap(), env.clone());
                prop_assert_eq!(Envelope::batch_from_json(input).unwrap(), vec![env]);
            } else {
                let _ = Envelope::batch_from_json(input);
            }
        }
    }
}
