//! Every error the API returns, rendered as RFC 9457 problem details
//! (`application/problem+json`): `{"type", "title", "status", "detail", "errors"?}`.
//!
//! Handlers return `Result<_, ApiError>`; engine errors convert with `?`. Internal failures are
//! logged here and answered with a generic detail, so no database message reaches a client.

use crate::keys::KeyError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hypercode_engine::{DatabaseError, StoreError, SubmitError, NUL_MESSAGE};
use serde::Serialize;
use std::collections::BTreeMap;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Problem `type` URIs are this followed by a slug (`.../not-found`).
const TYPE_BASE: &str = "https://hypercode.dev/problems/";

/// One located problem in a request body; `pointer` is an RFC 6901 pointer into the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where, e.g. `/input/steps/0/name`.
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

impl FieldError {
    /// A problem at `pointer`.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// Why a request failed. The `Display` text is the problem's `detail`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No key, or one that is unknown, malformed or revoked.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The key's role does not allow the action.
    #[error("{0}")]
    Forbidden(String),
    /// No such route, mission or step.
    #[error("{0}")]
    NotFound(String),
    /// The route exists, but not for this method.
    #[error("this method is not allowed on this resource")]
    MethodNotAllowed,
    /// A path or query parameter could not be parsed; the detail names it.
    #[error("{0}")]
    InvalidParameter(String),
    /// The body is not JSON (syntax error, truncated, trailing data); the detail has the position.
    #[error("{0}")]
    MalformedJson(String),
    /// The body could not be read at all (the connection failed mid-body).
    #[error("{0}")]
    UnreadableBody(String),
    /// The body is not declared as JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is JSON of the wrong shape (a wrong type, an unknown or missing field).
    #[error("the request body does not have the expected shape")]
    InvalidBody(Vec<FieldError>),
    /// The named workflow is not registered.
    #[error("no workflow is registered under `{0}`")]
    UnknownWorkflow(String),
    /// The workflow refused the mission's input.
    #[error("the workflow refused the input")]
    InvalidInput(Vec<FieldError>),
    /// A secret's name or value is not acceptable; `errors` locates each problem (`/name` is
    /// the path parameter, `/value` the body's member).
    #[error("the secret was refused")]
    InvalidSecret(Vec<FieldError>),
    /// An agent registration is not acceptable; `errors` locates each problem.
    #[error("the agent was refused")]
    InvalidAgent(Vec<FieldError>),
    /// The body (or the mission input in it) is over a size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request conflicts with the current state (a decided approval, a finished mission, a
    /// reused idempotency key).
    #[error("{0}")]
    Conflict(String),
    /// A debit larger than the account's balance; nothing was written.
    #[error("{0}")]
    InsufficientTokens(String),
    /// A webhook delivery whose `Stripe-Signature` is missing, malformed, wrong or stale, or
    /// whose verified body is not a Stripe event; nothing was stored.
    #[error("{0}")]
    InvalidSignature(String),
    /// Payments (Stripe) are not configured on this server.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// Stripe refused a request or could not be reached; the detail is Stripe's message.
    #[error("{0}")]
    Stripe(String),
    /// The key's rate limit is exhausted; `retry_after_s` (at least 1) is the `Retry-After`.
    #[error(
        "this API key may make {limit} requests per second (bursts of {burst}); retry in {retry_after_s} s"
    )]
    TooManyRequests {
        /// Sustained requests per second allowed to the key.
        limit: u32,
        /// The bucket's size.
        burst: u64,
        /// Whole seconds until a request will be accepted again.
        retry_after_s: u64,
    },
    /// Too many failed authentications came from the client's address; `retry_after_s` (at
    /// least 1) is the `Retry-After`.
    #[error(
        "too many failed authentication attempts from this address (at most {limit} per second, bursts of {burst}); retry in {retry_after_s} s"
    )]
    TooManyFailedAttempts {
        /// Failed attempts per second allowed to an address.
        limit: u32,
        /// The bucket's size.
        burst: u64,
        /// Whole seconds until the address may try again.
        retry_after_s: u64,
    },
    /// The client stopped sending its request body before it was complete.
    #[error("{0}")]
    BodyTimeout(String),
    /// The request took longer than the server allows.
    #[error("the request took too long to process")]
    Timeout,
    /// The database cannot take requests right now: unreachable, out of connections, or too
    /// slow (see [`DatabaseError::is_unavailable`]).
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(#[source] DatabaseError),
    /// A service this process depends on does not answer (`GET /readyz`); `checks` has each
    /// one's state, and the problem carries it as an extension member of the same name.
    #[error("{detail}")]
    NotReady {
        /// Which dependencies are down, in words.
        detail: String,
        /// `{"database": "ok" | "unreachable", "redis": ...}`.
        checks: BTreeMap<&'static str, &'static str>,
    },
    /// Anything else: a bug or an infrastructure fault. Logged, never shown.
    #[error("an internal error occurred")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The serialized body.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<&'a BTreeMap<&'static str, &'static str>>,
}

impl ApiError {
    /// Wrap an unexpected failure (logged when rendered).
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(error.into())
    }

    /// The status, the `type` slug and the `title`: the one place each error's class is decided.
    fn class(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::InvalidParameter(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-parameter",
                "Invalid parameter",
            ),
            Self::MalformedJson(_) => (
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON body",
            ),
            Self::UnreadableBody(_) => (
                StatusCode::BAD_REQUEST,
                "unreadable-body",
                "Unreadable request body",
            ),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Self::InvalidBody(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Invalid request body",
            ),
            Self::UnknownWorkflow(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-workflow",
                "Unknown workflow",
            ),
            Self::InvalidInput(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-input",
                "Invalid mission input",
            ),
            Self::InvalidSecret(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-secret",
                "Invalid secret",
            ),
            Self::InvalidAgent(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-agent",
                "Invalid agent",
            ),
            Self::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::InsufficientTokens(_) => (
                StatusCode::CONFLICT,
                "insufficient-tokens",
                "Insufficient tokens",
            ),
            Self::InvalidSignature(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-signature",
                "Invalid webhook signature",
            ),
            Self::NotConfigured(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not-configured",
                "Not configured",
            ),
            Self::Stripe(_) => (StatusCode::BAD_GATEWAY, "stripe-error", "Stripe error"),
            Self::TooManyRequests { .. } | Self::TooManyFailedAttempts { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            Self::BodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "Request body timed out",
            ),
            Self::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Self::NotReady { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready"),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    /// The problem document.
    fn body(&self) -> Vec<u8> {
        let (status, slug, title) = self.class();
        let errors = self.field_errors();
        let problem = Problem {
            kind: format!("{TYPE_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            errors: errors.as_deref(),
            checks: match self {
                Self::NotReady { checks, .. } => Some(checks),
                _ => None,
            },
        };
        // Serializing strings and numbers cannot fail; the fallback only satisfies the types.
        serde_json::to_vec(&problem).unwrap_or_default()
    }

    /// The response status.
    pub(crate) fn status(&self) -> StatusCode {
        self.class().0
    }

    /// The problem's title (`Not found`, ...).
    pub(crate) fn title(&self) -> &'static str {
        self.class().2
    }

    /// Log what must be logged: internal failures (never shown to the client) and outages.
    pub(crate) fn log(&self) {
        match self {
            Self::Internal(e) => tracing::error!(error = %e, debug = ?e, "internal error"),
            Self::Unavailable(e) => tracing::warn!(error = %e, "database unavailable"),
            _ => {}
        }
    }

    /// The located problems, for the validation errors that have them.
    pub(crate) fn field_errors(&self) -> Option<Vec<FieldError>> {
        match self {
            Self::InvalidBody(errors)
            | Self::InvalidInput(errors)
            | Self::InvalidSecret(errors)
            | Self::InvalidAgent(errors) => Some(errors.clone()),
            Self::UnknownWorkflow(name) => Some(vec![FieldError::new(
                "/workflow",
                format!("no workflow is registered under `{name}`"),
            )]),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let mut response = (self.class().0, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            // RFC 9110: a 401 must say how to authenticate.
            Self::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"hypercode\""),
                );
            }
            Self::Timeout | Self::Unavailable(_) | Self::NotReady { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::TooManyRequests { retry_after_s, .. }
            | Self::TooManyFailedAttempts { retry_after_s, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(why) => Self::Conflict(why),
            StoreError::Database(e) if e.is_unavailable() => Self::Unavailable(e),
            // A lost lease is a worker's concern; reaching the API with one is a bug.
            e @ (StoreError::Database(_) | StoreError::LeaseLost(_) | StoreError::Corrupt(_)) => {
                Self::internal(e)
            }
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        match error {
            SubmitError::UnknownWorkflow(name) => Self::UnknownWorkflow(name),
            SubmitError::TooLarge { size, limit } => Self::PayloadTooLarge(format!(
                "the mission input is {size} bytes of JSON; the limit is {limit}"
            )),
            // The workflow locates problems inside its input; the client needs them located
            // inside the request body, where the input sits under `/input`.
            SubmitError::Invalid(problems) => Self::InvalidInput(
                problems
                    .into_iter()
                    .map(|p| FieldError::new(format!("/input{}", p.pointer), p.message))
                    .collect(),
            ),
            // As the body's parser reports a NUL it sees first: a malformed body (422).
            SubmitError::NulInInput { pointer } => Self::InvalidBody(vec![FieldError::new(
                format!("/input{pointer}"),
                NUL_MESSAGE,
            )]),
            SubmitError::NulInIdempotencyKey => {
                Self::InvalidBody(vec![FieldError::new("/idempotency_key", NUL_MESSAGE)])
            }
            e @ SubmitError::IdempotencyKeyTooLong { .. } => {
                Self::InvalidBody(vec![FieldError::new("/idempotency_key", e.to_string())])
            }
            e @ SubmitError::Internal(_) => {
                Self::InvalidBody(vec![FieldError::new("/workflow", e.to_string())])
            }
            e @ SubmitError::BadConcurrencyKey(_) => {
                Self::InvalidBody(vec![FieldError::new("/concurrency_key", e.to_string())])
            }
            SubmitError::Store(e) => e.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::from(error).into()
    }
}

impl From<hypercode_agents::AgentError> for ApiError {
    fn from(error: hypercode_agents::AgentError) -> Self {
        match error {
            hypercode_agents::AgentError::Database(e) => e.into(),
            // Liveness is in Redis: without it the registry cannot answer for now, which is
            // an outage (503 with Retry-After) like a database out of reach, not a bug.
            hypercode_agents::AgentError::Redis(e) => Self::Unavailable(DatabaseError::from(
                sqlx::Error::Io(std::io::Error::other(e)),
            )),
            // A secret that does not open (a changed HYPERCODE_SECRETS_KEY) is the server's
            // configuration, not the client's doing.
            e @ (hypercode_agents::AgentError::Sealed(_)
            | hypercode_agents::AgentError::Keys(_)) => Self::Internal(Box::new(e)),
        }
    }
}

impl From<hypercode_payments::LedgerError> for ApiError {
    fn from(error: hypercode_payments::LedgerError) -> Self {
        use hypercode_payments::LedgerError;
        match error {
            e @ LedgerError::Insufficient { .. } => Self::InsufficientTokens(e.to_string()),
            e @ LedgerError::KeyReused(_) => Self::Conflict(e.to_string()),
            e @ LedgerError::Overflow => {
                Self::InvalidBody(vec![FieldError::new("/amount", e.to_string())])
            }
            LedgerError::Database(e) => e.into(),
        }
    }
}

impl From<hypercode_payments::EventError> for ApiError {
    fn from(error: hypercode_payments::EventError) -> Self {
        use hypercode_payments::EventError;
        match error {
            e @ EventError::NotAnEvent(_) => Self::InvalidSignature(e.to_string()),
            e @ EventError::Unknown(_) => Self::NotFound(e.to_string()),
            EventError::Database(e) => e.into(),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Database(e) => StoreError::from(e).into(),
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercode_engine::InputProblem;

    /// Status, content type and parsed body of an error's response.
    fn render(error: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let json = serde_json::from_slice(&error.body()).unwrap_or_default();
        let response = error.into_response();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (response.status(), content_type, json)
    }

    #[test]
    fn input_problems_are_located_under_input() {
        let error = ApiError::from(SubmitError::Invalid(vec![
            InputProblem::new("/steps/0/name", "required"),
            InputProblem::new("", "must be an object"),
        ]));
        let (status, content_type, json) = render(error);
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(content_type.as_deref(), Some(PROBLEM_JSON));
        assert_eq!(json["errors"][0]["pointer"], "/input/steps/0/name");
        assert_eq!(json["errors"][1]["pointer"], "/input");
        assert_eq!(json["type"], "https://hypercode.dev/problems/invalid-input");
    }

    #[test]
    fn unknown_workflows_point_at_the_workflow_field() {
        let (status, _, json) = render(SubmitError::UnknownWorkflow("nope".into()).into());
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(json["errors"][0]["pointer"], "/workflow");
    }

    #[test]
    fn nul_characters_are_invalid_bodies_located_in_the_body() {
        let (status, _, json) = render(
            SubmitError::NulInInput {
                pointer: "/a/0".into(),
            }
            .into(),
        );
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(json["type"], "https://hypercode.dev/problems/invalid-body");
        assert_eq!(json["errors"][0]["pointer"], "/input/a/0");
        assert_eq!(json["errors"][0]["message"], NUL_MESSAGE);
        let (_, _, json) = render(SubmitError::NulInIdempotencyKey.into());
        assert_eq!(json["errors"][0]["pointer"], "/idempotency_key");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let error = ApiError::from(StoreError::Corrupt("secret table detail".into()));
        let (status, _, json) = render(error);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json["detail"], "an internal error occurred");
        assert!(json.get("errors").is_none());
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let not_found = ApiError::from(StoreError::NotFound("mission x".into()));
        assert_eq!(not_found.class().0, StatusCode::NOT_FOUND);
        let conflict = ApiError::from(StoreError::Conflict("mission x is failed".into()));
        assert_eq!(conflict.class().0, StatusCode::CONFLICT);
        let busy = ApiError::from(StoreError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(busy.class().0, StatusCode::SERVICE_UNAVAILABLE);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let down = ApiError::from(StoreError::from(sqlx::Error::Io(refused)));
        assert_eq!(down.class().0, StatusCode::SERVICE_UNAVAILABLE);
        let bug = ApiError::from(StoreError::from(sqlx::Error::RowNotFound));
        assert_eq!(bug.class().0, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
