//! One mission (`/missions/{id}`): its state, the timeline of its attempts, each step's input,
//! output and error, and its full history; and the actions on it (decide a waiting approval
//! with a comment, cancel, retry), for operators and admins.

use super::format::{self, Moment};
use super::session::{NoFields, SignedForm, SignedIn};
use super::timeline::{Layout, Timeline};
use super::waiting::WaitingFor;
use super::{done, page_or_fragment, Chrome, Fragment, PageError};
use crate::error::ApiError;
use crate::missions::{find, mission_id, non_empty, Verdict};
use crate::AppState;
use askama::Template;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::Utc;
use hypercode_engine::store::{CurrentStep, StepRecord};
use hypercode_engine::{redact, Event, EventType, StepKind, StepStatus};
use serde::Deserialize;

/// History events the timeline is drawn from (from the start); a longer history is drawn up
/// to here, and says so.
const TIMELINE_EVENTS: i64 = 5000;

/// History rows per page of the table.
const HISTORY_PAGE: usize = 500;

/// A step, as the steps table shows it.
pub(crate) struct StepRow {
    name: String,
    kind: &'static str,
    status: &'static str,
    attempts: i32,
    started: Option<Moment>,
    finished: Option<Moment>,
    duration: Option<String>,
    wake: Option<Moment>,
    input: Option<String>,
    output: Option<String>,
    error: Option<String>,
}

impl StepRow {
    fn new(step: &StepRecord, now: chrono::DateTime<Utc>) -> Self {
        Self {
            name: step.name.clone(),
            kind: step.kind.as_str(),
            status: step.status.as_str(),
            attempts: step.attempts,
            started: step.started_at.map(|t| Moment::new(t, now)),
            finished: step.finished_at.map(|t| Moment::new(t, now)),
            duration: step
                .started_at
                .map(|s| format::duration(step.finished_at.unwrap_or(now) - s)),
            wake: step.wake_at.map(|t| Moment::new(t, now)),
            input: step.input.as_ref().map(format::json),
            output: step.output.as_ref().map(format::json),
            error: step.error.as_ref().map(format::json),
        }
    }
}

/// A waiting approval, with what the approver is asked.
pub(crate) struct Waiting {
    step: String,
    message: Option<String>,
    deadline: Option<Moment>,
}

/// One history row.
pub(crate) struct EventRow {
    seq: i64,
    at: Moment,
    kind: EventType,
    step: Option<String>,
    attempt: Option<i32>,
    data: Option<String>,
}

impl EventRow {
    fn new(event: &Event, now: chrono::DateTime<Utc>) -> Self {
        let empty = event.data.as_object().is_some_and(|o| o.is_empty());
        Self {
            seq: event.seq,
            at: Moment::new(event.at, now),
            kind: event.kind,
            step: event.step.clone(),
            attempt: event.attempt,
            data: (!empty).then(|| redact::value(&event.data).to_string()),
        }
    }
}

/// Everything the mission page shows.
pub(crate) struct MissionView {
    id: String,
    short_id: String,
    workflow: String,
    status: &'static str,
    created: Moment,
    updated: Moment,
    duration: String,
    /// Where a live mission's duration counts from, for the script to keep it current.
    live_since: Option<String>,
    /// What a waiting mission waits for.
    waiting_for: Option<WaitingFor>,
    cancel_requested: bool,
    idempotency_key: Option<String>,
    concurrency_key: Option<String>,
    /// The schedule that fired it, if one did.
    schedule: Option<String>,
    input: String,
    output: Option<String>,
    error: Option<String>,
    steps: Vec<StepRow>,
    waiting: Vec<Waiting>,
    can_cancel: bool,
    can_retry: bool,
    timeline: Timeline,
    /// The same, drawn for phones.
    timeline_narrow: Timeline,
    /// The timeline covers only the first [`TIMELINE_EVENTS`] events.
    timeline_truncated: bool,
    history: Vec<EventRow>,
    /// The URL of the next history page.
    history_next: Option<String>,
}

#[derive(Template)]
#[template(path = "mission.html")]
struct MissionPage<'a> {
    chrome: Chrome,
    v: &'a MissionView,
}

#[derive(Template)]
#[template(path = "mission_live.html")]
struct MissionLive<'a> {
    chrome: Chrome,
    v: &'a MissionView,
}

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ShowQuery {
    /// Show history events after this `seq`.
    #[serde(default)]
    history_after: Option<i64>,
}

/// `GET /missions/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    fragment: Fragment,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Result<Response, PageError> {
    let id = mission_id(&id)?;
    let mission = find(&state, id).await?;
    let store = state.engine.store();
    let journal = store.journal(id).await?;
    let events = store.history(id, 0, TIMELINE_EVENTS).await?;
    let now = Utc::now();
    let finished = mission.status.is_terminal();
    let end = if finished {
        events.last().map_or(mission.updated_at, |e| e.at)
    } else {
        now
    };
    let after = query.history_after.unwrap_or(0).max(0);
    let shown: Vec<Event> = if after == 0 {
        events.iter().take(HISTORY_PAGE).cloned().collect()
    } else {
        store.history(id, after, HISTORY_PAGE as i64).await?
    };
    let history_next = (shown.len() == HISTORY_PAGE)
        .then(|| {
            shown
                .last()
                .map(|e| format!("/missions/{id}?history_after={}", e.seq))
        })
        .flatten();
    let waiting = journal
        .iter()
        .filter(|s| s.kind == StepKind::Approval && s.status == StepStatus::Waiting)
        .map(|s| Waiting {
            step: s.name.clone(),
            message: s
                .input
                .as_ref()
                .and_then(|i| i.get("message"))
                .and_then(|m| m.as_str())
                .map(format::text),
            deadline: s.wake_at.map(|t| Moment::new(t, now)),
        })
        .collect();
    let view = MissionView {
        id: id.to_string(),
        short_id: format::short_id(id),
        workflow: mission.workflow.clone(),
        status: mission.status.as_str(),
        created: Moment::new(mission.created_at, now),
        updated: Moment::new(mission.updated_at, now),
        duration: format::duration(
            if finished { mission.updated_at } else { now } - mission.created_at,
        ),
        live_since: (!finished).then(|| {
            mission
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }),
        waiting_for: WaitingFor::of(
            mission.status,
            journal
                .last()
                .map(|s| CurrentStep {
                    name: s.name.clone(),
                    kind: s.kind,
                    status: s.status,
                    wake_at: s.wake_at,
                })
                .as_ref(),
            now,
        ),
        cancel_requested: mission.cancel_requested,
        idempotency_key: mission.idempotency_key.clone(),
        concurrency_key: mission.concurrency_key.clone(),
        schedule: mission.schedule.clone(),
        input: format::json(&mission.input),
        output: mission.output.as_ref().map(format::json),
        error: mission.error.as_ref().map(format::json),
        steps: journal
            .iter()
            .filter(|s| s.kind != StepKind::Compensation)
            .map(|s| StepRow::new(s, now))
            .collect(),
        waiting,
        can_cancel: !finished && !mission.cancel_requested,
        can_retry: mission.status == hypercode_engine::MissionStatus::Failed,
        timeline_truncated: events.len() as i64 == TIMELINE_EVENTS,
        timeline: Timeline::new(&events, end, Layout::WIDE),
        timeline_narrow: Timeline::new(&events, end, Layout::NARROW),
        history: shown.iter().map(|e| EventRow::new(e, now)).collect(),
        history_next,
    };
    let title = format!("Mission {}", view.short_id);
    let chrome = Chrome::new(&session, title, "missions");
    page_or_fragment(
        fragment,
        &MissionPage {
            chrome: chrome.clone(),
            v: &view,
        },
        &MissionLive { chrome, v: &view },
    )
}

/// An approver's form.
#[derive(Debug, Deserialize)]
pub(crate) struct DecideForm {
    decision: Verdict,
    #[serde(default)]
    comment: String,
}

/// `POST /missions/{id}/approvals/{step}`: approve or reject, signed with the session's key.
pub(crate) async fn decide(
    State(state): State<AppState>,
    fragment: Fragment,
    Path((id, step)): Path<(String, String)>,
    SignedForm(session, form): SignedForm<DecideForm>,
) -> Result<Response, PageError> {
    session.require_operator()?;
    let id = mission_id(&id)?;
    let decision = form.decision.signed(
        session.principal.name.clone(),
        non_empty(Some(form.comment.trim().to_owned())),
    );
    let approve = decision.approve;
    state.engine.decide(id, &step, decision).await?;
    tracing::info!(mission = %id, step, approve, by = %session.principal.name, "decision from the dashboard");
    Ok(done(fragment, &format!("/missions/{id}")))
}

/// The buttons' actions, the last segment of `/missions/{id}/{action}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    /// Request cancellation.
    Cancel,
    /// Re-run a failed mission.
    Retry,
}

/// `POST /missions/{id}/cancel` and `POST /missions/{id}/retry`.
pub(crate) async fn act(
    State(state): State<AppState>,
    fragment: Fragment,
    path: Result<Path<(String, Action)>, PathRejection>,
    SignedForm(session, NoFields {}): SignedForm<NoFields>,
) -> Result<Response, PageError> {
    // Any other action is no route at all, like any other unknown path.
    let Ok(Path((id, action))) = path else {
        return Err(ApiError::NotFound("no such route".to_owned()).into());
    };
    session.require_operator()?;
    let id = mission_id(&id)?;
    let by = &session.principal.name;
    match action {
        Action::Cancel => {
            state.engine.cancel(id, by).await?;
        }
        Action::Retry => {
            state.engine.retry(id, by).await?;
        }
    }
    Ok(done(fragment, &format!("/missions/{id}")))
}

/// History events per read of the export.
const EXPORT_PAGE: i64 = 1000;

/// `GET /missions/{id}/export`: the mission with its steps and its whole history as one JSON
/// document, downloaded as `mission-<id>.json` (the same views, redacted, as the API serves).
pub(crate) async fn export(
    State(state): State<AppState>,
    SignedIn(_): SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let id = mission_id(&id)?;
    let mission = find(&state, id).await?;
    let store = state.engine.store();
    let journal = store.journal(id).await?;
    let mut history = Vec::new();
    let mut after = 0;
    loop {
        let page = store.history(id, after, EXPORT_PAGE).await?;
        let full = page.len() as i64 == EXPORT_PAGE;
        after = page.last().map_or(after, |e| e.seq);
        history.extend(page.into_iter().map(crate::views::EventView::from));
        if !full {
            break;
        }
    }
    let document = serde_json::json!({
        "mission": crate::views::MissionDetail::new(mission, journal),
        "history": history,
    });
    let body = serde_json::to_vec_pretty(&document).map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"mission-{id}.json\""),
            ),
        ],
        body,
    )
        .into_response())
}
