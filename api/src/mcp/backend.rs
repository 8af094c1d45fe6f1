//! How a tool reaches HyperCode: by making a REST request, as the caller.
//!
//! Every tool and resource of the gateway is a request to the REST API ([`ApiRequest`]), so
//! roles, validation, views and redaction are exactly those of the API: nothing about missions
//! is decided here. A [`Backend`] carries the request:
//! - [`Local`] (`/mcp` on `hypercode serve`) hands it to the REST handlers in-process
//!   (`tower::ServiceExt::oneshot` on the API's router), as the key that authenticated the MCP
//!   request (its [`Principal`], put in the request's extensions where the role extractors
//!   look first, so the key is not looked up or rate-limited a second time);
//! - the binary's remote backend (`hypercode mcp`, over stdio) sends it over HTTP with the key
//!   it was configured with.

use crate::keys::Principal;
use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request};
use axum::Router;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use hypercode_engine::MissionId;
use serde_json::Value;
use tower::ServiceExt as _;

/// Largest REST answer read in-process (a history page of 10 000 events fits comfortably).
const ANSWER_LIMIT: usize = 64 * 1024 * 1024;

/// One REST request a tool makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// `GET` or `POST`.
    pub method: Method,
    /// The path, its segments already percent-encoded (see [`encode_segment`]).
    pub path: String,
    /// Query parameters, encoded when the request is sent.
    pub query: Vec<(&'static str, String)>,
    /// A JSON body.
    pub body: Option<Value>,
}

impl ApiRequest {
    /// `GET path`.
    pub fn get(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    /// `POST path` with a JSON body.
    pub fn post(path: String, body: Value) -> Self {
        Self {
            method: Method::POST,
            path,
            query: Vec::new(),
            body: Some(body),
        }
    }

    /// With the query parameter `name` when `value` is given.
    pub fn param(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }

    /// The path with its query string.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.query)
            .finish();
        format!("{}?{query}", self.path)
    }
}

/// Why a REST request gave no answer to use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The API answered with an error status and this problem (RFC 9457) body.
    #[error("{}", refusal_text(*.status, .problem))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The problem body (`title`, `detail`, `errors`...), or `{"detail": text}` when the
        /// answer was not a problem.
        problem: Value,
    },
    /// The API could not be reached, or its answer could not be read.
    #[error("{0}")]
    Unreachable(String),
}

impl CallError {
    /// An error answer as a problem: its body, or the text wrapped as a problem's `detail`.
    pub fn refused(status: u16, body: &[u8]) -> Self {
        let problem = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(
                || serde_json::json!({ "detail": String::from_utf8_lossy(body).trim() }),
            );
        Self::Refused { status, problem }
    }
}

/// `Forbidden (403): <detail>`, then each located problem on a line of its own.
fn refusal_text(status: u16, problem: &Value) -> String {
    let title = problem["title"].as_str().unwrap_or("Refused");
    let detail = problem["detail"].as_str().unwrap_or_default();
    let mut text = format!("{title} ({status}): {detail}");
    for error in problem["errors"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "\n- at `{}`: {}",
            error["pointer"].as_str().unwrap_or_default(),
            error["message"].as_str().unwrap_or_default()
        ));
    }
    text
}

/// The bytes of an open Server-Sent Events stream.
pub type ByteStream = BoxStream<'static, Result<Bytes, String>>;

/// Where REST requests go.
pub trait Backend: Send + Sync + 'static {
    /// Make `request` as `caller` (the key that authenticated the MCP request, over HTTP; none
    /// over stdio, where the backend holds its own key); the answer's JSON.
    fn call(
        &self,
        caller: Option<Principal>,
        request: ApiRequest,
    ) -> BoxFuture<'_, Result<Value, CallError>>;

    /// Open `GET /api/v1/events?mission=ID&after=N` as `caller`: the mission's history as
    /// Server-Sent Events, after position `after` (from its first event without one).
    fn events(
        &self,
        caller: Option<Principal>,
        mission: MissionId,
        after: Option<i64>,
    ) -> BoxFuture<'_, Result<ByteStream, CallError>>;
}

/// The REST request for a mission's event stream (both backends open it the same way).
pub fn events_request(mission: MissionId, after: Option<i64>) -> ApiRequest {
    ApiRequest::get("/api/v1/events".to_owned())
        .param("mission", Some(mission))
        .param("after", after)
}

/// The REST handlers, called in-process.
#[derive(Clone, Debug)]
pub struct Local {
    /// The API's mission, approval, workflow and event routes, with their state.
    api: Router,
}

impl Local {
    /// Calls into `api`, a router of the REST routes with their state applied.
    pub fn new(api: Router) -> Self {
        Self { api }
    }

    /// The handlers' response to `request` made as `caller`.
    async fn respond(
        &self,
        caller: Option<Principal>,
        request: ApiRequest,
    ) -> Result<axum::response::Response, CallError> {
        // The route layer that authenticated the MCP request put the key there; without one
        // the handlers would try to authenticate headers this request does not carry.
        let caller = caller.ok_or_else(|| CallError::Refused {
            status: 401,
            problem: serde_json::json!({
                "title": "Unauthorized",
                "detail": "the MCP request carried no authenticated API key",
            }),
        })?;
        let mut builder = Request::builder()
            .method(request.method.clone())
            .uri(request.path_and_query());
        let body = match &request.body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(body).unwrap_or_default())
            }
            None => Body::empty(),
        };
        let mut http = builder
            .body(body)
            .map_err(|e| CallError::Unreachable(format!("cannot build the request: {e}")))?;
        http.extensions_mut().insert(caller);
        let response = self.api.clone().oneshot(http).await;
        // The router's error type is `Infallible`.
        let Ok(response) = response;
        Ok(response)
    }
}

impl Backend for Local {
    fn call(
        &self,
        caller: Option<Principal>,
        request: ApiRequest,
    ) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move {
            let response = self.respond(caller, request).await?;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), ANSWER_LIMIT)
                .await
                .map_err(|e| CallError::Unreachable(format!("cannot read the answer: {e}")))?;
            if !status.is_success() {
                return Err(CallError::refused(status.as_u16(), &body));
            }
            serde_json::from_slice(&body)
                .map_err(|e| CallError::Unreachable(format!("the answer is not JSON: {e}")))
        })
    }

    fn events(
        &self,
        caller: Option<Principal>,
        mission: MissionId,
        after: Option<i64>,
    ) -> BoxFuture<'_, Result<ByteStream, CallError>> {
        Box::pin(async move {
            let response = self.respond(caller, events_request(mission, after)).await?;
            let status = response.status();
            if !status.is_success() {
                let body = axum::body::to_bytes(response.into_body(), ANSWER_LIMIT)
                    .await
                    .unwrap_or_default();
                return Err(CallError::refused(status.as_u16(), &body));
            }
            Ok(response
                .into_body()
                .into_data_stream()
                .map_err(|e| e.to_string())
                .boxed())
        })
    }
}

/// Percent-encode a path segment (ids and step names are plain, but a typo must reach the
/// server as the same typo, not as another route).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `/api/v1/missions/{id}{rest}`.
pub fn mission_path(id: &str, rest: &str) -> String {
    format!("/api/v1/missions/{}{rest}", encode_segment(id.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("sign-off_2"), "sign-off_2");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(
            mission_path(" x/y ", "/history"),
            "/api/v1/missions/x%2Fy/history"
        );
    }

    #[test]
    fn query_strings_are_encoded() {
        let request = ApiRequest::get("/api/v1/missions".to_owned())
            .param("status", Some("waiting"))
            .param("workflow", None::<String>)
            .param("cursor", Some("a+b&c"));
        assert_eq!(
            request.path_and_query(),
            "/api/v1/missions?status=waiting&cursor=a%2Bb%26c"
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        let error = CallError::refused(
            403,
            br#"{"title": "Forbidden", "detail": "this action requires the operator or admin role"}"#,
        );
        assert_eq!(
            error.to_string(),
            "Forbidden (403): this action requires the operator or admin role"
        );
        let error = CallError::refused(
            422,
            br#"{"title": "Invalid input", "detail": "refused", "errors": [{"pointer": "/input/steps", "message": "required"}]}"#,
        );
        assert!(error
            .to_string()
            .ends_with("\n- at `/input/steps`: required"));
        let error = CallError::refused(502, b"bad gateway\n");
        assert_eq!(error.to_string(), "Refused (502): bad gateway");
    }
}
