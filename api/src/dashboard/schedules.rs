//! The schedules page (`/schedules`): every cron schedule with its expression (in words where
//! that is easy), its next tick, its last mission's status, and for operators the buttons to
//! pause, resume or trigger it now. A mission fired by a schedule links back here.

use super::format::{short_id, Moment};
use super::session::{NoFields, SignedForm, SignedIn};
use super::{done, page_or_fragment, Chrome, Fragment, PageError};
use crate::error::ApiError;
use crate::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::Utc;
use hypercode_engine::schedule::ScheduleName;
use hypercode_engine::store::{ScheduleChange, ScheduleRecord, ScheduledMission};
use serde::Deserialize;
use std::collections::HashMap;

/// One schedule, as listed.
pub(crate) struct Row {
    name: String,
    cron: String,
    /// The expression in words, when it is one of the common shapes.
    words: Option<String>,
    timezone: String,
    workflow: String,
    enabled: bool,
    next: Option<Moment>,
    skipped: i64,
    /// The newest mission: (id, short id, status).
    last: Option<(String, String, &'static str)>,
}

impl Row {
    fn new(
        record: ScheduleRecord,
        last: Option<ScheduledMission>,
        now: chrono::DateTime<Utc>,
    ) -> Self {
        let spec = record.spec;
        Self {
            words: in_words(spec.cron.as_str()),
            cron: spec.cron.to_string(),
            name: spec.name.into(),
            timezone: spec.timezone.to_string(),
            workflow: spec.workflow,
            enabled: spec.enabled,
            next: record.next_fire_at.map(|at| Moment::new(at, now)),
            skipped: record.skipped,
            last: last.map(|m| (m.id.to_string(), short_id(m.id), m.status.as_str())),
        }
    }
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage<'a> {
    chrome: Chrome,
    rows: &'a [Row],
}

#[derive(Template)]
#[template(path = "schedules_live.html")]
struct SchedulesLive<'a> {
    chrome: Chrome,
    rows: &'a [Row],
}

/// `GET /schedules`.
pub(crate) async fn page(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    fragment: Fragment,
) -> Result<Response, PageError> {
    let store = state.engine.store();
    let now = Utc::now();
    let (schedules, latest) =
        tokio::try_join!(store.schedules(), store.latest_scheduled_missions())?;
    let mut latest: HashMap<String, ScheduledMission> = latest.into_iter().collect();
    let rows: Vec<Row> = schedules
        .into_iter()
        .map(|record| {
            let last = latest.remove(record.spec.name.as_str());
            Row::new(record, last, now)
        })
        .collect();
    let chrome = Chrome::new(&session, "Schedules", "schedules");
    page_or_fragment(
        fragment,
        &SchedulesPage {
            chrome: chrome.clone(),
            rows: &rows,
        },
        &SchedulesLive {
            chrome,
            rows: &rows,
        },
    )
}

/// The buttons' actions, the last segment of `/schedules/{name}/{action}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    /// Stop the ticks.
    Pause,
    /// Fire again from the next tick.
    Resume,
    /// Start one mission now.
    Trigger,
}

/// `POST /schedules/{name}/pause|resume|trigger`; a trigger goes on to the new mission's page.
pub(crate) async fn act(
    State(state): State<AppState>,
    fragment: Fragment,
    Path((name, action)): Path<(String, Action)>,
    SignedForm(session, NoFields {}): SignedForm<NoFields>,
) -> Result<Response, PageError> {
    session.require_operator()?;
    let name: ScheduleName = name
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no schedule is named `{name}`")))?;
    let by = &session.principal.name;
    let enabled = match action {
        Action::Pause => false,
        Action::Resume => true,
        Action::Trigger => {
            let mission = state.engine.trigger_schedule(&name).await?;
            tracing::info!(schedule = %name, mission = %mission.id, by, "schedule triggered from the dashboard");
            return Ok(done(fragment, &format!("/missions/{}", mission.id)));
        }
    };
    let change = ScheduleChange {
        enabled: Some(enabled),
        ..ScheduleChange::default()
    };
    state.engine.update_schedule(&name, change).await?;
    tracing::info!(schedule = %name, enabled, by, "schedule changed from the dashboard");
    Ok(done(fragment, "/schedules"))
}

/// A cron expression in words, for the shapes people write most; `None` for the rest, which
/// are shown as written.
fn in_words(cron: &str) -> Option<String> {
    let macro_words = match cron.trim() {
        "@yearly" | "@annually" => Some("every year on 1 January at 00:00"),
        "@monthly" => Some("every month on the 1st at 00:00"),
        "@weekly" => Some("every Sunday at 00:00"),
        "@daily" | "@midnight" => Some("every day at 00:00"),
        "@hourly" => Some("every hour"),
        "@minutely" => Some("every minute"),
        _ => None,
    };
    if let Some(words) = macro_words {
        return Some(words.to_owned());
    }
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let (seconds, rest) = match fields.len() {
        6 => (Some(fields[0]), &fields[1..]),
        5 => (None, &fields[..]),
        _ => return None,
    };
    let every = |field: &str| field.strip_prefix("*/").and_then(|n| n.parse::<u32>().ok());
    let number = |field: &str| field.parse::<u32>().ok();
    match (seconds, rest) {
        (Some("*"), ["*", "*", "*", "*", "*"]) => Some("every second".to_owned()),
        (None | Some("0"), ["*", "*", "*", "*", "*"]) => Some("every minute".to_owned()),
        (Some(s), ["*", "*", "*", "*", "*"]) => every(s).map(|n| format!("every {n} seconds")),
        (None | Some("0"), [m, "*", "*", "*", "*"]) => every(m)
            .map(|n| format!("every {n} minutes"))
            .or_else(|| number(m).map(|m| format!("every hour at :{m:02}"))),
        (None | Some("0"), [m, h, "*", "*", day]) => {
            let (h, m) = (number(h)?, number(m)?);
            let days = match *day {
                "*" => "every day",
                "1-5" | "MON-FRI" => "weekdays",
                _ => return None,
            };
            Some(format!("{days} at {h:02}:{m:02}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::in_words;

    #[test]
    fn common_expressions_read_as_words() {
        for (cron, words) in [
            ("* * * * * *", Some("every second")),
            ("*/10 * * * * *", Some("every 10 seconds")),
            ("* * * * *", Some("every minute")),
            ("0 * * * * *", Some("every minute")),
            ("*/5 * * * *", Some("every 5 minutes")),
            ("7 * * * *", Some("every hour at :07")),
            ("0 2 * * *", Some("every day at 02:00")),
            ("30 9 * * 1-5", Some("weekdays at 09:30")),
            ("0 30 9 * * *", Some("every day at 09:30")),
            ("@hourly", Some("every hour")),
            ("0 0 1 * *", None),
            ("15 10 * * 0,6", None),
        ] {
            assert_eq!(in_words(cron).as_deref(), words, "{cron}");
        }
    }
}
