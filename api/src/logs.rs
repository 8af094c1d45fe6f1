//! `GET /api/v1/logs`: the newest entries of the log list (`hypercode:logs`), which the healer
//! (and any other component) writes to; `GET /api/v1/logs/stream`: the entries published on the
//! log channel from now on, as Server-Sent Events (the dashboard's live log panel).

use crate::auth::Reader;
use crate::error::ApiError;
use crate::extract::Query;
use crate::incident_views::LogList;
use crate::missions::{limit_param, non_empty};
use crate::openapi::ParameterProblems;
use crate::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

/// Entries returned when no `limit` is given.
const LIMIT_DEFAULT: i64 = 100;

/// The routes, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/logs", get(logs))
        .route("/api/v1/logs/stream", get(stream))
}

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
        .map_err(unreachable)?;
    Ok(axum::Json(LogList { entries }))
}

/// The answer when the log cannot be reached.
fn unreachable(e: impl std::fmt::Display) -> ApiError {
    ApiError::NotReady {
        detail: format!("the log cannot be read: {e}"),
        checks: BTreeMap::from([("redis", "unreachable")]),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/logs/stream",
    tag = "healer",
    responses(
        (status = 200, description = "Server-Sent Events: one `log` event per entry published from now on, its `data` the entry as JSON", content_type = "text/event-stream", body = String),
    ),
)]
/// `GET /api/v1/logs/stream`: entries as they are published; the stream ends when the server
/// shuts down.
async fn stream(
    _: Reader,
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Some(sink) = &state.logs else {
        return Err(unreachable("no log is configured in this process"));
    };
    let entries = sink.follow().await.map_err(unreachable)?;
    let shutdown = state.shutdown.clone();
    let events = entries
        .map(|entry| {
            // Serializing strings, numbers and times cannot fail.
            let json = serde_json::to_string(&entry).unwrap_or_default();
            Ok(Event::default().event("log").data(json))
        })
        .take_until(async move { shutdown.cancelled_owned().await });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
