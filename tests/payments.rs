//! Payments end to end, on real `serve` and `worker` processes against a local fake of
//! Stripe's API (`payments/fake_stripe.rs`): webhook deliveries signed exactly as Stripe signs
//! them (and not), events applied once by `stripe_event` missions, out-of-order subscription
//! events, refunds after a partial spend, concurrent spends that must never overdraw, shop
//! purchases whose fulfilment fails, and what checkout sends to Stripe.

mod common;
#[path = "payments/fake_stripe.rs"]
mod fake_stripe;

use common::*;
use fake_stripe::FakeStripe;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;

const WEBHOOK_SECRET: &str = "whsec_test_payments";
const SECRET_KEY: &str = "sk_test_payments";
const WAIT: Duration = Duration::from_secs(30);

/// A deployment whose Stripe is `fake` and whose catalogue sells test items, some fulfilled
/// by the fake.
async fn deployment(fake: &FakeStripe) -> Harness {
    let catalog = format!(
        r#"
[[token_pack]]
id = "pack-500"
name = "500 BROski$"
tokens = 500
price = 499
currency = "usd"

[[plan]]
id = "course-pro"
name = "Pro course"
price_id = "price_course_pro"
course = "pro"

[[plan]]
id = "course-gone"
name = "A plan whose Stripe price was deleted"
price_id = "price_missing"
course = "gone"

[[shop_item]]
id = "templates"
name = "Templates"
cost = 150

[[shop_item]]
id = "sturdy"
name = "Fulfilled by a service that works"
cost = 100
fulfil_url = "{base}/grants/ok"

[[shop_item]]
id = "fragile"
name = "Fulfilled by a service that refuses"
cost = 150
fulfil_url = "{base}/grants/fail"
"#,
        base = fake.base
    );
    let path = std::env::temp_dir().join(format!("hypercode-catalog-{}.toml", random_suffix()));
    std::fs::write(&path, catalog).expect("write the catalogue");
    Harness::with(Options {
        env: vec![
            ("STRIPE_SECRET_KEY", SECRET_KEY.to_owned()),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("HYPERCODE_STRIPE_API_URL", fake.base.clone()),
            ("HYPERCODE_CATALOG", path.display().to_string()),
        ],
        ..Options::default()
    })
    .await
}

/// Stripe's documented signature: hex HMAC-SHA256 of `<t>.<body>` keyed with the secret.
/// `serve` with these variables added to the deployment's stops at startup, saying `message`.
async fn serve_refuses(h: &Harness, vars: &[(&str, &std::ffi::OsStr)], message: &str) {
    let mut serve = h.command(&["serve"]);
    for (name, value) in vars {
        serve.env(name, value);
    }
    let output = serve
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .expect("run serve");
    assert!(!output.status.success(), "serve started with {vars:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(message), "{stderr}");
}

fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An event as Stripe sends it.
fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": created,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": kind,
        "data": { "object": object },
    })
    .to_string()
}

/// POST a body to the webhook with this `Stripe-Signature` (none when `None`).
async fn deliver_with(h: &Harness, body: &str, signature: Option<String>) -> Reply {
    let mut request = h
        .http
        .post(h.url("/api/stripe/webhook"))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    h.send(request).await
}

/// Deliver `body` signed correctly now; asserts 200.
async fn deliver(h: &Harness, body: &str) -> Value {
    let t = now();
    let reply = deliver_with(
        h,
        body,
        Some(format!("t={t},v1={}", sign(WEBHOOK_SECRET, t, body))),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// Deliver and wait until its `stripe_event` mission succeeded; returns the mission.
async fn apply(h: &Harness, body: &str) -> Value {
    let received = deliver(h, body).await;
    let mission = received["mission"]
        .as_str()
        .expect("a mission id")
        .to_owned();
    h.wait_terminal(&mission, "succeeded", WAIT).await
}

async fn account(h: &Harness, account: &str) -> Value {
    let reply = h
        .send(h.request(reqwest::Method::GET, &format!("/api/v1/accounts/{account}")))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

async fn post_tokens(h: &Harness, key: &str, account: &str, body: Value) -> Reply {
    h.send(
        h.request_as(
            reqwest::Method::POST,
            &format!("/api/v1/accounts/{account}/tokens"),
            key,
        )
        .json(&body),
    )
    .await
}

/// Missions of `workflow`, newest first.
async fn missions_of(h: &Harness, workflow: &str) -> Vec<Value> {
    let reply = h
        .send(h.request(
            reqwest::Method::GET,
            &format!("/api/v1/missions?workflow={workflow}&limit=500"),
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["missions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A completed Checkout Session for the token pack, paid by `payment_intent`.
fn pack_completed(event_id: &str, session: &str, account: &str, payment_intent: &str) -> String {
    event(
        event_id,
        "checkout.session.completed",
        now(),
        json!({
            "id": session,
            "object": "checkout.session",
            "mode": "payment",
            "client_reference_id": account,
            "metadata": { "account": account, "item": "pack-500" },
            "payment_intent": payment_intent,
            "payment_status": "paid",
            "amount_total": 499,
            "currency": "usd",
            "status": "complete",
        }),
    )
}

fn kinds(account: &Value) -> Vec<(String, i64)> {
    account["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap_or_default().to_owned(),
                        e["amount"].as_i64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn webhook_signatures_are_checked_as_stripe_documents_them() {
    let fake = FakeStripe::start().await;
    let h = deployment(&fake).await;
    let body = event(
        "evt_sig_1",
        "customer.created",
        now(),
        json!({ "id": "cus_1" }),
    );
    let t = now();
    let right = sign(WEBHOOK_SECRET, t, &body);
    let refused = [
        ("no header", None),
        (
            "a malformed header",
            Some("this is not a signature".to_owned()),
        ),
        ("no v1", Some(format!("t={t},v0={right}"))),
        ("a non-numeric t", Some(format!("t=soon,v1={right}"))),
        (
            "the wrong secret",
            Some(format!("t={t},v1={}", sign("whsec_wrong", t, &body))),
        ),
        (
            "a stale t",
            Some(format!(
                "t={},v1={}",
                t - 400,
                sign(WEBHOOK_SECRET, t - 400, &body)
            )),
        ),
        (
            "a signature of another body",
            Some(format!("t={t},v1={}", sign(WEBHOOK_SECRET, t, "{}"))),
        ),
        (
            "a t from the future",
            Some(format!(
                "t={},v1={}",
                t + 400,
                sign(WEBHOOK_SECRET, t + 400, &body)
            )),
        ),
    ];
    for (what, signature) in refused {
        let reply = deliver_with(&h, &body, signature).await;
        let problem = reply.problem(400);
        assert_eq!(
            problem["type"], "https://hypercode.dev/problems/invalid-signature",
            "{what}: {reply:?}"
        );
    }
    assert!(
        missions_of(&h, "stripe_event").await.is_empty(),
        "an unverified delivery started a mission"
    );
    let pool = sqlx::PgPool::connect(&h.database_url)
        .await
        .expect("connect");
    let stored: i64 = sqlx::query_scalar("select count(*) from stripe_events")
        .fetch_one(&pool)
        .await
        .expect("count the stored events");
    assert_eq!(stored, 0, "an unverified delivery was stored");
    // Signed, but not an event: refused too.
    let not_an_event = deliver_with(
        &h,
        "[]",
        Some(format!("t={t},v1={}", sign(WEBHOOK_SECRET, t, "[]"))),
    )
    .await;
    not_an_event.problem(400);
    // While a secret is rolled, Stripe signs with both: one right v1 among others is enough.
    let rolled = format!("t={t},v1={},v1={right}", sign("whsec_old", t, &body));
    let reply = deliver_with(&h, &body, Some(rolled)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["id"], "evt_sig_1");
    assert_eq!(reply.body["new"], true);
    let mission = reply.body["mission"].as_str().expect("mission").to_owned();
    let done = h.wait_terminal(&mission, "succeeded", WAIT).await;
    assert_eq!(done["workflow"], "stripe_event");
    assert_eq!(done["idempotency_key"], "stripe:evt_sig_1");
    // A type the product does not handle is still recorded, and not retried by Stripe.
    assert!(
        done["output"]["outcome"]
            .as_str()
            .unwrap_or_default()
            .starts_with("ignored"),
        "{done}"
    );
    assert_eq!(missions_of(&h, "stripe_event").await.len(), 1);
    // An event of an API version no typed parser knows, with fields of unexpected shapes
    // (an expanded payment intent, an amount as a string): what is needed is read, the rest
    // is left alone.
    let future = json!({
        "id": "evt_sig_2",
        "object": "event",
        "api_version": "2099-01-01.unreleased",
        "created": now(),
        "type": "checkout.session.completed",
        "data": { "object": {
            "id": "cs_sig_2",
            "mode": "payment",
            "metadata": { "account": "zoe", "item": "pack-500", "extra": { "nested": [1, 2] } },
            "payment_intent": { "id": "pi_sig_2", "object": "payment_intent" },
            "payment_status": "paid",
            "amount_total": "499",
            "brand_new_field": { "anything": true },
        }},
    })
    .to_string();
    let applied = apply(&h, &future).await;
    assert!(
        applied["output"]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("credited 500 tokens"),
        "{applied}"
    );
    assert_eq!(account(&h, "zoe").await["balance"], 500);
    // The webhook needs no key, and an internal workflow cannot be submitted by a client.
    let submitted = h
        .submit_body(&json!({ "workflow": "stripe_event", "input": { "event_id": "evt_sig_1" } }))
        .await;
    assert_eq!(submitted.status, 422, "{submitted:?}");
}

#[tokio::test]
async fn a_replayed_event_is_credited_once() {
    let fake = FakeStripe::start().await;
    let h = deployment(&fake).await;
    let body = pack_completed("evt_buy_1", "cs_buy_1", "ada@example.com", "pi_buy_1");
    let first = apply(&h, &body).await;
    assert!(
        first["output"]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("credited 500 tokens"),
        "{first}"
    );
    for _ in 0..3 {
        let again = deliver(&h, &body).await;
        assert_eq!(again["new"], false);
        assert_eq!(again["mission"], first["id"]);
    }
    let ada = account(&h, "ada@example.com").await;
    assert_eq!(ada["balance"], 500, "{ada}");
    assert_eq!(kinds(&ada), [("purchase".to_owned(), 500)]);
    assert_eq!(ada["entries"][0]["reference"], "cs_buy_1");
    assert_eq!(missions_of(&h, "stripe_event").await.len(), 1);
}

#[tokio::test]
async fn out_of_order_subscription_events_converge_to_the_newest() {
    let fake = FakeStripe::start().await;
    let h = deployment(&fake).await;
    let t0 = now() - 100;
    let completed = event(
        "evt_sub_1",
        "checkout.session.completed",
        t0,
        json!({
            "id": "cs_sub_1",
            "mode": "subscription",
            "client_reference_id": "bea",
            "metadata": { "account": "bea", "item": "course-pro" },
            "subscription": "sub_1",
            "payment_status": "paid",
            "amount_total": 2900,
            "currency": "usd",
        }),
    );
    let subscription = |id: &str, status: &str| json!({ "id": id, "object": "subscription", "status": status, "customer": "cus_b", "metadata": { "account": "bea", "item": "course-pro" } });
    // Stripe sent updated (past_due) and then deleted; they arrive the other way round, and
    // the checkout's completion (the oldest) arrives last.
    let deleted = event(
        "evt_sub_3",
        "customer.subscription.deleted",
        t0 + 20,
        subscription("sub_1", "canceled"),
    );
    let updated = event(
        "evt_sub_2",
        "customer.subscription.updated",
        t0 + 10,
        subscription("sub_1", "past_due"),
    );
    apply(&h, &deleted).await;
    apply(&h, &updated).await;
    apply(&h, &completed).await;
    let bea = account(&h, "bea").await;
    assert_eq!(bea["subscriptions"][0]["id"], "sub_1", "{bea}");
    assert_eq!(bea["subscriptions"][0]["status"], "canceled", "{bea}");
    assert_eq!(bea["subscriptions"][0]["plan"], "course-pro", "{bea}");
    assert_eq!(
        bea["entitlements"],
        json!([]),
        "a canceled course is no entitlement: {bea}"
    );
    // A second subscription: past_due (older) arrives after active (newer): it stays active,
    // and so does its course.
    let completed = event(
        "evt_sub_4",
        "checkout.session.completed",
        t0,
        json!({
            "id": "cs_sub_2",
            "mode": "subscription",
            "metadata": { "account": "bea", "item": "course-pro" },
            "subscription": "sub_2",
            "payment_status": "paid",
        }),
    );
    apply(&h, &completed).await;
    let failed_invoice = event(
        "evt_sub_6",
        "invoice.payment_failed",
        t0 + 5,
        json!({ "id": "in_1", "object": "invoice", "subscription": "sub_2", "amount_due": 2900, "currency": "usd" }),
    );
    let active = event(
        "evt_sub_5",
        "customer.subscription.updated",
        t0 + 30,
        subscription("sub_2", "active"),
    );
    apply(&h, &active).await;
    apply(&h, &failed_invoice).await;
    let bea = account(&h, "bea").await;
    let sub_2 = bea["subscriptions"]
        .as_array()
        .and_then(|subs| subs.iter().find(|s| s["id"] == "sub_2"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(sub_2["status"], "active", "{bea}");
    assert_eq!(bea["entitlements"][0]["kind"], "course", "{bea}");
    assert_eq!(bea["entitlements"][0]["item"], "pro", "{bea}");
    // A newer failed invoice does move it to past_due; a paid one back to active.
    let newer_failure = event(
        "evt_sub_7",
        "invoice.payment_failed",
        t0 + 40,
        json!({ "id": "in_2", "subscription": "sub_2", "amount_due": 2900 }),
    );
    apply(&h, &newer_failure).await;
    let status = |bea: &Value| {
        bea["subscriptions"]
            .as_array()
            .and_then(|subs| subs.iter().find(|s| s["id"] == "sub_2"))
            .map(|s| s["status"].clone())
            .unwrap_or_default()
    };
    assert_eq!(status(&account(&h, "bea").await), "past_due");
    let paid = event(
        "evt_sub_8",
        "invoice.paid",
        t0 + 50,
        json!({ "id": "in_2", "subscription": "sub_2", "amount_paid": 2900 }),
    );
    apply(&h, &paid).await;
    assert_eq!(status(&account(&h, "bea").await), "active");
    // Each invoice is a payment record, at the state of its newest event.
    let pool = sqlx::PgPool::connect(&h.database_url)
        .await
        .expect("connect");
    let invoices: Vec<(String, String, i64)> = sqlx::query_as(
        "select stripe_id, status, amount from payments where object = 'invoice' order by stripe_id",
    )
    .fetch_all(&pool)
    .await
    .expect("the invoices");
    assert_eq!(
        invoices,
        [
            ("in_1".to_owned(), "payment_failed".to_owned(), 2900),
            ("in_2".to_owned(), "paid".to_owned(), 2900)
        ]
    );
}

#[tokio::test]
async fn a_refund_after_a_partial_spend_leaves_arrears_never_a_negative_balance() {
    let fake = FakeStripe::start().await;
    let h = deployment(&fake).await;
    apply(&h, &pack_completed("evt_r_1", "cs_r_1", "cy", "pi_r_1")).await;
    let spent = post_tokens(
        &h,
        &h.key,
        "cy",
        json!({ "amount": -300, "reason": "prompts", "idempotency_key": "cy-spend-1" }),
    )
    .await;
    assert_eq!(spent.status, 201, "{spent:?}");
    assert_eq!(spent.body["balance"], 200);
    let refunded = event(
        "evt_r_2",
        "charge.refunded",
        now(),
        json!({ "id": "ch_r_1", "object": "charge", "payment_intent": "pi_r_1", "amount": 499, "amount_refunded": 499, "refunded": true }),
    );
    apply(&h, &refunded).await;
    // Redelivered: nothing more is taken.
    deliver(&h, &refunded).await;
    let cy = account(&h, "cy").await;
    assert_eq!(cy["balance"], 0, "{cy}");
    assert_eq!(cy["arrears"], 300, "{cy}");
    assert_eq!(
        kinds(&cy),
        [
            ("reversal".to_owned(), -200),
            ("spend".to_owned(), -300),
            ("purchase".to_owned(), 500)
        ]
    );
    assert_eq!(cy["entries"][0]["reference"], "cs_r_1");
    // A charge nobody bought anything with is recorded and ignored.
    let stray = event(
        "evt_r_3",
        "charge.refunded",
        now(),
        json!({ "id": "ch_x", "payment_intent": "pi_unknown", "amount": 100, "amount_refunded": 100 }),
    );
    let mission = apply(&h, &stray).await;
    assert!(mission["output"]["outcome"]
        .as_str()
        .unwrap_or_default()
        .starts_with("ignored"));
}

#[tokio::test]
async fn a_refund_delivered_before_its_purchase_is_still_taken_back() {
    let fake = FakeStripe::start().await;
    let h = deployment(&fake).await;
    let t = now();
    let refund = |id: &str, created: i64, refunded: i64| {
        event(
            id,
            "charge.refunded",
            created,
            json!({ "id": "ch_e_1", "object": "charge", "payment_intent": "pi_e_1", "amount": 499, "amount_refunded": refunded, "refunded": refunded == 499 }),
        )
    };
    // Stripe refunded in full after the session completed, but the completion is delivered
    // last (its first deliveries failed): the refund finds no purchase yet.
    let early = apply(&h, &refund("evt_e_2", t, 499)).await;
    assert!(
        early["output"]["outcome"]
            .as_str()
            .unwrap_or_default()
            .starts_with("ignored"),
        "{early}"
    );
    let completed = apply(&h, &pack_completed("evt_e_1", "cs_e_1", "kai", "pi_e_1")).await;
    assert!(
        completed["output"]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("took back 500 tokens"),
        "{completed}"
    );
    let kai = account(&h, "kai").await;
    assert_eq!(
        (&kai["balance"], &kai["arrears"]),
        (&json!(0), &json!(0)),
        "{kai}"
    );
    assert_eq!(
        kinds(&kai),
        [("reversal".to_owned(), -500), ("purchase".to_owned(), 500)]
    );
    // An older partial refund of the same charge, delivered later still, takes nothing more
    // and leaves the payment refunded in full.
    apply(&h, &refund("evt_e_0", t - 60, 200)).await;
    let kai = account(&h, "kai").await;
    assert_eq!(kai["entries"].as_array().map(Vec::len), Some(2), "{kai}");
    let pool = sqlx::PgPool::connect(&h.database_url)
        .await
        .expect("connect");
    let (status, reversed): (String, i64) =
        sqlx::query_as("select status, reversed_tokens from payments where stripe_id = 'cs_e_1'")
            .fetch_one(&pool)
            .await
            .expect("the payment");
    assert_eq!((status.as_str(), reversed), ("refunded", 500));
}

#[tokio::test]
async fn concurrent_spends_never_overdraw() {
    let fake = FakeStripe::start().await;
    let h = deployment(&fake).await;
    let awarded = post_tokens(
        &h,
        &h.key,
        "dee",
        json!({ "amount": 1000, "reason": "welcome", "idempotency_key": "dee-award" }),
    )
    .await;
    assert_eq!(awarded.status, 201, "{awarded:?}");
    let spends = (0..50).map(|i| {
        post_tokens(
            &h,
            &h.key,
            "dee",
            json!({ "amount": -30, "reason": "lesson", "idempotency_key": format!("dee-spend-{i}") }),
        )
    });
    let replies = futures::future::join_all(spends).await;
    let succeeded = replies.iter().filter(|r| r.status == 201).count();
    for refused in replies.iter().filter(|r| r.status != 201) {
        let problem = refused.problem(409);
        assert!(
            problem["type"]
                .as_str()
                .unwrap_or_default()
                .ends_with("insufficient-tokens"),
            "{refused:?}"
        );
    }
    assert_eq!(succeeded, 33, "exactly 1000 / 30 spends fit");
    assert!(replies
        .iter()
        .filter(|r| r.status == 201)
        .all(|r| r.body["balance"].as_i64().is_some_and(|b| b >= 10)));
    let dee = account(&h, "dee").await;
    assert_eq!(dee["balance"], 10, "{dee}");
    // The balance is the sum of the ledger, in the database itself.
    let pool = sqlx::PgPool::connect(&h.database_url)
        .await
        .expect("connect");
    let (sum, balance): (Option<i64>, i64) = sqlx::query_as(
        "select (select sum(amount)::bigint from ledger_entries where account = 'dee'), \
                (select balance from accounts where id = 'dee')",
    )
    .fetch_one(&pool)
    .await
    .expect("sum the ledger");
    assert_eq!((sum, balance), (Some(10), 10));
    // The ledger is append-only, whoever tries.
    let changed = sqlx::query("update ledger_entries set amount = 5000 where account = 'dee'")
        .execute(&pool)
        .await;
    assert!(changed.is_err(), "an entry was changed");
    let overdraft = sqlx::query(
        "insert into ledger_entries (account, amount, kind, idempotency_key) values ('dee', -11, 'spend', 'sql')",
    )
    .execute(&pool)
    .await;
    assert!(overdraft.is_err(), "the database allowed an overdraft");
    // Nor can the balance be written except through the ledger.
    for bypass in [
        "update accounts set balance = 5000 where id = 'dee'",
        "insert into accounts (id, balance) values ('rich', 5000)",
    ] {
        let written = sqlx::query(bypass).execute(&pool).await;
        assert!(written.is_err(), "{bypass}");
    }
    let balance: i64 = sqlx::query_scalar("select balance from accounts where id = 'dee'")
        .fetch_one(&pool)
        .await
        .expect("the balance");
    assert_eq!(balance, 10);
}

#[tokio::test]
async fn token_requests_are_checked_and_idempotent() {
    let fake = FakeStripe::start().await;
    let h = deployment(&fake).await;
    let body = json!({ "amount": 40, "reason": "bug report", "idempotency_key": "eve-1" });
    let first = post_tokens(&h, &h.key, "eve", body.clone()).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["balance"], 40);
    assert_eq!(first.body["entry"]["kind"], "award");
    let again = post_tokens(&h, &h.key, "eve", body).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body, first.body, "the first answer, again");
    let reused = post_tokens(
        &h,
        &h.key,
        "eve",
        json!({ "amount": 41, "reason": "other", "idempotency_key": "eve-1" }),
    )
    .await;
    assert_eq!(
        reused.problem(409)["type"],
        "https://hypercode.dev/problems/conflict"
    );
    let overdraft = post_tokens(
        &h,
        &h.key,
        "eve",
        json!({ "amount": -41, "reason": "too much", "idempotency_key": "eve-2" }),
    )
    .await;
    assert_eq!(
        overdraft.problem(409)["type"],
        "https://hypercode.dev/problems/insufficient-tokens"
    );
    assert_eq!(
        account(&h, "eve").await["entries"].as_array().map(Vec::len),
        Some(1)
    );
    let zero = post_tokens(
        &h,
        &h.key,
        "eve",
        json!({ "amount": 0, "reason": "x", "idempotency_key": "eve-3" }),
    )
    .await;
    zero.problem(422);
    assert_eq!(zero.pointers(), ["/amount"]);
    let float = post_tokens(
        &h,
        &h.key,
        "eve",
        json!({ "amount": 1.5, "reason": "x", "idempotency_key": "eve-4" }),
    )
    .await;
    assert_eq!(float.problem(422)["errors"][0]["pointer"], "/amount");
    // The extremes of the amount's range are answered, never a failure of the server: the
    // largest award passes what a balance can hold, the smallest spend is an overdraft.
    let huge = post_tokens(
        &h,
        &h.key,
        "eve",
        json!({ "amount": i64::MAX, "reason": "x", "idempotency_key": "eve-max" }),
    )
    .await;
    huge.problem(422);
    assert_eq!(huge.pointers(), ["/amount"]);
    let tiny = post_tokens(
        &h,
        &h.key,
        "eve",
        json!({ "amount": i64::MIN, "reason": "x", "idempotency_key": "eve-min" }),
    )
    .await;
    assert_eq!(
        tiny.problem(409)["type"],
        "https://hypercode.dev/problems/insufficient-tokens"
    );
    let bad_account = post_tokens(
        &h,
        &h.key,
        "not%20valid",
        json!({ "amount": 1, "reason": "x", "idempotency_key": "eve-5" }),
    )
    .await;
    bad_account.problem(400);
    // The keys the webhooks and the shop write are not the client's to take: one taken first
    // would keep that purchase's credit or that refund from being written.
    for reserved in ["stripe:checkout:cs_e_9", "shop:eve-9:refund"] {
        let taken = post_tokens(
            &h,
            &h.key,
            "eve",
            json!({ "amount": 1, "reason": "x", "idempotency_key": reserved }),
        )
        .await;
        taken.problem(422);
        assert_eq!(taken.pointers(), ["/idempotency_key"], "{reserved}");
    }
    // Agents may award and spend; operators and viewers may not; viewers may read.
    let agent = h.create_key("tokens-agent", "agent").await;
    let viewer = h.create_key("tokens-viewer", "viewer").await;
    let operator = h.create_key("tokens-operator", "operator").await;
    let by_agent = post_tokens(
        &h,
        &agent,
        "eve",
        json!({ "amount": -10, "reason": "agent run", "idempotency_key": "eve-6" }),
    )
    .await;
    assert_eq!(by_agent.status, 201, "{by_agent:?}");
    for (key, role) in [(&viewer, "viewer"), (&operator, "operator")] {
        post_tokens(
            &h,
            key,
            "eve",
            json!({ "amount": 1, "reason": "x", "idempotency_key": "eve-7" }),
        )
        .await
        .forbidden("admin or agent", role, "POST tokens");
    }
    let read = h
        .send(h.request_as(
            reqwest::Method::GET,
            "/api/v1/accounts/eve?limit=1",
            &viewer,
        ))
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body["account"], "eve");
    assert_eq!(read.body["balance"], 30);
    assert_eq!(read.body["arrears"], 0);
    assert_eq!(read.body["subscriptions"], json!([]));
    assert_eq!(read.body["entitlements"], json!([]));
    assert_eq!(read.body["entries"].as_array().map(Vec::len), Some(1));
    let cursor = read.body["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let next = h
        .send(h.request_as(
            reqwest::Method::GET,
            &format!("/api/v1/accounts/eve?limit=1&cursor={cursor}"),
            &viewer,
        ))
        .await;
    assert_eq!(next.body["entries"][0]["idempotency_key"], "eve-1");
    assert_eq!(next.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn shop_purchases_spend_grant_or_refund_exactly_once() {
    let fake = FakeStripe::start().await;
    let h = deployment(&fake).await;
    let shop = h
        .send(h.request(reqwest::Method::GET, "/api/v1/shop"))
        .await;
    assert_eq!(shop.status, 200, "{shop:?}");
    assert_eq!(
        shop.body["items"][0],
        json!({ "id": "templates", "name": "Templates", "cost": 150 })
    );
    post_tokens(
        &h,
        &h.key,
        "fay",
        json!({ "amount": 300, "reason": "start", "idempotency_key": "fay-award" }),
    )
    .await;
    let buy = |item: &str, key: &str| {
        h.send(
            h.request(reqwest::Method::POST, "/api/v1/shop/purchases")
                .json(&json!({ "account": "fay", "item": item, "idempotency_key": key })),
        )
    };
    // The fulfilment service refuses: the purchase fails and its cost comes back, once.
    let fragile = buy("fragile", "fay-1").await;
    assert_eq!(fragile.status, 201, "{fragile:?}");
    let id = fragile.body["id"].as_str().expect("mission id").to_owned();
    let failed = h.wait_terminal(&id, "failed", WAIT).await;
    assert_eq!(failed["workflow"], "shop_purchase");
    let grants = fake.to_path("/grants/fail");
    assert_eq!(grants.len(), 1, "a 400 is final: {grants:?}");
    assert_eq!(grants[0].idempotency_key.as_deref(), Some("shop:fay-1"));
    assert_eq!(grants[0].json["item"], "fragile");
    let again = buy("fragile", "fay-1").await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["id"], id.as_str());
    let fay = account(&h, "fay").await;
    assert_eq!(fay["balance"], 300, "{fay}");
    assert_eq!(
        kinds(&fay),
        [
            ("refund".to_owned(), 150),
            ("shop".to_owned(), -150),
            ("award".to_owned(), 300)
        ]
    );
    assert_eq!(fay["entitlements"], json!([]));
    // A service that grants it: spent, granted.
    let sturdy = buy("sturdy", "fay-2").await;
    let id = sturdy.body["id"].as_str().expect("mission id").to_owned();
    let done = h.wait_terminal(&id, "succeeded", WAIT).await;
    assert_eq!(done["output"]["balance"], 200, "{done}");
    assert_eq!(
        fake.to_path("/grants/ok")[0].idempotency_key.as_deref(),
        Some("shop:fay-2")
    );
    let fay = account(&h, "fay").await;
    assert_eq!(fay["entitlements"][0]["item"], "sturdy", "{fay}");
    // Not enough tokens: the mission fails with the code, nothing is written or granted.
    let templates = buy("templates", "fay-3").await;
    let id = templates.body["id"]
        .as_str()
        .expect("mission id")
        .to_owned();
    h.wait_terminal(&id, "succeeded", WAIT).await;
    let poor = buy("templates", "fay-4").await;
    let id = poor.body["id"].as_str().expect("mission id").to_owned();
    let refused = h.wait_terminal(&id, "failed", WAIT).await;
    assert_eq!(refused["error"]["code"], "insufficient_tokens", "{refused}");
    let fay = account(&h, "fay").await;
    assert_eq!(fay["balance"], 50, "{fay}");
    assert_eq!(fay["entries"].as_array().map(Vec::len), Some(5), "{fay}");
    let unknown = buy("nothing-like-it", "fay-5").await;
    unknown.problem(422);
    assert_eq!(unknown.pointers(), ["/item"]);
    // Operators and agents may buy; viewers may not.
    let as_role = |key: String, purchase: &'static str| {
        h.send(
            h.request_as(reqwest::Method::POST, "/api/v1/shop/purchases", &key)
                .json(
                    &json!({ "account": "fay", "item": "templates", "idempotency_key": purchase }),
                ),
        )
    };
    for (role, purchase) in [("operator", "fay-6"), ("agent", "fay-7")] {
        let bought = as_role(h.create_key(&format!("shop-{role}"), role).await, purchase).await;
        assert_eq!(bought.status, 201, "{role}: {bought:?}");
    }
    as_role(h.create_key("shop-viewer", "viewer").await, "fay-8")
        .await
        .forbidden("operator, admin or agent", "viewer", "a purchase");
}

#[tokio::test]
async fn checkout_sends_the_catalogue_price_and_the_account_to_stripe() {
    let fake = FakeStripe::start().await;
    let h = deployment(&fake).await;
    let checkout = |item: &str, key: Option<&str>| {
        let mut request = h
            .request(reqwest::Method::POST, "/api/stripe/checkout")
            .json(&json!({
                "account": "gus",
                "item": item,
                "success_url": "https://example.com/ok",
                "cancel_url": "https://example.com/cancel",
            }));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        h.send(request)
    };
    let pack = checkout("pack-500", None).await;
    assert_eq!(pack.status, 201, "{pack:?}");
    let id = pack.body["id"].as_str().expect("session id").to_owned();
    assert!(id.starts_with("cs_test_"), "{pack:?}");
    assert!(pack.body["url"].as_str().unwrap_or_default().contains(&id));
    let sent = fake.to_path("/v1/checkout/sessions");
    assert_eq!(sent.len(), 1);
    let request = &sent[0];
    assert_eq!(request.field("mode"), Some("payment"));
    assert_eq!(request.field("client_reference_id"), Some("gus"));
    assert_eq!(request.field("metadata[account]"), Some("gus"));
    assert_eq!(request.field("metadata[item]"), Some("pack-500"));
    assert_eq!(
        request.field("line_items[0][price_data][unit_amount]"),
        Some("499")
    );
    assert_eq!(
        request.field("line_items[0][price_data][currency]"),
        Some("usd")
    );
    assert_eq!(request.field("line_items[0][quantity]"), Some("1"));
    assert_eq!(request.field("success_url"), Some("https://example.com/ok"));
    assert!(request
        .idempotency_key
        .as_deref()
        .is_some_and(|k| !k.is_empty()));
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {SECRET_KEY}").as_str())
    );
    // A plan: a subscription at the catalogue's Stripe price; the client's key is passed on,
    // and Stripe answers a repeated key with the first session.
    let plan = checkout("course-pro", Some("gus-plan-1")).await;
    assert_eq!(plan.status, 201, "{plan:?}");
    let again = checkout("course-pro", Some("gus-plan-1")).await;
    assert_eq!(again.body["id"], plan.body["id"]);
    let sent = fake.to_path("/v1/checkout/sessions");
    let request = &sent[1];
    assert_eq!(request.field("mode"), Some("subscription"));
    assert_eq!(
        request.field("line_items[0][price]"),
        Some("price_course_pro")
    );
    assert_eq!(
        request.field("subscription_data[metadata][account]"),
        Some("gus")
    );
    assert_eq!(request.idempotency_key.as_deref(), Some("gus-plan-1"));
    // A price in the request is refused: prices come from the catalogue only.
    let priced = h
        .send(
            h.request(reqwest::Method::POST, "/api/stripe/checkout")
                .json(&json!({
                    "account": "gus",
                    "item": "pack-500",
                    "price": 1,
                    "success_url": "https://example.com/ok",
                    "cancel_url": "https://example.com/cancel",
                })),
        )
        .await;
    priced.problem(422);
    assert_eq!(fake.to_path("/v1/checkout/sessions").len(), 3);
    // Unknown items never reach Stripe; Stripe's refusals are a 502 with its message.
    let unknown = checkout("pack-9000", None).await;
    unknown.problem(422);
    assert_eq!(unknown.pointers(), ["/item"]);
    let refused = checkout("course-gone", None).await;
    let problem = refused.problem(502);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("No such price"),
        "{refused:?}"
    );
    assert_eq!(fake.to_path("/v1/checkout/sessions").len(), 4);
    // Operators may start a checkout; viewers and agents may not.
    let as_role = |key: String| {
        h.send(
            h.request_as(reqwest::Method::POST, "/api/stripe/checkout", &key)
                .json(&json!({ "account": "gus", "item": "pack-500", "success_url": "https://e/x", "cancel_url": "https://e/y" })),
        )
    };
    let operator = as_role(h.create_key("checkout-operator", "operator").await).await;
    assert_eq!(operator.status, 201, "{operator:?}");
    for role in ["viewer", "agent"] {
        as_role(h.create_key(&format!("checkout-{role}"), role).await)
            .await
            .forbidden("operator or admin", role, "checkout");
    }
    assert_eq!(fake.to_path("/v1/checkout/sessions").len(), 5);
}

#[tokio::test]
async fn without_stripe_settings_payments_answer_503_and_conflicting_secrets_stop_startup() {
    let h = Harness::start().await;
    let checkout = h
        .send(
            h.request(reqwest::Method::POST, "/api/stripe/checkout")
                .json(&json!({ "account": "hal", "item": "pack-500", "success_url": "https://e/x", "cancel_url": "https://e/y" })),
        )
        .await;
    assert_eq!(
        checkout.problem(503)["detail"],
        "payments are not configured"
    );
    let body = event("evt_n_1", "customer.created", now(), json!({}));
    let t = now();
    let webhook = deliver_with(&h, &body, Some(format!("t={t},v1={}", sign("x", t, &body)))).await;
    webhook.problem(503);
    // The shipped catalogue (catalog.toml) sells the seed's shop items.
    let shop = h
        .send(h.request(reqwest::Method::GET, "/api/v1/shop"))
        .await;
    let items: Vec<(String, i64)> = shop.body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    (
                        i["id"].as_str().unwrap_or_default().to_owned(),
                        i["cost"].as_i64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for seed in [
        ("prompt-packs", 200),
        ("templates", 150),
        ("bonus-lessons", 100),
    ] {
        assert!(items.contains(&(seed.0.to_owned(), seed.1)), "{items:?}");
    }
    let file = std::env::temp_dir().join(format!("hypercode-stripe-{}", random_suffix()));
    std::fs::write(&file, "sk_test_from_file\n").expect("write the secret file");
    serve_refuses(
        &h,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_inline".as_ref()),
            ("STRIPE_SECRET_KEY_FILE", file.as_os_str()),
        ],
        "both STRIPE_SECRET_KEY and STRIPE_SECRET_KEY_FILE are set",
    )
    .await;
}

#[tokio::test]
async fn the_webhook_takes_1_mib_outside_the_rate_limit_with_its_secret_from_a_file() {
    let file = std::env::temp_dir().join(format!("hypercode-whsec-{}", random_suffix()));
    std::fs::write(&file, format!("{WEBHOOK_SECRET}\n")).expect("write the secret file");
    let h = Harness::with(Options {
        workers: 0,
        env: vec![
            ("STRIPE_WEBHOOK_SECRET_FILE", file.display().to_string()),
            // One request a second per key, and as few failed authentications.
            ("HYPERCODE_RATE_LIMIT", "1".to_owned()),
            ("HYPERCODE_AUTH_FAIL_LIMIT", "1".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let signed = |body: &str| {
        let t = now();
        format!("t={t},v1={}", sign(WEBHOOK_SECRET, t, body))
    };
    // A burst far beyond the limit: every verified delivery is taken, every unverified one
    // refused for its signature, none for the rate.
    for i in 0..20 {
        let body = event(&format!("evt_rl_{i}"), "customer.created", now(), json!({}));
        let reply = deliver_with(&h, &body, Some(signed(&body))).await;
        assert_eq!(reply.status, 200, "delivery {i}: {reply:?}");
        let forged = deliver_with(&h, &body, Some(format!("t={},v1=00", now()))).await;
        forged.problem(400);
    }
    // The same burst with a key is limited.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            h.send(h.request(reqwest::Method::GET, "/api/v1/shop"))
                .await
                .status,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // A body of exactly 1 MiB is taken; one byte more is refused before it is looked at.
    let sized = |id: &str, size: usize| {
        let empty = event(id, "customer.created", now(), json!({ "pad": "" }));
        let padded = event(
            id,
            "customer.created",
            now(),
            json!({ "pad": "x".repeat(size - empty.len()) }),
        );
        assert_eq!(padded.len(), size);
        padded
    };
    let largest = sized("evt_big_1", 1024 * 1024);
    let reply = deliver_with(&h, &largest, Some(signed(&largest))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.status);
    let over = sized("evt_big_2", 1024 * 1024 + 1);
    let reply = deliver_with(&h, &over, Some(signed(&over))).await;
    reply.problem(413);
    let pool = sqlx::PgPool::connect(&h.database_url)
        .await
        .expect("connect");
    let stored: Vec<String> = sqlx::query_scalar("select id from stripe_events order by id")
        .fetch_all(&pool)
        .await
        .expect("the stored events");
    assert_eq!(stored.len(), 21, "{stored:?}");
    assert!(stored.contains(&"evt_big_1".to_owned()) && !stored.contains(&"evt_big_2".to_owned()));
    // The secret from the environment and from a file at once is refused at startup.
    serve_refuses(
        &h,
        &[("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.as_ref())],
        "both STRIPE_WEBHOOK_SECRET and STRIPE_WEBHOOK_SECRET_FILE are set",
    )
    .await;
}

#[tokio::test]
async fn the_dashboard_finds_an_account_and_shows_its_ledger() {
    let fake = FakeStripe::start().await;
    let h = deployment(&fake).await;
    apply(
        &h,
        &pack_completed("evt_d_1", "cs_d_1", "ivy@example.com", "pi_d_1"),
    )
    .await;
    let subscribed = event(
        "evt_d_2",
        "checkout.session.completed",
        now(),
        json!({
            "id": "cs_d_2",
            "mode": "subscription",
            "metadata": { "account": "ivy@example.com", "item": "course-pro" },
            "subscription": "sub_d_1",
            "payment_status": "paid",
        }),
    );
    apply(&h, &subscribed).await;
    post_tokens(
        &h,
        &h.key,
        "ivy@example.com",
        json!({ "amount": -120, "reason": "a <b>bold</b> lesson", "idempotency_key": "ivy-1" }),
    )
    .await;
    let viewer = h.create_key("accounts-viewer", "viewer").await;
    let mut browser = h.browser();
    let login = browser.get("/").await;
    let signed = browser
        .post(
            "/login",
            &[
                ("key", &viewer),
                ("csrf", &login.csrf()),
                ("next", "/accounts"),
            ],
        )
        .await;
    assert_eq!(signed.status, 303, "{signed:?}");
    let search = browser.get("/accounts?q=IVY@").await;
    assert_eq!(search.status, 200);
    assert!(
        search.body.contains("href=\"/accounts/ivy@example.com\""),
        "{}",
        search.body
    );
    let none = browser.get("/accounts?q=nobody").await;
    assert!(none.body.contains("No account matches"), "{}", none.body);
    let page = browser.get("/accounts/ivy@example.com").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("id=\"balance\" class=\"big\">380<"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("data-kind=\"purchase\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("data-kind=\"spend\""), "{}", page.body);
    assert!(page.body.contains("cs_d_1"), "{}", page.body);
    let subscriptions = page
        .body
        .split("id=\"subscriptions\"")
        .nth(1)
        .and_then(|table| table.split("</table>").next())
        .unwrap_or_default();
    assert!(
        subscriptions.contains("sub_d_1") && subscriptions.contains("active"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("a &#60;b&#62;bold&#60;/b&#62; lesson")
            || page.body.contains("a &lt;b&gt;bold&lt;/b&gt; lesson"),
        "reasons are escaped: {}",
        page.body
    );
    assert!(
        page.body.contains("href=\"/accounts\""),
        "the nav links the page"
    );
}
