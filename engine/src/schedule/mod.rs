//! Durable cron schedules: what a schedule is, and which of its ticks are due at a given moment.
//!
//! A schedule starts a mission of one workflow at every tick of a cron expression in a time
//! zone. Ticks are idempotent: the mission a tick starts carries the key
//! `schedule:<name>:<fire time>` ([`tick_key`]), so a tick fired twice (two `serve` replicas, a
//! retry after a crash) is still one mission. This module is pure: the store keeps schedules and
//! the ticker in the binary asks [`due`] what to fire.

pub mod cron;

use self::cron::CronExpr;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How late a tick may be fired and still count as on time; a later one is *missed* and
/// handled by the schedule's [`Catchup`].
pub const ON_TIME: chrono::Duration = chrono::Duration::seconds(1);

/// The most missed ticks [`Catchup::All`] fires after an outage (the latest ones).
pub const MAX_CATCHUP: usize = 100;

/// A schedule's name: `[a-z0-9][a-z0-9_.-]{0,62}`, so it reads well in keys and URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScheduleName(String);

/// A name that breaks the naming rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a schedule name is 1 to 63 characters of a-z, 0-9, `_`, `.` and `-`, starting with a \
     letter or digit"
)]
pub struct BadScheduleName;

impl ScheduleName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ScheduleName {
    type Err = BadScheduleName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
        if first_ok && rest_ok && name.len() <= 63 {
            Ok(Self(name.to_owned()))
        } else {
            Err(BadScheduleName)
        }
    }
}

impl TryFrom<String> for ScheduleName {
    type Error = BadScheduleName;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<ScheduleName> for String {
    fn from(name: ScheduleName) -> Self {
        name.0
    }
}

impl fmt::Display for ScheduleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a tick does while an earlier mission of the same schedule is still live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "schedule_overlap", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Fire nothing; the tick is counted as skipped.
    #[default]
    Skip,
    /// Fire anyway: missions of the schedule may run side by side.
    Allow,
    /// Cancel the live mission, then fire.
    CancelPrevious,
}

/// What happens to ticks missed while no `serve` ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "schedule_catchup", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    /// One mission, for the latest missed tick.
    #[default]
    Once,
    /// None.
    Skip,
    /// One mission per missed tick, the latest [`MAX_CATCHUP`] of them.
    All,
}

impl Overlap {
    /// Every policy.
    pub const ALL: [Self; 3] = [Self::Skip, Self::Allow, Self::CancelPrevious];

    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Allow => "allow",
            Self::CancelPrevious => "cancel_previous",
        }
    }
}

impl Catchup {
    /// Every policy.
    pub const ALL: [Self; 3] = [Self::Once, Self::Skip, Self::All];

    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::Skip => "skip",
            Self::All => "all",
        }
    }
}

/// An IANA time zone, written by name (`Europe/Berlin`, `UTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Zone(pub Tz);

/// A time zone name the tz database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone `{0}`; use an IANA name such as `Europe/Berlin` or `UTC`")]
pub struct UnknownZone(pub String);

impl Default for Zone {
    fn default() -> Self {
        Self(Tz::UTC)
    }
}

impl FromStr for Zone {
    type Err = UnknownZone;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        name.parse::<Tz>()
            .map(Self)
            .map_err(|_| UnknownZone(name.to_owned()))
    }
}

impl TryFrom<String> for Zone {
    type Error = UnknownZone;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<Zone> for String {
    fn from(zone: Zone) -> Self {
        zone.0.name().to_owned()
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// The idempotency key of the mission a tick starts: `schedule:<name>:<fire time>`, the time in
/// RFC 3339 UTC with seconds and a `Z`.
pub fn tick_key(name: &ScheduleName, fire_at: DateTime<Utc>) -> String {
    format!(
        "schedule:{name}:{}",
        fire_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// What to do for a schedule at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Fire times to start a mission for, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// The schedule's next tick after this moment (`None`: it never fires again).
    pub next: Option<DateTime<Utc>>,
}

/// The ticks of a schedule due at `now`, given the tick it was waiting for (`next_fire_at`).
/// A tick fired within [`ON_TIME`] of its time is on time and always fires; older ones were
/// missed and follow `catchup`.
pub fn due(
    expr: &CronExpr,
    zone: Zone,
    catchup: Catchup,
    next_fire_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Due {
    if next_fire_at > now {
        return Due {
            fire: Vec::new(),
            next: Some(next_fire_at),
        };
    }
    // Enough to hold every catch-up tick plus the on-time ones (at most two fit in `ON_TIME`).
    let mut passed = vec![next_fire_at];
    passed.extend(expr.fires_between(zone.0, next_fire_at, now, MAX_CATCHUP + 2));
    let missed_until = passed.partition_point(|at| now - *at > ON_TIME);
    let (missed, on_time) = passed.split_at(missed_until);
    let caught_up: &[DateTime<Utc>] = match catchup {
        Catchup::Skip => &[],
        Catchup::Once => &missed[missed.len().saturating_sub(1)..],
        Catchup::All => &missed[missed.len().saturating_sub(MAX_CATCHUP)..],
    };
    Due {
        fire: caught_up.iter().chain(on_time).copied().collect(),
        next: expr.next_after(zone.0, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    fn every_minute() -> CronExpr {
        "* * * * *".parse().expect("valid")
    }

    #[test]
    fn names_follow_the_rule() {
        for good in ["nightly", "a", "0", "heal.sweep-2_b", &"x".repeat(63)] {
            assert!(good.parse::<ScheduleName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Nightly",
            "-a",
            ".a",
            "a b",
            "a/b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(bad.parse::<ScheduleName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_name_the_tick_in_utc_seconds() {
        let name: ScheduleName = "nightly".parse().expect("valid");
        assert_eq!(
            tick_key(&name, utc("2026-12-01T02:00:00.250+00:00")),
            "schedule:nightly:2026-12-01T02:00:00Z"
        );
    }

    #[test]
    fn policy_names_are_their_wire_names() {
        for overlap in Overlap::ALL {
            assert_eq!(serde_json::json!(overlap), overlap.as_str());
        }
        for catchup in Catchup::ALL {
            assert_eq!(serde_json::json!(catchup), catchup.as_str());
        }
    }

    #[test]
    fn zones_are_read_by_iana_name() {
        assert_eq!("UTC".parse::<Zone>(), Ok(Zone(Tz::UTC)));
        assert_eq!(
            "Europe/Berlin".parse::<Zone>().map(String::from),
            Ok("Europe/Berlin".to_owned())
        );
        assert!("Mars/Olympus".parse::<Zone>().is_err());
    }

    #[test]
    fn an_on_time_tick_fires_and_the_next_is_scheduled() {
        let due = due(
            &every_minute(),
            Zone::default(),
            Catchup::Once,
            utc("2026-12-01T10:00:00Z"),
            utc("2026-12-01T10:00:00.400Z"),
        );
        assert_eq!(due.fire, [utc("2026-12-01T10:00:00Z")]);
        assert_eq!(due.next, Some(utc("2026-12-01T10:01:00Z")));
    }

    #[test]
    fn nothing_is_due_before_the_tick() {
        let due = due(
            &every_minute(),
            Zone::default(),
            Catchup::All,
            utc("2026-12-01T10:01:00Z"),
            utc("2026-12-01T10:00:30Z"),
        );
        assert!(due.fire.is_empty());
        assert_eq!(due.next, Some(utc("2026-12-01T10:01:00Z")));
    }

    #[test]
    fn missed_ticks_follow_catchup() {
        // Down from 10:00 to 10:05:00.5: ticks 10:00–10:04 were missed, 10:05 is on time.
        let at = |catchup| {
            due(
                &every_minute(),
                Zone::default(),
                catchup,
                utc("2026-12-01T10:00:00Z"),
                utc("2026-12-01T10:05:00.500Z"),
            )
        };
        let skip = at(Catchup::Skip);
        assert_eq!(skip.fire, [utc("2026-12-01T10:05:00Z")]);
        let once = at(Catchup::Once);
        assert_eq!(
            once.fire,
            [utc("2026-12-01T10:04:00Z"), utc("2026-12-01T10:05:00Z")]
        );
        let all = at(Catchup::All);
        assert_eq!(all.fire.len(), 6);
        assert_eq!(all.next, Some(utc("2026-12-01T10:06:00Z")));
    }

    #[test]
    fn catching_up_all_is_capped() {
        let due = due(
            &every_minute(),
            Zone::default(),
            Catchup::All,
            utc("2026-12-01T00:00:00Z"),
            utc("2026-12-01T10:00:30Z"),
        );
        assert_eq!(due.fire.len(), MAX_CATCHUP);
        assert_eq!(due.fire.first(), Some(&utc("2026-12-01T08:21:00Z")));
        assert_eq!(due.fire.last(), Some(&utc("2026-12-01T10:00:00Z")));
    }
}
