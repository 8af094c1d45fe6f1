//! The mission list's page cursor: the (created_at, id) of the last mission shown, which the next
//! page starts strictly after (keyset pagination, so pages stay stable while missions arrive).
//!
//! The wire form is base64url of `<RFC 3339 time, microseconds>|<uuid>`. Clients must treat it as
//! opaque; it is encoded so nobody builds one by hand and so it can change without notice.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hypercode_engine::MissionId;

/// A position in the newest-first mission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last mission shown.
    pub created_at: DateTime<Utc>,
    /// Its id (the tie-breaker among missions created in the same microsecond).
    pub id: MissionId,
}

/// A string that is not a cursor this server issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`cursor` is not a cursor returned by this API")]
pub struct InvalidCursor;

impl Cursor {
    /// The opaque wire form.
    pub fn encode(&self) -> String {
        // Microseconds are Postgres' precision: the round trip through the database is exact,
        // which keyset pagination needs (a rounded time would skip or repeat rows).
        let at = self.created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
        URL_SAFE_NO_PAD.encode(format!("{at}|{}", self.id))
    }

    /// Parse a wire form; anything malformed is an [`InvalidCursor`].
    pub fn decode(cursor: &str) -> Result<Self, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor.as_bytes())
            .map_err(|_| InvalidCursor)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| InvalidCursor)?;
        let (at, id) = text.split_once('|').ok_or(InvalidCursor)?;
        Ok(Self {
            created_at: DateTime::parse_from_rfc3339(at)
                .map_err(|_| InvalidCursor)?
                .with_timezone(&Utc),
            id: id.parse().map_err(|_| InvalidCursor)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Cursor {
        Cursor {
            created_at: Utc
                .timestamp_opt(1_764_000_000, 123_456_000)
                .single()
                .unwrap_or_default(),
            id: MissionId::new(),
        }
    }

    #[test]
    fn round_trips() {
        let cursor = sample();
        let encoded = cursor.encode();
        assert_eq!(Cursor::decode(&encoded), Ok(cursor));
        assert!(encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn round_trips_whole_seconds() {
        let cursor = Cursor {
            created_at: Utc
                .timestamp_opt(1_764_000_000, 0)
                .single()
                .unwrap_or_default(),
            ..sample()
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
    }

    #[test]
    fn rejects_garbage() {
        let id = MissionId::new();
        for garbage in [
            String::new(),
            "not base64!".to_owned(),
            "====".to_owned(),
            URL_SAFE_NO_PAD.encode("no separator"),
            URL_SAFE_NO_PAD.encode(format!("yesterday|{id}")),
            URL_SAFE_NO_PAD.encode("2025-11-24T12:00:00Z|not-a-uuid"),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe, b'|', 0x00]),
            // A valid text, but padded: 64 bytes always end in `==`, which is not issued.
            base64::engine::general_purpose::URL_SAFE
                .encode(format!("2025-11-24T12:00:00.000001Z|{id}")),
        ] {
            assert_eq!(Cursor::decode(&garbage), Err(InvalidCursor), "{garbage:?}");
        }
    }
}
