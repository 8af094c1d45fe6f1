//! The MCP gateway: missions, approvals and history as Model Context Protocol tools and
//! resources for AI assistants and agents, built on the official Rust SDK (`rmcp`).
//!
//! Two transports serve the same [`McpServer`]:
//! - **Streamable HTTP** at `/mcp` on `hypercode serve` ([`routes`]), behind the API's
//!   authentication and per-key rate limit (a missing or bad key is answered 401 before any
//!   MCP message is read). Its tools call the REST handlers in-process as that key
//!   ([`Local`]).
//! - **stdio** (`hypercode mcp`, [`serve_stdio`]): the binary gives it a backend that calls a
//!   running server's REST API over HTTP with the configured key.
//!
//! How it is laid out:
//! - `backend`: [`ApiRequest`], [`Backend`] and [`Local`]: every tool and resource is a REST
//!   request, so roles, validation, views and redaction are the API's own.
//! - `tools`: the nine tools, their input schemas and results.
//! - `resources`: `hypercode://missions/{id}` and `.../history`.
//! - `subscriptions`: `resources/subscribe`, followed on the event feed.
//! - `server`: [`McpServer`], the `ServerHandler` that ties them together.
//! - `sse`: a reader of `text/event-stream` bodies (also the CLI's `mission watch`).

mod backend;
mod resources;
mod server;
mod sse;
mod subscriptions;
mod tools;

pub use backend::{
    encode_segment, events_request, mission_path, ApiRequest, Backend, ByteStream, CallError, Local,
};
pub use server::McpServer;
pub use sse::{SseMessage, SseParser};

use crate::AppState;
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt as _;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A comment is sent on an idle MCP event stream this often, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `/mcp`, for the API's router; the caller adds the authentication layer.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    // The REST routes the tools call, without the authentication layer: each call carries the
    // key that authenticated the MCP request.
    let api = crate::missions::routes()
        .merge(crate::operations::routes())
        .merge(crate::events::routes())
        .with_state(state.clone());
    let backend: Arc<dyn Backend> = Arc::new(Local::new(api));
    let shutdown = state.shutdown.clone();
    let config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(KEEP_ALIVE))
        .with_cancellation_token(shutdown.child_token())
        // Every request carries an API key, which a page rebinding a name to this server does
        // not have; and the server is reached under names only its operator knows.
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(McpServer::new(backend.clone(), shutdown.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new().route_service("/mcp", service)
}

/// Serve MCP on stdin/stdout with `backend` until the client closes stdin or `shutdown` is
/// cancelled. Nothing but MCP messages is written to stdout.
pub async fn serve_stdio(
    backend: Arc<dyn Backend>,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    let server = McpServer::new(backend, shutdown.clone());
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let cancel = running.cancellation_token();
    tokio::select! {
        done = running.waiting() => {
            done.map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        () = shutdown.cancelled() => cancel.cancel(),
    }
    Ok(())
}
