//! The request-body policy: [`read_body`] reads every body before routing, with a size limit
//! and an idle timeout, and hands the handlers the whole body in memory.
//!
//! - **Over [`BODY_LIMIT`]: 413.** The rest of the body is read and thrown away (up to
//!   [`DRAIN_LIMIT`] bytes) before the answer is sent. A client that writes its whole body
//!   before it reads (Python's `urllib`, many SDKs) would otherwise never see the 413: closing a
//!   socket with unread data in it sends a TCP reset, and the reset destroys the answer the
//!   client has not read yet, so it reports a broken pipe. A client that sent
//!   `Expect: 100-continue` waits for a go-ahead before it sends the body, so it is answered at
//!   once, as is a body declared larger than the drain limit (nothing would help it then).
//! - **A body that stops arriving for [`BODY_IDLE_TIMEOUT`]: 408.** The client is slow (for
//!   example, its `Content-Length` promised more than it sent), not the server, and it should
//!   not hold a connection and a request slot for the whole request timeout.
//!
//! Both answers close the connection, since the rest of the body (if any) cannot be told apart
//! from a next request.

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::time::Duration;

/// Largest accepted request body.
pub(crate) const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Most bytes of an oversized body read (and thrown away) so that its client gets the 413.
const DRAIN_LIMIT: u64 = 8 * BODY_LIMIT as u64;

/// Longest a request body may pause.
pub(crate) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Read the whole body (see the module documentation), then run the rest of the stack on it.
pub(crate) async fn read_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let declared = content_length(&parts.headers);
    if let Some(size) = declared.filter(|n| *n > BODY_LIMIT as u64) {
        if size > DRAIN_LIMIT || expects_continue(&parts.headers) {
            return closing(too_large());
        }
    }
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::new();
    let mut received: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(BODY_IDLE_TIMEOUT, chunks.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => return closing(ApiError::UnreadableBody(e.to_string())),
            // Past the limit the answer is a 413 whatever else happens.
            Err(_) if received > BODY_LIMIT as u64 => return closing(too_large()),
            Err(_) => return closing(stalled(received, declared)),
        };
        received += chunk.len() as u64;
        if received > DRAIN_LIMIT {
            return closing(too_large());
        }
        if received <= BODY_LIMIT as u64 {
            kept.extend_from_slice(&chunk);
        } else {
            // Draining: the body is refused, so nothing more is kept.
            kept = Vec::new();
        }
    }
    if received > BODY_LIMIT as u64 {
        return closing(too_large());
    }
    next.run(Request::from_parts(parts, Body::from(kept))).await
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the request body exceeds the limit of {BODY_LIMIT} bytes"
    ))
}

fn stalled(received: u64, declared: Option<u64>) -> ApiError {
    let promised = declared.map_or(String::new(), |n| format!(" of the {n} announced"));
    ApiError::BodyTimeout(format!(
        "the request body stopped arriving: nothing for {} s after {received} bytes{promised}",
        BODY_IDLE_TIMEOUT.as_secs()
    ))
}

/// The error's response, telling the client that the connection closes after it.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
