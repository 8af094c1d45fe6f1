//! Authentication, rate limiting and authorization.
//!
//! [`authenticate`] is the middleware of every route that needs a key: it looks the key up (on
//! every request: a revoked key fails at once, nothing is cached), takes a token from the key's
//! rate-limit bucket ([`crate::rate_limit`]) and leaves the [`Principal`] in the request's
//! extensions. The extractors [`Reader`] and [`Operator`] then check the role (403); a handler
//! that takes one cannot run for a caller without a live key (401), within its rate (429) and
//! with the right role. Should a route be reached without the middleware, the extractor
//! authenticates and rate-limits itself, so each request is authenticated exactly once.
//! Both run before the body and path are looked at, so an anonymous caller learns nothing
//! about which ids exist or what a valid body looks like.
//!
//! | role     | read missions, approvals inbox, workflows | submit, decide, cancel, retry | manage secrets |
//! |----------|-------------------------------------------|-------------------------------|----------------|
//! | admin    | yes                                       | yes                           | yes            |
//! | operator | yes                                       | yes                           | no             |
//! | agent    | no                                        | no                            | no             |
//! | viewer   | yes                                       | no                            | no             |
//!
//! Agents are automated callers: a key of role `agent` bound to an agent name (`keys create
//! --agent NAME`) may send that agent's heartbeats and signals to missions, and read (`GET` a
//! mission and its history) the missions its agent answered a step of; nothing else.
//!
//! The token economy: account reads follow the read column; awarding and spending tokens
//! directly is for admins and agents ([`Treasurer`]); checkout for operators and admins; shop
//! purchases for operators, admins and agents; the shop's item list for any key.
//!
//! A client address that keeps presenting wrong keys is refused with 429 before its keys are
//! looked up, until its failed-authentication bucket refills (see [`crate::rate_limit`]); the
//! dashboard's sign-in form counts the same way.
//!
//! A request without a key may instead carry a dashboard session cookie (see
//! `dashboard::session`), which is how the dashboard's own scripts read the API and follow the
//! event stream. Such a request acts with the session's key; if it changes anything it must
//! also carry the session's CSRF token in `X-CSRF-Token` and must not come from another origin.

use crate::dashboard::session;
use crate::error::ApiError;
use crate::keys::{self, Principal, Role};
use crate::rate_limit::Limited;
use crate::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, Extensions, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

/// The header carrying a bare key.
const API_KEY_HEADER: &str = "x-api-key";

/// Proof that the caller may read missions and their history (reads are not attributed, so
/// the key itself is not kept).
#[derive(Debug, Clone, Copy)]
pub struct Reader;

/// A caller allowed to change missions: submit, decide approvals, cancel, retry.
#[derive(Debug, Clone)]
pub struct Operator(pub Principal);

/// A caller allowed to administer the server: manage its server-side secrets.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

/// A caller allowed to send signals to missions: operators, admins and agents (an agent
/// reports what it observed by signalling the mission that waits for it).
#[derive(Debug, Clone)]
pub struct Signaller(pub Principal);

/// A caller allowed to read one mission: any reader, or an agent key for the missions its agent
/// answered a step of (`Some(agent)`: the handler checks that).
#[derive(Debug, Clone)]
pub struct MissionReader(pub Option<String>);

/// A caller allowed to send agent heartbeats: agent keys (for the agent they are bound to,
/// which the handler checks) and admins.
#[derive(Debug, Clone)]
pub struct Heartbeater(pub Principal);

/// A caller allowed to award and spend tokens directly: admins and agents (an agent charges
/// for the work it does).
#[derive(Debug, Clone)]
pub struct Treasurer(pub Principal);

/// Proof of a live key, whatever its role: for what every caller may see (the shop's items).
#[derive(Debug, Clone, Copy)]
pub struct AnyRole;

/// What a route does, for the role check: the one place that says which role may do what,
/// for API keys and the dashboard's sessions alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read missions, approvals and workflows.
    Read,
    /// Submit, decide, cancel and retry.
    Operate,
    /// Manage secrets.
    Administer,
    /// Send signals to missions; buy shop items.
    Signal,
    /// Report an agent's heartbeat.
    Heartbeat,
    /// Read one mission: readers any, agent keys their own.
    ReadOwn,
    /// Award and spend tokens directly.
    Tokens,
    /// See what any key may see.
    Any,
}

impl Access {
    /// Whether `role` may do this.
    pub(crate) fn allows(self, role: Role) -> bool {
        match self {
            Self::Read => matches!(role, Role::Admin | Role::Operator | Role::Viewer),
            Self::Operate => matches!(role, Role::Admin | Role::Operator),
            Self::Administer => role == Role::Admin,
            Self::Signal => matches!(role, Role::Admin | Role::Operator | Role::Agent),
            Self::Heartbeat => matches!(role, Role::Admin | Role::Agent),
            Self::ReadOwn => true,
            Self::Tokens => matches!(role, Role::Admin | Role::Agent),
            Self::Any => true,
        }
    }

    /// The roles to name in a 403, so the caller knows what key to ask for.
    pub(crate) fn required(self) -> &'static str {
        match self {
            Self::Read => "viewer, operator or admin",
            Self::Operate => "operator or admin",
            Self::Administer => "admin",
            Self::Signal => "operator, admin or agent",
            Self::Heartbeat => "agent or admin",
            Self::ReadOwn => "viewer, operator, admin or agent",
            Self::Tokens => "admin or agent",
            Self::Any => "admin, operator, agent or viewer",
        }
    }
}

/// The role extractors: each requires one [`Access`], and keeps the [`Principal`] (a tuple
/// struct over it) or only proves that the check passed (a unit struct).
macro_rules! role_extractors {
    ($($name:ident: $access:ident => $wrap:expr),* $(,)?) => {$(
        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, ApiError> {
                authorize(parts, state, Access::$access).await.map($wrap)
            }
        }
    )*};
}

role_extractors! {
    Reader: Read => |_| Reader,
    Operator: Operate => Operator,
    Admin: Administer => Admin,
    Signaller: Signal => Signaller,
    Heartbeater: Heartbeat => Heartbeater,
    Treasurer: Tokens => Treasurer,
    AnyRole: Any => |_| AnyRole,
}

impl FromRequestParts<AppState> for MissionReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = authorize(parts, state, Access::ReadOwn).await?;
        if Access::Read.allows(principal.role) {
            return Ok(Self(None));
        }
        match principal.agent {
            Some(agent) => Ok(Self(Some(agent))),
            None => Err(ApiError::Forbidden(format!(
                "this action requires the {} role, or an agent key bound to an agent; key `{}` has the {} role",
                Access::Read.required(),
                principal.name,
                principal.role
            ))),
        }
    }
}

/// Middleware: authenticate the request's key and apply its rate limit, once, before any
/// extractor runs; the [`Principal`] is left in the request's extensions.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = client_address(request.extensions());
    match admit(request.method(), request.headers(), client, &state).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

/// The live key presented in `headers`, or else the key of the request's dashboard session
/// (401 if neither), within its rate limit (429 if not). A presented key is only looked at if
/// the client's address is not refused for failing too often (429), and counts against the
/// address when it fails.
async fn admit(
    method: &Method,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    state: &AppState,
) -> Result<Principal, ApiError> {
    principal_of(
        state,
        headers,
        client,
        CookieUse::Request(method),
        "an API key is required; send `X-API-Key: <key>` or `Authorization: Bearer <key>`",
    )
    .await
}

/// What a request riding on the dashboard's session cookie must also show.
enum CookieUse<'a> {
    /// An API request of this method: a change (an unsafe method) must come from this server's
    /// origin with the session's CSRF token.
    Request(&'a Method),
    /// A WebSocket handshake: it must carry this server's `Origin`.
    Handshake,
}

/// The principal of the key presented in `headers`, or else of the request's dashboard session
/// used as `cookie` says (401 with `missing` if neither), within its rate limit (429 if not).
async fn principal_of(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    cookie: CookieUse<'_>,
    missing: &'static str,
) -> Result<Principal, ApiError> {
    let principal = match presented_key(headers).transpose() {
        Some(presented) => key_principal(state, client, presented).await?,
        None => {
            let session = session::from_headers(&state.pool, headers)
                .await?
                .ok_or(ApiError::Unauthorized(missing))?;
            match cookie {
                CookieUse::Request(method) if !method.is_safe() => {
                    session::check_origin(headers)?;
                    let token = headers
                        .get(session::CSRF_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    session.verify_csrf(token)?;
                }
                CookieUse::Request(_) => {}
                CookieUse::Handshake => {
                    if !headers.contains_key(header::ORIGIN) {
                        return Err(ApiError::Forbidden(
                            "a WebSocket opened with the dashboard's session must carry an Origin"
                                .to_owned(),
                        ));
                    }
                    session::check_origin(headers)?;
                }
            }
            session.principal
        }
    };
    rate_limit(state, &principal).await?;
    Ok(principal)
}

/// Who opens a WebSocket (`/ws/uplink`), judged before the upgrade: a key in `X-API-Key` or
/// `Authorization: Bearer`, or else the dashboard session's cookie, which is accepted only with
/// an `Origin` of this server (browsers always send one on a WebSocket handshake, and a page of
/// another origin must not ride on the cookie). The caller must be allowed to read missions, and
/// is rate-limited like any request.
pub(crate) async fn handshake(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    let principal = principal_of(
        state,
        headers,
        client,
        CookieUse::Handshake,
        "an API key or a dashboard session is required; send `X-API-Key: <key>` or `Authorization: Bearer <key>`",
    )
    .await?;
    if !Access::Read.allows(principal.role) {
        return Err(ApiError::Forbidden(format!(
            "the uplink requires the {} role; key `{}` has the {} role",
            Access::Read.required(),
            principal.name,
            principal.role
        )));
    }
    Ok(principal)
}

/// Whether `principal` may submit missions (an uplink `execute`).
pub(crate) fn may_operate(principal: &Principal) -> bool {
    Access::Operate.allows(principal.role)
}

/// The live key presented (or why the credentials are malformed), if `client` may try; a
/// failure counts against the address.
async fn key_principal(
    state: &AppState,
    client: Option<IpAddr>,
    presented: Result<&str, ApiError>,
) -> Result<Principal, ApiError> {
    check_address(state, client).await?;
    let outcome = match presented {
        Ok(key) => keys::authenticate(&state.pool, key)
            .await?
            .ok_or(ApiError::Unauthorized("the API key is invalid or revoked")),
        Err(malformed) => Err(malformed),
    };
    match outcome {
        Ok(principal) => Ok(principal),
        Err(failure) => Err(failed_attempt(state, client, failure).await),
    }
}

/// 429 if `client` failed to authenticate too often lately; checked before a presented key is
/// looked up.
pub(crate) async fn check_address(
    state: &AppState,
    client: Option<IpAddr>,
) -> Result<(), ApiError> {
    state
        .limiter
        .admits_address(client)
        .await
        .map_err(address_limited)
}

/// Count a failed authentication against `client`; the error to answer with is `failure`, or
/// a 429 if the address had no attempt left.
pub(crate) async fn failed_attempt(
    state: &AppState,
    client: Option<IpAddr>,
    failure: ApiError,
) -> ApiError {
    match state.limiter.failed_authentication(client).await {
        Ok(()) => failure,
        Err(limited) => address_limited(limited),
    }
}

fn address_limited(limited: Limited) -> ApiError {
    tracing::debug!(
        retry_after_s = limited.retry_after_s,
        "refused: too many failed authentications from this address"
    );
    ApiError::TooManyFailedAttempts {
        limit: limited.limit,
        burst: limited.burst,
        retry_after_s: limited.retry_after_s,
    }
}

/// The TCP peer's address, when the server was started with connection info (the binary is;
/// in-process tests are not, and are then never limited by address).
fn client_address(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip())
}

/// The client's address as an extractor (for the sign-in form); see [`client_address`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddress(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(client_address(&parts.extensions)))
    }
}

/// Take a token from the key's rate-limit bucket (429 when it is empty).
pub(crate) async fn rate_limit(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    state
        .limiter
        .check(principal)
        .await
        .map_err(|limited| ApiError::TooManyRequests {
            limit: limited.limit,
            burst: limited.burst,
            retry_after_s: limited.retry_after_s,
        })
}

async fn authorize(
    parts: &mut Parts,
    state: &AppState,
    access: Access,
) -> Result<Principal, ApiError> {
    let principal = match parts.extensions.get::<Principal>() {
        Some(principal) => principal.clone(),
        None => {
            let client = client_address(&parts.extensions);
            let principal = admit(&parts.method, &parts.headers, client, state).await?;
            parts.extensions.insert(principal.clone());
            principal
        }
    };
    if !access.allows(principal.role) {
        return Err(ApiError::Forbidden(format!(
            "this action requires the {} role; key `{}` has the {} role",
            access.required(),
            principal.name,
            principal.role
        )));
    }
    Ok(principal)
}

/// The key from `X-API-Key: <key>` or `Authorization: Bearer <key>` (`X-API-Key` wins if both
/// are sent); `None` if neither header is present.
fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    const MALFORMED: ApiError = ApiError::Unauthorized(
        "the credentials are malformed; send `X-API-Key: <key>` or `Authorization: Bearer <key>`",
    );
    if let Some(value) = headers.get(API_KEY_HEADER) {
        return value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| MALFORMED);
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| MALFORMED)?;
    // The scheme name is case-insensitive (RFC 9110, section 11.1).
    match value.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(key.trim())),
        _ => Err(MALFORMED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pairs: &[(&'static str, &str)]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = value.parse() {
                headers.insert(*name, value);
            }
        }
        presented_key(&headers).ok().flatten().map(str::to_owned)
    }

    #[test]
    fn keys_come_from_either_header() {
        assert_eq!(key(&[("x-api-key", "hc_a")]).as_deref(), Some("hc_a"));
        assert_eq!(
            key(&[("authorization", "Bearer hc_b")]).as_deref(),
            Some("hc_b")
        );
        assert_eq!(
            key(&[("authorization", "bearer  hc_c")]).as_deref(),
            Some("hc_c")
        );
        assert_eq!(key(&[("authorization", "Basic abc")]), None);
        assert_eq!(key(&[("authorization", "hc_d")]), None);
        assert_eq!(key(&[]), None);
    }

    #[test]
    fn only_operators_and_admins_operate() {
        assert!(Access::Read.allows(Role::Admin));
        assert!(Access::Read.allows(Role::Operator));
        assert!(Access::Read.allows(Role::Viewer));
        assert!(!Access::Read.allows(Role::Agent));
        for role in Role::ALL {
            // A 403 names the roles that would have been allowed.
            for access in [
                Access::Read,
                Access::Operate,
                Access::Administer,
                Access::Tokens,
                Access::Any,
            ] {
                assert_eq!(
                    access.allows(role),
                    access.required().contains(role.as_str()),
                    "{access:?} {role}"
                );
            }
        }
        assert!(Access::Operate.allows(Role::Admin));
        assert!(Access::Operate.allows(Role::Operator));
        assert!(!Access::Operate.allows(Role::Agent));
        assert!(!Access::Operate.allows(Role::Viewer));
    }
}
