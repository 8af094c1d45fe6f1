//! The HTTP action: one attempt of a plan's HTTP step, classified for the retry policy. It
//! follows redirects itself, so that the egress policy checks every hop and the plan's headers
//! and body never travel to an origin the plan did not name.

use super::spec::HttpRequest;
use crate::egress::{self, EgressClient, Refused};
use hypercode_engine::StepError;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use url::Url;

/// Largest response body kept as a step's output; a larger one fails the step.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Redirects one attempt follows before it fails for good.
const MAX_REDIRECTS: usize = 10;

/// The W3C trace-context header every hop carries (the step's span), unless the plan sets it.
const TRACEPARENT: &str = "traceparent";

/// Make one attempt. 2xx succeeds with `{"status", "body"}`; 5xx, 408, 429, timeouts and
/// connection errors are retryable; other statuses, invalid requests and destinations the
/// egress policy refuses fail at once. Every request carries `Idempotency-Key: <key>` so the
/// callee can deduplicate a retried attempt.
///
/// Redirects (301, 302, 303, 307, 308) are followed up to [`MAX_REDIRECTS`], each hop checked
/// by the egress policy. The plan's headers go only to the plan's own origin (scheme, host and
/// port): from the first hop to another origin on, none are sent; no `Referer` is ever sent. A
/// 301, 302 or 303 continues as a GET (a HEAD stays a HEAD) without a body; a 307 or 308 keeps
/// the method and body, and fails the step if that would send the body to another origin.
pub async fn call(
    client: &EgressClient,
    request: &HttpRequest,
    key: &str,
) -> Result<Value, StepError> {
    // Templates may have made an invalid URL of a valid one.
    let url =
        Url::parse(&request.url).map_err(|e| StepError::fatal(format!("invalid URL: {e}")))?;
    let deadline = Instant::now() + Duration::from_millis(request.timeout_ms);
    let mut hop = Hop {
        method: request.method.into(),
        url,
        body: request.body.as_ref(),
        plan_origin: true,
    };
    let mut redirects = 0;
    let response = loop {
        let response = send(client, request, &hop, key, deadline).await?;
        let Some(next) = hop.redirect(&response).map_err(|e| hop.fail(request, &e))? else {
            break response;
        };
        redirects += 1;
        if redirects > MAX_REDIRECTS {
            return Err(hop.fail(request, &format!("more than {MAX_REDIRECTS} redirects")));
        }
        hop = next;
    };
    let status = response.status();
    let bytes = read_body(response).await?;
    let body = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let output = json!({ "status": status.as_u16(), "body": body });
    if status.is_success() {
        return Ok(output);
    }
    let message = format!("{} answered {status}", hop.describe(request));
    let retryable = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
    let error = if retryable {
        StepError::retryable(message)
    } else {
        StepError::fatal(message)
    };
    Err(error.with_details(output))
}

/// One request of an attempt: the first, or one a redirect leads to.
struct Hop<'a> {
    method: Method,
    url: Url,
    body: Option<&'a Value>,
    /// Whether every hop so far stayed on the plan's origin, so the plan's headers may go.
    plan_origin: bool,
}

impl<'a> Hop<'a> {
    /// The hop a redirect response leads to, or `None` when the response is final.
    fn redirect(&self, response: &Response) -> Result<Option<Hop<'a>>, String> {
        let keeps_method = match response.status() {
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => true,
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER => false,
            _ => return Ok(None),
        };
        let status = response.status().as_u16();
        let Some(location) = response.headers().get(reqwest::header::LOCATION) else {
            return Ok(None);
        };
        let location = location
            .to_str()
            .map_err(|_| format!("a {status} redirect has a Location that is not text"))?;
        let url = self
            .url
            .join(location)
            .map_err(|e| format!("a {status} redirect has an invalid Location: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "a {status} redirect leads to a `{}:` URL, not http(s)",
                url.scheme()
            ));
        }
        let same_origin = url.origin() == self.url.origin();
        let (method, body) = if keeps_method {
            if self.body.is_some() && !same_origin {
                return Err(format!(
                    "a {status} redirect to {} would re-send the request body to another origin; \
                     call that URL directly",
                    redact(url.as_str())
                ));
            }
            (self.method.clone(), self.body)
        } else if self.method == Method::HEAD {
            (Method::HEAD, None)
        } else {
            (Method::GET, None)
        };
        Ok(Some(Hop {
            method,
            url,
            body,
            plan_origin: self.plan_origin && same_origin,
        }))
    }

    /// `GET http://host/path`, and where a redirect led, for messages (userinfo redacted).
    fn describe(&self, request: &HttpRequest) -> String {
        let first = redact(&request.url);
        if Url::parse(&request.url).is_ok_and(|url| url == self.url) {
            format!("{} {first}", request.method)
        } else {
            let here = redact(self.url.as_str());
            format!(
                "{} {first} (redirected to {} {here})",
                request.method, self.method
            )
        }
    }

    /// A permanent failure of this hop.
    fn fail(&self, request: &HttpRequest, why: &str) -> StepError {
        StepError::fatal(format!("{}: {why}", self.describe(request)))
    }
}

/// Send one hop, after the egress policy has checked its URL (names are checked again, with
/// their addresses, when the client resolves them).
async fn send(
    client: &EgressClient,
    request: &HttpRequest,
    hop: &Hop<'_>,
    key: &str,
    deadline: Instant,
) -> Result<Response, StepError> {
    let destination = egress::Destination::of(&hop.method, &hop.url);
    client
        .policy()
        .check(&hop.url, destination)
        .map_err(refused)?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(StepError::retryable(format!(
            "{}: timed out",
            hop.describe(request)
        )));
    }
    let mut builder = client
        .http()
        .request(hop.method.clone(), hop.url.clone())
        .timeout(remaining)
        .header("Idempotency-Key", key);
    // A plan that sets its own trace context keeps it; otherwise the callee joins the step's.
    let plan_traces = hop.plan_origin
        && request
            .headers
            .keys()
            .any(|name| name.eq_ignore_ascii_case(TRACEPARENT));
    if !plan_traces {
        builder = builder.headers(egress::trace_headers());
    }
    if hop.plan_origin {
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
    }
    if let Some(body) = hop.body {
        builder = builder.json(body);
    }
    if destination.is_health_probe() {
        builder = builder.header(reqwest::header::CONNECTION, "close");
    }
    egress::to(destination, builder.send()).await.map_err(|e| {
        if let Some(refusal) = source_of::<Refused>(&e) {
            return refused(refusal.clone());
        }
        let (kind, retryable) = if e.is_builder() {
            ("invalid request", false)
        } else if e.is_timeout() {
            ("timed out", true)
        } else if e.is_connect() {
            ("could not connect", true)
        } else {
            ("request failed", true)
        };
        let message = format!("{}: {kind}: {}", hop.describe(request), causes(e));
        if retryable {
            StepError::retryable(message)
        } else {
            StepError::fatal(message)
        }
    })
}

/// A refusal by the egress policy: permanent, since the same destination stays refused.
fn refused(refusal: Refused) -> StepError {
    StepError::fatal(refusal.to_string())
}

/// Read a response body of at most [`MAX_RESPONSE_BYTES`].
async fn read_body(mut response: Response) -> Result<Vec<u8>, StepError> {
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
            Ok(None) => return Ok(bytes),
            Err(e) => {
                return Err(StepError::retryable(format!(
                    "reading the response failed: {}",
                    causes(e)
                )))
            }
        }
    }
}

/// An error of the client and its causes, `outer: inner: ...`, without the URL (the caller
/// names it, redacted).
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The first error of type `T` in `e`'s chain of causes.
fn source_of<T: std::error::Error + 'static>(e: &reqwest::Error) -> Option<&T> {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<T>() {
            return Some(found);
        }
        source = cause.source();
    }
    None
}

/// `url` with any userinfo replaced by `***`, for messages and logs.
fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("***");
            parsed.into()
        }
        Ok(_) => url.to_owned(),
        // Not a URL: keep only what cannot hold a secret.
        Err(_) => "<invalid URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn userinfo_is_redacted() {
        assert_eq!(
            redact("http://user:pass@host:8/p?q"),
            "http://***@host:8/p?q"
        );
        assert_eq!(redact("https://token@host/"), "https://***@host/");
        assert_eq!(redact("http://:pw@host/"), "http://***@host/");
        assert_eq!(redact("http://host/a"), "http://host/a");
        assert_eq!(redact("http//user:pass@host"), "<invalid URL>");
    }
}
