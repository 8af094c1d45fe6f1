//! HyperCode's HTTP API: submit, inspect, approve and cancel missions over JSON.
//!
//! [`app`] builds the whole service; the binary serves it. How the crate is laid out:
//! - `missions`: the `/api/v1/missions` handlers, thin translations to [`Engine`] calls.
//! - `operations`: `/api/v1/approvals` (the inbox of waiting approvals) and `/api/v1/workflows`.
//! - `events`: `/api/v1/events`, history events of all missions as a live, resumable SSE stream.
//! - `views`: the response bodies, the JSON contract spelled out field by field.
//! - `cursor`: the opaque keyset cursor of the mission list.
//! - `auth`: the middleware that authenticates a key (once per request) and applies its rate
//!   limit, and the `Reader`/`Operator` extractors that check its role.
//! - [`rate_limit`]: per-key token buckets in Redis, shared by every API replica.
//! - `secrets`: `/api/v1/secrets`, the server-side secrets plans reference (admins only;
//!   values are never returned).
//! - [`keys`]: API keys (create, list, revoke, authenticate), also used by the key CLI.
//! - `extract`: JSON, path and query extractors whose rejections are problem details, with
//!   JSON pointers to the offending value.
//! - `openapi`: `/openapi.json`, the OpenAPI 3.1 description generated from the handlers'
//!   annotations and the views, with each registered workflow's input schema.
//! - `dashboard`: Mission Control, the server-rendered web dashboard at `/`, with its
//!   sessions (sign in with a key, then a cookie) and CSRF protection.
//! - `error`: `ApiError`, the one place statuses are chosen and RFC 9457 bodies are rendered.
//! - `body`: the middleware that reads every request body first, with its size limit (413) and
//!   idle timeout (408).
//! - `agents`: `/api/v1/agents`, the agent registry and the agents' heartbeats.
//! - `incidents` and `logs`: the healer's incidents (`/api/v1/incidents`) and the log list
//!   (`/api/v1/logs`), with their views in `incident_views`.
//! - [`metrics`]: `/metrics` (Prometheus text, no key) and the request timing middleware.
//! - `workers`: `/api/v1/workers`, the worker processes from their heartbeats.
//! - `trace`: the span of every request, named by its route, continuing the caller's W3C
//!   trace context (`traceparent`).
//! - `uplink`: `/ws/uplink`, the CognitiveUplink WebSocket: commands to the agents as
//!   `agent_command` missions, followed to their answers.
//! - `payments`: the token economy: accounts and their ledger (`/api/v1/accounts`), Stripe
//!   Checkout and the signed Stripe webhook (`/api/stripe`), and the shop (`/api/v1/shop`).
//! - `health`: `/healthz` (the process is up) and `/readyz` (PostgreSQL and Redis answer).
//! - [`mcp`]: the MCP gateway, `/mcp` (streamable HTTP) and the stdio server of `hypercode mcp`,
//!   whose tools call the REST handlers.
//!
//! Every error response, including those of the middleware (body limit, timeout), unknown
//! routes and wrong methods, is `application/problem+json` for API clients; a browser
//! navigating outside `/api` (`Accept: text/html`) gets the dashboard's HTML error page instead.

mod agents;
mod auth;
mod body;
mod cursor;
mod dashboard;
mod error;
mod events;
mod extract;
mod health;
mod incident_views;
mod incidents;
pub mod keys;
pub use agents::Provisioner as AgentProvisioner;
mod logs;
pub mod mcp;
pub mod metrics;
mod missions;
mod openapi;
mod operations;
mod payments;
pub mod rate_limit;
mod schedules;
mod secrets;
mod trace;
mod uplink;
mod views;
mod workers;

pub use crate::payments::PaymentsState;

use crate::error::{ApiError, PROBLEM_JSON};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hypercode_engine::Engine;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Longest a request may take before it is answered with 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The status of a timed-out request: the server was too slow, so not 408 (a slow client).
const TIMEOUT_STATUS: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The engine: submissions, decisions, cancellations and reads.
    pub engine: Engine,
    /// The database, for API keys and sessions (the engine's tables are reached through the
    /// engine). The same pool the engine's store was built on, not a second one: a `PgPool` is
    /// a shared handle, and `serve` clones one pool into both.
    pub pool: PgPool,
    /// The per-key rate limiter (shared by every replica through Redis).
    pub limiter: rate_limit::RateLimiter,
    /// The process's shutdown: once cancelled, responses that would otherwise never end (the
    /// event streams) finish, so a graceful shutdown is not held up by their clients.
    pub shutdown: CancellationToken,
    /// The event streams' process-wide feed follower, started by the first client.
    events: events::Hub,
    /// The log list (`hypercode:logs`), read by `GET /api/v1/logs`; none: the list is empty.
    pub logs: Option<hypercode_healer::LogSink>,
    /// The exporter's handle: `/metrics` is served on the API's port when it is set.
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The agent registry (`/api/v1/agents`); none: those routes answer 404.
    pub agents: Option<hypercode_agents::AgentRegistry>,
    /// The catalogue, the ledger, the Stripe client and the webhook secret.
    payments: std::sync::Arc<PaymentsState>,
    /// Where this deployment's workers reach this API (`HYPERCODE_INTERNAL_URL`), which the
    /// dashboard's sample plan calls; none: the address the browser reached it at.
    internal_url: Option<url::Url>,
}

impl AppState {
    /// The state of one process's API; `shutdown` is the token the process stops with.
    pub fn new(
        engine: Engine,
        pool: PgPool,
        limiter: rate_limit::RateLimiter,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            engine,
            limiter,
            shutdown,
            events: events::Hub::default(),
            logs: None,
            metrics: None,
            agents: None,
            // An empty catalogue and no Stripe until `with_payments` says otherwise: accounts
            // work, checkout and the webhook answer 503.
            payments: std::sync::Arc::new(PaymentsState {
                payments: hypercode_payments::Payments::new(
                    pool.clone(),
                    hypercode_payments::Catalog::default(),
                ),
                checkout: None,
                webhook_secret: None,
            }),
            internal_url: None,
            pool,
        }
    }

    /// The same state, reached by the workers at `url`.
    pub fn reached_at(mut self, url: url::Url) -> Self {
        self.internal_url = Some(url);
        self
    }

    /// The same state with the agent registry.
    pub fn with_agents(mut self, agents: hypercode_agents::AgentRegistry) -> Self {
        self.agents = Some(agents);
        self
    }

    /// The same state selling what `payments` says, through its Stripe client.
    pub fn with_payments(mut self, payments: PaymentsState) -> Self {
        self.payments = std::sync::Arc::new(payments);
        self
    }

    /// The same state, reading and writing the log list through `logs`.
    pub fn with_logs(mut self, logs: hypercode_healer::LogSink) -> Self {
        self.logs = Some(logs);
        self
    }

    /// The same state with the metrics exporter's handle, so `/metrics` renders it.
    pub fn with_metrics(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }
}

/// The whole API with its middleware, ready to serve.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(missions::routes())
        .merge(operations::routes())
        .merge(events::routes())
        .merge(secrets::routes())
        .merge(agents::routes())
        .merge(incidents::routes())
        .merge(logs::routes())
        .merge(schedules::routes())
        .merge(mcp::routes(&state))
        .merge(workers::routes())
        .merge(payments::routes())
        // Authentication and the per-key rate limit, once per request, for the routes added
        // above only: /healthz and /openapi.json (below) stay open, and unknown routes and
        // wrong methods keep their 404 and 405.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // The dashboard authenticates with its session cookie (or sends people to sign in).
        .merge(dashboard::routes())
        // The uplink authenticates its handshake itself: a session cookie needs an Origin.
        .merge(uplink::routes())
        // Stripe's webhook authenticates by its signature, outside the per-key rate limit.
        .merge(payments::webhook_routes())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(if state.metrics.is_some() {
            metrics::routes()
        } else {
            Router::new()
        })
        .fallback(not_found)
        // After the routes: it applies to the routes present when it is called.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    // Layers run outside-in in the reverse of the order they are added.
    routes
        // The body limit is enforced by `body::read_body` alone, so there is one limit, not two.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(body::read_body))
        .layer(TimeoutLayer::with_status_code(
            TIMEOUT_STATUS,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(problems_for_layer_errors))
        // Outside the problem layer: a browser gets even a timeout as an HTML page.
        .layer(middleware::from_fn_with_state(
            state,
            dashboard::html_errors,
        ))
        .layer(middleware::from_fn(metrics::track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(trace::request_span)
                .on_response(trace::on_response),
        )
}

/// The status of a write that may find its result already there: 201 when this request created
/// it, 200 when it existed before (replaced, or the first answer to a repeated idempotent request).
fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The timeout layer answers with a bare status code; give it a problem body like every other
/// error. Responses that already are problems pass through untouched.
async fn problems_for_layer_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if is_problem {
        return response;
    }
    if response.status() == TIMEOUT_STATUS {
        return ApiError::Timeout.into_response();
    }
    response
}
