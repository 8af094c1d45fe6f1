//! Oversized requests over a real connection: the body limit answers a client that writes its
//! whole body first, and the engine's input limit follows the server's environment. Both are
//! 413 problems, and neither creates a mission.
//!
//! The other bad requests (malformed bodies, located validation errors, authentication, ids)
//! need no process: they are tested in process, in `api/tests/requests.rs`.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn plan(steps: Value) -> Value {
    json!({ "workflow": "plan", "input": { "steps": steps } })
}

async fn mission_count(h: &Harness) -> usize {
    let list = h.send(h.request(Method::GET, "/api/v1/missions")).await;
    assert_eq!(list.status, 200, "{list:?}");
    list.body["missions"].as_array().map_or(0, Vec::len)
}

/// Two size limits: the request body (2 MiB, at the HTTP layer) and the mission input (the
/// engine's `HYPERCODE_MAX_PAYLOAD_BYTES`). Both answer 413 with a problem body.
#[tokio::test]
async fn oversized_bodies_and_inputs_are_413() {
    let h = Harness::with(Options {
        workers: 0,
        env: vec![("HYPERCODE_MAX_PAYLOAD_BYTES", "2000".to_owned())],
        ..Options::default()
    })
    .await;

    let huge = format!(
        "{{\"workflow\": \"plan\", \"input\": {{\"pad\": \"{}\"}}}}",
        "x".repeat(3 * 1024 * 1024)
    );
    // The server reads (and discards) an oversized body before it answers, so a client that
    // writes its whole body first still reads the 413. A client of its own: the server closes
    // the connection after the answer, and that connection must not return to a shared pool.
    let once = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let response = once
        .post(h.url("/api/v1/missions"))
        .header("X-API-Key", &h.key)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("the 413 reaches a client that sends its whole body");
    assert_eq!(response.status().as_u16(), 413);
    let problem: Value = response.json().await.unwrap_or_default();
    assert_eq!(problem["status"], 413, "{problem}");

    let big_input = plan(json!([{ "name": "a", "noop": { "pad": "y".repeat(3000) } }]));
    let reply = h.submit_body(&big_input).await;
    let problem = reply.problem(413);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("2000"),
        "{problem}"
    );

    let small = plan(json!([{ "name": "a", "noop": { "pad": "y".repeat(100) } }]));
    assert_eq!(h.submit_body(&small).await.status, 201);
    assert_eq!(
        mission_count(&h).await,
        1,
        "the refused ones created nothing"
    );
}
