//! Secrets in plans stay out of sight: a plan's credential headers, secret body fields and URL
//! userinfo reach the service it calls, but no reader sees them, whatever their role, through
//! any door: the mission and list API, the history, the event stream, the approvals inbox, the
//! dashboard pages, the CLI, and the logs of `serve` and the worker.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use base64::Engine as _;
use common::*;
use serde_json::{json, Map, Value};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

/// The header values and credentials the plan carries; none may be read back.
const AUTHORIZATION: &str = "Bearer auth-9d1c4b";
const API_KEY: &str = "apikey-5e7a21";
const AUTH_TOKEN: &str = "token-3b2f90";
const COOKIE: &str = "session=cookie-8a4d77";
const BODY_PASSWORD: &str = "bodypass-1f0e63";
const URL_PASSWORD: &str = "urlpass-7c3e58";
/// A header that is not a credential: shown as is.
const CUSTOM: &str = "custom-visible-2c6e";

/// Every secret as it could leak: verbatim, and the URL's credentials as the Basic
/// `Authorization` header the HTTP client turns them into.
fn secrets() -> Vec<String> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("agent:{URL_PASSWORD}"));
    [
        AUTHORIZATION,
        API_KEY,
        AUTH_TOKEN,
        COOKIE,
        BODY_PASSWORD,
        URL_PASSWORD,
        &basic,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Assert that `text`, read through `door`, shows none of the secrets.
fn assert_hidden(door: &str, text: &str) {
    for secret in secrets() {
        assert!(
            !text.contains(&secret),
            "{door} shows the secret `{secret}`:\n{text}"
        );
    }
}

/// A service that answers every request with the headers it received (as a callee that echoes
/// its request would), and records them: 200 on `/echo`, 400 anywhere else.
#[derive(Clone, Default)]
struct Echo {
    received: Arc<Mutex<Vec<(String, HeaderMap)>>>,
}

impl Echo {
    async fn start(&self) -> String {
        async fn answer(
            State(echo): State<Echo>,
            uri: axum::http::Uri,
            headers: HeaderMap,
        ) -> (StatusCode, axum::Json<Value>) {
            let shown: Map<String, Value> = headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.to_string(), Value::String(value))
                })
                .collect();
            echo.received
                .lock()
                .expect("echo lock")
                .push((uri.path().to_owned(), headers));
            let status = if uri.path() == "/echo" {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, axum::Json(json!({ "headers": shown })))
        }
        let app = Router::new().fallback(any(answer)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the echo service");
        let address = listener.local_addr().expect("echo address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("127.0.0.1:{}", address.port())
    }

    /// The headers of the request to `path`; panics if none arrived.
    fn headers_of(&self, path: &str) -> HeaderMap {
        self.received
            .lock()
            .expect("echo lock")
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, headers)| headers.clone())
            .unwrap_or_else(|| panic!("the echo service received no request to {path}"))
    }
}

/// GET `path` on the API with `key`; returns the body as text, asserting 200.
async fn read(h: &Harness, key: &str, path: &str) -> String {
    let response = h
        .http
        .get(h.url(path))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("the API answered");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The dashboard pages at `paths`, signed in with `key` through the login form.
async fn dashboard(h: &Harness, key: &str, paths: &[String]) -> Vec<(String, String)> {
    let mut browser = h.signed_in(key).await;
    let mut pages = Vec::new();
    for path in paths {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "GET {path}: {}", page.body);
        pages.push((path.clone(), page.body));
    }
    pages
}

/// `hypercode mission show ID --json` with `key`.
async fn cli_show(h: &Harness, key: &str, id: &str) -> String {
    let output = h
        .command(&["mission", "show", id, "--json"])
        .env_remove("DATABASE_URL")
        .env_remove("HYPERCODE_API_KEY_FILE")
        .env("HYPERCODE_URL", &h.base)
        .env("HYPERCODE_API_KEY", key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run the client");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "mission show failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn plan_secrets_reach_the_callee_and_no_reader() {
    let h = Harness::start().await;
    let viewer = h.create_key("e2e-viewer", "viewer").await;
    let echo = Echo::default();
    let host = echo.start().await;
    let with_userinfo = format!("http://agent:{URL_PASSWORD}@{host}/deny");
    let mission = h
        .submit(json!([
            {
                "name": "call",
                "http": {
                    "method": "POST",
                    "url": format!("http://{host}/echo"),
                    "headers": {
                        "Authorization": AUTHORIZATION,
                        "X-API-Key": API_KEY,
                        "X-Auth-Token": AUTH_TOKEN,
                        "Cookie": COOKIE,
                        "X-Custom": CUSTOM,
                    },
                    "body": { "user": "alice", "password": BODY_PASSWORD },
                }
            },
            { "name": "gate", "approval": { "message": format!("About to call {with_userinfo}") } },
            { "name": "userinfo", "http": { "url": with_userinfo } },
        ]))
        .await;
    let id = id_of(&mission);
    assert_hidden("the submission's answer", &mission.to_string());
    h.wait_status(&id, "waiting", secs(30)).await;

    // Waiting: the inbox lists the mission with its input.
    for (role, key) in [("viewer", &viewer), ("admin", &h.key)] {
        let inbox = read(&h, key, "/api/v1/approvals").await;
        assert!(inbox.contains(&id), "{inbox}");
        assert!(
            inbox.contains("About to call http://[redacted]@"),
            "{inbox}"
        );
        assert_hidden(&format!("GET /api/v1/approvals as {role}"), &inbox);
        for (path, page) in dashboard(&h, key, &["/approvals".to_owned()]).await {
            assert!(page.contains(&id), "{page}");
            assert_hidden(&format!("the dashboard's {path} as {role}"), &page);
        }
    }
    let decided = h.decide(&id, "gate", "approve", "go").await;
    assert_eq!(decided.status, 200, "{decided:?}");
    let mission = h.wait_terminal(&id, "failed", secs(30)).await;

    // The callee received the real values.
    let called = echo.headers_of("/echo");
    for (name, value) in [
        ("authorization", AUTHORIZATION),
        ("x-api-key", API_KEY),
        ("x-auth-token", AUTH_TOKEN),
        ("cookie", COOKIE),
        ("x-custom", CUSTOM),
    ] {
        assert_eq!(
            called.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name} as the callee received it: {called:?}"
        );
    }
    let basic = secrets().pop().unwrap_or_default();
    assert_eq!(
        echo.headers_of("/deny")
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Basic {basic}").as_str()),
        "the URL's credentials reach the callee"
    );

    // What is not a secret stays readable.
    let call = step(&mission, "call");
    assert_eq!(call["input"]["headers"]["X-Custom"], CUSTOM, "{call}");
    assert_eq!(call["input"]["headers"]["Authorization"], "[redacted]");
    assert_eq!(call["input"]["body"]["user"], "alice");
    assert_eq!(call["output"]["body"]["headers"]["x-custom"], CUSTOM);
    assert_eq!(call["output"]["body"]["headers"]["x-api-key"], "[redacted]");
    let failed = step(&mission, "userinfo");
    assert_eq!(
        failed["input"]["url"],
        format!("http://[redacted]@{host}/deny"),
        "{failed}"
    );

    for (role, key) in [("viewer", &viewer), ("admin", &h.key)] {
        for path in [
            format!("/api/v1/missions/{id}"),
            format!("/api/v1/missions/{id}/history"),
            "/api/v1/missions".to_owned(),
        ] {
            let body = read(&h, key, &path).await;
            assert!(body.contains("\"userinfo\""), "{path}: {body}");
            assert!(body.contains("[redacted]"), "{path}: {body}");
            assert_hidden(&format!("GET {path} as {role}"), &body);
        }
        let path = format!("/api/v1/events?mission={id}");
        let mut stream = EventStream::open_as(key, &h.base, &path, None).await;
        let messages = stream.until(|m| m.event == "mission_failed").await;
        let events: String = messages.iter().map(|m| m.raw.as_str()).collect();
        assert!(events.contains("[redacted]@"), "{events}");
        assert_hidden(&format!("the event stream as {role}"), &events);
        let pages = dashboard(&h, key, &[format!("/missions/{id}"), "/".to_owned()]).await;
        for (path, page) in pages {
            assert!(page.contains(&id[id.len() - 8..]), "{page}");
            assert_hidden(&format!("the dashboard's {path} as {role}"), &page);
        }
        let shown = cli_show(&h, key, &id).await;
        assert!(shown.contains(CUSTOM), "{shown}");
        assert_hidden(&format!("`mission show --json` as {role}"), &shown);
    }

    // The worker logged the failure, with the URL's credentials hidden; `serve` logged nothing
    // secret either.
    let worker_log = std::fs::read_to_string(&h.workers[0].log).unwrap_or_default();
    assert!(
        worker_log.contains("step failed") && worker_log.contains("[redacted]@"),
        "{worker_log}"
    );
    assert_hidden("the worker's log", &worker_log);
    let serve_log = h
        .serve
        .as_ref()
        .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
        .unwrap_or_default();
    assert_hidden("serve's log", &serve_log);
}
