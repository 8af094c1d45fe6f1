//! Concurrency keys end to end: missions sharing a key run one at a time, in submission order,
//! across two workers with room for many missions each; a mission of another key is not held
//! up by them, and a mission waiting its turn can be cancelled.

mod common;

use common::*;
use serde_json::{json, Value};

/// Marks its start, takes a while, marks its end: `/items/start-<tag>` ... `/items/end-<tag>`.
fn marked(h: &Harness, tag: &str) -> Value {
    json!([
        http_step(
            "start",
            "POST",
            &h.callee.url(&format!("/items/start-{tag}"))
        ),
        http_step("work", "GET", &h.callee.url("/slow/400")),
        http_step("end", "POST", &h.callee.url(&format!("/items/end-{tag}"))),
    ])
}

async fn submit_keyed(h: &Harness, tag: &str, key: &str) -> String {
    let reply = h
        .submit_body(&json!({
            "workflow": "plan",
            "input": { "steps": marked(h, tag) },
            "concurrency_key": key,
        }))
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.body["concurrency_key"], key);
    id_of(&reply.body)
}

/// When the callee first saw `path`.
fn seen(h: &Harness, path: &str) -> std::time::Duration {
    h.callee
        .to_path(path)
        .first()
        .unwrap_or_else(|| panic!("{path} was never called"))
        .at
}

#[tokio::test]
async fn missions_of_one_key_run_one_at_a_time_in_submission_order() {
    let h = Harness::with(Options {
        workers: 2,
        worker_concurrency: Some(8),
        ..Options::default()
    })
    .await;
    let tags = ["k0", "k1", "k2", "k3"];
    let mut ids = Vec::new();
    for tag in tags {
        ids.push(submit_keyed(&h, tag, "deploy:web").await);
    }
    let other = submit_keyed(&h, "other", "deploy:db").await;
    for id in ids.iter().chain([&other]) {
        h.wait_terminal(id, "succeeded", secs(30)).await;
    }
    for pair in tags.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        assert!(
            seen(&h, &format!("/items/end-{before}")) <= seen(&h, &format!("/items/start-{after}")),
            "{after} started before {before} ended"
        );
    }
    // The other key ran beside the first mission of `deploy:web`, not after the last.
    assert!(seen(&h, "/items/start-other") < seen(&h, "/items/end-k3"));
}

#[tokio::test]
async fn a_mission_waiting_its_turn_can_be_cancelled() {
    let h = Harness::start().await;
    let gate = h
        .submit_body(&json!({
            "workflow": "plan",
            "input": { "steps": [{ "name": "gate", "approval": { "message": "hold" } }] },
            "concurrency_key": "tenant:1",
        }))
        .await;
    let gate = id_of(&gate.body);
    h.wait_status(&gate, "waiting", secs(15)).await;
    let queued = submit_keyed(&h, "queued", "tenant:1").await;
    let cancel = h
        .send(h.request(
            reqwest::Method::POST,
            &format!("/api/v1/missions/{queued}/cancel"),
        ))
        .await;
    assert_eq!(cancel.status, 202, "{cancel:?}");
    h.wait_terminal(&queued, "cancelled", secs(15)).await;
    assert!(h.callee.to_path("/items/start-queued").is_empty());
    assert_eq!(
        h.get(&gate).await["status"],
        "waiting",
        "the head is untouched"
    );
    let mut browser = h.signed_in(&h.key).await;
    let page = browser.get(&format!("/missions/{queued}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("<dt>Concurrency key</dt><dd class=\"mono\">tenant:1</dd>"),
        "{}",
        page.body
    );
}

/// The missions' statuses, in order.
async fn statuses(h: &Harness, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        out.push(
            h.get(id).await["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    out
}

/// Three approval-gated missions of one key: the first waits for its approval, the others stay
/// `pending` behind it; approving the first lets the second start (and wait), the third still
/// waits its turn.
#[tokio::test]
async fn approval_gated_missions_of_one_key_wait_in_line() {
    let h = Harness::with(Options {
        workers: 2,
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = h
            .submit_body(&json!({
                "workflow": "plan",
                "input": { "steps": [{ "name": "gate", "approval": { "message": "go?" } }] },
                "concurrency_key": "release",
            }))
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        ids.push(id_of(&reply.body));
    }
    h.wait_status(&ids[0], "waiting", secs(15)).await;
    // Long enough for both workers to have been offered the others many times over.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(statuses(&h, &ids).await, ["waiting", "pending", "pending"]);

    let approved = h.decide(&ids[0], "gate", "approve", "first").await;
    assert_eq!(approved.status, 200, "{approved:?}");
    h.wait_terminal(&ids[0], "succeeded", secs(15)).await;
    h.wait_status(&ids[1], "waiting", secs(15)).await;
    assert_eq!(
        statuses(&h, &ids).await,
        ["succeeded", "waiting", "pending"]
    );
}
