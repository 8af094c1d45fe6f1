//! The span of every request: named `METHOD /route` (the matched pattern, so ids make no
//! names of their own), with the mission id when the path names one, and continuing the
//! caller's trace when the request carries a W3C `traceparent`. Whether spans are exported is
//! the binary's choice (`OTEL_EXPORTER_OTLP_ENDPOINT`); without an exporter the context calls
//! here do nothing.

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use hypercode_engine::MissionId;
use opentelemetry_http::HeaderExtractor;
use std::time::Duration;
use tower_http::trace::{DefaultOnResponse, OnResponse as _};
use tracing::{field, Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Whether requests to `path` log at `debug` only, below what is logged by default and what is
/// exported: probes and scrapes (machines asking every few seconds), the dashboard's assets and
/// favicon (one request per page load each), and the long-lived event and log streams (one
/// per reconnect of every open tab).
fn is_quiet(path: &str) -> bool {
    path.starts_with("/assets/")
        || matches!(
            path,
            "/healthz"
                | "/readyz"
                | "/metrics"
                | "/favicon.ico"
                | "/favicon.svg"
                | "/api/v1/events"
                | "/api/v1/logs/stream"
        )
}

/// The span of `request`.
pub(crate) fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    // One field list for both levels (a span's level must be a constant at its call site).
    macro_rules! span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "http",
                method = %request.method(),
                path = %request.uri().path(),
                mission = field::Empty,
                otel.name = format!("{} {route}", request.method()),
                otel.kind = "server",
                http.route = route,
                http.response.status_code = field::Empty,
                otel.status_code = field::Empty,
            )
        };
    }
    let span = if is_quiet(request.uri().path()) {
        span!(Level::DEBUG)
    } else {
        span!(Level::INFO)
    };
    if let Some(id) = mission_in_path(request.uri().path()) {
        span.record("mission", field::display(id));
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    // Fails only without the OpenTelemetry layer (no exporter): then there is no trace to join.
    let _ = span.set_parent(parent);
    span
}

/// Records the status on the request's span (a server error marks it failed), then logs the
/// response as tower-http does, at the span's level: a quiet path's line is `debug`.
pub(crate) fn on_response(response: &Response, latency: Duration, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let level = match span.metadata() {
        Some(meta) if *meta.level() <= Level::INFO => Level::INFO,
        _ => Level::DEBUG,
    };
    DefaultOnResponse::new()
        .level(level)
        .on_response(response, latency, span);
}

/// The mission id in a `/api/v1/missions/{id}/...` path, for the request span.
fn mission_in_path(path: &str) -> Option<MissionId> {
    path.strip_prefix("/api/v1/missions/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mission_ids_are_found_in_paths() {
        let id = "0190a7c4-7bde-7cc2-9a5e-3f1b2c3d4e5f";
        for path in [
            format!("/api/v1/missions/{id}"),
            format!("/api/v1/missions/{id}/history"),
            format!("/api/v1/missions/{id}/approvals/deploy"),
        ] {
            assert_eq!(
                mission_in_path(&path).map(|m| m.to_string()).as_deref(),
                Some(id)
            );
        }
        assert_eq!(mission_in_path("/api/v1/missions"), None);
        assert_eq!(mission_in_path("/api/v1/missions/"), None);
        assert_eq!(mission_in_path("/api/v1/missions/nope"), None);
        assert_eq!(mission_in_path("/healthz"), None);
    }

    #[test]
    fn assets_streams_and_probes_are_quiet_and_api_calls_are_not() {
        for path in [
            "/assets/app.js",
            "/favicon.svg",
            "/api/v1/events",
            "/healthz",
            "/metrics",
        ] {
            assert!(is_quiet(path), "{path}");
        }
        for path in ["/api/v1/missions", "/missions", "/", "/api/v1/events/x"] {
            assert!(!is_quiet(path), "{path}");
        }
    }
}
