//! Signals end to end, through the API and a real worker: a plan's signal step waits without
//! holding the worker, the signal's payload becomes its output and feeds later templates, a
//! signal sent early is delivered on arrival, and a wait that times out fails the mission and
//! compensates what came before it.

mod common;

use common::*;
use serde_json::{json, Value};

async fn send_signal(h: &Harness, id: &str, name: &str, payload: &Value) -> Reply {
    h.send(
        h.request(
            reqwest::Method::POST,
            &format!("/api/v1/missions/{id}/signals/{name}"),
        )
        .json(payload),
    )
    .await
}

/// a (compensable) → wait for `paid` → c, which posts the payment's reference.
fn steps(h: &Harness, timeout_s: f64) -> Value {
    json!([
        compensable_step(&h.callee, "a", "POST", "/ok"),
        { "name": "paid", "signal": { "timeout_s": timeout_s } },
        {
            "name": "c",
            "http": {
                "method": "POST",
                "url": h.callee.url("/items/receipt"),
                "body": { "reference": "{{steps.paid.output.payload.reference}}" }
            }
        },
    ])
}

#[tokio::test]
async fn a_signal_resumes_the_mission_with_its_payload() {
    let h = Harness::start().await;
    let id = id_of(&h.submit(steps(&h, 600.0)).await);
    h.wait_until(
        &id,
        "waiting for the signal",
        |m| m["status"] == "waiting" && step_is(m, "paid", "waiting"),
        secs(15),
    )
    .await;
    assert!(h.callee.to_path("/items/receipt").is_empty(), "c ran early");

    let reply = send_signal(&h, &id, "paid", &json!({ "reference": "pay_42" })).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert_eq!(
        step(&mission, "paid")["output"],
        json!({ "payload": { "reference": "pay_42" } })
    );
    let receipts = h.callee.to_path("/items/receipt");
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].body, json!({ "reference": "pay_42" }));

    let history = h.history(&id).await;
    let order = typed_steps(&history);
    let pos = |t: &str| order.iter().position(|x| x == t).unwrap_or(usize::MAX);
    assert!(
        pos("signal_waiting(paid)") < pos("signal_received(paid)")
            && pos("signal_received(paid)") < pos("step_started(c)"),
        "{}",
        describe_history(&history)
    );
    let received = events_of(&history, "signal_received");
    assert_eq!(received[0]["data"]["payload"]["reference"], "pay_42");
    let again = send_signal(&h, &id, "paid", &json!({})).await;
    assert_eq!(again.status, 409, "{again:?}");
}

#[tokio::test]
async fn a_signal_sent_before_the_wait_is_delivered_when_it_gets_there() {
    let h = Harness::start().await;
    // The first step is slow, so the signal surely arrives before the wait.
    let m = h
        .submit(json!([
            { "name": "slow", "http": { "method": "GET", "url": h.callee.url("/slow/1500") } },
            { "name": "paid", "signal": { "timeout_s": 600 } },
        ]))
        .await;
    let id = id_of(&m);
    let reply = send_signal(&h, &id, "paid", &json!("early")).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let mission = h.wait_terminal(&id, "succeeded", secs(20)).await;
    assert_eq!(
        step(&mission, "paid")["output"],
        json!({ "payload": "early" })
    );
    let history = h.history(&id).await;
    assert!(
        events_of(&history, "signal_waiting").is_empty(),
        "{}",
        describe_history(&history)
    );
}

#[tokio::test]
async fn a_wait_that_times_out_fails_and_compensates() {
    let h = Harness::start().await;
    let id = id_of(&h.submit(steps(&h, 1.0)).await);
    let mission = h.wait_terminal(&id, "failed", secs(20)).await;
    let paid = step(&mission, "paid");
    assert_eq!(paid["status"], "failed", "{paid}");
    assert_eq!(paid["error"]["code"], "signal_timeout", "{paid}");
    assert_eq!(step(&mission, "a")["status"], "compensated");
    assert_eq!(h.callee.to_path("/undo/a").len(), 1);
    assert!(h.callee.to_path("/items/receipt").is_empty());
    let late = send_signal(&h, &id, "paid", &json!({})).await;
    assert_eq!(late.status, 409, "{late:?}");
}

#[tokio::test]
async fn a_worker_killed_while_a_mission_waits_for_a_signal_loses_nothing() {
    let mut h = Harness::start().await;
    let id = id_of(&h.submit(steps(&h, 600.0)).await);
    h.wait_until(
        &id,
        "waiting for the signal",
        |m| m["status"] == "waiting" && step_is(m, "paid", "waiting"),
        secs(15),
    )
    .await;
    // SIGKILL: nothing of the worker's runs on after this, not even a shutdown hook.
    h.workers[0].kill().await;
    let reply = send_signal(&h, &id, "paid", &json!({ "reference": "pay_7" })).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    h.start_worker().await;

    let mission = h.wait_terminal(&id, "succeeded", secs(30)).await;
    assert_eq!(
        step(&mission, "paid")["output"],
        json!({ "payload": { "reference": "pay_7" } })
    );
    assert_eq!(h.callee.to_path("/ok").len(), 1, "step a ran once");
    let receipts = h.callee.to_path("/items/receipt");
    assert_eq!(receipts.len(), 1, "{}", h.callee.describe());
    assert_eq!(receipts[0].body, json!({ "reference": "pay_7" }));
}
