//! The HTTP action: one attempt of a plan's HTTP step, classified for the retry policy.

use super::spec::HttpRequest;
use hypercode_engine::StepError;
use serde_json::{json, Value};
use std::time::Duration;

/// Largest response body kept as a step's output; a larger one fails the step.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Make one attempt. 2xx succeeds with `{"status", "body"}`; 5xx, 408, 429, timeouts and
/// connection errors are retryable; other statuses fail at once. The request carries
/// `Idempotency-Key: <key>` so the callee can deduplicate a retried attempt.
pub async fn call(
    client: &reqwest::Client,
    request: &HttpRequest,
    key: &str,
) -> Result<Value, StepError> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| StepError::fatal(format!("invalid method `{}`", request.method)))?;
    let mut builder = client
        .request(method, &request.url)
        .timeout(Duration::from_millis(request.timeout_ms))
        .header("Idempotency-Key", key);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = &request.body {
        builder = builder.json(body);
    }
    let mut response = builder.send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "request failed"
        };
        StepError::retryable(format!("{} {}: {kind}: {e}", request.method, request.url))
    })?;
    let status = response.status();
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_RESPONSE_BYTES => {
                bytes.extend_from_slice(&chunk)
            }
            Ok(Some(_)) => {
                return Err(StepError::fatal(format!(
                    "response body exceeds {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            Ok(None) => break,
            Err(e) => {
                return Err(StepError::retryable(format!(
                    "reading the response failed: {e}"
                )))
            }
        }
    }
    let body = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let output = json!({ "status": status.as_u16(), "body": body });
    if status.is_success() {
        return Ok(output);
    }
    let message = format!("{} {} answered {status}", request.method, request.url);
    let retryable = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
    let error = if retryable {
        StepError::retryable(message)
    } else {
        StepError::fatal(message)
    };
    Err(error.with_details(output))
}
