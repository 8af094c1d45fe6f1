//! The schedule routes, in process: every bad field is refused with a 422 at its pointer,
//! names are unique, roles apply (viewers read, operators write), a manual trigger starts a
//! mission listed under its schedule, and pausing clears the next tick. Firing on the clock
//! needs a running server: that is `tests/schedules.rs`.

mod common;

use axum::http::Method;
use common::*;
use hypercode_engine::postgres::MIGRATOR;
use serde_json::{json, Value};
use sqlx::PgPool;

fn nightly() -> Value {
    json!({
        "name": "nightly",
        "cron": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "workflow": "plan",
        "input": { "steps": [{ "name": "a", "noop": 1 }] },
    })
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn bad_fields_are_located(pool: PgPool) {
    let api = Api::start(pool).await;
    let with = |field: &str, value: Value| {
        let mut body = nightly();
        body[field] = value;
        body
    };
    let cases = [
        (with("cron", json!("not a cron")), "/cron"),
        (with("cron", json!("61 * * * *")), "/cron"),
        (with("cron", json!("* * * * * * * *")), "/cron"),
        (with("name", json!("Nightly")), "/name"),
        (with("name", json!("")), "/name"),
        (with("name", json!("x".repeat(64))), "/name"),
        (with("timezone", json!("Mars/Olympus")), "/timezone"),
        (with("overlap", json!("sometimes")), "/overlap"),
        (with("catchup", json!("twice")), "/catchup"),
        (with("enabled", json!("yes")), "/enabled"),
        (with("workflow", json!("nope")), "/workflow"),
        (with("input", json!({ "steps": "all" })), "/input/steps"),
        (with("extra", json!(1)), "/extra"),
    ];
    for (body, pointer) in cases {
        let refused = api.post("/api/v1/schedules", &body).await;
        refused.problem(422);
        assert_eq!(refused.pointers(), [pointer], "{body} → {refused:?}");
    }
    let listed = api.get("/api/v1/schedules").await;
    assert_eq!(
        listed.body,
        json!({ "schedules": [] }),
        "nothing was stored"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_schedule_is_created_read_changed_triggered_and_deleted(pool: PgPool) {
    let api = Api::start(pool).await;
    let created = api.post("/api/v1/schedules", &nightly()).await;
    assert_eq!(created.status, 201, "{created:?}");
    let fields: Vec<&str> = created
        .body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "name",
        "cron",
        "timezone",
        "workflow",
        "input",
        "overlap",
        "catchup",
        "enabled",
        "next_fire_at",
        "last_fire_at",
        "created_at",
        "updated_at",
    ] {
        assert!(fields.contains(&field), "{field} missing: {created:?}");
    }
    assert_eq!(created.body["overlap"], "skip");
    assert_eq!(created.body["catchup"], "once");
    assert_eq!(created.body["enabled"], true);
    let next: chrono::DateTime<chrono::FixedOffset> = created.body["next_fire_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("a next tick");
    let berlin = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(berlin.format("%H:%M:%S").to_string(), "02:00:00");

    api.post("/api/v1/schedules", &nightly()).await.problem(409);

    let paused = api
        .call(
            Method::PATCH,
            "/api/v1/schedules/nightly",
            Some(&api.key),
            Some(&json!({ "enabled": false })),
        )
        .await;
    assert_eq!(paused.status, 200, "{paused:?}");
    assert_eq!(paused.body["enabled"], false);
    assert_eq!(paused.body["next_fire_at"], Value::Null);
    let bad_patch = api
        .call(
            Method::PATCH,
            "/api/v1/schedules/nightly",
            Some(&api.key),
            Some(&json!({ "cron": "@sometimes" })),
        )
        .await;
    bad_patch.problem(422);
    assert_eq!(bad_patch.pointers(), ["/cron"]);

    let triggered = api
        .call(
            Method::POST,
            "/api/v1/schedules/nightly/trigger",
            Some(&api.key),
            None,
        )
        .await;
    assert_eq!(triggered.status, 201, "{triggered:?}");
    let id = triggered.body["id"]
        .as_str()
        .expect("a mission id")
        .to_owned();
    let mission = api.get(&format!("/api/v1/missions/{id}")).await;
    assert_eq!(mission.body["schedule"], "nightly");
    let key = mission.body["idempotency_key"].as_str().unwrap_or_default();
    assert!(key.starts_with("schedule:nightly:manual:"), "{key}");

    let shown = api.get("/api/v1/schedules/nightly").await;
    assert_eq!(shown.status, 200, "{shown:?}");
    assert_eq!(shown.body["skipped"], 0);
    let recent = shown.body["recent_missions"].as_array().expect("missions");
    assert_eq!(recent.len(), 1, "{shown:?}");
    assert_eq!(recent[0]["id"], id.as_str());
    assert_eq!(recent[0]["fire_at"], mission.body["fire_at"]);
    let by_schedule = api.get("/api/v1/missions?schedule=nightly").await;
    assert_eq!(by_schedule.body["missions"][0]["id"], id.as_str());
    let other = api.get("/api/v1/missions?schedule=other").await;
    assert_eq!(other.body["missions"], json!([]));

    let deleted = api
        .call(
            Method::DELETE,
            "/api/v1/schedules/nightly",
            Some(&api.key),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    for (method, path) in [
        (Method::GET, "/api/v1/schedules/nightly"),
        (Method::DELETE, "/api/v1/schedules/nightly"),
        (Method::POST, "/api/v1/schedules/nightly/trigger"),
        (Method::GET, "/api/v1/schedules/Not%20A%20Name"),
    ] {
        api.call(method, path, Some(&api.key), None)
            .await
            .problem(404);
    }
    let gone = api.get(&format!("/api/v1/missions/{id}")).await;
    assert_eq!(gone.status, 200, "the schedule's missions stay");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn viewers_read_and_operators_write(pool: PgPool) {
    let api = Api::start(pool).await;
    let viewer = api.create_key("watcher", "viewer").await;
    let operator = api.create_key("ops", "operator").await;
    let refused = api
        .call(
            Method::POST,
            "/api/v1/schedules",
            Some(&viewer),
            Some(&nightly()),
        )
        .await;
    refused.problem(403);
    let created = api
        .call(
            Method::POST,
            "/api/v1/schedules",
            Some(&operator),
            Some(&nightly()),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    for path in ["/api/v1/schedules", "/api/v1/schedules/nightly"] {
        let read = api.call(Method::GET, path, Some(&viewer), None).await;
        assert_eq!(read.status, 200, "{read:?}");
    }
    for (method, path) in [
        (Method::PATCH, "/api/v1/schedules/nightly"),
        (Method::DELETE, "/api/v1/schedules/nightly"),
        (Method::POST, "/api/v1/schedules/nightly/trigger"),
    ] {
        let body = json!({ "enabled": false });
        let body = (method == Method::PATCH).then_some(&body);
        api.call(method, path, Some(&viewer), body)
            .await
            .problem(403);
    }
    assert_eq!(api.mission_count().await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn internal_workflows_may_be_scheduled(pool: PgPool) {
    let api = Api::start(pool).await;
    let created = api
        .post(
            "/api/v1/schedules",
            &json!({ "name": "engine.sweep", "cron": "*/30 * * * * *", "workflow": "engine-only" }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["timezone"], "UTC");
    assert_eq!(created.body["input"], json!({}));
}
