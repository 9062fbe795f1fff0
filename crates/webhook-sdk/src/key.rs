//! Secrets and precomputed HMAC keys.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

/// Prefix of secrets written in the Standard Webhooks form `whsec_<base64>`.
pub const WHSEC_PREFIX: &str = "whsec_";

/// Number of random bytes in a secret made by [`generate_secret`].
pub const GENERATED_SECRET_BYTES: usize = 24;

/// Standard alphabet, padding optional: `whsec_` secrets are written both ways.
const SECRET_DECODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An HMAC-SHA256 key, precomputed once and reused for every signature.
///
/// Build it once per secret (not per request). Cloning is cheap and `Debug`
/// never prints the secret.
#[derive(Clone)]
pub struct SigningKey {
    key: hmac::Key,
}

impl SigningKey {
    /// Builds a key from a secret as the user wrote it.
    ///
    /// If `secret` starts with `whsec_` and the rest is non-empty base64
    /// (standard alphabet, padding optional), the key is the decoded bytes,
    /// as in Standard Webhooks. Any other secret (for example
    /// `b"supersecret"`, or a `whsec_` string whose rest is not base64) is
    /// used as raw bytes. The same rule applies to every
    /// [`SignatureScheme`](crate::SignatureScheme).
    ///
    /// An empty secret is accepted but offers no security; callers that take
    /// secrets from users should reject it.
    pub fn new(secret: &[u8]) -> Self {
        Self::from_raw(&decode_secret(secret))
    }

    /// Builds a key from raw bytes, with no `whsec_` decoding.
    pub fn from_raw(bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// Builds a key the way the official Standard Webhooks libraries do: an
    /// optional `whsec_` prefix, then base64 that must decode.
    ///
    /// Unlike [`SigningKey::new`], a secret without the prefix is decoded
    /// too. Returns `None` if the base64 is invalid or empty.
    pub fn from_base64(secret: &str) -> Option<Self> {
        let encoded = secret.strip_prefix(WHSEC_PREFIX).unwrap_or(secret);
        if encoded.is_empty() {
            return None;
        }
        let bytes = SECRET_DECODER.decode(encoded).ok()?;
        Some(Self::from_raw(&bytes))
    }

    /// Makes a fresh random key and returns it with its secret written as
    /// `whsec_<base64>` ([`GENERATED_SECRET_BYTES`] bytes from the system
    /// RNG). Give the string to the receiver; keep the key for signing.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn generate() -> (Self, String) {
        let mut bytes = [0u8; GENERATED_SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random number generator failed");
        let mut secret = String::with_capacity(WHSEC_PREFIX.len() + 32);
        secret.push_str(WHSEC_PREFIX);
        STANDARD.encode_string(bytes, &mut secret);
        (Self::from_raw(&bytes), secret)
    }

    /// The precomputed ring key.
    pub(crate) fn hmac_key(&self) -> &hmac::Key {
        &self.key
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Makes a fresh secret `whsec_<base64 of 24 random bytes>`, for a service
/// that must create one (for example when an endpoint is registered).
///
/// # Panics
///
/// If the operating system's random number generator fails.
pub fn generate_secret() -> String {
    SigningKey::generate().1
}

/// Applies the `whsec_` rule of [`SigningKey::new`].
fn decode_secret(secret: &[u8]) -> Cow<'_, [u8]> {
    match secret.strip_prefix(WHSEC_PREFIX.as_bytes()) {
        Some(rest) if !rest.is_empty() => match SECRET_DECODER.decode(rest) {
            Ok(decoded) => Cow::Owned(decoded),
            Err(_) => Cow::Borrowed(secret),
        },
        _ => Cow::Borrowed(secret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whsec_is_decoded_and_raw_is_not() {
        assert_eq!(
            decode_secret(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").len(),
            24
        );
        assert_eq!(&*decode_secret(b"supersecret"), b"supersecret");
        assert_eq!(&*decode_secret(b"whsec_"), b"whsec_");
        assert_eq!(&*decode_secret(b"whsec_not base64!"), b"whsec_not base64!");
        assert_eq!(&*decode_secret(b"whsec_\xff\xfe"), b"whsec_\xff\xfe");
        // Padding is optional.
        assert_eq!(&*decode_secret(b"whsec_YWI="), b"ab");
        assert_eq!(&*decode_secret(b"whsec_YWI"), b"ab");
    }

    #[test]
    fn from_base64_follows_official_libraries() {
        assert!(SigningKey::from_base64("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_some());
        assert!(SigningKey::from_base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_some());
        assert!(SigningKey::from_base64("whsec_").is_none());
        assert!(SigningKey::from_base64("").is_none());
        assert!(SigningKey::from_base64("not base64!").is_none());
    }

    #[test]
    fn debug_is_redacted() {
        let key = SigningKey::new(b"supersecret");
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
    }

    #[test]
    fn generated_secrets_are_fresh_whsec() {
        let (_, a) = SigningKey::generate();
        let b = generate_secret();
        assert_ne!(a, b);
        for s in [&a, &b] {
            let rest = s.strip_prefix(WHSEC_PREFIX).expect("prefix");
            assert_eq!(STANDARD.decode(rest).expect("base64").len(), 24);
        }
    }
}
