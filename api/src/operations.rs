//! Cross-mission routes for operators: the approvals inbox and the registered workflows.

use crate::auth::Reader;
use crate::error::ApiError;
use crate::extract::Query;
use crate::missions::limit_param;
use crate::openapi::ProblemDoc;
use crate::views::{ApprovalInbox, ApprovalView, WorkflowList, WorkflowView};
use crate::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// Inbox page sizes.
const INBOX_LIMIT_DEFAULT: i64 = 100;
const INBOX_LIMIT_MAX: i64 = 500;

/// The routes, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/approvals", get(approvals))
        .route("/api/v1/workflows", get(workflows))
}

#[derive(Debug, Deserialize)]
struct InboxParams {
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/approvals",
    tag = "operations",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 100)"),
    ),
    responses(
        (status = 200, description = "Waiting approvals, oldest request first", body = ApprovalInbox),
        (status = 400, description = "A parameter is invalid; the detail names it", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `GET /api/v1/approvals`: every approval step waiting for a decision, across live missions,
/// oldest request first, each with its mission (without steps).
async fn approvals(
    _: Reader,
    State(state): State<AppState>,
    Query(params): Query<InboxParams>,
) -> Result<axum::Json<ApprovalInbox>, ApiError> {
    let limit = limit_param(params.limit, INBOX_LIMIT_DEFAULT, INBOX_LIMIT_MAX)?;
    let waiting = state.engine.store().waiting_approvals(limit).await?;
    Ok(axum::Json(ApprovalInbox {
        approvals: waiting.into_iter().map(ApprovalView::from).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows",
    tag = "operations",
    responses(
        (status = 200, description = "The registered workflows", body = WorkflowList),
    ),
)]
/// `GET /api/v1/workflows`: the registered workflows with a JSON Schema of their input.
async fn workflows(_: Reader, State(state): State<AppState>) -> axum::Json<WorkflowList> {
    let registry = state.engine.registry();
    let workflows = registry
        .names()
        .filter_map(|name| registry.get(name))
        .map(|workflow| WorkflowView {
            name: workflow.name().to_owned(),
            input_schema: workflow.input_schema(),
        })
        .collect();
    axum::Json(WorkflowList { workflows })
}
