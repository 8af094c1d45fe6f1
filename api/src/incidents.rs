//! `/api/v1/incidents`: the healer's incidents. Viewers read them; operators resolve them, which
//! lets the healer act on an escalated container again.

use crate::auth::{Operator, Reader};
use crate::error::ApiError;
use crate::extract::{parse, Path, Query};
use crate::incident_views::IncidentList;
use crate::missions::{limit_param, non_empty};
use crate::openapi::{BodyTooLarge, MalformedJson, ParameterProblems, ProblemDoc};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use hypercode_healer::{
    Incident, IncidentFilter, IncidentId, IncidentStatus, IncidentStore, LogEntry, LogLevel,
};
use serde::Deserialize;

/// Incidents listed when no `limit` is given.
const LIST_LIMIT_DEFAULT: i64 = 100;
/// The most incidents one list returns.
const LIST_LIMIT_MAX: i64 = 500;

/// The routes, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/incidents", get(list))
        .route("/api/v1/incidents/{id}", get(show))
        .route("/api/v1/incidents/{id}/resolve", post(resolve))
}

/// The list's query string, parsed by hand so errors name the parameter.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    container: Option<String>,
    limit: Option<String>,
}

/// The optional body of `POST /api/v1/incidents/{id}/resolve`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveBody {
    /// Why it is resolved, for the log.
    comment: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    tag = "healer",
    params(
        ("status" = Option<String>, Query, description = "Only incidents in this status: open, healed, escalated or resolved"),
        ("container" = Option<String>, Query, description = "Only incidents of the container with this name, id or id prefix"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "At most this many (default 100)"),
    ),
    responses(
        (status = 200, description = "Incidents, newest first", body = IncidentList),
        ParameterProblems,
    ),
)]
/// `GET /api/v1/incidents`: newest first.
async fn list(
    _: Reader,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<IncidentList>, ApiError> {
    let status = non_empty(params.status)
        .map(|s| {
            s.parse::<IncidentStatus>()
                .map_err(|e| ApiError::InvalidParameter(format!("`status` {e}")))
        })
        .transpose()?;
    let limit = limit_param(params.limit, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    let filter = IncidentFilter {
        status,
        container: non_empty(params.container),
        limit: u32::try_from(limit).unwrap_or(1),
    };
    let incidents = IncidentStore::new(state.pool.clone()).list(&filter).await?;
    Ok(axum::Json(IncidentList { incidents }))
}

#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}",
    tag = "healer",
    params(("id" = uuid::Uuid, Path, description = "The incident's id")),
    responses(
        (status = 200, description = "The incident", body = Incident),
        (status = 400, description = "The id is not a UUID", content_type = "application/problem+json", body = ProblemDoc),
        (status = 404, description = "No such incident", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `GET /api/v1/incidents/{id}`.
async fn show(
    _: Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Incident>, ApiError> {
    let id = incident_id(&id)?;
    IncidentStore::new(state.pool.clone())
        .get(id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound(format!("incident {id} not found")))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/resolve",
    tag = "healer",
    params(("id" = uuid::Uuid, Path, description = "The incident's id")),
    request_body(content = Option<ResolveBody>, description = "Optional: a comment"),
    responses(
        (status = 200, description = "The incident, resolved; the healer may act on its container again", body = Incident),
        (status = 400, description = "The id is not a UUID, or the body is not JSON", content_type = "application/problem+json", body = ProblemDoc),
        (status = 404, description = "No such incident", content_type = "application/problem+json", body = ProblemDoc),
        (status = 409, description = "The incident is already resolved", content_type = "application/problem+json", body = ProblemDoc),
        MalformedJson,
        BodyTooLarge,
        (status = 422, description = "The body has the wrong shape; `errors` locates each problem", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `POST /api/v1/incidents/{id}/resolve`: the body (`{"comment": "..."}`) is optional.
async fn resolve(
    Operator(principal): Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Incident>, ApiError> {
    let id = incident_id(&id)?;
    let body: ResolveBody = match body.is_empty() {
        true => ResolveBody::default(),
        false => parse(&body)?,
    };
    let incident = resolve_incident(&state, id, &principal.name, body.comment).await?;
    Ok(axum::Json(incident))
}

/// Resolve an incident as `by` and say so in the log: what the API and the dashboard do.
pub(crate) async fn resolve_incident(
    state: &AppState,
    id: IncidentId,
    by: &str,
    comment: Option<String>,
) -> Result<Incident, ApiError> {
    let incident = IncidentStore::new(state.pool.clone())
        .resolve(id, by, comment.as_deref())
        .await?;
    tracing::info!(incident = %id, by, "incident resolved");
    if let Some(logs) = &state.logs {
        let message = format!(
            "incident of container {} resolved by {by}{}",
            incident.container_name,
            comment.map(|c| format!(": {c}")).unwrap_or_default()
        );
        let entry = LogEntry::healer(LogLevel::Info, message, &incident.container_name, Some(id));
        logs.alert(entry).await;
    }
    Ok(incident)
}

/// A path's `{id}`: not a UUID is a malformed request (400).
pub(crate) fn incident_id(raw: &str) -> Result<IncidentId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::InvalidParameter(format!("path parameter `id` must be a UUID: {e}")))
}
