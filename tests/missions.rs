//! Missions that run to completion: a full plan with a template and a timer, idempotent
//! submission, listing with keyset pagination, history pagination, and many missions on two
//! workers at once.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// POST /ok, sleep 100 ms, GET /items/{{steps.a.output.body.id}}: every observable of a
/// successful mission.
#[tokio::test]
async fn a_plan_succeeds_end_to_end() {
    let h = Harness::start().await;
    let submitted = h
        .submit(json!([
            { "name": "a", "http": { "method": "POST", "url": h.callee.url("/ok"), "body": { "n": 1 } } },
            { "name": "b", "sleep": { "ms": 100 } },
            { "name": "c", "http": { "method": "GET", "url": h.callee.url("/items/{{steps.a.output.body.id}}") } }
        ]))
        .await;
    let id = id_of(&submitted);
    assert_eq!(submitted["workflow"], "plan");
    assert!(
        matches!(
            submitted["status"].as_str(),
            Some("pending" | "running" | "waiting")
        ),
        "a new mission is live: {submitted}"
    );
    for field in ["created_at", "updated_at", "input", "steps"] {
        assert!(
            !submitted[field].is_null(),
            "`{field}` missing: {submitted}"
        );
    }

    let mission = h.wait_terminal(&id, "succeeded", secs(20)).await;

    // Steps: kinds, statuses, attempts, in plan order.
    assert_eq!(
        step_statuses(&mission),
        [("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded")]
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    let kinds: Vec<&str> = mission["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["task", "sleep", "task"]);
    for name in ["a", "b", "c"] {
        assert_eq!(step(&mission, name)["attempts"], 1, "attempts of {name}");
    }

    // The callee: a's POST (with its body), then c's GET on the templated path.
    let requests = h.callee.requests();
    assert_eq!(requests.len(), 2, "callee saw:\n{}", h.callee.describe());
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("POST", "/ok")
    );
    assert_eq!(requests[0].body, json!({ "n": 1 }));
    assert_eq!(requests[0].key.as_deref(), Some(format!("{id}:a").as_str()));
    assert_eq!(
        (requests[1].method.as_str(), requests[1].path.as_str()),
        ("GET", "/items/1")
    );
    assert_eq!(requests[1].key.as_deref(), Some(format!("{id}:c").as_str()));
    // The sleep really slept between the two calls.
    assert!(
        requests[1].at - requests[0].at >= std::time::Duration::from_millis(100),
        "c ran {:?} after a, before the 100 ms timer",
        requests[1].at - requests[0].at
    );
    assert_eq!(
        step(&mission, "c")["input"]["url"],
        h.callee.url("/items/1"),
        "the recorded input is the resolved request"
    );

    // Output: every step's output by name.
    assert_eq!(
        mission["output"],
        json!({ "steps": {
            "a": { "status": 201, "body": { "id": 1 } },
            "b": null,
            "c": { "status": 200, "body": { "id": "1", "method": "GET", "body": null } }
        } })
    );
    assert!(mission["error"].is_null(), "{mission}");

    // History, in order.
    let history = h.history(&id).await;
    assert_eq!(
        typed_steps(&history),
        [
            "mission_submitted",
            "mission_started",
            "step_started(a)",
            "step_succeeded(a)",
            "timer_started(b)",
            "mission_resumed",
            "timer_fired(b)",
            "step_started(c)",
            "step_succeeded(c)",
            "mission_succeeded",
        ],
        "history:\n{}",
        describe_history(&history)
    );
    let seqs: Vec<i64> = history.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=history.len() as i64).collect::<Vec<_>>());
    assert_eq!(history[2]["attempt"], 1);
}

/// Same idempotency key and body: 200 with the same mission, which runs once; same key with a
/// different body: 409.
#[tokio::test]
async fn idempotent_submission() {
    let h = Harness::start().await;
    let key = format!("order-{}", uuid::Uuid::new_v4());
    let body = json!({
        "workflow": "plan",
        "input": { "steps": [ http_step("a", "POST", &h.callee.url("/ok")) ] },
        "idempotency_key": key,
    });
    let first = h.submit_body(&body).await;
    assert_eq!(first.status, 201, "{first:?}");
    let id = id_of(&first.body);
    assert_eq!(first.body["idempotency_key"], key.as_str());

    let again = h.submit_body(&body).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(id_of(&again.body), id);

    let mut different = body.clone();
    different["input"]["steps"][0]["http"]["url"] = json!(h.callee.url("/items/9"));
    let conflict = h.submit_body(&different).await;
    conflict.problem(409);

    h.wait_terminal(&id, "succeeded", secs(15)).await;
    // A repeat after completion still returns the same (now finished) mission.
    let late = h.submit_body(&body).await;
    assert_eq!(late.status, 200, "{late:?}");
    assert_eq!(id_of(&late.body), id);
    assert_eq!(late.body["status"], "succeeded");

    // Only one mission exists and it ran once.
    assert_eq!(h.callee.with_key(&format!("{id}:a")).len(), 1);
    assert_eq!(h.callee.requests().len(), 1, "{}", h.callee.describe());
    let list = h
        .send(h.request(reqwest::Method::GET, "/api/v1/missions"))
        .await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["missions"].as_array().map(Vec::len), Some(1));
}

/// limit=2 over 5 missions: pages of 2, 2, 1, newest first, no duplicates, `next_cursor` null
/// on the last page; filters by status and workflow.
#[tokio::test]
async fn list_with_keyset_pagination() {
    // No worker: the missions stay pending, so the list is stable.
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = h
            .submit(json!([ { "name": format!("s{i}"), "sleep": { "ms": 1 } } ]))
            .await;
        ids.push(id_of(&m));
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/missions?limit=2&cursor={c}"),
            None => "/api/v1/missions?limit=2".to_owned(),
        };
        let page = h.send(h.request(reqwest::Method::GET, &path)).await;
        assert_eq!(page.status, 200, "{page:?}");
        let missions = page.body["missions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        sizes.push(missions.len());
        seen.extend(missions.iter().map(id_of));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(
                    page.body.get("next_cursor").is_some(),
                    "`next_cursor` must be present (null): {page:?}"
                );
                cursor = None;
                break;
            }
        }
    }
    assert!(cursor.is_none(), "pagination did not end");
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(seen, newest_first, "newest first, each exactly once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);

    // Filters.
    let pending = h
        .send(h.request(reqwest::Method::GET, "/api/v1/missions?status=pending"))
        .await;
    assert_eq!(pending.status, 200);
    let pending_ids: Vec<String> = pending.body["missions"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(pending_ids, newest_first);
    assert_eq!(pending.body["next_cursor"], Value::Null);
    let succeeded = h
        .send(h.request(reqwest::Method::GET, "/api/v1/missions?status=succeeded"))
        .await;
    assert_eq!(succeeded.body["missions"], json!([]));
    let other = h
        .send(h.request(reqwest::Method::GET, "/api/v1/missions?workflow=nope"))
        .await;
    assert_eq!(other.body["missions"], json!([]));
    let plan = h
        .send(h.request(
            reqwest::Method::GET,
            "/api/v1/missions?workflow=plan&limit=5",
        ))
        .await;
    assert_eq!(plan.body["missions"].as_array().map(Vec::len), Some(5));
    assert_eq!(plan.body["next_cursor"], Value::Null);

    // Bad parameters are 400 problems.
    for bad in [
        "/api/v1/missions?limit=0",
        "/api/v1/missions?limit=abc",
        "/api/v1/missions?status=bogus",
        "/api/v1/missions?cursor=not-a-cursor",
    ] {
        h.send(h.request(reqwest::Method::GET, bad))
            .await
            .problem(400);
    }
}

/// History pages with `after`/`limit` concatenate to the whole history, in order.
#[tokio::test]
async fn history_pagination() {
    let h = Harness::start().await;
    let m = h
        .submit(json!([
            http_step("a", "POST", &h.callee.url("/ok")),
            http_step("b", "POST", &h.callee.url("/items/2")),
            http_step("c", "GET", &h.callee.url("/items/3")),
        ]))
        .await;
    let id = id_of(&m);
    h.wait_terminal(&id, "succeeded", secs(15)).await;

    let full = h
        .send(h.request(
            reqwest::Method::GET,
            &format!("/api/v1/missions/{id}/history"),
        ))
        .await;
    assert_eq!(full.status, 200);
    let all = full.body["events"].as_array().cloned().unwrap();
    // submitted, started, 3 × (started, succeeded), succeeded
    assert_eq!(all.len(), 9, "{}", describe_history(&all));
    assert_eq!(full.body["next_after"], all.last().unwrap()["seq"]);
    for event in &all {
        for field in ["seq", "at", "type", "data"] {
            assert!(!event[field].is_null(), "event without `{field}`: {event}");
        }
    }

    let mut paged = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = h
            .send(h.request(
                reqwest::Method::GET,
                &format!("/api/v1/missions/{id}/history?after={after}&limit=4"),
            ))
            .await;
        assert_eq!(page.status, 200, "{page:?}");
        let events = page.body["events"].as_array().cloned().unwrap();
        if events.is_empty() {
            assert_eq!(page.body["next_after"], Value::Null, "{page:?}");
            break;
        }
        assert!(events.len() <= 4);
        assert_eq!(page.body["next_after"], events.last().unwrap()["seq"]);
        after = page.body["next_after"].as_i64().unwrap();
        paged.extend(events);
        pages += 1;
        assert!(pages < 10, "history pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, all);

    // A page from the middle.
    let middle = h
        .send(h.request(
            reqwest::Method::GET,
            &format!("/api/v1/missions/{id}/history?after=3&limit=2"),
        ))
        .await;
    let seqs: Vec<i64> = middle.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5]);
    h.send(h.request(
        reqwest::Method::GET,
        &format!("/api/v1/missions/{id}/history?after=-1"),
    ))
    .await
    .problem(400);
}

/// Two workers, 20 missions of 3 quick steps: all succeed and no step runs twice.
#[tokio::test]
async fn many_missions_on_two_workers() {
    let h = Harness::with(Options {
        workers: 2,
        worker_concurrency: Some(8),
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let m = h
            .submit(json!([
                http_step("a", "POST", &h.callee.url("/ok")),
                http_step("b", "POST", &h.callee.url(&format!("/items/{i}"))),
                http_step(
                    "c",
                    "GET",
                    &h.callee.url("/items/{{steps.a.output.body.id}}")
                ),
            ]))
            .await;
        ids.push(id_of(&m));
    }
    for id in &ids {
        let m = h.wait_terminal(id, "succeeded", secs(60)).await;
        for name in ["a", "b", "c"] {
            assert_eq!(step(&m, name)["attempts"], 1, "mission {id} step {name}");
        }
    }

    let requests = h.callee.requests();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for r in &requests {
        *per_key
            .entry(r.key.clone().unwrap_or_else(|| "<none>".into()))
            .or_default() += 1;
    }
    let doubled: Vec<_> = per_key.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubled.is_empty(),
        "keys not seen exactly once: {doubled:?}"
    );
    let expected: HashSet<String> = ids
        .iter()
        .flat_map(|id| ["a", "b", "c"].map(|s| format!("{id}:{s}")))
        .collect();
    let got: HashSet<String> = per_key.keys().cloned().collect();
    assert_eq!(got, expected);
    assert_eq!(requests.len(), 60);

    // Both workers took part (20 missions, concurrency 8 each).
    let mut workers = HashSet::new();
    for id in &ids {
        for e in events_of(&h.history(id).await, "mission_started") {
            workers.insert(e["data"]["worker"].as_str().unwrap_or_default().to_owned());
        }
    }
    eprintln!(
        "missions were started by {} workers: {workers:?}",
        workers.len()
    );
}

/// `serve --worker` runs missions in the API process itself.
#[tokio::test]
async fn serve_with_an_embedded_worker() {
    let h = Harness::with(Options {
        workers: 0,
        serve_with_worker: true,
        ..Options::default()
    })
    .await;
    let m = h
        .submit(json!([
            http_step("a", "POST", &h.callee.url("/ok")),
            http_step(
                "b",
                "GET",
                &h.callee.url("/items/{{steps.a.output.body.id}}")
            ),
        ]))
        .await;
    let id = id_of(&m);
    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert_eq!(mission["output"]["steps"]["b"]["body"]["id"], "1");
    assert_eq!(h.callee.requests().len(), 2, "{}", h.callee.describe());
}
