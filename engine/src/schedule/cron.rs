//! When a schedule fires: cron expressions read the way operators write them, evaluated on the
//! wall clock of an IANA time zone.
//!
//! Parsing is the `cron` crate's, which wants a leading seconds field and counts days of the
//! week from 1 (Sunday) to 7; operators write Unix cron, where a five-field expression has no
//! seconds and Sunday is 0 (or 7). [`CronExpr`] accepts both shapes and the `@hourly`-style
//! macros, and translates numeric days of the week so `1-5` means Monday to Friday, as in crontab.
//!
//! Time zones: a schedule fires at wall-clock times. Each wall-clock time fires at most once: in
//! the hour a daylight-saving change repeats, only its first occurrence fires (a nightly job does
//! not run twice); a wall-clock time the change skips fires at the same distance after the gap
//! (02:30 on a night that jumps from 02:00 to 03:00 fires at 03:30), so no day loses its run.

use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use std::fmt;
use std::str::FromStr;

/// A parsed cron expression, as written (5 or 6 fields, or a macro such as `@daily`).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CronExpr {
    written: String,
    schedule: cron::Schedule,
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron expression `{expression}`: {reason}")]
pub struct CronError {
    /// The expression as written.
    pub expression: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The macros accepted, with the six-field expression each stands for.
const MACROS: [(&str, &str); 8] = [
    ("@yearly", "0 0 0 1 1 *"),
    ("@annually", "0 0 0 1 1 *"),
    ("@monthly", "0 0 0 1 * *"),
    ("@weekly", "0 0 0 * * 1"),
    ("@daily", "0 0 0 * * *"),
    ("@midnight", "0 0 0 * * *"),
    ("@hourly", "0 0 * * * *"),
    ("@minutely", "0 * * * * *"),
];

impl FromStr for CronExpr {
    type Err = CronError;

    fn from_str(written: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| CronError {
            expression: written.to_owned(),
            reason,
        };
        let trimmed = written.trim();
        let six_fields = if trimmed.starts_with('@') {
            MACROS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
                .map(|(_, fields)| (*fields).to_owned())
                .ok_or_else(|| {
                    error(format!(
                        "unknown macro; use one of {}",
                        MACROS.map(|(name, _)| name).join(", ")
                    ))
                })?
        } else {
            let mut fields: Vec<String> = trimmed.split_whitespace().map(str::to_owned).collect();
            match fields.len() {
                5 => fields.insert(0, "0".to_owned()),
                6 => {}
                n => {
                    return Err(error(format!(
                        "expected 5 fields (minute hour day month weekday) or 6 (with leading \
                         seconds), found {n}"
                    )))
                }
            }
            fields[5] = unix_weekdays(&fields[5]).map_err(error)?;
            fields.join(" ")
        };
        let schedule =
            cron::Schedule::from_str(&six_fields).map_err(|e| error(first_line(&e.to_string())))?;
        Ok(Self {
            written: written.to_owned(),
            schedule,
        })
    }
}

impl CronExpr {
    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// The first fire time strictly after `after`, in `zone`'s wall clock; `None` when the
    /// expression never fires again (e.g. a date that does not exist, such as 30 February).
    pub fn next_after(&self, zone: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.fires_after(zone, after).next()
    }

    /// Fire times strictly after `after`, in order.
    pub fn fires_after(
        &self,
        zone: Tz,
        after: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        // The cron crate walks a clock without gaps or repeats; give it the wall clock as if it
        // were UTC, then place each wall-clock time in the zone. The walk starts an hour early:
        // a wall-clock time shifted past a gap may land after `after` although it reads before it.
        let wall = after.with_timezone(&zone).naive_local() - chrono::Duration::hours(1);
        let mut last = after;
        self.schedule
            .after(&Utc.from_utc_datetime(&wall))
            .filter_map(move |wall| {
                let at = place(zone, wall.naive_utc())?;
                (at > last).then(|| {
                    last = at;
                    at
                })
            })
    }

    /// Fire times in `(after, until]`, oldest first, at most `limit` of them: the latest ones
    /// when there are more.
    pub fn fires_between(
        &self,
        zone: Tz,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut fires = std::collections::VecDeque::with_capacity(limit.min(128));
        for at in self.fires_after(zone, after).take_while(|at| *at <= until) {
            if fires.len() == limit {
                fires.pop_front();
            }
            if limit > 0 {
                fires.push_back(at);
            }
        }
        fires.into()
    }
}

impl TryFrom<String> for CronExpr {
    type Error = CronError;

    fn try_from(written: String) -> Result<Self, Self::Error> {
        written.parse()
    }
}

impl From<CronExpr> for String {
    fn from(expr: CronExpr) -> Self {
        expr.written
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronExpr").field(&self.written).finish()
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written
    }
}

impl Eq for CronExpr {}

/// The instant of a wall-clock time in `zone`: the first of two in a repeated hour, and for a
/// time inside a gap, the same distance past the gap's end.
fn place(zone: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => {
            // Read the time with the offset in force just before the gap: that lands it as far
            // past the gap's end as it was past the gap's start.
            let before = wall - chrono::Duration::hours(3);
            let offset = zone.offset_from_local_datetime(&before).earliest()?;
            let utc = wall - chrono::Duration::seconds(offset.fix().local_minus_utc().into());
            Some(Utc.from_utc_datetime(&utc))
        }
    }
}

/// Rewrites a day-of-week field from Unix numbering (0 or 7 = Sunday, 1 = Monday) to the cron
/// crate's (1 = Sunday, 7 = Saturday). Parts with names (`MON-FRI`) mean the same in both and
/// pass through; numeric parts become an explicit list.
fn unix_weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    let mut parts = Vec::new();
    for part in field.split(',') {
        if part.chars().any(|c| c.is_ascii_alphabetic()) {
            parts.push(part.to_owned());
            continue;
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, number(step, part)?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("day-of-week step `{part}` must be at least 1"));
        }
        let (first, last) = match range {
            "*" => (0, 6),
            _ => match range.split_once('-') {
                Some((first, last)) => (number(first, part)?, number(last, part)?),
                None if step > 1 => (number(range, part)?, 6),
                None => {
                    let day = number(range, part)?;
                    (day, day)
                }
            },
        };
        if first > 7 || last > 7 || first > last {
            return Err(format!(
                "day of week `{part}` is out of range (0–7, Sunday is 0 or 7)"
            ));
        }
        parts.extend(
            (first..=last)
                .step_by(step as usize)
                .map(|day| (day % 7 + 1).to_string()),
        );
    }
    parts.dedup();
    Ok(parts.join(","))
}

fn number(text: &str, part: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| format!("day of week `{part}` is not a number, a range or a name"))
}

fn first_line(message: &str) -> String {
    message.lines().last().unwrap_or(message).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    /// The first `n` fire times of `expression` after `after`, as RFC 3339 UTC text.
    fn fires(expression: &str, zone: Tz, after: &str, n: usize) -> Vec<String> {
        let expr: CronExpr = expression.parse().expect("a valid expression");
        expr.fires_after(zone, utc(after))
            .take(n)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect()
    }

    fn next(expression: &str, zone: Tz, after: &str) -> String {
        fires(expression, zone, after, 1).remove(0)
    }

    /// Expressions as written in crontab (5 fields, Sunday = 0 or 7), with seconds (6 fields)
    /// and as macros: each case is (expression, after, the next fire, why).
    #[test]
    fn next_fires_read_expressions_as_crontab_does() {
        let cases = [
            (
                "*/15 * * * *",
                "2026-12-01T10:07:30Z",
                "2026-12-01T10:15:00Z",
                "minutes",
            ),
            (
                "*/10 * * * * *",
                "2026-12-01T10:07:31Z",
                "2026-12-01T10:07:40Z",
                "seconds",
            ),
            (
                "30 2 * * *",
                "2026-12-01T02:30:00Z",
                "2026-12-02T02:30:00Z",
                "strictly after",
            ),
            (
                "@hourly",
                "2026-12-01T10:07:00Z",
                "2026-12-01T11:00:00Z",
                "a macro",
            ),
            (
                "@daily",
                "2026-12-01T10:07:00Z",
                "2026-12-02T00:00:00Z",
                "a macro",
            ),
            // 2026-12-06 is a Sunday, 2026-12-05 a Saturday.
            (
                "@weekly",
                "2026-12-01T10:07:00Z",
                "2026-12-06T00:00:00Z",
                "weeks start on Sunday",
            ),
            (
                "0 9 * * 1-5",
                "2026-12-05T12:00:00Z",
                "2026-12-07T09:00:00Z",
                "1-5 is Mon-Fri",
            ),
            (
                "0 9 * * 0",
                "2026-12-05T12:00:00Z",
                "2026-12-06T09:00:00Z",
                "0 is Sunday",
            ),
            (
                "0 9 * * 7",
                "2026-12-05T12:00:00Z",
                "2026-12-06T09:00:00Z",
                "7 is Sunday too",
            ),
            (
                "0 9 * * MON-FRI",
                "2026-12-05T12:00:00Z",
                "2026-12-07T09:00:00Z",
                "names",
            ),
            (
                "0 0 9 * * 6",
                "2026-12-01T12:00:00Z",
                "2026-12-05T09:00:00Z",
                "6 fields: 6 is Sat",
            ),
        ];
        for (expression, after, expected, why) in cases {
            assert_eq!(
                next(expression, Tz::UTC, after),
                expected,
                "{expression}: {why}"
            );
        }
        assert!("@fortnightly".parse::<CronExpr>().is_err());
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        for bad in [
            "",
            "* * * *",
            "* * * * * * * *",
            "61 * * * *",
            "* * * * 8",
            "* * * * 5-2",
            "nonsense here * * *",
        ] {
            let error = bad.parse::<CronExpr>().expect_err(bad);
            assert!(!error.reason.is_empty(), "{bad}: {error}");
        }
    }

    #[test]
    fn a_time_zone_fires_on_its_wall_clock() {
        // 02:30 in New York in December is 07:30 UTC (EST, UTC−5).
        assert_eq!(
            next(
                "30 2 * * *",
                chrono_tz::America::New_York,
                "2026-12-01T00:00:00Z"
            ),
            "2026-12-01T07:30:00Z"
        );
    }

    #[test]
    fn a_skipped_wall_clock_time_fires_after_the_gap() {
        // Berlin jumps from 02:00 CET to 03:00 CEST on 2026-03-29: 02:30 does not exist that
        // night and fires at 03:30 CEST (01:30 UTC); the days around it fire at 02:30.
        assert_eq!(
            fires(
                "30 2 * * *",
                chrono_tz::Europe::Berlin,
                "2026-03-27T12:00:00Z",
                3
            ),
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-30T00:30:00Z"
            ]
        );
    }

    #[test]
    fn a_repeated_wall_clock_time_fires_once() {
        // Berlin goes back from 03:00 CEST to 02:00 CET on 2026-10-25: 02:30 happens twice that
        // night and fires only the first time (00:30 UTC).
        assert_eq!(
            fires(
                "30 2 * * *",
                chrono_tz::Europe::Berlin,
                "2026-10-24T12:00:00Z",
                2
            ),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // Asked from inside the repeated hour, it does not fire the second 02:30 either.
        assert_eq!(
            next(
                "30 2 * * *",
                chrono_tz::Europe::Berlin,
                "2026-10-25T01:00:00Z"
            ),
            "2026-10-26T01:30:00Z"
        );
    }

    #[test]
    fn fires_between_keeps_the_latest_up_to_a_limit() {
        let expr: CronExpr = "* * * * *".parse().expect("valid");
        let fires = expr.fires_between(
            Tz::UTC,
            utc("2026-12-01T10:00:00Z"),
            utc("2026-12-01T13:00:00Z"),
            100,
        );
        assert_eq!(fires.len(), 100);
        assert_eq!(fires.last(), Some(&utc("2026-12-01T13:00:00Z")));
        assert_eq!(fires.first(), Some(&utc("2026-12-01T11:21:00Z")));
        let none = expr.fires_between(
            Tz::UTC,
            utc("2026-12-01T10:00:00Z"),
            utc("2026-12-01T10:00:59Z"),
            100,
        );
        assert!(none.is_empty());
    }
}
