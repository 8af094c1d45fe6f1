//! Failing steps: retryable errors retried with backoff, retries exhausted, and a permanent
//! failure that compensates the completed steps in reverse order.

mod common;

use common::*;
use serde_json::json;

/// /flaky/2 answers 503 twice, then 200: with 5 attempts allowed the step succeeds on the third,
/// every attempt carrying the same Idempotency-Key.
#[tokio::test]
async fn retryable_errors_are_retried_until_success() {
    let h = Harness::start().await;
    let m = h
        .submit(json!([{
            "name": "a",
            "http": { "method": "POST", "url": h.callee.url("/flaky/2") },
            "retry": { "max_attempts": 5, "initial_backoff_ms": 50, "max_backoff_ms": 200 }
        }]))
        .await;
    let id = id_of(&m);
    let mission = h.wait_terminal(&id, "succeeded", secs(20)).await;

    let a = step(&mission, "a");
    assert_eq!(a["status"], "succeeded");
    assert_eq!(a["attempts"], 3, "{}", pretty(&mission));
    assert_eq!(a["output"]["status"], 200);
    assert_eq!(
        mission["output"]["steps"]["a"],
        json!({ "status": 200, "body": { "ok": true, "attempt": 3 } })
    );

    let calls = h.callee.to_path("/flaky/2");
    assert_eq!(calls.len(), 3, "{}", h.callee.describe());
    let key = format!("{id}:a");
    assert!(
        calls.iter().all(|c| c.key.as_deref() == Some(key.as_str())),
        "every attempt carries the same key:\n{}",
        h.callee.describe()
    );

    let history = h.history(&id).await;
    let retries = events_of(&history, "step_retry_scheduled");
    assert_eq!(retries.len(), 2, "{}", describe_history(&history));
    assert_eq!(
        retries
            .iter()
            .map(|e| e["attempt"].clone())
            .collect::<Vec<_>>(),
        [json!(1), json!(2)]
    );
    for retry in &retries {
        assert_eq!(retry["step"], "a");
        assert_eq!(retry["data"]["error"]["retryable"], true, "{retry}");
        let delay = retry["data"]["delay_ms"].as_u64().expect("delay_ms");
        assert!(delay <= 200, "backoff {delay} ms over max_backoff_ms");
    }
    let started: Vec<_> = events_of(&history, "step_started")
        .iter()
        .map(|e| e["attempt"].clone())
        .collect();
    assert_eq!(started, [json!(1), json!(2), json!(3)]);
    assert_eq!(events_of(&history, "step_succeeded").len(), 1);
    assert!(events_of(&history, "step_failed").is_empty());
}

/// /flaky/5 with only 2 attempts allowed: the step fails for good after the second.
#[tokio::test]
async fn retries_are_bounded_by_max_attempts() {
    let h = Harness::start().await;
    let m = h
        .submit(json!([
            {
                "name": "a",
                "http": { "method": "POST", "url": h.callee.url("/flaky/5") },
                "retry": { "max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 100 }
            },
            http_step("b", "POST", &h.callee.url("/ok")),
        ]))
        .await;
    let id = id_of(&m);
    let mission = h.wait_terminal(&id, "failed", secs(20)).await;

    let a = step(&mission, "a");
    assert_eq!(a["status"], "failed");
    assert_eq!(a["attempts"], 2, "{}", pretty(&mission));
    assert_eq!(a["error"]["retryable"], true, "{a}");
    assert_eq!(a["error"]["details"]["status"], 503, "{a}");
    assert!(
        mission["steps"].as_array().unwrap().len() == 1,
        "b never started: {}",
        pretty(&mission)
    );
    assert!(mission["output"].is_null());
    assert_eq!(
        mission["error"]["cause"]["step"],
        "a",
        "{}",
        pretty(&mission)
    );

    assert_eq!(
        h.callee.to_path("/flaky/5").len(),
        2,
        "{}",
        h.callee.describe()
    );
    assert!(
        h.callee.to_path("/ok").is_empty(),
        "{}",
        h.callee.describe()
    );

    let history = h.history(&id).await;
    assert_eq!(events_of(&history, "step_retry_scheduled").len(), 1);
    let failed = events_of(&history, "step_failed");
    assert_eq!(failed.len(), 1, "{}", describe_history(&history));
    assert_eq!(failed[0]["attempt"], 2);
    assert_eq!(
        types(&history).last().map(String::as_str),
        Some("mission_failed")
    );
}

/// a and b succeed (both compensable), c gets a 400: no retry despite its policy, the mission
/// fails, and the compensations run b then a, once each.
#[tokio::test]
async fn permanent_failure_compensates_in_reverse_order() {
    let h = Harness::start().await;
    let m = h
        .submit(json!([
            compensable_step(&h.callee, "a", "POST", "/ok"),
            compensable_step(&h.callee, "b", "POST", "/items/7"),
            {
                "name": "c",
                "http": { "method": "POST", "url": h.callee.url("/fail") },
                "retry": { "max_attempts": 5, "initial_backoff_ms": 50 }
            },
        ]))
        .await;
    let id = id_of(&m);
    let mission = h.wait_terminal(&id, "failed", secs(20)).await;

    assert_eq!(
        step_statuses(&mission),
        [("a", "compensated"), ("b", "compensated"), ("c", "failed")]
            .map(|(n, s)| (n.to_owned(), s.to_owned())),
        "compensation entries are not listed as steps: {}",
        pretty(&mission)
    );
    let c = step(&mission, "c");
    assert_eq!(c["attempts"], 1, "a 400 is not retried: {c}");
    assert_eq!(c["error"]["retryable"], false, "{c}");
    assert_eq!(
        c["error"]["details"],
        json!({ "status": 400, "body": { "error": "nope" } })
    );
    assert_eq!(
        h.callee.to_path("/fail").len(),
        1,
        "{}",
        h.callee.describe()
    );

    // The callee: a, b, c, then undo b, undo a; each undo once, with its own key.
    let order: Vec<String> = h
        .callee
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        order,
        [
            "POST /ok",
            "POST /items/7",
            "POST /fail",
            "DELETE /undo/b",
            "DELETE /undo/a"
        ],
        "{}",
        h.callee.describe()
    );
    for name in ["a", "b"] {
        let undo = h.callee.with_key(&format!("{id}:compensate:{name}"));
        assert_eq!(undo.len(), 1, "undo of {name}:\n{}", h.callee.describe());
        assert_eq!(undo[0].path, format!("/undo/{name}"));
    }

    assert_eq!(
        mission["error"]["cause"]["step"],
        "c",
        "{}",
        pretty(&mission)
    );
    assert_eq!(
        mission["error"]["compensation"]["compensated"],
        json!(["b", "a"]),
        "{}",
        pretty(&mission)
    );

    let history = h.history(&id).await;
    let tail: Vec<String> = typed_steps(&history)
        .into_iter()
        .skip_while(|t| t != "step_failed(c)")
        .collect();
    assert_eq!(
        tail,
        [
            "step_failed(c)",
            "compensation_started(compensate:b)",
            "step_compensated(compensate:b)",
            "compensation_started(compensate:a)",
            "step_compensated(compensate:a)",
            "mission_failed",
        ],
        "{}",
        describe_history(&history)
    );
    assert!(events_of(&history, "step_retry_scheduled").is_empty());
}

/// Cancel while step b is in flight: b finishes (it is not interrupted), c never starts, and
/// b then a are compensated; the mission ends cancelled.
#[tokio::test]
async fn cancel_while_a_step_is_in_flight() {
    let h = Harness::start().await;
    let m = h
        .submit(json!([
            compensable_step(&h.callee, "a", "POST", "/ok"),
            compensable_step(&h.callee, "b", "POST", "/slow/1000"),
            http_step("c", "POST", &h.callee.url("/items/c")),
        ]))
        .await;
    let id = id_of(&m);
    h.callee
        .wait_for("b's request", |r| r.path == "/slow/1000", secs(15))
        .await;
    let reply = h.cancel(&id).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.body["status"], "running", "{reply:?}");

    let mission = h.wait_terminal(&id, "cancelled", secs(20)).await;
    assert_eq!(
        step_statuses(&mission),
        [("a", "compensated"), ("b", "compensated")].map(|(n, s)| (n.to_owned(), s.to_owned())),
        "{}",
        pretty(&mission)
    );
    assert!(h.callee.to_path("/items/c").is_empty(), "c must not run");
    let order: Vec<String> = h
        .callee
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        order,
        [
            "POST /ok",
            "POST /slow/1000",
            "DELETE /undo/b",
            "DELETE /undo/a"
        ],
        "{}",
        h.callee.describe()
    );
    assert_eq!(
        mission["error"]["compensation"]["compensated"],
        json!(["b", "a"]),
        "{}",
        pretty(&mission)
    );
    let history = h.history(&id).await;
    assert_eq!(
        types(&history).last().map(String::as_str),
        Some("mission_cancelled")
    );
    h.cancel(&id).await.problem(409);
}
