//! `/api/v1/schedules`: durable cron schedules. Viewers read them; operators and admins create,
//! change, pause, trigger and delete them. Every rule (the cron syntax, time zones, a valid input
//! for the workflow) is the engine's: typed body fields refuse a bad `name`, `cron`, `timezone`,
//! `overlap` or `catchup` with a 422 at that field, and the engine checks the workflow and input.

use crate::auth::{Operator, Reader};
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::openapi::{string_enum, JsonBodyProblems, NoSuchSchedule, ProblemDoc};
use crate::views::{ScheduleDetail, ScheduleList, ScheduleView, ScheduledMissionView, Triggered};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use hypercode_engine::schedule::cron::CronExpr;
use hypercode_engine::schedule::{Catchup, Overlap, ScheduleName, Zone};
use hypercode_engine::store::{NewSchedule, ScheduleChange};
use serde::Deserialize;
use serde_json::Value;
use utoipa::openapi::schema::Schema;

/// How many of its newest missions a schedule's page lists.
const RECENT_MISSIONS: i64 = 20;

/// The routes, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/schedules", post(create).get(list))
        .route(
            "/api/v1/schedules/{name}",
            get(show).patch(update).delete(delete),
        )
        .route("/api/v1/schedules/{name}/trigger", post(trigger))
}

/// A schedule's overlap policy, for the OpenAPI document.
pub(crate) fn overlap_schema() -> Schema {
    string_enum(Overlap::ALL.map(Overlap::as_str))
}

/// A schedule's catch-up policy, for the OpenAPI document.
pub(crate) fn catchup_schema() -> Schema {
    string_enum(Catchup::ALL.map(Catchup::as_str))
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

fn enabled_by_default() -> bool {
    true
}

/// A schedule to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleBody {
    /// Unique: 1 to 63 of a-z, 0-9, `_`, `.` and `-`, starting with a letter or digit.
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_.-]{0,62}$", example = "nightly")]
    name: ScheduleName,
    /// A cron expression: 5 fields (minute resolution), 6 fields (leading seconds) or a macro
    /// (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
    #[schema(value_type = String, example = "0 2 * * *")]
    cron: CronExpr,
    /// The IANA time zone the expression is read in.
    #[serde(default)]
    #[schema(value_type = String, default = "UTC", example = "Europe/Berlin")]
    timezone: Zone,
    /// The workflow each tick starts (internal workflows too).
    workflow: String,
    /// The workflow's input, checked against its input schema.
    #[serde(default = "empty_object")]
    input: Value,
    /// While an earlier mission of the schedule is live: `skip` the tick (counted), `allow` it,
    /// or `cancel_previous` and fire.
    #[serde(default)]
    #[schema(schema_with = overlap_schema)]
    overlap: Overlap,
    /// Ticks missed while no server ran: `once` (one mission for the latest), `skip` (none) or
    /// `all` (one per tick, at most 100).
    #[serde(default)]
    #[schema(schema_with = catchup_schema)]
    catchup: Catchup,
    /// Whether it fires.
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

/// A change to a schedule: the fields given are replaced. A new `cron` or `timezone`, or a
/// resume, moves the next tick to the first one from now.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SchedulePatch {
    /// A new cron expression.
    #[schema(value_type = Option<String>)]
    cron: Option<CronExpr>,
    /// A new time zone.
    #[schema(value_type = Option<String>)]
    timezone: Option<Zone>,
    /// A new input for the workflow.
    input: Option<Value>,
    /// A new overlap policy.
    #[schema(schema_with = overlap_schema)]
    overlap: Option<Overlap>,
    /// A new catch-up policy.
    #[schema(schema_with = catchup_schema)]
    catchup: Option<Catchup>,
    /// `false` pauses it, `true` resumes it.
    enabled: Option<bool>,
}

/// A name from the path; one that breaks the naming rule names no schedule.
fn schedule_name(name: &str) -> Result<ScheduleName, ApiError> {
    name.parse()
        .map_err(|_| ApiError::NotFound(format!("no schedule is named `{name}`")))
}

#[utoipa::path(
    post,
    path = "/api/v1/schedules",
    tag = "schedules",
    request_body = ScheduleBody,
    responses(
        (status = 201, description = "The schedule was created", body = ScheduleView),
        JsonBodyProblems,
        (status = 409, description = "A schedule with this name exists", content_type = "application/problem+json", body = ProblemDoc),
        (status = 422, description = "A bad `name`, `cron`, `timezone`, `overlap` or `catchup`, an unknown `workflow`, or an input the workflow refuses (under `/input`)", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `POST /api/v1/schedules`: 201 with the schedule.
async fn create(
    Operator(principal): Operator,
    State(state): State<AppState>,
    Json(body): Json<ScheduleBody>,
) -> Result<(StatusCode, axum::Json<ScheduleView>), ApiError> {
    let created = state
        .engine
        .create_schedule(NewSchedule {
            name: body.name,
            cron: body.cron,
            timezone: body.timezone,
            workflow: body.workflow,
            input: body.input,
            overlap: body.overlap,
            catchup: body.catchup,
            enabled: body.enabled,
        })
        .await?;
    tracing::info!(schedule = %created.spec.name, by = %principal.name, "schedule created");
    Ok((StatusCode::CREATED, axum::Json(created.into())))
}

#[utoipa::path(
    get,
    path = "/api/v1/schedules",
    tag = "schedules",
    responses((status = 200, description = "Every schedule, by name", body = ScheduleList)),
)]
/// `GET /api/v1/schedules`.
async fn list(
    _: Reader,
    State(state): State<AppState>,
) -> Result<axum::Json<ScheduleList>, ApiError> {
    let schedules = state.engine.store().schedules().await?;
    Ok(axum::Json(ScheduleList {
        schedules: schedules.into_iter().map(ScheduleView::from).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "The schedule with its newest missions", body = ScheduleDetail),
        NoSuchSchedule,
    ),
)]
/// `GET /api/v1/schedules/{name}`: the schedule, its skipped ticks and its newest missions.
async fn show(
    _: Reader,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ScheduleDetail>, ApiError> {
    let name = schedule_name(&name)?;
    let store = state.engine.store();
    let schedule = store
        .schedule(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule is named `{name}`")))?;
    let recent = store.schedule_missions(&name, RECENT_MISSIONS).await?;
    Ok(axum::Json(ScheduleDetail {
        schedule: schedule.into(),
        recent_missions: recent.into_iter().map(ScheduledMissionView::from).collect(),
    }))
}

#[utoipa::path(
    patch,
    path = "/api/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    request_body = SchedulePatch,
    responses(
        (status = 200, description = "The changed schedule", body = ScheduleView),
        NoSuchSchedule,
        JsonBodyProblems,
        (status = 422, description = "A bad field (its pointer names it), or an input the workflow refuses (under `/input`)", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `PATCH /api/v1/schedules/{name}`: change it; `{"enabled": false}` pauses it.
async fn update(
    Operator(principal): Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(patch): Json<SchedulePatch>,
) -> Result<axum::Json<ScheduleView>, ApiError> {
    let name = schedule_name(&name)?;
    let change = ScheduleChange {
        cron: patch.cron,
        timezone: patch.timezone,
        input: patch.input,
        overlap: patch.overlap,
        catchup: patch.catchup,
        enabled: patch.enabled,
    };
    let updated = state.engine.update_schedule(&name, change).await?;
    tracing::info!(schedule = %name, by = %principal.name, enabled = updated.spec.enabled, "schedule changed");
    Ok(axum::Json(updated.into()))
}

#[utoipa::path(
    delete,
    path = "/api/v1/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 204, description = "The schedule was deleted; its missions stay"),
        NoSuchSchedule,
    ),
)]
/// `DELETE /api/v1/schedules/{name}`.
async fn delete(
    Operator(principal): Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = schedule_name(&name)?;
    state.engine.store().delete_schedule(&name).await?;
    tracing::info!(schedule = %name, by = %principal.name, "schedule deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/schedules/{name}/trigger",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 201, description = "A mission of the schedule was started now, whatever its cron, `enabled` and `overlap`", body = Triggered),
        NoSuchSchedule,
    ),
)]
/// `POST /api/v1/schedules/{name}/trigger`: 201 `{"id"}` of the mission started now.
async fn trigger(
    Operator(principal): Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, axum::Json<Triggered>), ApiError> {
    let name = schedule_name(&name)?;
    let mission = state.engine.trigger_schedule(&name).await?;
    tracing::info!(schedule = %name, mission = %mission.id, by = %principal.name, "schedule triggered");
    Ok((
        StatusCode::CREATED,
        axum::Json(Triggered { id: mission.id }),
    ))
}
