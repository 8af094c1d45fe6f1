//! Mission Control, the dashboard `hypercode serve` serves, driven end to end in headless
//! Chromium (Debian's `chromium` through `chromedriver`): sign in with an API key, submit a plan,
//! follow it live to its approval, approve it from the inbox, see it succeed without a reload,
//! read its timeline; validation shown while typing; user data rendered as text; roles and CSRF
//! enforced by the server; the session cookie out of JavaScript's reach.
//!
//! Every page visited is saved as a screenshot under
//! `$HYPERCODE_TEST_OUTPUT_DIR` (default `target/test-output`) `/dashboard/<test>/` for review,
//! at desktop width, at phone width and in dark mode. The markup contract these tests rely on
//! is the dashboard's (`#mission-status[data-status]`, `tr[data-approval]`, `form.decide`, …).

mod browser;
mod common;

use browser::{Browser, SIGNED_IN};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A script that runs if the page inserts user data as HTML.
const XSS_SCRIPT: &str = "<script>window.__xss=1</script>";
/// An image whose error handler runs if the page inserts user data as HTML.
const XSS_IMG: &str = r#"<img src=x onerror="window.__xss=2">"#;

/// The lowest contrast ratio accepted for any text (WCAG's minimum for large text).
const MIN_CONTRAST: f64 = 3.0;

/// Checks that nothing injected ran or was parsed into markup: `window.__xss` unset, no
/// `<script>` holding it, no element with an inline handler mentioning it, and every image
/// settled first (an injected `<img src=x onerror>` would have fired by then).
const NO_INJECTION_JS: &str = r#"
const handlers = [];
for (const e of document.querySelectorAll('*')) {
  for (const a of e.attributes) {
    if (a.name.startsWith('on') && a.value.includes('__xss')) handlers.push(e.tagName + ' ' + a.name);
  }
}
return {
  xss: typeof window.__xss === 'undefined' ? null : String(window.__xss),
  scripts: Array.from(document.scripts).filter(s => s.textContent.includes('__xss')).length,
  handlers,
  text: document.body.innerText,
};
"#;

/// `(step, attempt, outcome)` of every bar of the timeline.
const TIMELINE_JS: &str = r#"
return Array.from(document.querySelectorAll('#timeline svg g.bar'))
  .map(g => [g.getAttribute('data-step'), g.getAttribute('data-attempt'), g.getAttribute('data-outcome')]);
"#;

/// Submit a plan through the API and wait until `step` waits for a decision.
async fn mission_waiting_on(h: &Harness, steps: Value, approval: &str) -> String {
    let id = id_of(&h.submit(steps).await);
    h.wait_until(
        &id,
        &format!("waiting on approval {approval}"),
        |m| m["status"] == "waiting" && step_is(m, approval, "waiting"),
        secs(15),
    )
    .await;
    id
}

/// Assert the approval `step` of mission `id` is still undecided (the API's view).
async fn assert_undecided(h: &Harness, id: &str, step_name: &str, after: &str) {
    let mission = h.get(id).await;
    assert_eq!(
        (
            mission["status"].as_str(),
            step(&mission, step_name)["status"].as_str()
        ),
        (Some("waiting"), Some("waiting")),
        "after {after}, the approval must still be waiting:\n{}",
        pretty(&mission)
    );
    let history = h.history(id).await;
    let decided: Vec<_> = history
        .iter()
        .filter(|e| e["type"] == "approval_granted" || e["type"] == "approval_rejected")
        .collect();
    assert!(
        decided.is_empty(),
        "after {after}, nothing may be decided:\n{}",
        describe_history(&history)
    );
}

/// A request refused for its missing CSRF token: 403, or 400 when the form lacks the field.
fn refused(status: u16) -> bool {
    matches!(status, 400 | 403)
}

/// The missions the API lists (at most 100).
async fn mission_count(h: &Harness) -> usize {
    let reply = h
        .send(h.request(reqwest::Method::GET, "/api/v1/missions?limit=100"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["missions"].as_array().map_or(0, Vec::len)
}

/// The operator's whole path: sign in, submit a plan from the submit page, follow the mission
/// live to its approval, approve it from the inbox with a comment, see it succeed without a
/// reload, open its timeline and history; every page also at phone width and in dark mode.
#[tokio::test]
async fn operator_submits_approves_from_inbox_and_sees_success_live() {
    let h = Harness::start().await;
    let olivia = h.create_key("olivia", "operator").await;
    let b = Browser::start(
        "operator_submits_approves_from_inbox_and_sees_success_live",
        &h.base,
    )
    .await;

    // The login page: a password field, no signed-in chrome.
    b.goto("/").await;
    b.wait_for("form#login[method=post] input[name=key][type=password]")
        .await;
    assert_eq!(
        b.count(&format!("{SIGNED_IN}, nav#nav")).await,
        0,
        "a signed-out visitor must not get a signed-in page\n{}",
        b.context().await
    );
    b.screenshot("login").await;
    b.phone().await;
    b.goto("/").await;
    b.wait_for("form#login").await;
    b.assert_fits_phone("login").await;
    b.screenshot("login-phone").await;
    b.desktop().await;

    let role = b.login(&olivia).await;
    assert_eq!(role, "operator", "body[data-role] of an operator's session");
    b.wait_for("form#filters").await;

    // Submit a plan from the submit page (reached through the navigation).
    b.click("nav#nav a[href=\"/submit\"]").await;
    b.wait_for("form#submit[method=post]").await;
    b.select("form#submit select[name=workflow]", "plan").await;
    let plan = json!({ "steps": [
        // Slow enough that the mission page opens before the approval is reached.
        { "name": "check", "http": { "method": "GET", "url": h.callee.url("/slow/4000") } },
        { "name": "sign-off", "approval": { "message": "Ship build 42?" } },
        { "name": "ship", "http": { "method": "POST", "url": h.callee.url("/items/shipped") } },
    ]});
    b.type_into("form#submit textarea[name=input]", &plan.to_string())
        .await;
    let typed = b
        .js(
            "return document.querySelector('form#submit textarea[name=input]').value;",
            vec![],
        )
        .await;
    let typed: Value = serde_json::from_str(typed.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the input field does not hold the plan typed ({e}): {typed}"));
    assert_eq!(typed, plan, "the input field changed what was typed");
    b.wait_js(
        "no validation problem listed for a valid plan",
        "document.querySelector('#validation') && \
         document.querySelectorAll('#validation li').length === 0",
    )
    .await;
    b.screenshot("submit").await;
    b.click("form#submit button[type=submit]").await;

    // It lands on the new mission's page, which follows the mission to its approval.
    let path = b
        .wait_path("/missions/{id}", |p| p.starts_with("/missions/"))
        .await;
    let id = path.trim_start_matches("/missions/").to_owned();
    b.wait_for(&format!("main#mission[data-mission=\"{id}\"]"))
        .await;
    b.mark_no_reload().await;
    let first = b.attr("#mission-status", "data-status").await;
    assert!(
        matches!(first.as_deref(), Some("pending" | "running")),
        "the new mission should still be pending or running when its page opens (its first \
         step takes 4 s), #mission-status[data-status] is {first:?}"
    );
    b.wait_for("#mission-status[data-status=waiting]").await;
    b.assert_not_reloaded("the mission page followed the mission to its approval")
        .await;
    let mission = h
        .wait_until(
            &id,
            "waiting on sign-off",
            |m| step_is(m, "sign-off", "waiting"),
            secs(5),
        )
        .await;
    assert_eq!(step(&mission, "check")["status"], "succeeded");
    b.wait_for("#steps [data-step=\"sign-off\"]").await;
    b.wait_for("form.decide[data-step=\"sign-off\"]").await;
    b.screenshot("mission-waiting").await;

    // Approve it from the inbox, with a comment; the page is not reloaded.
    b.click("nav#nav a[href=\"/approvals\"]").await;
    let row = format!("#approvals tr[data-approval=\"{id}/sign-off\"]");
    b.wait_for(&row).await;
    b.screenshot("approvals").await;
    b.mark_no_reload().await;
    let comment = "lgtm, shipped from the inbox";
    b.type_into(
        &format!("{row} form.decide textarea[name=comment]"),
        comment,
    )
    .await;
    b.click(&format!(
        "{row} form.decide button[name=decision][value=approve]"
    ))
    .await;
    let decided = format!("#decided li[data-mission=\"{id}\"]");
    b.wait_for(&decided).await;
    b.wait_for(&format!("{decided} [data-status=succeeded]"))
        .await;
    b.assert_not_reloaded("approving from the inbox and watching the mission succeed")
        .await;
    b.wait_gone(&row).await;
    b.screenshot("approvals-decided").await;

    // The API agrees: succeeded, approved by olivia with the comment.
    let mission = h.wait_terminal(&id, "succeeded", secs(10)).await;
    assert_eq!(
        step_statuses(&mission),
        [
            ("check", "succeeded"),
            ("sign-off", "succeeded"),
            ("ship", "succeeded")
        ]
        .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    let output = &step(&mission, "sign-off")["output"];
    assert_eq!(output["decision"], "approve", "{output}");
    assert_eq!(output["comment"], comment, "{output}");
    assert_eq!(
        output["by"], "olivia",
        "the decision is signed with the key's name: {output}"
    );
    let history = h.history(&id).await;
    let granted = events_of(&history, "approval_granted");
    assert_eq!(granted.len(), 1, "{}", describe_history(&history));
    assert_eq!(granted[0]["data"]["comment"], comment);
    assert_eq!(h.callee.to_path("/items/shipped").len(), 1);

    // Its page: a timeline bar for every step, and the approval in the history.
    b.click(&format!("{decided} a[href=\"/missions/{id}\"]"))
        .await;
    b.wait_for(&format!("main#mission[data-mission=\"{id}\"]"))
        .await;
    b.wait_for("#mission-status[data-status=succeeded]").await;
    b.wait_for("#timeline svg g.bar[data-step=\"ship\"]").await;
    let bars = b.js(TIMELINE_JS, vec![]).await;
    let last_outcome = |name: &str| -> Option<String> {
        bars.as_array()?
            .iter()
            .rev()
            .find(|bar| bar[0] == name)
            .and_then(|bar| bar[2].as_str().map(str::to_owned))
    };
    assert_eq!(
        last_outcome("check").as_deref(),
        Some("succeeded"),
        "{bars}"
    );
    assert!(
        matches!(
            last_outcome("sign-off").as_deref(),
            Some("approved" | "succeeded")
        ),
        "the approval's bar: {bars}"
    );
    assert_eq!(last_outcome("ship").as_deref(), Some("succeeded"), "{bars}");
    for name in ["check", "sign-off", "ship"] {
        b.wait_for(&format!("#steps [data-step=\"{name}\"]")).await;
    }
    b.wait_for("#history tbody tr[data-type=approval_granted]")
        .await;
    b.wait_for("#history tbody tr[data-type=mission_succeeded]")
        .await;
    b.assert_readable("mission", MIN_CONTRAST).await;
    b.screenshot("mission-succeeded").await;

    // The missions list shows it succeeded.
    b.click("nav#nav a[href=\"/\"]").await;
    let listed = format!("#missions tr[data-mission=\"{id}\"]");
    b.wait_for(&format!("{listed} .badge[data-status=succeeded]"))
        .await;
    b.wait_for(&format!("{listed} a[href=\"/missions/{id}\"]"))
        .await;
    b.screenshot("missions").await;

    // The workers page lists the harness's worker.
    b.click("nav#nav a[href=\"/workers\"]").await;
    b.wait_for("table#workers tr[data-worker]").await;
    b.wait_for("#queues").await;
    b.wait_for("#throughput svg").await;
    b.screenshot("workers").await;

    // Every page at phone width: laid out for the screen, nothing scrolls sideways.
    let mission_path = format!("/missions/{id}");
    let pages = [
        ("missions", "/", "#missions tr[data-mission]"),
        ("mission", mission_path.as_str(), "#timeline svg g.bar"),
        // Nothing waits any more: the inbox shows only its (empty) "decided" list.
        ("approvals", "/approvals", "ul#decided"),
        ("workers", "/workers", "table#workers"),
        ("submit", "/submit", "form#submit"),
    ];
    b.phone().await;
    for (name, path, ready) in pages {
        b.goto(path).await;
        b.wait_for(ready).await;
        b.assert_fits_phone(name).await;
        b.screenshot(&format!("{name}-phone")).await;
    }

    // Dark mode (prefers-color-scheme: dark): a dark page whose every text is readable.
    b.desktop().await;
    b.dark(true).await;
    for (name, path, ready) in pages {
        b.goto(path).await;
        b.wait_for(ready).await;
        let report = b
            .assert_readable(&format!("{name} (dark)"), MIN_CONTRAST)
            .await;
        let luminance = report["page_background_luminance"].as_f64().unwrap_or(1.0);
        let shot = b.screenshot(&format!("{name}-dark")).await;
        assert!(
            luminance < 0.2,
            "{name} with prefers-color-scheme: dark keeps a light background (relative \
             luminance {luminance:.2}); screenshot: {}",
            shot.display()
        );
    }
    b.phone().await;
    b.goto(&mission_path).await;
    b.wait_for("#timeline svg g.bar").await;
    b.assert_readable("mission (dark, phone)", MIN_CONTRAST)
        .await;
    b.screenshot("mission-dark-phone").await;

    b.finish().await;
}

/// The submit page checks the input while it is typed: broken JSON is reported, and each
/// problem of a plan is listed with its JSON pointer before anything is submitted; a refused
/// submission shows them again and creates nothing.
#[tokio::test]
async fn submit_shows_validation_errors_inline() {
    let h = Harness::start().await;
    let b = Browser::start("submit_shows_validation_errors_inline", &h.base).await;

    // Signed out, the submit page sends us to the login page, which brings us back.
    b.goto("/submit").await;
    b.wait_for("form#login").await;
    assert_eq!(
        b.query_param("next").await.as_deref(),
        Some("/submit"),
        "a signed-out visit redirects to /?next=<path> (at {})",
        b.path().await
    );
    b.login(&h.key).await;
    b.wait_path("/submit", |p| p == "/submit").await;
    b.wait_for("form#submit").await;
    b.select("form#submit select[name=workflow]", "plan").await;

    // Broken JSON.
    b.type_into("form#submit textarea[name=input]", r#"{"steps": ["#)
        .await;
    b.wait_js(
        "#validation to report the broken JSON",
        "document.querySelector('#validation') && \
         document.querySelector('#validation').innerText.trim().length > 0",
    )
    .await;
    b.screenshot("broken-json").await;

    // A plan with a duplicate name, an unknown HTTP method and a step without an action.
    let bad = json!({ "steps": [
        { "name": "a", "sleep": { "ms": 1 } },
        { "name": "a", "sleep": { "ms": 1 } },
        { "name": "b", "http": { "method": "BREW", "url": h.callee.url("/ok") } },
        { "name": "c" },
    ]});
    b.type_into("form#submit textarea[name=input]", &bad.to_string())
        .await;
    let expected = ["/steps/1/name", "/steps/2/http/method", "/steps/3"];
    for pointer in expected {
        b.wait_for(&format!("#validation li[data-pointer=\"{pointer}\"]"))
            .await;
    }
    let listed = b
        .js(
            "return Array.from(document.querySelectorAll('#validation li[data-pointer]'))
                 .map(li => [li.getAttribute('data-pointer'), li.innerText.trim()]);",
            vec![],
        )
        .await;
    for item in listed.as_array().cloned().unwrap_or_default() {
        assert!(
            item[1].as_str().is_some_and(|text| !text.is_empty()),
            "a problem listed without a message: {listed}"
        );
    }
    let duplicate = b
        .text("#validation li[data-pointer=\"/steps/1/name\"]")
        .await;
    assert!(
        duplicate.contains("duplicate"),
        "the problem at /steps/1/name should say the name is a duplicate: {duplicate:?}"
    );
    assert_eq!(
        mission_count(&h).await,
        0,
        "validating while typing created a mission"
    );
    b.screenshot("plan-problems").await;

    // Submitting anyway: refused, the problems shown on the returned page, nothing created.
    b.click("form#submit button[type=submit]").await;
    b.wait_for("#validation li[data-pointer=\"/steps/1/name\"]")
        .await;
    assert_eq!(
        b.path().await,
        "/submit",
        "a refused submission stays on the submit page"
    );
    b.wait_for("form#submit").await;
    assert_eq!(
        mission_count(&h).await,
        0,
        "a refused submission created a mission"
    );
    b.screenshot("refused-submit").await;

    // Fixing the plan clears the problems.
    let good = json!({ "steps": [{ "name": "a", "sleep": { "ms": 1 } }] });
    b.type_into("form#submit textarea[name=input]", &good.to_string())
        .await;
    b.wait_js(
        "the problems to clear once the plan is valid",
        "document.querySelectorAll('#validation li').length === 0",
    )
    .await;
    b.screenshot("fixed").await;
    assert_eq!(mission_count(&h).await, 0);

    b.finish().await;
}

/// A mission whose input holds markup (a `<script>`, an `<img onerror>`) shows it as text on
/// its page (also when history arrives live) and in the inbox; nothing of it runs.
#[tokio::test]
async fn user_data_is_escaped() {
    let h = Harness::start().await;
    let payload = format!("{XSS_SCRIPT}{XSS_IMG}");
    let id = mission_waiting_on(
        &h,
        json!([
            { "name": "note", "noop": { "text": payload } },
            { "name": "gate", "approval": { "message": format!("Ship? {payload}") } },
        ]),
        "gate",
    )
    .await;
    let b = Browser::start("user_data_is_escaped", &h.base).await;
    b.login(&h.key).await;

    let check = |page: &'static str| {
        let b = &b;
        async move {
            b.wait_js(
                "every image to settle",
                "Array.from(document.images).every(i => i.complete)",
            )
            .await;
            let found = b.js(NO_INJECTION_JS, vec![]).await;
            assert!(
                found["xss"].is_null(),
                "{page}: injected markup ran (window.__xss = {})",
                found["xss"]
            );
            assert_eq!(
                found["scripts"], 0,
                "{page}: a <script> element holds the user's text"
            );
            assert_eq!(
                found["handlers"],
                json!([]),
                "{page}: the user's markup became elements with handlers"
            );
            let text = found["text"].as_str().unwrap_or_default();
            assert!(
                text.contains(XSS_SCRIPT),
                "{page}: the literal text {XSS_SCRIPT:?} is not shown; the page reads:\n{}",
                snippet(text, 3000)
            );
        }
    };

    b.goto(&format!("/missions/{id}")).await;
    b.wait_for("#mission-status[data-status=waiting]").await;
    b.wait_for("#steps [data-step=\"gate\"]").await;
    b.wait_for("#history tbody tr[data-type=approval_requested]")
        .await;
    check("mission page").await;
    b.screenshot("mission").await;

    b.goto("/approvals").await;
    let row = format!("#approvals tr[data-approval=\"{id}/gate\"]");
    b.wait_for(&row).await;
    check("approvals inbox").await;
    let row_text = b.text(&row).await;
    assert!(
        row_text.contains(XSS_SCRIPT),
        "the inbox row should show the approval's message as text: {row_text:?}"
    );
    b.screenshot("approvals").await;

    // Events arriving live (the decision, with markup in its comment) are escaped too.
    b.goto(&format!("/missions/{id}")).await;
    b.wait_for("#mission-status[data-status=waiting]").await;
    b.mark_no_reload().await;
    let reply = h.decide(&id, "gate", "approve", &payload).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    b.wait_for("#mission-status[data-status=succeeded]").await;
    b.wait_for("#history tbody tr[data-type=approval_granted]")
        .await;
    b.assert_not_reloaded("the decision arrived").await;
    check("mission page after live updates").await;
    b.screenshot("mission-after-live-update").await;

    b.finish().await;
}

/// A viewer sees missions and the inbox but no decision forms, and the server refuses the
/// actions anyway (with a valid session and CSRF token); the same request from an admin's
/// session succeeds, so the refusal is the role's.
#[tokio::test]
async fn viewer_sees_no_actions_and_is_refused() {
    let h = Harness::start().await;
    let vera = h.create_key("vera", "viewer").await;
    let id = mission_waiting_on(
        &h,
        json!([
            { "name": "prep", "noop": { "ready": true } },
            { "name": "gate", "approval": { "message": "Deploy?" } },
        ]),
        "gate",
    )
    .await;
    let b = Browser::start("viewer_sees_no_actions_and_is_refused", &h.base).await;
    assert_eq!(b.login(&vera).await, "viewer");

    // The mission page: readable, but nothing to act with.
    let mission_path = format!("/missions/{id}");
    b.goto(&mission_path).await;
    b.wait_for("#mission-status[data-status=waiting]").await;
    b.wait_for("#steps [data-step=\"gate\"]").await;
    for css in [
        "form.decide",
        "button[name=decision]",
        "form.cancel",
        "form.retry",
    ] {
        assert_eq!(
            b.count(css).await,
            0,
            "a viewer's mission page has `{css}`\n{}",
            b.context().await
        );
    }
    b.screenshot("mission-viewer").await;

    // The inbox lists the approval without a way to decide it.
    b.goto("/approvals").await;
    b.wait_for(&format!("#approvals tr[data-approval=\"{id}/gate\"]"))
        .await;
    assert_eq!(
        b.count("form.decide, button[name=decision]").await,
        0,
        "a viewer's inbox has decision forms\n{}",
        b.context().await
    );
    b.screenshot("approvals-viewer").await;
    b.phone().await;
    b.assert_fits_phone("approvals-viewer").await;
    b.screenshot("approvals-viewer-phone").await;
    b.desktop().await;

    // The submit page: whatever it shows, posting a plan is refused.
    b.goto("/submit").await;
    b.wait_for("body[data-role=viewer]").await;
    b.screenshot("submit-viewer").await;
    let token = b.csrf().await;
    let plan = json!({ "steps": [{ "name": "a", "noop": {} }] }).to_string();
    let submitted = b
        .fetch_form(
            "/submit",
            &[
                ("workflow", "plan"),
                ("input", &plan),
                ("idempotency_key", ""),
                ("csrf", &token),
            ],
            &[("X-CSRF-Token", &token)],
        )
        .await;
    assert_eq!(
        submitted["status"], 403,
        "a viewer's POST /submit: {submitted}"
    );
    assert_eq!(mission_count(&h).await, 1, "the viewer created a mission");

    // Deciding and cancelling from the viewer's session are refused.
    b.goto(&mission_path).await;
    b.wait_for("#mission-status[data-status=waiting]").await;
    let token = b.csrf().await;
    let approve_path = format!("/missions/{id}/approvals/gate");
    let decision = [
        ("decision", "approve"),
        ("comment", "viewer says yes"),
        ("csrf", token.as_str()),
    ];
    let headers = [
        ("X-CSRF-Token", token.as_str()),
        ("Accept", "application/json"),
    ];
    let denied = b.fetch_form(&approve_path, &decision, &headers).await;
    assert_eq!(
        denied["status"], 403,
        "a viewer's approval must be refused: {denied}"
    );
    let cancel = b
        .fetch_form(
            &format!("/missions/{id}/cancel"),
            &[("csrf", &token)],
            &headers,
        )
        .await;
    assert_eq!(
        cancel["status"], 403,
        "a viewer's cancel must be refused: {cancel}"
    );
    assert_undecided(&h, &id, "gate", "the viewer's attempts").await;

    // The same request from an admin's session goes through.
    b.logout().await;
    assert_eq!(b.login(&h.key).await, "admin");
    b.goto(&mission_path).await;
    b.wait_for("form.decide[data-step=\"gate\"] button[name=decision][value=approve]")
        .await;
    let token = b.csrf().await;
    let decision = [
        ("decision", "approve"),
        ("comment", "admin says yes"),
        ("csrf", token.as_str()),
    ];
    let headers = [
        ("X-CSRF-Token", token.as_str()),
        ("Accept", "application/json"),
    ];
    let accepted = b.fetch_form(&approve_path, &decision, &headers).await;
    let status = accepted["status"].as_u64().unwrap_or(0);
    assert!(
        (200..300).contains(&status) || accepted["type"] == "opaqueredirect",
        "the admin's identical request should be accepted (2xx, or a redirect as after a \
         form post): {accepted}"
    );
    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert_eq!(
        step(&mission, "gate")["output"]["by"],
        h.key_name.as_str(),
        "{}",
        pretty(&mission)
    );

    b.finish().await;
}

/// Login sets an HttpOnly, SameSite=Strict session cookie (invisible to scripts, nothing in
/// localStorage); every action needs the session's CSRF token; logging out ends the session.
#[tokio::test]
async fn actions_need_csrf_and_session_cookie_is_httponly() {
    let h = Harness::start().await;
    let id = mission_waiting_on(
        &h,
        json!([{ "name": "gate", "approval": { "message": "Proceed?" } }]),
        "gate",
    )
    .await;

    // ---- Over HTTP, as a browser would send the forms. ----
    let mut s = h.browser();
    let login_page = s.get("/").await;
    assert_eq!(login_page.status, 200, "{login_page:?}");
    let csrf = csrf_in(&login_page.body)
        .unwrap_or_else(|| panic!("the login page has no csrf field:\n{}", login_page.body));

    // Without the CSRF token, even the right key does not log in.
    let no_token = s
        .post_form("/login", &[("key", &h.key), ("next", "/")], &[])
        .await;
    assert!(refused(no_token.status), "login without csrf: {no_token:?}");
    assert!(
        !s.cookies.contains_key("hc_session"),
        "a session was opened without csrf"
    );
    // A wrong key: 401 with the error on the page, and no session.
    let wrong = s
        .post_form(
            "/login",
            &[("key", "hc_not_a_key"), ("csrf", &csrf), ("next", "/")],
            &[],
        )
        .await;
    assert_eq!(wrong.status, 401, "login with a wrong key: {wrong:?}");
    assert!(
        wrong.body.contains("login-error"),
        "no #login-error: {}",
        wrong.body
    );
    assert!(!s.cookies.contains_key("hc_session"));
    let csrf = csrf_in(&wrong.body).unwrap_or(csrf);

    let login = s
        .post_form(
            "/login",
            &[("key", &h.key), ("csrf", &csrf), ("next", "/")],
            &[],
        )
        .await;
    assert_eq!(login.status, 303, "login: {login:?}");
    assert_eq!(login.location.as_deref(), Some("/"), "{login:?}");
    let set_cookie = login
        .set_cookies
        .iter()
        .find(|c| c.starts_with("hc_session="))
        .unwrap_or_else(|| panic!("no hc_session cookie set: {login:?}"));
    let attributes: Vec<String> = set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase().replace(' ', ""))
        .collect();
    for wanted in ["httponly", "samesite=strict", "path=/"] {
        assert!(
            attributes.iter().any(|a| a == wanted),
            "the session cookie lacks `{wanted}`: {set_cookie}"
        );
    }
    let session_cookie = s.cookies["hc_session"].clone();
    assert!(!session_cookie.is_empty());
    assert!(
        !set_cookie.contains(&h.key),
        "the API key itself is the cookie"
    );

    let page = s.get(&format!("/missions/{id}")).await;
    assert_eq!(page.status, 200, "{page:?}");
    let token = csrf_in(&page.body)
        .unwrap_or_else(|| panic!("the mission page has no csrf token:\n{}", page.body));
    let approve = format!("/missions/{id}/approvals/gate");
    let json_accept = [("Accept", "application/json")];

    let missing = s
        .post_form(
            &approve,
            &[("decision", "approve"), ("comment", "no token")],
            &json_accept,
        )
        .await;
    assert!(refused(missing.status), "approve without csrf: {missing:?}");
    assert_undecided(&h, &id, "gate", "an approval without csrf").await;

    let wrong = s
        .post_form(
            &approve,
            &[
                ("decision", "approve"),
                ("comment", "wrong token"),
                ("csrf", "not-the-token"),
            ],
            &json_accept,
        )
        .await;
    assert_eq!(wrong.status, 403, "approve with a wrong csrf: {wrong:?}");
    let wrong_header = s
        .post_form(
            &approve,
            &[("decision", "approve"), ("comment", "wrong header")],
            &[
                ("Accept", "application/json"),
                ("X-CSRF-Token", "not-the-token"),
            ],
        )
        .await;
    assert!(
        refused(wrong_header.status),
        "approve with a wrong X-CSRF-Token (and no csrf field): {wrong_header:?}"
    );
    assert_undecided(&h, &id, "gate", "approvals with a wrong csrf").await;

    // Another session's token is no good for this one.
    let mut other = h.browser();
    other.sign_in(&h.key).await;
    let other_page = other.get(&format!("/missions/{id}")).await;
    let other_token = csrf_in(&other_page.body).expect("csrf on the other session's page");
    assert_ne!(
        other_token, token,
        "two sessions share a CSRF token: anyone signed in could forge requests for others"
    );
    let crossed = s
        .post_form(
            &approve,
            &[
                ("decision", "approve"),
                ("comment", "crossed"),
                ("csrf", &other_token),
            ],
            &json_accept,
        )
        .await;
    assert_eq!(
        crossed.status, 403,
        "approve with another session's csrf: {crossed:?}"
    );
    // A valid token without the session cookie.
    let anonymous = h
        .browser()
        .post_form(
            &approve,
            &[
                ("decision", "approve"),
                ("comment", "anonymous"),
                ("csrf", &token),
            ],
            &json_accept,
        )
        .await;
    assert!(
        !(200..300).contains(&anonymous.status),
        "approve without a session: {anonymous:?}"
    );
    // Cancel and submit need the token too.
    let cancel = s
        .post_form(&format!("/missions/{id}/cancel"), &[], &json_accept)
        .await;
    assert!(refused(cancel.status), "cancel without csrf: {cancel:?}");
    let plan = json!({ "steps": [{ "name": "a", "noop": {} }] }).to_string();
    let submit = s
        .post_form("/submit", &[("workflow", "plan"), ("input", &plan)], &[])
        .await;
    assert!(refused(submit.status), "submit without csrf: {submit:?}");
    assert_eq!(
        mission_count(&h).await,
        1,
        "a mission was created without csrf"
    );
    assert_undecided(&h, &id, "gate", "every refused request").await;

    // With the token it goes through.
    let accepted = s
        .post_form(
            &approve,
            &[
                ("decision", "approve"),
                ("comment", "with the token"),
                ("csrf", &token),
            ],
            &json_accept,
        )
        .await;
    assert!(
        (200..300).contains(&accepted.status) || accepted.status == 303,
        "approve with the session's csrf: {accepted:?}"
    );
    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert_eq!(
        step(&mission, "gate")["output"]["comment"],
        "with the token"
    );

    // Logout needs the token; afterwards the old cookie is worthless.
    let no_token = s.post_form("/logout", &[], &[]).await;
    assert!(
        refused(no_token.status),
        "logout without csrf: {no_token:?}"
    );
    assert_eq!(s.get("/approvals").await.status, 200, "still signed in");
    let logout = s.post_form("/logout", &[("csrf", &token)], &[]).await;
    assert_eq!(logout.status, 303, "logout: {logout:?}");
    assert_eq!(logout.location.as_deref(), Some("/"), "{logout:?}");
    let mut replay = h.browser();
    replay
        .cookies
        .insert("hc_session".to_owned(), session_cookie);
    let after = replay.get("/approvals").await;
    assert_eq!(
        after.status, 303,
        "the cookie of a closed session: {after:?}"
    );
    assert!(
        after
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with("/?next=")),
        "{after:?}"
    );

    // ---- In the browser. ----
    let b = Browser::start("actions_need_csrf_and_session_cookie_is_httponly", &h.base).await;
    b.goto("/").await;
    b.type_into("form#login input[name=key]", "hc_not_a_key")
        .await;
    b.click("form#login button[type=submit]").await;
    b.wait_for("#login-error").await;
    assert!(
        !b.text("#login-error").await.trim().is_empty(),
        "#login-error is empty"
    );
    b.screenshot("login-error").await;
    assert_eq!(b.login(&h.key).await, "admin");
    let storage = b
        .js(
            "return { cookie: document.cookie, local: localStorage.length,
                      session: JSON.stringify(Object.assign({}, sessionStorage)),
                      local_dump: JSON.stringify(Object.assign({}, localStorage)) };",
            vec![],
        )
        .await;
    assert!(
        !storage["cookie"]
            .as_str()
            .unwrap_or_default()
            .contains("hc_session"),
        "scripts can read the session cookie: {storage}"
    );
    assert_eq!(storage["local"], 0, "localStorage is used: {storage}");
    assert!(
        !storage["session"]
            .as_str()
            .unwrap_or_default()
            .contains(&h.key),
        "the key is in sessionStorage: {storage}"
    );
    let cookie = b
        .client
        .get_named_cookie("hc_session")
        .await
        .unwrap_or_else(|e| panic!("the browser holds no hc_session cookie: {e}"));
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()),
        Some("Strict".to_owned()),
        "{cookie:?}"
    );
    let source = b.client.source().await.expect("page source");
    assert!(
        !source.contains(&h.key),
        "the signed-in page contains the API key"
    );
    b.screenshot("signed-in").await;

    // Logging out, then a page that needs a session: the login page, which brings us back.
    b.logout().await;
    b.goto("/approvals").await;
    b.wait_for("form#login").await;
    assert_eq!(
        b.query_param("next").await.as_deref(),
        Some("/approvals"),
        "at {}",
        b.path().await
    );
    b.screenshot("signed-out-redirect").await;
    b.login(&h.key).await;
    b.wait_path("/approvals", |p| p == "/approvals").await;
    b.wait_for("ul#decided").await;

    b.finish().await;
}

/// The missions list follows new missions live: a mission submitted through the API appears
/// and reaches `succeeded` on the open page, without a reload.
#[tokio::test]
async fn missions_list_updates_live() {
    let h = Harness::start().await;
    let b = Browser::start("missions_list_updates_live", &h.base).await;
    b.login(&h.key).await;
    b.wait_for("form#filters").await;
    b.mark_no_reload().await;
    b.screenshot("empty").await;

    let id = id_of(
        &h.submit(json!([
            { "name": "work", "http": { "method": "GET", "url": h.callee.url("/slow/4000") } },
            { "name": "done", "noop": { "ok": true } },
        ]))
        .await,
    );
    let row = format!("#missions tr[data-mission=\"{id}\"]");
    b.wait_for(&row).await;
    let first = b.attr(&format!("{row} .badge"), "data-status").await;
    assert!(
        matches!(first.as_deref(), Some("pending" | "running")),
        "the new row should appear while the mission runs (4 s), its badge says {first:?}"
    );
    b.screenshot("row-appeared").await;
    b.wait_for(&format!("{row} .badge[data-status=succeeded]"))
        .await;
    b.wait_for(&format!("{row} a[href=\"/missions/{id}\"]"))
        .await;
    b.assert_not_reloaded("the missions list followed the new mission")
        .await;
    b.screenshot("row-succeeded").await;
    h.wait_terminal(&id, "succeeded", secs(5)).await;

    b.finish().await;
}

// ------------------------------------------------------------------------------------------
// Reading the dashboard's HTML.
// ------------------------------------------------------------------------------------------

/// The CSRF token of a page: its hidden `csrf` field, else its `<meta name="csrf-token">`.
fn csrf_in(html: &str) -> Option<String> {
    let inputs = tags(html, "input");
    let field = inputs
        .iter()
        .find(|attrs| attrs.get("name").map(String::as_str) == Some("csrf"))
        .and_then(|attrs| attrs.get("value").cloned());
    field.filter(|v| !v.is_empty()).or_else(|| {
        tags(html, "meta")
            .into_iter()
            .find(|attrs| attrs.get("name").map(String::as_str) == Some("csrf-token"))
            .and_then(|attrs| attrs.get("content").cloned())
            .filter(|v| !v.is_empty())
    })
}

/// The attributes of every `<tag …>` in `html` (a small parser: quoted or bare values,
/// common entities decoded).
fn tags(html: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let lower = html.to_ascii_lowercase();
    let open = format!("<{tag}");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find(&open) {
        let start = from + at + open.len();
        from = start;
        if !lower[start..].starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/') {
            continue;
        }
        let mut attrs = BTreeMap::new();
        let bytes = html.as_bytes();
        let mut i = start;
        loop {
            while i < bytes.len() && ((bytes[i] as char).is_whitespace() || bytes[i] == b'/') {
                i += 1;
            }
            if i >= bytes.len() || bytes[i] == b'>' {
                break;
            }
            let name_start = i;
            while i < bytes.len() && !b" \t\r\n=>/".contains(&bytes[i]) {
                i += 1;
            }
            let name = html[name_start..i].to_ascii_lowercase();
            let mut value = String::new();
            if bytes.get(i) == Some(&b'=') {
                i += 1;
                match bytes.get(i) {
                    Some(&quote) if quote == b'"' || quote == b'\'' => {
                        let end = html[i + 1..]
                            .find(quote as char)
                            .map_or(bytes.len(), |e| i + 1 + e);
                        value = html[i + 1..end].to_owned();
                        i = (end + 1).min(bytes.len());
                    }
                    _ => {
                        let value_start = i;
                        while i < bytes.len() && !b" \t\r\n>".contains(&bytes[i]) {
                            i += 1;
                        }
                        value = html[value_start..i].to_owned();
                    }
                }
            }
            if name.is_empty() {
                i += 1;
                continue;
            }
            attrs.insert(name, decode_entities(&value));
        }
        found.push(attrs);
        from = i.max(from);
    }
    found
}

fn decode_entities(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The first `n` characters of `text`.
fn snippet(text: &str, n: usize) -> String {
    match text.char_indices().nth(n) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
