//! The approvals inbox (`/approvals`): every step waiting for a decision, oldest request
//! first, with its mission's context, decided from the list itself.

use super::format::{self, Moment};
use super::session::SignedIn;
use super::{page_or_fragment, Chrome, Fragment, PageError};
use crate::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use hypercode_engine::store::WaitingApproval;

/// Requests shown at once (the oldest; deciding them brings the next ones in).
const INBOX_SIZE: i64 = 200;

/// One waiting approval.
pub(crate) struct Request {
    mission_id: String,
    short_id: String,
    workflow: String,
    step: String,
    message: Option<String>,
    requested: Moment,
    deadline: Option<Moment>,
    submitted: Moment,
    input: String,
}

impl Request {
    fn new(waiting: &WaitingApproval, now: chrono::DateTime<Utc>) -> Self {
        Self {
            mission_id: waiting.mission.id.to_string(),
            short_id: format::short_id(waiting.mission.id),
            workflow: waiting.mission.workflow.clone(),
            step: waiting.step.clone(),
            message: waiting.message.as_deref().map(format::text),
            requested: Moment::new(waiting.requested_at, now),
            deadline: waiting.deadline.map(|t| Moment::new(t, now)),
            submitted: Moment::new(waiting.mission.created_at, now),
            input: format::json(&waiting.mission.input),
        }
    }
}

/// What the inbox shows.
pub(crate) struct InboxView {
    requests: Vec<Request>,
    /// More are waiting than shown.
    more: bool,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct InboxPage<'a> {
    chrome: Chrome,
    v: &'a InboxView,
}

#[derive(Template)]
#[template(path = "approvals_live.html")]
struct InboxLive<'a> {
    chrome: Chrome,
    v: &'a InboxView,
}

/// `GET /approvals`.
pub(crate) async fn inbox(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    fragment: Fragment,
) -> Result<Response, PageError> {
    let mut waiting = state
        .engine
        .store()
        .waiting_approvals(INBOX_SIZE + 1)
        .await?;
    let more = waiting.len() as i64 > INBOX_SIZE;
    waiting.truncate(INBOX_SIZE as usize);
    let now = Utc::now();
    let view = InboxView {
        requests: waiting.iter().map(|w| Request::new(w, now)).collect(),
        more,
    };
    let chrome = Chrome::new(&session, "Approvals", "approvals");
    page_or_fragment(
        fragment,
        &InboxPage {
            chrome: chrome.clone(),
            v: &view,
        },
        &InboxLive { chrome, v: &view },
    )
}
