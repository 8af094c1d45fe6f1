//! The approvals inbox (`/approvals`): the steps waiting for a decision, oldest request first,
//! a page at a time, with their missions' context, decided from the list itself. Long messages
//! and inputs are cut short here; the mission's page shows them whole.

use super::format::{self, Moment};
use super::session::SignedIn;
use super::{page_or_fragment, Chrome, Fragment, PageError};
use crate::extract::Query;
use crate::operations::inbox_page;
use crate::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use hypercode_engine::store::WaitingApproval;

/// Requests shown on a page (deciding them brings the next ones in).
const INBOX_SIZE: i64 = 50;

/// Characters of a mission's input (as indented JSON) shown with a request.
const INPUT_PREVIEW_CHARS: usize = 2000;

/// One waiting approval.
pub(crate) struct Request {
    mission_id: String,
    short_id: String,
    workflow: String,
    step: String,
    message: Option<String>,
    /// Whether the message or the input was cut short (the mission's page has them whole).
    truncated: bool,
    requested: Moment,
    deadline: Option<Moment>,
    submitted: Moment,
    input: String,
}

impl Request {
    fn new(waiting: &WaitingApproval, now: chrono::DateTime<Utc>) -> Self {
        let (input, input_cut) = preview(format::json(&waiting.mission.input));
        Self {
            mission_id: waiting.mission.id.to_string(),
            short_id: format::short_id(waiting.mission.id),
            workflow: waiting.mission.workflow.clone(),
            step: waiting.step.clone(),
            message: waiting.message.as_deref().map(|m| {
                let shown = format::text(m);
                if waiting.message_truncated {
                    format!("{shown}…")
                } else {
                    shown
                }
            }),
            truncated: waiting.message_truncated || input_cut,
            requested: Moment::new(waiting.requested_at, now),
            deadline: waiting.deadline.map(|t| Moment::new(t, now)),
            submitted: Moment::new(waiting.mission.created_at, now),
            input,
        }
    }
}

/// `text` cut to [`INPUT_PREVIEW_CHARS`] (with an ellipsis), and whether it was cut.
fn preview(text: String) -> (String, bool) {
    match text.char_indices().nth(INPUT_PREVIEW_CHARS) {
        Some((end, _)) => (format!("{}…", &text[..end]), true),
        None => (text, false),
    }
}

/// What the inbox shows.
pub(crate) struct InboxView {
    requests: Vec<Request>,
    /// The next page's URL, when more requests are waiting.
    next_page: Option<String>,
    /// Whether this is a later page (so the first one is linked).
    paged: bool,
}

/// The inbox's query string.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct InboxQuery {
    #[serde(default)]
    cursor: String,
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
    Query(query): Query<InboxQuery>,
    fragment: Fragment,
) -> Result<Response, PageError> {
    let paged = !query.cursor.is_empty();
    let (waiting, next_cursor) = inbox_page(&state, Some(query.cursor), INBOX_SIZE).await?;
    let now = Utc::now();
    let view = InboxView {
        requests: waiting.iter().map(|w| Request::new(w, now)).collect(),
        next_page: next_cursor.map(|cursor| {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("cursor", &cursor)
                .finish();
            format!("/approvals?{query}")
        }),
        paged,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_inputs_are_cut_on_a_character_boundary() {
        assert_eq!(preview("short".to_owned()), ("short".to_owned(), false));
        let exact = "é".repeat(INPUT_PREVIEW_CHARS);
        assert_eq!(preview(exact.clone()), (exact, false));
        let (cut, was_cut) = preview("é".repeat(INPUT_PREVIEW_CHARS + 1));
        assert!(was_cut);
        assert_eq!(cut.chars().count(), INPUT_PREVIEW_CHARS + 1);
        assert!(cut.ends_with("é…"));
    }
}
