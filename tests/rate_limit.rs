//! Request limits: the per-key rate limit (a token bucket in Redis, so shared by every API
//! replica; 429 with `Retry-After` past it) and the depth limit on mission inputs.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// One answer: the reply and its `Retry-After` header.
struct Answer {
    reply: Reply,
    retry_after: Option<String>,
}

async fn call(h: &Harness, base: &str, key: &str, path: &str) -> Answer {
    let response = h
        .http
        .get(format!("{base}{path}"))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("the API answered");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = response.status().as_u16();
    let content_type = content_type(response.headers());
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Answer {
        reply: Reply {
            status,
            content_type,
            body,
        },
        retry_after,
    }
}

/// A 429 problem whose `Retry-After` is a whole number of seconds, at least 1; returns it.
fn retry_after(answer: &Answer) -> u64 {
    let body = answer.reply.problem(429);
    assert_eq!(body["type"], "https://hypercode.dev/problems/rate-limited");
    let seconds: u64 = answer
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "429 without an integer Retry-After: {:?}",
                answer.retry_after
            )
        });
    assert!(seconds >= 1, "Retry-After {seconds}");
    seconds
}

/// Most requests a bucket of `burst` refilling at `rate` per second can admit in `elapsed`.
fn most_admitted(burst: u64, rate: u64, elapsed: Duration) -> u64 {
    burst + (rate as f64 * elapsed.as_secs_f64()).floor() as u64
}

fn limited(env: &[(&'static str, &str)]) -> Options {
    Options {
        workers: 0,
        env: env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        ..Options::default()
    }
}

#[tokio::test]
async fn a_burst_is_limited_and_recovers_after_retry_after() {
    let h = Harness::with(limited(&[
        ("HYPERCODE_RATE_LIMIT", "2"),
        ("HYPERCODE_RATE_LIMIT_OPERATOR", "0"),
        ("HYPERCODE_RATE_LIMIT_AGENT", "1"),
    ]))
    .await;
    let viewer = h.create_key("vera", "viewer").await;
    let other = h.create_key("vic", "viewer").await;
    let operator = h.create_key("olga", "operator").await;
    let agent = h.create_key("bot", "agent").await;

    // Rate 2/s, so a burst of 4: a quick series of 12 gets some 429s.
    let start = Instant::now();
    let mut answers = Vec::new();
    for _ in 0..12 {
        answers.push(call(&h, &h.base, &viewer, "/api/v1/missions").await);
    }
    let elapsed = start.elapsed();
    let ok = answers.iter().filter(|a| a.reply.status == 200).count() as u64;
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.reply.status == 429).collect();
    assert_eq!(ok + refused.len() as u64, 12, "only 200s and 429s");
    assert!(
        ok >= 4 && ok <= most_admitted(4, 2, elapsed),
        "{ok} of 12 admitted in {elapsed:?}"
    );
    assert!(!refused.is_empty());
    let wait = refused.iter().map(|a| retry_after(a)).max().unwrap_or(1);
    let detail = refused[0].reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("2 requests per second"), "{detail}");

    // Another key has its own bucket; /healthz is never limited.
    assert_eq!(
        call(&h, &h.base, &other, "/api/v1/missions")
            .await
            .reply
            .status,
        200
    );
    for _ in 0..20 {
        let health = h.http.get(h.url("/healthz")).send().await.expect("healthz");
        assert_eq!(health.status(), 200);
    }

    // After waiting as told, requests succeed again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = call(&h, &h.base, &viewer, "/api/v1/missions").await;
    assert_eq!(again.reply.status, 200, "{:?}", again.reply);

    // Per-role overrides: operators are unlimited (0), agents get 1/s (a burst of 2; their
    // mission calls are 403, but count against the bucket all the same).
    for _ in 0..30 {
        let reply = call(&h, &h.base, &operator, "/api/v1/missions").await.reply;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            call(&h, &h.base, &agent, "/api/v1/missions")
                .await
                .reply
                .status,
        );
    }
    assert_eq!(&statuses[..2], [403, 403], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn replicas_share_one_limit_through_redis() {
    let mut h = Harness::with(limited(&[("HYPERCODE_RATE_LIMIT", "2")])).await;
    let second = h.start_another_serve().await;
    let first = h.base.clone();
    let viewer = h.create_key("vera", "viewer").await;
    let key_id = key_id(&h, "vera").await;

    // Ten rounds, each a request to both replicas at once. Two separate buckets of 4 would
    // admit at least 8; one shared bucket admits its burst of 4 plus what refills meanwhile.
    let start = Instant::now();
    let mut per_replica = [(0u64, 0u64); 2];
    for _ in 0..10 {
        let (a, b) = tokio::join!(
            call(&h, &first, &viewer, "/api/v1/missions"),
            call(&h, &second, &viewer, "/api/v1/missions"),
        );
        for (i, answer) in [a, b].iter().enumerate() {
            match answer.reply.status {
                200 => per_replica[i].0 += 1,
                429 => {
                    retry_after(answer);
                    per_replica[i].1 += 1;
                }
                other => panic!("unexpected {other}: {:?}", answer.reply),
            }
        }
    }
    let elapsed = start.elapsed();
    let admitted = per_replica[0].0 + per_replica[1].0;
    assert!(
        admitted >= 4 && admitted <= most_admitted(4, 2, elapsed),
        "{admitted} of 20 admitted in {elapsed:?} across two replicas: {per_replica:?}"
    );
    assert!(
        per_replica.iter().all(|(_, refused)| *refused > 0),
        "both replicas refuse once the shared bucket is empty: {per_replica:?}"
    );
    eprintln!("admitted {admitted} of 20 in {elapsed:?}: {per_replica:?}");

    // The bucket is one Redis hash, named after the queue and the key's id, with an expiry.
    let client = redis::Client::open(h.redis_url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("hypercode:{}:ratelimit:{key_id}", h.queue))
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(ttl > 0, "the bucket exists and expires: PTTL {ttl}");
}

/// The id of the key named `name`, from `keys list --json`.
async fn key_id(h: &Harness, name: &str) -> String {
    let listed: Value = serde_json::from_str(&h.cli(&["keys", "list", "--json"]).await)
        .expect("keys list --json prints JSON");
    listed
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["name"] == name))
        .and_then(|k| k["id"].as_str())
        .unwrap_or_else(|| panic!("no key `{name}` in {listed}"))
        .to_owned()
}

/// `levels` nested containers (alternately objects and arrays) around a number.
fn nested(levels: usize) -> Value {
    let mut value = json!(1);
    for level in 0..levels {
        value = if level % 2 == 0 {
            json!([value])
        } else {
            json!({ "x": value })
        };
    }
    value
}

/// A plan whose input nests `depth` levels deep: the input object, `steps`, the step object
/// and a noop value of `depth - 3` levels.
fn plan_of_depth(depth: usize) -> Value {
    json!({
        "workflow": "plan",
        "input": { "steps": [{ "name": "deep", "noop": nested(depth - 3) }] }
    })
}

#[tokio::test]
async fn inputs_nested_deeper_than_64_levels_are_refused() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    for depth in [60, 64] {
        let reply = h.submit_body(&plan_of_depth(depth)).await;
        assert_eq!(reply.status, 201, "depth {depth}: {reply:?}");
    }
    for depth in [65, 100] {
        let reply = h.submit_body(&plan_of_depth(depth)).await;
        reply.problem(422);
        assert_eq!(reply.pointers(), ["/input"], "depth {depth}: {reply:?}");
        let message = reply.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("64"), "{message}");
    }
    // Deeper than the JSON parser goes: still a problem, and the server is fine.
    let reply = h.submit_body(&plan_of_depth(500)).await;
    assert!(
        reply.content_type.starts_with("application/problem+json") && reply.status / 100 == 4,
        "{reply:?}"
    );
    let list = h.send(h.request(Method::GET, "/api/v1/missions")).await;
    assert_eq!(list.body["missions"].as_array().map(Vec::len), Some(2));
}
