//! Server-side secrets (`{{secrets.NAME}}`): admins set, list and delete them through the API
//! and the CLI, no route ever returns a value, other roles are refused, and a plan that
//! references one sends the real value to its callee while the mission, its steps and its
//! history keep only the template (a callee that echoes the value has it redacted).

mod common;

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::any;
use axum::Router;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt as _;

/// The value plans must send but nobody may read back.
const TOKEN: &str = "tok-5f3a9c81e2";

/// A callee that records each request's path, query and headers, and answers 200 with them
/// (a callee that echoes the credentials it received).
#[derive(Clone, Default)]
struct Echo {
    received: Arc<Mutex<Vec<(Uri, HeaderMap)>>>,
}

impl Echo {
    /// Serve on 127.0.0.1; returns `http://127.0.0.1:PORT`.
    async fn start(&self) -> String {
        let echo = self.clone();
        let app = Router::new().fallback(any(move |uri: Uri, headers: HeaderMap| {
            let echo = echo.clone();
            async move {
                let upstream = headers
                    .get("x-upstream")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                let query = uri.query().unwrap_or_default().to_owned();
                echo.received
                    .lock()
                    .expect("echo lock")
                    .push((uri, headers));
                (
                    StatusCode::OK,
                    axum::Json(json!({ "query": query, "x_upstream": upstream })),
                )
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the echo callee");
        let address = listener.local_addr().expect("echo address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{address}")
    }

    fn received(&self) -> Vec<(Uri, HeaderMap)> {
        self.received.lock().expect("echo lock").clone()
    }
}

/// PUT a secret as `key`.
async fn put_secret(h: &Harness, key: &str, name: &str, body: Value) -> Reply {
    h.send(
        h.http
            .put(h.url(&format!("/api/v1/secrets/{name}")))
            .header("X-API-Key", key)
            .json(&body),
    )
    .await
}

/// Run `hypercode secrets ARGS` against the harness's server as the admin, with `stdin`;
/// returns (success, stdout, stderr).
async fn secrets_cli(h: &Harness, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut all = vec!["secrets"];
    all.extend_from_slice(args);
    let mut child = h
        .command(&all)
        .env("HYPERCODE_URL", &h.base)
        .env("HYPERCODE_API_KEY", &h.key)
        .env_remove("HYPERCODE_API_KEY_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("the CLI ended");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_secrets_through_the_api_and_cli_and_values_never_come_back() {
    let h = Harness::start().await;

    // The API: 201 on create, 200 on replace; the answer has the name and times, no value.
    let created = put_secret(&h, &h.key, "API_TOKEN", json!({ "value": TOKEN })).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["name"], "API_TOKEN");
    assert!(created.body["created_at"].is_string(), "{created:?}");
    assert!(created.body.get("value").is_none(), "{created:?}");
    let replaced = put_secret(&h, &h.key, "API_TOKEN", json!({ "value": "v2-secret" })).await;
    assert_eq!(replaced.status, 200, "{replaced:?}");

    // The CLI: from standard input (one trailing newline dropped) and from a file.
    let (ok, stdout, stderr) = secrets_cli(&h, &["set", "CLI_STDIN"], "stdin-secret-77\n").await;
    assert!(ok, "secrets set: {stdout}{stderr}");
    assert!(stdout.contains("created secret `CLI_STDIN`"), "{stdout}");
    let file = h.dir.join("secret-value");
    std::fs::write(&file, "file-secret-88").expect("write the value file");
    let file = file.to_string_lossy().into_owned();
    let (ok, stdout, stderr) = secrets_cli(
        &h,
        &["set", "CLI_FILE", "--value-file", &file, "--json"],
        "",
    )
    .await;
    assert!(ok, "secrets set --value-file: {stdout}{stderr}");
    let json: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    assert_eq!(json["name"], "CLI_FILE", "{stdout}");
    let (ok, _, stderr) = secrets_cli(&h, &["set", "EMPTY"], "").await;
    assert!(
        !ok && stderr.contains("empty"),
        "an empty value is refused: {stderr}"
    );

    // The list shows names and times, never values, through the API and the CLI.
    let listed = h.send(h.request(Method::GET, "/api/v1/secrets")).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let names: Vec<&str> = listed.body["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["API_TOKEN", "CLI_FILE", "CLI_STDIN"]);
    let (ok, table, _) = secrets_cli(&h, &["list"], "").await;
    assert!(
        ok && table.contains("CLI_STDIN") && table.contains("NAME"),
        "{table}"
    );
    let (ok, listed_json, _) = secrets_cli(&h, &["list", "--json"], "").await;
    assert!(ok, "{listed_json}");
    for text in [listed.body.to_string(), table, listed_json] {
        for value in [TOKEN, "v2-secret", "stdin-secret-77", "file-secret-88"] {
            assert!(!text.contains(value), "a listing shows a value: {text}");
        }
    }

    // Bad names and values are 422 with a pointer.
    for bad in ["9lives", "has-dash", &"x".repeat(64)] {
        let reply = put_secret(&h, &h.key, bad, json!({ "value": "v" })).await;
        reply.problem(422);
        assert_eq!(reply.pointers(), ["/name"], "{bad}: {reply:?}");
        let reply = h
            .send(h.request(Method::DELETE, &format!("/api/v1/secrets/{bad}")))
            .await;
        reply.problem(422);
        assert_eq!(reply.pointers(), ["/name"], "{bad}: {reply:?}");
    }
    let huge = put_secret(
        &h,
        &h.key,
        "HUGE",
        json!({ "value": "x".repeat(64 * 1024 + 1) }),
    )
    .await;
    huge.problem(422);
    assert_eq!(huge.pointers(), ["/value"], "{huge:?}");
    let at_limit = put_secret(
        &h,
        &h.key,
        "AT_LIMIT",
        json!({ "value": "x".repeat(64 * 1024) }),
    )
    .await;
    assert_eq!(at_limit.status, 201, "{at_limit:?}");
    let shape = put_secret(&h, &h.key, "SHAPE", json!({ "valeu": "x" })).await;
    shape.problem(422);

    // Every other role is refused on every route.
    for role in ["operator", "viewer", "agent"] {
        let key = h.create_key(&format!("e2e-{role}"), role).await;
        let put = put_secret(&h, &key, "API_TOKEN", json!({ "value": "stolen" })).await;
        put.problem(403);
        for (method, path) in [
            (Method::GET, "/api/v1/secrets"),
            (Method::DELETE, "/api/v1/secrets/API_TOKEN"),
        ] {
            h.send(h.request_as(method, path, &key)).await.problem(403);
        }
    }

    // Delete: 204, then 404; through the CLI too.
    let deleted = h
        .send(h.request(Method::DELETE, "/api/v1/secrets/API_TOKEN"))
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let again = h
        .send(h.request(Method::DELETE, "/api/v1/secrets/API_TOKEN"))
        .await;
    again.problem(404);
    let (ok, stdout, stderr) = secrets_cli(&h, &["delete", "CLI_STDIN"], "").await;
    assert!(
        ok && stdout.contains("deleted secret `CLI_STDIN`"),
        "{stdout}{stderr}"
    );
    let (ok, _, stderr) = secrets_cli(&h, &["delete", "CLI_STDIN"], "").await;
    assert!(!ok && stderr.contains("404"), "{stderr}");
    let listed = h.send(h.request(Method::GET, "/api/v1/secrets")).await;
    let names: Vec<&str> = listed.body["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["AT_LIMIT", "CLI_FILE"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_send_secret_values_but_record_only_templates() {
    let h = Harness::start().await;
    let echo = Echo::default();
    let base = echo.start().await;
    let set = put_secret(&h, &h.key, "TOKEN", json!({ "value": TOKEN })).await;
    assert_eq!(set.status, 201, "{set:?}");

    // The second step fails for good, so the first one's compensation runs too.
    let mission = h
        .submit(json!([
            {
                "name": "call",
                "http": {
                    "method": "POST",
                    "url": format!("{base}/echo?t={{{{secrets.TOKEN}}}}"),
                    "headers": { "X-Upstream": "Bearer {{secrets.TOKEN}}" },
                    "body": { "credential_ref": "{{secrets.TOKEN}}" }
                },
                "compensate": { "http": {
                    "method": "DELETE",
                    "url": format!("{base}/undo?t={{{{secrets.TOKEN}}}}")
                } }
            },
            { "name": "boom", "http": { "url": h.callee.url("/fail") } }
        ]))
        .await;
    let id = id_of(&mission);
    let done = h.wait_terminal(&id, "failed", secs(30)).await;

    // The callee got the real value, in the header and in the query, and so did the undo.
    let received = echo.received();
    assert_eq!(received.len(), 2, "{received:?}");
    let (uri, headers) = &received[0];
    assert_eq!(uri.query(), Some(&*format!("t={TOKEN}")));
    assert_eq!(headers["x-upstream"], &*format!("Bearer {TOKEN}"));
    let (undo, _) = &received[1];
    assert_eq!(undo.path(), "/undo");
    assert_eq!(undo.query(), Some(&*format!("t={TOKEN}")));
    assert_eq!(
        step(&done, "call")["status"],
        "compensated",
        "{}",
        pretty(&done)
    );

    // The step's input is the template; its output has the echoed value redacted.
    let call = step(&done, "call");
    assert_eq!(
        call["input"]["url"],
        format!("{base}/echo?t={{{{secrets.TOKEN}}}}"),
        "{call}"
    );
    assert_eq!(
        call["input"]["headers"]["X-Upstream"],
        "Bearer {{secrets.TOKEN}}"
    );
    assert_eq!(call["input"]["body"]["credential_ref"], "{{secrets.TOKEN}}");
    assert_eq!(call["output"]["body"]["query"], "t=[redacted]", "{call}");
    assert_eq!(
        call["output"]["body"]["x_upstream"], "Bearer [redacted]",
        "{call}"
    );

    // Nowhere the mission is read does the value appear.
    let history = h.history(&id).await;
    for (door, text) in [
        ("the mission", done.to_string()),
        ("the history", Value::Array(history).to_string()),
        ("the mission input", mission["input"].to_string()),
    ] {
        assert!(!text.contains(TOKEN), "{door} shows the secret: {text}");
    }
    assert!(
        done["input"].to_string().contains("{{secrets.TOKEN}}"),
        "{}",
        pretty(&done)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_secrets_are_refused_and_deleted_ones_fail_the_step_for_good() {
    let h = Harness::start().await;
    let echo = Echo::default();
    let base = echo.start().await;

    // Unknown at submission: 422, located at each string that names it.
    let reply = h
        .submit_body(&json!({ "workflow": "plan", "input": { "steps": [
            { "name": "a", "http": {
                "url": format!("{base}/x"),
                "headers": { "X-Upstream": "{{secrets.NOPE}}" } },
              "compensate": { "http": { "method": "DELETE", "url": format!("{base}/undo?k={{{{secrets.ALSO_NOPE}}}}") } } }
        ] } }))
        .await;
    reply.problem(422);
    assert_eq!(
        reply.pointers(),
        [
            "/input/steps/0/http/headers/X-Upstream",
            "/input/steps/0/compensate/http/url"
        ],
        "{reply:?}"
    );
    assert!(reply.body.to_string().contains("NOPE"), "{reply:?}");
    let malformed = h
        .submit_body(&json!({ "workflow": "plan", "input": { "steps": [
            { "name": "a", "http": { "url": format!("{base}/{{{{secrets.bad-name}}}}") } }
        ] } }))
        .await;
    malformed.problem(422);
    assert_eq!(
        malformed.pointers(),
        ["/input/steps/0/http/url"],
        "{malformed:?}"
    );

    // Deleted after submission: the step fails at once (no retries), naming the secret.
    let set = put_secret(&h, &h.key, "GONE", json!({ "value": "gone-value-41" })).await;
    assert_eq!(set.status, 201, "{set:?}");
    let mission = h
        .submit(json!([
            { "name": "wait", "approval": { "message": "go?" } },
            { "name": "call",
              "http": { "url": format!("{base}/echo"), "headers": { "X-Upstream": "{{secrets.GONE}}" } },
              "retry": { "max_attempts": 5, "initial_backoff_ms": 10, "max_backoff_ms": 20 } }
        ]))
        .await;
    let id = id_of(&mission);
    h.wait_status(&id, "waiting", secs(30)).await;
    let deleted = h
        .send(h.request(Method::DELETE, "/api/v1/secrets/GONE"))
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let decided = h.decide(&id, "wait", "approve", "").await;
    assert_eq!(decided.status, 200, "{decided:?}");
    let failed = h.wait_terminal(&id, "failed", secs(30)).await;
    let call = step(&failed, "call");
    assert_eq!(call["status"], "failed", "{}", pretty(&failed));
    assert_eq!(call["attempts"], 1, "{}", pretty(&failed));
    assert_eq!(call["error"]["retryable"], false, "{call}");
    let message = call["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`GONE`") && message.contains("does not exist"),
        "{call}"
    );
    assert!(
        echo.received().is_empty(),
        "the call was made without its secret"
    );
}
