//! The missions list (`/`): newest first, filtered by status, workflow and a search, paged by
//! keyset cursor, kept live by the event stream. Signed out, `/` is the login page.

use super::format::{self, Moment};
use super::session::{self, SignedIn};
use super::{page_or_fragment, workflow_names, Chrome, Fragment, PageError};
use crate::missions::{list_page, ListParams};
use crate::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum_extra::extract::cookie::CookieJar;
use chrono::Utc;
use hypercode_engine::store::MissionRecord;
use hypercode_engine::{redact, MissionStatus};
use serde::Deserialize;
use std::collections::HashMap;

/// Missions per page.
const PAGE_SIZE: &str = "50";

/// The list's query string (the same filters as `GET /api/v1/missions`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: String,
    /// Where the login page sends people after signing in.
    #[serde(default)]
    next: String,
}

/// One row.
pub(crate) struct Row {
    id: String,
    short_id: String,
    workflow: String,
    status: &'static str,
    created: Moment,
    duration: String,
    /// The step it is at (or ended on).
    step: Option<String>,
    /// A failed or cancelled mission's reason, one line.
    reason: Option<String>,
}

impl Row {
    fn new(mission: &MissionRecord, step: Option<String>, now: chrono::DateTime<Utc>) -> Self {
        let finished = mission.status.is_terminal();
        let until = if finished { mission.updated_at } else { now };
        Self {
            id: mission.id.to_string(),
            short_id: format::short_id(mission.id),
            workflow: mission.workflow.clone(),
            status: mission.status.as_str(),
            created: Moment::new(mission.created_at, now),
            duration: format::duration(until - mission.created_at),
            step,
            reason: mission.error.as_ref().map(|e| {
                e.get("message")
                    .and_then(|m| m.as_str())
                    .map_or_else(|| redact::value(e).to_string(), format::text)
            }),
        }
    }
}

/// What the list shows.
pub(crate) struct ListView {
    rows: Vec<Row>,
    status: String,
    workflow: String,
    q: String,
    statuses: Vec<&'static str>,
    workflows: Vec<String>,
    /// The next page's URL, filters kept.
    next_page: Option<String>,
    /// Whether this is a later page (a link back to the first is shown).
    paged: bool,
}

#[derive(Template)]
#[template(path = "missions.html")]
struct ListPage<'a> {
    chrome: Chrome,
    v: &'a ListView,
}

#[derive(Template)]
#[template(path = "missions_live.html")]
struct ListLive<'a> {
    v: &'a ListView,
}

/// `GET /`: the missions list, or the login page for a browser without a session.
pub(crate) async fn index(
    State(state): State<AppState>,
    signed_in: Result<SignedIn, PageError>,
    fragment: Fragment,
    jar: CookieJar,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let session = match signed_in {
        Ok(SignedIn(session)) => session,
        Err(PageError::SignedOut { .. }) => return session::login_page(jar, query.next, None),
        Err(other) => return Err(other),
    };
    let (missions, next_cursor) = list_page(
        &state,
        ListParams {
            status: Some(query.status.clone()),
            workflow: Some(query.workflow.clone()),
            q: Some(query.q.clone()),
            cursor: Some(query.cursor.clone()),
            limit: Some(PAGE_SIZE.to_owned()),
            ..ListParams::default()
        },
    )
    .await?;
    let ids: Vec<_> = missions.iter().map(|m| m.id).collect();
    let mut steps: HashMap<_, _> = state
        .engine
        .store()
        .current_steps(&ids)
        .await?
        .into_iter()
        .collect();
    let now = Utc::now();
    let next_page = next_cursor.map(|cursor| {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("status", &query.status)
            .append_pair("workflow", &query.workflow)
            .append_pair("q", &query.q)
            .append_pair("cursor", &cursor)
            .finish();
        format!("/?{query}")
    });
    let view = ListView {
        rows: missions
            .iter()
            .map(|m| Row::new(m, steps.remove(&m.id), now))
            .collect(),
        statuses: MissionStatus::ALL.map(MissionStatus::as_str).to_vec(),
        workflows: workflow_names(&state),
        status: query.status,
        workflow: query.workflow,
        q: query.q,
        next_page,
        paged: !query.cursor.is_empty(),
    };
    page_or_fragment(
        fragment,
        &ListPage {
            chrome: Chrome::new(&session, "Missions", "missions"),
            v: &view,
        },
        &ListLive { v: &view },
    )
}
