//! `GET /api/v1/workers`: the worker processes the dashboard's Workers page shows, as JSON, so
//! scripts and tests can see which workers are alive and how much each has done. It also owns
//! what "alive", "lost" and "stopped" mean ([`WorkerState`]), for the page and the API alike.

use crate::auth::Reader;
use crate::error::ApiError;
use crate::views::{WorkerList, WorkerView};
use crate::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, TimeDelta, Utc};
use hypercode_engine::store::WorkerRecord;
use hypercode_engine::WORKER_HEARTBEAT;
use serde::Serialize;
use std::time::Duration;

/// A worker whose last heartbeat is older than this (five missed beats) is lost.
const ALIVE_WITHIN: TimeDelta = TimeDelta::milliseconds(WORKER_HEARTBEAT.as_millis() as i64 * 5);
/// Gone workers stay listed this long, so a crash is visible after the fact.
pub(crate) const REMEMBER: Duration = Duration::from_secs(15 * 60);

/// Whether a worker process is beating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Its last heartbeat is recent.
    Alive,
    /// No heartbeat lately: killed, paused or cut off.
    Lost,
    /// Shut down cleanly.
    Stopped,
}

impl WorkerState {
    /// Its state at `now`, from whether it stopped and when it last beat.
    pub(crate) fn of(worker: &WorkerRecord, now: DateTime<Utc>) -> Self {
        if worker.stopped_at.is_some() {
            Self::Stopped
        } else if now - worker.heartbeat_at > ALIVE_WITHIN {
            Self::Lost
        } else {
            Self::Alive
        }
    }
}

/// The dashboard's name for it (`alive`, `lost`, `stopped`), also its badge's `data-status`.
impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Alive => "alive",
            Self::Lost => "lost",
            Self::Stopped => "stopped",
        })
    }
}

/// The routes, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/workers", get(workers))
}

#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "operations",
    responses(
        (status = 200, description = "The worker processes heard from in the last 15 minutes, oldest start first", body = WorkerList),
    ),
)]
/// `GET /api/v1/workers`: every worker process heard from lately, with its state, capacity,
/// current load and the wake-ups it has handled.
async fn workers(
    _: Reader,
    State(state): State<AppState>,
) -> Result<axum::Json<WorkerList>, ApiError> {
    let records = state.engine.store().workers(REMEMBER).await?;
    let now = Utc::now();
    Ok(axum::Json(WorkerList {
        workers: records
            .iter()
            .map(|w| WorkerView {
                id: w.beat.id.clone(),
                host: w.beat.host.clone(),
                state: WorkerState::of(w, now),
                concurrency: w.beat.concurrency,
                busy: w.running.len(),
                handled: w.beat.handled,
                started_at: w.beat.started_at,
                last_heartbeat: w.heartbeat_at,
            })
            .collect(),
    }))
}
