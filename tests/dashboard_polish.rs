//! Mission Control for a new user (issue 17), in headless Chromium: browsers get HTML error
//! pages while API clients keep problem documents; a waiting mission says what it waits for; a
//! live mission's duration grows by itself; the Workflows page's generated form starts a
//! mission; missions are cancelled in bulk from the list; the keys page shows a new secret once
//! and a revoked key stops working; and every page at phone width (an emulated 390 px device,
//! not a narrow window). Screenshots go where the other dashboard tests put theirs.

mod browser;
mod common;

use browser::Browser;
use common::*;
use serde_json::{json, Value};

/// Make `window.confirm` answer yes, as a person clicking OK would.
const CONFIRM_YES: &str = "window.confirm = () => true; return true;";

/// Submit a plan through the API and wait until `step` is waiting for a decision.
async fn waiting_on_gate(h: &Harness, key: &str) -> String {
    let reply = h
        .submit_body(
            &json!({ "workflow": "plan", "idempotency_key": key, "input": { "steps": [
            { "name": "gate", "approval": { "message": "ship it?" } },
        ] } }),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let id = id_of(&reply.body);
    h.wait_until(
        &id,
        "waiting on gate",
        |m| m["status"] == "waiting" && step_is(m, "gate", "waiting"),
        secs(15),
    )
    .await;
    id
}

#[tokio::test]
async fn browsers_get_html_error_pages_and_api_clients_problems() {
    let h = Harness::start().await;
    let b = Browser::start(
        "browsers_get_html_error_pages_and_api_clients_problems",
        &h.base,
    )
    .await;

    // Signed out: an unknown path is an HTML page with a way in, not JSON.
    b.goto("/no/such/page").await;
    b.wait_for(".problem[data-problem=\"404\"]").await;
    assert!(b.text("#problem-detail").await.contains("no such route"));
    b.wait_for("nav#nav a[href=\"/\"]").await;
    b.screenshot("not-found-signed-out").await;

    // `GET /login` (the form posts there) is a wrong method: a page too.
    b.goto("/login").await;
    b.wait_for(".problem[data-problem=\"405\"]").await;

    // Signed in: the page sits inside the whole navigation.
    b.login(&h.key).await;
    b.goto("/no/such/page").await;
    b.wait_for(".problem[data-problem=\"404\"]").await;
    b.wait_for("nav#nav a[href=\"/workflows\"]").await;
    b.wait_for("nav#nav a[href=\"/approvals\"]").await;
    b.screenshot("not-found-signed-in").await;
    // A dashboard page's own error (an unknown mission) also keeps the navigation.
    b.goto("/missions/0190a7c4-7bde-7cc2-9a5e-3f1b2c3d4e5f")
        .await;
    b.wait_for(".problem[data-problem=\"404\"]").await;
    b.wait_for("nav#nav a[href=\"/schedules\"]").await;

    // API clients keep problem+json, for the same paths, whatever they accept.
    let http = reqwest::Client::new();
    for accept in ["application/json", "*/*", "application/problem+json"] {
        let response = http
            .get(h.url("/no/such/page"))
            .header("accept", accept)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 404);
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        assert_eq!(kind, "application/problem+json", "Accept: {accept}");
    }
    let browser_like = http
        .get(h.url("/no/such/page"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .expect("GET");
    assert_eq!(browser_like.status(), 404);
    assert!(browser_like.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/html"));
    assert!(browser_like
        .headers()
        .contains_key("content-security-policy"));
    // The API stays JSON even for a browser.
    let api = http
        .get(h.url("/api/v1/nope"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET");
    assert_eq!(api.headers()["content-type"], "application/problem+json");

    b.finish().await;
}

#[tokio::test]
async fn waiting_missions_say_what_they_wait_for_and_live_durations_grow() {
    let h = Harness::start().await;
    let b = Browser::start(
        "waiting_missions_say_what_they_wait_for_and_live_durations_grow",
        &h.base,
    )
    .await;
    let approval = waiting_on_gate(&h, "label-approval").await;
    let sleeper = id_of(
        &h.submit(json!([{ "name": "nap", "sleep": { "ms": 600_000 } }]))
            .await,
    );
    // Fails (503) on every attempt, then waits 60 s before the next.
    let retrier = id_of(
        &h.submit(json!([{ "name": "call", "http": { "method": "GET", "url": h.callee.url("/flaky/100") },
            "retry": { "max_attempts": 5, "initial_backoff_ms": 60_000, "max_backoff_ms": 60_000 } }]))
            .await,
    );
    // Fails for good: its reason in the list is the step's message, not JSON.
    let failed = id_of(
        &h.submit(
            json!([{ "name": "check", "http": { "method": "GET", "url": h.callee.url("/fail") } }]),
        )
        .await,
    );
    h.wait_until(
        &sleeper,
        "sleeping",
        |m| step_is(m, "nap", "waiting"),
        secs(15),
    )
    .await;
    h.wait_until(
        &retrier,
        "in backoff",
        |m| m["steps"][0]["attempts"] == 1 && m["steps"][0]["wake_at"].is_string(),
        secs(15),
    )
    .await;
    h.wait_terminal(&failed, "failed", secs(15)).await;

    b.login(&h.key).await;
    let label = |id: &str| format!("#missions tr[data-mission=\"{id}\"] .waiting-for");
    b.wait_for(&label(&approval)).await;
    assert_eq!(b.text(&label(&approval)).await, "waiting · approval");
    let nap = b.text(&label(&sleeper)).await;
    assert!(nap.starts_with("sleeping until "), "{nap}");
    assert!(
        nap.trim_start_matches("sleeping until ").len() == 5 && nap.contains(':'),
        "a time of day: {nap}"
    );
    let retry = b.text(&label(&retrier)).await;
    assert!(
        retry.starts_with("retrying in ") && retry.ends_with(" s"),
        "{retry}"
    );
    // The countdown runs without a reload or an event.
    b.mark_no_reload().await;
    let before = b.text(&label(&retrier)).await;
    b.wait_js(
        "the retry countdown to move",
        &format!(
            "document.querySelector('{}').textContent !== {}",
            label(&retrier).replace('\'', "\\'"),
            json!(before)
        ),
    )
    .await;
    let reason = b
        .text(&format!("#missions tr[data-mission=\"{failed}\"] .reason"))
        .await;
    assert!(reason.starts_with("check: "), "{reason}");
    assert!(
        !reason.contains('{'),
        "the list shows no raw JSON: {reason}"
    );
    b.screenshot("waiting-labels").await;

    // The mission page: the same label, and a duration that grows by itself.
    b.goto(&format!("/missions/{approval}")).await;
    b.wait_for("#waiting-for[data-waiting=approval]").await;
    assert_eq!(b.text("#waiting-for").await, "waiting · approval");
    b.mark_no_reload().await;
    let first = b.text("#duration").await;
    b.wait_js(
        "the duration to grow",
        &format!(
            "document.querySelector('#duration').textContent !== {}",
            json!(first)
        ),
    )
    .await;
    b.assert_not_reloaded("the duration grew").await;
    b.screenshot("live-duration").await;

    // The retried attempt is striped and the wait thin: they differ without colour.
    b.goto(&format!("/missions/{retrier}")).await;
    b.wait_for("#waiting-for[data-waiting=retry]").await;
    b.wait_for("#timeline svg.wide g.bar[data-outcome=retrying] rect[fill=\"url(#hatch-wide)\"]")
        .await;
    b.screenshot("retrying").await;
    b.goto(&format!("/missions/{approval}")).await;
    let heights = b
        .js(
            "const h = (o) => { const r = document.querySelector('#timeline svg.wide g.bar[data-outcome=' + o + '] rect'); return r ? r.getBBox().height : null; };
             return { waiting: h('waiting') };",
            vec![],
        )
        .await;
    let waiting = heights["waiting"].as_f64().unwrap_or(0.0);
    assert!(
        waiting > 0.0 && waiting < 10.0,
        "a wait is a thin bar: {heights}"
    );

    b.finish().await;
}

#[tokio::test]
async fn the_workflows_page_form_starts_a_mission() {
    let h = Harness::start().await;
    let b = Browser::start("the_workflows_page_form_starts_a_mission", &h.base).await;
    b.login(&h.key).await;
    b.click("nav#nav a[href=\"/workflows\"]").await;
    let form = "section[data-workflow=plan] form.start";
    b.wait_for(form).await;
    // The schema is shown, and the internal healer workflow has no form.
    let schema = b
        .js(
            "return document.querySelector('section[data-workflow=plan] details.schema pre').textContent;",
            vec![],
        )
        .await;
    assert!(
        schema.as_str().unwrap_or("").contains("\"steps\""),
        "{schema}"
    );
    assert_eq!(b.count("section[data-workflow=heal] form").await, 0);
    b.screenshot("workflows").await;

    // A refused input comes back with each problem beside its field.
    let steps = format!("{form} textarea[name=\"input.steps\"]");
    b.type_into(
        &steps,
        r#"[{"name": 1}, {"name": "ok", "noop": true}, {"nme": "x"}]"#,
    )
    .await;
    b.click(&format!("{form} button[type=submit]")).await;
    b.wait_for("section[data-workflow=plan] [data-field=steps] .problems li")
        .await;
    let problems = b
        .text("section[data-workflow=plan] [data-field=steps] .problems")
        .await;
    assert!(problems.contains("/steps/0/name"), "{problems}");
    assert!(
        problems.contains("/steps/2"),
        "every problem, not only the first: {problems}"
    );
    b.screenshot("workflows-refused").await;

    let plan = json!([
        { "name": "call", "http": { "method": "POST", "url": h.callee.url("/ok") } },
        { "name": "done", "noop": { "ok": true } },
    ]);
    b.type_into(&steps, &plan.to_string()).await;
    b.type_into(
        &format!("{form} input[name=idempotency_key]"),
        "from-the-form",
    )
    .await;
    b.click(&format!("{form} button[type=submit]")).await;
    let path = b
        .wait_path("the new mission's page", |p| p.starts_with("/missions/"))
        .await;
    let id = path.trim_start_matches("/missions/").to_owned();
    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert_eq!(mission["workflow"], "plan");
    assert_eq!(mission["idempotency_key"], "from-the-form");
    assert_eq!(mission["input"]["steps"], plan);
    b.screenshot("started").await;

    // "Start another like this": the submit page, filled with this mission's input.
    b.click("#start-another").await;
    b.wait_for("form#submit textarea#input").await;
    let text = b
        .js("return document.querySelector('#input').value;", vec![])
        .await;
    let input: Value = serde_json::from_str(text.as_str().unwrap_or_default()).unwrap_or_default();
    assert_eq!(input["steps"], plan);
    // The live indicator of a page without live parts settles instead of "connecting".
    assert_eq!(
        b.attr("#live-state", "data-state").await.as_deref(),
        Some("static")
    );

    // The history export: the mission and every event, as a JSON download.
    let export = b
        .js(
            "return fetch(arguments[0], {credentials: 'same-origin'}).then(async r => ({disposition: r.headers.get('content-disposition'), body: await r.json()}));",
            vec![json!(format!("/missions/{id}/export"))],
        )
        .await;
    assert!(
        export["disposition"]
            .as_str()
            .unwrap_or("")
            .starts_with("attachment"),
        "{export}"
    );
    assert_eq!(export["body"]["mission"]["id"], json!(id));
    let events = export["body"]["history"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(events, h.history(&id).await.len());

    b.finish().await;
}

#[tokio::test]
async fn missions_are_counted_searched_and_cancelled_in_bulk() {
    let h = Harness::start().await;
    let b = Browser::start(
        "missions_are_counted_searched_and_cancelled_in_bulk",
        &h.base,
    )
    .await;
    let first = waiting_on_gate(&h, "bulk-one").await;
    let second = waiting_on_gate(&h, "bulk-two").await;
    let kept = waiting_on_gate(&h, "kept-three").await;

    b.login(&h.key).await;
    b.wait_for("#missions tr[data-mission]").await;
    assert_eq!(b.text("[data-count=waiting]").await, "3");
    // The idempotency key is shown, and searchable.
    assert!(b
        .text(&format!("tr[data-mission=\"{kept}\"] .key"))
        .await
        .contains("kept-three"));
    b.goto("/?q=bulk-").await;
    b.wait_for("#missions tr[data-mission]").await;
    assert_eq!(b.count("#missions tr[data-mission]").await, 2);
    // A date range that ends before today leaves nothing.
    b.goto("/?from=2020-01-01&to=2020-01-02").await;
    b.wait_for("#missions tr.empty-row").await;
    b.goto("/").await;
    b.wait_for("#missions tr[data-mission]").await;

    // Once the live list has settled (the stream's first refresh swaps the rows), tick the
    // boxes; a ticked box then keeps the rows in place.
    b.wait_for("#live-state[data-state=live]").await;
    tokio::time::sleep(secs(2)).await;
    for id in [&first, &second] {
        b.js(
            "document.querySelector(arguments[0]).click(); return true;",
            vec![json!(format!(
                "tr[data-mission=\"{id}\"] input[type=checkbox]"
            ))],
        )
        .await;
    }
    assert!(b.text("#bulk-count").await.starts_with("2 selected"));
    b.screenshot("selected").await;
    b.js(CONFIRM_YES, vec![]).await;
    b.click("form#bulk button[value=cancel]").await;
    for id in [&first, &second] {
        h.wait_terminal(id, "cancelled", secs(15)).await;
    }
    assert_eq!(h.get(&kept).await["status"], "waiting");
    b.wait_for(&format!(
        "tr[data-mission=\"{first}\"] .badge[data-status=cancelled]"
    ))
    .await;
    b.wait_js(
        "the counts to follow",
        "document.querySelector('[data-count=cancelled]')?.textContent === '2'",
    )
    .await;
    b.screenshot("cancelled").await;

    // Cancelling a finished mission again is refused and says which.
    let csrf = b.csrf().await;
    let again = b
        .fetch_form(
            "/missions/bulk",
            &[("csrf", &csrf), ("action", "cancel"), ("id", &first)],
            &[],
        )
        .await;
    assert_eq!(again["status"], 409, "{again}");

    b.finish().await;
}

#[tokio::test]
async fn the_keys_page_shows_a_secret_once_and_revokes() {
    let h = Harness::start().await;
    let b = Browser::start("the_keys_page_shows_a_secret_once_and_revokes", &h.base).await;
    b.login(&h.key).await;
    b.click("nav#nav a[href=\"/keys\"]").await;
    b.wait_for("form#create-key").await;
    b.type_into("form#create-key input[name=name]", "ci-bot")
        .await;
    b.select("form#create-key select[name=role]", "operator")
        .await;
    b.click("form#create-key button[type=submit]").await;
    b.wait_for("#new-key-secret").await;
    let secret = b.text("#new-key-secret").await;
    assert!(secret.starts_with("hc_"), "{secret}");
    b.screenshot("created").await;

    // The key works.
    let http = reqwest::Client::new();
    let status = |key: String| {
        let http = http.clone();
        let url = h.url("/api/v1/missions");
        async move {
            http.get(url)
                .header("x-api-key", key)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(status(secret.clone()).await, 200);

    // Shown once: the page again has the key listed, never its secret.
    b.goto("/keys").await;
    let row = "#keys tr[data-name=\"ci-bot\"]";
    b.wait_for(row).await;
    assert_eq!(b.count("#new-key-secret").await, 0);
    let html = b
        .js("return document.documentElement.outerHTML;", vec![])
        .await;
    assert!(
        !html.as_str().unwrap_or("").contains(&secret),
        "the secret is shown again"
    );

    // Revoked: refused from the next request on.
    b.js(CONFIRM_YES, vec![]).await;
    b.click(&format!("{row} form.revoke button")).await;
    b.wait_for(&format!("{row} .badge[data-status=failed]"))
        .await;
    assert_eq!(status(secret.clone()).await, 401);
    b.screenshot("revoked").await;

    // Only admins manage keys.
    let viewer = h.create_key("vera", "viewer").await;
    b.logout().await;
    b.login(&viewer).await;
    assert_eq!(b.count("nav#nav a[href=\"/keys\"]").await, 0);
    b.goto("/keys").await;
    b.wait_for(".problem[data-problem=\"403\"]").await;

    b.finish().await;
}

#[tokio::test]
async fn every_page_fits_a_phone() {
    let h = Harness::start().await;
    let b = Browser::start("every_page_fits_a_phone", &h.base).await;
    let id = waiting_on_gate(&h, "phone").await;
    b.phone().await;
    b.goto("/").await;
    b.wait_for("form#login").await;
    b.assert_fits_phone("login").await;
    b.screenshot("login-phone").await;
    b.login(&h.key).await;
    let mission = format!("/missions/{id}");
    let pages = [
        ("missions", "/", "#missions tr[data-mission]"),
        ("mission", mission.as_str(), "#timeline svg"),
        ("approvals", "/approvals", "#approvals"),
        ("schedules", "/schedules", "main"),
        ("workers", "/workers", "#throughput svg"),
        ("incidents", "/incidents", "main"),
        ("submit", "/submit", "form#submit"),
        ("workflows", "/workflows", "section[data-workflow=plan]"),
        ("keys", "/keys", "#keys"),
        ("accounts", "/accounts", "#account-search"),
        ("account", "/accounts/phone-user", "#ledger"),
        ("command", "/command", "#uplink-form"),
        ("error", "/no/such/page", ".problem"),
    ];
    for (name, path, ready) in pages {
        b.goto(path).await;
        b.wait_for(ready).await;
        b.assert_fits_phone(name).await;
        b.screenshot(&format!("{name}-phone")).await;
    }
    // The workers chart opens on the latest minutes ("now" in view), with labelled axes.
    b.goto("/workers").await;
    b.wait_for("#throughput svg .axis-label").await;
    let now_visible = b
        .js(
            "const box = document.getElementById('throughput').getBoundingClientRect();
             const now = [...document.querySelectorAll('#throughput .axis-label.x')].find(t => t.textContent === 'now');
             if (!now) return false;
             const r = now.getBoundingClientRect();
             return r.left >= box.left - 1 && r.right <= box.right + 1;",
            vec![],
        )
        .await;
    assert_eq!(now_visible, json!(true), "{}", b.context().await);
    b.finish().await;
}
