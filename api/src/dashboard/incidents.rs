//! The incidents page (`/incidents`): the healer's incidents, open and escalated first, each
//! with its container, cause, attempts and heal missions and, for operators, a resolve button;
//! and a live log panel, filled from the log list and then fed by the log channel (the script
//! follows `/api/v1/logs/stream`).

use super::format::{self, Moment};
use super::session::{SignedForm, SignedIn};
use super::{done, page_or_fragment, Chrome, Fragment, PageError};
use crate::incidents::{incident_id, resolve_incident};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::Utc;
use hypercode_healer::{Incident, IncidentFilter, IncidentStatus, IncidentStore, LogEntry};
use serde::Deserialize;

/// Incidents shown.
const SHOWN: u32 = 200;

/// Log entries shown when the page loads.
const LOG_SHOWN: usize = 50;

/// How often the incidents refresh, in milliseconds.
const REFRESH_MS: u64 = 2000;

/// One incident, as shown.
pub(crate) struct Row {
    id: String,
    container: String,
    container_id: String,
    cause: &'static str,
    status: &'static str,
    attempts: u32,
    opened: Moment,
    updated: Moment,
    missions: Vec<(String, String)>,
    resolvable: bool,
}

impl Row {
    fn new(incident: &Incident, now: chrono::DateTime<Utc>) -> Self {
        Self {
            id: incident.id.to_string(),
            container: incident.container_name.clone(),
            container_id: incident.container_id.chars().take(12).collect(),
            cause: incident.cause.as_str(),
            status: incident.status.as_str(),
            attempts: incident.attempts,
            opened: Moment::new(incident.opened_at, now),
            updated: Moment::new(incident.updated_at, now),
            missions: incident
                .missions
                .iter()
                .map(|m| (m.to_string(), format::short_id(*m)))
                .collect(),
            resolvable: incident.status != IncidentStatus::Resolved,
        }
    }
}

/// One log entry, as shown.
pub(crate) struct LogLine {
    at: Moment,
    level: &'static str,
    source: String,
    message: String,
}

/// What the page shows.
pub(crate) struct IncidentsView {
    rows: Vec<Row>,
    log: Vec<LogLine>,
    /// Why the log could not be read, if it could not.
    log_error: Option<String>,
}

#[derive(Template)]
#[template(path = "incidents.html")]
struct IncidentsPage<'a> {
    chrome: Chrome,
    v: &'a IncidentsView,
    refresh_ms: u64,
}

#[derive(Template)]
#[template(path = "incidents_live.html")]
struct IncidentsLive<'a> {
    chrome: Chrome,
    v: &'a IncidentsView,
}

/// Open and escalated incidents need someone; they come first, each group newest first.
fn urgency(status: IncidentStatus) -> u8 {
    match status {
        IncidentStatus::Open | IncidentStatus::Escalated => 0,
        IncidentStatus::Healed | IncidentStatus::Resolved => 1,
    }
}

/// `GET /incidents`.
pub(crate) async fn page(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    fragment: Fragment,
) -> Result<Response, PageError> {
    let filter = IncidentFilter {
        limit: SHOWN,
        ..IncidentFilter::default()
    };
    let mut incidents = IncidentStore::new(state.pool.clone()).list(&filter).await?;
    // Stable: each group keeps the list's newest-first order.
    incidents.sort_by_key(|i| urgency(i.status));
    let (entries, log_error) = match &state.logs {
        Some(logs) => match logs.read(LOG_SHOWN, None).await {
            Ok(entries) => (entries, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
        None => (Vec::new(), None),
    };
    let now = Utc::now();
    let view = IncidentsView {
        rows: incidents.iter().map(|i| Row::new(i, now)).collect(),
        log: entries.iter().map(|e| log_line(e, now)).collect(),
        log_error,
    };
    let chrome = Chrome::new(&session, "Incidents", "incidents");
    page_or_fragment(
        fragment,
        &IncidentsPage {
            chrome: chrome.clone(),
            v: &view,
            refresh_ms: REFRESH_MS,
        },
        &IncidentsLive { chrome, v: &view },
    )
}

fn log_line(entry: &LogEntry, now: chrono::DateTime<Utc>) -> LogLine {
    LogLine {
        at: Moment::new(entry.at, now),
        level: entry.level.as_str(),
        source: entry.source.clone(),
        message: entry.message.clone(),
    }
}

/// The resolve button's form.
#[derive(Debug, Deserialize)]
pub(crate) struct ResolveForm {
    #[serde(default)]
    comment: String,
}

/// `POST /incidents/{id}/resolve`.
pub(crate) async fn resolve(
    State(state): State<AppState>,
    fragment: Fragment,
    Path(id): Path<String>,
    SignedForm(session, form): SignedForm<ResolveForm>,
) -> Result<Response, PageError> {
    session.require_operator()?;
    let id = incident_id(&id)?;
    let comment = Some(form.comment.trim().to_owned()).filter(|c| !c.is_empty());
    resolve_incident(&state, id, &session.principal.name, comment).await?;
    Ok(done(fragment, "/incidents"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_escalated_incidents_come_first() {
        let mut statuses = IncidentStatus::ALL.to_vec();
        statuses.reverse();
        statuses.sort_by_key(|s| urgency(*s));
        assert_eq!(
            statuses,
            [
                IncidentStatus::Escalated,
                IncidentStatus::Open,
                IncidentStatus::Resolved,
                IncidentStatus::Healed
            ]
        );
    }
}
