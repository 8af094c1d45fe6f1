//! The `Idempotency-Key` a plan step sends across manual retries of its mission: automatic
//! retries within one run share a key (that is what makes them safe), and each manual retry
//! gets a key of its own, so a callee that caches answers per key does not replay an old failure.

mod common;

use common::*;
use serde_json::json;

/// The keys the callee received on `path`, in arrival order.
fn keys(h: &Harness, path: &str) -> Vec<String> {
    h.callee
        .to_path(path)
        .into_iter()
        .map(|r| r.key.unwrap_or_default())
        .collect()
}

async fn retry(h: &Harness, id: &str) {
    let reply = h
        .send(h.request(
            reqwest::Method::POST,
            &format!("/api/v1/missions/{id}/retry"),
        ))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
}

/// a (compensable) → b on `/broken/2` (the callee's first two requests fail with 400, and, as
/// Stripe does, it answers a repeated key with its first answer) → c on `/flaky/1` (retried
/// automatically). Run 0 fails at b and undoes a; retry 1 fails at b again and undoes a again;
/// retry 2 succeeds. Every run's keys carry its generation: `:r1`, `:r2`; c's automatic
/// retry reuses its run's key.
#[tokio::test]
async fn a_manual_retry_sends_keys_of_its_own_generation() {
    let h = Harness::start().await;
    let m = h
        .submit(json!([
            compensable_step(&h.callee, "a", "POST", "/ok"),
            http_step("b", "POST", &h.callee.url("/broken/2")),
            { "name": "c", "http": { "method": "POST", "url": h.callee.url("/flaky/1") },
              "retry": { "max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 10 } }
        ]))
        .await;
    let id = id_of(&m);
    h.wait_terminal(&id, "failed", secs(15)).await;
    retry(&h, &id).await;
    h.wait_until(
        &id,
        "failed again",
        |m| m["status"] == "failed" && h.callee.to_path("/undo/a").len() == 2,
        secs(15),
    )
    .await;
    retry(&h, &id).await;
    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert_eq!(mission["output"]["steps"]["c"]["body"]["ok"], true);

    let key = |suffix: &str| format!("{id}:{suffix}");
    assert_eq!(keys(&h, "/ok"), [key("a"), key("a:r1"), key("a:r2")]);
    assert_eq!(keys(&h, "/broken/2"), [key("b"), key("b:r1"), key("b:r2")]);
    assert_eq!(
        keys(&h, "/undo/a"),
        [key("compensate:a"), key("compensate:a:r1")]
    );
    assert_eq!(keys(&h, "/flaky/1"), [key("c:r2"), key("c:r2")]);
}
