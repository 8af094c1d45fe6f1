//! Traces and logs end to end. Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a real
//! OTLP/HTTP receiver in this test (protobuf `ExportTraceServiceRequest`s on `POST /v1/traces`),
//! the api exports the span of each request (continuing the client's `traceparent`) and the
//! worker the span of each mission run with its steps as children, and an HTTP step hands its
//! span to the callee as `traceparent`. Logs: `HYPERCODE_LOG_FORMAT=json` writes one JSON
//! object per line, each line inside a mission naming the mission (and the step, inside one).

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// A span as received, with the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// An OTLP/HTTP trace receiver on loopback.
struct Receiver {
    endpoint: String,
    spans: Spans,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans = Spans::default();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
        Receiver { endpoint, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("spans lock").clone()
    }

    /// Waits for the first span that `pred` accepts.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        let pred = &pred;
        poll(secs(20), move || async move {
            self.spans().into_iter().find(|s| pred(s)).ok_or(())
        })
        .await
        .unwrap_or_else(|()| {
            let names: Vec<String> = self.spans().iter().map(|s| s.span.name.clone()).collect();
            panic!("no {what} span arrived; received: {names:?}")
        })
    }
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> impl axum::response::IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    let mut received = spans.lock().expect("spans lock");
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn text(value: &Any) -> Option<String> {
    match value {
        Any::StringValue(s) => Some(s.clone()),
        Any::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The attribute `key` of `span`, as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn requests_missions_and_steps_are_traced_and_http_steps_pass_the_trace_on() {
    let receiver = Receiver::start().await;
    let h = Harness::with(Options {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ],
        ..Options::default()
    })
    .await;

    // Probes make no traces.
    let probe = h.send(h.request(reqwest::Method::GET, "/healthz")).await;
    assert_eq!(probe.status, 200);

    // The client's own trace: the API's request span continues it.
    let (client_trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let reply = h
        .send(
            h.request(reqwest::Method::POST, "/api/v1/missions")
                .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
                .json(&json!({ "workflow": "plan", "input": { "steps": [
                    { "name": "call", "http": { "method": "POST", "url": h.callee.url("/ok") } },
                    { "name": "done", "noop": {} }
                ] } })),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let id = id_of(&reply.body);
    h.wait_terminal(&id, "succeeded", secs(30)).await;

    let request = receiver
        .wait_for("request", |s| s.span.name == "POST /api/v1/missions")
        .await;
    assert_eq!(request.service, "hypercode");
    assert_eq!(hex(&request.span.trace_id), client_trace);
    assert_eq!(hex(&request.span.parent_span_id), client_span);
    assert_eq!(
        attribute(&request.span, "http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(
        attribute(&request.span, "http.route").as_deref(),
        Some("/api/v1/missions")
    );

    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| !s.span.name.ends_with("/healthz")),
        "a probe was traced"
    );

    let mission = receiver
        .wait_for("mission", |s| {
            s.span.name == "mission plan" && attribute(&s.span, "mission").as_deref() == Some(&id)
        })
        .await;
    assert!(
        mission.span.parent_span_id.is_empty(),
        "a run is a trace of its own"
    );
    let worker = attribute(&mission.span, "worker").expect("the worker that ran it");
    let history = h.history(&id).await;
    let started = history
        .iter()
        .find(|e| e["type"] == "mission_started")
        .expect("a mission_started event");
    assert_eq!(started["data"]["worker"].as_str(), Some(worker.as_str()));

    let step = receiver
        .wait_for("step", |s| {
            s.span.name == "step call" && s.span.trace_id == mission.span.trace_id
        })
        .await;
    assert_eq!(step.span.parent_span_id, mission.span.span_id);
    assert_eq!(attribute(&step.span, "step").as_deref(), Some("call"));
    assert_eq!(attribute(&step.span, "kind").as_deref(), Some("task"));

    // The callee joined the step's trace, as the step's child.
    let called = h.callee.to_path("/ok");
    assert_eq!(called.len(), 1, "{}", h.callee.describe());
    assert_eq!(
        called[0].traceparent.as_deref(),
        Some(
            format!(
                "00-{}-{}-01",
                hex(&step.span.trace_id),
                hex(&step.span.span_id)
            )
            .as_str()
        )
    );

    // A plan that sets its own traceparent keeps it.
    let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mission = h
        .submit(json!([{ "name": "mine", "http": {
            "method": "GET", "url": h.callee.url("/items/7"), "headers": { "traceparent": own }
        } }]))
        .await;
    h.wait_terminal(&id_of(&mission), "succeeded", secs(30))
        .await;
    let called = h.callee.to_path("/items/7");
    assert_eq!(called.len(), 1, "{}", h.callee.describe());
    assert_eq!(called[0].traceparent.as_deref(), Some(own));
}

/// The JSON lines of a log file; panics on a line that is not one JSON object.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(path).expect("read the log");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => object,
            _ => panic!("not one JSON object per line: {line}"),
        })
        .collect()
}

#[tokio::test]
async fn json_logs_name_the_mission_and_step_on_every_line_inside_a_mission() {
    let h = Harness::with(Options {
        env: vec![
            ("HYPERCODE_LOG_FORMAT", "json".to_owned()),
            // Debug, so the HTTP client's own lines inside a step are in the log too.
            ("HYPERCODE_LOG", "debug,sqlx=warn,apalis=info".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let retry = json!({ "max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 10 });
    let mission = h
        .submit(json!([
            { "name": "flaky", "http": { "method": "POST", "url": h.callee.url("/flaky/1") }, "retry": retry },
            { "name": "done", "noop": {} }
        ]))
        .await;
    let id = id_of(&mission);
    h.wait_terminal(&id, "succeeded", secs(30)).await;
    // Without an OTLP endpoint nothing is traced, so nothing is passed on.
    let calls = h.callee.to_path("/flaky/1");
    assert_eq!(calls.len(), 2, "{}", h.callee.describe());
    assert!(calls.iter().all(|c| c.traceparent.is_none()), "{calls:?}");

    let lines = json_lines(&h.workers[0].log);
    assert!(!lines.is_empty());
    let mut in_mission = 0;
    let mut in_step = 0;
    let mut retried = false;
    for line in &lines {
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(line.contains_key(key), "no `{key}`: {line:?}");
        }
        let spans = line
            .get("spans")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mission_span = spans.iter().find(|s| s["name"] == "mission");
        let step_span = spans.iter().find(|s| s["name"] == "step");
        if let Some(span) = mission_span {
            in_mission += 1;
            assert_eq!(line.get("mission"), Some(&span["mission"]), "{line:?}");
        }
        if let Some(span) = step_span {
            in_step += 1;
            assert_eq!(line.get("step"), Some(&span["step"]), "{line:?}");
        }
        if line.get("mission") == Some(&json!(id))
            && line["fields"]["message"] == "step failed; retry scheduled"
        {
            assert_eq!(line.get("step"), Some(&json!("flaky")), "{line:?}");
            retried = true;
        }
    }
    assert!(retried, "no retry line for mission {id}");
    assert!(in_mission > 0 && in_step > 0, "{in_mission} {in_step}");
    // The api's lines are JSON too.
    let serve = h.serve.as_ref().expect("the api process");
    assert!(!json_lines(&serve.log).is_empty());
}
