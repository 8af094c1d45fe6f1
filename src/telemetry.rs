//! The process's logs and traces: one `tracing` subscriber whose log lines go to stderr
//! (`HYPERCODE_LOG` filters them, `HYPERCODE_LOG_FORMAT=json` makes them one JSON object per
//! line) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, whose `http`, `mission` and `step` spans are exported over OTLP/HTTP (protobuf) with the
//! W3C trace-context propagator installed, so incoming requests continue their caller's trace
//! and HTTP steps hand theirs on (`traceparent`).
//!
//! The log filter never decides what is traced: a quiet `HYPERCODE_LOG=warn` still exports the
//! spans an operator asked for with the endpoint.

use anyhow::{Context as _, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// The crates whose spans are traced (their `info` spans: requests, missions, steps).
const TRACED: [&str; 6] = [
    "hypercode",
    "hypercode_api",
    "hypercode_engine",
    "hypercode_workers",
    "hypercode_workflows",
    "hypercode_healer",
];

/// The service name when `OTEL_SERVICE_NAME` does not give one.
const SERVICE: &str = "hypercode";

/// How long the last export may hold up the process's exit (a collector out of reach must
/// not eat a container's stop grace period).
const FLUSH: Duration = Duration::from_secs(3);

/// Flushes the spans not yet exported when the process ends.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Export what is buffered and stop the exporter (a no-op without traces). Blocks on the
    /// exporter's thread, so it is called once, on the way out.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces {
            if let Err(e) = provider.shutdown_with_timeout(FLUSH) {
                eprintln!("exporting the last spans failed: {e}");
            }
        }
    }
}

/// Installs the subscriber. Fails only on a malformed OTLP endpoint.
pub fn init() -> Result<Telemetry> {
    let filter = EnvFilter::try_from_env("HYPERCODE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colour codes only for a person at a terminal: in a log file or a collector they are noise.
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let logs = if std::env::var("HYPERCODE_LOG_FORMAT").as_deref() == Ok("json") {
        text.fmt_fields(JsonFields::new())
            .event_format(MissionJson(tracing_subscriber::fmt::format().json()))
            .with_filter(filter)
            .boxed()
    } else {
        text.with_filter(filter).boxed()
    };
    let traces = exporter()?;
    let otel = traces.as_ref().map(|provider| {
        let targets = TRACED.iter().fold(Targets::new(), |t, target| {
            t.with_target(*target, Level::INFO)
        });
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE))
            .with_filter(targets)
    });
    tracing_subscriber::registry().with(logs).with(otel).init();
    Ok(Telemetry { traces })
}

/// The OTLP span exporter, when an endpoint is configured; also installs the W3C propagator
/// that `hypercode_api` (incoming `traceparent`) and the plans' HTTP client (outgoing) use.
fn exporter() -> Result<Option<SdkTracerProvider>> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
    if !configured {
        return Ok(None);
    }
    // The endpoint, headers and timeout come from the standard OTEL_EXPORTER_OTLP_* variables.
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: building the OTLP/HTTP span exporter")?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| SERVICE.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Some(provider))
}

/// tracing-subscriber's JSON lines with the mission and step they belong to lifted to the top
/// (`"mission"`, `"step"`), from the event's own fields or else its innermost span that names
/// them: a collector filters one mission's lines without knowing the span layout.
struct MissionJson(Format<Json>);

impl<S, N> FormatEvent<S, N> for MissionJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match serde_json::from_str::<Map<String, Value>>(&line) {
            Ok(mut object) => {
                for key in ["mission", "step"] {
                    if let Some(value) = context_field(&object, key) {
                        object.insert(key.to_owned(), value);
                    }
                }
                writeln!(writer, "{}", Value::Object(object))
            }
            // Not expected from the JSON formatter; the line is still worth having as it is.
            Err(_) => writer.write_str(&line),
        }
    }
}

/// `key` from the event's fields, or else from the innermost span in its scope that has it.
fn context_field(line: &Map<String, Value>, key: &str) -> Option<Value> {
    let own = line.get("fields").and_then(|f| f.get(key));
    let spans = line.get("spans").and_then(Value::as_array);
    own.or_else(|| spans?.iter().rev().find_map(|span| span.get(key)))
        .cloned()
}
