//! Roles on API keys, route class by route class: `admin` and `operator` read and operate,
//! `viewer` only reads, `agent` reaches no mission route at all. A refused call is a 403
//! problem that names the roles it needs and the key's role, and changes nothing.
//!
//! The matrix needs a worker (approvals are decided on missions that wait); that
//! authentication comes before roles, and roles before the path, is tested in process in
//! `api/tests/requests.rs`.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// A request with `key` on the harness's API.
fn as_key(h: &Harness, key: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    h.http.request(method, h.url(path)).header("X-API-Key", key)
}

/// A mission gated by approval `gate`, submitted with the admin key, once it waits.
async fn gated(h: &Harness) -> String {
    let m = h
        .submit(json!([{ "name": "gate", "approval": { "message": "?" } }]))
        .await;
    let id = id_of(&m);
    h.wait_until(
        &id,
        "waiting on its gate",
        |m| m["status"] == "waiting" && step_is(m, "gate", "waiting"),
        secs(15),
    )
    .await;
    id
}

#[tokio::test]
async fn every_role_against_every_route_class() {
    let h = Harness::start().await;
    let roles = [
        ("admin", h.key.clone()),
        ("operator", h.create_key("olga", "operator").await),
        ("agent", h.create_key("bot", "agent").await),
        ("viewer", h.create_key("vera", "viewer").await),
    ];
    let plan = json!({ "workflow": "plan", "input": { "steps": [{ "name": "a", "noop": 1 }] } });

    for (role, key) in &roles {
        let (role, key) = (*role, key.as_str());
        let reads = matches!(role, "admin" | "operator" | "viewer");
        let writes = matches!(role, "admin" | "operator");
        let to_approve = gated(&h).await;
        let to_cancel = gated(&h).await;

        // Read: one mission, the list, a history.
        for path in [
            format!("/api/v1/missions/{to_approve}"),
            "/api/v1/missions?limit=5".to_owned(),
            format!("/api/v1/missions/{to_approve}/history"),
        ] {
            let reply = h.send(as_key(&h, key, Method::GET, &path)).await;
            if reads {
                assert_eq!(reply.status, 200, "GET {path} as {role}: {reply:?}");
            } else {
                reply.forbidden("viewer, operator or admin", role, &path);
            }
        }

        // Write: submit, approve, cancel.
        let before = h
            .send(h.request(Method::GET, "/api/v1/missions?limit=500"))
            .await;
        let count = |page: &Reply| page.body["missions"].as_array().map_or(0, Vec::len);
        let submitted = h
            .send(as_key(&h, key, Method::POST, "/api/v1/missions").json(&plan))
            .await;
        let approved = h
            .send(
                as_key(
                    &h,
                    key,
                    Method::POST,
                    &format!("/api/v1/missions/{to_approve}/approvals/gate"),
                )
                .json(&json!({ "decision": "approve", "comment": role })),
            )
            .await;
        let cancelled = h
            .send(as_key(
                &h,
                key,
                Method::POST,
                &format!("/api/v1/missions/{to_cancel}/cancel"),
            ))
            .await;
        let after = h
            .send(h.request(Method::GET, "/api/v1/missions?limit=500"))
            .await;
        if writes {
            assert_eq!(submitted.status, 201, "submit as {role}: {submitted:?}");
            assert_eq!(approved.status, 200, "approve as {role}: {approved:?}");
            assert_eq!(cancelled.status, 202, "cancel as {role}: {cancelled:?}");
            assert_eq!(count(&after), count(&before) + 1);
            let decided = h.wait_terminal(&to_approve, "succeeded", secs(15)).await;
            // Decisions are signed with the key's name, never with the key.
            let by = step(&decided, "gate")["output"]["by"].clone();
            assert!(
                by.is_string() && by != Value::String(key.to_owned()),
                "{by}"
            );
            h.wait_terminal(&to_cancel, "cancelled", secs(15)).await;
        } else {
            for (what, reply) in [
                ("submit", &submitted),
                ("approve", &approved),
                ("cancel", &cancelled),
            ] {
                reply.forbidden("operator or admin", role, what);
            }
            // Nothing happened.
            assert_eq!(count(&after), count(&before));
            let untouched = h.get(&to_approve).await;
            assert_eq!(untouched["status"], "waiting", "{untouched}");
            let untouched = h.get(&to_cancel).await;
            assert_eq!(untouched["cancel_requested"], false, "{untouched}");
            assert_eq!(untouched["status"], "waiting", "{untouched}");
        }
    }
}
