//! The JSON envelope carried in request bodies.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::VerifyError;

/// One event as sent in a request body (the Standard Webhooks payload
/// shape): `{"id": ..., "type": ..., "timestamp": ..., "data": ...}`.
///
/// Parsing also accepts the legacy shape
/// `{"id", "event", "timestamp", "data", "version"}`: `event` is read as
/// `type`, unknown fields such as `version` are ignored, a missing `data` is
/// `null`, and a numeric `timestamp` (unix seconds) is converted to RFC 3339.
/// Serializing always writes the Standard Webhooks shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique event id; equals the `webhook-id` header of its delivery when
    /// sent alone.
    pub id: String,
    /// Event type, such as `invoice.paid`.
    #[serde(rename = "type", alias = "event")]
    pub event_type: String,
    /// When the event happened, RFC 3339 (for example
    /// `2024-01-31T12:00:00Z`). Not validated on parse beyond the type.
    #[serde(deserialize_with = "de_timestamp")]
    pub timestamp: String,
    /// The event's payload.
    #[serde(default)]
    pub data: Value,
}

/// What a receiver gets from [`WebhookReceiver::parse_webhook`](crate::WebhookReceiver::parse_webhook).
pub type IncomingWebhook = Envelope;

impl Envelope {
    /// Builds an envelope.
    pub fn new(
        id: impl Into<String>,
        event_type: impl Into<String>,
        timestamp: impl Into<String>,
        data: Value,
    ) -> Self {
        Self {
            id: id.into(),
            event_type: event_type.into(),
            timestamp: timestamp.into(),
            data,
        }
    }

    /// Parses one envelope from a JSON body. Does not verify anything.
    pub fn from_json(body: &[u8]) -> Result<Self, VerifyError> {
        serde_json::from_slice(body).map_err(|e| VerifyError::InvalidBody(e.to_string()))
    }

    /// Parses a batch: a JSON array of envelopes. A single envelope object
    /// is accepted too and gives a batch of one. Does not verify anything.
    pub fn batch_from_json(body: &[u8]) -> Result<Vec<Self>, VerifyError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Many(Vec<Envelope>),
            One(Envelope),
        }
        // Dispatch on the first byte, so that errors name the real problem
        // instead of serde's generic "did not match any variant".
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        let parsed = if first == Some(&b'[') {
            serde_json::from_slice::<Vec<Self>>(body).map(OneOrMany::Many)
        } else {
            serde_json::from_slice::<Self>(body).map(OneOrMany::One)
        };
        match parsed.map_err(|e| VerifyError::InvalidBody(e.to_string()))? {
            OneOrMany::Many(all) => Ok(all),
            OneOrMany::One(one) => Ok(vec![one]),
        }
    }
}

/// Accepts an RFC 3339 string, or integer unix seconds converted to one.
fn de_timestamp<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Unix(i64),
    }
    match Raw::deserialize(deserializer) {
        Ok(Raw::Text(text)) => Ok(text),
        Ok(Raw::Unix(secs)) => rfc3339_from_unix(secs)
            .ok_or_else(|| serde::de::Error::custom("timestamp out of range for RFC 3339")),
        Err(_) => Err(serde::de::Error::custom(
            "timestamp must be an RFC 3339 string or unix seconds",
        )),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds, years 0000 to 9999 only.
fn rfc3339_from_unix(secs: i64) -> Option<String> {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant), valid over the whole i64 day range
    // that survives the year check below.
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era
        .checked_mul(400)?
        .checked_add(yoe)?
        .checked_add(i64::from(month <= 2))?;
    if !(0..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_to_rfc3339() {
        assert_eq!(
            rfc3339_from_unix(0).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        assert_eq!(
            rfc3339_from_unix(1_614_265_330).as_deref(),
            Some("2021-02-25T15:02:10Z")
        );
        assert_eq!(
            rfc3339_from_unix(951_782_400).as_deref(),
            Some("2000-02-29T00:00:00Z")
        );
        assert_eq!(
            rfc3339_from_unix(-1).as_deref(),
            Some("1969-12-31T23:59:59Z")
        );
        assert_eq!(
            rfc3339_from_unix(253_402_300_799).as_deref(),
            Some("9999-12-31T23:59:59Z")
        );
        assert_eq!(rfc3339_from_unix(253_402_300_800), None);
        assert_eq!(rfc3339_from_unix(i64::MAX), None);
        assert_eq!(rfc3339_from_unix(i64::MIN), None);
    }
}
