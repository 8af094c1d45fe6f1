//! How values read to people: relative times with the exact time beside them, durations,
//! pretty JSON, short ids.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use hypercode_engine::{redact, MissionId};
use serde_json::Value;

/// A moment, ready for `<time datetime="{iso}" title="{exact}">{relative}</time>` (the script
/// keeps `relative` current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Moment {
    /// RFC 3339, for the `datetime` attribute and the script.
    pub(crate) iso: String,
    /// The exact time, shown on hover.
    pub(crate) exact: String,
    /// "3 min ago", "in 20 s".
    pub(crate) relative: String,
}

impl Moment {
    /// `at`, seen from `now`.
    pub(crate) fn new(at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self {
            iso: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            exact: at.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
            relative: relative(at, now),
        }
    }
}

/// "just now", "42 s ago", "3 min ago", "5 h ago", "2 d ago"; "in 3 min" for the future.
pub(crate) fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let delta = now - at;
    let secs = delta.num_seconds();
    let magnitude = secs.unsigned_abs();
    if magnitude < 5 {
        return "just now".to_owned();
    }
    let amount = match magnitude {
        0..60 => format!("{magnitude} s"),
        60..3600 => format!("{} min", magnitude / 60),
        3600..86_400 => format!("{} h", magnitude / 3600),
        _ => format!("{} d", magnitude / 86_400),
    };
    if secs >= 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min".
pub(crate) fn duration(delta: TimeDelta) -> String {
    let ms = delta.num_milliseconds().max(0);
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// JSON indented for reading, its secrets hidden (see the engine's `redact`): every JSON value
/// a page shows goes through here, whatever the viewer's role.
pub(crate) fn json(value: &Value) -> String {
    let value = redact::value(value);
    serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
}

/// Text for a page (an error message, an approval's question) with the userinfo of any URL in
/// it hidden.
pub(crate) fn text(text: &str) -> String {
    redact::url(text).into_owned()
}

/// A failed or cancelled mission's reason in one line for the list: the failed step and the
/// human message of its error ("`check`: could not connect to 127.0.0.1:8000 after 5
/// attempts"), not the recorded JSON (the mission's page shows that whole).
pub(crate) fn failure(error: &Value) -> String {
    let cause = &error["cause"];
    let message = cause["error"]["message"].as_str();
    if let (Some(step), Some(message)) = (cause["step"].as_str(), message) {
        let attempts = cause["error"]["attempts"].as_i64().unwrap_or(1);
        let after = if attempts > 1 {
            format!(" after {attempts} attempts")
        } else {
            String::new()
        };
        return text(&format!("{step}: {message}{after}"));
    }
    match error["message"].as_str() {
        Some(message) => text(message),
        None => redact::value(error).to_string(),
    }
}

/// The last eight digits of a mission id: enough to tell missions apart on one screen. Not the
/// first ones: ids are UUIDv7, which begin with their creation time, so missions submitted
/// together share their first digits, while the last ones are random.
pub(crate) fn short_id(id: MissionId) -> String {
    let text = id.to_string();
    text[text.len() - 8..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = Utc::now();
        let ago = |s: i64| relative(now - TimeDelta::seconds(s), now);
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(4), "just now");
        assert_eq!(ago(42), "42 s ago");
        assert_eq!(ago(3 * 60 + 59), "3 min ago");
        assert_eq!(ago(5 * 3600 + 1), "5 h ago");
        assert_eq!(ago(2 * 86_400 + 7), "2 d ago");
        assert_eq!(ago(-180), "in 3 min");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration(TimeDelta::milliseconds(850)), "850 ms");
        assert_eq!(duration(TimeDelta::milliseconds(12_345)), "12.3 s");
        assert_eq!(duration(TimeDelta::seconds(4 * 60 + 5)), "4 min 05 s");
        assert_eq!(duration(TimeDelta::minutes(123)), "2 h 03 min");
        assert_eq!(duration(TimeDelta::milliseconds(-5)), "0 ms");
    }

    #[test]
    fn failures_read_as_their_step_and_message() {
        let step = serde_json::json!({
            "message": "step `check` failed: {\"attempts\":5}",
            "cause": { "step": "check", "error": {
                "message": "could not connect to 127.0.0.1:8000", "retryable": true,
                "details": null, "attempts": 5 } },
        });
        assert_eq!(
            failure(&step),
            "check: could not connect to 127.0.0.1:8000 after 5 attempts"
        );
        let once = serde_json::json!({ "cause": { "step": "s", "error": { "message": "no", "attempts": 1 } } });
        assert_eq!(failure(&once), "s: no");
        let plain = serde_json::json!({ "message": "mission was cancelled" });
        assert_eq!(failure(&plain), "mission was cancelled");
        assert_eq!(failure(&serde_json::json!([1])), "[1]");
    }

    #[test]
    fn short_ids_differ_for_missions_created_together() {
        let (a, b) = (MissionId::new(), MissionId::new());
        assert_eq!(short_id(a).len(), 8);
        assert_ne!(short_id(a), short_id(b));
        assert!(a.to_string().ends_with(&short_id(a)));
    }

    #[test]
    fn moments_carry_the_exact_time() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T04:05:06.789Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let moment = Moment::new(at, at + TimeDelta::minutes(3));
        assert_eq!(moment.iso, "2026-11-26T04:05:06.789Z");
        assert_eq!(moment.exact, "2026-11-26 04:05:06.789 UTC");
        assert_eq!(moment.relative, "3 min ago");
    }
}
