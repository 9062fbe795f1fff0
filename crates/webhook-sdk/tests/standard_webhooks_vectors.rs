//! Known-answer vectors from the official Standard Webhooks libraries'
//! test suites (github.com/standard-webhooks/standard-webhooks, `libraries/`):
//! `python/tests/test_webhooks.py`, `javascript/src/webhook.test.ts`,
//! `go/webhook_test.go`, `csharp/StandardWebhooks.Tests/WebhookTest.cs`
//! (secret `MfKQ9r8…`, `msg_p5jXN8…`) and `rust/src/lib.rs` (secret
//! `C2FVsBQ…`, `msg_27UH4W…`). Their tests sign at "now"; here the time is
//! fixed to the vector's timestamp.

use webhook_sdk::headers::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use webhook_sdk::{SignatureScheme, SigningKey, Verifier, VerifyError, WebhookReceiver};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_UNPREFIXED: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TS: i64 = 1_614_265_330;
const PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

const RUST_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const RUST_MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const RUST_TS: i64 = 1_649_367_553;
const RUST_PAYLOAD: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
const RUST_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

const WRONG_V1: &str = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";

fn headers(id: &str, ts: &str, sig: &str) -> Vec<(String, String)> {
    vec![
        (WEBHOOK_ID.to_owned(), id.to_owned()),
        (WEBHOOK_TIMESTAMP.to_owned(), ts.to_owned()),
        (WEBHOOK_SIGNATURE.to_owned(), sig.to_owned()),
    ]
}

fn vector_headers(sig: &str) -> Vec<(String, String)> {
    headers(MSG_ID, &TS.to_string(), sig)
}

fn verifier() -> Verifier {
    Verifier::new(SECRET, SignatureScheme::StandardWebhooks)
}

fn signature_of(signed: &webhook_sdk::SignedHeaders) -> &str {
    &signed
        .iter()
        .find(|(name, _)| name == WEBHOOK_SIGNATURE)
        .expect("signature header")
        .1
}

#[test]
fn sign_matches_published_vector() {
    let signed = SignatureScheme::StandardWebhooks.sign(
        &SigningKey::new(SECRET.as_bytes()),
        MSG_ID,
        TS,
        PAYLOAD,
    );
    assert_eq!(
        signed
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_str()))
            .collect::<Vec<_>>(),
        [
            (WEBHOOK_ID, MSG_ID),
            (WEBHOOK_TIMESTAMP, "1614265330"),
            (WEBHOOK_SIGNATURE, SIGNATURE),
        ]
    );
}

#[test]
fn sign_matches_rust_library_vector() {
    let signed = SignatureScheme::StandardWebhooks.sign(
        &SigningKey::new(RUST_SECRET.as_bytes()),
        RUST_MSG_ID,
        RUST_TS,
        RUST_PAYLOAD,
    );
    assert_eq!(signature_of(&signed), RUST_SIGNATURE);
}

#[test]
fn valid_signature_verifies() {
    verifier()
        .verify(vector_headers(SIGNATURE), PAYLOAD, TS)
        .expect("published vector verifies");
    Verifier::new(RUST_SECRET, SignatureScheme::StandardWebhooks)
        .verify(
            headers(RUST_MSG_ID, &RUST_TS.to_string(), RUST_SIGNATURE),
            RUST_PAYLOAD,
            RUST_TS,
        )
        .expect("rust library vector verifies");
}

#[test]
fn with_and_without_prefix() {
    // The official libraries decode the secret as base64 with or without
    // the `whsec_` prefix. `SigningKey::new` only decodes prefixed secrets;
    // `SigningKey::from_base64` follows the official rule.
    let unprefixed = SigningKey::from_base64(SECRET_UNPREFIXED).expect("base64");
    let prefixed = SigningKey::from_base64(SECRET).expect("base64");
    for key in [unprefixed, prefixed, SigningKey::new(SECRET.as_bytes())] {
        Verifier::from_keys([key], SignatureScheme::StandardWebhooks)
            .verify(vector_headers(SIGNATURE), PAYLOAD, TS)
            .expect("verifies");
    }
    // Without the prefix `SigningKey::new` uses the raw bytes: a different key.
    assert_eq!(
        Verifier::new(SECRET_UNPREFIXED, SignatureScheme::StandardWebhooks).verify(
            vector_headers(SIGNATURE),
            PAYLOAD,
            TS
        ),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn unbranded_and_differently_cased_headers() {
    let mixed = [
        ("Webhook-Id", MSG_ID),
        ("WEBHOOK-TIMESTAMP", "1614265330"),
        ("webhook-Signature", SIGNATURE),
    ];
    verifier().verify(mixed, PAYLOAD, TS).expect("verifies");
}

#[test]
fn invalid_signatures_are_rejected() {
    for bad in [
        // python / javascript: last character changed
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
        // javascript: garbage
        "v1,dawfeoifkpqwoekfpqoekf",
        // javascript: partial signatures
        &SIGNATURE[..8],
        "v1,",
        // c#: truncated and altered
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLawdd",
        // go: valid format, wrong value
        WRONG_V1,
        // rust: valid format, wrong value
        "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=",
        // elixir
        "invalid signature",
        // right value, wrong version
        "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        // right value, unpadded
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
    ] {
        assert_eq!(
            verifier().verify(vector_headers(bad), PAYLOAD, TS),
            Err(VerifyError::NoMatchingSignature),
            "{bad}"
        );
    }
}

#[test]
fn multi_signature_rotation() {
    // python / javascript / go / c#: valid entry among wrong and other-version ones.
    let multi = [
        WRONG_V1,
        "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        SIGNATURE,
        WRONG_V1,
    ]
    .join(" ");
    verifier()
        .verify(vector_headers(&multi), PAYLOAD, TS)
        .expect("one valid entry is enough");

    // rust: the same with its own vector, and failure without the valid entry.
    let wrong = [
        "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ=",
        "v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q=",
        "v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE=",
    ];
    let rust = Verifier::new(RUST_SECRET, SignatureScheme::StandardWebhooks);
    let with_valid = format!("{} {} {RUST_SIGNATURE} {}", wrong[0], wrong[1], wrong[2]);
    rust.verify(
        headers(RUST_MSG_ID, &RUST_TS.to_string(), &with_valid),
        RUST_PAYLOAD,
        RUST_TS,
    )
    .expect("valid among several");
    assert_eq!(
        rust.verify(
            headers(RUST_MSG_ID, &RUST_TS.to_string(), &wrong.join(" ")),
            RUST_PAYLOAD,
            RUST_TS,
        ),
        Err(VerifyError::NoMatchingSignature)
    );

    // Entries of a newer version (v1a) are ignored.
    let with_v1a = format!("v1a,AAAA {SIGNATURE} v1a,BBBB");
    verifier()
        .verify(vector_headers(&with_v1a), PAYLOAD, TS)
        .expect("v1a ignored");
}

#[test]
fn missing_headers() {
    for (missing, expected) in [
        (WEBHOOK_ID, VerifyError::MissingHeader(WEBHOOK_ID.into())),
        (
            WEBHOOK_TIMESTAMP,
            VerifyError::MissingHeader(WEBHOOK_TIMESTAMP.into()),
        ),
        (
            WEBHOOK_SIGNATURE,
            VerifyError::MissingHeader(WEBHOOK_SIGNATURE.into()),
        ),
    ] {
        let mut h = vector_headers(SIGNATURE);
        h.retain(|(name, _)| name != missing);
        assert_eq!(verifier().verify(&h, PAYLOAD, TS), Err(expected.clone()));
        // An empty value counts as missing (as in the python library).
        let mut h = vector_headers(SIGNATURE);
        for (name, value) in &mut h {
            if name == missing {
                value.clear();
            }
        }
        assert_eq!(verifier().verify(&h, PAYLOAD, TS), Err(expected));
    }
}

#[test]
fn invalid_timestamp() {
    // python / javascript: "hello"
    for bad in [
        "hello",
        "1614265330.0",
        "+1614265330",
        "1e9",
        "99999999999999999999",
    ] {
        assert_eq!(
            verifier().verify(headers(MSG_ID, bad, SIGNATURE), PAYLOAD, TS),
            Err(VerifyError::InvalidTimestamp),
            "{bad}"
        );
    }
}

#[test]
fn timestamp_tolerance_is_five_minutes_both_ways() {
    let v = verifier();
    let h = vector_headers(SIGNATURE);
    // The vector was signed at TS; move "now" instead of the timestamp.
    v.verify(&h, PAYLOAD, TS + 300).expect("exactly 5 min old");
    v.verify(&h, PAYLOAD, TS - 300)
        .expect("exactly 5 min ahead");
    assert_eq!(v.verify(&h, PAYLOAD, TS + 301), Err(VerifyError::Expired));
    assert_eq!(
        v.verify(&h, PAYLOAD, TS - 301),
        Err(VerifyError::FutureTimestamp)
    );
    // A timestamp from 2000 fails (go: "invalid timestamp fails").
    assert_eq!(
        v.verify(headers(MSG_ID, "946684800", SIGNATURE), PAYLOAD, TS),
        Err(VerifyError::Expired)
    );
}

#[test]
fn receiver_defaults_to_standard_webhooks() {
    let receiver = WebhookReceiver::new(SECRET);
    receiver
        .verify_at(vector_headers(SIGNATURE), PAYLOAD, TS)
        .expect("verifies");
    // With the system clock the 2021 vector is long expired.
    assert_eq!(
        receiver.verify_signature(vector_headers(SIGNATURE), PAYLOAD),
        Err(VerifyError::Expired)
    );
}
