//! `GET /api/v1/logs`: the newest entries of the log list (`hypercode:logs`), which the healer
//! (and any other component) writes to.

use crate::auth::Reader;
use crate::error::ApiError;
use crate::extract::Query;
use crate::incident_views::LogList;
use crate::missions::{limit_param, non_empty};
use crate::openapi::ParameterProblems;
use crate::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Entries returned when no `limit` is given.
const LIMIT_DEFAULT: i64 = 100;

/// The routes, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/logs", get(logs))
}

/// The query string, parsed by hand so errors name the parameter.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogParams {
    limit: Option<String>,
    source: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/logs",
    tag = "healer",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100)"),
        ("source" = Option<String>, Query, description = "Only entries of this source, e.g. `healer`"),
    ),
    responses(
        (status = 200, description = "Entries, newest first", body = LogList),
        ParameterProblems,
    ),
)]
/// `GET /api/v1/logs`: newest first.
async fn logs(
    _: Reader,
    State(state): State<AppState>,
    Query(params): Query<LogParams>,
) -> Result<axum::Json<LogList>, ApiError> {
    let limit = limit_param(
        params.limit,
        LIMIT_DEFAULT,
        hypercode_healer::logs::MAX_ENTRIES as i64,
    )?;
    let Some(sink) = &state.logs else {
        return Ok(axum::Json(LogList {
            entries: Vec::new(),
        }));
    };
    let entries = sink
        .read(
            usize::try_from(limit).unwrap_or(1),
            non_empty(params.source).as_deref(),
        )
        .await
        .map_err(|e| ApiError::NotReady {
            detail: format!("the log cannot be read: {e}"),
            checks: BTreeMap::from([("redis", "unreachable")]),
        })?;
    Ok(axum::Json(LogList { entries }))
}
