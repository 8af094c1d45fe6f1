//! Hostile input that used to end in a 500, a rounded number, an open redirect or an
//! unbounded page (issue 9, items 5–8, 12 and 13), against the real binary: idempotency keys
//! beyond the index's reach, integers beyond 2^53, `next` after sign-in, guessing keys, and the
//! approvals inbox with many and long requests.

mod common;

use common::*;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::redirect::Policy;
use reqwest::Method;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn no_workers() -> Options {
    Options {
        workers: 0,
        ..Options::default()
    }
}

/// Random text of `n` characters (the shape of the key that broke the unique index).
fn random_text(n: usize) -> String {
    let mut text = String::new();
    while text.len() < n {
        text.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    text.truncate(n);
    text
}

/// POST a raw JSON text as a submission (numbers are written exactly as given).
async fn submit_text(h: &Harness, body: &str) -> Reply {
    h.send(
        h.request(Method::POST, "/api/v1/missions")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_owned()),
    )
    .await
}

#[tokio::test]
async fn idempotency_keys_are_capped_at_255_characters() {
    let h = Harness::with(no_workers()).await;
    let plan = json!({ "steps": [{ "name": "n", "noop": {} }] });
    for length in [256, 3000, 100_000] {
        let reply = h
            .submit_body(&json!({
                "workflow": "plan", "input": plan, "idempotency_key": random_text(length)
            }))
            .await;
        let problem = reply.problem(422);
        assert_eq!(
            reply.pointers(),
            ["/idempotency_key"],
            "{length}: {problem}"
        );
        let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("255"), "{message}");
    }
    // Characters, not bytes: 255 of them, however many bytes, are accepted, once.
    for key in [random_text(255), "é".repeat(255)] {
        let body = json!({ "workflow": "plan", "input": plan, "idempotency_key": key });
        let first = h.submit_body(&body).await;
        assert_eq!(first.status, 201, "{first:?}");
        let again = h.submit_body(&body).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(again.body["id"], first.body["id"]);
    }
    // Nothing was created by the refused submissions.
    let listed = h.send(h.request(Method::GET, "/api/v1/missions")).await;
    assert_eq!(
        listed.body["missions"].as_array().map(Vec::len),
        Some(2),
        "{listed:?}"
    );
}

#[tokio::test]
async fn list_filters_of_any_length_answer_without_a_500() {
    let h = Harness::with(no_workers()).await;
    h.submit(json!([{ "name": "n", "noop": {} }])).await;
    let long = random_text(20_000);
    for query in [
        format!("workflow={long}"),
        format!("q={long}"),
        format!("workflow={long}&q={long}&status=pending"),
    ] {
        let reply = h
            .send(h.request(Method::GET, &format!("/api/v1/missions?{query}")))
            .await;
        assert_eq!(reply.status, 200, "{}", &query[..40]);
        assert_eq!(reply.body["missions"], json!([]));
    }
}

#[tokio::test]
async fn integers_beyond_2_53_are_refused_with_a_pointer() {
    let h = Harness::with(no_workers()).await;
    let plan = |value: &str| {
        format!(
            r#"{{"workflow": "plan", "input": {{"steps": [{{"name": "n", "noop": {{"ok": 1, "big": {value}}}}}]}}}}"#
        )
    };
    for value in [
        "9007199254740992",
        "-9007199254740992",
        "12345678901234567890",
        "-9223372036854775808",
        "123456789012345678901234",
        "1e20",
        "9007199254740993.0",
        "1.5e300",
    ] {
        let reply = submit_text(&h, &plan(value)).await;
        let problem = reply.problem(422);
        assert_eq!(
            reply.pointers(),
            ["/input/steps/0/noop/big"],
            "{value}: {problem}"
        );
        let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("as strings"), "{value}: {message}");
    }
    // Every one is reported, each where it is.
    let reply = submit_text(
        &h,
        r#"{"workflow": "plan", "input": {"steps": [{"name": "n", "noop": {"a": [1, 1e19], "b": 18446744073709551615}}]}}"#,
    )
    .await;
    reply.problem(422);
    let mut pointers = reply.pointers();
    pointers.sort();
    assert_eq!(
        pointers,
        ["/input/steps/0/noop/a/1", "/input/steps/0/noop/b"]
    );
    // Up to 2^53 − 1 (and any fraction below it) is exact, and accepted as written.
    for value in [
        "9007199254740991",
        "-9007199254740991",
        "0.1",
        "2.5e-300",
        "1e15",
    ] {
        let reply = submit_text(&h, &plan(value)).await;
        assert_eq!(reply.status, 201, "{value}: {reply:?}");
        let sent: Value = serde_json::from_str(value).expect("a JSON number");
        assert_eq!(
            reply.body["input"]["steps"][0]["noop"]["big"], sent,
            "{value}"
        );
    }
    // A large number sent as a string is just a string.
    let reply = submit_text(&h, &plan(r#""123456789012345678901234""#)).await;
    assert_eq!(reply.status, 201, "{reply:?}");
}

#[tokio::test]
async fn after_sign_in_next_never_leaves_the_site() {
    let h = Harness::with(no_workers()).await;
    // (sent in the form, as the browser sends it, → where the redirect must go)
    let cases = [
        ("/approvals", "/approvals"),
        ("/missions?status=failed", "/missions?status=failed"),
        ("/missions?q=café", "/missions?q=caf%C3%A9"),
        // The reported redirect: `next=/%09/evil.example` decodes to a tab.
        ("/\t/evil.example", "/"),
        ("/\n/evil.example", "/"),
        ("/\r\n/evil.example", "/"),
        ("/\u{1}x", "/"),
        ("/\u{7f}", "/"),
        ("/\u{85}", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("/\\/evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        (" //evil.example", "/"),
        // Percent-encoded text stays encoded: the browser does not decode it in a path.
        ("/%09/evil.example", "/%09/evil.example"),
    ];
    for (next, expected) in cases {
        let mut browser = h.browser();
        let signed = browser.try_sign_in(&h.key, next).await;
        assert_eq!(signed.status, 303, "next {next:?}");
        assert_eq!(signed.location.as_deref(), Some(expected), "next {next:?}");
        assert!(
            browser.cookies.contains_key("hc_session"),
            "a successful sign-in has its session: {next:?}"
        );
    }
    // The login page itself (where a signed-out visit is sent, with `?next=`) renders too.
    for next in ["%01", "%2F%09%2Fevil.example", "%5Cevil"] {
        let page = h.browser().get(&format!("/?next={next}")).await;
        assert_eq!(page.status, 200, "?next={next}");
        assert!(!page.body.contains("evil"), "?next={next}: {}", page.body);
    }
}

/// One request with `key` from a client bound to `from`; the status and `Retry-After`.
async fn try_key(h: &Harness, from: &reqwest::Client, key: &str) -> (u16, Option<u64>, Value) {
    let response = from
        .get(h.url("/api/v1/missions?limit=1"))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("the API answered");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(address))
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test]
async fn guessing_keys_is_limited_per_address() {
    // The default limit: 10 failures per second, bursts of 20.
    let h = Harness::with(no_workers()).await;
    let here = client_from([127, 0, 0, 1]);
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut waits = Vec::new();
    for i in 0..60 {
        let (status, retry_after, body) = try_key(&h, &here, &format!("hc_guess{i}")).await;
        if status == 429 {
            assert_eq!(body["type"], "https://hypercode.dev/problems/rate-limited");
            assert!(
                body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("failed authentication")),
                "{body}"
            );
            waits.push(retry_after.expect("a 429 carries Retry-After"));
        }
        statuses.push(status);
    }
    let elapsed = started.elapsed();
    let refused = statuses.iter().filter(|s| **s == 401).count() as f64;
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        (20.0..=20.0 + 10.0 * elapsed.as_secs_f64()).contains(&refused),
        "{refused} keys looked up in {elapsed:?}: {statuses:?}"
    );
    assert!(!waits.is_empty(), "no 429 in {statuses:?}");
    assert!(waits.iter().all(|w| *w >= 1), "{waits:?}");

    // While limited, the address is refused before its key is looked at: a good key waits too.
    // (Right after a refusal: a token may have refilled in between, which the next wrong key
    // then takes, so a few rounds are allowed.)
    let mut wait = None;
    for _ in 0..20 {
        if try_key(&h, &here, "hc_wrong").await.0 != 429 {
            continue;
        }
        let (status, retry_after, _) = try_key(&h, &here, &h.key).await;
        if status == 429 {
            wait = Some(retry_after.expect("Retry-After"));
            break;
        }
    }
    let wait = wait.expect("a good key from a limited address is refused with 429");

    // Another address has a bucket of its own.
    let there = client_from([127, 0, 0, 2]);
    assert_eq!(try_key(&h, &there, &h.key).await.0, 200);
    assert_eq!(try_key(&h, &there, "hc_wrong").await.0, 401);

    // Once the bucket refills, the good key works again from the first address.
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    assert_eq!(try_key(&h, &here, &h.key).await.0, 200);
    // And successes take nothing from the bucket.
    for _ in 0..40 {
        assert_eq!(try_key(&h, &here, &h.key).await.0, 200);
    }
}

#[tokio::test]
async fn wrong_keys_on_the_sign_in_form_count_too() {
    let h = Harness::with(Options {
        workers: 0,
        env: vec![("HYPERCODE_AUTH_FAIL_LIMIT", "2".to_owned())],
        ..Options::default()
    })
    .await;
    let client = client_from([127, 0, 0, 3]);
    // Wrong keys, through the form and the API in turn: one bucket for both, so at most its
    // burst (4) plus what refilled (2 per second) are looked up in all.
    let started = Instant::now();
    let (mut looked_up, mut limited) = (0, None);
    for i in 0..30 {
        let status = if i % 2 == 0 {
            let mut browser = Browser::with_client(&h.base, client.clone());
            let page = browser.try_sign_in(&format!("hc_guess{i}"), "/").await;
            assert!(!browser.cookies.contains_key("hc_session"));
            if page.status == 429 {
                let wait: Option<u64> = page
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let body = &page.body;
                assert!(body.contains("Too many failed sign-in attempts"), "{body}");
                limited = Some(wait.expect("Retry-After"));
            }
            page.status
        } else {
            try_key(&h, &client, &format!("hc_guess{i}")).await.0
        };
        assert!(status == 401 || status == 429, "{status}");
        looked_up += usize::from(status == 401);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        (looked_up as f64) <= 4.0 + 2.0 * elapsed,
        "{looked_up} wrong keys looked up in {elapsed} s"
    );
    let wait = limited.expect("the form refused with 429 at least once");
    tokio::time::sleep(Duration::from_secs(wait.max(2)) + Duration::from_millis(100)).await;
    let mut browser = Browser::with_client(&h.base, client);
    let signed = browser.try_sign_in(&h.key, "/approvals").await;
    assert_eq!(signed.status, 303);
    assert!(browser.cookies.contains_key("hc_session"));
}

#[tokio::test]
async fn the_approvals_inbox_is_paged_and_cuts_long_messages() {
    let h = Harness::start().await;
    let long = format!("Ship it? {}", "x".repeat(3000));
    let mut ids = Vec::new();
    for i in 0..52 {
        let message = if i == 0 {
            long.clone()
        } else {
            format!("gate {i}?")
        };
        let mission = h
            .submit(json!([{ "name": "gate", "approval": { "message": message } }]))
            .await;
        ids.push(id_of(&mission));
    }
    for id in &ids {
        h.wait_until(id, "waiting", |m| step_is(m, "gate", "waiting"), secs(30))
            .await;
    }

    // A page never holds more than 100, whatever is asked; `next_cursor` leads through all.
    let all = h
        .send(h.request(Method::GET, "/api/v1/approvals?limit=500"))
        .await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(all.body["approvals"].as_array().map(Vec::len), Some(52));
    assert!(
        all.body["next_cursor"].is_null(),
        "{}",
        all.body["next_cursor"]
    );
    let default = h.send(h.request(Method::GET, "/api/v1/approvals")).await;
    assert_eq!(default.body["approvals"].as_array().map(Vec::len), Some(50));
    assert!(default.body["next_cursor"].is_string());

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/approvals?limit=20&cursor={c}"),
            None => "/api/v1/approvals?limit=20".to_owned(),
        };
        let page = h.send(h.request(Method::GET, &path)).await;
        assert_eq!(page.status, 200, "{page:?}");
        let approvals = page.body["approvals"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pages.push(approvals.len());
        seen.extend(approvals);
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, [20, 20, 12]);
    let order: Vec<&str> = seen
        .iter()
        .filter_map(|a| a["mission_id"].as_str())
        .collect();
    let everything: Vec<&str> = all.body["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["mission_id"].as_str())
        .collect();
    assert_eq!(
        order, everything,
        "pages are the whole inbox, in order, once"
    );

    // The long message is cut (the mission has it whole); the others are not.
    let first = seen
        .iter()
        .find(|a| a["mission_id"] == ids[0].as_str())
        .expect("the long one");
    assert_eq!(first["message_truncated"], true);
    let cut = first["message"].as_str().unwrap_or_default();
    assert_eq!(cut.chars().count(), 500);
    assert!(long.starts_with(cut));
    assert!(seen
        .iter()
        .filter(|a| a["mission_id"] != ids[0].as_str())
        .all(|a| a["message_truncated"] == false));

    for bad in ["cursor=nope", "limit=0", "limit=-3", "limit=many"] {
        let reply = h
            .send(h.request(Method::GET, &format!("/api/v1/approvals?{bad}")))
            .await;
        reply.problem(400);
    }

    // The dashboard's inbox: 50 to a page, then a link to the rest.
    let mut browser = h.signed_in(&h.key).await;
    let mut get = async |path: &str| {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        page.body
    };
    let page = get("/approvals").await;
    assert_eq!(page.matches("data-approval=\"").count(), 50);
    assert!(!page.contains(&long), "the long message is cut");
    assert!(page.contains(&long[..400]));
    let next = page
        .split_once("id=\"next-page\" href=\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .expect("a next-page link")
        .replace("&amp;", "&");
    let rest = get(&next).await;
    assert_eq!(rest.matches("data-approval=\"").count(), 2);
    assert!(!rest.contains("id=\"next-page\""));
}
