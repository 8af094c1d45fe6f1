//! Request-level behaviour, in process: every bad request is refused with the right status and
//! an RFC 9457 problem body (`application/problem+json`), validation errors locate the
//! offending value with a JSON pointer, authentication comes before roles and roles before the
//! request's contents, and no refused request creates or changes a mission.
//!
//! What needs processes (a worker running missions, a real TCP client) stays in the workspace's
//! `tests/`.

mod common;

use axum::http::Method;
use common::*;
use hypercode_engine::postgres::MIGRATOR;
use serde_json::{json, Value};
use sqlx::PgPool;

/// A URL plans may name; nothing runs them here, so nothing listens.
const CALLEE: &str = "http://127.0.0.1:9";

fn plan(steps: Value) -> Value {
    json!({ "workflow": "plan", "input": { "steps": steps } })
}

fn http_step(name: &str, method: &str, path: &str) -> Value {
    json!({ "name": name, "http": { "method": method, "url": format!("{CALLEE}{path}") } })
}

/// POST a cancellation of mission `id` (no body) with the admin key.
async fn cancel(api: &Api, id: &str) -> Reply {
    let path = format!("/api/v1/missions/{id}/cancel");
    api.call(Method::POST, &path, Some(&api.key), None).await
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn malformed_and_mistyped_bodies(pool: PgPool) {
    let api = Api::start(pool).await;

    // Not JSON at all, truncated, trailing garbage: 400.
    for text in [
        "{\"workflow\": \"plan\",",
        "not json",
        "{\"workflow\": \"plan\", \"input\": {}} trailing",
    ] {
        let reply = api
            .send(raw(
                Method::POST,
                "/api/v1/missions",
                &[
                    ("X-API-Key", &api.key),
                    ("content-type", "application/json"),
                ],
                text,
            ))
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
        let reply = api.submit_body(&body).await;
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
    assert_eq!(api.mission_count().await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn invalid_plans_are_located(pool: PgPool) {
    let api = Api::start(pool).await;
    // Each submission and the pointers its 422 must carry, in order.
    let cases = [
        // Duplicate names.
        (
            json!([http_step("a", "POST", "/ok"), http_step("a", "POST", "/ok")]),
            vec!["/input/steps/1/name"],
        ),
        // No action, two actions.
        (
            json!([http_step("a", "POST", "/ok"), { "name": "b" }]),
            vec!["/input/steps/1"],
        ),
        (
            json!([{ "name": "a", "sleep": { "ms": 1 }, "approval": { "message": "?" } }]),
            vec!["/input/steps/0"],
        ),
        // URLs that are not http(s) URLs.
        (
            json!([{ "name": "a", "http": { "method": "GET", "url": "not a url" } }]),
            vec!["/input/steps/0/http/url"],
        ),
        (
            json!([{ "name": "a", "http": { "method": "GET", "url": "ftp://example.com/" } }]),
            vec!["/input/steps/0/http/url"],
        ),
        // Several problems at once are all reported, in order.
        (
            json!([
                http_step("a", "BREW", "/ok"),
                http_step("a", "GET", "/ok"),
                http_step("c", "GET", "/items/{{steps.zz.output.body.id}}"),
                { "name": "bad name!", "sleep": { "ms": 1 } },
            ]),
            vec![
                "/input/steps/0/http/method",
                "/input/steps/1/name",
                "/input/steps/2/http/url",
                "/input/steps/3/name",
            ],
        ),
        // Type errors and unknown fields inside the plan point into it.
        (
            json!([{ "name": "a", "sleep": { "ms": "soon" } }]),
            vec!["/input/steps/0/sleep/ms"],
        ),
        (
            json!([{ "name": "a", "sleep": { "ms": 1 }, "colour": "red" }]),
            vec!["/input/steps/0/colour"],
        ),
        (json!([]), vec!["/input/steps"]),
        (
            json!([{
                "name": "a", "http": { "url": format!("{CALLEE}/ok") }, "retry": { "max_attempts": 0 }
            }]),
            vec!["/input/steps/0/retry/max_attempts"],
        ),
        (
            json!([{ "name": "a", "approval": { "message": "?", "timeout_s": 0 } }]),
            vec!["/input/steps/0/approval/timeout_s"],
        ),
    ];
    for (steps, pointers) in cases {
        let reply = api.submit_body(&plan(steps.clone())).await;
        reply.problem(422);
        assert_eq!(reply.pointers(), pointers, "for {steps}: {reply:?}");
    }
    assert_eq!(api.mission_count().await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn authentication_and_roles(pool: PgPool) {
    let api = Api::start(pool).await;
    let body = plan(json!([{ "name": "a", "sleep": { "ms": 1 } }]));
    let text = body.to_string();
    let json_body = ("content-type", "application/json");

    // /healthz needs no key.
    let health = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, 200, "{health:?}");

    // No key, a wrong key, a malformed header: 401, before the body is even looked at.
    api.call(Method::POST, "/api/v1/missions", None, Some(&body))
        .await
        .problem(401);
    let wrong = "hc_not-a-real-key-0000000000000000000000000";
    api.call(Method::POST, "/api/v1/missions", Some(wrong), Some(&body))
        .await
        .problem(401);
    for authorization in ["Bearer nope", "Basic dXNlcjpwYXNz"] {
        api.send(raw(
            Method::GET,
            "/api/v1/missions",
            &[("Authorization", authorization)],
            "",
        ))
        .await
        .problem(401);
    }
    api.send(raw(Method::POST, "/api/v1/missions", &[json_body], "{oops"))
        .await
        .problem(401);
    let anywhere = format!("/api/v1/missions/{}", uuid::Uuid::new_v4());
    api.call(Method::GET, &anywhere, None, None)
        .await
        .problem(401);
    assert_eq!(api.mission_count().await, 0);

    // The Bearer form works like X-API-Key.
    let bearer = format!("Bearer {}", api.key);
    let submitted = api
        .send(raw(
            Method::POST,
            "/api/v1/missions",
            &[("Authorization", &bearer), json_body],
            &text,
        ))
        .await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let id = submitted.body["id"].as_str().expect("an id").to_owned();

    // A viewer reads but does not operate.
    let viewer = api.create_key("vera", "viewer").await;
    let read = api
        .call(
            Method::GET,
            &format!("/api/v1/missions/{id}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    api.call(Method::POST, "/api/v1/missions", Some(&viewer), Some(&body))
        .await
        .problem(403);
    api.call(
        Method::POST,
        &format!("/api/v1/missions/{id}/cancel"),
        Some(&viewer),
        None,
    )
    .await
    .problem(403);
    assert_eq!(api.mission_count().await, 1);
    let mission = api.get(&format!("/api/v1/missions/{id}")).await;
    assert_eq!(mission.body["cancel_requested"], false, "{mission:?}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn authentication_comes_before_roles(pool: PgPool) {
    let api = Api::start(pool).await;
    let agent = api.create_key("bot", "agent").await;

    // No key or a bad key is a 401 whatever the route; a key of the wrong role is a 403.
    api.call(Method::GET, "/api/v1/missions", None, None)
        .await
        .problem(401);
    let forbidden = api
        .call(Method::GET, "/api/v1/missions", Some(&agent), None)
        .await;
    forbidden.forbidden("viewer, operator or admin", "agent", "list");
    // The role is checked before the path: a malformed id is still a 403 for an agent.
    let malformed = api
        .call(Method::GET, "/api/v1/missions/nope", Some(&agent), None)
        .await;
    malformed.forbidden("viewer, operator or admin", "agent", "show");
    // Bearer keys carry their role too.
    let bearer = format!("Bearer {agent}");
    api.send(raw(
        Method::GET,
        "/api/v1/missions",
        &[("Authorization", &bearer)],
        "",
    ))
    .await
    .problem(403);
    // Unknown routes and wrong methods keep their own statuses, with or without a key.
    for key in [None, Some(api.key.as_str())] {
        api.call(Method::GET, "/api/v1/elsewhere", key, None)
            .await
            .problem(404);
        api.call(Method::DELETE, "/api/v1/missions", key, None)
            .await
            .problem(405);
    }
    let health = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, 200, "{health:?}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn unknown_and_malformed_ids(pool: PgPool) {
    let api = Api::start(pool).await;
    let unknown = uuid::Uuid::new_v4();

    for path in ["/api/v1/missions/not-a-uuid", "/api/v1/missions/42/history"] {
        api.get(path).await.problem(400);
    }
    cancel(&api, "nope").await.problem(400);

    api.get(&format!("/api/v1/missions/{unknown}"))
        .await
        .problem(404);
    api.get(&format!("/api/v1/missions/{unknown}/history"))
        .await
        .problem(404);
    cancel(&api, &unknown.to_string()).await.problem(404);
    let approve = json!({ "decision": "approve", "comment": "" });
    api.post(&format!("/api/v1/missions/{unknown}/approvals/b"), &approve)
        .await
        .problem(404);

    // A decision that is neither approve nor reject.
    let submitted = api
        .submit_body(&plan(
            json!([{ "name": "b", "approval": { "message": "?" } }]),
        ))
        .await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let id = submitted.body["id"].as_str().expect("an id");
    let reply = api
        .post(
            &format!("/api/v1/missions/{id}/approvals/b"),
            &json!({ "decision": "maybe" }),
        )
        .await;
    reply.problem(422);
    assert_eq!(reply.pointers(), ["/decision"], "{reply:?}");
    // Pending (no worker runs here), so b is not waiting yet: a decision is a conflict.
    for step in ["b", "zz"] {
        api.post(&format!("/api/v1/missions/{id}/approvals/{step}"), &approve)
            .await
            .problem(409);
    }

    // Unknown routes are problems too.
    api.get("/api/v1/nothing-here").await.problem(404);
}

/// Signals: kept for a mission that is not waiting yet (202), refused a second time (409), for
/// an unknown mission (404), with a bad name (400) or by a viewer (403); agents may send them.
#[sqlx::test(migrator = "MIGRATOR")]
async fn signals_are_kept_once_per_name(pool: PgPool) {
    let api = Api::start(pool).await;
    let submitted = api
        .submit_body(&plan(
            json!([{ "name": "paid", "signal": { "timeout_s": 600 } }]),
        ))
        .await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let id = submitted.body["id"].as_str().expect("an id");
    let path = format!("/api/v1/missions/{id}/signals/paid");

    let viewer = api.create_key("v", "viewer").await;
    api.call(Method::POST, &path, Some(&viewer), Some(&json!({})))
        .await
        .problem(403);
    let agent = api.create_key("a", "agent").await;
    let kept = api
        .call(
            Method::POST,
            &path,
            Some(&agent),
            Some(&json!({"amount": 5})),
        )
        .await;
    assert_eq!(kept.status, 202, "{kept:?}");
    assert_eq!(kept.body["id"], json!(id));
    api.post(&path, &json!({"amount": 6})).await.problem(409);

    let unknown = uuid::Uuid::new_v4();
    api.post(
        &format!("/api/v1/missions/{unknown}/signals/paid"),
        &json!(1),
    )
    .await
    .problem(404);
    api.post(
        &format!("/api/v1/missions/{id}/signals/no%20spaces"),
        &json!(1),
    )
    .await
    .problem(400);
}

/// Concurrency keys: 1 to 200 characters, shown on the mission and a list filter.
#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrency_keys_are_checked_shown_and_filtered(pool: PgPool) {
    let api = Api::start(pool).await;
    let noop = json!([{ "name": "a", "noop": 1 }]);
    for bad in [String::new(), "k".repeat(201)] {
        let mut body = plan(noop.clone());
        body["concurrency_key"] = json!(bad);
        let refused = api.submit_body(&body).await;
        refused.problem(422);
        assert_eq!(refused.pointers(), ["/concurrency_key"], "{refused:?}");
    }
    let mut body = plan(noop.clone());
    body["concurrency_key"] = json!("k".repeat(200));
    let kept = api.submit_body(&body).await;
    assert_eq!(kept.status, 201, "{kept:?}");
    assert_eq!(kept.body["concurrency_key"], json!("k".repeat(200)));
    api.submit_body(&plan(noop)).await;
    let listed = api
        .get(&format!(
            "/api/v1/missions?concurrency_key={}",
            "k".repeat(200)
        ))
        .await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let missions = listed.body["missions"].as_array().expect("missions");
    assert_eq!(missions.len(), 1, "{listed:?}");
    assert_eq!(missions[0]["id"], kept.body["id"]);
}

/// An internal workflow is listed as such and refused at submission before its input is read.
#[sqlx::test(migrator = "MIGRATOR")]
async fn internal_workflows_cannot_be_submitted(pool: PgPool) {
    let api = Api::start(pool).await;
    let listed = api.get("/api/v1/workflows").await;
    let internal: Vec<(String, bool)> = listed.body["workflows"]
        .as_array()
        .expect("workflows")
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap_or_default().to_owned(),
                w["internal"] == true,
            )
        })
        .collect();
    assert!(
        internal.contains(&("engine-only".to_owned(), true)),
        "{internal:?}"
    );
    assert!(
        internal.contains(&("plan".to_owned(), false)),
        "{internal:?}"
    );
    let refused = api
        .submit_body(&json!({ "workflow": "engine-only", "input": {} }))
        .await;
    refused.problem(422);
    assert_eq!(refused.pointers(), ["/workflow"], "{refused:?}");
    assert!(
        refused
            .body
            .to_string()
            .contains("workflow `engine-only` is internal"),
        "{refused:?}"
    );
    assert_eq!(api.mission_count().await, 0);
}
