//! The missions list (`/`): newest first, filtered by status, workflow, a search (input or
//! idempotency key) and a date range, paged by keyset cursor, with the count of each status
//! above it, kept live by the event stream; operators select missions to cancel or retry them
//! at once (`POST /missions/bulk`). Signed out, `/` is the login page.

use super::format::{self, Moment};
use super::session::{self, SignedForm, SignedIn};
use super::waiting::WaitingFor;
use super::{done, page_or_fragment, workflow_names, Chrome, Fragment, PageError};
use crate::error::ApiError;
use crate::missions::{list_page, mission_id, ListParams};
use crate::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum_extra::extract::cookie::CookieJar;
use chrono::{NaiveDate, SecondsFormat, TimeDelta, Utc};
use hypercode_engine::store::{CurrentStep, MissionRecord};
use hypercode_engine::MissionStatus;
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
    /// The first day (`YYYY-MM-DD`, UTC) of the date range, inclusive.
    #[serde(default)]
    from: String,
    /// The last day of the date range, inclusive.
    #[serde(default)]
    to: String,
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
    /// The idempotency key it was submitted with: the name people give a mission.
    key: Option<String>,
    created: Moment,
    duration: String,
    /// Where a live mission's duration counts from, for the script to keep it current.
    live_since: Option<String>,
    /// The step it is at (or ended on).
    step: Option<String>,
    /// What a waiting mission waits for.
    waiting: Option<WaitingFor>,
    /// A failed or cancelled mission's reason, one line.
    reason: Option<String>,
    /// Whether bulk cancel / retry apply to it.
    live: bool,
    failed: bool,
}

impl Row {
    fn new(mission: &MissionRecord, step: Option<CurrentStep>, now: chrono::DateTime<Utc>) -> Self {
        let finished = mission.status.is_terminal();
        let until = if finished { mission.updated_at } else { now };
        Self {
            id: mission.id.to_string(),
            short_id: format::short_id(mission.id),
            workflow: mission.workflow.clone(),
            status: mission.status.as_str(),
            key: mission.idempotency_key.clone(),
            created: Moment::new(mission.created_at, now),
            duration: format::duration(until - mission.created_at),
            live_since: (!finished).then(|| {
                mission
                    .created_at
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
            }),
            waiting: WaitingFor::of(mission.status, step.as_ref(), now),
            step: step.map(|s| s.name),
            reason: mission.error.as_ref().map(format::failure),
            live: !finished,
            failed: mission.status == MissionStatus::Failed,
        }
    }
}

/// One status's count above the list, linking to the list filtered by it.
pub(crate) struct Count {
    status: &'static str,
    count: i64,
    href: String,
}

/// What the list shows.
pub(crate) struct ListView {
    rows: Vec<Row>,
    status: String,
    workflow: String,
    q: String,
    from: String,
    to: String,
    statuses: Vec<&'static str>,
    /// Missions per status under the other filters.
    counts: Vec<Count>,
    /// Their sum.
    total: i64,
    /// The filters as a query string (without status and cursor), for the links.
    filters: String,
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
    chrome: Chrome,
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
    let (created_after, created_before) = date_range(&query.from, &query.to)?;
    let (missions, next_cursor, filter) = list_page(
        &state,
        ListParams {
            status: Some(query.status.clone()),
            workflow: Some(query.workflow.clone()),
            q: Some(query.q.clone()),
            cursor: Some(query.cursor.clone()),
            limit: Some(PAGE_SIZE.to_owned()),
            created_after,
            created_before,
            ..ListParams::default()
        },
    )
    .await?;
    let store = state.engine.store();
    let ids: Vec<_> = missions.iter().map(|m| m.id).collect();
    let mut steps: HashMap<_, _> = store.current_steps(&ids).await?.into_iter().collect();
    let counted: HashMap<_, _> = store.status_counts(&filter).await?.into_iter().collect();
    let now = Utc::now();
    let filters: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("workflow", &query.workflow)
        .append_pair("q", &query.q)
        .append_pair("from", &query.from)
        .append_pair("to", &query.to)
        .finish();
    let next_page = next_cursor.map(|cursor| {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("status", &query.status)
            .append_pair("cursor", &cursor)
            .finish();
        format!("/?{filters}&{query}")
    });
    let counts: Vec<Count> = MissionStatus::ALL
        .iter()
        .map(|status| Count {
            status: status.as_str(),
            count: counted.get(status).copied().unwrap_or(0),
            href: format!("/?{filters}&status={}", status.as_str()),
        })
        .collect();
    let view = ListView {
        rows: missions
            .iter()
            .map(|m| Row::new(m, steps.remove(&m.id), now))
            .collect(),
        statuses: MissionStatus::ALL.map(MissionStatus::as_str).to_vec(),
        workflows: workflow_names(&state),
        total: counts.iter().map(|c| c.count).sum(),
        counts,
        filters,
        status: query.status,
        workflow: query.workflow,
        q: query.q,
        from: query.from,
        to: query.to,
        next_page,
        paged: !query.cursor.is_empty(),
    };
    let chrome = Chrome::new(&session, "Missions", "missions");
    page_or_fragment(
        fragment,
        &ListPage {
            chrome: chrome.clone(),
            v: &view,
        },
        &ListLive { chrome, v: &view },
    )
}

/// The date range's days (`YYYY-MM-DD`, UTC, both inclusive) as the list's
/// `created_after` / `created_before` times.
fn date_range(from: &str, to: &str) -> Result<(Option<String>, Option<String>), ApiError> {
    let day = |name: &str, raw: &str| -> Result<Option<NaiveDate>, ApiError> {
        if raw.is_empty() {
            return Ok(None);
        }
        NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| {
                ApiError::InvalidParameter(format!(
                    "`{name}` must be a date such as 2026-01-31; got `{raw}`"
                ))
            })
    };
    let start = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().to_rfc3339_opts(SecondsFormat::Secs, true))
    };
    let after = day("from", from)?.and_then(start);
    let before = day("to", to)?
        .and_then(|d| d.checked_add_signed(TimeDelta::days(1)))
        .and_then(start);
    Ok((after, before))
}

/// The bulk form: `action` (`cancel` or `retry`) and one `id` per selected mission.
type BulkForm = Vec<(String, String)>;

/// Most missions one bulk action takes: a page of the list.
const BULK_MAX: usize = 50;

/// `POST /missions/bulk`: cancel or retry the selected missions, one by one (each is its own
/// transaction, as from its page). Missions it does not apply to (already finished, not
/// failed) are left as they are and named in the answer, a 409 when any was.
pub(crate) async fn bulk(
    State(state): State<AppState>,
    fragment: Fragment,
    SignedForm(session, form): SignedForm<BulkForm>,
) -> Result<Response, PageError> {
    let field = |name: &'static str| {
        form.iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    session.require_operator()?;
    let action = field("action").next().unwrap_or_default();
    if action != "cancel" && action != "retry" {
        return Err(ApiError::InvalidParameter(format!(
            "`action` must be cancel or retry; got `{action}`"
        ))
        .into());
    }
    let ids = field("id").map(mission_id).collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(ApiError::InvalidParameter("select at least one mission".to_owned()).into());
    }
    if ids.len() > BULK_MAX {
        return Err(ApiError::InvalidParameter(format!(
            "at most {BULK_MAX} missions at once; {} were selected",
            ids.len()
        ))
        .into());
    }
    let by = &session.principal.name;
    let mut refused = Vec::new();
    for &id in &ids {
        let result = match action {
            "cancel" => state.engine.cancel(id, by).await.map(|_| ()),
            _ => state.engine.retry(id, by).await.map(|_| ()),
        };
        match result.map_err(ApiError::from) {
            Ok(()) => {}
            Err(ApiError::Conflict(why)) | Err(ApiError::NotFound(why)) => {
                refused.push(format!("{}: {why}", format::short_id(id)));
            }
            Err(other) => return Err(other.into()),
        }
    }
    tracing::info!(action, missions = ids.len(), refused = refused.len(), by = %by, "bulk action from the dashboard");
    if !refused.is_empty() {
        return Err(ApiError::Conflict(format!(
            "{action}: {} of {} missions done; not the others: {}",
            ids.len() - refused.len(),
            ids.len(),
            refused.join("; ")
        ))
        .into());
    }
    Ok(done(fragment, "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_ranges_include_both_days() {
        let range = date_range("2026-12-01", "2026-12-01").ok();
        assert_eq!(
            range,
            Some((
                Some("2026-12-01T00:00:00Z".to_owned()),
                Some("2026-12-02T00:00:00Z".to_owned())
            ))
        );
        assert_eq!(date_range("", "").ok(), Some((None, None)));
        assert!(date_range("yesterday", "").is_err());
        assert!(date_range("", "2026-13-01").is_err());
    }
}
