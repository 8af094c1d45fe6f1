//! `GET /metrics`: the process's metrics in the Prometheus text format, without a key (on the
//! API's port, or on `HYPERCODE_METRICS_LISTEN` alone), and the middleware that times every
//! request by route and status. The fleet's gauges (queue depth, workers alive, live missions
//! by status, approvals waiting) are read when scraped, from Redis and PostgreSQL, so every api replica reports
//! the same numbers whichever worker did the work; the counters of the work itself come from
//! the processes that did it (see `hypercode_engine::metrics`).

use crate::workers::{WorkerState, REMEMBER};
use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use std::time::Instant;

/// Seconds to answer a request, by method, route (its pattern) and status.
pub const HTTP_DURATION: &str = "hypercode_http_request_duration_seconds";
/// Wake-ups waiting in Redis.
pub const QUEUE_DEPTH: &str = "hypercode_queue_depth";
/// Worker processes whose heartbeat is recent.
pub const WORKERS_ALIVE: &str = "hypercode_workers_alive";
/// Missions not finished, by status (`pending`, `running`, `waiting`).
pub const MISSIONS_LIVE: &str = "hypercode_missions_live";
/// Approval steps waiting for a person's decision.
pub const APPROVALS_WAITING: &str = "hypercode_approvals_waiting";

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Registers the descriptions of the API's metrics with the installed recorder.
pub fn describe() {
    use metrics::{describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer a request, by method, route and status"
    );
    describe_gauge!(QUEUE_DEPTH, "Wake-ups waiting in Redis");
    describe_gauge!(WORKERS_ALIVE, "Worker processes with a recent heartbeat");
    describe_gauge!(MISSIONS_LIVE, "Missions not finished, by status");
    describe_gauge!(APPROVALS_WAITING, "Approval steps waiting for a decision");
}

/// `/metrics` alone, for a listener of its own (`HYPERCODE_METRICS_LISTEN`).
pub fn router(state: AppState) -> Router {
    routes().with_state(state)
}

/// The route, relative to the root; served when the state has a metrics handle.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// `GET /metrics`.
async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = state.metrics.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let store = state.engine.store();
    match state.engine.queue_depth().await {
        Ok(depth) => metrics::gauge!(QUEUE_DEPTH).set(depth as f64),
        Err(e) => tracing::warn!(error = %e, "queue depth unreadable for /metrics"),
    }
    match store.workers(REMEMBER).await {
        Ok(workers) => {
            let now = Utc::now();
            let alive = workers
                .iter()
                .filter(|w| WorkerState::of(w, now) == WorkerState::Alive)
                .count();
            metrics::gauge!(WORKERS_ALIVE).set(alive as f64);
        }
        Err(e) => tracing::warn!(error = %e, "workers unreadable for /metrics"),
    }
    match store.backlog().await {
        Ok(backlog) => {
            for (status, count) in [
                ("pending", backlog.pending),
                ("running", backlog.running),
                ("waiting", backlog.waiting),
            ] {
                metrics::gauge!(MISSIONS_LIVE, "status" => status).set(count as f64);
            }
            metrics::gauge!(APPROVALS_WAITING).set(backlog.approvals as f64);
        }
        Err(e) => tracing::warn!(error = %e, "backlog unreadable for /metrics"),
    }
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], handle.render()).into_response()
}

/// Times the request; the route is the matched pattern (`/api/v1/missions/{id}`), so ids do
/// not make series of their own.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let began = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        HTTP_DURATION,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(began.elapsed().as_secs_f64());
    response
}
