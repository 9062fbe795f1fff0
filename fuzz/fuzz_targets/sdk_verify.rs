//! The SDK's receiving side: header lookup, timestamp and signature parsing for every
//! scheme, and the JSON envelope.
//!
//! Input: one selector byte, then `name: value` header lines, a blank line, the body.
//! No input may panic, and no input may verify: the fuzzer cannot compute an HMAC.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use webhook_sdk::{Envelope, SignatureScheme, Verifier, verify_webhook_request};

const NOW: i64 = 1_700_000_000;

fn split_request(data: &[u8]) -> (Vec<(String, Vec<u8>)>, &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let headers = head
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
            Some((name, line[colon + 1..].trim_ascii_start().to_vec()))
        })
        .collect();
    (headers, body)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (headers, body) = split_request(rest);
    let scheme = match selector % 5 {
        0 => SignatureScheme::StandardWebhooks,
        1 => SignatureScheme::split_timestamp(),
        2 => SignatureScheme::SplitTimestamp {
            signature_header: "x-sig".into(),
            timestamp_header: "x-ts".into(),
        },
        3 => SignatureScheme::InlineTimestamp,
        _ => SignatureScheme::BodyOnly,
    };
    let secret: &[u8] = if selector & 0x08 == 0 {
        b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    } else {
        b"supersecret"
    };
    let strict = Verifier::new(secret, scheme.clone());
    assert!(strict.verify(&headers, body, NOW).is_err());
    // Any timestamp passes the window, so every input reaches the signature check.
    let lax = Verifier::with_secrets([secret, b"other".as_slice()], scheme)
        .with_tolerance(Duration::MAX)
        .with_future_tolerance(Duration::MAX);
    assert!(lax.verify(&headers, body, NOW).is_err());
    assert!(lax.verify(&headers, body, i64::MIN).is_err());

    let text: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    assert!(
        verify_webhook_request(
            text.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            body,
            secret,
            "x-webhook-signature",
            "x-webhook-timestamp",
            u64::MAX,
            u64::MAX,
        )
        .is_err()
    );

    if let Ok(envelope) = Envelope::from_json(body) {
        let json = serde_json::to_vec(&envelope).expect("serializes");
        assert_eq!(Envelope::from_json(&json).expect("reads back"), envelope);
    }
    let _ = Envelope::batch_from_json(body);
});
