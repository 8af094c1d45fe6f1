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
//! `workflows` (each workflow's input schema and a form generated from it), `keys` (API keys,
//! admins only), `waiting` (what a waiting mission waits for), `command` (the command panel on
//! the CognitiveUplink), `format` (times, durations, JSON for people), `assets` (the
//! stylesheet, script, favicon).
//!
//! Every response carries a strict Content-Security-Policy (scripts and styles from this
//! origin only, no inline code), `no-store` caching, and frame and sniffing protections.

mod accounts;
mod approvals;
mod assets;
mod command;
mod format;
mod incidents;
mod keys;
mod mission;
mod missions;
mod schedules;
pub(crate) mod session;
mod submit;
mod timeline;
mod waiting;
mod workers;
mod workflows;

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
        .route("/missions/bulk", post(missions::bulk))
        .route("/missions/{id}", get(mission::show))
        .route("/missions/{id}/export", get(mission::export))
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
        .route("/workflows", get(workflows::page))
        .route("/keys", get(keys::page).post(keys::create))
        .route("/keys/{id}/revoke", post(keys::revoke))
        .route("/workflows/{name}/start", post(workflows::start))
        .route("/submit/check", post(submit::check))
        .route("/assets/{file}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .route("/favicon.svg", get(assets::favicon))
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

/// An error page's content, kept on the response so [`html_errors`] can draw it again inside
/// the signed-in navigation.
#[derive(Debug, Clone)]
struct ErrorContent {
    status: StatusCode,
    title: String,
    detail: String,
    problems: Vec<crate::error::FieldError>,
}

impl ErrorContent {
    /// The page in `chrome` (its title is the problem's).
    fn render(self, mut chrome: Chrome) -> Response {
        chrome.title = self.title.clone();
        let status = self.status;
        let page = ErrorPage {
            chrome,
            status: status.as_u16(),
            detail: self.detail.clone(),
            problems: self.problems.clone(),
        };
        match page.render() {
            Ok(html) => {
                let mut response = (status, Html(html)).into_response();
                response.extensions_mut().insert(self);
                response
            }
            Err(e) => {
                tracing::error!(error = %e, "the error page failed to render");
                status.into_response()
            }
        }
    }

    /// The content of a problem document (`application/problem+json`).
    fn from_problem(status: StatusCode, body: &[u8]) -> Self {
        let problem: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |key: &str| problem[key].as_str().unwrap_or_default().to_owned();
        let problems = problem["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        crate::error::FieldError::new(
                            e["pointer"].as_str().unwrap_or_default(),
                            e["message"].as_str().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            status,
            title: Some(text("title"))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_owned()),
            detail: text("detail"),
            problems,
        }
    }
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
                let content = ErrorContent {
                    status: error.status(),
                    title: error.title().to_owned(),
                    detail: error.to_string(),
                    problems: error.field_errors().unwrap_or_default(),
                };
                content.render(Chrome::signed_out("", String::new()))
            }
        }
    }
}

/// Whether a request comes from a person's browser navigating (it asks for HTML), not from an
/// API client or the dashboard's script (which keep their problem documents and fragments).
fn wants_html(request: &Request) -> bool {
    let path = request.uri().path();
    let api = [
        "/api/",
        "/mcp",
        "/openapi.json",
        "/metrics",
        "/healthz",
        "/readyz",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix));
    let accepts_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    accepts_html && !api && !request.headers().contains_key(FRAGMENT_HEADER)
}

/// Errors a browser meets outside a page's own handler (an unknown path, a wrong method, a
/// body too large, a timeout) are problem documents; a browser gets them as the HTML error
/// page instead. Every error page, these and the pages' own, is drawn inside the navigation
/// when the browser has a session.
pub(crate) async fn html_errors(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let html = wants_html(&request);
    let headers = request.headers().clone();
    let response = next.run(request).await;
    let content = if let Some(content) = response.extensions().get::<ErrorContent>() {
        content.clone()
    } else if html && is_problem(&response) {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let content = ErrorContent::from_problem(status, &body);
        let mut page = content.render(chrome_for(&state, &headers).await);
        secure(page.headers_mut());
        return page;
    } else {
        return response;
    };
    match session::from_headers(&state.pool, &headers).await {
        Ok(Some(session)) => {
            // The page's own status and headers (security policy, cookies) stay.
            let (mut parts, _) = response.into_parts();
            let (_, body) = content.render(Chrome::new(&session, "", "")).into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, body)
        }
        _ => response,
    }
}

/// The frame of an error page: the signed-in navigation when there is a session.
async fn chrome_for(state: &AppState, headers: &axum::http::HeaderMap) -> Chrome {
    match session::from_headers(&state.pool, headers).await {
        Ok(Some(session)) => Chrome::new(&session, "", ""),
        _ => Chrome::signed_out("", String::new()),
    }
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == crate::error::PROBLEM_JSON.as_bytes())
}

/// Headers every dashboard response carries. The policy allows no inline script or style at
/// all, so even markup injected past the templates' escaping could not run anything.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    secure(response.headers_mut());
    response
}

/// Set the headers of [`security_headers`].
fn secure(headers: &mut axum::http::HeaderMap) {
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
