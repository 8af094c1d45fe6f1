//! The mission routes: submit, show, list, decide an approval, cancel, retry, read the history.
//!
//! Handlers only translate HTTP to engine calls and back; every rule about missions (what a
//! valid input is, when a decision or a cancellation is allowed) lives in the engine, whose
//! errors become problem responses through `From` conversions.

use crate::auth::{MissionReader, Operator, Reader, Signaller};
use crate::cursor::{trim_page, Cursor};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::openapi::{
    BodyTooLarge, MalformedJson, MissionIdProblems, NoSuchMission, NotJson, ParameterProblems,
    ProblemDoc,
};
use crate::views::{EventView, HistoryPage, MissionDetail, MissionPage, MissionView};
use crate::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use hypercode_engine::store::{Decision, MissionQuery, MissionRecord};
use hypercode_engine::{MissionId, MissionStatus, Submission};
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument as _;

/// Mission list page sizes.
const LIST_LIMIT_DEFAULT: i64 = 50;
const LIST_LIMIT_MAX: i64 = 500;

/// History page sizes.
const HISTORY_LIMIT_DEFAULT: i64 = 1000;
const HISTORY_LIMIT_MAX: i64 = 10_000;

/// The routes, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/missions", post(submit).get(list))
        .route("/api/v1/missions/{id}", get(show))
        .route("/api/v1/missions/{id}/approvals/{step}", post(decide))
        .route("/api/v1/missions/{id}/cancel", post(cancel))
        .route("/api/v1/missions/{id}/retry", post(retry))
        .route("/api/v1/missions/{id}/signals/{name}", post(signal))
        .route("/api/v1/missions/{id}/history", get(history))
}

/// A mission to start.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitBody {
    /// The registered workflow to run (see `GET /api/v1/workflows`).
    workflow: String,
    /// The workflow's input, checked against its input schema.
    input: Value,
    /// Submitting again with the same key returns the first mission (200) instead of a new one.
    idempotency_key: Option<String>,
    /// Missions sharing a key (1 to 200 characters) run one at a time, in submission order:
    /// the others stay `pending` until the one before them finishes.
    #[schema(min_length = 1, max_length = 200)]
    concurrency_key: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/missions",
    tag = "missions",
    request_body = SubmitBody,
    responses(
        (status = 201, description = "The mission was created", body = MissionDetail),
        (status = 200, description = "A repeat of an idempotent submission: the first mission", body = MissionDetail),
        MalformedJson,
        (status = 409, description = "The idempotency key was used for a different submission", content_type = "application/problem+json", body = ProblemDoc),
        (status = 413, description = "The body or the mission input is too large", content_type = "application/problem+json", body = ProblemDoc),
        NotJson,
        (status = 422, description = "Wrong body shape, unknown workflow or invalid input; `errors` locates each problem", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `POST /api/v1/missions`: 201 for a new mission, 200 for a repeat of an idempotent submission.
async fn submit(
    Operator(principal): Operator,
    State(state): State<AppState>,
    Json(body): Json<SubmitBody>,
) -> Result<(StatusCode, axum::Json<MissionDetail>), ApiError> {
    // In a task of its own: once the insert is on its way, dropping this handler (the client
    // left, the request timed out) would not take it back, and the client would be told
    // "error" about a mission that exists. The task ends within the pool's acquire timeout and
    // the statement timeout that `serve` sets, well before the request timeout, so its outcome
    // is what the client is told.
    let engine = state.engine.clone();
    let submitted = tokio::spawn(
        async move {
            engine
                .submit_mission(Submission {
                    workflow: body.workflow,
                    input: body.input,
                    idempotency_key: body.idempotency_key,
                    concurrency_key: body.concurrency_key,
                })
                .await
        }
        .in_current_span(),
    )
    .await
    .map_err(ApiError::internal)??;
    let id = submitted.mission.id;
    tracing::Span::current().record("mission", tracing::field::display(id));
    if submitted.created {
        // The engine does not know who submitted; the audit trail gets it here.
        tracing::info!(mission = %id, by = %principal.name, "submission accepted");
    }
    // A new mission is answered as inserted, with no steps (a read would cost every submission
    // a round trip). A repeated one exists already, so the answer must say so: if its steps
    // cannot be read, it goes without them rather than as an error a client would retry into a
    // duplicate.
    let journal = if submitted.created {
        Vec::new()
    } else {
        match state.engine.store().journal(id).await {
            Ok(journal) => journal,
            Err(e) => {
                tracing::warn!(mission = %id, error = %e, "answering a submission without its steps");
                Vec::new()
            }
        }
    };
    Ok((
        crate::created_or_ok(submitted.created),
        axum::Json(MissionDetail::new(submitted.mission, journal)),
    ))
}

/// `GET /api/v1/missions/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/missions/{id}",
    tag = "missions",
    params(MissionPath),
    responses(
        (status = 200, description = "The mission with its steps", body = MissionDetail),
        MissionIdProblems,
    ),
)]
async fn show(
    MissionReader(agent): MissionReader,
    State(state): State<AppState>,
    MissionPath(id): MissionPath,
) -> Result<axum::Json<MissionDetail>, ApiError> {
    let mission = find(&state, id).await?;
    crate::agents::check_own(&state, id, agent.as_deref()).await?;
    Ok(axum::Json(detail(&state, mission).await?))
}

/// The list's query string; values are parsed by hand so errors name the parameter.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    pub(crate) status: Option<String>,
    pub(crate) workflow: Option<String>,
    pub(crate) concurrency_key: Option<String>,
    pub(crate) schedule: Option<String>,
    pub(crate) limit: Option<String>,
    pub(crate) cursor: Option<String>,
    pub(crate) created_after: Option<String>,
    pub(crate) created_before: Option<String>,
    pub(crate) q: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/missions",
    tag = "missions",
    params(
        ("status" = Option<String>, Query, description = "Only missions in this status: pending, running, waiting, succeeded, failed or cancelled"),
        ("workflow" = Option<String>, Query, description = "Only missions of this workflow"),
        ("concurrency_key" = Option<String>, Query, description = "Only missions with this concurrency key"),
        ("schedule" = Option<String>, Query, description = "Only missions fired by this schedule"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("created_after" = Option<String>, Query, format = DateTime, description = "Created at or after this RFC 3339 time"),
        ("created_before" = Option<String>, Query, format = DateTime, description = "Created before this RFC 3339 time"),
        ("q" = Option<String>, Query, description = "A case-insensitive substring of the input's JSON text or of the idempotency key"),
    ),
    responses(
        (status = 200, description = "A page of missions, newest first", body = MissionPage),
        ParameterProblems,
    ),
)]
/// `GET /api/v1/missions`: newest first, keyset-paginated. Filters combine: `status`,
/// `workflow`, `created_after` (inclusive) and `created_before` (exclusive), both RFC 3339, and
/// `q`, a case-insensitive substring of the input's JSON text.
async fn list(
    _: Reader,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<MissionPage>, ApiError> {
    let (missions, next_cursor, _) = list_page(&state, params).await?;
    Ok(axum::Json(MissionPage {
        missions: missions.into_iter().map(MissionView::from).collect(),
        next_cursor,
    }))
}

/// One page of the mission list for these parameters, and the cursor of the next page (the API
/// list and the dashboard's both read missions through here).
pub(crate) async fn list_page(
    state: &AppState,
    params: ListParams,
) -> Result<(Vec<MissionRecord>, Option<String>, MissionQuery), ApiError> {
    let limit = limit_param(params.limit, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    let status = non_empty(params.status)
        .map(|s| {
            s.parse::<MissionStatus>().map_err(|_| {
                ApiError::InvalidParameter(format!(
                    "`status` must be one of {}; got `{s}`",
                    MissionStatus::ALL.map(MissionStatus::as_str).join(", ")
                ))
            })
        })
        .transpose()?;
    let after = non_empty(params.cursor)
        .map(|c| Cursor::decode(&c).map_err(|e| ApiError::InvalidParameter(e.to_string())))
        .transpose()?;
    // One row more than asked says whether another page exists without a count query.
    let query = MissionQuery {
        status,
        workflow: non_empty(params.workflow),
        concurrency_key: non_empty(params.concurrency_key),
        schedule: non_empty(params.schedule),
        created_after: time_param("created_after", params.created_after)?,
        created_before: time_param("created_before", params.created_before)?,
        search: non_empty(params.q),
        after: after.map(|c| (c.created_at, c.id)),
        limit: limit + 1,
    };
    let mut missions = state.engine.store().list(&query).await?;
    let next_cursor = trim_page(&mut missions, limit, |m| {
        Cursor {
            created_at: m.created_at,
            id: m.id,
        }
        .encode()
    });
    Ok((missions, next_cursor, query))
}

/// An approver's verdict.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    /// Let the mission go on.
    Approve,
    /// Refuse: the mission fails and completed steps are compensated.
    Reject,
}

impl Verdict {
    /// The decision to record, signed with `by`.
    pub(crate) fn signed(self, by: String, comment: Option<String>) -> Decision {
        Decision {
            approve: self == Self::Approve,
            by,
            comment,
        }
    }
}

/// A decision on a waiting approval.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideBody {
    /// Approve or reject.
    decision: Verdict,
    /// Recorded with the decision.
    comment: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/missions/{id}/approvals/{step}",
    tag = "missions",
    params(
        ("id" = uuid::Uuid, Path, description = "The mission's id"),
        ("step" = String, Path, description = "The approval step's name"),
    ),
    request_body = DecideBody,
    responses(
        (status = 200, description = "The decision was recorded; the mission with its steps", body = MissionDetail),
        (status = 400, description = "The id is not a UUID, or the body is not valid JSON", content_type = "application/problem+json", body = ProblemDoc),
        (status = 404, description = "No such mission or approval step", content_type = "application/problem+json", body = ProblemDoc),
        (status = 409, description = "The approval is not waiting (already decided, or the mission is finished)", content_type = "application/problem+json", body = ProblemDoc),
        BodyTooLarge,
        NotJson,
        (status = 422, description = "The body has the wrong shape; `errors` locates each problem", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `POST /api/v1/missions/{id}/approvals/{step}`: decide a waiting approval; the decision is
/// signed with the key's name.
async fn decide(
    Operator(principal): Operator,
    State(state): State<AppState>,
    Path((id, step)): Path<(String, String)>,
    Json(body): Json<DecideBody>,
) -> Result<axum::Json<MissionDetail>, ApiError> {
    let id = mission_id(&id)?;
    let decision = body.decision.signed(principal.name, body.comment);
    state.engine.decide(id, &step, decision).await?;
    Ok(axum::Json(detail(&state, find(&state, id).await?).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/missions/{id}/cancel",
    tag = "missions",
    params(MissionPath),
    responses(
        (status = 202, description = "Cancellation was requested; compensations run on a worker", body = MissionDetail),
        MissionIdProblems,
        (status = 409, description = "The mission is already finished", content_type = "application/problem+json", body = ProblemDoc),
        BodyTooLarge,
    ),
)]
/// `POST /api/v1/missions/{id}/cancel`: 202, since compensations still have to run on a worker.
/// Any body is ignored.
async fn cancel(
    Operator(principal): Operator,
    State(state): State<AppState>,
    MissionPath(id): MissionPath,
) -> Result<(StatusCode, axum::Json<MissionDetail>), ApiError> {
    state.engine.cancel(id, &principal.name).await?;
    accepted(&state, id).await
}

#[utoipa::path(
    post,
    path = "/api/v1/missions/{id}/signals/{name}",
    tag = "missions",
    params(
        ("id" = uuid::Uuid, Path, description = "The mission's id"),
        ("name" = String, Path, description = "The signal's name: 1 to 100 of A-Z, a-z, 0-9, `_`, `-` and `.` (a plan's signal step waits for the signal named after it)"),
    ),
    request_body(content = Value, description = "Any JSON: the signal's payload"),
    responses(
        (status = 202, description = "The signal is kept for the mission, and delivered to its wait (now, or when the mission gets there)", body = MissionDetail),
        MissionIdProblems,
        (status = 409, description = "The mission is finished, or already received a signal of this name", content_type = "application/problem+json", body = ProblemDoc),
        BodyTooLarge,
    ),
)]
/// `POST /api/v1/missions/{id}/signals/{name}`: 202; the body is the payload. A signal may come
/// before the mission waits for it.
async fn signal(
    Signaller(principal): Signaller,
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    Json(payload): Json<Value>,
) -> Result<(StatusCode, axum::Json<MissionDetail>), ApiError> {
    let id = mission_id(&id)?;
    let valid = (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err(ApiError::InvalidParameter(format!(
            "a signal name is 1 to 100 of A-Z, a-z, 0-9, `_`, `-` and `.`; got `{name}`"
        )));
    }
    state.engine.signal(id, &name, payload).await?;
    tracing::info!(mission = %id, signal = %name, by = %principal.name, "signal sent");
    accepted(&state, id).await
}

#[utoipa::path(
    post,
    path = "/api/v1/missions/{id}/retry",
    tag = "missions",
    params(MissionPath),
    responses(
        (status = 202, description = "The mission will run again from its first failed step", body = MissionDetail),
        MissionIdProblems,
        (status = 409, description = "The mission is not `failed`", content_type = "application/problem+json", body = ProblemDoc),
        BodyTooLarge,
    ),
)]
/// `POST /api/v1/missions/{id}/retry`: re-run a failed mission from its first failed step; 202
/// (the work happens on a worker), 409 unless the mission is `failed`. Any body is ignored.
///
/// What is kept and what runs again: steps that succeeded and were not undone keep their
/// recorded output and do not run again. The first failed step runs again (status `pending`,
/// its attempt count continues, its last error stays on it and in the history); a rejected
/// approval is asked again (`waiting`, with a fresh deadline). Every step that was
/// `compensated` runs again too, since its effect was undone; its compensation entries leave
/// the journal, while their history events stay. The mission's error and output are cleared,
/// it becomes `pending`, and a `mission_retried` event records `{"by", "from_step"}`. A
/// mission stopped by nondeterminism (`HC001`) is retried the same way, against the code now
/// deployed.
async fn retry(
    Operator(principal): Operator,
    State(state): State<AppState>,
    MissionPath(id): MissionPath,
) -> Result<(StatusCode, axum::Json<MissionDetail>), ApiError> {
    state.engine.retry(id, &principal.name).await?;
    accepted(&state, id).await
}

#[derive(Debug, Deserialize)]
struct HistoryParams {
    after: Option<String>,
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/missions/{id}/history",
    tag = "missions",
    params(
        ("id" = uuid::Uuid, Path, description = "The mission's id"),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only events with a greater `seq` (default 0)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 10000, description = "Page size (default 1000)"),
    ),
    responses(
        (status = 200, description = "A page of the mission's history", body = HistoryPage),
        ParameterProblems,
        NoSuchMission,
    ),
)]
/// `GET /api/v1/missions/{id}/history`: events with `seq > after`, in order.
async fn history(
    MissionReader(agent): MissionReader,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HistoryParams>,
) -> Result<axum::Json<HistoryPage>, ApiError> {
    let id = mission_id(&id)?;
    crate::agents::check_own(&state, id, agent.as_deref()).await?;
    let limit = limit_param(params.limit, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX)?;
    let after = match non_empty(params.after) {
        None => 0,
        Some(after) => after
            .parse::<i64>()
            .ok()
            .filter(|a| *a >= 0)
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "`after` must be a non-negative integer (an event's seq); got `{after}`"
                ))
            })?,
    };
    // An unknown mission has an empty history too; only this check tells the two apart.
    find(&state, id).await?;
    let events = state.engine.store().history(id, after, limit).await?;
    Ok(axum::Json(HistoryPage {
        next_after: events.last().map(|e| e.seq),
        events: events.into_iter().map(EventView::from).collect(),
    }))
}

/// 202 with the mission as it is now: the work the request asked for happens on a worker.
async fn accepted(
    state: &AppState,
    id: MissionId,
) -> Result<(StatusCode, axum::Json<MissionDetail>), ApiError> {
    let mission = find(state, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(detail(state, mission).await?),
    ))
}

/// The mission with this id, or a 404.
pub(crate) async fn find(state: &AppState, id: MissionId) -> Result<MissionRecord, ApiError> {
    state
        .engine
        .store()
        .mission(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("mission {id} not found")))
}

/// A mission with its journal.
async fn detail(state: &AppState, mission: MissionRecord) -> Result<MissionDetail, ApiError> {
    let journal = state.engine.store().journal(mission.id).await?;
    Ok(MissionDetail::new(mission, journal))
}

/// The mission `{id}` of a route with no other path parameter, parsed by [`mission_id`]; in
/// OpenAPI, the parameter it reads.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
struct MissionPath(
    /// The mission's id
    #[param(value_type = uuid::Uuid)]
    MissionId,
);

impl<S: Send + Sync> FromRequestParts<S> for MissionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        mission_id(&raw).map(Self)
    }
}

/// A path's `{id}`: not a UUID is a malformed request (400), not a missing resource (404).
pub(crate) fn mission_id(raw: &str) -> Result<MissionId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::InvalidParameter(format!("path parameter `id` must be a UUID: {e}")))
}

/// An optional RFC 3339 timestamp parameter. A `+` offset sent unencoded arrives as a space
/// (form decoding), so a space is read back as `+`.
fn time_param(name: &str, raw: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = non_empty(raw) else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(&raw)
        .or_else(|e| DateTime::parse_from_rfc3339(&raw.replace(' ', "+")).map_err(|_| e))
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|e| {
            ApiError::InvalidParameter(format!(
                "`{name}` must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z; got `{raw}`: {e}"
            ))
        })
}

/// Empty query values (`?status=`) mean "not given", as HTML forms send them.
pub(crate) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

pub(crate) fn limit_param(raw: Option<String>, default: i64, max: i64) -> Result<i64, ApiError> {
    let Some(raw) = non_empty(raw) else {
        return Ok(default);
    };
    raw.parse::<i64>()
        .ok()
        .filter(|limit| (1..=max).contains(limit))
        .ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "`limit` must be an integer from 1 to {max}; got `{raw}`"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(limit_param(None, 50, 500).ok(), Some(50));
        assert_eq!(limit_param(Some(String::new()), 50, 500).ok(), Some(50));
        assert_eq!(limit_param(Some("500".into()), 50, 500).ok(), Some(500));
        for bad in ["0", "-1", "501", "ten", "1.5"] {
            let error = limit_param(Some(bad.into()), 50, 500);
            assert!(
                matches!(&error, Err(ApiError::InvalidParameter(d)) if d.contains("`limit`")),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let at = |raw: &str| time_param("created_after", Some(raw.to_owned()));
        assert_eq!(at("").ok(), Some(None));
        assert!(matches!(at("2026-11-26T02:00:00Z"), Ok(Some(_))));
        assert_eq!(
            at("2026-11-26T04:00:00+02:00").ok().flatten(),
            at("2026-11-26T02:00:00Z").ok().flatten()
        );
        assert_eq!(
            at("2026-11-26T04:00:00 02:00").ok().flatten(),
            at("2026-11-26T02:00:00Z").ok().flatten()
        );
        for bad in ["yesterday", "2026-11-26", "1764122400"] {
            assert!(
                matches!(&at(bad), Err(ApiError::InvalidParameter(d)) if d.contains("`created_after`")),
                "{bad}"
            );
        }
    }

    #[test]
    fn mission_ids_must_be_uuids() {
        assert!(mission_id("0190a7c4-7bde-7cc2-9a5e-3f1b2c3d4e5f").is_ok());
        assert!(matches!(
            mission_id("42"),
            Err(ApiError::InvalidParameter(d)) if d.contains("`id`")
        ));
    }
}
