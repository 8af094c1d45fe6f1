//! Cross-mission routes for operators: the approvals inbox and the registered workflows.

use crate::auth::Reader;
use crate::cursor::{trim_page, InboxCursor};
use crate::error::ApiError;
use crate::extract::Query;
use crate::missions::{limit_param, non_empty};
use crate::openapi::ParameterProblems;
use crate::views::{ApprovalInbox, ApprovalView, WorkflowList, WorkflowView};
use crate::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use hypercode_engine::store::{InboxPosition, WaitingApproval};
use serde::Deserialize;

/// Inbox page sizes. A larger `limit` is served as the largest page (not refused): a page
/// carries whole missions and approval messages, so its size is bounded, and a client that
/// asks for more simply follows `next_cursor`.
const INBOX_LIMIT_DEFAULT: i64 = 50;
const INBOX_LIMIT_MAX: i64 = 100;

/// The routes, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/approvals", get(approvals))
        .route("/api/v1/workflows", get(workflows))
}

#[derive(Debug, Deserialize)]
struct InboxParams {
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/approvals",
    tag = "operations",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, description = "Page size (default 50); a larger value than 100 is served as 100"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of waiting approvals, oldest request first", body = ApprovalInbox),
        ParameterProblems,
    ),
)]
/// `GET /api/v1/approvals`: the approval steps waiting for a decision, across live missions,
/// oldest request first, each with its mission (without steps), a page at a time.
async fn approvals(
    _: Reader,
    State(state): State<AppState>,
    Query(params): Query<InboxParams>,
) -> Result<axum::Json<ApprovalInbox>, ApiError> {
    let limit = inbox_limit(params.limit)?;
    let (waiting, next_cursor) = inbox_page(&state, params.cursor, limit).await?;
    Ok(axum::Json(ApprovalInbox {
        approvals: waiting.into_iter().map(ApprovalView::from).collect(),
        next_cursor,
    }))
}

/// The `limit` parameter: [`INBOX_LIMIT_DEFAULT`] when absent, at most [`INBOX_LIMIT_MAX`]
/// (a larger number is served as that); anything but a positive integer is a 400.
fn inbox_limit(raw: Option<String>) -> Result<i64, ApiError> {
    let clamped = raw.map(|raw| match raw.parse::<i64>() {
        Ok(asked) if asked > INBOX_LIMIT_MAX => INBOX_LIMIT_MAX.to_string(),
        _ => raw,
    });
    limit_param(clamped, INBOX_LIMIT_DEFAULT, INBOX_LIMIT_MAX)
}

/// One page of the approvals inbox after `cursor` (if given), and the next page's cursor (the
/// API's inbox and the dashboard's both read it through here).
pub(crate) async fn inbox_page(
    state: &AppState,
    cursor: Option<String>,
    limit: i64,
) -> Result<(Vec<WaitingApproval>, Option<String>), ApiError> {
    let after = non_empty(cursor)
        .map(|c| InboxCursor::decode(&c).map_err(|e| ApiError::InvalidParameter(e.to_string())))
        .transpose()?;
    // One row more than asked says whether another page exists without a count query.
    let mut waiting = state
        .engine
        .store()
        .waiting_approvals(after.map(|c| c.0), limit + 1)
        .await?;
    let next_cursor = trim_page(&mut waiting, limit, |last| {
        InboxCursor(InboxPosition::from(last)).encode()
    });
    Ok((waiting, next_cursor))
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
            internal: workflow.is_internal(),
        })
        .collect();
    axum::Json(WorkflowList { workflows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_pages_are_bounded() {
        let limit = |raw: Option<&str>| inbox_limit(raw.map(str::to_owned)).ok();
        assert_eq!(limit(None), Some(INBOX_LIMIT_DEFAULT));
        assert_eq!(limit(Some("")), Some(INBOX_LIMIT_DEFAULT));
        assert_eq!(limit(Some("7")), Some(7));
        assert_eq!(limit(Some("100")), Some(100));
        assert_eq!(limit(Some("500")), Some(INBOX_LIMIT_MAX));
        assert_eq!(limit(Some("9223372036854775807")), Some(INBOX_LIMIT_MAX));
        for bad in ["0", "-1", "ten", "1.5", "99999999999999999999"] {
            assert_eq!(limit(Some(bad)), None, "{bad}");
        }
    }
}
