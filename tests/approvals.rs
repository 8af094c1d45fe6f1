//! Approval gates: granted, rejected, timed out, and a mission cancelled while it waits.

mod common;

use common::*;
use serde_json::json;

/// a (compensable) → approval b → c. Returns the mission id once b is waiting.
async fn submit_gated(h: &Harness, approval: serde_json::Value) -> String {
    let m = h
        .submit(json!([
            compensable_step(&h.callee, "a", "POST", "/ok"),
            { "name": "b", "approval": approval },
            http_step("c", "POST", &h.callee.url("/items/after")),
        ]))
        .await;
    let id = id_of(&m);
    let waiting = h
        .wait_until(
            &id,
            "waiting on approval b",
            |m| m["status"] == "waiting" && step_is(m, "b", "waiting"),
            secs(15),
        )
        .await;
    assert_eq!(step(&waiting, "a")["status"], "succeeded");
    assert_eq!(step(&waiting, "b")["kind"], "approval");
    id
}

/// An operator key named `alice` approves with a comment: the decision is signed with the key's
/// name, the comment is kept, and the mission continues to success.
#[tokio::test]
async fn approval_granted_continues_the_mission() {
    let h = Harness::start().await;
    let alice = h.create_key("alice", "operator").await;
    let id = submit_gated(&h, json!({ "message": "ship it?" })).await;
    assert!(
        h.callee.to_path("/items/after").is_empty(),
        "c ran before the approval"
    );

    let reply = h.decide_as(&alice, &id, "b", "approve", "lgtm").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["id"], id.as_str());

    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert_eq!(
        step_statuses(&mission),
        [("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded")]
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    let b = step(&mission, "b");
    assert_eq!(b["output"]["decision"], "approve", "{b}");
    assert_eq!(b["output"]["by"], "alice", "{b}");
    assert_eq!(b["output"]["comment"], "lgtm", "{b}");
    assert_eq!(b["input"]["message"], "ship it?", "{b}");
    assert_eq!(mission["output"]["steps"]["b"]["by"], "alice");
    assert_eq!(h.callee.with_key(&format!("{id}:c")).len(), 1);
    assert!(
        h.callee.to_path("/undo/a").is_empty(),
        "nothing is compensated on success"
    );

    let history = h.history(&id).await;
    let requested = events_of(&history, "approval_requested");
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0]["step"], "b");
    assert_eq!(requested[0]["data"]["message"], "ship it?");
    let granted = events_of(&history, "approval_granted");
    assert_eq!(granted.len(), 1, "{}", describe_history(&history));
    assert_eq!(granted[0]["step"], "b");
    assert_eq!(granted[0]["data"]["by"], "alice");
    assert_eq!(granted[0]["data"]["comment"], "lgtm");
    let order = typed_steps(&history);
    let pos = |t: &str| order.iter().position(|x| x == t).unwrap_or(usize::MAX);
    assert!(
        pos("approval_requested(b)") < pos("approval_granted(b)")
            && pos("approval_granted(b)") < pos("step_started(c)")
            && pos("step_succeeded(c)") < pos("mission_succeeded"),
        "{}",
        describe_history(&history)
    );

    // A decided approval cannot be decided again.
    h.decide(&id, "b", "approve", "again").await.problem(409);
}

/// A rejection fails the mission and compensates a; deciding again is a conflict.
#[tokio::test]
async fn approval_rejected_fails_and_compensates() {
    let h = Harness::start().await;
    let id = submit_gated(&h, json!({ "message": "ship it?" })).await;

    let reply = h.decide(&id, "b", "reject", "not today").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // The step is no longer waiting, even before a worker picks the mission up.
    h.decide(&id, "b", "approve", "changed my mind")
        .await
        .problem(409);

    let mission = h.wait_terminal(&id, "failed", secs(15)).await;
    assert_eq!(
        step_statuses(&mission),
        [("a", "compensated"), ("b", "rejected")].map(|(n, s)| (n.to_owned(), s.to_owned())),
        "{}",
        pretty(&mission)
    );
    let b = step(&mission, "b");
    assert_eq!(b["error"]["decision"], "reject", "{b}");
    assert_eq!(b["error"]["comment"], "not today", "{b}");
    assert_eq!(b["error"]["by"], h.key_name.as_str(), "{b}");
    assert_eq!(
        mission["error"]["cause"]["step"],
        "b",
        "{}",
        pretty(&mission)
    );

    let undo = h.callee.with_key(&format!("{id}:compensate:a"));
    assert_eq!(undo.len(), 1, "{}", h.callee.describe());
    assert_eq!(
        (undo[0].method.as_str(), undo[0].path.as_str()),
        ("DELETE", "/undo/a")
    );
    assert!(
        h.callee.to_path("/items/after").is_empty(),
        "c must not run"
    );

    let history = h.history(&id).await;
    let rejected = events_of(&history, "approval_rejected");
    assert_eq!(rejected.len(), 1, "{}", describe_history(&history));
    assert_eq!(rejected[0]["data"]["timed_out"], false);
    assert_eq!(rejected[0]["data"]["by"], h.key_name.as_str());
    assert_eq!(
        types(&history).last().map(String::as_str),
        Some("mission_failed")
    );

    // Deciding on a finished mission is a conflict too.
    h.decide(&id, "b", "approve", "too late").await.problem(409);
    h.decide(&id, "a", "approve", "not an approval")
        .await
        .problem(409);
}

/// No decision within 0.5 s: the approval is rejected by its timeout and the mission fails.
#[tokio::test]
async fn approval_timeout_rejects() {
    let h = Harness::start().await;
    let m = h
        .submit(json!([
            compensable_step(&h.callee, "a", "POST", "/ok"),
            { "name": "b", "approval": { "message": "quick!", "timeout_s": 0.5 } },
            http_step("c", "POST", &h.callee.url("/items/after")),
        ]))
        .await;
    let id = id_of(&m);
    let mission = h.wait_terminal(&id, "failed", secs(15)).await;

    assert_eq!(
        step(&mission, "b")["status"],
        "rejected",
        "{}",
        pretty(&mission)
    );
    assert_eq!(step(&mission, "a")["status"], "compensated");
    assert_eq!(step(&mission, "b")["error"]["timed_out"], true);
    assert_eq!(h.callee.with_key(&format!("{id}:compensate:a")).len(), 1);
    assert!(h.callee.to_path("/items/after").is_empty());

    let history = h.history(&id).await;
    let rejected = events_of(&history, "approval_rejected");
    assert_eq!(rejected.len(), 1, "{}", describe_history(&history));
    assert_eq!(rejected[0]["step"], "b");
    assert_eq!(rejected[0]["data"]["timed_out"], true, "{}", rejected[0]);
    // It did not time out early.
    let at = |e: &serde_json::Value| e["at"].as_str().unwrap_or_default().to_owned();
    let requested = events_of(&history, "approval_requested");
    assert_eq!(requested.len(), 1);
    assert!(
        !requested[0]["data"]["deadline"].is_null(),
        "the deadline is recorded: {}",
        requested[0]
    );
    assert!(at(rejected[0]) > at(requested[0]));

    // Too late to decide.
    h.decide(&id, "b", "approve", "sorry").await.problem(409);
}

/// Cancel while waiting on an approval: compensations run, the approval is skipped, c never
/// runs, and a second cancel is a conflict.
#[tokio::test]
async fn cancel_while_waiting_on_an_approval() {
    let h = Harness::start().await;
    let id = submit_gated(&h, json!({ "message": "ship it?" })).await;

    let reply = h.cancel(&id).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.body["id"], id.as_str());
    assert_eq!(reply.body["cancel_requested"], true, "{reply:?}");

    let mission = h.wait_terminal(&id, "cancelled", secs(15)).await;
    assert_eq!(
        step_statuses(&mission),
        [("a", "compensated"), ("b", "skipped")].map(|(n, s)| (n.to_owned(), s.to_owned())),
        "{}",
        pretty(&mission)
    );
    assert_eq!(h.callee.with_key(&format!("{id}:compensate:a")).len(), 1);
    assert!(
        h.callee.to_path("/items/after").is_empty(),
        "c must not run"
    );

    let history = h.history(&id).await;
    let order = typed_steps(&history);
    let tail: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .skip_while(|t| *t != "mission_cancel_requested")
        .filter(|t| *t != "mission_resumed")
        .collect();
    assert_eq!(
        tail,
        [
            "mission_cancel_requested",
            "step_skipped(b)",
            "compensation_started(compensate:a)",
            "step_compensated(compensate:a)",
            "mission_cancelled",
        ],
        "{}",
        describe_history(&history)
    );
    assert_eq!(
        events_of(&history, "mission_cancel_requested")[0]["data"]["by"],
        h.key_name.as_str()
    );

    h.cancel(&id).await.problem(409);
    h.decide(&id, "b", "approve", "too late").await.problem(409);
}
