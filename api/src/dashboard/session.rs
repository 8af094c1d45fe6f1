//! Dashboard sessions: signing in with an API key, the session cookie, and CSRF protection.
//!
//! A person signs in once with an API key. The server answers with a random session token in
//! an `HttpOnly; SameSite=Strict` cookie (page scripts cannot read it, other sites cannot make
//! the browser send it) and stores only the token's SHA-256 in `sessions`, like API keys. A
//! session acts with its key's name and role, and it is looked up joined with its key on every
//! request, so revoking the key ends the key's sessions at once. Sessions last [`SESSION_TTL`].
//!
//! CSRF: beyond SameSite, every state-changing request must carry the session's synchronizer
//! token (the hidden `csrf` field of every form, or the `X-CSRF-Token` header from scripts),
//! compared in constant time, and a request whose `Origin` is another site is refused. The
//! login form has no session yet; it is protected the same way by a double-submit cookie
//! ([`LOGIN_COOKIE`]), so another site cannot sign a browser in with the attacker's key.

use super::{render, Chrome, FormBody, PageError};
use crate::auth::Access;
use crate::auth::{self, ClientAddress};
use crate::error::ApiError;
use crate::keys::{self, Principal, Role};
use crate::AppState;
use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::{Duration as TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "hc_session";

/// The login form's double-submit cookie.
const LOGIN_COOKIE: &str = "hc_login";

/// The header scripts send the CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// How long a session lasts; then the person signs in again.
const SESSION_TTL: TimeDelta = TimeDelta::hours(12);

/// A signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The key it signed in with.
    pub(crate) principal: Principal,
    /// The token its forms and scripts must send back.
    pub(crate) csrf: String,
}

impl Session {
    /// Whether the role may submit, decide, cancel and retry.
    pub(crate) fn can_operate(&self) -> bool {
        Access::Operate.allows(self.principal.role)
    }

    /// The 403 for a read-only session trying to act (the buttons are hidden, but the server
    /// decides).
    pub(crate) fn require_operator(&self) -> Result<(), ApiError> {
        if self.can_operate() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this action requires the {} role; you are signed in as `{}` with the {} role",
                Access::Operate.required(),
                self.principal.name,
                self.principal.role
            )))
        }
    }

    /// Check a presented CSRF token (constant time: it is a secret).
    pub(crate) fn verify_csrf(&self, presented: &str) -> Result<(), ApiError> {
        if bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(csrf_refused())
        }
    }
}

fn csrf_refused() -> ApiError {
    ApiError::Forbidden(
        "the request's CSRF token is missing or wrong; reload the page and try again".to_owned(),
    )
}

/// Start a session for a key; returns the cookie's token and the session. Expired sessions
/// are deleted on the way (an index range), so the table holds only live ones.
async fn open(pool: &PgPool, principal: Principal) -> Result<(String, Session), sqlx::Error> {
    let token = keys::random_secret::<32>();
    let csrf = keys::random_secret::<32>();
    let mut tx = pool.begin().await?;
    sqlx::query!("delete from sessions where expires_at < now()")
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "insert into sessions (token_hash, key_id, csrf, expires_at) values ($1, $2, $3, $4)",
        &keys::hash(&token)[..],
        principal.key_id,
        csrf,
        Utc::now() + SESSION_TTL,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((token, Session { principal, csrf }))
}

/// The live session of a cookie's token, with its key (none once the key is revoked).
async fn find(pool: &PgPool, token: &str) -> Result<Option<Session>, sqlx::Error> {
    let row = sqlx::query!(
        r#"
        select k.id, k.name, k.role as "role: Role", k.agent, s.csrf
        from sessions s join api_keys k on k.id = s.key_id
        where s.token_hash = $1 and s.expires_at > now() and k.revoked_at is null
        "#,
        &keys::hash(token)[..],
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| Session {
        principal: Principal {
            key_id: row.id,
            name: row.name,
            role: row.role,
            agent: row.agent,
        },
        csrf: row.csrf,
    }))
}

/// The session of the request's cookie, if it has a live one.
pub(crate) async fn from_headers(
    pool: &PgPool,
    headers: &HeaderMap,
) -> Result<Option<Session>, ApiError> {
    let jar = CookieJar::from_headers(headers);
    match jar.get(SESSION_COOKIE) {
        Some(cookie) => Ok(find(pool, cookie.value()).await?),
        None => Ok(None),
    }
}

/// Refuse a state-changing request sent from another origin. Browsers send `Origin` on every
/// cross-origin request and on same-origin POSTs; a request without it (a non-browser client)
/// is judged by its CSRF token alone.
pub(crate) fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let same = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .is_some_and(|(_, authority)| Some(authority) == host);
    if same {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "cross-origin requests may not change anything".to_owned(),
        ))
    }
}

/// A signed-in dashboard request, within its key's rate limit. Signed-out page loads are sent
/// to the login page (which brings them back afterwards).
#[derive(Debug, Clone)]
pub(crate) struct SignedIn(pub(crate) Session);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let Some(session) = from_headers(&state.pool, &parts.headers).await? else {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            return Err(PageError::SignedOut { next });
        };
        if parts.method != Method::GET && parts.method != Method::HEAD {
            check_origin(&parts.headers)?;
        }
        auth::rate_limit(state, &session.principal).await?;
        Ok(Self(session))
    }
}

/// A signed-in session's form post: the session (as [`SignedIn`] admits it) and the form (as
/// [`FormBody`] reads it) without its `csrf` field, which must be the session's token. Every
/// form a session posts comes through here, so no handler can leave the check out.
pub(crate) struct SignedForm<T>(pub(crate) Session, pub(crate) T);

/// A form of a button alone: nothing but its CSRF token.
#[derive(Debug, Deserialize)]
pub(crate) struct NoFields {}

impl<T: DeserializeOwned> FromRequest<AppState> for SignedForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, PageError> {
        let (mut parts, body) = request.into_parts();
        let SignedIn(session) = SignedIn::from_request_parts(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        let FormBody(mut pairs) =
            FormBody::<Vec<(String, String)>>::from_request(request, state).await?;
        let csrf = pairs
            .iter()
            .position(|(name, _)| name == "csrf")
            .map(|at| pairs.remove(at).1);
        session.verify_csrf(csrf.as_deref().unwrap_or_default())?;
        // The pairs came out of a form body and go back into one, so re-encoding cannot fail;
        // reading them as `T` is where a form of the wrong shape is refused.
        let fields = serde_urlencoded::to_string(&pairs)
            .map_err(|e| ApiError::InvalidParameter(e.to_string()))?;
        let form = serde_urlencoded::from_str(&fields).map_err(|e| {
            ApiError::InvalidParameter(format!("Failed to deserialize form body: {e}"))
        })?;
        Ok(Self(session, form))
    }
}

/// The login page.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    error: Option<String>,
}

/// Render the login page, with a fresh double-submit token in a cookie and in the form.
pub(crate) fn login_page(
    jar: CookieJar,
    next: String,
    error: Option<String>,
) -> Result<Response, PageError> {
    let token = keys::random_secret::<32>();
    let status = if error.is_some() {
        axum::http::StatusCode::UNAUTHORIZED
    } else {
        axum::http::StatusCode::OK
    };
    let page = render(&LoginPage {
        chrome: Chrome::signed_out("Sign in", token.clone()),
        next: safe_next(&next),
        error,
    })?;
    let jar = jar.add(cookie(LOGIN_COOKIE, token, "/login"));
    Ok((status, jar, page).into_response())
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    key: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: a valid key of a role that may read missions gets a session. A wrong key
/// counts against the client's address like a wrong API key (see [`crate::rate_limit`]).
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    jar: CookieJar,
    FormBody(form): FormBody<LoginForm>,
) -> Result<Response, PageError> {
    check_origin(&headers)?;
    let expected = jar.get(LOGIN_COOKIE).map(|c| c.value().to_owned());
    let same = expected.is_some_and(|e| bool::from(e.as_bytes().ct_eq(form.csrf.as_bytes())));
    if !same {
        return Err(csrf_refused().into());
    }
    // Decided before the session is opened, so that nothing can fail once it exists.
    let next = safe_next(&form.next);
    if let Err(limited) = auth::check_address(&state, client).await {
        return login_refused(jar, form.next, limited);
    }
    let principal = keys::authenticate(&state.pool, form.key.trim())
        .await
        .map_err(ApiError::from)?;
    let principal = match principal {
        Some(p) if Access::Read.allows(p.role) => p,
        Some(_) => return login_page(
            jar,
            form.next,
            Some(
                "Agent keys cannot sign in to the dashboard; use a viewer, operator or admin key."
                    .to_owned(),
            ),
        ),
        None => {
            let invalid = ApiError::Unauthorized("the key is not valid (or it was revoked)");
            let refusal = auth::failed_attempt(&state, client, invalid).await;
            return login_refused(jar, form.next, refusal);
        }
    };
    auth::rate_limit(&state, &principal).await?;
    let name = principal.name.clone();
    let (token, _) = open(&state.pool, principal).await?;
    tracing::info!(key = %name, "dashboard sign-in");
    let jar = jar
        .remove(Cookie::build(LOGIN_COOKIE).path("/login"))
        .add(cookie(SESSION_COOKIE, token, "/"));
    Ok((jar, Redirect::to(&next)).into_response())
}

/// The sign-in form again after a refused attempt, saying why, with the refusal's status: 401
/// for a wrong key, 429 with `Retry-After` once the address has failed too often.
fn login_refused(jar: CookieJar, next: String, refusal: ApiError) -> Result<Response, PageError> {
    let message = match &refusal {
        ApiError::TooManyFailedAttempts { retry_after_s, .. } => format!(
            "Too many failed sign-in attempts from your address; try again in {retry_after_s} s."
        ),
        _ => "That key is not valid (or it was revoked).".to_owned(),
    };
    let mut response = login_page(jar, next, Some(message))?;
    *response.status_mut() = refusal.status();
    if let ApiError::TooManyFailedAttempts { retry_after_s, .. } = refusal {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
    }
    Ok(response)
}

/// `POST /logout`: end the session (server side too: the token is deleted).
pub(crate) async fn logout(
    State(state): State<AppState>,
    jar: CookieJar,
    SignedForm(_, NoFields {}): SignedForm<NoFields>,
) -> Result<Response, PageError> {
    if let Some(cookie) = jar.get(SESSION_COOKIE) {
        sqlx::query!(
            "delete from sessions where token_hash = $1",
            &keys::hash(cookie.value())[..]
        )
        .execute(&state.pool)
        .await?;
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    Ok((jar, Redirect::to("/")).into_response())
}

/// A session-scoped cookie: `HttpOnly`, `SameSite=Strict`. `Secure` is left to the TLS
/// terminator's origin: browsers refuse `Secure` cookies over plain HTTP on other hosts than
/// localhost, and a dashboard behind a TLS proxy is only ever reached over HTTPS anyway.
fn cookie(name: &'static str, value: String, path: &'static str) -> Cookie<'static> {
    Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .same_site(SameSite::Strict)
        .build()
}

/// Where to go after signing in: `next` if a browser would read it as a path on this site,
/// else `/`, so the login form cannot be used to send people elsewhere.
///
/// Browsers follow the WHATWG URL standard: they drop tabs and newlines anywhere in a URL and
/// read `\` as `/`, so `/\t/evil.example` and `/\evil.example` are `//evil.example`, another
/// host. A value with a control character or a backslash is therefore refused outright (not
/// cleaned: a link that needs cleaning was not made by this site), and what is left must
/// resolve, against this site, to this site. The result is the resolved path, query and
/// fragment, percent-encoded as the URL standard serializes them: plain ASCII, which is always
/// a valid `Location` header.
fn safe_next(next: &str) -> String {
    const HOME: &str = "/";
    if !next.starts_with('/') || next.chars().any(|c| c.is_control() || c == '\\') {
        return HOME.to_owned();
    }
    let Ok(site) = url::Url::parse("http://hypercode.invalid/") else {
        return HOME.to_owned();
    };
    match site.join(next) {
        Ok(target) if target.origin() == site.origin() => {
            let mut local = target.path().to_owned();
            if let Some(query) = target.query() {
                local.push('?');
                local.push_str(query);
            }
            if let Some(fragment) = target.fragment() {
                local.push('#');
                local.push_str(fragment);
            }
            local
        }
        _ => HOME.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next("/missions/abc?x=1"), "/missions/abc?x=1");
        assert_eq!(safe_next("/approvals"), "/approvals");
        assert_eq!(safe_next("/?status=failed#top"), "/?status=failed#top");
        // Already percent-encoded text is kept as it is: the browser does not decode it.
        assert_eq!(safe_next("/%09/evil.example"), "/%09/evil.example");
        // Non-ASCII is percent-encoded, so the `Location` header is always valid.
        assert_eq!(safe_next("/missions?q=café"), "/missions?q=caf%C3%A9");
        assert_eq!(safe_next("/a b"), "/a%20b");
        for hostile in [
            "//evil.example/x",
            "https://evil.example/",
            "/\\evil.example",
            "\\/evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "\t//evil.example",
            "/\u{1}x",
            "/\u{7f}",
            "/\u{85}/evil.example",
            " //evil.example",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(safe_next(hostile), "/", "{hostile:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                *name,
                value
                    .parse()
                    .unwrap_or(header::HeaderValue::from_static("")),
            );
        }
        headers
    }

    #[test]
    fn cross_origin_changes_are_refused() {
        assert!(check_origin(&headers(&[("host", "hc.example:8080")])).is_ok());
        assert!(check_origin(&headers(&[
            ("host", "hc.example:8080"),
            ("origin", "https://hc.example:8080")
        ]))
        .is_ok());
        assert!(check_origin(&headers(&[
            ("host", "hc.example:8080"),
            ("origin", "https://evil.example")
        ]))
        .is_err());
        assert!(check_origin(&headers(&[("host", "hc.example"), ("origin", "null")])).is_err());
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let session = Session {
            principal: Principal {
                key_id: uuid::Uuid::nil(),
                name: "k".into(),
                role: Role::Viewer,
                agent: None,
            },
            csrf: "abc".into(),
        };
        assert!(session.verify_csrf("abc").is_ok());
        assert!(session.verify_csrf("abd").is_err());
        assert!(session.verify_csrf("").is_err());
        assert!(session.verify_csrf("abcd").is_err());
        assert!(session.require_operator().is_err());
    }
}
