//! `GET /healthz` and `GET /readyz`, for orchestrators and load balancers; neither needs a key.
//!
//! - `/healthz`: the process is up and serving. It checks nothing else, so a database outage
//!   does not get healthy API processes restarted.
//! - `/readyz`: the process can do its work now: PostgreSQL and Redis both answer within
//!   [`CHECK_TIMEOUT`]. A load balancer sends traffic elsewhere while it answers 503.

use crate::error::ApiError;
use crate::openapi::ProblemDoc;
use crate::AppState;
use axum::extract::State;
use serde_json::{json, Value};
use sqlx::Connection;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Longest each check may take: a dependency slower than this counts as down, and `/readyz`
/// answers within it (the checks run at once).
const CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

/// `GET /healthz`.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The process is up: `{\"status\": \"ok\"}`", body = Object)),
)]
pub(crate) async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// `GET /readyz`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "PostgreSQL and Redis both answer: `{\"status\": \"ok\", \"checks\": {\"database\": \"ok\", \"redis\": \"ok\"}}`", body = Object),
        (status = 503, description = "PostgreSQL or Redis does not answer; the problem's `checks` member says which (`{\"database\": \"unreachable\", \"redis\": \"ok\"}`)", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let database = check("database", async {
        let mut connection = state.pool.acquire().await?;
        connection.ping().await
    });
    let redis = check("redis", state.engine.queue_depth());
    let (database, redis) = tokio::join!(database, redis);
    let checks = [
        ("database", "PostgreSQL", database),
        ("redis", "Redis", redis),
    ];
    let states: BTreeMap<_, _> = checks
        .iter()
        .map(|(key, _, state)| (*key, *state))
        .collect();
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, _, state)| *state != "ok")
        .map(|(_, label, _)| *label)
        .collect();
    let verb = match down.len() {
        0 => return Ok(axum::Json(json!({ "status": "ok", "checks": states }))),
        1 => "does",
        _ => "do",
    };
    Err(ApiError::NotReady {
        detail: format!("not ready: {} {verb} not answer", down.join(" and ")),
        checks: states,
    })
}

/// `"ok"`, or `"unreachable"` (logged with the cause) when `probe` fails or takes longer than
/// [`CHECK_TIMEOUT`].
async fn check<T, E: std::fmt::Display>(
    name: &'static str,
    probe: impl Future<Output = Result<T, E>>,
) -> &'static str {
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(_)) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(check = name, error = %e, "readiness check failed");
            "unreachable"
        }
        Err(_) => {
            tracing::warn!(check = name, timeout = ?CHECK_TIMEOUT, "readiness check timed out");
            "unreachable"
        }
    }
}
