//! The MCP gateway end to end, driven by a client this project did not write: the official
//! MCP Python SDK (`pip install mcp`, in the virtualenv `scripts/mcp-venv` keeps), running
//! `tests/mcp/client.py` against a real `hypercode serve` and worker, over stdio (`hypercode
//! mcp`, launched by the SDK) and over streamable HTTP (`/mcp`).
//!
//! The script initializes, lists the nine tools and their input schemas, submits a plan with
//! an approval, sees it wait, finds it in `list_approvals`, approves it, is notified through its
//! resource subscription when it succeeds, reads its history; sends a signal (and is notified
//! through a subscription to that mission's history) and cancels a mission; gets `isError`
//! results for a viewer's submission and for unknown missions; and, over HTTP, is refused with a
//! bad key. The HTTP status of an unauthenticated `/mcp` request is
//! checked here too, below the SDK.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Longest one run of the client script may take (its own waits are 60 s each).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The venv's Python, installed on first use.
async fn python() -> String {
    let output = Command::new("scripts/mcp-venv")
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("run scripts/mcp-venv");
    assert!(output.status.success(), "scripts/mcp-venv failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Run the client script over `transport` against `harness`; panics with its output unless
/// every check passed.
async fn run_client(harness: &Harness, transport: &str) {
    let python = python().await;
    let viewer = harness.create_key("mcp-viewer", "viewer").await;
    let script = Path::new("tests/mcp/client.py");
    let run = Command::new(&python)
        .arg(script)
        .arg(transport)
        .env("HC_URL", &harness.base)
        .env("HC_BIN", BIN)
        .env("HC_ADMIN_KEY", &harness.key)
        .env("HC_VIEWER_KEY", &viewer)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the MCP client over {transport} took over {SCRIPT_TIMEOUT:?}"))
        .expect("run the MCP client");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the MCP client over {transport} failed ({}):\nstdout:\n{}\nstderr:\n{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains("all checks passed"), "{stderr}");
}

#[tokio::test]
async fn the_python_sdk_drives_missions_over_stdio() {
    let harness = Harness::start().await;
    run_client(&harness, "stdio").await;
}

#[tokio::test]
async fn the_python_sdk_drives_missions_over_streamable_http() {
    let harness = Harness::start().await;
    run_client(&harness, "http").await;
}

#[tokio::test]
async fn mcp_over_http_needs_a_key_before_any_message() {
    let harness = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "probe", "version": "1"},
        },
    });
    let post = || {
        harness
            .http
            .post(harness.url("/mcp"))
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize)
    };
    for (what, request) in [
        ("no key", post()),
        ("a bad key", post().header("X-API-Key", "hc_not-a-key")),
        (
            "a bad bearer token",
            post().header("Authorization", "Bearer hc_not-a-key"),
        ),
    ] {
        let response = request.send().await.expect("the server answered");
        assert_eq!(response.status(), 401, "{what}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{what}"
        );
        assert!(response.headers().get("mcp-session-id").is_none(), "{what}");
        let content_type = content_type(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        Reply::new(401, &content_type, &body).problem(401);
    }
    // The same request with the key is an MCP session.
    let response = post()
        .header("Authorization", format!("Bearer {}", harness.key))
        .send()
        .await
        .expect("the server answered");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("mcp-session-id").is_some());
}

#[tokio::test]
async fn mcp_requests_count_against_the_keys_rate_limit() {
    let harness = Harness::with(Options {
        workers: 0,
        env: vec![("HYPERCODE_RATE_LIMIT", "1".to_owned())],
        ..Options::default()
    })
    .await;
    let ping = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let mut statuses = Vec::new();
    // A bucket of 2 refilling at 1 per second: four requests at once cannot all pass.
    for _ in 0..4 {
        let response = harness
            .http
            .post(harness.url("/mcp"))
            .header("Accept", "application/json, text/event-stream")
            .header("X-API-Key", &harness.key)
            .json(&ping)
            .send()
            .await
            .expect("the server answered");
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            let content_type = content_type(response.headers());
            let body = response.bytes().await.unwrap_or_default();
            Reply::new(429, &content_type, &body).problem(429);
        }
    }
    assert!(statuses.contains(&429), "statuses: {statuses:?}");
}
