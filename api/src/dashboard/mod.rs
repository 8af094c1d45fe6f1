//! Mission Control: the web dashboard served by `hypercode serve` beside the API.
//!
//! Pages are rendered on the server from askama templates (`api/templates`, compiled into the
//! binary and HTML-escaped by default), with one small stylesheet and one script
//! (`api/assets`). Nothing needs Node to build, and every page works without its script; the
//! script adds live updates and in-place actions:
//! - Each page marks its live parts (`data-slot`). When something changes (an event on the
//!   `/api/v1/events` stream, or a timer on the workers page) the script fetches the same URL
//!   with `HC-Fragment: 1`, gets only the live parts, and swaps those that changed, leaving
//!   alone a part that holds focus or typed text.
//! - Forms post as usual (303 back to a page); from the script, with `HC-Fragment: 1`, an
//!   action answers 204 and the page updates itself.
//!
//! Modules: `session` (sign-in, cookie, CSRF), `missions` (the list), `mission` (one mission,
//! its timeline and its actions), `timeline` (the Gantt layout, computed from the history),
//! `approvals` (the inbox), `workers` (workers and queues), `schedules` (cron schedules: pause,
//! resume, trigger), `incidents` (the healer's incidents and the live log), `accounts` (token
//! balances, ledgers and subscriptions, found with a search box), `submit` (the plan editor),
//! `command` (the command panel on the CognitiveUplink),
//! `format` (times, durations, JSON for people), `assets` (the stylesheet and the script).
//!
//! Every response carries a strict Content-Security-Policy (scripts and styles from this
//! origin only, no inline code), `no-store` caching, and frame and sniffing protections.

mod accounts;
mod approvals;
mod assets;
mod command;
mod format;
mod incidents;
mod mission;
mod missions;
mod schedules;
pub(crate) mod session;
mod submit;
mod timeline;
mod workers;

use crate::error::ApiError;
use crate::AppState;
use askama::Template;
use axum::extract::{FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use hypercode_engine::{StoreError, SubmitError};
use std::convert::Infallible;

/// The header the dashboard's script sends to get a page's live parts only.
const FRAGMENT_HEADER: &str = "hc-fragment";

/// The dashboard's routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(missions::index))
        .route("/login", post(session::login))
        .route("/logout", post(session::logout))
        .route("/missions/{id}", get(mission::show))
        .route("/missions/{id}/approvals/{step}", post(mission::decide))
        .route("/missions/{id}/{action}", post(mission::act))
        .route("/approvals", get(approvals::inbox))
        .route("/workers", get(workers::page))
        .route("/incidents", get(incidents::page))
        .route("/incidents/{id}/resolve", post(incidents::resolve))
        .route("/schedules", get(schedules::page))
        .route("/schedules/{name}/{action}", post(schedules::act))
        .route("/accounts", get(accounts::search))
        .route("/accounts/{account}", get(accounts::show))
        .route("/submit", get(submit::page).post(submit::submit))
        .route("/command", get(command::page))
        .route("/submit/check", post(submit::check))
        .route("/assets/{file}", get(assets::serve))
        .layer(middleware::from_fn(security_headers))
}

/// What every page's frame shows: who is signed in, the navigation, the CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Chrome {
    /// The page title.
    pub(crate) title: String,
    /// The signed-in key's name, `None` on the login and error pages.
    pub(crate) user: Option<String>,
    /// Its role (`admin`, `operator`, `viewer`).
    pub(crate) role: &'static str,
    /// Whether it may act (submit, decide, cancel, retry); buttons are shown only then.
    pub(crate) can_operate: bool,
    /// The token forms and scripts send back.
    pub(crate) csrf: String,
    /// Which navigation entry is current (`missions`, `approvals`, `schedules`, `workers`,
    /// `submit`).
    pub(crate) nav: &'static str,
    /// Versioned URLs of the stylesheet and the script.
    pub(crate) css: &'static str,
    pub(crate) js: &'static str,
}

impl Chrome {
    /// The frame of a signed-in page.
    pub(crate) fn new(
        session: &session::Session,
        title: impl Into<String>,
        nav: &'static str,
    ) -> Self {
        Self {
            title: title.into(),
            user: Some(session.principal.name.clone()),
            role: session.principal.role.as_str(),
            can_operate: session.can_operate(),
            csrf: session.csrf.clone(),
            nav,
            css: assets::stylesheet_url(),
            js: assets::script_url(),
        }
    }

    /// The frame of a page shown to nobody in particular (login, errors).
    pub(crate) fn signed_out(title: impl Into<String>, csrf: String) -> Self {
        Self {
            title: title.into(),
            user: None,
            role: "",
            can_operate: false,
            csrf,
            nav: "",
            css: assets::stylesheet_url(),
            js: assets::script_url(),
        }
    }
}

/// Whether the request asks for a page's live parts only (the script's refreshes and
/// in-place actions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fragment(pub(crate) bool);

impl<S: Send + Sync> FromRequestParts<S> for Fragment {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.headers.contains_key(FRAGMENT_HEADER)))
    }
}

/// A page, or a page's live parts when the script asked for those.
pub(crate) fn page_or_fragment(
    fragment: Fragment,
    page: &impl Template,
    live: &impl Template,
) -> Result<Response, PageError> {
    if fragment.0 {
        render(live)
    } else {
        render(page)
    }
}

/// The answer to a successful action: 204 for the script (the page updates itself from the
/// event stream), a redirect for a plain form.
pub(crate) fn done(fragment: Fragment, then: &str) -> Response {
    if fragment.0 {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Redirect::to(then).into_response()
    }
}

/// The registered workflows' names, sorted (for the pickers).
pub(crate) fn workflow_names(state: &AppState) -> Vec<String> {
    state.engine.registry().names().map(str::to_owned).collect()
}

/// Render a template as an HTML response.
pub(crate) fn render(template: &impl Template) -> Result<Response, PageError> {
    Ok(Html(template.render().map_err(ApiError::internal)?).into_response())
}

/// Why a dashboard request failed.
#[derive(Debug)]
pub(crate) enum PageError {
    /// No live session: sign in first, then come back to `next`.
    SignedOut {
        /// The path (and query) to return to.
        next: String,
    },
    /// Anything the API would answer with a problem: shown as an error page with the same
    /// status and explanation.
    Failed(ApiError),
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        Self::Failed(error)
    }
}

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> Self {
        Self::Failed(error.into())
    }
}

impl From<SubmitError> for PageError {
    fn from(error: SubmitError) -> Self {
        Self::Failed(error.into())
    }
}

impl From<sqlx::Error> for PageError {
    fn from(error: sqlx::Error) -> Self {
        Self::Failed(error.into())
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    detail: String,
    problems: Vec<crate::error::FieldError>,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::SignedOut { next } => {
                let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
                Redirect::to(&format!("/?next={next}")).into_response()
            }
            Self::Failed(error) => {
                error.log();
                let status = error.status();
                let page = ErrorPage {
                    chrome: Chrome::signed_out(error.title(), String::new()),
                    status: status.as_u16(),
                    detail: error.to_string(),
                    problems: error.field_errors().unwrap_or_default(),
                };
                match page.render() {
                    Ok(html) => (status, Html(html)).into_response(),
                    Err(e) => {
                        tracing::error!(error = %e, "the error page failed to render");
                        status.into_response()
                    }
                }
            }
        }
    }
}

/// Headers every dashboard response carries. The policy allows no inline script or style at
/// all, so even markup injected past the templates' escaping could not run anything.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::VARY, "hc-fragment, cookie"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Pages hold mission data; only the versioned assets may be cached.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A form body; a malformed one is an error page (400, or 415 when it is not a form at all)
/// rather than axum's plain-text rejection.
#[derive(Debug)]
pub(crate) struct FormBody<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequest<S> for FormBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = PageError;

    async fn from_request(request: Request, state: &S) -> Result<Self, PageError> {
        use axum::extract::rejection::FormRejection;
        match axum::Form::<T>::from_request(request, state).await {
            Ok(axum::Form(value)) => Ok(Self(value)),
            Err(FormRejection::InvalidFormContentType(e)) => {
                Err(ApiError::UnsupportedMediaType(e.body_text()).into())
            }
            Err(e) => Err(ApiError::InvalidParameter(e.body_text()).into()),
        }
    }
}
