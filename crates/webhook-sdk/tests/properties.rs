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
        ("[A-Za-z-]{1,20}", "[A-Za-z-]{1,20}").prop_map(|(s, t)| SignatureScheme::SplitTimestamp {
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
