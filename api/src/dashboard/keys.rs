//! The API keys page (`/keys`), for admins only: every key (name, role, creation, whether
//! revoked; never a secret, which is not stored), a form that creates one and shows its secret
//! once, on the answer to that form, and a revoke button per live key. The same operations as
//! `hypercode keys ...`, through [`crate::keys`].

use super::format::Moment;
use super::session::{NoFields, Session, SignedForm, SignedIn};
use super::{render, Chrome, PageError};
use crate::error::ApiError;
use crate::keys::{self, CreatedKey, Revocation, Role};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;

/// One key, as listed.
pub(crate) struct KeyRow {
    id: String,
    name: String,
    role: &'static str,
    created: Moment,
    revoked: Option<Moment>,
    /// The key this session signed in with (revoking it signs out).
    own: bool,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    roles: Vec<&'static str>,
    /// The key just created, with its secret: on this answer only.
    created: Option<CreatedKey>,
}

/// The create form.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateForm {
    #[serde(default)]
    name: String,
    role: Role,
}

/// Only an admin manages keys: anyone else gets a 403, the page included.
fn require_admin(session: &Session) -> Result<(), ApiError> {
    if session.principal.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "managing API keys requires the admin role; you are signed in as `{}` with the {} role",
            session.principal.name, session.principal.role
        )))
    }
}

/// `GET /keys`.
pub(crate) async fn page(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
) -> Result<Response, PageError> {
    require_admin(&session)?;
    listing(&state, &session, None).await
}

/// `POST /keys`: create a key; the answer is the page with its secret, shown this once (not a
/// redirect: a reload must not show it again, and the secret is never stored to show it
/// from).
pub(crate) async fn create(
    State(state): State<AppState>,
    SignedForm(session, form): SignedForm<CreateForm>,
) -> Result<Response, PageError> {
    require_admin(&session)?;
    let created = keys::create(&state.pool, form.name.trim(), form.role)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(key_id = %created.id, name = %created.name, role = %created.role, by = %session.principal.name, "API key created from the dashboard");
    listing(&state, &session, Some(created)).await
}

/// `POST /keys/{id}/revoke`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    SignedForm(session, NoFields {}): SignedForm<NoFields>,
) -> Result<Response, PageError> {
    require_admin(&session)?;
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::NotFound(format!("no API key has the id `{id}`")))?;
    match keys::revoke(&state.pool, id)
        .await
        .map_err(ApiError::from)?
    {
        Revocation::Revoked(name) => {
            tracing::info!(key_id = %id, name, by = %session.principal.name, "API key revoked from the dashboard");
        }
        Revocation::AlreadyRevoked(_) => {}
        Revocation::Unknown => {
            return Err(ApiError::NotFound(format!("no API key has the id `{id}`")).into());
        }
    }
    // Revoking one's own key ends the session: the redirect then leads to the login page.
    Ok(Redirect::to("/keys").into_response())
}

async fn listing(
    state: &AppState,
    session: &Session,
    created: Option<CreatedKey>,
) -> Result<Response, PageError> {
    let now = Utc::now();
    let keys = keys::list(&state.pool)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|k| KeyRow {
            id: k.id.to_string(),
            own: k.id == session.principal.key_id,
            name: k.name,
            role: k.role.as_str(),
            created: Moment::new(k.created_at, now),
            revoked: k.revoked_at.map(|t| Moment::new(t, now)),
        })
        .collect();
    render(&KeysPage {
        chrome: Chrome::new(session, "API keys", "keys"),
        keys,
        roles: Role::ALL.map(Role::as_str).to_vec(),
        created,
    })
}
