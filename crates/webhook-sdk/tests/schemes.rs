//! Round trips, tampering, time windows and exact byte formats of every scheme.

use std::collections::HashMap;
use std::time::Duration;

use ring::hmac;
use webhook_sdk::headers::{
    WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, X_WEBHOOK_SIGNATURE, X_WEBHOOK_TIMESTAMP,
};
use webhook_sdk::{
    Envelope, SignatureScheme, SignedHeaders, SigningKey, Verifier, VerifyError, WebhookReceiver,
    verify_webhook_request,
};

const NOW: i64 = 1_700_000_000;
const BODY: &[u8] = br#"{"id":"evt_1","type":"ping","timestamp":"2023-11-14T22:13:20Z","data":{}}"#;
const RAW_SECRET: &[u8] = b"supersecret";
const WHSEC_SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn all_schemes() -> Vec<SignatureScheme> {
    vec![
        SignatureScheme::StandardWebhooks,
        SignatureScheme::split_timestamp(),
        SignatureScheme::SplitTimestamp {
            signature_header: "X-Custom-Sig".into(),
            timestamp_header: "X-Custom-Ts".into(),
        },
        SignatureScheme::InlineTimestamp,
        SignatureScheme::BodyOnly,
    ]
}

fn timestamped_schemes() -> Vec<SignatureScheme> {
    all_schemes()
        .into_iter()
        .filter(SignatureScheme::has_replay_protection)
        .collect()
}

fn sign(scheme: &SignatureScheme, secret: &[u8], id: &str, ts: i64, body: &[u8]) -> SignedHeaders {
    scheme.sign(&SigningKey::new(secret), id, ts, body)
}

fn value<'a>(headers: &'a SignedHeaders, name: &str) -> &'a str {
    &headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

fn set(headers: &mut SignedHeaders, name: &str, new: &str) {
    for (n, v) in headers.iter_mut() {
        if n.eq_ignore_ascii_case(name) {
            *v = new.to_owned();
        }
    }
}

fn independent_hex(key: &[u8], data: &[u8]) -> String {
    hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data))
}

#[test]
fn round_trip_every_scheme_raw_and_whsec() {
    for scheme in all_schemes() {
        for secret in [RAW_SECRET, WHSEC_SECRET] {
            let headers = sign(&scheme, secret, "msg_1", NOW, BODY);
            assert_eq!(headers[0].0, WEBHOOK_ID, "{scheme:?}");
            assert_eq!(headers[0].1, "msg_1");
            Verifier::new(secret, scheme.clone())
                .verify(&headers, BODY, NOW)
                .unwrap_or_else(|e| panic!("{scheme:?}: {e}"));
        }
    }
}

#[test]
fn header_sets_per_scheme() {
    let names = |scheme: &SignatureScheme| -> Vec<String> {
        sign(scheme, RAW_SECRET, "m", NOW, BODY)
            .into_iter()
            .map(|(n, _)| n.into_owned())
            .collect()
    };
    assert_eq!(
        names(&SignatureScheme::StandardWebhooks),
        [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE]
    );
    assert_eq!(
        names(&SignatureScheme::split_timestamp()),
        [WEBHOOK_ID, X_WEBHOOK_SIGNATURE, X_WEBHOOK_TIMESTAMP]
    );
    assert_eq!(
        names(&SignatureScheme::InlineTimestamp),
        [WEBHOOK_ID, X_WEBHOOK_SIGNATURE]
    );
    assert_eq!(
        names(&SignatureScheme::BodyOnly),
        [WEBHOOK_ID, X_WEBHOOK_SIGNATURE]
    );
}

#[test]
fn exact_bytes_split_timestamp() {
    let headers = sign(
        &SignatureScheme::split_timestamp(),
        RAW_SECRET,
        "m",
        NOW,
        BODY,
    );
    let mut signed = format!("{NOW}").into_bytes();
    signed.extend_from_slice(BODY);
    assert_eq!(
        value(&headers, X_WEBHOOK_SIGNATURE),
        independent_hex(RAW_SECRET, &signed)
    );
    assert_eq!(value(&headers, X_WEBHOOK_TIMESTAMP), NOW.to_string());
    // Also with a UTF-8 string body formatted as the seed did.
    let body = "héllo";
    let headers = sign(
        &SignatureScheme::split_timestamp(),
        RAW_SECRET,
        "m",
        NOW,
        body.as_bytes(),
    );
    assert_eq!(
        value(&headers, X_WEBHOOK_SIGNATURE),
        independent_hex(RAW_SECRET, format!("{NOW}{body}").as_bytes())
    );
}

#[test]
fn exact_bytes_inline_timestamp() {
    let headers = sign(
        &SignatureScheme::InlineTimestamp,
        RAW_SECRET,
        "m",
        NOW,
        BODY,
    );
    let mut signed = format!("{NOW}.").into_bytes();
    signed.extend_from_slice(BODY);
    assert_eq!(
        value(&headers, X_WEBHOOK_SIGNATURE),
        format!("t={NOW},v1={}", independent_hex(RAW_SECRET, &signed))
    );
}

#[test]
fn exact_bytes_body_only() {
    let headers = sign(&SignatureScheme::BodyOnly, RAW_SECRET, "m", NOW, BODY);
    assert_eq!(
        value(&headers, X_WEBHOOK_SIGNATURE),
        format!("sha256={}", independent_hex(RAW_SECRET, BODY))
    );
}

#[test]
fn exact_bytes_whsec_key_is_decoded_for_legacy_schemes() {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .expect("base64");
    let headers = sign(&SignatureScheme::BodyOnly, WHSEC_SECRET, "m", NOW, BODY);
    assert_eq!(
        value(&headers, X_WEBHOOK_SIGNATURE),
        format!("sha256={}", independent_hex(&key, BODY))
    );
}

#[test]
fn exact_bytes_standard_webhooks() {
    use base64::Engine as _;
    let headers = sign(
        &SignatureScheme::StandardWebhooks,
        RAW_SECRET,
        "msg_1",
        NOW,
        BODY,
    );
    let mut signed = format!("msg_1.{NOW}.").into_bytes();
    signed.extend_from_slice(BODY);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, RAW_SECRET), &signed);
    assert_eq!(
        value(&headers, WEBHOOK_SIGNATURE),
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    );
}

#[test]
fn tampered_body_is_rejected() {
    for scheme in all_schemes() {
        let headers = sign(&scheme, RAW_SECRET, "msg_1", NOW, BODY);
        let mut body = BODY.to_vec();
        body[3] ^= 1;
        for tampered in [&body[..], &BODY[..BODY.len() - 1], b""] {
            assert_eq!(
                Verifier::new(RAW_SECRET, scheme.clone()).verify(&headers, tampered, NOW),
                Err(VerifyError::NoMatchingSignature),
                "{scheme:?}"
            );
        }
    }
}

#[test]
fn wrong_secret_is_rejected() {
    for scheme in all_schemes() {
        let headers = sign(&scheme, RAW_SECRET, "msg_1", NOW, BODY);
        for other in [&b"supersecreT"[..], WHSEC_SECRET, b""] {
            assert_eq!(
                Verifier::new(other, scheme.clone()).verify(&headers, BODY, NOW),
                Err(VerifyError::NoMatchingSignature),
                "{scheme:?}"
            );
        }
    }
}

#[test]
fn tampered_id_is_rejected_by_standard_webhooks() {
    let mut headers = sign(
        &SignatureScheme::StandardWebhooks,
        RAW_SECRET,
        "msg_1",
        NOW,
        BODY,
    );
    set(&mut headers, WEBHOOK_ID, "msg_2");
    assert_eq!(
        Verifier::new(RAW_SECRET, SignatureScheme::StandardWebhooks).verify(&headers, BODY, NOW),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn tampered_timestamp_is_rejected() {
    let new_ts = (NOW - 1).to_string();
    for scheme in timestamped_schemes() {
        let mut headers = sign(&scheme, RAW_SECRET, "msg_1", NOW, BODY);
        match &scheme {
            SignatureScheme::StandardWebhooks => set(&mut headers, WEBHOOK_TIMESTAMP, &new_ts),
            SignatureScheme::SplitTimestamp {
                timestamp_header, ..
            } => set(&mut headers, timestamp_header, &new_ts),
            SignatureScheme::InlineTimestamp => {
                let v = value(&headers, X_WEBHOOK_SIGNATURE)
                    .replace(&format!("t={NOW}"), &format!("t={new_ts}"));
                set(&mut headers, X_WEBHOOK_SIGNATURE, &v);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            Verifier::new(RAW_SECRET, scheme.clone()).verify(&headers, BODY, NOW),
            Err(VerifyError::NoMatchingSignature),
            "{scheme:?}"
        );
    }
}

#[test]
fn expired_and_future_timestamps() {
    for scheme in timestamped_schemes() {
        let headers = sign(&scheme, RAW_SECRET, "msg_1", NOW, BODY);
        let v = Verifier::new(RAW_SECRET, scheme.clone());
        // Exactly at the tolerance is accepted; one second more is not.
        v.verify(&headers, BODY, NOW + 300).expect("boundary");
        assert_eq!(
            v.verify(&headers, BODY, NOW + 301),
            Err(VerifyError::Expired)
        );
        let split = matches!(scheme, SignatureScheme::SplitTimestamp { .. });
        if split {
            // The split scheme rejects any future timestamp by default...
            assert_eq!(
                v.verify(&headers, BODY, NOW - 1),
                Err(VerifyError::FutureTimestamp)
            );
            // ...unless skew is allowed explicitly.
            let skewed = v.clone().with_future_tolerance(Duration::from_secs(30));
            skewed
                .verify(&headers, BODY, NOW - 30)
                .expect("skew boundary");
            assert_eq!(
                skewed.verify(&headers, BODY, NOW - 31),
                Err(VerifyError::FutureTimestamp)
            );
        } else {
            v.verify(&headers, BODY, NOW - 300)
                .expect("future boundary");
            assert_eq!(
                v.verify(&headers, BODY, NOW - 301),
                Err(VerifyError::FutureTimestamp)
            );
        }
        // Custom tolerance.
        let short = v.clone().with_tolerance(Duration::from_secs(10));
        short
            .verify(&headers, BODY, NOW + 10)
            .expect("10 s boundary");
        assert_eq!(
            short.verify(&headers, BODY, NOW + 11),
            Err(VerifyError::Expired)
        );
        // Extreme clocks do not overflow.
        assert_eq!(
            v.verify(&headers, BODY, i64::MAX),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            v.verify(&headers, BODY, i64::MIN),
            Err(VerifyError::FutureTimestamp)
        );
    }
}

#[test]
fn body_only_has_no_time_window() {
    let headers = sign(&SignatureScheme::BodyOnly, RAW_SECRET, "msg_1", NOW, BODY);
    let v = Verifier::new(RAW_SECRET, SignatureScheme::BodyOnly);
    for now in [i64::MIN, 0, NOW + 10 * 365 * 86_400, i64::MAX] {
        v.verify(&headers, BODY, now).expect("replayable forever");
    }
}

#[test]
fn rotation_on_both_sides() {
    let old = SigningKey::new(b"old-secret");
    let new = SigningKey::new(b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
    for scheme in [
        SignatureScheme::StandardWebhooks,
        SignatureScheme::InlineTimestamp,
    ] {
        let headers = scheme
            .sign_many(&[new.clone(), old.clone()], "msg_1", NOW, BODY)
            .expect("keys");
        for secret in [
            &b"old-secret"[..],
            b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        ] {
            Verifier::new(secret, scheme.clone())
                .verify(&headers, BODY, NOW)
                .unwrap_or_else(|e| panic!("{scheme:?}: {e}"));
        }
        assert_eq!(
            Verifier::new(b"third", scheme.clone()).verify(&headers, BODY, NOW),
            Err(VerifyError::NoMatchingSignature)
        );
    }
    let inline = SignatureScheme::InlineTimestamp
        .sign_many(&[new.clone(), old.clone()], "m", NOW, BODY)
        .expect("keys");
    assert_eq!(
        value(&inline, X_WEBHOOK_SIGNATURE).matches(",v1=").count(),
        2
    );

    // Single-signature schemes use the first key; a receiver holding several
    // secrets accepts it.
    for scheme in [
        SignatureScheme::split_timestamp(),
        SignatureScheme::BodyOnly,
    ] {
        let headers = scheme
            .sign_many(&[new.clone(), old.clone()], "m", NOW, BODY)
            .expect("keys");
        assert_eq!(headers, scheme.sign(&new, "m", NOW, BODY));
        Verifier::with_secrets(
            [
                &b"old-secret"[..],
                b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            ],
            scheme.clone(),
        )
        .verify(&headers, BODY, NOW)
        .expect("receiver rotation");
    }
    // A verifier with no keys rejects everything.
    let headers = SignatureScheme::StandardWebhooks.sign(&new, "m", NOW, BODY);
    assert_eq!(
        Verifier::from_keys([], SignatureScheme::StandardWebhooks).verify(&headers, BODY, NOW),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn header_sources() {
    let scheme = SignatureScheme::StandardWebhooks;
    let signed = sign(&scheme, RAW_SECRET, "msg_1", NOW, BODY);
    let v = Verifier::new(RAW_SECRET, scheme);

    let owned: Vec<(String, String)> = signed
        .iter()
        .map(|(k, v)| (k.to_uppercase(), v.clone()))
        .collect();
    let borrowed: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let map: HashMap<String, String> = owned.iter().cloned().collect();
    let bytes: Vec<(&str, &[u8])> = borrowed.iter().map(|(k, v)| (*k, v.as_bytes())).collect();

    v.verify(&signed, BODY, NOW).expect("signed headers");
    v.verify(borrowed.as_slice(), BODY, NOW).expect("slice");
    v.verify(&borrowed[..], BODY, NOW).expect("slice ref");
    v.verify(&map, BODY, NOW).expect("hashmap");
    v.verify(&bytes, BODY, NOW).expect("byte values");
    v.verify(owned, BODY, NOW).expect("vec by value");
}

#[test]
fn non_utf8_and_malformed_headers() {
    let v = Verifier::new(RAW_SECRET, SignatureScheme::StandardWebhooks);
    let headers: Vec<(&str, &[u8])> = vec![
        (WEBHOOK_ID, b"msg_\xff"),
        (WEBHOOK_TIMESTAMP, b"1700000000"),
        (WEBHOOK_SIGNATURE, b"v1,AAAA"),
    ];
    assert_eq!(
        v.verify(&headers, BODY, NOW),
        Err(VerifyError::InvalidHeader {
            header: WEBHOOK_ID.into(),
            reason: "value is not valid UTF-8",
        })
    );

    let split = Verifier::new(RAW_SECRET, SignatureScheme::split_timestamp());
    let err = split
        .verify(
            [
                (X_WEBHOOK_SIGNATURE, "zz"),
                (X_WEBHOOK_TIMESTAMP, "1700000000"),
            ],
            BODY,
            NOW,
        )
        .expect_err("bad hex");
    assert!(matches!(err, VerifyError::InvalidHeader { .. }), "{err}");

    let inline = Verifier::new(RAW_SECRET, SignatureScheme::InlineTimestamp);
    for (value, expected) in [
        ("v1=abcd", "missing t=<timestamp>"),
        ("t=1700000000,t=1700000000,v1=ab", "more than one t="),
    ] {
        assert_eq!(
            inline.verify([(X_WEBHOOK_SIGNATURE, value)], BODY, NOW),
            Err(VerifyError::InvalidHeader {
                header: X_WEBHOOK_SIGNATURE.into(),
                reason: expected,
            })
        );
    }
    assert_eq!(
        inline.verify([(X_WEBHOOK_SIGNATURE, "t=soon,v1=ab")], BODY, NOW),
        Err(VerifyError::InvalidTimestamp)
    );
    assert_eq!(
        inline.verify([(X_WEBHOOK_SIGNATURE, "t=1700000000")], BODY, NOW),
        Err(VerifyError::NoMatchingSignature)
    );

    let body_only = Verifier::new(RAW_SECRET, SignatureScheme::BodyOnly);
    let hex = independent_hex(RAW_SECRET, BODY);
    for bad in [hex.as_str(), "sha1=abcd", "sha256=", "sha256=xyz"] {
        assert!(
            matches!(
                body_only.verify([(X_WEBHOOK_SIGNATURE, bad)], BODY, NOW),
                Err(VerifyError::InvalidHeader { .. })
            ),
            "{bad}"
        );
    }
    // Uppercase hex is accepted on receipt.
    body_only
        .verify(
            [(
                X_WEBHOOK_SIGNATURE,
                format!("sha256={}", hex.to_uppercase()),
            )],
            BODY,
            NOW,
        )
        .expect("uppercase hex");
}

#[test]
fn inline_accepts_several_v1_and_ignores_other_keys() {
    let headers = sign(
        &SignatureScheme::InlineTimestamp,
        RAW_SECRET,
        "m",
        NOW,
        BODY,
    );
    let good = value(&headers, X_WEBHOOK_SIGNATURE);
    let sig = good.split_once(",v1=").expect("v1").1;
    let rotated = format!("t={NOW}, v0=abc, v1={}, v1={sig}, junk", "00".repeat(32));
    Verifier::new(RAW_SECRET, SignatureScheme::InlineTimestamp)
        .verify([(X_WEBHOOK_SIGNATURE, rotated)], BODY, NOW)
        .expect("second v1 matches");
}

#[test]
fn seed_000_free_function() {
    let scheme = SignatureScheme::split_timestamp();
    let signed = sign(&scheme, RAW_SECRET, "m", NOW, BODY);
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_str()))
        .collect();
    let run = |headers: &[(&str, &str)], body: &[u8], secret: &[u8], now: u64| {
        verify_webhook_request(
            headers.iter().map(|(k, v)| (*k, *v)),
            body,
            secret,
            "X-Webhook-Signature",
            "X-Webhook-Timestamp",
            300,
            now,
        )
    };
    let now = NOW as u64;
    run(&headers, BODY, RAW_SECRET, now).expect("valid");
    run(&headers, BODY, RAW_SECRET, now + 300).expect("max age boundary");
    assert_eq!(
        run(&headers, BODY, RAW_SECRET, now + 301),
        Err(VerifyError::Expired)
    );
    assert_eq!(
        run(&headers, BODY, RAW_SECRET, now - 1),
        Err(VerifyError::FutureTimestamp)
    );
    assert_eq!(
        run(&headers, b"{}", RAW_SECRET, now),
        Err(VerifyError::NoMatchingSignature)
    );
    assert_eq!(
        run(&headers, BODY, b"other", now),
        Err(VerifyError::NoMatchingSignature)
    );
    assert_eq!(
        run(&headers, BODY, RAW_SECRET, u64::MAX),
        Err(VerifyError::Expired)
    );
    // Names match case-insensitively.
    let lower: Vec<(String, &str)> = headers
        .iter()
        .map(|(k, v)| (k.to_lowercase(), *v))
        .collect();
    let lower: Vec<(&str, &str)> = lower.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    run(&lower, BODY, RAW_SECRET, now).expect("lowercase names");
    // Missing headers.
    assert_eq!(
        run(&headers[..2], BODY, RAW_SECRET, now),
        Err(VerifyError::MissingHeader("X-Webhook-Timestamp".into()))
    );
    assert_eq!(
        run(&[headers[2]], BODY, RAW_SECRET, now),
        Err(VerifyError::MissingHeader("X-Webhook-Signature".into()))
    );
    // A whsec_ secret is decoded as for every scheme.
    let signed = sign(&scheme, WHSEC_SECRET, "m", NOW, BODY);
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_str()))
        .collect();
    run(&headers, BODY, WHSEC_SECRET, now).expect("whsec");
}

#[test]
fn errors_never_show_the_secret() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    for scheme in all_schemes() {
        let v = Verifier::new(secret, scheme.clone());
        let mut cases: Vec<Vec<(String, String)>> = vec![Vec::new()];
        let signed = sign(&scheme, b"wrong", "m", NOW, BODY);
        cases.push(
            signed
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v))
                .collect(),
        );
        for headers in cases {
            let err = v.verify(&headers, BODY, NOW).expect_err("fails");
            let text = format!("{err} {err:?} {v:?}");
            assert!(!text.contains("MfKQ9r8"), "{text}");
        }
    }
}

#[test]
fn receiver_uses_the_system_clock() {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("fits");
    for scheme in all_schemes() {
        let headers = sign(&scheme, WHSEC_SECRET, "msg_1", now, BODY);
        let receiver = WebhookReceiver::new(WHSEC_SECRET)
            .with_scheme(scheme.clone())
            .with_tolerance(Duration::from_secs(60));
        assert_eq!(
            receiver.verify_signature(&headers, BODY),
            Ok(true),
            "{scheme:?}"
        );
        let event = receiver.verify_and_parse(&headers, BODY).expect("parse");
        assert_eq!(event.event_type, "ping");
        assert_eq!(receiver.verifier().tolerance(), Duration::from_secs(60));
    }
}

#[test]
fn envelope_parsing() {
    let receiver = WebhookReceiver::new(RAW_SECRET);
    let standard = receiver
        .parse_webhook(
            br#"{"id":"evt_1","type":"a.b","timestamp":"2024-01-31T12:00:00Z","data":{"x":1}}"#,
        )
        .expect("standard");
    assert_eq!(
        standard,
        Envelope::new(
            "evt_1",
            "a.b",
            "2024-01-31T12:00:00Z",
            serde_json::json!({"x": 1})
        )
    );
    let legacy = receiver
        .parse_webhook(br#"{"id":"evt_2","event":"c.d","timestamp":"2024-01-31T12:00:00Z","data":[1],"version":"1.0"}"#)
        .expect("legacy");
    assert_eq!(legacy.event_type, "c.d");
    let numeric = receiver
        .parse_webhook(br#"{"id":"evt_3","event":"e","timestamp":1614265330}"#)
        .expect("numeric timestamp");
    assert_eq!(numeric.timestamp, "2021-02-25T15:02:10Z");
    assert_eq!(numeric.data, serde_json::Value::Null);

    // Serialization writes the Standard Webhooks shape.
    let json = serde_json::to_value(&legacy).expect("ser");
    assert_eq!(json["type"], "c.d");
    assert!(json.get("event").is_none());

    let batch = receiver
        .parse_batch(br#" [{"id":"1","type":"t","timestamp":"x","data":null},{"id":"2","type":"t","timestamp":"y","data":null}]"#)
        .expect("batch");
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[1].id, "2");
    assert_eq!(
        receiver
            .parse_batch(br#"{"id":"1","type":"t","timestamp":"x"}"#)
            .expect("single")
            .len(),
        1
    );
    assert_eq!(receiver.parse_batch(b"[]").expect("empty"), Vec::new());
    for bad in [
        &b""[..],
        b"null",
        b"{}",
        b"[1]",
        br#"{"id":"1","type":"t"}"#,
        br#"{"id":"1","type":"t","timestamp":1e300}"#,
        br#"{"id":"1","type":"t","timestamp":99999999999999}"#,
        b"\xff\xfe",
    ] {
        assert!(matches!(
            receiver.parse_webhook(bad),
            Err(VerifyError::InvalidBody(_))
        ));
        assert!(matches!(
            receiver.parse_batch(bad),
            Err(VerifyError::InvalidBody(_))
        ));
    }
}
