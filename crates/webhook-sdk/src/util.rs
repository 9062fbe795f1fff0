//! Small helpers: constant-time comparison, allocation-free formatting.

use crate::VerifyError;

/// Length of an HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 32;

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A decimal `i64` written on the stack.
pub(crate) struct DecimalI64 {
    buf: [u8; 20],
    start: usize,
}

impl DecimalI64 {
    /// Formats `value` in decimal, exactly as `value.to_string()` would.
    pub(crate) fn new(value: i64) -> Self {
        let mut buf = [0u8; 20];
        let mut pos = buf.len();
        let mut rest = value.unsigned_abs();
        loop {
            pos -= 1;
            // `rest % 10` is below 10, so the cast is lossless.
            buf[pos] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if value < 0 {
            pos -= 1;
            buf[pos] = b'-';
        }
        Self { buf, start: pos }
    }

    /// The digits as bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The digits as text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and '-' are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// Appends the lowercase hex form of `bytes`.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Decodes a 64-digit hex signature (either case).
pub(crate) fn decode_hex_tag(text: &str) -> Option<[u8; TAG_LEN]> {
    let mut out = [0u8; TAG_LEN];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Parses a unix timestamp: an optional `-` then ASCII digits, fitting in `i64`.
///
/// Surrounding ASCII whitespace is ignored. Signs other than a leading `-`,
/// inner spaces, underscores and the like are rejected.
pub(crate) fn parse_timestamp(text: &str) -> Result<i64, VerifyError> {
    let text = text.trim_ascii();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    text.parse().map_err(|_| VerifyError::InvalidTimestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_matches_to_string() {
        for v in [
            0,
            1,
            -1,
            9,
            10,
            1_614_265_330,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            assert_eq!(DecimalI64::new(v).as_str(), v.to_string());
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1614265330"), Ok(1_614_265_330));
        assert_eq!(parse_timestamp(" 42 "), Ok(42));
        assert_eq!(parse_timestamp("-42"), Ok(-42));
        for bad in [
            "",
            "-",
            "+1",
            "1 2",
            "1_000",
            "hello",
            "99999999999999999999999",
            "1.5",
            "٣",
        ] {
            assert_eq!(
                parse_timestamp(bad),
                Err(VerifyError::InvalidTimestamp),
                "{bad}"
            );
        }
    }

    #[test]
    fn hex_and_ct_eq() {
        let mut s = String::new();
        push_hex(&mut s, &[0x00, 0xab, 0xff]);
        assert_eq!(s, "00abff");
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(decode_hex_tag(&"AB".repeat(32)).is_some());
        assert!(decode_hex_tag(&"ab".repeat(31)).is_none());
        assert!(decode_hex_tag(&"zz".repeat(32)).is_none());
    }
}
