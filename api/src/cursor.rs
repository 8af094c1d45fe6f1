//! Page cursors (keyset pagination, so pages stay stable while rows arrive): the mission list's
//! [`Cursor`], the (created_at, id) of the last mission shown, and the approvals inbox's
//! [`InboxCursor`], the (requested_at, mission, step position) of the last approval shown. The
//! next page starts strictly after it.
//!
//! The wire form is base64url of `<RFC 3339 time, microseconds>|<uuid>` (the inbox's adds
//! `|<position>`). Clients must treat it as opaque; it is encoded so nobody builds one by hand
//! and so it can change without notice.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hypercode_engine::store::InboxPosition;
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
        encode(self.created_at, &self.id.to_string())
    }

    /// Parse a wire form; anything malformed is an [`InvalidCursor`].
    pub fn decode(cursor: &str) -> Result<Self, InvalidCursor> {
        let (created_at, id) = decode(cursor)?;
        Ok(Self {
            created_at,
            id: id.parse().map_err(|_| InvalidCursor)?,
        })
    }
}

/// A position in the approvals inbox, oldest request first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxCursor(pub InboxPosition);

impl InboxCursor {
    /// The opaque wire form.
    pub fn encode(&self) -> String {
        let InboxPosition {
            requested_at,
            mission,
            position,
        } = self.0;
        encode(requested_at, &format!("{mission}|{position}"))
    }

    /// Parse a wire form; anything malformed is an [`InvalidCursor`].
    pub fn decode(cursor: &str) -> Result<Self, InvalidCursor> {
        let (requested_at, rest) = decode(cursor)?;
        let (mission, position) = rest.split_once('|').ok_or(InvalidCursor)?;
        Ok(Self(InboxPosition {
            requested_at,
            mission: mission.parse().map_err(|_| InvalidCursor)?,
            position: position.parse().map_err(|_| InvalidCursor)?,
        }))
    }
}

/// `<at>|<rest>` in base64url.
/// Cuts `rows`, fetched with one row more than the page size `limit` (positive), to the page,
/// and returns the next page's cursor, made from the last row shown, when that extra row says
/// another page exists (so no count query is needed).
pub(crate) fn trim_page<T>(
    rows: &mut Vec<T>,
    limit: i64,
    cursor: impl FnOnce(&T) -> String,
) -> Option<String> {
    // `limit` was checked to be positive, so the conversion is exact.
    let page_size = limit as usize;
    if rows.len() <= page_size {
        return None;
    }
    rows.truncate(page_size);
    rows.last().map(cursor)
}

fn encode(at: DateTime<Utc>, rest: &str) -> String {
    // Microseconds are Postgres' precision: the round trip through the database is exact,
    // which keyset pagination needs (a rounded time would skip or repeat rows).
    let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
    URL_SAFE_NO_PAD.encode(format!("{at}|{rest}"))
}

/// The time and the rest of a wire form.
fn decode(cursor: &str) -> Result<(DateTime<Utc>, String), InvalidCursor> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| InvalidCursor)?;
    let (at, rest) = text.split_once('|').ok_or(InvalidCursor)?;
    let at = DateTime::parse_from_rfc3339(at)
        .map_err(|_| InvalidCursor)?
        .with_timezone(&Utc);
    Ok((at, rest.to_owned()))
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
    fn inbox_cursors_round_trip_and_reject_garbage() {
        let cursor = InboxCursor(InboxPosition {
            requested_at: sample().created_at,
            mission: MissionId::new(),
            position: 7,
        });
        assert_eq!(InboxCursor::decode(&cursor.encode()), Ok(cursor));
        // A mission list cursor is not an inbox cursor.
        assert_eq!(InboxCursor::decode(&sample().encode()), Err(InvalidCursor));
        let id = MissionId::new();
        for garbage in [
            URL_SAFE_NO_PAD.encode(format!("2025-11-24T12:00:00Z|{id}|x")),
            URL_SAFE_NO_PAD.encode(format!("2025-11-24T12:00:00Z|{id}|1|2")),
            URL_SAFE_NO_PAD.encode("2025-11-24T12:00:00Z|nope|1"),
        ] {
            assert_eq!(
                InboxCursor::decode(&garbage),
                Err(InvalidCursor),
                "{garbage:?}"
            );
        }
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
