//! `hypercode mcp`: the MCP gateway on stdin/stdout, for desktop assistants that launch their
//! MCP servers. It is a client of a running HyperCode like `hypercode mission` (`HYPERCODE_URL`,
//! `HYPERCODE_API_KEY` or `HYPERCODE_API_KEY_FILE`): every tool and resource is a request to
//! the REST API with that key. Only MCP messages go to stdout; logs go to stderr.

use super::{with_client, Client, Failure};
use futures::future::BoxFuture;
use futures::{StreamExt as _, TryStreamExt as _};
use hypercode_api::keys::Principal;
use hypercode_api::mcp::{self, ApiRequest, Backend, ByteStream, CallError};
use hypercode_engine::MissionId;
use reqwest::Method;
use serde_json::Value;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Serve MCP on stdio until the client closes stdin or `shutdown` fires; the exit codes are
/// the CLI's (2 for a misconfigured key, 3 when stdio fails).
pub async fn run(shutdown: CancellationToken) -> ExitCode {
    with_client(|client| async move {
        let backend: Arc<dyn Backend> = Arc::new(Remote(client));
        mcp::serve_stdio(backend, shutdown)
            .await
            .map_err(|e| Failure::Unreachable(format!("MCP over stdio failed: {e}")))
    })
    .await
}

/// The REST API of the server at `HYPERCODE_URL`, with the configured key.
struct Remote(Client);

impl Backend for Remote {
    fn call(
        &self,
        // The server authenticates this process's own key.
        _caller: Option<Principal>,
        request: ApiRequest,
    ) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move {
            self.0
                .call(
                    request.method,
                    &request.path,
                    &request.query,
                    request.body.as_ref(),
                )
                .await
                .map(|(_, answer)| answer)
                .map_err(call_error)
        })
    }

    fn events(
        &self,
        _caller: Option<Principal>,
        mission: MissionId,
        after: Option<i64>,
    ) -> BoxFuture<'_, Result<ByteStream, CallError>> {
        Box::pin(async move {
            let request = mcp::events_request(mission, after);
            let response = self
                .0
                .request(Method::GET, &request.path)
                .query(&request.query)
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .send()
                .await
                .map_err(|e| call_error(self.0.unreachable(&e)))?;
            let status = response.status();
            if !status.is_success() {
                let body = response.bytes().await.unwrap_or_default();
                return Err(CallError::refused(status.as_u16(), &body));
            }
            Ok(response.bytes_stream().map_err(|e| e.to_string()).boxed())
        })
    }
}

/// A failed request as the gateway reports it.
fn call_error(failure: Failure) -> CallError {
    match failure {
        Failure::Refused { status, body } | Failure::ServerError { status, body } => {
            CallError::refused(status.as_u16(), body.as_bytes())
        }
        Failure::Unreachable(why) | Failure::Usage(why) => CallError::Unreachable(why),
        Failure::MissionDidNotSucceed => {
            CallError::Unreachable("the mission did not succeed".to_owned())
        }
    }
}
