//! Mission Control over plain HTTP (what the browser tests in `dashboard.rs` cannot easily see):
//! the session cookie's attributes and lifetime, CSRF and origin checks on every action, role
//! checks made by the server whatever the page shows, located validation errors, escaping.

mod common;

use common::*;
use serde_json::{json, Value};

async fn gated(h: &Harness, message: &str) -> String {
    let mission = h
        .submit(json!([{ "name": "gate", "approval": { "message": message } }]))
        .await;
    let id = id_of(&mission);
    h.wait_until(
        &id,
        "waiting on the gate",
        |m| step_is(m, "gate", "waiting"),
        secs(15),
    )
    .await;
    id
}

#[tokio::test]
async fn signing_in_gives_an_httponly_strict_session_the_api_accepts() {
    let h = Harness::start().await;
    let mut anonymous = h.browser();
    let login = anonymous.get("/").await;
    let login_cookie = anonymous.set_cookie("hc_login").to_owned();
    assert!(
        login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"),
        "{login_cookie}"
    );
    // Without the login form's own cookie (a form posted from another site), no session.
    let mut stranger = h.browser();
    let forged = stranger
        .post(
            "/login",
            &[("key", &h.key), ("csrf", &login.csrf()), ("next", "/")],
        )
        .await;
    assert_eq!(forged.status, 403, "{forged:?}");
    assert!(!stranger.cookies.contains_key("hc_session"));

    let csrf = login.csrf();
    let signed = anonymous
        .post(
            "/login",
            &[("key", &h.key), ("csrf", &csrf), ("next", "/approvals")],
        )
        .await;
    assert_eq!(signed.status, 303);
    assert_eq!(signed.location.as_deref(), Some("/approvals"));
    let session = anonymous.set_cookie("hc_session").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            session.contains(attribute),
            "{attribute} missing: {session}"
        );
    }
    assert!(
        !session.contains(&h.key),
        "the key itself is never a cookie"
    );
    let mut browser = anonymous;
    let missions = browser.get("/").await;
    assert_eq!(missions.status, 200);
    assert!(
        missions.body.contains("data-role=\"admin\""),
        "{}",
        missions.body
    );
    // An open redirect is refused: `next` must be a path on this site.
    let mut other = h.browser();
    let page = other.get("/").await;
    let away = other
        .post(
            "/login",
            &[
                ("key", &h.key),
                ("csrf", &page.csrf()),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(away.location.as_deref(), Some("/"));

    // The JSON API takes the session too: reads as is, changes only with the CSRF header.
    let csrf = missions.csrf();
    let cookie = browser.cookie_header();
    let list = h
        .http
        .get(h.url("/api/v1/missions"))
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("list");
    assert_eq!(list.status(), 200);
    let body = json!({ "workflow": "plan", "input": { "steps": [{ "name": "a", "noop": {} }] } });
    let without = h
        .http
        .post(h.url("/api/v1/missions"))
        .header("Cookie", &cookie)
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(without.status(), 403);
    let with = h
        .http
        .post(h.url("/api/v1/missions"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(with.status(), 201);
    let listed: Value = h
        .http
        .get(h.url("/api/v1/missions"))
        .header("X-API-Key", &h.key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(
        listed["missions"].as_array().map(Vec::len),
        Some(1),
        "only the CSRF-carrying submit counted"
    );
}

#[tokio::test]
async fn sessions_end_with_sign_out_and_with_their_key() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let key = h.create_key("temp", "operator").await;
    let mut browser = h.signed_in(&key).await;
    let page = browser.get("/approvals").await;
    assert_eq!(page.status, 200);
    let old = browser
        .cookies
        .get("hc_session")
        .cloned()
        .unwrap_or_default();
    let out = browser.post("/logout", &[("csrf", &page.csrf())]).await;
    assert_eq!(out.status, 303);
    assert!(!browser.cookies.contains_key("hc_session"));
    // The old cookie is dead on the server too, not only forgotten by the browser.
    browser.cookies.insert("hc_session".into(), old);
    let after = browser.get("/approvals").await;
    assert_eq!(after.status, 303);
    assert_eq!(after.location.as_deref(), Some("/?next=%2Fapprovals"));

    let mut browser = h.signed_in(&key).await;
    assert_eq!(browser.get("/workers").await.status, 200);
    let keys: Value =
        serde_json::from_str(h.cli(&["keys", "list", "--json"]).await.trim()).unwrap_or_default();
    let id = keys
        .as_array()
        .and_then(|k| k.iter().find(|k| k["name"] == "temp"))
        .and_then(|k| k["id"].as_str())
        .expect("the key's id")
        .to_owned();
    h.cli(&["keys", "revoke", &id]).await;
    let revoked = browser.get("/workers").await;
    assert_eq!(
        revoked.status, 303,
        "a revoked key's session is over: {revoked:?}"
    );
    assert_eq!(revoked.location.as_deref(), Some("/?next=%2Fworkers"));
}

#[tokio::test]
async fn agents_and_wrong_keys_cannot_sign_in() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let agent = h.create_key("bot", "agent").await;
    for (key, says) in [
        (agent.as_str(), "Agent keys cannot sign in"),
        ("hc_not-a-key", "not valid"),
        (&h.key[..h.key.len() - 1], "not valid"),
    ] {
        let mut browser = h.browser();
        let page = browser.get("/").await;
        let refused = browser
            .post(
                "/login",
                &[("key", key), ("csrf", &page.csrf()), ("next", "/")],
            )
            .await;
        assert_eq!(refused.status, 401, "{refused:?}");
        assert!(
            refused.body.contains("id=\"login-error\""),
            "{}",
            refused.body
        );
        assert!(refused.body.contains(says), "{}", refused.body);
        assert!(!browser.cookies.contains_key("hc_session"));
    }
}

#[tokio::test]
async fn viewers_read_everything_but_the_server_refuses_their_actions() {
    let h = Harness::start().await;
    let id = gated(&h, "deploy?").await;
    let viewer = h.create_key("vera", "viewer").await;
    let mut browser = h.signed_in(&viewer).await;
    let page = browser.get(&format!("/missions/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-role=\"viewer\""));
    assert!(
        !page.body.contains("<form class=\"decide"),
        "no decision form for a viewer"
    );
    assert!(
        page.body.contains("can read but not decide"),
        "{}",
        page.body
    );
    let inbox = browser.get("/approvals").await;
    assert!(
        inbox.body.contains(&format!("data-approval=\"{id}/gate\"")),
        "{}",
        inbox.body
    );
    assert!(!inbox.body.contains("<form class=\"decide"));

    let csrf = page.csrf();
    let refused = browser
        .post(
            &format!("/missions/{id}/approvals/gate"),
            &[("decision", "approve"), ("comment", ""), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.body.contains("operator or admin"),
        "{}",
        refused.body
    );
    for action in ["cancel", "retry"] {
        let refused = browser
            .post(&format!("/missions/{id}/{action}"), &[("csrf", &csrf)])
            .await;
        assert_eq!(refused.status, 403, "{action}: {refused:?}");
    }
    let submitted = browser
        .post(
            "/submit",
            &[
                ("workflow", "plan"),
                ("input", r#"{"steps": [{"name": "x", "noop": {}}]}"#),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(submitted.status, 403);
    let mission = h.get(&id).await;
    assert_eq!(mission["status"], "waiting");
    assert_eq!(mission["cancel_requested"], false);
}

#[tokio::test]
async fn actions_need_the_sessions_csrf_token_and_this_origin() {
    let h = Harness::start().await;
    let id = gated(&h, "ship?").await;
    let operator = h.create_key("olga", "operator").await;
    let mut browser = h.signed_in(&operator).await;
    let page = browser.get(&format!("/missions/{id}")).await;
    assert!(
        page.body
            .contains("class=\"decide card\" data-step=\"gate\""),
        "{}",
        page.body
    );
    let path = format!("/missions/{id}/approvals/gate");
    for csrf in ["", "wrong"] {
        let refused = browser
            .post(
                &path,
                &[("decision", "approve"), ("comment", "x"), ("csrf", csrf)],
            )
            .await;
        assert_eq!(refused.status, 403, "csrf `{csrf}`: {refused:?}");
        assert!(refused.body.contains("CSRF"), "{}", refused.body);
    }
    // A token from another session does not work either.
    let mut other = h.signed_in(&operator).await;
    let foreign = other.get("/").await.csrf();
    assert_ne!(foreign, page.csrf());
    let refused = browser
        .post(
            &path,
            &[
                ("decision", "approve"),
                ("comment", "x"),
                ("csrf", &foreign),
            ],
        )
        .await;
    assert_eq!(refused.status, 403);
    let cross = browser
        .send(
            browser
                .http
                .post(format!("{}{path}", browser.base))
                .header("Origin", "https://evil.example")
                .form(&[
                    ("decision", "approve"),
                    ("comment", "x"),
                    ("csrf", &page.csrf()),
                ]),
        )
        .await;
    assert_eq!(cross.status, 403, "{cross:?}");
    let bad = browser
        .post(&path, &[("decision", "maybe"), ("csrf", &page.csrf())])
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let unknown = browser
        .post(
            &format!("/missions/{id}/explode"),
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_eq!(h.get(&id).await["status"], "waiting", "nothing was decided");

    // Every form a session posts is refused without the token, whatever else it carries; and
    // nothing it asked for happens (the mission is not cancelled, no key or mission is made).
    let admin = h.create_key("ada", "admin").await;
    let mut admin_browser = h.signed_in(&admin).await;
    let missions = || async {
        let list = h
            .send(h.request(reqwest::Method::GET, "/api/v1/missions?limit=200"))
            .await;
        list.body["missions"].as_array().map_or(0, Vec::len)
    };
    let missions_before = missions().await;
    let plan = json!([{ "name": "n", "noop": {} }]).to_string();
    let forms: [(String, Vec<(&str, &str)>); 11] = [
        (format!("/missions/{id}/cancel"), vec![]),
        (format!("/missions/{id}/retry"), vec![]),
        (
            "/missions/bulk".to_owned(),
            vec![("action", "cancel"), ("id", id.as_str())],
        ),
        (
            "/submit".to_owned(),
            vec![("workflow", "plan"), ("input", plan.as_str())],
        ),
        (
            "/submit/check".to_owned(),
            vec![("workflow", "plan"), ("input", plan.as_str())],
        ),
        (
            "/workflows/plan/start".to_owned(),
            vec![("input", plan.as_str())],
        ),
        (
            "/keys".to_owned(),
            vec![("name", "mallory"), ("role", "admin")],
        ),
        (
            "/keys/00000000-0000-0000-0000-000000000000/revoke".to_owned(),
            vec![],
        ),
        ("/schedules/nightly/pause".to_owned(), vec![]),
        (
            "/incidents/00000000-0000-0000-0000-000000000000/resolve".to_owned(),
            vec![("comment", "x")],
        ),
        ("/logout".to_owned(), vec![]),
    ];
    for (path, fields) in &forms {
        let refused = admin_browser.post(path, fields).await;
        assert_eq!(refused.status, 403, "{path} without csrf: {refused:?}");
        assert!(refused.body.contains("CSRF"), "{path}: {}", refused.body);
    }
    assert_eq!(
        h.get(&id).await["status"],
        "waiting",
        "nothing was cancelled"
    );
    assert_eq!(missions().await, missions_before, "no mission was made");
    let keys = h.cli(&["keys", "list"]).await;
    assert!(!keys.contains("mallory"), "{keys}");
    assert_eq!(admin_browser.get("/").await.status, 200, "still signed in");

    let approved = browser
        .post(
            &path,
            &[
                ("decision", "approve"),
                ("comment", "lgtm"),
                ("csrf", &page.csrf()),
            ],
        )
        .await;
    assert_eq!(approved.status, 303, "{approved:?}");
    assert_eq!(approved.location, Some(format!("/missions/{id}")));
    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert_eq!(mission["output"]["steps"]["gate"]["by"], "olga");
    assert_eq!(mission["output"]["steps"]["gate"]["comment"], "lgtm");
    let again = browser
        .post(&path, &[("decision", "approve"), ("csrf", &page.csrf())])
        .await;
    assert_eq!(again.status, 409);
    assert!(
        again.body.contains("id=\"problem-detail\""),
        "{}",
        again.body
    );
}

#[tokio::test]
async fn the_submit_form_locates_problems_and_creates_nothing_until_valid() {
    let h = Harness::start().await;
    let mut browser = h.signed_in(&h.key).await;
    let csrf = browser.get("/submit").await.csrf();
    let invalid = browser
        .post(
            "/submit",
            &[
                ("workflow", "plan"),
                ("input", r#"{"steps": [{"name": "a", "nope": {}}]}"#),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(invalid.status, 422, "{invalid:?}");
    assert!(
        invalid.body.contains("data-pointer=\"/steps/0/nope\""),
        "{}",
        invalid.body
    );
    assert!(
        invalid.body.contains("&#34;nope&#34;"),
        "the text typed is kept: {}",
        invalid.body
    );
    let broken = browser
        .post(
            "/submit",
            &[
                ("workflow", "plan"),
                ("input", "{\"steps\": ["),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(broken.status, 422);
    assert!(
        broken.body.contains("not valid JSON at line 1, column 11"),
        "{}",
        broken.body
    );
    // The check the editor runs while typing answers the same.
    let checked = browser
        .post(
            "/submit/check",
            &[
                ("workflow", "plan"),
                ("input", r#"{"steps": [{"name": "a", "nope": {}}]}"#),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(checked.status, 200);
    assert!(
        checked.body.contains("data-pointer=\"/steps/0/nope\""),
        "{}",
        checked.body
    );
    let listed = h
        .send(h.request(reqwest::Method::GET, "/api/v1/missions"))
        .await;
    assert_eq!(listed.body["missions"].as_array().map(Vec::len), Some(0));

    let plan = r#"{"steps": [{"name": "a", "noop": {"n": 1}}]}"#;
    let created = browser
        .post(
            "/submit",
            &[
                ("workflow", "plan"),
                ("input", plan),
                ("idempotency_key", "form-1"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{created:?}");
    let location = created.location.unwrap_or_default();
    let id = location.trim_start_matches("/missions/").to_owned();
    let mission = h.wait_terminal(&id, "succeeded", secs(15)).await;
    assert_eq!(mission["idempotency_key"], "form-1");
    let shown = browser.get(&location).await;
    assert!(
        shown.body.contains("data-status=\"succeeded\""),
        "{}",
        shown.body
    );
}

#[tokio::test]
async fn user_data_is_escaped_in_every_page() {
    let h = Harness::start().await;
    let hostile = "<script>window.__xss=1</script><img src=x onerror=alert(1)>";
    let id = gated(&h, hostile).await;
    let mut browser = h.signed_in(&h.key).await;
    for path in [
        format!("/missions/{id}"),
        "/approvals".to_owned(),
        "/".to_owned(),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200);
        assert!(
            !page.body.contains("<script>window"),
            "{path}: {}",
            page.body
        );
        assert!(!page.body.contains("<img src=x"), "{path}");
    }
    let page = browser.get(&format!("/missions/{id}")).await;
    assert!(
        page.body
            .contains("&#60;script&#62;window.__xss=1&#60;/script&#62;"),
        "{}",
        page.body
    );
}

/// The `data-…` attribute values of every element of `page` whose opening tag starts with
/// `tag_start` (e.g. `<g class="bar"`), in page order, for attribute `name`.
fn attributes(page: &str, tag_start: &str, name: &str) -> Vec<String> {
    page.match_indices(tag_start)
        .filter_map(|(at, _)| {
            let tag = &page[at..at + page[at..].find('>').unwrap_or(0)];
            let marker = format!("{name}=\"");
            let start = tag.find(&marker)? + marker.len();
            tag[start..].split('"').next().map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn the_missions_list_filters_searches_and_pages() {
    let h = Harness::start().await;
    let noop = |n: usize| json!([{ "name": "a", "noop": { "n": n } }]);
    let mut ids = Vec::new();
    for n in 0..52 {
        ids.push(id_of(&h.submit(noop(n)).await));
    }
    let needle = id_of(
        &h.submit(json!([{ "name": "findme-7f3a", "noop": {} }]))
            .await,
    );
    let waiting = gated(&h, "hold").await;
    for id in &ids {
        h.wait_terminal(id, "succeeded", secs(30)).await;
    }
    let mut browser = h.signed_in(&h.key).await;

    // Newest first, 50 per page, a keyset link to the next page that keeps the filters.
    let first = browser.get("/").await;
    let rows = attributes(&first.body, "<tr data-mission", "data-mission");
    assert_eq!(rows.len(), 50, "{}", first.body);
    assert_eq!(rows[0], waiting);
    assert_eq!(rows[1], needle);
    assert!(
        first
            .body
            .contains("<td data-label=\"Current step\" class=\"mono\">gate</td>"),
        "{}",
        first.body
    );
    assert!(
        first.body.contains("<time datetime=\""),
        "times carry their exact value"
    );
    let next = attributes(&first.body, "<a id=\"next-page\"", "href")
        .pop()
        .expect("a next page link")
        .replace("&#38;", "&");
    let second = browser.get(&next).await;
    let more = attributes(&second.body, "<tr data-mission", "data-mission");
    assert_eq!(more.len(), 4, "54 missions in all: {more:?}");
    assert_eq!(more.last(), ids.first(), "the oldest comes last");
    assert!(!second.body.contains("id=\"next-page\""));

    let filtered = browser.get("/?status=waiting").await;
    assert_eq!(
        attributes(&filtered.body, "<tr data-mission", "data-mission"),
        [waiting]
    );
    assert!(
        filtered
            .body
            .contains("<option value=\"waiting\" selected>"),
        "the filter stays chosen"
    );
    let searched = browser.get("/?q=FINDME-7F3A&workflow=plan").await;
    assert_eq!(
        attributes(&searched.body, "<tr data-mission", "data-mission"),
        [needle]
    );
    let none = browser.get("/?status=cancelled").await;
    assert!(none.body.contains("match these filters"), "{}", none.body);
    let bad = browser.get("/?status=exploded").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("`status` must be one of"), "{}", bad.body);
}

#[tokio::test]
async fn the_timeline_shows_attempts_and_compensations_and_the_buttons_act() {
    let h = Harness::start().await;
    let m = h
        .submit(json!([
            compensable_step(&h.callee, "a", "POST", "/ok"),
            compensable_step(&h.callee, "b", "POST", "/items/7"),
            {
                "name": "c",
                "http": { "method": "POST", "url": h.callee.url("/flaky/1") },
                "retry": { "max_attempts": 3, "initial_backoff_ms": 50 }
            },
            {
                "name": "d",
                "http": { "method": "POST", "url": h.callee.url("/fail") },
            },
        ]))
        .await;
    let id = id_of(&m);
    h.wait_terminal(&id, "failed", secs(20)).await;
    let mut browser = h.signed_in(&h.key).await;
    let page = browser.get(&format!("/missions/{id}")).await;
    assert!(page
        .body
        .contains("id=\"mission-status\" class=\"badge large\" data-status=\"failed\""));
    let bar = "<g class=\"bar\"";
    let bars: Vec<(String, String, String)> = attributes(&page.body, bar, "data-step")
        .into_iter()
        .zip(attributes(&page.body, bar, "data-attempt"))
        .zip(attributes(&page.body, bar, "data-outcome"))
        .map(|((s, a), o)| (s, a, o))
        .collect();
    let expect = |s: &str, a: &str, o: &str| (s.to_owned(), a.to_owned(), o.to_owned());
    assert_eq!(
        bars,
        [
            expect("a", "1", "succeeded"),
            expect("b", "1", "succeeded"),
            expect("c", "1", "retrying"),
            expect("c", "1", "backoff"),
            expect("c", "2", "succeeded"),
            expect("d", "1", "failed"),
            // Compensations below, in the order they ran: the reverse of the steps.
            expect("compensate:b", "1", "compensated"),
            expect("compensate:a", "1", "compensated"),
        ]
    );
    let labels = attributes(&page.body, "<text class=\"row-label", "class");
    assert_eq!(
        labels.len(),
        12,
        "six rows, drawn wide and narrow: {labels:?}"
    );
    assert!(page.body.contains(">undo b</text>") && page.body.contains(">undo a</text>"));
    // Each step's error, and the history, are on the page.
    assert!(
        page.body
            .contains("<li data-step=\"d\" data-status=\"failed\">"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<tr data-type=\"step_compensated\">"));
    assert!(page.body.contains("<pre class=\"json error\">"));

    // Retry from the page: the failed step runs again (and fails again).
    let csrf = page.csrf();
    assert!(page.body.contains("<form class=\"retry\""));
    let retried = browser
        .post(&format!("/missions/{id}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(retried.status, 303, "{retried:?}");
    let history = h.history(&id).await;
    let by = events_of(&history, "mission_retried");
    assert_eq!(by.len(), 1);
    assert_eq!(by[0]["data"]["by"], "e2e-admin");

    // Cancel from the page.
    let waiting = gated(&h, "hold").await;
    let page = browser.get(&format!("/missions/{waiting}")).await;
    assert!(page.body.contains("<form class=\"cancel\""));
    let cancelled = browser
        .post(
            &format!("/missions/{waiting}/cancel"),
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(cancelled.status, 303);
    h.wait_terminal(&waiting, "cancelled", secs(15)).await;
    let page = browser.get(&format!("/missions/{waiting}")).await;
    assert!(
        !page.body.contains("<form class=\"cancel\""),
        "a finished mission has no cancel button"
    );
}

#[tokio::test]
async fn the_inbox_lists_the_oldest_request_first() {
    let h = Harness::start().await;
    let older = gated(&h, "first asked").await;
    let newer = gated(&h, "second asked").await;
    let mut browser = h.signed_in(&h.key).await;
    let inbox = browser.get("/approvals").await;
    assert_eq!(
        attributes(&inbox.body, "<tr data-approval", "data-approval"),
        [format!("{older}/gate"), format!("{newer}/gate")]
    );
    assert!(inbox.body.contains("<p class=\"message\">first asked</p>"));
    assert!(inbox
        .body
        .contains("<form class=\"decide\" data-step=\"gate\""));
}

#[tokio::test]
async fn the_workers_page_shows_live_workers_their_work_and_the_queue() {
    let h = Harness::with(Options {
        worker_concurrency: Some(3),
        ..Options::default()
    })
    .await;
    let slow = id_of(
        &h.submit(json!([http_step(
            "nap",
            "POST",
            &h.callee.url("/slow/4000")
        )]))
        .await,
    );
    h.wait_until(
        &slow,
        "running its slow step",
        |m| step_is(m, "nap", "running"),
        secs(15),
    )
    .await;
    let browser = h.signed_in(&h.key).await;
    // The heartbeat comes every 2 s: wait for one that names the mission.
    let link = format!("href=\"/missions/{slow}\"");
    let (browser, link) = (&browser, &link);
    let polled = poll(secs(10), move || async move {
        let page = browser.clone().get("/workers").await;
        if page.body.contains(link) {
            Ok(page)
        } else {
            Err(page)
        }
    })
    .await;
    // Not found in time: the assertions below say what the last page showed.
    let page = polled.unwrap_or_else(|last| last);
    assert_eq!(
        attributes(&page.body, "<tr data-worker", "data-state"),
        ["alive"],
        "{}",
        page.body
    );
    assert!(
        page.body.contains(&format!("href=\"/missions/{slow}\"")),
        "the held mission: {}",
        page.body
    );
    assert!(
        page.body.contains("1/3"),
        "busy of concurrency: {}",
        page.body
    );
    assert!(
        page.body.contains("<span class=\"mono\">nap</span>"),
        "its step: {}",
        page.body
    );
    assert!(page.body.contains("wake-ups queued in Redis"));
    assert!(page.body.contains("<div id=\"throughput\""));
    h.wait_terminal(&slow, "succeeded", secs(15)).await;
}

#[tokio::test]
async fn the_submit_form_refuses_what_the_api_refuses() {
    let h = Harness::start().await;
    let mut browser = h.signed_in(&h.key).await;
    let csrf = browser.get("/submit").await.csrf();
    // Rules about the input itself, which the engine enforces for every entry point: no NUL
    // character (PostgreSQL cannot store it) and at most 64 levels of nesting.
    let deep = format!("{}0{}", "[".repeat(65), "]".repeat(65));
    let inputs = [
        r#"{"steps": [{"name": "a", "noop": {"note": "x\u0000y"}}]}"#.to_owned(),
        format!(r#"{{"steps": [{{"name": "a", "noop": {deep}}}]}}"#),
    ];
    for input in inputs {
        let value: Value = serde_json::from_str(&input).expect("the input is JSON");
        let api = h
            .submit_body(&json!({ "workflow": "plan", "input": value }))
            .await;
        assert_eq!(api.status, 422, "{:?}", api.body);
        let pointer = api.body["errors"][0]["pointer"]
            .as_str()
            .unwrap_or_default();
        let message = api.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(!message.is_empty(), "{:?}", api.body);
        let refused = browser
            .post(
                "/submit",
                &[("workflow", "plan"), ("input", &input), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(refused.status, 422, "{refused:?}");
        // The same problem, located in the input rather than in the API's body.
        let located = format!(
            "data-pointer=\"{}\"",
            pointer.strip_prefix("/input").unwrap_or(pointer)
        );
        assert!(
            refused.body.contains(&located),
            "{located}: {}",
            refused.body
        );
        assert!(
            refused.body.contains(message),
            "{message}: {}",
            refused.body
        );
    }
    let listed = h
        .send(h.request(reqwest::Method::GET, "/api/v1/missions"))
        .await;
    assert_eq!(listed.body["missions"].as_array().map(Vec::len), Some(0));
}
