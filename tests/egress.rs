//! The egress policy of plan HTTP steps (issue 9, item 14): the server's own address in every
//! spelling (a `HEAD` of its `/healthz` excepted: the dashboard's sample plan makes it), link-local and cloud-metadata addresses, `HYPERCODE_EGRESS_DENY` and
//! `HYPERCODE_EGRESS_ALLOW`, and redirects, followed hop by hop: a hop to a refused address is
//! refused, a hop to another origin carries none of the plan's headers and no `Referer`.
//!
//! A refusal is a permanent step failure: one attempt despite a retry policy, with a message
//! that names the egress policy.

mod common;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use common::*;
use serde_json::{json, Map, Value};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A local server for redirects: `/redirect?to=URL&status=N` answers N (302 by default) with
/// `Location: URL`; `/echo` answers 200 with the method, headers and body it received. Every
/// request is recorded as `METHOD /path`, and the headers `/echo` received are kept too (what the
/// API shows of an echo is redacted, so the probe's own record is the evidence).
struct Probe {
    base: String,
    state: Arc<ProbeState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProbeState {
    seen: Mutex<Vec<String>>,
    echoed: Mutex<Vec<Map<String, Value>>>,
}

impl Probe {
    async fn start() -> Probe {
        let state: Arc<ProbeState> = Arc::default();
        let app = Router::new()
            .route("/redirect", any(redirect))
            .route("/echo", any(echo))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the probe");
        let base = format!("http://{}", listener.local_addr().expect("probe address"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("probe server");
        });
        Probe { base, state, task }
    }

    /// A URL on this probe that redirects with `status` to `to`.
    fn redirect(&self, status: u16, to: &str) -> String {
        let mut url = reqwest::Url::parse(&format!("{}/redirect", self.base)).expect("url");
        url.query_pairs_mut()
            .append_pair("to", to)
            .append_pair("status", &status.to_string());
        url.into()
    }

    fn echo(&self) -> String {
        format!("{}/echo", self.base)
    }

    fn seen(&self) -> Vec<String> {
        self.state.seen.lock().expect("probe lock").clone()
    }

    /// The headers of the last request `/echo` received.
    fn last_echoed(&self) -> Value {
        let echoed = self.state.echoed.lock().expect("probe lock");
        Value::Object(echoed.last().cloned().expect("an echoed request"))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(serde::Deserialize)]
struct Target {
    to: String,
    status: Option<u16>,
}

async fn redirect(
    State(state): State<Arc<ProbeState>>,
    method: Method,
    Query(target): Query<Target>,
) -> Response {
    state
        .seen
        .lock()
        .expect("probe lock")
        .push(format!("{method} /redirect"));
    let status = StatusCode::from_u16(target.status.unwrap_or(302)).expect("a status");
    (status, [("location", target.to)]).into_response()
}

async fn echo(
    State(state): State<Arc<ProbeState>>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    state
        .seen
        .lock()
        .expect("probe lock")
        .push(format!("{method} /echo"));
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), Value::String(value))
        })
        .collect();
    state
        .echoed
        .lock()
        .expect("probe lock")
        .push(headers.clone());
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    axum::Json(json!({ "method": method.as_str(), "headers": headers, "body": body }))
        .into_response()
}

/// One API server that runs plans itself (`serve --worker`), with these extra variables.
async fn deployment(env: Vec<(&'static str, String)>) -> Harness {
    Harness::with(Options {
        workers: 0,
        serve_with_worker: true,
        env,
        ..Default::default()
    })
    .await
}

/// The API's port.
fn api_port(h: &Harness) -> u16 {
    reqwest::Url::parse(&h.base)
        .expect("the API's URL")
        .port()
        .expect("an explicit port")
}

/// A one-step plan calling `url` (GET) that would be retried 5 times if retryable.
fn call(url: &str) -> Value {
    json!([{
        "name": "a",
        "http": { "url": url, "timeout_ms": 5000 },
        "retry": { "max_attempts": 5, "initial_backoff_ms": 50, "max_backoff_ms": 100 }
    }])
}

/// Run a one-step plan and require a permanent failure after one attempt, refused by the
/// egress policy; returns the step's error message.
async fn assert_refused(h: &Harness, steps: Value) -> String {
    let id = id_of(&h.submit(steps).await);
    let mission = h.wait_terminal(&id, "failed", secs(30)).await;
    let a = step(&mission, "a");
    assert_eq!(a["attempts"], 1, "a refusal is not retried: {}", pretty(a));
    assert_eq!(a["error"]["retryable"], false, "{}", pretty(a));
    let message = a["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("egress policy refused"),
        "the message names the egress policy: {message}"
    );
    message
}

/// Run a plan and require success; returns the output of step `a`.
async fn assert_succeeds(h: &Harness, steps: Value) -> Value {
    let id = id_of(&h.submit(steps).await);
    let mission = h.wait_terminal(&id, "succeeded", secs(30)).await;
    step(&mission, "a")["output"].clone()
}

/// Every spelling of the server's own address is refused, whether the URL holds an IP literal
/// (`2130706433`, `0x7f.1`, an IPv4-mapped IPv6 address, `0.0.0.0`) or a name that resolves to
/// it; other loopback ports stay callable, by address and by name.
#[tokio::test]
async fn the_servers_own_address_is_refused_in_every_spelling() {
    let h = deployment(Vec::new()).await;
    let port = api_port(&h);
    for host in [
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "0.0.0.0",
        "localhost",
    ] {
        let url = format!("http://{host}:{port}/healthz");
        let message = assert_refused(&h, call(&url)).await;
        assert!(
            message.contains("the HyperCode server's own address"),
            "{url}: {message}"
        );
    }
    let callee = reqwest::Url::parse(&h.callee.base).expect("callee URL");
    let by_name = format!("http://localhost:{}/items/1", callee.port().expect("port"));
    for url in [h.callee.url("/items/1"), by_name] {
        assert_eq!(
            assert_succeeds(&h, call(&url)).await["status"],
            200,
            "{url}"
        );
    }
}

/// A `hypercode worker` process refuses the server's address too: it reads it from
/// `HYPERCODE_LISTEN`, as `serve` does.
#[tokio::test]
async fn a_worker_process_refuses_the_server_address_from_hypercode_listen() {
    let h = Harness::with(Options {
        workers: 0,
        ..Default::default()
    })
    .await;
    let address = h.base.trim_start_matches("http://").to_owned();
    let log = std::fs::File::create(h.dir.join("egress-worker.log")).expect("worker log");
    let _worker = h
        .command(&["worker"])
        .env("HYPERCODE_LISTEN", &address)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn a worker");
    let port = api_port(&h);
    for url in [
        format!("http://127.0.0.1:{port}/healthz"),
        format!("http://2130706433:{port}/healthz"),
        format!("http://localhost:{port}/healthz"),
    ] {
        let message = assert_refused(&h, call(&url)).await;
        assert!(message.contains("own address"), "{url}: {message}");
    }
    assert_eq!(
        assert_succeeds(&h, call(&h.callee.url("/items/1"))).await["status"],
        200
    );
}

/// Link-local addresses and the cloud metadata endpoints are refused before any connection:
/// at once, after one attempt, with the policy's message (a connection attempt to these would
/// time out or fail as retryable instead).
#[tokio::test]
async fn link_local_and_metadata_addresses_are_refused_without_connecting() {
    let h = deployment(Vec::new()).await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.170.2/v2/credentials",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fe80::1]:8080/",
        "http://[::ffff:169.254.169.254]/",
    ] {
        let started = std::time::Instant::now();
        let message = assert_refused(&h, call(url)).await;
        assert!(
            started.elapsed() < secs(10),
            "{url} took {:?}",
            started.elapsed()
        );
        assert!(
            message.contains("link-local") || message.contains("metadata"),
            "{url}: {message}"
        );
    }
}

/// `HYPERCODE_EGRESS_DENY` closes CIDRs (here loopback, so the otherwise allowed callee) and
/// wins over `HYPERCODE_EGRESS_ALLOW` naming the same range.
#[tokio::test]
async fn deny_list_cidrs_refuse_an_otherwise_allowed_callee_and_win_over_allow() {
    let h = deployment(vec![
        ("HYPERCODE_EGRESS_DENY", "127.0.0.0/8, ::1/128".to_owned()),
        ("HYPERCODE_EGRESS_ALLOW", "127.0.0.0/8".to_owned()),
    ])
    .await;
    let port = reqwest::Url::parse(&h.callee.base)
        .expect("callee URL")
        .port()
        .expect("port");
    for url in [
        h.callee.url("/items/1"),
        format!("http://localhost:{port}/items/1"),
    ] {
        let message = assert_refused(&h, call(&url)).await;
        assert!(
            message.contains("HYPERCODE_EGRESS_DENY"),
            "{url}: {message}"
        );
    }
    assert!(h.callee.requests().is_empty(), "{}", h.callee.describe());
}

/// `HYPERCODE_EGRESS_DENY` of a host name refuses that name (and only it: the same callee by
/// address is allowed).
#[tokio::test]
async fn deny_list_host_names_refuse_that_name() {
    let h = deployment(vec![("HYPERCODE_EGRESS_DENY", "LocalHost".to_owned())]).await;
    let port = reqwest::Url::parse(&h.callee.base)
        .expect("callee URL")
        .port()
        .expect("port");
    let message = assert_refused(&h, call(&format!("http://localhost:{port}/items/1"))).await;
    assert!(message.contains("HYPERCODE_EGRESS_DENY"), "{message}");
    assert_eq!(
        assert_succeeds(&h, call(&h.callee.url("/items/1"))).await["status"],
        200
    );
    assert_eq!(h.callee.requests().len(), 1, "{}", h.callee.describe());
}

/// `HYPERCODE_EGRESS_ALLOW` re-opens an address the default policy refuses (here the server's
/// own, so a plan may call the HyperCode API).
#[tokio::test]
async fn allow_list_reopens_a_default_refusal() {
    let h = deployment(vec![("HYPERCODE_EGRESS_ALLOW", "127.0.0.1/32".to_owned())]).await;
    let url = format!("http://127.0.0.1:{}/healthz", api_port(&h));
    assert_eq!(assert_succeeds(&h, call(&url)).await["status"], 200);
}

/// A redirect is checked at every hop: one to the server's own address or to the metadata
/// address is refused there, after the redirector's single answer.
#[tokio::test]
async fn a_redirect_to_a_refused_address_is_refused_at_the_hop() {
    let h = deployment(Vec::new()).await;
    let probe = Probe::start().await;
    let own = format!("http://127.0.0.1:{}/healthz", api_port(&h));
    let hop = probe.redirect(302, &probe.redirect(307, &own));
    let message = assert_refused(&h, call(&hop)).await;
    assert!(message.contains("own address"), "{message}");
    let message = assert_refused(
        &h,
        call(&probe.redirect(301, "http://169.254.169.254/latest/")),
    )
    .await;
    assert!(message.contains("link-local"), "{message}");
    assert_eq!(
        probe.seen(),
        ["GET /redirect", "GET /redirect", "GET /redirect"],
        "one request per hop, none retried"
    );
}

/// The plan's headers, as a plan would send them to an agent.
fn plan_headers() -> Value {
    json!({
        "X-API-Key": "hc_secret_key",
        "Authorization": "Bearer secret-token",
        "X-Token": "secret",
        "X-Custom": "custom"
    })
}

/// A redirect to another origin (another port on 127.0.0.1 counts) arrives without any of the
/// plan's headers and without `Referer`; the `Idempotency-Key` (the product's, not the plan's)
/// still travels. A same-origin redirect keeps the plan's headers.
#[tokio::test]
async fn a_cross_origin_redirect_drops_the_plans_headers_and_sends_no_referer() {
    let h = deployment(Vec::new()).await;
    let (first, second) = (Probe::start().await, Probe::start().await);
    let headers_at =
        |url: String| json!([{ "name": "a", "http": { "url": url, "headers": plan_headers() } }]);

    assert_succeeds(&h, headers_at(first.redirect(302, &second.echo()))).await;
    let received = &second.last_echoed();
    for name in [
        "x-api-key",
        "authorization",
        "x-token",
        "x-custom",
        "referer",
    ] {
        assert!(received.get(name).is_none(), "{name} leaked: {received}");
    }
    assert!(received.get("idempotency-key").is_some(), "{received}");
    assert_eq!(second.seen(), ["GET /echo"]);

    assert_succeeds(&h, headers_at(first.redirect(307, "/echo"))).await;
    let received = &first.last_echoed();
    assert_eq!(received["x-api-key"], "hc_secret_key", "{received}");
    assert_eq!(received["authorization"], "Bearer secret-token");
    assert_eq!(received["x-token"], "secret");
    assert_eq!(received["x-custom"], "custom");
    assert!(received.get("referer").is_none(), "{received}");
}

/// Methods and bodies across redirects: 307 and 308 keep them on the same origin; 301, 302 and
/// 303 after a POST become a GET without a body; a 307 that would re-send the body to
/// another origin is refused as a permanent failure.
#[tokio::test]
async fn redirects_keep_the_body_only_on_the_same_origin() {
    let h = deployment(Vec::new()).await;
    let (first, second) = (Probe::start().await, Probe::start().await);
    let post = |url: String| {
        json!([{
            "name": "a",
            "http": { "method": "POST", "url": url, "body": { "n": 1 } },
            "retry": { "max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 100 }
        }])
    };
    for status in [307, 308] {
        let output = assert_succeeds(&h, post(first.redirect(status, "/echo"))).await;
        assert_eq!(output["body"]["method"], "POST", "{status}: {output}");
        assert_eq!(
            output["body"]["body"],
            json!({ "n": 1 }),
            "{status}: {output}"
        );
    }
    for status in [301, 302, 303] {
        let output = assert_succeeds(&h, post(first.redirect(status, &second.echo()))).await;
        assert_eq!(output["body"]["method"], "GET", "{status}: {output}");
        assert_eq!(output["body"]["body"], Value::Null, "{status}: {output}");
    }
    let id = id_of(&h.submit(post(first.redirect(307, &second.echo()))).await);
    let mission = h.wait_terminal(&id, "failed", secs(30)).await;
    let a = step(&mission, "a");
    assert_eq!(a["attempts"], 1, "{}", pretty(a));
    assert!(
        a["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("another origin")),
        "{}",
        pretty(a)
    );
    assert_eq!(second.seen(), ["GET /echo", "GET /echo", "GET /echo"]);
}

/// A URL's userinfo never appears in a step's error message, whether the callee answered (a
/// 400) or could not be reached.
#[tokio::test]
async fn error_messages_redact_url_userinfo() {
    let h = deployment(Vec::new()).await;
    let answered = h
        .callee
        .url("/fail")
        .replace("http://", "http://agent:hunter2@");
    for url in [answered, "http://agent:hunter2@127.0.0.1:1/x".to_owned()] {
        let steps = json!([{
            "name": "a",
            "http": { "url": url, "timeout_ms": 5000 },
            "retry": { "max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 100 }
        }]);
        let id = id_of(&h.submit(steps).await);
        let mission = h.wait_terminal(&id, "failed", secs(30)).await;
        let message = step(&mission, "a")["error"]["message"].to_string();
        assert!(message.contains("127.0.0.1"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!message.contains("agent"), "{message}");
    }
}

/// A request the client cannot build (here a header value that a template filled with CR/LF)
/// is a permanent failure, not retried.
#[tokio::test]
async fn an_invalid_request_is_a_permanent_failure() {
    let h = deployment(Vec::new()).await;
    let id = id_of(
        &h.submit(json!([
            { "name": "a", "http": { "url": h.callee.url("/items/x%0D%0AEvil:%20yes") } },
            {
                "name": "b",
                "http": {
                    "url": h.callee.url("/items/2"),
                    "headers": { "X-Id": "{{steps.a.output.body.id}}" }
                },
                "retry": { "max_attempts": 5, "initial_backoff_ms": 50, "max_backoff_ms": 100 }
            }
        ]))
        .await,
    );
    let mission = h.wait_terminal(&id, "failed", secs(30)).await;
    let b = step(&mission, "b");
    assert_eq!(b["attempts"], 1, "{}", pretty(b));
    assert_eq!(b["error"]["retryable"], false, "{}", pretty(b));
    assert!(
        h.callee.to_path("/items/2").is_empty(),
        "{}",
        h.callee.describe()
    );
}

/// The one call a plan may make to the server itself is a `HEAD` of its `/healthz`. A `GET` of
/// the same URL by the same name right after it is refused: the probe's connection is not kept
/// for other requests to reuse.
#[tokio::test]
async fn a_head_of_the_servers_own_healthz_is_the_one_call_let_through() {
    let h = deployment(Vec::new()).await;
    let port = api_port(&h);
    let healthz = format!("http://localhost:{port}/healthz");
    let id = id_of(
        &h.submit(json!([
            { "name": "probe", "http": { "method": "HEAD", "url": healthz } },
            { "name": "a", "http": { "url": healthz },
              "retry": { "max_attempts": 5, "initial_backoff_ms": 50, "max_backoff_ms": 100 } }
        ]))
        .await,
    );
    let mission = h.wait_terminal(&id, "failed", secs(30)).await;
    let probe = step(&mission, "probe");
    assert_eq!(probe["status"], "succeeded", "{}", pretty(probe));
    assert_eq!(probe["output"]["status"], 200, "{}", pretty(probe));
    let a = step(&mission, "a");
    assert_eq!(a["attempts"], 1, "{}", pretty(a));
    let message = a["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("egress policy refused") && message.contains("own address"),
        "{message}"
    );
    for url in [
        format!("http://127.0.0.1:{port}/readyz"),
        format!("http://127.0.0.1:{port}/healthz?verbose=1"),
        format!("http://2130706433:{port}/api/v1/missions"),
    ] {
        let message = assert_refused(
            &h,
            json!([{ "name": "a", "http": { "method": "HEAD", "url": url } }]),
        )
        .await;
        assert!(message.contains("own address"), "{url}: {message}");
    }
}

/// The text of the submit page's editor, unescaped.
fn editor_text(html: &str) -> String {
    let start = html.find("name=\"input\"").expect("the editor");
    let open = start + html[start..].find('>').expect("the textarea's tag ends");
    let close = open + html[open..].find("</textarea>").expect("the textarea ends");
    html[open + 1..close]
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The dashboard's sample plan calls the server at the address the browser used, and runs: its
/// `check` step succeeds (the mission then waits for its sign-off).
#[tokio::test]
async fn the_dashboards_sample_plan_probes_this_server_and_runs() {
    let h = deployment(Vec::new()).await;
    let mut browser = h.signed_in(&h.key).await;
    let sample: Value = serde_json::from_str(&editor_text(&browser.get("/submit").await.body))
        .expect("the sample plan is JSON");
    let check = &sample["steps"][0]["http"];
    assert_eq!(check["url"], format!("{}/healthz", h.base), "{sample}");
    assert_eq!(check["method"], "HEAD", "{sample}");
    let id = id_of(&h.submit(sample["steps"].clone()).await);
    let mission = h
        .wait_until(
            &id,
            "past its check",
            |m| step_is(m, "check", "succeeded"),
            secs(30),
        )
        .await;
    assert_eq!(step(&mission, "check")["output"]["status"], 200);
    assert_eq!(h.cancel(&id).await.status, 202);
}

/// With `HYPERCODE_INTERNAL_URL` (compose sets `http://api:8000`) the sample plan calls that
/// address, and the egress policy counts its host name as the server: refused but for the probe.
#[tokio::test]
async fn the_internal_url_is_the_samples_address_and_counts_as_the_server() {
    let h = deployment(vec![(
        "HYPERCODE_INTERNAL_URL",
        "http://hypercode-api.internal:8123".to_owned(),
    )])
    .await;
    let mut browser = h.signed_in(&h.key).await;
    let sample: Value = serde_json::from_str(&editor_text(&browser.get("/submit").await.body))
        .expect("the sample plan is JSON");
    assert_eq!(
        sample["steps"][0]["http"]["url"],
        "http://hypercode-api.internal:8123/healthz"
    );
    let message = assert_refused(
        &h,
        call("http://hypercode-api.internal:9999/api/v1/missions"),
    )
    .await;
    assert!(
        message.contains("hypercode-api.internal") && message.contains("own address"),
        "refused by name, before any lookup: {message}"
    );
}
