//! Bad requests: every one is refused with the right status and an RFC 9457 problem body
//! (`application/problem+json`), validation errors locate the offending value with a JSON
//! pointer, and none of them creates a mission.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn api() -> Harness {
    Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await
}

fn plan(steps: Value) -> Value {
    json!({ "workflow": "plan", "input": { "steps": steps } })
}

async fn mission_count(h: &Harness) -> usize {
    let list = h.send(h.request(Method::GET, "/api/v1/missions")).await;
    assert_eq!(list.status, 200, "{list:?}");
    list.body["missions"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn malformed_and_mistyped_bodies() {
    let h = api().await;

    // Not JSON at all, truncated, trailing garbage: 400.
    for raw in [
        "{\"workflow\": \"plan\",",
        "not json",
        "{\"workflow\": \"plan\", \"input\": {}} trailing",
    ] {
        let reply = h
            .send(
                h.request(Method::POST, "/api/v1/missions")
                    .header("content-type", "application/json")
                    .body(raw),
            )
            .await;
        reply.problem(400);
        assert!(reply.body.get("errors").is_none(), "{reply:?}");
    }

    // JSON of the wrong shape: 422 with a pointer.
    let cases = [
        (
            json!({ "workflow": 5, "input": { "steps": [] } }),
            "/workflow",
        ),
        (json!({ "workflow": "plan" }), "/input"),
        (
            json!({ "workflow": "plan", "input": { "steps": [] }, "extra": true }),
            "/extra",
        ),
        (
            json!({ "workflow": "plan", "input": { "steps": [] }, "idempotency_key": 7 }),
            "/idempotency_key",
        ),
        (
            json!({ "workflow": "nope", "input": { "steps": [] } }),
            "/workflow",
        ),
        (
            json!({ "workflow": "plan", "input": { "steps": "all of them" } }),
            "/input/steps",
        ),
        (json!({ "workflow": "plan", "input": [] }), "/input"),
    ];
    for (body, pointer) in cases {
        let reply = h.submit_body(&body).await;
        reply.problem(422);
        assert_eq!(
            reply.pointers().first().map(String::as_str),
            Some(pointer),
            "for {body}: {reply:?}"
        );
        for error in reply.body["errors"].as_array().unwrap() {
            assert!(error["message"].is_string(), "{reply:?}");
        }
    }
    assert_eq!(mission_count(&h).await, 0);
}

#[tokio::test]
async fn invalid_plans_are_located() {
    let h = api().await;
    let ok = h.callee.url("/ok");

    let duplicate = h
        .submit_body(&plan(json!([
            http_step("a", "POST", &ok),
            http_step("a", "POST", &ok),
        ])))
        .await;
    duplicate.problem(422);
    assert_eq!(
        duplicate.pointers(),
        ["/input/steps/1/name"],
        "{duplicate:?}"
    );

    let no_action = h
        .submit_body(&plan(json!([http_step("a", "POST", &ok), { "name": "b" }])))
        .await;
    no_action.problem(422);
    assert_eq!(no_action.pointers(), ["/input/steps/1"], "{no_action:?}");

    let two_actions = h
        .submit_body(&plan(
            json!([{ "name": "a", "sleep": { "ms": 1 }, "approval": { "message": "?" } }]),
        ))
        .await;
    two_actions.problem(422);
    assert_eq!(
        two_actions.pointers(),
        ["/input/steps/0"],
        "{two_actions:?}"
    );

    let bad_url = h
        .submit_body(&plan(json!([http_step("a", "GET", "not a url")])))
        .await;
    bad_url.problem(422);
    assert_eq!(
        bad_url.pointers(),
        ["/input/steps/0/http/url"],
        "{bad_url:?}"
    );

    let ftp = h
        .submit_body(&plan(json!([http_step("a", "GET", "ftp://example.com/")])))
        .await;
    ftp.problem(422);
    assert_eq!(ftp.pointers(), ["/input/steps/0/http/url"], "{ftp:?}");

    // Several problems at once are all reported, in order.
    let many = h
        .submit_body(&plan(json!([
            http_step("a", "BREW", &ok),
            http_step("a", "GET", &ok),
            http_step("c", "GET", &h.callee.url("/items/{{steps.zz.output.body.id}}")),
            { "name": "bad name!", "sleep": { "ms": 1 } },
        ])))
        .await;
    many.problem(422);
    assert_eq!(
        many.pointers(),
        [
            "/input/steps/0/http/method",
            "/input/steps/1/name",
            "/input/steps/2/http/url",
            "/input/steps/3/name"
        ],
        "{many:?}"
    );

    // Type errors inside the plan point into it.
    let mistyped = h
        .submit_body(&plan(json!([{ "name": "a", "sleep": { "ms": "soon" } }])))
        .await;
    mistyped.problem(422);
    assert_eq!(
        mistyped.pointers(),
        ["/input/steps/0/sleep/ms"],
        "{mistyped:?}"
    );
    let unknown = h
        .submit_body(&plan(
            json!([{ "name": "a", "sleep": { "ms": 1 }, "colour": "red" }]),
        ))
        .await;
    unknown.problem(422);
    assert_eq!(unknown.pointers(), ["/input/steps/0/colour"], "{unknown:?}");

    let empty = h.submit_body(&plan(json!([]))).await;
    empty.problem(422);
    assert_eq!(empty.pointers(), ["/input/steps"], "{empty:?}");

    let retry = h
        .submit_body(&plan(json!([{
            "name": "a", "http": { "url": ok }, "retry": { "max_attempts": 0 }
        }])))
        .await;
    retry.problem(422);
    assert_eq!(
        retry.pointers(),
        ["/input/steps/0/retry/max_attempts"],
        "{retry:?}"
    );

    let timeout = h
        .submit_body(&plan(
            json!([{ "name": "a", "approval": { "message": "?", "timeout_s": 0 } }]),
        ))
        .await;
    timeout.problem(422);
    assert_eq!(
        timeout.pointers(),
        ["/input/steps/0/approval/timeout_s"],
        "{timeout:?}"
    );

    assert_eq!(mission_count(&h).await, 0);
}

#[tokio::test]
async fn authentication_and_roles() {
    let h = api().await;
    let body = plan(json!([{ "name": "a", "sleep": { "ms": 1 } }]));

    // /healthz needs no key.
    let health = h.send(h.http.get(h.url("/healthz"))).await;
    assert_eq!(health.status, 200, "{health:?}");

    // No key, a wrong key, a malformed header: 401, before the body is even looked at.
    let no_key = h
        .send(h.http.post(h.url("/api/v1/missions")).json(&body))
        .await;
    no_key.problem(401);
    let wrong = h
        .send(
            h.http
                .post(h.url("/api/v1/missions"))
                .header("X-API-Key", "hc_not-a-real-key-0000000000000000000000000")
                .json(&body),
        )
        .await;
    wrong.problem(401);
    let wrong_bearer = h
        .send(
            h.http
                .get(h.url("/api/v1/missions"))
                .header("Authorization", "Bearer nope"),
        )
        .await;
    wrong_bearer.problem(401);
    let basic = h
        .send(
            h.http
                .get(h.url("/api/v1/missions"))
                .header("Authorization", "Basic dXNlcjpwYXNz"),
        )
        .await;
    basic.problem(401);
    let anonymous_garbage = h
        .send(
            h.http
                .post(h.url("/api/v1/missions"))
                .header("content-type", "application/json")
                .body("{oops"),
        )
        .await;
    anonymous_garbage.problem(401);
    let anonymous_read = h
        .send(
            h.http
                .get(h.url(&format!("/api/v1/missions/{}", uuid::Uuid::new_v4()))),
        )
        .await;
    anonymous_read.problem(401);
    assert_eq!(mission_count(&h).await, 0);

    // The Bearer form works like X-API-Key.
    let bearer = h
        .send(
            h.http
                .post(h.url("/api/v1/missions"))
                .header("Authorization", format!("Bearer {}", h.key))
                .json(&body),
        )
        .await;
    assert_eq!(bearer.status, 201, "{bearer:?}");
    let id = id_of(&bearer.body);

    // A viewer reads but does not operate.
    let viewer = h.create_key("vera", "viewer").await;
    let read = h
        .send(
            h.http
                .get(h.url(&format!("/api/v1/missions/{id}")))
                .header("X-API-Key", &viewer),
        )
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    let submit = h
        .send(
            h.http
                .post(h.url("/api/v1/missions"))
                .header("X-API-Key", &viewer)
                .json(&body),
        )
        .await;
    submit.problem(403);
    let cancel = h
        .send(
            h.http
                .post(h.url(&format!("/api/v1/missions/{id}/cancel")))
                .header("X-API-Key", &viewer),
        )
        .await;
    cancel.problem(403);
    assert_eq!(mission_count(&h).await, 1);
    assert_eq!(h.get(&id).await["cancel_requested"], false);
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let h = api().await;
    let unknown = uuid::Uuid::new_v4();

    for path in [
        "/api/v1/missions/not-a-uuid".to_owned(),
        "/api/v1/missions/42/history".to_owned(),
    ] {
        h.send(h.request(Method::GET, &path)).await.problem(400);
    }
    h.send(h.request(Method::POST, "/api/v1/missions/nope/cancel"))
        .await
        .problem(400);

    h.send(h.request(Method::GET, &format!("/api/v1/missions/{unknown}")))
        .await
        .problem(404);
    h.send(h.request(Method::GET, &format!("/api/v1/missions/{unknown}/history")))
        .await
        .problem(404);
    h.cancel(&unknown.to_string()).await.problem(404);
    h.decide(&unknown.to_string(), "b", "approve", "")
        .await
        .problem(404);

    // A decision that is neither approve nor reject.
    let m = h
        .submit(json!([{ "name": "b", "approval": { "message": "?" } }]))
        .await;
    let id = id_of(&m);
    let reply = h
        .send(
            h.request(Method::POST, &format!("/api/v1/missions/{id}/approvals/b"))
                .json(&json!({ "decision": "maybe" })),
        )
        .await;
    reply.problem(422);
    assert_eq!(reply.pointers(), ["/decision"], "{reply:?}");
    // Pending (no worker ran it), so b is not waiting yet: a decision is a conflict.
    h.decide(&id, "b", "approve", "").await.problem(409);
    h.decide(&id, "zz", "approve", "").await.problem(409);

    // Unknown routes are problems too.
    h.send(h.request(Method::GET, "/api/v1/nothing-here"))
        .await
        .problem(404);
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
