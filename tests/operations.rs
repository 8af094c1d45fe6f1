//! Operator routes: the approvals inbox, mission list filters, the workflow catalogue and
//! retrying a failed mission.

mod common;

use common::*;
use serde_json::{json, Value};

/// GET `path` with `key`.
async fn get_as(h: &Harness, key: &str, path: &str) -> Reply {
    h.send(h.request_as(reqwest::Method::GET, path, key)).await
}

/// POST a retry of mission `id` with `key`.
async fn retry_as(h: &Harness, key: &str, id: &str) -> Reply {
    let path = format!("/api/v1/missions/{id}/retry");
    h.send(h.request_as(reqwest::Method::POST, &path, key))
        .await
}

/// The journal rows of a mission, straight from the database: `(name, kind, status, attempts)`.
async fn journal_rows(h: &Harness, id: &str) -> Vec<(String, String, String, i32)> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(&h.database_url)
        .await
        .expect("connect to the test database");
    let rows = sqlx::query(
        "select name, kind::text as kind, status::text as status, attempts from steps \
         where mission_id = $1::uuid order by position",
    )
    .bind(id)
    .fetch_all(&mut conn)
    .await
    .expect("read the journal");
    rows.iter()
        .map(|r| {
            (
                r.get("name"),
                r.get("kind"),
                r.get("status"),
                r.get("attempts"),
            )
        })
        .collect()
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Two missions wait on approvals; the inbox lists both, oldest first, with their missions;
/// a decided approval leaves it. Viewers read it, agents may not.
#[tokio::test]
async fn approvals_inbox_lists_waiting_approvals_oldest_first() {
    let h = Harness::start().await;
    let viewer = h.create_key("vera", "viewer").await;
    let agent = h.create_key("bot", "agent").await;

    let first = id_of(
        &h.submit(
            json!([{ "name": "gate", "approval": { "message": "first?", "timeout_s": 3600 } }]),
        )
        .await,
    );
    h.wait_until(
        &first,
        "waiting",
        |m| step_is(m, "gate", "waiting"),
        secs(15),
    )
    .await;
    let second = id_of(
        &h.submit(json!([
            { "name": "prep", "noop": 1 },
            { "name": "sign-off", "approval": { "message": "second?" } }
        ]))
        .await,
    );
    h.wait_until(
        &second,
        "waiting",
        |m| step_is(m, "sign-off", "waiting"),
        secs(15),
    )
    .await;
    // A mission without an approval is not in the inbox.
    let plain = id_of(&h.submit(json!([{ "name": "n", "noop": 1 }])).await);
    h.wait_terminal(&plain, "succeeded", secs(15)).await;

    let reply = get_as(&h, &viewer, "/api/v1/approvals").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let approvals = reply.body["approvals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(approvals.len(), 2, "{}", pretty(&reply.body));
    let a = &approvals[0];
    assert_eq!(a["mission_id"], first.as_str());
    assert_eq!(a["workflow"], "plan");
    assert_eq!(a["step"], "gate");
    assert_eq!(a["message"], "first?");
    assert!(a["requested_at"].is_string(), "{a}");
    assert!(a["deadline"].is_string(), "{a}");
    assert_eq!(a["mission"]["id"], first.as_str());
    assert_eq!(a["mission"]["status"], "waiting");
    assert!(a["mission"].get("steps").is_none(), "no steps: {a}");
    let b = &approvals[1];
    assert_eq!(
        (
            b["mission_id"].as_str(),
            b["step"].as_str(),
            b["message"].as_str()
        ),
        (Some(second.as_str()), Some("sign-off"), Some("second?"))
    );
    assert!(b["deadline"].is_null(), "{b}");
    assert!(
        a["requested_at"].as_str() <= b["requested_at"].as_str(),
        "oldest first: {}",
        pretty(&reply.body)
    );

    let one = get_as(&h, &viewer, "/api/v1/approvals?limit=1").await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.body["approvals"].as_array().map(Vec::len), Some(1));
    assert_eq!(one.body["approvals"][0]["mission_id"], first.as_str());
    for bad in ["0", "-1", "many"] {
        let reply = get_as(&h, &viewer, &format!("/api/v1/approvals?limit={bad}")).await;
        assert!(reply.problem(400)["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("limit"));
    }
    get_as(&h, &agent, "/api/v1/approvals").await.problem(403);

    // Deciding removes it from the inbox.
    assert_eq!(h.decide(&first, "gate", "approve", "ok").await.status, 200);
    let reply = get_as(&h, &h.key, "/api/v1/approvals").await;
    let left: Vec<&str> = reply.body["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["mission_id"].as_str())
        .collect();
    assert_eq!(left, [second.as_str()], "{}", pretty(&reply.body));
}

/// `created_after` (inclusive), `created_before` (exclusive) and `q` (literal, case-insensitive
/// substring of the input) combine with each other, with `status` and with the cursor.
#[tokio::test]
async fn mission_list_filters_by_time_and_text() {
    let h = Harness::start().await;
    let mut missions = Vec::new();
    for tag in ["Alpha_1%", "alphaX1Y", "beta-2"] {
        let m = h
            .submit(json!([{ "name": "n", "noop": { "tag": tag } }]))
            .await;
        h.wait_terminal(&id_of(&m), "succeeded", secs(15)).await;
        missions.push(m);
    }
    let id = |i: usize| id_of(&missions[i]);
    let at = |i: usize| {
        missions[i]["created_at"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let list = |query: Vec<(&'static str, String)>| {
        let h = &h;
        async move {
            let reply = h
                .send(
                    h.request(reqwest::Method::GET, "/api/v1/missions")
                        .query(&query),
                )
                .await;
            assert_eq!(reply.status, 200, "{query:?}: {reply:?}");
            reply.body
        }
    };

    let page = list(vec![("created_after", at(1))]).await;
    assert_eq!(ids(&page, "missions"), [id(2), id(1)]);
    let page = list(vec![("created_before", at(1))]).await;
    assert_eq!(ids(&page, "missions"), [id(0)]);
    let page = list(vec![("created_after", at(0)), ("created_before", at(2))]).await;
    assert_eq!(ids(&page, "missions"), [id(1), id(0)]);

    // LIKE metacharacters are literal; case does not matter.
    let page = list(vec![("q", "ALPHA_1%".to_owned())]).await;
    assert_eq!(ids(&page, "missions"), [id(0)]);
    let page = list(vec![("q", "alpha".to_owned())]).await;
    assert_eq!(ids(&page, "missions"), [id(1), id(0)]);
    let page = list(vec![("q", "_".to_owned())]).await;
    assert_eq!(ids(&page, "missions"), [id(0)]);
    let page = list(vec![("q", "nothing-like-this".to_owned())]).await;
    assert!(ids(&page, "missions").is_empty());

    // Combined with the status filter and paginated.
    let page = list(vec![
        ("q", "alpha".to_owned()),
        ("status", "succeeded".to_owned()),
        ("created_after", at(0)),
        ("limit", "1".to_owned()),
    ])
    .await;
    assert_eq!(ids(&page, "missions"), [id(1)]);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page = list(vec![
        ("q", "alpha".to_owned()),
        ("status", "succeeded".to_owned()),
        ("created_after", at(0)),
        ("limit", "1".to_owned()),
        ("cursor", cursor),
    ])
    .await;
    assert_eq!(ids(&page, "missions"), [id(0)]);
    assert!(page["next_cursor"].is_null(), "{page}");
    let page = list(vec![
        ("q", "alpha".to_owned()),
        ("status", "failed".to_owned()),
    ])
    .await;
    assert!(ids(&page, "missions").is_empty());

    for (name, value) in [
        ("created_after", "yesterday"),
        ("created_before", "2026-13-01T00:00:00Z"),
    ] {
        let reply = h
            .send(
                h.request(reqwest::Method::GET, "/api/v1/missions")
                    .query(&[(name, value)]),
            )
            .await;
        let detail = reply.problem(400)["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(detail.contains(name), "{detail}");
    }
}

/// The workflow catalogue: `plan` with a JSON Schema of its input; readers only.
#[tokio::test]
async fn workflows_are_listed_with_their_input_schema() {
    let h = Harness::start().await;
    let viewer = h.create_key("vera", "viewer").await;
    let agent = h.create_key("bot", "agent").await;
    let reply = get_as(&h, &viewer, "/api/v1/workflows").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let workflows = reply.body["workflows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let plan = workflows
        .iter()
        .find(|w| w["name"] == "plan")
        .unwrap_or_else(|| panic!("no plan: {}", pretty(&reply.body)));
    let schema = &plan["input_schema"];
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["required"], json!(["steps"]));
    let step = &schema["$defs"]["step"];
    assert_eq!(step["oneOf"].as_array().map(Vec::len), Some(6), "{step}");
    for key in [
        "http",
        "agent",
        "approval",
        "signal",
        "sleep",
        "noop",
        "retry",
        "compensate",
    ] {
        assert!(step["properties"].get(key).is_some(), "{key}: {step}");
    }
    get_as(&h, &agent, "/api/v1/workflows").await.problem(403);
}

/// a (compensable) → b, which answers 400 once: the mission fails and a is compensated. A
/// retry re-runs b and, because its effect was undone, a; the compensation entry leaves the
/// journal, attempts continue, and the mission succeeds. Retrying again is a conflict;
/// viewers and agents may not retry.
#[tokio::test]
async fn retry_reruns_a_failed_mission_from_its_failed_step() {
    let h = Harness::start().await;
    let viewer = h.create_key("vera", "viewer").await;
    let agent = h.create_key("bot", "agent").await;
    let olga = h.create_key("olga", "operator").await;
    let m = h
        .submit(json!([
            compensable_step(&h.callee, "a", "POST", "/ok"),
            http_step("b", "POST", &h.callee.url("/broken/1")),
        ]))
        .await;
    let id = id_of(&m);
    let failed = h.wait_terminal(&id, "failed", secs(15)).await;
    assert_eq!(
        step_statuses(&failed),
        [("a", "compensated"), ("b", "failed")].map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    assert_eq!(h.callee.with_key(&format!("{id}:compensate:a")).len(), 1);
    assert_eq!(
        journal_rows(&h, &id)
            .await
            .iter()
            .map(|r| r.1.as_str())
            .collect::<Vec<_>>(),
        ["task", "task", "compensation"]
    );

    retry_as(&h, &viewer, &id).await.problem(403);
    retry_as(&h, &agent, &id).await.problem(403);
    retry_as(&h, &olga, "0190a7c4-7bde-7cc2-9a5e-3f1b2c3d4e5f")
        .await
        .problem(404);
    retry_as(&h, &olga, "nope").await.problem(400);

    let reply = retry_as(&h, &olga, &id).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.body["id"], id.as_str());
    assert!(reply.body["error"].is_null(), "{reply:?}");

    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert!(mission["error"].is_null(), "{}", pretty(&mission));
    assert_eq!(
        step_statuses(&mission),
        [("a", "succeeded"), ("b", "succeeded")].map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    // Attempt counts continue across the retry.
    assert_eq!(step(&mission, "a")["attempts"], 2, "{}", pretty(&mission));
    assert_eq!(step(&mission, "b")["attempts"], 2, "{}", pretty(&mission));
    assert_eq!(mission["output"]["steps"]["b"]["body"]["ok"], true);
    // The compensation entry is gone from the journal; no new one was written.
    assert_eq!(
        journal_rows(&h, &id).await,
        [
            ("a".to_owned(), "task".to_owned(), "succeeded".to_owned(), 2),
            ("b".to_owned(), "task".to_owned(), "succeeded".to_owned(), 2),
        ]
    );
    // a ran again (its effect had been undone) and b ran again, each with the retry's own
    // Idempotency-Key (the callee answers a repeated key with its first answer).
    for key in ["a", "a:r1", "b", "b:r1"] {
        assert_eq!(
            h.callee.with_key(&format!("{id}:{key}")).len(),
            1,
            "{key}: {}",
            h.callee.describe()
        );
    }
    assert_eq!(h.callee.to_path("/undo/a").len(), 1, "not undone again");

    // The history keeps everything, in order, with the retry signed by the operator.
    let history = h.history(&id).await;
    let retried = events_of(&history, "mission_retried");
    assert_eq!(retried.len(), 1, "{}", describe_history(&history));
    assert_eq!(
        retried[0]["data"],
        json!({ "by": "olga", "from_step": "b" })
    );
    let order = typed_steps(&history);
    let pos = |t: &str| order.iter().position(|x| x == t).unwrap_or(usize::MAX);
    let last = |t: &str| order.iter().rposition(|x| x == t).unwrap_or(0);
    assert!(
        pos("step_failed(b)") < pos("step_compensated(compensate:a)")
            && pos("step_compensated(compensate:a)") < pos("mission_failed")
            && pos("mission_failed") < pos("mission_retried")
            && pos("mission_retried") < last("step_succeeded(a)")
            && last("step_succeeded(a)") < last("step_succeeded(b)")
            && last("step_succeeded(b)") < pos("mission_succeeded"),
        "{}",
        describe_history(&history)
    );

    // Only a failed mission can be retried.
    let reply = retry_as(&h, &olga, &id).await;
    assert!(
        reply.problem(409)["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("succeeded"),
        "{reply:?}"
    );
}

/// A mission failed by a rejected approval: a retry asks for the decision again (it shows in
/// the inbox with a fresh request), and approving it completes the mission.
#[tokio::test]
async fn retry_after_a_rejection_asks_again() {
    let h = Harness::start().await;
    let m = h
        .submit(json!([
            compensable_step(&h.callee, "a", "POST", "/ok"),
            { "name": "gate", "approval": { "message": "go?", "timeout_s": 3600 } },
            http_step("c", "POST", &h.callee.url("/items/after")),
        ]))
        .await;
    let id = id_of(&m);
    h.wait_until(&id, "waiting", |m| step_is(m, "gate", "waiting"), secs(15))
        .await;
    assert_eq!(h.decide(&id, "gate", "reject", "no").await.status, 200);
    h.wait_terminal(&id, "failed", secs(15)).await;

    let reply = retry_as(&h, &h.key, &id).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let waiting = h
        .wait_until(
            &id,
            "waiting on the gate again",
            |m| {
                m["status"] == "waiting"
                    && step_is(m, "gate", "waiting")
                    && step_is(m, "a", "succeeded")
            },
            secs(15),
        )
        .await;
    assert_eq!(step(&waiting, "gate")["attempts"], 2);
    assert!(
        step(&waiting, "gate")["wake_at"].is_string(),
        "a fresh deadline"
    );
    let inbox = get_as(&h, &h.key, "/api/v1/approvals").await;
    assert_eq!(
        inbox.body["approvals"][0]["mission_id"],
        id.as_str(),
        "{inbox:?}"
    );
    assert_eq!(inbox.body["approvals"][0]["step"], "gate");

    assert_eq!(
        h.decide(&id, "gate", "approve", "now yes").await.status,
        200
    );
    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert_eq!(
        step_statuses(&mission),
        [
            ("a", "succeeded"),
            ("gate", "succeeded"),
            ("c", "succeeded")
        ]
        .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    let history = h.history(&id).await;
    assert_eq!(events_of(&history, "approval_requested").len(), 2);
    assert_eq!(
        events_of(&history, "mission_retried")[0]["data"]["from_step"],
        "gate"
    );
}

/// The workers API lists the worker process (alive, its concurrency and work) and names it as
/// the `worker` of the events that started the missions it ran; a stopped worker is `stopped`.
/// Viewers read it, agents may not.
#[tokio::test]
async fn workers_are_listed_with_their_state_and_work() {
    let mut h = Harness::with(Options {
        worker_concurrency: Some(3),
        ..Options::default()
    })
    .await;
    let viewer = h.create_key("vera", "viewer").await;
    let agent = h.create_key("bot", "agent").await;
    let listed = |body: &Value| body["workers"].as_array().cloned().unwrap_or_default();

    let mission = h.submit(json!([{ "name": "done", "noop": {} }])).await;
    let id = id_of(&mission);
    h.wait_terminal(&id, "succeeded", secs(20)).await;
    let history = h.history(&id).await;
    let started = events_of(&history, "mission_started");
    let runner = started[0]["data"]["worker"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // The heartbeat after the run reports it handled.
    let worker = poll(secs(10), || async {
        let reply = get_as(&h, &viewer, "/api/v1/workers").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let workers = listed(&reply.body);
        match workers.iter().find(|w| w["id"] == runner.as_str()) {
            Some(w) if w["handled"].as_i64() >= Some(1) => Ok(w.clone()),
            _ => Err(reply.body),
        }
    })
    .await
    .unwrap_or_else(|body| panic!("no worker {runner} with work handled: {}", pretty(&body)));
    let mut keys: Vec<&str> = worker
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "busy",
            "concurrency",
            "handled",
            "host",
            "id",
            "last_heartbeat",
            "started_at",
            "state"
        ]
    );
    assert_eq!(worker["state"], "alive");
    assert_eq!(
        (worker["concurrency"].as_i64(), worker["busy"].as_i64()),
        (Some(3), Some(0))
    );
    assert!(!worker["host"].as_str().unwrap_or_default().is_empty());

    h.workers[0].terminate();
    assert!(
        h.workers[0].wait_timeout(secs(10)).await.is_some(),
        "the worker did not stop"
    );
    let reply = get_as(&h, &viewer, "/api/v1/workers").await;
    let after = listed(&reply.body);
    let stopped = after.iter().find(|w| w["id"] == runner.as_str());
    assert_eq!(
        stopped.map(|w| &w["state"]),
        Some(&json!("stopped")),
        "{}",
        pretty(&reply.body)
    );

    get_as(&h, &agent, "/api/v1/workers").await.problem(403);
}
