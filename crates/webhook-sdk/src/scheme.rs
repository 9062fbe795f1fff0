//! The signature schemes and the sender side (signing).

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::SigningKey;
use crate::headers::{
    WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, X_WEBHOOK_SIGNATURE, X_WEBHOOK_TIMESTAMP,
};
use crate::util::{DecimalI64, push_hex};

/// Headers a signed request must carry: `(name, value)` pairs in a fixed
/// order, `webhook-id` first.
pub type SignedHeaders = Vec<(Cow<'static, str>, String)>;

/// How a request is signed. Every scheme is HMAC-SHA256.
///
/// Serialized with an internal `kind` tag, for example
/// `{"kind":"standard_webhooks"}` or
/// `{"kind":"split_timestamp","signature_header":"X-Sig","timestamp_header":"X-Ts"}`
/// (the two header names default to [`X_WEBHOOK_SIGNATURE`] and
/// [`X_WEBHOOK_TIMESTAMP`] when absent).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignatureScheme {
    /// [Standard Webhooks](https://www.standardwebhooks.com/) (as Svix), the
    /// default: `webhook-id`, `webhook-timestamp` (unix seconds) and
    /// `webhook-signature: v1,<base64 of HMAC(key, "{id}.{timestamp}.{body}")>`.
    ///
    /// During key rotation the signature header holds several
    /// space-separated entries; entries of other versions (`v1a,...`) are
    /// ignored. Timestamps are checked both ways against the tolerance.
    #[default]
    StandardWebhooks,

    /// Legacy scheme with the timestamp in its own header:
    /// `X-Webhook-Signature: <hex of HMAC(secret, "{ts}{body}")>` and
    /// `X-Webhook-Timestamp: <ts>` (the decimal timestamp immediately
    /// followed by the body, no separator; lowercase hex).
    ///
    /// Receivers reject any timestamp in the future (unless
    /// [`Verifier::with_future_tolerance`](crate::Verifier::with_future_tolerance)
    /// allows some skew) and timestamps older than the tolerance.
    SplitTimestamp {
        /// Name of the signature header.
        #[serde(default = "default_signature_header")]
        signature_header: String,
        /// Name of the timestamp header.
        #[serde(default = "default_timestamp_header")]
        timestamp_header: String,
    },

    /// Legacy scheme with the timestamp inside the signature header:
    /// `X-Webhook-Signature: t=<ts>,v1=<hex of HMAC(secret, "{ts}.{body}")>`
    /// (lowercase hex). Several `v1=` entries may appear (rotation); one
    /// match is enough. Timestamps are checked both ways against the
    /// tolerance.
    InlineTimestamp,

    /// Legacy scheme signing the body alone:
    /// `X-Webhook-Signature: sha256=<hex of HMAC(secret, body)>`.
    ///
    /// **No replay protection.** Nothing time-dependent is signed, so a
    /// captured request stays valid forever and can be re-sent by anyone who
    /// saw it. Receivers must deduplicate on `webhook-id` (which is itself
    /// unsigned here) and should prefer any other scheme.
    BodyOnly,
}

fn default_signature_header() -> String {
    X_WEBHOOK_SIGNATURE.to_owned()
}

fn default_timestamp_header() -> String {
    X_WEBHOOK_TIMESTAMP.to_owned()
}

/// A header name as `'static` when it is the default one, else an owned copy.
fn header_name(name: &str, default: &'static str) -> Cow<'static, str> {
    if name == default {
        Cow::Borrowed(default)
    } else {
        Cow::Owned(name.to_owned())
    }
}

impl SignatureScheme {
    /// [`SignatureScheme::SplitTimestamp`] with the default header names
    /// `X-Webhook-Signature` and `X-Webhook-Timestamp`.
    pub fn split_timestamp() -> Self {
        Self::SplitTimestamp {
            signature_header: default_signature_header(),
            timestamp_header: default_timestamp_header(),
        }
    }

    /// Whether the scheme signs a timestamp, so that receivers can reject
    /// replayed requests. Only [`SignatureScheme::BodyOnly`] does not.
    pub fn has_replay_protection(&self) -> bool {
        !matches!(self, Self::BodyOnly)
    }

    /// Name of the header that carries the signature.
    pub fn signature_header(&self) -> &str {
        match self {
            Self::StandardWebhooks => WEBHOOK_SIGNATURE,
            Self::SplitTimestamp {
                signature_header, ..
            } => signature_header,
            Self::InlineTimestamp | Self::BodyOnly => X_WEBHOOK_SIGNATURE,
        }
    }

    /// Signs a request and returns every header it must carry.
    ///
    /// `webhook-id: msg_id` is always included (receivers deduplicate on
    /// it), followed by the scheme's own headers:
    ///
    /// | scheme | headers after `webhook-id` |
    /// | --- | --- |
    /// | `StandardWebhooks` | `webhook-timestamp`, `webhook-signature` |
    /// | `SplitTimestamp` | signature header, timestamp header |
    /// | `InlineTimestamp`, `BodyOnly` | `X-Webhook-Signature` |
    ///
    /// The values are not checked: `msg_id` must be a non-empty, valid
    /// header value (no CR/LF), which the caller controls.
    pub fn sign(
        &self,
        key: &SigningKey,
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> SignedHeaders {
        self.sign_nonempty(std::slice::from_ref(key), msg_id, timestamp, body)
    }

    /// Signs with several keys at once, for secret rotation.
    ///
    /// `StandardWebhooks` writes one space-separated `v1,` entry per key and
    /// `InlineTimestamp` one `v1=` entry per key, so receivers holding any of
    /// the secrets accept the request. `SplitTimestamp` and `BodyOnly` carry
    /// a single signature: they sign with `keys[0]` only.
    ///
    /// Returns `None` if `keys` is empty.
    pub fn sign_many(
        &self,
        keys: &[SigningKey],
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Option<SignedHeaders> {
        if keys.is_empty() {
            return None;
        }
        Some(self.sign_nonempty(keys, msg_id, timestamp, body))
    }

    fn sign_nonempty(
        &self,
        keys: &[SigningKey],
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> SignedHeaders {
        let ts = DecimalI64::new(timestamp);
        let mut out: SignedHeaders = Vec::with_capacity(3);
        out.push((Cow::Borrowed(WEBHOOK_ID), msg_id.to_owned()));
        match self {
            Self::StandardWebhooks => {
                let mut sig = String::with_capacity(keys.len() * 48);
                for key in keys {
                    if !sig.is_empty() {
                        sig.push(' ');
                    }
                    sig.push_str("v1,");
                    let tag = self.tag(key.hmac_key(), msg_id, ts.as_bytes(), body);
                    STANDARD.encode_string(tag.as_ref(), &mut sig);
                }
                out.push((Cow::Borrowed(WEBHOOK_TIMESTAMP), ts.as_str().to_owned()));
                out.push((Cow::Borrowed(WEBHOOK_SIGNATURE), sig));
            }
            Self::SplitTimestamp {
                signature_header,
                timestamp_header,
            } => {
                let mut sig = String::with_capacity(64);
                let tag = self.tag(keys[0].hmac_key(), msg_id, ts.as_bytes(), body);
                push_hex(&mut sig, tag.as_ref());
                out.push((header_name(signature_header, X_WEBHOOK_SIGNATURE), sig));
                out.push((
                    header_name(timestamp_header, X_WEBHOOK_TIMESTAMP),
                    ts.as_str().to_owned(),
                ));
            }
            Self::InlineTimestamp => {
                let mut sig = String::with_capacity(2 + ts.as_bytes().len() + keys.len() * 68);
                sig.push_str("t=");
                sig.push_str(ts.as_str());
                for key in keys {
                    sig.push_str(",v1=");
                    let tag = self.tag(key.hmac_key(), msg_id, ts.as_bytes(), body);
                    push_hex(&mut sig, tag.as_ref());
                }
                out.push((Cow::Borrowed(X_WEBHOOK_SIGNATURE), sig));
            }
            Self::BodyOnly => {
                let mut sig = String::with_capacity(7 + 64);
                sig.push_str("sha256=");
                let tag = self.tag(keys[0].hmac_key(), msg_id, ts.as_bytes(), body);
                push_hex(&mut sig, tag.as_ref());
                out.push((Cow::Borrowed(X_WEBHOOK_SIGNATURE), sig));
            }
        }
        out
    }

    /// The HMAC over exactly the bytes this scheme signs, fed in pieces so
    /// that the signed content is never concatenated in memory.
    ///
    /// `timestamp` is the decimal text of the timestamp; `msg_id` is used by
    /// `StandardWebhooks` only, `timestamp` by every scheme but `BodyOnly`.
    pub(crate) fn tag(
        &self,
        key: &hmac::Key,
        msg_id: &str,
        timestamp: &[u8],
        body: &[u8],
    ) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        match self {
            Self::StandardWebhooks => {
                ctx.update(msg_id.as_bytes());
                ctx.update(b".");
                ctx.update(timestamp);
                ctx.update(b".");
            }
            Self::SplitTimestamp { .. } => ctx.update(timestamp),
            Self::InlineTimestamp => {
                ctx.update(timestamp);
                ctx.update(b".");
            }
            Self::BodyOnly => {}
        }
        ctx.update(body);
        ctx.sign()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_shape() {
        let json = serde_json::to_string(&SignatureScheme::StandardWebhooks).expect("ser");
        assert_eq!(json, r#"{"kind":"standard_webhooks"}"#);
        let json = serde_json::to_string(&SignatureScheme::split_timestamp()).expect("ser");
        assert_eq!(
            json,
            r#"{"kind":"split_timestamp","signature_header":"X-Webhook-Signature","timestamp_header":"X-Webhook-Timestamp"}"#
        );
        for (text, scheme) in [
            (
                r#"{"kind":"inline_timestamp"}"#,
                SignatureScheme::InlineTimestamp,
            ),
            (r#"{"kind":"body_only"}"#, SignatureScheme::BodyOnly),
            (
                r#"{"kind":"split_timestamp"}"#,
                SignatureScheme::split_timestamp(),
            ),
            (
                r#"{"kind":"split_timestamp","signature_header":"X-Sig","timestamp_header":"X-Ts"}"#,
                SignatureScheme::SplitTimestamp {
                    signature_header: "X-Sig".into(),
                    timestamp_header: "X-Ts".into(),
                },
            ),
        ] {
            let parsed: SignatureScheme = serde_json::from_str(text).expect("de");
            assert_eq!(parsed, scheme);
            let back: SignatureScheme =
                serde_json::from_str(&serde_json::to_string(&parsed).expect("ser")).expect("de");
            assert_eq!(back, scheme);
        }
        assert_eq!(
            SignatureScheme::default(),
            SignatureScheme::StandardWebhooks
        );
    }

    #[test]
    fn default_header_names_are_borrowed() {
        let key = SigningKey::new(b"k");
        let headers = SignatureScheme::split_timestamp().sign(&key, "id", 1, b"");
        assert!(headers.iter().all(|(n, _)| matches!(n, Cow::Borrowed(_))));
    }

    #[test]
    fn sign_many_empty_is_none() {
        assert!(
            SignatureScheme::StandardWebhooks
                .sign_many(&[], "id", 1, b"")
                .is_none()
        );
    }

    #[test]
    fn replay_protection_flag() {
        assert!(SignatureScheme::StandardWebhooks.has_replay_protection());
        assert!(SignatureScheme::split_timestamp().has_replay_protection());
        assert!(SignatureScheme::InlineTimestamp.has_replay_protection());
        assert!(!SignatureScheme::BodyOnly.has_replay_protection());
    }
}
