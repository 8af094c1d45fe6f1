//! `/api/v1/secrets`: the server-side secrets plans reference as `{{secrets.NAME}}`, managed by
//! admins. Values go in and never come out: the list shows names and times only, and the
//! workers read values straight from the store when a step makes its call.

use crate::auth::Admin;
use crate::error::{ApiError, FieldError};
use crate::extract::{Json, Path};
use crate::openapi::{JsonBodyProblems, ProblemDoc};
use crate::views::{SecretList, SecretView};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::Router;
use hypercode_engine::store::valid_secret_name;
use serde::Deserialize;

/// Largest accepted secret value, in bytes (UTF-8).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The routes, relative to the root.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/secrets", get(list))
        .route("/api/v1/secrets/{name}", put(set).delete(delete))
}

/// The body of `PUT /api/v1/secrets/{name}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretBody {
    /// The value, at most 64 KiB; it is never returned.
    value: String,
}

/// `name` if it is a valid secret name, else a 422 pointing at it (`/name`, the path
/// parameter).
fn checked_name(name: String) -> Result<String, ApiError> {
    if valid_secret_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::InvalidSecret(vec![FieldError::new(
            "/name",
            "a secret name is a letter or `_`, then up to 62 letters, digits or `_`",
        )]))
    }
}

#[utoipa::path(
    put,
    path = "/api/v1/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,62}$", description = "The secret's name")),
    request_body = SecretBody,
    responses(
        (status = 201, description = "The secret was created (its value is not returned)", body = SecretView),
        (status = 200, description = "The secret's value was replaced (its value is not returned)", body = SecretView),
        JsonBodyProblems,
        (status = 422, description = "A bad name (`/name`), a value over 64 KiB (`/value`) or a body of the wrong shape", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `PUT /api/v1/secrets/{name}`: set a secret; 201 when created, 200 when replaced.
async fn set(
    Admin(principal): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<SecretBody>,
) -> Result<(StatusCode, axum::Json<SecretView>), ApiError> {
    let name = checked_name(name)?;
    if body.value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::InvalidSecret(vec![FieldError::new(
            "/value",
            format!(
                "a secret is at most {MAX_SECRET_BYTES} bytes (UTF-8); this one is {}",
                body.value.len()
            ),
        )]));
    }
    let (info, created) = state.engine.store().put_secret(&name, &body.value).await?;
    tracing::info!(secret = %name, by = %principal.name, created, "secret set");
    Ok((
        crate::created_or_ok(created),
        axum::Json(SecretView::from(info)),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/secrets",
    tag = "secrets",
    responses(
        (status = 200, description = "Every secret's name and times, by name; never a value", body = SecretList),
    ),
)]
/// `GET /api/v1/secrets`: the secrets' names and times.
async fn list(_: Admin, State(state): State<AppState>) -> Result<axum::Json<SecretList>, ApiError> {
    let secrets = state.engine.store().secrets().await?;
    Ok(axum::Json(SecretList {
        secrets: secrets.into_iter().map(SecretView::from).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,62}$", description = "The secret's name")),
    responses(
        (status = 204, description = "The secret was deleted; a mission that still references it fails that step"),
        (status = 404, description = "No secret has this name", content_type = "application/problem+json", body = ProblemDoc),
        (status = 422, description = "Not a valid secret name (`/name`)", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
/// `DELETE /api/v1/secrets/{name}`.
async fn delete(
    Admin(principal): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = checked_name(name)?;
    if !state.engine.store().delete_secret(&name).await? {
        return Err(ApiError::NotFound(format!("secret `{name}` not found")));
    }
    tracing::info!(secret = %name, by = %principal.name, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}
